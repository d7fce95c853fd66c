//! `perf_event_open`: the attribute struct, and the opener of a sampling
//! software cpu-clock event for BPF perf_event programs.

use super::SysError;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

// ---------------------------------------------------------------------------
// perf_event_open
// ---------------------------------------------------------------------------

pub(super) const PERF_TYPE_SOFTWARE: u32 = 1;
pub(super) const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
pub(super) const PERF_COUNT_SW_BPF_OUTPUT: u64 = 10;
pub(super) const PERF_SAMPLE_RAW: u64 = 1 << 10;
pub(super) const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `_IO('$', 0)`.
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;

/// `perf_event_attr` flag bits.
pub(super) const ATTR_DISABLED: u64 = 1 << 0;
pub(super) const ATTR_FREQ: u64 = 1 << 10;

/// `struct perf_event_attr` as of Linux 6.3+ (`PERF_ATTR_SIZE_VER8`, 136
/// bytes). Older kernels accept it as long as the extra tail is zero.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct PerfEventAttr {
    pub(super) type_: u32,
    pub(super) size: u32,
    pub(super) config: u64,
    pub(super) sample_period_or_freq: u64,
    pub(super) sample_type: u64,
    pub(super) read_format: u64,
    pub(super) flags: u64,
    pub(super) wakeup_events_or_watermark: u32,
    pub(super) bp_type: u32,
    pub(super) config1: u64,
    pub(super) config2: u64,
    pub(super) branch_sample_type: u64,
    pub(super) sample_regs_user: u64,
    pub(super) sample_stack_user: u32,
    pub(super) clockid: i32,
    pub(super) sample_regs_intr: u64,
    pub(super) aux_watermark: u32,
    pub(super) sample_max_stack: u16,
    pub(super) reserved_2: u16,
    pub(super) aux_sample_size: u32,
    pub(super) aux_action: u32,
    pub(super) sig_data: u64,
    pub(super) config3: u64,
}

impl PerfEventAttr {
    pub(super) fn new(type_: u32, config: u64) -> Self {
        PerfEventAttr {
            type_,
            size: std::mem::size_of::<PerfEventAttr>() as u32,
            config,
            ..Default::default()
        }
    }
}

/// `perf_event_open(attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)`.
pub(super) fn perf_event_open(
    attr: &PerfEventAttr,
    pid: i32,
    cpu: u32,
    what: &str,
) -> Result<OwnedFd, SysError> {
    let object = || format!("{what}, cpu {cpu}");
    let cpu_arg = libc::c_int::try_from(cpu).map_err(|_| {
        SysError::invalid(
            "perf_event_open",
            object(),
            io::ErrorKind::InvalidInput,
            "cpu out of range",
        )
    })?;
    #[cfg(test)]
    if let Some(r) = super::fake::perf::open(attr, cpu) {
        return r.map_err(|errno| SysError::new("perf_event_open", object(), errno));
    }
    // SAFETY: attr points to a fully initialised perf_event_attr whose size
    // field equals its size; the kernel only reads it (or writes `size` on
    // E2BIG, which stays within the struct). Other arguments are integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr as *const PerfEventAttr,
            pid as libc::c_int,
            cpu_arg,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if ret < 0 {
        return Err(SysError::last("perf_event_open", object()));
    }
    let raw = libc::c_int::try_from(ret).map_err(|_| {
        SysError::invalid(
            "perf_event_open",
            object(),
            io::ErrorKind::Other,
            format!("bad fd {ret}"),
        )
    })?;
    // SAFETY: raw is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// `ioctl(fd, PERF_EVENT_IOC_ENABLE, 0)`: starts counting (or outputting).
pub(super) fn enable(fd: BorrowedFd<'_>, what: &str) -> Result<(), SysError> {
    #[cfg(test)]
    if let Some(r) = super::fake::perf::enable(fd) {
        return r.map_err(|errno| SysError::new("ioctl(PERF_EVENT_IOC_ENABLE)", what, errno));
    }
    // SAFETY: PERF_EVENT_IOC_ENABLE on a perf fd takes no pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), PERF_EVENT_IOC_ENABLE as _, 0) };
    if rc < 0 {
        return Err(SysError::last("ioctl(PERF_EVENT_IOC_ENABLE)", what));
    }
    Ok(())
}

pub(super) fn page_size() -> Result<usize, SysError> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v <= 0 {
        return Err(SysError::last("sysconf", "_SC_PAGESIZE"));
    }
    Ok(v as usize)
}

/// Opens a sampling software cpu-clock event (`PERF_COUNT_SW_CPU_CLOCK`) on
/// `cpu` for all tasks at `freq_hz` samples per second, enabled, for
/// attaching a BPF perf_event program.
pub fn open_cpu_clock(cpu: u32, freq_hz: u64) -> Result<OwnedFd, SysError> {
    if freq_hz == 0 {
        return Err(SysError::invalid(
            "perf_event_open",
            format!("CPU_CLOCK, cpu {cpu}"),
            io::ErrorKind::InvalidInput,
            "freq_hz must be > 0",
        ));
    }
    let mut attr = PerfEventAttr::new(PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK);
    attr.sample_period_or_freq = freq_hz;
    attr.flags = ATTR_FREQ;
    perf_event_open(&attr, -1, cpu, "CPU_CLOCK")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layout() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<PerfEventAttr>(), 136); // PERF_ATTR_SIZE_VER8
        assert_eq!(offset_of!(PerfEventAttr, flags), 40);
        assert_eq!(offset_of!(PerfEventAttr, wakeup_events_or_watermark), 48);
        assert_eq!(offset_of!(PerfEventAttr, config1), 56);
        assert_eq!(offset_of!(PerfEventAttr, sample_regs_user), 80);
        assert_eq!(offset_of!(PerfEventAttr, clockid), 92);
        assert_eq!(offset_of!(PerfEventAttr, aux_watermark), 104);
        assert_eq!(offset_of!(PerfEventAttr, aux_sample_size), 112);
        assert_eq!(offset_of!(PerfEventAttr, sig_data), 120);
        assert_eq!(offset_of!(PerfEventAttr, config3), 128);
        assert_eq!(PerfEventAttr::new(1, 10).size, 136);
    }
}
