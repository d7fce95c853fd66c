//! What a user reads: each message says what is wrong and what to do, and
//! hints at privileges only when privileges are the cause. Run as root and,
//! for the privilege messages, as uid 65534 (through setpriv).

mod common;

use common::{output_within, pidmap_bin, WAIT};
use std::path::PathBuf;
use std::process::Command;

const NOBODY: [&str; 4] = ["--reuid=65534", "--regid=65534", "--clear-groups", "--"];

/// (exit code, stdout, stderr) of `cmd`, within the default deadline.
fn outcome(cmd: &mut Command) -> (i32, String, String) {
    let o = output_within(cmd, common::RUN);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn pidmap(args: &[&str]) -> (i32, String, String) {
    outcome(Command::new(pidmap_bin()).args(args))
}

/// A copy of the binary that uid 65534 may execute (the build directory
/// may be closed to it). Made once, by install(1): no descriptor open for
/// writing in this process, so no concurrent fork makes it "text busy".
fn nobody_bin() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let d = common::scratch("nobody-bin");
        let b = d.join("pidmap");
        let st = Command::new("install")
            .args(["-m", "0755", "-D"])
            .arg(pidmap_bin())
            .arg(&b)
            .status()
            .unwrap();
        assert!(st.success(), "install {}", b.display());
        let st = Command::new("chmod").arg("0755").arg(&d).status().unwrap();
        assert!(st.success());
        b
    })
    .clone()
}

/// `pidmap ARGS` as uid 65534, with `env` added.
fn as_nobody(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    outcome(
        Command::new("setpriv")
            .args(NOBODY)
            .arg(nobody_bin())
            .args(args)
            .envs(env.iter().copied()),
    )
}

