//! The command of `-- CMD` once it runs: the leader of its own process
//! group, watched through a pidfd of its own (so its end wakes the loop
//! even when it is not tracked). Signals pidmap takes are forwarded to
//! its group; a command still running [`GRACE`] after the first one (or
//! after the end of `--duration`) gets SIGKILL with its whole group.
//! Whatever ends the agent first, dropping this ends the command: no path
//! leaves it running (and `PR_SET_PDEATHSIG` covers a SIGKILL of pidmap).

use crate::sys::pidfd;
use crate::sys::process as sysproc;
use crate::sys::signal::signal_group;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long the command has to end after a forwarded signal (or the end
/// of `--duration`) before its process group gets SIGKILL; and, after
/// that SIGKILL, before pidmap stops waiting for it.
pub const GRACE: Duration = Duration::from_secs(5);

pub(super) struct ChildCommand {
    pid: u32,
    pidfd: OwnedFd,
    /// When the group gets SIGKILL if the command still runs.
    kill_at: Option<Instant>,
    /// When pidmap stops waiting for a command that survived SIGKILL.
    give_up_at: Option<Instant>,
    /// Its exit status once reaped (128 + signal when killed by one).
    status: Option<i32>,
}

impl ChildCommand {
    pub(super) fn new(pid: u32, pidfd: OwnedFd) -> ChildCommand {
        ChildCommand {
            pid,
            pidfd,
            kill_at: None,
            give_up_at: None,
            status: None,
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `sig` to the command's process group (not once it is reaped:
    /// its number may belong to another process then) and starts the
    /// grace period, if not started yet.
    pub(super) fn forward(&mut self, sig: i32, now: Instant) {
        if self.status.is_some() {
            return;
        }
        if let Err(e) = signal_group(self.pid, sig) {
            log::warn!("forwarding signal {sig} to the command: {e}");
        }
        if self.kill_at.is_none() && self.give_up_at.is_none() {
            log::info!(
                "signal {sig} forwarded to the command's process group {}: waiting for it \
                 (SIGKILL in {} s)",
                self.pid,
                GRACE.as_secs()
            );
            self.kill_at = Some(now + GRACE);
        }
    }

    /// Whether the command has been asked to end (a forwarded signal, the
    /// end of `--duration`).
    pub(super) fn ending(&self) -> bool {
        self.kill_at.is_some() || self.give_up_at.is_some()
    }

    /// When the loop must turn for this command at the latest.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.status.is_some() {
            return None;
        }
        self.kill_at.or(self.give_up_at)
    }

    /// At the end of the grace period: SIGKILL to the group. Returns true
    /// when pidmap should stop waiting (the command survived SIGKILL for
    /// a grace period too).
    pub(super) fn on_time(&mut self, now: Instant) -> bool {
        if self.status.is_some() {
            return false;
        }
        if self.kill_at.is_some_and(|at| now >= at) {
            log::warn!(
                "the command (pid {}) still runs {} s after the signal: SIGKILL to its process group",
                self.pid,
                GRACE.as_secs()
            );
            if let Err(e) = signal_group(self.pid, libc::SIGKILL) {
                log::warn!("{e}");
            }
            self.kill_at = None;
            self.give_up_at = Some(now + GRACE);
        }
        if self.give_up_at.is_some_and(|at| now >= at) {
            log::warn!(
                "the command (pid {}) did not end {} s after SIGKILL: not waiting for it",
                self.pid,
                GRACE.as_secs()
            );
            return true;
        }
        false
    }

    /// Its status, reaping it if it has ended.
    pub(super) fn reap(&mut self) -> Option<i32> {
        if self.status.is_none() {
            self.status = sysproc::try_wait(self.pid);
        }
        self.status
    }
}

impl AsRawFd for ChildCommand {
    fn as_raw_fd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }
}

impl Drop for ChildCommand {
    /// The agent ends before the command: its group gets SIGKILL and the
    /// command is reaped (waiting at most [`GRACE`]).
    fn drop(&mut self) {
        if self.reap().is_some() {
            return;
        }
        log::info!(
            "ending the command (pid {}) and its process group",
            self.pid
        );
        if let Err(e) = signal_group(self.pid, libc::SIGKILL) {
            log::warn!("{e}");
        }
        let end = Instant::now() + GRACE;
        while !pidfd::exited_within(
            self.pidfd.as_fd(),
            end.saturating_duration_since(Instant::now()),
        ) {
            if Instant::now() >= end {
                log::warn!("the command (pid {}) did not end after SIGKILL", self.pid);
                return;
            }
        }
        self.reap();
    }
}
