//! Attack 4 of the security review, against the agent binary (root): one
//! unprivileged user (uid 65534) maps an executable file thousands of times
//! in many processes to take the whole trie. With budgets, that user gets
//! its share and no more, root's processes still get every key, the loop
//! keeps serving exits within 1 s and never stalls, RSS stays bounded and
//! the warnings are rate-limited. Also: one process with 30 000 mappings is
//! synced in chunks without holding the loop.

mod common;

use common::{expected_keys, keys_of};
use pidmap::abi::PidPage;
use pidmap::sys::bpf::MapHandle;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const UNPRIVILEGED: &str = "65534";

/// The tests of this file one at a time: each starts a `run --all` agent
/// and a load of thousands of mappings, which the other's agent would
/// track too (forks and exits of processes with 3 000 to 30 000 mappings
/// hold their mmap lock for tens of ms, and a maps read of them waits),
/// so neither would measure its own agent alone.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits until `what` holds; panics after `limit` naming what it waited for.
fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if f() {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `pidmap ARGS` at real-time priority (SCHED_FIFO 1, as a
/// latency-sensitive agent is run) and waits for its "serving" line: the
/// loop iteration times then measure the agent's own work, not the share of
/// a loaded machine the scheduler gives it. Its stderr is collected.
fn serving_realtime(args: &[&str]) -> (Child, std::thread::JoinHandle<String>) {
    let mut c = Command::new("chrt")
        .args(["--fifo", "1"])
        .arg(common::pidmap_bin())
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("chrt (util-linux)");
    let mut err = common::Lines::new(c.stderr.take().unwrap());
    if let Err(seen) = err.until("serving:", common::WAIT) {
        let _ = c.kill();
        panic!("pidmap did not serve: {seen}");
    }
    let rest = err.rest();
    (c, rest)
}

/// The agent binary, stopped with SIGKILL if a test fails before SIGTERM.
struct Agent {
    child: Child,
    log: Option<std::thread::JoinHandle<String>>,
    pins: common::PinDir,
    metrics: PathBuf,
}

impl Agent {
    fn start(name: &str, extra: &[&str]) -> Agent {
        let pins = common::pin_dir(name);
        let metrics = PathBuf::from(format!(
            "/dev/shm/pidmap-test-{name}-{}.prom",
            std::process::id()
        ));
        let mut args = vec![
            "run",
            "--all",
            "--pin-dir",
            pins.to_str().unwrap(),
            "--metrics-file",
            metrics.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (child, log) = serving_realtime(&args);
        Agent {
            child,
            log: Some(log),
            pins,
            metrics,
        }
    }

    fn trie(&self) -> MapHandle {
        MapHandle::from_pin(&self.pins.join(pidmap::abi::TRIE_NAME)).unwrap()
    }

    fn status_kb(&self, field: &str) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in the agent's status"))
    }

    /// SIGTERM, then the time it took to end, its stderr and its last
    /// metrics.
    fn terminate(mut self) -> (Duration, String, String) {
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::SIGTERM,
        )
        .unwrap();
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "SIGTERM ignored");
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = t0.elapsed();
        assert!(status.success(), "agent ended with {status}");
        let log = self.log.take().unwrap().join().unwrap();
        let metrics = std::fs::read_to_string(&self.metrics).unwrap();
        (took, log, metrics)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = std::fs::remove_file(&self.metrics);
    }
}

/// tests/scripts/map_many.py: a parent that maps a file many times and
/// children that inherit the mappings; all end at EOF on stdin.
struct Mapper {
    child: Child,
    stdin: Option<ChildStdin>,
    kids: Vec<u32>,
}

impl Mapper {
    fn start(as_user: bool, file: &Path, mappings: usize, children: usize) -> Mapper {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/map_many.py");
        let mut cmd = if as_user {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={UNPRIVILEGED}"),
                &format!("--regid={UNPRIVILEGED}"),
                "--clear-groups",
                "/usr/bin/python3",
            ]);
            c
        } else {
            Command::new("/usr/bin/python3")
        };
        let mut child = cmd
            .arg(script)
            .arg(file)
            .arg(mappings.to_string())
            .arg(children.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let stdin = child.stdin.take();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut kids = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "map_many.py ended early"
            );
            match line.trim() {
                "ready" => break,
                pid => kids.push(pid.parse().unwrap()),
            }
        }
        Mapper { child, stdin, kids }
    }

    /// EOF on stdin: every process ends.
    fn finish(mut self) -> Vec<u32> {
        drop(self.stdin.take());
        self.child.wait().unwrap();
        std::mem::take(&mut self.kids)
    }
}

impl Drop for Mapper {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for k in &self.kids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*k as i32),
                nix::sys::signal::SIGKILL,
            );
        }
    }
}

