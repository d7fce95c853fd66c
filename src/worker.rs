//! Named worker threads with a deadline per job, for work that may block
//! on what a user controls (a mapped file's contents, a process's
//! /proc/PID/maps behind its mmap lock), so the event loop never does
//! (DESIGN §5, §9).
//!
//! The loop submits jobs over crossbeam channels, each to the thread with
//! the fewest jobs (a new one while the pool has room), so a job stuck in
//! one thread delays only what was already queued behind it there. A
//! thread without a job waits parked and is unparked by the send (or when
//! it is given up on): it spins and yields nothing between jobs. Results
//! come back over another channel, and the workers wake the loop through
//! the agent's `mio::Waker` (mio allows one per Poll: every worker and the
//! control API share it, and the loop drains them all every turn). The
//! loop never waits for a worker, except through [`Pool::wait`] where it
//! asks to.
//!
//! Each job has a deadline, counted from the moment a worker starts it. A
//! job past it is reported [`Event::TimedOut`], and the thread stuck in it
//! is abandoned: left detached, whatever it answers later is dropped, and
//! the jobs queued behind it go to the other threads or a fresh one. While
//! `max_abandoned` abandoned threads are still stuck, jobs are refused. What a timed-out job means
//! (never retry that file, stop reading that user's processes) is the
//! caller's to decide.

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::Waker;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A pool's settings.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The threads' name.
    pub name: &'static str,
    /// Threads at most: a job goes to the one with the fewest jobs, so a
    /// job stuck in one delays only what was queued behind it there.
    pub threads: usize,
    /// How long one job may run.
    pub deadline: Duration,
    /// Stuck threads abandoned before jobs are refused (until one returns).
    pub max_abandoned: usize,
}

/// What became of a submitted job.
#[derive(Debug)]
pub enum Event<R> {
    /// The worker's answer.
    Done(u64, R),
    /// The worker ran past the deadline in this job; it is abandoned.
    TimedOut(u64),
    /// Queued behind a stuck job and no worker is left to take it.
    Refused(u64),
    /// The job panicked (a bug met by a hostile input): the worker goes on.
    Panicked(u64),
}

struct Worker<J> {
    tx: Sender<(u64, J)>,
    /// The thread: unparked after each job sent, and when abandoned.
    thread: std::thread::Thread,
    /// The job it started, and when.
    running: Arc<Mutex<Option<(u64, Instant)>>>,
    /// Set when the loop gives up on the thread: it ends at its next look.
    abandoned: Arc<AtomicBool>,
    /// Set when it is abandoned stuck in a job: it counts in `stuck` until
    /// that job returns.
    was_stuck: Arc<AtomicBool>,
    /// Jobs sent to it and not answered.
    assigned: BTreeSet<u64>,
}

impl<J> Worker<J> {
    fn running(&self) -> Option<(u64, Instant)> {
        self.running.try_lock().ok().and_then(|g| *g)
    }

    /// Tells the thread to end at its next look (now, if it is waiting).
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// The work one job is.
pub type Work<J, R> = Arc<dyn Fn(J) -> R + Send + Sync>;

/// The loop's side of the worker threads (see the module doc). No thread
/// starts until the first job (or [`Pool::start`]).
pub struct Pool<J, R> {
    cfg: PoolConfig,
    work: Work<J, R>,
    waker: Option<Arc<Waker>>,
    results_tx: Sender<(u64, Option<R>)>,
    results_rx: Receiver<(u64, Option<R>)>,
    workers: Vec<Worker<J>>,
    abandoned: usize,
    /// Threads abandoned in a job that has not returned yet.
    stuck: Arc<AtomicUsize>,
    /// Jobs submitted and not yet reported, kept to hand them to another
    /// worker when theirs is abandoned.
    outstanding: BTreeMap<u64, J>,
    /// A thread could not be created (e.g. a pids cgroup at its limit).
    spawn_failed: bool,
}

impl<J: Clone + Send + 'static, R: Send + 'static> Pool<J, R> {
    pub fn new(cfg: PoolConfig, work: Work<J, R>, waker: Option<Arc<Waker>>) -> Pool<J, R> {
        let (results_tx, results_rx) = crossbeam_channel::unbounded();
        Pool {
            cfg,
            work,
            waker,
            results_tx,
            results_rx,
            workers: Vec::new(),
            abandoned: 0,
            stuck: Arc::default(),
            outstanding: BTreeMap::new(),
            spawn_failed: false,
        }
    }

