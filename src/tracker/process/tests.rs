//! Tests of `process`.

use super::*;
use crate::proc::maps as procmaps;
use crate::sys::fake::{self, FakeBatch, FakeMap};

/// The keys of `pid` recomputed from its maps (exec files, [vdso],
/// marker), sorted as the fake kernel stores them.
fn expected(pid: u32) -> Vec<Vec<u8>> {
    let (entries, _) = procmaps::parse_maps(&std::fs::read(format!("/proc/{pid}/maps")).unwrap());
    let mut keys = vec![PidPage::marker(pid)];
    for e in entries.iter().filter(|e| e.is_exec_file() || e.is_vdso()) {
        keys.extend(prefix::keys(pid, e.start, e.end));
    }
    let mut out: Vec<Vec<u8>> = keys
        .iter()
        .map(|k| crate::sys::bytes_of(std::slice::from_ref(k)).to_vec())
        .collect();
    out.sort();
    out
}

/// Old kernels through the fake: track, change, exit with zero leaks.
fn old_kernel_scenario(batch: FakeBatch, pidfd_errno: Option<i32>) {
    let mut k = FakeMap::new(16, 16, 1 << 20);
    k.delete_batch = batch;
    k.update_batch = batch;
    fake::bpf::install(k);
    if let Some(errno) = pidfd_errno {
        fake::pidfd::fail_with(errno);
    }
    let fallbacks = COUNTERS.snapshot().pidfd_fallbacks;
    let mut child = sleeper();
    let pid = child.id();
    let mut pm = ProcessManager::new(Tables::create(1 << 20).unwrap());
    assert_eq!(
        pm.tables.delete_support() != crate::maps::engine::BatchSupport::Supported,
        batch != FakeBatch::Supported
    );
    assert!(matches!(
        pm.sync(pid),
        SyncOutcome::Synced { new: true, .. }
    ));
    let stored: Vec<Vec<u8>> = fake::bpf::with(|k| k.entries.keys().cloned().collect());
    assert_eq!(stored, expected(pid), "track");
    // a re-sync knows the process (with or without a pidfd)
    assert!(matches!(
        pm.sync(pid),
        SyncOutcome::Synced {
            new: false,
            added: 0,
            removed: 0
        }
    ));
    // change: one mapping goes (path 1)
    let start = *pm.get(pid).unwrap().mappings.keys().next().unwrap();
    let n = pm.get(pid).unwrap().mappings[&start].key_count();
    assert!(pm.unmap(pid, start));
    assert_eq!(
        fake::bpf::with(|k| k.entries.len()),
        stored.len() - n,
        "change"
    );
    // exit
    child.kill().unwrap();
    child.wait().unwrap();
    if pidfd_errno.is_some() {
        assert!(pm.get(pid).unwrap().pidfd.is_none());
        assert!(COUNTERS.snapshot().pidfd_fallbacks > fallbacks);
        assert_eq!(pm.sweep(), vec![pid], "the liveness sweep finds the exit");
    } else {
        assert_eq!(pm.fired(), vec![pid]);
        assert!(pm.process_exit(pid).is_some());
    }
    assert!(pm.process_exit(pid).is_none(), "a second exit is a no-op");
    let k = fake::bpf::uninstall().unwrap();
    fake::pidfd::uninstall();
    assert!(k.entries.is_empty(), "zero leaks");
    assert!(pm.registry.is_empty());
    let batches = k.calls_of(libbpf_sys::BPF_MAP_DELETE_BATCH);
    if batch != FakeBatch::Supported {
        assert_eq!(batches, 1, "only the probe: every delete went key by key");
    }
}

#[test]
fn old_kernel_without_lpm_batch_ops() {
    old_kernel_scenario(FakeBatch::NotSupported, None); // 5.6 - 5.12
}

#[test]
fn old_kernel_without_the_batch_command() {
    old_kernel_scenario(FakeBatch::Unknown, None); // < 5.6
}

#[test]
fn old_kernel_without_pidfd_open() {
    old_kernel_scenario(FakeBatch::Unknown, Some(libc::ENOSYS)); // < 5.3
}

#[test]
fn current_kernel_through_the_fake() {
    old_kernel_scenario(FakeBatch::Supported, None);
}

