//! The manager's side of the maps worker (`tracker::maps_read` on a
//! `worker::Pool`): reads submitted by `begin`, answers collected every
//! loop turn, stalls counted against the process's uid.

use super::*;
use crate::abi::{VMA_DELETED, VMA_FILE, VMA_VDSO};
use crate::proc::maps::makedev;
use crate::tracker::registry::{self, VDSO_FILE_ID};

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

    /// What the maps worker does for a pid (tests stall it). Every read
    /// then goes to the worker: the loop's own read is turned off.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn set_maps_reader(
        &mut self,
        read: Arc<dyn Fn(u32) -> std::io::Result<MapsRead> + Send + Sync>,
    ) {
        self.vmas = None;
        self.maps.set_work(read);
    }

    /// The loop's own maps read (`pidmap_vmas`), or None: every read on
    /// the maps worker.
    pub fn set_vma_reader(&mut self, reader: Option<VmaReader>) {
        self.vmas = reader;
    }

    /// The maps of `pid` read on the loop through `pidmap_vmas`, when it
    /// can answer alone: the mmap lock was free, and every mapped file is
    /// one the registry knows (so its path is known) and not deleted.
    /// None: the maps worker reads /proc, as for every read before 6.7.
    pub(super) fn read_here(&mut self, pid: u32) -> Option<MapsRead> {
        let reader = self.vmas.as_ref()?;
        let t0 = Instant::now();
        let mut buf = std::mem::take(&mut self.vma_buf);
        buf.clear();
        let answer = reader.read(pid, &mut buf);
        let out = match answer {
            Ok(visited) => {
                let r = self.wanted_here(&buf, visited);
                if r.is_none() {
                    log::debug!("pid {pid}: the loop's read declined: a file without a known path, or deleted");
                }
                r
            }
            Err(Declined::Errno(e)) => {
                log::debug!("pid {pid}: the loop's read declined: errno {e}");
                None
            }
            Err(Declined::Unsupported) => None,
        };
        self.vma_buf = buf;
        if answer == Err(Declined::Unsupported) {
            log::info!(
                "this kernel has no task_vma iterator (Linux 6.7): every maps read goes through /proc on the maps worker"
            );
            self.vmas = None;
            return None;
        }
        match out {
            Some(mut r) => {
                add(&COUNTERS.maps_reads_fast, 1);
                r.took = t0.elapsed();
                Some(r)
            }
            None => {
                add(&COUNTERS.maps_reads_fast_declined, 1);
                None
            }
        }
    }

    /// `pidmap_vmas`'s entries as the maps worker would have read them, or
    /// None when one needs /proc: a deleted file (its name is what map_files
    /// reaches) or a file whose path the registry does not know (not in it,
    /// and not among the last that left it).
    fn wanted_here(&self, entries: &[VmaEntry], visited: u32) -> Option<MapsRead> {
        let mut out = MapsRead {
            lines: visited as usize,
            bytes: entries.len(),
            ..Default::default()
        };
        for e in entries {
            if e.flags & VMA_VDSO != 0 {
                out.want.push(Wanted::vdso(e.start, e.end));
                out.paths
                    .entry(VDSO_FILE_ID)
                    .or_insert_with(|| maps_read::VDSO_NAME.into());
                continue;
            }
            if e.flags & VMA_DELETED != 0 || e.flags & VMA_FILE == 0 {
                return None;
            }
            if e.ino == 0 {
                continue; // as in the text: no inode, not a file mapping
            }
            let dev = makedev(e.dev >> 20, e.dev & 0xf_ffff);
            let file_id = registry::file_id(dev, e.ino);
            let known = self.registry.known_path(file_id)?;
            out.paths
                .entry(file_id)
                .or_insert_with(|| known.to_string());
            out.want.push(Wanted {
                start: e.start,
                end: e.end,
                offset: e.pgoff << 12,
                file_id,
                dev,
                ino: e.ino,
                deleted: false,
            });
        }
        Some(out)
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
