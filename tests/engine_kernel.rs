//! The batch engine against the real kernel (root): the original leak, random
//! absent patterns, malformed keys, chunk boundaries, full maps; LPM and HASH.

mod common;

use pidmap::abi::{MappingInfo, PidPage};
use pidmap::maps::engine::{
    delete_keys, insert_keys, BatchMap, BatchSupport, EngineOptions, ResumePolicy,
};
use pidmap::sys::bpf::{MapHandle, BPF_ANY, F_NO_PREALLOC, MAP_TYPE_HASH, MAP_TYPE_LPM_TRIE};

fn map(kind: u32, max: u32) -> BatchMap {
    let flags = if kind == MAP_TYPE_LPM_TRIE {
        F_NO_PREALLOC
    } else {
        0
    };
    let m = MapHandle::create(kind, "engine_test", 16, 16, max, flags).expect("BPF_MAP_CREATE");
    let m = BatchMap::probe::<PidPage, MappingInfo>(m);
    assert_eq!(
        m.delete,
        BatchSupport::Supported,
        "this kernel has batch deletes"
    );
    m
}

fn keys(n: usize, pid: u32) -> Vec<PidPage> {
    (0..n)
        .map(|i| PidPage::new(pid, 0x5555_0000_0000 + i as u64 * 0x1000, 52))
        .collect()
}

fn put(m: &BatchMap, ks: &[PidPage]) {
    let v = vec![MappingInfo::new(7, 0).unwrap(); ks.len()];
    let r = insert_keys(m, ks, &v, BPF_ANY, &EngineOptions::default());
    assert_eq!(r.landed(), ks.len());
}

fn left(m: &BatchMap) -> usize {
    m.map.keys::<PidPage>(usize::MAX).unwrap().len()
}

#[test]
fn the_original_leak_is_closed() {
    if !common::bpf_available() {
        return;
    }
    for kind in [MAP_TYPE_LPM_TRIE, MAP_TYPE_HASH] {
        let m = map(kind, 64);
        let all = keys(10, 42);
        let present: Vec<PidPage> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 3)
            .map(|(_, k)| *k)
            .collect();
        put(&m, &present);
        // what the kernel does on its own: stops at the absent 4th key
        let once = m.map.delete_batch(&all, 10);
        assert_eq!(once.result.as_ref().unwrap_err().errno(), libc::ENOENT);
        assert_eq!(once.count, 3);
        assert_eq!(left(&m), 6, "keys after the failing one stay: the leak");
        put(&m, &present[..3]);
        let r = delete_keys(&m, &all, &EngineOptions::default());
        assert_eq!(
            (r.deleted, r.absent, r.absent_keys.clone()),
            (9, 1, vec![3])
        );
        assert_eq!(r.syscalls, 2, "exactly two delete syscalls");
        assert_eq!(left(&m), 0);
    }
}

#[test]
fn random_absent_patterns_leave_the_map_empty() {
    if !common::bpf_available() {
        return;
    }
    let mut rng = pidmap::rng::Rng::new(0x1234_5678_9abc_def1);
    let mut rnd = move |n: u64| rng.below(n);
    for kind in [MAP_TYPE_LPM_TRIE, MAP_TYPE_HASH] {
        for round in 0..60 {
            let n = 1 + rnd(400) as usize;
            let all = keys(n, 100 + round);
            let present: Vec<bool> = match round % 6 {
                0 => vec![false; n],                       // all absent
                1 => (0..n).map(|i| i != 0).collect(),     // the first
                2 => (0..n).map(|i| i != n - 1).collect(), // the last
                3 => {
                    let s = rnd(n as u64) as usize; // a run
                    (0..n).map(|i| !(s..s + 10).contains(&i)).collect()
                }
                _ => (0..n).map(|_| rnd(100) >= 10).collect(), // scattered
            };
            let mut list = all.clone();
            if round % 5 == 0 {
                list.push(all[rnd(n as u64) as usize]); // a duplicate
            }
            let ks: Vec<PidPage> = all
                .iter()
                .zip(&present)
                .filter(|(_, p)| **p)
                .map(|(k, _)| *k)
                .collect();
            let m = map(kind, 512);
            put(&m, &ks);
            let chunk = 1 + rnd(128) as usize;
            let policy = if round % 2 == 0 {
                ResumePolicy::Batch
            } else {
                ResumePolicy::Single
            };
            let r = delete_keys(
                &m,
                &list,
                &EngineOptions {
                    chunk,
                    policy,
                    max_retries: 3,
                },
            );
            assert_eq!(r.deleted, ks.len() as u64, "kind {kind} round {round}");
            assert_eq!(r.absent, (list.len() - ks.len()) as u64);
            assert!(r.failed.is_empty() && r.invalid == 0);
            let stops = r.absent;
            let chunks = list.len().div_ceil(chunk) as u64;
            if policy == ResumePolicy::Batch {
                assert!(r.syscalls <= 1 + stops + chunks, "{r:?}");
            }
            assert_eq!(left(&m), 0, "kind {kind} round {round}");
        }
    }
}

#[test]
fn a_malformed_key_is_reported_and_the_rest_deleted() {
    if !common::bpf_available() {
        return;
    }
    let m = map(MAP_TYPE_LPM_TRIE, 64);
    let mut all = keys(10, 7);
    put(&m, &all);
    all.insert(5, PidPage::with_prefix_len(7, 0, 97));
    let r = delete_keys(&m, &all, &EngineOptions::default());
    assert_eq!(
        (r.deleted, r.invalid, r.invalid_keys.clone()),
        (10, 1, vec![5])
    );
    assert_eq!(left(&m), 0);
}

#[test]
fn a_chunk_boundary_on_an_absent_key() {
    if !common::bpf_available() {
        return;
    }
    for kind in [MAP_TYPE_LPM_TRIE, MAP_TYPE_HASH] {
        let m = map(kind, 64);
        let all = keys(12, 9);
        // chunk 4: indices 3, 4 (last of chunk 1, first of chunk 2) and 11
        let ks: Vec<PidPage> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| ![3, 4, 11].contains(i))
            .map(|(_, k)| *k)
            .collect();
        put(&m, &ks);
        let r = delete_keys(
            &m,
            &all,
            &EngineOptions {
                chunk: 4,
                ..Default::default()
            },
        );
        assert_eq!(
            (r.deleted, r.absent, r.absent_keys.clone()),
            (9, 3, vec![3, 4, 11])
        );
        assert_eq!(left(&m), 0);
    }
}

#[test]
fn inserting_into_a_full_map_names_exactly_what_landed() {
    if !common::bpf_available() {
        return;
    }
    for kind in [MAP_TYPE_LPM_TRIE, MAP_TYPE_HASH] {
        let m = map(kind, 13);
        let all = keys(40, 11);
        let vals = vec![MappingInfo::new(3, 0).unwrap(); all.len()];
        let r = insert_keys(
            &m,
            &all,
            &vals,
            BPF_ANY,
            &EngineOptions {
                chunk: 8,
                ..Default::default()
            },
        );
        assert!(r.full());
        let landed: Vec<PidPage> = r.landed_indices().map(|i| all[i]).collect();
        let mut in_map = m.map.keys::<PidPage>(100).unwrap();
        in_map.sort();
        let mut want = landed.clone();
        want.sort();
        assert_eq!(in_map, want, "the report names exactly the keys in the map");
        let d = delete_keys(&m, &landed, &EngineOptions::default());
        assert_eq!((d.deleted, d.absent), (landed.len() as u64, 0));
        assert_eq!(left(&m), 0);
    }
}
