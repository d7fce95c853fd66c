//! `pidmap bench delete|insert`: each strategy side by side in one run, on
//! fresh kernel maps, with what is left read back from the kernel.

use crate::abi::{MappingInfo, PidPage};
use crate::counters::{self, COUNTERS};
use crate::error::{Error, Result};
use crate::maps::engine::{self, BatchMap, DeleteReport, EngineOptions, ResumePolicy};
use crate::sys::bpf::{MapHandle, BPF_ANY, F_NO_PREALLOC, MAP_TYPE_HASH, MAP_TYPE_LPM_TRIE};
use std::time::Instant;

pub const DELETE_STRATEGIES: [&str; 5] = [
    "resume",
    "resume-single",
    "reissue-all",
    "single",
    "batch-once",
];

use crate::rng::Rng;

/// The kind of kernel map a benchmark runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Lpm,
    Hash,
}

impl MapKind {
    pub const fn name(self) -> &'static str {
        match self {
            MapKind::Lpm => "lpm",
            MapKind::Hash => "hash",
        }
    }
}

/// Where the absent keys of the delete benchmark sit in the key list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    Random,
    Front,
    Middle,
    Back,
}

impl Pattern {
    pub const fn name(self) -> &'static str {
        match self {
            Pattern::Random => "random",
            Pattern::Front => "front",
            Pattern::Middle => "middle",
            Pattern::Back => "back",
        }
    }
}

impl std::fmt::Display for MapKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `pidmap bench delete`.
#[derive(Clone, Debug, PartialEq)]
pub struct DeleteOpts {
    pub map: MapKind,
    pub keys: usize,
    pub missing_pct: f64,
    pub pattern: Pattern,
    pub reps: usize,
    pub chunk: usize,
    pub json: bool,
}

impl Default for DeleteOpts {
    fn default() -> DeleteOpts {
        DeleteOpts {
            map: MapKind::Lpm,
            keys: 100_000,
            missing_pct: 1.0,
            pattern: Pattern::Random,
            reps: 5,
            chunk: EngineOptions::default().chunk,
            json: false,
        }
    }
}

/// `pidmap bench insert`.
#[derive(Clone, Debug, PartialEq)]
pub struct InsertOpts {
    pub map: MapKind,
    pub keys: usize,
    pub reps: usize,
    pub json: bool,
}

impl Default for InsertOpts {
    fn default() -> InsertOpts {
        InsertOpts {
            map: MapKind::Lpm,
            keys: 100_000,
            reps: 5,
            json: false,
        }
    }
}

/// What one benchmark key costs, estimated high: its key and value and
/// the bench's copies of them here (about 70 B), and its node in the
/// kernel map (about 100 B for an LPM trie or hash element).
pub const BYTES_PER_KEY: u64 = 256;

/// The most keys a benchmark map takes, whatever the memory: a BPF map's
/// size is a u32, and 2^30 keys is already 256 GiB at [`BYTES_PER_KEY`].
pub const MAX_BENCH_KEYS: u64 = 1 << 30;

/// MemAvailable of /proc/meminfo, in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    kb.checked_mul(1024)
}

/// Whether `keys` benchmark keys fit the hard cap and `available` bytes
/// of memory (when known); the error says how much they need.
pub fn keys_fit(cmd: &str, keys: u64, available: Option<u64>) -> std::result::Result<(), String> {
    if keys > MAX_BENCH_KEYS {
        return Err(format!(
            "bench {cmd} --keys {keys}: more than the {MAX_BENCH_KEYS} keys a benchmark map may hold"
        ));
    }
    let need = keys * BYTES_PER_KEY;
    match available {
        Some(avail) if need > avail => Err(format!(
            "bench {cmd} --keys {keys}: needs about {} MiB ({BYTES_PER_KEY} B a key, here and in the kernel), \
             more than the {} MiB available (MemAvailable in /proc/meminfo); use fewer keys",
            need >> 20,
            avail >> 20
        )),
        _ => Ok(()),
    }
}

/// Checks `--keys` against memory before anything is allocated.
fn check_keys(cmd: &str, keys: usize) -> Result<()> {
    keys_fit(cmd, keys as u64, mem_available()).map_err(|e| {
        counters::add(&COUNTERS.inputs_refused, 1);
        Error::new(e)
    })
}

/// `n` distinct keys in sorted order: 1000 blocks per pid.
pub fn bench_keys(n: usize) -> Vec<PidPage> {
    (0..n)
        .map(|i| {
            PidPage::new(
                1000 + (i / 1000) as u32,
                0x7f00_0000_0000 + ((i % 1000) as u64) * 0x1000,
                52,
            )
        })
        .collect()
}

/// Which indices of `n` are absent: `pct` percent placed by `pattern`.
pub fn missing_indices(n: usize, pct: f64, pattern: Pattern, rng: &mut Rng) -> Vec<bool> {
    let m = ((n as f64) * pct / 100.0).round() as usize;
    let m = m.min(n);
    let mut absent = vec![false; n];
    match pattern {
        Pattern::Front => absent[..m].iter_mut().for_each(|a| *a = true),
        Pattern::Back => absent[n - m..].iter_mut().for_each(|a| *a = true),
        Pattern::Middle => {
            let s = (n - m) / 2;
            absent[s..s + m].iter_mut().for_each(|a| *a = true);
        }
        Pattern::Random => {
            let mut placed = 0;
            while placed < m {
                let i = rng.below(n as u64) as usize;
                if !absent[i] {
                    absent[i] = true;
                    placed += 1;
                }
            }
        }
    }
    absent
}

