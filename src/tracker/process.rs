//! The process manager: per tracked pid its pidfd, its mappings and the
//! exact trie keys each mapping landed, kept in step with /proc/PID/maps.
//! Every deletion (one mapping, process exit, removed mappings found by a
//! re-sync) goes through the batch engine.
//!
//! A sync is a job done in bounded steps, so a process with tens of
//! thousands of mappings never holds the event loop: its maps are read
//! and parsed on the maps worker thread (`maps_read`: the read waits on
//! the process's mmap lock, which the process controls), and a step
//! plans a window of them, or deletes or inserts at most [`STEP_KEYS`]
//! keys. The agent runs steps between loop iterations
//! ([`ProcessManager::work`]); [`ProcessManager::sync`] runs a job to its
//! end. Each process lands keys within its budget ([`crate::tracker::budget`]): the
//! marker first, then its largest mappings; the rest is counted.
//!
//! Longer than our ~600 lines on purpose (~800): the model (Process,
//! Mapping and their landed keys) and the job machine that changes it
//! share invariants (a key is in the trie iff a mapping's landed bit says
//! so; a dying pid's keys go before a new process of that number lands
//! any) that are easier to check together. The steps of a sync are in
//! process/steps.rs, the maps worker's side in process/reads.rs, the tests
//! in process/tests.rs; the /proc readers in crate::proc; what other layers
//! ask of the manager in tracker/api.rs.

use crate::abi::VmaEntry;
use crate::abi::{MappingInfo, PidPage};
use crate::counters::{add, COUNTERS};
use crate::error::Error;
use crate::maps::engine::InsertOutcome;
use crate::maps::tables::Tables;
use crate::maps::vmas::{Declined, VmaReader};
// the path tests/ use
use crate::proc::stat::{liveness, start_time};
use crate::sys::pidfd;
use crate::tracker::budget::{self, Budget};
use crate::tracker::maps_read::{self, MapsRead, Wanted};
use crate::tracker::prefix;
use crate::tracker::registry::Registry;
use crate::warn_limited;
use crate::worker::{Event, Pool, PoolConfig};
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keys one step deletes or inserts (DESIGN §3: a few thousand keys take
/// ~2 ms; a step stays well under that). A delete step may exceed it by the
/// keys of one mapping (at most 128).
pub const STEP_KEYS: usize = 1024;
/// The maps worker: a read may take this long before the sync fails and
/// the read counts as a stall against the process's owner (a fork of a
/// process with 30 000 mappings holds its mmap lock for ~40 ms). Two
/// threads: one stalled read delays no other while the second is free.
/// While 8 threads are stuck in reads, syncs fail. The threads run on the
/// loop's CPU (the agent pins the loop where it starts, before they are
/// made, and they inherit it): a read started on another, idle CPU waits
/// for it to wake, and a process that lives a millisecond is gone before
/// its maps are read (on this VM 25–80 % of 2 000 /bin/true were missed;
/// on the loop's CPU 1–2 %).
const MAPS_POOL: PoolConfig = PoolConfig {
    name: "pidmap-maps",
    threads: 2,
    deadline: Duration::from_secs(1),
    max_abandoned: 8,
};

/// One mapping of a tracked process and the keys that landed for it.
/// Its keys are the prefix cover of [start, end) (at most 128 blocks); a
/// bit per block says which landed, so no key list is kept per mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub file_id: u64,
    landed: u128,
    /// Keys of its prefix cover: fewer landed leaves it incomplete (a full
    /// trie), and a later sync tries its keys again.
    blocks: u8,
}

impl Mapping {
    /// The keys of this mapping that landed in the trie.
    pub fn keys(&self, pid: u32) -> Vec<PidPage> {
        let mut out = Vec::new();
        self.push_keys(pid, &mut out);
        out
    }

    fn push_keys(&self, pid: u32, out: &mut Vec<PidPage>) {
        if self.landed == 0 {
            return;
        }
        let keys = prefix::keys(pid, self.start, self.end);
        for (i, k) in keys.into_iter().enumerate().take(128) {
            if self.landed & (1 << i) != 0 {
                out.push(k);
            }
        }
    }

    pub fn key_count(&self) -> usize {
        self.landed.count_ones() as usize
    }

    /// Every key of its cover landed.
    fn complete(&self) -> bool {
        self.landed.count_ones() == u32::from(self.blocks)
    }
}

