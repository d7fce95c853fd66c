//! The command line, on `lexopt`. Each command has one flag table
//! ([`Flag`]); the table drives the parser (a flag missing from it is an
//! unknown option), renders the command's `--help`, and is what the help
//! tests walk, so a flag cannot exist in one place and not the others.
//!
//! Values stay `OsString`/`PathBuf` until a layer needs text: paths
//! (`--pin-dir`, `-o`, `--metrics-file`, diff inputs) and the command after
//! `--` pass through byte for byte.

mod audit;
mod bench;
mod diff;
mod profile;
mod run;

pub use diff::{DiffArgs, DiffFormat};
pub use profile::{Format, ProfileArgs};
pub use run::RunArgs;

use crate::cmd::bench::{DeleteOpts, InsertOpts};
use crate::cmd::churn::ChurnOpts;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

/// One option of one command: the single source of its parsing, its help
/// line and the help test.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    /// `--name`, or `--` for the command separator (`-- CMD ARGS...`).
    pub long: &'static str,
    pub short: Option<char>,
    /// The value's name in the help (`DIR`, `lpm|hash`); `None` for a switch.
    pub value: Option<&'static str>,
    /// The help line, wrapped when rendered.
    pub help: &'static str,
    /// The default as the help states it.
    pub default: Option<&'static str>,
    /// A value the parser accepts (the help tests pass it).
    pub example: &'static str,
}

impl Flag {
    /// A switch.
    pub const fn switch(long: &'static str, help: &'static str) -> Flag {
        Flag {
            long,
            short: None,
            value: None,
            help,
            default: None,
            example: "",
        }
    }

    /// An option with a value.
    pub const fn value(
        long: &'static str,
        value: &'static str,
        help: &'static str,
        example: &'static str,
    ) -> Flag {
        Flag {
            long,
            short: None,
            value: Some(value),
            help,
            default: None,
            example,
        }
    }

    pub const fn short(mut self, c: char) -> Flag {
        self.short = Some(c);
        self
    }

    pub const fn default(mut self, d: &'static str) -> Flag {
        self.default = Some(d);
        self
    }

    /// The argv words that pass this flag with its example value.
    pub fn example_args(&self) -> Vec<&'static str> {
        match (self.long, self.value) {
            ("--", _) => vec!["--", self.example],
            (l, Some(_)) => vec![l, self.example],
            (l, None) => vec![l],
        }
    }
}

/// A titled group of flags in a help text.
#[derive(Debug)]
pub struct Section {
    pub title: &'static str,
    pub flags: &'static [Flag],
}

/// A command's help: text before the flags, the flag sections, text after.
#[derive(Debug)]
pub struct CommandSpec {
    pub name: &'static str,
    pub intro: &'static str,
    pub sections: &'static [Section],
    pub outro: &'static str,
}

impl CommandSpec {
    /// Every flag of the command.
    pub fn flags(&self) -> impl Iterator<Item = &'static Flag> + '_ {
        self.sections.iter().flat_map(|s| s.flags.iter())
    }

    /// The argv words (after the program name) that reach the flags of
    /// section `i`: bench needs its benchmark, diff its inputs.
    pub fn argv_prefix(&self, i: usize) -> Vec<&'static str> {
        match self.name {
            "bench" => vec!["bench", bench::KINDS.get(i).map_or("delete", |k| k.0)],
            "diff" => vec!["diff", "--base", "a", "--new", "b"],
            n => vec![n],
        }
    }

    /// The `--help` text.
    pub fn help(&self) -> String {
        let mut out = String::from(self.intro);
        for s in self.sections {
            out.push('\n');
            out.push_str(s.title);
            out.push('\n');
            for f in s.flags {
                render_flag(&mut out, f);
            }
        }
        if self.sections.last().is_some_and(|s| s.title != "Options:") {
            out.push_str("\nOptions:\n");
        }
        out.push_str(&format!("{:<HELP_COL$}print this help\n", "  -h, --help"));
        if !self.outro.is_empty() {
            out.push('\n');
            out.push_str(self.outro);
        }
        out
    }
}

