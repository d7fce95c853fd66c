//! Bounded fuzzing of every parser that takes outside input: /proc maps,
//! perf ring records, ELF/symbol files, sample records and the command
//! line. Mutation-based from real seeds, deterministic; PIDMAP_FUZZ_SCALE
//! multiplies the iterations (scripts/fuzz-long runs millions).

use pidmap::rng::Rng;
use std::ffi::OsString;

fn scale() -> usize {
    std::env::var("PIDMAP_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Byte-level mutations of a seed: flips, inserts, deletes, splices,
/// interesting values.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.index(8) {
        let pos = rng.index(v.len() + 1);
        match rng.index(6) {
            0 if !v.is_empty() => {
                let p = pos.min(v.len() - 1);
                v[p] ^= 1 << rng.index(8);
            }
            1 => v.insert(pos, rng.next_u64() as u8),
            2 if !v.is_empty() => {
                let p = pos.min(v.len() - 1);
                let n = rng.index(16).min(v.len() - p);
                v.drain(p..p + n);
            }
            3 if !v.is_empty() => {
                let p = pos.min(v.len() - 1);
                v[p] = [0, 0xff, 0x7f, 0x80, b'\n', b' ', b'-', b'('][rng.index(8)];
            }
            4 => {
                let p = pos.min(v.len());
                let w = (rng.next_u64() as u32).to_le_bytes();
                v.splice(p..p, w);
            }
            _ => v.truncate(pos),
        }
    }
    v
}

fn run(name: &str, seeds: &[Vec<u8>], n: usize, f: impl Fn(&[u8])) {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let total = n * scale();
    for i in 0..total {
        let seed = &seeds[i % seeds.len()];
        let input = if i % 7 == 0 {
            (0..rng.index(300)).map(|_| rng.next_u64() as u8).collect()
        } else {
            mutate(seed, &mut rng)
        };
        f(&input);
    }
    eprintln!("fuzz {name}: {total} inputs, no panic");
}

#[test]
fn proc_maps_parser() {
    let mut seeds: Vec<Vec<u8>> = vec![
        b"7f5b6ef4f000-7f5b6ef5d000 r-xp 00026000 fe:00 326279 /usr/lib/x86_64-linux-gnu/libc.so.6\n".to_vec(),
        b"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]\n".to_vec(),
        b"7ffd73e2b000-7ffd73e4c000 rw-p 00000000 00:00 0                          [stack]\n".to_vec(),
    ];
    if let Ok(m) = std::fs::read("/proc/self/maps") {
        seeds.push(m);
    }
    run("procmaps", &seeds, 200_000, pidmap::proc::maps::fuzz_one);
}

/// A pidmap sample as the BPF program writes it: `user` resolved user
/// frames and `kernel` kernel frames.
fn sample_bytes(pid: u32, user: usize, kernel: usize) -> Vec<u8> {
    pidmap::abi::Sample {
        header: pidmap::abi::SampleHeader {
            pid,
            tid: pid,
            user_frames: user as u16,
            kernel_frames: kernel as u16,
            comm: *b"sampled\0\0\0\0\0\0\0\0\0",
            ..Default::default()
        },
        user: (0..user as u64)
            .map(|i| pidmap::abi::SampleFrame {
                file_id: 1 + i % 3,
                offset: 0x1000 + i * 0x10,
            })
            .collect(),
        kernel: (0..kernel as u64)
            .map(|i| 0xffff_ffff_8100_0000 + i)
            .collect(),
    }
    .encode()
}

/// A perf record: PERF_RECORD_SAMPLE (9) with a raw payload padded to 8
/// bytes as the kernel does, PERF_RECORD_LOST (2), or another type.
fn perf_record(ty: u32, raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    if ty == 9 {
        let padded = (4 + raw.len()).div_ceil(8) * 8 - 4;
        body.extend((padded as u32).to_ne_bytes());
        body.extend(raw);
        body.resize(4 + padded, 0);
    } else {
        body.extend(raw);
    }
    let size = (8 + body.len()) as u16;
    let mut r = ty.to_ne_bytes().to_vec();
    r.extend(0u16.to_ne_bytes());
    r.extend(size.to_ne_bytes());
    r.extend(body);
    r
}