/// Runs `pidmap ARGS` with a pseudo-terminal as stdin, stdout and stderr
/// (python3's pty module); when `signal` is given, sends it to pidmap once
/// `when` has appeared on the terminal. Returns (exit code, terminal text).
fn in_pty(args: &[&str], when: &str, signal: i32) -> (i32, String) {
    const SCRIPT: &str = r#"
import os, pty, sys
when, sig, argv = sys.argv[1].encode(), int(sys.argv[2]), sys.argv[3:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out, sent = b"", False
while True:
    try:
        b = os.read(fd, 4096)
    except OSError:
        break
    if not b:
        break
    out += b
    if sig and not sent and when in out:
        os.kill(pid, sig)
        sent = True
_, st = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.stderr.write(str(os.waitstatus_to_exitcode(st)))
"#;
    let o = output_within(
        Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(when)
            .arg(signal.to_string())
            .arg(pidmap_bin())
            .args(args),
        common::RUN,
    );
    let code = String::from_utf8_lossy(&o.stderr)
        .trim()
        .parse()
        .unwrap_or(-1);
    (code, String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn no_command_prints_the_usage_on_stderr_and_exits_2() {
    let (code, out, err) = pidmap(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "stdout: {out}");
    assert!(err.starts_with("pidmap: a command is needed\n"), "{err}");
    assert!(err.contains("Usage: pidmap <COMMAND> [OPTIONS]"), "{err}");
    let (code, out, err) = pidmap(&["help", "nosuch"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "stdout: {out}");
    assert_eq!(
        err,
        "pidmap: help: unknown command \"nosuch\"; the commands are run, profile, audit, bench, diff\n\
         See `pidmap --help`.\n"
    );
    // help itself still succeeds
    let (code, out, _) = pidmap(&["help", "run"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("pidmap run"), "{out}");
}

/// As root, a command that cannot be executed is not a matter of
/// privileges: no hint at root or capabilities.
#[test]
fn as_root_a_non_executable_command_gets_no_privilege_hint() {
    if !common::bpf_available() {
        return;
    }
    let script = common::scratch("noexec").join("script.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let pins = common::pin_dir("noexec");
    let (code, _, err) = pidmap(&[
        "run",
        "--pin-dir",
        pins.to_str().unwrap(),
        "--",
        script.to_str().unwrap(),
    ]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("Permission denied (os error 13)"), "{err}");
    for hint in ["run as root", "CAP_BPF", "CAP_PERFMON"] {
        assert!(!err.contains(hint), "a privilege hint as root: {err}");
    }
}

/// As uid 65534, `run` and `profile` say plainly that they need root or
/// CAP_BPF and CAP_PERFMON; nothing blames BTF or the kernel version, and
/// no raw libbpf line reaches stderr (libbpf's prints are debug lines).
#[test]
fn as_nobody_run_and_profile_say_they_need_privileges() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("nobody");
    let p = pins.to_str().unwrap();
    const GOLDEN: &str = "pidmap: error: loading BPF programs needs root, or the capabilities \
         CAP_BPF and CAP_PERFMON, which this process (uid 65534) lacks: \
         bpf_object__load on pidmap: Operation not permitted (os error 1)\n";
    for args in [
        &["run", "--pin-dir", p][..],
        &[
            "profile",
            "--pin-dir",
            p,
            "--duration",
            "1",
            "-o",
            "/dev/null",
        ][..],
    ] {
        let (code, _, err) = as_nobody(args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.ends_with(GOLDEN), "{args:?}: {err}");
        for blame in ["BTF", "Linux >=", "libbpf", "RLIMIT_MEMLOCK", "CONFIG_BPF"] {
            assert!(!err.contains(blame), "{args:?}: {blame:?} in {err}");
        }
        assert!(!pins.exists(), "{args:?}: a failed start left {p}");
    }
    // libbpf's own lines are there, at debug level, through our logger
    let (_, _, err) = as_nobody(&["run", "--pin-dir", p], &[("RUST_LOG", "debug")]);
    let libbpf: Vec<&str> = err.lines().filter(|l| l.contains("libbpf: ")).collect();
    assert!(!libbpf.is_empty(), "no libbpf line at debug level: {err}");
    for l in libbpf {
        assert!(
            l.starts_with('[') && l.contains(" DEBUG"),
            "raw libbpf line {l:?}"
        );
    }
}

/// `audit` of a pin directory uid 65534 may not read names the directory
/// and the errno (not "no pinned map ... is an agent running?"); with
/// `--json` the error is also JSON on stdout.
#[test]
fn audit_of_an_unreadable_pin_dir_names_it_and_the_errno() {
    if !common::bpf_available() {
        return;
    }
    use std::os::unix::fs::DirBuilderExt;
    let pins = common::pin_dir("closed");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&pins)
        .unwrap();
    let p = pins.to_str().unwrap();
    let (code, out, err) = as_nobody(&["audit", "--pin-dir", p], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err,
        format!(
            "pidmap: error: open(O_DIRECTORY|O_NOFOLLOW) on {p}: Permission denied (os error 13): \
             the directory belongs to uid 0 with mode 0700, which gives uid 65534 no access; \
             run this as uid 0 (the user of the agent that made it)\n"
        )
    );
    let (code, out, err) = as_nobody(&["audit", "--json", "--pin-dir", p], &[]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        out,
        format!(
            "{{\"error\":\"open(O_DIRECTORY|O_NOFOLLOW) on {p}: Permission denied (os error 13): \
             the directory belongs to uid 0 with mode 0700, which gives uid 65534 no access; \
             run this as uid 0 (the user of the agent that made it)\"}}\n"
        )
    );
    // a missing directory, as JSON too
    let missing = format!("{p}-missing");
    let (code, out, _) = pidmap(&["audit", "--json", "--pin-dir", &missing]);
    assert_eq!(code, 2);
    assert!(
        out.starts_with(&format!("{{\"error\":\"no pinned map {missing}/")),
        "{out}"
    );
}

/// A pid whose maps cannot be read (pid 1 on some hosts: EACCES even for
/// root) is normal: no warning, a counter in the metrics, one debug line.
#[test]
fn unreadable_maps_are_counted_not_warned() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("unreadable");
    let metrics = common::scratch("unreadable").join("m.prom");
    let (mut agent, log) = common::start_serving_logged(&[
        "run",
        "--all",
        "--pin-dir",
        pins.to_str().unwrap(),
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    let text = std::fs::read_to_string(&metrics).unwrap();
    nix_kill(agent.id(), libc::SIGTERM);
    agent.wait().unwrap();
    let log = log.join().unwrap();
    // other warnings may come from other processes on a shared host; none
    // may be about a sync that could not read the maps
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && (l.contains("sync of pid") || l.contains("denied")))
        .collect();
    assert!(warned.is_empty(), "unreadable maps warned: {warned:#?}");
    let line = text
        .lines()
        .find(|l| l.starts_with("pidmap_syncs_unreadable_total "))
        .unwrap_or_else(|| panic!("no syncs_unreadable counter: {text}"));
    let n: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let pid1 = std::fs::File::open("/proc/1/maps").err();
    if pid1.is_some_and(|e| e.raw_os_error() == Some(libc::EACCES)) {
        assert!(n >= 1, "pid 1's maps are unreadable here, yet {line}");
    } else {
        eprintln!("pid 1's maps are readable here: the counter is {n}");
    }
}

fn nix_kill(pid: u32, sig: i32) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}

/// The summary line names the format written; binary output is refused to
/// a terminal without -o, with exit status 2.
#[test]
fn profile_names_its_format_and_keeps_binary_off_a_terminal() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("format");
    let dir = common::scratch("format");
    let busy = "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done";
    for (format, file, name) in [
        ("pprof", "a.pb.gz", "pprof profile"),
        ("svg", "a.svg", "SVG flame graph"),
        ("folded", "a.folded", "folded stacks"),
    ] {
        let out = dir.join(file);
        let (code, _, err) = pidmap(&[
            "profile",
            "--pin-dir",
            pins.to_str().unwrap(),
            "--format",
            format,
            "-o",
            out.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            busy,
        ]);
        assert_eq!(code, 0, "{format}: {err}");
        assert!(
            err.contains(&format!(", {name} in {}\n", out.display())),
            "{format}: {err}"
        );
    }
    let (code, text) = in_pty(
        &[
            "profile",
            "--pin-dir",
            pins.to_str().unwrap(),
            "--format",
            "pprof",
            "--",
            "/bin/true",
        ],
        "",
        0,
    );
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(
            "pidmap: error: --format pprof writes gzip-compressed binary data: refused to \
             write it to a terminal; give -o FILE (or redirect standard output)"
        ),
        "{text}"
    );
    assert!(
        !text.contains("\u{1f}\u{fffd}"),
        "gzip bytes on the terminal"
    );
}

/// Ctrl-C or SIGTERM during `profile` on a terminal: the progress line is
/// ended before anything else is written.
#[test]
fn the_progress_line_ends_on_a_signal() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("progress");
    let out = common::scratch("progress").join("p.folded");
    for (sig, name) in [(libc::SIGINT, "signal 2"), (libc::SIGTERM, "signal 15")] {
        let (code, text) = in_pty(
            &[
                "profile",
                "--pin-dir",
                pins.to_str().unwrap(),
                "--duration",
                "60",
                "-o",
                out.to_str().unwrap(),
            ],
            " s / 60 s, ",
            sig,
        );
        // the status after a signal is the signal handling's business
        // (0, or 128 + the signal); this test is about the terminal
        assert!(
            code == 0 || code == 128 + sig,
            "{name}: status {code}: {text}"
        );
        let line = text
            .split('\n')
            .find(|l| l.contains(&format!("{name}: shutting down")))
            .unwrap_or_else(|| panic!("no shutdown line: {text:?}"));
        assert!(
            !line.contains(" s / 60 s, "),
            "the log line follows the progress line on one line: {line:?}"
        );
    }
}

