//! The regression lab, end to end on the real kernel, at small scale: a C
//! workload whose three hot functions share one helper, built three
//! times (twice unchanged, once with hot_a 15 % slower), each build
//! profiled five times, the builds in turn, then
//! `pidmap diff BASE... -- NEW...`. Identical builds are not flagged; the
//! slower caller is, by its total (inclusive) share, since the helper is
//! the leaf of every sample and no self share moves.

mod common;

use common::{output_within, pidmap_bin};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Rounds of the workload per run: about 0.4 s of CPU, some 2000
/// samples at 4999 Hz.
const ROUNDS: &str = "4000";
const RUNS: usize = 5;

/// Profile `n` of `exe`, as `dir/NAME-N.folded`.
fn profile_run(dir: &Path, name: &str, exe: &Path, n: usize) -> PathBuf {
    let pins = common::pin_dir("labs");
    let out = dir.join(format!("{name}-{n}.folded"));
    let o = output_within(
        Command::new(pidmap_bin())
            .args(["profile", "-F", "4999"])
            .arg("--pin-dir")
            .arg(&*pins)
            .arg("-o")
            .arg(&out)
            .arg("--")
            .arg(exe)
            .arg(ROUNDS),
        common::RUN,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{name}: {err}");
    assert!(out.is_file(), "{} missing: {err}", out.display());
    out
}

/// Five profiles of each build, interleaved (base, same, new, base, ...)
/// as a lab runs them, so a change of the machine's load during the test
/// falls on every build alike: with `--scale base` the sample counts of
/// the runs are compared, and five base runs then five of another build
/// would compare the load of two moments.
fn profile_runs(dir: &Path, builds: &[(&str, &Path)]) -> Vec<Vec<PathBuf>> {
    let mut runs = vec![Vec::new(); builds.len()];
    for n in 1..=RUNS {
        for (i, (name, exe)) in builds.iter().enumerate() {
            runs[i].push(profile_run(dir, name, exe, n));
        }
    }
    runs
}

/// `pidmap diff --format json` of two sets: (exit code, JSON, stderr).
fn diff(base: &[PathBuf], new: &[PathBuf], scale: &str) -> (i32, String, String) {
    common::pidmap_diff(base, new, &["--format", "json", "--scale", scale])
}

/// The JSON object of one function in the report (the report is ours:
/// one object a line would be simpler, this finds its span).
fn function<'a>(json: &'a str, name: &str) -> &'a str {
    let at = json
        .find(&format!("{{\"function\":\"{name}\""))
        .unwrap_or_else(|| panic!("{name} not in {json}"));
    let rest = &json[at..];
    &rest[..rest.find("]}}").map_or(rest.len(), |e| e + 3)]
}

#[test]
fn a_slower_caller_is_flagged_and_identical_builds_are_not() {
    if !common::bpf_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let build = |name: &str, extra: &[&str]| {
        let mut flags = vec!["-DSHARED=1"];
        flags.extend(extra);
        common::build_c("labs.c", &dir.path().join(name), &flags)
    };
    let base_exe = build("labs-base", &[]);
    let same_exe = build("labs-same", &[]);
    let new_exe = build("labs-new", &["-DSLOW_PCT=15"]);
    let mut runs = profile_runs(
        dir.path(),
        &[("base", &base_exe), ("same", &same_exe), ("new", &new_exe)],
    )
    .into_iter();
    let (base, same, new) = (
        runs.next().unwrap(),
        runs.next().unwrap(),
        runs.next().unwrap(),
    );

    let (code, json, err) = diff(&base, &same, "run");
    assert_eq!(code, 0, "identical builds flagged: {err}\n{json}");
    assert!(json.contains("\"changed\":0,"), "{json}");

    let (code, json, err) = diff(&base, &new, "run");
    assert_eq!(code, 1, "the 15 % slower hot_a not flagged: {err}\n{json}");
    let a = function(&json, "hot_a");
    assert!(a.contains("\"changed\":true"), "{a}");
    // the helper is every sample's leaf: hot_a's self share stays 0, its
    // total share carries the change
    let total = &a[a.find("\"total\":").unwrap()..];
    let self_ = &a[a.find("\"self\":").unwrap()..a.find("\"total\":").unwrap()];
    assert!(
        total.starts_with("\"total\":{") && total.contains("\"changed\":true"),
        "{a}"
    );
    assert!(self_.contains("\"changed\":false"), "{a}");
    let delta: f64 = total
        .split("\"delta_points\":")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    // 37 % of the work 15 % slower: about +3.3 points
    assert!(
        (1.5..6.0).contains(&delta),
        "hot_a moved {delta} points: {a}"
    );
    let helper = function(&json, "helper");
    assert!(
        helper.starts_with("{\"function\":\"helper\",\"presence\":\"both\",\"changed\":false"),
        "{helper}"
    );
    assert!(err.contains("changed: hot_a"), "{err}");

    // each run does a fixed amount of work: as shares of the base's
    // samples, hot_b and hot_c did not change, hot_a (and the helper and
    // main, which did its extra work) did
    let (code, json, err) = diff(&base, &same, "base");
    assert_eq!(
        code, 0,
        "identical builds flagged (--scale base): {err}\n{json}"
    );
    let (code, json, err) = diff(&base, &new, "base");
    assert_eq!(code, 1, "{err}\n{json}");
    assert!(
        function(&json, "hot_a").contains("\"changed\":true"),
        "{json}"
    );
    for bystander in ["hot_b", "hot_c"] {
        let f = function(&json, bystander);
        assert!(
            f.contains(&format!(
                "\"function\":\"{bystander}\",\"presence\":\"both\",\"changed\":false"
            )),
            "{f}"
        );
    }
}

