//! What the running kernel offers BPF programs, asked through libbpf's
//! probes: each loads a tiny program and reports whether the kernel took
//! it. Used before loading the object, so a missing helper is refused by
//! name and version rather than as a verifier log, and by `bench probe`.

use super::SysError;
use libbpf_sys as sys;

/// BPF_PROG_TYPE_PERF_EVENT: the sampler's program type.
pub const PROG_PERF_EVENT: u32 = sys::BPF_PROG_TYPE_PERF_EVENT;
/// BPF_FUNC_loop (Linux 5.17): the sampler resolves frames in a bpf_loop.
pub const HELPER_LOOP: u32 = sys::BPF_FUNC_loop;
/// BPF_FUNC_task_pt_regs (Linux 5.15): the CFI walk's user registers of a
/// task sampled in the kernel.
pub const HELPER_TASK_PT_REGS: u32 = sys::BPF_FUNC_task_pt_regs;

fn answer(call: &'static str, what: String, r: i32) -> Result<bool, SysError> {
    match r {
        1 => Ok(true),
        0 => Ok(false),
        // libbpf returns -errno
        e => Err(SysError::new(call, what, -e)),
    }
}

/// `libbpf_probe_bpf_prog_type`: whether the kernel loads programs of
/// type `prog_type` (a minimal `return 0` program).
pub fn prog_type(prog_type: u32) -> Result<bool, SysError> {
    #[cfg(test)]
    if let Some(yes) = super::fake::features::prog_type(prog_type) {
        return Ok(yes);
    }
    // SAFETY: plain integer arguments; opts must be NULL.
    let r = unsafe { sys::libbpf_probe_bpf_prog_type(prog_type, std::ptr::null()) };
    answer(
        "libbpf_probe_bpf_prog_type",
        format!("program type {prog_type}"),
        r,
    )
}

/// `libbpf_probe_bpf_helper`: whether programs of type `prog_type` may
/// call the helper `helper`.
pub fn helper(prog_type: u32, helper: u32) -> Result<bool, SysError> {
    #[cfg(test)]
    if let Some(yes) = super::fake::features::helper(prog_type, helper) {
        return Ok(yes);
    }
    // SAFETY: plain integer arguments; opts must be NULL.
    let r = unsafe { sys::libbpf_probe_bpf_helper(prog_type, helper, std::ptr::null()) };
    answer(
        "libbpf_probe_bpf_helper",
        format!("helper {helper} in program type {prog_type}"),
        r,
    )
}
