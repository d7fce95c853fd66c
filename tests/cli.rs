//! The binary end to end (root): audit and repair, SIGKILL and restart on
//! the same pins, `run -- CMD`, metrics, help, the delete benchmark.

mod common;

use common::{pidmap_bin, Guarded, WAIT};
use pidmap::abi::{MappingInfo, PidPage};
use pidmap::sys::bpf::{MapHandle, BPF_ANY};
use std::path::Path;
use std::process::{Command, Stdio};

/// Starts `pidmap run ARGS` and waits for its "serving" line.
fn agent(args: &[&str]) -> Guarded {
    let all: Vec<&str> = std::iter::once("run").chain(args.iter().copied()).collect();
    common::start_serving(&all)
}

fn signal(c: &Guarded, sig: i32) {
    // SAFETY: sending a signal to our own child.
    assert_eq!(unsafe { libc::kill(c.id() as i32, sig) }, 0);
}

fn audit(pins: &Path, extra: &[&str]) -> (i32, String) {
    let out = common::output_within(
        Command::new(pidmap_bin())
            .args(["audit", "--pin-dir"])
            .arg(pins)
            .args(extra),
        common::RUN,
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn dead_pid() -> u32 {
    let mut c = Command::new("/bin/true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn audit_finds_planted_entries_and_repair_removes_them() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("audit");
    let pins_s = pins.to_str().unwrap();
    let mut a = agent(&["--pin-dir", pins_s, "--keep-pins"]);
    assert_eq!(audit(&pins, &[]).0, 0);
    let trie = MapHandle::from_pin(&pins.join(pidmap::abi::TRIE_NAME)).unwrap();
    let pid = dead_pid();
    trie.update(&PidPage::marker(pid), &MappingInfo::marker(12345), BPF_ANY)
        .unwrap();
    for i in 0..5u64 {
        trie.update(
            &PidPage::new(pid, 0x4000_0000 + i * 0x1000, 52),
            &MappingInfo::new(9, 0).unwrap(),
            BPF_ANY,
        )
        .unwrap();
    }
    let (code, text) = audit(&pins, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("pid {pid} 6 keys: process gone")),
        "{text}"
    );
    let (code, json) = audit(&pins, &["--json"]);
    assert_eq!(code, 1);
    assert!(json.contains("\"leaked_keys\":6"), "{json}");
    // a repair beside the running agent is refused (both would delete);
    // once it stopped (keeping its pins) the repair runs
    let (code, text) = audit(&pins, &["--repair"]);
    assert_eq!(code, 2, "{text}");
    signal(&a, libc::SIGTERM);
    assert_eq!(a.wait().unwrap().code(), Some(0));
    let (code, text) = audit(&pins, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("repaired: 6 deleted, 0 already absent, 0 failed"),
        "{text}"
    );
    assert_eq!(audit(&pins, &[]).0, 0);
    pidmap::maps::loader::remove_pins(&pins);
    assert!(!pins.exists());
    let (code, _) = audit(&pins, &[]);
    assert_eq!(code, 2, "no pins is an error");
}

#[test]
fn sigkill_then_restart_reconciles_the_pins() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("restart");
    let pins_s = pins.to_str().unwrap();
    let mut sleeps: Vec<Guarded> = (0..3)
        .map(|_| common::spawn(Command::new("/bin/sleep").arg("1000")))
        .collect();
    let mut args = vec!["--pin-dir".to_string(), pins_s.to_string()];
    for s in &sleeps {
        args.push("--pid".into());
        args.push(s.id().to_string());
    }
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let mut a = agent(&args);
    signal(&a, libc::SIGKILL);
    a.wait().unwrap();
    // two of them die while no agent runs
    let live = sleeps.pop().unwrap();
    for mut s in sleeps {
        s.kill().unwrap();
        s.wait().unwrap();
    }
    let (code, text) = audit(&pins, &[]);
    assert_eq!(code, 1, "the killed agent left the dead pids' keys: {text}");
    let mut b = agent(&["--pin-dir", pins_s, "--keep-pins"]);
    let (code, text) = audit(&pins, &[]);
    assert_eq!(code, 0, "reconciled before serving: {text}");
    signal(&b, libc::SIGTERM);
    assert_eq!(b.wait().unwrap().code(), Some(0));
    let (code, text) = audit(&pins, &[]);
    assert_eq!(code, 0, "{text}");
    let trie = MapHandle::from_pin(&pins.join(pidmap::abi::TRIE_NAME)).unwrap();
    let keys = common::keys_of(&trie, live.id());
    assert_eq!(
        keys,
        common::expected_keys(live.id()),
        "the live process was re-synced"
    );
    drop(live);
}

#[test]
fn run_a_command_exits_with_its_status_and_writes_metrics() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("cmd");
    let metrics = common::scratch("cmd").join("pidmap.prom");
    let st = Command::new(pidmap_bin())
        .args([
            "run",
            "--pin-dir",
            pins.to_str().unwrap(),
            "--metrics-file",
            metrics.to_str().unwrap(),
        ])
        .args(["--", "/bin/sh", "-c", "/bin/true; exit 7"])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(7));
    assert!(!pins.exists());
    let m = std::fs::read_to_string(&metrics).unwrap();
    assert!(m.contains("pidmap_tracked_processes 0\n"), "{m}");
    assert!(m.contains("# TYPE pidmap_exits_total counter"), "{m}");
    let exits: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("pidmap_exits_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(exits >= 1);
    let st = common::output_within(
        Command::new(pidmap_bin()).args([
            "run",
            "--pin-dir",
            pins.to_str().unwrap(),
            "--",
            "/nonexistent/program",
        ]),
        common::RUN,
    );
    let err = String::from_utf8_lossy(&st.stderr);
    assert_eq!(st.status.code(), Some(127), "not found, as a shell: {err}");
    assert!(
        err.contains("execvp on /nonexistent/program: No such file or directory"),
        "{err}"
    );
}

