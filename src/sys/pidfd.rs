//! pidfd_open(2) and the liveness probes built on it.

use super::SysError;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

/// pidfd_open(2) (`syscall(SYS_pidfd_open, pid, 0)`, Linux 5.3): an fd that
/// turns readable when the whole thread group of `pid` has exited.
/// <https://man7.org/linux/man-pages/man2/pidfd_open.2.html>
pub fn pidfd_open(pid: u32) -> Result<OwnedFd, SysError> {
    #[cfg(test)]
    if let Some(errno) = fake::forced_errno() {
        return Err(SysError::new("pidfd_open", format!("pid {pid}"), errno));
    }
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if r < 0 {
        return Err(SysError::last("pidfd_open", format!("pid {pid}")));
    }
    // SAFETY: a successful pidfd_open returns a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

/// Whether a pidfd is readable now (its process has exited):
/// `poll(fd, POLLIN, 0)`.
pub fn exited(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Whether a pidfd turns readable (its process exits) within `timeout`:
/// `poll(fd, POLLIN, timeout)`, at most a minute; false on EINTR.
pub fn exited_within(fd: BorrowedFd<'_>, timeout: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let timeout = timeout.min(std::time::Duration::from_secs(60));
    let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::ZERO);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, t), Ok(n) if n > 0)
}

#[cfg(test)]
pub mod fake {
    use std::cell::Cell;
    thread_local! {
        static FORCED: Cell<Option<i32>> = const { Cell::new(None) };
    }
    /// Makes this thread's pidfd_open fail with `errno` (ENOSYS: < 5.3).
    pub fn force_errno(errno: Option<i32>) {
        FORCED.with(|f| f.set(errno));
    }
    pub(super) fn forced_errno() -> Option<i32> {
        FORCED.with(|f| f.get())
    }
}