#[derive(Debug)]
pub struct Process {
    pub pid: u32,
    pub pidfd: Option<OwnedFd>,
    pub start_time: u64,
    /// Real uid, read at the first sync: the budget it is charged to.
    pub uid: u32,
    pub marker: bool,
    pub mappings: BTreeMap<u64, Mapping>,
    /// Mappings that went, whose keys are still to delete (a sync in
    /// progress). Recorded, so an exit deletes them.
    doomed: Vec<Mapping>,
    /// Mappings still to insert, the largest on top.
    todo: BinaryHeap<BySize>,
    /// Paths of the files of `todo` (for the registry).
    paths: HashMap<u64, String>,
    /// Keys recorded (`key_count`, kept as a running count: a step never
    /// walks every mapping).
    held: u64,
    /// False until its first sync ended: a new process does not take the
    /// reserve kept for tracked ones.
    synced_once: bool,
    /// Some mapping was left out for the budget.
    pub over_budget: bool,
}

impl Process {
    pub fn key_count(&self) -> usize {
        self.mappings
            .values()
            .map(Mapping::key_count)
            .sum::<usize>()
            + self.doomed.iter().map(Mapping::key_count).sum::<usize>()
            + self.marker as usize
    }

    /// Every recorded key: mappings first, the marker last.
    pub fn keys(&self) -> Vec<PidPage> {
        let mut out = Vec::new();
        for m in self.mappings.values().chain(&self.doomed) {
            m.push_keys(self.pid, &mut out);
        }
        if self.marker {
            out.push(PidPage::marker(self.pid));
        }
        out
    }
}

#[derive(Debug)]
pub enum SyncOutcome {
    /// In step; `new` when the process was not tracked before.
    Synced {
        new: bool,
        added: usize,
        removed: usize,
    },
    /// The process is gone (or going): nothing tracked for it.
    Gone,
    /// The sync could not be done; the error says what failed and why.
    Failed(Error),
}

/// Why a process left the model.
#[derive(Debug)]
pub struct Exited {
    pub process: Process,
    pub keys_deleted: u64,
    pub keys_absent: u64,
}

/// What [`ProcessManager::work`] finished.
#[derive(Debug)]
pub struct Done {
    pub pid: u32,
    pub outcome: SyncOutcome,
}

enum Phase {
    /// Not started: pidfd, start time and uid come first.
    Start,
    /// The maps worker is reading the maps (the job's ticket).
    Reading(u64),
    /// The maps worker answered.
    Read(Box<std::io::Result<MapsRead>>),
    Plan(Box<Planning>),
    /// Deleting `doomed`, then inserting `todo`, of the process.
    Apply,
}

/// What the BPF side saw of a process with its request (from the record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Its start time in the clock ticks of /proc/PID/stat.
    pub start_ticks: u64,
    /// The inode of its struct pid in pidfs: the pidfd opened later is the
    /// requester's only when its inode is this one.
    pub pid_ino: u64,
    /// The real uid of its leader.
    pub uid: u32,
}

struct Job {
    phase: Phase,
    /// Asked again while running: start over when done.
    again: bool,
    new: bool,
    /// pidfd and start time of a process not yet tracked.
    fresh_fd: Option<OwnedFd>,
    start_time: u64,
    /// What the BPF side saw of the process with the request.
    seen: Option<Seen>,
    uid: u32,
    added: usize,
    removed: usize,
}

impl Job {
    fn fresh() -> Job {
        Job {
            phase: Phase::Start,
            again: false,
            new: false,
            fresh_fd: None,
            start_time: 0,
            seen: None,
            uid: 0,
            added: 0,
            removed: 0,
        }
    }
}

enum Step {
    More,
    /// Waiting for the maps worker: not queued until it answers.
    Wait,
    Done(SyncOutcome),
}

/// The recorded keys of an exited process, deleted in steps: its
/// mappings' keys (made a few at a time), then its marker.
struct Dying {
    pid: u32,
    uid: u32,
    /// Keys still to delete: the marker first, taken from the end.
    keys: Vec<PidPage>,
    /// Mappings whose keys are not yet in `keys` (moved whole from the
    /// process: an exit costs no walk of its mappings).
    mappings: BTreeMap<u64, Mapping>,
    doomed: Vec<Mapping>,
}

