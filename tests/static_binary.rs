//! The static binary of `make static` (root): `file` and `ldd` say static,
//! and it runs `pidmap run` for real inside a minimal root holding only
//! itself, with /proc and /sys (and /sys/fs/bpf) bind-mounted.

mod common;

use std::path::PathBuf;
use std::process::Command;

fn static_bin() -> Option<PathBuf> {
    match std::env::var_os("PIDMAP_STATIC_BIN") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            common::may_skip("PIDMAP_STATIC_BIN unset (`make test` builds and sets it)");
            None
        }
    }
}

#[test]
fn the_static_binary_is_static() {
    let Some(bin) = static_bin() else { return };
    let file = Command::new("file")
        .arg("-L")
        .arg(&bin)
        .output()
        .expect("file(1)");
    let text = String::from_utf8_lossy(&file.stdout);
    assert!(
        text.contains("statically linked") || text.contains("static-pie linked"),
        "{text}"
    );
    let ldd = Command::new("ldd").arg(&bin).output().unwrap();
    let out =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    assert!(
        out.contains("not a dynamic executable") || out.contains("statically linked"),
        "{out}"
    );
}

struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        for m in ["sys", "proc"] {
            let _ = Command::new("umount")
                .arg("-R")
                .arg(self.0.join(m))
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn the_static_binary_runs_the_agent_in_an_empty_root() {
    let Some(bin) = static_bin() else { return };
    if !common::bpf_available() {
        return;
    }
    let root = Root(std::env::temp_dir().join(format!("pidmap-root-{}", std::process::id())));
    for d in ["proc", "sys"] {
        std::fs::create_dir_all(root.0.join(d)).unwrap();
    }
    Command::new("cp")
        .arg(&bin)
        .arg(root.0.join("pidmap"))
        .status()
        .unwrap();
    assert!(Command::new("mount")
        .args(["--bind", "/proc"])
        .arg(root.0.join("proc"))
        .status()
        .unwrap()
        .success());
    assert!(Command::new("mount")
        .args(["--rbind", "/sys"])
        .arg(root.0.join("sys"))
        .status()
        .unwrap()
        .success());
    let pins = format!("/sys/fs/bpf/pidmap-static-{}", std::process::id());
    let o = Command::new("chroot")
        .arg(&root.0)
        .args([
            "/pidmap",
            "run",
            "--pin-dir",
            &pins,
            "--metrics-file",
            "/metrics",
            "--",
            "/pidmap",
            "--version",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("pidmap {}\n", env!("CARGO_PKG_VERSION"))
    );
    // The command may exit before the serving line (`--version` is quick),
    // so the proof it was tracked is in the counters written at exit: its
    // gated sync inserted keys, and every key inserted was deleted again.
    let metrics = std::fs::read_to_string(root.0.join("metrics")).expect("metrics at exit");
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {metrics}"))
    };
    assert!(value("pidmap_syncs_ok_total") >= 1, "{metrics}");
    let inserted = value("pidmap_keys_inserted_total");
    assert!(inserted > 1, "{metrics}");
    assert_eq!(value("pidmap_keys_deleted_total"), inserted, "{metrics}");
    assert_eq!(value("pidmap_keys_absent_total"), 0, "{metrics}");
    assert_eq!(value("pidmap_tracked_processes"), 0, "{metrics}");
    assert!(!std::path::Path::new(&pins).exists());
}
