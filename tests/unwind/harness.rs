//! The harness of tests/unwind.rs: the workloads without frame pointers,
//! pidmap and perf on one run, both tools' stacks read alike, and the
//! comparison every workload must pass.

use crate::common::{self, pidmap_bin};
use pidmap::sampler::profile::parse_folded;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The outermost frames of a stack unwound to its end: the program's
/// entry, or a thread's start.
pub const ENDS: [&str; 3] = ["_start", "start_thread", "clone3"];

/// The frequency of every comparison with perf.
pub const FREQ: &str = "99";

/// The workloads, built once per test process with -O2
/// -fomit-frame-pointer (and the Rust one with rustc -C opt-level=3).
pub struct Workloads {
    pub dir: PathBuf,
}

impl Workloads {
    pub fn exe(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

pub fn src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(name)
}

/// Compiles tests/workloads/`source` without frame pointers.
pub fn gcc_nofp(source: &str, out: &Path, extra: &[&str]) {
    let st = Command::new("gcc")
        .args(["-O2", "-g", "-fomit-frame-pointer", "-o"])
        .arg(out)
        .arg(src(source))
        .args(extra)
        .status()
        .expect("gcc");
    assert!(st.success(), "gcc {source} failed");
}

pub fn workloads() -> &'static Workloads {
    static W: OnceLock<Workloads> = OnceLock::new();
    W.get_or_init(|| {
        let dir = common::scratch("unwind");
        let d = dir.display().to_string();
        gcc_nofp("uwlib.c", &dir.join("libuw.so"), &["-shared", "-fPIC"]);
        gcc_nofp(
            "uwapp.c",
            &dir.join("uwapp"),
            &[
                "-rdynamic",
                &format!("-L{d}"),
                "-luw",
                &format!("-Wl,-rpath,{d}"),
            ],
        );
        gcc_nofp("uwthreads.c", &dir.join("uwthreads"), &["-pthread"]);
        gcc_nofp("uwsignal.c", &dir.join("uwsignal"), &[]);
        gcc_nofp("uwshort.c", &dir.join("uwshort"), &[]);
        let st = Command::new("rustc")
            .args(["-C", "opt-level=3", "-o"])
            .arg(dir.join("uwrust"))
            .arg(src("uwrust.rs"))
            .status()
            .expect("rustc");
        assert!(st.success(), "rustc uwrust.rs failed");
        Workloads { dir }
    })
}

/// `--unwind MODE`, or what PIDMAP_UNWIND_FLAG asks for instead.
pub fn unwind_args(mode: &str) -> Vec<String> {
    match std::env::var("PIDMAP_UNWIND_FLAG") {
        Ok(v) if v == "none" => vec![],
        Ok(v) if !v.is_empty() => vec!["--unwind".into(), v],
        _ => vec!["--unwind".into(), mode.into()],
    }
}

/// One sample's user stack (outermost first, names as in [`canon`]),
/// whether it was taken in kernel mode, and how many samples had it.
#[derive(Debug, Clone)]
pub struct Stack {
    pub user: Vec<String>,
    pub kernel: bool,
    pub n: u64,
}

/// A function's name as both tools can agree on it: no symbol version,
/// one name for aliases the two pick differently, and every frame without
/// a symbol (perf's `[unknown]`, pidmap's `file+0xoffset`) alike, PLT
/// stubs among them (perf's `f@plt`, pidmap's `file+0xoffset`) and the
/// signal frame.
pub fn canon(f: &str) -> String {
    // perf looks the signal trampoline's return address up one byte
    // before it (as for a call's), which falls before __restore_rt: it
    // shows that frame as [unknown]
    if f.ends_with("@plt") || f == "__restore_rt" {
        return "[unknown]".into();
    }
    let f = f.split('@').next().unwrap_or(f);
    if f.is_empty() || f.contains("+0x") || f.starts_with("[unknown]") {
        return "[unknown]".into();
    }
    let f = f.strip_prefix("__vdso_").unwrap_or(f);
    match f {
        "__libc_start_main_impl" => "__libc_start_main",
        "__clone3" => "clone3",
        other => other,
    }
    .into()
}