fn fresh_map(kind: MapKind, n: usize) -> Result<BatchMap> {
    let max = n.max(1) as u32;
    let map = match kind {
        MapKind::Hash => MapHandle::create(MAP_TYPE_HASH, "bench_hash", 16, 16, max, 0)?,
        MapKind::Lpm => {
            MapHandle::create(MAP_TYPE_LPM_TRIE, "bench_lpm", 16, 16, max, F_NO_PREALLOC)?
        }
    };
    Ok(BatchMap::probe::<PidPage, MappingInfo>(map))
}

fn fill(map: &BatchMap, keys: &[PidPage]) -> Result<()> {
    let vals = vec![MappingInfo::new(1, 0).unwrap_or_default(); keys.len()];
    let r = engine::insert_keys(map, keys, &vals, BPF_ANY, &EngineOptions::default());
    if r.landed() != keys.len() {
        return Err(crate::error::Error::new(format!(
            "filling the benchmark map: only {} of {} keys landed",
            r.landed(),
            keys.len()
        )));
    }
    Ok(())
}

/// Entries left in the map, counted by walking it in the kernel.
pub fn left_in_map(map: &BatchMap) -> Result<u64> {
    Ok(map.key_count::<PidPage>()? as u64)
}

pub fn run_strategy(
    strategy: &str,
    map: &BatchMap,
    keys: &[PidPage],
    chunk: usize,
) -> DeleteReport {
    let opts = |policy| EngineOptions {
        chunk,
        policy,
        ..Default::default()
    };
    match strategy {
        "resume" => engine::delete_keys(map, keys, &opts(ResumePolicy::Batch)),
        "resume-single" => engine::delete_keys(map, keys, &opts(ResumePolicy::Single)),
        "reissue-all" => engine::reissue_all(map, keys),
        "single" => engine::single_all(map, keys),
        _ => engine::batch_once(map, keys),
    }
}

#[derive(Clone, Debug)]
pub struct DeleteRow {
    pub strategy: &'static str,
    pub ns_per_key: f64,
    pub syscalls: u64,
    pub left_in_map: u64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn delete_bench(b: &DeleteOpts) -> Result<Vec<DeleteRow>> {
    check_keys("delete", b.keys)?;
    let keys = bench_keys(b.keys);
    let mut rows = Vec::new();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); DELETE_STRATEGIES.len()];
    let mut last: Vec<(u64, u64)> = vec![(0, 0); DELETE_STRATEGIES.len()];
    for rep in 0..b.reps {
        let mut rng = Rng::new(0x5eed + rep as u64);
        let absent = missing_indices(keys.len(), b.missing_pct, b.pattern, &mut rng);
        let present: Vec<PidPage> = keys
            .iter()
            .zip(&absent)
            .filter(|(_, a)| !**a)
            .map(|(k, _)| *k)
            .collect();
        // alternate the order so no strategy always runs on a warm cache
        let order: Vec<usize> = if rep % 2 == 0 {
            (0..DELETE_STRATEGIES.len()).collect()
        } else {
            (0..DELETE_STRATEGIES.len()).rev().collect()
        };
        for si in order {
            let map = fresh_map(b.map, b.keys)?;
            fill(&map, &present)?;
            let t = Instant::now();
            let r = run_strategy(DELETE_STRATEGIES[si], &map, &keys, b.chunk);
            let ns = t.elapsed().as_nanos() as f64 / keys.len() as f64;
            times[si].push(ns);
            last[si] = (r.syscalls, left_in_map(&map)?);
        }
    }
    for (si, s) in DELETE_STRATEGIES.iter().enumerate() {
        rows.push(DeleteRow {
            strategy: s,
            ns_per_key: median(&mut times[si]),
            syscalls: last[si].0,
            left_in_map: last[si].1,
        });
    }
    Ok(rows)
}

/// The kernel's own cost in this run, next to which the speed-ups read:
/// one key per syscall (`single`) and one batch (`batch-once`, only when
/// it deleted every key: with absent keys it stops at the first).
pub fn kernel_cost(rows: &[DeleteRow]) -> String {
    let find = |s: &str| rows.iter().find(|r| r.strategy == s);
    match (find("single"), find("batch-once")) {
        (Some(s), Some(b)) if b.left_in_map == 0 && b.ns_per_key > 0.0 => format!(
            "kernel cost in this run: single delete {:.0} ns/key, batch delete {:.0} ns/key \
             (single/batch {:.2}x)",
            s.ns_per_key,
            b.ns_per_key,
            s.ns_per_key / b.ns_per_key
        ),
        (Some(s), _) => format!(
            "kernel cost in this run: single delete {:.0} ns/key; batch delete not measurable \
             here (a batch stops at the first absent key: run with --missing-pct 0)",
            s.ns_per_key
        ),
        _ => String::new(),
    }
}

