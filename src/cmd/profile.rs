//! `pidmap profile`: the agent's event loop with the sampler attached;
//! samples are aggregated by raw frame as they arrive, each file's symbols
//! are asked of the file worker at its first sight (while its process
//! lives), and names are resolved as the symbols come back. Nothing here
//! opens a file of a profiled process.

use crate::abi::Sample;
use crate::agent::files::{Done, FileWorkers, Submitted};
use crate::agent::{Agent, AgentConfig, Mode, SampleSink, Sampling};
use crate::cli::{Format, ProfileArgs};
use crate::counters::COUNTERS;
use crate::error::{Error, Result};
use crate::sampler::profile::{FileSource, Profile, Requested};
use crate::sampler::symbolize::KernelSymbols;
use crate::sys::safe_open::MappedFile;
use crate::tracker::process::ProcessManager;
use crate::tracker::registry::VDSO_FILE_ID;
use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The files of the process model, read by the file worker: a request
/// becomes a job for one mapping of the file (the sampled process's, else
/// any tracked process's), opened through /proc/PID/map_files first.
pub struct ModelFiles<'a> {
    pub pm: &'a ProcessManager,
    pub files: &'a mut FileWorkers,
}

impl FileSource for ModelFiles<'_> {
    fn name(&self, file_id: u64) -> Option<String> {
        self.pm.file(file_id).map(|f| f.path.clone())
    }

    fn request(&mut self, file_id: u64, pid: u32) -> Requested {
        if file_id == VDSO_FILE_ID {
            return Requested::Ready(None);
        }
        let Some(info) = self.pm.file(file_id) else {
            return Requested::Ready(None);
        };
        let mapping_of = |p: u32| {
            let m = self
                .pm
                .get(p)?
                .mappings
                .values()
                .find(|m| m.file_id == file_id)?;
            Some((p, m.start, m.end))
        };
        let (pid, start, end) = mapping_of(pid)
            .or_else(|| self.pm.pids().into_iter().find_map(mapping_of))
            .unwrap_or((pid, 0, 0));
        let job = MappedFile {
            pid,
            start,
            end,
            dev: info.dev,
            ino: info.ino,
            path: info.path.clone(),
            deleted: info.deleted,
        };
        match self.files.submit(file_id, job) {
            Submitted::Queued => Requested::Pending,
            Submitted::Refused => Requested::Ready(None),
        }
    }
}

/// The profile as the agent's sample sink.
/// The profile command's side of the loop: samples into the profile, the
/// progress line on a terminal, and the end of `--pid` profiles.
struct ProfileSink {
    profile: Rc<RefCell<Profile>>,
    /// `--pid`: the run ends when every profiled process has exited.
    end_when_empty: bool,
    progress: Option<Progress>,
}

/// A progress line on stderr once a second (a terminal only).
struct Progress {
    started: Instant,
    next: Instant,
    duration: Option<Duration>,
}

impl Progress {
    fn new(duration: Option<Duration>) -> Progress {
        let now = Instant::now();
        Progress {
            started: now,
            next: now + Duration::from_secs(1),
            duration,
        }
    }

    fn show(&mut self, now: Instant) {
        if now < self.next {
            return;
        }
        self.next = now + Duration::from_secs(1);
        let elapsed = self.started.elapsed().as_secs_f64();
        let of = self
            .duration
            .map(|d| format!(" / {:.0} s", d.as_secs_f64()))
            .unwrap_or_default();
        eprint!(
            "\rpidmap: {elapsed:.0} s{of}, {} ",
            crate::text::counted(COUNTERS.snapshot().samples_read, "sample", "samples")
        );
    }
}

impl SampleSink for ProfileSink {
    fn sample(&mut self, sample: &Sample, pm: &ProcessManager, files: &mut FileWorkers) {
        self.profile
            .borrow_mut()
            .add(sample, &mut ModelFiles { pm, files });
    }

    fn file_done(&mut self, done: Done) {
        self.profile
            .borrow_mut()
            .file_done(done.file_id, done.symbols);
    }

    fn turn(&mut self, pm: &ProcessManager, now: Instant) -> bool {
        if let Some(p) = self.progress.as_mut() {
            p.show(now);
        }
        self.end_when_empty && pm.is_empty()
    }

    fn next_turn(&self) -> Option<Instant> {
        self.progress.as_ref().map(|p| p.next)
    }

    fn ended(&mut self) {
        // the progress line ends once, whoever ends the run first (a
        // signal's log line must not be appended to it)
        if self.progress.take().is_some() {
            eprintln!();
        }
    }
}