/// An input of `pidmap::sys::perf_ring::fuzz_one`: byte 0 the data size
/// (8 << k, k < 10), byte 1 the mode (0: consistent metadata), tail and head - tail
/// as u64, then the data area's content (repeated to fill it).
fn ring_input(k: u8, tail_wraps: u64, records: &[Vec<u8>]) -> Vec<u8> {
    let body = records.concat();
    let size = 8u64 << k;
    assert!(body.len() as u64 <= size);
    let mut v = vec![k, 0];
    v.extend((tail_wraps * size).to_le_bytes());
    v.extend((body.len() as u64).to_le_bytes());
    v.extend(body);
    v
}

/// Records built from real layouts: samples of several depths, lost
/// records and another type.
fn record_pool() -> Vec<Vec<u8>> {
    vec![
        perf_record(9, &sample_bytes(100, 3, 2)),
        perf_record(9, &sample_bytes(7, 8, 0)),
        perf_record(9, &sample_bytes(1, 1, 1)),
        perf_record(9, &sample_bytes(2, 20, 4)),
        perf_record(2, &[7u64.to_ne_bytes(), 42u64.to_ne_bytes()].concat()),
        perf_record(3, &[0u8; 16]),
    ]
}

/// Field-level mutations of an encoded sample, keeping its layout: header
/// fields, frame counts off by a little, frame contents, and sometimes a
/// record cut short or grown.
fn mutate_sample(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.index(3) {
        match rng.index(6) {
            // pid, tid, cpu, flags, time, comm: any value is valid
            0 => {
                let at = [0, 4, 8, 16, 24, 32 + rng.index(16)][rng.index(6)];
                if at < v.len() {
                    v[at] = rng.next_u64() as u8;
                }
            }
            // a frame count off by one or two, or far off
            1 => {
                let at = 12 + 2 * rng.index(2);
                if at + 2 <= v.len() {
                    let n = u16::from_ne_bytes([v[at], v[at + 1]]);
                    let n = match rng.index(4) {
                        0 => rng.next_u64() as u16,
                        k => n.wrapping_add(k as u16).wrapping_sub(2),
                    };
                    v[at..at + 2].copy_from_slice(&n.to_ne_bytes());
                }
            }
            // frame contents
            2 | 3 if v.len() > 48 => {
                let at = 48 + rng.index(v.len() - 48);
                v[at] = rng.next_u64() as u8;
            }
            4 => v.truncate(rng.index(v.len() + 1)),
            _ => v.extend((0..rng.index(40)).map(|_| rng.next_u64() as u8)),
        }
    }
    v
}

/// Ring inputs: mostly consistent rings of 1-3 records from the pool (one
/// of them mutated, half the time); some byte-mutated whole inputs and
/// random bytes, as the other targets.
fn ring_input_from(i: usize, pool: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    match i % 8 {
        0 => (0..rng.index(300)).map(|_| rng.next_u64() as u8).collect(),
        1 => {
            let recs = [pool[rng.index(pool.len())].clone()];
            mutate(&ring_input(9, 0, &recs), rng)
        }
        _ => {
            let mut recs: Vec<Vec<u8>> = (0..1 + rng.index(3))
                .map(|_| pool[rng.index(pool.len())].clone())
                .collect();
            if rng.index(2) == 0 {
                let j = rng.index(recs.len());
                recs[j] = if recs[j][0] == 9 && rng.index(2) == 0 {
                    // a mutated sample in a well-framed record
                    perf_record(9, &mutate_sample(&recs[j][12..], rng))
                } else {
                    mutate(&recs[j], rng)
                };
            }
            let len: usize = recs.iter().map(|r| r.len()).sum();
            let k = (3..10).find(|k| 8usize << k >= len).unwrap_or(9) as u8;
            ring_input(k, rng.index(4) as u64, &recs)
        }
    }
}

/// Runs `n` inputs from `gen(i, rng)` through `f` and returns (inputs,
/// how many `f` counted as reaching a, as reaching b).
fn run_counting(
    name: &str,
    n: usize,
    mut gen: impl FnMut(usize, &mut Rng) -> Vec<u8>,
    f: impl Fn(&[u8]) -> (bool, bool),
) -> (usize, usize, usize) {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    let total = n * scale();
    let (mut a, mut b) = (0, 0);
    for i in 0..total {
        let input = gen(i, &mut rng);
        let (x, y) = f(&input);
        a += x as usize;
        b += y as usize;
    }
    (total, a, b)
}

