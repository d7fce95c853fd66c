//! `pidmap diff`: its flag table and parser.

use super::{choice, next_item, num, Choice, Cmd, CommandSpec, Flag, Item, Section, Usage};
use crate::sampler::diff::Scale;
use crate::sampler::pattern::{Filters, Pattern};
use std::path::PathBuf;

const INPUTS: &[Flag] = &[
    Flag::value(
        "--base",
        "FILE",
        "a BASE profile (repeatable; as many as runs of the base build)",
        "a2",
    ),
    Flag::value(
        "--new",
        "FILE",
        "a NEW profile (repeatable; as many as runs of the new build)",
        "b2",
    ),
    Flag::value(
        "--",
        "NEW...",
        "the NEW profiles (every word after -- is one; options go before \
         it); the profiles before -- are the BASE ones",
        "b2",
    ),
];

const OPTIONS: &[Flag] = &[
    Flag::value(
        "--threshold",
        "POINTS",
        "a function changed when its self or total share moved by more \
         than this, and (several runs a side) significantly",
        "2.5",
    )
    .default("5"),
    Flag::value(
        "--alpha",
        "P",
        "the significance level of Welch's t-test across runs, in (0, 1)",
        "0.05",
    )
    .default("0.01"),
    Flag::value(
        "--scale",
        "run|base",
        "a share of what: run, each run's own samples (runs of a fixed \
         duration; shares sum to 100 %, so when one function grows the \
         others shrink); base, the base runs' mean samples (runs of a fixed \
         amount of work, a benchmark: a function that did not change keeps \
         its value)",
        "base",
    )
    .default("run"),
    Flag::value(
        "--format",
        "text|json|markdown|svg",
        "a table, JSON or Markdown (for CI, a pull-request comment), or a \
         differential flame graph (NEW's shape, red grew, blue shrank)",
        "json",
    )
    .default("text"),
    Flag::switch(
        "--reverse",
        "the flame graph of BASE's shape instead (where vanished stacks \
         show), coloured the same way; implies --format svg",
    ),
    Flag::value("--output", "FILE", "write the report there", "/tmp/d.txt")
        .short('o')
        .default("stdout"),
    Flag::value("--top", "N", "rows to print (changed ones always)", "3").default("20"),
    Flag::value(
        "--comm",
        "PATTERN",
        "keep only the stacks of processes whose name matches",
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
    Flag::value(
        "--max-input",
        "BYTES",
        "the most an input may hold after decompression (its stacks may take \
         4 times that in memory)",
        "4096",
    )
    .default("1073741824 (1 GiB)"),
];

pub const SPEC: CommandSpec = CommandSpec {
    name: "diff",
    intro: "\
pidmap diff: compare profiles of a base and a new build

Usage: pidmap diff BASE NEW [OPTIONS]
       pidmap diff [OPTIONS] BASE... -- NEW...
       pidmap diff --base FILE... --new FILE... [OPTIONS]

Profiles are folded stacks or pprof profiles (gzipped or not), regular files
or pipes, one per run. For each function: its self share (samples where it is
the leaf) and total share (samples where it is on the stack, so a caller whose
work is done in a shared helper is seen), the mean over each side's runs, the
change in percentage points and as a ratio, and with two runs or more a side
the two-sided p-value of Welch's t-test across the runs. Welch's t because a
share is a mean of many samples (close to normal across runs) and the builds
may differ in spread; at 5 runs a side Mann-Whitney U cannot go below
p = 0.008. A function changed when a share moved beyond --threshold and p is
below --alpha; with one profile a side no test can be made, and the
threshold alone decides, as for a single pair. Names are matched with
addresses stripped (`f+0x1a` is `f`; a `FILE+0xOFFSET` frame is FILE).

PATTERN is a small regular expression: `.` `[a-z]` `[^...]` `*` `+` `?`,
`^` and `$` at the ends, `|` between alternatives, `\\` before a literal; it
matches anywhere in the name. Shares are then of the kept samples. A folded
frame's file is known for `FILE+0xOFFSET` and `_[k]` (kernel) frames only.
",
    sections: &[
        Section {
            title: "Inputs:",
            flags: INPUTS,
        },
        Section {
            title: "Options:",
            flags: OPTIONS,
        },
    ],
    outro: "Exit status: 0 no function changed, 1 one did, 2 error.\n",
};

/// Output of `pidmap diff`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiffFormat {
    Text,
    Json,
    Markdown,
    Svg,
}

impl Choice for Scale {
    const NAMES: &'static [(&'static str, Self)] = &[("run", Scale::Run), ("base", Scale::Base)];
}

impl Choice for DiffFormat {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("text", DiffFormat::Text),
        ("json", DiffFormat::Json),
        ("markdown", DiffFormat::Markdown),
        ("svg", DiffFormat::Svg),
    ];
}

#[derive(Clone, Debug, PartialEq)]
pub struct DiffArgs {
    pub base: Vec<PathBuf>,
    pub new: Vec<PathBuf>,
    pub threshold: f64,
    pub alpha: f64,
    pub format: DiffFormat,
    pub reverse: bool,
    pub output: Option<PathBuf>,
    pub top: usize,
    pub filters: Filters,
    pub max_input: u64,
    pub scale: Scale,
}

