//! The batch engine: deletes (and inserts) key lists with
//! BPF_MAP_DELETE_BATCH / BPF_MAP_UPDATE_BATCH and applies the resume rule
//! of DESIGN §3 — when the kernel stops at `keys[count]`, that key is
//! classified, stepped over or retried, and the rest goes on. No key after a
//! failing one is ever left behind, and no key already processed is sent
//! again.

use crate::counters::{add, COUNTERS};
use crate::sys::bpf::{MapHandle, BPF_ANY};
use crate::sys::{Plain, SysError, ENOTSUPP};
use std::os::fd::AsFd;

/// What to do with the rest of a chunk after the kernel stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumePolicy {
    /// Step over the failing key and send the rest as the next batch.
    Batch,
    /// Step over the failing key and delete the rest one key per syscall.
    Single,
}

/// Whether a map takes batch commands, probed once at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSupport {
    Supported,
    /// ENOTSUPP: this map type has no batch op (e.g. LPM before 5.13).
    NotForMapType,
    /// EINVAL: the kernel does not know the command (before 5.6).
    NoCommand,
}

#[derive(Clone, Copy, Debug)]
pub struct EngineOptions {
    pub chunk: usize,
    pub policy: ResumePolicy,
    pub max_retries: u32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            chunk: 4096,
            policy: ResumePolicy::Batch,
            max_retries: 3,
        }
    }
}

/// A map with its probed batch capabilities.
#[derive(Debug)]
pub struct BatchMap {
    pub map: MapHandle,
    pub delete: BatchSupport,
    pub update: BatchSupport,
}

fn support_of<T>(r: Result<T, SysError>) -> BatchSupport {
    match r {
        Ok(_) => BatchSupport::Supported,
        Err(e) if e.errno() == ENOTSUPP => BatchSupport::NotForMapType,
        Err(_) => BatchSupport::NoCommand,
    }
}

impl BatchMap {
    /// Probes batch support with a batch of count 0 (0 = supported).
    pub fn probe<K: Plain, V: Plain>(map: MapHandle) -> BatchMap {
        let none: [K; 0] = [];
        let nov: [V; 0] = [];
        let delete = support_of(map.delete_batch(&none, 0).result);
        let update = support_of(map.update_batch(&none, &nov, 0, BPF_ANY).result);
        if delete != BatchSupport::Supported {
            log::info!(
                "{}: no batch delete ({delete:?}); single deletes",
                map.name()
            );
        }
        BatchMap {
            map,
            delete,
            update,
        }
    }

    /// The same map, its inserts one key per call (the `single` baseline
    /// of the benchmarks).
    pub fn without_update_batch(self) -> BatchMap {
        BatchMap {
            update: BatchSupport::NotForMapType,
            ..self
        }
    }

    /// Keys in the map, counted by walking it in the kernel.
    pub fn key_count<K: Plain>(&self) -> Result<usize, SysError> {
        Ok(self.map.keys::<K>(usize::MAX)?.len())
    }

    /// A map whose capabilities are forced (tests, benchmarks).
    pub fn with_support(map: MapHandle, delete: BatchSupport, update: BatchSupport) -> BatchMap {
        BatchMap {
            map,
            delete,
            update,
        }
    }
}

impl AsFd for BatchMap {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.map.as_fd()
    }
}

/// Outcome of a delete list, key by key and in totals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteReport {
    pub deleted: u64,
    pub absent: u64,
    pub invalid: u64,
    /// (index in the input, errno) of every key that could not be deleted.
    pub failed: Vec<(usize, i32)>,
    /// Indices of the absent keys.
    pub absent_keys: Vec<usize>,
    /// Indices of the invalid keys.
    pub invalid_keys: Vec<usize>,
    pub syscalls: u64,
    pub batch_calls: u64,
    pub resumes: u64,
    pub retries: u64,
    pub single_fallbacks: u64,
    pub untrusted_counts: u64,
}