pub struct ProcessManager {
    // the tracker's own: other layers go through the methods (here and in
    // tracker/api.rs)
    pub(super) tables: Tables,
    pub(super) registry: Registry,
    pub(super) budget: Budget,
    procs: HashMap<u32, Process>,
    jobs: HashMap<u32, Job>,
    queue: VecDeque<u32>,
    dying: VecDeque<Dying>,
    newly_tracked: Vec<u32>,
    /// The maps worker, and the pid of each read it has (by ticket).
    maps: Pool<u32, std::io::Result<MapsRead>>,
    reading: HashMap<u64, u32>,
    next_ticket: u64,
    /// Maps reads stuck past the deadline, by the owner of the process.
    stalls: HashMap<u32, u32>,
    /// Tracked processes whose last sync left keys out (budget, full
    /// trie): synced again when keys are freed, at most every
    /// `retry_every`.
    short: std::collections::BTreeSet<u32>,
    last_retry: Option<Instant>,
    retry_every: Duration,
    /// The loop's own maps read (`pidmap_vmas`), when the kernel has it;
    /// its answer buffer is kept across reads.
    vmas: Option<VmaReader>,
    vma_buf: Vec<VmaEntry>,
}

/// Maps reads of one user's processes stuck past the deadline before that
/// user's processes are no longer read (root's always are: a stall of
/// theirs costs a worker thread until it returns, see `MAPS_POOL`).
pub const STALLS_PER_UID: u32 = 2;

/// A mapping to insert, ordered by size (then lower addresses first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BySize(Wanted);

impl Ord for BySize {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        let key = |w: &Wanted| (w.end - w.start, std::cmp::Reverse(w.start));
        key(&self.0).cmp(&key(&o.0))
    }
}

impl PartialOrd for BySize {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// The diff of the model against the maps, a window at a time.
struct Planning {
    /// Sorted by start.
    want: Vec<Wanted>,
    paths: HashMap<u64, String>,
    /// Next entry of `want` to look at.
    pos: usize,
    /// Model mappings below this start are done.
    cursor: u64,
}

impl ProcessManager {
    pub fn new(tables: Tables) -> ProcessManager {
        ProcessManager {
            tables,
            registry: Registry::default(),
            budget: Budget::default(),
            procs: HashMap::new(),
            jobs: HashMap::new(),
            queue: VecDeque::new(),
            dying: VecDeque::new(),
            newly_tracked: Vec::new(),
            maps: Pool::new(MAPS_POOL, Arc::new(maps_read::read), None),
            reading: HashMap::new(),
            next_ticket: 1,
            stalls: HashMap::new(),
            short: Default::default(),
            last_retry: None,
            retry_every: Duration::from_secs(1),
            vmas: None,
            vma_buf: Vec::new(),
        }
    }

    /// How often processes left short are tried again as keys are freed
    /// (tests shorten it).
    pub fn set_retry_every(&mut self, every: Duration) {
        self.retry_every = every;
    }

    /// Keys were freed: processes whose last sync left keys out are synced
    /// again if their budget now lets them land some (at most every
    /// `retry_every`, so a full trie under churn is not re-read per exit).
    fn room_freed(&mut self) {
        if self.short.is_empty() {
            return;
        }
        let now = Instant::now();
        if self.last_retry.is_some_and(|t| now < t + self.retry_every) {
            return;
        }
        self.last_retry = Some(now);
        self.short.retain(|pid| self.procs.contains_key(pid));
        let again: Vec<u32> = self
            .short
            .iter()
            .copied()
            .filter(|pid| !self.jobs.contains_key(pid))
            .filter(|pid| {
                let p = &self.procs[pid];
                self.budget.allowance(p.uid, p.held, false) > 0
            })
            .collect();
        for pid in again {
            self.short.remove(&pid);
            add(&COUNTERS.short_resyncs, 1);
            self.request(pid);
        }
    }

    /// Budgets apply to keys landed from now on (set before the first
    /// sync).
    pub fn set_limits(&mut self, limits: Option<budget::Limits>) {
        debug_assert_eq!(self.budget.total(), 0);
        self.budget = Budget::new(limits);
    }

    pub fn is_tracked(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// Whether a sync of `pid` is queued or in progress.
    pub fn is_syncing(&self, pid: u32) -> bool {
        self.jobs.contains_key(&pid)
    }

    pub fn get(&self, pid: u32) -> Option<&Process> {
        self.procs.get(&pid)
    }

    pub fn pids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.procs.keys().copied().collect();
        v.sort_unstable();
        v
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// Keys recorded for all live tracked processes.
    pub fn key_count(&self) -> usize {
        self.procs.values().map(Process::key_count).sum()
    }

    pub fn pidfd(&self, pid: u32) -> Option<BorrowedFd<'_>> {
        self.procs.get(&pid)?.pidfd.as_ref().map(|f| f.as_fd())
    }