pub(super) fn parse(p: &mut lexopt::Parser) -> Result<Cmd, Usage> {
    let flags = super::all_flags(&SPEC);
    let (mut before, mut after, mut bases, mut news) = (Vec::new(), None, Vec::new(), Vec::new());
    let mut a = DiffArgs {
        base: Vec::new(),
        new: Vec::new(),
        threshold: 5.0,
        alpha: 0.01,
        format: DiffFormat::Text,
        reverse: false,
        output: None,
        top: 20,
        filters: Filters::default(),
        max_input: crate::sampler::diff::DEFAULT_MAX_INPUT,
        scale: Scale::Run,
    };
    let err = |msg: String| Usage {
        msg,
        command: SPEC.name,
    };
    let mut format_given = false;
    while let Some(item) = next_item(p, &flags, SPEC.name)? {
        let (long, typed, value) = match item {
            Item::Help => return Ok(Cmd::Help(SPEC.help())),
            Item::Rest(rest) => {
                after = Some(rest.into_iter().map(PathBuf::from).collect::<Vec<_>>());
                continue;
            }
            Item::Positional(v) => {
                before.push(PathBuf::from(v));
                continue;
            }
            Item::Flag { long, typed, value } => (long, typed, value),
        };
        let t = typed.as_str();
        match long {
            "--base" => super::take(t, value).map(|v| bases.push(PathBuf::from(v))),
            "--new" => super::take(t, value).map(|v| news.push(PathBuf::from(v))),
            "--threshold" => num::<f64>(t, value).and_then(|x| {
                if x.is_nan() || x < 0.0 {
                    Err(format!("{t}: percentage points, 0 or more"))
                } else {
                    a.threshold = x;
                    Ok(())
                }
            }),
            "--alpha" => num::<f64>(t, value).and_then(|x| {
                if x > 0.0 && x < 1.0 {
                    a.alpha = x;
                    Ok(())
                } else {
                    Err(format!("{t}: a probability between 0 and 1, not {x}"))
                }
            }),
            "--scale" => choice(t, value).map(|x| a.scale = x),
            "--format" => choice(t, value).map(|f| {
                a.format = f;
                format_given = true;
            }),
            "--reverse" => {
                a.reverse = true;
                Ok(())
            }
            "--output" => super::take(t, value).map(|v| a.output = Some(v.into())),
            "--top" => num(t, value).map(|n| a.top = n),
            "--comm" => pattern(t, value).map(|x| a.filters.comm = Some(x)),
            "--dso" => pattern(t, value).map(|x| a.filters.dso = Some(x)),
            "--function" => pattern(t, value).map(|x| a.filters.function = Some(x)),
            "--max-input" => num::<u64>(t, value).and_then(|n| {
                if n == 0 {
                    Err(format!("{t}: bytes, at least 1"))
                } else {
                    a.max_input = n;
                    Ok(())
                }
            }),
            other => Err(format!("{other}: in the table but not handled")),
        }
        .map_err(err)?;
    }
    if a.reverse {
        if format_given && a.format != DiffFormat::Svg {
            return Err(err("--reverse draws a flame graph: --format svg".into()));
        }
        a.format = DiffFormat::Svg;
    }
    let (base, new) = sides(before, after, bases, news).map_err(err)?;
    a.base = base;
    a.new = new;
    Ok(Cmd::Diff(a))
}

/// BASE NEW; BASE... -- NEW...; `--base`/`--new` lists (with either).
/// `-- A B` alone is the pair A B (names that start with `-`).
type Sides = (Vec<PathBuf>, Vec<PathBuf>);
fn sides(
    before: Vec<PathBuf>,
    after: Option<Vec<PathBuf>>,
    mut bases: Vec<PathBuf>,
    mut news: Vec<PathBuf>,
) -> Result<Sides, String> {
    match after {
        Some(after) if before.is_empty() && bases.is_empty() && news.is_empty() => {
            match <[PathBuf; 2]>::try_from(after) {
                Ok([b, n]) => return Ok((vec![b], vec![n])),
                Err(_) => {
                    return Err("no BASE profile before --: give BASE... -- NEW... \
                                (or -- BASE NEW for a pair whose names start with -)"
                        .into())
                }
            }
        }
        Some(after) => {
            bases.extend(before);
            news.extend(after);
        }
        None if bases.is_empty() && news.is_empty() => match <[PathBuf; 2]>::try_from(before) {
            Ok([b, n]) => return Ok((vec![b], vec![n])),
            Err(v) if v.len() > 2 => {
                return Err(format!(
                    "{} profiles and no --: put -- between the BASE and the NEW ones \
                     (BASE... -- NEW...)",
                    v.len()
                ))
            }
            Err(_) => return Err("diff takes two profiles: BASE NEW".into()),
        },
        None => {
            if let Some(p) = before.first() {
                return Err(format!(
                    "{}: which side? with --base/--new give every profile with them, \
                     or put -- between the BASE and the NEW ones",
                    p.display()
                ));
            }
        }
    }
    if bases.is_empty() || news.is_empty() {
        return Err(format!(
            "{} BASE and {} NEW profiles: each side needs one or more",
            bases.len(),
            news.len()
        ));
    }
    Ok((bases, news))
}

/// A `--comm`/`--dso`/`--function` value (diff and profile).
pub(super) fn pattern(t: &str, v: Option<std::ffi::OsString>) -> Result<Pattern, String> {
    let v = super::take(t, v)?;
    let s = v
        .to_str()
        .ok_or_else(|| format!("{t}: the pattern is not UTF-8"))?;
    Pattern::new(s).map_err(|e| format!("{t}: {e}"))
}
