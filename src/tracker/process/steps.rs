//! The steps of one sync: `begin` (pidfd, start time, uid, the read
//! handed to the maps worker), `end_read` (the process confirmed, the model
//! extended), `plan_step` (a window of the diff of the model against the
//! maps) and `apply_step` (deletes, then inserts within the budget).

use super::*;

impl ProcessManager {
    /// pidfd, start time and uid, then the maps file opened.
    pub(super) fn begin(&mut self, pid: u32) -> Result<(), SyncOutcome> {
        if pid == 0 {
            return Err(SyncOutcome::Failed(Error::new("pid 0 is not a process")));
        }
        let mut tries = 0;
        let (new, fresh_fd, start, seen_uid) = loop {
            tries += 1;
            if let Some(p) = self.procs.get(&pid) {
                // a tracked process whose pidfd fired is gone, whatever
                // /proc says; the number may hold a new one
                if p.pidfd.as_ref().is_some_and(|fd| pidfd::exited(fd.as_fd())) {
                    self.retire(pid);
                }
            }
            // tracked with a pidfd that has not fired: the same process,
            // whose start time is known (no /proc/PID/stat to read)
            if let Some(p) = self.procs.get(&pid).filter(|p| p.pidfd.is_some()) {
                break (false, None, p.start_time, None);
            }
            let new = !self.procs.contains_key(&pid);
            let fresh_fd = if new {
                match pidfd::pidfd_open(pid) {
                    Ok(fd) => Some(fd),
                    Err(e) if e.errno() == libc::ESRCH => return Err(SyncOutcome::Gone),
                    Err(e) if matches!(e.errno(), libc::EMFILE | libc::ENFILE | libc::ENOSYS) => {
                        add(&COUNTERS.pidfd_fallbacks, 1);
                        log::debug!("{e}: pid {pid} tracked by the liveness sweep");
                        None
                    }
                    Err(e) => return Err(SyncOutcome::Failed(e.into())),
                }
            } else {
                None
            };
            // the process the request came from, if the pidfd is its own
            let seen = fresh_fd.as_ref().and_then(|fd| {
                let s = self.jobs.get(&pid)?.seen?;
                (pidfd::inode(fd.as_fd()) == Some(s.pid_ino)).then_some(s)
            });
            let Some(start) = seen.map(|s| s.start_ticks).or_else(|| start_time(pid)) else {
                if !new {
                    self.retire(pid);
                }
                return Err(SyncOutcome::Gone);
            };
            match self.procs.get(&pid) {
                // the number was reused: the old process is gone
                Some(p) if p.start_time != start && tries < 3 => {
                    self.retire(pid);
                }
                Some(p) if p.start_time != start => {
                    return Err(SyncOutcome::Failed(Error::new(format!(
                        "pid {pid} reused during sync"
                    ))))
                }
                _ => break (new, fresh_fd, start, seen.map(|s| s.uid)),
            }
        };
        let uid = match self.procs.get(&pid) {
            Some(p) => p.uid,
            // the record's uid when the pidfd is the requester's, else the
            // pidfd's (no mmap lock either way)
            None => match seen_uid
                .or_else(|| fresh_fd.as_ref().and_then(|fd| pidfd::real_uid(fd.as_fd())))
                .or_else(|| crate::proc::status::real_uid(pid))
            {
                Some(u) => u,
                None => return Err(SyncOutcome::Gone),
            },
        };
        if uid != 0 && self.stalls.get(&uid).is_some_and(|n| *n >= STALLS_PER_UID) {
            add(&COUNTERS.maps_reads_refused, 1);
            return Err(SyncOutcome::Failed(Error::new(format!(
                "pid {pid}: the maps of uid {uid}'s processes stalled {STALLS_PER_UID} reads: no longer read"
            ))));
        }
        if let Some(read) = self.read_here(pid) {
            let job = self.jobs.get_mut(&pid).expect("job of a started sync");
            job.new = new;
            job.fresh_fd = fresh_fd;
            job.start_time = start;
            job.uid = uid;
            job.phase = Phase::Read(Box::new(Ok(read)));
            return Ok(());
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        if !self.maps.submit(ticket, pid) {
            add(&COUNTERS.maps_reads_refused, 1);
            return Err(SyncOutcome::Failed(Error::new(format!(
                "pid {pid}: the maps worker threads are stuck: maps are no longer read"
            ))));
        }
        self.reading.insert(ticket, pid);
        let job = self.jobs.get_mut(&pid).expect("job of a started sync");
        job.new = new;
        job.fresh_fd = fresh_fd;
        job.start_time = start;
        job.uid = uid;
        job.phase = Phase::Reading(ticket);
        Ok(())
    }

    /// The maps are read: confirm the process is the one we opened, then
    /// diff the model against them.
    pub(super) fn end_read(&mut self, pid: u32) -> Step {
        let job = self.jobs.get_mut(&pid).expect("job being read");
        let Phase::Read(answer) = std::mem::replace(&mut job.phase, Phase::Apply) else {
            unreachable!("end_read outside the read phase")
        };
        let read = match *answer {
            Ok(r) => r,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
                return self.gone(pid)
            }
            Err(e) => {
                return Step::Done(SyncOutcome::Failed(
                    Error::from(e).context(format!("reading /proc/{pid}/maps")),
                ))
            }
        };
        let (new, start) = (job.new, job.start_time);
        log::debug!(
            "pid {pid}: maps read in {:?}: {} lines, {} bytes, {} mappings to track",
            read.took,
            read.lines,
            read.bytes,
            read.want.len()
        );
        let still_ours = match (&job.fresh_fd, self.procs.get(&pid)) {
            (Some(fd), _) => !pidfd::exited(fd.as_fd()),
            (None, Some(p)) => p.pidfd.as_ref().is_none_or(|fd| !pidfd::exited(fd.as_fd())),
            (None, None) => start_time(pid) == Some(start),
        };
        // no line at all: no thread has an address space left
        if !still_ours || read.lines == 0 {
            return self.gone(pid);
        }
        if new {
            let uid = job.uid;
            let pidfd = job.fresh_fd.take();
            self.procs.insert(
                pid,
                Process {
                    pid,
                    pidfd,
                    start_time: start,
                    uid,
                    marker: false,
                    mappings: BTreeMap::new(),
                    doomed: Vec::new(),
                    todo: BinaryHeap::new(),
                    paths: HashMap::new(),
                    held: 0,
                    synced_once: false,
                    over_budget: false,
                },
            );
            self.newly_tracked.push(pid);
        }
        let MapsRead {
            mut want, paths, ..
        } = read;
        if !want.is_sorted_by_key(|w| w.start) {
            want.sort_unstable_by_key(|w| w.start);
        }
        want.dedup_by_key(|w| w.start);
        self.jobs.get_mut(&pid).expect("job being read").phase = Phase::Plan(Box::new(Planning {
            want,
            paths,
            pos: 0,
            cursor: 0,
        }));
        Step::More
    }

