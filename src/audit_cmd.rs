//! `pidmap audit`: opens the pinned maps and audits (and repairs) them.

use crate::abi::{EVENTS_NAME, TRIE_NAME};
use crate::audit;
use crate::engine::BatchMap;
use crate::error::{Error, Result};
use crate::loader::{check_layout, PINNED};
use crate::sys::bpf::MapHandle;
use std::path::Path;

fn open(pin_dir: &Path, name: &str) -> Result<MapHandle> {
    let path = pin_dir.join(name);
    if !path.exists() {
        return Err(Error::new(format!(
            "no pinned map {}: is an agent running with --pin-dir {}, or did one stop with --keep-pins?",
            path.display(),
            pin_dir.display()
        )));
    }
    let map = MapHandle::from_pin(&path)?;
    let (_, ty, k, v) = PINNED
        .iter()
        .find(|p| p.0 == name)
        .copied()
        .unwrap_or((name, 0, 0, 0));
    check_layout(&map, &path, ty, k, v)?;
    Ok(map)
}

/// Exit status: 0 clean or repaired, 1 leaks found; errors are 2 (main).
pub fn run(pin_dir: &Path, repair: bool, json: bool) -> Result<u8> {
    let trie = open(pin_dir, TRIE_NAME)?;
    let events = open(pin_dir, EVENTS_NAME)?;
    let mut report = audit::audit(&trie, &events, &crate::process::start_time)?;
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
