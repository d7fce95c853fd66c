//! The agent: one thread, one `mio::Poll` over the perf rings, the pidfds
//! of tracked processes, a signalfd and a waker for the control API and
//! the file worker's results.
//! Nothing busy-polls: the poll timeout only drives the metrics timer, the
//! liveness sweep, the request sweep (pid_events drained every second, for
//! requests no record announced) and the file jobs' deadlines, and is zero
//! while syncs are
//! queued: a sync is done in bounded steps between iterations
//! ([`WORK_SLICE`] per iteration), so exits, signals and other syncs are
//! served in between.
//!
//! The loop never opens a path a user controls (DESIGN §9): whatever needs
//! a file's contents is a job for the file worker (`files`).
//!
//! This file is the loop and the state it owns (about 750 lines, kept
//! whole so the loop reads top to bottom); what it is configured with
//! is in `config`, the control API in `control`, the event sources in
//! `rings`, the test-only waits in `hooks`, the command of `-- CMD` in
//! `child`.

mod child;
mod config;
mod control;
pub mod files;
mod hooks;
pub(crate) mod metrics;
mod rings;
mod unwind;
pub use unwind::UnwindView;

use child::ChildCommand;
pub use config::{
    AgentConfig, Mode, Sampling, DEFAULT_RING_PAGES, DEFAULT_SAMPLE_RING_PAGES, LOOP_SLICE,
    REQUEST_SWEEP_INTERVAL, WORK_SLICE,
};
pub use control::{spawn, AgentHandle, Command, Status};
use rings::{open_rings, Source, RING_BASE, SAMPLE_RING_BASE, SIGNALS, WAKER};

use crate::abi::{Config, ReportEvent, Sample};
use crate::agent::files::FileWorkers;
use crate::agent::metrics::{Gauges, Histogram};
use crate::counters::{add, COUNTERS};
use crate::error::{Error, Result};
use crate::maps::loader::{self, Loaded, PinLock};
use crate::sys::perf_ring::PerfRings;
use crate::sys::process as sysproc;
use crate::sys::signal::AgentSignals;
use crate::text::counted;
use crate::tracker::process::{Done, ProcessManager, Seen, SyncOutcome};
use crate::tracker::Reconciled;
use crossbeam_channel::Receiver;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Waker};
use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the loop ended.
#[derive(Debug, Default)]
pub struct Ended {
    /// The exit status of `-- CMD` (as a shell's: 128 + signal when a
    /// signal ended it, 126 when it could not be executed, 127 when it
    /// was not found).
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// `-- CMD` could not be executed: why (`exit_code` is 126 or 127).
    pub not_started: Option<String>,
    /// The sampler program's runs and their total time (ns), as the kernel
    /// counts them while `kernel.bpf_stats_enabled` is 1.
    pub sampler_runs: Option<(u64, u64)>,
}

/// Receives every decoded sample, with the process model to resolve files
/// and the file worker to read them (never on the loop thread).
pub trait SampleSink {
    fn sample(&mut self, sample: &Sample, pm: &ProcessManager, files: &mut FileWorkers);
    /// A file job submitted by [`SampleSink::sample`] finished (or failed).
    fn file_done(&mut self, done: files::Done);
    /// Once per loop turn, after the turn's exits are handled; `true` ends
    /// the run (the command's policy, e.g. profile --pid ends when every
    /// profiled process has exited).
    fn turn(&mut self, _pm: &ProcessManager, _now: Instant) -> bool {
        false
    }
    /// When the loop must turn again at the latest for this sink.
    fn next_turn(&self) -> Option<Instant> {
        None
    }
    /// The loop ended, or is ending on a signal (called again at its end:
    /// a sink acts once); the last samples follow.
    fn ended(&mut self) {}
}

pub struct Agent {
    cfg: AgentConfig,
    poll: Poll,
    loaded: Loaded,
    pm: ProcessManager,
    rings: PerfRings,
    sample_rings: PerfRings,
    signals: Option<AgentSignals>,
    rx: Receiver<Command>,
    _waker: Arc<Waker>,
    hooks: hooks::Waiters,
    /// The command of `-- CMD` while it runs (and until reaped).
    child: Option<ChildCommand>,
    ended: Option<Ended>,
    sink: Option<Box<dyn SampleSink>>,
    files: FileWorkers,
    resync_all: bool,
    /// The requests read from the request rings this turn (a buffer kept
    /// across turns).
    records: Vec<ReportEvent>,
    /// The unwind tables of the sampler's CFI walk (`--unwind auto|cfi`).
    unwinder: Option<unwind::Unwinder>,
    loop_hist: Histogram,
    /// The pin directory's lock, held for the agent's life.
    _pin_lock: Option<PinLock>,
}

