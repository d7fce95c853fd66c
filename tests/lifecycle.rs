//! What a user meets around the agent's life (root, the real kernel): one
//! agent per pin directory (a second is refused, naming the holder; the
//! audit reads a held directory but does not repair it), `-- CMD` as perf
//! runs it (its own process group, SIGINT/SIGTERM/SIGHUP forwarded, the
//! command's exit status, 126/127 when it cannot start, `--duration`), and
//! no orphan on any path, SIGKILL of pidmap included.

mod common;

use common::{pidmap_bin, Guarded, Lines, WAIT};
use pidmap::sys::bpf::MapHandle;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn signal(pid: u32, sig: i32) {
    // SAFETY: sending a signal to a process this test started.
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// The children of `pid` (its main thread's, as /proc lists them).
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A process watched through its pidfd: readable once the process has
/// exited, whoever reaps it, and never confused with a later process that
/// reuses the pid. SIGKILLed when the guard drops (a failing test leaves
/// no orphan behind).
struct Watched(OwnedFd);

impl Watched {
    fn new(pid: u32) -> Watched {
        // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        assert!(
            fd >= 0,
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new fd nobody else owns.
        Watched(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    fn exited(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polling one live pollfd without waiting.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if !self.exited() {
            // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    self.0.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
    }
}

/// Fails unless the process behind `w` has exited within `timeout`.
fn gone_within(what: &str, w: &Watched, timeout: Duration) {
    common::wait_until(&format!("{what} to be gone"), timeout, || w.exited());
}

/// The exit status of `c` within `timeout`, or the test fails (and the
/// guard kills it).
fn status_within(c: &mut Guarded, timeout: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return st;
        }
        if t.elapsed() > timeout {
            panic!("pidmap (pid {}) still running after {timeout:?}", c.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `pidmap ARGS -- CMD` started in a process group of its own (as a shell
/// puts a job), serving, with the command's pid once it has exec'd.
struct WithCommand {
    pidmap: Guarded,
    log: Lines,
    child: u32,
    child_fd: Watched,
}

impl WithCommand {
    /// Checks the command is not in pidmap's process group: a signal to
    /// that group (a terminal's Ctrl-C) reaches pidmap only.
    fn own_group(&self) {
        // SAFETY: getpgid of processes this test started.
        let (pidmap, child) = unsafe {
            (
                libc::getpgid(self.pidmap.id() as i32),
                libc::getpgid(self.child as i32),
            )
        };
        assert_ne!(pidmap, child, "the command shares pidmap's process group");
        assert_eq!(child, self.child as i32, "the command leads its own group");
    }
}

fn start_with_command(args: &[&str], cmd: &[&str]) -> WithCommand {
    let mut pidmap = common::spawn(
        Command::new(pidmap_bin())
            .args(args)
            .arg("--")
            .args(cmd)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0),
    );
    let mut log = Lines::new(pidmap.stderr.take().unwrap());
    log.expect("serving:", WAIT);
    let want = Path::new(cmd[0])
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut child = 0;
    common::wait_until(
        &format!("pidmap's child to run {want}"),
        WAIT,
        || match children_of(pidmap.id()).as_slice() {
            [c] if comm(*c) == want => {
                child = *c;
                true
            }
            _ => false,
        },
    );
    let child_fd = Watched::new(child);
    WithCommand {
        pidmap,
        log,
        child,
        child_fd,
    }
}

const SIGNALS: [(i32, &str); 3] = [
    (libc::SIGINT, "SIGINT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGHUP, "SIGHUP"),
];

/// Each of SIGINT, SIGTERM and SIGHUP sent to pidmap alone reaches the
/// command (its own process group, so only forwarding can), pidmap waits
/// for it and exits 128 + the signal, and the command is gone.
fn each_signal_is_forwarded(command: &str, extra: &[&str]) {
    if !common::bpf_available() {
        return;
    }
    for (sig, name) in SIGNALS {
        let pins = common::pin_dir(&format!("fwd-{command}"));
        let mut args = vec![command, "--pin-dir", pins.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut w = start_with_command(&args, &["/bin/sleep", "1000"]);
        w.own_group();
        signal(w.pidmap.id(), sig);
        let st = status_within(&mut w.pidmap, WAIT);
        gone_within(
            &format!("{name}: the command {}", w.child),
            &w.child_fd,
            WAIT,
        );
        let log = w.log.rest().join().unwrap();
        assert_eq!(
            st.code(),
            Some(128 + sig),
            "{command}: {name} to pidmap: the command's status is 128 + {sig}: {log}"
        );
        assert!(!pins.exists(), "{name}: pins left: {log}");
    }
}

#[test]
fn run_forwards_each_signal_to_the_command_and_exits_with_its_status() {
    each_signal_is_forwarded("run", &[]);
}

#[test]
fn profile_forwards_each_signal_to_the_command_and_exits_with_its_status() {
    each_signal_is_forwarded("profile", &["-o", "/dev/null"]);
}

/// A terminal's Ctrl-C: SIGINT to pidmap's whole process group. The
/// command, in a group of its own, hears it from pidmap; pidmap exits 130
/// like a shell whose command died of SIGINT, after writing the profile.
#[test]
fn ctrl_c_in_a_terminal_ends_the_command_through_pidmap_and_exits_130() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("ctrlc");
    let out = common::scratch("ctrlc").join("p.folded");
    let mut w = start_with_command(
        &[
            "profile",
            "--pin-dir",
            pins.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        &["/bin/sleep", "1000"],
    );
    w.own_group();
    // SAFETY: signalling the process group of our own child.
    let r = unsafe { libc::kill(-(w.pidmap.id() as i32), libc::SIGINT) };
    assert_eq!(r, 0, "SIGINT to pidmap's process group");
    let st = status_within(&mut w.pidmap, WAIT);
    gone_within("the command", &w.child_fd, WAIT);
    let log = w.log.rest().join().unwrap();
    assert_eq!(st.code(), Some(130), "{log}");
    assert!(out.exists(), "the profile is written: {log}");
    assert!(
        log.contains(" samples (") || log.contains(" sample ("),
        "the summary is printed: {log}"
    );
}

/// A command that ignores the forwarded signal is SIGKILLed with its whole
/// process group after the grace period: no member is left behind.
#[test]
fn a_command_that_ignores_the_signal_is_killed_with_its_group() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("ignore");
    let mut w = start_with_command(
        &["run", "--pin-dir", pins.to_str().unwrap()],
        &[
            "/bin/sh",
            "-c",
            "trap '' TERM INT HUP; /bin/sleep 1000 & wait",
        ],
    );
    let mut grandchild = 0;
    common::wait_until("the shell's sleep", WAIT, || {
        match children_of(w.child).as_slice() {
            [g] if comm(*g) == "sleep" => {
                grandchild = *g;
                true
            }
            _ => false,
        }
    });
    let grandchild_fd = Watched::new(grandchild);
    let t = Instant::now();
    signal(w.pidmap.id(), libc::SIGTERM);
    let st = status_within(&mut w.pidmap, WAIT);
    let took = t.elapsed();
    gone_within("the shell", &w.child_fd, WAIT);
    gone_within("the shell's sleep", &grandchild_fd, WAIT);
    let log = w.log.rest().join().unwrap();
    assert_eq!(st.code(), Some(128 + libc::SIGKILL), "{log}");
    // the grace is 5 s: SIGKILL then, not at once, and not only when
    // pidmap gives up waiting (5 s later)
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "SIGKILL at the end of the grace period: {took:?}: {log}"
    );
    assert!(!pins.exists(), "{log}");
}

/// SIGKILL of pidmap itself (nothing can be forwarded) still ends the
/// command: it dies with its parent.
#[test]
fn sigkill_of_pidmap_leaves_no_orphan() {
    if !common::bpf_available() {
        return;
    }
    for command in ["run", "profile"] {
        let pins = common::pin_dir("orphan");
        let mut args = vec![command, "--pin-dir", pins.to_str().unwrap()];
        if command == "profile" {
            args.extend(["-o", "/dev/null"]);
        }
        let mut w = start_with_command(&args, &["/bin/sleep", "1000"]);
        signal(w.pidmap.id(), libc::SIGKILL);
        status_within(&mut w.pidmap, WAIT);
        gone_within(
            &format!("{command}: the command of a SIGKILLed pidmap"),
            &w.child_fd,
            WAIT,
        );
        pidmap::maps::loader::remove_pins(&pins);
    }
}

/// `profile --duration` with a command that runs longer: when the
/// duration ends the command gets SIGTERM, the profile is written and
/// pidmap exits with the command's status (143: it died of that SIGTERM).
#[test]
fn profile_duration_ends_a_longer_command_and_exits_with_its_status() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("duration");
    let out = common::scratch("duration").join("p.folded");
    let t = Instant::now();
    let w = start_with_command(
        &[
            "profile",
            "--duration",
            "1",
            "--pin-dir",
            pins.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
        &["/bin/sleep", "1000"],
    );
    let WithCommand {
        mut pidmap,
        log,
        child_fd,
        ..
    } = w;
    let st = status_within(&mut pidmap, WAIT);
    let took = t.elapsed();
    gone_within("the command after --duration", &child_fd, WAIT);
    let log = log.rest().join().unwrap();
    assert_eq!(st.code(), Some(128 + libc::SIGTERM), "{log}");
    assert!(
        took < Duration::from_secs(15),
        "ended at the duration: {took:?}"
    );
    assert!(out.exists(), "{log}");
    // the summary line: "N samples (…" ("1 sample (…" for one)
    assert!(
        log.contains(" samples (") || log.contains(" sample ("),
        "{log}"
    );
    assert!(!pins.exists(), "{log}");
}

/// Runs pidmap to its end (bounded); (status, stderr).
fn finish(args: &[&str]) -> (i32, String) {
    let o = common::output_within(Command::new(pidmap_bin()).args(args), common::RUN);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// As a shell: the command's own status passes through, 127 when it is
/// not found, 126 when it cannot be executed; the message names the
/// command and the cause, and hints at no privilege (root has them all).
#[test]
fn a_command_that_cannot_start_exits_126_or_127_naming_it() {
    if !common::bpf_available() {
        return;
    }
    let dir = common::scratch("noexec");
    let plain = dir.join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&plain, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let plain = plain.to_str().unwrap();
    for command in ["run", "profile"] {
        let pins = common::pin_dir("noexec");
        let p = pins.to_str().unwrap();
        let base: Vec<&str> = match command {
            "run" => vec!["run", "--pin-dir", p, "--"],
            _ => vec!["profile", "--pin-dir", p, "-o", "/dev/null", "--"],
        };
        let with = |cmd: &[&str]| finish(&[base.as_slice(), cmd].concat());
        let (code, err) = with(&["/bin/sh", "-c", "exit 7"]);
        assert_eq!(code, 7, "{command}: {err}");
        for (cmd, want_code, needles) in [
            (
                "/nonexistent/program",
                127,
                &["/nonexistent/program", "No such file or directory"][..],
            ),
            (
                "pidmap-no-such-command",
                127,
                &["pidmap-no-such-command", "not found"][..],
            ),
            (plain, 126, &[plain, "Permission denied"][..]),
        ] {
            let (code, err) = with(&[cmd]);
            assert_eq!(code, want_code, "{command} -- {cmd}: {err}");
            for n in needles {
                assert!(err.contains(n), "{command} -- {cmd}: {err:?} lacks {n:?}");
            }
            for wrong in ["CAP_BPF", "run as root", "is it in PATH"] {
                assert!(
                    !err.contains(wrong),
                    "{command} -- {cmd}: a misleading hint {wrong:?}: {err}"
                );
            }
            assert!(!pins.exists(), "{command} -- {cmd}: pins left: {err}");
        }
    }
}

/// Starts `pidmap ARGS` and expects it to be refused (not to serve):
/// (status, stderr).
fn refused(args: &[&str]) -> (i32, String) {
    let mut c = common::spawn(
        Command::new(pidmap_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut err = Lines::new(c.stderr.take().unwrap());
    if let Ok(seen) = err.until("serving:", WAIT) {
        panic!("{args:?} served on a directory another agent holds: {seen}");
    }
    let st = status_within(&mut c, WAIT);
    (st.code().unwrap_or(-1), err.rest().join().unwrap())
}

/// Two agents on one pin directory: the second is refused (exit 2, naming
/// the directory and the first's pid) and touches nothing; the first still
/// serves; the audit reads the held directory but `--repair` is refused;
/// after a SIGKILL of the first (its lock dies with it) a new agent starts
/// and reconciles.
#[test]
fn one_agent_per_pin_dir() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("lock");
    let p = pins.to_str().unwrap();
    let mut first = common::start_serving(&["run", "--all", "--keep-pins", "--pin-dir", p]);
    let holder = format!("pid {}", first.id());
    for second in [
        &["run", "--all", "--pin-dir", p][..],
        &["run", "--pin-dir", p, "--", "/bin/true"][..],
        &[
            "profile",
            "--pin-dir",
            p,
            "-o",
            "/dev/null",
            "--",
            "/bin/true",
        ][..],
    ] {
        let (code, err) = refused(second);
        assert_eq!(code, 2, "{second:?}: {err}");
        for n in [p, holder.as_str()] {
            assert!(err.contains(n), "{second:?}: {err:?} lacks {n:?}");
        }
    }
    // the first still serves: a new process is tracked in its pins
    let trie = MapHandle::from_pin(&pins.join(pidmap::abi::TRIE_NAME))
        .expect("the first agent's pins are still there");
    let sleeper = common::spawn(Command::new("/bin/sleep").arg("1000"));
    let marker = pidmap::abi::PidPage::marker(sleeper.id());
    common::wait_until("the first agent to track a new process", WAIT, || {
        common::keys_of(&trie, sleeper.id()).contains(&marker)
    });
    drop(sleeper);
    // a read-only audit of the held directory works, a repair is refused
    common::audit_clean(&pins, &trie);
    let (code, err) = finish(&["audit", "--repair", "--pin-dir", p]);
    assert_eq!(code, 2, "audit --repair of a held directory: {err}");
    for n in [p, holder.as_str()] {
        assert!(err.contains(n), "audit --repair: {err:?} lacks {n:?}");
    }
    // the lock dies with its holder: a restart reconciles
    signal(first.id(), libc::SIGKILL);
    first.wait().unwrap();
    let (mut again, log) =
        common::start_serving_logged(&["run", "--all", "--keep-pins", "--pin-dir", p]);
    common::audit_clean(&pins, &trie);
    signal(again.id(), libc::SIGTERM);
    assert_eq!(again.wait().unwrap().code(), Some(0));
    let log = log.join().unwrap();
    assert!(log.contains("reconciled pins:"), "{log}");
    // with no agent, the repair runs
    let (code, err) = finish(&["audit", "--repair", "--pin-dir", p]);
    assert_eq!(code, 0, "{err}");
    pidmap::maps::loader::remove_pins(&pins);
}

/// The pids whose command line holds `arg` in one of its arguments (a
/// unique string marks the processes of one test).
fn pids_with_arg(arg: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(arg.len()).any(|w| w == arg.as_bytes()))
        })
        .collect()
}

/// An agent that fails after its command started (here the sampler's
/// perf events, out of descriptors under RLIMIT_NOFILE) ends the command
/// before it exits with its error: nothing it started survives it.
#[test]
fn an_error_after_the_command_started_leaves_no_orphan() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("errpath");
    // a unique argument tells this test's sleeps from any other
    let secs = format!("1000.{}", std::process::id());
    let mut failed_after_start = None;
    for n in 8..=1024u32 {
        let o = common::output_within(
            Command::new("prlimit")
                .arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(pidmap_bin())
                .args([
                    "profile",
                    "--pin-dir",
                    pins.to_str().unwrap(),
                    "-o",
                    "/dev/null",
                ])
                // its own descriptors closed: an orphan would hold no
                // pipe of this test open
                .args(["--", "/bin/sh", "-c"])
                .arg(format!("exec /bin/sleep {secs} >/dev/null 2>&1")),
            common::RUN,
        );
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        match o.status.code() {
            Some(2) if err.contains("perf_event_open on CPU_CLOCK") => {
                failed_after_start = Some(err);
                break;
            }
            Some(2) => continue,
            other => panic!("nofile {n}: status {other:?} before the sampler failed: {err}"),
        }
    }
    let err = failed_after_start.expect("no RLIMIT_NOFILE made the sampler fail");
    let left = pids_with_arg(&secs);
    for pid in &left {
        signal(*pid, libc::SIGKILL);
    }
    assert!(
        left.is_empty(),
        "the command outlived pidmap's error (pids {left:?}): {err}"
    );
    assert!(!pins.exists(), "{err}");
}