    /// The waker the workers pull after each answer (set once the loop has
    /// one; jobs submitted before answer without a wake-up).
    pub fn set_waker(&mut self, waker: Arc<Waker>) {
        self.waker = Some(waker);
        self.restart();
    }

    /// The work of jobs submitted from now on (tests script it).
    pub fn set_work(&mut self, work: Work<J, R>) {
        self.work = work;
        self.restart();
    }

    /// Running threads keep what they were made with: the next ones start
    /// afresh, and the jobs not answered go to them.
    fn restart(&mut self) {
        for w in self.workers.drain(..) {
            w.abandon();
        }
        let queued: Vec<(u64, J)> = self
            .outstanding
            .iter()
            .map(|(id, j)| (*id, j.clone()))
            .collect();
        for (id, job) in queued {
            self.send(id, job);
        }
    }

    /// How long a job may run, from the next check on (tests shorten it).
    #[cfg(test)]
    pub fn set_deadline(&mut self, deadline: Duration) {
        self.cfg.deadline = deadline;
    }

    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// Jobs submitted and not yet reported.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Worker threads abandoned so far.
    pub fn abandoned(&self) -> usize {
        self.abandoned
    }

    /// Threads abandoned in a job that has not returned yet.
    pub fn stuck(&self) -> usize {
        self.stuck.load(Ordering::Acquire)
    }

    /// Whether jobs are refused: `max_abandoned` threads are stuck (until
    /// one of their jobs returns), or no thread could be made.
    pub fn is_closed(&self) -> bool {
        self.stuck() >= self.cfg.max_abandoned || (self.spawn_failed && self.workers.is_empty())
    }

    /// Queues a job; false when it is refused (see [`Pool::is_closed`]).
    pub fn submit(&mut self, id: u64, job: J) -> bool {
        if self.is_closed() || !self.send(id, job.clone()) {
            return false;
        }
        self.outstanding.insert(id, job);
        true
    }

    /// Forgets a job: its answer, if any comes, is dropped.
    pub fn cancel(&mut self, id: u64) {
        self.outstanding.remove(&id);
    }

    /// Sends a job to the worker with the fewest jobs; a new thread when
    /// every one has some and the pool is not full.
    fn send(&mut self, id: u64, job: J) -> bool {
        // the fewest jobs; between equals, the one whose running job began
        // last (one long in its job may be stuck)
        let now = Instant::now();
        let least = (0..self.workers.len()).min_by_key(|i| {
            let w = &self.workers[*i];
            let age = w.running().map_or(Duration::ZERO, |(_, t)| now - t);
            (w.assigned.len(), age)
        });
        let busy = least.is_none_or(|i| !self.workers[i].assigned.is_empty());
        let mut at = least;
        if busy
            && self.workers.len() < self.cfg.threads.max(1)
            && !self.spawn_failed
            && self.stuck() < self.cfg.max_abandoned
        {
            match self.spawn() {
                Some(w) => {
                    self.workers.push(w);
                    at = Some(self.workers.len() - 1);
                }
                // said once: from now on the threads there are do the work
                None => self.spawn_failed = true,
            }
        }
        let Some(i) = at else { return false };
        let w = &mut self.workers[i];
        if w.tx.send((id, job)).is_err() {
            return false;
        }
        w.thread.unpark();
        w.assigned.insert(id);
        true
    }

    /// Starts every thread now, so a process at its thread limit fails at
    /// start with the reason instead of failing jobs later.
    pub fn start(&mut self) -> std::io::Result<()> {
        while self.workers.len() < self.cfg.threads.max(1) {
            let w = self.try_spawn()?;
            self.workers.push(w);
        }
        Ok(())
    }

    fn spawn(&self) -> Option<Worker<J>> {
        match self.try_spawn() {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!("spawning a {} thread: {e}", self.cfg.name);
                None
            }
        }
    }

