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
use crate::sampler::unwind::kernel::KernelTables;
use crate::sampler::unwind::UnwindTable;
use crate::sys::bpf::MapHandle;
use crate::sys::safe_open::MappedFile;
use crate::tracker::process::ProcessManager;
use crate::tracker::registry::Change;
use std::collections::HashSet;

/// The unwind tables as the agent and the kernel hold them (the control
/// API's answer, for tests).
#[derive(Clone, Debug, Default)]
pub struct UnwindView {
    /// Read back from `unwind_files` and `unwind_pages`.
    pub kernel: crate::sampler::unwind::kernel::ReadBack,
    /// Files the agent holds a table for (empty ones included).
    pub tables: usize,
    /// Files whose table is being built.
    pub building: usize,
}

pub struct Unwinder {
    tables: KernelTables,
    /// Files whose table is being built.
    building: HashSet<u64>,
}

impl Unwinder {
    /// On `unwind_files` and `unwind_pages`; the registry reports its
    /// changes from now on.
    pub fn new(files: MapHandle, pages: MapHandle, pm: &mut ProcessManager) -> Unwinder {
        pm.watch_files();
        Unwinder {
            tables: KernelTables::new(files, pages),
            building: HashSet::new(),
        }
    }

    /// Turns the registry's changes into build jobs and frees.
    pub fn follow(&mut self, pm: &mut ProcessManager, files: &mut FileWorkers) {
        for change in pm.take_file_changes() {
            match change {
                Change::Born(b) => {
                    if self.tables.has(b.file_id) || self.building.contains(&b.file_id) {
                        continue;
                    }
                    // gone again already: its death follows in this list
                    let Some(info) = pm.file(b.file_id) else {
                        continue;
                    };
                    let m = MappedFile {
                        pid: b.pid,
                        start: b.start,
                        end: b.end,
                        dev: info.dev,
                        ino: info.ino,
                        path: info.path.clone(),
                        deleted: info.deleted,
                    };
                    if files.submit_job(b.file_id, Job::Unwind, m) == Submitted::Queued {
                        self.building.insert(b.file_id);
                    }
                }
                Change::Died(id) => self.tables.unload(id),
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

    fn built(&mut self, file_id: u64, table: Option<UnwindTable>, pm: &ProcessManager) {
        self.building.remove(&file_id);
        let Some(table) = table else {
            return;
        };
        if pm.file(file_id).is_none() {
            add(&COUNTERS.unwind_tables_dropped, 1);
            return;
        }
        let t0 = std::time::Instant::now();
        let loaded = self.tables.load(file_id, &table);
        log::debug!(
            "unwind table of file {file_id:#x}: {} entries loaded in {:?}",
            table.entries.len(),
            t0.elapsed()
        );
        if let Err(e) = loaded {
            add(&COUNTERS.unwind_loads_failed, 1);
            let path = pm.file(file_id).map_or("?", |f| f.path.as_str());
            crate::warn_limited!(
                "unwind table load",
                "loading the unwind table of {path} ({} rows): {e}",
                table.entries.len()
            );
        }
    }

    /// The kernel's unwind maps read back, with the files whose table is
    /// being built.
    pub fn view(&self) -> crate::error::Result<UnwindView> {
        Ok(UnwindView {
            kernel: self.tables.read_back()?,
            tables: self.tables.len(),
            building: self.building.len(),
        })
    }

    /// Files with a table, and the parts of all tables in the kernel.
    pub fn loaded(&self) -> (usize, u64) {
        (self.tables.len(), self.tables.parts())
    }
}
