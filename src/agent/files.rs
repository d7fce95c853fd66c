//! The file worker: one named thread ("pidmap-files") does every read of a
//! mapped file's contents, so nothing a user does to a file can stall the
//! event loop (DESIGN §5, §9). It reads two things: a file's symbols (for
//! the profile) and its unwind table (for the sampler's CFI walk).
//!
//! The thread is a [`crate::worker::Pool`]: the loop submits jobs (a
//! mapping: pid, range, device, inode, path) and never waits; answers wake
//! it through the agent's `mio::Waker`. Each job has a deadline, counted
//! from the moment the worker starts it. A job past it is failed, and its
//! (device, inode) is never tried again; the thread stuck in it (an open
//! or read blocked on a hostile FUSE mount, say) is abandoned, and a fresh
//! one takes the jobs queued behind. While a few abandoned threads are
//! stuck, file jobs are refused.
//!
//! The worker opens files only through `sys::safe_open` (map_files first,
//! regular files with the maps line's identity only, never a FIFO or a
//! device) and parses them with bounded reads (`symbolize`).

use crate::counters::{add, COUNTERS};
use crate::sampler::symbolize::ElfSymbols;
use crate::sampler::unwind::UnwindTable;
use crate::sys::safe_open::{self, MappedFile, OpenOutcome};
use crate::worker::{Event, Pool, PoolConfig, Work};
use mio::Waker;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The worker's settings.
#[derive(Clone, Debug)]
pub struct FilesConfig {
    /// How long one job may run.
    pub deadline: Duration,
    /// Stuck workers abandoned before file jobs are refused for good.
    pub max_abandoned: usize,
}

impl Default for FilesConfig {
    fn default() -> FilesConfig {
        FilesConfig {
            deadline: Duration::from_secs(2),
            max_abandoned: 4,
        }
    }
}

/// What the worker does with one mapping (tests replace it).
pub type Reader = Arc<dyn Fn(&MappedFile) -> Option<ElfSymbols> + Send + Sync>;
/// What the worker does to build one file's unwind table.
pub type UnwindReader = Arc<dyn Fn(&MappedFile) -> Option<UnwindTable> + Send + Sync>;

/// The production reader: opens the mapping safely, counts the outcome,
/// and reads the symbols of a regular file.
pub fn read_symbols(m: &MappedFile) -> Option<ElfSymbols> {
    let f = open_counted(m)?;
    ElfSymbols::from_file(&f, &m.path)
}

/// The production unwind reader: the table of the mapping's file, opened
/// as [`read_symbols`] opens it; the vdso's from this process's own vdso
/// (the same image in every process of this kernel).
pub fn read_unwind(m: &MappedFile) -> Option<UnwindTable> {
    if m.dev == 0 && m.ino == 0 && m.path == "[vdso]" {
        return crate::sampler::unwind::of_own_vdso()
            .map_err(|e| log::debug!("unwind table of the vdso: {e}"))
            .ok();
    }
    let f = open_counted(m)?;
    let t0 = std::time::Instant::now();
    match crate::sampler::unwind::from_file(&f) {
        Ok(t) => {
            log::debug!(
                "unwind table of {}: {} entries from {} FDEs in {:?}",
                m.path,
                t.entries.len(),
                t.stats.eh_fdes + t.stats.debug_fdes,
                t0.elapsed()
            );
            Some(t)
        }
        Err(e) => {
            add(&COUNTERS.unwind_builds_failed, 1);
            log::debug!("pid {}: unwind table of {}: {e}", m.pid, m.path);
            None
        }
    }
}

fn open_counted(m: &MappedFile) -> Option<std::fs::File> {
    match safe_open::open_mapped(m) {
        OpenOutcome::Opened(f) => {
            add(&COUNTERS.files_opened, 1);
            Some(f)
        }
        OpenOutcome::NotRegular => {
            add(&COUNTERS.files_not_regular, 1);
            log::info!("pid {}: {} is not a regular file: not read", m.pid, m.path);
            None
        }
        OpenOutcome::Mismatch => {
            add(&COUNTERS.files_mismatch, 1);
            log::info!(
                "pid {}: {} is not the mapped file (device/inode differ): not read",
                m.pid,
                m.path
            );
            None
        }
        OpenOutcome::Gone => {
            add(&COUNTERS.files_gone, 1);
            log::debug!("pid {}: {} is gone", m.pid, m.path);
            None
        }
        OpenOutcome::Untrusted(why) => {
            add(&COUNTERS.files_failed, 1);
            log::debug!("pid {}: {why}", m.pid);
            None
        }
        OpenOutcome::Error(e) => {
            add(&COUNTERS.files_failed, 1);
            log::debug!("pid {}: {e}", m.pid);
            None
        }
    }
}

