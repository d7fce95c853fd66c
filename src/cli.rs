//! The command line: a small hand-written parser (no dependency) and the
//! help texts, which must stay true.

use crate::agent::Mode;
use crate::budget::Budgets;
use crate::tables::DeleteStrategy;
use std::ffi::OsString;
use std::path::PathBuf;

pub const HELP: &str = "\
pidmap: keeps the kernel's pid+address -> file table exact, and profiles CPUs through it

Usage: pidmap <COMMAND> [OPTIONS]

Commands:
  run       the agent: track processes and keep pid_page_to_mapping_info exact
  profile   sample CPUs and attribute every frame to a file and function
  audit     check the pinned maps for leaked entries (and --repair them)
  bench     benchmarks: delete, insert, churn
  diff      compare two profiles: the functions whose share changed most
  help      this text, or `pidmap help COMMAND`

Options:
  -h, --help     print help (also after a command)
  -V, --version  print the version

Needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE) and Linux >= 5.5 with BTF.
Logging: RUST_LOG=debug|info|warn (default info).
";

pub const RUN_HELP: &str = "\
pidmap run: the agent

Usage: pidmap run [--all | --pid PID... | -- CMD ARGS...] [OPTIONS]

Modes (default: serve sync requests that BPF programs write to pid_events):
  --all              track every process (a /proc scan, then fork/exec events)
  --pid PID          track PID and its children (repeatable)
  -- CMD ARGS...     start CMD, track it and its descendants, and exit with
                     its exit status when it ends

