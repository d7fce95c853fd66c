//! Engine tests through the fake kernel: no root needed.

use super::*;
use crate::abi::{MappingInfo, PidPage};
use crate::sys::fake::{self, FakeBatch, FakeMap};
use libbpf_sys as sys;

fn keys(n: usize) -> Vec<PidPage> {
    (0..n)
        .map(|i| PidPage::new(100, 0x1000 * (i as u64 + 1), 52))
        .collect()
}

/// A fake map holding `present` of `all`.
fn setup(all: &[PidPage], present: impl Fn(usize) -> bool, batch: FakeBatch) -> BatchMap {
    let mut k = FakeMap::new(16, 16, 1 << 20);
    k.delete_batch = batch;
    k.update_batch = batch;
    for (i, key) in all.iter().enumerate() {
        if present(i) {
            let kb = crate::sys::bytes_of(std::slice::from_ref(key)).to_vec();
            k.entries.insert(kb, vec![0; 16]);
        }
    }
    fake::bpf::install(k);
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
    assert!(fake::bpf::with(|k| k.entries.is_empty()));
    fake::bpf::uninstall();
}

#[test]
fn single_policy_finishes_the_chunk_key_by_key() {
    let all = keys(10);
    let m = setup(&all, |i| i != 3, FakeBatch::Supported);
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Single));
    assert_eq!((r.deleted, r.absent), (9, 1));
    assert_eq!((r.batch_calls, r.syscalls), (1, 7));
    assert!(fake::bpf::with(|k| k.entries.is_empty()));
    fake::bpf::uninstall();
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
        let k = fake::bpf::uninstall().unwrap();
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
        fake::bpf::with(|k| k.transient.insert(kb, (errno, times)));
        let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
        assert_eq!(r.deleted, 8, "{errno}");
        assert_eq!(r.retries, retries, "{errno}");
        assert_eq!(r.single_fallbacks, fallback, "{errno}");
        assert!(r.failed.is_empty());
        assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
    }
}

#[test]
fn efault_switches_the_rest_of_the_chunk_to_single_deletes() {
    let all = keys(10);
    let m = setup(&all, |i| i != 7, FakeBatch::Supported);
    fake::bpf::with(|k| k.efault_at = Some(4));
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    // keys 0..4 went with the faulting batch (count 4); key 4, which the
    // kernel could not copy, and the rest go one by one
    assert!(r.failed.is_empty(), "EFAULT is not a key's failure: {r:?}");
    assert_eq!(
        (r.deleted, r.absent, r.absent_keys.clone()),
        (9, 1, vec![7])
    );
    assert_eq!(r.untrusted_counts, 1);
    assert_eq!(r.single_fallbacks, 6, "keys 4..10 one by one");
    assert_eq!((r.batch_calls, r.syscalls), (1, 7));
    assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
}

#[test]
fn efault_with_a_count_past_the_list_is_not_trusted() {
    let all = keys(6);
    let m = setup(&all, |_| true, FakeBatch::Supported);
    // EFAULT writing count back: the count stays at its input
    fake::bpf::with(|k| k.setup_error = Some(libc::EFAULT));
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    assert!(r.failed.is_empty(), "{r:?}");
    assert_eq!(
        (r.deleted, r.untrusted_counts, r.single_fallbacks),
        (6, 1, 6)
    );
    assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
}

#[test]
fn a_count_left_at_its_input_is_never_trusted() {
    let all = keys(6);
    let m = setup(&all, |_| true, FakeBatch::Supported);
    fake::bpf::with(|k| k.setup_error = Some(libc::EPERM));
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    assert_eq!(r.deleted, 6);
    assert_eq!((r.untrusted_counts, r.single_fallbacks), (1, 6));
    assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
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
    assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
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
            fake::bpf::uninstall().unwrap().entries.is_empty(),
            "round {round}"
        );
    }
}

