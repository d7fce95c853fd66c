//! Bounded positioned reads of an untrusted file, as an `object::ReadRef`.
//!
//! The ELF parser asks for byte ranges (headers, then only the sections it
//! needs); each range is read with pread(2) when first asked for and kept
//! until the reader is dropped, so the parser can hold slices of it. A range
//! larger than the per-read cap, or past the per-file budget, is refused
//! before anything is allocated: a file that claims a 2 GiB section (or
//! is a 2 GiB sparse file) costs nothing. Nothing here reads the whole file.

use object::ReadRef;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;

/// Longest string read by `read_bytes_at_until` (symbol and section names).
const MAX_STRING: u64 = 4096;

/// What was refused, for the caller's warning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refusals {
    /// (offset, size) of the largest read refused by the per-read cap.
    pub over_cap: Option<(u64, u64)>,
    /// Reads refused because the file's budget was spent.
    pub over_budget: u64,
}

#[derive(Default)]
struct Cache {
    /// Ranges read whole in advance (string tables): (offset, bytes).
    regions: Vec<(u64, Box<[u8]>)>,
    bufs: HashMap<(u64, u64), Box<[u8]>>,
    strings: HashMap<(u64, u8), Box<[u8]>>,
    spent: u64,
    refusals: Refusals,
}

/// A file read by bounded, positioned reads (see the module doc).
pub struct BoundedReader<'f> {
    file: &'f File,
    len: u64,
    max_read: u64,
    budget: u64,
    cache: RefCell<Cache>,
}