impl DeleteReport {
    pub fn merge(&mut self, o: DeleteReport, index_offset: usize) {
        self.deleted += o.deleted;
        self.absent += o.absent;
        self.invalid += o.invalid;
        self.failed
            .extend(o.failed.into_iter().map(|(i, e)| (i + index_offset, e)));
        self.absent_keys
            .extend(o.absent_keys.into_iter().map(|i| i + index_offset));
        self.invalid_keys
            .extend(o.invalid_keys.into_iter().map(|i| i + index_offset));
        self.syscalls += o.syscalls;
        self.batch_calls += o.batch_calls;
        self.resumes += o.resumes;
        self.retries += o.retries;
        self.single_fallbacks += o.single_fallbacks;
        self.untrusted_counts += o.untrusted_counts;
    }

    /// Every key accounted for exactly once.
    pub fn total(&self) -> u64 {
        self.deleted + self.absent + self.invalid + self.failed.len() as u64
    }
}

fn is_transient(errno: i32) -> bool {
    matches!(
        errno,
        libc::EDEADLK | libc::ETIMEDOUT | libc::EBUSY | libc::EAGAIN | libc::EINTR | libc::ENOMEM
    )
}

/// Deletes every key of `keys` from `map`, whatever the kernel answers.
pub fn delete_keys<K: Plain>(map: &BatchMap, keys: &[K], opts: &EngineOptions) -> DeleteReport {
    let mut report = DeleteReport::default();
    let chunk = opts.chunk.max(1);
    for (ci, part) in keys.chunks(chunk).enumerate() {
        let base = ci * chunk;
        if map.delete == BatchSupport::Supported {
            delete_chunk(map, part, base, opts, &mut report);
        } else {
            for (i, k) in part.iter().enumerate() {
                delete_single(map, k, base + i, opts, &mut report, false);
            }
        }
    }
    publish_delete(&report);
    report
}

fn publish_delete(r: &DeleteReport) {
    let c = &COUNTERS;
    add(&c.batch_calls, r.batch_calls);
    add(&c.single_calls, r.syscalls - r.batch_calls);
    add(&c.keys_deleted, r.deleted);
    add(&c.keys_absent, r.absent);
    add(&c.keys_invalid, r.invalid);
    add(&c.keys_failed, r.failed.len() as u64);
    add(&c.resumes, r.resumes);
    add(&c.retries, r.retries);
    add(&c.single_fallbacks, r.single_fallbacks);
    add(&c.untrusted_counts, r.untrusted_counts);
}

/// One key, one syscall; transient errors retried a bounded number of times.
fn delete_single<K: Plain>(
    map: &BatchMap,
    key: &K,
    index: usize,
    opts: &EngineOptions,
    report: &mut DeleteReport,
    fallback: bool,
) {
    if fallback {
        report.single_fallbacks += 1;
    }
    let mut tries = 0;
    loop {
        report.syscalls += 1;
        match map.map.delete(key) {
            Ok(()) => report.deleted += 1,
            Err(e) => match e.errno() {
                libc::ENOENT => {
                    report.absent += 1;
                    report.absent_keys.push(index);
                }
                libc::EINVAL => {
                    report.invalid += 1;
                    report.invalid_keys.push(index);
                }
                errno if is_transient(errno) && tries < opts.max_retries => {
                    tries += 1;
                    report.retries += 1;
                    continue;
                }
                errno => {
                    crate::warn_limited!("delete failed", "{e} (key #{index})");
                    report.failed.push((index, errno));
                }
            },
        }
        return;
    }
}

