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

/// Whether `pid` exists (kill(pid, 0); EPERM still means it exists).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a pidfd is readable now (its process has exited):
/// `poll(fd, POLLIN, 0)`.
pub fn exited(fd: BorrowedFd<'_>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
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
