//! `pidmap bench churn`: short-lived processes under a real agent process
//! (`pidmap run --all`), some of their keys deleted behind its back, for
//! each delete strategy side by side. Measures exit-to-cleanup latency
//! (from the kernel's view of the pinned trie), entries left, the agent's
//! CPU time per process (split into user and kernel time) and its peak RSS.

use crate::abi::{PidPage, TRIE_NAME};
use crate::error::{Error, Result};
use crate::maps::tables::DeleteStrategy;
use crate::proc::status::status_kib;
use crate::rng::Rng;
use crate::sys::bpf::MapHandle;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `pidmap bench churn`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChurnOpts {
    pub procs: usize,
    pub rate: f64,
    pub missing_pct: f64,
    /// One strategy, or `None`: both side by side.
    pub strategy: Option<DeleteStrategy>,
    /// The workload command, split at spaces.
    pub workload: String,
    pub ring_pages: usize,
    pub max_entries: u32,
    pub wake_every_request: bool,
    pub json: bool,
}

impl Default for ChurnOpts {
    fn default() -> ChurnOpts {
        ChurnOpts {
            procs: 2000,
            rate: 500.0,
            missing_pct: 1.0,
            strategy: None,
            workload: "/bin/sleep 0.02".into(),
            ring_pages: crate::agent::DEFAULT_RING_PAGES,
            max_entries: crate::abi::TRIE_MAX_ENTRIES,
            wake_every_request: false,
            json: false,
        }
    }
}

/// The name `pidmap run --delete-strategy` takes for `s`.
pub const fn strategy_name(s: DeleteStrategy) -> &'static str {
    match s {
        DeleteStrategy::Resume => "resume",
        DeleteStrategy::ReissueAll => "reissue-all",
    }
}

#[derive(Debug, Default)]
pub struct ChurnResult {
    pub strategy: &'static str,
    pub procs: usize,
    pub tracked: usize,
    pub keys_deleted_behind: u64,
    pub latency_us: Vec<f64>,
    pub left: u64,
    pub agent_cpu_s: f64,
    /// The agent's user and kernel time (/proc/PID/stat utime and stime,
    /// clock-tick resolution).
    pub agent_user_s: f64,
    pub agent_kernel_s: f64,
    pub peak_rss_kib: u64,
    pub elapsed_s: f64,
    /// (lifetimes so far, agent VmRSS KiB)
    pub rss_checkpoints: Vec<(usize, u64)>,
    pub audit_leaked: u64,
    pub files_before: u64,
    pub files_after: u64,
    pub lost_records: u64,
    pub keys_refused: u64,
}

/// CPU time of a process in seconds: the sum of its threads'
/// /proc/PID/task/TID/schedstat (nanoseconds on a CPU; finer than the tick
/// counts of /proc/PID/stat). /proc/PID/schedstat alone is the main
/// thread's, which misses the agent's worker threads.
fn cpu_seconds(pid: u32) -> f64 {
    let one = |path: std::path::PathBuf| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .map(|t| one(t.path().join("schedstat")))
        .sum::<f64>()
        / 1e9
}

/// The keys the agent records for `pid`, from its maps (same algorithm).
fn mapping_keys(pid: u32) -> Vec<PidPage> {
    let Ok(data) = std::fs::read(format!("/proc/{pid}/maps")) else {
        return Vec::new();
    };
    let (entries, _) = crate::proc::maps::parse_maps(&data);
    let mut out = Vec::new();
    for e in entries.iter().filter(|e| e.is_exec_file()) {
        out.extend(crate::tracker::prefix::keys(pid, e.start, e.end));
    }
    out
}

struct AgentProc {
    child: Child,
    pins: PathBuf,
    metrics: PathBuf,
}

impl Drop for AgentProc {
    /// Stops the agent (also when a bench fails half-way) and removes its
    /// pins and metrics file.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = crate::sys::signal::terminate(self.child.id());
            let _ = self.child.wait();
        }
        crate::maps::loader::remove_pins(&self.pins);
        let _ = std::fs::remove_file(&self.metrics);
    }
}

