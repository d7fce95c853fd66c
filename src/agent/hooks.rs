//! Test-only waits on the loop: until a pid is tracked, until it is gone,
//! and a pause that lets events pile up. Compiled for unit tests and with
//! the `test-hooks` feature (which the integration tests enable); the
//! shipped binary has none of it.

#[cfg(any(test, feature = "test-hooks"))]
use {
    super::{AgentHandle, Command},
    crate::tracker::process::ProcessManager,
    crossbeam_channel::{Receiver, Sender},
    std::collections::HashMap,
    std::time::Duration,
};

#[cfg(any(test, feature = "test-hooks"))]
pub enum Hook {
    /// Answered once the pid is tracked.
    WhenTracked(u32, Sender<()>),
    /// Answered once the pid is not tracked (its exit handled).
    WhenGone(u32, Sender<()>),
    /// Blocks the loop until the sender side of the channel is dropped
    /// or sends (tests: let events pile up).
    Pause(Receiver<()>),
}

#[cfg(any(test, feature = "test-hooks"))]
impl AgentHandle {
    /// Waits until `pid` is tracked; false on timeout.
    pub fn when_tracked(&self, pid: u32, timeout: Duration) -> bool {
        self.ask(|t| Command::Hook(Hook::WhenTracked(pid, t)), timeout)
            .is_some()
    }

    /// Waits until `pid` is no longer tracked; false on timeout.
    pub fn when_gone(&self, pid: u32, timeout: Duration) -> bool {
        self.ask(|t| Command::Hook(Hook::WhenGone(pid, t)), timeout)
            .is_some()
    }

    /// Blocks the loop until the returned sender is dropped.
    pub fn pause(&self) -> Sender<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.send(Command::Hook(Hook::Pause(rx)));
        tx
    }
}

/// The waiters of [`Hook::WhenTracked`] and [`Hook::WhenGone`]; nothing
/// without the hooks.
#[derive(Default)]
pub(super) struct Waiters {
    #[cfg(any(test, feature = "test-hooks"))]
    when_tracked: HashMap<u32, Vec<Sender<()>>>,
    #[cfg(any(test, feature = "test-hooks"))]
    when_gone: HashMap<u32, Vec<Sender<()>>>,
}

impl Waiters {
    #[cfg(any(test, feature = "test-hooks"))]
    pub(super) fn handle(&mut self, h: Hook, pm: &ProcessManager) {
        match h {
            Hook::WhenTracked(pid, tx) => {
                if pm.is_tracked(pid) && !pm.is_syncing(pid) {
                    let _ = tx.send(());
                } else {
                    self.when_tracked.entry(pid).or_default().push(tx);
                }
            }
            Hook::WhenGone(pid, tx) => {
                // an exit being handled is not gone until its keys are
                if !pm.is_tracked(pid) && !pm.is_dying(pid) {
                    let _ = tx.send(());
                } else {
                    self.when_gone.entry(pid).or_default().push(tx);
                }
            }
            Hook::Pause(rx) => {
                let _ = rx.recv();
            }
        }
    }

    /// `pid` is tracked and in step.
    pub(super) fn tracked(&mut self, _pid: u32) {
        #[cfg(any(test, feature = "test-hooks"))]
        for w in self.when_tracked.remove(&_pid).unwrap_or_default() {
            let _ = w.send(());
        }
    }

    /// `pid` is no longer tracked.
    pub(super) fn gone(&mut self, _pid: u32) {
        #[cfg(any(test, feature = "test-hooks"))]
        for w in self.when_gone.remove(&_pid).unwrap_or_default() {
            let _ = w.send(());
        }
    }
}