/// The flag tables are the one list: each command's real `--help` (the
/// binary's) names every flag of its table, and every flag the help names
/// is in the table and accepted by the parser.
#[test]
fn help_texts_name_every_option_the_parser_takes() {
    let help = |args: &[&str]| {
        let o = Command::new(pidmap_bin()).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let parses = |argv: &[&str]| {
        let argv = std::iter::once("pidmap").chain(argv.iter().copied());
        pidmap::cli::parse(argv.map(Into::into).collect())
    };
    let top = help(&["--help"]);
    let mut flags_seen = 0;
    for spec in pidmap::cli::COMMANDS {
        assert!(top.contains(&format!("  {} ", spec.name)), "{}", spec.name);
        let text = help(&[spec.name, "--help"]);
        assert_eq!(text, help(&["help", spec.name]));
        for (si, section) in spec.sections.iter().enumerate() {
            for f in section.flags {
                let shown = match (f.short, f.value) {
                    (Some(c), Some(v)) => format!("-{c}, {} {v}", f.long),
                    (None, Some(v)) => format!("{} {v}", f.long),
                    (_, None) => f.long.to_string(),
                };
                assert!(text.contains(&shown), "{} --help lacks {shown}", spec.name);
                let mut argv = spec.argv_prefix(si);
                argv.extend(f.example_args());
                assert!(parses(&argv).is_ok(), "{argv:?}: {:?}", parses(&argv));
                flags_seen += 1;
            }
        }
        for w in pidmap::cli::flag_words(&text) {
            if w == "-h" || w == "--help" {
                continue;
            }
            let accepted = (0..spec.sections.len()).any(|si| {
                let f = spec
                    .flags()
                    .find(|f| f.long == w || f.short.is_some_and(|c| format!("-{c}") == w));
                f.is_some_and(|f| {
                    let mut argv = spec.argv_prefix(si);
                    argv.extend([w.as_str()]);
                    argv.extend(f.value.map(|_| f.example));
                    parses(&argv).is_ok()
                })
            });
            assert!(
                accepted,
                "{} --help names {w}, which its parser refuses",
                spec.name
            );
        }
    }
    assert!(flags_seen >= 40, "{flags_seen} flags");
    let run = help(&["run", "--help"]);
    assert!(run.contains("--wake-every-request"), "{run}");
    for c in ["audit", "diff"] {
        assert!(help(&[c, "--help"]).contains("Exit status"), "{c}");
    }
    assert_eq!(
        help(&["--version"]),
        format!("pidmap {}\n", env!("CARGO_PKG_VERSION"))
    );
    let bad = Command::new(pidmap_bin())
        .args(["run", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&bad.stderr),
        "pidmap: unknown option \"--bogus\"\nSee `pidmap run --help`.\n"
    );
}

#[test]
fn bench_delete_shows_the_leak_and_its_fix() {
    if !common::bpf_available() {
        return;
    }
    let out = common::output_within(
        Command::new(pidmap_bin()).args([
            "bench",
            "delete",
            "--keys",
            "20000",
            "--missing-pct",
            "1",
            "--reps",
            "1",
            "--json",
        ]),
        common::RUN,
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 5);
    let get = |s: &str| {
        rows.iter()
            .find(|r| r.contains(&format!("\"strategy\":\"{s}\"")))
            .unwrap()
            .to_string()
    };
    for r in &rows {
        for k in [
            "strategy",
            "map",
            "keys",
            "missing_pct",
            "pattern",
            "ns_per_key",
            "syscalls",
            "left_in_map",
        ] {
            assert!(r.contains(&format!("\"{k}\":")), "{r} lacks {k}");
        }
        assert_eq!(r.matches("\":").count(), 8, "exactly the 8 keys: {r}");
    }
    for s in ["resume", "resume-single", "reissue-all", "single"] {
        assert!(get(s).contains("\"left_in_map\":0}"), "{}", get(s));
    }
    assert!(
        !get("batch-once").contains("\"left_in_map\":0}"),
        "batch-once leaks"
    );
}

#[test]
fn sighup_resyncs_and_sigterm_stops_cleanly() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("hup");
    let mut target = common::Helper::start();
    let pid = target.pid();
    let mut a = common::spawn(
        Command::new(pidmap_bin())
            .args(["run", "--pin-dir", pins.to_str().unwrap()])
            .args(["--pid", &pid.to_string()])
            .stderr(Stdio::piped()),
    );
    let mut err = common::Lines::new(a.stderr.take().unwrap());
    err.expect("serving: 1 process tracked", WAIT);
    let trie = MapHandle::from_pin(&pins.join(pidmap::abi::TRIE_NAME)).unwrap();
    assert!(common::keys_match(&trie, pid));
    // a library mapped while the agent is not looking: no event says so
    target.dlopen_plugin();
    assert!(
        !common::keys_match(&trie, pid),
        "nothing synced the library yet"
    );
    signal(&a, libc::SIGHUP);
    err.expect("SIGHUP: re-syncing everything", WAIT);
    // the log line comes before the resync: the keys are what shows it
    common::wait_until("the library's keys after SIGHUP", WAIT, || {
        common::keys_match(&trie, pid)
    });
    signal(&a, libc::SIGTERM);
    err.expect("signal 15: shutting down", WAIT);
    assert_eq!(a.wait().unwrap().code(), Some(0));
    assert!(!pins.exists());
}