fn delete_chunk<K: Plain>(
    map: &BatchMap,
    part: &[K],
    base: usize,
    opts: &EngineOptions,
    report: &mut DeleteReport,
) {
    let mut i = 0;
    let mut tries = 0;
    while i < part.len() {
        let rest = &part[i..];
        let n = rest.len() as u32;
        let answer = map.map.delete_batch(rest, n);
        report.syscalls += 1;
        report.batch_calls += 1;
        let err = match answer.result {
            Ok(()) => {
                report.deleted += n as u64;
                return;
            }
            Err(e) => e,
        };
        let count = answer.count;
        if count >= n {
            // Nothing can be said about what was processed: a setup error,
            // or a kernel before 6.8 that left count at its input value.
            report.untrusted_counts += 1;
            for (j, k) in rest.iter().enumerate() {
                delete_single(map, k, base + i + j, opts, report, true);
            }
            return;
        }
        report.deleted += count as u64;
        i += count as usize;
        if count > 0 {
            tries = 0;
        }
        let index = base + i;
        match err.errno() {
            libc::ENOENT => {
                report.absent += 1;
                report.absent_keys.push(index);
                i += 1;
            }
            libc::EINVAL => {
                report.invalid += 1;
                report.invalid_keys.push(index);
                i += 1;
            }
            errno if is_transient(errno) => {
                if tries < opts.max_retries {
                    tries += 1;
                    report.retries += 1;
                    continue; // the same key leads the next batch
                }
                tries = 0;
                delete_single(map, &part[i], index, opts, report, true);
                i += 1;
            }
            libc::EFAULT => {
                // the count may be wrong: finish the chunk key by key
                report.untrusted_counts += 1;
                for (j, k) in part[i..].iter().enumerate() {
                    delete_single(map, k, index + j, opts, report, true);
                }
                return;
            }
            errno => {
                crate::warn_limited!("delete failed", "{err} (key #{index})");
                report.failed.push((index, errno));
                i += 1;
            }
        }
        if i < part.len() {
            report.resumes += 1;
            if opts.policy == ResumePolicy::Single {
                for (j, k) in part[i..].iter().enumerate() {
                    delete_single(map, k, base + i + j, opts, report, false);
                }
                return;
            }
        }
    }
}

/// What happened to one key of an insert list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertOutcome {
    Landed,
    /// The map was full (E2BIG/ENOSPC): not inserted.
    Full,
    /// BPF_NOEXIST and the key existed: not changed.
    Exists,
    Invalid,
    Failed(i32),
}

/// Outcome of an insert list, key by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InsertReport {
    pub outcomes: Vec<InsertOutcome>,
    pub syscalls: u64,
    pub batch_calls: u64,
    pub resumes: u64,
    pub retries: u64,
}

impl InsertReport {
    pub fn landed(&self) -> usize {
        self.outcomes
            .iter()
            .filter(|o| **o == InsertOutcome::Landed)
            .count()
    }

    pub fn refused(&self) -> usize {
        self.outcomes.len() - self.landed()
    }

    /// Indices of the keys that landed in the map.
    pub fn landed_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| **o == InsertOutcome::Landed)
            .map(|(i, _)| i)
    }

    pub fn full(&self) -> bool {
        self.outcomes.contains(&InsertOutcome::Full)
    }
}

fn classify_insert(errno: i32) -> InsertOutcome {
    match errno {
        libc::E2BIG | libc::ENOSPC => InsertOutcome::Full,
        libc::EEXIST => InsertOutcome::Exists,
        libc::EINVAL => InsertOutcome::Invalid,
        e => InsertOutcome::Failed(e),
    }
}

