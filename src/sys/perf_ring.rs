//! Perf event ring buffers: per-CPU `PERF_COUNT_SW_BPF_OUTPUT` rings read
//! through their mmap region, a software cpu-clock opener for BPF
//! perf_event programs, and a bounds-checked ring reader.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU64, Ordering};

use mio::unix::SourceFd;

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// OS error with call context; keeps the errno so [`errno_of`] can recover it.
#[derive(Debug)]
struct OsError {
    context: String,
    errno: i32,
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let os = io::Error::from_raw_os_error(self.errno);
        write!(f, "{}: {os}", self.context)
    }
}

impl std::error::Error for OsError {}

/// Adds `context` to `e`, keeping its kind and (recoverable) errno.
fn with_context(e: io::Error, context: String) -> io::Error {
    match e.raw_os_error() {
        Some(errno) => io::Error::new(e.kind(), OsError { context, errno }),
        None => io::Error::new(e.kind(), format!("{context}: {e}")),
    }
}

/// Error for the last failed libc call. `errno` is captured before the
/// context is formatted, so allocation cannot clobber it.
fn os_err(call: fmt::Arguments<'_>) -> io::Error {
    let e = io::Error::last_os_error();
    with_context(e, call.to_string())
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The errno behind an error returned by this module (or any plain OS error).
pub fn errno_of(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
        .or_else(|| e.get_ref()?.downcast_ref::<OsError>().map(|o| o.errno))
}

// ---------------------------------------------------------------------------
// CPU list
// ---------------------------------------------------------------------------

/// Upper bound on the number of CPUs a list may expand to (kernel NR_CPUS <= 8192).
const MAX_CPU_ENTRIES: u64 = 1 << 16;

/// CPUs listed in `/sys/devices/system/cpu/online`, sorted and deduplicated.
pub fn online_cpus() -> io::Result<Vec<u32>> {
    const PATH: &str = "/sys/devices/system/cpu/online";
    let s = std::fs::read_to_string(PATH).map_err(|e| with_context(e, format!("read {PATH}")))?;
    parse_cpu_list(&s)
        .map_err(|m| io::Error::new(io::ErrorKind::InvalidData, format!("parse {PATH}: {m}")))
}

/// Parses a kernel cpu list such as `"0-3,5,7-8\n"` into sorted, unique ids.
pub fn parse_cpu_list(s: &str) -> Result<Vec<u32>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty cpu list".to_string());
    }
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (parse_cpu_id(a, part)?, parse_cpu_id(b, part)?),
            None => {
                let c = parse_cpu_id(part, part)?;
                (c, c)
            }
        };
        if lo > hi {
            return Err(format!("reversed range {part:?}"));
        }
        let count = u64::from(hi - lo) + 1;
        if cpus.len() as u64 + count > MAX_CPU_ENTRIES {
            return Err(format!("cpu list too large at {part:?}"));
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn parse_cpu_id(s: &str, part: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid cpu {s:?} in {part:?}"));
    }
    s.parse::<u32>()
        .map_err(|e| format!("invalid cpu {s:?} in {part:?}: {e}"))
}

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
// perf_event_open
// ---------------------------------------------------------------------------

const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
const PERF_SAMPLE_RAW: u64 = 1 << 10;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// `perf_event_attr` flag bits.
const ATTR_DISABLED: u64 = 1 << 0;
const ATTR_FREQ: u64 = 1 << 10;

/// `struct perf_event_attr` as of Linux 6.3+ (`PERF_ATTR_SIZE_VER8`, 136
/// bytes). Older kernels accept it as long as the extra tail is zero.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period_or_freq: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events_or_watermark: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved_2: u16,
    aux_sample_size: u32,
    aux_action: u32,
    sig_data: u64,
    config3: u64,
}

impl PerfEventAttr {
    fn new(type_: u32, config: u64) -> Self {
        PerfEventAttr {
            type_,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config,
            ..Default::default()
        }
    }
}

