//! The manager's side of the maps worker (`tracker::maps_read` on a
//! `worker::Pool`): reads submitted by `begin`, answers collected every
//! loop turn, stalls counted against the process's uid.

use super::*;

impl ProcessManager {
    /// The waker the maps worker pulls when a read is done (the agent's);
    /// the worker thread starts now.
    pub fn start_reader(&mut self, waker: Arc<mio::Waker>) -> crate::error::Result<()> {
        self.maps.set_waker(waker);
        self.maps.start().map_err(|e| {
            Error::from(e).context(format!(
                "spawning the maps worker thread ({})",
                MAPS_POOL.name
            ))
        })
    }

    /// The maps worker's deadline per read (tests shorten it).
    #[cfg(test)]
    pub fn set_read_deadline(&mut self, deadline: Duration) {
        self.maps.set_deadline(deadline);
    }

    /// What the maps worker does for a pid (tests stall it).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn set_maps_reader(
        &mut self,
        read: Arc<dyn Fn(u32) -> std::io::Result<MapsRead> + Send + Sync>,
    ) {
        self.maps.set_work(read);
    }

    /// Takes the maps worker's answers: their syncs are queued again.
    /// Never blocks. The loop calls it every turn.
    pub fn collect_reads(&mut self, now: Instant) {
        let events = self.maps.collect(now);
        self.take_reads(events);
    }

    /// When the loop must look at the maps worker again (a read's
    /// deadline), if a read is outstanding.
    pub fn next_read_check(&self, now: Instant) -> Option<Instant> {
        self.maps.next_check(now)
    }

    /// Reads outstanding on the maps worker.
    #[cfg(test)]
    pub fn reads_outstanding(&self) -> usize {
        self.maps.outstanding()
    }

    pub(super) fn take_reads(&mut self, events: Vec<Event<std::io::Result<MapsRead>>>) {
        for ev in events {
            let (ticket, answer) = match ev {
                Event::Done(t, r) => (t, r),
                Event::TimedOut(t) => {
                    add(&COUNTERS.maps_reads_timed_out, 1);
                    add(&COUNTERS.maps_workers_abandoned, 1);
                    let uid = self
                        .reading
                        .get(&t)
                        .and_then(|pid| self.jobs.get(pid))
                        .map(|j| j.uid);
                    if let Some(uid) = uid {
                        *self.stalls.entry(uid).or_default() += 1;
                    }
                    let why = format!(
                        "took more than {:?} (the process holds its mmap lock)",
                        self.maps.config().deadline
                    );
                    (
                        t,
                        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, why)),
                    )
                }
                Event::Refused(t) => {
                    add(&COUNTERS.maps_reads_refused, 1);
                    let why = "refused: the maps worker threads are stuck";
                    (t, Err(std::io::Error::other(why)))
                }
                Event::Panicked(t) => (t, Err(std::io::Error::other("the maps parser panicked"))),
            };
            let Some(pid) = self.reading.remove(&ticket) else {
                continue;
            };
            let Some(job) = self.jobs.get_mut(&pid) else {
                continue;
            };
            if !matches!(job.phase, Phase::Reading(t) if t == ticket) {
                continue;
            }
            job.phase = Phase::Read(Box::new(answer));
            self.queue.push_back(pid);
        }
    }

    /// A job leaves: a read it waits for is cancelled.
    pub(super) fn drop_job(&mut self, pid: u32) {
        if let Some(Job {
            phase: Phase::Reading(t),
            ..
        }) = self.jobs.remove(&pid)
        {
            self.maps.cancel(t);
            self.reading.remove(&t);
        }
    }
}