impl<'f> BoundedReader<'f> {
    /// `len` is the file's size at open (fstat); reads beyond it fail.
    /// `max_read` caps one read, `budget` all reads together.
    pub fn new(file: &'f File, len: u64, max_read: u64, budget: u64) -> BoundedReader<'f> {
        BoundedReader {
            file,
            len,
            max_read,
            budget,
            cache: RefCell::new(Cache::default()),
        }
    }

    /// Bytes read so far.
    pub fn spent(&self) -> u64 {
        self.cache.borrow().spent
    }

    pub fn refusals(&self) -> Refusals {
        self.cache.borrow().refusals.clone()
    }

    /// Reserves `size` bytes of the budget, or records why not.
    fn admit(&self, cache: &mut Cache, offset: u64, size: u64) -> bool {
        if size > self.max_read {
            let prev = cache.refusals.over_cap.map_or(0, |r| r.1);
            if size > prev {
                cache.refusals.over_cap = Some((offset, size));
            }
            return false;
        }
        match cache.spent.checked_add(size) {
            Some(total) if total <= self.budget => {
                cache.spent = total;
                true
            }
            _ => {
                cache.refusals.over_budget += 1;
                false
            }
        }
    }

    /// Reads `size` bytes at `offset` in one go, so later reads inside the
    /// range (names of a string table) are slices of it, not syscalls.
    /// Counted against the caps like any read; false when refused.
    pub fn preload(&self, offset: u64, size: u64) -> bool {
        if size == 0 || !self.in_bounds(offset, size) {
            return false;
        }
        let mut cache = self.cache.borrow_mut();
        if !self.admit(&mut cache, offset, size) {
            return false;
        }
        match self.read_exact(offset, size) {
            Some(buf) => {
                cache.regions.push((offset, buf));
                true
            }
            None => false,
        }
    }

    fn in_bounds(&self, offset: u64, size: u64) -> bool {
        offset.checked_add(size).is_some_and(|end| end <= self.len)
    }

    fn read_exact(&self, offset: u64, size: u64) -> Option<Box<[u8]>> {
        let size = usize::try_from(size).ok()?;
        let mut buf = Vec::new();
        buf.try_reserve_exact(size).ok()?;
        buf.resize(size, 0);
        // a file truncated meanwhile ends the read with an error, not a fault
        self.file.read_exact_at(&mut buf, offset).ok()?;
        Some(buf.into_boxed_slice())
    }
}

/// The preloaded region holding `offset`: its bytes from `offset` on.
fn region_from(cache: &Cache, offset: u64) -> Option<&[u8]> {
    cache.regions.iter().find_map(|(start, buf)| {
        let at = usize::try_from(offset.checked_sub(*start)?).ok()?;
        buf.get(at..).filter(|rest| !rest.is_empty())
    })
}

/// Extends a slice of a cached buffer to the reader's lifetime.
fn extend<'a>(buf: &[u8]) -> &'a [u8] {
    // SAFETY: `buf` points into a `Box<[u8]>` owned by the reader's cache
    // (a map entry or a preloaded region). Entries are never removed or
    // mutated while the reader lives (it has no method that does), and a
    // Box's heap data does not move when the map rehashes or the region
    // list grows, so the bytes stay valid for as long as `&'a
    // BoundedReader` is borrowed.
    unsafe { std::slice::from_raw_parts(buf.as_ptr(), buf.len()) }
}

impl<'a> ReadRef<'a> for &'a BoundedReader<'_> {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size == 0 {
            return Ok(&[]);
        }
        if !self.in_bounds(offset, size) {
            return Err(());
        }
        let mut cache = self.cache.borrow_mut();
        if let Some(rest) = region_from(&cache, offset) {
            if let Some(b) = usize::try_from(size).ok().and_then(|n| rest.get(..n)) {
                return Ok(extend(b));
            }
        }
        if let Some(b) = cache.bufs.get(&(offset, size)) {
            return Ok(extend(b));
        }
        if !self.admit(&mut cache, offset, size) {
            return Err(());
        }
        let buf = self.read_exact(offset, size).ok_or(())?;
        let slice = extend(&buf);
        cache.bufs.insert((offset, size), buf);
        Ok(slice)
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        if range.start > range.end || range.end > self.len {
            return Err(());
        }
        let mut cache = self.cache.borrow_mut();
        if let Some(rest) = region_from(&cache, range.start) {
            let limit = usize::try_from(range.end - range.start).unwrap_or(usize::MAX);
            let rest = &rest[..rest.len().min(limit)];
            if let Some(end) = rest.iter().position(|&c| c == delimiter) {
                return Ok(extend(&rest[..end]));
            }
        }
        if let Some(b) = cache.strings.get(&(range.start, delimiter)) {
            return Ok(extend(b));
        }
        let want = (range.end - range.start).min(MAX_STRING).min(self.max_read);
        if !self.admit(&mut cache, range.start, want) {
            return Err(());
        }
        let size = usize::try_from(want).map_err(|_| ())?;
        let mut buf = vec![0u8; size];
        let mut got = 0;
        while got < size {
            match self.file.read_at(&mut buf[got..], range.start + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        let end = buf[..got].iter().position(|&c| c == delimiter).ok_or(())?;
        buf.truncate(end);
        let buf = buf.into_boxed_slice();
        let slice = extend(&buf);
        cache.strings.insert((range.start, delimiter), buf);
        Ok(slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_capped_budgeted_and_cached() {
        let path = std::env::temp_dir().join(format!("pidmap-pread-{}", std::process::id()));
        std::fs::write(&path, b"hello\0world\0").unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        // the file claims far more than it holds: reads past it fail
        f.set_len(1 << 30).unwrap();
        let r = BoundedReader::new(&f, 1 << 30, 64, 100);
        let rr = &r;
        assert_eq!(rr.read_bytes_at(0, 5), Ok(&b"hello"[..]));
        assert_eq!(rr.read_bytes_at(0, 5), Ok(&b"hello"[..]));
        assert_eq!(r.spent(), 5, "a repeated range is served from the cache");
        assert_eq!(rr.read_bytes_at_until(6..100, 0), Ok(&b"world"[..]));
        // over the per-read cap: refused without allocating
        assert!(rr.read_bytes_at(0, 1 << 29).is_err());
        assert_eq!(r.refusals().over_cap, Some((0, 1 << 29)));
        // past the end of the file
        assert!(rr.read_bytes_at((1 << 30) - 2, 4).is_err());
        // the budget: 5 + 64 (the string, at most one read) + 10 spent,
        // then 64 more is refused
        assert!(rr.read_bytes_at(100, 10).is_ok());
        assert!(rr.read_bytes_at(200, 64).is_err());
        assert_eq!(r.refusals().over_budget, 1);
        assert_eq!(r.spent(), 79);
    }

    #[test]
    fn preloaded_regions_serve_reads_without_syscalls() {
        let path = std::env::temp_dir().join(format!("pidmap-pread-r-{}", std::process::id()));
        std::fs::write(&path, b"hello\0world\0tail").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let r = BoundedReader::new(&f, 16, 64, 100);
        assert!(r.preload(0, 12));
        assert_eq!(r.spent(), 12);
        let rr = &r;
        assert_eq!(rr.read_bytes_at_until(6..16, 0), Ok(&b"world"[..]));
        assert_eq!(rr.read_bytes_at_until(0..16, 0), Ok(&b"hello"[..]));
        assert_eq!(rr.read_bytes_at(1, 4), Ok(&b"ello"[..]));
        assert_eq!(r.spent(), 12, "served from the region");
        // past the region's end: read from the file
        assert_eq!(rr.read_bytes_at(10, 4), Ok(&b"d\0ta"[..]));
        assert_eq!(r.spent(), 16);
        // no delimiter inside the region: read from the file
        assert_eq!(rr.read_bytes_at_until(12..16, b'x'), Err(()));
        // refused like any read
        assert!(!r.preload(0, 17), "past the end");
        assert!(
            !BoundedReader::new(&f, 16, 4, 100).preload(0, 12),
            "over the cap"
        );
    }
}
