//! The sampler against the real kernel (root): attribution of a workload
//! with a shared library and short-lived children, agreement with perf,
//! the per-process request rate bound, stripped and deleted binaries, and
//! a clean audit after a profile.

mod common;

use common::pidmap_bin;
use pidmap::sampler::profile::parse_folded;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

struct Workload {
    dir: PathBuf,
    exe: PathBuf,
}

fn workload() -> &'static Workload {
    static W: OnceLock<Workload> = OnceLock::new();
    W.get_or_init(|| {
        let (dir, exe) = common::sampled_workload("sampled");
        Workload { dir, exe }
    })
}

/// The workload's own CPU split: (main, lib, child) seconds.
fn cpu_split(stdout: &str) -> (f64, f64, f64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("cpu "))
        .expect("cpu line");
    let v: HashMap<&str, f64> = line[4..]
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k, v.parse().unwrap())
        })
        .collect();
    (v["main"], v["lib"], v["child"])
}

/// Share of samples whose stack contains each function.
fn shares(stacks: &[(Vec<String>, u64)], funcs: &[&str]) -> HashMap<String, f64> {
    let total: u64 = stacks.iter().map(|(_, c)| c).sum();
    funcs
        .iter()
        .map(|f| {
            let n: u64 = stacks
                .iter()
                .filter(|(s, _)| s.iter().any(|x| x == f))
                .map(|(_, c)| c)
                .sum();
            (f.to_string(), n as f64 / total.max(1) as f64)
        })
        .collect()
}

/// The caller chain every sample of each workload function must carry,
/// outermost first, each frame with the file it comes from, as the CFI
/// walk (`--unwind auto`, the default) finds it: the workload calls
/// main_hot and lib_hot from main through burn, and each child calls
/// child_hot from main (fork returns into main).
const CHAINS: [(&str, &[(&str, &str)]); 3] = [
    (
        "main_hot",
        &[
            ("_start", "sampled"),
            ("__libc_start_main", "libc.so.6"),
            ("__libc_start_call_main", "libc.so.6"),
            ("main", "sampled"),
            ("burn", "sampled"),
            ("main_hot", "sampled"),
        ],
    ),
    (
        "lib_hot",
        &[
            ("_start", "sampled"),
            ("__libc_start_main", "libc.so.6"),
            ("__libc_start_call_main", "libc.so.6"),
            ("main", "sampled"),
            ("burn", "sampled"),
            ("lib_hot", "libsampled.so"),
        ],
    ),
    (
        "child_hot",
        &[
            ("_start", "sampled"),
            ("__libc_start_main", "libc.so.6"),
            ("__libc_start_call_main", "libc.so.6"),
            ("main", "sampled"),
            ("child_hot", "sampled"),
        ],
    ),
];

/// The same chains as the frame-pointer walk finds them (`--unwind fp`,
/// and `auto` before a file's table is loaded): libc's start code keeps
/// no frame pointer, so the walk ends at __libc_start_call_main, and the
/// hot leaf functions set up no frame, so burn, their caller, is skipped.
const FP_CHAINS: [(&str, &[(&str, &str)]); 3] = [
    (
        "main_hot",
        &[
            ("__libc_start_call_main", "libc.so.6"),
            ("main", "sampled"),
            ("main_hot", "sampled"),
        ],
    ),
    (
        "lib_hot",
        &[
            ("__libc_start_call_main", "libc.so.6"),
            ("main", "sampled"),
            ("lib_hot", "libsampled.so"),
        ],
    ),
    (
        "child_hot",
        &[
            ("__libc_start_call_main", "libc.so.6"),
            ("main", "sampled"),
            ("child_hot", "sampled"),
        ],
    ),
];

/// Of the samples whose stack holds `f`: (how many, how many carry one
/// of the whole `want` chains, outermost first, ending at `f`). Frames are compared
/// with `frame(stack entry) -> (function, file)`.
fn chain_count<'a>(
    stacks: &'a [(Vec<String>, u64)],
    f: &str,
    want: &[&[(&str, &str)]],
    frame: impl Fn(&'a str) -> (&'a str, &'a str),
) -> (u64, u64) {
    let (mut with_f, mut whole) = (0, 0);
    for (s, n) in stacks {
        let Some(at) = s.iter().position(|x| frame(x).0 == f) else {
            continue;
        };
        with_f += n;
        let got: Vec<(&str, &str)> = s[..=at].iter().map(|x| frame(x)).collect();
        if want.iter().any(|w| got == *w) {
            whole += n;
        }
    }
    (with_f, whole)
}

