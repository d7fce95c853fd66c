//! `pidmap bench probe`: the kernel features of [`features::ALL`], each
//! probed on the running kernel, and what a batch's `count` says when the
//! kernel stops at an absent key (at every position of a small batch) or
//! refuses a batch outright. `scripts/kernels` runs it on every kernel it
//! boots and checks each answer against the README's "Kernels" table.

use crate::abi::{MappingInfo, PidPage};
use crate::error::Result;
use crate::maps::engine::{BatchMap, BatchSupport};
use crate::maps::features::{self, Feature};
use crate::sys::bpf::{MapHandle, BPF_ANY, F_NO_PREALLOC, MAP_TYPE_HASH, MAP_TYPE_LPM_TRIE};
use crate::sys::features::{self as probes, HELPER_LOOP, HELPER_TASK_PT_REGS, PROG_PERF_EVENT};
use crate::sys::object::kernel_release;
use std::path::Path;

/// Keys of the stop-count probe: an absent key at each of their positions.
const STOP_KEYS: usize = 8;

/// One probed feature: whether this kernel has it, and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probed {
    pub feature: Feature,
    pub here: bool,
    pub detail: String,
}

fn map(kind: u32) -> Result<BatchMap> {
    let (name, flags) = match kind {
        MAP_TYPE_LPM_TRIE => ("probe_lpm", F_NO_PREALLOC),
        _ => ("probe_hash", 0),
    };
    let m = MapHandle::create(kind, name, 16, 16, 64, flags)?;
    Ok(BatchMap::probe::<PidPage, MappingInfo>(m))
}

fn batch_ops(m: &BatchMap) -> (bool, String) {
    let mut token = None;
    let (mut k, mut v) = ([PidPage::default(); 4], [MappingInfo::default(); 4]);
    let drain = match m.map.lookup_and_delete_batch(&mut token, &mut k, &mut v) {
        Ok(_) => "supported".to_string(),
        Err(e) if e.errno() == crate::sys::ENOTSUPP => "not for this map type (ENOTSUPP)".into(),
        Err(e) => e.source.to_string(),
    };
    let word = |s: BatchSupport| match s {
        BatchSupport::Supported => "supported",
        BatchSupport::NotForMapType => "not for this map type (ENOTSUPP)",
        BatchSupport::NoCommand => "no such command (EINVAL)",
    };
    let here = m.delete == BatchSupport::Supported && m.update == BatchSupport::Supported;
    let detail = format!(
        "delete {}, update {}, lookup-and-delete {drain}",
        word(m.delete),
        word(m.update)
    );
    (here, detail)
}

fn stop_keys() -> Vec<PidPage> {
    (0..STOP_KEYS as u64)
        .map(|i| PidPage::new(4000, 0x7f00_0000_0000 + i * 0x1000, 52))
        .collect()
}

/// A batch delete of [`STOP_KEYS`] keys with one absent at each position
/// in turn: the kernel must stop there with ENOENT and `count` = that
/// position, having deleted every key before it and none after.
fn stop_count(m: &BatchMap) -> Result<(bool, String)> {
    let keys = stop_keys();
    let vals = vec![MappingInfo::new(1, 0).unwrap_or_default(); keys.len()];
    let mut wrong = Vec::new();
    for absent in 0..keys.len() {
        for k in m.map.keys::<PidPage>(usize::MAX)? {
            m.map.delete(&k)?;
        }
        for (i, (k, v)) in keys.iter().zip(&vals).enumerate() {
            if i != absent {
                m.map.update(k, v, BPF_ANY)?;
            }
        }
        let a = m.map.delete_batch(&keys, keys.len() as u32);
        let errno = a.result.as_ref().err().map(|e| e.errno());
        let left = m.map.keys::<PidPage>(usize::MAX)?.len();
        let want_left = keys.len() - 1 - absent;
        if errno != Some(libc::ENOENT) || a.count as usize != absent || left != want_left {
            wrong.push(format!(
                "absent at {absent}: errno {errno:?} count {} left {left} (want ENOENT, {absent}, {want_left})",
                a.count
            ));
        }
    }
    Ok(if wrong.is_empty() {
        (
            true,
            format!(
                "ENOENT and count = the absent key's position, at {n} of {n} positions",
                n = keys.len()
            ),
        )
    } else {
        (false, wrong.join("; "))
    })
}