/// The stacks of `comm` in pidmap's folded output (recorded with
/// --kernel, so a kernel-mode sample shows `_[k]` frames).
pub fn fold_pidmap(text: &str, comm: &str) -> Vec<Stack> {
    parse_folded(text)
        .expect("pidmap's folded output parses")
        .into_iter()
        .filter(|(s, _)| s.first().map(String::as_str) == Some(comm))
        .map(|(s, n)| {
            let user: Vec<String> = s[1..]
                .iter()
                .filter(|f| !f.ends_with("_[k]"))
                .map(|f| canon(f))
                .collect();
            Stack {
                kernel: user.len() < s.len() - 1,
                user,
                n,
            }
        })
        .collect()
}

/// The stacks of `comm` in `perf script -F comm,tid,ip,sym,dso` output.
pub fn fold_perf(text: &str, comm: &str) -> Vec<Stack> {
    common::perf_script_samples(text)
        .into_iter()
        .filter(|(c, _)| c == comm)
        .map(|(_, frames)| {
            let user: Vec<String> = frames
                .iter()
                .rev()
                .filter(|(_, k)| !k)
                .map(|(f, _)| canon(f))
                .collect();
            Stack {
                kernel: user.len() < frames.len(),
                user,
                n: 1,
            }
        })
        .collect()
}

/// What one tool saw of the workload.
#[derive(Debug)]
pub struct Seen {
    pub stacks: Vec<Stack>,
    /// the output's size in bytes (pidmap's folded file, perf.data)
    pub size: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub samples: u64,
    pub user_mode: u64,
    pub to_end: u64,
    pub frames: f64,
}

impl Stats {
    pub fn end_pct(&self) -> f64 {
        100.0 * self.to_end as f64 / self.user_mode.max(1) as f64
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} samples, {} in user mode, {:.1} % of those to the end, {:.1} frames each",
            self.samples,
            self.user_mode,
            self.end_pct(),
            self.frames
        )
    }
}

impl Seen {
    /// The samples, and of the user-mode ones how many reach one of
    /// [`ENDS`] and their user frames per sample.
    pub fn stats(&self) -> Stats {
        let samples = self.stacks.iter().map(|s| s.n).sum();
        let user: Vec<&Stack> = self.stacks.iter().filter(|s| !s.kernel).collect();
        let user_mode: u64 = user.iter().map(|s| s.n).sum();
        let to_end = user
            .iter()
            .filter(|s| s.user.first().is_some_and(|f| ENDS.contains(&f.as_str())))
            .map(|s| s.n)
            .sum();
        let frames: u64 = user.iter().map(|s| s.user.len() as u64 * s.n).sum();
        Stats {
            samples,
            user_mode,
            to_end,
            frames: frames as f64 / user_mode.max(1) as f64,
        }
    }

    /// Each function's self and inclusive share (0..1) of all samples.
    pub fn shares(&self) -> (HashMap<String, f64>, HashMap<String, f64>) {
        let total = self.stacks.iter().map(|s| s.n).sum::<u64>().max(1) as f64;
        let (mut own, mut incl): (HashMap<String, f64>, HashMap<String, f64>) = Default::default();
        for s in &self.stacks {
            if let Some(leaf) = s.user.last() {
                *own.entry(leaf.clone()).or_default() += s.n as f64 / total;
            }
            let mut seen: Vec<&String> = s.user.iter().collect();
            seen.sort();
            seen.dedup();
            for f in seen {
                *incl.entry(f.clone()).or_default() += s.n as f64 / total;
            }
        }
        (own, incl)
    }

    /// The most common stacks, for a failure message.
    pub fn top_stacks(&self, k: usize) -> String {
        let mut by: HashMap<String, u64> = HashMap::new();
        for s in &self.stacks {
            let key = format!("{}{}", s.user.join(";"), if s.kernel { " [k]" } else { "" });
            *by.entry(key).or_default() += s.n;
        }
        let mut v: Vec<(String, u64)> = by.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.iter()
            .take(k)
            .map(|(s, n)| format!("  {n:4} {s}\n"))
            .collect()
    }
}

/// One run of `cmd` profiled by pidmap (`--unwind mode`, --kernel, -F
/// `freq`) and, as pidmap's command, by perf record --call-graph dwarf at
/// the same frequency: what each saw of the processes named `comm`.
pub struct Both {
    pub ours: Seen,
    pub perf: Seen,
    pub stderr: String,
}

