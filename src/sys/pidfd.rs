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

/// `struct pidfd_info` of PIDFD_GET_INFO (Linux 6.13), its first version
/// (64 bytes).
#[repr(C)]
#[derive(Default)]
struct PidfdInfo {
    mask: u64,
    cgroupid: u64,
    pid: u32,
    tgid: u32,
    ppid: u32,
    ruid: u32,
    rgid: u32,
    euid: u32,
    egid: u32,
    suid: u32,
    sgid: u32,
    fsuid: u32,
    fsgid: u32,
    exit_code: i32,
}

/// `_IOWR(PIDFS_IOCTL_MAGIC, 11, struct pidfd_info)`.
const PIDFD_GET_INFO: u64 = (3 << 30) | (64 << 16) | (0xFF << 8) | 11;
const PIDFD_INFO_CREDS: u64 = 1 << 1;

/// The real uid of the process of `fd`, from PIDFD_GET_INFO (Linux 6.13):
/// one ioctl instead of opening and reading /proc/PID/status. `None` on an
/// older kernel or once the process has exited.
/// <https://man7.org/linux/man-pages/man2/pidfd_open.2.html>
pub fn real_uid(fd: BorrowedFd<'_>) -> Option<u32> {
    use std::os::fd::AsRawFd;
    const _: () = assert!(std::mem::size_of::<PidfdInfo>() == 64);
    let mut info = PidfdInfo {
        mask: PIDFD_INFO_CREDS,
        ..Default::default()
    };
    // SAFETY: the ioctl writes at most size_of::<PidfdInfo>() bytes (the
    // size encoded in the request) into a live local.
    let r = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            PIDFD_GET_INFO as libc::Ioctl,
            &mut info as *mut PidfdInfo,
        )
    };
    (r == 0 && info.mask & PIDFD_INFO_CREDS != 0).then_some(info.ruid)
}

/// The inode of a pidfd: on pidfs (Linux 6.9) the inode of its process's
/// struct pid, unique for the boot (a reused pid number has another).
pub fn inode(fd: BorrowedFd<'_>) -> Option<u64> {
    use std::os::fd::AsRawFd;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat writes a whole struct stat into the live local on
    // success, and only then is it read.
    unsafe {
        if libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) != 0 {
            return None;
        }
        Some(st.assume_init().st_ino)
    }
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
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_real_uid_comes_from_the_pidfd_since_6_13() {
        let fd = pidfd_open(std::process::id()).expect("pidfd_open of ourselves");
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut v = release
            .split(['.', '-'])
            .map(|n| n.parse::<u32>().unwrap_or(0));
        let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
        match real_uid(fd.as_fd()) {
            Some(u) => assert_eq!(u, crate::sys::process::uid()),
            None => assert!((major, minor) < (6, 13), "PIDFD_GET_INFO on {release}"),
        }
    }
}
