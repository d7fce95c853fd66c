//! The command of `-- CMD` once it runs: the leader of its own process
//! group, watched through a pidfd of its own (so its end wakes the loop
//! even when it is not tracked). Signals pidmap takes are forwarded to
//! its group; a command still running [`GRACE`] after the first one (or
//! after the end of `--duration`) gets SIGKILL with its whole group.
//! Whatever ends the agent first, dropping this ends the command: no path
//! leaves it running (and `PR_SET_PDEATHSIG` covers a SIGKILL of pidmap).

use super::rings::COMMAND;
use super::{Agent, Ended};
use crate::error::{Error, Result};
use crate::sys::pidfd;
use crate::sys::process as sysproc;
use crate::sys::signal::signal_group;
use mio::unix::SourceFd;
use mio::Interest;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
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

impl Agent {
    /// Starts `-- CMD`: forked at its gate, tracked, then released to
    /// exec. `Ok(false)` when it could not be executed: the run ends at
    /// once, with a shell's status (127 not found, else 126) and the cause.
    pub(super) fn start_command(&mut self, argv: &[std::ffi::OsString]) -> Result<bool> {
        let gated = sysproc::spawn_gated(argv)?;
        let pid = gated.pid;
        let fd = crate::sys::pidfd::pidfd_open(pid)?;
        self.poll
            .registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), COMMAND, Interest::READABLE)
            .map_err(|e| Error::from(e).context("epoll_ctl(pidfd of the command)"))?;
        self.sync(pid);
        let e = match gated.release() {
            Ok(_) => {
                self.child = Some(ChildCommand::new(pid, fd));
                return Ok(true);
            }
            Err(e) => e,
        };
        // it has exited and is reaped: its keys go now
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&fd.as_raw_fd()));
        self.exit(pid);
        self.bury_all();
        let (code, what) = match e.errno() {
            libc::ENOENT if !e.object.contains('/') => (127, "was not found in PATH"),
            libc::ENOENT => (127, "was not found"),
            _ => (126, "cannot be executed"),
        };
        let ended = self.ended.get_or_insert_with(Ended::default);
        ended.exit_code = Some(code);
        ended.not_started = Some(format!("the command {} {what}: {e}", e.object));
        Ok(false)
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