/// `perf_event_open(attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)`.
fn perf_event_open(attr: &PerfEventAttr, pid: i32, cpu: u32, what: &str) -> io::Result<OwnedFd> {
    let cpu_arg = libc::c_int::try_from(cpu)
        .map_err(|_| invalid_input(format!("perf_event_open({what}): cpu {cpu} out of range")))?;
    // SAFETY: attr points to a fully initialised perf_event_attr whose size
    // field equals its size; the kernel only reads it (or writes `size` on
    // E2BIG, which stays within the struct). Other arguments are integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            pid as libc::c_int,
            cpu_arg,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(os_err(format_args!("perf_event_open({what}, cpu {cpu})")));
    }
    let raw = libc::c_int::try_from(ret).map_err(|_| {
        io::Error::other(format!("perf_event_open({what}, cpu {cpu}): bad fd {ret}"))
    })?;
    // SAFETY: raw is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn page_size() -> io::Result<usize> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v <= 0 {
        return Err(os_err(format_args!("sysconf(_SC_PAGESIZE)")));
    }
    Ok(v as usize)
}

/// Opens a sampling software cpu-clock event (`PERF_COUNT_SW_CPU_CLOCK`) on
/// `cpu` for all tasks at `freq_hz` samples per second, enabled, for
/// attaching a BPF perf_event program.
pub fn open_cpu_clock(cpu: u32, freq_hz: u64) -> io::Result<OwnedFd> {
    if freq_hz == 0 {
        return Err(invalid_input(
            "perf_event_open(CPU_CLOCK): freq_hz must be > 0".to_string(),
        ));
    }
    let mut attr = PerfEventAttr::new(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK);
    attr.sample_period_or_freq = freq_hz;
    attr.flags = ATTR_FREQ;
    perf_event_open(&attr, -1, cpu, "CPU_CLOCK")
}

// ---------------------------------------------------------------------------
// PerfRing
// ---------------------------------------------------------------------------

/// A `PERF_COUNT_SW_BPF_OUTPUT` event on one CPU with its mmap'd ring; the
/// target of `bpf_perf_event_output` through a `PERF_EVENT_ARRAY` map.
pub struct PerfRing {
    reader: RingReader,
    base: NonNull<libc::c_void>,
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
    pub fn open_bpf_output(cpu: u32, pages: usize, wakeup_events: u32) -> io::Result<PerfRing> {
        if pages == 0 || !pages.is_power_of_two() {
            return Err(invalid_input(format!(
                "perf ring on cpu {cpu}: pages must be a power of two, got {pages}"
            )));
        }
        let page = page_size()?;
        let len = pages
            .checked_add(1)
            .and_then(|p| p.checked_mul(page))
            .ok_or_else(|| {
                invalid_input(format!("perf ring on cpu {cpu}: {pages} pages overflow"))
            })?;

        let mut attr = PerfEventAttr::new(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_BPF_OUTPUT);
        attr.sample_type = PERF_SAMPLE_RAW;
        attr.sample_period_or_freq = 1;
        attr.wakeup_events_or_watermark = wakeup_events;
        attr.flags = ATTR_DISABLED;
        let fd = perf_event_open(&attr, -1, cpu, "BPF_OUTPUT")?;

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
            return Err(os_err(format_args!(
                "mmap(perf ring, cpu {cpu}, {len} bytes)"
            )));
        }
        let base = NonNull::new(p)
            .ok_or_else(|| io::Error::other(format!("mmap(perf ring, cpu {cpu}): NULL")))?;
        // SAFETY: the mapping is page aligned, readable and writable for len
        // bytes, written by the kernel per the perf ring protocol, and stays
        // mapped until PerfRing::drop, which outlives every use of `reader`.
        let reader = unsafe { RingReader::from_raw(p.cast::<u8>(), len, page) };
        // From here on Drop unmaps and closes on any error path.
        let ring = PerfRing {
            reader,
            base,
            len,
            fd,
            cpu,
        };
        if ring.reader.data_size() == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("mmap(perf ring, cpu {cpu}): invalid data_offset/data_size"),
            ));
        }
        // SAFETY: PERF_EVENT_IOC_ENABLE on a valid perf fd takes no pointer.
        let rc = unsafe { libc::ioctl(ring.fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) };
        if rc < 0 {
            return Err(os_err(format_args!(
                "ioctl(PERF_EVENT_IOC_ENABLE, cpu {cpu})"
            )));
        }
        Ok(ring)
    }

    /// Reads all pending records; see [`RingReader::read`].
    pub fn read<F: FnMut(Record<'_>)>(&mut self, f: F) -> usize {
        self.reader.read(f)
    }

    /// Whether unread records are pending.
    pub fn pending(&self) -> bool {
        self.reader.pending()
    }

    /// Corrupt headers or malformed records skipped so far.
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
            libc::munmap(self.base.as_ptr(), self.len);
        }
    }
}