/// The request drain of `pid_events` on kernels without
/// BPF_MAP_LOOKUP_AND_DELETE_BATCH (before 5.6: EINVAL; ENOTSUPP for a
/// map type without it): key by key, the same requests, the map emptied.
#[test]
fn requests_are_drained_without_the_batch_command() {
    for batch in [
        FakeBatch::Supported,
        FakeBatch::Unknown,
        FakeBatch::NotSupported,
    ] {
        let mut events = FakeMap::new(8, 1, 65536);
        events.delete_batch = batch;
        fake::bpf::install(events);
        fake::bpf::add_map(FakeMap::new(16, 16, 1 << 20)); // the trie
        let pm = ProcessManager::new(Tables::create(1 << 20).unwrap());
        fake::bpf::with(|k| {
            for key in [(7u64 << 32) | 7, (7 << 32) | 8, (9 << 32) | 9] {
                k.entries.insert(key.to_ne_bytes().to_vec(), vec![1]);
            }
        });
        let pids = pm.take_requests().unwrap();
        assert_eq!(pids, std::collections::BTreeSet::from([7, 9]), "{batch:?}");
        let (left, singles) =
            fake::bpf::with(|k| (k.entries.len(), k.calls_of(libbpf_sys::BPF_MAP_DELETE_ELEM)));
        assert_eq!(left, 0, "{batch:?}: requests left in the map");
        assert_eq!(
            singles,
            if batch == FakeBatch::Supported { 0 } else { 3 },
            "{batch:?}"
        );
        fake::bpf::uninstall();
    }
}

/// A child that stays up until killed (at the latest when this guard
/// drops, so a failing test leaves no process behind).
struct Sleeper(std::process::Child);

impl std::ops::Deref for Sleeper {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Sleeper {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `pid` (a /bin/sleep) sleeps in its nanosleep: its loader
/// is done changing its mappings, so its maps stay as they are.
fn settled(pid: u32) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        // the number of the system call it blocks in: clock_nanosleep or
        // nanosleep on x86_64
        let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        if matches!(call.split(' ').next(), Some("230" | "35")) {
            return;
        }
        assert!(
            Instant::now() < end,
            "waited 10 s for pid {pid} to sleep: {call:?}"
        );
        std::thread::yield_now();
    }
}

/// A [`Sleeper`] asleep, its loader done.
fn sleeper() -> Sleeper {
    sleeping(std::process::Command::new("/bin/sleep").arg("1000"))
}

fn sleeping(cmd: &mut std::process::Command) -> Sleeper {
    let child = Sleeper(cmd.spawn().expect("spawning /bin/sleep"));
    settled(child.id());
    child
}

/// The budget, the model and the (fake) trie agree.
fn balanced(pm: &ProcessManager) {
    let in_trie = fake::bpf::with(|k| k.entries.len());
    assert_eq!(pm.key_count(), in_trie, "the model is the trie");
    assert_eq!(
        pm.budget.total() as usize,
        in_trie,
        "the budget is the model"
    );
    let by_uid: usize = pm
        .procs
        .values()
        .filter(|p| p.uid == 4242)
        .map(Process::key_count)
        .sum();
    assert_eq!(pm.budget.held_by(4242) as usize, by_uid);
    for p in pm.procs.values() {
        assert_eq!(p.held as usize, p.key_count(), "running count of {}", p.pid);
    }
}

/// The mappings of `pid` in the model, as a sync would want them.
fn modelled(pm: &ProcessManager, pid: u32) -> Vec<Wanted> {
    pm.get(pid)
        .unwrap()
        .mappings
        .values()
        .map(|m| Wanted {
            start: m.start,
            end: m.end,
            offset: m.offset,
            file_id: m.file_id,
            dev: 0,
            ino: 0,
            deleted: false,
        })
        .collect()
}

/// `n` mappings of 7 pages at odd page addresses (3 prefix blocks each).
fn synthetic(n: u64, base: u64) -> Vec<Wanted> {
    (0..n)
        .map(|i| {
            let start = base + i * 0x10000 + 0x1000;
            Wanted {
                start,
                end: start + 0x7000,
                offset: 0,
                file_id: 77,
                dev: 1,
                ino: 2,
                deleted: false,
            }
        })
        .collect()
}

/// A job of `pid` about to diff the model against `want`.
fn plan(pm: &mut ProcessManager, pid: u32, mut want: Vec<Wanted>) {
    want.sort_unstable_by_key(|w| w.start);
    let mut job = Job::fresh();
    job.phase = Phase::Plan(Box::new(Planning {
        want,
        paths: HashMap::from([(77, "/synthetic".to_string())]),
        pos: 0,
        cursor: 0,
    }));
    pm.jobs.insert(pid, job);
}

