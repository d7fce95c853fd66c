//! Where threads run: the CPU the caller is on, and a thread pinned to one.
//!
//! The agent's loop runs on the CPU it starts on, and its maps workers,
//! made after, inherit it: a wake-up of a thread on another, idle CPU costs an
//! inter-processor interrupt, which on a VM is an exit to the host of tens
//! to hundreds of µs, longer than a short process lives. On the loop's CPU
//! a worker runs as soon as the loop waits, and its answer wakes the loop
//! without one.

use super::SysError;

/// The CPU the calling thread runs on now (`sched_getcpu`, a vDSO call).
pub fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu takes no arguments and touches no memory of ours.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

/// The calling thread's id (`gettid`).
pub fn thread_id() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// Lets thread `tid` run on `cpu` only (`sched_setaffinity`).
pub fn pin_thread(tid: i32, cpu: u32) -> Result<(), SysError> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu as usize)
        .map_err(|e| SysError::new("sched_setaffinity", format!("cpu {cpu}"), e as i32))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(tid), &set).map_err(|e| {
        SysError::new(
            "sched_setaffinity",
            format!("thread {tid} to cpu {cpu}"),
            e as i32,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pinned_to_a_cpu_runs_there() {
        let cpu = current_cpu().expect("sched_getcpu");
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tx.send(thread_id()).unwrap();
            // wait until pinned, then report where it runs
            std::thread::park();
            current_cpu()
        });
        let tid = rx.recv().unwrap();
        pin_thread(tid, cpu).expect("sched_setaffinity");
        t.thread().unpark();
        assert_eq!(t.join().unwrap(), Some(cpu));
        assert!(
            pin_thread(tid, 100_000).is_err(),
            "a CPU beyond the set is refused"
        );
    }
}
