//! `pidmap diff` over several runs a side, on folded profiles made here
//! (no kernel needed): the exit status, the JSON and Markdown reports read
//! back, the differential flame graph's colours, the usage errors.

mod common;

use common::{output_within, pidmap_bin};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Run-to-run scatter of the sample counts (deterministic).
const SCATTER: [i64; 5] = [0, 3, -2, 5, -4];

/// One run of the workload of the issue: three callers sharing one
/// helper; `a` is hot_a's count (about 370 in the base build). Both
/// builds also run `setup`; only the base build runs `legacy`.
fn write_run(dir: &Path, name: &str, a: i64, d: i64, legacy: bool) -> PathBuf {
    let p = dir.join(name);
    let mut text = format!(
        "w;main;hot_a;helper {}\nw;main;hot_b;helper {}\nw;main;hot_c;helper {}\nw;main;setup 20\n",
        a + d,
        370 - d,
        260 + d / 2
    );
    if legacy {
        text.push_str("w;main;legacy 30\n");
    }
    std::fs::write(&p, text).unwrap();
    p
}

struct Sets {
    _dir: tempfile::TempDir,
    base: Vec<PathBuf>,
    same: Vec<PathBuf>,
    new: Vec<PathBuf>,
}

/// Five base runs, five more of the same build, five of a build where
/// hot_a is 15 % slower and `legacy` is gone.
fn sets() -> Sets {
    let dir = tempfile::tempdir().unwrap();
    let mk = |prefix: &str, a: i64, legacy: bool, flip: i64| {
        SCATTER
            .iter()
            .enumerate()
            .map(|(i, d)| {
                write_run(
                    dir.path(),
                    &format!("{prefix}{i}.folded"),
                    a,
                    d * flip,
                    legacy,
                )
            })
            .collect::<Vec<_>>()
    };
    Sets {
        base: mk("base", 370, true, 1),
        same: mk("same", 370, true, -1),
        new: mk("new", 425, false, 1),
        _dir: dir,
    }
}

/// (exit code, stdout, stderr) of `pidmap diff BASE... -- NEW... ARGS`.
fn diff(base: &[PathBuf], new: &[PathBuf], args: &[&str]) -> (i32, String, String) {
    common::pidmap_diff(base, new, args)
}