/// Applies `want` to the tracked `pid` as a sync would once its maps
/// are read; returns the steps it took.
fn apply_wanted(pm: &mut ProcessManager, pid: u32, want: Vec<Wanted>) -> usize {
    plan(pm, pid, want);
    let mut steps = 0;
    loop {
        steps += 1;
        if let Step::Done(out) = pm.step(pid) {
            assert!(matches!(out, SyncOutcome::Synced { .. }), "{out:?}");
            return steps;
        }
    }
}

#[test]
fn budgets_charge_what_landed_and_release_it_all() {
    fake::bpf::install(FakeMap::new(16, 16, 1 << 20));
    let mut child = sleeper();
    let pid = child.id();
    let mut pm = ProcessManager::new(Tables::create(1 << 20).unwrap());
    // per process: the marker and 7 keys
    pm.set_limits(Some(budget::Limits::new(1 << 20, Some(8), Some(0))));
    let before = COUNTERS.snapshot();
    assert!(matches!(
        pm.sync(pid),
        SyncOutcome::Synced { new: true, .. }
    ));
    pm.procs.get_mut(&pid).unwrap().uid = 4242; // re-charged below
    let held = pm.get(pid).unwrap().key_count() as u64;
    pm.budget.release(0, held);
    pm.budget.charge(4242, held);
    balanced(&pm);
    let p = pm.get(pid).unwrap();
    assert!(p.marker, "the marker lands first");
    assert!(p.key_count() <= 8);
    // the whole process needs more: it was tracked partially, largest first
    let all = expected(pid).len();
    assert!(all > 8, "sleep maps more than the budget ({all})");
    let d = COUNTERS.snapshot().since(&before);
    assert!(d.keys_over_budget > 0 && d.processes_over_budget >= 1);
    assert!(p.over_budget);
    // largest first: a mapping left out while a smaller one was kept
    // needed more keys than the budget had left when its turn came
    let (entries, _) = procmaps::parse_maps(&std::fs::read(format!("/proc/{pid}/maps")).unwrap());
    let size = |s: u64, e: u64| e - s;
    let mut left_out = 0;
    for e in entries.iter().filter(|e| e.is_exec_file() || e.is_vdso()) {
        if p.mappings.contains_key(&e.start) {
            continue;
        }
        left_out += 1;
        let before: usize = p
            .mappings
            .values()
            .filter(|m| size(m.start, m.end) >= size(e.start, e.end))
            .map(Mapping::key_count)
            .sum();
        if p.mappings
            .values()
            .any(|m| size(m.start, m.end) < size(e.start, e.end))
        {
            let need = prefix::cover(e.start, e.end).unwrap().len();
            assert!(
                need > 8 - 1 - before,
                "{e:?} fitted ({need} keys, {before} before)"
            );
        }
    }
    assert!(left_out > 0);
    // a re-sync with no change adds nothing and keeps the balance
    assert!(matches!(
        pm.sync(pid),
        SyncOutcome::Synced {
            new: false,
            added: 0,
            removed: 0
        }
    ));
    balanced(&pm);
    // no limit: the rest lands; then mappings go and others come
    pm.budget = {
        let mut b = Budget::new(None);
        b.charge(4242, pm.get(pid).unwrap().key_count() as u64);
        b
    };
    let mut want: Vec<Wanted> = pm
        .get(pid)
        .unwrap()
        .mappings
        .values()
        .skip(1)
        .map(|m| Wanted {
            start: m.start,
            end: m.end,
            offset: m.offset,
            file_id: m.file_id,
            dev: 0,
            ino: 0,
            deleted: false,
        })
        .collect();
    want.extend(synthetic(3, 0x1000_0000));
    apply_wanted(&mut pm, pid, want);
    balanced(&pm);
    let first = *pm.get(pid).unwrap().mappings.keys().next().unwrap();
    assert!(pm.unmap(pid, first));
    balanced(&pm);
    // exit: everything released, nothing left
    child.kill().unwrap();
    child.wait().unwrap();
    pm.process_exit(pid).unwrap();
    balanced(&pm);
    assert_eq!((pm.budget.total(), pm.budget.uids()), (0, 0));
    let k = fake::bpf::uninstall().unwrap();
    assert!(k.entries.is_empty());
    assert!(pm.registry.is_empty());
}