    /// Processes that became tracked since the last call (their pidfd is
    /// to be watched).
    pub fn take_newly_tracked(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.newly_tracked)
    }

    /// Tracked processes whose pidfd says they have exited.
    pub fn fired(&self) -> Vec<u32> {
        self.procs
            .values()
            .filter(|p| p.pidfd.as_ref().is_some_and(|fd| pidfd::exited(fd.as_fd())))
            .map(|p| p.pid)
            .collect()
    }

    /// Distinct file_ids among the mappings of tracked processes.
    pub fn files_in_use(&self) -> usize {
        let ids: std::collections::HashSet<u64> = self
            .procs
            .values()
            .flat_map(|p| p.mappings.values().map(|m| m.file_id))
            .collect();
        ids.len()
    }

    /// Whether any process is tracked without a pidfd (cheap: the loop
    /// asks on every wake-up).
    pub fn has_without_pidfd(&self) -> bool {
        self.procs.values().any(|p| p.pidfd.is_none())
    }

    /// Processes tracked without a pidfd (liveness sweep).
    pub fn without_pidfd(&self) -> Vec<u32> {
        self.procs
            .values()
            .filter(|p| p.pidfd.is_none())
            .map(|p| p.pid)
            .collect()
    }

    /// Queues a sync of `pid` (a sync already running starts over once
    /// done, so it sees the maps as they are now).
    pub fn request(&mut self, pid: u32) {
        match self.jobs.get_mut(&pid) {
            Some(j) => j.again |= !matches!(j.phase, Phase::Start),
            None => {
                self.jobs.insert(pid, Job::fresh());
                self.queue.push_back(pid);
            }
        }
    }

    /// [`ProcessManager::request`] with what the BPF side saw of the
    /// process (start time, pidfs inode): a sync of a new process whose
    /// pidfd has that inode takes that start time instead of reading it.
    pub fn request_seen(&mut self, pid: u32, seen: Option<Seen>) {
        self.request(pid);
        if let Some(j) = self.jobs.get_mut(&pid) {
            if matches!(j.phase, Phase::Start) {
                j.seen = seen.or(j.seen);
            }
        }
    }

    /// Whether syncs or deletions of exited processes are queued.
    pub fn has_work(&self) -> bool {
        !self.queue.is_empty() || !self.dying.is_empty()
    }

    /// Whether keys of an exited `pid` are still being deleted.
    pub fn is_dying(&self, pid: u32) -> bool {
        self.dying.iter().any(|d| d.pid == pid)
    }

    /// Runs steps until `until` (at least one step): the keys of exited
    /// processes first, then the queued syncs, round robin. Returns the
    /// syncs that ended and the exits whose keys are all deleted (as
    /// [`SyncOutcome::Gone`]).
    pub fn work(&mut self, until: Instant) -> Vec<Done> {
        let mut done = Vec::new();
        loop {
            let t0 = Instant::now();
            let what = match self.queue.front().and_then(|p| self.jobs.get(p)) {
                _ if !self.dying.is_empty() => "exit",
                Some(Job {
                    phase: Phase::Start,
                    ..
                }) => "start",
                Some(Job {
                    phase: Phase::Reading(_) | Phase::Read(_),
                    ..
                }) => "read",
                Some(Job {
                    phase: Phase::Plan(_),
                    ..
                }) => "plan",
                Some(Job {
                    phase: Phase::Apply,
                    ..
                }) => "apply",
                None => "none",
            };
            if !self.dying.is_empty() {
                for pid in self.bury_step() {
                    done.push(Done {
                        pid,
                        outcome: SyncOutcome::Gone,
                    });
                }
                self.room_freed();
            } else if let Some(pid) = self.queue.pop_front() {
                if self.jobs.contains_key(&pid) {
                    match self.step(pid) {
                        Step::More => self.queue.push_back(pid),
                        // queued again when the maps worker answers
                        Step::Wait => {}
                        Step::Done(outcome) => done.push(Done { pid, outcome }),
                    }
                }
            } else {
                break;
            }
            let now = Instant::now();
            if now - t0 > Duration::from_millis(5) {
                log::debug!("a work step ({what}) took {:?}", now - t0);
            }
            if now >= until {
                break;
            }
        }
        done
    }