/// What an output of this format is, as the summary line names it.
fn format_name(f: Format) -> &'static str {
    match f {
        Format::Folded => "folded stacks",
        Format::Pprof => "pprof profile",
        Format::Svg => "SVG flame graph",
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
    crate::sys::signal::block_agent_signals()?;
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
    if p.output.is_none() && p.format == Format::Pprof && crate::sys::caps::stdout_is_terminal() {
        return Err(Error::new(
            "--format pprof writes gzip-compressed binary data: refused to write it to a \
             terminal; give -o FILE (or redirect standard output)",
        ));
    }
    // fail before profiling, not after, when the output cannot be written
    let output = match &p.output {
        Some(path) => Some(
            File::create(path)
                .map_err(|e| Error::from(e).context(format!("creating {}", path.display())))?,
        ),
        None => None,
    };
    let svg = match &p.svg {
        Some(path) => Some(
            File::create(path)
                .map_err(|e| Error::from(e).context(format!("creating {}", path.display())))?,
        ),
        None => None,
    };
    let is_command = matches!(p.mode, Mode::Command(_));
    eprintln!("pidmap: profiling {what} at {} Hz", p.freq);
    let mode = match p.mode {
        Mode::Serve => Mode::All,
        m => m,
    };
    let end_when_empty = matches!(mode, Mode::Pids(_));
    let duration = p.duration.map(Duration::from_secs_f64);
    let cfg = AgentConfig {
        mode,
        pin_dir: p.pin_dir.clone(),
        keep_pins: p.keep_pins,
        signals: true,
        duration,
        budgets: Some(p.budgets),
        sampling: Some(Sampling {
            freq: p.freq,
            kernel: p.kernel,
            ring_pages: p.ring_pages,
            request_interval: Duration::from_millis(250),
            unwind: p.unwind,
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
    agent.set_sample_sink(Box::new(ProfileSink {
        profile: profile.clone(),
        end_when_empty,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr())
            .then(|| Progress::new(duration)),
    }));
    let started = std::time::Instant::now();
    let ended = agent.run()?;
    if let Some(why) = &ended.not_started {
        // nothing ran: no profile to write
        eprintln!("pidmap: error: {why}");
        return Ok(ended.exit_code.map_or(2, |c| c.clamp(0, 255) as u8));
    }
    profile.borrow_mut().finish();
    let before = profile.borrow().samples();
    let kept = profile.borrow_mut().retain(&p.filters);
    let profile = profile.borrow();
    let elapsed = started.elapsed();
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        match p.format {
            Format::Folded => profile.write_folded(w)?,
            Format::Pprof => crate::sampler::pprof::write_gzipped(
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
            write(&mut f)
                .map_err(|e| Error::from(e).context(format!("writing {}", path.display())))?;
        }
        _ => write(&mut std::io::stdout().lock())?,
    }
    if let (Some(f), Some(path)) = (svg, &p.svg) {
        let mut f = std::io::BufWriter::new(f);
        write_svg(&profile, &mut f)
            .and_then(|_| f.flush())
            .map_err(|e| Error::from(e).context(format!("writing {}", path.display())))?;
        eprintln!("pidmap: SVG flame graph in {}", path.display());
    }
    if !p.filters.is_empty() {
        eprintln!("pidmap: the filters kept {kept} of {before} samples");
    }
    let c = COUNTERS.snapshot();
    eprintln!(
        "pidmap: {} ({} lost, {} malformed){}",
        crate::text::counted(profile.samples(), "sample", "samples"),
        c.samples_lost,
        c.samples_malformed,
        p.output
            .as_ref()
            .map(|o| format!(", {} in {}", format_name(p.format), o.display()))
            .unwrap_or_default()
    );
    eprintln!(
        "pidmap: files: {} read, {} refused as not regular, {} refused as not the mapped file, {} gone, {} failed, {} untrusted debug files, {} jobs timed out, {} refused",
        c.files_opened,
        c.files_not_regular,
        c.files_mismatch,
        c.files_gone,
        c.files_failed,
        c.debug_files_untrusted,
        c.file_jobs_timed_out,
        c.file_jobs_refused
    );
    let stats = sampler_stats(&stats_map);
    let stat = |name: &str| {
        crate::abi::SAMPLER_STAT_NAMES
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| stats[i])
    };
    eprintln!(
        "pidmap: sampler: {}, {} unresolved at sample time, {} of unknown processes, {} ({} suppressed by the rate limit)",
        crate::text::counted(stat("frames"), "frame", "frames"),
        stat("unresolved_frames"),
        crate::text::counted(stat("unknown_process"), "sample", "samples"),
        crate::text::counted(stat("requests"), "sync request", "sync requests"),
        stat("requests_suppressed")
    );
    if p.unwind.uses_tables() {
        eprintln!(
            "pidmap: unwinding ({}): {} walks: {} reached the stack's end; ended by {} no mapping, {} no table, {} no row, {} stop row, {} read fault, {} frame limit, {} no user registers; {} frames by CFI, {} frame-pointer steps; {} tables loaded, {} freed, {} files without CFI",
            p.unwind.name(),
            stat("walks"),
            stat("walk_end_marker"),
            stat("walk_no_mapping"),
            stat("walk_no_table"),
            stat("walk_no_row"),
            stat("walk_stop_row"),
            stat("walk_read_fault"),
            stat("walk_frame_limit"),
            stat("walk_no_regs"),
            stat("cfi_frames"),
            stat("fp_steps"),
            c.unwind_tables_loaded,
            c.unwind_tables_freed,
            c.unwind_tables_empty,
        );
    }
    if stat("user_walks") > 0 {
        eprintln!(
            "pidmap: user stacks: {} walked, {:.2} µs each on average in BPF ({})",
            stat("user_walks"),
            stat("user_walk_ns") as f64 / stat("user_walks") as f64 / 1000.0,
            if p.unwind.uses_tables() {
                "CFI walk and trie lookups"
            } else {
                "frame-pointer walk and trie lookups"
            }
        );
    }
    if let Some((runs, ns)) = ended.sampler_runs.filter(|r| r.0 > 0) {
        eprintln!(
            "pidmap: sampler program: {runs} runs, {:.2} µs each on average (kernel.bpf_stats_enabled)",
            ns as f64 / runs as f64 / 1000.0
        );
    }
    if p.top > 0 && profile.samples() > 0 {
        eprint!("{}", profile.top_table(p.top));
    }
    let filtered = !p.filters.is_empty();
    if let Some(note) = super::notes::few_samples(profile.samples(), p.freq, is_command, filtered) {
        eprintln!("{note}");
    }
    Ok(ended.exit_code.map_or(0, |c| c.clamp(0, 255) as u8))
}