#[test]
fn a_huge_process_is_synced_in_bounded_steps_and_its_exit_midway_leaves_nothing() {
    fake::bpf::install(FakeMap::new(16, 16, 1 << 20));
    let mut child = sleeper();
    let pid = child.id();
    let mut pm = ProcessManager::new(Tables::create(1 << 20).unwrap());
    assert!(matches!(pm.sync(pid), SyncOutcome::Synced { .. }));
    pm.procs.get_mut(&pid).unwrap().uid = 4242;
    pm.budget.release(0, pm.key_count() as u64);
    pm.budget.charge(4242, pm.key_count() as u64);
    let base = fake::bpf::with(|k| k.entries.len());
    let calls = fake::bpf::with(|k| k.calls.len());
    let real = modelled(&pm, pid);
    // 10 000 more mappings of 3 keys: at least 30 000 / STEP_KEYS steps
    let mut want = real.clone();
    want.extend(synthetic(10_000, 0x1_0000_0000));
    let steps = apply_wanted(&mut pm, pid, want);
    assert!(steps > 30_000 / STEP_KEYS, "{steps} steps");
    let sent = fake::bpf::with(|k| k.calls[calls..].iter().map(|c| c.1).max());
    assert!(
        sent.unwrap() as usize <= STEP_KEYS,
        "a batch of {sent:?} keys"
    );
    // removed mappings (the synthetic ones go) are deleted in steps too
    assert_eq!(fake::bpf::with(|k| k.entries.len()), base + 30_000);
    let calls = fake::bpf::with(|k| k.calls.len());
    apply_wanted(&mut pm, pid, real);
    let sent = fake::bpf::with(|k| k.calls[calls..].iter().map(|c| c.1).max());
    assert!(
        sent.unwrap() as usize <= STEP_KEYS + 128,
        "a batch of {sent:?} keys"
    );
    assert_eq!(fake::bpf::with(|k| k.entries.len()), base);
    balanced(&pm);
    // again, but the process exits after a few steps: what landed goes
    plan(&mut pm, pid, synthetic(10_000, 0x1_0000_0000));
    for _ in 0..20 {
        assert!(matches!(pm.step(pid), Step::More));
    }
    balanced(&pm);
    let landed = pm.get(pid).unwrap().key_count();
    assert!(landed > 1000 && landed < 30_000, "midway: {landed} keys");
    assert!(pm.is_syncing(pid));
    child.kill().unwrap();
    child.wait().unwrap();
    pm.process_exit(pid).unwrap();
    assert!(!pm.is_syncing(pid));
    assert_eq!(pm.budget.total(), 0);
    assert!(
        fake::bpf::uninstall().unwrap().entries.is_empty(),
        "zero leaks"
    );
}

/// The fake kernel with a trie, fake pidfds, a sleeper and its manager.
fn with_fake_pidfds() -> (Sleeper, ProcessManager) {
    fake::reset();
    fake::bpf::install(FakeMap::new(16, 16, 1 << 20));
    fake::pidfd::install();
    let child = sleeper();
    (child, ProcessManager::new(Tables::create(1 << 20).unwrap()))
}

fn stop(child: Sleeper) {
    drop(child);
    fake::reset();
}

/// The exit path driven by the pidfd alone: the fake makes it readable
/// while the process runs on, so nothing but the pidfd can tell.
#[test]
fn an_exit_seen_on_the_pidfd_deletes_every_key_in_bounded_steps() {
    let (child, mut pm) = with_fake_pidfds();
    let pid = child.id();
    assert!(matches!(
        pm.sync(pid),
        SyncOutcome::Synced { new: true, .. }
    ));
    assert_eq!(fake::pidfd::opened(pid), 1);
    assert_eq!(pm.take_newly_tracked(), vec![pid], "its pidfd to watch");
    // 2 000 more mappings of 3 keys: the exit takes several steps
    let mut want = modelled(&pm, pid);
    want.extend(synthetic(2_000, 0x1_0000_0000));
    apply_wanted(&mut pm, pid, want);
    let keys = fake::bpf::with(|k| k.entries.len());
    assert_eq!(keys, expected(pid).len() + 6_000);
    assert!(pm.fired().is_empty(), "running, its pidfd silent");
    assert_eq!(fake::pidfd::exit(pid), 1);
    assert_eq!(pm.fired(), vec![pid], "the pidfd turned readable");
    assert!(pm.exit_later(pid));
    assert!(!pm.is_tracked(pid) && pm.is_dying(pid));
    let calls = fake::bpf::with(|k| k.calls.len());
    let mut turns = 0;
    let mut done = Vec::new();
    while pm.has_work() {
        turns += 1;
        done.extend(pm.work(Instant::now()));
    }
    assert!(turns >= keys / STEP_KEYS, "{keys} keys in {turns} turns");
    let sent = fake::bpf::with(|k| k.calls[calls..].iter().map(|c| c.1).max());
    assert!(sent.unwrap() as usize <= STEP_KEYS, "a batch of {sent:?}");
    assert!(
        matches!(&done[..], [Done { pid: p, outcome: SyncOutcome::Gone }] if *p == pid),
        "{done:?}"
    );
    assert!(!pm.is_dying(pid));
    assert_eq!(fake::bpf::with(|k| k.entries.len()), 0, "zero leaks");
    assert!(pm.registry.is_empty());
    assert_eq!(pm.budget.total(), 0);
    stop(child);
}