pub fn print_delete(b: &DeleteOpts, rows: &[DeleteRow]) {
    if b.json {
        for r in rows {
            println!(
                "{{\"strategy\":\"{}\",\"map\":\"{}\",\"keys\":{},\"missing_pct\":{},\"pattern\":\"{}\",\"ns_per_key\":{:.1},\"syscalls\":{},\"left_in_map\":{}}}",
                r.strategy, b.map, b.keys, b.missing_pct, b.pattern, r.ns_per_key, r.syscalls, r.left_in_map
            );
        }
        return;
    }
    println!(
        "bench delete: map {} keys {} missing {}% ({}) reps {} (median)",
        b.map, b.keys, b.missing_pct, b.pattern, b.reps
    );
    let base = rows
        .iter()
        .find(|r| r.strategy == "resume")
        .map_or(1.0, |r| r.ns_per_key);
    println!(
        "{:<14} {:>10} {:>9} {:>10} {:>12}",
        "strategy", "ns/key", "vs resume", "syscalls", "left_in_map"
    );
    for r in rows {
        println!(
            "{:<14} {:>10.1} {:>8.2}x {:>10} {:>12}",
            r.strategy,
            r.ns_per_key,
            r.ns_per_key / base,
            r.syscalls,
            r.left_in_map
        );
    }
    println!("{}", kernel_cost(rows));
}

pub fn insert_bench(b: &InsertOpts) -> Result<()> {
    check_keys("insert", b.keys)?;
    let keys = bench_keys(b.keys);
    let vals = vec![MappingInfo::new(1, 0).unwrap_or_default(); keys.len()];
    let strategies = ["batch", "single"];
    let mut times = [Vec::new(), Vec::new()];
    let mut calls = [0u64; 2];
    let mut landed = [0usize; 2];
    for _ in 0..b.reps {
        for (si, s) in strategies.iter().enumerate() {
            let map = fresh_map(b.map, b.keys)?;
            let map = if *s == "single" {
                map.without_update_batch()
            } else {
                map
            };
            let t = Instant::now();
            let r = engine::insert_keys(&map, &keys, &vals, BPF_ANY, &EngineOptions::default());
            times[si].push(t.elapsed().as_nanos() as f64 / keys.len() as f64);
            calls[si] = r.syscalls;
            landed[si] = left_in_map(&map)? as usize;
        }
    }
    let base = median(&mut times[0].clone());
    if !b.json {
        println!(
            "bench insert: map {} keys {} reps {} (median)",
            b.map, b.keys, b.reps
        );
        println!(
            "{:<8} {:>10} {:>9} {:>10} {:>10}",
            "strategy", "ns/key", "vs batch", "syscalls", "in_map"
        );
    }
    for (si, s) in strategies.iter().enumerate() {
        let ns = median(&mut times[si]);
        if b.json {
            println!(
                "{{\"strategy\":\"{s}\",\"map\":\"{}\",\"keys\":{},\"ns_per_key\":{ns:.1},\"syscalls\":{},\"in_map\":{}}}",
                b.map, b.keys, calls[si], landed[si]
            );
        } else {
            println!(
                "{s:<8} {ns:>10.1} {:>8.2}x {:>10} {:>10}",
                ns / base,
                calls[si],
                landed[si]
            );
        }
    }
    if !b.json {
        let single = median(&mut times[1]);
        println!(
            "kernel cost in this run: single update {single:.0} ns/key, batch update {base:.0} \
             ns/key (single/batch {:.2}x)",
            single / base
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_cost_is_single_and_batch_of_the_same_run() {
        let row = |strategy, ns_per_key, left_in_map| DeleteRow {
            strategy,
            ns_per_key,
            syscalls: 1,
            left_in_map,
        };
        let rows = [
            row("resume", 350.0, 0),
            row("single", 1000.0, 0),
            row("batch-once", 320.0, 0),
        ];
        assert_eq!(
            kernel_cost(&rows),
            "kernel cost in this run: single delete 1000 ns/key, batch delete 320 ns/key \
             (single/batch 3.12x)"
        );
        let stopped = [row("single", 1000.0, 0), row("batch-once", 0.0, 9)];
        assert!(kernel_cost(&stopped).contains("batch delete not measurable"));
    }

    #[test]
    fn keys_are_checked_against_memory_and_the_cap() {
        assert!(keys_fit("delete", 100_000, Some(1 << 30)).is_ok());
        assert!(keys_fit("delete", 100_000, None).is_ok());
        let e = keys_fit("delete", 10_000_000_000_000, None).unwrap_err();
        assert_eq!(
            e,
            "bench delete --keys 10000000000000: more than the 1073741824 keys a benchmark map may hold"
        );
        let e = keys_fit("insert", 1 << 22, Some(1 << 29)).unwrap_err();
        assert!(
            e.starts_with("bench insert --keys 4194304: needs about 1024 MiB (256 B a key, here and in the kernel), more than the 512 MiB available"),
            "{e}"
        );
    }
}
