//! The sampler against the real kernel (root): attribution of a workload
//! with a shared library and short-lived children, agreement with perf,
//! the per-process request rate bound, stripped and deleted binaries, and
//! a clean audit after a profile.

mod common;

use common::pidmap_bin;
use pidmap::profile::parse_folded;
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

fn profile(args: &[&str], cmd: &[&str]) -> (String, String, PathBuf) {
    let out_file = workload()
        .dir
        .join(format!("p-{}.folded", std::process::id() ^ rand_tag()));
    let pins = common::pin_dir("profile");
    let o = Command::new(pidmap_bin())
        .args([
            "profile",
            "--pin-dir",
            pins.to_str().unwrap(),
            "-o",
            out_file.to_str().unwrap(),
        ])
        .args(args)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
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
    assert!(total > 300, "enough samples: {total}\n{stderr}");
    let sh = shares(&stacks, &FUNCS);
    let attributed: f64 = sh.values().sum();
    assert!(
        attributed >= 0.90,
        "{:.1}% attributed: {sh:?}\n{stderr}",
        attributed * 100.0
    );
    let all = m + l + c;
    // tolerance: 6 points of share (sampling noise at ~600 samples is ~2)
    for (f, want) in [
        ("main_hot", m / all),
        ("lib_hot", l / all),
        ("child_hot", c / all),
    ] {
        let got = sh[f];
        assert!(
            (got - want).abs() <= 0.06,
            "{f}: {:.1}% vs {:.1}% of CPU\n{stderr}",
            got * 100.0,
            want * 100.0
        );
    }
}

/// Folds `perf script` output: `comm;outer;...;leaf` with counts.
fn fold_perf_script(text: &str) -> Vec<(Vec<String>, u64)> {
    let mut out: HashMap<Vec<String>, u64> = HashMap::new();
    let mut comm: Option<String> = None;
    let mut frames: Vec<String> = Vec::new();
    let mut flush = |comm: &mut Option<String>, frames: &mut Vec<String>| {
        if let Some(c) = comm.take() {
            let mut s = vec![c];
            s.extend(frames.drain(..).rev());
            *out.entry(s).or_default() += 1;
        }
        frames.clear();
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut comm, &mut frames);
        } else if !line.starts_with(char::is_whitespace) {
            flush(&mut comm, &mut frames);
            comm = line.split_whitespace().next().map(String::from);
        } else {
            // "\t    55d0c1a0 main_hot+0x1a (/path/sampled)"
            let mut parts = line.split_whitespace();
            parts.next();
            let sym = parts.next().unwrap_or("[unknown]");
            frames.push(sym.split('+').next().unwrap_or(sym).to_string());
        }
    }
    flush(&mut comm, &mut frames);
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
    let (a, b) = (shares(&ours, &FUNCS), shares(&theirs, &FUNCS));
    // tolerance: 7 points of share per function
    for f in FUNCS {
        assert!(
            (a[f] - b[f]).abs() <= 0.07,
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
    let o = Command::new(pidmap_bin())
        .args([
            "profile",
            "--keep-pins",
            "--pin-dir",
            pins.to_str().unwrap(),
            "-o",
            "/dev/null",
            "--",
        ])
        .args([w.exe.to_str().unwrap(), "0.2", "0.2", "20"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let a = Command::new(pidmap_bin())
        .args(["audit", "--pin-dir", pins.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&a.stdout);
    assert_eq!(a.status.code(), Some(0), "{text}");
    pidmap::loader::remove_pins(&pins);
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
    pidmap::loader::remove_pins(&pins);
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
    let mut hot = Command::new(&workload().exe)
        .args(["3", "0", "0"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (c, err) = start_profile(&[
        "--duration",
        "600",
        "--pin-dir",
        pins.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let t = std::time::Instant::now();
    // samples of the hot process arrive; then interrupt
    while std::fs::metadata(format!("/proc/{}/stat", hot.id())).is_ok()
        && t.elapsed().as_secs_f64() < 1.0
    {
        std::thread::yield_now();
    }
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
    hot.kill().ok();
    hot.wait().unwrap();
}

#[test]
fn a_running_pid_is_profiled_until_it_exits() {
    if !common::bpf_available() {
        return;
    }
    let mut hot = Command::new(&workload().exe)
        .args(["1.5", "0", "0"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = hot.id().to_string();
    let out = workload().dir.join("pid.folded");
    let pins = common::pin_dir("pid");
    let o = Command::new(pidmap_bin())
        .args([
            "profile",
            "--pid",
            &pid,
            "--pin-dir",
            pins.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    hot.wait().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let stacks = parse_folded(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let sh = shares(&stacks, &["main_hot"]);
    assert!(sh["main_hot"] > 0.8, "{sh:?}\n{err}");
}

#[test]
fn kernel_stacks_are_symbolized_with_a_k_suffix() {
    if !common::bpf_available() {
        return;
    }
    // a workload that lives in the kernel: many small writes
    let script = "i=0; while [ $i -lt 20000 ]; do echo x > /dev/null; i=$((i+1)); done";
    let (_, err, file) = profile(&["--kernel", "-F", "999"], &["/bin/sh", "-c", script]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.lines().any(|l| l.contains("_[k]")), "{text}\n{err}");
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