Options:
  --pin-dir DIR          where the maps are pinned [default: /sys/fs/bpf/pidmap];
                         made 0700 if missing (not its parents); refused when
                         another user owns it or others may access it
  --keep-pins            keep the pinned maps at exit (default: remove them)
  --metrics-file FILE    write Prometheus metrics there every 5 s and at exit;
                         its directory must exist and not be writable by
                         group or others (unless root's and sticky, as /tmp)
  --max-entries N        trie capacity [default: 1048576]
  --ring-pages N         data pages per perf ring, a power of two [default: 8]
  --delete-strategy S    resume (this engine) or reissue-all (the upstream
                         profiler's way, for comparison) [default: resume]
  --wake-every-request   one wake-up record per sync request instead of one
                         per drain: more wake-ups, and a small ring can lose
                         records (for soaks of the lost-record re-sync)
  --max-keys-per-process N
                         trie keys one process may hold; 0: no limit
                         [default: max-entries / 16]
  --max-keys-per-uid N   trie keys the processes of one non-root uid may hold
                         together; 0: no limit and no reserve for root
                         [default: max-entries / 4]

Budgets: a process over its budget is tracked partially (its marker, then
its largest mappings) and counted (pidmap_keys_over_budget_total). Non-root
processes together never take the last 1/8 of the trie (kept for root), and
a process seen for the first time never the last 1/32 (kept for re-syncs of
tracked processes). A process is charged to its real uid.

SIGINT/SIGTERM stop cleanly; SIGHUP re-syncs every tracked process.
";

pub const AUDIT_HELP: &str = "\
pidmap audit: check the pinned maps for leaked entries

Usage: pidmap audit [--pin-dir DIR] [--repair] [--json]

Walks pid_page_to_mapping_info and pid_events, groups keys by pid and reports
pids whose process is gone or reused (marker start time differs) and keys
without a marker.

Options:
  --pin-dir DIR   [default: /sys/fs/bpf/pidmap]
  --repair        delete the leaked entries and report what was done
  --json          one JSON object instead of text

Exit status: 0 clean (or repaired), 1 leaked entries found, 2 error.
";

pub const BENCH_HELP: &str = "\
pidmap bench: benchmarks (each strategy side by side in one run)

Usage:
  pidmap bench delete [--map lpm|hash] [--keys N] [--missing-pct P]
                      [--pattern random|front|middle|back] [--reps R]
                      [--chunk N] [--json]
  pidmap bench insert [--map lpm|hash] [--keys N] [--reps R] [--json]
  pidmap bench churn  [--procs N] [--rate R] [--missing-pct P]
                      [--delete-strategy resume|reissue-all]
                      [--ring-pages N] [--max-entries N] [--workload CMD]
                      [--wake-every-request] [--json]

delete: fills a fresh map with N keys [default 100000] and deletes a list in
  which P percent [default 1] are absent, with the strategies resume,
  resume-single, reissue-all, single and batch-once; prints median ns per
  key, syscalls, and entries left in the map (read back from the kernel).
insert: batch insert versus one update per key.
churn: starts `pidmap run --all` (with --ring-pages, --max-entries and
  --wake-every-request passed on) and
  spawns N [default 2000] short-lived processes (--workload, split at
  spaces [default: /bin/sleep 0.02]) paced at R per second
  [default 500], deleting P percent of their keys behind its back, for
  --delete-strategy resume and reissue-all (default both); prints
  exit-to-cleanup latency, entries left, the audit, agent CPU per process,
  RSS along the run, files in the registry, lost records, refused keys.
";

pub const DIFF_HELP: &str = "\
pidmap diff: compare two profiles

Usage: pidmap diff BASE NEW [--threshold POINTS] [--top N] [--max-input BYTES]

BASE and NEW are folded stacks or pprof profiles (gzipped or not), regular
files or pipes. Prints the functions whose self share of samples changed
most, in percentage points.

Options:
  --threshold POINTS  exit 1 when a function's share changed by more
                      [default: 5]
  --top N             rows to print [default: 20]
  --max-input BYTES   the most an input may hold after decompression
                      (its stacks may take 4 times that in memory)
                      [default: 1073741824 (1 GiB)]

Exit status: 0 within the threshold, 1 beyond it, 2 error.
";

pub const PROFILE_HELP: &str = "\
pidmap profile: sample CPUs, attribute every frame through the trie

Usage: pidmap profile [--duration SECS | --pid PID... | -- CMD ARGS...] [OPTIONS]

Targets (default: the whole system for --duration seconds [default 10]):
  --duration SECS   profile for this long (also a limit with --pid)
  --pid PID         profile PID and its descendants (repeatable)
  -- CMD ARGS...    start CMD, profile it and every descendant until it
                    exits, then exit with its status

Options:
  -F, --freq HZ     samples per second per CPU, 1..9999 [default: 99]
  --kernel          also record kernel stacks
  -o, --output FILE write the profile there [default: stdout]
  --format F        folded, pprof (gzipped profile.proto, for go tool pprof,
                    Pyroscope, Parca, Grafana) or svg (a flame graph)
                    [default: folded]
  --top N           rows of the top-functions table on stderr [default: 15]
  --pin-dir DIR     [default: /sys/fs/bpf/pidmap-profile]
  --keep-pins       keep the pinned maps at exit (for pidmap audit)
  --ring-pages N    data pages per sample ring [default: 64]
  --max-keys-per-process N, --max-keys-per-uid N
                    trie key budgets, as for `pidmap run` [default: 1/16
                    and 1/4 of the trie; 0: no limit]

Output: folded stacks, `comm;outer;...;leaf count`, one stack a line (for
flamegraph.pl, inferno, speedscope). SIGINT ends early and still writes.
";

#[derive(Clone, Debug, PartialEq)]
pub struct RunArgs {
    pub mode: Mode,
    pub pin_dir: PathBuf,
    pub keep_pins: bool,
    pub metrics_file: Option<PathBuf>,
    pub max_entries: u32,
    pub ring_pages: usize,
    pub delete_strategy: DeleteStrategy,
    pub wake_every_request: bool,
    pub budgets: Budgets,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProfileArgs {
    pub mode: Mode,
    pub duration: Option<f64>,
    pub freq: u64,
    pub kernel: bool,
    pub output: Option<PathBuf>,
    pub top: usize,
    pub pin_dir: PathBuf,
    pub keep_pins: bool,
    pub ring_pages: usize,
    pub format: Format,
    pub budgets: Budgets,
}

/// Output format of a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Folded,
    Pprof,
    Svg,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BenchArgs {
    pub kind: String,
    pub map: String,
    pub keys: usize,
    pub missing_pct: f64,
    pub pattern: String,
    pub reps: usize,
    pub chunk: usize,
    pub procs: usize,
    pub rate: f64,
    pub json: bool,
    pub strategy: Option<String>,
    pub workload: Option<String>,
    pub ring_pages: usize,
    pub max_entries: u32,
    pub wake_every_request: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Cmd {
    Help(&'static str),
    Version,
    Run(RunArgs),
    Profile(ProfileArgs),
    Audit {
        pin_dir: PathBuf,
        repair: bool,
        json: bool,
    },
    Bench(BenchArgs),
    Diff {
        base: PathBuf,
        new: PathBuf,
        threshold: f64,
        top: usize,
        max_input: u64,
    },
}

/// A usage error: the message, and the help text to point at.
#[derive(Debug, PartialEq)]
pub struct Usage {
    pub msg: String,
    pub command: &'static str,
}

struct Args {
    items: Vec<OsString>,
    pos: usize,
    command: &'static str,
}

impl Args {
    fn err<T>(&self, msg: String) -> Result<T, Usage> {
        Err(Usage {
            msg,
            command: self.command,
        })
    }

    fn next(&mut self) -> Option<String> {
        let a = self.items.get(self.pos)?;
        self.pos += 1;
        Some(a.to_string_lossy().into_owned())
    }

    fn rest(&mut self) -> Vec<OsString> {
        let r = self.items[self.pos..].to_vec();
        self.pos = self.items.len();
        r
    }

    fn value<T: std::str::FromStr>(&mut self, flag: &str) -> Result<T, Usage> {
        let Some(v) = self.next() else {
            return self.err(format!("{flag} needs a value"));
        };
        match v.parse() {
            Ok(x) => Ok(x),
            Err(_) => self.err(format!("{flag}: invalid value {v:?}")),
        }
    }
}

pub fn parse(argv: Vec<OsString>) -> Result<Cmd, Usage> {
    let mut a = Args {
        items: argv,
        pos: 1,
        command: "",
    };
    let Some(cmd) = a.next() else {
        return Ok(Cmd::Help(HELP));
    };
    match cmd.as_str() {
        "-h" | "--help" => Ok(Cmd::Help(HELP)),
        "-V" | "--version" => Ok(Cmd::Version),
        "help" => Ok(Cmd::Help(match a.next().as_deref() {
            Some("run") => RUN_HELP,
            Some("audit") => AUDIT_HELP,
            Some("bench") => BENCH_HELP,
            Some("profile") => PROFILE_HELP,
            Some("diff") => DIFF_HELP,
            _ => HELP,
        })),
        "run" => {
            a.command = "run";
            parse_run(&mut a)
        }
        "audit" => {
            a.command = "audit";
            parse_audit(&mut a)
        }
        "bench" => {
            a.command = "bench";
            parse_bench(&mut a)
        }
        "profile" => {
            a.command = "profile";
            parse_profile(&mut a)
        }
        "diff" => {
            a.command = "diff";
            parse_diff(&mut a)
        }
        other => a.err(format!("unknown command {other:?}")),
    }
}

fn set_mode(a: &Args, mode: &mut Mode, new: Mode) -> Result<(), Usage> {
    match (&*mode, new) {
        (Mode::Serve, n) => *mode = n,
        (Mode::Pids(p), Mode::Pids(q)) => *mode = Mode::Pids([p.clone(), q].concat()),
        _ => return a.err("choose one of --all, --pid and -- CMD".into()),
    }
    Ok(())
}

fn parse_run(a: &mut Args) -> Result<Cmd, Usage> {
    let mut r = RunArgs {
        mode: Mode::Serve,
        pin_dir: PathBuf::from(crate::loader::DEFAULT_PIN_DIR),
        keep_pins: false,
        metrics_file: None,
        max_entries: crate::abi::TRIE_MAX_ENTRIES,
        ring_pages: 8,
        delete_strategy: DeleteStrategy::Resume,
        wake_every_request: false,
        budgets: Budgets::default(),
    };
    while let Some(f) = a.next() {
        match f.as_str() {
            "-h" | "--help" => return Ok(Cmd::Help(RUN_HELP)),
            "--all" => set_mode(a, &mut r.mode, Mode::All)?,
            "--pid" => {
                let p: u32 = a.value("--pid")?;
                if p == 0 {
                    return a.err("--pid: 0 is not a process".into());
                }
                set_mode(a, &mut r.mode, Mode::Pids(vec![p]))?
            }
            "--" => {
                let cmd = a.rest();
                if cmd.is_empty() {
                    return a.err("-- needs a command".into());
                }
                set_mode(a, &mut r.mode, Mode::Command(cmd))?
            }
            "--pin-dir" => r.pin_dir = a.value("--pin-dir")?,
            "--keep-pins" => r.keep_pins = true,
            "--wake-every-request" => r.wake_every_request = true,
            "--metrics-file" => r.metrics_file = Some(a.value("--metrics-file")?),
            "--max-entries" => {
                r.max_entries = a.value("--max-entries")?;
                if r.max_entries == 0 {
                    return a.err("--max-entries must be at least 1".into());
                }
            }
            "--ring-pages" => r.ring_pages = ring_pages(a)?,
            "--max-keys-per-process" => {
                r.budgets.per_process = Some(a.value("--max-keys-per-process")?)
            }
            "--max-keys-per-uid" => r.budgets.per_uid = Some(a.value("--max-keys-per-uid")?),
            "--delete-strategy" => {
                r.delete_strategy = match a.next().as_deref() {
                    Some("resume") => DeleteStrategy::Resume,
                    Some("reissue-all") => DeleteStrategy::ReissueAll,
                    _ => return a.err("--delete-strategy: resume or reissue-all".into()),
                }
            }
            other => return a.err(format!("unknown option {other:?}")),
        }
    }
    Ok(Cmd::Run(r))
}

fn ring_pages(a: &mut Args) -> Result<usize, Usage> {
    let n: usize = a.value("--ring-pages")?;
    if !n.is_power_of_two() || n > 4096 {
        return a.err(format!(
            "--ring-pages: {n} is not a power of two up to 4096"
        ));
    }
    Ok(n)
}

fn parse_audit(a: &mut Args) -> Result<Cmd, Usage> {
    let mut pin_dir = PathBuf::from(crate::loader::DEFAULT_PIN_DIR);
    let (mut repair, mut json) = (false, false);
    while let Some(f) = a.next() {
        match f.as_str() {
            "-h" | "--help" => return Ok(Cmd::Help(AUDIT_HELP)),
            "--pin-dir" => pin_dir = a.value("--pin-dir")?,
            "--repair" => repair = true,
            "--json" => json = true,
            other => return a.err(format!("unknown option {other:?}")),
        }
    }
    Ok(Cmd::Audit {
        pin_dir,
        repair,
        json,
    })
}

fn parse_bench(a: &mut Args) -> Result<Cmd, Usage> {
    let kind = match a.next() {
        Some(k) if k == "-h" || k == "--help" => return Ok(Cmd::Help(BENCH_HELP)),
        Some(k) if ["delete", "insert", "churn"].contains(&k.as_str()) => k,
        Some(k) => return a.err(format!("unknown benchmark {k:?}: delete, insert or churn")),
        None => return a.err("which benchmark? delete, insert or churn".into()),
    };
    let mut b = BenchArgs {
        kind,
        map: "lpm".into(),
        keys: 100_000,
        missing_pct: 1.0,
        pattern: "random".into(),
        reps: 5,
        chunk: crate::engine::EngineOptions::default().chunk,
        procs: 2000,
        rate: 500.0,
        json: false,
        strategy: None,
        workload: None,
        ring_pages: 8,
        max_entries: crate::abi::TRIE_MAX_ENTRIES,
        wake_every_request: false,
    };
    while let Some(f) = a.next() {
        match f.as_str() {
            "-h" | "--help" => return Ok(Cmd::Help(BENCH_HELP)),
            "--map" => {
                b.map = a.value("--map")?;
                if b.map != "lpm" && b.map != "hash" {
                    return a.err("--map: lpm or hash".into());
                }
            }
            "--keys" => b.keys = a.value("--keys")?,
            "--missing-pct" => {
                b.missing_pct = a.value("--missing-pct")?;
                if !(0.0..=100.0).contains(&b.missing_pct) {
                    return a.err("--missing-pct: between 0 and 100".into());
                }
            }
            "--pattern" => {
                b.pattern = a.value("--pattern")?;
                if !["random", "front", "middle", "back"].contains(&b.pattern.as_str()) {
                    return a.err("--pattern: random, front, middle or back".into());
                }
            }
            "--reps" => b.reps = a.value::<usize>("--reps")?.max(1),
            "--chunk" => b.chunk = a.value::<usize>("--chunk")?.max(1),
            "--procs" => b.procs = a.value("--procs")?,
            "--rate" => {
                b.rate = a.value("--rate")?;
                if b.rate <= 0.0 {
                    return a.err("--rate must be positive".into());
                }
            }
            "--delete-strategy" => {
                b.strategy = match a.next().as_deref() {
                    Some(s @ ("resume" | "reissue-all")) => Some(s.to_string()),
                    _ => return a.err("--delete-strategy: resume or reissue-all".into()),
                }
            }
            "--ring-pages" => b.ring_pages = ring_pages(a)?,
            "--workload" => b.workload = Some(a.value("--workload")?),
            "--wake-every-request" => b.wake_every_request = true,
            "--max-entries" => {
                b.max_entries = a.value("--max-entries")?;
                if b.max_entries == 0 {
                    return a.err("--max-entries must be at least 1".into());
                }
            }
            "--json" => b.json = true,
            other => return a.err(format!("unknown option {other:?}")),
        }
    }
    if b.keys == 0 {
        return a.err("--keys must be at least 1".into());
    }
    Ok(Cmd::Bench(b))
}

fn parse_profile(a: &mut Args) -> Result<Cmd, Usage> {
    let mut p = ProfileArgs {
        mode: Mode::Serve,
        duration: None,
        freq: 99,
        kernel: false,
        output: None,
        top: 15,
        pin_dir: PathBuf::from("/sys/fs/bpf/pidmap-profile"),
        keep_pins: false,
        ring_pages: 64,
        format: Format::Folded,
        budgets: Budgets::default(),
    };
    while let Some(f) = a.next() {
        match f.as_str() {
            "-h" | "--help" => return Ok(Cmd::Help(PROFILE_HELP)),
            "--duration" => {
                let d: f64 = a.value("--duration")?;
                if !(d > 0.0 && d < 1e7) {
                    return a.err("--duration: seconds, more than 0".into());
                }
                p.duration = Some(d);
            }
            "--pid" => {
                let pid: u32 = a.value("--pid")?;
                set_mode(a, &mut p.mode, Mode::Pids(vec![pid]))?
            }
            "--" => {
                let cmd = a.rest();
                if cmd.is_empty() {
                    return a.err("-- needs a command".into());
                }
                set_mode(a, &mut p.mode, Mode::Command(cmd))?
            }
            "-F" | "--freq" => {
                p.freq = a.value("--freq")?;
                if !(1..=9999).contains(&p.freq) {
                    return a.err(format!("--freq: {} is not in 1..9999", p.freq));
                }
            }
            "--kernel" => p.kernel = true,
            "-o" | "--output" => p.output = Some(a.value("-o")?),
            "--top" => p.top = a.value("--top")?,
            "--pin-dir" => p.pin_dir = a.value("--pin-dir")?,
            "--keep-pins" => p.keep_pins = true,
            "--ring-pages" => p.ring_pages = ring_pages(a)?,
            "--max-keys-per-process" => {
                p.budgets.per_process = Some(a.value("--max-keys-per-process")?)
            }
            "--max-keys-per-uid" => p.budgets.per_uid = Some(a.value("--max-keys-per-uid")?),
            "--format" => {
                p.format = match a.next().as_deref() {
                    Some("folded") => Format::Folded,
                    Some("pprof") => Format::Pprof,
                    Some("svg") => Format::Svg,
                    _ => return a.err("--format: folded, pprof or svg".into()),
                }
            }
            other => return a.err(format!("unknown option {other:?}")),
        }
    }
    if p.mode == Mode::Serve && p.duration.is_none() {
        p.duration = Some(10.0);
    }
    Ok(Cmd::Profile(p))
}

fn parse_diff(a: &mut Args) -> Result<Cmd, Usage> {
    let mut files = Vec::new();
    let (mut threshold, mut top): (f64, usize) = (5.0, 20);
    let mut max_input = crate::diff::DEFAULT_MAX_INPUT;
    while let Some(f) = a.next() {
        match f.as_str() {
            "-h" | "--help" => return Ok(Cmd::Help(DIFF_HELP)),
            "--threshold" => {
                threshold = a.value("--threshold")?;
                if threshold.is_nan() || threshold < 0.0 {
                    return a.err("--threshold: percentage points, 0 or more".into());
                }
            }
            "--top" => top = a.value("--top")?,
            "--max-input" => {
                max_input = a.value("--max-input")?;
                if max_input == 0 {
                    return a.err("--max-input: bytes, at least 1".into());
                }
            }
            other if other.starts_with("--") => return a.err(format!("unknown option {other:?}")),
            _ => files.push(PathBuf::from(f)),
        }
    }
    match <[PathBuf; 2]>::try_from(files) {
        Ok([base, new]) => Ok(Cmd::Diff {
            base,
            new,
            threshold,
            top,
            max_input,
        }),
        Err(_) => a.err("diff takes two profiles: BASE NEW".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Cmd, Usage> {
        parse(
            std::iter::once("pidmap")
                .chain(s.split_whitespace())
                .map(OsString::from)
                .collect(),
        )
    }

    #[test]
    fn modes_and_options() {
        let Cmd::Run(r) = p("run --pid 5 --pid 7 --pin-dir /sys/fs/bpf/x --keep-pins").unwrap()
        else {
            panic!()
        };
        assert_eq!(r.mode, Mode::Pids(vec![5, 7]));
        assert!(r.keep_pins);
        let Cmd::Run(r) = p("run --max-entries 10 -- /bin/true --pid 3").unwrap() else {
            panic!()
        };
        assert_eq!(
            r.mode,
            Mode::Command(vec!["/bin/true".into(), "--pid".into(), "3".into()])
        );
        assert_eq!(r.max_entries, 10);
        assert!(!r.wake_every_request);
        assert_eq!(r.budgets, Budgets::default(), "default fractions");
        let Cmd::Run(r) = p("run --all --max-keys-per-process 0 --max-keys-per-uid 500").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (r.budgets.per_process, r.budgets.per_uid),
            (Some(0), Some(500))
        );
        let Cmd::Profile(pr) = p("profile --max-keys-per-uid 7").unwrap() else {
            panic!()
        };
        assert_eq!(pr.budgets.per_uid, Some(7));
        let Cmd::Run(r) = p("run --all --wake-every-request").unwrap() else {
            panic!()
        };
        assert!(r.wake_every_request);
        let Cmd::Bench(args) = p("bench churn --wake-every-request --ring-pages 1").unwrap() else {
            panic!()
        };
        assert!(args.wake_every_request);
        assert_eq!(args.ring_pages, 1);
        assert!(matches!(
            p("run").unwrap(),
            Cmd::Run(RunArgs {
                mode: Mode::Serve,
                ..
            })
        ));
        assert_eq!(p("run --help").unwrap(), Cmd::Help(RUN_HELP));
        assert_eq!(p("").unwrap(), Cmd::Help(HELP));
        assert_eq!(p("--version").unwrap(), Cmd::Version);
    }

    #[test]
    fn bad_input_is_a_usage_error_never_a_panic() {
        for bad in [
            "run --all --pid 3",
            "run --pid",
            "run --pid x",
            "run --pid 0",
            "run --",
            "run --max-entries 0",
            "run --ring-pages 3",
            "run --delete-strategy fast",
            "run --max-keys-per-process -1",
            "run --max-keys-per-uid",
            "profile --max-keys-per-process x",
            "run --bogus",
            "audit --bogus",
            "bench",
            "bench nope",
            "bench delete --map array",
            "bench delete --missing-pct 200",
            "bench delete --pattern zigzag",
            "bench delete --keys 0",
            "bench churn --rate 0",
            "profile --freq 0",
            "profile --freq 10000",
            "profile --duration -1",
            "profile --format png",
            "diff onlyone",
            "diff a b c",
            "diff a b --threshold -1",
            "frobnicate",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        let e = p("run --pid x").unwrap_err();
        assert_eq!(e.command, "run");
        assert!(e.msg.contains("--pid"));
    }

    #[test]
    fn random_arguments_never_panic() {
        let words = [
            "run",
            "audit",
            "bench",
            "profile",
            "delete",
            "churn",
            "--pid",
            "--all",
            "--",
            "-F",
            "5",
            "0",
            "--keys",
            "--map",
            "lpm",
            "x",
            "--json",
            "--repair",
            "-o",
            "--duration",
            "1e400",
            "NaN",
            "-1",
        ];
        let mut rng = crate::rng::Rng::new(88172645463325252);
        for _ in 0..20000 {
            let mut v = vec![OsString::from("pidmap")];
            let x = rng.next_u64();
            for i in 0..(x % 7) {
                v.push(words[((x >> (i * 5)) % words.len() as u64) as usize].into());
            }
            let _ = parse(v);
        }
    }
}
