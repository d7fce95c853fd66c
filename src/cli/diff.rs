//! `pidmap diff`: its flag table and parser.

use super::{next_item, num, Cmd, CommandSpec, Flag, Item, Section, Usage};
use std::path::PathBuf;

const OPTIONS: &[Flag] = &[
    Flag::value(
        "--threshold",
        "POINTS",
        "exit 1 when a function's share changed by more",
        "2.5",
    )
    .default("5"),
    Flag::value("--top", "N", "rows to print", "3").default("20"),
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
pidmap diff: compare two profiles

Usage: pidmap diff BASE NEW [--threshold POINTS] [--top N] [--max-input BYTES]

BASE and NEW are folded stacks or pprof profiles (gzipped or not), regular
files or pipes; after `--`, names that start with `-`. Prints the functions
whose self share of samples changed most, in percentage points.
",
    sections: &[Section {
        title: "Options:",
        flags: OPTIONS,
    }],
    outro: "Exit status: 0 within the threshold, 1 beyond it, 2 error.\n",
};

pub(super) fn parse(p: &mut lexopt::Parser) -> Result<Cmd, Usage> {
    let flags = super::all_flags(&SPEC);
    let mut files: Vec<PathBuf> = Vec::new();
    let (mut threshold, mut top): (f64, usize) = (5.0, 20);
    let mut max_input = crate::sampler::diff::DEFAULT_MAX_INPUT;
    let err = |msg: String| Usage {
        msg,
        command: SPEC.name,
    };
    while let Some(item) = next_item(p, &flags, SPEC.name)? {
        let (long, typed, value) = match item {
            Item::Help => return Ok(Cmd::Help(SPEC.help())),
            Item::Rest(rest) => {
                files.extend(rest.into_iter().map(PathBuf::from));
                continue;
            }
            Item::Positional(v) => {
                files.push(v.into());
                continue;
            }
            Item::Flag { long, typed, value } => (long, typed, value),
        };
        let t = typed.as_str();
        match long {
            "--threshold" => num::<f64>(t, value).and_then(|x| {
                if x.is_nan() || x < 0.0 {
                    Err(format!("{t}: percentage points, 0 or more"))
                } else {
                    threshold = x;
                    Ok(())
                }
            }),
            "--top" => num(t, value).map(|n| top = n),
            "--max-input" => num::<u64>(t, value).and_then(|n| {
                if n == 0 {
                    Err(format!("{t}: bytes, at least 1"))
                } else {
                    max_input = n;
                    Ok(())
                }
            }),
            other => Err(format!("{other}: in the table but not handled")),
        }
        .map_err(err)?;
    }
    match <[PathBuf; 2]>::try_from(files) {
        Ok([base, new]) => Ok(Cmd::Diff {
            base,
            new,
            threshold,
            top,
            max_input,
        }),
        Err(_) => Err(err("diff takes two profiles: BASE NEW".into())),
    }
}