    fn try_spawn(&self) -> std::io::Result<Worker<J>> {
        let (tx, rx) = crossbeam_channel::unbounded::<(u64, J)>();
        let running: Arc<Mutex<Option<(u64, Instant)>>> = Arc::default();
        let abandoned = Arc::new(AtomicBool::new(false));
        let was_stuck = Arc::new(AtomicBool::new(false));
        let (r, a) = (running.clone(), abandoned.clone());
        let (was, stuck) = (was_stuck.clone(), self.stuck.clone());
        let results = self.results_tx.clone();
        let waker = self.waker.clone();
        let work = self.work.clone();
        let spawned = std::thread::Builder::new()
            .name(self.cfg.name.into())
            .spawn(move || loop {
                if a.load(Ordering::Acquire) {
                    return;
                }
                // parked between jobs, unparked by the send (or when given
                // up on): the channel's blocking receive spun and yielded
                // (sched_yield ~4 times a job) before it slept, ~9 us of a
                // process's lifetime
                let (id, job) = match rx.try_recv() {
                    Ok(j) => j,
                    Err(TryRecvError::Empty) => {
                        std::thread::park();
                        continue;
                    }
                    Err(TryRecvError::Disconnected) => return,
                };
                if let Ok(mut g) = r.lock() {
                    *g = Some((id, Instant::now()));
                }
                // a parser bug must not take the worker down
                let answer =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(job))).ok();
                if let Ok(mut g) = r.lock() {
                    *g = None;
                }
                if a.load(Ordering::Acquire) {
                    // the loop has given up on this thread
                    if was.load(Ordering::Acquire) {
                        stuck.fetch_sub(1, Ordering::AcqRel);
                    }
                    return;
                }
                if results.send((id, answer)).is_err() {
                    return;
                }
                if let Some(w) = &waker {
                    let _ = w.wake();
                }
            });
        spawned.map(|h| Worker {
            tx,
            thread: h.thread().clone(),
            running,
            abandoned,
            was_stuck,
            assigned: BTreeSet::new(),
        })
    }

    /// Answers that arrived, and jobs failed because their worker is stuck
    /// past the deadline (that worker is abandoned). Never blocks.
    pub fn collect(&mut self, now: Instant) -> Vec<Event<R>> {
        let mut out = Vec::new();
        while let Ok((id, r)) = self.results_rx.try_recv() {
            self.answered(id, r, &mut out);
        }
        self.check_stuck(now, &mut out);
        out
    }

    fn answered(&mut self, id: u64, r: Option<R>, out: &mut Vec<Event<R>>) {
        for w in &mut self.workers {
            w.assigned.remove(&id);
        }
        if self.outstanding.remove(&id).is_some() {
            out.push(match r {
                Some(r) => Event::Done(id, r),
                None => Event::Panicked(id),
            });
        }
    }

    /// Waits until an answer arrives, a running job passes its deadline,
    /// or `until`; then [`Pool::collect`]s.
    pub fn wait(&mut self, until: Instant) -> Vec<Event<R>> {
        let now = Instant::now();
        let mut out = self.collect(now);
        if !out.is_empty() || self.outstanding.is_empty() {
            return out;
        }
        let at = self.next_check(now).unwrap_or(until).min(until);
        if let Ok((id, r)) = self
            .results_rx
            .recv_timeout(at.saturating_duration_since(now))
        {
            self.answered(id, r, &mut out);
        }
        out.extend(self.collect(Instant::now()));
        out
    }

    /// When the loop must look again (the earliest running job's
    /// deadline), if any job is outstanding.
    pub fn next_check(&self, now: Instant) -> Option<Instant> {
        if self.outstanding.is_empty() {
            return None;
        }
        let started = self
            .workers
            .iter()
            .filter_map(|w| w.running())
            .map(|(_, t)| t)
            .min();
        // the next job may start any moment: look again one deadline from now
        Some(started.unwrap_or(now) + self.cfg.deadline)
    }

    fn check_stuck(&mut self, now: Instant, out: &mut Vec<Event<R>>) {
        let mut queued = Vec::new();
        let mut i = 0;
        while i < self.workers.len() {
            let late = self.workers[i]
                .running()
                .filter(|(_, started)| now >= *started + self.cfg.deadline);
            let Some((id, _)) = late else {
                i += 1;
                continue;
            };
            let w = self.workers.remove(i);
            // counted before the thread can see it abandoned
            self.stuck.fetch_add(1, Ordering::AcqRel);
            w.was_stuck.store(true, Ordering::Release);
            w.abandon();
            self.abandoned += 1;
            if self.outstanding.remove(&id).is_some() {
                out.push(Event::TimedOut(id));
            }
            queued.extend(w.assigned.into_iter().filter(|j| *j != id));
        }
        if self.is_closed() && !queued.is_empty() {
            log::warn!(
                "{} {} threads stuck: no more jobs are taken until one returns",
                self.stuck(),
                self.cfg.name
            );
        }
        // the jobs queued behind go to another worker, or are refused
        for id in queued {
            let Some(job) = self.outstanding.get(&id).cloned() else {
                continue;
            };
            if self.is_closed() || !self.send(id, job) {
                self.outstanding.remove(&id);
                out.push(Event::Refused(id));
            }
        }
    }
}

