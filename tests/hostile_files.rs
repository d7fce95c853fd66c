//! Hostile local users against files the root agent might read (root):
//! a mapped file swapped for a FIFO or its directory for a symlink to /dev
//! (`run --all` and `profile`), a 1.9 GiB sparse ELF, and `.gnu_debuglink`
//! into a directory the attacker owns. Attackers run as uid 65534 through
//! setpriv, their scripts with /usr/bin/python3, in a scratch directory
//! they own.

mod common;

use common::pidmap_bin;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

/// A directory owned by the attacker, mode 0777, removed on drop.
struct AttackerDir(PathBuf);

impl AttackerDir {
    fn new(tag: &str) -> AttackerDir {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("pidmap-hostile-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::chown(&d, Some(NOBODY), Some(NOBODY)).unwrap();
        AttackerDir(d)
    }

    /// The hostile shared object (tests/workloads/hostile.c), owned by the
    /// attacker, at `name` in this directory.
    fn lib(&self, name: &str) -> PathBuf {
        let p = self.0.join(name);
        common::build_c(
            "hostile.c",
            &p,
            // -O0: every function keeps its frame pointer, the leaf too
            &["-shared", "-fPIC", "-O0"],
        );
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        p
    }
}

impl Drop for AttackerDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child killed and reaped on drop (also when a test fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `setpriv` to uid/gid 65534 without groups, then python3 `script ARGS`.
fn as_attacker(script: &str, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/usr/bin/python3",
        "-c",
        script,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(args.iter().map(|s| s.to_string()));
    v
}

/// Lines of a child's stdout, over a channel (so every wait has a deadline).
fn lines_of(out: ChildStdout) -> crossbeam_channel::Receiver<String> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &crossbeam_channel::Receiver<String>, what: &str, timeout: Duration) {
    let end = Instant::now() + timeout;
    loop {
        match rx.recv_deadline(end) {
            Ok(l) if l.contains(what) => return,
            Ok(_) => {}
            Err(_) => panic!("no line {what:?} within {timeout:?}"),
        }
    }
}

/// Who opens a FIFO: fanotify FAN_OPEN events with the opener's pid
/// (FAN_REPORT_FID: no descriptor is opened for an event, so the FIFO is
/// never touched; O_PATH opens are no event, they open nothing), plus a
/// writer blocked until a reader comes, so a reader stuck in open(2) gets
/// through and is seen. Other agents on the host (older builds) may open
/// the FIFO too: only the pid under test matters.
struct FifoWatch {
    path: PathBuf,
    fan: std::os::fd::OwnedFd,
    ending: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FifoWatch {
    fn start(path: &Path) -> FifoWatch {
        use std::os::fd::FromRawFd;
        let flags =
            libc::FAN_CLASS_NOTIF | libc::FAN_REPORT_FID | libc::FAN_NONBLOCK | libc::FAN_CLOEXEC;
        // SAFETY: fanotify_init takes two integers and returns a new fd.
        let fd = unsafe { libc::fanotify_init(flags, libc::O_RDONLY as u32) };
        assert!(
            fd >= 0,
            "fanotify_init: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new descriptor nobody else owns.
        let fan = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid fanotify fd and NUL-terminated path.
        let r = unsafe {
            libc::fanotify_mark(
                fd,
                libc::FAN_MARK_ADD,
                libc::FAN_OPEN,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        assert_eq!(
            r,
            0,
            "fanotify_mark {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        let ending = Arc::new(AtomicBool::new(false));
        let (e, p) = (ending.clone(), path.to_path_buf());
        let thread = std::thread::spawn(move || {
            // returns once someone opens the FIFO for reading; a reader
            // other than finish's own gets a writer (then end of file)
            while !e.load(Ordering::SeqCst) {
                let _f = std::fs::OpenOptions::new().write(true).open(&p);
            }
        });
        FifoWatch {
            path: path.to_path_buf(),
            fan,
            ending,
            thread: Some(thread),
        }
    }

    /// The pids (other than this test's) that opened the FIFO.
    fn finish(mut self) -> std::collections::BTreeSet<i32> {
        use std::os::fd::AsRawFd;
        self.ending.store(true, Ordering::SeqCst);
        let _own = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
            .unwrap_or_else(|e| panic!("the FIFO {} went away: {e}", self.path.display()));
        self.thread.take().unwrap().join().unwrap();
        let me = std::process::id() as i32;
        let mut openers = std::collections::BTreeSet::new();
        let size = std::mem::size_of::<libc::fanotify_event_metadata>();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            // SAFETY: reading into a buffer of the given length.
            let n = unsafe { libc::read(self.fan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break; // EAGAIN: no more events
            }
            let mut at = 0;
            while at + size <= n as usize {
                // SAFETY: `size` bytes are in the buffer at `at`; the
                // metadata is plain integers, read unaligned.
                let md: libc::fanotify_event_metadata =
                    unsafe { std::ptr::read_unaligned(buf[at..].as_ptr().cast()) };
                if md.event_len == 0 {
                    break;
                }
                if md.mask & libc::FAN_OPEN != 0 && md.pid != me {
                    openers.insert(md.pid);
                }
                at += md.event_len as usize;
            }
        }
        openers
    }
}

/// `pidmap run --all` with kept pins and a metrics file; killed and its
/// pins removed on drop.
struct RunAgent {
    child: Option<Child>,
    pid: i32,
    pins: common::PinDir,
    metrics_dir: PathBuf,
    log: Option<std::thread::JoinHandle<String>>,
}

impl RunAgent {
    fn start(tag: &str) -> RunAgent {
        use std::os::unix::fs::PermissionsExt;
        let pins = common::pin_dir(tag);
        let metrics_dir = common::scratch(&format!("{tag}-metrics"));
        std::fs::set_permissions(&metrics_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut c = Command::new(pidmap_bin())
            .args(["run", "--all", "--keep-pins", "--pin-dir"])
            .arg(&pins)
            .arg("--metrics-file")
            .arg(metrics_dir.join("metrics.prom"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // stderr on a thread: the wait for "serving" has a deadline
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut err = BufReader::new(c.stderr.take().unwrap());
        let log = std::thread::spawn(move || {
            let mut all = String::new();
            let mut line = String::new();
            while err.read_line(&mut line).unwrap_or(0) > 0 {
                let _ = tx.send(line.clone());
                all += &line;
                line.clear();
            }
            all
        });
        let mut agent = RunAgent {
            pid: c.id() as i32,
            child: Some(c),
            pins,
            metrics_dir,
            log: Some(log),
        };
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_deadline(end) {
                Ok(l) if l.contains("serving:") => break,
                Ok(_) => {}
                Err(_) => panic!(
                    "run --all did not serve within 60 s (stuck on a file?): {}",
                    agent.stop_log()
                ),
            }
        }
        agent
    }

    fn trie(&self) -> pidmap::sys::bpf::MapHandle {
        pidmap::sys::bpf::MapHandle::from_pin(&self.pins.join(pidmap::abi::TRIE_NAME)).unwrap()
    }

    fn stop_log(&mut self) -> String {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.log
            .take()
            .map(|l| l.join().unwrap())
            .unwrap_or_default()
    }

    /// SIGTERM; the agent must end within 1 s. Returns its log.
    fn terminate(&mut self) -> String {
        let c = self.child.take().unwrap();
        let pid = c.id();
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut c = c;
            let _ = tx.send(c.wait().unwrap());
        });
        let t = Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let status = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_else(|_| {
            // SAFETY: as above.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("SIGTERM did not end the agent within 1 s");
        });
        assert!(status.success(), "agent exit: {status:?}");
        assert!(t.elapsed() < Duration::from_secs(1));
        self.log.take().unwrap().join().unwrap()
    }

    fn metric(&self, name: &str) -> u64 {
        let text = std::fs::read_to_string(self.metrics_dir.join("metrics.prom")).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("pidmap_{name} ")))
            .unwrap_or_else(|| panic!("no metric {name}: {text}"))
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for RunAgent {
    fn drop(&mut self) {
        self.stop_log();
        pidmap::maps::loader::remove_pins(&self.pins);
        let _ = std::fs::remove_dir(&self.pins);
        let _ = std::fs::remove_dir_all(&self.metrics_dir);
    }
}

/// A process started after the attack has its keys inserted, and removed
/// within 1 s of its exit.
fn victim_is_tracked_then_cleaned(agent: &RunAgent) {
    let trie = agent.trie();
    let mut victim = Killed(Command::new("/bin/sleep").arg("1000").spawn().unwrap());
    let pid = victim.0.id();
    let end = Instant::now() + Duration::from_secs(5);
    while common::keys_of(&trie, pid).is_empty() {
        assert!(Instant::now() < end, "victim {pid} not tracked within 5 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(common::keys_of(&trie, pid).contains(&pidmap::abi::PidPage::marker(pid)));
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    let exited = Instant::now();
    while !common::keys_of(&trie, pid).is_empty() {
        assert!(
            exited.elapsed() < Duration::from_secs(1),
            "victim {pid}'s keys still in the trie 1 s after its exit"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Maps `lib.so` (PROT_EXEC, through the loader), deletes it and puts a
/// FIFO at its name: /proc/PID/maps then says `.../lib.so (deleted)`.
const DELETED_THEN_FIFO: &str = r#"
import ctypes, os, sys
lib = sys.argv[1]
h = ctypes.CDLL(lib)
os.unlink(lib)
os.mkfifo(lib, 0o666)
print("ready", flush=True)
sys.stdin.read()
"#;

/// Maps `sub/kmsg`, then keeps swapping the directory `sub` between the
/// real one, one holding a FIFO `kmsg`, and a symlink to /dev, forking a
/// child at each step (each fork is a sync of a process mapping it).
const SWAPPED_PARENT: &str = r#"
import ctypes, os, select, sys
d = sys.argv[1]
sub = os.path.join(d, "sub")
h = ctypes.CDLL(os.path.join(sub, "kmsg"))
os.rename(sub, os.path.join(d, "real"))
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    for name in ("real", "fifo", "dev"):
        os.rename(os.path.join(d, name), sub)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        os.rename(sub, os.path.join(d, name))
"#;

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: c is a valid path string.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o666) };
    assert_eq!(r, 0, "mkfifo {}", p.display());
    std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
}

fn spawn_attacker(argv: &[String]) -> (Killed, crossbeam_channel::Receiver<String>) {
    let mut c = Killed(
        Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let out = lines_of(c.0.stdout.take().unwrap());
    wait_line(&out, "ready", Duration::from_secs(30));
    (c, out)
}

#[test]
fn run_all_never_opens_a_mapped_file_a_user_swapped() {
    if !common::bpf_available() {
        return;
    }
    // the FIFO at the name of a deleted, still mapped file
    let dir = AttackerDir::new("run-fifo");
    let lib = dir.lib("lib.so");
    let (a1, _out1) = spawn_attacker(&as_attacker(DELETED_THEN_FIFO, &[lib.to_str().unwrap()]));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", a1.0.id())).unwrap();
    assert!(
        maps.lines()
            .any(|l| l.contains(" r-xp ") && l.ends_with("lib.so (deleted)")),
        "{maps}"
    );
    let watch1 = FifoWatch::start(&lib);
    // the parent directory swapped for one holding a FIFO and a symlink
    // to /dev; the FIFO is watched through a hard link that stays put
    let dir2 = AttackerDir::new("run-swap");
    for sub in ["sub", "fifo"] {
        std::fs::create_dir(dir2.0.join(sub)).unwrap();
        std::os::unix::fs::chown(dir2.0.join(sub), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    dir2.lib("sub/kmsg");
    mkfifo(&dir2.0.join("fifo/kmsg"));
    std::os::unix::fs::symlink("/dev", dir2.0.join("dev")).unwrap();
    let watch_dir = common::scratch("hostile-watch");
    let stable = watch_dir.join("kmsg-fifo");
    let _ = std::fs::remove_file(&stable);
    std::fs::hard_link(dir2.0.join("fifo/kmsg"), &stable).unwrap();
    let (mut a2, _out2) = spawn_attacker(&as_attacker(SWAPPED_PARENT, &[dir2.0.to_str().unwrap()]));
    let watch2 = FifoWatch::start(&stable);

    // the agent starts with both attackers running: its /proc scan syncs them
    let mut agent = RunAgent::start("hostile-run");
    let trie = agent.trie();
    for a in [&a1, &a2] {
        assert!(
            !common::keys_of(&trie, a.0.id()).is_empty(),
            "the attacker {} is tracked",
            a.0.id()
        );
    }
    victim_is_tracked_then_cleaned(&agent);
    // the swapping attacker stops between swaps
    drop(a2.0.stdin.take());
    a2.0.wait().unwrap();
    common::audit_clean(&agent.pins, &trie);
    let log = agent.terminate();
    let openers = watch1.finish();
    assert!(
        !openers.contains(&agent.pid),
        "the agent opened the FIFO at lib.so\n{log}"
    );
    let openers2 = watch2.finish();
    assert!(
        !openers2.contains(&agent.pid),
        "the agent opened the FIFO behind the swapped directory\n{log}"
    );
    let _ = std::fs::remove_dir_all(&watch_dir);
    // the sync path opens no file at all
    assert_eq!(agent.metric("files_opened_total"), 0, "{log}");
    assert_eq!(agent.metric("files_not_regular_total"), 0, "{log}");
    assert!(agent.metric("exits_total") >= 1);
}

/// A running `pidmap profile -- CMD`; [`Profiling::wait`] has a watchdog.
struct Profiling {
    pid: i32,
    /// Lines the command printed (pidmap's stdout is the command's).
    lines: crossbeam_channel::Receiver<String>,
    done: crossbeam_channel::Receiver<(i32, i32, i64)>,
    log: std::thread::JoinHandle<String>,
}

impl Profiling {
    fn start(pins: &Path, out: &Path, cmd: &[String]) -> Profiling {
        let mut c = Command::new(pidmap_bin())
            .args(["profile", "-F", "499", "--pin-dir"])
            .arg(pins)
            .arg("-o")
            .arg(out)
            .arg("--")
            .args(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = c.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let lines = lines_of(c.stdout.take().unwrap());
        let pid = c.id() as i32;
        std::mem::forget(c); // reaped by wait4 below, with its rusage
        let (tx, done) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut status = 0;
            // SAFETY: rusage is plain data; zeroed is a valid value.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 on our own child with valid pointers.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
            let _ = tx.send((r, status, ru.ru_maxrss));
        });
        Profiling {
            pid,
            lines,
            done,
            log,
        }
    }

    /// (exit code, stderr, peak RSS in KiB of pidmap and the children it
    /// reaped); fails when profile does not end within 90 s.
    fn wait(self) -> (i32, String, i64) {
        let Ok((r, status, maxrss)) = self.done.recv_timeout(Duration::from_secs(90)) else {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            panic!(
                "profile did not end within 90 s: {}",
                self.log.join().unwrap()
            );
        };
        assert_eq!(r, self.pid);
        let code = if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            -1
        };
        (code, self.log.join().unwrap(), maxrss)
    }
}

fn profile_with_watchdog(pins: &Path, out: &Path, cmd: &[String]) -> (i32, String, i64) {
    Profiling::start(pins, out, cmd).wait()
}

/// The number before `what` in the profile's "files:" summary line.
fn files_stat(stderr: &str, what: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("pidmap: files:"))
        .unwrap_or_else(|| panic!("no files line: {stderr}"));
    line.split(',')
        .find(|p| p.contains(what))
        .and_then(|p| p.split_whitespace().rev().find_map(|w| w.parse().ok()))
        .unwrap_or_else(|| panic!("no {what:?} in {line:?}"))
}

/// Maps `lib`, optionally swaps it for a FIFO (deleted) and says so, then
/// burns CPU in it for SECS.
const BURN: &str = r#"
import ctypes, os, sys
lib, secs, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
h = ctypes.CDLL(lib)
h.hostile_hot.restype = ctypes.c_long
h.hostile_hot.argtypes = [ctypes.c_double]
if mode == "fifo":
    os.unlink(lib)
    os.mkfifo(lib, 0o666)
print("ready", flush=True)
h.hostile_hot(secs)
"#;

/// A stripped copy of the hostile library with a `.gnu_debuglink` to
/// `lib.debug` beside it (its full symbols); returns the library.
fn stripped_with_debuglink(dir: &AttackerDir, name: &str) -> PathBuf {
    let full = dir.lib(&format!("{name}.full"));
    let debug = dir.0.join("lib.debug");
    let lib = dir.0.join(name);
    let ok = |c: &mut Command| c.status().unwrap().success();
    assert!(ok(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(&full)
        .arg(&debug)));
    let stripped = dir.0.join(format!("{name}.stripped"));
    assert!(ok(Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&stripped)
        .arg(&full)));
    assert!(ok(Command::new("objcopy")
        .current_dir(&dir.0)
        .arg("--add-gnu-debuglink=lib.debug")
        .arg(&stripped)
        .arg(&lib)));
    for p in [&debug, &lib] {
        std::os::unix::fs::chown(p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    lib
}

#[test]
fn profile_reads_a_deleted_fifo_swapped_library_only_through_map_files() {
    if !common::bpf_available() {
        return;
    }
    let dir = AttackerDir::new("profile-fifo");
    let lib = stripped_with_debuglink(&dir, "lib.so");
    // the debug link names a FIFO in the attacker's directory
    std::fs::remove_file(dir.0.join("lib.debug")).unwrap();
    mkfifo(&dir.0.join("lib.debug"));
    let debug_watch = FifoWatch::start(&dir.0.join("lib.debug"));
    let pins = common::pin_dir("hostile-profile");
    let out = dir.0.join("out.folded");
    let cmd = as_attacker(BURN, &[lib.to_str().unwrap(), "1.5", "fifo"]);
    let t = Instant::now();
    let p = Profiling::start(&pins, &out, &cmd);
    let profile_pid = p.pid;
    // the FIFO at lib.so (the name of the deleted mapping) from now on
    wait_line(&p.lines, "ready", Duration::from_secs(30));
    let lib_watch = FifoWatch::start(&lib);
    let (code, stderr, _) = p.wait();
    let wall = t.elapsed();
    assert_eq!(code, 0, "{stderr}");
    assert!(wall < Duration::from_secs(30), "{wall:?}\n{stderr}");
    assert!(
        !lib_watch.finish().contains(&profile_pid),
        "profile opened the FIFO at the deleted library's name\n{stderr}"
    );
    assert!(
        !debug_watch.finish().contains(&profile_pid),
        "profile opened the FIFO named by .gnu_debuglink\n{stderr}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    // read through map_files: the exported function is named from .dynsym
    assert!(
        text.lines()
            .any(|l| l.starts_with("python3;") && l.contains("hostile_hot")),
        "{text}\n{stderr}"
    );
    assert!(
        files_stat(&stderr, "untrusted debug files") >= 1,
        "{stderr}"
    );
    assert!(files_stat(&stderr, " read") >= 1, "{stderr}");
    assert!(!pins.exists());
}

#[test]
fn profile_does_not_follow_a_debuglink_into_an_attackers_directory() {
    if !common::bpf_available() {
        return;
    }
    let dir = AttackerDir::new("profile-link");
    let lib = stripped_with_debuglink(&dir, "lib.so");
    let pins = common::pin_dir("hostile-link");
    let out = dir.0.join("out.folded");
    let cmd = as_attacker(BURN, &[lib.to_str().unwrap(), "1.5", "keep"]);
    let (code, stderr, _) = profile_with_watchdog(&pins, &out, &cmd);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let ours: Vec<&str> = text.lines().filter(|l| l.starts_with("python3;")).collect();
    assert!(
        ours.iter().any(|l| l.contains("hostile_hot")),
        "{text}\n{stderr}"
    );
    // hostile_spin is only in the debug file's .symtab
    assert!(
        !ours.iter().any(|l| l.contains("hostile_spin")),
        "the debug link in the attacker's directory was followed\n{text}"
    );
    assert!(
        ours.iter().any(|l| l.contains("hostile_hot;lib.so+0x")),
        "{text}"
    );
    assert!(
        files_stat(&stderr, "untrusted debug files") >= 1,
        "{stderr}"
    );
}

#[test]
fn profile_of_a_sparse_2_gib_elf_stays_small_and_symbolizes() {
    if !common::bpf_available() {
        return;
    }
    let dir = AttackerDir::new("profile-sparse");
    let lib = dir.lib("big.so");
    let f = std::fs::OpenOptions::new().write(true).open(&lib).unwrap();
    f.set_len(1900 << 20).unwrap();
    drop(f);
    let pins = common::pin_dir("hostile-sparse");
    let out = dir.0.join("out.folded");
    let cmd = as_attacker(BURN, &[lib.to_str().unwrap(), "1.5", "keep"]);
    let (code, stderr, maxrss_kib) = profile_with_watchdog(&pins, &out, &cmd);
    assert_eq!(code, 0, "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    // unstripped: the static function is named from .symtab
    assert!(
        text.lines()
            .any(|l| l.starts_with("python3;") && l.contains("hostile_hot;hostile_spin")),
        "{text}\n{stderr}"
    );
    eprintln!("peak RSS of profile and its command: {maxrss_kib} KiB");
    assert!(
        maxrss_kib < 64 * 1024,
        "peak RSS {maxrss_kib} KiB (pidmap and its command) for a {} MiB ELF\n{stderr}",
        1900
    );
}

/// The loop never waits for the file worker: with every file read stuck
/// (a reader that never returns, as an open or read on a hostile FUSE
/// mount would), exits are handled at once, the stuck reads time out, and
/// the agent still shuts down promptly.
#[test]
fn a_stuck_file_read_never_delays_exits_or_shutdown() {
    use pidmap::agent::files::{Done, FileWorkers, FilesConfig, Reader};
    use pidmap::agent::{Agent, AgentConfig, Mode, SampleSink, Sampling};
    use pidmap::counters::COUNTERS;
    use pidmap::sys::safe_open::MappedFile;
    if !common::bpf_available() {
        return;
    }
    /// Asks the worker for every file it sees in a sample.
    struct AskAll {
        seen: std::collections::HashSet<u64>,
        done: crossbeam_channel::Sender<u64>,
    }
    impl SampleSink for AskAll {
        fn sample(
            &mut self,
            s: &pidmap::abi::Sample,
            _pm: &pidmap::tracker::process::ProcessManager,
            files: &mut FileWorkers,
        ) {
            for f in &s.user {
                if f.file_id != 0 && self.seen.insert(f.file_id) {
                    files.submit(
                        f.file_id,
                        MappedFile {
                            pid: s.header.pid,
                            start: 0,
                            end: 0,
                            dev: f.file_id,
                            ino: f.file_id,
                            path: "/nowhere".into(),
                            deleted: true,
                        },
                    );
                }
            }
        }
        fn file_done(&mut self, d: Done) {
            let _ = self.done.send(d.file_id);
        }
    }
    let (entered_tx, entered) = crossbeam_channel::unbounded::<()>();
    let (release, blocked) = crossbeam_channel::bounded::<()>(0);
    let reader: Reader = Arc::new(move |_: &MappedFile| {
        let _ = entered_tx.send(());
        let _ = blocked.recv(); // until the test ends
        None
    });
    let deadline = Duration::from_millis(300);
    let pins = common::pin_dir("stuck-reader");
    let cfg = AgentConfig {
        mode: Mode::All,
        pin_dir: pins.clone(),
        sampling: Some(Sampling {
            freq: 499,
            kernel: false,
            ring_pages: 8,
            request_interval: Duration::from_millis(250),
            unwind: pidmap::sampler::unwind::Mode::Fp,
        }),
        files: FilesConfig {
            deadline,
            max_abandoned: 2,
        },
        file_reader: Some(reader),
        ..Default::default()
    };
    let (done_tx, done) = crossbeam_channel::unbounded();
    let (handle_tx, handle_rx) = crossbeam_channel::bounded(1);
    let agent = std::thread::spawn(move || {
        let (mut agent, handle) = Agent::new(cfg).unwrap();
        agent.set_sample_sink(Box::new(AskAll {
            seen: Default::default(),
            done: done_tx,
        }));
        handle_tx.send(handle).unwrap();
        agent.run()
    });
    let handle = handle_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the agent started");
    let timed_out = COUNTERS.snapshot().file_jobs_timed_out;
    let (workload_dir, exe) = common::sampled_workload("stuck-reader");
    let _hot = Killed(
        Command::new(&exe)
            .args(["3", "0", "0"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    entered
        .recv_timeout(Duration::from_secs(20))
        .expect("a file job reached the worker");
    // a worker is stuck now: exits are still handled at once
    let mut victim = Killed(Command::new("/bin/sleep").arg("1000").spawn().unwrap());
    let pid = victim.0.id();
    assert!(
        handle.when_tracked(pid, Duration::from_secs(5)),
        "victim tracked"
    );
    victim.0.kill().unwrap();
    victim.0.wait().unwrap();
    assert!(
        handle.when_gone(pid, Duration::from_secs(1)),
        "the exit of {pid} was not handled within 1 s while a file read is stuck"
    );
    // the stuck read is given up at its deadline
    done.recv_timeout(deadline * 10)
        .expect("the stuck job is answered (failed) after its deadline");
    assert!(COUNTERS.snapshot().file_jobs_timed_out > timed_out);
    let t = Instant::now();
    handle.shutdown();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(agent.join());
    });
    let ended = rx
        .recv_timeout(deadline * 2 + Duration::from_secs(5))
        .expect("the agent ended after shutdown");
    assert!(ended.unwrap().is_ok());
    assert!(
        t.elapsed() < deadline * 2 + Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
    drop(release);
    assert!(!pins.exists());
    let _ = std::fs::remove_dir_all(&workload_dir);
}

/// A tracked library's code replaced under the same address by another
/// file, and a FIFO put at the library's name: the stale (device, inode)
/// of the maps line read before is not what map_files holds now, and the
/// name is a FIFO. profile reads neither, counts the refusal, and shows
/// the frames as `file+0xoffset`.
#[test]
fn profile_refuses_a_mapping_replaced_behind_its_back() {
    if !common::bpf_available() {
        return;
    }
    let dir = AttackerDir::new("profile-swap");
    let liba = dir.lib("liba.so");
    let libb = dir.0.join("libb.so");
    std::fs::copy(&liba, &libb).unwrap();
    let exe = dir.0.join("swapper");
    common::build_c("swapper.c", &exe, &["-ldl"]);
    let mut attacker = Killed(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe)
            .arg(&liba)
            .arg(&libb)
            .arg("1.5")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = lines_of(attacker.0.stdout.take().unwrap());
    wait_line(&lines, "mapped", Duration::from_secs(30));
    let pins = common::pin_dir("hostile-swap");
    let out = dir.0.join("out.folded");
    // it ends with the attacker, which the test kills if it fails
    let mut p = Command::new(pidmap_bin())
        .args(["profile", "-F", "499", "--pid"])
        .arg(attacker.0.id().to_string())
        .arg("--pin-dir")
        .arg(&pins)
        .arg("-o")
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let profile_pid = p.id() as i32;
    // profile's stderr, line by line, then all of it when it ends
    let (tx, err_lines) = crossbeam_channel::unbounded();
    let mut err = BufReader::new(p.stderr.take().unwrap());
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        let mut line = String::new();
        while err.read_line(&mut line).unwrap_or(0) > 0 {
            let _ = tx.send(line.clone());
            all += &line;
            line.clear();
        }
        all
    });
    wait_line(&err_lines, "serving:", Duration::from_secs(60));
    // the library is tracked; now the attacker swaps it
    use std::io::Write;
    attacker
        .0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    wait_line(&lines, "swapped", Duration::from_secs(30));
    let watch = FifoWatch::start(&liba);
    let (done_tx, done) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = done_tx.send(p.wait().unwrap());
    });
    let status = done
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(profile_pid, libc::SIGKILL) };
            panic!("profile --pid did not end within 60 s of its process");
        });
    let stderr = log.join().unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        !watch.finish().contains(&profile_pid),
        "profile opened the FIFO at the library's name\n{stderr}"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let ours: Vec<&str> = text.lines().filter(|l| l.starts_with("swapper;")).collect();
    assert!(
        ours.iter().any(|l| l.contains("liba.so+0x")),
        "{text}\n{stderr}"
    );
    assert!(
        !ours.iter().any(|l| l.contains("hostile_hot")),
        "a file other than the maps line's was read\n{text}"
    );
    assert!(
        files_stat(&stderr, "refused as not regular") >= 1,
        "{stderr}"
    );
}