/// A finished symbols job, as the loop hands it on: `None` when the file
/// could not be read, was refused or timed out.
#[derive(Debug)]
pub struct Done {
    pub file_id: u64,
    pub symbols: Option<ElfSymbols>,
}

/// What a job reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Job {
    Symbols,
    Unwind,
}

/// A job's answer.
#[derive(Debug)]
pub enum Answer {
    Symbols(Option<ElfSymbols>),
    /// The table, built and made ready for the kernel.
    Unwind(Option<crate::sampler::unwind::kernel::Prepared>),
}

impl Answer {
    fn none(job: Job) -> Answer {
        match job {
            Job::Symbols => Answer::Symbols(None),
            Job::Unwind => Answer::Unwind(None),
        }
    }
}

/// A finished job of either kind.
#[derive(Debug)]
pub struct Finished {
    pub file_id: u64,
    pub answer: Answer,
}

/// Whether a job was taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Its [`Done`] comes later, through [`FileWorkers::collect`].
    Queued,
    /// Never read (failed before, or too many stuck workers): no `Done`.
    Refused,
}

/// The loop's side of the file worker (see the module doc): a [`Pool`]
/// of one thread, the files that failed, the counters.
pub struct FileWorkers {
    pool: Pool<(Job, MappedFile), Answer>,
    next_job: u64,
    /// The file id, kind and mapping of each outstanding job.
    outstanding: BTreeMap<u64, (u64, Job, MappedFile)>,
    /// (device, inode) of files whose job timed out: never retried.
    failed: HashSet<(u64, u64)>,
}

impl FileWorkers {
    /// No thread starts until the first job.
    pub fn new(cfg: FilesConfig, reader: Reader, waker: Option<Arc<Waker>>) -> FileWorkers {
        FileWorkers::with_unwind(cfg, reader, Arc::new(read_unwind), waker)
    }

    /// With the unwind reader given too.
    pub fn with_unwind(
        cfg: FilesConfig,
        reader: Reader,
        unwind: UnwindReader,
        waker: Option<Arc<Waker>>,
    ) -> FileWorkers {
        let pool_cfg = PoolConfig {
            name: "pidmap-files",
            threads: 1,
            deadline: cfg.deadline,
            max_abandoned: cfg.max_abandoned,
        };
        let work: Work<(Job, MappedFile), Answer> = Arc::new(move |(job, m)| match job {
            Job::Symbols => Answer::Symbols(reader(&m)),
            Job::Unwind => {
                Answer::Unwind(unwind(&m).map(|t| crate::sampler::unwind::kernel::prepare(&t)))
            }
        });
        FileWorkers {
            pool: Pool::new(pool_cfg, work, waker),
            next_job: 1,
            outstanding: BTreeMap::new(),
            failed: HashSet::new(),
        }
    }

    /// Jobs submitted and not yet collected.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Worker threads abandoned so far.
    pub fn abandoned(&self) -> usize {
        self.pool.abandoned()
    }

    /// Asks for the symbols of one mapping's file.
    pub fn submit(&mut self, file_id: u64, mapping: MappedFile) -> Submitted {
        self.submit_job(file_id, Job::Symbols, mapping)
    }

    /// Asks for a job of either kind on one mapping's file.
    pub fn submit_job(&mut self, file_id: u64, job: Job, mapping: MappedFile) -> Submitted {
        let id = self.next_job;
        self.next_job += 1;
        if self.failed.contains(&(mapping.dev, mapping.ino))
            || !self.pool.submit(id, (job, mapping.clone()))
        {
            add(&COUNTERS.file_jobs_refused, 1);
            return Submitted::Refused;
        }
        self.outstanding.insert(id, (file_id, job, mapping));
        Submitted::Queued
    }

    /// Finished symbols jobs, and jobs failed because the worker is stuck
    /// past the deadline (that worker is abandoned). Never blocks.
    pub fn collect(&mut self, now: Instant) -> Vec<Done> {
        symbols_only(self.collect_all(now))
    }

    /// Finished jobs of both kinds. Never blocks.
    pub fn collect_all(&mut self, now: Instant) -> Vec<Finished> {
        let events = self.pool.collect(now);
        self.take(events)
    }