    /// Deletes up to [`STEP_KEYS`] keys of exited processes; returns the
    /// pids whose keys are all deleted.
    fn bury_step(&mut self) -> Vec<u32> {
        let mut keys = Vec::new();
        let mut buried = Vec::new();
        while let Some(d) = self.dying.front_mut() {
            while d.keys.len() < STEP_KEYS {
                let Some(m) = d
                    .doomed
                    .pop()
                    .or_else(|| d.mappings.pop_last().map(|e| e.1))
                else {
                    break;
                };
                m.push_keys(d.pid, &mut d.keys);
                self.registry.release(m.file_id);
            }
            let n = d.keys.len().min(STEP_KEYS - keys.len());
            let from = d.keys.len() - n;
            keys.extend(d.keys.drain(from..).rev());
            self.budget.release(d.uid, n as u64);
            if !d.keys.is_empty() || !d.mappings.is_empty() || !d.doomed.is_empty() {
                break;
            }
            buried.push(d.pid);
            self.dying.pop_front();
            if keys.len() >= STEP_KEYS {
                break;
            }
        }
        if !keys.is_empty() {
            self.tables.delete(&keys);
        }
        buried
    }

    /// Deletes the keys of every exited process now.
    pub fn bury_all(&mut self) -> Vec<u32> {
        let mut buried = Vec::new();
        while !self.dying.is_empty() {
            buried.extend(self.bury_step());
        }
        buried
    }

    /// Runs every queued sync to its end (startup).
    pub fn work_all(&mut self) -> Vec<Done> {
        let mut done = Vec::new();
        loop {
            let far = Instant::now() + Duration::from_secs(3600);
            if self.has_work() {
                done.extend(self.work(far));
            } else if self.maps.outstanding() > 0 {
                self.wait_reads(far);
            } else {
                return done;
            }
        }
    }

    /// Waits for an answer of the maps worker (at most to a read's
    /// deadline, or `until`).
    fn wait_reads(&mut self, until: Instant) {
        let events = self.maps.wait(until);
        self.take_reads(events);
    }

    /// Brings the trie in step with /proc/PID/maps now, whatever the size
    /// of the process: open the pidfd first, read the maps, then confirm
    /// the pidfd has not fired (PID reuse).
    pub fn sync(&mut self, pid: u32) -> SyncOutcome {
        self.request(pid);
        loop {
            match self.step(pid) {
                Step::Done(out) => {
                    self.queue.retain(|p| *p != pid);
                    return out;
                }
                Step::More => {}
                Step::Wait => {
                    let far = Instant::now() + Duration::from_secs(3600);
                    self.wait_reads(far);
                }
            }
        }
    }

    /// One bounded step of the job of `pid`.
    fn step(&mut self, pid: u32) -> Step {
        add(&COUNTERS.sync_steps, 1);
        let r = self.step_inner(pid);
        if let Step::Done(out) = &r {
            self.jobs.remove(&pid);
            match out {
                SyncOutcome::Synced { .. } => add(&COUNTERS.syncs_ok, 1),
                SyncOutcome::Gone => add(&COUNTERS.syncs_gone, 1),
                // maps the kernel does not let us read (pid 1 under some
                // security modules, a process that became inaccessible) are
                // normal: counted, said at debug level, never a warning
                SyncOutcome::Failed(why)
                    if matches!(why.errno(), Some(libc::EACCES | libc::EPERM | libc::ESRCH)) =>
                {
                    add(&COUNTERS.syncs_unreadable, 1);
                    log::debug!("pid {pid} not tracked, its maps cannot be read: {why}");
                }
                SyncOutcome::Failed(why) => {
                    add(&COUNTERS.syncs_failed, 1);
                    warn_limited!("sync failed", "sync of pid {pid} failed: {why}");
                }
            }
        }
        r
    }

