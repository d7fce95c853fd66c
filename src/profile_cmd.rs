//! `pidmap profile`: the agent's event loop with the sampler attached;
//! samples are symbolized as they arrive (files opened at first sight,
//! while their process lives) and aggregated into folded stacks.

use crate::agent::{Agent, AgentConfig, Mode, Sampling};
use crate::cli::{Format, ProfileArgs};
use crate::counters::COUNTERS;
use crate::error::{Error, Result};
use crate::process::ProcessManager;
use crate::profile::{FileOpener, Profile};
use crate::registry::VDSO_FILE_ID;
use crate::symbolize::KernelSymbols;
use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;
use std::time::Duration;

/// Opens the files of the process model: by path when it still names the
/// same (device, inode), else through /proc/PID/map_files while the process
/// lives (deleted or replaced files).
pub struct ModelFiles<'a>(pub &'a ProcessManager);

impl FileOpener for ModelFiles<'_> {
    fn name(&self, file_id: u64) -> Option<String> {
        self.0.registry.get(file_id).map(|f| f.path.clone())
    }

    fn open(&self, file_id: u64, pid: u32) -> Option<File> {
        if file_id == VDSO_FILE_ID {
            return None;
        }
        let info = self.0.registry.get(file_id)?;
        if let Ok(f) = File::open(&info.path) {
            if f.metadata()
                .is_ok_and(|m| m.dev() == info.dev && m.ino() == info.ino)
            {
                return Some(f);
            }
        }
        let p = self.0.get(pid)?;
        let m = p.mappings.values().find(|m| m.file_id == file_id)?;
        File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end)).ok()
    }
}

/// A flame graph of the folded stacks, drawn by inferno.
fn write_svg(profile: &Profile, w: &mut dyn Write) -> std::io::Result<()> {
    let mut folded = Vec::new();
    profile.write_folded(&mut folded)?;
    let text = String::from_utf8_lossy(&folded);
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = "pidmap profile".to_string();
    opts.count_name = "samples".to_string();
    inferno::flamegraph::from_lines(&mut opts, text.lines(), w).map_err(std::io::Error::other)
}

/// The sampler's per-CPU counters, summed over CPUs.
fn sampler_stats(map: &crate::sys::bpf::MapHandle) -> Vec<u64> {
    let ncpu = crate::sys::bpf::possible_cpus();
    (0..crate::abi::SAMPLER_STAT_NAMES.len() as u32)
        .map(|i| {
            let mut buf = vec![0u8; 8 * ncpu];
            match map.lookup_raw(&i, &mut buf) {
                Ok(true) => buf
                    .chunks_exact(8)
                    .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
                    .sum(),
                _ => 0,
            }
        })
        .collect()
}

pub fn run(p: ProfileArgs) -> Result<u8> {
    crate::sys::process::block_agent_signals()?;
    let what = match &p.mode {
        Mode::Command(argv) => format!(
            "`{}`",
            argv.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Mode::Pids(pids) => format!("pids {pids:?}"),
        _ => format!("the whole system for {} s", p.duration.unwrap_or(10.0)),
    };
    // fail before profiling, not after, when the output cannot be written
    let output = match &p.output {
        Some(path) => Some(
            File::create(path)
                .map_err(|e| Error::new(format!("creating {}: {e}", path.display())))?,
        ),
        None => None,
    };
    eprintln!("pidmap: profiling {what} at {} Hz", p.freq);
    let mode = match p.mode {
        Mode::Serve => Mode::All,
        m => m,
    };
    let cfg = AgentConfig {
        mode,
        pin_dir: p.pin_dir.clone(),
        keep_pins: p.keep_pins,
        signals: true,
        duration: p.duration.map(Duration::from_secs_f64),
        progress: nix::unistd::isatty(2).unwrap_or(false),
        budgets: Some(p.budgets),
        sampling: Some(Sampling {
            freq: p.freq,
            kernel: p.kernel,
            ring_pages: p.ring_pages,
            request_interval: Duration::from_millis(250),
        }),
        ..Default::default()
    };
    let kernel = if p.kernel {
        KernelSymbols::load()
    } else {
        None
    };
    let profile = Rc::new(RefCell::new(Profile::new(kernel)));
    let (mut agent, _handle) = Agent::new(cfg)?;
    let stats_map = agent.map("sampler_stats")?;
    let sink = profile.clone();
    agent.set_sample_sink(Box::new(move |s, pm| {
        sink.borrow_mut().add(s, &ModelFiles(pm))
    }));
    let started = std::time::Instant::now();
    let ended = agent.run()?;
    let profile = profile.borrow();
    let elapsed = started.elapsed();
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        match p.format {
            Format::Folded => profile.write_folded(w)?,
            Format::Pprof => crate::pprof::write_gzipped(
                w,
                &profile.stacks(),
                p.freq,
                elapsed.as_nanos() as u64,
            )?,
            Format::Svg => write_svg(&profile, w)?,
        }
        w.flush()
    };
    match (output, &p.output) {
        (Some(f), Some(path)) => {
            let mut f = std::io::BufWriter::new(f);
            write(&mut f).map_err(|e| Error::new(format!("writing {}: {e}", path.display())))?;
        }
        _ => write(&mut std::io::stdout().lock())?,
    }
    let c = COUNTERS.snapshot();
    eprintln!(
        "pidmap: {} samples ({} lost, {} malformed){}",
        profile.samples(),
        c.samples_lost,
        c.samples_malformed,
        p.output
            .as_ref()
            .map(|o| format!(", folded stacks in {}", o.display()))
            .unwrap_or_default()
    );
    let stats = sampler_stats(&stats_map);
    let stat = |name: &str| {
        crate::abi::SAMPLER_STAT_NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| stats[i])
    };
    eprintln!(
        "pidmap: sampler: {} frames, {} unresolved at sample time, {} samples of unknown processes, {} sync requests ({} suppressed by the rate limit)",
        stat("frames"),
        stat("unresolved_frames"),
        stat("unknown_process"),
        stat("requests"),
        stat("requests_suppressed")
    );
    if p.top > 0 && profile.samples() > 0 {
        eprint!("{}", profile.top_table(p.top));
    }
    Ok(ended.exit_code.map_or(0, |c| c.clamp(0, 255) as u8))
}