    fn take(&mut self, events: Vec<Event<Answer>>) -> Vec<Finished> {
        let mut out = Vec::new();
        for ev in events {
            let job = |id: &u64| self.outstanding.get(id).map_or(Job::Symbols, |o| o.1);
            let (id, answer) = match ev {
                Event::Done(id, answer) => (id, answer),
                Event::TimedOut(id) => {
                    add(&COUNTERS.file_jobs_timed_out, 1);
                    add(&COUNTERS.file_workers_abandoned, 1);
                    if let Some((_, _, m)) = self.outstanding.get(&id) {
                        crate::warn_limited!(
                            "file job timed out",
                            "pid {}: reading {} took more than {:?}: given up, never retried",
                            m.pid,
                            m.path,
                            self.pool.config().deadline
                        );
                        self.failed.insert((m.dev, m.ino));
                    }
                    (id, Answer::none(job(&id)))
                }
                Event::Refused(id) => {
                    add(&COUNTERS.file_jobs_refused, 1);
                    (id, Answer::none(job(&id)))
                }
                Event::Panicked(id) => {
                    add(&COUNTERS.files_failed, 1);
                    (id, Answer::none(job(&id)))
                }
            };
            if let Some((file_id, _, _)) = self.outstanding.remove(&id) {
                out.push(Finished { file_id, answer });
            }
        }
        out
    }

    /// When the loop must look again (a running job's deadline), if any job
    /// is outstanding.
    pub fn next_check(&self, now: Instant) -> Option<Instant> {
        self.pool.next_check(now)
    }

    /// Waits for the outstanding jobs, each at most to its deadline, and
    /// `bound` in all (the end of a profile). What is left fails.
    pub fn finish(&mut self, bound: Duration) -> Vec<Done> {
        let end = Instant::now() + bound;
        let mut out = Vec::new();
        while self.outstanding.values().any(|o| o.1 == Job::Symbols) && Instant::now() < end {
            let events = self.pool.wait(end);
            out.extend(self.take(events));
        }
        for (id, (file_id, job, _)) in std::mem::take(&mut self.outstanding) {
            self.pool.cancel(id);
            if job == Job::Symbols {
                add(&COUNTERS.file_jobs_timed_out, 1);
            }
            out.push(Finished {
                file_id,
                answer: Answer::none(job),
            });
        }
        symbols_only(out)
    }
}

