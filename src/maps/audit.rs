//! The audit: walks the trie and `pid_events`, groups keys by pid, and
//! finds entries of processes that are gone or reused, and keys without a
//! marker. `--repair` deletes them through the engine.

use crate::abi::{MappingInfo, PidPage};
use crate::error::Result;
use crate::maps::engine::{delete_keys, BatchMap, EngineOptions};
use crate::sys::bpf::MapHandle;
use crate::text::counted;
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
            "trie: {}, {}, {}; pid_events: {} pending\n",
            counted(self.keys, "key", "keys"),
            counted(self.pids, "pid", "pids"),
            counted(self.markers, "marker", "markers"),
            self.events_pending
        );
        for l in &self.leaked {
            let why = match &l.reason {
                LeakReason::Gone => "process gone".to_string(),
                LeakReason::Reused { marker, now } => {
                    format!("pid reused (marker start {marker}, process start {now})")
                }
                LeakReason::NoMarker => "keys without a marker".to_string(),
            };
            s += &format!(
                "leaked: pid {} {}: {why}\n",
                l.pid,
                counted(l.keys.len() as u64, "key", "keys")
            );
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
    // the walk of a trie a running agent changes starts over from the
    // first key when the key it stands on is deleted meanwhile (the LPM
    // trie's get_next_key): room for that, and each key counted once
    let max = trie.info().max_entries as usize;
    let mut keys: Vec<PidPage> = trie.keys(2 * max + 1)?;
    keys.sort_unstable();
    keys.dedup();
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

#[cfg(test)]
mod tests {
    //! The audit through the fake kernel: one planted leak of each kind it
    //! claims to find, next to a healthy process it must leave alone.
    use super::*;
    use crate::abi::{MappingInfo, PidPage};
    use crate::maps::engine::BatchMap;
    use crate::sys::bpf::{MapHandle, BPF_ANY, MAP_TYPE_HASH, MAP_TYPE_LPM_TRIE};
    use crate::sys::fake::{self, FakeMap};

    struct Maps {
        trie: BatchMap,
        events: MapHandle,
    }

    impl Drop for Maps {
        fn drop(&mut self) {
            fake::bpf::uninstall();
        }
    }

    fn maps() -> Maps {
        maps_of(1 << 20, 65536)
    }

    /// Maps holding at most `trie_max` and `events_max` entries.
    fn maps_of(trie_max: u32, events_max: u32) -> Maps {
        fake::bpf::install(FakeMap::new(16, 16, trie_max as usize));
        fake::bpf::add_map(FakeMap::new(8, 1, events_max as usize));
        let events = MapHandle::create(MAP_TYPE_HASH, "pid_events", 8, 1, events_max, 0).unwrap();
        let trie = MapHandle::create(MAP_TYPE_LPM_TRIE, "trie", 16, 16, trie_max, 1).unwrap();
        Maps {
            trie: BatchMap::probe::<PidPage, MappingInfo>(trie),
            events,
        }
    }

    /// A process as the agent leaves it: `n` keys, and the marker holding
    /// `start` unless `marker` is false.
    fn plant(m: &Maps, pid: u32, start: u64, n: u64, marker: bool) -> Vec<PidPage> {
        let mut keys = Vec::new();
        for i in 0..n {
            let k = PidPage::new(pid, 0x40_0000 + i * 0x1000, 52);
            let v = MappingInfo::new(7, 0x40_0000).unwrap();
            m.trie.map.update(&k, &v, BPF_ANY).unwrap();
            keys.push(k);
        }
        if marker {
            let k = PidPage::marker(pid);
            m.trie
                .map
                .update(&k, &MappingInfo::marker(start), BPF_ANY)
                .unwrap();
            keys.push(k);
        }
        keys.sort();
        keys
    }

    /// Live pids and their start times; every other pid is gone.
    fn alive(pids: &'static [(u32, u64)]) -> impl Fn(u32) -> Option<u64> {
        move |pid| pids.iter().find(|p| p.0 == pid).map(|p| p.1)
    }

    fn leak_of(r: &AuditReport, pid: u32) -> Option<&LeakedPid> {
        r.leaked.iter().find(|l| l.pid == pid)
    }

    #[test]
    fn a_live_process_with_its_marker_is_clean() {
        let m = maps();
        plant(&m, 10, 500, 4, true);
        let r = audit(&m.trie.map, &m.events, &alive(&[(10, 500)])).unwrap();
        assert!(r.clean(), "{}", r.to_text());
        assert_eq!((r.keys, r.pids, r.markers, r.leaked_keys()), (5, 1, 1, 0));
    }

    #[test]
    fn a_dead_pid_is_a_leak_with_every_key() {
        let m = maps();
        plant(&m, 10, 500, 2, true);
        let dead = plant(&m, 11, 600, 3, true);
        let r = audit(&m.trie.map, &m.events, &alive(&[(10, 500)])).unwrap();
        assert!(!r.clean());
        let l = leak_of(&r, 11).expect("pid 11 found");
        assert_eq!(l.reason, LeakReason::Gone);
        assert_eq!(l.keys, dead);
        assert_eq!((r.leaked.len(), r.leaked_keys()), (1, 4));
        assert_eq!((r.keys, r.pids, r.markers), (7, 2, 2));
        assert!(r
            .to_text()
            .contains("leaked: pid 11 4 keys: process gone\n"));
    }

    #[test]
    fn a_reused_pid_is_a_leak_even_though_the_pid_lives() {
        let m = maps();
        plant(&m, 10, 500, 2, true);
        let old = plant(&m, 12, 700, 3, true);
        // pid 12 runs, but started at 900: another process
        let r = audit(&m.trie.map, &m.events, &alive(&[(10, 500), (12, 900)])).unwrap();
        let l = leak_of(&r, 12).expect("the reused pid is reported");
        assert_eq!(
            l.reason,
            LeakReason::Reused {
                marker: 700,
                now: 900
            }
        );
        assert_eq!(l.keys, old);
        assert_eq!(r.leaked.len(), 1, "{}", r.to_text());
        assert_eq!(r.markers, 2, "a reused pid's marker is still a marker");
        assert!(r
            .to_text()
            .contains("leaked: pid 12 4 keys: pid reused (marker start 700, process start 900)\n"));
        assert!(r
            .to_json()
            .contains("{\"pid\":12,\"reason\":\"reused\",\"keys\":4}"));
    }

    #[test]
    fn a_marker_value_with_a_file_is_not_a_marker() {
        let m = maps();
        plant(&m, 12, 700, 1, false);
        let v = MappingInfo::new(3, 700).unwrap();
        m.trie
            .map
            .update(&PidPage::marker(12), &v, BPF_ANY)
            .unwrap();
        let r = audit(&m.trie.map, &m.events, &alive(&[(12, 700)])).unwrap();
        assert!(matches!(
            leak_of(&r, 12).unwrap().reason,
            LeakReason::Reused { .. }
        ));
    }

    #[test]
    fn keys_without_a_marker_are_a_leak_of_a_live_pid() {
        let m = maps();
        plant(&m, 10, 500, 2, true);
        let orphans = plant(&m, 13, 0, 3, false);
        let r = audit(&m.trie.map, &m.events, &alive(&[(10, 500), (13, 800)])).unwrap();
        assert!(!r.clean());
        let l = leak_of(&r, 13).expect("keys without a marker are reported");
        assert_eq!(l.reason, LeakReason::NoMarker);
        assert_eq!(l.keys, orphans);
        assert_eq!((r.markers, r.leaked_keys()), (1, 3));
        assert!(r
            .to_text()
            .contains("leaked: pid 13 3 keys: keys without a marker\n"));
        assert!(r.to_json().contains("\"reason\":\"no_marker\""));
    }

    #[test]
    fn keys_without_a_marker_of_a_dead_pid_are_gone() {
        let m = maps();
        plant(&m, 13, 0, 3, false);
        let r = audit(&m.trie.map, &m.events, &alive(&[])).unwrap();
        assert_eq!(leak_of(&r, 13).unwrap().reason, LeakReason::Gone);
        assert_eq!(r.markers, 0);
    }

    #[test]
    fn full_maps_are_read_to_the_last_key() {
        let m = maps_of(6, 3);
        plant(&m, 10, 500, 2, true);
        plant(&m, 11, 600, 2, true);
        for key in [1u64, 2, 3] {
            m.events.update(&key, &1u8, BPF_ANY).unwrap();
        }
        let r = audit(&m.trie.map, &m.events, &alive(&[(10, 500)])).unwrap();
        assert_eq!((r.keys, r.events_pending, r.leaked_keys()), (6, 3, 3));
    }

    #[test]
    fn pid_events_leftovers_are_counted() {
        let m = maps();
        plant(&m, 10, 500, 1, true);
        for key in [10u64 << 32 | 10, 11 << 32 | 11, 11 << 32 | 12] {
            m.events.update(&key, &1u8, BPF_ANY).unwrap();
        }
        let r = audit(&m.trie.map, &m.events, &alive(&[(10, 500)])).unwrap();
        assert_eq!(r.events_pending, 3);
        assert!(r
            .to_text()
            .starts_with("trie: 2 keys, 1 pid, 1 marker; pid_events: 3 pending\n"));
        assert!(r.to_json().contains("\"events_pending\":3"));
    }

    #[test]
    fn repair_deletes_every_leaked_key_and_only_those() {
        let m = maps();
        let healthy = plant(&m, 10, 500, 3, true);
        plant(&m, 11, 600, 3, true);
        plant(&m, 12, 700, 2, true);
        plant(&m, 13, 0, 2, false);
        let pids: &'static [(u32, u64)] = &[(10, 500), (12, 900), (13, 800)];
        let mut r = audit(&m.trie.map, &m.events, &alive(pids)).unwrap();
        assert_eq!((r.leaked.len(), r.leaked_keys()), (3, 9), "{}", r.to_text());
        repair(&m.trie, &mut r);
        assert_eq!(r.repaired, Some((9, 0, 0)));
        let mut left: Vec<PidPage> = m.trie.map.keys(100).unwrap();
        left.sort();
        assert_eq!(left, healthy);
        let again = audit(&m.trie.map, &m.events, &alive(pids)).unwrap();
        assert!(again.clean(), "{}", again.to_text());
    }
}
