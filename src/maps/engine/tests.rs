//! Engine tests through the fake kernel: no root needed.

use super::*;
use crate::abi::{MappingInfo, PidPage};
use crate::sys::fake::{self, FakeBatch, FakeKernel};
use libbpf_sys as sys;

fn keys(n: usize) -> Vec<PidPage> {
    (0..n)
        .map(|i| PidPage::new(100, 0x1000 * (i as u64 + 1), 52))
        .collect()
}

/// A fake map holding `present` of `all`.
fn setup(all: &[PidPage], present: impl Fn(usize) -> bool, batch: FakeBatch) -> BatchMap {
    let mut k = FakeKernel::new(16, 16, 1 << 20);
    k.delete_batch = batch;
    k.update_batch = batch;
    for (i, key) in all.iter().enumerate() {
        if present(i) {
            let kb = crate::sys::bytes_of(std::slice::from_ref(key)).to_vec();
            k.entries.insert(kb, vec![0; 16]);
        }
    }
    fake::install(k);
    let map = MapHandle::create(
        crate::sys::bpf::MAP_TYPE_LPM_TRIE,
        "fake",
        16,
        16,
        1 << 20,
        1,
    )
    .expect("fake create");
    BatchMap::probe::<PidPage, MappingInfo>(map)
}

fn opts(chunk: usize, policy: ResumePolicy) -> EngineOptions {
    EngineOptions {
        chunk,
        policy,
        max_retries: 3,
    }
}

#[test]
fn the_original_leak_takes_two_batches() {
    let all = keys(10);
    let m = setup(&all, |i| i != 3, FakeBatch::Supported);
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    assert_eq!(
        (r.deleted, r.absent, r.absent_keys.clone()),
        (9, 1, vec![3])
    );
    assert_eq!((r.batch_calls, r.syscalls, r.resumes), (2, 2, 1));
    assert!(fake::with(|k| k.entries.is_empty()));
    fake::uninstall();
}

#[test]
fn single_policy_finishes_the_chunk_key_by_key() {
    let all = keys(10);
    let m = setup(&all, |i| i != 3, FakeBatch::Supported);
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Single));
    assert_eq!((r.deleted, r.absent), (9, 1));
    assert_eq!((r.batch_calls, r.syscalls), (1, 7));
    assert!(fake::with(|k| k.entries.is_empty()));
    fake::uninstall();
}

#[test]
fn probe_enotsupp_and_einval_mean_single_deletes() {
    for batch in [FakeBatch::NotSupported, FakeBatch::Unknown] {
        let all = keys(10);
        let m = setup(&all, |i| i % 3 != 0, batch);
        assert_ne!(m.delete, BatchSupport::Supported);
        let r = delete_keys(&m, &all, &EngineOptions::default());
        assert_eq!(
            (r.deleted, r.absent, r.batch_calls, r.syscalls),
            (6, 4, 0, 10)
        );
        assert_eq!(r.absent_keys, vec![0, 3, 6, 9]);
        let k = fake::uninstall().unwrap();
        assert!(k.entries.is_empty());
        // the probe was the only batch call
        assert_eq!(k.calls_of(sys::BPF_MAP_DELETE_BATCH), 1);
    }
}

#[test]
fn transient_errors_are_retried_then_deleted_singly() {
    for (errno, times, retries, fallback) in [(libc::EDEADLK, 2, 2, 0), (libc::EBUSY, 5, 4, 1)] {
        let all = keys(8);
        let m = setup(&all, |_| true, FakeBatch::Supported);
        let kb = crate::sys::bytes_of(&all[5..6]).to_vec();
        fake::with(|k| k.transient.insert(kb, (errno, times)));
        let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
        assert_eq!(r.deleted, 8, "{errno}");
        assert_eq!(r.retries, retries, "{errno}");
        assert_eq!(r.single_fallbacks, fallback, "{errno}");
        assert!(r.failed.is_empty());
        assert!(fake::uninstall().unwrap().entries.is_empty());
    }
}