#[test]
fn perf_ring_records() {
    let pool = record_pool();
    let gen = |i: usize, rng: &mut Rng| ring_input_from(i, &pool, rng);
    let (total, records, samples) = run_counting("perf ring", 100_000, gen, |d| {
        let mut parsed = false;
        let n = pidmap::sys::perf_ring::fuzz_records(d, &mut |raw| {
            if let Some(s) = pidmap::abi::Sample::parse(raw) {
                assert!(s.user.len() <= 127 && s.kernel.len() <= 127);
                parsed = true;
            }
        });
        (n > 0, parsed)
    });
    let (r, s) = (records * 100 / total, samples * 100 / total);
    eprintln!("fuzz perf ring: {total} inputs, {r}% yield a record, {s}% a parsed sample");
    // measured: see TESTING.md
    assert!(
        r >= 30 && s >= 10,
        "inputs too shallow: {r}% records, {s}% samples"
    );
}

#[test]
fn sample_records() {
    let seeds = [
        sample_bytes(1, 2, 1),
        sample_bytes(4242, 0, 0),
        sample_bytes(9, 127, 0),
        sample_bytes(9, 5, 127),
    ];
    let gen = |i: usize, rng: &mut Rng| {
        let seed = &seeds[i % seeds.len()];
        match i % 8 {
            0 => (0..rng.index(300)).map(|_| rng.next_u64() as u8).collect(),
            1 | 2 => mutate(seed, rng),
            _ => mutate_sample(seed, rng),
        }
    };
    let (total, parsed, _) = run_counting("sample", 200_000, gen, |d| {
        let s = pidmap::abi::Sample::parse(d);
        if let Some(s) = &s {
            assert!(s.user.len() <= 127 && s.kernel.len() <= 127);
        }
        (s.is_some(), false)
    });
    let p = parsed * 100 / total;
    eprintln!("fuzz sample: {total} inputs, {p}% parse");
    // measured: 43 % (TESTING.md)
    assert!(p >= 30, "inputs too shallow: {p}% parse");
}

/// Mutations that keep every offset of a file: bytes overwritten,
/// a third of them in the ELF header and program headers (the first 512
/// bytes).
fn overwrite(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.index(4) {
        let span = if rng.index(3) == 0 { 512 } else { v.len() };
        let at = rng.index(span.min(v.len()));
        v[at] = match rng.index(3) {
            0 => v[at] ^ (1 << rng.index(8)),
            1 => [0, 0xff, 0x7f, 0x80, 1, 2, 0x40][rng.index(7)],
            _ => rng.next_u64() as u8,
        };
    }
    v
}

#[test]
fn elf_symbol_reader() {
    let exe = std::fs::read("/proc/self/exe").unwrap();
    // real ELF files: a small prefix keeps each input cheap; the headers
    // are all there
    let mut seeds = vec![
        exe[..exe.len().min(64 * 1024)].to_vec(),
        std::fs::read("/bin/true").unwrap(),
    ];
    // a small shared library of the C library, whole
    seeds.extend(std::fs::read("/usr/lib/x86_64-linux-gnu/libdl.so.2"));
    for (i, s) in seeds.iter().enumerate() {
        let ok = pidmap::sampler::symbolize::ElfSymbols::from_bytes(s, "seed").is_some();
        eprintln!("elf seed {i}: {} bytes, parses: {ok}", s.len());
    }
    let gen = |i: usize, rng: &mut Rng| match i % 7 {
        0 => (0..rng.index(300)).map(|_| rng.next_u64() as u8).collect(),
        1 | 2 => mutate(&seeds[i % seeds.len()], rng),
        _ => overwrite(&seeds[i % seeds.len()], rng),
    };
    let (total, parsed, with_syms) = run_counting("elf", 3_000, gen, |d| {
        pidmap::sampler::symbolize::fuzz_one(d);
        let s = pidmap::sampler::symbolize::ElfSymbols::from_bytes(d, "fuzz");
        (s.is_some(), s.is_some_and(|s| s.build_id().is_some()))
    });
    let p = parsed * 100 / total;
    eprintln!(
        "fuzz elf: {total} inputs, {p}% parse as ELF, {}% with a build id",
        with_syms * 100 / total
    );
    // measured: 40 % parse (TESTING.md)
    assert!(p >= 30, "inputs too shallow: {p}% parse");
}

