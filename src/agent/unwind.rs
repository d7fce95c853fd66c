//! The sampler's unwind tables follow the file registry: a file that
//! enters it (its first mapping is synced) becomes a build job for the
//! file worker, the built table is loaded into the kernel on the loop
//! thread, and the table is freed when the file's last mapping goes. A
//! table is per file, shared by every process that maps it, so a process
//! that lives a few milliseconds is walked with tables other processes
//! (or its own first sync) already loaded.
//!
//! Nothing here runs unless the sampler walks by CFI (`--unwind auto` or
//! `cfi`): `pidmap run` and `--unwind fp` build no table.

use crate::agent::files::{Answer, FileWorkers, Finished, Job, Submitted};
use crate::counters::{add, COUNTERS};
use crate::sampler::unwind::kernel::{KernelTables, Prepared};
use crate::sys::bpf::MapHandle;
use crate::tracker::process::ProcessManager;
use crate::tracker::registry::{Born, Change};
use std::collections::{HashMap, VecDeque};

/// The unwind tables as the agent and the kernel hold them (the control
/// API's answer, for tests).
#[derive(Clone, Debug, Default)]
pub struct UnwindView {
    /// Read back from `unwind_files` and `unwind_pages`.
    pub kernel: crate::sampler::unwind::kernel::ReadBack,
    /// Files the agent holds a table for (empty ones included).
    pub tables: usize,
    /// Files whose table is being built or waits to be.
    pub building: usize,
}

pub struct Unwinder {
    tables: KernelTables,
    /// Files whose table is being built, with the uid it is charged to.
    building: HashMap<u64, u32>,
    /// Files waiting for their build, the newest first: the files of a
    /// process a sample needs go to the front.
    waiting: VecDeque<Born>,
    /// The file_ids in `waiting`, with how many times each is there.
    waiting_ids: HashMap<u64, usize>,
}

/// Jobs on the file worker at most before another build is submitted:
/// builds queue here, so the profile's symbol jobs wait for at most this
/// many builds.
const IN_FLIGHT: usize = 1;

impl Unwinder {
    /// On `unwind_files` and `unwind_pages`; the registry reports its
    /// changes from now on.
    pub fn new(files: MapHandle, pages: MapHandle, pm: &mut ProcessManager) -> Unwinder {
        pm.watch_files();
        Unwinder {
            tables: KernelTables::new(files, pages),
            building: HashMap::new(),
            waiting: VecDeque::new(),
            waiting_ids: HashMap::new(),
        }
    }

    /// Turns the registry's changes into waiting builds and frees, and
    /// submits builds while the file worker is idle enough.
    pub fn follow(&mut self, pm: &mut ProcessManager, files: &mut FileWorkers) {
        // the newest files first, in the order they came: a process that
        // just started (a workload, a short-lived child) is likelier to
        // be sampled now than one whose files wait since the start
        let mut born = Vec::new();
        for change in pm.take_file_changes() {
            match change {
                Change::Born(b) => {
                    *self.waiting_ids.entry(b.file_id).or_default() += 1;
                    born.push(b);
                }
                Change::Died(id) => self.tables.unload(id),
            }
        }
        for b in born.into_iter().rev() {
            self.waiting.push_front(b);
        }
        while files.outstanding() < IN_FLIGHT {
            let Some(b) = self.waiting.pop_front() else {
                break;
            };
            if let Some(n) = self.waiting_ids.get_mut(&b.file_id) {
                *n -= 1;
                if *n == 0 {
                    self.waiting_ids.remove(&b.file_id);
                }
            }
            if self.tables.has(b.file_id) || self.building.contains_key(&b.file_id) {
                continue;
            }
            // gone since (its death freed nothing: it had no table); else a
            // mapping of the file now: the one it was first seen in may be
            // gone, and map_files is how a deleted file is reached
            let Some(m) = pm.mapped_file(b.file_id, b.pid, (b.pid, b.start, b.end)) else {
                continue;
            };
            // charged to the user whose process maps it (unknown: not root)
            let uid = pm.get(m.pid).map_or(u32::MAX, |p| p.uid);
            if files.submit_job(b.file_id, Job::Unwind, m) == Submitted::Queued {
                self.building.insert(b.file_id, uid);
            }
        }
    }

