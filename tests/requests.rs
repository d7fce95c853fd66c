//! The request path against the real kernel (root): the BPF programs'
//! requests are served from their records, without scanning pid_events;
//! a request another program writes into pid_events is served by the
//! request sweep; requests whose records were lost are still all served.
//! The tests of this file run one at a time: they read the process-wide
//! counters.

mod common;

use common::{Guarded, WAIT};
use pidmap::abi::{MappingInfo, PidPage};
use pidmap::agent::{self, AgentConfig, Mode};
use pidmap::sys::bpf::{MapHandle, BPF_NOEXIST};
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Running = common::InProcessAgent;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn start(name: &str, tweak: impl FnOnce(&mut AgentConfig)) -> Running {
    common::InProcessAgent::start(name, tweak)
}

/// A python3 parent that, on each line on its stdin, forks `n` children
/// (each `gap` seconds apart) that wait until it closes a pipe, prints
/// their pids, then on the next line releases them and reaps them.
const FORKER: &str = r#"
import os, sys, time
n, gap = int(sys.argv[1]), float(sys.argv[2])
r, w = os.pipe()
print("ready", flush=True)
sys.stdin.readline()
pids = []
for i in range(n):
    p = os.fork()
    if p == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    pids.append(p)
    if gap:
        time.sleep(gap)
print(" ".join(map(str, pids)), flush=True)
sys.stdin.readline()
os.close(w)
for p in pids:
    os.waitpid(p, 0)
print("done", flush=True)
sys.stdin.readline()
"#;

struct Forker {
    child: Guarded,
    stdin: ChildStdin,
    out: BufReader<ChildStdout>,
}

