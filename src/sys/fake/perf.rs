//! The fake kernel's perf events: `perf_event_open` answers with an fd
//! (an eventfd, so epoll and mio watch it as they would a perf event), the
//! ring's mmap with shared memory the fake keeps a second view of, and
//! the enable ioctl with a flag. Through that view a test writes into a
//! ring what the kernel would: samples, records the kernel drops when the
//! ring is full (counted, then reported in a `PERF_RECORD_LOST` ahead of
//! the next record that fits), and the wake-up every `wakeup_events`
//! records. The layout is the kernel's (`struct perf_event_mmap_page`),
//! written here from the ABI, not from the reader's constants, so a reader
//! that misreads it fails against the fake.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::perf_event::PerfEventAttr;

/// `perf_event_mmap_page`: data_head, data_tail, data_offset, data_size.
const HEAD: usize = 1024;
const TAIL: usize = 1032;
const DATA_OFFSET: usize = 1040;
const DATA_SIZE: usize = 1048;
/// `perf_event_header.type`.
pub const RECORD_LOST: u32 = 2;
pub const RECORD_SAMPLE: u32 = 9;

/// What a test sees of one opened event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub cpu: u32,
    /// `perf_event_attr.type` and `.config`.
    pub type_: u32,
    pub config: u64,
    pub sample_type: u64,
    /// `sample_period` or `sample_freq` (by `freq` in the flags).
    pub period_or_freq: u64,
    pub flags: u64,
    pub wakeup_events: u32,
    /// PERF_EVENT_IOC_ENABLE was asked.
    pub enabled: bool,
    /// The ring was mapped.
    pub mapped: bool,
}

/// The writer's view of a mapped ring.
struct Ring {
    _memfd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
    data: usize,
    size: u64,
    /// Records dropped for want of room, not yet reported.
    lost: u64,
    /// Records written since the last wake-up.
    since_wake: u32,
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: base/len are the writer's own mapping, made in `mmap`
        // and unmapped only here.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl Ring {
    fn word(&self, off: usize) -> &AtomicU64 {
        // SAFETY: off + 8 <= the metadata page, inside the mapping, which
        // is page aligned and lives as long as self.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off).cast::<u64>()) }
    }

    fn room(&self) -> u64 {
        let head = self.word(HEAD).load(Ordering::Relaxed);
        let tail = self.word(TAIL).load(Ordering::Acquire);
        self.size - head.wrapping_sub(tail)
    }

    /// Copies `rec` at data_head (wrapping at the end of the data area)
    /// and publishes the new head.
    fn put(&mut self, rec: &[u8]) {
        let head = self.word(HEAD).load(Ordering::Relaxed);
        for (i, b) in rec.iter().enumerate() {
            let off = (head + i as u64) & (self.size - 1);
            // SAFETY: off < size: inside the data area of the mapping.
            unsafe { *self.base.as_ptr().add(self.data + off as usize) = *b };
        }
        self.word(HEAD)
            .store(head + rec.len() as u64, Ordering::Release);
    }

    /// As the kernel's output: a pending lost count goes first; a record
    /// that does not fit is dropped and counted.
    fn output(&mut self, rec: &[u8]) -> bool {
        let lost = (self.lost > 0).then(|| lost_record(self.lost));
        let need = rec.len() + lost.as_ref().map_or(0, Vec::len);
        if (need as u64) > self.room() {
            self.lost += 1;
            return false;
        }
        if let Some(l) = lost {
            self.put(&l);
            self.lost = 0;
        }
        self.put(rec);
        true
    }
}

struct Event {
    fd: RawFd,
    /// A duplicate of the fd handed out, to signal it through.
    dup: OwnedFd,
    opened: Opened,
    ring: Option<Ring>,
}

thread_local! {
    static PERF: RefCell<Option<Vec<Event>>> = const { RefCell::new(None) };
}

/// From now on this thread's perf_event_open, ring mmap and enable ioctl
/// are answered by the fake.
pub fn install() {
    PERF.with(|p| *p.borrow_mut() = Some(Vec::new()));
}

/// The real kernel answers again; fake rings stay readable.
pub fn uninstall() {
    PERF.with(|p| {
        // the rings' writer views go; the readers' mappings are theirs
        p.borrow_mut().take();
    });
}

/// Every event opened since [`install`], in order.
pub fn opened() -> Vec<Opened> {
    PERF.with(|p| {
        p.borrow()
            .as_ref()
            .map(|v| v.iter().map(|e| e.opened.clone()).collect())
            .unwrap_or_default()
    })
}

fn with_event<R>(fd: BorrowedFd<'_>, f: impl FnOnce(&mut Event) -> R) -> R {
    PERF.with(|p| {
        let mut p = p.borrow_mut();
        let events = p.as_mut().expect("fake perf not installed");
        // the latest event of that number: an earlier one may be closed
        let e = events
            .iter_mut()
            .rev()
            .find(|e| e.fd == fd.as_raw_fd())
            .expect("not a fake perf event fd");
        f(e)
    })
}

/// A `PERF_RECORD_SAMPLE` with `PERF_SAMPLE_RAW` carrying `raw`, laid out
/// as the kernel does (header, u32 size, raw bytes, padding to 8).
pub fn sample_record(raw: &[u8]) -> Vec<u8> {
    let size = (8 + 4 + raw.len()).next_multiple_of(8);
    let mut v = header(RECORD_SAMPLE, size);
    v.extend_from_slice(&(raw.len() as u32).to_ne_bytes());
    v.extend_from_slice(raw);
    v.resize(size, 0);
    v
}

