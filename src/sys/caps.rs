//! What this process may do: its effective capabilities (capget(2)), and
//! whether a descriptor is a terminal. Messages use them to hint at
//! privileges only when privileges are the cause.

/// Capability numbers of linux/capability.h.
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The effective capability set of this process (bit n = capability n);
/// 0 when capget fails (no capability is assumed, never all).
pub fn effective() -> u64 {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget reads the header and writes two Data structs (version
    // 3), both live and of the layout linux/capability.h gives them.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) };
    if r != 0 {
        return 0;
    }
    u64::from(d[0].effective) | (u64::from(d[1].effective) << 32)
}

/// Whether the effective set holds capability `cap`.
pub fn has(cap: u32) -> bool {
    effective() & (1u64 << cap) != 0
}

/// Whether this process may load pidmap's programs and open its events:
/// CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN (which implies both).
pub fn bpf_capable() -> bool {
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// The capabilities pidmap's agent needs that this process lacks, by name
/// (empty when it has them all, or CAP_SYS_ADMIN).
pub fn missing() -> Vec<&'static str> {
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_SYS_PTRACE, "CAP_SYS_PTRACE"),
    ]
    .into_iter()
    .filter(|(c, _)| !has(*c))
    .map(|(_, n)| n)
    .collect()
}

/// isatty(1): whether standard output is a terminal.
pub fn stdout_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_matches_proc_status() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim();
        assert_eq!(effective(), u64::from_str_radix(hex, 16).unwrap());
    }
}