/// A JSON document read back by python3's json module, and one value
/// picked out of it by a Python expression over `d`.
fn json_pick(doc: &str, expr: &str) -> String {
    let o = output_within(
        Command::new("/usr/bin/python3")
            .args([
                "-c",
                &format!("import json,os; d=json.loads(os.environ['DOC']); print({expr})"),
            ])
            .env("DOC", doc),
        common::RUN,
    );
    assert!(
        o.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn identical_builds_report_no_change() {
    let s = sets();
    let (code, out, err) = diff(&s.base, &s.same, &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("# 5 base profiles"), "{out}");
    assert!(!out.contains("CHANGED"), "{out}");
}

#[test]
fn a_slower_caller_is_reported_in_json_that_reads_back() {
    let s = sets();
    let (code, out, err) = diff(&s.base, &s.new, &["--format", "json"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("changed: hot_a"), "{err}");
    assert_eq!(
        json_pick(&out, "d['test'], d['significance'], d['alpha']"),
        "welch_t True 0.01"
    );
    assert_eq!(json_pick(&out, "d['functions'][0]['function']"), "hot_a");
    let a = "[f for f in d['functions'] if f['function'] == 'hot_a'][0]";
    assert_eq!(
        json_pick(
            &out,
            &format!("{a}['total']['changed'], {a}['self']['changed']")
        ),
        "True False",
        "the helper does the work: only the total share moves"
    );
    let p: f64 = json_pick(&out, &format!("{a}['total']['p']"))
        .parse()
        .unwrap();
    assert!(p < 0.01, "{p}");
    let delta: f64 = json_pick(&out, &format!("{a}['total']['delta_points']"))
        .parse()
        .unwrap();
    assert!(delta > 3.0, "{delta}");
    assert_eq!(
        json_pick(&out, &format!("len({a}['total']['base_runs'])")),
        "5"
    );
    let gone = "[f for f in d['functions'] if f['function'] == 'legacy'][0]";
    assert_eq!(json_pick(&out, &format!("{gone}['presence']")), "base_only");
    assert_eq!(json_pick(&out, "d['base_samples'][0]"), "1050");
    // the same JSON, in either direction
    let (code, back, _) = diff(&s.new, &s.base, &["--format", "json"]);
    assert_eq!(code, 1);
    let d: f64 = json_pick(&back, &format!("{a}['total']['delta_points']"))
        .parse()
        .unwrap();
    assert!((d + delta).abs() < 1e-9, "{d} {delta}");
}

#[test]
fn markdown_is_one_table_a_comment_can_hold() {
    let s = sets();
    let (code, out, _) = diff(&s.base, &s.new, &["--format", "markdown"]);
    assert_eq!(code, 1);
    let mut lines = out.lines();
    let (_, json, _) = diff(&s.base, &s.new, &["--format", "json"]);
    let n = json_pick(&json, "d['changed']");
    assert_eq!(
        lines.next(),
        Some(format!("### pidmap diff: {n} functions changed").as_str()),
        "{out}"
    );
    let table: Vec<&str> = out.lines().filter(|l| l.starts_with('|')).collect();
    let cols = |l: &str| l.matches('|').count() - l.matches("\\|").count();
    assert!(table.len() >= 3, "{out}");
    assert!(table.iter().all(|l| cols(l) == cols(table[0])), "{out}");
    assert!(table[1].starts_with("|---|"), "{out}");
    let hot_a = table.iter().find(|l| l.contains("`hot_a`")).unwrap();
    assert!(hot_a.starts_with("| **changed** |"), "{hot_a}");
    assert!(out.contains("`legacy` (base only)"), "{out}");
    // a name with | or a backtick cannot break the table
    let dir = tempfile::tempdir().unwrap();
    let odd = |n: &str, c: u64| {
        let p = dir.path().join(n);
        std::fs::write(&p, format!("w;main;a|b`c {c}\nw;main;x 100\n")).unwrap();
        p
    };
    let (_, out, _) = diff(
        &[odd("o1", 10)],
        &[odd("o2", 90)],
        &["--format", "markdown"],
    );
    let row = out.lines().find(|l| l.contains("a\\|b'c")).unwrap();
    assert_eq!(
        cols(row),
        cols(out.lines().find(|l| l.starts_with("| |")).unwrap())
    );
}

/// Every frame of an inferno SVG: (name, x in %, fill).
fn frames(svg: &str) -> Vec<(String, f64, (u8, u8, u8))> {
    svg.split("<title>")
        .skip(1)
        .filter_map(|part| {
            let name = part.split(" (").next()?.to_string();
            let x = part.split("x=\"").nth(1)?.split('%').next()?.parse().ok()?;
            let rgb = part.split("fill=\"rgb(").nth(1)?.split(')').next()?;
            let c: Vec<u8> = rgb.split(',').map(|v| v.trim().parse().unwrap()).collect();
            Some((name, x, (c[0], c[1], c[2])))
        })
        .collect()
}

/// The fill of the first frame named `name`.
fn fill(svg: &str, name: &str) -> Option<(u8, u8, u8)> {
    frames(svg).into_iter().find(|f| f.0 == name).map(|f| f.2)
}

/// The fill of the frame named `name` that starts where `parent` does
/// (its first callee).
fn fill_under(svg: &str, parent: &str, name: &str) -> Option<(u8, u8, u8)> {
    let all = frames(svg);
    let x = all.iter().find(|f| f.0 == parent)?.1;
    all.iter().find(|f| f.0 == name && f.1 == x).map(|f| f.2)
}

#[test]
fn the_differential_flame_graph_is_red_where_it_grew_blue_where_it_shrank() {
    let s = sets();
    let (code, svg, err) = diff(&s.base, &s.new, &["--format", "svg"]);
    assert_eq!(code, 1, "{err}");
    assert!(svg.contains("<svg"), "{svg}");
    // as flamegraph.pl's: a stack's change colours its leaf, here the
    // helper each caller calls
    let grew = fill_under(&svg, "hot_a", "helper").unwrap();
    assert!(
        grew.0 == 255 && grew.1 < 250 && grew.2 < 250,
        "hot_a;helper {grew:?}"
    );
    let shrank = fill_under(&svg, "hot_b", "helper").unwrap();
    assert!(shrank.2 == 255 && shrank.0 < 250, "hot_b;helper {shrank:?}");
    // the callers did no work of their own: unchanged
    assert_eq!(fill(&svg, "hot_a"), Some((250, 250, 250)));
    // the larger change is the deeper colour
    let c = fill_under(&svg, "hot_c", "helper").unwrap();
    assert!(
        c.2 == 255 && c.0 > shrank.0,
        "hot_c {c:?} vs hot_b {shrank:?}"
    );
    // gone in NEW: no width in NEW's shape, present in BASE's
    assert!(
        fill(&svg, "legacy").is_none(),
        "legacy drawn in NEW's shape"
    );
    let (_, rev, _) = diff(&s.base, &s.new, &["--reverse"]);
    let legacy = fill(&rev, "legacy").unwrap();
    assert!(legacy.2 == 255 && legacy.0 < 250, "legacy {legacy:?}");
    let grew = fill_under(&rev, "hot_a", "helper").unwrap();
    assert!(
        grew.0 == 255 && grew.1 < 250,
        "reverse hot_a;helper {grew:?}"
    );
    // identical builds: every frame the neutral colour
    let (_, same, _) = diff(&s.base, &s.base, &["--format", "svg"]);
    assert!(
        frames(&same).iter().all(|f| f.2 == (250, 250, 250)),
        "{same}"
    );
}

#[test]
fn one_profile_a_side_says_no_test_can_be_made() {
    let s = sets();
    let (code, out, err) = diff(&s.base[..1], &s.new[..1], &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("no significance can be computed"), "{err}");
    assert!(
        out.contains("no significance test (one profile a side)"),
        "{out}"
    );
}

#[test]
fn filters_pick_the_stacks_compared() {
    let s = sets();
    // hot_b and hot_c only: their shares of each other barely move
    let (code, out, err) = diff(&s.base, &s.new, &["--function", "^hot_[bc]$"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("hot_a"), "{out}");
    let (code, _, err) = diff(&s.base, &s.new, &["--comm", "^nomatch$"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("the filters keep none of its samples"),
        "{err}"
    );
    let (code, _, err) = diff(&s.base, &s.new, &["--function", "a**"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--function: pattern \"a**\": * at 2 repeats nothing"),
        "{err}"
    );
}

#[test]
fn mismatched_inputs_are_usage_errors() {
    let s = sets();
    let (code, _, err) = diff(&s.base, &[], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("-- needs the NEW profiles"), "{err}");
    let o = output_within(
        Command::new(pidmap_bin()).arg("diff").args(&s.base[..3]),
        common::RUN,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("put -- between the BASE and the NEW"));
}

#[test]
fn builds_named_apart_draw_one_flame_graph() {
    let dir = tempfile::tempdir().unwrap();
    let side = |comm: &str, a: u64| {
        let p = dir.path().join(format!("{comm}-{a}.folded"));
        std::fs::write(
            &p,
            format!("{comm};main;hot_a {a}\n{comm};main;hot_b 100\n"),
        )
        .unwrap();
        p
    };
    let (_, svg, err) = diff(
        &[side("bench-old", 100)],
        &[side("bench-new", 150)],
        &["--format", "svg"],
    );
    assert!(err.contains("the two sides' process names differ"), "{err}");
    let names: Vec<String> = frames(&svg).into_iter().map(|f| f.0).collect();
    assert!(!names.iter().any(|n| n.starts_with("bench-")), "{names:?}");
    assert_eq!(
        names.iter().filter(|n| *n == "main").count(),
        1,
        "{names:?}"
    );
    let grew = fill(&svg, "hot_a").unwrap();
    assert!(grew.0 == 255 && grew.1 < 250, "{grew:?}");
}
