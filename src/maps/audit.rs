//! The audit: walks the trie and `pid_events`, groups keys by pid, and
//! finds entries of processes that are gone or reused, and keys without a
//! marker. `--repair` deletes them through the engine.

use crate::abi::{MappingInfo, PidPage};
use crate::error::Result;
use crate::maps::engine::{delete_keys, BatchMap, EngineOptions};
use crate::sys::bpf::MapHandle;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeakReason {
    /// No process with this pid.
    Gone,
    /// A process with this pid, started at another time.
    Reused { marker: u64, now: u64 },
    /// Keys of a pid without its marker entry.
    NoMarker,
}

#[derive(Clone, Debug)]
pub struct LeakedPid {
    pub pid: u32,
    pub reason: LeakReason,
    pub keys: Vec<PidPage>,
}

#[derive(Clone, Debug, Default)]
pub struct AuditReport {
    pub keys: u64,
    pub pids: u64,
    pub markers: u64,
    pub events_pending: u64,
    pub leaked: Vec<LeakedPid>,
    /// (deleted, absent, failed) when repaired.
    pub repaired: Option<(u64, u64, u64)>,
}

impl AuditReport {
    pub fn leaked_keys(&self) -> u64 {
        self.leaked.iter().map(|l| l.keys.len() as u64).sum()
    }

    pub fn clean(&self) -> bool {
        self.leaked.is_empty()
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "trie: {} keys, {} pids, {} markers; pid_events: {} pending\n",
            self.keys, self.pids, self.markers, self.events_pending
        );
        for l in &self.leaked {
            let why = match &l.reason {
                LeakReason::Gone => "process gone".to_string(),
                LeakReason::Reused { marker, now } => {
                    format!("pid reused (marker start {marker}, process start {now})")
                }
                LeakReason::NoMarker => "keys without a marker".to_string(),
            };
            s += &format!("leaked: pid {} {} keys: {why}\n", l.pid, l.keys.len());
        }
        s += &format!("leaked keys: {}\n", self.leaked_keys());
        if let Some((d, a, f)) = self.repaired {
            s += &format!("repaired: {d} deleted, {a} already absent, {f} failed\n");
        }
        s
    }

    pub fn to_json(&self) -> String {
        let leaked: Vec<String> = self
            .leaked
            .iter()
            .map(|l| {
                let reason = match l.reason {
                    LeakReason::Gone => "gone",
                    LeakReason::Reused { .. } => "reused",
                    LeakReason::NoMarker => "no_marker",
                };
                format!(
                    "{{\"pid\":{},\"reason\":\"{reason}\",\"keys\":{}}}",
                    l.pid,
                    l.keys.len()
                )
            })
            .collect();
        let repaired = match self.repaired {
            Some((d, a, f)) => format!("{{\"deleted\":{d},\"absent\":{a},\"failed\":{f}}}"),
            None => "null".into(),
        };
        format!(
            "{{\"keys\":{},\"pids\":{},\"markers\":{},\"events_pending\":{},\"leaked_keys\":{},\"leaked\":[{}],\"repaired\":{}}}",
            self.keys,
            self.pids,
            self.markers,
            self.events_pending,
            self.leaked_keys(),
            leaked.join(","),
            repaired
        )
    }
}

/// Audits the maps; `start_time(pid)` tells whether a pid lives and when
/// it started.
pub fn audit(
    trie: &MapHandle,
    events: &MapHandle,
    start_time: &dyn Fn(u32) -> Option<u64>,
) -> Result<AuditReport> {
    let keys: Vec<PidPage> = trie.keys(trie.info().max_entries as usize + 1)?;
    let pending: Vec<u64> = events.keys(events.info().max_entries as usize + 1)?;
    let mut by_pid: BTreeMap<u32, Vec<PidPage>> = BTreeMap::new();
    for k in &keys {
        by_pid.entry(k.pid()).or_default().push(*k);
    }
    let mut report = AuditReport {
        keys: keys.len() as u64,
        pids: by_pid.len() as u64,
        events_pending: pending.len() as u64,
        ..Default::default()
    };
    for (pid, keys) in by_pid {
        let marker = PidPage::marker(pid);
        let value: Option<MappingInfo> = if keys.contains(&marker) {
            trie.lookup(&marker)?
        } else {
            None
        };
        let reason = match (value, start_time(pid)) {
            (Some(v), Some(now)) if v.file_id == 0 && v.bias() == now => {
                report.markers += 1;
                None
            }
            (Some(v), Some(now)) => {
                report.markers += 1;
                Some(LeakReason::Reused {
                    marker: v.bias(),
                    now,
                })
            }
            (Some(_), None) => {
                report.markers += 1;
                Some(LeakReason::Gone)
            }
            (None, None) => Some(LeakReason::Gone),
            (None, Some(_)) => Some(LeakReason::NoMarker),
        };
        if let Some(reason) = reason {
            report.leaked.push(LeakedPid { pid, reason, keys });
        }
    }
    Ok(report)
}

/// Deletes every leaked key through the engine (markers last per pid).
pub fn repair(trie: &BatchMap, report: &mut AuditReport) {
    let mut keys = Vec::new();
    for l in &report.leaked {
        let (markers, rest): (Vec<PidPage>, Vec<PidPage>) =
            l.keys.iter().partition(|k| k.is_marker());
        keys.extend(rest);
        keys.extend(markers);
    }
    let r = delete_keys(trie, &keys, &EngineOptions::default());
    report.repaired = Some((r.deleted, r.absent, r.failed.len() as u64));
}
