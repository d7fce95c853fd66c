//! The process manager: per tracked pid its pidfd, its mappings and the
//! exact trie keys each mapping landed, kept in step with /proc/PID/maps.
//! Every deletion (one mapping, process exit, removed mappings found by a
//! re-sync) goes through the batch engine.

use crate::abi::{MappingInfo, PidPage};
use crate::counters::{add, COUNTERS};
use crate::engine::InsertOutcome;
use crate::prefix;
use crate::procmaps::{self, MapsEntry, MapsPath};
use crate::registry::{self, Registry, VDSO_FILE_ID};
use crate::sys::pidfd;
use crate::tables::Tables;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

/// One mapping of a tracked process and the keys that landed for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub file_id: u64,
    pub keys: Vec<PidPage>,
}

#[derive(Debug)]
pub struct Process {
    pub pid: u32,
    pub pidfd: Option<OwnedFd>,
    pub start_time: u64,
    pub marker: bool,
    pub mappings: BTreeMap<u64, Mapping>,
}

impl Process {
    pub fn key_count(&self) -> usize {
        self.mappings.values().map(|m| m.keys.len()).sum::<usize>() + self.marker as usize
    }

    /// Every recorded key: mappings first, the marker last.
    pub fn keys(&self) -> Vec<PidPage> {
        let mut out: Vec<PidPage> = self
            .mappings
            .values()
            .flat_map(|m| m.keys.iter().copied())
            .collect();
        if self.marker {
            out.push(PidPage::marker(self.pid));
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncOutcome {
    /// In step; `new` when the process was not tracked before.
    Synced {
        new: bool,
        added: usize,
        removed: usize,
    },
    /// The process is gone (or going): nothing tracked for it.
    Gone,
    Failed(String),
}

/// Why a process left the model.
#[derive(Debug)]
pub struct Exited {
    pub process: Process,
    pub keys_deleted: u64,
    pub keys_absent: u64,
}

pub struct ProcessManager {
    pub tables: Tables,
    pub registry: Registry,
    procs: HashMap<u32, Process>,
}

/// Start time (clock ticks after boot) of a process: field 22 of
/// /proc/PID/stat.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

pub fn parse_start_time(stat: &[u8]) -> Option<u64> {
    // comm may hold spaces and parentheses: fields resume after the last ')'
    let close = stat.iter().rposition(|&c| c == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// /proc/PID/maps, or a live thread's maps when the leader is a zombie
/// (its own maps file reads empty while threads still run).
pub fn read_maps(pid: u32) -> std::io::Result<Vec<u8>> {
    let data = std::fs::read(format!("/proc/{pid}/maps"))?;
    if !data.is_empty() {
        return Ok(data);
    }
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let name = t.file_name();
            if name.to_str() == Some(&pid.to_string()) {
                continue;
            }
            let p = Path::new("/proc")
                .join(pid.to_string())
                .join("task")
                .join(&name)
                .join("maps");
            if let Ok(d) = std::fs::read(p) {
                if !d.is_empty() {
                    return Ok(d);
                }
            }
        }
    }
    Ok(data)
}

fn fired(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// What a mapping should be according to /proc.
struct Wanted {
    start: u64,
    end: u64,
    offset: u64,
    file_id: u64,
    dev: u64,
    ino: u64,
    path: String,
    deleted: bool,
}

fn wanted(e: &MapsEntry) -> Option<Wanted> {
    if e.is_vdso() {
        return Some(Wanted {
            start: e.start,
            end: e.end,
            offset: 0,
            file_id: VDSO_FILE_ID,
            dev: 0,
            ino: 0,
            path: "[vdso]".into(),
            deleted: false,
        });
    }
    if !e.is_exec_file() {
        return None;
    }
    let (path, deleted) = match &e.path {
        MapsPath::File { path, deleted } => (path.clone(), *deleted),
        // a memfd has no path: only map_files reaches it
        MapsPath::Memfd { name, .. } => (format!("/memfd:{name}"), true),
        _ => return None,
    };
    Some(Wanted {
        start: e.start,
        end: e.end,
        offset: e.offset,
        file_id: registry::file_id(e.dev(), e.inode),
        dev: e.dev(),
        ino: e.inode,
        path,
        deleted,
    })
}

impl ProcessManager {
    pub fn new(tables: Tables) -> ProcessManager {
        ProcessManager {
            tables,
            registry: Registry::default(),
            procs: HashMap::new(),
        }
    }

    pub fn is_tracked(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
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

    /// Tracked processes whose pidfd says they have exited.
    pub fn fired(&self) -> Vec<u32> {
        self.procs
            .values()
            .filter(|p| p.pidfd.as_ref().is_some_and(|fd| fired(fd.as_fd())))
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

    /// Brings the trie in step with /proc/PID/maps: open the pidfd first,
    /// read the maps, then confirm the pidfd has not fired (PID reuse).
    pub fn sync(&mut self, pid: u32) -> SyncOutcome {
        let out = self.sync_inner(pid);
        match &out {
            SyncOutcome::Synced { .. } => add(&COUNTERS.syncs_ok, 1),
            SyncOutcome::Gone => add(&COUNTERS.syncs_gone, 1),
            SyncOutcome::Failed(why) => {
                add(&COUNTERS.syncs_failed, 1);
                log::warn!("sync of pid {pid} failed: {why}");
            }
        }
        out
    }

    fn sync_inner(&mut self, pid: u32) -> SyncOutcome {
        if pid == 0 {
            return SyncOutcome::Failed("pid 0 is not a process".into());
        }
        // a tracked process whose pidfd fired is gone, whatever /proc says
        if let Some(p) = self.procs.get(&pid) {
            if p.pidfd.as_ref().is_some_and(|fd| fired(fd.as_fd())) {
                // the tracked process is gone; the number may hold a new one
                self.process_exit(pid);
                return self.sync_inner(pid);
            }
        }
        let new = !self.procs.contains_key(&pid);
        let fresh_fd = if new {
            match pidfd::pidfd_open(pid) {
                Ok(fd) => Some(fd),
                Err(e) if e.errno() == libc::ESRCH => return SyncOutcome::Gone,
                Err(e) if matches!(e.errno(), libc::EMFILE | libc::ENFILE | libc::ENOSYS) => {
                    add(&COUNTERS.pidfd_fallbacks, 1);
                    log::debug!("{e}: pid {pid} tracked by the liveness sweep");
                    None
                }
                Err(e) => return SyncOutcome::Failed(e.to_string()),
            }
        } else {
            None
        };
        let Some(start) = start_time(pid) else {
            if !new {
                self.process_exit(pid);
            }
            return SyncOutcome::Gone;
        };
        if let Some(p) = self.procs.get(&pid) {
            if p.start_time != start {
                // the number was reused: the old process is gone
                self.process_exit(pid);
                return self.sync_inner(pid);
            }
        }
        let data = match read_maps(pid) {
            Ok(d) => d,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
                if !new {
                    self.process_exit(pid);
                }
                return SyncOutcome::Gone;
            }
            Err(e) => return SyncOutcome::Failed(format!("reading /proc/{pid}/maps: {e}")),
        };
        let still_ours = match (&fresh_fd, self.procs.get(&pid)) {
            (Some(fd), _) => !fired(fd.as_fd()),
            (None, Some(p)) => p.pidfd.as_ref().is_none_or(|fd| !fired(fd.as_fd())),
            (None, None) => start_time(pid) == Some(start),
        };
        if !still_ours {
            if !new {
                self.process_exit(pid);
            }
            return SyncOutcome::Gone;
        }
        let (entries, errors) = procmaps::parse_maps(&data);
        for e in errors.iter().take(1) {
            log::warn!("pid {pid}: {e}");
        }
        if entries.is_empty() {
            // no thread has an address space left: the process is exiting
            if !new {
                self.process_exit(pid);
            }
            return SyncOutcome::Gone;
        }
        if new {
            self.procs.insert(
                pid,
                Process {
                    pid,
                    pidfd: fresh_fd,
                    start_time: start,
                    marker: false,
                    mappings: BTreeMap::new(),
                },
            );
        }
        let (added, removed) = self.apply(pid, &entries);
        SyncOutcome::Synced {
            new,
            added,
            removed,
        }
    }

    /// Diffs the model against `entries` and applies it to the trie.
    fn apply(&mut self, pid: u32, entries: &[MapsEntry]) -> (usize, usize) {
        let want: Vec<Wanted> = entries.iter().filter_map(wanted).collect();
        let Some(proc_) = self.procs.get_mut(&pid) else {
            return (0, 0);
        };
        // mappings gone or replaced
        let mut gone = Vec::new();
        for (start, m) in &proc_.mappings {
            let keep = want.iter().any(|w| {
                w.start == *start
                    && w.end == m.end
                    && w.offset == m.offset
                    && w.file_id == m.file_id
            });
            if !keep {
                gone.push(*start);
            }
        }
        let mut del_keys = Vec::new();
        for s in &gone {
            if let Some(m) = proc_.mappings.remove(s) {
                del_keys.extend_from_slice(&m.keys);
                self.registry.release(m.file_id);
            }
        }
        // new mappings
        let mut ins_keys = Vec::new();
        let mut ins_vals = Vec::new();
        let mut owners: Vec<(u64, std::ops::Range<usize>)> = Vec::new();
        if !proc_.marker {
            ins_keys.push(PidPage::marker(pid));
            ins_vals.push(MappingInfo::marker(proc_.start_time));
        }
        for w in &want {
            if proc_.mappings.contains_key(&w.start) {
                continue;
            }
            let bias = w.start.wrapping_sub(w.offset);
            let Some(value) = MappingInfo::new(w.file_id, bias).filter(|_| w.start >= w.offset)
            else {
                add(&COUNTERS.bias_refused, 1);
                log::warn!(
                    "pid {pid}: mapping {:#x}-{:#x} of {}: bias does not fit 56 bits",
                    w.start,
                    w.end,
                    w.path
                );
                continue;
            };
            let Ok(blocks) = prefix::cover(w.start, w.end) else {
                continue;
            };
            let first = ins_keys.len();
            for b in blocks {
                ins_keys.push(PidPage::new(pid, b.start, b.len));
                ins_vals.push(value);
            }
            owners.push((w.start, first..ins_keys.len()));
            // no file is opened here: the loop never touches a path a user
            // controls (DESIGN §9)
            self.registry
                .acquire(w.file_id, w.dev, w.ino, &w.path, w.deleted);
            proc_.mappings.insert(
                w.start,
                Mapping {
                    start: w.start,
                    end: w.end,
                    offset: w.offset,
                    file_id: w.file_id,
                    keys: Vec::new(),
                },
            );
        }
        if !del_keys.is_empty() {
            self.tables.delete(&del_keys);
        }
        let mut added = 0;
        if !ins_keys.is_empty() {
            let report = self.tables.insert(&ins_keys, &ins_vals);
            if report.full() {
                log::warn!("pid {pid}: trie full, {} keys refused", report.refused());
            }
            if !proc_.marker {
                proc_.marker = report.outcomes.first() == Some(&InsertOutcome::Landed);
            }
            for (start, range) in owners {
                if let Some(m) = proc_.mappings.get_mut(&start) {
                    for i in range {
                        if report.outcomes.get(i) == Some(&InsertOutcome::Landed) {
                            m.keys.push(ins_keys[i]);
                            added += 1;
                        }
                    }
                }
            }
        }
        (added, del_keys.len())
    }

    /// Deletes the keys of the mapping at `start` (path 1).
    pub fn unmap(&mut self, pid: u32, start: u64) -> bool {
        let Some(m) = self
            .procs
            .get_mut(&pid)
            .and_then(|p| p.mappings.remove(&start))
        else {
            return false;
        };
        self.tables.delete(&m.keys);
        self.registry.release(m.file_id);
        true
    }

    /// Process exit (path 2): every mapping's keys, then the marker.
    /// A second call is a no-op.
    pub fn process_exit(&mut self, pid: u32) -> Option<Exited> {
        let process = self.procs.remove(&pid)?;
        let keys = process.keys();
        let report = self.tables.delete(&keys);
        for m in process.mappings.values() {
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
            let same = self.procs.get(&pid).map(|p| p.start_time) == start_time(pid)
                && read_maps(pid).is_ok_and(|d| !d.is_empty());
            if !same {
                self.process_exit(pid);
                gone.push(pid);
            }
        }
        gone
    }

    /// Removes every tracked process (shutdown without kept pins).
    pub fn forget_all(&mut self) -> Vec<Exited> {
        self.pids()
            .into_iter()
            .filter_map(|p| self.process_exit(p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake::{self, FakeBatch, FakeKernel};

    /// The keys of `pid` recomputed from its maps (exec files, [vdso],
    /// marker), sorted as the fake kernel stores them.
    fn expected(pid: u32) -> Vec<Vec<u8>> {
        let (entries, _) =
            procmaps::parse_maps(&std::fs::read(format!("/proc/{pid}/maps")).unwrap());
        let mut keys = vec![PidPage::marker(pid)];
        for e in entries.iter().filter(|e| e.is_exec_file() || e.is_vdso()) {
            for b in prefix::cover(e.start, e.end).unwrap() {
                keys.push(PidPage::new(pid, b.start, b.len));
            }
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
        let mut k = FakeKernel::new(16, 16, 1 << 20);
        k.delete_batch = batch;
        k.update_batch = batch;
        fake::install(k);
        pidfd::fake::force_errno(pidfd_errno);
        let fallbacks = COUNTERS.snapshot().pidfd_fallbacks;
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let pid = child.id();
        // sleep is set up once the loader has mapped libc
        while !std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .unwrap_or_default()
            .contains("libc.so")
        {
            std::thread::yield_now();
        }
        let mut pm = ProcessManager::new(Tables::create(1 << 20).unwrap());
        assert_eq!(
            pm.tables.trie.delete != crate::engine::BatchSupport::Supported,
            batch != FakeBatch::Supported
        );
        assert!(matches!(
            pm.sync(pid),
            SyncOutcome::Synced { new: true, .. }
        ));
        let stored: Vec<Vec<u8>> = fake::with(|k| k.entries.keys().cloned().collect());
        assert_eq!(stored, expected(pid), "track");
        // change: one mapping goes (path 1)
        let start = *pm.get(pid).unwrap().mappings.keys().next().unwrap();
        let n = pm.get(pid).unwrap().mappings[&start].keys.len();
        assert!(pm.unmap(pid, start));
        assert_eq!(fake::with(|k| k.entries.len()), stored.len() - n, "change");
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
        let k = fake::uninstall().unwrap();
        pidfd::fake::force_errno(None);
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

    #[test]
    fn start_time_survives_odd_comms() {
        let mut stat =
            b"1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 ".to_vec();
        stat.extend_from_slice(b"987654 10000000 200 18446744073709551615\n");
        assert_eq!(parse_start_time(&stat), Some(987654));
        assert_eq!(parse_start_time(b"garbage"), None);
        assert_eq!(parse_start_time(b"1 (x) S 1"), None);
        let me = start_time(std::process::id()).expect("own start time");
        assert!(me > 0);
    }
}
