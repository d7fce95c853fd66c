//! Perf event ring buffers: per-CPU `PERF_COUNT_SW_BPF_OUTPUT` rings read
//! through their mmap region, and a bounds-checked ring reader.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};

use mio::unix::SourceFd;

use super::SysError;

use super::perf_event::{
    enable, page_size, perf_event_open, PerfEventAttr, ATTR_DISABLED, PERF_COUNT_SW_BPF_OUTPUT,
    PERF_SAMPLE_RAW, PERF_TYPE_SOFTWARE,
};

// ---------------------------------------------------------------------------
// Ring reader
// ---------------------------------------------------------------------------

/// Offsets inside `struct perf_event_mmap_page`.
const DATA_HEAD_OFF: usize = 1024;
const DATA_TAIL_OFF: usize = 1032;
const DATA_OFFSET_OFF: usize = 1040;
const DATA_SIZE_OFF: usize = 1048;
/// Bytes of the metadata page this reader touches.
const META_MIN: usize = 1056;

/// `sizeof(struct perf_event_header)`.
const HEADER_LEN: usize = 8;
const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_SAMPLE: u32 = 9;

/// One record handed to the [`RingReader::read`] callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// `PERF_RECORD_SAMPLE` with `PERF_SAMPLE_RAW`: exactly the raw bytes
    /// (the `u32 size` prefix and trailing padding removed).
    Sample(&'a [u8]),
    /// `PERF_RECORD_LOST`: number of records the kernel dropped.
    Lost(u64),
    /// Any other record type, by `perf_event_header.type`.
    Other(u32),
}

/// Consumer side of a perf ring: a `perf_event_mmap_page` followed by a
/// power-of-two data area.
pub struct RingReader {
    base: *mut u8,
    data: *mut u8,
    /// Size of the data area; 0 means the region was unusable (inert reader).
    data_size: u64,
    scratch: Vec<u8>,
    corrupt: u64,
}

// SAFETY: the reader only holds raw pointers into a region whose validity is
// guaranteed by the `from_raw` contract independent of the thread; all
// mutation goes through `&mut self`, and the shared fields are atomics.
unsafe impl Send for RingReader {}

impl RingReader {
    /// Creates a reader over `len` bytes at `base`.
    ///
    /// The data area is taken from the metadata's `data_offset`/`data_size`;
    /// if both are 0 (older kernels) it is `page_size..len`. If the region is
    /// too small, misaligned, or the data area is not a power of two lying
    /// inside `len`, the reader is inert: it never touches memory and
    /// [`data_size`](Self::data_size) is 0.
    ///
    /// # Safety
    ///
    /// If `len >= 1056` and `base` is 8-byte aligned, `base` must be valid
    /// for reads and writes of `len` bytes for the whole lifetime of the
    /// returned reader, and any concurrent writer (the kernel) must only
    /// write the region following the perf ring protocol (atomic
    /// `data_head` updates, never touching unconsumed records). No other
    /// party may write `data_tail`.
    pub unsafe fn from_raw(base: *mut u8, len: usize, page_size: usize) -> RingReader {
        let mut r = RingReader {
            base,
            data: base,
            data_size: 0,
            scratch: Vec::new(),
            corrupt: 0,
        };
        if base.is_null() || base.align_offset(8) != 0 || len < META_MIN {
            return r;
        }
        // SAFETY: base is 8-aligned and valid for len >= META_MIN bytes (caller
        // contract), so both fields are in bounds and aligned.
        let (mut off, mut size) = unsafe {
            (
                atomic_at(base, DATA_OFFSET_OFF).load(Ordering::Relaxed),
                atomic_at(base, DATA_SIZE_OFF).load(Ordering::Relaxed),
            )
        };
        if off == 0 && size == 0 {
            off = page_size as u64;
            size = len.saturating_sub(page_size) as u64;
        }
        let fits = off.checked_add(size).is_some_and(|end| end <= len as u64);
        if fits && off >= META_MIN as u64 && size >= HEADER_LEN as u64 && size.is_power_of_two() {
            // SAFETY: off + size <= len, so off is within the region.
            r.data = unsafe { base.add(off as usize) };
            r.data_size = size;
        }
        r
    }

    /// Size of the data area in bytes (0 for an inert reader).
    pub fn data_size(&self) -> usize {
        self.data_size as usize
    }

    /// Number of corrupt headers or malformed records skipped so far.
    #[cfg(test)]
    pub fn corrupt(&self) -> u64 {
        self.corrupt
    }

    /// Whether unread data is present (`data_head != data_tail`).
    pub fn pending(&self) -> bool {
        self.data_size != 0
            && self.head().load(Ordering::Acquire) != self.tail().load(Ordering::Relaxed)
    }