impl Agent {
    /// Loads the BPF side, reconciles pins left by an earlier run and
    /// prepares the loop. Nothing is served until [`Agent::run`].
    /// Refused when another agent holds the pin directory's lock.
    pub fn new(cfg: AgentConfig) -> Result<(Agent, AgentHandle)> {
        let lock = loader::lock_pin_dir(
            &cfg.pin_dir,
            true,
            "stop that agent first, or choose another --pin-dir",
        )?;
        // a start that fails removes what it created, and only that: pins
        // an earlier run left stay for the next start or the audit; the
        // lock is held until that is done
        let before = loader::existing(&lock, &cfg.pin_dir);
        let pin_dir = cfg.pin_dir.clone();
        let mut lock = Some(lock);
        let started = Agent::start(cfg, &mut lock);
        if started.is_err() {
            loader::remove_created(&pin_dir, before);
        }
        drop(lock);
        started
    }

    /// Starts on the locked pin directory; the agent takes the lock.
    fn start(mut cfg: AgentConfig, lock: &mut Option<PinLock>) -> Result<(Agent, AgentHandle)> {
        if let Some(path) = &cfg.metrics_file {
            metrics::check_at_start(path)?;
        }
        sysproc::raise_nofile();
        let mut programs = vec!["pidmap_exec", "pidmap_fork"];
        if cfg.sampling.is_some() {
            programs.push("pidmap_sample");
        }
        let Some(held) = lock.as_ref() else {
            return Err(Error::new("the pin directory's lock was not taken"));
        };
        let (mut loaded, mut tables) =
            loader::load(held, &cfg.pin_dir, cfg.max_entries, &programs)?;
        tables.set_strategy(cfg.delete_strategy);
        tables.set_policy(cfg.delete_policy);
        let poll = Poll::new().map_err(|e| Error::from(e).context("epoll_create"))?;
        let waker = Arc::new(
            Waker::new(poll.registry(), WAKER)
                .map_err(|e| Error::from(e).context("eventfd (mio waker)"))?,
        );
        let (tx, rx) = crossbeam_channel::unbounded();
        let signals = if cfg.signals {
            let sfd = AgentSignals::open()?;
            poll.registry()
                .register(&mut SourceFd(&sfd.as_raw_fd()), SIGNALS, Interest::READABLE)
                .map_err(|e| Error::from(e).context("epoll_ctl(signalfd)"))?;
            Some(sfd)
        } else {
            None
        };
        let report_events = loaded.map("report_events")?;
        let rings = open_rings(&poll, &report_events, cfg.ring_pages, 1, RING_BASE)?;
        let track_all =
            cfg.mode == Mode::All || (cfg.sampling.is_some() && cfg.mode == Mode::Serve);
        let interval = cfg
            .sampling
            .as_ref()
            .map_or(Duration::from_millis(250), |s| s.request_interval);
        loaded.set_config(&Config {
            track_all: track_all as u32,
            track_children: matches!(cfg.mode, Mode::Pids(_) | Mode::Command(_)) as u32,
            kernel_stacks: cfg.sampling.as_ref().is_some_and(|s| s.kernel) as u32,
            wake_every_request: cfg.wake_every_request as u32,
            request_interval_ns: interval.as_nanos() as u64,
            unwind: cfg
                .sampling
                .as_ref()
                .map_or(crate::abi::UNWIND_FP, |s| s.unwind.config()),
            pad: 0,
        })?;
        let capacity = tables.capacity();
        let mut pm = ProcessManager::new(tables);
        pm.set_limits(cfg.budgets.map(|b| b.limits(capacity)));
        pm.set_vma_reader(loaded.take_vma_reader());
        // before the first sync: every file the syncs register gets a table
        let unwinder = match &cfg.sampling {
            Some(s) if s.unwind.uses_tables() => Some(unwind::Unwinder::new(
                loaded.map("unwind_files")?,
                loaded.map("unwind_pages")?,
                &mut pm,
            )),
            _ => None,
        };
        // a short slice: a wake-up of the loop (an exit's pidfd, a request)
        // preempts what runs on its CPU rather than waiting out that task's
        // slice (BENCHMARKS.md: exit latency p99)
        match crate::sys::sched::set_own_slice(LOOP_SLICE) {
            Ok(true) => log::debug!("the loop's slice is {LOOP_SLICE:?}"),
            Ok(false) => log::debug!("the loop keeps its scheduling policy (not SCHED_OTHER)"),
            Err(e) => log::debug!("{e}: the loop keeps the default slice"),
        }
        // the loop and its maps workers share one CPU: a read handed to a
        // worker, and its answer, wake no idle CPU (sys/sched.rs says why)
        if let Some(cpu) = crate::sys::sched::current_cpu() {
            let me = crate::sys::sched::thread_id();
            match crate::sys::sched::pin_thread(me, cpu) {
                Ok(()) => log::debug!("the loop runs on cpu {cpu}"),
                Err(e) => log::debug!("{e}: the loop is not pinned"),
            }
        }
        pm.start_reader(waker.clone())?;
        let mut agent = Agent {
            poll,
            pm,
            loaded,
            rings,
            sample_rings: PerfRings::none(),
            signals,
            rx,
            _waker: waker.clone(),
            hooks: hooks::Waiters::default(),
            child: None,
            ended: None,
            sink: None,
            files: FileWorkers::new(
                cfg.files.clone(),
                cfg.file_reader
                    .clone()
                    .unwrap_or_else(|| Arc::new(files::read_symbols)),
                Some(waker.clone()),
            ),
            resync_all: false,
            records: Vec::new(),
            unwinder,
            loop_hist: Histogram::default(),
            _pin_lock: None,
            cfg: AgentConfig {
                mode: std::mem::replace(&mut cfg.mode, Mode::Serve),
                ..cfg
            },
        };
        agent.reconcile()?;
        agent._pin_lock = lock.take();
        Ok((agent, AgentHandle { tx, waker }))
    }