impl<J, R> Drop for Pool<J, R> {
    fn drop(&mut self) {
        for w in &self.workers {
            w.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn cfg(deadline_ms: u64, max_abandoned: usize) -> PoolConfig {
        PoolConfig {
            name: "pidmap-test",
            threads: 1,
            deadline: Duration::from_millis(deadline_ms),
            max_abandoned,
        }
    }

    fn wait_all<R: Send + 'static>(p: &mut Pool<u32, R>, n: usize) -> Vec<Event<R>> {
        let end = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n {
            assert!(Instant::now() < end, "waited 10 s for {n} events");
            out.extend(p.wait(end));
        }
        out
    }

    #[test]
    fn answers_come_back_with_their_ids() {
        let mut p: Pool<u32, u32> = Pool::new(cfg(2000, 2), Arc::new(|j| j * 2), None);
        assert!(p.submit(7, 21));
        assert!(p.submit(8, 4));
        let mut got: Vec<(u64, u32)> = wait_all(&mut p, 2)
            .into_iter()
            .map(|e| match e {
                Event::Done(id, r) => (id, r),
                e => panic!("unexpected {e:?}"),
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![(7, 42), (8, 8)]);
        assert_eq!(p.outstanding(), 0);
    }

    #[test]
    fn a_stuck_job_times_out_and_the_jobs_behind_it_are_served_by_a_fresh_thread() {
        // job 0 blocks until the test ends; the others answer at once
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let work: Work<u32, u32> = Arc::new(move |j| {
            if j == 0 {
                let _ = release_rx.recv();
            }
            j
        });
        let mut p = Pool::new(cfg(100, 2), work, None);
        assert!(p.submit(1, 0));
        assert!(p.submit(2, 5));
        let events = wait_all(&mut p, 2);
        assert!(matches!(events[0], Event::TimedOut(1)), "{events:?}");
        assert!(matches!(events[1], Event::Done(2, 5)), "{events:?}");
        assert_eq!(p.abandoned(), 1);
        drop(release_tx);
    }

    #[test]
    fn with_two_threads_a_stuck_job_delays_nothing_submitted_after_it() {
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
        let work: Work<u32, u32> = Arc::new(move |j| {
            if j == 0 {
                let _ = started_tx.send(());
                let _ = release_rx.recv();
            }
            j
        });
        let mut p = Pool::new(
            PoolConfig {
                threads: 2,
                ..cfg(2000, 2)
            },
            work,
            None,
        );
        assert!(p.submit(1, 0));
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the first job starts");
        let t0 = Instant::now();
        assert!(p.submit(2, 5));
        assert!(p.submit(3, 6));
        let events = wait_all(&mut p, 2);
        assert!(
            t0.elapsed() < Duration::from_millis(1000),
            "the jobs behind waited {:?}",
            t0.elapsed()
        );
        assert!(
            matches!(events[..], [Event::Done(2, 5), Event::Done(3, 6)]),
            "{events:?}"
        );
        assert_eq!(p.outstanding(), 1, "the stuck job is still running");
        drop(release_tx);
    }

    #[test]
    fn after_too_many_stuck_threads_jobs_are_refused() {
        let started = Arc::new(AtomicU32::new(0));
        let s = started.clone();
        let (_hold, hold_rx) = crossbeam_channel::bounded::<()>(0);
        let work: Work<u32, u32> = Arc::new(move |j| {
            s.fetch_add(1, Ordering::SeqCst);
            let _ = hold_rx.recv();
            j
        });
        let mut p = Pool::new(cfg(50, 1), work, None);
        assert!(p.submit(1, 1));
        assert!(p.submit(2, 2));
        let events = wait_all(&mut p, 2);
        assert!(matches!(events[0], Event::TimedOut(1)), "{events:?}");
        assert!(matches!(events[1], Event::Refused(2)), "{events:?}");
        assert!(p.is_closed());
        assert!(!p.submit(3, 3));
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_stuck_thread_that_returns_frees_its_place() {
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        let work: Work<u32, u32> = Arc::new(move |j| {
            if j == 0 {
                let _ = release_rx.recv();
            }
            j
        });
        let mut p = Pool::new(cfg(50, 1), work, None);
        assert!(p.submit(1, 0));
        let events = wait_all(&mut p, 1);
        assert!(matches!(events[..], [Event::TimedOut(1)]), "{events:?}");
        assert!(p.is_closed() && !p.submit(2, 2));
        // the stuck job returns: its thread ends, and jobs are taken again
        release_tx.send(()).unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while p.stuck() > 0 {
            assert!(
                Instant::now() < end,
                "waited 10 s for the stuck thread to end"
            );
            std::thread::yield_now();
        }
        assert!(p.submit(3, 3));
        let events = wait_all(&mut p, 1);
        assert!(matches!(events[..], [Event::Done(3, 3)]), "{events:?}");
    }

    #[test]
    fn a_job_that_panics_is_reported_and_the_worker_goes_on() {
        let work: Work<u32, u32> = Arc::new(|j| {
            assert!(j != 0, "a parser bug");
            j
        });
        let mut p = Pool::new(cfg(5000, 2), work, None);
        assert!(p.submit(1, 0));
        assert!(p.submit(2, 9));
        let events = wait_all(&mut p, 2);
        assert!(matches!(events[0], Event::Panicked(1)), "{events:?}");
        assert!(matches!(events[1], Event::Done(2, 9)), "{events:?}");
        assert_eq!(p.abandoned(), 0);
    }

    /// Threads of this process named `name`.
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
            })
            .count()
    }