/// One [`PerfRing`] per online CPU.
pub struct PerfRings {
    rings: Vec<PerfRing>,
}

impl PerfRings {
    /// Opens a BPF output ring on every CPU from [`online_cpus`].
    pub fn open_bpf_output_all(pages: usize, wakeup_events: u32) -> io::Result<PerfRings> {
        let rings = online_cpus()?
            .into_iter()
            .map(|cpu| PerfRing::open_bpf_output(cpu, pages, wakeup_events))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(PerfRings { rings })
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
    pub fn len(&self) -> usize {
        self.rings.len()
    }

    /// Whether there are no rings.
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
    let _ = fuzz_inner(data);
}

/// Returns (records read, pending after the read).
fn fuzz_inner(data: &[u8]) -> (usize, bool) {
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
        Record::Sample(s) => sink = sink.wrapping_add(s.iter().map(|&b| u64::from(b)).sum()),
        Record::Lost(l) => sink = sink.wrapping_add(l),
        Record::Other(t) => sink = sink.wrapping_add(u64::from(t)),
    });
    std::hint::black_box(sink);
    let pending = reader.pending();
    (n, pending)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    /// A heap-backed ring with a writer side for tests.
    struct HeapRing {
        _buf: Vec<u64>,
        ptr: *mut u8,
        len: usize,
        data_size: usize,
        head: u64,
    }

    impl HeapRing {
        fn new(data_size: usize) -> Self {
            Self::with_fields(data_size, true)
        }

        fn with_fields(data_size: usize, set_fields: bool) -> Self {
            let len = PAGE + data_size;
            let mut buf = vec![0u64; len / 8];
            let ptr = buf.as_mut_ptr().cast::<u8>();
            let mut r = HeapRing {
                _buf: buf,
                ptr,
                len,
                data_size,
                head: 0,
            };
            if set_fields {
                r.put(DATA_OFFSET_OFF, PAGE as u64);
                r.put(DATA_SIZE_OFF, data_size as u64);
            }
            r
        }

        fn put(&mut self, off: usize, v: u64) {
            assert!(off + 8 <= PAGE);
            // SAFETY: off + 8 is inside the metadata page of the allocation.
            unsafe { ptr::write_unaligned(self.ptr.add(off).cast::<u64>(), v) }
        }

        fn get(&self, off: usize) -> u64 {
            assert!(off + 8 <= PAGE);
            // SAFETY: as in `put`.
            unsafe { ptr::read_unaligned(self.ptr.add(off).cast::<u64>()) }
        }

        fn reader(&self) -> RingReader {
            // SAFETY: the allocation is 8-aligned, len bytes long, outlives
            // every reader in these tests, and is written single-threaded.
            unsafe { RingReader::from_raw(self.ptr, self.len, PAGE) }
        }

        /// Sets both head and tail to `pos` (an empty ring starting there).
        fn start_at(&mut self, pos: u64) {
            self.head = pos;
            self.put(DATA_HEAD_OFF, pos);
            self.put(DATA_TAIL_OFF, pos);
        }

        fn push(&mut self, rec: &[u8]) {
            for (i, b) in rec.iter().enumerate() {
                let off = (self.head + i as u64) as usize & (self.data_size - 1);
                // SAFETY: off < data_size, so PAGE + off < len.
                unsafe { *self.ptr.add(PAGE + off) = *b };
            }
            self.head += rec.len() as u64;
            self.put(DATA_HEAD_OFF, self.head);
        }

        fn tail(&self) -> u64 {
            self.get(DATA_TAIL_OFF)
        }
    }

    fn header(ty: u32, size: u16) -> Vec<u8> {
        let mut v = ty.to_ne_bytes().to_vec();
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&size.to_ne_bytes());
        v
    }

    fn sample(raw: &[u8]) -> Vec<u8> {
        let size = (HEADER_LEN + 4 + raw.len()).next_multiple_of(8);
        let mut v = header(PERF_RECORD_SAMPLE, size as u16);
        v.extend_from_slice(&(raw.len() as u32).to_ne_bytes());
        v.extend_from_slice(raw);
        v.resize(size, 0xAA);
        v
    }

    fn lost(id: u64, n: u64) -> Vec<u8> {
        let mut v = header(PERF_RECORD_LOST, 24);
        v.extend_from_slice(&id.to_ne_bytes());
        v.extend_from_slice(&n.to_ne_bytes());
        v
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Owned {
        Sample(Vec<u8>),
        Lost(u64),
        Other(u32),
    }

    fn drain(r: &mut RingReader) -> Vec<Owned> {
        let mut out = Vec::new();
        let n = r.read(|rec| {
            out.push(match rec {
                Record::Sample(s) => Owned::Sample(s.to_vec()),
                Record::Lost(l) => Owned::Lost(l),
                Record::Other(t) => Owned::Other(t),
            })
        });
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn parse_cpu_list_ok() {
        assert_eq!(parse_cpu_list("0").unwrap(), vec![0]);
        assert_eq!(parse_cpu_list("0-3\n").unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(
            parse_cpu_list("0-3,5,7-8").unwrap(),
            vec![0, 1, 2, 3, 5, 7, 8]
        );
        assert_eq!(parse_cpu_list("4,0-1,1").unwrap(), vec![0, 1, 4]);
    }

    #[test]
    fn parse_cpu_list_errors() {
        for bad in [
            "",
            "\n",
            "a",
            "3-1",
            "1-",
            "-1",
            ",",
            "0,,1",
            "+1",
            "0-1-2",
            "1 ,2",
            "99999999999",
            "0-4294967295",
        ] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn online_cpus_nonempty() {
        let cpus = online_cpus().unwrap();
        assert!(!cpus.is_empty());
    }

    #[test]
    fn errno_is_recoverable() {
        // SAFETY: close(-1) is harmless and sets errno to EBADF.
        let rc = unsafe { libc::close(-1) };
        assert_eq!(rc, -1);
        let e = os_err(format_args!("close(-1)"));
        assert_eq!(errno_of(&e), Some(libc::EBADF));
        assert_eq!(e.kind(), io::Error::from_raw_os_error(libc::EBADF).kind());
        let msg = e.to_string();
        assert!(msg.starts_with("close(-1): "), "{msg}");
        assert!(msg.contains("os error 9"), "{msg}");
        assert_eq!(errno_of(&io::Error::from_raw_os_error(5)), Some(5));
        assert_eq!(errno_of(&io::Error::other("x")), None);
    }

    #[test]
    fn attr_layout() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<PerfEventAttr>(), 136); // PERF_ATTR_SIZE_VER8
        assert_eq!(offset_of!(PerfEventAttr, flags), 40);
        assert_eq!(offset_of!(PerfEventAttr, wakeup_events_or_watermark), 48);
        assert_eq!(offset_of!(PerfEventAttr, config1), 56);
        assert_eq!(offset_of!(PerfEventAttr, sample_regs_user), 80);
        assert_eq!(offset_of!(PerfEventAttr, clockid), 92);
        assert_eq!(offset_of!(PerfEventAttr, aux_watermark), 104);
        assert_eq!(offset_of!(PerfEventAttr, aux_sample_size), 112);
        assert_eq!(offset_of!(PerfEventAttr, sig_data), 120);
        assert_eq!(offset_of!(PerfEventAttr, config3), 128);
        assert_eq!(PerfEventAttr::new(1, 10).size, 136);
    }

    #[test]
    fn single_record() {
        let mut h = HeapRing::new(4096);
        let mut r = h.reader();
        assert!(!r.pending());
        assert_eq!(r.read(|_| panic!("no records expected")), 0);
        h.push(&sample(b"hello"));
        assert!(r.pending());
        assert_eq!(drain(&mut r), vec![Owned::Sample(b"hello".to_vec())]);
        assert_eq!(h.tail(), h.head);
        assert!(!r.pending());
        assert_eq!(r.corrupt(), 0);
    }

    #[test]
    fn many_records() {
        let mut h = HeapRing::new(4096);
        let mut r = h.reader();
        let mut expect = Vec::new();
        for i in 0..100u32 {
            let raw: Vec<u8> = (0..(i % 23)).map(|b| (b as u8) ^ (i as u8)).collect();
            h.push(&sample(&raw));
            expect.push(Owned::Sample(raw));
        }
        assert_eq!(drain(&mut r), expect);
        assert_eq!(h.tail(), h.head);
    }

    #[test]
    fn many_wraps_in_small_ring() {
        let mut h = HeapRing::new(256);
        let mut r = h.reader();
        let mut rng = crate::rng::Rng::new(1);
        for round in 0..2000u64 {
            let mut expect = Vec::new();
            let mut used = 0;
            loop {
                let len = rng.index(60);
                let raw: Vec<u8> = (0..len).map(|i| (i as u64 ^ round) as u8).collect();
                let rec = sample(&raw);
                if used + rec.len() > 256 - 24 {
                    break;
                }
                used += rec.len();
                h.push(&rec);
                expect.push(Owned::Sample(raw));
            }
            if round.is_multiple_of(7) {
                h.push(&lost(round, round * 3));
                expect.push(Owned::Lost(round * 3));
            }
            assert_eq!(drain(&mut r), expect, "round {round}");
            assert_eq!(h.tail(), h.head);
        }
        assert_eq!(r.corrupt(), 0);
    }

    #[test]
    fn header_split_across_end() {
        let mut h = HeapRing::new(256);
        h.start_at(256 - 4);
        let mut r = h.reader();
        h.push(&sample(b"split-header"));
        assert_eq!(drain(&mut r), vec![Owned::Sample(b"split-header".to_vec())]);
        assert_eq!(h.tail(), h.head);
        assert_eq!(r.corrupt(), 0);
    }

    #[test]
    fn payload_split_across_end() {
        // (start position, payload): header fits exactly and the size field
        // wraps; header and size fit and the payload wraps mid-way.
        let cases: [(u64, Vec<u8>); 2] = [
            (3 * 256 - 8, (0..40).collect()),
            (5 * 256 - 24, (100..130).collect()),
        ];
        for (start, raw) in cases {
            let mut h = HeapRing::new(256);
            h.start_at(start);
            let mut r = h.reader();
            h.push(&sample(&raw));
            h.push(&sample(b"next"));
            assert_eq!(
                drain(&mut r),
                vec![Owned::Sample(raw), Owned::Sample(b"next".to_vec())]
            );
            assert_eq!(h.tail(), h.head);
            assert_eq!(r.corrupt(), 0);
        }
    }

    #[test]
    fn lost_and_other_records() {
        let mut h = HeapRing::new(512);
        let mut r = h.reader();
        h.push(&lost(7, 42));
        let mut other = header(3, 16);
        other.extend_from_slice(&[0; 8]);
        h.push(&other);
        h.push(&sample(&[]));
        assert_eq!(
            drain(&mut r),
            vec![Owned::Lost(42), Owned::Other(3), Owned::Sample(vec![])]
        );
    }

    #[test]
    fn tail_advances_only_after_read() {
        let mut h = HeapRing::new(512);
        h.start_at(1000);
        let mut r = h.reader();
        h.push(&sample(b"a"));
        h.push(&sample(b"bcdefghijk"));
        assert_eq!(h.tail(), 1000);
        assert!(r.pending());
        assert_eq!(r.read(|_| {}), 2);
        assert_eq!(h.tail(), 1000 + 16 + 24);
        assert_eq!(h.tail(), h.head);
        assert_eq!(r.read(|_| {}), 0);
        assert_eq!(h.tail(), h.head);
    }

    #[test]
    fn corrupt_sizes_skip_to_head() {
        for bad in [0u16, 4, 7, 200, u16::MAX] {
            let mut h = HeapRing::new(128);
            let mut r = h.reader();
            let mut rec = header(PERF_RECORD_SAMPLE, bad);
            rec.resize(64, 0);
            h.push(&rec);
            assert_eq!(
                r.read(|_| panic!("corrupt record delivered")),
                0,
                "size {bad}"
            );
            assert_eq!(r.corrupt(), 1, "size {bad}");
            assert_eq!(h.tail(), h.head);
            assert!(!r.pending());
            // The reader recovers for subsequent records.
            h.push(&sample(b"ok"));
            assert_eq!(drain(&mut r), vec![Owned::Sample(b"ok".to_vec())]);
            assert_eq!(r.corrupt(), 1);
        }
    }

    #[test]
    fn malformed_bodies_are_skipped_individually() {
        let mut h = HeapRing::new(256);
        let mut r = h.reader();
        // Sample whose raw size exceeds the record.
        let mut s = header(PERF_RECORD_SAMPLE, 16);
        s.extend_from_slice(&100u32.to_ne_bytes());
        s.extend_from_slice(&[0; 4]);
        h.push(&s);
        // Sample too short for the size field; lost record too short.
        h.push(&header(PERF_RECORD_SAMPLE, 8));
        let mut l = header(PERF_RECORD_LOST, 16);
        l.extend_from_slice(&[0; 8]);
        h.push(&l);
        h.push(&sample(b"after"));
        assert_eq!(drain(&mut r), vec![Owned::Sample(b"after".to_vec())]);
        assert_eq!(r.corrupt(), 3);
        assert_eq!(h.tail(), h.head);
    }

    #[test]
    fn head_too_far_ahead_is_corrupt() {
        let mut h = HeapRing::new(128);
        let mut r = h.reader();
        h.push(&sample(b"x"));
        h.head += 1000;
        h.put(DATA_HEAD_OFF, h.head);
        assert_eq!(r.read(|_| {}), 0);
        assert_eq!(r.corrupt(), 1);
        assert_eq!(h.tail(), h.head);
        // Head behind tail (wrapped difference is huge).
        h.put(DATA_HEAD_OFF, h.head - 8);
        assert_eq!(r.read(|_| {}), 0);
        assert_eq!(r.corrupt(), 2);
        // Fewer than 8 bytes available.
        h.start_at(0);
        h.put(DATA_HEAD_OFF, 4);
        assert_eq!(r.read(|_| {}), 0);
        assert_eq!(r.corrupt(), 3);
        assert_eq!(h.tail(), 4);
    }

    #[test]
    fn zero_metadata_falls_back_to_page_size() {
        let mut h = HeapRing::with_fields(1024, false);
        let mut r = h.reader();
        assert_eq!(r.data_size(), 1024);
        h.push(&sample(b"legacy"));
        assert_eq!(drain(&mut r), vec![Owned::Sample(b"legacy".to_vec())]);
    }

    #[test]
    fn invalid_metadata_gives_inert_reader() {
        for (off, size) in [
            (PAGE as u64, 1000u64),
            (PAGE as u64, 8192),
            (8, 1024),
            (u64::MAX, 1024),
        ] {
            let mut h = HeapRing::new(1024);
            h.put(DATA_OFFSET_OFF, off);
            h.put(DATA_SIZE_OFF, size);
            let mut r = h.reader();
            assert_eq!(r.data_size(), 0);
            h.push(&sample(b"x"));
            assert!(!r.pending());
            assert_eq!(r.read(|_| {}), 0);
        }
        // SAFETY: a null base is rejected before any access.
        let mut r = unsafe { RingReader::from_raw(ptr::null_mut(), 0, PAGE) };
        assert_eq!(r.read(|_| {}), 0);
        assert!(!r.pending());
    }

    /// A fuzz input whose data area is tiled with plausible records and whose
    /// tail/head land on record boundaries (possibly wrapping the end).
    fn structured_input(next: &mut impl FnMut() -> u64) -> (Vec<u8>, usize) {
        let sel = (next() % 6) as u8;
        let ds = 8usize << sel;
        let mut body = Vec::new();
        let mut starts = Vec::new();
        while body.len() < ds {
            starts.push(body.len());
            let r = next();
            let ty = [PERF_RECORD_SAMPLE, PERF_RECORD_LOST, 3][(r % 3) as usize];
            let size = if r.is_multiple_of(31) {
                (r >> 8) as u16
            } else {
                (((r >> 8) % 8 + 1) * 8) as u16
            };
            let mut rec = header(ty, size);
            let raw_len = if r.is_multiple_of(13) {
                r >> 20
            } else {
                (r >> 20) % 8
            };
            rec.extend_from_slice(&(raw_len as u32).to_ne_bytes());
            rec.resize(usize::from(size).max(12), (r >> 40) as u8);
            body.extend_from_slice(&rec);
        }
        body.truncate(ds);
        let rot = starts[(next() % starts.len() as u64) as usize];
        let end = starts[(next() % starts.len() as u64) as usize];
        let mut delta = ((end + ds - rot) % ds) as u64;
        if delta == 0 && next().is_multiple_of(2) {
            delta = ds as u64;
        }
        let tail = (next() & !(ds as u64 - 1)) + rot as u64;
        let mut input = vec![sel, 0];
        input.extend_from_slice(&tail.to_le_bytes());
        input.extend_from_slice(&delta.to_le_bytes());
        input.extend_from_slice(&body);
        (input, starts.len())
    }

    #[test]
    fn fuzz_random_inputs() {
        let mut rng = crate::rng::Rng::new(0x9E37_79B9_7F4A_7C15);
        let mut next = || rng.next_u64();
        fuzz_one(&[]);
        fuzz_one(&[0xff; 64]);
        let mut delivered = 0usize;
        for i in 0..100_000u32 {
            let input = if i % 2 == 0 {
                structured_input(&mut next).0
            } else {
                let len = (next() % 300) as usize;
                (0..len).map(|_| next() as u8).collect()
            };
            // fuzz_one is exactly fuzz_inner without the result.
            let (n, pending) = fuzz_inner(&input);
            delivered += n;
            assert!(!pending, "reader left data pending for input {input:?}");
        }
        assert!(delivered > 10_000, "fuzz inputs too shallow: {delivered}");
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn real_ring_opens() {
        if !is_root() {
            eprintln!("skipping real_ring_opens: needs root");
            return;
        }
        let mut ring = PerfRing::open_bpf_output(0, 8, 1).expect("open BPF_OUTPUT ring");
        assert_eq!(ring.cpu(), 0);
        assert!(ring.reader.data_size() == 8 * page_size().unwrap());
        assert!(!ring.pending());
        assert_eq!(ring.read(|_| {}), 0);
        assert_eq!(ring.corrupt(), 0);

        let mut poll = mio::Poll::new().unwrap();
        poll.registry()
            .register(&mut ring, mio::Token(0), mio::Interest::READABLE)
            .unwrap();
        let mut events = mio::Events::with_capacity(4);
        poll.poll(&mut events, Some(std::time::Duration::from_millis(10)))
            .unwrap();
        assert!(events.is_empty());
        poll.registry().deregister(&mut ring).unwrap();

        let clock = open_cpu_clock(0, 99).expect("open cpu-clock");
        assert!(clock.as_raw_fd() >= 0);
    }

    #[test]
    fn real_rings_all_cpus_and_errors() {
        if !is_root() {
            eprintln!("skipping real_rings_all_cpus_and_errors: needs root");
            return;
        }
        let mut rings = PerfRings::open_bpf_output_all(1, 1).expect("open all");
        assert_eq!(rings.len(), online_cpus().unwrap().len());
        assert!(!rings.is_empty());
        for ring in rings.iter_mut() {
            assert_eq!(ring.read(|_| {}), 0);
            assert!(ring.as_fd().as_raw_fd() >= 0);
        }
        let cpus: Vec<u32> = rings.iter().map(PerfRing::cpu).collect();
        assert_eq!(cpus, online_cpus().unwrap());

        let e = PerfRing::open_bpf_output(0, 3, 1).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = PerfRing::open_bpf_output(4095, 1, 1).err().unwrap();
        let errno = errno_of(&e).expect("errno kept");
        assert!(errno == libc::EINVAL || errno == libc::ENODEV, "{e}");
        assert!(
            e.to_string()
                .contains("perf_event_open(BPF_OUTPUT, cpu 4095)"),
            "{e}"
        );
        assert!(open_cpu_clock(0, 0).is_err());
    }
}