#[test]
fn metrics_file_in_a_missing_directory_is_refused_at_start() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("nometricsdir");
    let (code, _, err) = pidmap(&[
        "run",
        "--pin-dir",
        pins.to_str().unwrap(),
        "--metrics-file",
        "/nonexistent/dir/m.prom",
        "--",
        "/bin/true",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err,
        "pidmap: error: --metrics-file /nonexistent/dir/m.prom: directory /nonexistent/dir does \
         not exist: create it (systemd: RuntimeDirectory=) or choose another --metrics-file\n"
    );
    assert!(!pins.exists());
    // a directory that exists but takes no file (bpffs holds no regular
    // files): refused at start too, not a warning every 5 s
    use std::os::unix::fs::DirBuilderExt;
    let nofiles = common::pin_dir("metricsonbpffs");
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&nofiles)
        .unwrap();
    let m = nofiles.join("m.prom");
    let (code, _, err) = pidmap(&[
        "run",
        "--pin-dir",
        pins.to_str().unwrap(),
        "--metrics-file",
        m.to_str().unwrap(),
        "--",
        "/bin/true",
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err,
        format!(
            "pidmap: error: --metrics-file {}: cannot create a file in {}: Operation not \
             permitted (os error 1): choose a writable directory (systemd: RuntimeDirectory=)\n",
            m.display(),
            nofiles.display()
        )
    );
    assert!(!pins.exists());
}