    fn head(&self) -> &AtomicU64 {
        debug_assert!(self.data_size != 0);
        // SAFETY: only called on a usable reader, whose base is 8-aligned and
        // valid for >= META_MIN bytes for the reader's lifetime (from_raw).
        unsafe { atomic_at(self.base, DATA_HEAD_OFF) }
    }

    fn tail(&self) -> &AtomicU64 {
        debug_assert!(self.data_size != 0);
        // SAFETY: as in `head`.
        unsafe { atomic_at(self.base, DATA_TAIL_OFF) }
    }

    /// Reads all available records, calling `f` for each, then publishes the
    /// new `data_tail`. Returns the number of records passed to `f`.
    ///
    /// A corrupt header (size < 8 or larger than the unread data) makes the
    /// reader skip to `data_head`; a well-framed but malformed sample or lost
    /// record is skipped alone. Both increment [`corrupt`](Self::corrupt).
    pub fn read<F: FnMut(Record<'_>)>(&mut self, mut f: F) -> usize {
        if self.data_size == 0 {
            return 0;
        }
        let head = self.head().load(Ordering::Acquire);
        let start = self.tail().load(Ordering::Relaxed);
        let size = self.data_size;
        let mut tail = start;
        let mut n = 0;
        while tail != head {
            let avail = head.wrapping_sub(tail);
            if avail > size || avail < HEADER_LEN as u64 {
                self.corrupt += 1;
                tail = head;
                break;
            }
            let mut hdr = [0u8; HEADER_LEN];
            // SAFETY: data is valid for data_size bytes (from_raw contract);
            // data_size is a power of two and hdr.len() <= data_size.
            unsafe { copy_wrapped(self.data, size, tail, &mut hdr) };
            let ty = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
            let rec_len = u64::from(u16::from_ne_bytes([hdr[6], hdr[7]]));
            if rec_len < HEADER_LEN as u64 || rec_len > avail {
                self.corrupt += 1;
                tail = head;
                break;
            }
            let off = (tail & (size - 1)) as usize;
            let rec_len = rec_len as usize;
            let rec: &[u8] = if off + rec_len <= size as usize {
                // SAFETY: [off, off + rec_len) lies inside the data area, which
                // the kernel does not write until data_tail passes it.
                unsafe { std::slice::from_raw_parts(self.data.add(off), rec_len) }
            } else {
                self.scratch.clear();
                self.scratch.resize(rec_len, 0);
                // SAFETY: as above; rec_len <= avail <= data_size.
                unsafe { copy_wrapped(self.data, size, tail, &mut self.scratch) };
                &self.scratch
            };
            match parse_record(ty, rec) {
                Some(r) => {
                    f(r);
                    n += 1;
                }
                None => self.corrupt += 1,
            }
            tail = tail.wrapping_add(rec_len as u64);
        }
        if tail != start {
            self.tail().store(tail, Ordering::Release);
        }
        n
    }
}

/// # Safety
///
/// `base` must be valid for reads and writes of `off + 8` bytes, `base + off`
/// must be 8-aligned, and the memory must stay valid for `'a` and only be
/// accessed atomically by concurrent parties.
unsafe fn atomic_at<'a>(base: *mut u8, off: usize) -> &'a AtomicU64 {
    // SAFETY: guaranteed by the caller.
    unsafe { AtomicU64::from_ptr(base.add(off).cast::<u64>()) }
}

/// Copies `dst.len()` bytes starting at ring position `pos`, wrapping at the
/// end of the data area.
///
/// # Safety
///
/// `data` must be valid for reads of `size` bytes, `size` must be a power of
/// two, and `dst.len() <= size`.
unsafe fn copy_wrapped(data: *const u8, size: u64, pos: u64, dst: &mut [u8]) {
    let off = (pos & (size - 1)) as usize;
    let first = dst.len().min(size as usize - off);
    // SAFETY: off + first <= size and dst.len() - first <= off (because
    // dst.len() <= size), so both source ranges are inside the data area;
    // dst is a distinct Rust allocation.
    unsafe {
        ptr::copy_nonoverlapping(data.add(off), dst.as_mut_ptr(), first);
        ptr::copy_nonoverlapping(data, dst.as_mut_ptr().add(first), dst.len() - first);
    }
}

/// Decodes a complete record (header included); `None` if malformed.
fn parse_record(ty: u32, rec: &[u8]) -> Option<Record<'_>> {
    let body = rec.get(HEADER_LEN..)?;
    match ty {
        PERF_RECORD_SAMPLE => {
            let raw_len = u32::from_ne_bytes(body.get(..4)?.try_into().ok()?) as usize;
            body.get(4..)?.get(..raw_len).map(Record::Sample)
        }
        PERF_RECORD_LOST => {
            let lost = body.get(8..16)?;
            Some(Record::Lost(u64::from_ne_bytes(lost.try_into().ok()?)))
        }
        other => Some(Record::Other(other)),
    }
}

