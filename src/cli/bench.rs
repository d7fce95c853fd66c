//! `pidmap bench delete|insert|churn`: one flag table per benchmark.

use super::{choice, max_entries, next_item, num, ring_pages, Choice, CommandSpec, Flag, Item};
use super::{BenchArgs, Cmd, Section, Usage};
use crate::cmd::bench::{DeleteOpts, InsertOpts, MapKind, Pattern};
use crate::cmd::churn::ChurnOpts;
use std::ffi::OsString;

impl Choice for MapKind {
    const NAMES: &'static [(&'static str, Self)] = &[
        (MapKind::Lpm.name(), MapKind::Lpm),
        (MapKind::Hash.name(), MapKind::Hash),
    ];
}

impl Choice for Pattern {
    const NAMES: &'static [(&'static str, Self)] = &[
        (Pattern::Random.name(), Pattern::Random),
        (Pattern::Front.name(), Pattern::Front),
        (Pattern::Middle.name(), Pattern::Middle),
        (Pattern::Back.name(), Pattern::Back),
    ];
}

const MAP: Flag = Flag::value("--map", "lpm|hash", "the kernel map type", "hash").default("lpm");
const KEYS: Flag = Flag::value("--keys", "N", "keys in the map", "1000").default("100000");
const REPS: Flag =
    Flag::value("--reps", "R", "repetitions; the median is printed", "1").default("5");
const JSON: Flag = Flag::switch("--json", "one JSON object a line instead of a table");
const MISSING: Flag = Flag::value(
    "--missing-pct",
    "P",
    "percent of the keys deleted that are absent from the map, 0..100",
    "10",
)
.default("1");

const DELETE: &[Flag] = &[
    MAP,
    KEYS,
    MISSING,
    Flag::value(
        "--pattern",
        "random|front|middle|back",
        "where the absent keys sit in the list",
        "back",
    )
    .default("random"),
    REPS,
    Flag::value("--chunk", "N", "keys per batch syscall", "512").default("4096"),
    JSON,
];

const INSERT: &[Flag] = &[MAP, KEYS, REPS, JSON];

const PROBE: &[Flag] = &[JSON];

const CHURN: &[Flag] = &[
    Flag::value("--procs", "N", "short-lived processes to spawn", "10").default("2000"),
    Flag::value("--rate", "R", "processes started per second", "100").default("500"),
    Flag::value(
        "--missing-pct",
        "P",
        "percent of their keys deleted behind the agent's back, 0..100",
        "10",
    )
    .default("1"),
    Flag::value(
        "--delete-strategy",
        "resume|reissue-all",
        "the agent's delete strategy",
        "resume",
    )
    .default("both, side by side"),
    Flag::value(
        "--ring-pages",
        "N",
        "passed on to the agent: data pages per perf ring, a power of two",
        "1",
    )
    .default("8"),
    Flag::value(
        "--max-entries",
        "N",
        "passed on to the agent: trie capacity",
        "4096",
    )
    .default("1048576"),
    Flag::value(
        "--workload",
        "CMD",
        "the process to spawn, split at spaces",
        "/bin/true",
    )
    .default("/bin/sleep 0.02"),
    Flag::switch(
        "--wake-every-request",
        "passed on to the agent (no effect: one record per sync request)",
    ),
    JSON,
];

pub const SPEC: CommandSpec = CommandSpec {
    name: "bench",
    intro: "\
pidmap bench: benchmarks (each strategy side by side in one run)

Usage: pidmap bench delete|insert|churn|probe [OPTIONS]

delete: fills a fresh map with N keys and deletes a list in which P percent
  are absent, with the strategies resume, resume-single, reissue-all, single
  and batch-once; prints median ns per key, syscalls, and entries left in
  the map (read back from the kernel).
insert: batch insert versus one update per key.
churn: starts `pidmap run --all` and spawns N short-lived processes paced
  at R per second, deleting P percent of their keys behind its back, for
  each delete strategy; prints exit-to-cleanup latency, entries left, the
  audit, agent CPU per process, RSS along the run, files in the registry,
  lost records, refused keys.
probe: the kernel features pidmap uses, each probed here, with the first
  Linux version that has it; what a batch's count says when the kernel
  stops at an absent key (at every position) or refuses a batch.
",
    sections: &[
        Section {
            title: "bench delete:",
            flags: DELETE,
        },
        Section {
            title: "bench insert:",
            flags: INSERT,
        },
        Section {
            title: "bench churn:",
            flags: CHURN,
        },
        Section {
            title: "bench probe:",
            flags: PROBE,
        },
    ],
    outro: "",
};

/// The benchmarks, each with its section of [`SPEC`].
pub const KINDS: [(&str, usize); 4] = [("delete", 0), ("insert", 1), ("churn", 2), ("probe", 3)];

const NAME: &str = "bench";

fn usage(msg: String) -> Usage {
    Usage { msg, command: NAME }
}