    /// One window of the diff of the model against the maps (at most
    /// [`STEP_KEYS`] lines and [`STEP_KEYS`] mappings): mappings gone or
    /// replaced leave the model (their keys to delete), new ones are to
    /// insert, largest first.
    pub(super) fn plan_step(&mut self, pid: u32) -> Step {
        let Some(p) = self.procs.get_mut(&pid) else {
            return Step::Done(SyncOutcome::Gone);
        };
        let job = self.jobs.get_mut(&pid).expect("job being planned");
        let Phase::Plan(pl) = &mut job.phase else {
            unreachable!("plan_step outside the plan phase")
        };
        let wend = (pl.pos + STEP_KEYS).min(pl.want.len());
        let mut hi = pl.want.get(wend).map_or(u64::MAX, |w| w.start);
        let mut olds: Vec<(u64, u64, u64, u64, bool)> = p
            .mappings
            .range(pl.cursor..)
            .take_while(|(s, _)| **s < hi)
            .take(STEP_KEYS + 1)
            .map(|(s, m)| (*s, m.end, m.offset, m.file_id, m.complete()))
            .collect();
        if olds.len() > STEP_KEYS {
            hi = olds[STEP_KEYS].0;
            olds.truncate(STEP_KEYS);
        }
        let mut gone = Vec::new();
        let mut olds = olds.into_iter().peekable();
        while let Some(w) = pl.want.get(pl.pos).filter(|w| w.start < hi) {
            while let Some(o) = olds.next_if(|o| o.0 < w.start) {
                gone.push(o.0);
            }
            match olds.next_if(|o| o.0 == w.start) {
                Some(o) if (o.1, o.2, o.3, o.4) == (w.end, w.offset, w.file_id, true) => {}
                Some(o) => {
                    gone.push(o.0);
                    p.todo.push(BySize(*w));
                }
                None => p.todo.push(BySize(*w)),
            }
            pl.pos += 1;
        }
        gone.extend(olds.map(|o| o.0));
        for s in gone {
            if let Some(m) = p.mappings.remove(&s) {
                p.doomed.push(m);
            }
        }
        pl.cursor = hi;
        if hi == u64::MAX {
            debug_assert_eq!(pl.pos, pl.want.len());
            let pl = std::mem::replace(&mut job.phase, Phase::Apply);
            if let Phase::Plan(pl) = pl {
                p.paths = pl.paths;
            }
        }
        Step::More
    }