/// A file of 7 pages any user can read and map, in a directory any user
/// can enter.
fn mappable_file(name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = common::scratch(name);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let f = dir.join("code.bin");
    std::fs::write(&f, vec![0xc3u8; 7 * 4096]).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    f
}

/// The agent's lines about slow loop iterations and work steps (logged
/// with RUST_LOG=debug), for a latency failure.
fn slow_lines(log: &str) -> String {
    let slow: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("slow loop iteration") || l.contains("a work step"))
        .collect();
    if slow.is_empty() {
        return " (RUST_LOG=debug logs the slow iterations)".into();
    }
    format!(":\n{}", slow.join("\n"))
}

/// The loop's latency from its histogram: no iteration of 10 ms or more.
/// A step is bounded in work (a window of 1024 maps lines or keys), and
/// nothing on the loop waits for what a process controls: its maps are
/// read on the maps worker (a maps read waits for the mmap lock that a
/// fork or exit of a process with thousands of mappings holds for tens of
/// ms).
fn loop_never_stalls(metrics: &str, log: &str) {
    let max = metric(metrics, "pidmap_loop_iteration_max_seconds");
    let count = metric(metrics, "pidmap_loop_iteration_seconds_count");
    let within = metric(metrics, "pidmap_loop_iteration_seconds_bucket{le=\"0.01\"}");
    let over = count - within;
    eprintln!(
        "loop: {count} iterations, {over} over 10 ms, longest {:.2} ms",
        max * 1e3
    );
    assert!(
        max < 0.010,
        "{over} of {count} loop iterations over 10 ms, the longest {:.2} ms{}",
        max * 1e3,
        slow_lines(log)
    );
}

/// A counter or gauge of the Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in the metrics:\n{text}"))
}

fn keys_of_pids(trie: &MapHandle, pids: &[u32]) -> usize {
    common::trie_keys(trie)
        .iter()
        .filter(|k| pids.contains(&k.pid()))
        .count()
}