#[test]
fn diff_refuses_an_empty_file_and_an_svg() {
    let dir = common::scratch("diffin");
    let empty = dir.join("empty.folded");
    std::fs::write(&empty, "").unwrap();
    let good = dir.join("good.folded");
    std::fs::write(&good, "w;main 3\n").unwrap();
    let svg = dir.join("flame.svg");
    std::fs::write(
        &svg,
        "<?xml version=\"1.0\" standalone=\"no\"?>\n<svg version=\"1.1\" \
         xmlns=\"http://www.w3.org/2000/svg\"><text>flamegraph</text></svg>\n",
    )
    .unwrap();
    let (code, out, err) = pidmap(&["diff", empty.to_str().unwrap(), good.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert_eq!(
        err,
        format!(
            "pidmap: error: {} is empty, not a folded or pprof profile: nothing to compare\n",
            empty.display()
        )
    );
    let (code, _, err) = pidmap(&["diff", good.to_str().unwrap(), svg.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err,
        format!(
            "pidmap: error: {} is an SVG, not a folded or pprof profile: give diff the output \
             of `pidmap profile --format folded` or `--format pprof`\n",
            svg.display()
        )
    );
}

#[test]
fn the_duration_range_is_stated() {
    for bad in ["0", "-1", "1e8", "10000000.5"] {
        let (code, _, err) = pidmap(&["profile", "--duration", bad]);
        assert_eq!(code, 2, "{bad}: {err}");
        assert!(
            err.contains("s is out of range: more than 0 and at most 10000000 s (about 115 days)"),
            "{bad}: {err}"
        );
        assert!(!err.contains("more than 0\n"), "{bad}: {err}");
    }
}

/// One process is "1 process", in the serving line and the audit.
#[test]
fn counts_agree_with_their_nouns() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("plural");
    let mut sleeper = common::spawn(Command::new("/bin/sleep").arg("1000"));
    let pid = sleeper.id().to_string();
    let (mut agent, log) = common::start_serving_logged(&[
        "run",
        "--keep-pins",
        "--pin-dir",
        pins.to_str().unwrap(),
        "--pid",
        &pid,
    ]);
    nix_kill(agent.id(), libc::SIGTERM);
    agent.wait().unwrap();
    let log = log.join().unwrap();
    assert!(log.contains("serving: 1 process tracked, "), "{log}");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    common::wait_until("the sleeper's exit", WAIT, || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    let (code, out, err) = pidmap(&["audit", "--pin-dir", pins.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(" 1 pid, 1 marker;"), "{out}");
}

/// A usage error of `audit --json` stays text on stderr (as documented):
/// the command line was not understood, so nothing is promised on stdout.
#[test]
fn a_usage_error_of_audit_json_is_text_on_stderr() {
    let (code, out, err) = pidmap(&["audit", "--json", "--bogus"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert_eq!(
        err,
        "pidmap: unknown option \"--bogus\"\nSee `pidmap audit --help`.\n"
    );
}