    /// Deletes up to [`STEP_KEYS`] keys of removed mappings, or else
    /// inserts up to [`STEP_KEYS`] keys of new ones within the budget.
    pub(super) fn apply_step(&mut self, pid: u32) -> Step {
        let Some(p) = self.procs.get_mut(&pid) else {
            return Step::Done(SyncOutcome::Gone);
        };
        let job = self.jobs.get_mut(&pid).expect("job being applied");
        // deletes first: a new mapping at the address of a removed one has
        // the same keys, which must not be deleted after they landed
        if !p.doomed.is_empty() {
            let mut part = Vec::new();
            while part.len() < STEP_KEYS {
                let Some(m) = p.doomed.pop() else { break };
                m.push_keys(pid, &mut part);
                self.registry.release(m.file_id);
            }
            self.tables.delete(&part);
            self.budget.release(p.uid, part.len() as u64);
            p.held -= part.len() as u64;
            job.removed += part.len();
            return Step::More;
        }
        if p.todo.is_empty() && p.marker {
            p.synced_once = true;
            p.paths = HashMap::new();
            if std::mem::take(&mut job.again) {
                job.phase = Phase::Start;
                job.added = 0;
                job.removed = 0;
                return Step::More;
            }
            return Step::Done(SyncOutcome::Synced {
                new: job.new,
                added: job.added,
                removed: job.removed,
            });
        }
        let mut allow = self.budget.allowance(p.uid, p.held, !p.synced_once);
        let mut keys = Vec::new();
        let mut vals = Vec::new();
        let mut owners: Vec<(Wanted, usize, usize)> = Vec::new();
        let mut refused = 0u64;
        let with_marker = !p.marker && allow > 0;
        if with_marker {
            keys.push(PidPage::marker(pid));
            vals.push(MappingInfo::marker(p.start_time));
            allow -= 1;
        }
        let mut looked = 0;
        while let Some(BySize(w)) = p.todo.pop() {
            looked += 1;
            let bias = w.start.wrapping_sub(w.offset);
            let Some(value) = MappingInfo::new(w.file_id, bias).filter(|_| w.start >= w.offset)
            else {
                add(&COUNTERS.bias_refused, 1);
                let path = p.paths.get(&w.file_id).map_or("?", |s| s.as_str());
                warn_limited!(
                    "bias",
                    "pid {pid}: mapping {:#x}-{:#x} of {path}: bias does not fit 56 bits",
                    w.start,
                    w.end
                );
                continue;
            };
            let Ok(blocks) = prefix::cover(w.start, w.end) else {
                continue;
            };
            if blocks.len() as u64 > allow {
                refused += blocks.len() as u64;
            } else if !keys.is_empty() && keys.len() + blocks.len() > STEP_KEYS {
                p.todo.push(BySize(w));
                break;
            } else {
                let first = keys.len();
                for b in &blocks {
                    keys.push(PidPage::new(pid, b.start, b.len));
                    vals.push(value);
                }
                allow -= blocks.len() as u64;
                owners.push((w, first, keys.len()));
            }
            if looked >= STEP_KEYS {
                break;
            }
        }
        if !p.marker && !with_marker && p.todo.is_empty() {
            refused += 1; // the marker itself did not fit
        }
        if refused > 0 {
            self.short.insert(pid);
            add(&COUNTERS.keys_over_budget, refused);
            if !p.over_budget {
                p.over_budget = true;
                add(&COUNTERS.processes_over_budget, 1);
            }
            warn_limited!(
                "over budget",
                "pid {pid} (uid {}): over its budget, {refused} keys left out",
                p.uid
            );
        }
        if keys.is_empty() {
            if !p.marker && p.todo.is_empty() {
                // no room even for the marker: tracked without keys, a
                // later sync tries again
                p.synced_once = true;
                return self.finish_unmarked(pid);
            }
            return Step::More;
        }
        let report = self.tables.insert(&keys, &vals);
        if report.full() {
            self.short.insert(pid);
            warn_limited!(
                "trie full",
                "pid {pid}: trie full, {} keys refused",
                report.refused()
            );
        }
        let landed = |i: usize| report.outcomes.get(i) == Some(&InsertOutcome::Landed);
        let mut n = 0u64;
        if with_marker {
            p.marker = landed(0);
            n += p.marker as u64;
            if !p.marker {
                // the trie refused the marker: this sync ends here
                p.todo.clear();
            }
        }
        for (w, first, end) in owners {
            let mut bits = 0u128;
            for i in first..end {
                if landed(i) {
                    bits |= 1 << (i - first);
                }
            }
            n += bits.count_ones() as u64;
            let path = p.paths.get(&w.file_id).map_or("?", |s| s.as_str());
            // no file is opened here: the loop never touches a path a user
            // controls (DESIGN §9)
            self.registry.acquire(
                w.file_id,
                w.dev,
                w.ino,
                path,
                w.deleted,
                (pid, w.start, w.end),
            );
            p.mappings.insert(
                w.start,
                Mapping {
                    start: w.start,
                    end: w.end,
                    offset: w.offset,
                    file_id: w.file_id,
                    landed: bits,
                    blocks: (end - first) as u8,
                },
            );
        }
        self.budget.charge(p.uid, n);
        p.held += n;
        job.added += n as usize;
        if !p.marker && p.todo.is_empty() {
            p.synced_once = true;
            return self.finish_unmarked(pid);
        }
        Step::More
    }

    /// A sync that ends without a marker (budget spent, trie full): the
    /// process stays tracked, a later sync tries again.
    pub(super) fn finish_unmarked(&mut self, pid: u32) -> Step {
        let job = self.jobs.get_mut(&pid).expect("job being applied");
        if std::mem::take(&mut job.again) {
            job.phase = Phase::Start;
            return Step::More;
        }
        Step::Done(SyncOutcome::Synced {
            new: job.new,
            added: job.added,
            removed: job.removed,
        })
    }
}