#[test]
fn inserts_into_a_full_map_name_what_landed() {
    let all = keys(20);
    let vals = vec![MappingInfo::new(1, 0).unwrap(); 20];
    for batch in [FakeBatch::Supported, FakeBatch::NotSupported] {
        let mut k = FakeMap::new(16, 16, 13);
        k.update_batch = batch;
        k.delete_batch = batch;
        fake::bpf::install(k);
        let map =
            MapHandle::create(crate::sys::bpf::MAP_TYPE_LPM_TRIE, "fake", 16, 16, 13, 1).unwrap();
        let m = BatchMap::probe::<PidPage, MappingInfo>(map);
        let r = insert_keys(&m, &all, &vals, BPF_ANY, &opts(8, ResumePolicy::Batch));
        assert_eq!(r.landed(), 13);
        assert!(r.full());
        let landed: Vec<PidPage> = r.landed_indices().map(|i| all[i]).collect();
        let d = delete_keys(&m, &landed, &EngineOptions::default());
        assert_eq!((d.deleted, d.absent), (13, 0));
        assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
    }
}

#[test]
fn the_probe_tells_a_map_type_without_batch_from_a_kernel_without_the_command() {
    for (batch, want) in [
        (FakeBatch::Supported, BatchSupport::Supported),
        (FakeBatch::NotSupported, BatchSupport::NotForMapType),
        (FakeBatch::Unknown, BatchSupport::NoCommand),
    ] {
        let m = setup(&keys(1), |_| true, batch);
        assert_eq!((m.delete, m.update), (want, want), "{batch:?}");
        fake::bpf::uninstall();
    }
}

#[test]
fn merged_reports_add_up_and_shift_indices() {
    let mut a = DeleteReport {
        deleted: 5,
        absent: 1,
        invalid: 3,
        failed: vec![(2, libc::EPERM)],
        absent_keys: vec![0],
        invalid_keys: vec![1],
        syscalls: 3,
        batch_calls: 1,
        resumes: 1,
        retries: 1,
        single_fallbacks: 1,
        untrusted_counts: 1,
    };
    let b = a.clone();
    a.merge(b, 10);
    assert_eq!(
        a,
        DeleteReport {
            deleted: 10,
            absent: 2,
            invalid: 6,
            failed: vec![(2, libc::EPERM), (12, libc::EPERM)],
            absent_keys: vec![0, 10],
            invalid_keys: vec![1, 11],
            syscalls: 6,
            batch_calls: 2,
            resumes: 2,
            retries: 2,
            single_fallbacks: 2,
            untrusted_counts: 2,
        }
    );
    assert_eq!(a.total(), 20);
}

#[test]
fn single_deletes_classify_invalid_keys_and_bound_retries() {
    let mut all = keys(8);
    all[2] = PidPage::with_prefix_len(100, 0, 120);
    let m = setup(&all, |i| i != 2, FakeBatch::NotSupported);
    let busy = |i: usize| crate::sys::bytes_of(&all[i..i + 1]).to_vec();
    fake::bpf::with(|k| {
        k.transient.insert(busy(4), (libc::EBUSY, 3)); // the last retry lands
        k.transient.insert(busy(6), (libc::EAGAIN, 4)); // one too many
    });
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    assert_eq!((r.invalid, r.invalid_keys.clone()), (1, vec![2]));
    assert_eq!(r.failed, vec![(6, libc::EAGAIN)]);
    assert_eq!((r.deleted, r.retries), (6, 6), "3 retries each, no more");
    assert_eq!(r.syscalls, 8 + 6);
    fake::bpf::uninstall();
}

#[test]
fn a_last_absent_key_ends_the_chunk_without_another_batch() {
    let all = keys(6);
    let m = setup(&all, |i| i != 5, FakeBatch::Supported);
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    assert_eq!((r.deleted, r.absent_keys.clone()), (5, vec![5]));
    assert_eq!((r.batch_calls, r.syscalls, r.resumes), (1, 1, 0));
    fake::bpf::uninstall();
}

