//! The kernel features pidmap uses, each with the first Linux version
//! that has it and what needs it: one table, which `bench probe` prints
//! probed on the running kernel and the README's "Kernels" table states
//! (`scripts/kernels` checks the two agree on every kernel it boots).
//! When the object does not load, [`missing_for`] names the feature the
//! kernel lacks, so the command is refused by feature and version rather
//! than by a verifier log.

use crate::sys::features::{self, HELPER_LOOP, HELPER_TASK_PT_REGS, PROG_PERF_EVENT};
use std::path::Path;

/// One kernel feature: its name (as `bench probe` and the README spell
/// it), the first Linux version with it, and what needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub since: &'static str,
    pub why: &'static str,
}

pub const BTF: Feature = Feature {
    name: "tp_btf",
    since: "5.5",
    why: "the exec and fork programs (tp_btf, BTF at /sys/kernel/btf/vmlinux): run, profile",
};
pub const PIDFD: Feature = Feature {
    name: "pidfd_open",
    since: "5.3",
    why: "an exit wakes the loop; without it a liveness sweep every 10 s",
};
pub const HASH_BATCH: Feature = Feature {
    name: "hash batch ops",
    since: "5.6",
    why: "BPF_MAP_{DELETE,UPDATE,LOOKUP_AND_DELETE}_BATCH on pid_events; deletes fall back to single keys",
};
pub const LPM_BATCH: Feature = Feature {
    name: "lpm batch ops",
    since: "5.13",
    why: "BPF_MAP_{DELETE,UPDATE}_BATCH on the trie; without them single keys",
};
pub const HASH_STOP: Feature = Feature {
    name: "hash stop count",
    since: "5.6",
    why: "a batch delete stops at an absent key with ENOENT and count = its position: the engine resumes after it",
};
pub const LPM_STOP: Feature = Feature {
    name: "lpm stop count",
    since: "5.13",
    why: "as for hashes, on the trie",
};
pub const PERF_EVENT: Feature = Feature {
    name: "perf_event programs",
    since: "4.9",
    why: "the sampler's program: profile",
};
pub const BPF_LOOP: Feature = Feature {
    name: "bpf_loop",
    since: "5.17",
    why: "the sampler resolves each frame in a bpf_loop: profile",
};

pub const TASK_PT_REGS: Feature = Feature {
    name: "bpf_task_pt_regs",
    since: "5.15",
    why: "the sampler's CFI walk reads the saved user registers of a task sampled in the kernel: profile",
};

/// Every feature, in the order `bench probe` prints them.
pub const ALL: [Feature; 9] = [
    BTF,
    PIDFD,
    HASH_BATCH,
    LPM_BATCH,
    HASH_STOP,
    LPM_STOP,
    PERF_EVENT,
    BPF_LOOP,
    TASK_PT_REGS,
];

/// Where libbpf finds the kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

impl Feature {
    /// "bpf_loop, Linux >= 5.17: the sampler resolves ...".
    pub fn needs(&self) -> String {
        format!("{}, Linux >= {}: {}", self.name, self.since, self.why)
    }
}

/// What the kernel lacks that loading `programs` needs, when a probe
/// says so: `None` when every probe passes (or cannot tell), so a load
/// that failed for another reason is not blamed on the kernel's age.
pub fn missing_for(programs: &[&str], btf: &Path) -> Option<Feature> {
    let tracing = programs.iter().any(|p| *p != "pidmap_sample");
    if tracing && !btf.exists() {
        return Some(BTF);
    }
    if programs.contains(&"pidmap_sample") {
        if matches!(features::prog_type(PROG_PERF_EVENT), Ok(false)) {
            return Some(PERF_EVENT);
        }
        if matches!(features::helper(PROG_PERF_EVENT, HELPER_LOOP), Ok(false)) {
            return Some(BPF_LOOP);
        }
        if matches!(
            features::helper(PROG_PERF_EVENT, HELPER_TASK_PT_REGS),
            Ok(false)
        ) {
            return Some(TASK_PT_REGS);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::fake;

    const RUN: &[&str] = &["pidmap_exec", "pidmap_fork"];
    const PROFILE: &[&str] = &["pidmap_exec", "pidmap_fork", "pidmap_sample"];

    fn btf_here() -> tempfile::NamedTempFile {
        tempfile::NamedTempFile::new().unwrap()
    }

    #[test]
    fn a_kernel_without_bpf_loop_refuses_the_sampler_only() {
        fake::reset();
        fake::features::missing(PROG_PERF_EVENT, Some(HELPER_LOOP));
        let btf = btf_here();
        assert_eq!(missing_for(PROFILE, btf.path()), Some(BPF_LOOP));
        assert_eq!(missing_for(RUN, btf.path()), None, "run needs no bpf_loop");
        let msg = BPF_LOOP.needs();
        assert!(msg.contains("bpf_loop") && msg.contains("5.17"), "{msg}");
        fake::reset();
    }

    #[test]
    fn a_kernel_without_bpf_task_pt_regs_refuses_the_sampler_only() {
        fake::reset();
        fake::features::missing(PROG_PERF_EVENT, Some(HELPER_TASK_PT_REGS));
        let btf = btf_here();
        assert_eq!(missing_for(PROFILE, btf.path()), Some(TASK_PT_REGS));
        assert_eq!(missing_for(RUN, btf.path()), None);
        assert!(TASK_PT_REGS.needs().contains("5.15"));
        fake::reset();
    }

    #[test]
    fn a_kernel_without_perf_event_programs_refuses_the_sampler() {
        fake::reset();
        fake::features::missing(PROG_PERF_EVENT, None);
        let btf = btf_here();
        assert_eq!(missing_for(PROFILE, btf.path()), Some(PERF_EVENT));
        assert_eq!(missing_for(RUN, btf.path()), None);
        fake::reset();
    }

    #[test]
    fn a_kernel_without_btf_refuses_run_and_profile() {
        fake::reset();
        fake::features::missing(PROG_PERF_EVENT, Some(u32::MAX)); // installed, all present
        let none = Path::new("/nonexistent/btf/vmlinux");
        assert_eq!(missing_for(RUN, none), Some(BTF));
        assert_eq!(missing_for(PROFILE, none), Some(BTF));
        assert!(BTF.needs().contains("5.5"));
        let btf = btf_here();
        assert_eq!(missing_for(PROFILE, btf.path()), None);
        fake::reset();
    }

    #[test]
    fn every_feature_names_a_version_and_a_reason() {
        for f in ALL {
            let (major, minor) = f.since.split_once('.').expect(f.name);
            assert!(
                major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok(),
                "{f:?}"
            );
            assert!(!f.why.is_empty() && !f.name.contains('|'), "{f:?}");
        }
    }
}
