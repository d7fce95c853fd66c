//! The file registry: a stable `file_id` per (device, inode), with the path
//! and ELF build id, reference-counted by the mappings that use it so it
//! empties when the last user goes.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// file_id of the [vdso] pseudo-file (not a real device/inode).
pub const VDSO_FILE_ID: u64 = 0x7664_736f_0000_0001;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub dev: u64,
    pub ino: u64,
    pub path: String,
    pub build_id: Option<Vec<u8>>,
    pub refs: usize,
}

#[derive(Debug, Default)]
pub struct Registry {
    files: HashMap<u64, FileInfo>,
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
    /// Takes a reference on a file, registering it at first use.
    pub fn acquire(&mut self, id: u64, dev: u64, ino: u64, path: &str, read_build_id: bool) {
        let e = self.files.entry(id).or_insert_with(|| FileInfo {
            dev,
            ino,
            path: path.to_string(),
            build_id: if read_build_id {
                File::open(path).ok().and_then(|f| build_id(&f))
            } else {
                None
            },
            refs: 0,
        });
        e.refs += 1;
    }

    /// Drops a reference; the entry goes with the last one.
    pub fn release(&mut self, id: u64) {
        if let Some(e) = self.files.get_mut(&id) {
            e.refs = e.refs.saturating_sub(1);
            if e.refs == 0 {
                self.files.remove(&id);
            }
        }
    }

    pub fn get(&self, id: u64) -> Option<&FileInfo> {
        self.files.get(&id)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn refs(&self) -> usize {
        self.files.values().map(|f| f.refs).sum()
    }
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// The GNU build id of a 64-bit little-endian ELF file, read from its
/// PT_NOTE segments with positioned reads (no whole-file read).
pub fn build_id(f: &File) -> Option<Vec<u8>> {
    let mut eh = [0u8; 64];
    f.read_exact_at(&mut eh, 0).ok()?;
    if &eh[0..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let phoff = u64_at(&eh, 32)?;
    let phentsize = u16_at(&eh, 54)? as u64;
    let phnum = u16_at(&eh, 56)?.min(256) as u64;
    if phentsize < 56 {
        return None;
    }
    for i in 0..phnum {
        let mut ph = [0u8; 56];
        f.read_exact_at(&mut ph, phoff.checked_add(i * phentsize)?)
            .ok()?;
        if u32_at(&ph, 0)? != 4 {
            continue; // not PT_NOTE
        }
        let off = u64_at(&ph, 8)?;
        let size = u64_at(&ph, 32)?.min(4096) as usize;
        let mut notes = vec![0u8; size];
        f.read_exact_at(&mut notes, off).ok()?;
        let mut p = 0usize;
        while p + 12 <= notes.len() {
            let namesz = u32_at(&notes, p)? as usize;
            let descsz = u32_at(&notes, p + 4)? as usize;
            let ty = u32_at(&notes, p + 8)?;
            let name_at = p + 12;
            let desc_at = name_at + namesz.div_ceil(4) * 4;
            let end = desc_at + descsz.div_ceil(4) * 4;
            if ty == 3 && notes.get(name_at..name_at + namesz) == Some(b"GNU\0") {
                return notes.get(desc_at..desc_at + descsz).map(|d| d.to_vec());
            }
            if end <= p {
                break;
            }
            p = end;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn references_empty_the_registry() {
        let mut r = Registry::default();
        r.acquire(5, 1, 2, "/x", false);
        r.acquire(5, 1, 2, "/x", false);
        r.acquire(6, 1, 3, "/y", false);
        assert_eq!((r.len(), r.refs()), (2, 3));
        r.release(5);
        r.release(6);
        assert_eq!(r.len(), 1);
        r.release(5);
        r.release(5); // an extra release is harmless
        assert!(r.is_empty());
    }

    #[test]
    fn reads_the_build_id_of_a_real_binary() {
        let exe = File::open("/proc/self/exe").unwrap();
        // the test binary is linked with a build id by default on Debian
        let id = build_id(&exe);
        if let Some(id) = id {
            assert!(id.len() >= 8);
        }
        let not_elf = File::open("/proc/self/cmdline").unwrap();
        assert_eq!(build_id(&not_elf), None);
    }
}