/// Stacks of a pprof profile with the file of each frame, read by the
/// independent decoder: frames are `function@file`.
fn pprof_stacks(pb: &std::path::Path) -> Vec<(Vec<String>, u64)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/pprof_summary.py");
    let o = Command::new("python3")
        .arg(&script)
        .arg(pb)
        .arg("--stacks")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (st, n) = l.rsplit_once('\t').unwrap();
            (
                st.split(';').map(String::from).collect(),
                n.parse().unwrap(),
            )
        })
        .collect()
}

/// Share of samples without a single resolved frame (a process sampled
/// before its sync landed).
fn unresolved(stacks: &[(Vec<String>, u64)]) -> f64 {
    let total: u64 = stacks.iter().map(|(_, n)| n).sum();
    let n: u64 = stacks
        .iter()
        .filter(|(s, _)| s.len() > 1 && s[1..].iter().all(|f| f.starts_with("[unknown]")))
        .map(|(_, n)| n)
        .sum();
    n as f64 / total.max(1) as f64
}

fn profile(args: &[&str], cmd: &[&str]) -> (String, String, PathBuf) {
    let out_file = workload()
        .dir
        .join(format!("p-{}.folded", std::process::id() ^ rand_tag()));
    let pins = common::pin_dir("profile");
    let o = common::output_within(
        Command::new(pidmap_bin())
            .args([
                "profile",
                "--pin-dir",
                pins.to_str().unwrap(),
                "-o",
                out_file.to_str().unwrap(),
            ])
            .args(args)
            .arg("--")
            .args(cmd),
        common::RUN,
    );
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr,
        out_file,
    )
}

fn rand_tag() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(1);
    N.fetch_add(1, Ordering::Relaxed) << 20
}

const FUNCS: [&str; 3] = ["main_hot", "lib_hot", "child_hot"];