/// Whether perf runs here; when not, the test fails (see
/// `common::may_skip`), unless skipping was asked for: then false.
pub fn perf_usable() -> bool {
    let ok = Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    ok || common::may_skip("perf (Debian linux-perf, scripts/setup test) does not run")
}

/// Reads a perf.data file back as `comm`'s stacks (no inlined frames:
/// pidmap shows none).
pub fn perf_stacks(data: &Path, comm: &str) -> Seen {
    let script = common::output_within(
        Command::new("perf")
            .args(["script", "--no-inline", "-F", "comm,tid,ip,sym,dso", "-i"])
            .arg(data),
        common::RUN,
    );
    assert!(
        script.status.success(),
        "perf script -i {}: {}",
        data.display(),
        String::from_utf8_lossy(&script.stderr)
    );
    Seen {
        stacks: fold_perf(&String::from_utf8_lossy(&script.stdout), comm),
        size: std::fs::metadata(data).map_or(0, |m| m.len()),
    }
}

pub fn perf_record_args(freq: &str, data: &Path) -> Vec<String> {
    [
        "perf",
        "record",
        "-q",
        "--call-graph",
        "dwarf",
        "-e",
        "cpu-clock",
        "-F",
        freq,
        "-o",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([data.display().to_string(), "--".into()])
    .collect()
}

pub fn tag() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn profile_with_perf(mode: &str, freq: &str, comm: &str, cmd: &[String]) -> Both {
    let w = workloads();
    let t = tag();
    let out = w.dir.join(format!("{comm}-{t}.folded"));
    let data = w.dir.join(format!("{comm}-{t}.perf.data"));
    let pins = common::pin_dir("unwind");
    let o = common::output_within(
        Command::new(pidmap_bin())
            .args(["profile", "--kernel", "-F", freq, "--pin-dir"])
            .arg(&pins)
            .arg("-o")
            .arg(&out)
            .args(unwind_args(mode))
            .arg("--")
            .args(perf_record_args(freq, &data))
            .args(cmd),
        common::RUN,
    );
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "pidmap profile {cmd:?}: {stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let ours = Seen {
        stacks: fold_pidmap(&text, comm),
        size: text.len() as u64,
    };
    let perf = perf_stacks(&data, comm);
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&data);
    Both { ours, perf, stderr }
}

/// The bound of a share's difference between the two tools, in points:
/// the 3 points plus the sampling noise of two independent
/// samplers (2.58 standard deviations of the difference of two binomial
/// shares, p taken from perf). For a share near 0 or 1 the noise vanishes
/// and the bound is 3 points; for a middle share of ~150 samples each it
/// is ~3 + 13.
///
/// Measured (frame pointers only, 3 runs of each workload, 125-245
/// samples per tool): self shares, which do not depend on unwinding (the
/// leaf is the sampled address), differed from perf's by up to 12.2
/// points (Rust's quicksort, ~30 %: 2.3 deviations), most by under 4:
/// independent sampling noise, not an error. A bare 3-point bound would
/// need ~4000 samples per tool (40 s at 99 Hz) to hold by chance.
pub fn share_bound(p: f64, n_ours: u64, n_perf: u64) -> f64 {
    debug_assert!(p.is_finite());
    // a share summed from many stacks may pass 1 by a rounding error
    let p = p.clamp(0.0, 1.0);
    let var = p * (1.0 - p) * (1.0 / n_ours.max(1) as f64 + 1.0 / n_perf.max(1) as f64);
    3.0 + 2.58 * 100.0 * var.sqrt()
}

/// Of `ours`' samples: (how many, how many have only caller -> callee
/// pairs of frames that `theirs` also has somewhere). A frame unwound
/// wrongly makes a pair no correct unwinder sees; the check is per sample,
/// free of the sampling noise of the shares.
pub fn known_pairs(ours: &Seen, theirs: &Seen) -> (u64, u64) {
    let pairs = |s: &Stack| -> Vec<(String, String)> {
        s.user
            .windows(2)
            .map(|w| (w[0].clone(), w[1].clone()))
            .collect()
    };
    let known: std::collections::HashSet<(String, String)> =
        theirs.stacks.iter().flat_map(pairs).collect();
    // a pair with a function perf names otherwise (its demangler writes
    // some Rust impls differently) or never sampled says nothing of the
    // walk: only pairs of functions perf knows are compared
    let names: std::collections::HashSet<&String> =
        theirs.stacks.iter().flat_map(|s| s.user.iter()).collect();
    let known =
        |p: &(String, String)| known.contains(p) || !names.contains(&p.0) || !names.contains(&p.1);
    let n = ours.stacks.iter().map(|s| s.n).sum();
    let good = ours
        .stacks
        .iter()
        .filter(|s| pairs(s).iter().all(&known))
        .map(|s| s.n)
        .sum();
    (n, good)
}