/// The symbols answers of `done` (unwind tables are the agent's).
fn symbols_only(done: Vec<Finished>) -> Vec<Done> {
    done.into_iter()
        .filter_map(|f| match f.answer {
            Answer::Symbols(symbols) => Some(Done {
                file_id: f.file_id,
                symbols,
            }),
            Answer::Unwind(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::Receiver;
    use mio::{Events, Poll, Token};
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn mapping(ino: u64) -> MappedFile {
        MappedFile {
            pid: 1,
            start: 0x1000,
            end: 0x2000,
            dev: 1,
            ino,
            path: format!("/f{ino}"),
            deleted: false,
        }
    }

    /// A reader that answers "no symbols" at once, except for inodes in
    /// `block`, where it waits on a channel; it records every call and the
    /// thread that made it.
    struct Scripted {
        calls: Mutex<Vec<(u64, String)>>,
        block: HashMap<u64, Receiver<()>>,
    }

    fn reader(s: &Arc<Scripted>) -> Reader {
        let s = s.clone();
        Arc::new(move |m: &MappedFile| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            let id = format!("{:?}", std::thread::current().id());
            s.calls
                .lock()
                .unwrap()
                .push((m.ino, format!("{name} {id}")));
            if let Some(rx) = s.block.get(&m.ino) {
                let _ = rx.recv();
            }
            None
        })
    }

    /// Collects until `n` results arrived, waiting on the waker's events;
    /// fails after 10 s saying what it waited for.
    fn wait_done(w: &mut FileWorkers, poll: &mut Poll, n: usize, what: &str) -> Vec<Done> {
        let end = Instant::now() + Duration::from_secs(10);
        let mut got = Vec::new();
        let mut events = Events::with_capacity(4);
        while got.len() < n {
            let now = Instant::now();
            assert!(now < end, "waited 10 s for {what}: got {got:?}");
            let until = w.next_check(now).unwrap_or(end).min(end);
            poll.poll(&mut events, Some(until.saturating_duration_since(now)))
                .unwrap();
            got.extend(w.collect(Instant::now()));
        }
        got
    }

    #[test]
    fn a_stuck_job_times_out_is_never_retried_and_a_fresh_worker_serves() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
        let (unblock, blocked) = crossbeam_channel::bounded::<()>(1);
        let s = Arc::new(Scripted {
            calls: Mutex::default(),
            block: HashMap::from([(7, blocked)]),
        });
        let cfg = FilesConfig {
            deadline: Duration::from_millis(200),
            max_abandoned: 4,
        };
        let mut w = FileWorkers::new(cfg, reader(&s), Some(waker));
        let before = COUNTERS.snapshot();
        let t = Instant::now();
        assert_eq!(w.submit(70, mapping(7)), Submitted::Queued);
        // queued behind the stuck one: served by the next worker
        assert_eq!(w.submit(80, mapping(8)), Submitted::Queued);
        let done = wait_done(
            &mut w,
            &mut poll,
            2,
            "the stuck job's timeout and the next job",
        );
        let elapsed = t.elapsed();
        assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        assert_eq!(done[0].file_id, 70, "the stuck job fails first");
        assert!(done.iter().all(|d| d.symbols.is_none()));
        assert_eq!(done[1].file_id, 80);
        assert_eq!(w.abandoned(), 1);
        assert_eq!(w.outstanding(), 0);
        let c = COUNTERS.snapshot().since(&before);
        assert!(c.file_jobs_timed_out >= 1);
        assert!(c.file_workers_abandoned >= 1);
        // never retried: refused at once, the reader is not called again
        assert_eq!(w.submit(70, mapping(7)), Submitted::Refused);
        assert!(COUNTERS.snapshot().since(&before).file_jobs_refused >= 1);
        // a fresh worker serves the next job
        assert_eq!(w.submit(90, mapping(9)), Submitted::Queued);
        let done = wait_done(&mut w, &mut poll, 1, "a job after the abandon");
        assert_eq!(done[0].file_id, 90);
        // the abandoned thread's late answer is dropped
        unblock.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(w.collect(Instant::now()).is_empty());
        let calls = s.calls.lock().unwrap().clone();
        assert_eq!(
            calls.iter().filter(|c| c.0 == 7).count(),
            1,
            "the stuck file is read once: {calls:?}"
        );
        let threads: Vec<&String> = calls.iter().map(|c| &c.1).collect();
        assert!(
            threads.iter().all(|t| t.starts_with("pidmap-files ")),
            "{threads:?}"
        );
        assert_ne!(
            threads[0], threads[1],
            "job 8 ran on a fresh worker: {calls:?}"
        );
    }

    #[test]
    fn after_too_many_stuck_workers_jobs_are_refused() {
        let mut poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(1)).unwrap());
        let (_keep1, b1) = crossbeam_channel::bounded::<()>(1);
        let (_keep2, b2) = crossbeam_channel::bounded::<()>(1);
        let s = Arc::new(Scripted {
            calls: Mutex::default(),
            block: HashMap::from([(1, b1), (2, b2)]),
        });
        let cfg = FilesConfig {
            deadline: Duration::from_millis(100),
            max_abandoned: 2,
        };
        let mut w = FileWorkers::new(cfg, reader(&s), Some(waker));
        for ino in [1, 2, 3] {
            assert_eq!(w.submit(ino * 10, mapping(ino)), Submitted::Queued);
        }
        // 1 and 2 time out (two workers abandoned), 3 is refused
        let done = wait_done(&mut w, &mut poll, 3, "two timeouts and a refusal");
        let ids: Vec<u64> = done.iter().map(|d| d.file_id).collect();
        assert_eq!(ids, [10, 20, 30]);
        assert_eq!(w.abandoned(), 2);
        assert_eq!(w.submit(40, mapping(4)), Submitted::Refused);
        assert!(!s.calls.lock().unwrap().iter().any(|c| c.0 == 3 || c.0 == 4));
    }

    #[test]
    fn finish_waits_for_answers_but_not_past_the_deadline() {
        let (_keep, b) = crossbeam_channel::bounded::<()>(1);
        let s = Arc::new(Scripted {
            calls: Mutex::default(),
            block: HashMap::from([(2, b)]),
        });
        let cfg = FilesConfig {
            deadline: Duration::from_millis(200),
            max_abandoned: 4,
        };
        let mut w = FileWorkers::new(cfg, reader(&s), None);
        for ino in [1, 2, 3] {
            w.submit(ino, mapping(ino));
        }
        let t = Instant::now();
        let done = w.finish(Duration::from_secs(30));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let mut ids: Vec<u64> = done.iter().map(|d| d.file_id).collect();
        ids.sort();
        assert_eq!(ids, [1, 2, 3], "every job answered, the stuck one failed");
        assert_eq!(w.outstanding(), 0);
        // and a bound shorter than the deadline is kept
        let (_keep, b) = crossbeam_channel::bounded::<()>(1);
        let s = Arc::new(Scripted {
            calls: Mutex::default(),
            block: HashMap::from([(5, b)]),
        });
        let mut w = FileWorkers::new(FilesConfig::default(), reader(&s), None);
        w.submit(5, mapping(5));
        let t = Instant::now();
        assert_eq!(w.finish(Duration::from_millis(100)).len(), 1);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