    /// Installs the receiver of samples (before [`Agent::run`]).
    pub fn set_sample_sink(&mut self, sink: Box<dyn SampleSink>) {
        self.sink = Some(sink);
    }

    /// A handle on one of the object's maps (inspection, tests).
    pub fn map(&self, name: &str) -> Result<crate::sys::bpf::MapHandle> {
        self.loaded.map(name)
    }

    /// Attaches the sampler without running the loop (tests of the BPF
    /// side alone); [`Agent::run`] does this itself.
    pub fn start_sampler(&mut self) -> Result<()> {
        self.start_sampling()
    }

    /// Entries left in the pins by an earlier run: dead or reused pids are
    /// removed through the engine; live ones are deleted and synced afresh
    /// (their old keys may describe mappings that changed since).
    fn reconcile(&mut self) -> Result<()> {
        if !self.loaded.reused() {
            return Ok(());
        }
        let Reconciled { report, live } = self.pm.reconcile_pins()?;
        log::info!(
            "reconciled pins: {} of {} removed, {} re-synced",
            counted(report.leaked_keys(), "leaked key", "leaked keys"),
            counted(
                report.leaked.len() as u64,
                "dead or reused pid",
                "dead or reused pids"
            ),
            counted(live.len() as u64, "live pid", "live pids")
        );
        for pid in live {
            self.sync(pid);
        }
        Ok(())
    }

    /// Syncs `pid` to the end now (startup, the control API).
    fn sync(&mut self, pid: u32) -> SyncOutcome {
        let out = self.pm.sync(pid);
        self.watch_new();
        self.synced(pid, &out);
        out
    }

    /// Queues a sync of `pid`: done in steps between loop iterations.
    fn request(&mut self, pid: u32) {
        self.pm.request(pid);
    }

    /// Runs queued sync steps until `until`.
    fn work(&mut self, until: Instant) {
        let done = self.pm.work(until);
        self.finished(done);
    }

    /// Runs every queued sync to its end (before serving).
    fn work_all(&mut self) {
        let done = self.pm.work_all();
        self.finished(done);
    }

