//! Hostile local users against what pidmap writes and reads (root; the
//! attacker is uid 65534 through setpriv, its scripts run /usr/bin/python3):
//! the metrics file in a shared directory (attack 2), a squatted pin
//! directory and linked pins (attack 3), and inputs of `diff` and `bench`
//! made to exhaust memory (attack 6). Each attack is run for real, then
//! the agent is shown to keep its promises: a process started afterwards
//! gets its keys and loses them within 1 s of its exit, SIGTERM ends the
//! agent within 1 s, and the audit finds nothing leaked.

mod common;

use common::pidmap_bin;
use pidmap::abi::TRIE_NAME;
use pidmap::sys::bpf::MapHandle;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

/// A command run as uid/gid 65534 with no supplementary groups.
fn as_nobody(prog: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
        "--",
    ])
    .arg(prog);
    c
}

/// Runs a python script as uid 65534; panics with its stderr on failure.
fn attacker(script: &str, args: &[&Path]) {
    let o = as_nobody("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "attacker script failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Runs pidmap (killed after 30 s: an agent that accepted what it should
/// refuse would serve for good); returns (exit code, stderr).
fn pidmap(args: &[&str]) -> (i32, String) {
    let o = Command::new("timeout")
        .args(["-s", "KILL", "30"])
        .arg(pidmap_bin())
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A statically linked program that waits to be killed: its mappings are
/// all there at exec (no loader maps libraries afterwards), so the keys
/// `run --all` inserts at exec are all it should have.
fn static_victim() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let dir = common::scratch("victim");
        let src = dir.join("victim.c");
        std::fs::write(
            &src,
            "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n",
        )
        .unwrap();
        let bin = dir.join("victim");
        let st = Command::new("gcc")
            .args(["-static", "-O1", "-o"])
            .arg(&bin)
            .arg(&src)
            .status()
            .expect("gcc");
        assert!(st.success(), "gcc -static failed (libc6-dev has libc.a)");
        bin
    })
}

/// A path removed (with its content) when the test ends, failed or not.
struct Removed<'a>(&'a Path);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

/// A bpffs instance of our own (each bpffs mount is a new one), mounted
/// with the kernel's defaults in a root-owned directory; unmounted at the
/// end.
struct PrivateBpffs(PathBuf);

impl PrivateBpffs {
    fn mount() -> PrivateBpffs {
        let d = std::env::temp_dir().join(format!("pidmap-hostile-bpffs-{}", std::process::id()));
        let _ = std::fs::create_dir(&d);
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&d)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t bpf bpf {}", d.display());
        PrivateBpffs(d)
    }
}

