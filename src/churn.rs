//! `pidmap bench churn`: short-lived processes under a real agent process
//! (`pidmap run --all`), some of their keys deleted behind its back, for
//! each delete strategy side by side. Measures exit-to-cleanup latency
//! (from the kernel's view of the pinned trie), entries left, the agent's
//! CPU time per process and its peak RSS.

use crate::abi::{PidPage, TRIE_NAME};
use crate::bench::Rng;
use crate::cli::BenchArgs;
use crate::error::{Error, Result};
use crate::sys::bpf::MapHandle;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct ChurnResult {
    pub strategy: &'static str,
    pub procs: usize,
    pub tracked: usize,
    pub keys_deleted_behind: u64,
    pub latency_us: Vec<f64>,
    pub left: u64,
    pub agent_cpu_s: f64,
    pub peak_rss_kib: u64,
}

/// CPU time of a process in seconds, from /proc/PID/schedstat
/// (nanoseconds on a CPU; finer than the tick counts of /proc/PID/stat).
fn cpu_seconds(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1e9
}

fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The keys the agent records for `pid`, from its maps (same algorithm).
fn mapping_keys(pid: u32) -> Vec<PidPage> {
    let Ok(data) = std::fs::read(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let (entries, _) = crate::procmaps::parse_maps(&data);
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.is_exec_file()) {
        if let Ok(blocks) = crate::prefix::cover(e.start, e.end) {
            out.extend(
                blocks
                    .into_iter()
                    .map(|b| PidPage::new(pid, b.start, b.len)),
            );
        }
    }
    out
}

struct AgentProc {
    child: Child,
    pins: PathBuf,
}

fn start_agent(strategy: &str, pins: &Path) -> Result<AgentProc> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["run", "--all", "--delete-strategy", strategy, "--pin-dir"])
        .arg(pins)
        .env("RUST_LOG", "warn,pidmap=info")
        .stderr(Stdio::piped())
        .spawn()?;
    let mut err = BufReader::new(
        child
            .stderr
            .take()
            .ok_or_else(|| Error::new("agent stderr"))?,
    );
    let mut line = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line)? == 0 {
            return Err(Error::new("bench churn: the agent ended before serving"));
        }
        if line.contains("serving:") {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    Ok(AgentProc {
        child,
        pins: pins.to_path_buf(),
    })
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// Waits (spinning on the kernel map) until `cond` or the deadline.
fn until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

pub fn churn_once(strategy: &'static str, b: &BenchArgs, workload: &[&str]) -> Result<ChurnResult> {
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/pidmap-churn-{}-{strategy}",
        std::process::id()
    ));
    crate::loader::remove_pins(&pins);
    let mut agent = start_agent(strategy, &pins)?;
    let apid = agent.child.id();
    let trie = MapHandle::from_pin(&agent.pins.join(TRIE_NAME))?;
    let cpu0 = cpu_seconds(apid);
    let mut rng = Rng::new(0xc0ffee);
    let mut res = ChurnResult {
        strategy,
        procs: b.procs,
        ..Default::default()
    };
    let gap = Duration::from_secs_f64(1.0 / b.rate);
    let start = Instant::now();
    let mut pids = Vec::with_capacity(b.procs);
    for i in 0..b.procs {
        let due = start + gap * i as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d); // pacing of the workload, not synchronisation
        }
        let mut child = Command::new(workload[0]).args(&workload[1..]).spawn()?;
        let pid = child.id();
        pids.push(pid);
        let marker = PidPage::marker(pid);
        let soon = Instant::now() + Duration::from_secs(2);
        let tracked = until(soon, || {
            trie.lookup::<_, crate::abi::MappingInfo>(&marker)
                .ok()
                .flatten()
                .is_some()
        });
        if tracked {
            res.tracked += 1;
            // wait for the loader to be done, then delete some keys behind
            // the agent's back, as another tool would
            if b.missing_pct > 0.0 {
                let keys = mapping_keys(pid);
                for k in keys {
                    if (rng.below(10_000) as f64) < b.missing_pct * 100.0 && trie.delete(&k).is_ok()
                    {
                        res.keys_deleted_behind += 1;
                    }
                }
            }
        }
        child.wait()?;
        let exited = Instant::now();
        if tracked {
            let gone = until(exited + Duration::from_secs(5), || {
                trie.lookup::<_, crate::abi::MappingInfo>(&marker)
                    .ok()
                    .flatten()
                    .is_none()
            });
            if gone {
                res.latency_us.push(exited.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    // entries of workload processes still in the trie
    let pidset: std::collections::HashSet<u32> = pids.iter().copied().collect();
    let settle = Instant::now() + Duration::from_secs(5);
    until(settle, || {
        trie.keys::<PidPage>(1 << 22)
            .map(|k| k.iter().all(|k| !pidset.contains(&k.pid())))
            .unwrap_or(false)
    });
    res.left = trie
        .keys::<PidPage>(1 << 22)?
        .iter()
        .filter(|k| pidset.contains(&k.pid()))
        .count() as u64;
    res.agent_cpu_s = cpu_seconds(apid) - cpu0;
    res.peak_rss_kib = vm_hwm_kib(apid);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(apid as i32),
        nix::sys::signal::SIGTERM,
    );
    agent.child.wait()?;
    crate::loader::remove_pins(&pins);
    Ok(res)
}

pub fn run(b: &BenchArgs) -> Result<()> {
    let workload = ["/bin/sleep", "0.02"];
    let mut results = Vec::new();
    for s in ["resume", "reissue-all"] {
        results.push(churn_once(s, b, &workload)?);
    }
    let base = results[0].agent_cpu_s / results[0].procs.max(1) as f64;
    if !b.json {
        println!(
            "bench churn: {} processes ({} {}) at {}/s, {}% of keys deleted behind the agent's back",
            b.procs,
            workload[0],
            workload[1],
            b.rate,
            b.missing_pct
        );
        println!(
            "{:<12} {:>8} {:>10} {:>10} {:>10} {:>6} {:>12} {:>9} {:>10}",
            "strategy",
            "tracked",
            "p50 us",
            "p99 us",
            "max us",
            "left",
            "cpu us/proc",
            "vs resume",
            "peak RSS"
        );
    }
    for r in &results {
        let per = r.agent_cpu_s / r.procs.max(1) as f64;
        let (p50, p99, max) = (
            percentile(&r.latency_us, 0.5),
            percentile(&r.latency_us, 0.99),
            percentile(&r.latency_us, 1.0),
        );
        if b.json {
            println!(
                "{{\"strategy\":\"{}\",\"procs\":{},\"tracked\":{},\"deleted_behind\":{},\"latency_p50_us\":{p50:.0},\"latency_p99_us\":{p99:.0},\"latency_max_us\":{max:.0},\"left\":{},\"agent_cpu_us_per_proc\":{:.1},\"peak_rss_kib\":{}}}",
                r.strategy, r.procs, r.tracked, r.keys_deleted_behind, r.left, per * 1e6, r.peak_rss_kib
            );
        } else {
            println!(
                "{:<12} {:>8} {:>10.0} {:>10.0} {:>10.0} {:>6} {:>12.1} {:>8.2}x {:>6} KiB",
                r.strategy,
                r.tracked,
                p50,
                p99,
                max,
                r.left,
                per * 1e6,
                per / base.max(1e-12),
                r.peak_rss_kib
            );
        }
    }
    Ok(())
}