fn start_agent(strategy: &str, pins: &Path, b: &ChurnOpts, metrics: &Path) -> Result<AgentProc> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::from(e).context("bench churn: finding this executable"))?;
    let child = Command::new(exe)
        .args(["run", "--all", "--delete-strategy", strategy, "--pin-dir"])
        .arg(pins)
        .args([
            "--ring-pages",
            &b.ring_pages.to_string(),
            "--max-entries",
            &b.max_entries.to_string(),
        ])
        .arg("--metrics-file")
        .arg(metrics)
        .args(b.wake_every_request.then_some("--wake-every-request"))
        .env("RUST_LOG", "warn,pidmap=info")
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::from(e).context("bench churn: starting the agent (pidmap run)"))?;
    let mut agent = AgentProc {
        child,
        pins: pins.to_path_buf(),
        metrics: metrics.to_path_buf(),
    };
    let mut err = BufReader::new(
        agent
            .child
            .stderr
            .take()
            .ok_or_else(|| Error::new("agent stderr"))?,
    );
    let mut line = String::new();
    let mut said = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line)? == 0 {
            let status = agent.child.wait()?;
            return Err(Error::new(format!(
                "bench churn: the agent (pidmap run) ended before serving, {status}: {}",
                said.trim()
            )));
        }
        if line.contains("serving:") {
            break;
        }
        if line.contains("error") {
            said = line.clone();
        }
    }
    std::thread::Builder::new()
        .name("churn-agent-log".into())
        .spawn(move || std::io::copy(&mut err, &mut std::io::sink()))
        .map_err(|e| Error::from(e).context("bench churn: spawning the log drain thread"))?;
    Ok(agent)
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

fn metric(path: &Path, name: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.strip_prefix(&format!("{name} "))
            .and_then(|v| v.parse().ok())
    })
}