/// Whether [`compare`] asserts the shares or only prints them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Shares {
    Checked,
    Shown,
}

/// The comparison of one workload: prints both tools' numbers, then
/// asserts that >= 97 % of pidmap's user-mode samples reach the end, that
/// perf's top functions (by self and by inclusive share, named ones) have
/// shares within [`share_bound`] in pidmap's profile and that at least
/// `pairs_pct` % of pidmap's samples hold only caller -> callee pairs perf
/// also recorded ([`known_pairs`]). The shares are only printed when
/// `Shares::Shown` (two separate runs, whose split differs).
pub fn compare(name: &str, b: &Both, min_samples: u64, pairs_pct: u64, shares: Shares) {
    let (so, sp) = (b.ours.stats(), b.perf.stats());
    eprintln!("{name}: pidmap: {so}; output {} bytes", b.ours.size);
    eprintln!("{name}: perf:   {sp}; output {} bytes", b.perf.size);
    let (own_o, incl_o) = b.ours.shares();
    let (own_p, incl_p) = b.perf.shares();
    let named = |m: &HashMap<String, f64>, k: usize| -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = m
            .iter()
            .filter(|(f, s)| f.as_str() != "[unknown]" && **s >= 0.02)
            .map(|(f, s)| (f.clone(), *s))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(k);
        v
    };
    let mut failures = Vec::new();
    let (n, good) = known_pairs(&b.ours, &b.perf);
    eprintln!("{name}: {good} of pidmap's {n} samples have only caller-callee pairs perf has");
    if good * 100 < pairs_pct * n {
        failures.push(format!(
            "{good} of {n} samples have only pairs perf has (>= {pairs_pct} %)"
        ));
    }
    for (kind, theirs, ours) in [
        ("self", named(&own_p, 5), &own_o),
        ("inclusive", named(&incl_p, 8), &incl_o),
    ] {
        for (f, p) in theirs {
            let o = ours.get(&f).copied().unwrap_or(0.0);
            let bound = share_bound(p, so.samples, sp.samples);
            let diff = (o - p).abs() * 100.0;
            eprintln!(
                "{name}: {kind} {f}: pidmap {:.1} % perf {:.1} % differ {diff:.1} points (bound {bound:.1})",
                o * 100.0,
                p * 100.0
            );
            if shares == Shares::Checked && (diff.is_nan() || diff > bound) {
                failures.push(format!("{kind} {f}: {diff:.1} points > {bound:.1}"));
            }
        }
    }
    let report = format!(
        "pidmap {so}\nperf {sp}\npidmap's top stacks:\n{}perf's top stacks:\n{}{}",
        b.ours.top_stacks(12),
        b.perf.top_stacks(12),
        b.stderr
    );
    // the reference itself: perf reached the end in 100 % of its
    // user-mode samples on every workload (3 runs each, see the test
    // perf_dwarf_reaches_the_end_of_every_workload)
    assert!(
        sp.samples >= min_samples && so.samples >= min_samples,
        "{name}: too few samples (at least {min_samples} each)\n{report}"
    );
    assert!(
        so.to_end * 100 >= 97 * so.user_mode,
        "{name}: {:.1} % of pidmap's user-mode samples reach the end (>= 97 %)\n{report}",
        so.end_pct()
    );
    assert!(
        failures.is_empty(),
        "{name}: differs from perf: {failures:?}\n{report}"
    );
}

pub fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// perf record --call-graph dwarf of one run of `cmd` on its own.
pub fn perf_alone(name: &str, comm: &str, cmd: &[String]) -> Seen {
    let data = workloads().dir.join(format!("{name}-{}.perf.data", tag()));
    let o = common::output_within(
        Command::new("perf")
            .args(&perf_record_args(FREQ, &data)[1..])
            .args(cmd),
        common::RUN,
    );
    assert!(
        o.status.success(),
        "perf record {cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let seen = perf_stacks(&data, comm);
    let _ = std::fs::remove_file(&data);
    seen
}
