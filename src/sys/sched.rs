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

/// `struct sched_attr` of sched_setattr(2) (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

/// Gives the calling thread a custom EEVDF slice (`sched_setattr`,
/// SCHED_OTHER, `sched_runtime`; Linux 6.12, which clamps it to 0.1-100
/// ms; earlier kernels accept and ignore it). Its weight and nice are kept:
/// a short slice takes no more CPU, it makes the thread's deadline come
/// sooner, so a wake-up preempts what runs on its CPU instead of waiting
/// for that task's slice to end. A thread under another policy (run with
/// `chrt`, or systemd's CPUSchedulingPolicy) is left as it is: false.
pub fn set_own_slice(slice: std::time::Duration) -> Result<bool, SysError> {
    let tid = thread_id();
    // SAFETY: sched_getscheduler of the calling thread touches no memory.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy != libc::SCHED_OTHER {
        return Ok(false);
    }
    // SAFETY: getpriority reads the nice of a thread of ours; errno is
    // cleared first, as -1 is also a valid nice.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t)
    };
    let mut attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        nice,
        runtime: slice.as_nanos() as u64,
        ..Default::default()
    };
    // SAFETY: attr is a valid sched_attr of the size it states, alive for
    // the call; pid 0 is the calling thread.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &mut attr as *mut SchedAttr, 0) };
    if r < 0 {
        let e = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        return Err(SysError::new("sched_setattr", format!("thread {tid}"), e));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slice as the scheduler reports it (`se.slice`, ns), and the nice.
    fn slice_and_nice(tid: i32) -> (u64, i32) {
        let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched")).unwrap();
        let slice = text
            .lines()
            .find_map(|l| l.strip_prefix("se.slice"))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.trim().parse().ok())
            .expect("se.slice in /proc/self/task/TID/sched");
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let nice = after.split(' ').nth(16).unwrap().parse().unwrap();
        (slice, nice)
    }

    #[test]
    fn a_thread_gets_its_slice_and_keeps_its_nice() {
        let t = std::thread::spawn(|| {
            let tid = thread_id();
            // SAFETY: setpriority on our own thread.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 3) };
            assert!(set_own_slice(std::time::Duration::from_micros(100)).unwrap());
            slice_and_nice(tid)
        });
        assert_eq!(t.join().unwrap(), (100_000, 3));
    }

    #[test]
    fn a_real_time_thread_keeps_its_policy() {
        let t = std::thread::spawn(|| {
            let p = libc::sched_param { sched_priority: 1 };
            // SAFETY: sched_setscheduler of the calling thread (root); p
            // outlives the call.
            let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) };
            assert_eq!(r, 0);
            let set = set_own_slice(std::time::Duration::from_micros(100)).unwrap();
            // SAFETY: as above, no memory.
            (set, unsafe { libc::sched_getscheduler(0) })
        });
        assert_eq!(t.join().unwrap(), (false, libc::SCHED_FIFO));
    }

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