impl Drop for PrivateBpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// A directory of the given mode (and owner), removed at the end.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str, mode: u32, owner: u32) -> TestDir {
        let d = std::env::temp_dir().join(format!("pidmap-hostile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        std::os::unix::fs::chown(&d, Some(owner), Some(owner)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
        TestDir(d)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running agent: killed and its pins removed if the test fails first.
struct Agent {
    child: Option<Child>,
    pins: PathBuf,
    log: Option<std::thread::JoinHandle<String>>,
    /// Lines the agent logs after its serving line.
    lines: std::sync::mpsc::Receiver<String>,
}

impl Agent {
    /// Starts `pidmap run ARGS --pin-dir PINS` and waits (at most `within`)
    /// for its serving line.
    fn start(pins: &Path, args: &[&str], within: Duration) -> Agent {
        let mut child = Command::new(pidmap_bin())
            .arg("run")
            .args(args)
            .arg("--pin-dir")
            .arg(pins)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let (tx, rx) = std::sync::mpsc::channel();
        let (line_tx, lines) = std::sync::mpsc::channel();
        let log = std::thread::spawn(move || {
            let seen = common::read_until(&mut err, "serving:");
            let _ = tx.send(seen.is_ok());
            let mut s = seen.unwrap_or_else(|s| s);
            let mut line = String::new();
            while err.read_line(&mut line).unwrap_or(0) > 0 {
                s += &line;
                let _ = line_tx.send(std::mem::take(&mut line));
            }
            s
        });
        let mut agent = Agent {
            child: Some(child),
            pins: pins.to_path_buf(),
            log: Some(log),
            lines,
        };
        match rx.recv_timeout(within) {
            Ok(true) => agent,
            Ok(false) => panic!("the agent ended before serving: {}", agent.stop_log()),
            Err(_) => panic!("no serving line within {within:?}: {}", agent.stop_log()),
        }
    }

    /// Waits (at most `within`) for a logged line containing `what`.
    fn wait_for_line(&self, what: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(what) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line with {what:?} logged within {within:?}"),
            }
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Kills the agent and returns its log.
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

    fn trie(&self) -> MapHandle {
        MapHandle::from_pin(&self.pins.join(TRIE_NAME)).unwrap()
    }

    /// A process started now gets exactly its keys, and loses them all
    /// within 1 s of its exit.
    fn handles_a_new_process(&self) {
        struct Victim(Child);
        impl Drop for Victim {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let trie = self.trie();
        let mut victim = Victim(
            Command::new(static_victim())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let pid = victim.0.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // the keys of the fork (this test's image) come first, those of
            // the exec next: wait for the latter
            let expected = common::expected_keys(pid);
            let got = common::keys_of(&trie, pid);
            if got == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pid {pid} never got its keys: it has {got:?}, maps gives {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        victim.0.kill().unwrap();
        victim.0.wait().unwrap();
        let exited = Instant::now();
        while !common::keys_of(&trie, pid).is_empty() {
            assert!(
                exited.elapsed() < Duration::from_secs(1),
                "pid {pid} still has keys 1 s after its exit"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `pidmap audit` on the agent's pins finds nothing that stays
    /// (common::audit_clean: an exit in flight is not a leak).
    fn audits_clean(&self) {
        common::audit_clean(&self.pins, &self.trie());
    }

    /// SIGTERM ends the agent within 1 s, with status 0; returns its log.
    fn sigterm_within_1s(mut self) -> String {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(self.pid(), libc::SIGTERM) }, 0);
        let t = Instant::now();
        let mut c = self.child.take().unwrap();
        let status = loop {
            if let Some(st) = c.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > Duration::from_secs(1) {
                self.child = Some(c);
                panic!(
                    "SIGTERM did not end the agent within 1 s: {}",
                    self.stop_log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let log = self.log.take().unwrap().join().unwrap();
        assert_eq!(status.code(), Some(0), "{log}");
        log
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop_log();
        pidmap::maps::loader::remove_pins(&self.pins);
    }
}

/// Content and modification time of a file.
fn fingerprint(p: &Path) -> (String, i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (
        std::fs::read_to_string(p).unwrap(),
        m.mtime(),
        m.mtime_nsec(),
    )
}

/// Attack 2: in a world-writable sticky directory (like /tmp) uid 65534
/// plants links to a root-owned file at the old temporary name and at
/// other plausible ones, a FIFO at another, and a link at the target
/// itself. The agent starts at once, writes its metrics as a regular file,
/// and the linked file is untouched. A directory others can write without
/// the sticky bit of root, and a missing one, are refused at start.
#[test]
fn metrics_in_a_shared_directory_are_never_written_through_a_link() {
    if !common::bpf_available() {
        return;
    }
    let shared = TestDir::new("sticky", 0o1777, 0);
    let safe = TestDir::new("victim", 0o700, 0);
    let victim = safe.0.join("shadow");
    std::fs::write(&victim, "root's file\n").unwrap();
    let before = fingerprint(&victim);
    let target = shared.0.join("pidmap.prom");
    let links = [
        "pidmap.prom.tmp",
        ".pidmap.prom.tmp",
        "pidmap.prom.new",
        ".pidmap.prom",
        "pidmap.prom",
    ];
    attacker(
        r#"
import os, sys
d, victim = sys.argv[1], sys.argv[2]
for name in sys.argv[3:]:
    os.symlink(victim, os.path.join(d, name))
os.mkfifo(os.path.join(d, "pidmap.prom.tmp.1"))
os.mkfifo(os.path.join(d, ".pidmap.prom.swp"))
"#,
        &[shared.0.as_path(), victim.as_path()]
            .into_iter()
            .chain(links.iter().map(Path::new))
            .collect::<Vec<&Path>>(),
    );
    let pins = common::pin_dir("metrics");
    // a FIFO at the old temporary name stopped the start for good; the
    // deadline leaves room for the first --all sync of a busy host
    let t = Instant::now();
    let agent = Agent::start(
        &pins,
        &["--all", "--metrics-file", target.to_str().unwrap()],
        Duration::from_secs(30),
    );
    eprintln!("serving after {:?}", t.elapsed());
    assert_eq!(fingerprint(&victim), before, "the linked file was written");
    let m = std::fs::symlink_metadata(&target).unwrap();
    assert!(
        m.file_type().is_file(),
        "the link at the target is replaced"
    );
    assert_eq!(m.uid(), 0);
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(
        text.contains("pidmap_unsafe_metrics_dir_total 0\n"),
        "{text}"
    );
    for name in &links[..4] {
        let p = shared.0.join(name);
        assert!(
            std::fs::symlink_metadata(&p)
                .unwrap()
                .file_type()
                .is_symlink(),
            "{name} was touched"
        );
    }
    agent.handles_a_new_process();
    agent.audits_clean();
    // the directory opened to others while the agent runs: the next write
    // is refused and counted, the one at exit (closed again) says so
    std::fs::set_permissions(&shared.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let line = agent.wait_for_line("writing metrics to", Duration::from_secs(15));
    assert!(line.contains("is writable by group or others"), "{line}");
    std::fs::set_permissions(&shared.0, std::fs::Permissions::from_mode(0o1777)).unwrap();
    agent.sigterm_within_1s();
    let text = std::fs::read_to_string(&target).unwrap();
    assert!(
        !text.contains("pidmap_unsafe_metrics_dir_total 0\n"),
        "{text}"
    );
    assert!(text.contains("pidmap_unsafe_metrics_dir_total "), "{text}");
    assert_eq!(fingerprint(&victim), before, "the linked file was written");
    assert!(!pins.exists());

    // refused at start, before anything is loaded or pinned
    let open = TestDir::new("open", 0o777, 0);
    let foreign_sticky = TestDir::new("foreign", 0o1777, NOBODY);
    for (dir, mode, owner) in [(&open, "0777", 0), (&foreign_sticky, "1777", NOBODY)] {
        let f = dir.0.join("pidmap.prom");
        let pins = common::pin_dir("metrics-refused");
        let (code, err) = pidmap(&[
            "run",
            "--all",
            "--pin-dir",
            pins.to_str().unwrap(),
            "--metrics-file",
            f.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!(
                "pidmap: error: metrics directory {} (mode {mode}, owner uid {owner}) is writable by group or others \
                 and is not a root-owned sticky directory: refused, others could replace the metrics file; \
                 choose a directory only root can write, such as /run/pidmap",
                dir.0.display()
            )),
            "{err}"
        );
        assert!(!pins.exists(), "a refused start made its pin directory");
        assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0);
    }
    let missing = shared.0.join("no-such-dir").join("pidmap.prom");
    let pins = common::pin_dir("metrics-missing");
    let (code, err) = pidmap(&[
        "run",
        "--all",
        "--pin-dir",
        pins.to_str().unwrap(),
        "--metrics-file",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "pidmap: error: --metrics-file {}: directory {} does not exist: create it \
             (systemd: RuntimeDirectory=) or choose another --metrics-file",
            missing.display(),
            missing.parent().unwrap().display()
        )),
        "{err}"
    );
    assert!(!pins.exists());
}

/// Attack 3: uid 65534 pre-creates the pin directory on bpffs (whose root
/// is 1777 here, as the kernel mounts it by default); a directory we own
/// holds a link to another agent's live trie; a root directory is open to
/// others. Each is refused with exit 2 and what is wrong, and the other
/// agent's keys stay. The directory pidmap makes is 0700, and `audit` run
/// by another uid on it says why it cannot read it.
#[test]
fn squatted_pin_dirs_and_linked_pins_are_refused() {
    if !common::bpf_available() {
        return;
    }
    let bpffs = Path::new("/sys/fs/bpf");
    let root_mode = std::fs::metadata(bpffs).unwrap().mode() & 0o7777;
    // the live agent whose pins are the prize
    let live_pins = common::pin_dir("live");
    let live = Agent::start(&live_pins, &["--all"], Duration::from_secs(60));
    let st = std::fs::symlink_metadata(&live_pins).unwrap();
    assert_eq!(st.mode() & 0o7777, 0o700, "the directory pidmap makes");
    assert_eq!(st.uid(), 0);

    // squatted: in /sys/fs/bpf when others may create directories there
    // (the kernel's default), else in a bpffs of our own, mounted with the
    // kernel's default mode 1777
    let private;
    let squat_root = if root_mode & 0o002 != 0 {
        bpffs.to_path_buf()
    } else {
        private = PrivateBpffs::mount();
        private.0.clone()
    };
    let squat = squat_root.join(format!("pidmap-test-squat-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&squat);
    attacker("import os, sys; os.mkdir(sys.argv[1], 0o700)", &[&squat]);
    let _gone = Removed(&squat);
    let msg = format!(
        "pidmap: error: pin directory {} is owned by uid 65534, not by uid 0 that runs pidmap: \
         refused, its owner could replace the pins; remove it (rm -r {}) or choose another --pin-dir",
        squat.display(),
        squat.display()
    );
    for args in [
        &["run", "--all", "--pin-dir"][..],
        &["audit", "--repair", "--pin-dir"],
    ] {
        let mut a = args.to_vec();
        a.push(squat.to_str().unwrap());
        let (code, err) = pidmap(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(&msg), "{args:?}: {err}");
    }
    assert_eq!(
        std::fs::read_dir(&squat).unwrap().count(),
        0,
        "nothing pinned in it"
    );

    // a link to the live agent's trie, in a directory we own
    let linked = common::pin_dir("linked");
    std::fs::create_dir(&linked).unwrap();
    let _unpin = Removed(&linked);
    std::fs::set_permissions(&linked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = linked.join(TRIE_NAME);
    std::os::unix::fs::symlink(live_pins.join(TRIE_NAME), &link).unwrap();
    let live_keys = live
        .trie()
        .keys::<pidmap::abi::PidPage>(1 << 22)
        .unwrap()
        .len();
    let msg = format!(
        "pidmap: error: pin {} is a symbolic link: refused, a pin must be the map itself; remove it (rm {})",
        link.display(),
        link.display()
    );
    for args in [
        &["run", "--all", "--pin-dir"][..],
        &["audit", "--repair", "--pin-dir"],
    ] {
        let mut a = args.to_vec();
        a.push(linked.to_str().unwrap());
        let (code, err) = pidmap(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(&msg), "{args:?}: {err}");
    }
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    std::fs::remove_file(&link).unwrap();
    std::fs::remove_dir(&linked).unwrap();
    let now = live
        .trie()
        .keys::<pidmap::abi::PidPage>(1 << 22)
        .unwrap()
        .len();
    assert!(
        now * 2 > live_keys,
        "the live agent lost its keys: {live_keys} then {now}"
    );

    // a root directory open to others
    let open = common::pin_dir("open");
    std::fs::create_dir(&open).unwrap();
    let _open = Removed(&open);
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, err) = pidmap(&["run", "--all", "--pin-dir", open.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!(
            "pidmap: error: pin directory {} has mode 0755: group or others have access, refused; \
             pidmap needs it 0700 (chmod 0700 {}) or choose another --pin-dir",
            open.display(),
            open.display()
        )),
        "{err}"
    );

    // audit by another uid: what is wrong, not "run as root"
    let o = as_nobody(pidmap_bin())
        .args(["audit", "--pin-dir"])
        .arg(&live_pins)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "pidmap: error: open(O_DIRECTORY|O_NOFOLLOW) on {}: Permission denied (os error 13): \
             the directory belongs to uid 0 with mode 0700, which gives uid 65534 no access; \
             run this as uid 0 (the user of the agent that made it)",
            live_pins.display()
        )),
        "{err}"
    );
    assert!(!err.contains("run as root"), "{err}");

    live.handles_a_new_process();
    live.audits_clean();
    live.sigterm_within_1s();
    assert!(!live_pins.exists());
}

/// When /sys/fs/bpf has no bpffs, pidmap mounts one closed to others
/// (mode=0700), so nobody can squat a pin directory in it; run in a mount
/// namespace of its own where the host's bpffs is unmounted.
#[test]
fn the_bpffs_pidmap_mounts_is_closed_to_others() {
    if !common::bpf_available() {
        return;
    }
    let pins = format!("/sys/fs/bpf/pidmap-test-mount-{}", std::process::id());
    let o = Command::new("timeout")
        .args([
            "-s",
            "KILL",
            "30",
            "unshare",
            "--mount",
            "--propagation",
            "private",
        ])
        .arg("sh")
        .arg("-c")
        .arg(r#"umount /sys/fs/bpf && "$1" run --pin-dir "$2" -- stat -c '%a %u' /sys/fs/bpf "$2""#)
        .arg("sh")
        .arg(pidmap_bin())
        .arg(&pins)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{out}{err}");
    // bpffs keeps the sticky bit on its root whatever the mode option
    assert_eq!(out, "1700 0\n700 0\n", "{err}");
}

/// Runs `prog ARGS` and measures its peak RSS: exit code, stderr, run
/// time and peak RSS in KiB. The peak is `ru_maxrss` from wait4, which
/// also counts the high-water mark of the address space the child had
/// before exec: spawned from this (large, multi-threaded) test process it
/// would report ours, so a small python process spawns it instead (its
/// own ~10 MiB is the floor of the measure). `timeout` kills it after 60 s.
fn peak_rss(prog: &Path, args: &[&str]) -> (i32, String, Duration, u64) {
    let out = std::env::temp_dir().join(format!(
        "pidmap-hostile-rss-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let t = Instant::now();
    let o = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import os, sys\n\
             argv = ['timeout', '-s', 'KILL', '60'] + sys.argv[2:]\n\
             pid = os.posix_spawnp('timeout', argv, os.environ)\n\
             _, st, ru = os.wait4(pid, 0)\n\
             open(sys.argv[1], 'w').write('%d %d' % (os.waitstatus_to_exitcode(st), ru.ru_maxrss))\n",
        )
        .arg(&out)
        .arg(prog)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let took = t.elapsed();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "the measuring python failed: {err}");
    let r = std::fs::read_to_string(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    let (code, rss) = r.split_once(' ').unwrap();
    (code.parse().unwrap(), err, took, rss.parse().unwrap())
}

const RSS_BOUND_KB: u64 = 64 << 10;

/// A gzip file whose deflate stream repeats one sync-flushed block of
/// compressed zeros: `compressed` bytes of it inflate to about 1000 times
/// as many zeros (the stream is left unterminated; nothing should read
/// that far).
fn gzip_bomb(path: &Path, compressed: usize) -> u64 {
    use flate2::{Compress, Compression, FlushCompress};
    let mut c = Compress::new(Compression::best(), false);
    let zeros = vec![0u8; 1 << 20];
    let block = |c: &mut Compress| {
        let mut out = Vec::with_capacity(64 << 10);
        let before = c.total_in();
        while c.total_in() - before < zeros.len() as u64 {
            let at = (c.total_in() - before) as usize;
            c.compress_vec(&zeros[at..], &mut out, FlushCompress::None)
                .unwrap();
            if out.len() == out.capacity() {
                out.reserve(64 << 10);
            }
        }
        c.compress_vec(&[], &mut out, FlushCompress::Sync).unwrap();
        out
    };
    let first = block(&mut c);
    let _ = block(&mut c);
    let steady = block(&mut c);
    assert_eq!(block(&mut c), steady, "no steady deflate block to repeat");
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    // gzip header: magic, deflate, no flags, no mtime, no extra flags, unix
    f.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]).unwrap();
    f.write_all(&first).unwrap();
    let mut written = first.len();
    let mut inflated = 1u64 << 20;
    while written < compressed {
        f.write_all(&steady).unwrap();
        written += steady.len();
        inflated += 1 << 20;
    }
    f.flush().unwrap();
    inflated
}

/// Attack 6: `diff` given a gzip bomb (20 MB inflating to ~20 GB of
/// zeros), /dev/zero, an endless line from a pipe, a length field of a
/// terabyte: each ends at once with a clear error and a peak RSS under
/// 64 MiB. `--max-input` caps what is read and raising it admits it.
#[test]
fn diff_inputs_that_would_exhaust_memory_end_with_a_clear_error() {
    let dir = TestDir::new("diff", 0o755, 0);
    let base = dir.0.join("base.folded");
    std::fs::write(&base, "w;main;a 5\nw;main;b 5\n").unwrap();
    let bomb = dir.0.join("bomb.pb.gz");
    let inflated = gzip_bomb(&bomb, 20 << 20);
    assert!(
        inflated > 10 << 30,
        "the bomb inflates to {inflated} bytes only"
    );
    // it is a real bomb: its start inflates to zeros
    let mut head = vec![1u8; 4 << 20];
    flate2::read::GzDecoder::new(std::fs::File::open(&bomb).unwrap())
        .read_exact(&mut head)
        .unwrap();
    assert!(head.iter().all(|b| *b == 0));

    let run = |files: &[&Path], extra: &[&str]| {
        let mut args = vec!["diff"];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        args.extend(extra);
        peak_rss(&pidmap_bin(), &args)
    };
    let check = |what: &str, (code, err, took, rss): (i32, String, Duration, u64), msg: &str| {
        assert_eq!(code, 2, "{what}: {err}");
        assert!(err.contains(msg), "{what}: {err:?} lacks {msg:?}");
        assert!(
            took < Duration::from_secs(5),
            "{what}: took {took:?}: {err}"
        );
        assert!(rss < RSS_BOUND_KB, "{what}: peak RSS {rss} KiB: {err}");
        eprintln!("{what}: {took:?}, peak RSS {rss} KiB");
    };
    check(
        "gzip bomb",
        run(&[&base, &bomb], &[]),
        &format!(
            "pidmap: error: {}: malformed protobuf: field number 0 at byte 0",
            bomb.display()
        ),
    );
    check(
        "/dev/zero",
        run(&[&base, Path::new("/dev/zero")], &[]),
        "pidmap: error: /dev/zero is a character device, not a profile: give a regular file or a pipe",
    );
    // a sparse 4 GiB regular file of zeros
    let sparse = dir.0.join("sparse");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    check(
        "sparse zeros",
        run(&[&base, &sparse], &[]),
        "malformed protobuf: field number 0 at byte 0",
    );
    // gzip of a string field claiming a terabyte
    let claim = dir.0.join("claim.pb.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&claim).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&[0x32, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20])
        .unwrap();
    gz.write_all(&vec![b'x'; 1 << 20]).unwrap();
    gz.finish().unwrap();
    check(
        "a terabyte field",
        run(&[&base, &claim], &[]),
        "a field of 1099511627776 bytes at byte 0 runs past 1073741824 bytes (after decompression); \
         raise --max-input BYTES if the input is trusted",
    );
    // an endless line from a FIFO (the user's own choice of input)
    let fifo = dir.0.join("endless");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut writer = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg("import sys\ntry:\n    f = open(sys.argv[1], 'wb')\n    while True: f.write(b'a' * 65536)\nexcept BrokenPipeError: pass")
        .arg(&fifo)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let r = run(&[&base, &fifo], &[]);
    let _ = writer.kill();
    writer.wait().unwrap();
    check(
        "endless line",
        r,
        &format!(
            "pidmap: error: {}: line 1 is longer than 4 MiB: not folded stacks",
            fifo.display()
        ),
    );
    // the cap, and raising it
    let big = dir.0.join("big.folded");
    let line = format!("w;main;{} 1\n", "f".repeat(100));
    std::fs::write(&big, line.repeat(20_000)).unwrap();
    check(
        "--max-input",
        run(&[&base, &big], &["--max-input", "1000000"]),
        &format!(
            "pidmap: error: {}: more than 1000000 bytes (after decompression); raise --max-input BYTES if the input is trusted",
            big.display()
        ),
    );
    let (code, err, ..) = run(&[&base, &big], &["--max-input", "10000000"]);
    assert!(code == 0 || code == 1, "{err}");
}

/// Attack 6, bench: a number of keys no memory holds is a clear error
/// (exit 2), not an allocation abort.
#[test]
fn bench_keys_beyond_memory_are_refused_before_allocating() {
    let (code, err, took, rss) = peak_rss(
        &pidmap_bin(),
        &["bench", "delete", "--keys", "10000000000000"],
    );
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err,
        "pidmap: error: bench delete --keys 10000000000000: more than the 1073741824 keys a benchmark map may hold\n"
    );
    assert!(
        took < Duration::from_secs(5) && rss < RSS_BOUND_KB,
        "{took:?} {rss} KiB"
    );
    let avail_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    // twice what fits at 256 B a key, when under the hard cap
    let keys = avail_kb * 1024 / 256 * 2;
    if keys <= 1 << 30 {
        let (code, err, took, rss) = peak_rss(
            &pidmap_bin(),
            &["bench", "insert", "--keys", &keys.to_string()],
        );
        assert_eq!(code, 2, "{err}");
        assert!(
            err.starts_with(&format!(
                "pidmap: error: bench insert --keys {keys}: needs about "
            )) && err.contains("available (MemAvailable in /proc/meminfo); use fewer keys"),
            "{err}"
        );
        assert!(
            took < Duration::from_secs(5) && rss < RSS_BOUND_KB,
            "{took:?} {rss} KiB"
        );
    }
}