#[test]
fn command_line() {
    let seeds: Vec<Vec<u8>> = [
        "run --all --pin-dir /sys/fs/bpf/x --metrics-file /tmp/m",
        "profile -F 99 --kernel -o out -- ls -l",
        "bench delete --map hash --keys 10 --missing-pct 1.5 --pattern front",
        "audit --repair --json",
        "run --pid=7 --max-keys-per-uid=0 --delete-strategy=reissue-all",
        "bench churn --workload=/bin/true --rate 1e3 --wake-every-request",
        "diff --top=3 a b -- -c",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    run("cli", &seeds, 100_000, |d| {
        // raw bytes: words need not be UTF-8
        use std::os::unix::ffi::OsStringExt;
        let argv: Vec<OsString> = std::iter::once(OsString::from("pidmap"))
            .chain(
                d.split(|b| *b == b' ')
                    .map(|w| OsString::from_vec(w.to_vec())),
            )
            .collect();
        let _ = pidmap::cli::parse(argv);
    });
}

#[test]
fn cargo_fuzz_seeds_reach_records_and_samples() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cargo-fuzz/seeds");
    let mut samples = 0;
    for e in std::fs::read_dir(dir.join("perf_ring")).unwrap().flatten() {
        let d = std::fs::read(e.path()).unwrap();
        let mut parsed = 0;
        let n = pidmap::sys::perf_ring::fuzz_records(&d, &mut |raw| {
            parsed += pidmap::abi::Sample::parse(raw).is_some() as usize;
        });
        assert!(n > 0, "{}: no record", e.path().display());
        samples += parsed;
    }
    assert!(
        samples >= 3,
        "the perf_ring seeds hold {samples} pidmap samples"
    );
    for e in std::fs::read_dir(dir.join("sample")).unwrap().flatten() {
        let d = std::fs::read(e.path()).unwrap();
        assert!(
            pidmap::abi::Sample::parse(&d).is_some(),
            "{}",
            e.path().display()
        );
    }
}

/// The unwind table builder on mutated ELF files (a mapped file is the
/// attacker's: DESIGN §9): never a panic, rows strictly sorted, and what
/// is made of them for the kernel in its bounds.
#[test]
fn unwind_table_builder() {
    let mut seeds = vec![std::fs::read("/bin/true").unwrap()];
    seeds.extend(std::fs::read("/usr/lib/x86_64-linux-gnu/libdl.so.2"));
    for (i, s) in seeds.iter().enumerate() {
        let t = pidmap::sampler::unwind::from_data(s.as_slice()).expect("a seed builds");
        eprintln!(
            "unwind seed {i}: {} bytes, {} rows",
            s.len(),
            t.entries.len()
        );
        assert!(!t.entries.is_empty());
    }
    let gen = |i: usize, rng: &mut Rng| match i % 5 {
        0 => mutate(&seeds[i % seeds.len()], rng),
        _ => overwrite(&seeds[i % seeds.len()], rng),
    };
    let (total, built, with_rows) =
        run_counting(
            "unwind",
            2_000,
            gen,
            |d| match pidmap::sampler::unwind::from_data(d) {
                Ok(t) => {
                    assert!(
                        t.entries.windows(2).all(|w| w[0].pc < w[1].pc),
                        "rows out of order"
                    );
                    let p = pidmap::sampler::unwind::kernel::prepare(&t);
                    assert!(p
                        .keys
                        .iter()
                        .all(|k| k.part < pidmap::abi::UNWIND_MAX_PARTS));
                    assert!(p
                        .values
                        .iter()
                        .all(|v| usize::from(v.count) <= pidmap::abi::UNWIND_PAGE_ROWS));
                    (true, !t.entries.is_empty())
                }
                Err(_) => (false, false),
            },
        );
    let b = built * 100 / total;
    eprintln!(
        "fuzz unwind: {total} inputs, {b}% build, {}% with rows",
        with_rows * 100 / total
    );
    assert!(b >= 30, "inputs too shallow: {b}% build");
}