#[test]
fn an_untrusted_count_after_a_resume_keeps_the_indices() {
    let all = keys(10);
    let m = setup(&all, |i| i != 3 && i != 7, FakeBatch::Supported);
    // the first batch stops at key 3; the second answers a setup error
    fake::bpf::with(|k| {
        k.setup_error = Some(libc::EPERM);
        k.setup_error_after = 1;
    });
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    assert_eq!((r.deleted, r.absent_keys.clone()), (8, vec![3, 7]));
    assert_eq!((r.untrusted_counts, r.single_fallbacks), (1, 6));
    assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
}

fn key_bytes(all: &[PidPage], i: usize) -> Vec<u8> {
    crate::sys::bytes_of(&all[i..i + 1]).to_vec()
}

#[test]
fn each_transient_key_of_a_chunk_gets_its_own_retries() {
    let all = keys(10);
    let m = setup(&all, |_| true, FakeBatch::Supported);
    fake::bpf::with(|k| {
        k.transient.insert(key_bytes(&all, 2), (libc::EBUSY, 3));
        k.transient.insert(key_bytes(&all, 6), (libc::EBUSY, 3));
    });
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    assert_eq!((r.deleted, r.retries, r.single_fallbacks), (10, 6, 0));
    assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
}

#[test]
fn a_key_still_busy_after_its_retries_goes_single() {
    let all = keys(8);
    let m = setup(&all, |_| true, FakeBatch::Supported);
    // three retries in the batch, the fourth attempt fails too: single
    fake::bpf::with(|k| k.transient.insert(key_bytes(&all, 3), (libc::EBUSY, 4)));
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    assert_eq!((r.deleted, r.retries, r.single_fallbacks), (8, 3, 1));
    assert_eq!(r.absent, 0, "no key is sent twice");
    assert!(r.failed.is_empty());
    assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
}

#[test]
fn a_key_that_fails_for_good_is_named_and_the_rest_deleted() {
    let all = keys(10);
    let m = setup(&all, |_| true, FakeBatch::Supported);
    fake::bpf::with(|k| k.transient.insert(key_bytes(&all, 3), (libc::EPERM, 1)));
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    assert_eq!(r.failed, vec![(3, libc::EPERM)]);
    assert_eq!((r.deleted, r.resumes, r.batch_calls), (9, 1, 2));
    assert_eq!(r.total(), 10);
    let left = fake::bpf::uninstall().unwrap().entries;
    assert_eq!(
        left.keys().cloned().collect::<Vec<_>>(),
        vec![key_bytes(&all, 3)]
    );
}

/// Keys that fail one after another make one warning line per interval,
/// not one each (the rest are counted as suppressed).
#[test]
fn failing_keys_are_warned_at_a_limited_rate() {
    let all = keys(50);
    let m = setup(&all, |_| true, FakeBatch::Supported);
    fake::bpf::with(|k| {
        for i in 0..all.len() {
            k.transient.insert(key_bytes(&all, i), (libc::EPERM, 1));
        }
    });
    let before = crate::counters::COUNTERS.snapshot().warnings_suppressed;
    let r = delete_keys(&m, &all, &opts(4096, ResumePolicy::Batch));
    assert_eq!(r.failed.len(), 50);
    let suppressed = crate::counters::COUNTERS.snapshot().warnings_suppressed - before;
    assert!(suppressed >= 49, "{suppressed} of 50 warnings suppressed");
    fake::bpf::uninstall();
}

#[test]
fn the_single_policy_keeps_indices_in_later_chunks() {
    let all = keys(10);
    let m = setup(&all, |i| i != 5 && i != 7, FakeBatch::Supported);
    let r = delete_keys(&m, &all, &opts(4, ResumePolicy::Single));
    assert_eq!((r.deleted, r.absent_keys.clone()), (8, vec![5, 7]));
    assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
}

fn insert_setup(max: usize, batch: FakeBatch, present: &[PidPage]) -> BatchMap {
    let mut k = FakeMap::new(16, 16, max);
    k.update_batch = batch;
    k.delete_batch = batch;
    for key in present {
        k.entries.insert(
            crate::sys::bytes_of(std::slice::from_ref(key)).to_vec(),
            vec![0; 16],
        );
    }
    fake::bpf::install(k);
    let map = MapHandle::create(
        crate::sys::bpf::MAP_TYPE_LPM_TRIE,
        "fake",
        16,
        16,
        max as u32,
        1,
    )
    .unwrap();
    BatchMap::probe::<PidPage, MappingInfo>(map)
}

