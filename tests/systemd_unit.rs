//! The systemd unit of scripts/systemd (root): `systemd-analyze verify`
//! accepts it, and the agent really serves with only the capabilities its
//! bounding set grants (through setpriv, as systemd would).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn unit() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/systemd/pidmap.service");
    std::fs::read_to_string(p).unwrap()
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let dir = common::scratch("unit");
    let path = dir.join("pidmap.service");
    // verify checks that ExecStart exists: point it at this build
    let text = unit().replace(
        "/usr/local/bin/pidmap",
        common::pidmap_bin().to_str().unwrap(),
    );
    std::fs::write(&path, text).unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.trim().is_empty(), "{err}");
}

#[test]
fn the_agent_serves_with_only_the_units_capabilities() {
    if !common::bpf_available() {
        return;
    }
    let caps: Vec<String> = unit()
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("a bounding set")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(caps.len(), 3, "{caps:?}");
    let mut target = common::spawn(Command::new("/bin/sleep").arg("1000"));
    let pins = common::pin_dir("caps");
    // as the unit's RuntimeDirectory: root's, 0755
    let metrics = common::scratch("caps").join("metrics.prom");
    let _ = std::fs::remove_file(&metrics);
    let mut agent = common::spawn(
        Command::new("setpriv")
            .arg("--bounding-set")
            .arg(format!("-all,{}", caps.join(",")))
            .arg("--")
            .arg(common::pidmap_bin())
            .args([
                "run",
                "--pid",
                &target.id().to_string(),
                "--pin-dir",
                pins.to_str().unwrap(),
                "--metrics-file",
                metrics.to_str().unwrap(),
            ])
            .stderr(Stdio::piped()),
    );
    let mut err = common::Lines::new(agent.stderr.take().unwrap());
    let serving = err.until("serving:", common::WAIT);
    let _ = target.kill();
    target.wait().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let st = agent.wait().unwrap();
    let seen = serving.unwrap_or_else(|seen| panic!("no serving line: {seen}"));
    let line = seen.lines().last().unwrap();
    assert!(line.contains("serving: 1 process tracked"), "{line}");
    assert!(!line.contains(" 0 keys"), "{line}");
    assert_eq!(st.code(), Some(0), "{seen}");
    assert!(!pins.exists());
    let m = std::fs::read_to_string(&metrics).unwrap();
    assert!(m.contains("pidmap_tracked_processes "), "{m}");
}

/// The metrics file goes in the unit's RuntimeDirectory (/run/pidmap,
/// root's and 0755): a directory no other user can write, as the agent
/// requires of it.
#[test]
fn the_metrics_file_is_in_the_units_runtime_directory() {
    let text = unit();
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("RuntimeDirectory="))
        .expect("a RuntimeDirectory");
    assert!(
        !text.lines().any(|l| l.starts_with("RuntimeDirectoryMode=")),
        "the default mode 0755 is the one wanted"
    );
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart");
    let metrics = exec
        .split_whitespace()
        .skip_while(|w| *w != "--metrics-file")
        .nth(1)
        .expect("--metrics-file in ExecStart");
    assert_eq!(
        std::path::Path::new(metrics).parent().unwrap(),
        std::path::Path::new("/run").join(dir),
        "{exec}"
    );
}