pub fn churn_once(strategy: &'static str, b: &ChurnOpts, workload: &[&str]) -> Result<ChurnResult> {
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/pidmap-churn-{}-{strategy}",
        std::process::id()
    ));
    let metrics = std::env::temp_dir().join(format!(
        "pidmap-churn-{}-{strategy}.prom",
        std::process::id()
    ));
    crate::maps::loader::remove_pins(&pins);
    let agent = start_agent(strategy, &pins, b, &metrics)?;
    let apid = agent.child.id();
    let trie = MapHandle::from_pin(&agent.pins.join(TRIE_NAME))?;
    let files_before = {
        until(Instant::now() + Duration::from_secs(10), || {
            metric(&metrics, "pidmap_files").is_some()
        });
        metric(&metrics, "pidmap_files").unwrap_or(0)
    };
    let cpu0 = cpu_seconds(apid);
    let ticks0 = crate::proc::stat::cpu_ticks(apid).unwrap_or_default();
    let mut rng = Rng::new(0xc0ffee);
    let mut res = ChurnResult {
        strategy,
        procs: b.procs,
        ..Default::default()
    };
    // the reaper waits for each child in order and times its cleanup
    let (tx, rx) = crossbeam_channel::bounded::<(Child, bool)>(4096);
    let reaper_trie = MapHandle::from_pin(&agent.pins.join(TRIE_NAME))?;
    let reaper = std::thread::Builder::new()
        .name("churn-reaper".into())
        .spawn(move || {
            let mut lat = Vec::new();
            for (mut child, tracked) in rx {
                let pid = child.id();
                let _ = child.wait();
                let exited = Instant::now();
                if tracked {
                    let marker = PidPage::marker(pid);
                    let gone = until(exited + Duration::from_secs(5), || {
                        reaper_trie
                            .lookup::<_, crate::abi::MappingInfo>(&marker)
                            .ok()
                            .flatten()
                            .is_none()
                    });
                    if gone {
                        lat.push(exited.elapsed().as_secs_f64() * 1e6);
                    }
                }
            }
            lat
        })
        .map_err(|e| Error::from(e).context("bench churn: spawning the reaper thread"))?;
    let gap = Duration::from_secs_f64(1.0 / b.rate);
    let start = Instant::now();
    let mut pids = std::collections::HashSet::with_capacity(b.procs);
    let checkpoints = [b.procs / 10, b.procs / 2, b.procs];
    for i in 0..b.procs {
        let due = start + gap * i as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d); // pacing of the workload, not synchronisation
        }
        let child = Command::new(workload[0])
            .args(&workload[1..])
            .spawn()
            .map_err(|e| {
                Error::from(e).context(format!(
                    "bench churn: starting workload process {} ({})",
                    i + 1,
                    workload[0]
                ))
            })?;
        let pid = child.id();
        pids.insert(pid);
        let marker = PidPage::marker(pid);
        let soon = Instant::now() + Duration::from_millis(50);
        let tracked = until(soon, || {
            trie.lookup::<_, crate::abi::MappingInfo>(&marker)
                .ok()
                .flatten()
                .is_some()
        });
        if tracked {
            res.tracked += 1;
            // delete some keys behind the agent's back, as another tool would
            if b.missing_pct > 0.0 {
                for k in mapping_keys(pid) {
                    if (rng.below(10_000) as f64) < b.missing_pct * 100.0 && trie.delete(&k).is_ok()
                    {
                        res.keys_deleted_behind += 1;
                    }
                }
            }
        }
        if tx.send((child, tracked)).is_err() {
            break;
        }
        if checkpoints.contains(&(i + 1)) {
            res.rss_checkpoints.push((i + 1, status_kib(apid, "VmRSS")));
        }
    }
    drop(tx);
    res.latency_us = reaper
        .join()
        .map_err(|_| Error::new("churn reaper panicked"))?;
    res.elapsed_s = start.elapsed().as_secs_f64();
    // entries of exited workload processes still in the trie (pid numbers
    // wrap: a workload pid may now belong to a live process)
    let dead =
        |k: &PidPage| pids.contains(&k.pid()) && crate::proc::stat::start_time(k.pid()).is_none();
    let settle = Instant::now() + Duration::from_secs(5);
    until(settle, || {
        trie.keys::<PidPage>(1 << 22)
            .map(|k| !k.iter().any(dead))
            .unwrap_or(false)
    });
    res.left = trie
        .keys::<PidPage>(1 << 22)?
        .iter()
        .filter(|k| dead(k))
        .count() as u64;
    let report = crate::maps::audit::audit(
        &trie,
        &MapHandle::from_pin(&agent.pins.join(crate::abi::EVENTS_NAME))?,
        &crate::proc::stat::start_time,
    )?;
    res.audit_leaked = report.leaked_keys();
    res.agent_cpu_s = cpu_seconds(apid) - cpu0;
    let ticks = crate::proc::stat::cpu_ticks(apid).unwrap_or_default();
    let hz = crate::sys::process::clock_ticks() as f64;
    res.agent_user_s = ticks.0.saturating_sub(ticks0.0) as f64 / hz;
    res.agent_kernel_s = ticks.1.saturating_sub(ticks0.1) as f64 / hz;
    res.peak_rss_kib = status_kib(apid, "VmHWM");
    // one more metrics period, so the gauges describe the quiet state
    let stamp = std::fs::metadata(&metrics).and_then(|m| m.modified()).ok();
    until(Instant::now() + Duration::from_secs(12), || {
        std::fs::metadata(&metrics).and_then(|m| m.modified()).ok() != stamp
    });
    res.files_before = files_before;
    res.files_after = metric(&metrics, "pidmap_files").unwrap_or(0);
    res.lost_records = metric(&metrics, "pidmap_lost_records_total").unwrap_or(0);
    res.keys_refused = metric(&metrics, "pidmap_keys_refused_total").unwrap_or(0);
    drop(agent);
    Ok(res)
}