use InsertOutcome::{Exists, Full, Invalid, Landed};

#[test]
fn an_insert_stops_at_a_full_map_and_reports_the_rest_full() {
    let all = keys(8);
    let vals = vec![MappingInfo::new(1, 0).unwrap(); 8];
    let m = insert_setup(5, FakeBatch::Supported, &[]);
    let r = insert_keys(&m, &all, &vals, BPF_ANY, &opts(4, ResumePolicy::Batch));
    assert_eq!(
        r.outcomes,
        vec![Landed, Landed, Landed, Landed, Landed, Full, Full, Full]
    );
    assert_eq!((r.landed(), r.refused(), r.full()), (5, 3, true));
    assert_eq!((r.batch_calls, r.syscalls, r.resumes), (2, 2, 1));
    assert_eq!(fake::bpf::uninstall().unwrap().entries.len(), 5);
}

#[test]
fn an_insert_steps_over_an_invalid_key_and_retries_a_busy_one() {
    let mut all = keys(6);
    all[2] = PidPage::with_prefix_len(100, 0, 120);
    let vals = vec![MappingInfo::new(1, 0).unwrap(); 6];
    let m = insert_setup(100, FakeBatch::Supported, &[]);
    // busy five times: four batch attempts (three retries), then key by
    // key: one more failure, one retry, landed
    fake::bpf::with(|k| k.transient.insert(key_bytes(&all, 4), (libc::EBUSY, 5)));
    let r = insert_keys(&m, &all, &vals, BPF_ANY, &opts(4096, ResumePolicy::Batch));
    assert_eq!(
        r.outcomes,
        vec![Landed, Landed, Invalid, Landed, Landed, Landed]
    );
    assert_eq!((r.landed(), r.refused(), r.full()), (5, 1, false));
    assert_eq!((r.retries, r.resumes), (4, 2));
    assert_eq!((r.batch_calls, r.syscalls), (6, 8));
    assert_eq!(fake::bpf::uninstall().unwrap().entries.len(), 5);
}

#[test]
fn an_insert_with_noexist_goes_key_by_key_and_reports_existing_keys() {
    let all = keys(5);
    let vals = vec![MappingInfo::new(1, 0).unwrap(); 5];
    let m = insert_setup(100, FakeBatch::Supported, &all[1..2]);
    let r = insert_keys(
        &m,
        &all,
        &vals,
        sys::BPF_NOEXIST as u64,
        &opts(4096, ResumePolicy::Batch),
    );
    assert_eq!(r.outcomes, vec![Landed, Exists, Landed, Landed, Landed]);
    assert_eq!((r.batch_calls, r.syscalls), (0, 5));
    fake::bpf::uninstall();
}

#[test]
fn an_untrusted_insert_count_is_redone_key_by_key() {
    let all = keys(6);
    let vals = vec![MappingInfo::new(1, 0).unwrap(); 6];
    let m = insert_setup(100, FakeBatch::Supported, &[]);
    fake::bpf::with(|k| k.setup_error = Some(libc::EPERM));
    let r = insert_keys(&m, &all, &vals, BPF_ANY, &opts(4096, ResumePolicy::Batch));
    assert_eq!(r.landed(), 6);
    assert_eq!((r.batch_calls, r.syscalls), (1, 7));
    assert_eq!(fake::bpf::uninstall().unwrap().entries.len(), 6);
}

