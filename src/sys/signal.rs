//! Signals: the agent's signalfd, blocking the signals it takes, SIGPIPE,
//! and sending a signal to another process.

use super::SysError;
use nix::sys::signal::{SigSet, SIGHUP, SIGINT, SIGTERM};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// The signals the agent takes through its signalfd.
fn agent_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in [SIGINT, SIGTERM, SIGHUP] {
        set.add(s);
    }
    set
}

/// Restores the default SIGPIPE action, so writing to a closed pipe ends
/// the process quietly like any command-line tool instead of an EPIPE
/// error on every print.
pub fn default_sigpipe() {
    // SAFETY: installing the default disposition of one signal, before any
    // thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and the threads and
/// children it creates, until they unblock them), so the agent can take
/// them through its signalfd. Call before any thread exists.
pub fn block_agent_signals() -> Result<(), SysError> {
    agent_set()
        .thread_block()
        .map_err(|e| SysError::new("pthread_sigmask", "SIGINT SIGTERM SIGHUP", e as i32))
}

/// A non-blocking signalfd for SIGINT, SIGTERM and SIGHUP.
pub struct AgentSignals(SignalFd);

impl AgentSignals {
    /// `signalfd(-1, {SIGINT, SIGTERM, SIGHUP}, SFD_NONBLOCK | SFD_CLOEXEC)`.
    pub fn open() -> Result<AgentSignals, SysError> {
        SignalFd::with_flags(&agent_set(), SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map(AgentSignals)
            .map_err(|e| SysError::new("signalfd", "SIGINT SIGTERM SIGHUP", e as i32))
    }

    /// The next pending signal's number; `None` when none is pending.
    pub fn pending_signal(&mut self) -> Option<i32> {
        match self.0.read_signal() {
            Ok(Some(info)) => Some(info.ssi_signo as i32),
            _ => None,
        }
    }
}

impl AsFd for AgentSignals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for AgentSignals {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// `kill(pid, SIGTERM)`.
pub fn terminate(pid: u32) -> Result<(), SysError> {
    let p = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(p, SIGTERM)
        .map_err(|e| SysError::new("kill", format!("pid {pid} (SIGTERM)"), e as i32))
}

/// `kill(-pgid, sig)`: `sig` to every process of the group `pgid`; when
/// the group is gone (ESRCH: its members left it) to `pgid` itself.
pub fn signal_group(pgid: u32, sig: i32) -> Result<(), SysError> {
    // SAFETY: kill takes two integers.
    if unsafe { libc::kill(-(pgid as libc::pid_t), sig) } == 0 {
        return Ok(());
    }
    let group = SysError::last("kill", format!("process group {pgid} (signal {sig})"));
    if group.errno() != libc::ESRCH {
        return Err(group);
    }
    // SAFETY: kill takes two integers.
    if unsafe { libc::kill(pgid as libc::pid_t, sig) } == 0 {
        return Ok(());
    }
    Err(SysError::last("kill", format!("pid {pgid} (signal {sig})")))
}