// ---------------------------------------------------------------------------
// PerfRing
// ---------------------------------------------------------------------------

/// `mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)`: the ring
/// of a perf event (the metadata page and the data area), unmapped by
/// munmap in [`PerfRing`]'s drop.
fn map_shared(fd: BorrowedFd<'_>, len: usize, page: usize) -> Result<NonNull<u8>, i32> {
    #[cfg(test)]
    if let Some(r) = super::fake::perf::mmap(fd, len, page) {
        return r;
    }
    let _ = page;
    // SAFETY: a new shared mapping (addr NULL) of a perf fd; it does not
    // alias any existing Rust memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    NonNull::new(p.cast::<u8>()).ok_or(libc::EFAULT)
}

/// A `PERF_COUNT_SW_BPF_OUTPUT` event on one CPU with its mmap'd ring; the
/// target of `bpf_perf_event_output` through a `PERF_EVENT_ARRAY` map.
pub struct PerfRing {
    reader: RingReader,
    base: NonNull<u8>,
    len: usize,
    fd: OwnedFd,
    cpu: u32,
}

// SAFETY: PerfRing exclusively owns its fd and mapping; the mapping is
// process-wide and not tied to the creating thread.
unsafe impl Send for PerfRing {}

impl PerfRing {
    /// Opens an enabled BPF output ring on `cpu` with `pages` (a power of
    /// two) data pages. `wakeup_events` is the number of samples per poll
    /// wake-up; 0 makes the kernel wake at half-full instead.
    pub fn open_bpf_output(
        cpu: u32,
        pages: usize,
        wakeup_events: u32,
    ) -> Result<PerfRing, SysError> {
        let invalid =
            |kind, msg: String| SysError::invalid("perf ring", format!("cpu {cpu}"), kind, msg);
        if pages == 0 || !pages.is_power_of_two() {
            return Err(invalid(
                io::ErrorKind::InvalidInput,
                format!("pages must be a power of two, got {pages}"),
            ));
        }
        let page = page_size()?;
        let len = pages
            .checked_add(1)
            .and_then(|p| p.checked_mul(page))
            .ok_or_else(|| {
                invalid(
                    io::ErrorKind::InvalidInput,
                    format!("{pages} pages overflow"),
                )
            })?;

        let mut attr = PerfEventAttr::new(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_BPF_OUTPUT);
        attr.sample_type = PERF_SAMPLE_RAW;
        attr.sample_period_or_freq = 1;
        attr.wakeup_events_or_watermark = wakeup_events;
        attr.flags = ATTR_DISABLED;
        let fd = perf_event_open(&attr, -1, cpu, "BPF_OUTPUT")?;

        let base = map_shared(fd.as_fd(), len, page)
            .map_err(|e| SysError::new("mmap", format!("perf ring, cpu {cpu}, {len} bytes"), e))?;
        let p = base.as_ptr();
        // SAFETY: the mapping is page aligned, readable and writable for len
        // bytes, written by the kernel per the perf ring protocol, and stays
        // mapped until PerfRing::drop, which outlives every use of `reader`.
        let reader = unsafe { RingReader::from_raw(p, len, page) };
        // From here on Drop unmaps and closes on any error path.
        let ring = PerfRing {
            reader,
            base,
            len,
            fd,
            cpu,
        };
        if ring.reader.data_size() == 0 {
            return Err(invalid(
                io::ErrorKind::InvalidData,
                "invalid data_offset/data_size".into(),
            ));
        }
        enable(ring.fd.as_fd(), &format!("perf ring, cpu {cpu}"))?;
        Ok(ring)
    }

    /// Reads all pending records; see [`RingReader::read`].
    pub fn read<F: FnMut(Record<'_>)>(&mut self, f: F) -> usize {
        self.reader.read(f)
    }

    /// Whether unread records are pending.
    #[cfg(test)]
    pub fn pending(&self) -> bool {
        self.reader.pending()
    }

    /// Corrupt headers or malformed records skipped so far.
    #[cfg(test)]
    pub fn corrupt(&self) -> u64 {
        self.reader.corrupt()
    }

    /// The CPU this ring is bound to.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }
}

impl AsFd for PerfRing {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl mio::event::Source for PerfRing {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> io::Result<()> {
        SourceFd(&self.fd.as_raw_fd()).deregister(registry)
    }
}

impl Drop for PerfRing {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly the mapping created in
        // open_bpf_output and unmapped only here; `reader` is dropped right
        // after without touching the memory.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// One [`PerfRing`] per CPU: the BPF side's `PERF_EVENT_ARRAY` targets.
pub struct PerfRings {
    rings: Vec<PerfRing>,
}

impl PerfRings {
    /// Opens a BPF output ring on every CPU of `cpus` (see
    /// [`PerfRing::open_bpf_output`]).
    pub fn open_bpf_output(
        cpus: &[u32],
        pages: usize,
        wakeup_events: u32,
    ) -> Result<PerfRings, SysError> {
        let rings = cpus
            .iter()
            .map(|&cpu| PerfRing::open_bpf_output(cpu, pages, wakeup_events))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PerfRings { rings })
    }