/// A `PERF_RECORD_LOST` of `n` records.
pub fn lost_record(n: u64) -> Vec<u8> {
    let mut v = header(RECORD_LOST, 24);
    v.extend_from_slice(&0u64.to_ne_bytes()); // id
    v.extend_from_slice(&n.to_ne_bytes());
    v
}

fn header(ty: u32, size: usize) -> Vec<u8> {
    let mut v = ty.to_ne_bytes().to_vec();
    v.extend_from_slice(&0u16.to_ne_bytes()); // misc
    v.extend_from_slice(&(size as u16).to_ne_bytes());
    v
}

/// The kernel outputs `rec` (a whole record) into the ring of the event
/// `fd`: written if it fits, else dropped and counted as lost. Wakes the
/// poller every `wakeup_events` records. Returns whether it was written.
pub fn output(fd: BorrowedFd<'_>, rec: &[u8]) -> bool {
    with_event(fd, |e| {
        let ring = e
            .ring
            .as_mut()
            .expect("the ring of this event is not mapped");
        let written = ring.output(rec);
        if written {
            ring.since_wake += 1;
            if ring.since_wake >= e.opened.wakeup_events.max(1) {
                ring.since_wake = 0;
                super::signal(&e.dup);
            }
        }
        written
    })
}

/// [`output`] of a sample carrying `raw`.
pub fn output_sample(fd: BorrowedFd<'_>, raw: &[u8]) -> bool {
    output(fd, &sample_record(raw))
}

/// The kernel dropped `n` records of the event `fd` (as when the BPF
/// side's output found the ring full): they are reported ahead of the next
/// record written.
pub fn drop_records(fd: BorrowedFd<'_>, n: u64) {
    with_event(fd, |e| {
        e.ring
            .as_mut()
            .expect("the ring of this event is not mapped")
            .lost += n
    })
}

/// Wakes the poller of the event `fd` now (as the kernel does at the
/// watermark or on close).
pub fn wake(fd: BorrowedFd<'_>) {
    with_event(fd, |e| super::signal(&e.dup))
}

/// The fake's answer to perf_event_open, if the fake answers.
pub(in crate::sys) fn open(attr: &PerfEventAttr, cpu: u32) -> Option<Result<OwnedFd, i32>> {
    PERF.with(|p| {
        let mut p = p.borrow_mut();
        let events = p.as_mut()?;
        let fd = super::eventfd();
        let dup = match fd.try_clone() {
            Ok(d) => d,
            Err(e) => return Some(Err(e.raw_os_error().unwrap_or(libc::EIO))),
        };
        events.push(Event {
            fd: fd.as_raw_fd(),
            dup,
            opened: Opened {
                cpu,
                type_: attr.type_,
                config: attr.config,
                sample_type: attr.sample_type,
                period_or_freq: attr.sample_period_or_freq,
                flags: attr.flags,
                wakeup_events: attr.wakeup_events_or_watermark,
                enabled: false,
                mapped: false,
            },
            ring: None,
        });
        Some(Ok(fd))
    })
}

fn installed_for(fd: BorrowedFd<'_>) -> bool {
    PERF.with(|p| {
        p.borrow()
            .as_ref()
            .is_some_and(|v| v.iter().any(|e| e.fd == fd.as_raw_fd()))
    })
}

/// The fake's answer to PERF_EVENT_IOC_ENABLE on `fd`, if it is a fake
/// event.
pub(in crate::sys) fn enable(fd: BorrowedFd<'_>) -> Option<Result<(), i32>> {
    if !installed_for(fd) {
        return None;
    }
    with_event(fd, |e| e.opened.enabled = true);
    Some(Ok(()))
}

/// The fake's answer to `mmap(NULL, len, RW, MAP_SHARED, fd, 0)` on a
/// fake event: a shared mapping of `len` bytes whose metadata page says
/// where the data area is, as the kernel's. The caller unmaps it with
/// munmap as it would the kernel's.
pub(in crate::sys) fn mmap(
    fd: BorrowedFd<'_>,
    len: usize,
    page: usize,
) -> Option<Result<NonNull<u8>, i32>> {
    if !installed_for(fd) {
        return None;
    }
    Some(with_event(fd, |e| {
        let (ring, reader) = map_ring(len, page)?;
        e.ring = Some(ring);
        e.opened.mapped = true;
        Ok(reader)
    }))
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A memfd of `len` bytes mapped twice: the writer's view (kept in the
/// returned ring) and the reader's.
fn map_ring(len: usize, page: usize) -> Result<(Ring, NonNull<u8>), i32> {
    if len <= page || !(len - page).is_power_of_two() {
        return Err(libc::EINVAL);
    }
    // SAFETY: a NUL-terminated name and flags; returns a new fd or -1.
    let raw = unsafe { libc::memfd_create(c"fake-perf-ring".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(last_errno());
    }
    // SAFETY: a new fd nobody else owns.
    let memfd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate on an fd we own, with a length.
    if unsafe { libc::ftruncate(memfd.as_raw_fd(), len as libc::off_t) } < 0 {
        return Err(last_errno());
    }
    let mfd = memfd.as_raw_fd();
    let map = || {
        // SAFETY: a new shared mapping (addr NULL) of our memfd; it aliases
        // no Rust memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                mfd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            Err(last_errno())
        } else {
            NonNull::new(p.cast::<u8>()).ok_or(libc::EFAULT)
        }
    };
    let base = map()?;
    let ring = Ring {
        base,
        len,
        data: page,
        size: (len - page) as u64,
        lost: 0,
        since_wake: 0,
        _memfd: memfd,
    };
    ring.word(DATA_OFFSET).store(page as u64, Ordering::Relaxed);
    ring.word(DATA_SIZE).store(ring.size, Ordering::Relaxed);
    let reader = map()?;
    Ok((ring, reader))
}
