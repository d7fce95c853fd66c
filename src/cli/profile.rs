//! `pidmap profile`: its flag table and parser.

use super::run::set_mode;
use super::{choice, next_item, num, pid, ring_pages, Choice, CommandSpec, Flag, Item};
use super::{Cmd, Section, Usage};
use crate::agent::Mode;
use crate::sampler::pattern::Filters;
use crate::tracker::budget::Budgets;
use std::path::PathBuf;

const TARGETS: &[Flag] = &[
    Flag::value(
        "--duration",
        "SECS",
        "profile for this long; also a limit with --pid, and with -- CMD: at \
         its end CMD's process group gets SIGTERM (SIGKILL 5 s later) and the \
         exit status is CMD's (143 when that SIGTERM ended it)",
        "2.5",
    ),
    Flag::value(
        "--pid",
        "PID",
        "profile PID and its descendants (repeatable)",
        "1",
    ),
    Flag::value(
        "--",
        "CMD ARGS...",
        "start CMD in a process group of its own, profile it and every \
         descendant until it exits, then exit with its status (126: it cannot \
         be executed, 127: not found)",
        "/bin/true",
    ),
];

const OPTIONS: &[Flag] = &[
    Flag::value("--freq", "HZ", "samples per second per CPU, 1..9999", "49")
        .short('F')
        .default("99"),
    Flag::switch("--kernel", "also record kernel stacks"),
    Flag::value(
        "--unwind",
        "auto|cfi|fp",
        "how user stacks are walked: auto walks by each file's call frame \
         information (.eh_frame, .debug_frame; built per file off the loop \
         and loaded into the kernel) and takes a frame-pointer step where a \
         file has none (JIT code, a table not loaded yet); cfi ends a stack \
         there instead; fp follows frame pointers only (no tables)",
        "fp",
    )
    .default("auto"),
    Flag::value(
        "--output",
        "FILE",
        "write the profile there",
        "/tmp/profile.folded",
    )
    .short('o')
    .default("stdout"),
    Flag::value(
        "--format",
        "folded|pprof|svg",
        "folded, pprof (gzipped profile.proto, for go tool pprof, Pyroscope, \
         Parca, Grafana) or svg (a flame graph)",
        "svg",
    )
    .default("folded"),
    Flag::value(
        "--top",
        "N",
        "rows of the top-functions table on stderr",
        "3",
    )
    .default("15"),
    Flag::value(
        "--pin-dir",
        "DIR",
        "where the maps are pinned: the same default as run and audit; one \
         agent per directory, so a profile beside a `pidmap run` on the \
         default directory needs another one",
        "/sys/fs/bpf/x",
    )
    .default(crate::maps::loader::DEFAULT_PIN_DIR),
    Flag::switch(
        "--keep-pins",
        "keep the pinned maps at exit (`pidmap audit` reads them there)",
    ),
    Flag::value("--ring-pages", "N", "data pages per sample ring", "16").default("64"),
    Flag::value(
        "--max-keys-per-process",
        "N",
        "trie keys one process may hold, as for `pidmap run`; 0: no limit",
        "0",
    )
    .default("1/16 of the trie"),
    Flag::value(
        "--max-keys-per-uid",
        "N",
        "trie keys the processes of one non-root uid may hold, as for \
         `pidmap run`; 0: no limit",
        "7",
    )
    .default("1/4 of the trie"),
];

/// Filters, repeated runs and the extra flame graph (regression labs).
const LABS: &[Flag] = &[
    Flag::value(
        "--repeat",
        "N",
        "profile -- CMD N times, one profile per run: -o names a directory \
         (run-1.folded, ...) or a pattern with {} for the run number; then a \
         summary of the top functions' spread over the runs",
        "3",
    )
    .default("1"),
    Flag::value(
        "--svg",
        "FILE",
        "also write a flame graph there (beside -o's folded or pprof output)",
        "/tmp/profile.svg",
    ),
    Flag::value(
        "--comm",
        "PATTERN",
        "keep only the stacks of processes whose name matches (a small \
         regular expression, as for `pidmap diff`)",
        "^work",
    ),
    Flag::value(
        "--dso",
        "PATTERN",
        "keep only the stacks with a frame in a file that matches",
        "libc",
    ),
    Flag::value(
        "--function",
        "PATTERN",
        "keep only the stacks with a function that matches",
        "hot_[ab]",
    ),
];

pub const SPEC: CommandSpec = CommandSpec {
    name: "profile",
    intro: "\
pidmap profile: sample CPUs, attribute every frame through the trie

Usage: pidmap profile [--duration SECS | --pid PID... | -- CMD ARGS...] [OPTIONS]
       pidmap profile --repeat N -o DIR [OPTIONS] -- CMD ARGS...
",
    sections: &[
        Section {
            title: "Targets (default: the whole system for --duration seconds [default 10]):",
            flags: TARGETS,
        },
        Section {
            title: "Runs and filters:",
            flags: LABS,
        },
        Section {
            title: "Options:",
            flags: OPTIONS,
        },
    ],
    outro: "\
Output: folded stacks, `comm;outer;...;leaf count`, one stack a line (for
flamegraph.pl, inferno, speedscope). SIGINT ends early and still writes.
With -- CMD, SIGINT, SIGTERM and SIGHUP are forwarded to CMD's process group
(a terminal's Ctrl-C reaches pidmap only); pidmap waits for CMD, SIGKILLs
its group if it still runs 5 s later, writes the profile and exits with
CMD's status (128 + N when signal N ended it: 130 after a Ctrl-C).
",
};

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
    pub unwind: crate::sampler::unwind::Mode,
    /// `--repeat`: runs of -- CMD, one profile each.
    pub repeat: u32,
    /// `--svg`: a flame graph besides the output.
    pub svg: Option<PathBuf>,
    pub filters: Filters,
}