pub(super) fn parse(p: &mut lexopt::Parser) -> Result<Cmd, Usage> {
    let names: Vec<&str> = KINDS.iter().map(|(k, _)| *k).collect();
    let kind = match p.next() {
        Ok(Some(lexopt::Arg::Value(v))) => v,
        Ok(Some(lexopt::Arg::Short('h') | lexopt::Arg::Long("help"))) => {
            return Ok(Cmd::Help(SPEC.help()))
        }
        Ok(Some(lexopt::Arg::Short(c))) => {
            return Err(usage(format!(
                "which benchmark? {} (before -{c})",
                super::one_of(&names)
            )))
        }
        Ok(Some(lexopt::Arg::Long(l))) => {
            return Err(usage(format!(
                "which benchmark? {} (before --{l})",
                super::one_of(&names)
            )))
        }
        Ok(None) | Err(_) => {
            return Err(usage(format!("which benchmark? {}", super::one_of(&names))))
        }
    };
    let Some(&(name, section)) = KINDS.iter().find(|(k, _)| std::ffi::OsStr::new(k) == kind) else {
        return Err(usage(format!(
            "unknown benchmark {kind:?}: {}",
            super::one_of(&names)
        )));
    };
    let flags: Vec<&'static Flag> = SPEC.sections[section].flags.iter().collect();
    let mut items = Vec::new();
    while let Some(item) = next_item(p, &flags, NAME)? {
        match item {
            Item::Help => return Ok(Cmd::Help(SPEC.help())),
            Item::Rest(_) | Item::Positional(_) => {
                let v = match item {
                    Item::Positional(v) => v,
                    _ => "--".into(),
                };
                return Err(usage(format!("bench {name}: unexpected argument {v:?}")));
            }
            Item::Flag { long, typed, value } => items.push((long, typed, value)),
        }
    }
    let args = match name {
        "delete" => BenchArgs::Delete(delete(items)?),
        "insert" => BenchArgs::Insert(insert(items)?),
        "probe" => BenchArgs::Probe {
            json: items.iter().any(|(long, ..)| *long == "--json"),
        },
        _ => BenchArgs::Churn(churn(items)?),
    };
    Ok(Cmd::Bench(args))
}

type Items = Vec<(&'static str, String, Option<OsString>)>;

fn keys(t: &str, value: Option<OsString>) -> Result<usize, String> {
    match num::<usize>(t, value)? {
        0 => Err(format!("{t} must be at least 1")),
        n => Ok(n),
    }
}

fn pct(t: &str, value: Option<OsString>) -> Result<f64, String> {
    let p: f64 = num(t, value)?;
    if (0.0..=100.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{t}: between 0 and 100"))
    }
}

fn unhandled(long: &str) -> Result<(), String> {
    Err(format!("{long}: in the table but not handled"))
}

fn delete(items: Items) -> Result<DeleteOpts, Usage> {
    let mut b = DeleteOpts::default();
    for (long, typed, value) in items {
        let t = typed.as_str();
        match long {
            "--map" => choice(t, value).map(|m| b.map = m),
            "--keys" => keys(t, value).map(|n| b.keys = n),
            "--missing-pct" => pct(t, value).map(|p| b.missing_pct = p),
            "--pattern" => choice(t, value).map(|x| b.pattern = x),
            "--reps" => num::<usize>(t, value).map(|n| b.reps = n.max(1)),
            "--chunk" => num::<usize>(t, value).map(|n| b.chunk = n.max(1)),
            "--json" => {
                b.json = true;
                Ok(())
            }
            other => unhandled(other),
        }
        .map_err(usage)?;
    }
    Ok(b)
}

fn insert(items: Items) -> Result<InsertOpts, Usage> {
    let mut b = InsertOpts::default();
    for (long, typed, value) in items {
        let t = typed.as_str();
        match long {
            "--map" => choice(t, value).map(|m| b.map = m),
            "--keys" => keys(t, value).map(|n| b.keys = n),
            "--reps" => num::<usize>(t, value).map(|n| b.reps = n.max(1)),
            "--json" => {
                b.json = true;
                Ok(())
            }
            other => unhandled(other),
        }
        .map_err(usage)?;
    }
    Ok(b)
}

fn churn(items: Items) -> Result<ChurnOpts, Usage> {
    let mut b = ChurnOpts::default();
    for (long, typed, value) in items {
        let t = typed.as_str();
        match long {
            "--procs" => num(t, value).map(|n| b.procs = n),
            "--rate" => num::<f64>(t, value).and_then(|r| {
                if r > 0.0 && r.is_finite() {
                    b.rate = r;
                    Ok(())
                } else {
                    Err(format!("{t} must be positive"))
                }
            }),
            "--missing-pct" => pct(t, value).map(|p| b.missing_pct = p),
            "--delete-strategy" => choice(t, value).map(|s| b.strategy = Some(s)),
            "--ring-pages" => ring_pages(t, value).map(|n| b.ring_pages = n),
            "--max-entries" => max_entries(t, value).map(|n| b.max_entries = n),
            "--workload" => super::take(t, value).and_then(|w| {
                w.into_string()
                    .map(|w| b.workload = w)
                    .map_err(|w| format!("{t}: not UTF-8: {w:?}"))
            }),
            "--wake-every-request" => {
                b.wake_every_request = true;
                Ok(())
            }
            "--json" => {
                b.json = true;
                Ok(())
            }
            other => unhandled(other),
        }
        .map_err(usage)?;
    }
    Ok(b)
}