    fn step_inner(&mut self, pid: u32) -> Step {
        if self.is_dying(pid) {
            // an earlier process of this number still has keys to delete:
            // they go first (the new one's keys may be the same)
            self.bury_step();
            return Step::More;
        }
        let Some(job) = self.jobs.get_mut(&pid) else {
            return Step::Done(SyncOutcome::Gone);
        };
        match &mut job.phase {
            Phase::Start => match self.begin(pid) {
                // read on the loop: on with the diff
                Ok(()) if matches!(self.jobs.get(&pid).map(|j| &j.phase), Some(Phase::Read(_))) => {
                    Step::More
                }
                Ok(()) => Step::Wait,
                Err(out) => Step::Done(out),
            },
            Phase::Reading(_) => Step::Wait,
            Phase::Read(_) => self.end_read(pid),
            Phase::Plan(_) => self.plan_step(pid),
            Phase::Apply => self.apply_step(pid),
        }
    }

    /// The process went away during its sync.
    fn gone(&mut self, pid: u32) -> Step {
        let Some(job) = self.jobs.get_mut(&pid) else {
            return Step::Done(SyncOutcome::Gone);
        };
        if std::mem::take(&mut job.again) {
            // asked again meanwhile (an exec: the maps file opened before
            // it reads the old, torn-down address space): start over
            job.phase = Phase::Start;
            job.fresh_fd = None;
            return Step::More;
        }
        if !job.new {
            self.retire(pid);
        }
        Step::Done(SyncOutcome::Gone)
    }

    /// Deletes the keys of the mapping at `start` (path 1).
    pub fn unmap(&mut self, pid: u32, start: u64) -> bool {
        let Some(p) = self.procs.get_mut(&pid) else {
            return false;
        };
        let Some(m) = p.mappings.remove(&start) else {
            return false;
        };
        self.tables.delete(&m.keys(pid));
        self.budget.release(p.uid, m.key_count() as u64);
        p.held -= m.key_count() as u64;
        self.registry.release(m.file_id);
        true
    }

    /// Process exit (path 2): every mapping's keys, then the marker; a
    /// sync in progress is dropped (what it landed is deleted here).
    /// A second call is a no-op.
    pub fn process_exit(&mut self, pid: u32) -> Option<Exited> {
        self.drop_job(pid);
        let exited = self.exit_inner(pid);
        if exited.is_some() {
            self.room_freed();
        }
        exited
    }

    /// Process exit for the event loop: the process leaves the model now,
    /// its keys are deleted by [`ProcessManager::work`] in steps (the
    /// marker last), reported there as `Gone`. False when not tracked.
    pub fn exit_later(&mut self, pid: u32) -> bool {
        self.drop_job(pid);
        self.retire(pid)
    }

    /// The process leaves the model; its keys are queued for deletion.
    fn retire(&mut self, pid: u32) -> bool {
        let Some(process) = self.procs.remove(&pid) else {
            return false;
        };
        add(&COUNTERS.exits, 1);
        let mut keys = Vec::new();
        if process.marker {
            keys.push(PidPage::marker(pid));
        }
        self.dying.push_back(Dying {
            pid,
            uid: process.uid,
            keys,
            mappings: process.mappings,
            doomed: process.doomed,
        });
        true
    }

    fn exit_inner(&mut self, pid: u32) -> Option<Exited> {
        let process = self.procs.remove(&pid)?;
        let keys = process.keys();
        let report = self.tables.delete(&keys);
        self.budget.release(process.uid, keys.len() as u64);
        for m in process.mappings.values().chain(&process.doomed) {
            self.registry.release(m.file_id);
        }
        add(&COUNTERS.exits, 1);
        Some(Exited {
            process,
            keys_deleted: report.deleted,
            keys_absent: report.absent,
        })
    }

    /// Liveness sweep for processes tracked without a pidfd: gone or
    /// reused numbers leave through the exit path.
    pub fn sweep(&mut self) -> Vec<u32> {
        let mut gone = Vec::new();
        for pid in self.without_pidfd() {
            let start = self.procs.get(&pid).map(|p| p.start_time);
            let same = matches!(liveness(pid), Some((s, true)) if Some(s) == start);
            if !same {
                self.process_exit(pid);
                gone.push(pid);
            }
        }
        gone
    }

    /// Removes every tracked process (shutdown without kept pins).
    pub fn forget_all(&mut self) -> Vec<Exited> {
        self.short.clear();
        for pid in self.jobs.keys().copied().collect::<Vec<_>>() {
            self.drop_job(pid);
        }
        self.jobs.clear();
        self.queue.clear();
        self.bury_all();
        self.pids()
            .into_iter()
            .filter_map(|p| self.process_exit(p))
            .collect()
    }
}

mod reads;
mod steps;
#[cfg(test)]
mod tests;