impl Choice for crate::sampler::unwind::Mode {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("auto", crate::sampler::unwind::Mode::Auto),
        ("cfi", crate::sampler::unwind::Mode::Cfi),
        ("fp", crate::sampler::unwind::Mode::Fp),
    ];
}

impl Default for ProfileArgs {
    fn default() -> ProfileArgs {
        ProfileArgs {
            mode: Mode::Serve,
            duration: None,
            freq: 99,
            kernel: false,
            output: None,
            top: 15,
            pin_dir: PathBuf::from(crate::maps::loader::DEFAULT_PIN_DIR),
            keep_pins: false,
            ring_pages: crate::agent::DEFAULT_SAMPLE_RING_PAGES,
            format: Format::Folded,
            budgets: Budgets::default(),
            unwind: crate::sampler::unwind::Mode::Auto,
            repeat: 1,
            svg: None,
            filters: Filters::default(),
        }
    }
}

/// Output format of a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Folded,
    Pprof,
    Svg,
}

impl Choice for Format {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("folded", Format::Folded),
        ("pprof", Format::Pprof),
        ("svg", Format::Svg),
    ];
}

/// The longest `--duration`, in seconds (a bound so the deadline cannot
/// overflow; 10^7 s is about 115 days).
pub const MAX_DURATION: f64 = 1e7;

const CHOOSE: &str = "choose one of --pid and -- CMD";

pub(super) fn parse(p: &mut lexopt::Parser) -> Result<Cmd, Usage> {
    let flags = super::all_flags(&SPEC);
    let mut r = ProfileArgs::default();
    let err = |msg: String| Usage {
        msg,
        command: SPEC.name,
    };
    while let Some(item) = next_item(p, &flags, SPEC.name)? {
        let (long, typed, value) = match item {
            Item::Help => return Ok(Cmd::Help(SPEC.help())),
            Item::Rest(cmd) => {
                set_mode(&mut r.mode, Mode::Command(cmd), CHOOSE).map_err(err)?;
                continue;
            }
            Item::Positional(v) => {
                return Err(err(format!(
                    "unexpected argument {v:?} (a command goes after --)"
                )))
            }
            Item::Flag { long, typed, value } => (long, typed, value),
        };
        let t = typed.as_str();
        match long {
            "--duration" => num::<f64>(t, value).and_then(|d| {
                if d > 0.0 && d <= MAX_DURATION {
                    r.duration = Some(d);
                    Ok(())
                } else {
                    Err(format!(
                        "{t}: {d} s is out of range: more than 0 and at most \
                         {MAX_DURATION:.0} s (about 115 days)"
                    ))
                }
            }),
            "--pid" => {
                pid(t, value).and_then(|p| set_mode(&mut r.mode, Mode::Pids(vec![p]), CHOOSE))
            }
            "--freq" => num::<u64>(t, value).and_then(|f| {
                if (1..=9999).contains(&f) {
                    r.freq = f;
                    Ok(())
                } else {
                    Err(format!("{t}: {f} is not in 1..9999"))
                }
            }),
            "--kernel" => {
                r.kernel = true;
                Ok(())
            }
            "--unwind" => choice(t, value).map(|m| r.unwind = m),
            "--output" => super::take(t, value).map(|v| r.output = Some(v.into())),
            "--format" => choice(t, value).map(|f| r.format = f),
            "--top" => num(t, value).map(|n| r.top = n),
            "--pin-dir" => super::take(t, value).map(|v| r.pin_dir = v.into()),
            "--keep-pins" => {
                r.keep_pins = true;
                Ok(())
            }
            "--ring-pages" => ring_pages(t, value).map(|n| r.ring_pages = n),
            "--max-keys-per-process" => num(t, value).map(|n| r.budgets.per_process = Some(n)),
            "--max-keys-per-uid" => num(t, value).map(|n| r.budgets.per_uid = Some(n)),
            "--repeat" => num::<u32>(t, value).and_then(|n| {
                if n == 0 {
                    Err(format!("{t}: runs, at least 1"))
                } else {
                    r.repeat = n;
                    Ok(())
                }
            }),
            "--svg" => super::take(t, value).map(|v| r.svg = Some(v.into())),
            "--comm" => super::diff::pattern(t, value).map(|x| r.filters.comm = Some(x)),
            "--dso" => super::diff::pattern(t, value).map(|x| r.filters.dso = Some(x)),
            "--function" => super::diff::pattern(t, value).map(|x| r.filters.function = Some(x)),
            other => Err(format!("{other}: in the table but not handled")),
        }
        .map_err(err)?;
    }
    if r.mode == Mode::Serve && r.duration.is_none() {
        r.duration = Some(10.0);
    }
    Ok(Cmd::Profile(r))
}
