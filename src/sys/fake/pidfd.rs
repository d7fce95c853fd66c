//! The fake kernel's pidfds: `pidfd_open` answers with an fd the test
//! makes readable by [`exit`], as the kernel makes a pidfd readable when
//! the process exits, while the process itself stays as it is (so a test
//! can make a pid look exited, or reused, at any step of a sync). Or
//! `pidfd_open` fails with an errno ([`fail_with`], ENOSYS: before 5.3).
//! Pollers need no fake: the fds are eventfds, readable to poll(2) and
//! epoll alike once signalled.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};

#[derive(Default)]
struct Pidfds {
    /// Every fd handed out: the pid it was opened for, and a duplicate to
    /// signal it through (the caller owns the original).
    opened: Vec<(u32, OwnedFd)>,
}

enum Mode {
    Real,
    Fake(Pidfds),
    Fail(i32),
}

thread_local! {
    static PIDFDS: RefCell<Mode> = const { RefCell::new(Mode::Real) };
}

/// From now on this thread's pidfd_open answers with fake pidfds.
pub fn install() {
    PIDFDS.with(|p| *p.borrow_mut() = Mode::Fake(Pidfds::default()));
}

/// From now on this thread's pidfd_open fails with `errno` (ENOSYS: a
/// kernel before 5.3, EMFILE: out of fds).
pub fn fail_with(errno: i32) {
    PIDFDS.with(|p| *p.borrow_mut() = Mode::Fail(errno));
}

/// The real pidfd_open answers again.
pub fn uninstall() {
    PIDFDS.with(|p| *p.borrow_mut() = Mode::Real);
}

/// "The process `pid` exited": every fake pidfd opened for it turns
/// readable. Returns how many there were.
pub fn exit(pid: u32) -> usize {
    PIDFDS.with(|p| match &*p.borrow() {
        Mode::Fake(f) => {
            let mine: Vec<&OwnedFd> = f
                .opened
                .iter()
                .filter(|(p, _)| *p == pid)
                .map(|(_, fd)| fd)
                .collect();
            mine.iter().for_each(|fd| super::signal(fd));
            mine.len()
        }
        _ => panic!("fake pidfds not installed"),
    })
}

/// How many fake pidfds were opened for `pid`.
pub fn opened(pid: u32) -> usize {
    PIDFDS.with(|p| match &*p.borrow() {
        Mode::Fake(f) => f.opened.iter().filter(|(p, _)| *p == pid).count(),
        _ => 0,
    })
}

/// The fake's answer to pidfd_open(pid), if the fake answers.
pub(in crate::sys) fn open(pid: u32) -> Option<Result<OwnedFd, i32>> {
    PIDFDS.with(|p| match &mut *p.borrow_mut() {
        Mode::Real => None,
        Mode::Fail(errno) => Some(Err(*errno)),
        Mode::Fake(f) => {
            let fd = super::eventfd();
            let dup = fd
                .try_clone()
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
            Some(dup.map(|dup| {
                debug_assert_ne!(dup.as_raw_fd(), fd.as_raw_fd());
                f.opened.push((pid, dup));
                fd
            }))
        }
    })
}
