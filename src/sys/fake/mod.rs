//! The fake kernel of the unit tests, one per test thread, one module per
//! kernel object it fakes:
//! - [`bpf`]: BPF maps in memory behind the bpf(2) dispatch, with the
//!   answers old or unhappy kernels give;
//! - [`pidfd`]: pidfds a test makes readable ("the process exited")
//!   without the process exiting, or pidfd_open failing as before 5.3;
//! - [`perf`]: perf_event_open, the ring's mmap and its enable ioctl, with
//!   a writer side through which a test puts samples and lost counts into
//!   a ring, as the kernel would;
//! - [`open`]: openat2 missing, as before 5.6;
//! - [`features`]: a BPF helper or program type missing from libbpf's
//!   probes, as on a kernel too old for it.
//!
//! Each object is faked from its `install` until [`reset`] (or its own
//! `uninstall`); until then the real kernel answers. The fake is reached
//! through the same functions the production code calls (`sys_bpf`,
//! `pidfd_open`, `perf_event_open`, ...), each asking it first under
//! `cfg(test)`: the layers above have no second code path for tests.

pub mod bpf;
pub mod features;
pub mod open;
pub mod perf;
pub mod pidfd;

pub use bpf::{FakeBatch, FakeMap};

use std::os::fd::{FromRawFd, OwnedFd};

/// Turns every fake object of this thread off (the real kernel answers
/// again); fds the fakes handed out stay valid.
pub fn reset() {
    bpf::uninstall();
    pidfd::uninstall();
    perf::uninstall();
    open::openat2_missing_on(false);
    features::uninstall();
}

/// A new non-blocking eventfd: what the fakes hand out for fds the code
/// polls (pidfds, perf events), made readable by a write.
fn eventfd() -> OwnedFd {
    // SAFETY: eventfd takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(
        fd >= 0,
        "fake kernel: eventfd: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a new fd nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Makes an eventfd readable (its counter goes up by one).
fn signal(fd: &OwnedFd) {
    use std::io::Write;
    let mut f = std::fs::File::from(fd.try_clone().expect("fake kernel: dup of an eventfd"));
    f.write_all(&1u64.to_ne_bytes())
        .expect("fake kernel: write to an eventfd");
}

/// Whether a unit test that lacks what it needs (root, gcc) may skip:
/// only when PIDMAP_SKIP_KERNEL_TESTS=1 asks for it outside CI; else the
/// test fails saying what it lacked, so nothing missing reads as a pass.
pub fn may_skip(what: &str) -> bool {
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
    let asked = std::env::var("PIDMAP_SKIP_KERNEL_TESTS").is_ok_and(|v| v == "1");
    if ci || !asked {
        panic!(
            "{what}: run the tests as root with gcc installed (scripts/setup); \
             PIDMAP_SKIP_KERNEL_TESTS=1 skips them on purpose (ignored when CI is set)"
        );
    }
    eprintln!("SKIPPED (PIDMAP_SKIP_KERNEL_TESTS=1): {what}");
    true
}
