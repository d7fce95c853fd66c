//! Every system call of pidmap, and all of its `unsafe`.
//!
//! Each family goes through one dispatch function (`bpf::sys_bpf`,
//! `pidfd::pidfd_open`, `perf_event::perf_event_open`, ...) so unit tests
//! can replace the kernel with the fake in `fake/` (one module per kernel
//! object). Errors name the call and the object and keep the errno.

pub mod bpf;
pub mod caps;
#[cfg(test)]
pub(crate) mod fake;
pub mod features;
pub(crate) mod fs;
pub mod object;
pub(crate) mod perf_event;
pub mod perf_ring;
pub(crate) mod pidfd;
pub(crate) mod pread;
pub(crate) mod process;
pub(crate) mod procmap;
pub mod safe_open;
pub(crate) mod sched;
pub mod signal;

use std::fmt;
use std::io;

/// A failed system call: which call, on which object, and the errno.
#[derive(Debug)]
pub struct SysError {
    pub call: &'static str,
    pub object: String,
    pub source: io::Error,
}

impl SysError {
    pub fn new(call: &'static str, object: impl Into<String>, errno: i32) -> SysError {
        SysError {
            call,
            object: object.into(),
            source: io::Error::from_raw_os_error(errno),
        }
    }

    pub fn last(call: &'static str, object: impl Into<String>) -> SysError {
        SysError {
            call,
            object: object.into(),
            source: io::Error::last_os_error(),
        }
    }

    /// A call refused before the kernel saw it: `kind` and `msg` say why.
    pub fn invalid(
        call: &'static str,
        object: impl Into<String>,
        kind: io::ErrorKind,
        msg: impl Into<String>,
    ) -> SysError {
        SysError {
            call,
            object: object.into(),
            source: io::Error::new(kind, msg.into()),
        }
    }

    pub fn errno(&self) -> i32 {
        self.source.raw_os_error().unwrap_or(0)
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.object.is_empty() {
            write!(f, "{}: {}", self.call, self.source)
        } else {
            write!(f, "{} on {}: {}", self.call, self.object, self.source)
        }
    }
}

impl std::error::Error for SysError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl From<SysError> for io::Error {
    fn from(e: SysError) -> io::Error {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

/// ENOTSUPP (524): kernel-internal, no libc name; what a map type without
/// batch operations answers.
pub const ENOTSUPP: i32 = 524;

/// Types that are plain bytes: no padding the kernel could leak into, no
/// pointers, every bit pattern valid.
///
/// # Safety
/// Implement only for `#[repr(C)]` types without padding whose every bit
/// pattern is a valid value.
pub unsafe trait Plain: Copy + 'static {}

// SAFETY: integers have no padding and accept every bit pattern.
unsafe impl Plain for u8 {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: as above.
unsafe impl Plain for u64 {}

// SAFETY: the ABI mirrors of bpf/pidmap.h are repr(C) structs of integer
// fields laid out without padding (sizes and offsets tested in abi.rs).
unsafe impl Plain for crate::abi::PidPage {}
// SAFETY: as above.
unsafe impl Plain for crate::abi::MappingInfo {}
// SAFETY: as above.
unsafe impl Plain for crate::abi::Config {}
// SAFETY: as above.
unsafe impl Plain for crate::abi::SampleHeader {}
// SAFETY: as above.
unsafe impl Plain for crate::abi::SampleFrame {}
// SAFETY: as above.
unsafe impl Plain for crate::abi::RequestState {}
// SAFETY: repr(C), integers only, no padding (16 bytes).
unsafe impl Plain for crate::abi::UnwindPageKey {}
// SAFETY: repr(C), integers only, no padding (8 + 256 + 512 bytes).
unsafe impl Plain for crate::abi::UnwindPage {}
// SAFETY: repr(C), two u32, no padding.
unsafe impl Plain for crate::abi::UnwindFile {}
// SAFETY: repr(C), four 32-bit integers, no padding (16 bytes).
unsafe impl Plain for crate::abi::VmaQuery {}
// SAFETY: repr(C), four u64 and two u32, no padding (40 bytes).
unsafe impl Plain for crate::abi::VmaEntry {}

/// The bytes of a slice of plain values.
pub fn bytes_of<T: Plain>(v: &[T]) -> &[u8] {
    // SAFETY: T is Plain (no padding), so every byte of the slice is
    // initialised; the length is the slice's size in bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// The bytes of a mutable slice of plain values.
pub fn bytes_of_mut<T: Plain>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: T is Plain, so any bytes written form valid values.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Reads a plain value from the front of `bytes`, if long enough.
pub fn read_plain<T: Plain>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked above; T accepts every bit pattern and
    // read_unaligned has no alignment requirement.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}