pub fn run(b: &ChurnOpts) -> Result<()> {
    let workload: Vec<&str> = b.workload.split_whitespace().collect();
    if workload.is_empty() {
        return Err(Error::new("bench churn: --workload is empty"));
    }
    let strategies: Vec<&'static str> = match b.strategy {
        Some(s) => vec![strategy_name(s)],
        None => [DeleteStrategy::Resume, DeleteStrategy::ReissueAll]
            .map(strategy_name)
            .to_vec(),
    };
    let mut results = Vec::new();
    for s in strategies {
        results.push(churn_once(s, b, &workload)?);
    }
    let base = results[0].agent_cpu_s / results[0].procs.max(1) as f64;
    if !b.json {
        println!(
            "(cpu us/proc: the agent's CPU time per lifetime, its threads' /proc/PID/task/TID/schedstat summed; user and kernel: its utime and stime from /proc/PID/stat, in clock ticks of {} ms)",
            1000 / crate::sys::process::clock_ticks().max(1)
        );
        println!(
            "bench churn: {} ({}) paced at {}/s, {}% of keys deleted behind the agent's back, agent --ring-pages {} --max-entries {}{}",
            crate::text::counted(b.procs as u64, "process", "processes"),
            workload.join(" "),
            b.rate,
            b.missing_pct,
            b.ring_pages,
            b.max_entries,
            if b.wake_every_request {
                " --wake-every-request"
            } else {
                ""
            }
        );
        println!(
            "{:<12} {:>8} {:>7} {:>8} {:>8} {:>8} {:>5} {:>6} {:>11} {:>6} {:>6} {:>9} {:>9}",
            "strategy",
            "tracked",
            "rate/s",
            "p50 us",
            "p99 us",
            "max us",
            "left",
            "audit",
            "cpu us/proc",
            "user",
            "kernel",
            "vs resume",
            "peak RSS"
        );
    }
    for r in &results {
        let per = r.agent_cpu_s / r.procs.max(1) as f64;
        let user = r.agent_user_s / r.procs.max(1) as f64 * 1e6;
        let kernel = r.agent_kernel_s / r.procs.max(1) as f64 * 1e6;
        let (p50, p99, max) = (
            percentile(&r.latency_us, 0.5),
            percentile(&r.latency_us, 0.99),
            percentile(&r.latency_us, 1.0),
        );
        let rate = r.procs as f64 / r.elapsed_s.max(1e-9);
        let rss: Vec<String> = r
            .rss_checkpoints
            .iter()
            .map(|(n, k)| format!("{n}:{k}"))
            .collect();
        if b.json {
            println!(
                "{{\"strategy\":\"{}\",\"procs\":{},\"tracked\":{},\"rate\":{rate:.0},\"deleted_behind\":{},\"latency_p50_us\":{p50:.0},\"latency_p99_us\":{p99:.0},\"latency_max_us\":{max:.0},\"left\":{},\"audit_leaked\":{},\"agent_cpu_us_per_proc\":{:.1},\"agent_user_us_per_proc\":{user:.1},\"agent_kernel_us_per_proc\":{kernel:.1},\"peak_rss_kib\":{},\"files_before\":{},\"files_after\":{},\"lost_records\":{},\"keys_refused\":{}}}",
                r.strategy, r.procs, r.tracked, r.keys_deleted_behind, r.left, r.audit_leaked, per * 1e6, r.peak_rss_kib, r.files_before, r.files_after, r.lost_records, r.keys_refused
            );
        } else {
            println!(
                "{:<12} {:>8} {:>7.0} {:>8.0} {:>8.0} {:>8.0} {:>5} {:>6} {:>11.1} {:>6.0} {:>6.0} {:>8.2}x {:>5} KiB",
                r.strategy, r.tracked, rate, p50, p99, max, r.left, r.audit_leaked, per * 1e6, user, kernel, per / base.max(1e-12), r.peak_rss_kib
            );
            println!(
                "  {}: RSS KiB at lifetimes {}; files in registry {} before, {} after; {} keys deleted behind; {} perf records lost; {} keys refused (full trie)",
                r.strategy,
                rss.join(" "),
                r.files_before,
                r.files_after,
                r.keys_deleted_behind,
                r.lost_records,
                r.keys_refused
            );
        }
    }
    Ok(())
}