    /// Deletes the keys of every exited process now (the control API
    /// answers after that).
    fn bury_all(&mut self) {
        let done = self.pm.bury_all().into_iter().map(|pid| Done {
            pid,
            outcome: SyncOutcome::Gone,
        });
        self.finished(done.collect());
    }

    fn finished(&mut self, done: Vec<Done>) {
        self.watch_new();
        for d in done {
            self.synced(d.pid, &d.outcome);
        }
    }

    /// Watches the pidfds of processes that became tracked.
    fn watch_new(&mut self) {
        for pid in self.pm.take_newly_tracked() {
            if let Some(fd) = self.pm.pidfd(pid) {
                let raw = fd.as_raw_fd();
                if let Err(e) = self.poll.registry().register(
                    &mut SourceFd(&raw),
                    Source::pidfd(pid),
                    Interest::READABLE,
                ) {
                    crate::warn_limited!("epoll_ctl pidfd", "epoll_ctl(pidfd of {pid}): {e}");
                }
            }
        }
    }

    fn synced(&mut self, pid: u32, out: &SyncOutcome) {
        match out {
            SyncOutcome::Synced { .. } => {
                self.hooks.tracked(pid);
            }
            SyncOutcome::Gone | SyncOutcome::Failed(_) => self.notify_gone(pid),
        }
    }

    fn exit(&mut self, pid: u32) {
        // no epoll_ctl(DEL): the process leaves the model now and its
        // pidfd, closed with it, leaves the epoll set by itself
        // the keys go in steps; waiters hear of it once they are gone
        if !self.pm.exit_later(pid) {
            self.notify_gone(pid);
        }
    }

    /// Runs the exit path of every tracked process whose pidfd has fired.
    fn reap_fired(&mut self) {
        for pid in self.pm.fired() {
            self.exit(pid);
        }
    }

    fn notify_gone(&mut self, pid: u32) {
        if self.pm.is_tracked(pid) || self.pm.is_dying(pid) {
            return;
        }
        self.hooks.gone(pid);
        if let Some(c) = self.child.as_mut().filter(|c| c.pid() == pid) {
            if let Some(code) = c.reap() {
                self.ended.get_or_insert_with(Ended::default).exit_code = Some(code);
            }
        }
    }

    fn status(&self) -> Status {
        Status {
            tracked: self.pm.pids(),
            keys: self.pm.key_count(),
            files: self.pm.file_count(),
            file_refs: self.pm.file_refs(),
            files_in_use: self.pm.files_in_use(),
            counters: COUNTERS.snapshot(),
            pin_dir: self.cfg.pin_dir.clone(),
            loop_max: Duration::from_secs_f64(self.loop_hist.max),
            loop_iterations: self.loop_hist.count,
            uids: self.pm.uid_count(),
        }
    }

    fn write_metrics(&self) {
        let Some(path) = &self.cfg.metrics_file else {
            return;
        };
        let g = Gauges {
            tracked_processes: self.pm.len() as u64,
            // the running total (equal to the model's count, without a
            // walk of every mapping)
            trie_entries: self.pm.trie_entries(),
            files: self.pm.file_count() as u64,
            unwind_tables: self.unwinder.as_ref().map_or(0, |u| u.loaded().0 as u64),
            unwind_parts: self.unwinder.as_ref().map_or(0, |u| u.loaded().1),
        };
        let text =
            metrics::render(&COUNTERS.snapshot(), &g) + &metrics::render_loop(&self.loop_hist);
        if let Err(e) = metrics::write_atomic(path, &text) {
            crate::warn_limited!(
                "metrics write",
                "writing metrics to {}: {e}",
                path.display()
            );
        }
    }

