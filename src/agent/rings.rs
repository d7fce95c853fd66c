//! The loop's event sources: poll tokens decoded into a [`Source`], and
//! the per-CPU perf rings the BPF side writes to, and what a read of each
//! kind of ring yields.

use crate::abi::{ReportEvent, Sample};
use crate::counters::{add, COUNTERS};
use crate::error::{Error, Result};
use crate::sys::bpf::MapHandle;
use crate::sys::perf_ring::{PerfRing, PerfRings, Record};
use mio::{Interest, Poll, Token};
use std::os::fd::{AsFd, AsRawFd};

pub(super) const SIGNALS: Token = Token(0);
pub(super) const WAKER: Token = Token(1);
pub(super) const COMMAND: Token = Token(2);
pub(super) const RING_BASE: usize = 1 << 16;
pub(super) const SAMPLE_RING_BASE: usize = 1 << 20;
const PIDFD_BASE: usize = 1 << 32;

/// What woke the loop: a poll token decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// SIGINT, SIGTERM or SIGHUP on the signalfd.
    Signals,
    /// The control handle or the file worker.
    Waker,
    /// The request ring of a CPU: the BPF side asks for syncs.
    Requests(u32),
    /// The sample ring of a CPU (profile mode).
    Samples(u32),
    /// The pidfd of a tracked process: it exited.
    Exit(u32),
    /// The pidfd of the command of `-- CMD`: it exited.
    Command,
    Unknown,
}

impl Source {
    pub(super) fn of(t: Token) -> Source {
        match t {
            SIGNALS => Source::Signals,
            WAKER => Source::Waker,
            COMMAND => Source::Command,
            Token(n) if n >= PIDFD_BASE => Source::Exit((n - PIDFD_BASE) as u32),
            Token(n) if n >= SAMPLE_RING_BASE => Source::Samples((n - SAMPLE_RING_BASE) as u32),
            Token(n) if n >= RING_BASE => Source::Requests((n - RING_BASE) as u32),
            _ => Source::Unknown,
        }
    }

    pub(super) fn pidfd(pid: u32) -> Token {
        Token(PIDFD_BASE + pid as usize)
    }
}

/// Opens a BPF output ring per CPU, makes each the target of `map` at
/// its CPU, and registers it with `poll` at `base + cpu`.
pub(super) fn open_rings(
    poll: &Poll,
    map: &MapHandle,
    pages: usize,
    wakeup_events: u32,
    base: usize,
) -> Result<PerfRings> {
    let cpus = crate::proc::cpus::online_cpus()?;
    let mut rings = PerfRings::open_bpf_output(&cpus, pages, wakeup_events)?;
    for ring in rings.iter_mut() {
        let cpu = ring.cpu();
        map.update(
            &cpu,
            &(ring.as_fd().as_raw_fd() as u32),
            crate::sys::bpf::BPF_ANY,
        )?;
        poll.registry()
            .register(ring, Token(base + cpu as usize), Interest::READABLE)
            .map_err(|e| Error::from(e).context(format!("epoll_ctl(perf ring cpu {cpu})")))?;
    }
    Ok(rings)
}

/// Reads a request ring: each record is one sync request (pid, tid, start
/// time, pidfs inode), pushed to `records`. A lost or malformed record may
/// have been a request: `true` asks for a re-sync of everything.
pub(super) fn read_requests(ring: &mut PerfRing, records: &mut Vec<ReportEvent>) -> bool {
    let (mut lost, mut malformed) = (0u64, 0u64);
    ring.read(|rec| match rec {
        Record::Sample(raw) => match ReportEvent::parse(raw) {
            Some(ev) => records.push(ev),
            None => malformed += 1,
        },
        Record::Lost(n) => lost += n,
        Record::Other(_) => {}
    });
    if lost > 0 || malformed > 0 {
        add(&COUNTERS.lost_records, lost + malformed);
        log::info!(
            "{} perf records lost ({malformed} malformed): re-syncing everything",
            lost + malformed
        );
    }
    lost > 0 || malformed > 0
}

/// Reads a sample ring: its samples decoded, the malformed ones and the
/// ones the kernel lost counted.
pub(super) fn read_samples(ring: &mut PerfRing) -> Vec<Sample> {
    let mut lost = 0;
    let mut samples = Vec::new();
    ring.read(|rec| match rec {
        Record::Sample(raw) => match Sample::parse(raw) {
            Some(s) => samples.push(s),
            None => add(&COUNTERS.samples_malformed, 1),
        },
        Record::Lost(n) => lost += n,
        Record::Other(_) => {}
    });
    add(&COUNTERS.samples_read, samples.len() as u64);
    add(&COUNTERS.samples_lost, lost);
    samples
}

#[cfg(test)]
mod tests;