impl Forker {
    fn start(n: usize, gap: f64) -> Forker {
        let mut child = common::spawn(
            Command::new("/usr/bin/python3")
                .args(["-c", FORKER, &n.to_string(), &gap.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        );
        let stdin = child.stdin.take().unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut f = Forker { child, stdin, out };
        assert_eq!(f.line(), "ready");
        f
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).expect("the forker's stdout");
        l.trim().to_string()
    }

    /// Forks the children; their pids.
    fn fork(&mut self) -> Vec<u32> {
        writeln!(self.stdin).unwrap();
        let l = self.line();
        l.split_whitespace()
            .map(|p| p.parse().unwrap_or_else(|_| panic!("forker said {l:?}")))
            .collect()
    }

    /// Lets the children exit and reaps them.
    fn release(&mut self) {
        writeln!(self.stdin).unwrap();
        assert_eq!(self.line(), "done");
    }
}

fn pending(events: &MapHandle) -> Vec<u64> {
    events.keys::<u64>(1 << 17).unwrap()
}

#[test]
fn a_request_another_program_writes_into_pid_events_is_served_by_the_sweep() {
    if !common::bpf_available() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // serve mode: the BPF programs request nothing, only pid_events does
    let a = start("other-writer", |_| {});
    let f = Forker::start(0, 0.0);
    let pid = f.pid();
    let before = a.handle.status().unwrap().counters;
    // another writer: no record, no latch, only the key in the pinned map
    let key = (u64::from(pid) << 32) | u64::from(pid);
    a.events().update(&key, &1u8, BPF_NOEXIST).unwrap();
    let t = Instant::now();
    let sweep = agent::REQUEST_SWEEP_INTERVAL;
    assert!(
        a.handle.when_tracked(pid, sweep + WAIT),
        "a request written into pid_events was not served within {:?}",
        sweep + WAIT
    );
    let took = t.elapsed();
    assert!(
        took < sweep + Duration::from_secs(2),
        "served after {took:?}: the request sweep runs every {sweep:?}"
    );
    common::wait_until("pid_events to be empty", WAIT, || {
        pending(&a.events()).is_empty()
    });
    let since = a.handle.status().unwrap().counters.since(&before);
    assert_eq!(since.requests_recorded, 0, "no record announced it");
    assert!(since.request_drains >= 1);
    drop(f);
    assert!(a.handle.when_gone(pid, WAIT));
    a.stop();
}

#[test]
fn requests_of_the_bpf_programs_are_served_without_scanning_pid_events() {
    if !common::bpf_available() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let n = 150;
    let mut f = Forker::start(n, 0.005);
    let a = start("records", |c| c.mode = Mode::Pids(vec![f.pid()]));
    assert!(a.handle.when_tracked(f.pid(), WAIT));
    let before = a.handle.status().unwrap().counters;
    let t = Instant::now();
    let kids = f.fork();
    for p in &kids {
        assert!(a.handle.when_tracked(*p, WAIT), "child {p} not tracked");
    }
    // each marker holds its process's start time as /proc tells it (the
    // sync took it from the record, the pidfd being the requester's)
    let trie = MapHandle::from_pin(&a.pins.join(pidmap::abi::TRIE_NAME)).unwrap();
    for p in &kids {
        let marker: Option<MappingInfo> = trie.lookup(&PidPage::marker(*p)).unwrap();
        assert_eq!(
            marker.map(|m| m.bias()),
            pidmap::proc::stat::start_time(*p),
            "the marker of child {p}"
        );
    }
    let report = a.handle.audit().unwrap().unwrap();
    assert!(report.clean(), "{}", report.to_text());
    f.release();
    for p in &kids {
        assert!(a.handle.when_gone(*p, WAIT), "child {p} still tracked");
    }
    let secs = t.elapsed().as_secs_f64();
    let since = a.handle.status().unwrap().counters.since(&before);
    assert!(
        since.requests_recorded >= n as u64,
        "{} requests served from records for {n} forks",
        since.requests_recorded
    );
    // only the request sweep scans the map (every second), never a record
    let sweeps = (secs / agent::REQUEST_SWEEP_INTERVAL.as_secs_f64()).ceil() as u64 + 1;
    assert!(
        since.request_drains <= sweeps,
        "{} scans of pid_events in {secs:.1} s for {} requests (at most {sweeps} sweeps)",
        since.request_drains,
        since.requests_recorded
    );
    assert!(pending(&a.events()).is_empty(), "pid_events emptied");
    drop(f);
    a.stop();
}

#[test]
fn requests_whose_records_were_lost_are_all_served() {
    if !common::bpf_available() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // more fork requests than a one-page ring holds, while the loop is
    // held; no sweep to fall back on within the test
    let n = 400;
    let mut f = Forker::start(n, 0.0);
    let a = start("lost", |c| {
        c.mode = Mode::Pids(vec![f.pid()]);
        c.ring_pages = 1;
        c.request_sweep_interval = Duration::from_secs(3600);
    });
    assert!(a.handle.when_tracked(f.pid(), WAIT));
    let before = a.handle.status().unwrap().counters;
    let pause = a.handle.pause();
    let kids = f.fork();
    assert_eq!(kids.len(), n);
    // the requests the full ring could not carry wait in pid_events
    let waiting = pending(&a.events()).len();
    drop(pause);
    assert!(waiting > 0, "no request waited in pid_events");
    for p in &kids {
        assert!(
            a.handle.when_tracked(*p, WAIT),
            "child {p}: its request was never served"
        );
    }
    let since = a.handle.status().unwrap().counters.since(&before);
    assert!(
        since.requests_recorded < n as u64,
        "records were lost ({} of {n} arrived)",
        since.requests_recorded
    );
    assert!(pending(&a.events()).is_empty(), "pid_events emptied");
    f.release();
    for p in &kids {
        assert!(a.handle.when_gone(*p, WAIT), "child {p} still tracked");
    }
    let report = a.handle.audit().unwrap().unwrap();
    assert!(report.clean(), "{}", report.to_text());
    drop(f);
    a.stop();
}

/// A python3 parent that, on a line on its stdin, starts `n` children the
/// way posix_spawn does (sharing its address space, vfork) whose exec
/// fails, then forks one child that waits on a pipe, and prints that
/// child's pid; the next line lets it go.
const SPAWNER: &str = r#"
import os, sys
n = int(sys.argv[1])
r, w = os.pipe()
print("ready", flush=True)
sys.stdin.readline()
for i in range(n):
    try:
        os.posix_spawn("/nonexistent/pidmap-test", ["x"], {})
    except OSError:
        pass
p = os.fork()
if p == 0:
    os.close(w)
    os.read(r, 1)
    os._exit(0)
print(p, flush=True)
sys.stdin.readline()
os.close(w)
os.waitpid(p, 0)
print("done", flush=True)
sys.stdin.readline()
"#;

#[test]
fn a_child_sharing_its_parents_address_space_asks_for_no_sync_before_exec() {
    if !common::bpf_available() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = common::spawn(
        Command::new("/usr/bin/python3")
            .args(["-c", SPAWNER, "20"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped()),
    );
    let stdin = child.stdin.take().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    let mut f = Forker { child, stdin, out };
    assert_eq!(f.line(), "ready");
    let a = start("vfork", |c| c.mode = Mode::Pids(vec![f.pid()]));
    assert!(a.handle.when_tracked(f.pid(), WAIT));
    let before = a.handle.status().unwrap().counters;
    // held: what the BPF side requests waits on the ring, not in pid_events
    let pause = a.handle.pause();
    let kid: u32 = f.fork()[0];
    let keys = pending(&a.events());
    drop(pause);
    assert_eq!(
        keys,
        Vec::<u64>::new(),
        "a request with a record left in pid_events"
    );
    assert!(a.handle.when_tracked(kid, WAIT));
    let since = a.handle.status().unwrap().counters.since(&before);
    assert_eq!(
        since.requests_recorded, 1,
        "only the forked child asked (the 20 vfork children never exec'd)"
    );
    f.release();
    assert!(a.handle.when_gone(kid, WAIT));
    drop(f);
    a.stop();
}
