//! User-facing error messages, each triggered for real (root): the message
//! names what failed and how to fix it, and the exit status is right.

mod common;

use common::pidmap_bin;
use pidmap::sys::bpf::{MapHandle, MAP_TYPE_HASH};
use std::process::Command;

/// Runs pidmap; returns (exit code, stderr).
fn fails(args: &[&str]) -> (i32, String) {
    let o = Command::new(pidmap_bin()).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs pidmap under RLIMIT_NOFILE = nofile (soft and hard); returns
/// (exit code, stderr). Descriptors the test process inherited (from a
/// shell, a CI runner) are closed at exec, so the count a start needs does
/// not depend on who ran the tests.
fn with_nofile(nofile: u32, args: &[&str]) -> (i32, String) {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(pidmap_bin())
        .args(args);
    // SAFETY: close_range only changes descriptor flags in the child; it
    // allocates nothing and is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = cmd.output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn expect(args: &[&str], code: i32, needles: &[&str]) {
    let (c, err) = fails(args);
    assert_eq!(c, code, "{args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: {err:?} lacks {n:?}");
    }
}

#[test]
fn usage_errors_name_the_option_and_the_help() {
    expect(
        &["frobnicate"],
        2,
        &["unknown command \"frobnicate\"", "See `pidmap --help`."],
    );
    expect(
        &["run", "--pid"],
        2,
        &["--pid needs a value", "See `pidmap run --help`."],
    );
    expect(&["run", "--pid", "x"], 2, &["--pid: invalid value \"x\""]);
    expect(
        &["run", "--all", "--pid", "1"],
        2,
        &["choose one of --all, --pid and -- CMD"],
    );
    expect(
        &["run", "--ring-pages", "3"],
        2,
        &["--ring-pages: 3 is not a power of two up to 4096"],
    );
    expect(
        &["profile", "--freq", "0"],
        2,
        &[
            "--freq: 0 is not in 1..9999",
            "See `pidmap profile --help`.",
        ],
    );
    expect(
        &["profile", "--format", "png"],
        2,
        &["--format: folded, pprof or svg"],
    );
    expect(
        &["bench", "delete", "--map", "array"],
        2,
        &["--map: lpm or hash"],
    );
    expect(&["diff", "one"], 2, &["diff takes two profiles: BASE NEW"]);
    expect(
        &["audit", "--bogus"],
        2,
        &["unknown option \"--bogus\"", "See `pidmap audit --help`."],
    );
}

#[test]
fn audit_without_pins_says_what_to_check() {
    expect(
        &["audit", "--pin-dir", "/sys/fs/bpf/pidmap-no-such-dir"],
        2,
        &[
            "no pinned map /sys/fs/bpf/pidmap-no-such-dir/pid_page_to_mapping_info",
            "is an agent running with --pin-dir",
        ],
    );
}

#[test]
fn a_pin_dir_off_bpffs_is_refused_with_the_fix() {
    if !common::bpf_available() {
        return;
    }
    let d = common::scratch("notbpffs").join("pins");
    expect(
        &["run", "--pin-dir", d.to_str().unwrap()],
        2,
        &["is not on a bpffs", "mount -t bpf bpf"],
    );
}

#[test]
fn an_incompatible_pinned_map_is_refused() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("layout");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&pins)
        .unwrap();
    let wrong = MapHandle::create(MAP_TYPE_HASH, "wrong", 8, 8, 16, 0).unwrap();
    let path = pins.join(pidmap::abi::TRIE_NAME);
    wrong.pin(&path).unwrap();
    expect(
        &["run", "--pin-dir", pins.to_str().unwrap()],
        2,
        &[
            "has type 1 key 8 B value 8 B, expected type 11 key 16 B value 16 B",
            "not pidmap's layout",
            "rm ",
        ],
    );
    expect(
        &["audit", "--pin-dir", pins.to_str().unwrap()],
        2,
        &["not pidmap's layout"],
    );
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_dir(&pins).unwrap();
}

#[test]
fn a_missing_pid_is_named() {
    if !common::bpf_available() {
        return;
    }
    let mut c = Command::new("/bin/true").spawn().unwrap();
    let pid = c.id().to_string();
    c.wait().unwrap();
    let pins = common::pin_dir("nopid");
    expect(
        &["run", "--pin-dir", pins.to_str().unwrap(), "--pid", &pid],
        2,
        &[&format!("--pid {pid}: no such process")],
    );
    assert!(!pins.exists(), "a failed start leaves no pins");
}