#[test]
fn attribution_matches_the_workloads_own_cpu_split() {
    if !common::bpf_available() {
        return;
    }
    let w = workload();
    let (stdout, stderr, file) =
        profile(&["-F", "199"], &[w.exe.to_str().unwrap(), "1", "1", "50"]);
    let (m, l, c) = cpu_split(&stdout);
    let stacks: Vec<(Vec<String>, u64)> = parse_folded(&std::fs::read_to_string(&file).unwrap())
        .unwrap()
        .into_iter()
        .filter(|(s, _)| s.first().map(|x| x.as_str()) == Some("sampled"))
        .collect();
    let total: u64 = stacks.iter().map(|(_, n)| n).sum();
    // ~3 s of CPU at 199 Hz is ~600 samples; each function needs >= 100
    // for a share to mean anything at the bound below
    assert!(total > 450, "enough samples: {total}\n{stderr}");
    let sh = shares(&stacks, &FUNCS);
    let attributed: f64 = sh.values().sum();
    let early = unresolved(&stacks);
    eprintln!(
        "attributed: {:.1}%, unresolved: {:.1}%",
        attributed * 100.0,
        early * 100.0
    );
    // A child sampled before its fork request is served has no keys yet:
    // every frame of that sample is [unknown]. Measured over 9 runs on 2
    // cores shared with other builds: 0.7-7.9 % of the samples (46 of 50
    // children once, under the heaviest load), growing with the load;
    // bound 15 %.
    assert!(
        early <= 0.15,
        "{:.1}% of the samples unresolved\n{stderr}",
        early * 100.0
    );
    // measured: attributed + unresolved 97.7-99.3 %; bound 95 %
    assert!(
        attributed + early >= 0.95,
        "{:.1}% attributed, {:.1}% unresolved: {sh:?}\n{stderr}",
        attributed * 100.0,
        early * 100.0
    );
    let all = m + l + c;
    // measured error |share - CPU share| over 9 runs, the children's
    // share counting their unresolved samples: main 0.29-1.86, lib
    // 0.06-1.94, child 0.01-2.43 points; bound 4 points (a loss of 15 %
    // of the children's samples, ~5 points, fails)
    for (f, want) in [
        ("main_hot", m / all),
        ("lib_hot", l / all),
        ("child_hot", c / all),
    ] {
        let got = sh[f] + if f == "child_hot" { early } else { 0.0 };
        eprintln!("{f}: error {:.2} points", (got - want).abs() * 100.0);
        assert!(
            sh[f] * total as f64 >= 100.0,
            "{f}: too few samples ({:.0})",
            sh[f] * total as f64
        );
        assert!(
            (got - want).abs() <= 0.04,
            "{f}: {:.1}% vs {:.1}% of CPU ({:.1}% unresolved)\n{stderr}",
            got * 100.0,
            want * 100.0,
            early * 100.0
        );
    }
    // the whole caller chain of every function, in order: by CFI, or by
    // frame pointers in the moments before a file's table is loaded
    for ((f, chain), (_, fp)) in CHAINS.into_iter().zip(FP_CHAINS) {
        let names = |c: &[(&'static str, &str)]| -> Vec<(&'static str, &'static str)> {
            let mut w = vec![("sampled", "")];
            w.extend(c.iter().map(|(n, _)| (*n, "")));
            w
        };
        let (cfi, fp) = (names(chain), names(fp));
        let want = [cfi.as_slice(), fp.as_slice()];
        let (with_f, whole) = chain_count(&stacks, f, &want, |x| (x, ""));
        eprintln!("{f}: {whole} of {with_f} samples with the whole chain");
        // measured: every sample (100 %); bound 97 %
        assert!(
            whole as f64 >= 0.97 * with_f as f64 && with_f >= 100,
            "{f}: {whole} of {with_f} samples have the stack {want:?}\n{}",
            std::fs::read_to_string(&file).unwrap()
        );
    }
}

#[test]
fn every_frame_of_every_workload_stack_has_its_function_and_file() {
    if !common::bpf_available() {
        return;
    }
    let w = workload();
    for unwind in ["auto", "fp"] {
        let (_, stderr, file) = profile(
            &["-F", "199", "--format", "pprof", "--unwind", unwind],
            &[w.exe.to_str().unwrap(), "0.8", "0.8", "40"],
        );
        let stacks = pprof_stacks(&file);
        let text: String = stacks
            .iter()
            .map(|(s, n)| format!("{} {n}\n", s.join(";")))
            .collect();
        for ((f, cfi), (_, fp)) in CHAINS.into_iter().zip(FP_CHAINS) {
            // auto: by CFI, or by frame pointers before a table is loaded
            let want: &[&[(&str, &str)]] = if unwind == "fp" { &[fp] } else { &[cfi, fp] };
            let (with_f, whole) =
                chain_count(&stacks, f, want, |x| x.rsplit_once('@').unwrap_or((x, "")));
            let (_, by_cfi) = chain_count(&stacks, f, &[cfi], |x| {
                x.rsplit_once('@').unwrap_or((x, ""))
            });
            eprintln!(
                "--unwind {unwind}: {f}: {whole} of {with_f} samples with the whole chain, {by_cfi} by CFI"
            );
            // measured: 100 % of ~160 samples each; bound 97 % of >= 80
            assert!(with_f >= 80, "{f}: {with_f} samples\n{text}\n{stderr}");
            assert!(
                whole as f64 >= 0.97 * with_f as f64,
                "--unwind {unwind}: {f}: {whole} of {with_f} samples have the stack {want:?}:\n{text}\n{stderr}"
            );
            // the CFI walk did the work (the fall-back is only for the
            // first moments); by frame pointers, never
            if unwind == "fp" {
                assert_eq!(by_cfi, 0, "{text}");
            } else {
                assert!(
                    by_cfi as f64 >= 0.85 * with_f as f64,
                    "{f}: {by_cfi} of {with_f} samples by CFI:\n{text}\n{stderr}"
                );
            }
        }
    }
}

/// Folds `perf script` output: `comm;outer;...;leaf` with counts.
fn fold_perf_script(text: &str) -> Vec<(Vec<String>, u64)> {
    let mut out: HashMap<Vec<String>, u64> = HashMap::new();
    for (comm, frames) in common::perf_script_samples(text) {
        let mut s = vec![comm];
        s.extend(frames.into_iter().rev().map(|(f, _)| f));
        *out.entry(s).or_default() += 1;
    }
    out.into_iter().collect()
}

#[test]
fn shares_agree_with_perf() {
    if !common::bpf_available() {
        return;
    }
    let w = workload();
    let perf_ok = Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        perf_ok,
        "perf (Debian linux-perf) is installed by scripts/setup"
    );
    let exe = w.exe.to_str().unwrap();
    let (_, stderr, file) = profile(&["-F", "199"], &[exe, "1", "1", "50"]);
    let ours: Vec<_> = parse_folded(&std::fs::read_to_string(&file).unwrap())
        .unwrap()
        .into_iter()
        .filter(|(s, _)| s[0] == "sampled")
        .collect();
    let data = w.dir.join("perf.data");
    let st = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "199", "-g", "-o"])
        .arg(&data)
        .args(["--", exe, "1", "1", "50"])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "perf record: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let script = Command::new("perf")
        .args(["script", "-F", "comm,ip,sym", "-i"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(script.status.success());
    let theirs: Vec<_> = fold_perf_script(&String::from_utf8_lossy(&script.stdout))
        .into_iter()
        .filter(|(s, _)| s[0] == "sampled")
        .collect();
    let (mut a, b) = (shares(&ours, &FUNCS), shares(&theirs, &FUNCS));
    // children sampled before their sync: see the attribution test
    *a.get_mut("child_hot").unwrap() += unresolved(&ours);
    for f in FUNCS {
        eprintln!(
            "{f}: pidmap {:.2} perf {:.2} differ {:.2} points",
            a[f],
            b[f],
            (a[f] - b[f]).abs() * 100.0
        );
    }
    // measured difference over 18 runs (two separate runs of the
    // workload, each sampled at 199 Hz, on 2 busy cores): main 0.11-2.51,
    // lib 0.06-2.52 points: bound 5; child 0.11-5.81 points (perf too
    // loses children's first samples under load: 29 % where the workload
    // says 33 %): bound 8. The tight check of the children is against the
    // workload's own CPU split above.
    for f in FUNCS {
        let bound = if f == "child_hot" { 0.08 } else { 0.05 };
        assert!(
            (a[f] - b[f]).abs() <= bound,
            "{f}: pidmap {:.1}% perf {:.1}%\n{stderr}",
            a[f] * 100.0,
            b[f] * 100.0
        );
    }
}

#[test]
fn stripped_and_deleted_binaries_fall_back_without_crashing() {
    if !common::bpf_available() {
        return;
    }
    let w = workload();
    let stripped = w.dir.join("sampled-stripped");
    std::fs::copy(&w.exe, &stripped).unwrap();
    assert!(Command::new("strip")
        .arg("-s")
        .arg(&stripped)
        .status()
        .unwrap()
        .success());
    let (_, stderr, file) = profile(&[], &[stripped.to_str().unwrap(), "0.5", "0", "0"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("sampled-stripped+0x"),
        "file+0xoffset frames: {text}\n{stderr}"
    );
    // deleted while it runs: the copy is removed right after it started
    let doomed = w.dir.join("sampled-doomed");
    std::fs::copy(&w.exe, &doomed).unwrap();
    let script = format!("{0} 0.5 0 0 & while ! grep -q sampled-doomed /proc/$!/maps 2>/dev/null; do :; done; rm {0}; wait", doomed.display());
    let (_, stderr, file) = profile(&[], &["/bin/sh", "-c", &script]);
    assert!(!doomed.exists());
    let text = std::fs::read_to_string(&file).unwrap();
    let has = text.lines().any(|l| {
        l.starts_with("sampled-doomed")
            && (l.contains("main_hot") || l.contains("sampled-doomed+0x"))
    });
    assert!(has, "{text}\n{stderr}");
}

#[test]
fn after_a_kept_profile_the_audit_is_clean() {
    if !common::bpf_available() {
        return;
    }
    let w = workload();
    let pins = common::pin_dir("keep");
    let o = common::output_within(
        Command::new(pidmap_bin())
            .args([
                "profile",
                "--keep-pins",
                "--pin-dir",
                pins.to_str().unwrap(),
                "-o",
                "/dev/null",
                "--",
            ])
            .args([w.exe.to_str().unwrap(), "0.2", "0.2", "20"]),
        common::RUN,
    );
    assert!(o.status.success());
    let a = common::output_within(
        Command::new(pidmap_bin()).args(["audit", "--pin-dir", pins.to_str().unwrap()]),
        common::RUN,
    );
    let text = String::from_utf8_lossy(&a.stdout);
    assert_eq!(a.status.code(), Some(0), "{text}");
    pidmap::maps::loader::remove_pins(&pins);
}

#[test]
fn a_hot_unknown_process_is_requested_at_a_bounded_rate() {
    if !common::bpf_available() {
        return;
    }
    use pidmap::agent::{Agent, AgentConfig, Mode, Sampling};
    use std::time::{Duration, Instant};
    let pins = common::pin_dir("rate");
    let (mut agent, _h) = Agent::new(AgentConfig {
        mode: Mode::All,
        pin_dir: pins.clone(),
        sampling: Some(Sampling {
            freq: 999,
            kernel: false,
            ring_pages: 8,
            request_interval: Duration::from_millis(250),
            unwind: pidmap::sampler::unwind::Mode::Fp,
        }),
        ..Default::default()
    })
    .unwrap();
    // the loop does not run: nobody syncs, the process stays unknown
    agent.start_sampler().unwrap();
    let mut hot = Command::new(&workload().exe)
        .args(["2", "0", "0"])
        .spawn()
        .unwrap();
    let t = Instant::now();
    hot.wait().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let requests = agent.map("sample_requests").unwrap();
    let st: pidmap::abi::RequestState = requests
        .lookup(&hot.id())
        .unwrap()
        .expect("the hot process was requested");
    // 1 ms doubling to 250 ms: ~9 requests in the first 0.5 s, then 4/s
    let bound = 10.0 + 4.0 * secs;
    assert!(st.count >= 2, "{st:?}");
    assert!(
        (st.count as f64) <= bound,
        "{} requests in {secs:.1} s (bound {bound:.0}); at 999 Hz that is not one per sample",
        st.count
    );
    drop(agent);
    pidmap::maps::loader::remove_pins(&pins);
}

/// Starts `pidmap profile ARGS` and waits for its "serving" line.
fn start_profile(args: &[&str]) -> (common::Guarded, std::thread::JoinHandle<String>) {
    let all: Vec<&str> = std::iter::once("profile")
        .chain(args.iter().copied())
        .collect();
    common::start_serving_logged(&all)
}

#[test]
fn sigint_ends_a_profile_early_and_still_writes_it() {
    if !common::bpf_available() {
        return;
    }
    let out = workload().dir.join("sigint.folded");
    let pins = common::pin_dir("sigint");
    let hot = common::spawn(
        Command::new(&workload().exe)
            .args(["3", "0", "0"])
            .stdout(std::process::Stdio::null()),
    );
    let (c, err) = start_profile(&[
        "--duration",
        "600",
        "--pin-dir",
        pins.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let t = std::time::Instant::now();
    // samples of the hot process arrive: its marker appears once a sample
    // asked for it (nothing else syncs it), and it then burns 0.3 s more
    // CPU (~30 samples at 99 Hz) that resolve through its keys
    let trie_pin = pins.join(pidmap::abi::TRIE_NAME);
    let mut cpu_at_sync = None;
    common::wait_until(
        "the hot process's marker, then 0.3 s of its CPU",
        common::WAIT,
        || {
            let Some(at) = cpu_at_sync else {
                let known = pidmap::sys::bpf::MapHandle::from_pin(&trie_pin)
                    .ok()
                    .and_then(|m| {
                        m.lookup::<_, pidmap::abi::MappingInfo>(&pidmap::abi::PidPage::marker(
                            hot.id(),
                        ))
                        .ok()
                        .flatten()
                    })
                    .is_some();
                if known {
                    cpu_at_sync = Some(cpu_seconds(hot.id()));
                }
                return false;
            };
            cpu_seconds(hot.id()) >= at + 0.3
        },
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let mut c = c;
    let st = c.wait().unwrap();
    let err = err.join().unwrap();
    assert!(st.success(), "{err}");
    assert!(t.elapsed().as_secs() < 60, "ended early");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("sampled;") && l.contains("main_hot")),
        "{text}\n{err}"
    );
    assert!(!pins.exists());
}

/// CPU seconds (user + system) `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn a_running_pid_is_profiled_until_it_exits() {
    if !common::bpf_available() {
        return;
    }
    let mut hot = common::spawn(
        Command::new(&workload().exe)
            .args(["1.5", "0", "0"])
            .stdout(std::process::Stdio::null()),
    );
    let pid = hot.id().to_string();
    let out = workload().dir.join("pid.folded");
    let pins = common::pin_dir("pid");
    let o = common::output_within(
        Command::new(pidmap_bin()).args([
            "profile",
            "--pid",
            &pid,
            "--pin-dir",
            pins.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]),
        common::RUN,
    );
    hot.wait().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let stacks = parse_folded(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let total: u64 = stacks.iter().map(|(_, n)| n).sum();
    // 1.5 s at 99 Hz: ~150 samples; measured main_hot share 0.96-0.99
    // (the rest: start-up before main); at least 100 samples
    assert!(total >= 100, "{total} samples\n{err}");
    let sh = shares(&stacks, &["main_hot"]);
    eprintln!("{total} samples, main_hot {:.3}", sh["main_hot"]);
    assert!(sh["main_hot"] > 0.9, "{sh:?}\n{err}");
}

#[test]
fn kernel_stacks_are_symbolized_by_name_with_a_k_suffix() {
    if !common::bpf_available() {
        return;
    }
    // a workload that lives in the kernel: many small opens and writes
    let script = "i=0; while [ $i -lt 20000 ]; do echo x > /dev/null; i=$((i+1)); done";
    let (_, err, file) = profile(&["--kernel", "-F", "999"], &["/bin/sh", "-c", script]);
    let text = std::fs::read_to_string(&file).unwrap();
    let stacks = parse_folded(&text).unwrap();
    let count = |pred: &dyn Fn(&str) -> bool| -> u64 {
        stacks
            .iter()
            .filter(|(s, _)| s.iter().any(|f| pred(f)))
            .map(|(_, n)| n)
            .sum()
    };
    let kernel = count(&|f| f.ends_with("_[k]"));
    let unnamed = count(&|f| f == "[kernel]_[k]");
    // the system call path by name: the entry, the dispatcher and the
    // workload's own open
    let entry = count(&|f| f.starts_with("entry_SYSCALL_64") && f.ends_with("_[k]"));
    let dispatch = count(&|f| f == "do_syscall_64_[k]");
    let openat = count(&|f| f == "__x64_sys_openat_[k]");
    // measured: ~75 kernel stacks, every one named, all through
    // entry_SYSCALL_64 and do_syscall_64, ~half in openat
    eprintln!(
        "kernel {kernel} unnamed {unnamed} entry {entry} dispatch {dispatch} openat {openat}"
    );
    assert!(kernel >= 20, "{kernel} kernel stacks\n{text}\n{err}");
    assert!(
        unnamed * 20 <= kernel,
        "{unnamed} of {kernel} kernel stacks have unnamed frames\n{text}"
    );
    assert!(
        entry * 2 >= kernel && dispatch * 2 >= kernel,
        "entry_SYSCALL_64 in {entry}, do_syscall_64 in {dispatch} of {kernel}\n{text}"
    );
    assert!(openat > 0, "no __x64_sys_openat frame\n{text}");
}

#[test]
fn progress_is_shown_on_a_terminal() {
    if !common::bpf_available() {
        return;
    }
    // script(1) gives pidmap a terminal on stderr
    let pins = common::pin_dir("tty");
    let cmd = format!(
        "{} profile --pin-dir {} -o /dev/null -- {} 1.5 0 0",
        pidmap_bin().display(),
        pins.display(),
        workload().exe.display()
    );
    let o = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}");
    assert!(text.contains("\rpidmap: 1 s,"), "progress line: {text:?}");
}
