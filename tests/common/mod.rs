//! Shared helpers of the kernel tests. Every kernel test runs against the
//! real kernel as root; when bpf() is unusable it fails in CI (CI=true)
//! and says so loudly elsewhere.
#![allow(dead_code)]

use pidmap::abi::PidPage;
use pidmap::sys::bpf::MapHandle;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Checks that BPF maps can be created here. Panics in CI when not; else
/// returns false after a loud message so the caller can skip.
pub fn bpf_available() -> bool {
    match MapHandle::create(pidmap::sys::bpf::MAP_TYPE_HASH, "probe", 8, 8, 1, 0) {
        Ok(_) => true,
        Err(e) => {
            if std::env::var_os("CI").is_some() {
                panic!("CI: the bpf() syscall is unusable here ({e}); kernel tests must run as root on Linux >= 5.13");
            }
            eprintln!("SKIPPED: bpf() unusable ({e}); run as root to run the kernel tests");
            false
        }
    }
}

static N: AtomicUsize = AtomicUsize::new(0);

/// A fresh pin directory on /sys/fs/bpf, unique to this test.
pub fn pin_dir(name: &str) -> PathBuf {
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = PathBuf::from(format!(
        "/sys/fs/bpf/pidmap-test-{name}-{}-{n}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

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

/// Reads lines until one contains `what`: Ok(all read, that line last),
/// or Err(all read) at the end of the stream.
pub fn read_until(r: &mut impl std::io::BufRead, what: &str) -> Result<String, String> {
    let mut seen = String::new();
    loop {
        let n = seen.len();
        if r.read_line(&mut seen).unwrap() == 0 {
            return Err(seen);
        }
        if seen[n..].contains(what) {
            return Ok(seen);
        }
    }
}

/// Starts `pidmap ARGS` and waits for its "serving" line; the rest of
/// stderr is drained in the background (so pidmap never blocks on a full
/// pipe) and returned, with what came before, when pidmap ends.
pub fn start_serving_logged(
    args: &[&str],
) -> (std::process::Child, std::thread::JoinHandle<String>) {
    use std::io::{BufReader, Read};
    let mut c = Command::new(pidmap_bin())
        .args(args)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(c.stderr.take().unwrap());
    let seen = read_until(&mut err, "serving:")
        .unwrap_or_else(|seen| panic!("pidmap ended before serving: {seen}"));
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        seen + &s
    });
    (c, rest)
}

/// As [`start_serving_logged`], when the log is not needed.
pub fn start_serving(args: &[&str]) -> std::process::Child {
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
