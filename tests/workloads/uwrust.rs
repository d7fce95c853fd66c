// The Rust workload of the unwinding tests, built with `rustc -C
// opt-level=3` (release, no frame pointers; std has none either): hot
// functions of its own (rust_outer -> rust_hot) and std's sort and
// formatting, for SECONDS of CPU (argv[1], default 1.5).
use std::hint::black_box;

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

extern "C" {
    fn clock_gettime(clock: i32, t: *mut Timespec) -> i32;
}

/// The process's CPU time in seconds (CLOCK_PROCESS_CPUTIME_ID).
fn cpu_now() -> f64 {
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: t is a valid timespec for clock_gettime to fill.
    unsafe { clock_gettime(2, &mut t) };
    t.sec as f64 + t.nsec as f64 / 1e9
}

#[inline(never)]
fn rust_hot(v: &mut Vec<u64>, seed: u64) -> u64 {
    let mut s = seed;
    for x in v.iter_mut() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *x = s >> 11;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

#[inline(never)]
fn rust_format(n: u64) -> usize {
    let mut total = 0;
    for i in 0..200 {
        total += format!("{}-{:x}-{:?}", n + i, i * 7, (i, n)).len();
    }
    total
}

#[inline(never)]
fn rust_outer(v: &mut Vec<u64>, i: u64) -> u64 {
    rust_hot(v, i) ^ rust_format(i) as u64
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1.5);
    let end = cpu_now() + seconds;
    let mut v = vec![0u64; 4096];
    let mut acc = 0u64;
    let mut i = 0u64;
    while cpu_now() < end {
        acc ^= black_box(rust_outer(&mut v, i));
        i += 1;
    }
    println!("done {acc}");
}
