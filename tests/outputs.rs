//! Outputs other tools ingest (root): pprof checked by an independent
//! decoder, an SVG flame graph, and `pidmap diff` over folded and pprof.

mod common;

use common::pidmap_bin;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

fn workload() -> &'static (PathBuf, PathBuf) {
    static W: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    W.get_or_init(|| common::sampled_workload("outputs"))
}

/// Profiles the workload (main s, lib s) in `format` into `name`.
fn profile(format: &str, name: &str, main_s: &str, lib_s: &str) -> PathBuf {
    let (dir, exe) = workload();
    let out = dir.join(name);
    let pins = common::pin_dir("outputs");
    let o = common::output_within(
        Command::new(pidmap_bin())
            .args([
                "profile",
                "-F",
                "499",
                "--format",
                format,
                "--pin-dir",
                pins.to_str().unwrap(),
                "-o",
            ])
            .arg(&out)
            .arg("--")
            .args([exe.to_str().unwrap(), main_s, lib_s, "0"]),
        common::RUN,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn pprof_is_read_back_by_an_independent_decoder() {
    if !common::bpf_available() {
        return;
    }
    let pb = profile("pprof", "p.pb.gz", "0.6", "0.6");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/pprof_summary.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg(&pb)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let v: HashMap<&str, u64> = text
        .lines()
        .map(|l| {
            let (k, n) = l.split_once('\t').unwrap();
            (k, n.parse().unwrap())
        })
        .collect();
    // our own reader agrees on every stack
    let ours = pidmap::sampler::diff::load(&pb).unwrap();
    let total: u64 = ours.iter().map(|(_, n)| n).sum();
    assert_eq!(v["total"], total);
    assert!(v["mappings"] >= 2, "the binary and its library: {text}");
    assert!(total > 300, "{text}");
    let hot = v.get("main_hot").copied().unwrap_or(0) + v.get("lib_hot").copied().unwrap_or(0);
    assert!(hot as f64 >= 0.8 * total as f64, "{text}");
    let leaf = |f: &str| {
        ours.iter()
            .filter(|(s, _)| s.last().map(|x| x.as_str()) == Some(f))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    assert_eq!(v.get("main_hot").copied().unwrap_or(0), leaf("main_hot"));
    assert_eq!(v.get("lib_hot").copied().unwrap_or(0), leaf("lib_hot"));
}

/// The reference reader, `go tool pprof` (what Pyroscope, Parca and
/// Grafana build on), reads the profile: same total, same hot functions,
/// and the mappings of the binary and its library.
#[test]
fn go_tool_pprof_reads_the_profile() {
    if !common::bpf_available() {
        return;
    }
    let pb = profile("pprof", "go.pb.gz", "0.5", "0.5");
    let pprof = |args: &[&str]| -> String {
        let o = Command::new("go")
            .args(["tool", "pprof", "-symbolize=none"])
            .args(args)
            .arg(&pb)
            .output()
            .expect("go tool pprof (make test installs golang-go)");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let top = pprof(&["-sample_index=samples", "-top", "-nodecount=1000"]);
    let ours = pidmap::sampler::diff::load(&pb).unwrap();
    let total: u64 = ours.iter().map(|(_, n)| n).sum();
    assert!(total > 300, "{top}");
    assert!(
        top.contains(&format!("Total samples = {total} ")),
        "total {total}: {top}"
    );
    let flat = |f: &str| -> u64 {
        top.lines()
            .filter(|l| l.split_whitespace().last() == Some(f))
            .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    for f in ["main_hot", "lib_hot"] {
        let leaf: u64 = ours
            .iter()
            .filter(|(s, _)| s.last().map(|x| x.as_str()) == Some(f))
            .map(|(_, n)| n)
            .sum();
        assert!(leaf > 0, "{f}: {top}");
        assert_eq!(flat(f), leaf, "{f}: {top}");
    }
    let raw = pprof(&["-raw"]);
    let (_, exe) = workload();
    let name = exe.file_name().unwrap().to_str().unwrap();
    let mappings = raw.split("Mappings").nth(1).unwrap_or("");
    assert!(mappings.contains(name), "{raw}");
    assert!(mappings.contains("libsampled"), "{raw}");
}

#[test]
fn svg_is_a_flame_graph_of_the_workload() {
    if !common::bpf_available() {
        return;
    }
    let svg = std::fs::read_to_string(profile("svg", "p.svg", "0.3", "0.3")).unwrap();
    assert!(svg.starts_with("<?xml"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("main_hot") && svg.contains("lib_hot"));
}

#[test]
fn diff_reports_the_regression_and_its_exit_status() {
    if !common::bpf_available() {
        return;
    }
    let base = profile("folded", "base.folded", "0.5", "0.5");
    let new = profile("pprof", "new.pb.gz", "0.2", "0.8");
    let d = |a: &PathBuf, b: &PathBuf, t: &str| {
        common::output_within(
            Command::new(pidmap_bin())
                .arg("diff")
                .arg(a)
                .arg(b)
                .args(["--threshold", t]),
            common::RUN,
        )
    };
    let o = d(&base, &new, "5");
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    let first = text.lines().find(|l| l.starts_with("CHANGED")).unwrap();
    assert!(
        first.ends_with("main_hot") || first.ends_with("lib_hot"),
        "{text}"
    );
    assert_eq!(d(&base, &new, "90").status.code(), Some(0));
    assert_eq!(
        d(&base, &base, "0.5").status.code(),
        Some(0),
        "a profile equals itself"
    );
    let o = d(&base, &PathBuf::from("/nonexistent.folded"), "5");
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("reading /nonexistent.folded: No such file or directory"));
}