/// What `count` reads after a batch the kernel refuses before touching
/// a key (invalid `elem_flags`): 0, or left at the input by some kernels.
fn refused_count(m: &BatchMap) -> String {
    let keys = stop_keys();
    let vals = vec![MappingInfo::default(); keys.len()];
    let a = m.map.update_batch(&keys, &vals, keys.len() as u32, 1 << 7);
    match a.result {
        Ok(()) => format!("accepted, count {}", a.count),
        Err(e) => format!("{} with count {} of {}", e.source, a.count, keys.len()),
    }
}

/// Every feature of [`features::ALL`], probed here, plus informative
/// rows (no version) about the refused-batch count.
pub fn probe() -> Result<Vec<Probed>> {
    let mut out = Vec::new();
    let mut row = |feature: Feature, here: bool, detail: String| {
        out.push(Probed {
            feature,
            here,
            detail,
        })
    };
    let btf = Path::new(features::VMLINUX_BTF).exists();
    row(
        features::BTF,
        btf,
        if btf {
            format!("{} present", features::VMLINUX_BTF)
        } else {
            format!("no {}", features::VMLINUX_BTF)
        },
    );
    let pidfd = crate::sys::pidfd::pidfd_open(std::process::id());
    row(
        features::PIDFD,
        pidfd.is_ok(),
        match pidfd {
            Ok(_) => "pidfd_open of this process".into(),
            Err(e) => e.to_string(),
        },
    );
    let hash = map(MAP_TYPE_HASH)?;
    let (here, detail) = batch_ops(&hash);
    row(features::HASH_BATCH, here, detail);
    let lpm = map(MAP_TYPE_LPM_TRIE)?;
    let (here, detail) = batch_ops(&lpm);
    row(features::LPM_BATCH, here, detail);
    for (f, m) in [(features::HASH_STOP, &hash), (features::LPM_STOP, &lpm)] {
        let (here, detail) = if m.delete == BatchSupport::Supported {
            stop_count(m)?
        } else {
            (false, "no batch delete".into())
        };
        row(f, here, detail);
    }
    let said = |r: std::result::Result<bool, crate::sys::SysError>, what: &str| match r {
        Ok(true) => (true, format!("{what} loads")),
        Ok(false) => (false, format!("{what} refused by the verifier")),
        Err(e) => (false, e.to_string()),
    };
    let (here, detail) = said(probes::prog_type(PROG_PERF_EVENT), "a perf_event program");
    row(features::PERF_EVENT, here, detail);
    let (here, detail) = said(
        probes::helper(PROG_PERF_EVENT, HELPER_LOOP),
        "a perf_event program calling bpf_loop",
    );
    row(features::BPF_LOOP, here, detail);
    let (here, detail) = said(
        probes::helper(PROG_PERF_EVENT, HELPER_TASK_PT_REGS),
        "a perf_event program calling bpf_task_pt_regs",
    );
    row(features::TASK_PT_REGS, here, detail);
    for (name, m) in [("lpm refused batch", &lpm), ("hash refused batch", &hash)] {
        let f = Feature {
            name,
            since: "-",
            why: "what count reads after a batch refused before any key",
        };
        row(f, true, refused_count(m));
    }
    Ok(out)
}

/// `pidmap bench probe`: the table (or one JSON object a line).
pub fn run(json: bool) -> Result<()> {
    let rows = probe()?;
    let release = kernel_release();
    if json {
        for r in &rows {
            println!(
                "{{\"kernel\":\"{}\",\"feature\":\"{}\",\"since\":\"{}\",\"here\":{},\"detail\":\"{}\"}}",
                crate::text::json_escape(&release),
                r.feature.name,
                r.feature.since,
                r.here,
                crate::text::json_escape(&r.detail)
            );
        }
        return Ok(());
    }
    println!("bench probe: Linux {release}");
    println!("{:<20} {:>6} {:>4}  detail", "feature", "since", "here");
    for r in &rows {
        println!(
            "{:<20} {:>6} {:>4}  {}",
            r.feature.name,
            r.feature.since,
            if r.here { "yes" } else { "no" },
            r.detail
        );
    }
    Ok(())
}