    /// Serves the requests read from the rings this turn: their pids are
    /// queued (pid_events is not touched: a request with a record never
    /// went there). Then, if the BPF side raised the latch (a record the
    /// ring could not take; its request waits in pid_events), re-syncs
    /// everything as for lost records, which drains pid_events. The cost
    /// grows with the records, not with the map.
    fn serve_records(&mut self) {
        if !self.records.is_empty() {
            let mut records = std::mem::take(&mut self.records);
            records.sort_unstable_by_key(|r| r.key());
            records.dedup_by_key(|r| r.key());
            add(&COUNTERS.requests_recorded, records.len() as u64);
            let ns_per_tick = 1_000_000_000 / sysproc::clock_ticks();
            for r in &records {
                // what the BPF side saw of the process: its start time in
                // the clock ticks of /proc/PID/stat, and its pidfs inode
                let seen = (r.pid_ino != 0).then_some(Seen {
                    start_ticks: r.start_ns / ns_per_tick,
                    pid_ino: r.pid_ino,
                    uid: r.uid,
                });
                self.pm.request_seen(r.pid, seen);
            }
            records.clear();
            self.records = records;
        }
        match self.loaded.latch_raised() {
            Ok(false) => {}
            // a record the ring could not take: records were lost, and what
            // happened meanwhile (an mmap no event announces) is not known;
            // the kernel reports the loss only with the ring's next record
            Ok(true) => {
                add(&COUNTERS.latch_resyncs, 1);
                self.resync_everything();
            }
            Err(e) => {
                crate::warn_limited!("read latch", "{e}");
                self.drain_requests();
            }
        }
    }

    /// Drains pid_events (clearing the latch first, so a request that
    /// misses its record meanwhile raises it again) and syncs what was
    /// asked: on start, after lost records, when the latch is raised and
    /// on the request sweep.
    fn drain_requests(&mut self) {
        let _ = self.loaded.clear_latch();
        let pids = self.pm.take_requests().unwrap_or_else(|e| {
            crate::warn_limited!("drain requests", "{e}");
            BTreeSet::new()
        });
        for pid in pids {
            self.request(pid);
        }
    }