    /// No rings (sampling off).
    pub fn none() -> PerfRings {
        PerfRings { rings: Vec::new() }
    }

    /// The ring of `cpu`, if one is open there.
    pub fn get_mut(&mut self, cpu: u32) -> Option<&mut PerfRing> {
        self.rings.iter_mut().find(|r| r.cpu == cpu)
    }

    /// Rings in CPU order.
    pub fn iter(&self) -> std::slice::Iter<'_, PerfRing> {
        self.rings.iter()
    }

    /// Mutable rings in CPU order.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, PerfRing> {
        self.rings.iter_mut()
    }

    /// Number of rings.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    /// Whether there are no rings.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.rings.is_empty()
    }
}

// ---------------------------------------------------------------------------
// Fuzzing
// ---------------------------------------------------------------------------

/// Builds a heap ring from arbitrary bytes and reads it; never panics.
///
/// Layout of `data`: `[0]` data-size selector (8..=4096 bytes), `[1]` mode
/// bits, `[2..10]` tail, `[10..18]` head delta (or raw head), rest fills the
/// data area cyclically.
pub fn fuzz_one(data: &[u8]) {
    let _ = fuzz_inner(data, &mut |_| {});
}

/// As [`fuzz_one`], returning the number of records read and handing the
/// payload of every sample record to `sample` (tests measure how deep the
/// fuzz inputs reach).
pub fn fuzz_records(data: &[u8], sample: &mut dyn FnMut(&[u8])) -> usize {
    fuzz_inner(data, sample).0
}

/// Returns (records read, pending after the read).
fn fuzz_inner(data: &[u8], sample: &mut dyn FnMut(&[u8])) -> (usize, bool) {
    const META: usize = 4096;
    let byte = |i: usize| data.get(i).copied().unwrap_or(0);
    let word = |at: usize| {
        let mut w = [0u8; 8];
        for (k, b) in w.iter_mut().enumerate() {
            *b = byte(at + k);
        }
        u64::from_le_bytes(w)
    };
    let data_size = 8usize << (byte(0) % 10);
    let mode = byte(1);
    let tail = word(2);
    let head = if mode & 1 == 0 {
        tail.wrapping_add(word(10) % (2 * data_size as u64 + 1))
    } else {
        word(10)
    };
    let content = data.get(18..).unwrap_or(&[]);

    let total = META + data_size;
    let mut bytes = vec![0u8; total];
    if !content.is_empty() {
        for (d, s) in bytes[META..].iter_mut().zip(content.iter().cycle()) {
            *d = *s;
        }
    }
    let mut put = |off: usize, v: u64| bytes[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    put(DATA_HEAD_OFF, head);
    put(DATA_TAIL_OFF, tail);
    match (mode >> 1) & 3 {
        0 => {
            put(DATA_OFFSET_OFF, META as u64);
            put(DATA_SIZE_OFF, data_size as u64);
        }
        1 => {} // zero fields: page_size fallback
        2 => {
            put(DATA_OFFSET_OFF, word(2) & 0x3fff);
            put(DATA_SIZE_OFF, word(10) & 0x3fff);
        }
        _ => {
            put(DATA_OFFSET_OFF, META as u64);
            put(DATA_SIZE_OFF, data_size as u64 * 2);
        }
    }
    let len = if mode & 8 != 0 {
        byte(0) as usize * 5
    } else {
        total
    };

    // Copy into u64 storage so the metadata words are 8-byte aligned.
    let mut words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_ne_bytes(w)
        })
        .collect();
    // SAFETY: `words` is an 8-aligned, exclusively owned allocation of
    // `total >= len` bytes that outlives `reader` and is only accessed
    // through it.
    let mut reader = unsafe { RingReader::from_raw(words.as_mut_ptr().cast::<u8>(), len, META) };
    let mut sink = 0u64;
    let n = reader.read(|r| match r {
        Record::Sample(s) => {
            sample(s);
            sink = sink.wrapping_add(s.iter().map(|&b| u64::from(b)).sum())
        }
        Record::Lost(l) => sink = sink.wrapping_add(l),
        Record::Other(t) => sink = sink.wrapping_add(u64::from(t)),
    });
    std::hint::black_box(sink);
    let pending = reader.pending();
    (n, pending)
}

#[cfg(test)]
mod tests;
