//! The agent against the real kernel (root), driven through its control
//! API: tracking, dlopen/dlclose, exec, exit, keys deleted behind its back,
//! zombie leaders, PID reuse, a full trie, lost perf records, churn.

mod common;

use common::{expected_keys, keys_of};
use pidmap::abi::PidPage;
use pidmap::agent::{self, AgentConfig, AgentHandle, Mode};
use pidmap::process::{ProcessManager, SyncOutcome};
use pidmap::sys::bpf::MapHandle;
use pidmap::tables::Tables;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

struct Workloads {
    helper: PathBuf,
    plugin: PathBuf,
}

fn workloads() -> &'static Workloads {
    static W: OnceLock<Workloads> = OnceLock::new();
    W.get_or_init(|| {
        let d = common::scratch("agent");
        Workloads {
            helper: common::build_c("helper.c", &d.join("helper"), &["-ldl", "-lpthread"]),
            plugin: common::build_c("plugin.c", &d.join("libplugin.so"), &["-shared", "-fPIC"]),
        }
    })
}

struct Helper {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Helper {
    fn start() -> Helper {
        let mut child = Command::new(&workloads().helper)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start helper");
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut h = Helper { child, stdin, out };
        assert_eq!(h.line(), "ready");
        h
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        self.out.read_line(&mut s).unwrap();
        s.trim().to_string()
    }

    fn cmd(&mut self, c: &str) -> String {
        writeln!(self.stdin.as_mut().unwrap(), "{c}").unwrap();
        self.line()
    }

    /// Ends the process (EOF on stdin) and reaps it.
    fn finish(mut self) {
        drop(self.stdin.take());
        self.child.wait().unwrap();
    }
}

impl Drop for Helper {
    /// A failing assertion never leaves a process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Running {
    handle: AgentHandle,
    join: Option<std::thread::JoinHandle<pidmap::error::Result<agent::Ended>>>,
    pins: PathBuf,
}

impl Running {
    fn trie(&self) -> MapHandle {
        MapHandle::from_pin(&self.pins.join(pidmap::abi::TRIE_NAME)).unwrap()
    }