const HELP_COL: usize = 24;
const HELP_WIDTH: usize = 78;

fn render_flag(out: &mut String, f: &Flag) {
    let mut left = String::from("  ");
    if let Some(c) = f.short {
        left.push_str(&format!("-{c}, "));
    }
    left.push_str(f.long);
    if let Some(v) = f.value {
        left.push(' ');
        left.push_str(v);
    }
    // the default is one unbreakable word
    let default = f.default.map(|d| format!("[default: {d}]"));
    let words = f.help.split_whitespace().chain(default.as_deref());
    let lines = wrap(words, HELP_WIDTH - HELP_COL);
    if left.len() + 1 >= HELP_COL {
        out.push_str(&left);
        out.push('\n');
        left.clear();
    }
    for (i, l) in lines.iter().enumerate() {
        let head = if i == 0 { left.as_str() } else { "" };
        out.push_str(&format!("{head:<HELP_COL$}{l}\n"));
    }
}

/// Words in lines of at most `width` characters (a longer word alone).
fn wrap<'a>(words: impl Iterator<Item = &'a str>, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for w in words {
        let cur = lines.last_mut().expect("never empty");
        if !cur.is_empty() && cur.len() + 1 + w.len() > width {
            lines.push(w.to_string());
        } else {
            if !cur.is_empty() {
                cur.push(' ');
            }
            cur.push_str(w);
        }
    }
    lines
}

/// The words of a help text that look like flags, outside `quoted`
/// spans (which cite other commands).
pub fn flag_words(help: &str) -> Vec<String> {
    let own: String = help.split('`').step_by(2).collect::<Vec<_>>().join(" ");
    own.split(|c: char| c.is_whitespace() || "[](),|=".contains(c))
        .filter(|w| {
            let b = w.as_bytes();
            (b.len() >= 3 && b.starts_with(b"--") && b[2].is_ascii_alphabetic())
                || (b.len() == 2 && b[0] == b'-' && b[1].is_ascii_alphabetic())
        })
        .map(|w| w.trim_end_matches(['.', ':', ';']).to_string())
        .collect()
}

/// An option whose value is one of a fixed set of names.
pub trait Choice: Sized + Copy + PartialEq + 'static {
    const NAMES: &'static [(&'static str, Self)];

    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map_or("?", |(n, _)| n)
    }
}

/// "a, b or c".
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

impl Choice for crate::maps::engine::ResumePolicy {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("batch", crate::maps::engine::ResumePolicy::Batch),
        ("single", crate::maps::engine::ResumePolicy::Single),
    ];
}

impl Choice for crate::maps::tables::DeleteStrategy {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("resume", crate::maps::tables::DeleteStrategy::Resume),
        (
            "reissue-all",
            crate::maps::tables::DeleteStrategy::ReissueAll,
        ),
    ];
}

pub const HELP: &str = "\
pidmap: keeps the kernel's pid+address -> file table exact, and profiles CPUs through it

Usage: pidmap <COMMAND> [OPTIONS]

Commands:
  run       the agent: track processes and keep pid_page_to_mapping_info exact
  profile   sample CPUs and attribute every frame to a file and function
  audit     check the pinned maps for leaked entries (and --repair them)
  bench     benchmarks: delete, insert, churn; probe: the kernel's features
  diff      compare profiles: the functions that changed beyond the noise of runs
  help      this text, or `pidmap help COMMAND`

Options:
  -h, --help     print help (also after a command)
  -V, --version  print the version

Options take their value as `--name VALUE` or `--name=VALUE`.
Needs root (or CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE) and Linux >= 5.5 with BTF.
Logging: RUST_LOG=debug|info|warn (default info).
";

/// Every command's help spec, in the order of the top-level help.
pub const COMMANDS: &[&CommandSpec] = &[
    &run::SPEC,
    &profile::SPEC,
    &audit::SPEC,
    &bench::SPEC,
    &diff::SPEC,
];

