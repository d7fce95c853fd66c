//! SIGKILL at random points of a churn run, five times, each time restarted
//! on the same pins (root): after the reconcile, `pidmap audit` is clean.

mod common;

use common::pidmap_bin;
use std::process::Command;

fn agent(pins: &str) -> common::Guarded {
    common::start_serving(&["run", "--all", "--keep-pins", "--pin-dir", pins])
}

/// `pidmap audit`; a leak must persist across three audits (a process
/// that exits while one runs is not a leak: the agent cleans it).
fn audit_clean(pins: &str) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..3 {
        let o = Command::new(pidmap_bin())
            .args(["audit", "--pin-dir", pins])
            .output()
            .unwrap();
        last = String::from_utf8_lossy(&o.stdout).into_owned();
        match o.status.code() {
            Some(0) => return Ok(()),
            Some(1) => continue,
            _ => {
                return Err(format!(
                    "audit failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                ))
            }
        }
    }
    Err(last)
}

#[test]
fn sigkill_during_churn_then_restart_is_clean_five_times() {
    if !common::bpf_available() {
        return;
    }
    let pins = common::pin_dir("sigkill");
    let pins = pins.to_str().unwrap().to_string();
    let mut rng = pidmap::rng::Rng::new(0x2545_f491_4f6c_dd1d ^ std::process::id() as u64);
    let mut a = agent(&pins);
    for round in 0..5 {
        let kill_at = 20 + rng.index(150);
        let churn = std::thread::spawn(|| {
            for _ in 0..200 {
                let _ = Command::new("/bin/true").status();
            }
        });
        // kill once kill_at more processes have been created on the host
        let last = std::fs::read_to_string("/proc/loadavg").unwrap();
        let last_pid: u64 = last.split_whitespace().last().unwrap().parse().unwrap();
        loop {
            let now: u64 = std::fs::read_to_string("/proc/loadavg")
                .unwrap()
                .split_whitespace()
                .last()
                .unwrap()
                .parse()
                .unwrap();
            if now.wrapping_sub(last_pid) % 32768 >= kill_at as u64 || churn.is_finished() {
                break;
            }
            std::thread::yield_now();
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(a.id() as i32, libc::SIGKILL) };
        a.wait().unwrap();
        churn.join().unwrap();
        a = agent(&pins);
        if let Err(report) = audit_clean(&pins) {
            panic!("round {round} (killed after ~{kill_at} forks): {report}");
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(a.id() as i32, libc::SIGTERM) };
    assert_eq!(a.wait().unwrap().code(), Some(0));
    pidmap::maps::loader::remove_pins(std::path::Path::new(&pins));
}