/// Inserts `keys[i] -> values[i]`. Records exactly which keys landed; once
/// the map is full, the remaining keys are not tried and are reported Full.
/// The kernel's update batch only has BPF_ANY semantics, so other flags go
/// key by key.
pub fn insert_keys<K: Plain, V: Plain>(
    map: &BatchMap,
    keys: &[K],
    values: &[V],
    flags: u64,
    opts: &EngineOptions,
) -> InsertReport {
    let n = keys.len().min(values.len());
    let mut report = InsertReport {
        outcomes: Vec::with_capacity(n),
        ..Default::default()
    };
    let batch = map.update == BatchSupport::Supported && flags == BPF_ANY;
    let chunk = opts.chunk.max(1);
    let mut i = 0;
    let mut tries = 0;
    // once a key is refused as Full the map is full: stop (O(1) check)
    let stopped = |r: &InsertReport| r.outcomes.last() == Some(&InsertOutcome::Full);
    while i < n && !stopped(&report) {
        if !batch {
            insert_single(map, &keys[i], &values[i], flags, opts, &mut report);
            i += 1;
            continue;
        }
        let end = (i + chunk).min(n);
        let m = (end - i) as u32;
        let answer = map
            .map
            .update_batch(&keys[i..end], &values[i..end], m, BPF_ANY);
        report.syscalls += 1;
        report.batch_calls += 1;
        let err = match answer.result {
            Ok(()) => {
                report
                    .outcomes
                    .extend(std::iter::repeat_n(InsertOutcome::Landed, m as usize));
                i = end;
                continue;
            }
            Err(e) => e,
        };
        if answer.count >= m || err.errno() == libc::EFAULT {
            // untrusted count: an update is idempotent, redo key by key
            for j in i..end {
                if stopped(&report) {
                    break;
                }
                insert_single(map, &keys[j], &values[j], flags, opts, &mut report);
            }
            i = end;
            continue;
        }
        let c = answer.count as usize;
        report
            .outcomes
            .extend(std::iter::repeat_n(InsertOutcome::Landed, c));
        i += c;
        if c > 0 {
            tries = 0;
        }
        let errno = err.errno();
        if is_transient(errno) && tries < opts.max_retries {
            tries += 1;
            report.retries += 1;
            continue;
        }
        if is_transient(errno) {
            tries = 0;
            insert_single(map, &keys[i], &values[i], flags, opts, &mut report);
        } else {
            report.outcomes.push(classify_insert(errno));
        }
        i += 1;
        if i < n {
            report.resumes += 1;
        }
    }
    // keys never tried because the map is full
    while report.outcomes.len() < n {
        report.outcomes.push(InsertOutcome::Full);
    }
    let c = &COUNTERS;
    add(&c.batch_calls, report.batch_calls);
    add(&c.single_calls, report.syscalls - report.batch_calls);
    add(&c.keys_inserted, report.landed() as u64);
    add(&c.keys_refused, report.refused() as u64);
    add(&c.resumes, report.resumes);
    add(&c.retries, report.retries);
    report
}

fn insert_single<K: Plain, V: Plain>(
    map: &BatchMap,
    key: &K,
    value: &V,
    flags: u64,
    opts: &EngineOptions,
    report: &mut InsertReport,
) {
    let mut tries = 0;
    loop {
        report.syscalls += 1;
        match map.map.update(key, value, flags) {
            Ok(()) => report.outcomes.push(InsertOutcome::Landed),
            Err(e) if is_transient(e.errno()) && tries < opts.max_retries => {
                tries += 1;
                report.retries += 1;
                continue;
            }
            Err(e) => report.outcomes.push(classify_insert(e.errno())),
        }
        return;
    }
}

#[cfg(test)]
mod tests;

/// The upstream profiler's deletion, kept as a baseline: one batch, and on
/// any error every key of the list again, one syscall each.
pub fn reissue_all<K: Plain>(map: &BatchMap, keys: &[K]) -> DeleteReport {
    let mut report = DeleteReport::default();
    if keys.is_empty() {
        return report;
    }
    let answer = map.map.delete_batch(keys, keys.len() as u32);
    report.syscalls += 1;
    report.batch_calls += 1;
    if answer.result.is_ok() {
        report.deleted = keys.len() as u64;
    } else {
        for (i, k) in keys.iter().enumerate() {
            report.syscalls += 1;
            match map.map.delete(k) {
                Ok(()) => report.deleted += 1,
                Err(e) if e.errno() == libc::ENOENT => {
                    report.absent += 1;
                    report.absent_keys.push(i);
                }
                Err(e) if e.errno() == libc::EINVAL => {
                    report.invalid += 1;
                    report.invalid_keys.push(i);
                }
                Err(e) => report.failed.push((i, e.errno())),
            }
        }
    }
    publish_delete(&report);
    report
}

/// One batch, no recovery: what is left after a stop stays (benchmarks).
pub fn batch_once<K: Plain>(map: &BatchMap, keys: &[K]) -> DeleteReport {
    let mut report = DeleteReport::default();
    let answer = map.map.delete_batch(keys, keys.len() as u32);
    report.syscalls = 1;
    report.batch_calls = 1;
    report.deleted = if answer.result.is_ok() {
        keys.len() as u64
    } else {
        (answer.count as u64).min(keys.len() as u64)
    };
    report
}

/// One delete syscall per key (benchmarks).
pub fn single_all<K: Plain>(map: &BatchMap, keys: &[K]) -> DeleteReport {
    let mut report = DeleteReport::default();
    let opts = EngineOptions::default();
    for (i, k) in keys.iter().enumerate() {
        delete_single(map, k, i, &opts, &mut report, false);
    }
    report
}
