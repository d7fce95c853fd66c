//! Shared helpers of the kernel tests. Every kernel test runs against the
//! real kernel as root; when bpf() (or gcc, perf) is unusable it fails,
//! unless PIDMAP_SKIP_KERNEL_TESTS=1 asks to skip outside CI. Children and
//! pin directories are guards, cleaned up when a test fails.
#![allow(dead_code)]

use pidmap::abi::PidPage;
use pidmap::sys::bpf::MapHandle;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The environment variable that lets a machine without bpf() (not root,
/// a container) skip the kernel tests on purpose; never honoured in CI.
pub const SKIP_VAR: &str = "PIDMAP_SKIP_KERNEL_TESTS";

/// Whether a test that cannot run may skip: only when asked for with
/// PIDMAP_SKIP_KERNEL_TESTS=1 outside CI. Otherwise the test fails,
/// saying what it lacked, so no missing capability reads as a pass.
pub fn may_skip(what: &str) -> bool {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let asked = std::env::var(SKIP_VAR).is_ok_and(|v| v == "1");
    if ci || !asked {
        panic!(
            "{what}: kernel tests run as root on Linux >= 5.13 with gcc and perf installed \
             (scripts/setup); set {SKIP_VAR}=1 to skip them on purpose (ignored when CI is set)"
        );
    }
    eprintln!("SKIPPED ({SKIP_VAR}=1): {what}");
    false
}

/// Checks that BPF maps can be created here. When not, the test fails
/// (see [`may_skip`]), unless skipping was asked for: then false.
pub fn bpf_available() -> bool {
    match MapHandle::create(pidmap::sys::bpf::MAP_TYPE_HASH, "probe", 8, 8, 1, 0) {
        Ok(_) => true,
        Err(e) => may_skip(&format!("the bpf() syscall is unusable here ({e})")),
    }
}

static N: AtomicUsize = AtomicUsize::new(0);

/// A pin directory on /sys/fs/bpf that is removed, with every pin in it,
/// when the guard drops: a failing test leaves no pins behind.
pub struct PinDir(PathBuf);

impl std::ops::Deref for PinDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for PinDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for PinDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh pin directory on /sys/fs/bpf, unique to this test.
pub fn pin_dir(name: &str) -> PinDir {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = PathBuf::from(format!(
        "/sys/fs/bpf/pidmap-test-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    PinDir(d)
}

/// A child that is killed and reaped when the guard drops: a failing
/// assertion never leaves a process behind (holding the output pipe).
pub struct Guarded(pub Child);

impl std::ops::Deref for Guarded {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` under a [`Guarded`].
pub fn spawn(cmd: &mut Command) -> Guarded {
    Guarded(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawning {:?}: {e}", cmd.get_program())),
    )
}

/// Waits until `cond` holds, checking every millisecond; fails the test
/// saying what it waited for once `timeout` has passed.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        if t.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The default deadline of a wait that should take milliseconds.
pub const WAIT: Duration = Duration::from_secs(20);

/// A scratch directory for built workloads.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pidmap-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles a C source of tests/workloads with gcc.
pub fn build_c(src: &str, out: &Path, extra: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(src);
    let st = Command::new("gcc")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(out)
        .arg(&src)
        .args(extra)
        .status()
        .expect("gcc");
    assert!(st.success(), "gcc {} failed", src.display());
    out.to_path_buf()
}

/// Every trie key, read back from the kernel, sorted and each once. The
/// walk (BPF_MAP_GET_NEXT_KEY) of a trie a running agent changes starts
/// over from the first key when the key it stands on was deleted meanwhile
/// (the LPM trie's get_next_key), so it may yield a key twice.
pub fn trie_keys(trie: &MapHandle) -> Vec<PidPage> {
    let mut v = trie.keys::<PidPage>(1 << 22).unwrap();
    v.sort();
    v.dedup();
    v
}

/// Trie keys of one pid, read back from the kernel (sorted, each once).
pub fn keys_of(trie: &MapHandle, pid: u32) -> Vec<PidPage> {
    let mut v = trie_keys(trie);
    v.retain(|k| k.pid() == pid);
    v
}

/// The keys pidmap should hold for `pid`, recomputed independently from
/// /proc/PID/maps: executable file-backed mappings and [vdso], plus the
/// marker.
pub fn expected_keys(pid: u32) -> Vec<PidPage> {
    expected_keys_from(pid, &format!("/proc/{pid}/maps"))
}

/// As [`expected_keys`], from another maps file (a thread's).
pub fn expected_keys_from(pid: u32, maps_path: &str) -> Vec<PidPage> {
    let maps = std::fs::read_to_string(maps_path).unwrap();
    let mut out = vec![PidPage::marker(pid)];
    for line in maps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (range, perms, inode) = (f[0], f[1], f[4]);
        let path = f.get(5).copied().unwrap_or("");
        let exec_file = perms.as_bytes()[2] == b'x' && inode != "0";
        if !(exec_file || path == "[vdso]") {
            continue;
        }
        let (s, e) = range.split_once('-').unwrap();
        let (s, e) = (
            u64::from_str_radix(s, 16).unwrap(),
            u64::from_str_radix(e, 16).unwrap(),
        );
        // independent cover: greedy aligned blocks
        let mut c = s as u128;
        while c < e as u128 {
            let mut size: u128 = if c == 0 {
                1 << 63
            } else {
                1 << c.trailing_zeros()
            };
            while c + size > e as u128 {
                size /= 2;
            }
            out.push(PidPage::new(pid, c as u64, 64 - size.trailing_zeros()));
            c += size;
        }
    }
    out.sort();
    out
}

pub fn pidmap_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pidmap"))
}

/// The lines of a child's pipe, read on a thread, so a wait for a line
/// has a deadline.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: String,
}

impl Lines {
    pub fn new(r: impl std::io::Read + Send + 'static) -> Lines {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(r);
            loop {
                let mut line = String::new();
                match std::io::BufRead::read_line(&mut r, &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Lines {
            rx,
            seen: String::new(),
        }
    }

    /// Reads until a line contains `what`: Ok(all read, that line last),
    /// or Err(all read, and why) at the end of the stream or the deadline.
    pub fn until(&mut self, what: &str, timeout: Duration) -> Result<String, String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen += &line;
                    if line.contains(what) {
                        return Ok(self.seen.clone());
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{}[no {what:?} within {timeout:?}]", self.seen))
                }
                Err(_) => return Err(format!("{}[ended before {what:?}]", self.seen)),
            }
        }
    }

    /// The next line, or None at the end of the stream or the deadline.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.rx.recv_timeout(timeout).ok()?;
        self.seen += &line;
        Some(line)
    }

    /// As [`Lines::until`], failing the test with what was read.
    pub fn expect(&mut self, what: &str, timeout: Duration) -> String {
        self.until(what, timeout)
            .unwrap_or_else(|seen| panic!("waiting for {what:?}: {seen}"))
    }

    /// Everything, up to the end of the stream (the child has ended or
    /// will), on a thread.
    pub fn rest(self) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut s = self.seen;
            for l in self.rx {
                s += &l;
            }
            s
        })
    }
}

/// Starts `pidmap ARGS` and waits (with a deadline) for its "serving"
/// line; the rest of stderr is drained in the background (so pidmap never
/// blocks on a full pipe) and returned, with what came before, when
/// pidmap ends. The child is killed if the test fails.
pub fn start_serving_logged(args: &[&str]) -> (Guarded, std::thread::JoinHandle<String>) {
    let mut c = spawn(
        Command::new(pidmap_bin())
            .args(args)
            .stderr(std::process::Stdio::piped()),
    );
    let mut err = Lines::new(c.stderr.take().unwrap());
    err.expect("serving:", WAIT);
    (c, err.rest())
}

/// As [`start_serving_logged`], when the log is not needed.
pub fn start_serving(args: &[&str]) -> Guarded {
    start_serving_logged(args).0
}

/// Builds the sampled workload (tests/workloads/sampled.c and its shared
/// library) into a scratch directory: (directory, executable).
pub fn sampled_workload(name: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(name);
    build_c(
        "libsampled.c",
        &dir.join("libsampled.so"),
        &["-shared", "-fPIC"],
    );
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let libdir = format!("-L{}", dir.display());
    let exe = build_c(
        "sampled.c",
        &dir.join("sampled"),
        &[&libdir, "-lsampled", &rpath],
    );
    (dir, exe)
}

/// `pidmap audit` of a running `run --all` agent's pins, which must be
/// clean. An audit reads the trie, then asks /proc whether each pid lives:
/// a process of the machine that exits in between is reported "gone"
/// though the agent deletes its keys a moment later. So a leak is a pid
/// reported by three audits in a row, each after its suspects' keys had
/// a second (the exit latency bound) to leave the trie.
pub fn audit_clean(pins: &Path, trie: &MapHandle) {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};
    let mut persistent: Option<BTreeSet<u32>> = None;
    let mut last = String::new();
    for _ in 0..3 {
        let o = Command::new(pidmap_bin())
            .args(["audit", "--pin-dir"])
            .arg(pins)
            .output()
            .unwrap();
        last = String::from_utf8_lossy(&o.stdout).into_owned();
        match o.status.code() {
            Some(0) => return,
            Some(1) => {}
            _ => panic!("audit failed: {}", String::from_utf8_lossy(&o.stderr)),
        }
        let leaked: BTreeSet<u32> = last
            .lines()
            .filter_map(|l| l.strip_prefix("leaked: pid "))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        let suspects = match persistent {
            None => leaked,
            Some(p) => p.intersection(&leaked).copied().collect(),
        };
        // an exit in flight is handled well within a second; a leak stays
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(1)
            && suspects.iter().any(|p| !keys_of(trie, *p).is_empty())
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        persistent = Some(suspects);
    }
    let persistent = persistent.unwrap_or_default();
    assert!(
        persistent.is_empty(),
        "pids {persistent:?} leaked in three audits (keys still in the trie a second after each): {last}"
    );
}

/// The steered helper (tests/workloads/helper.c) and the library it
/// dlopens, built once per test process.
pub struct HelperWorkloads {
    pub helper: PathBuf,
    pub plugin: PathBuf,
}

pub fn helper_workloads() -> &'static HelperWorkloads {
    static W: std::sync::OnceLock<HelperWorkloads> = std::sync::OnceLock::new();
    W.get_or_init(|| {
        let d = scratch("helper");
        HelperWorkloads {
            helper: build_c("helper.c", &d.join("helper"), &["-ldl", "-lpthread"]),
            plugin: build_c("plugin.c", &d.join("libplugin.so"), &["-shared", "-fPIC"]),
        }
    })
}

/// A helper process steered through stdin, one command a line (see
/// helper.c); killed and reaped if the test fails.
pub struct Helper {
    pub child: Guarded,
    stdin: Option<std::process::ChildStdin>,
    out: Lines,
}

impl Helper {
    pub fn start() -> Helper {
        let mut child = spawn(
            Command::new(&helper_workloads().helper)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped()),
        );
        let stdin = child.stdin.take();
        let out = Lines::new(child.stdout.take().unwrap());
        let mut h = Helper { child, stdin, out };
        assert_eq!(h.line(), "ready");
        h
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line of its stdout (deadline [`WAIT`]).
    pub fn line(&mut self) -> String {
        self.out
            .next_line(WAIT)
            .unwrap_or_else(|| panic!("helper {}: no line within {WAIT:?}", self.pid()))
            .trim()
            .to_string()
    }

    pub fn cmd(&mut self, c: &str) -> String {
        use std::io::Write;
        writeln!(self.stdin.as_mut().unwrap(), "{c}").unwrap();
        self.line()
    }

    /// dlopens the test plugin, which no event announces.
    pub fn dlopen_plugin(&mut self) {
        let plugin = helper_workloads().plugin.display().to_string();
        assert_eq!(self.cmd(&format!("dlopen {plugin}")), "ok");
    }

    /// Ends the process (EOF on stdin) and reaps it.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        self.child.wait().unwrap();
    }
}

/// Whether `pid`'s keys in `trie` are exactly those its maps call for.
pub fn keys_match(trie: &MapHandle, pid: u32) -> bool {
    keys_of(trie, pid) == expected_keys(pid)
}

/// The deadline of one pidmap command a test runs (a profile of a few
/// seconds, an audit) under a loaded machine.
pub const RUN: Duration = Duration::from_secs(120);

/// Runs `cmd` to its end, as `Command::output`, but fails the test (and
/// kills the command) when it takes longer than `timeout`.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> std::process::Output {
    use std::io::Read;
    let what = format!(
        "{:?} {:?}",
        cmd.get_program(),
        cmd.get_args().collect::<Vec<_>>()
    );
    let mut c = spawn(
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped()),
    );
    let mut out = c.stdout.take().unwrap();
    let mut err = c.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let t = Instant::now();
    let status = loop {
        if let Some(st) = c.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > timeout {
            let _ = c.kill();
            let _ = c.wait();
            let e = String::from_utf8_lossy(&e.join().unwrap_or_default()).into_owned();
            panic!("timed out after {timeout:?} waiting for {what} to end; its stderr:\n{e}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    std::process::Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    }
}

/// The samples of `perf script` text (`-F comm,tid,ip,sym,dso` with call
/// chains): each one's comm and its frames, leaf first, as (the symbol
/// without its offset, whether it is in the kernel).
pub fn perf_script_samples(text: &str) -> Vec<(String, Vec<(String, bool)>)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, Vec<(String, bool)>)> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            out.extend(cur.take());
        } else if !line.starts_with(char::is_whitespace) {
            out.extend(cur.take());
            let comm = line.split_whitespace().next().unwrap_or_default();
            cur = Some((comm.to_string(), Vec::new()));
        } else if let Some((_, frames)) = cur.as_mut() {
            // "\t    55d0c1a0 main_hot+0x1a (/path/sampled)"
            let body = line.trim().split_once(' ').map_or("", |(_, b)| b);
            let (sym, dso) = body.rsplit_once(" (").unwrap_or((body, ""));
            let sym = sym.split("+0x").next().unwrap_or(sym);
            frames.push((sym.to_string(), dso.starts_with("[kernel.")));
        }
    }
    out.extend(cur);
    out
}

/// (exit code, stdout, stderr) of `pidmap diff --threshold 1 ARGS BASE...
/// -- NEW...`, within [`RUN`].
pub fn pidmap_diff(base: &[PathBuf], new: &[PathBuf], args: &[&str]) -> (i32, String, String) {
    let o = output_within(
        Command::new(pidmap_bin())
            .args(["diff", "--threshold", "1"])
            .args(args)
            .args(base)
            .arg("--")
            .args(new),
        RUN,
    );
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Reads lines until one contains `what`: Ok(all read, that line last),
/// or Err(all read) at the end of the stream. For a caller that goes on
/// reading the same stream itself; the stream ends when its child does,
/// so the child's own deadline bounds it.
pub fn read_until(r: &mut impl std::io::BufRead, what: &str) -> Result<String, String> {
    let mut seen = String::new();
    loop {
        let n = seen.len();
        if r.read_line(&mut seen).unwrap_or(0) == 0 {
            return Err(seen);
        }
        if seen[n..].contains(what) {
            return Ok(seen);
        }
    }
}

/// An agent run in this process on a thread of its own, on a pin directory
/// of its own; a failing test stops it before its pin directory goes.
pub struct InProcessAgent {
    pub handle: pidmap::agent::AgentHandle,
    join: Option<std::thread::JoinHandle<pidmap::error::Result<pidmap::agent::Ended>>>,
    pub pins: PinDir,
}

impl InProcessAgent {
    /// Starts one on `pin_dir(name)`: only the pidfd path notices exits
    /// (no liveness sweep), `tweak` sets the rest.
    pub fn start(name: &str, tweak: impl FnOnce(&mut pidmap::agent::AgentConfig)) -> Self {
        let pins = pin_dir(name);
        let mut cfg = pidmap::agent::AgentConfig {
            pin_dir: pins.clone(),
            sweep_interval: Duration::from_secs(3600),
            ..Default::default()
        };
        tweak(&mut cfg);
        let (handle, join) = pidmap::agent::spawn(cfg).expect("agent starts");
        InProcessAgent {
            handle,
            join: Some(join),
            pins,
        }
    }

    pub fn trie(&self) -> MapHandle {
        MapHandle::from_pin(&self.pins.join(pidmap::abi::TRIE_NAME)).unwrap()
    }

    pub fn events(&self) -> MapHandle {
        MapHandle::from_pin(&self.pins.join(pidmap::abi::EVENTS_NAME)).unwrap()
    }

    /// Shuts it down; the agent's run must end without an error.
    pub fn stop(mut self) {
        self.handle.shutdown();
        self.join.take().unwrap().join().unwrap().unwrap();
    }
}

impl Drop for InProcessAgent {
    fn drop(&mut self) {
        if let Some(j) = self.join.take() {
            self.handle.shutdown();
            let _ = j.join();
        }
    }
}
