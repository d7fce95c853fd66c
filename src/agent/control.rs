//! The control API: commands into the loop from any thread, and the
//! agent run on a thread of its own.

use super::{Agent, AgentConfig, Ended};
use crate::counters::Snapshot;
use crate::error::{Error, Result};
use crate::maps::audit::AuditReport;
use crate::tracker::process::SyncOutcome;
use crossbeam_channel::Sender;
use mio::Waker;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The agent's state as the control API reports it.
#[derive(Clone, Debug, Default)]
pub struct Status {
    pub tracked: Vec<u32>,
    pub keys: usize,
    pub files: usize,
    pub file_refs: usize,
    /// Distinct files used by the mappings of tracked processes.
    pub files_in_use: usize,
    pub counters: Snapshot,
    pub pin_dir: PathBuf,
    /// The longest loop iteration so far (poll return to next poll).
    pub loop_max: Duration,
    pub loop_iterations: u64,
    /// Uids holding trie keys.
    pub uids: usize,
}

pub enum Command {
    Sync(u32, Sender<SyncOutcome>),
    Forget(u32, Sender<bool>),
    Status(Sender<Status>),
    Audit(Sender<Result<AuditReport>>),
    /// The unwind tables (None: the agent builds none).
    Unwind(Sender<Option<Result<super::unwind::UnwindView>>>),
    /// Waits of the tests (see [`hooks`](super::hooks)).
    #[cfg(any(test, feature = "test-hooks"))]
    Hook(super::hooks::Hook),
    Shutdown,
}

/// The control API: commands into the loop from any thread.
#[derive(Clone)]
pub struct AgentHandle {
    pub(super) tx: Sender<Command>,
    pub(super) waker: Arc<Waker>,
}

const REPLY: Duration = Duration::from_secs(30);

impl AgentHandle {
    pub(super) fn send(&self, c: Command) -> bool {
        self.tx.send(c).is_ok() && self.waker.wake().is_ok()
    }

    pub(super) fn ask<T>(
        &self,
        make: impl FnOnce(Sender<T>) -> Command,
        timeout: Duration,
    ) -> Option<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if !self.send(make(tx)) {
            return None;
        }
        rx.recv_timeout(timeout).ok()
    }

    pub fn sync(&self, pid: u32) -> Option<SyncOutcome> {
        self.ask(|t| Command::Sync(pid, t), REPLY)
    }

    pub fn forget(&self, pid: u32) -> Option<bool> {
        self.ask(|t| Command::Forget(pid, t), REPLY)
    }

    pub fn status(&self) -> Option<Status> {
        self.ask(Command::Status, REPLY)
    }

    pub fn audit(&self) -> Option<Result<AuditReport>> {
        self.ask(Command::Audit, REPLY)
    }

    /// The unwind tables, read back from the kernel: `None` when the
    /// agent is gone, `Some(None)` when it builds no tables.
    pub fn unwind(&self) -> Option<Option<Result<super::unwind::UnwindView>>> {
        self.ask(Command::Unwind, REPLY)
    }

    pub fn shutdown(&self) {
        self.send(Command::Shutdown);
    }
}

impl Agent {
    pub(super) fn handle_command(&mut self, c: Command) {
        match c {
            Command::Sync(pid, tx) => {
                let _ = tx.send(self.sync(pid));
            }
            Command::Forget(pid, tx) => {
                let was = self.pm.is_tracked(pid);
                self.exit(pid);
                self.bury_all();
                let _ = tx.send(was);
            }
            Command::Status(tx) => {
                let _ = tx.send(self.status());
            }
            Command::Audit(tx) => {
                // exits already signalled but not yet handled are not leaks
                self.reap_fired();
                self.bury_all();
                // a tracked process is alive until its pidfd says otherwise
                let pm = &self.pm;
                let alive = |p: u32| {
                    pm.get(p)
                        .map(|p| p.start_time)
                        .or_else(|| crate::proc::stat::start_time(p))
                };
                let _ = tx.send(pm.audit(&alive));
            }
            Command::Unwind(tx) => {
                let _ = tx.send(self.unwinder.as_ref().map(|u| u.view()));
            }
            #[cfg(any(test, feature = "test-hooks"))]
            Command::Hook(h) => self.hooks.handle(h, &self.pm),
            Command::Shutdown => {
                self.ended.get_or_insert_with(Ended::default);
            }
        }
    }
}

/// Runs an agent on its own thread (tests and embedders); the handle
/// drives it. The agent itself stays single-threaded.
pub fn spawn(cfg: AgentConfig) -> Result<(AgentHandle, std::thread::JoinHandle<Result<Ended>>)> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let join = std::thread::Builder::new()
        .name("pidmap-agent".into())
        .spawn(move || match Agent::new(cfg) {
            Ok((agent, handle)) => {
                let _ = tx.send(Ok(handle));
                agent.run()
            }
            Err(e) => {
                let msg = e.to_string();
                let _ = tx.send(Err(e));
                Err(Error::new(msg))
            }
        })
        .map_err(|e| Error::from(e).context("spawning the agent thread"))?;
    match rx.recv() {
        Ok(Ok(h)) => Ok((h, join)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::new("the agent thread ended before starting")),
    }
}