#[test]
fn single_inserts_retry_a_bounded_number_of_times() {
    let all = keys(4);
    let vals = vec![MappingInfo::new(1, 0).unwrap(); 4];
    let m = insert_setup(100, FakeBatch::NotSupported, &[]);
    fake::bpf::with(|k| {
        k.transient.insert(key_bytes(&all, 1), (libc::EAGAIN, 3));
        k.transient.insert(key_bytes(&all, 2), (libc::EAGAIN, 4));
    });
    let r = insert_keys(&m, &all, &vals, BPF_ANY, &opts(4096, ResumePolicy::Batch));
    assert_eq!(
        r.outcomes,
        vec![Landed, Landed, InsertOutcome::Failed(libc::EAGAIN), Landed]
    );
    assert_eq!((r.retries, r.syscalls, r.batch_calls), (6, 4 + 6, 0));
    fake::bpf::uninstall();
}

#[test]
fn the_benchmark_baselines_do_what_they_say() {
    let all = keys(6);
    // reissue-all: one batch, stopped by the absent key 2, then every key
    // again one by one (0 and 1 went with the batch: absent then); key 4
    // is malformed, key 5 refused once
    let mut odd = all.clone();
    odd[4] = PidPage::with_prefix_len(100, 0, 120);
    let m = setup(&odd, |i| i != 2 && i != 4, FakeBatch::Supported);
    fake::bpf::with(|k| k.transient.insert(key_bytes(&odd, 5), (libc::EPERM, 1)));
    let r = reissue_all(&m, &odd);
    assert_eq!(
        (r.deleted, r.absent, r.absent_keys.clone()),
        (1, 3, vec![0, 1, 2])
    );
    assert_eq!((r.invalid, r.invalid_keys.clone()), (1, vec![4]));
    assert_eq!(r.failed, vec![(5, libc::EPERM)]);
    assert_eq!((r.batch_calls, r.syscalls), (1, 7));
    assert_eq!(fake::bpf::uninstall().unwrap().entries.len(), 1);
    // batch-once: what follows the absent key stays
    let m = setup(&all, |i| i != 2, FakeBatch::Supported);
    let r = batch_once(&m, &all);
    assert_eq!((r.deleted, r.batch_calls, r.syscalls), (2, 1, 1));
    assert_eq!(fake::bpf::uninstall().unwrap().entries.len(), 3);
    // single: one syscall per key
    let m = setup(&all, |i| i != 2, FakeBatch::Supported);
    let r = single_all(&m, &all);
    assert_eq!((r.deleted, r.absent_keys.clone()), (5, vec![2]));
    assert_eq!((r.batch_calls, r.syscalls), (0, 6));
    assert!(fake::bpf::uninstall().unwrap().entries.is_empty());
    // an empty list costs nothing
    let m = setup(&all, |_| true, FakeBatch::Supported);
    assert_eq!(reissue_all::<PidPage>(&m, &[]).syscalls, 0);
    fake::bpf::uninstall();
}

#[test]
fn each_busy_key_of_an_insert_gets_its_own_batch_retries() {
    let all = keys(8);
    let vals = vec![MappingInfo::new(1, 0).unwrap(); 8];
    let m = insert_setup(100, FakeBatch::Supported, &[]);
    fake::bpf::with(|k| {
        k.transient.insert(key_bytes(&all, 2), (libc::EBUSY, 3));
        k.transient.insert(key_bytes(&all, 5), (libc::EBUSY, 3));
    });
    let r = insert_keys(&m, &all, &vals, BPF_ANY, &opts(4096, ResumePolicy::Batch));
    assert_eq!((r.landed(), r.retries), (8, 6));
    assert_eq!(r.batch_calls, r.syscalls, "no key went key by key");
    fake::bpf::uninstall();
}

#[test]
fn an_insert_whose_last_key_is_refused_does_not_count_a_resume() {
    let mut all = keys(4);
    all[3] = PidPage::with_prefix_len(100, 0, 120);
    let vals = vec![MappingInfo::new(1, 0).unwrap(); 4];
    let m = insert_setup(100, FakeBatch::Supported, &[]);
    let r = insert_keys(&m, &all, &vals, BPF_ANY, &opts(4096, ResumePolicy::Batch));
    assert_eq!(r.outcomes, vec![Landed, Landed, Landed, Invalid]);
    assert_eq!((r.resumes, r.batch_calls), (0, 1));
    fake::bpf::uninstall();
}