    fn scan_proc(&mut self) {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return;
        };
        let pids: Vec<u32> = dir
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        for pid in pids {
            self.request(pid);
        }
    }

    fn resync_everything(&mut self) {
        self.drain_requests();
        for pid in self.pm.pids() {
            self.request(pid);
        }
        if self.cfg.mode == Mode::All {
            self.scan_proc();
        }
    }

    fn read_rings(&mut self, cpu: u32) {
        if let Some(ring) = self.rings.get_mut(cpu) {
            self.resync_all |= rings::read_requests(ring, &mut self.records);
        }
    }

    fn read_samples(&mut self, cpu: u32) {
        let Some(ring) = self.sample_rings.get_mut(cpu) else {
            return;
        };
        let samples = rings::read_samples(ring);
        if let Some(u) = self.unwinder.as_mut() {
            // the files of a process whose sample missed a table are built
            // first (the walk ended there, or stepped over it)
            for s in &samples {
                u.wanted(s.header.pid, &s.user, &self.pm);
            }
        }
        if let Some(sink) = self.sink.as_mut() {
            for s in &samples {
                sink.sample(s, &self.pm, &mut self.files);
            }
        }
    }

    /// Hands finished (and timed-out) file jobs to the sink, and built
    /// unwind tables to the kernel; never waits.
    fn collect_files(&mut self) {
        let mut done = self.files.collect_all(Instant::now());
        if let Some(u) = self.unwinder.as_mut() {
            done = u.take(done, &self.pm);
        }
        if let Some(sink) = self.sink.as_mut() {
            for d in done {
                if let files::Answer::Symbols(symbols) = d.answer {
                    sink.file_done(files::Done {
                        file_id: d.file_id,
                        symbols,
                    });
                }
            }
        }
    }

    /// Files that entered the registry become unwind table builds; those
    /// that left it free theirs.
    fn follow_files(&mut self) {
        if let Some(u) = self.unwinder.as_mut() {
            u.follow(&mut self.pm, &mut self.files);
        }
    }

    /// Opens the sampler's rings and perf events (profile mode).
    fn start_sampling(&mut self) -> Result<()> {
        let Some(s) = self.cfg.sampling.clone() else {
            return Ok(());
        };
        let events = self.loaded.map("sample_events")?;
        self.sample_rings = open_rings(&self.poll, &events, s.ring_pages, 16, SAMPLE_RING_BASE)?;
        let cpus: Vec<u32> = self.sample_rings.iter().map(|r| r.cpu()).collect();
        for cpu in cpus {
            let fd = crate::sys::perf_event::open_cpu_clock(cpu, s.freq)?;
            self.loaded.attach_perf_event("pidmap_sample", fd)?;
        }
        Ok(())
    }

    /// Runs the loop until shutdown, a signal, the command's exit or the
    /// duration. Removes the pins unless `keep_pins`.
    pub fn run(mut self) -> Result<Ended> {
        match self.serve() {
            Ok(()) => self.finish(),
            Err(e) => {
                // an agent that failed leaves no pins behind unless asked to
                self.loaded.detach_all();
                if !self.cfg.keep_pins {
                    self.pm.forget_all();
                    loader::remove_pins(&self.cfg.pin_dir);
                }
                Err(e)
            }
        }
    }

    fn serve(&mut self) -> Result<()> {
        let started = Instant::now();
        match self.cfg.mode.clone() {
            Mode::Serve => {}
            Mode::All => self.scan_proc(),
            Mode::Pids(pids) => {
                for pid in pids {
                    if let SyncOutcome::Gone | SyncOutcome::Failed(_) = self.sync(pid) {
                        return Err(Error::new(format!(
                            "--pid {pid}: no such process (or not readable)"
                        )));
                    }
                }
            }
            Mode::Command(argv) => {
                // the sampler runs before the command leaves its gate, so
                // its first instructions are sampled too (opening the
                // perf events takes ~0.1 s under emulation)
                self.start_sampling()?;
                if !self.start_command(&argv)? {
                    return Ok(());
                }
            }
        }
        if !matches!(self.cfg.mode, Mode::Command(_)) {
            self.start_sampling()?;
        }
        self.drain_requests();
        self.work_all();
        self.write_metrics();
        log::info!(
            "serving: {} tracked, {}, pins in {}",
            counted(self.pm.len() as u64, "process", "processes"),
            counted(self.pm.key_count() as u64, "key", "keys"),
            self.cfg.pin_dir.display()
        );
        let mut events = Events::with_capacity(256);
        let mut next_metrics = Instant::now() + self.cfg.metrics_interval;
        let mut next_sweep = Instant::now() + self.cfg.sweep_interval;
        let mut next_request_sweep = Instant::now() + self.cfg.request_sweep_interval;
        while self.ended.is_none() {
            let now = Instant::now();
            let mut deadline = next_metrics.min(next_request_sweep);
            if let Some(at) = self.sink.as_ref().and_then(|s| s.next_turn()) {
                deadline = deadline.min(at);
            }
            if self.pm.has_without_pidfd() {
                deadline = deadline.min(next_sweep);
            }
            if let Some(d) = self.cfg.duration {
                if !self.child.as_ref().is_some_and(|c| c.ending()) {
                    deadline = deadline.min(started + d);
                }
            }
            if let Some(at) = self.child.as_ref().and_then(|c| c.deadline()) {
                deadline = deadline.min(at);
            }
            if let Some(at) = self.files.next_check(now) {
                deadline = deadline.min(at);
            }
            if let Some(at) = self.pm.next_read_check(now) {
                deadline = deadline.min(at);
            }
            let mut timeout = deadline.saturating_duration_since(now);
            if self.pm.has_work() || self.unwinder.as_ref().is_some_and(|u| u.has_work()) {
                timeout = Duration::ZERO;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::from(e).context("epoll_wait"));
            }
            let woke = Instant::now();
            let mut requests = false;
            let mut exited = Vec::new();
            for ev in events.iter() {
                match Source::of(ev.token()) {
                    Source::Signals => self.read_signals(),
                    Source::Waker | Source::Unknown => {}
                    Source::Exit(pid) => exited.push(pid),
                    Source::Command => {
                        // once its keys are gone (at once when untracked)
                        if let Some(pid) = self.child.as_ref().map(|c| c.pid()) {
                            self.notify_gone(pid);
                        }
                    }
                    Source::Samples(cpu) => self.read_samples(cpu),
                    Source::Requests(cpu) => {
                        self.read_rings(cpu);
                        requests = true;
                    }
                }
            }
            // samples first: they were taken while the exited processes
            // were alive and resolve through the model
            if !exited.is_empty() {
                let cpus: Vec<u32> = self.sample_rings.iter().map(|r| r.cpu()).collect();
                for cpu in cpus {
                    self.read_samples(cpu);
                }
            }
            if self.resync_all {
                self.resync_all = false;
                self.resync_everything();
            }
            if requests {
                self.serve_records();
            }
            for pid in exited {
                self.exit(pid);
            }
            if let Some(sink) = self.sink.as_mut() {
                if sink.turn(&self.pm, Instant::now()) {
                    self.ended.get_or_insert_with(Ended::default);
                }
            }
            while let Ok(c) = self.rx.try_recv() {
                self.handle_command(c);
            }
            // the waker is shared: file results and maps reads are drained
            // every turn
            self.collect_files();
            self.pm.collect_reads(Instant::now());
            let mut worked = None;
            if self.pm.has_work() {
                worked = Some(Instant::now());
                self.work(woke + WORK_SLICE);
            }
            self.follow_files();
            if let Some(u) = self.unwinder.as_mut().filter(|u| u.has_work()) {
                u.load(Instant::now() + WORK_SLICE, &self.pm);
            }
            let now = Instant::now();
            if now >= next_request_sweep {
                // requests other writers put in pid_events without a record
                next_request_sweep = now + self.cfg.request_sweep_interval;
                self.drain_requests();
            }
            if now >= next_sweep {
                next_sweep = now + self.cfg.sweep_interval;
                for pid in self.pm.sweep() {
                    self.notify_gone(pid);
                }
            }
            if now >= next_metrics {
                next_metrics = now + self.cfg.metrics_interval;
                self.write_metrics();
            }
            if self.cfg.duration.is_some_and(|d| now >= started + d) {
                match self.child.as_mut() {
                    // the command is ended, and the run with it
                    Some(c) if !c.ending() => {
                        log::info!("--duration reached: ending the command with SIGTERM");
                        c.forward(libc::SIGTERM, now);
                    }
                    Some(_) => {}
                    None => {
                        self.ended.get_or_insert_with(Ended::default);
                    }
                }
            }
            if self.child.as_mut().is_some_and(|c| c.on_time(now)) {
                let ended = self.ended.get_or_insert_with(Ended::default);
                ended.exit_code.get_or_insert(128 + libc::SIGKILL);
            }
            let took = woke.elapsed();
            self.loop_hist.observe(took);
            if took > Duration::from_millis(5) {
                log::debug!(
                    "slow loop iteration: {took:?} ({} events, until work {:?}, work {:?})",
                    events.iter().count(),
                    worked.map(|w| w - woke),
                    worked.map(|w| w.elapsed()),
                );
            }
        }
        Ok(())
    }

    fn read_signals(&mut self) {
        let Some(sfd) = self.signals.as_mut() else {
            return;
        };
        while let Some(sig) = sfd.pending_signal() {
            if let Some(c) = self.child.as_mut() {
                // the command's to answer; the run ends with it
                c.forward(sig, Instant::now());
            } else if sig == libc::SIGHUP {
                log::info!("SIGHUP: re-syncing everything");
                self.resync_all = true;
            } else {
                // a progress line on the terminal ends before the log line
                if let Some(sink) = self.sink.as_mut() {
                    sink.ended();
                }
                log::info!("signal {sig}: shutting down");
                self.ended.get_or_insert_with(Ended::default).signal = Some(sig);
            }
        }
    }

    fn finish(mut self) -> Result<Ended> {
        if let Some(sink) = self.sink.as_mut() {
            sink.ended();
        }
        let cpus: Vec<u32> = self.sample_rings.iter().map(|r| r.cpu()).collect();
        for cpu in cpus {
            self.read_samples(cpu);
        }
        self.loaded.detach_all();
        if !self.cfg.keep_pins {
            self.pm.forget_all();
            loader::remove_pins(&self.cfg.pin_dir);
        }
        // symbols asked for during the run, after the clean-up: each job at
        // most its deadline, all of them at most two
        if self.files.outstanding() > 0 {
            let bound = self.cfg.files.deadline * 2;
            let done = self.files.finish(bound);
            if let Some(sink) = self.sink.as_mut() {
                for d in done {
                    sink.file_done(d);
                }
            }
        }
        self.write_metrics();
        let mut ended = self.ended.take().unwrap_or_default();
        if self.cfg.sampling.is_some() {
            ended.sampler_runs = self.loaded.prog_stats("pidmap_sample").ok();
        }
        Ok(ended)
    }
}