    fn stop(mut self) {
        self.handle.shutdown();
        self.join.take().unwrap().join().unwrap().unwrap();
        assert!(!self.pins.exists(), "pins removed at a clean stop");
    }
}

fn start(name: &str, tweak: impl FnOnce(&mut AgentConfig)) -> Running {
    let pins = common::pin_dir(name);
    let mut cfg = AgentConfig {
        pin_dir: pins.clone(),
        // only the pidfd path may notice exits in these tests
        sweep_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    tweak(&mut cfg);
    let (handle, join) = agent::spawn(cfg).expect("agent starts");
    Running {
        handle,
        join: Some(join),
        pins,
    }
}

fn synced(out: Option<SyncOutcome>) {
    assert!(matches!(out, Some(SyncOutcome::Synced { .. })), "{out:?}");
}

#[test]
fn a_tracked_process_has_exactly_its_prefixes_and_marker() {
    if !common::bpf_available() {
        return;
    }
    let a = start("exact", |_| {});
    let h = Helper::start();
    synced(a.handle.sync(h.pid()));
    assert_eq!(keys_of(&a.trie(), h.pid()), expected_keys(h.pid()));
    let st = a.handle.status().unwrap();
    assert_eq!(st.keys, expected_keys(h.pid()).len());
    let pid = h.pid();
    h.finish();
    assert!(a.handle.when_gone(pid, WAIT));
    assert!(keys_of(&a.trie(), pid).is_empty());
    a.stop();
}

#[test]
fn dlopen_then_dlclose_adds_then_removes_the_library() {
    if !common::bpf_available() {
        return;
    }
    let a = start("dlopen", |_| {});
    let mut h = Helper::start();
    synced(a.handle.sync(h.pid()));
    let before = keys_of(&a.trie(), h.pid());
    assert_eq!(
        h.cmd(&format!("dlopen {}", workloads().plugin.display())),
        "ok"
    );
    synced(a.handle.sync(h.pid()));
    let with = keys_of(&a.trie(), h.pid());
    assert_eq!(with, expected_keys(h.pid()));
    assert!(with.len() > before.len(), "the library's keys appeared");
    assert_eq!(h.cmd("dlclose"), "ok");
    synced(a.handle.sync(h.pid()));
    assert_eq!(
        keys_of(&a.trie(), h.pid()),
        before,
        "the library's keys went"
    );
    let pid = h.pid();
    h.finish();
    assert!(a.handle.when_gone(pid, WAIT));
    a.stop();
}

#[test]
fn exec_replaces_the_old_images_keys() {
    if !common::bpf_available() {
        return;
    }
    let a = start("exec", |_| {});
    let mut h = Helper::start();
    let pid = h.pid();
    synced(a.handle.sync(pid));
    let old = keys_of(&a.trie(), pid);
    let sleep = std::fs::canonicalize("/bin/sleep").unwrap();
    assert_eq!(h.cmd(&format!("exec {}", sleep.display())), "ok");
    // the new image is set up once it runs sleep and the loader has mapped libc
    loop {
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
        if maps.contains(sleep.to_str().unwrap()) && maps.contains("libc.so") {
            break;
        }
        std::thread::yield_now();
    }
    synced(a.handle.sync(pid));
    let new = keys_of(&a.trie(), pid);
    assert_eq!(new, expected_keys(pid));
    let helper_keys: Vec<&PidPage> = old
        .iter()
        .filter(|k| !k.is_marker() && !new.contains(k))
        .collect();
    assert!(!helper_keys.is_empty());
    h.child.kill().unwrap();
    h.child.wait().unwrap();
    assert!(a.handle.when_gone(pid, WAIT));
    assert!(keys_of(&a.trie(), pid).is_empty());
    a.stop();
}

#[test]
fn exit_removes_every_key_through_the_pidfd() {
    if !common::bpf_available() {
        return;
    }
    let a = start("exit", |_| {});
    let h = Helper::start();
    let pid = h.pid();
    synced(a.handle.sync(pid));
    let exits = a.handle.status().unwrap().counters.exits;
    let t = std::time::Instant::now();
    h.finish();
    assert!(
        a.handle.when_gone(pid, Duration::from_secs(2)),
        "the sweep is off: only the pidfd can do this"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(keys_of(&a.trie(), pid).is_empty());
    assert!(a.handle.status().unwrap().counters.exits > exits);
    assert_eq!(
        a.handle.forget(pid),
        Some(false),
        "a second exit is a no-op"
    );
    a.stop();
}

#[test]
fn keys_deleted_behind_the_agents_back_do_not_stop_the_rest() {
    if !common::bpf_available() {
        return;
    }
    let a = start("behind", |_| {});
    let h = Helper::start();
    let pid = h.pid();
    synced(a.handle.sync(pid));
    let keys = keys_of(&a.trie(), pid);
    // another tool removes every third key through the pinned map
    let other = MapHandle::from_pin(&a.pins.join(pidmap::abi::TRIE_NAME)).unwrap();
    let mut removed = 0;
    for k in keys.iter().filter(|k| !k.is_marker()).step_by(3) {
        other.delete(k).unwrap();
        removed += 1;
    }
    let absent = a.handle.status().unwrap().counters.keys_absent;
    h.finish();
    assert!(a.handle.when_gone(pid, WAIT));
    assert!(
        keys_of(&a.trie(), pid).is_empty(),
        "no key after an absent one was left"
    );
    let now = a.handle.status().unwrap().counters.keys_absent;
    assert!(
        now - absent >= removed,
        "absent keys counted: {} < {removed}",
        now - absent
    );
    a.stop();
}

#[test]
fn a_zombie_leader_with_a_live_thread_keeps_its_keys() {
    if !common::bpf_available() {
        return;
    }
    let a = start("zombie", |_| {});
    let mut h = Helper::start();
    let pid = h.pid();
    synced(a.handle.sync(pid));
    let keys = keys_of(&a.trie(), pid);
    assert_eq!(h.cmd("zombie"), "ok");
    // the leader has exited once its stat says Z
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        if stat
            .rsplit(')')
            .next()
            .unwrap()
            .trim_start()
            .starts_with('Z')
        {
            break;
        }
        std::thread::yield_now();
    }
    assert_eq!(
        std::fs::read(format!("/proc/{pid}/maps")).unwrap().len(),
        0,
        "the trap is real"
    );
    synced(a.handle.sync(pid));
    // pthread_exit may have loaded libgcc_s: compare with the live thread's maps
    let tid = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .find(|t| *t != pid.to_string())
        .expect("a live thread");
    let want = common::expected_keys_from(pid, &format!("/proc/{pid}/task/{tid}/maps"));
    assert_eq!(keys_of(&a.trie(), pid), want, "still running: keys stay");
    assert!(keys.iter().all(|k| want.contains(k)));
    assert!(a.handle.status().unwrap().tracked.contains(&pid));
    h.finish(); // EOF ends the live thread
    assert!(a.handle.when_gone(pid, WAIT));
    assert!(keys_of(&a.trie(), pid).is_empty());
    a.stop();
}

#[test]
fn a_reused_pid_never_gets_the_old_processes_keys() {
    if !common::bpf_available() {
        return;
    }
    let tables = Tables::create(1 << 16).unwrap();
    let mut pm = ProcessManager::new(tables);
    // the old process: the helper (its own binary, libdl...)
    let old = Helper::start();
    let pid = old.pid();
    assert!(matches!(
        pm.sync(pid),
        SyncOutcome::Synced { new: true, .. }
    ));
    let old_keys = pm.trie_keys().unwrap();
    old.finish();
    // force the number onto a new process running another binary
    let mut reused = None;
    for _ in 0..200 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).unwrap();
        let c = Command::new("/bin/sleep").arg("1000").spawn().unwrap();
        if c.id() == pid {
            reused = Some(c);
            break;
        }
        let mut c = c;
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let newp = reused.expect("pid reused within 200 tries");
    let mut newp = KillOnDrop(newp);
    // sleep is set up once the loader has mapped libc
    while !std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .contains("libc.so")
    {
        std::thread::yield_now();
    }
    // a request for the new process arrives before the old one's exit
    let out = pm.sync(pid);
    assert!(
        matches!(out, SyncOutcome::Synced { new: true, .. }),
        "{out:?}"
    );
    let mut now: Vec<PidPage> = pm.trie_keys().unwrap();
    now.sort();
    assert_eq!(now, expected_keys(pid), "exactly the new process's keys");
    let stale: Vec<&PidPage> = old_keys
        .iter()
        .filter(|k| !k.is_marker() && now.contains(k))
        .collect();
    let helper_only = old_keys.len() - 1 - stale.len();
    assert!(helper_only > 0, "the old image's keys are gone");
    let marker = pm.trie_value(&PidPage::marker(pid)).unwrap().unwrap();
    assert_eq!(Some(marker.bias()), pidmap::process::start_time(pid));
    newp.0.kill().unwrap();
    newp.0.wait().unwrap();
    pm.process_exit(pid);
    assert!(pm.trie_keys().unwrap().is_empty());
    assert!(pm.file_count() == 0);
}

#[test]
fn a_full_trie_keeps_serving_and_leaves_nothing() {
    if !common::bpf_available() {
        return;
    }
    let a = start("full", |c| c.max_entries = 40);
    let hs: Vec<Helper> = (0..3).map(|_| Helper::start()).collect();
    for h in &hs {
        synced(a.handle.sync(h.pid()));
    }
    let st = a.handle.status().unwrap();
    assert!(st.counters.keys_refused > 0, "the trie filled");
    let in_trie = a.trie().keys::<PidPage>(1000).unwrap().len();
    assert_eq!(in_trie, st.keys, "the model holds exactly what landed");
    assert!(in_trie <= 40);
    let pids: Vec<u32> = hs.iter().map(|h| h.pid()).collect();
    for h in hs {
        h.finish();
    }
    for p in pids {
        assert!(a.handle.when_gone(p, WAIT));
        assert!(keys_of(&a.trie(), p).is_empty());
    }
    a.stop();
}

#[test]
fn lost_perf_records_are_counted_and_followed_by_a_resync() {
    if !common::bpf_available() {
        return;
    }
    let a = start("lost", |c| {
        c.mode = Mode::All;
        c.ring_pages = 1;
        c.wake_every_request = true;
    });
    // hold the loop while a storm of fork requests overflows the ring
    let pause = a.handle.pause();
    let mut kids = Vec::new();
    for _ in 0..400 {
        kids.push(Command::new("/bin/true").spawn().unwrap());
    }
    let pids: Vec<u32> = kids.iter().map(|k| k.id()).collect();
    for mut k in kids {
        k.wait().unwrap();
    }
    drop(pause);
    for p in &pids {
        assert!(a.handle.when_gone(*p, WAIT), "pid {p} still tracked");
    }
    let st = a.handle.status().unwrap();
    assert!(st.counters.lost_records > 0, "a 1-page ring lost records");
    let report = a.handle.audit().unwrap().unwrap();
    assert!(report.clean(), "{}", report.to_text());
    a.stop();
}

#[test]
fn churn_under_all_leaves_only_live_processes() {
    if !common::bpf_available() {
        return;
    }
    let a = start("churn", |c| c.mode = Mode::All);
    let mut pids = Vec::new();
    for i in 0..2000 {
        let exe = if i % 2 == 0 { "/bin/true" } else { "/bin/ls" };
        let mut c = Command::new(exe)
            .arg("/nonexistent-dir")
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        pids.push(c.id());
        c.wait().unwrap();
    }
    for p in &pids {
        assert!(a.handle.when_gone(*p, WAIT), "pid {p} still tracked");
    }
    let report = a.handle.audit().unwrap().unwrap();
    assert!(report.clean(), "{}", report.to_text());
    let st = a.handle.status().unwrap();
    assert!(
        st.counters.exits >= 1000,
        "exits handled: {}",
        st.counters.exits
    );
    assert_eq!(
        st.files, st.files_in_use,
        "the registry holds only live processes' files"
    );
    assert_eq!(a.trie().keys::<PidPage>(1 << 22).unwrap().len(), st.keys);
    a.stop();
}

/// Kills a child when a failing assertion unwinds, so no test leaves a
/// process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