/// The options one benchmark takes.
#[derive(Clone, Debug, PartialEq)]
pub enum BenchArgs {
    Delete(DeleteOpts),
    Insert(InsertOpts),
    Churn(ChurnOpts),
    /// `bench probe`: the kernel feature table.
    Probe {
        json: bool,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Cmd {
    Help(String),
    Version,
    Run(RunArgs),
    Profile(ProfileArgs),
    Audit {
        pin_dir: PathBuf,
        repair: bool,
        json: bool,
    },
    Bench(BenchArgs),
    Diff(DiffArgs),
}

/// A usage error: the message, and the command whose help to point at
/// (empty: the top-level help).
#[derive(Debug, PartialEq)]
pub struct Usage {
    pub msg: String,
    pub command: &'static str,
}

impl Usage {
    /// The line that points at the help.
    pub fn see(&self) -> String {
        if self.command.is_empty() {
            "See `pidmap --help`.".into()
        } else {
            format!("See `pidmap {} --help`.", self.command)
        }
    }
}

/// Parses argv (with the program name first).
pub fn parse(argv: Vec<OsString>) -> Result<Cmd, Usage> {
    let mut p = lexopt::Parser::from_iter(argv);
    let top = |msg: String| Usage { msg, command: "" };
    let cmd = match p.next() {
        // no command is a usage error: the help goes to stderr, exit 2
        Ok(None) => return Err(top(format!("a command is needed\n\n{}", HELP.trim_end()))),
        Ok(Some(lexopt::Arg::Short('h') | lexopt::Arg::Long("help"))) => {
            return Ok(Cmd::Help(HELP.into()))
        }
        Ok(Some(lexopt::Arg::Short('V') | lexopt::Arg::Long("version"))) => {
            return Ok(Cmd::Version)
        }
        Ok(Some(lexopt::Arg::Value(v))) => v,
        Ok(Some(lexopt::Arg::Short(c))) => return Err(top(format!("unknown option \"-{c}\""))),
        Ok(Some(lexopt::Arg::Long(l))) => return Err(top(format!("unknown option \"--{l}\""))),
        Err(e) => return Err(top(lexopt_msg(e))),
    };
    match cmd.to_str() {
        Some("help") => {
            let which = p.next().ok().flatten().and_then(|a| match a {
                lexopt::Arg::Value(v) => v.into_string().ok(),
                _ => None,
            });
            let Some(which) = which else {
                return Ok(Cmd::Help(HELP.into()));
            };
            match COMMANDS.iter().find(|c| c.name == which) {
                Some(c) => Ok(Cmd::Help(c.help())),
                None => {
                    let names: Vec<&str> = COMMANDS.iter().map(|c| c.name).collect();
                    Err(top(format!(
                        "help: unknown command {which:?}; the commands are {}",
                        names.join(", ")
                    )))
                }
            }
        }
        Some("run") => run::parse(&mut p),
        Some("profile") => profile::parse(&mut p),
        Some("audit") => audit::parse(&mut p),
        Some("bench") => bench::parse(&mut p),
        Some("diff") => diff::parse(&mut p),
        _ => Err(top(format!("unknown command {cmd:?}"))),
    }
}

/// One item of a command line, after the table lookup.
enum Item {
    /// A flag of the table (`long` identifies it), as typed, with its value.
    Flag {
        long: &'static str,
        typed: String,
        value: Option<OsString>,
    },
    /// The words after `--`, untouched.
    Rest(Vec<OsString>),
    /// A positional argument.
    Positional(OsString),
    /// -h/--help.
    Help,
}

/// Reads the next item, looking flags up in `flags`; `None` at the end.
fn next_item(
    p: &mut lexopt::Parser,
    flags: &[&'static Flag],
    command: &'static str,
) -> Result<Option<Item>, Usage> {
    let err = |msg: String| Usage { msg, command };
    let takes_rest = flags.iter().any(|f| f.long == "--");
    if takes_rest {
        if let Some(mut raw) = p.try_raw_args() {
            if raw.peek() == Some(OsStr::new("--")) {
                raw.next();
                let rest: Vec<OsString> = raw.collect();
                if rest.is_empty() {
                    let what = match flags.iter().find(|f| f.long == "--") {
                        Some(f) if f.value == Some("NEW...") => "the NEW profiles",
                        _ => "a command",
                    };
                    return Err(err(format!("-- needs {what}")));
                }
                return Ok(Some(Item::Rest(rest)));
            }
        }
    }
    let arg = match p.next() {
        Ok(None) => return Ok(None),
        Ok(Some(a)) => a,
        Err(e) => return Err(err(lexopt_msg(e))),
    };
    let (typed, found) = match arg {
        lexopt::Arg::Value(v) => return Ok(Some(Item::Positional(v))),
        lexopt::Arg::Short('h') | lexopt::Arg::Long("help") => return Ok(Some(Item::Help)),
        lexopt::Arg::Short(c) => (format!("-{c}"), flags.iter().find(|f| f.short == Some(c))),
        lexopt::Arg::Long(l) => (
            format!("--{l}"),
            flags
                .iter()
                .find(|f| f.long.strip_prefix("--") == Some(l) && !l.is_empty()),
        ),
    };
    let Some(flag) = found else {
        return Err(err(format!("unknown option {typed:?}")));
    };
    let value = match flag.value {
        None => None,
        Some(_) => match p.value() {
            Ok(v) => Some(v),
            Err(_) => return Err(err(format!("{typed} needs a value"))),
        },
    };
    Ok(Some(Item::Flag {
        long: flag.long,
        typed,
        value,
    }))
}

/// The message of a lexopt error, in our words.
fn lexopt_msg(e: lexopt::Error) -> String {
    match e {
        lexopt::Error::MissingValue { option: Some(o) } => format!("{o} needs a value"),
        lexopt::Error::MissingValue { option: None } => "a value is missing".into(),
        lexopt::Error::UnexpectedOption(o) => format!("unknown option {o:?}"),
        lexopt::Error::UnexpectedArgument(a) => format!("unexpected argument {a:?}"),
        lexopt::Error::UnexpectedValue { option, value } => {
            format!("{option} takes no value (got {value:?})")
        }
        other => other.to_string(),
    }
}

/// The value of a flag that has one (the table says so; a missing one is
/// a usage error, not a panic).
fn take(typed: &str, value: Option<OsString>) -> Result<OsString, String> {
    value.ok_or_else(|| format!("{typed} needs a value"))
}

/// A value parsed as a number (or anything `FromStr`).
fn num<T: std::str::FromStr>(typed: &str, value: Option<OsString>) -> Result<T, String> {
    let v = take(typed, value)?;
    v.to_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{typed}: invalid value {v:?}"))
}

/// A value that must be one of `T`'s names.
fn choice<T: Choice>(typed: &str, value: Option<OsString>) -> Result<T, String> {
    let v = take(typed, value)?;
    let names: Vec<&str> = T::NAMES.iter().map(|(n, _)| *n).collect();
    T::NAMES
        .iter()
        .find(|(n, _)| OsStr::new(n) == v)
        .map(|(_, x)| *x)
        .ok_or_else(|| format!("{typed}: {}, not {v:?}", one_of(&names)))
}

/// A process id: a number, and not 0 (no process has it).
fn pid(typed: &str, value: Option<OsString>) -> Result<u32, String> {
    match num::<u32>(typed, value)? {
        0 => Err(format!("{typed}: 0 is not a process")),
        p => Ok(p),
    }
}

/// A ring size in pages: a power of two up to 4096.
fn ring_pages(typed: &str, value: Option<OsString>) -> Result<usize, String> {
    let n: usize = num(typed, value)?;
    if !n.is_power_of_two() || n > 4096 {
        return Err(format!("{typed}: {n} is not a power of two up to 4096"));
    }
    Ok(n)
}

/// A trie capacity: at least 1.
fn max_entries(typed: &str, value: Option<OsString>) -> Result<u32, String> {
    match num::<u32>(typed, value)? {
        0 => Err(format!("{typed} must be at least 1")),
        n => Ok(n),
    }
}

/// The flags of a spec, as the lookup wants them.
fn all_flags(spec: &'static CommandSpec) -> Vec<&'static Flag> {
    spec.flags().collect()
}

#[cfg(test)]
mod tests;