/// `pidmap profile ARGS` in a fresh pin directory: (status, stderr).
fn profile(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let pins = common::pin_dir("labs-profile");
    let o = output_within(
        Command::new(pidmap_bin())
            .arg("profile")
            .arg("--pin-dir")
            .arg(&*pins)
            .args(args),
        common::RUN,
    );
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn repeat_svg_filters_and_the_few_samples_note() {
    if !common::bpf_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = common::build_c("labs.c", &dir.path().join("labs"), &[]);
    let os = |s: &str| std::ffi::OsString::from(s);
    let p = |v: &Path| v.as_os_str().to_os_string();
    // a directory of runs, and the spread over them
    let runs = dir.path().join("runs");
    let (code, err) = profile(&[
        &os("--repeat"),
        &os("2"),
        &os("-F"),
        &os("999"),
        &os("-o"),
        &p(&runs),
        &os("--"),
        &p(&exe),
        &os("2000"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(runs.join("run-1.folded").is_file() && runs.join("run-2.folded").is_file());
    assert!(err.contains("pidmap: 2 runs, "), "{err}");
    assert!(err.contains(" hot_a\n"), "{err}");
    // a failing run stops the series with its status
    let (code, err) = profile(&[
        &os("--repeat"),
        &os("3"),
        &os("-o"),
        &p(&dir.path().join("false")),
        &os("--"),
        &os("/bin/false"),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("pidmap: run 1 ended with status 1: stopping"),
        "{err}"
    );
    assert!(!dir.path().join("false/run-2.folded").exists());
    // --repeat needs a command and -o
    let (code, err) = profile(&[&os("--repeat"), &os("2"), &os("--"), &p(&exe)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--repeat writes one profile per run: give -o DIR"),
        "{err}"
    );
    // a flame graph beside the folded stacks, and a filter
    let folded = dir.path().join("b.folded");
    let svg = dir.path().join("b.svg");
    let (code, err) = profile(&[
        &os("-F"),
        &os("999"),
        &os("-o"),
        &p(&folded),
        &os("--svg"),
        &p(&svg),
        &os("--function"),
        &os("^hot_b$"),
        &os("--"),
        &p(&exe),
        &os("2000"),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&folded).unwrap();
    assert!(
        !text.is_empty() && text.lines().all(|l| l.contains(";hot_b")),
        "{text}"
    );
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(
        picture.contains("<svg") && picture.contains("hot_b"),
        "{picture}"
    );
    assert!(
        !picture.contains("hot_a"),
        "the filter applies to the SVG too"
    );
    assert!(err.contains("pidmap: the filters kept "), "{err}");
    // a command that barely runs: the note says why and what to do
    let (code, err) = profile(&[
        &os("-o"),
        &p(&dir.path().join("t.folded")),
        &os("--"),
        &os("/bin/true"),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the command was on a CPU for less than") && err.contains("raise -F"),
        "{err}"
    );
}

/// Kernel threads have no user frames: without --kernel each of their
/// samples is `[kernel]` under the thread's name, never `[unknown]`.
#[test]
fn kernel_threads_are_the_kernel_not_unknown() {
    if !common::bpf_available() {
        return;
    }
    // writes made durable keep the kernel's writeback and journal
    // threads busy while the whole system is profiled: in the build
    // directory, on a disk (/tmp may be a tmpfs, where fsync does nothing)
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), dir.path().join("data"));
        std::thread::spawn(move || {
            let block = vec![0x5au8; 4 << 20];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut f = std::fs::File::create(&path).unwrap();
                std::io::Write::write_all(&mut f, &block).unwrap();
                f.sync_all().unwrap();
            }
        })
    };
    let out = dir.path().join("k.folded");
    let (code, err) = profile(&[
        std::ffi::OsStr::new("--duration"),
        std::ffi::OsStr::new("2"),
        std::ffi::OsStr::new("-F"),
        std::ffi::OsStr::new("999"),
        std::ffi::OsStr::new("--comm"),
        std::ffi::OsStr::new("^kworker/|^jbd2/|^ksoftirqd/|^rcu_"),
        std::ffi::OsStr::new("-o"),
        out.as_os_str(),
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        !text.is_empty(),
        "no kernel thread sampled in 2 s of fsync'd writes: {err}"
    );
    for line in text.lines() {
        let (stack, _) = line.rsplit_once(' ').unwrap();
        let frames: Vec<&str> = stack.split(';').collect();
        assert_eq!(frames.len(), 2, "{line}");
        assert_eq!(frames[1], "[kernel]", "{line}");
    }
}