    fn wait_threads(name: &str, n: usize) {
        let end = Instant::now() + Duration::from_secs(10);
        while threads_named(name) != n {
            assert!(
                Instant::now() < end,
                "{name}: {} threads, not {n}",
                threads_named(name)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn waiting_threads_end_with_the_pool_and_on_a_restart() {
        // a thread waits parked: giving up on it must wake it to end
        let name = "pidmap-t-ends";
        let c = PoolConfig {
            name,
            threads: 2,
            ..cfg(2000, 2)
        };
        let mut p: Pool<u32, u32> = Pool::new(c, Arc::new(|j| j), None);
        p.start().unwrap();
        assert!(p.submit(1, 1));
        wait_all(&mut p, 1);
        wait_threads(name, 2);
        // new work: the waiting threads end, fresh ones take the jobs
        p.set_work(Arc::new(|j| j + 1));
        assert!(p.submit(2, 2));
        let events = wait_all(&mut p, 1);
        assert!(matches!(events[..], [Event::Done(2, 3)]), "{events:?}");
        wait_threads(name, 1);
        drop(p);
        wait_threads(name, 0);
    }

    #[test]
    fn a_cancelled_job_is_not_reported() {
        let mut p: Pool<u32, u32> = Pool::new(cfg(2000, 2), Arc::new(|j| j), None);
        assert!(p.submit(1, 1));
        p.cancel(1);
        assert!(p.submit(2, 2));
        let events = wait_all(&mut p, 1);
        assert!(matches!(events[..], [Event::Done(2, 2)]), "{events:?}");
    }
}
