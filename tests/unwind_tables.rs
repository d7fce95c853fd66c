//! The sampler's unwind tables in the real kernel (root): a file's table
//! is loaded when the file is first seen, without a sample, shared by
//! every process that maps it, and freed when the last of them exits;
//! what the kernel holds is read back from its maps.

mod common;

use common::{scratch, spawn, wait_until, InProcessAgent};
use pidmap::agent::{Mode, Sampling, UnwindView};
use pidmap::sampler::unwind::Mode as Unwind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn view(agent: &InProcessAgent) -> UnwindView {
    agent
        .handle
        .unwind()
        .expect("the agent answers")
        .expect("the agent builds tables")
        .expect("reading the unwind maps back")
}

fn file_id_of(path: &Path) -> u64 {
    let m = std::fs::metadata(path).unwrap();
    pidmap::tracker::file_id(m.dev(), m.ino())
}

fn agent(name: &str, unwind: Unwind) -> InProcessAgent {
    InProcessAgent::start(name, |c| {
        c.mode = Mode::Pids(Vec::new());
        c.sampling = Some(Sampling {
            freq: 49,
            kernel: false,
            ring_pages: 8,
            request_interval: Duration::from_millis(250),
            unwind,
        });
    })
}

#[test]
fn a_files_table_is_loaded_at_first_sight_shared_and_freed_with_its_last_process() {
    if !common::bpf_available() {
        return;
    }
    // a file of our own, so no other test's process holds it
    let dir = scratch("unwind-tables");
    let exe = dir.join("sleeper");
    std::fs::copy("/bin/sleep", &exe).unwrap();
    let id = file_id_of(&exe);
    let agent = agent("unwind-tables", Unwind::Auto);
    let before = agent.handle.status().unwrap();
    let mut a = spawn(Command::new(&exe).arg("60"));
    let mut b = spawn(Command::new(&exe).arg("60"));
    for p in [&a, &b] {
        assert!(matches!(
            agent.handle.sync(p.id()),
            Some(pidmap::tracker::process::SyncOutcome::Synced { .. })
        ));
    }
    let libc = file_id_of(
        &Path::new("/lib/x86_64-linux-gnu/libc.so.6")
            .canonicalize()
            .unwrap(),
    );
    // loaded without a sample (a sleeping process is never sampled)
    wait_until(
        "the sleeper's and libc's tables in unwind_pages",
        Duration::from_secs(20),
        || {
            let v = view(&agent);
            [id, libc].iter().all(|f| {
                v.kernel.files.contains(f) && v.kernel.parts.get(f).is_some_and(|&n| n > 0)
            })
        },
    );
    let loaded = view(&agent);
    let parts = loaded.kernel.parts[&id];
    eprintln!(
        "tables: {} files, {} parts, {} KiB of values; the sleeper {parts} parts",
        loaded.kernel.files.len(),
        loaded.kernel.parts.values().sum::<usize>(),
        loaded.kernel.bytes() / 1024
    );
    // one table for the two processes
    assert_eq!(loaded.kernel.files.iter().filter(|f| **f == id).count(), 1);
    // the first exit keeps it, the last frees it
    a.kill().unwrap();
    a.wait().unwrap();
    wait_until(
        "the first sleeper untracked",
        Duration::from_secs(20),
        || !agent.handle.status().unwrap().tracked.contains(&a.id()),
    );
    let v = view(&agent);
    assert_eq!(v.kernel.parts.get(&id), Some(&parts), "{v:?}");
    b.kill().unwrap();
    b.wait().unwrap();
    wait_until("every table freed", Duration::from_secs(20), || {
        let v = view(&agent);
        v.kernel.files.is_empty() && v.kernel.parts.is_empty() && v.tables == 0
    });
    let after = agent.handle.status().unwrap();
    assert_eq!(
        after.files, before.files,
        "the registry is back to its size"
    );
    assert_eq!(after.files, 0);
    agent.stop();
}

#[test]
fn no_table_is_built_when_stacks_are_walked_by_frame_pointers() {
    if !common::bpf_available() {
        return;
    }
    let agent = agent("unwind-fp", Unwind::Fp);
    let mut c = spawn(Command::new("/bin/sleep").arg("60"));
    assert!(agent.handle.sync(c.id()).is_some());
    assert!(
        agent.handle.unwind().expect("the agent answers").is_none(),
        "--unwind fp builds no table"
    );
    c.kill().unwrap();
    c.wait().unwrap();
    agent.stop();
}
