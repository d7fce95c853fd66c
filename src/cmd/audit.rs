//! `pidmap audit`: opens the pinned maps and audits (and repairs) them.

use crate::abi::{EVENTS_NAME, TRIE_NAME};
use crate::error::{Error, Result};
use crate::maps::audit;
use crate::maps::engine::BatchMap;
use crate::maps::loader::{lock_pin_dir, open_pin, open_pin_dir};
use crate::sys::bpf::MapHandle;
use crate::sys::fs::Dir;
use std::path::Path;

fn no_pin(pin_dir: &Path, name: &str) -> Error {
    Error::new(format!(
        "no pinned map {}: is an agent running with --pin-dir {}, or did one stop with --keep-pins?",
        pin_dir.join(name).display(),
        pin_dir.display()
    ))
}

/// Opens the pin directory as the agent does (no symbolic link, ours and
/// closed to others); read-only use, so a running agent's pins are fine.
fn open_dir(pin_dir: &Path) -> Result<Dir> {
    if std::fs::symlink_metadata(pin_dir).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Err(no_pin(pin_dir, TRIE_NAME));
    }
    Ok(open_pin_dir(pin_dir, false)?.0)
}

fn open(dir: &Dir, pin_dir: &Path, name: &str) -> Result<MapHandle> {
    open_pin(dir, pin_dir, name)?.ok_or_else(|| no_pin(pin_dir, name))
}

/// Exit status: 0 clean or repaired, 1 leaks found; errors are 2 (main).
/// A plain audit reads a running agent's pins; `--repair` takes the pin
/// directory's lock, as an agent does, so it is refused while an agent
/// runs (both deleting keys would race) and no agent starts meanwhile.
pub fn run(pin_dir: &Path, repair: bool, json: bool) -> Result<u8> {
    let unlocked = open_dir(pin_dir)?;
    let lock = if repair {
        Some(
            lock_pin_dir(
                pin_dir,
                false,
                "a running agent keeps its own pins clean (a plain audit reads them); \
                 stop it first to repair",
            )
            .map_err(|e| e.context("audit --repair"))?,
        )
    } else {
        None
    };
    let dir = lock.as_ref().map_or(&unlocked, |l| l.dir());
    let trie = open(dir, pin_dir, TRIE_NAME)?;
    let events = open(dir, pin_dir, EVENTS_NAME)?;
    let mut report = audit::audit(&trie, &events, &crate::proc::stat::start_time)?;
    let leaked = !report.clean();
    if repair && leaked {
        let map = BatchMap::probe::<crate::abi::PidPage, crate::abi::MappingInfo>(trie);
        audit::repair(&map, &mut report);
    }
    println!(
        "{}",
        if json {
            report.to_json()
        } else {
            report.to_text()
        }
    );
    let fixed = report.repaired.is_some_and(|(_, _, failed)| failed == 0);
    Ok(if leaked && !fixed { 1 } else { 0 })
}