#[test]
fn missing_privileges_say_which_capabilities() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("noprivs");
    let o = Command::new("setpriv")
        .args(["--bounding-set", "-all", "--"])
        .arg(pidmap_bin())
        .args(["run", "--pin-dir", pins.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("Operation not permitted"), "{err}");
    // root without capabilities: privileges are the cause, and said first
    assert!(
        err.contains(
            "needs root, or the capabilities CAP_BPF and CAP_PERFMON, which this process \
             (uid 0) lacks"
        ),
        "{err}"
    );
    assert!(!err.contains("BTF"), "{err}");
    let _ = std::fs::remove_dir(&pins);
}

#[test]
fn unwritable_outputs_and_unreadable_inputs_are_named() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("output");
    expect(
        &[
            "profile",
            "--pin-dir",
            pins.to_str().unwrap(),
            "-o",
            "/nonexistent/dir/p.folded",
            "--",
            "/bin/true",
        ],
        2,
        &["creating /nonexistent/dir/p.folded: No such file or directory"],
    );
    let garbage = common::scratch("garbage").join("g.pb.gz");
    std::fs::write(&garbage, [0x1f, 0x8b, 0, 1, 2, 3]).unwrap();
    expect(
        &["diff", garbage.to_str().unwrap(), garbage.to_str().unwrap()],
        2,
        &["g.pb.gz: gzip:"],
    );
}

#[test]
fn a_pin_dir_that_cannot_be_created_is_named() {
    if !common::bpf_available() {
        return;
    }
    // the parent is a pinned map (a file on bpffs), not a directory
    let pins = common::pin_dir("notdir");
    std::fs::create_dir_all(&pins).unwrap();
    let m = MapHandle::create(MAP_TYPE_HASH, "plain", 8, 8, 1, 0).unwrap();
    m.pin(&pins.join("file")).unwrap();
    let bad = pins.join("file").join("pins");
    expect(
        &["run", "--pin-dir", bad.to_str().unwrap()],
        2,
        &[&format!(
            "creating pin directory {}: Not a directory",
            bad.display()
        )],
    );
    std::fs::remove_file(pins.join("file")).unwrap();
    std::fs::remove_dir(&pins).unwrap();
    // only the last component is made: a missing parent is named
    let deep = pins.join("pins");
    expect(
        &["run", "--pin-dir", deep.to_str().unwrap(), "--", "/bin/true"],
        2,
        &[&format!(
            "creating pin directory {}: its parent {} does not exist: pidmap creates only the last component",
            deep.display(),
            pins.display()
        )],
    );
    assert!(!pins.exists());
}

#[test]
fn an_empty_churn_workload_is_refused() {
    expect(
        &["bench", "churn", "--workload", " "],
        2,
        &["bench churn: --workload is empty"],
    );
}