#[test]
fn audit_finds_every_kind_of_leak_in_kept_pins() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("leaks");
    let mut a = agent(&["--pin-dir", pins.to_str().unwrap(), "--keep-pins"]);
    signal(&a, libc::SIGTERM);
    assert_eq!(a.wait().unwrap().code(), Some(0));
    let trie = MapHandle::from_pin(&pins.join(pidmap::abi::TRIE_NAME)).unwrap();
    let events = MapHandle::from_pin(&pins.join(pidmap::abi::EVENTS_NAME)).unwrap();
    let (code, text) = audit(&pins, &[]);
    assert_eq!(code, 0, "kept pins start clean: {text}");
    let plant = |pid: u32, marker: Option<u64>, n: u64| {
        for i in 0..n {
            let k = PidPage::new(pid, 0x4000_0000 + i * 0x1000, 52);
            trie.update(&k, &MappingInfo::new(9, 0).unwrap(), BPF_ANY)
                .unwrap();
        }
        if let Some(start) = marker {
            trie.update(&PidPage::marker(pid), &MappingInfo::marker(start), BPF_ANY)
                .unwrap();
        }
    };
    let gone = dead_pid();
    plant(gone, Some(12345), 2);
    let reused = common::spawn(Command::new("/bin/sleep").arg("1000"));
    let start = pidmap::proc::stat::start_time(reused.id()).unwrap();
    plant(reused.id(), Some(start + 1), 3);
    let orphan = common::spawn(Command::new("/bin/sleep").arg("1000"));
    plant(orphan.id(), None, 4);
    for k in [(gone as u64) << 32 | gone as u64, 1 << 32 | 2] {
        events.update(&k, &1u8, BPF_ANY).unwrap();
    }
    let (code, text) = audit(&pins, &[]);
    assert_eq!(code, 1, "{text}");
    for want in [
        format!("pid {gone} 3 keys: process gone"),
        format!(
            "pid {} 4 keys: pid reused (marker start {}, process start {start})",
            reused.id(),
            start + 1
        ),
        format!("pid {} 4 keys: keys without a marker", orphan.id()),
        "pid_events: 2 pending".to_string(),
        "leaked keys: 11".to_string(),
    ] {
        assert!(text.contains(&want), "{want:?} in:\n{text}");
    }
    let (_, json) = audit(&pins, &["--json"]);
    for r in ["gone", "reused", "no_marker"] {
        assert!(json.contains(&format!("\"reason\":\"{r}\"")), "{r}: {json}");
    }
    let (code, text) = audit(&pins, &["--repair"]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("repaired: 11 deleted, 0 already absent, 0 failed"),
        "{text}"
    );
    let (code, text) = audit(&pins, &[]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("pid_events: 2 pending"), "{text}");
}