/// PID reuse: the pidfd opened at the start of a sync fires before the
/// sync ends; whatever the maps said belongs to no process we know.
#[test]
fn a_pidfd_firing_during_the_sync_makes_it_gone_and_leaves_nothing() {
    let (child, mut pm) = with_fake_pidfds();
    let pid = child.id();
    pm.request(pid);
    pm.work(Instant::now()); // one step: the pidfd is opened first
    assert_eq!(fake::pidfd::opened(pid), 1);
    assert_eq!(fake::pidfd::exit(pid), 1);
    let done = pm.work_all();
    assert!(
        matches!(&done[..], [Done { pid: p, outcome: SyncOutcome::Gone }] if *p == pid),
        "{done:?}"
    );
    assert!(!pm.is_tracked(pid));
    assert!(pm.take_newly_tracked().is_empty());
    assert_eq!(fake::bpf::with(|k| k.entries.len()), 0, "nothing tracked");
    stop(child);
}

/// A tracked process whose pidfd fired is gone, whatever /proc says: a
/// new sync of its number retires it and tracks what holds the number
/// now, afresh (here the same process: the fake fired without an exit).
#[test]
fn a_sync_after_the_pidfd_fired_tracks_the_number_afresh() {
    let (child, mut pm) = with_fake_pidfds();
    let pid = child.id();
    assert!(matches!(
        pm.sync(pid),
        SyncOutcome::Synced { new: true, .. }
    ));
    fake::pidfd::exit(pid);
    assert!(matches!(
        pm.sync(pid),
        SyncOutcome::Synced { new: true, .. }
    ));
    assert_eq!(fake::pidfd::opened(pid), 2, "a pidfd of its own");
    assert!(pm.fired().is_empty(), "watching the new pidfd");
    let stored: Vec<Vec<u8>> = fake::bpf::with(|k| k.entries.keys().cloned().collect());
    assert_eq!(stored, expected(pid));
    balanced(&pm);
    stop(child);
}

/// A sleeper run as uid 65534 (the tests run as root, as `make test` does).
fn sleeper_of_another_user() -> Sleeper {
    use std::os::unix::process::CommandExt;
    sleeping(
        std::process::Command::new("/bin/sleep")
            .arg("1000")
            .uid(65534)
            .gid(65534),
    )
}

/// Runs the manager as the loop does (work steps, answers of the maps
/// worker) until `want` syncs ended; each `work` call must return within
/// 50 ms (the loop is never held by a read).
fn drive(pm: &mut ProcessManager, want: usize) -> Vec<Done> {
    let end = Instant::now() + Duration::from_secs(20);
    let mut done = Vec::new();
    while done.len() < want {
        assert!(
            Instant::now() < end,
            "waited 20 s for {want} syncs: {done:?}"
        );
        pm.collect_reads(Instant::now());
        if pm.has_work() {
            let t0 = Instant::now();
            done.extend(pm.work(t0 + Duration::from_millis(2)));
            let took = t0.elapsed();
            assert!(
                took < Duration::from_millis(50),
                "a work call took {took:?}"
            );
        } else {
            pm.wait_reads(Instant::now() + Duration::from_millis(20));
        }
    }
    done
}

