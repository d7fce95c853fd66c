//! The file registry: a stable `file_id` per (device, inode), with the path
//! the maps line gave, reference-counted by the mappings that use it so it
//! empties when the last user goes.
//!
//! It never opens a file: it runs on the event loop, and every path in it
//! is controlled by the mapping process's owner (DESIGN §9). Whatever needs
//! a file's contents asks the file worker (`files`).

use std::collections::{HashMap, VecDeque};

/// file_id of the [vdso] pseudo-file (not a real device/inode).
pub const VDSO_FILE_ID: u64 = 0x7664_736f_0000_0001;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub dev: u64,
    pub ino: u64,
    /// The maps line's path, ` (deleted)` stripped.
    pub path: String,
    /// The maps line said ` (deleted)` (or a memfd): the path names
    /// something else, if anything.
    pub deleted: bool,
    pub refs: usize,
}

#[derive(Debug, Default)]
pub struct Registry {
    files: HashMap<u64, FileInfo>,
    /// Files that entered and left, while someone watches (the sampler's
    /// unwind tables follow the registry): taken by [`Registry::take_changes`].
    watch: bool,
    changes: Vec<Change>,
    /// Paths of the last files that left (not deleted), oldest first: the
    /// loop's own maps read names a file by them when it comes back (the
    /// binary of short processes, mapped again a moment after the last
    /// one exited). At most [`RECENT`].
    recent: VecDeque<(u64, String)>,
}

/// Paths of files that left, kept for the loop's own maps read.
pub const RECENT: usize = 64;

/// A file entered or left the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Born(Born),
    Died(u64),
}

/// A file that entered the registry, and the mapping it was first seen in
/// (to open it through that process's map_files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Born {
    pub file_id: u64,
    pub pid: u32,
    pub start: u64,
    pub end: u64,
}

/// The file_id of (device, inode): a 64-bit mix, never 0 (0 is the marker).
pub fn file_id(dev: u64, ino: u64) -> u64 {
    let mut z = dev.rotate_left(32) ^ ino ^ 0x9e37_79b9_7f4a_7c15;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    if z == 0 || z == VDSO_FILE_ID {
        1
    } else {
        z
    }
}

impl Registry {
    /// Takes a reference on a file, registering it at first use; `seen`
    /// is the mapping (pid, start, end) it is used by.
    pub fn acquire(
        &mut self,
        id: u64,
        dev: u64,
        ino: u64,
        path: &str,
        deleted: bool,
        seen: (u32, u64, u64),
    ) {
        let mut new = false;
        let e = self.files.entry(id).or_insert_with(|| {
            new = true;
            if let Some(i) = self.recent.iter().position(|(i, _)| *i == id) {
                self.recent.remove(i);
            }
            FileInfo {
                dev,
                ino,
                path: path.to_string(),
                deleted,
                refs: 0,
            }
        });
        e.refs += 1;
        if new && self.watch {
            self.changes.push(Change::Born(Born {
                file_id: id,
                pid: seen.0,
                start: seen.1,
                end: seen.2,
            }));
        }
    }

    /// Drops a reference; the entry goes with the last one.
    pub fn release(&mut self, id: u64) {
        if let Some(e) = self.files.get_mut(&id) {
            e.refs = e.refs.saturating_sub(1);
            if e.refs == 0 {
                if let Some(gone) = self.files.remove(&id).filter(|f| !f.deleted) {
                    if self.recent.len() == RECENT {
                        self.recent.pop_front();
                    }
                    self.recent.push_back((id, gone.path));
                }
                if self.watch {
                    self.changes.push(Change::Died(id));
                }
            }
        }
    }

    /// Records births and deaths from now on (called before the first
    /// sync: files registered earlier are not reported).
    pub fn watch(&mut self) {
        self.watch = true;
    }

    /// The files born and died since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    pub fn get(&self, id: u64) -> Option<&FileInfo> {
        self.files.get(&id)
    }

    /// The path of a file in the registry, or of one that left lately;
    /// None for a deleted file (only map_files reaches it) or an unknown one.
    pub fn known_path(&self, id: u64) -> Option<&str> {
        match self.files.get(&id) {
            Some(f) => (!f.deleted).then_some(f.path.as_str()),
            None => self
                .recent
                .iter()
                .rev()
                .find(|(i, _)| *i == id)
                .map(|(_, p)| p.as_str()),
        }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn refs(&self) -> usize {
        self.files.values().map(|f| f.refs).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watched_registry_reports_births_and_deaths_in_order() {
        let mut r = Registry::default();
        r.acquire(1, 1, 1, "/a", false, (9, 0, 1));
        r.watch();
        r.acquire(2, 1, 2, "/b", false, (10, 0x1000, 0x2000));
        r.acquire(2, 1, 2, "/b", false, (11, 0x1000, 0x2000));
        r.release(2);
        r.release(2);
        r.acquire(2, 1, 2, "/b", false, (12, 0x3000, 0x4000));
        r.release(1);
        let born = |pid, start, end| {
            Change::Born(Born {
                file_id: 2,
                pid,
                start,
                end,
            })
        };
        assert_eq!(
            r.take_changes(),
            [
                born(10, 0x1000, 0x2000),
                Change::Died(2),
                born(12, 0x3000, 0x4000),
                Change::Died(1)
            ]
        );
        assert!(r.take_changes().is_empty());
    }

    #[test]
    fn file_ids_are_stable_distinct_and_never_zero() {
        assert_eq!(file_id(0xfe00, 1234), file_id(0xfe00, 1234));
        assert_ne!(file_id(0xfe00, 1234), file_id(0xfe00, 1235));
        assert_ne!(file_id(0xfe00, 1234), file_id(0xfe01, 1234));
        for i in 0..10000 {
            assert_ne!(file_id(i, i * 7), 0);
        }
    }

    #[test]
    fn a_file_that_left_keeps_its_path_for_a_while_unless_deleted() {
        let mut r = Registry::default();
        r.acquire(5, 1, 2, "/bin/true", false, (1, 0, 1));
        r.acquire(6, 1, 3, "/tmp/gone", true, (1, 0, 1));
        assert_eq!(r.known_path(5), Some("/bin/true"));
        assert_eq!(r.known_path(6), None, "deleted: only map_files");
        r.release(5);
        r.release(6);
        assert!(r.is_empty());
        assert_eq!(r.known_path(5), Some("/bin/true"), "left a moment ago");
        assert_eq!(r.known_path(6), None);
        // back, and gone again: one entry
        r.acquire(5, 1, 2, "/bin/true", false, (2, 0, 1));
        r.release(5);
        assert_eq!(r.recent.len(), 1);
        // the oldest make room
        for i in 100..100 + RECENT as u64 {
            r.acquire(i, 1, i, "/x", false, (1, 0, 1));
            r.release(i);
        }
        assert_eq!(r.recent.len(), RECENT);
        assert_eq!(r.known_path(5), None, "pushed out by {RECENT} newer");
        assert_eq!(r.known_path(100 + RECENT as u64 - 1), Some("/x"));
    }

    #[test]
    fn references_empty_the_registry() {
        let mut r = Registry::default();
        r.acquire(5, 1, 2, "/x", false, (1, 0, 1));
        r.acquire(5, 1, 2, "/x", false, (1, 0, 1));
        r.acquire(6, 1, 3, "/y", false, (1, 0, 1));
        assert_eq!((r.len(), r.refs()), (2, 3));
        r.release(5);
        r.release(6);
        assert_eq!(r.len(), 1);
        r.release(5);
        r.release(5); // an extra release is harmless
        assert!(r.is_empty());
    }
}