#[test]
fn a_failed_start_keeps_the_pins_an_earlier_run_left() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("keepold");
    let st = Command::new(pidmap_bin())
        .args([
            "run",
            "--keep-pins",
            "--pin-dir",
            pins.to_str().unwrap(),
            "--",
            "/bin/true",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let trie = pins.join(pidmap::abi::TRIE_NAME);
    assert!(trie.exists());
    let (code, err) = with_nofile(12, &["run", "--pin-dir", pins.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        trie.exists(),
        "the earlier run's pins stay for the next start or the audit"
    );
    pidmap::maps::loader::remove_pins(&pins);
}

/// What the errors of a start that runs out of descriptors name, between
/// them: each call that takes one, and the hint of the load.
const STARTUP_FD_CALLS: [&str; 14] = [
    "bpf_object__open_mem on pidmap",
    "bpf_object__load on pidmap",
    "raise RLIMIT_NOFILE",
    "bpf_program__attach on pidmap_exec",
    "bpf_program__attach on pidmap_fork",
    "dup on fd of map",
    "epoll_create",
    "eventfd (mio waker)",
    "signalfd",
    "read /sys/devices/system/cpu/online",
    "perf_event_open on BPF_OUTPUT, cpu",
    "perf_event_open on CPU_CLOCK, cpu",
    "bpf_program__attach_perf_event on pidmap_sample",
    "pipe2 on command gate",
];

/// Every call that takes a file descriptor, made to fail in turn: `run`
/// and `profile` are started under RLIMIT_NOFILE = n for n from 4 up to the
/// first n that succeeds. Each failure is exit status 2 (never a panic or a
/// signal), one error line naming the call and the errno, and no pins left;
/// together the failures name every descriptor-taking call of a start.
#[test]
fn each_call_that_runs_out_of_descriptors_is_named() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("fdsweep");
    let p = pins.to_str().unwrap();
    let modes: [&[&str]; 2] = [
        &["run", "--pin-dir", p, "--", "/bin/true"],
        &[
            "profile",
            "--pin-dir",
            p,
            "-o",
            "/dev/null",
            "--",
            "/bin/true",
        ],
    ];
    let mut seen = std::collections::BTreeSet::new();
    for args in modes {
        let mut succeeded = false;
        for n in 4..=1024 {
            let (code, err) = with_nofile(n, args);
            match code {
                0 => {
                    succeeded = true;
                    break;
                }
                2 => {
                    let lines: Vec<&str> = err
                        .lines()
                        .filter(|l| l.starts_with("pidmap: error:"))
                        .collect();
                    assert_eq!(lines.len(), 1, "{args:?} nofile {n}: {err}");
                    assert!(
                        lines[0].contains("Too many open files (os error 24)"),
                        "{args:?} nofile {n}: {err}"
                    );
                    assert!(!pins.exists(), "{args:?} nofile {n}: pins left: {err}");
                    seen.insert(lines[0].to_string());
                }
                other => panic!("{args:?} nofile {n}: status {other}: {err}"),
            }
        }
        assert!(succeeded, "{args:?} never started: {seen:#?}");
    }
    for call in STARTUP_FD_CALLS {
        assert!(
            seen.iter().any(|m| m.contains(call)),
            "no failure named {call:?}: {seen:#?}"
        );
    }
}

/// A pids cgroup of its own (v1 hierarchy, or v2 with the pids
/// controller), where `pids.max` makes fork and thread creation fail.
struct PidsCgroup(std::path::PathBuf);

impl PidsCgroup {
    fn new(name: &str) -> PidsCgroup {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let mut base = None;
        for l in mounts.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            if f[2] == "cgroup" && f[3].split(',').any(|o| o == "pids") {
                base = Some(std::path::PathBuf::from(f[1]));
                break;
            }
            if f[2] == "cgroup2" {
                let root = std::path::PathBuf::from(f[1]);
                let ctl =
                    std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
                if ctl.split_whitespace().any(|c| c == "pids") {
                    let _ = std::fs::write(root.join("cgroup.subtree_control"), "+pids");
                    base = Some(root);
                }
            }
        }
        let base = base.unwrap_or_else(|| {
            let d = std::env::temp_dir().join(format!("pidmap-pids-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            let st = Command::new("mount")
                .args(["-t", "cgroup", "-o", "pids", "pidmap-pids"])
                .arg(&d)
                .status()
                .unwrap();
            assert!(st.success(), "no pids cgroup controller to mount");
            d
        });
        let dir = base.join(format!("pidmap-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).unwrap();
        PidsCgroup(dir)
    }

    /// Runs pidmap ARGS inside the cgroup with `pids.max` = max tasks
    /// (threads count); returns (pid, exit code, stderr).
    fn run(&self, max: u32, args: &[&str]) -> (u32, i32, String) {
        std::fs::write(self.0.join("pids.max"), max.to_string()).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec "$@""#)
            .arg("sh")
            .arg(&self.0)
            .arg(pidmap_bin())
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let o = child.wait_with_output().unwrap();
        (
            pid,
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fork and thread creation that fail (a pids cgroup at its limit) are
/// named: the command of `run --`, the agent, each thread and the workload
/// of `bench churn`; and a failed bench stops its agent and leaves no pins.
#[test]
fn failed_forks_and_threads_are_named() {
    if !common::bpf_available() {
        return;
    }
    let cg = PidsCgroup::new("forks");
    let pins = common::pin_dir("forks");
    // the agent and its two maps worker threads: the command's fork fails
    let (_, code, err) = cg.run(
        3,
        &[
            "run",
            "--pin-dir",
            pins.to_str().unwrap(),
            "--",
            "/bin/true",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("fork on /bin/true: Resource temporarily unavailable (os error 11)"),
        "{err}"
    );
    assert!(!pins.exists(), "{err}");
    // tasks in the cgroup: the bench, the agent, the agent's two maps
    // worker threads (started before it serves), the log drain thread, the
    // reaper thread, then the first workload process
    for (max, what) in [
        (1, "bench churn: starting the agent (pidmap run): Resource temporarily unavailable"),
        (2, "spawning the maps worker thread (pidmap-maps): Resource temporarily unavailable"),
        (3, "spawning the maps worker thread (pidmap-maps): Resource temporarily unavailable"),
        (4, "bench churn: spawning the log drain thread: Resource temporarily unavailable"),
        (5, "bench churn: spawning the reaper thread: Resource temporarily unavailable"),
        (6, "bench churn: starting workload process 1 (/bin/sleep): Resource temporarily unavailable"),
    ] {
        let (pid, code, err) = cg.run(
            max,
            &["bench", "churn", "--procs", "2", "--delete-strategy", "resume"],
        );
        assert_eq!(code, 2, "pids.max {max}: {err}");
        assert!(err.contains(what), "pids.max {max}: {err}");
        let bench_pins = format!("/sys/fs/bpf/pidmap-churn-{pid}-resume");
        assert!(
            !std::path::Path::new(&bench_pins).exists(),
            "pids.max {max}: a failed bench left its pins: {err}"
        );
        let metrics = std::env::temp_dir().join(format!("pidmap-churn-{pid}-resume.prom"));
        assert!(
            !metrics.exists(),
            "pids.max {max}: a failed bench left its metrics file: {err}"
        );
    }
    // an agent that cannot start: the bench relays its error. The limit
    // at which the agent (not the bench) is the first to run out depends
    // on the CPU count (one ring per CPU), so it is searched for.
    let relay =
        "bench churn: the agent (pidmap run) ended before serving, exit status: 2: pidmap: error: ";
    let mut relayed = None;
    for n in 4..=256 {
        let (code, err) = with_nofile(
            n,
            &[
                "bench",
                "churn",
                "--procs",
                "1",
                "--delete-strategy",
                "resume",
            ],
        );
        if code == 0 {
            break;
        }
        assert_eq!(code, 2, "nofile {n}: {err}");
        assert!(
            err.contains("Too many open files (os error 24)"),
            "nofile {n}: {err}"
        );
        if err.contains(relay) {
            relayed = Some(err);
            break;
        }
    }
    let err = relayed.expect("no RLIMIT_NOFILE made the agent fail while the bench started");
    let agent_error = &err[err.find(relay).unwrap() + relay.len()..];
    assert!(
        STARTUP_FD_CALLS
            .iter()
            .any(|call| agent_error.contains(call)),
        "the relayed error names no call: {err}"
    );
    expect(
        &["bench", "churn", "--procs", "1", "--workload", "/nonexistent/workload"],
        2,
        &["bench churn: starting workload process 1 (/nonexistent/workload): No such file or directory"],
    );
}

/// Misuse of the BPF object API (a map or program that is not there, a
/// change after load) names the libbpf call, the map or program and the
/// errno.
#[test]
fn bpf_object_misuse_is_named() {
    if !common::bpf_available() {
        return;
    }
    use pidmap::sys::object::BpfObject;
    let mut o = BpfObject::open(pidmap::maps::loader::OBJECT, "pidmap").unwrap();
    let e = o.map_fd("nope").unwrap_err().to_string();
    assert!(
        e.starts_with("bpf_object__find_map_by_name on nope: No such file"),
        "{e}"
    );
    let e = o.set_autoload("nope", true).unwrap_err().to_string();
    assert!(
        e.starts_with("bpf_object__find_program_by_name on nope: No such file"),
        "{e}"
    );
    o.set_autoload("pidmap_sample", false).unwrap();
    o.load().unwrap();
    let e = o
        .set_max_entries(pidmap::abi::TRIE_NAME, 8)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("bpf_map__set_max_entries on pid_page_to_mapping_info: "),
        "{e}"
    );
    let e = o
        .set_autoload("pidmap_exec", false)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("bpf_program__set_autoload on pidmap_exec: "),
        "{e}"
    );
}