    /// A sample of `pid` walked without a table (it ended at a file that
    /// has none yet, or stepped over one by frame pointer): the builds of
    /// every file the process maps go first, the files of its frames
    /// before the others.
    pub fn wanted(&mut self, pid: u32, frames: &[crate::abi::SampleFrame], pm: &ProcessManager) {
        // the common case, every table loaded or building: nothing to do
        if self.waiting_ids.is_empty() {
            return;
        }
        let waits = |id: &u64| self.waiting_ids.contains_key(id);
        let in_frames = |id: &u64| frames.iter().any(|f| f.file_id == *id);
        let mut ids: Vec<u64> = pm
            .get(pid)
            .map(|p| p.mappings.values().map(|m| m.file_id).collect())
            .unwrap_or_default();
        ids.retain(|id| waits(id) && !in_frames(id));
        ids.extend(frames.iter().map(|f| f.file_id).filter(waits));
        if ids.is_empty() {
            return;
        }
        // the last moved is the first built: the frames' files
        for id in ids {
            if let Some(at) = self.waiting.iter().position(|b| b.file_id == id) {
                if let Some(b) = self.waiting.remove(at) {
                    self.waiting.push_front(b);
                }
            }
        }
    }

    /// A finished job of the file worker: tables are loaded if their file
    /// is still in use; symbols answers are handed back.
    pub fn take(&mut self, done: Vec<Finished>, pm: &ProcessManager) -> Vec<Finished> {
        let mut rest = Vec::new();
        for f in done {
            match f.answer {
                Answer::Unwind(table) => self.built(f.file_id, table, pm),
                Answer::Symbols(_) => rest.push(f),
            }
        }
        rest
    }

    fn built(&mut self, file_id: u64, table: Option<Prepared>, pm: &ProcessManager) {
        let uid = self.building.remove(&file_id).unwrap_or(u32::MAX);
        let Some(table) = table else {
            return;
        };
        if pm.file(file_id).is_none() {
            add(&COUNTERS.unwind_tables_dropped, 1);
            return;
        }
        log::debug!(
            "unwind table of {}: {} rows in {} parts to load",
            pm.file(file_id).map_or("?", |f| f.path.as_str()),
            table.entries,
            table.keys.len()
        );
        if !self.tables.begin(file_id, uid, table) {
            crate::warn_limited!(
                "unwind table budget",
                "uid {uid} holds its share of the unwind tables: {} is walked by frame pointers",
                pm.file(file_id).map_or("?", |f| f.path.as_str())
            );
        }
    }

    /// Whether tables wait to be loaded (the loop turns again at once).
    pub fn has_work(&self) -> bool {
        self.tables.loading()
    }

    /// Loads tables until `until` (a few parts at a time, so exits and
    /// syncs are served in between).
    pub fn load(&mut self, until: std::time::Instant, pm: &ProcessManager) {
        for (file_id, e) in self.tables.step(until) {
            add(&COUNTERS.unwind_loads_failed, 1);
            let path = pm.file(file_id).map_or("?", |f| f.path.as_str());
            crate::warn_limited!(
                "unwind table load",
                "loading the unwind table of {path}: {e}"
            );
        }
    }

    /// The kernel's unwind maps read back, with the files whose table is
    /// being built.
    pub fn view(&self) -> crate::error::Result<UnwindView> {
        Ok(UnwindView {
            kernel: self.tables.read_back()?,
            tables: self.tables.len(),
            building: self.building.len() + self.waiting.len(),
        })
    }

    /// Files with a table, and the parts of all tables in the kernel.
    pub fn loaded(&self) -> (usize, u64) {
        (self.tables.len(), self.tables.parts())
    }
}
