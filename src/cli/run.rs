//! `pidmap run`: its flag table and parser.

use super::{choice, max_entries, next_item, num, pid, ring_pages, CommandSpec, Flag, Item};
use super::{Cmd, Section, Usage};
use crate::agent::Mode;
use crate::maps::engine::ResumePolicy;
use crate::maps::tables::DeleteStrategy;
use crate::tracker::budget::Budgets;
use std::path::PathBuf;

const MODES: &[Flag] = &[
    Flag::switch(
        "--all",
        "track every process (a /proc scan, then fork/exec events)",
    ),
    Flag::value(
        "--pid",
        "PID",
        "track PID and its children (repeatable)",
        "1",
    ),
    Flag::value(
        "--",
        "CMD ARGS...",
        "start CMD in a process group of its own, track it and its descendants, \
         and exit with its exit status when it ends (126: it cannot be executed, \
         127: not found)",
        "/bin/true",
    ),
];

const OPTIONS: &[Flag] = &[
    Flag::value(
        "--pin-dir",
        "DIR",
        "where the maps are pinned; made 0700 if missing (not its parents); \
         refused when another user owns it or others may access it; one agent \
         per directory (it is locked: a second run or profile on it is refused, \
         naming the first's pid)",
        "/sys/fs/bpf/pidmap",
    )
    .default(crate::maps::loader::DEFAULT_PIN_DIR),
    Flag::switch(
        "--keep-pins",
        "keep the pinned maps at exit (default: remove them)",
    ),
    Flag::value(
        "--metrics-file",
        "FILE",
        "write Prometheus metrics there every 5 s and at exit; its directory \
         must exist and not be writable by group or others (unless root's and \
         sticky, as /tmp)",
        "/tmp/pidmap.prom",
    ),
    Flag::value("--max-entries", "N", "trie capacity", "1024").default("1048576"),
    Flag::value(
        "--ring-pages",
        "N",
        "data pages per perf ring, a power of two",
        "8",
    )
    .default("8"),
    Flag::value(
        "--delete-strategy",
        "resume|reissue-all",
        "resume (this engine) or reissue-all (the upstream profiler's way, \
         for comparison)",
        "reissue-all",
    )
    .default("resume"),
    Flag::value(
        "--delete-policy",
        "batch|single",
        "after the kernel stops a batch delete at a key: send the rest of the \
         chunk as the next batch, or delete it one key per syscall",
        "single",
    )
    .default("batch"),
    Flag::switch(
        "--wake-every-request",
        "no effect, kept for scripts: every sync request has its own record \
         now (a small ring loses records under a storm of requests)",
    ),
    Flag::value(
        "--max-keys-per-process",
        "N",
        "trie keys one process may hold; 0: no limit",
        "0",
    )
    .default("max-entries / 16"),
    Flag::value(
        "--max-keys-per-uid",
        "N",
        "trie keys the processes of one non-root uid may hold together; \
         0: no limit and no reserve for root",
        "500",
    )
    .default("max-entries / 4"),
];

pub const SPEC: CommandSpec = CommandSpec {
    name: "run",
    intro: "\
pidmap run: the agent

Usage: pidmap run [--all | --pid PID... | -- CMD ARGS...] [OPTIONS]
",
    sections: &[
        Section {
            title: "Modes (default: serve sync requests that BPF programs write to pid_events):",
            flags: MODES,
        },
        Section {
            title: "Options:",
            flags: OPTIONS,
        },
    ],
    outro: "\
Budgets: a process over its budget is tracked partially (its marker, then
its largest mappings) and counted (pidmap_keys_over_budget_total). Non-root
processes together never take the last 1/8 of the trie (kept for root), and
a process seen for the first time never the last 1/32 (kept for re-syncs of
tracked processes). A process is charged to its real uid.

SIGINT/SIGTERM stop cleanly; SIGHUP re-syncs every tracked process.
With -- CMD, SIGINT, SIGTERM and SIGHUP are forwarded to CMD's process group
instead (a terminal's Ctrl-C reaches pidmap only); pidmap waits for CMD,
SIGKILLs its group if it still runs 5 s later, and exits with CMD's status
(128 + N when signal N ended it). CMD dies with pidmap, even by SIGKILL.
",
};

#[derive(Clone, Debug, PartialEq)]
pub struct RunArgs {
    pub mode: Mode,
    pub pin_dir: PathBuf,
    pub keep_pins: bool,
    pub metrics_file: Option<PathBuf>,
    pub max_entries: u32,
    pub ring_pages: usize,
    pub delete_strategy: DeleteStrategy,
    pub delete_policy: ResumePolicy,
    pub wake_every_request: bool,
    pub budgets: Budgets,
}

impl Default for RunArgs {
    fn default() -> RunArgs {
        RunArgs {
            mode: Mode::Serve,
            pin_dir: PathBuf::from(crate::maps::loader::DEFAULT_PIN_DIR),
            keep_pins: false,
            metrics_file: None,
            max_entries: crate::abi::TRIE_MAX_ENTRIES,
            ring_pages: crate::agent::DEFAULT_RING_PAGES,
            delete_strategy: DeleteStrategy::Resume,
            delete_policy: ResumePolicy::Batch,
            wake_every_request: false,
            budgets: Budgets::default(),
        }
    }
}

/// The one-mode rule of `run`: --pid repeats, anything else excludes.
pub(super) fn set_mode(mode: &mut Mode, new: Mode, choose: &str) -> Result<(), String> {
    match (&*mode, new) {
        (Mode::Serve, n) => *mode = n,
        (Mode::Pids(p), Mode::Pids(q)) => *mode = Mode::Pids([p.clone(), q].concat()),
        _ => return Err(choose.into()),
    }
    Ok(())
}

const CHOOSE: &str = "choose one of --all, --pid and -- CMD";

pub(super) fn parse(p: &mut lexopt::Parser) -> Result<Cmd, Usage> {
    let flags = super::all_flags(&SPEC);
    let mut r = RunArgs::default();
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
            "--all" => set_mode(&mut r.mode, Mode::All, CHOOSE),
            "--pid" => {
                pid(t, value).and_then(|p| set_mode(&mut r.mode, Mode::Pids(vec![p]), CHOOSE))
            }
            "--pin-dir" => super::take(t, value).map(|v| r.pin_dir = v.into()),
            "--keep-pins" => {
                r.keep_pins = true;
                Ok(())
            }
            "--wake-every-request" => {
                r.wake_every_request = true;
                Ok(())
            }
            "--metrics-file" => super::take(t, value).map(|v| r.metrics_file = Some(v.into())),
            "--max-entries" => max_entries(t, value).map(|n| r.max_entries = n),
            "--ring-pages" => ring_pages(t, value).map(|n| r.ring_pages = n),
            "--max-keys-per-process" => num(t, value).map(|n| r.budgets.per_process = Some(n)),
            "--max-keys-per-uid" => num(t, value).map(|n| r.budgets.per_uid = Some(n)),
            "--delete-strategy" => choice(t, value).map(|s| r.delete_strategy = s),
            "--delete-policy" => choice(t, value).map(|s| r.delete_policy = s),
            other => Err(format!("{other}: in the table but not handled")),
        }
        .map_err(err)?;
    }
    Ok(Cmd::Run(r))
}