/// Starts a root process (a child forked once python is loaded: its fork
/// asks for the sync, with every library mapped) and waits until the trie
/// holds all its keys.
fn root_process_gets_all_its_keys(trie: &MapHandle, file: &Path) -> Mapper {
    let m = Mapper::start(false, file, 0, 1);
    let pid = m.kids[0];
    let t0 = Instant::now();
    while keys_of(trie, pid) != expected_keys(pid) {
        let (have, want) = (keys_of(trie, pid), expected_keys(pid));
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "waited 5 s for every key of root process {pid}: {} of {} in the trie ({} keys in all), missing {:x?}",
            have.len(),
            want.len(),
            common::trie_keys(trie).len(),
            want.iter().filter(|k| !have.contains(k)).map(|k| k.page()).collect::<Vec<_>>(),
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    m
}

/// Kills the child of `m` (every key of it in the trie) and returns how
/// long its keys stayed in the trie after the kill. Each key is looked up
/// (no walk of the whole trie, which takes a good part of a second when
/// it holds 100 000 keys): the trie finds no match for a key once it and
/// every shorter prefix of it are gone.
fn exit_cleanup_time(trie: &MapHandle, m: Mapper) -> Duration {
    let pid = m.kids[0];
    let keys = keys_of(trie, pid);
    assert!(!keys.is_empty(), "victim {pid} has no key to clean up");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    let took = wait_for("the victim's keys deleted", Duration::from_secs(5), || {
        keys.iter().all(|k| {
            trie.lookup::<PidPage, pidmap::abi::MappingInfo>(k)
                .unwrap()
                .is_none()
        })
    });
    m.finish();
    took
}

#[test]
fn one_user_cannot_take_the_trie() {
    let _serial = one_at_a_time();
    if !common::bpf_available() {
        return;
    }
    const CAPACITY: usize = 65536;
    let (per_process, per_uid) = (CAPACITY / 16, CAPACITY / 4);
    let file = mappable_file("hostile-budget");
    let agent = Agent::start("hostile-budget", &["--max-entries", "65536"]);
    let trie = agent.trie();
    // 16 processes of 3 000 mappings (~9 000 keys each): 8x the uid budget
    let attack = Mapper::start(true, &file, 3000, 16);
    let kids = attack.kids.clone();
    wait_for(
        "the attacker's processes to fill the uid budget",
        Duration::from_secs(30),
        || keys_of_pids(&trie, &kids) + 16 * 128 >= per_uid,
    );
    let held = keys_of_pids(&trie, &kids);
    assert!(held <= per_uid, "uid 65534 holds {held} > {per_uid} keys");
    for k in &kids {
        let have = keys_of(&trie, *k);
        let want = expected_keys(*k);
        let marker = trie
            .lookup::<PidPage, pidmap::abi::MappingInfo>(&PidPage::marker(*k))
            .unwrap()
            .map(|v| v.bias());
        assert!(
            have.len() <= per_process,
            "pid {k} holds {} > {per_process} keys: {} of them not of its maps, marker {marker:?}, start time {:?}, log so far in the agent's stderr",
            have.len(),
            have.iter().filter(|h| !want.contains(h)).count(),
            pidmap::proc::stat::start_time(*k),
        );
    }
    // a root process started afterwards gets every key, and its exit is
    // handled within a second
    let victim = root_process_gets_all_its_keys(&trie, &file);
    let cleanup = exit_cleanup_time(&trie, victim);
    assert!(
        cleanup < Duration::from_secs(1),
        "exit handled after {cleanup:?}"
    );
    let (rss, hwm) = (agent.status_kb("VmRSS:"), agent.status_kb("VmHWM:"));
    eprintln!(
        "attack: uid 65534 holds {held} keys, victim cleaned up in {cleanup:?}, agent VmRSS {rss} kB VmHWM {hwm} kB"
    );
    assert!(hwm < 64 * 1024, "agent peak RSS {hwm} kB >= 64 MiB");
    // the attack ends: nothing of it stays, and the audit finds nothing
    let kids = attack.finish();
    wait_for(
        "the attacker's keys deleted",
        Duration::from_secs(10),
        || keys_of_pids(&trie, &kids) == 0,
    );
    // the agent runs --all: processes of the machine (and of the other
    // test) exit while the audit runs; only a lasting entry is a leak
    common::audit_clean(&agent.pins, &trie);
    let (took, log, metrics) = agent.terminate();
    assert!(took < Duration::from_secs(1), "SIGTERM took {took:?}");
    let warns = log.lines().filter(|l| l.contains(" WARN ")).count();
    let over = metric(&metrics, "pidmap_keys_over_budget_total");
    let procs_over = metric(&metrics, "pidmap_processes_over_budget_total");
    let max = metric(&metrics, "pidmap_loop_iteration_max_seconds");
    eprintln!(
        "attack: {warns} WARN lines, {over} keys and {procs_over} processes over budget, longest loop iteration {:.2} ms",
        max * 1e3
    );
    assert!(
        over > 0.0 && procs_over >= 12.0,
        "the budget counters moved"
    );
    // one line per kind (over budget, sync failed, ...) in a run this short
    assert!(warns <= 5, "{warns} WARN lines:\n{log}");
    loop_never_stalls(&metrics, &log);
}

#[test]
fn a_huge_process_is_synced_in_chunks() {
    let _serial = one_at_a_time();
    if !common::bpf_available() {
        return;
    }
    let file = mappable_file("hostile-huge");
    // no per-process budget (the huge process needs ~90 000 keys), but a
    // per-uid one: the agent runs --all, and without it the processes of
    // another user on the machine (the attacker of the test above, 16 x
    // 9 000 keys) take the room open to new processes, and the huge one's
    // first sync is cut short (nothing syncs it again: it asks no more)
    let agent = Agent::start(
        "hostile-huge",
        &[
            "--max-entries",
            "131072",
            "--max-keys-per-process",
            "0",
            "--max-keys-per-uid",
            "16384",
        ],
    );
    let trie = agent.trie();
    // a child inheriting 30 000 mappings (~90 000 keys) is synced at fork
    let huge = Mapper::start(false, &file, 30_000, 1);
    let pid = huge.kids[0];
    let want = expected_keys(pid);
    assert!(want.len() > 60_000, "{} keys", want.len());
    let t0 = Instant::now();
    while keys_of(&trie, pid).len() != want.len() {
        if t0.elapsed() > Duration::from_secs(60) {
            let metrics = std::fs::read_to_string(&agent.metrics).unwrap_or_default();
            panic!(
                "waited 60 s for every key of the huge process in the trie: {} of {} ({} keys in all); metrics:\n{metrics}",
                keys_of(&trie, pid).len(),
                want.len(),
                common::trie_keys(&trie).len(),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t0.elapsed();
    assert_eq!(keys_of(&trie, pid), want);
    // the victim's exit is still served within a second
    let victim = root_process_gets_all_its_keys(&trie, &file);
    let cleanup = exit_cleanup_time(&trie, victim);
    assert!(
        cleanup < Duration::from_secs(1),
        "exit handled after {cleanup:?}"
    );
    let hwm = agent.status_kb("VmHWM:");
    let kids = huge.finish();
    wait_for(
        "the huge process's keys deleted",
        Duration::from_secs(10),
        || keys_of_pids(&trie, &kids) == 0,
    );
    let (_, log, metrics) = agent.terminate();
    let max = metric(&metrics, "pidmap_loop_iteration_max_seconds");
    let steps = metric(&metrics, "pidmap_sync_steps_total");
    eprintln!(
        "huge: {} keys landed within {took:?} in {steps} steps, longest loop iteration {:.2} ms, agent VmHWM {hwm} kB",
        want.len(),
        max * 1e3
    );
    loop_never_stalls(&metrics, &log);
}
