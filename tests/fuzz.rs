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
    run("procmaps", &seeds, 200_000, pidmap::procmaps::fuzz_one);
}

#[test]
fn perf_ring_records() {
    let seeds: Vec<Vec<u8>> = (0..4)
        .map(|i| (0..256).map(|b| (b * 7 + i) as u8).collect())
        .collect();
    run("perf ring", &seeds, 100_000, pidmap::sys::perf::fuzz_one);
}

#[test]
fn sample_records() {
    let s = pidmap::abi::Sample {
        header: pidmap::abi::SampleHeader {
            pid: 1,
            user_frames: 2,
            kernel_frames: 1,
            ..Default::default()
        },
        user: vec![Default::default(); 2],
        kernel: vec![0xffff_ffff_8100_0000],
    };
    run("sample", &[s.encode()], 200_000, |d| {
        if let Some(s) = pidmap::abi::Sample::parse(d) {
            assert!(s.user.len() <= 127 && s.kernel.len() <= 127);
        }
    });
}

#[test]
fn elf_symbol_reader() {
    let exe = std::fs::read("/proc/self/exe").unwrap();
    // a small prefix keeps each input cheap; the headers are all there
    let seeds = vec![
        exe[..exe.len().min(64 * 1024)].to_vec(),
        std::fs::read("/bin/true").unwrap(),
    ];
    run("elf", &seeds, 3_000, pidmap::symbolize::fuzz_one);
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
