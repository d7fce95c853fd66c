//! pidfd_open(2) and the liveness probes built on it.

use super::SysError;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};

/// pidfd_open(2) (`syscall(SYS_pidfd_open, pid, 0)`, Linux 5.3): an fd that
/// turns readable when the whole thread group of `pid` has exited.
/// <https://man7.org/linux/man-pages/man2/pidfd_open.2.html>
pub fn pidfd_open(pid: u32) -> Result<OwnedFd, SysError> {
    #[cfg(test)]
    if let Some(r) = super::fake::pidfd::open(pid) {
        return r.map_err(|errno| SysError::new("pidfd_open", format!("pid {pid}"), errno));
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