#[test]
fn a_stalled_maps_read_fails_its_sync_and_that_users_processes_are_then_refused() {
    assert!(
        nix::unistd::geteuid().is_root() || std::env::var_os("CI").is_none(),
        "needs root to run a process as another user"
    );
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    fake::bpf::install(FakeMap::new(16, 16, 1 << 20));
    let mut kids: Vec<Sleeper> = (0..3).map(|_| sleeper_of_another_user()).collect();
    kids.push(sleeper());
    let pids: Vec<u32> = kids.iter().map(|c| c.id()).collect();
    let (a, b, c, root) = (pids[0], pids[1], pids[2], pids[3]);
    let stalled = [a, b, c];
    let (release, held) = crossbeam_channel::bounded::<()>(0);
    let reads = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let r = reads.clone();
    let mut pm = ProcessManager::new(Tables::create(1 << 20).unwrap());
    pm.set_read_deadline(Duration::from_millis(200));
    pm.set_maps_reader(Arc::new(move |pid| {
        r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if stalled.contains(&pid) {
            // a read held by the process's mmap lock
            let _ = held.recv();
        }
        maps_read::read(pid)
    }));
    let before = COUNTERS.snapshot();
    // a stall fails the sync of that process, never the loop, and the
    // process asked for behind it is served by a fresh worker
    pm.request(a);
    pm.request(root);
    let done = drive(&mut pm, 2);
    // the root process's read went to the other maps thread: it was not
    // held behind the stalled one
    assert_eq!(done[0].pid, root, "{done:?}");
    let out = |pid: u32| &done.iter().find(|d| d.pid == pid).unwrap().outcome;
    assert!(
        matches!(out(a), SyncOutcome::Failed(e) if e.to_string().contains("took more than")),
        "{done:?}"
    );
    assert!(
        matches!(out(root), SyncOutcome::Synced { new: true, .. }),
        "{done:?}"
    );
    assert!(!pm.is_tracked(a) && pm.is_tracked(root));
    // a second stall of the same user
    pm.request(b);
    let done = drive(&mut pm, 1);
    assert!(
        matches!(done[0].outcome, SyncOutcome::Failed(_)),
        "{done:?}"
    );
    let d = COUNTERS.snapshot().since(&before);
    assert!(
        d.maps_reads_timed_out >= 2 && d.maps_workers_abandoned >= 2,
        "{d:?}"
    );
    // from now on that user's processes are not read at all
    let n = reads.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        matches!(pm.sync(c), SyncOutcome::Failed(e) if e.to_string().contains("no longer read"))
    );
    assert_eq!(
        reads.load(std::sync::atomic::Ordering::SeqCst),
        n,
        "pid {c}'s maps were read"
    );
    assert!(COUNTERS.snapshot().since(&before).maps_reads_refused >= 1);
    // root's processes still are: a re-sync of the tracked one
    assert!(matches!(
        pm.sync(root),
        SyncOutcome::Synced { new: false, .. }
    ));
    drop(release);
    drop(kids);
    assert!(pm.process_exit(root).is_some());
    fake::bpf::uninstall();
}

#[test]
fn a_process_left_short_by_a_full_trie_gets_its_keys_when_room_frees() {
    let mut first = sleeper();
    let mut second = sleeper();
    let (a, b) = (first.id(), second.id());
    let need = expected(a).len().max(expected(b).len());
    // room for either process and a few keys more: the first takes its
    // keys, the second a few of its own
    fake::bpf::install(FakeMap::new(16, 16, need + 4));
    let mut pm = ProcessManager::new(Tables::create(1 << 20).unwrap());
    pm.set_retry_every(Duration::ZERO);
    let before = COUNTERS.snapshot();
    assert!(matches!(pm.sync(a), SyncOutcome::Synced { new: true, .. }));
    assert!(matches!(pm.sync(b), SyncOutcome::Synced { new: true, .. }));
    let held = |pm: &ProcessManager| pm.get(b).map_or(0, Process::key_count);
    assert!(
        held(&pm) < expected(b).len(),
        "the trie had room for {} keys of the second process",
        held(&pm)
    );
    // the first exits: its keys go, and the second is synced again
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(pm.exit_later(a));
    let end = Instant::now() + Duration::from_secs(10);
    while pm.has_work() || pm.reads_outstanding() > 0 {
        assert!(Instant::now() < end, "waited 10 s for the re-sync");
        pm.work_all();
    }
    let stored: Vec<Vec<u8>> = fake::bpf::with(|k| k.entries.keys().cloned().collect());
    assert_eq!(
        stored,
        expected(b),
        "every key of the second process landed"
    );
    assert!(COUNTERS.snapshot().since(&before).short_resyncs >= 1);
    second.kill().unwrap();
    second.wait().unwrap();
    assert!(pm.process_exit(b).is_some());
    assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
}
