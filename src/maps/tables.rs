//! The two maps of the ABI as one unit: the trie behind the batch engine,
//! and `pid_events`.

use crate::abi::{MappingInfo, PidPage, EVENTS_MAX_ENTRIES, EVENTS_NAME, TRIE_NAME};
use crate::error::Result;
use crate::maps::audit::{self, AuditReport};
use crate::maps::engine::{self, BatchMap, DeleteReport, EngineOptions, InsertReport};
use crate::sys::bpf::{MapHandle, BPF_ANY, F_NO_PREALLOC, MAP_TYPE_HASH, MAP_TYPE_LPM_TRIE};
use crate::sys::SysError;

/// How trie keys are deleted: this engine, or the upstream profiler's way
/// (kept as a baseline for benchmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteStrategy {
    Resume,
    ReissueAll,
}

/// Its fields are its own: the tracker asks through the methods.
pub struct Tables {
    trie: BatchMap,
    events: MapHandle,
    opts: EngineOptions,
    strategy: DeleteStrategy,
}

impl Tables {
    /// Fresh, unpinned maps (tests and benchmarks).
    pub fn create(max_entries: u32) -> std::result::Result<Tables, SysError> {
        let trie = MapHandle::create(
            MAP_TYPE_LPM_TRIE,
            TRIE_NAME,
            16,
            16,
            max_entries,
            F_NO_PREALLOC,
        )?;
        let events = MapHandle::create(MAP_TYPE_HASH, EVENTS_NAME, 8, 1, EVENTS_MAX_ENTRIES, 0)?;
        Ok(Tables::new(trie, events))
    }

    pub fn new(trie: MapHandle, events: MapHandle) -> Tables {
        Tables {
            trie: BatchMap::probe::<PidPage, MappingInfo>(trie),
            events,
            opts: EngineOptions::default(),
            strategy: DeleteStrategy::Resume,
        }
    }

    /// How deletes are issued.
    pub fn set_strategy(&mut self, strategy: DeleteStrategy) {
        self.strategy = strategy;
    }

    /// The trie's max_entries.
    /// How a failed batch delete resumes (the engine's policy).
    pub fn set_policy(&mut self, policy: engine::ResumePolicy) {
        self.opts.policy = policy;
    }

    pub fn capacity(&self) -> u64 {
        u64::from(self.trie.map.info().max_entries)
    }

    pub fn delete(&self, keys: &[PidPage]) -> DeleteReport {
        match self.strategy {
            DeleteStrategy::Resume => engine::delete_keys(&self.trie, keys, &self.opts),
            DeleteStrategy::ReissueAll => engine::reissue_all(&self.trie, keys),
        }
    }

    pub fn insert(&self, keys: &[PidPage], values: &[MappingInfo]) -> InsertReport {
        engine::insert_keys(&self.trie, keys, values, BPF_ANY, &self.opts)
    }

    /// The trie's value at exactly `key`.
    pub fn lookup(&self, key: &PidPage) -> std::result::Result<Option<MappingInfo>, SysError> {
        self.trie.map.lookup(key)
    }

    /// One batch of the sync requests the BPF side queued in `pid_events`,
    /// taken out of the map (see [`MapHandle::lookup_and_delete_batch`]).
    pub fn take_events(
        &self,
        token: &mut Option<u64>,
        keys: &mut [u64],
        values: &mut [u8],
    ) -> std::result::Result<(usize, bool), SysError> {
        self.events.lookup_and_delete_batch(token, keys, values)
    }

    /// The sync requests of `pid_events` one key at a time, for kernels
    /// without BPF_MAP_LOOKUP_AND_DELETE_BATCH (before 5.6): the keys
    /// walked with GET_NEXT_KEY, then each deleted; a key deleted
    /// meanwhile (ENOENT) is skipped, a key written meanwhile waits for
    /// the next drain.
    pub fn take_events_single(&self) -> std::result::Result<Vec<u64>, SysError> {
        let keys: Vec<u64> = self
            .events
            .keys(self.events.info().max_entries as usize + 1)?;
        let mut taken = Vec::with_capacity(keys.len());
        for k in keys {
            match self.events.delete(&k) {
                Ok(()) => taken.push(k),
                Err(e) if e.errno() == libc::ENOENT => {}
                Err(e) => return Err(e),
            }
        }
        Ok(taken)
    }

    /// Audits the trie and `pid_events` (see [`audit::audit`]).
    pub fn audit(&self, start_time: &dyn Fn(u32) -> Option<u64>) -> Result<AuditReport> {
        audit::audit(&self.trie.map, &self.events, start_time)
    }

    /// Deletes the keys the audit found leaked (see [`audit::repair`]).
    pub fn repair(&self, report: &mut AuditReport) {
        audit::repair(&self.trie, report);
    }

    /// How the trie takes batch deletes.
    #[cfg(test)]
    pub fn delete_support(&self) -> engine::BatchSupport {
        self.trie.delete
    }

    /// Every key of the trie (bounded by its max_entries).
    pub fn trie_keys(&self) -> std::result::Result<Vec<PidPage>, SysError> {
        self.trie
            .map
            .keys(self.trie.map.info().max_entries as usize + 1)
    }
}
