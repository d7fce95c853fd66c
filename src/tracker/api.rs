//! What the other layers ask of the process manager beyond syncs and
//! exits: the files it knows, its budget's figures, the BPF side's sync
//! requests, the audit of its trie, and the reconcile of pins an earlier
//! run left. The manager's tables, registry and budget stay its own.

use super::process::ProcessManager;
use super::registry::FileInfo;
use crate::abi::{MappingInfo, PidPage};
use crate::counters::{add, COUNTERS};
use crate::error::Result;
use crate::maps::audit::AuditReport;
use crate::sys::SysError;
use std::collections::BTreeSet;

/// What [`ProcessManager::reconcile_pins`] did.
pub struct Reconciled {
    pub report: AuditReport,
    /// Processes of the earlier run still alive: to sync again.
    pub live: BTreeSet<u32>,
}

impl ProcessManager {
    /// Every key of the trie (audits and tests).
    pub fn trie_keys(&self) -> std::result::Result<Vec<PidPage>, SysError> {
        self.tables.trie_keys()
    }

    /// The trie's value at exactly `key`.
    pub fn trie_value(&self, key: &PidPage) -> std::result::Result<Option<MappingInfo>, SysError> {
        self.tables.lookup(key)
    }

    /// The file `id` of the registry.
    pub fn file(&self, id: u64) -> Option<&FileInfo> {
        self.registry.get(id)
    }

    /// Reports files entering and leaving the registry from now on (call
    /// before the first sync).
    pub fn watch_files(&mut self) {
        self.registry.watch();
    }

    /// The files that entered or left the registry since the last call.
    pub fn take_file_changes(&mut self) -> Vec<super::registry::Change> {
        self.registry.take_changes()
    }

    /// A mapping of the file `file_id` to open it by, `pid`'s if it maps
    /// the file, else any tracked process's; `fallback` (pid, start, end)
    /// when none does (the file is then opened by path only).
    pub fn mapped_file(
        &self,
        file_id: u64,
        pid: u32,
        fallback: (u32, u64, u64),
    ) -> Option<crate::sys::safe_open::MappedFile> {
        let info = self.registry.get(file_id)?;
        let mapping_of = |p: u32| {
            let m = self
                .get(p)?
                .mappings
                .values()
                .find(|m| m.file_id == file_id)?;
            Some((p, m.start, m.end))
        };
        let (pid, start, end) = mapping_of(pid)
            .or_else(|| self.pids().into_iter().find_map(mapping_of))
            .unwrap_or(fallback);
        Some(crate::sys::safe_open::MappedFile {
            pid,
            start,
            end,
            dev: info.dev,
            ino: info.ino,
            path: info.path.clone(),
            deleted: info.deleted,
        })
    }

    /// Files in the registry.
    pub fn file_count(&self) -> usize {
        self.registry.len()
    }

    /// References to the files of the registry (one per mapping).
    pub fn file_refs(&self) -> usize {
        self.registry.refs()
    }

    /// Uids holding trie keys.
    pub fn uid_count(&self) -> usize {
        self.budget.uids()
    }

    /// Trie entries charged to the budgets.
    pub fn trie_entries(&self) -> u64 {
        self.budget.total()
    }

    /// Takes the sync requests the BPF side queued in the events map:
    /// their pids, the map emptied. Its cost grows with the map's size
    /// (65 536 buckets), not with the requests: the loop calls it only
    /// when a request may lack its record, and on the request sweep.
    pub fn take_requests(&self) -> std::result::Result<BTreeSet<u32>, SysError> {
        add(&COUNTERS.request_drains, 1);
        let mut pids = BTreeSet::new();
        let mut token = None;
        loop {
            let mut keys = [0u64; 1024];
            let mut vals = [0u8; 1024];
            let first = token.is_none();
            let (n, done) = match self.tables.take_events(&mut token, &mut keys, &mut vals) {
                Ok(r) => r,
                // no batch command (EINVAL, before 5.6) or none for this
                // map (ENOTSUPP): key by key
                Err(e) if first && matches!(e.errno(), libc::EINVAL | crate::sys::ENOTSUPP) => {
                    let taken = self.tables.take_events_single()?;
                    add(&COUNTERS.requests_drained, taken.len() as u64);
                    return Ok(taken.iter().map(|k| (k >> 32) as u32).collect());
                }
                Err(e) => return Err(e),
            };
            add(&COUNTERS.requests_drained, n as u64);
            pids.extend(keys[..n].iter().map(|k| (k >> 32) as u32));
            if done || n == 0 {
                return Ok(pids);
            }
        }
    }

    /// Audits the trie and the events map: `start_time` tells which pids
    /// are alive (and since when).
    pub fn audit(&self, start_time: &dyn Fn(u32) -> Option<u64>) -> Result<AuditReport> {
        self.tables.audit(start_time)
    }

    /// Pins reused from an earlier run: the keys of dead or reused pids
    /// are removed, and those of live ones too (their mappings may have
    /// changed since): the caller syncs [`Reconciled::live`] again.
    pub fn reconcile_pins(&mut self) -> Result<Reconciled> {
        let tables = &self.tables;
        let mut report = tables.audit(&|pid| crate::proc::stat::start_time(pid))?;
        let live: BTreeSet<u32> = {
            let leaked: BTreeSet<u32> = report.leaked.iter().map(|l| l.pid).collect();
            let keys = tables.trie_keys()?;
            keys.iter()
                .map(|k| k.pid())
                .filter(|p| !leaked.contains(p))
                .collect()
        };
        tables.repair(&mut report);
        let live_keys: Vec<_> = tables
            .trie_keys()?
            .into_iter()
            .filter(|k| live.contains(&k.pid()))
            .collect();
        let (markers, mut rest): (Vec<_>, Vec<_>) =
            live_keys.into_iter().partition(|k| k.is_marker());
        rest.extend(markers);
        tables.delete(&rest);
        Ok(Reconciled { report, live })
    }
}
