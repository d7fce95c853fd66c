//! `pidmap audit`: its flag table and parser.

use super::{next_item, Cmd, CommandSpec, Flag, Item, Section, Usage};
use std::path::PathBuf;

const OPTIONS: &[Flag] = &[
    Flag::value(
        "--pin-dir",
        "DIR",
        "where the agent pinned its maps (run and profile share this default)",
        "/sys/fs/bpf/pidmap",
    )
    .default(crate::maps::loader::DEFAULT_PIN_DIR),
    Flag::switch(
        "--repair",
        "delete the leaked entries and report what was done; refused while an \
         agent runs on the directory (it holds the directory's lock)",
    ),
    Flag::switch("--json", "one JSON object instead of text"),
];

pub const SPEC: CommandSpec = CommandSpec {
    name: "audit",
    intro: "\
pidmap audit: check the pinned maps for leaked entries

Usage: pidmap audit [--pin-dir DIR] [--repair] [--json]

Walks pid_page_to_mapping_info and pid_events, groups keys by pid and reports
pids whose process is gone or reused (marker start time differs) and keys
without a marker.
",
    sections: &[Section {
        title: "Options:",
        flags: OPTIONS,
    }],
    outro: "Exit status: 0 clean (or repaired), 1 leaked entries found, 2 error.\n",
};

pub(super) fn parse(p: &mut lexopt::Parser) -> Result<Cmd, Usage> {
    let flags = super::all_flags(&SPEC);
    let mut pin_dir = PathBuf::from(crate::maps::loader::DEFAULT_PIN_DIR);
    let (mut repair, mut json) = (false, false);
    let err = |msg: String| Usage {
        msg,
        command: SPEC.name,
    };
    while let Some(item) = next_item(p, &flags, SPEC.name)? {
        let (long, typed, value) = match item {
            Item::Help => return Ok(Cmd::Help(SPEC.help())),
            Item::Rest(_) => return Err(err("audit takes no command".into())),
            Item::Positional(v) => return Err(err(format!("unexpected argument {v:?}"))),
            Item::Flag { long, typed, value } => (long, typed, value),
        };
        match long {
            "--pin-dir" => super::take(&typed, value).map(|v| pin_dir = v.into()),
            "--repair" => {
                repair = true;
                Ok(())
            }
            "--json" => {
                json = true;
                Ok(())
            }
            other => Err(format!("{other}: in the table but not handled")),
        }
        .map_err(err)?;
    }
    Ok(Cmd::Audit {
        pin_dir,
        repair,
        json,
    })
}