#[test]
fn efault_switches_the_rest_of_the_chunk_to_single_deletes() {
    let all = keys(10);
    let m = setup(&all, |i| i != 7, FakeBatch::Supported);
    fake::with(|k| k.efault_at = Some(4));
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    // keys 0..4 went with the faulting batch; unknowable then, so the
    // single deletes find them absent: every key is still accounted for
    assert_eq!((r.deleted, r.absent), (5, 5));
    assert_eq!(r.untrusted_counts, 1);
    assert_eq!(r.single_fallbacks, 10, "the garbage count is never trusted");
    assert!(fake::uninstall().unwrap().entries.is_empty());
}

#[test]
fn a_count_left_at_its_input_is_never_trusted() {
    let all = keys(6);
    let m = setup(&all, |_| true, FakeBatch::Supported);
    fake::with(|k| k.setup_error = Some(libc::EPERM));
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    assert_eq!(r.deleted, 6);
    assert_eq!((r.untrusted_counts, r.single_fallbacks), (1, 6));
    assert!(fake::uninstall().unwrap().entries.is_empty());
}

#[test]
fn invalid_keys_are_stepped_over() {
    let mut all = keys(10);
    all[5] = PidPage::with_prefix_len(100, 0, 120);
    let m = setup(&all, |i| i != 5, FakeBatch::Supported);
    let r = delete_keys(&m, &all, &opts(4, ResumePolicy::Batch));
    assert_eq!(
        (r.deleted, r.invalid, r.invalid_keys.clone()),
        (9, 1, vec![5])
    );
    assert!(fake::uninstall().unwrap().entries.is_empty());
}

#[test]
fn random_patterns_leave_nothing_behind() {
    let mut rng = crate::rng::Rng::new(0x2545F4914F6CDD1D);
    let mut rnd = move |n: u64| rng.below(n);
    for round in 0..300 {
        let n = 1 + rnd(300) as usize;
        let mut all = keys(n);
        let absent_pct = [0, 1, 10, 50, 100][round % 5];
        let present: Vec<bool> = (0..n).map(|_| rnd(100) >= absent_pct).collect();
        // duplicate keys: the second copy is absent
        let dups = rnd(3) as usize;
        for _ in 0..dups {
            let i = rnd(n as u64) as usize;
            all.push(all[i]);
        }
        let m = setup(&all[..n], |i| present[i], FakeBatch::Supported);
        let chunk = 1 + rnd(64) as usize;
        let policy = if round % 2 == 0 {
            ResumePolicy::Batch
        } else {
            ResumePolicy::Single
        };
        let r = delete_keys(&m, &all, &opts(chunk, policy));
        let want_deleted = present.iter().filter(|p| **p).count() as u64;
        assert_eq!(r.deleted, want_deleted, "round {round}");
        assert_eq!(r.total(), all.len() as u64);
        assert_eq!(r.absent, all.len() as u64 - want_deleted);
        let chunks = all.len().div_ceil(chunk) as u64;
        if policy == ResumePolicy::Batch {
            assert!(r.syscalls <= 1 + r.absent + chunks, "round {round}: {r:?}");
        }
        assert!(
            fake::uninstall().unwrap().entries.is_empty(),
            "round {round}"
        );
    }
}

#[test]
fn inserts_into_a_full_map_name_what_landed() {
    let all = keys(20);
    let vals = vec![MappingInfo::new(1, 0).unwrap(); 20];
    for batch in [FakeBatch::Supported, FakeBatch::NotSupported] {
        let mut k = FakeKernel::new(16, 16, 13);
        k.update_batch = batch;
        k.delete_batch = batch;
        fake::install(k);
        let map =
            MapHandle::create(crate::sys::bpf::MAP_TYPE_LPM_TRIE, "fake", 16, 16, 13, 1).unwrap();
        let m = BatchMap::probe::<PidPage, MappingInfo>(map);
        let r = insert_keys(&m, &all, &vals, BPF_ANY, &opts(8, ResumePolicy::Batch));
        assert_eq!(r.landed(), 13);
        assert!(r.full());
        let landed: Vec<PidPage> = r.landed_indices().map(|i| all[i]).collect();
        let d = delete_keys(&m, &landed, &EngineOptions::default());
        assert_eq!((d.deleted, d.absent), (13, 0));
        assert!(fake::uninstall().unwrap().entries.is_empty());
    }
}
