//! What the README promises about installing and configuring: `make
//! install` (binary and unit, DESTDIR and PREFIX honoured) gives a unit
//! that `systemd-analyze verify` accepts, and `run --delete-policy`
//! selects the engine's resume policy.

mod common;

use common::{pidmap_bin, WAIT};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `make install` into a fresh DESTDIR with this build as the binary.
fn make_install(destdir: &Path, extra: &[&str]) {
    let o = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(repo())
        .arg("install")
        .arg(format!("DESTDIR={}", destdir.display()))
        .arg(format!("INSTALL_BIN={}", pidmap_bin().display()))
        .args(extra)
        .output()
        .expect("make");
    assert!(
        o.status.success(),
        "make install: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Installs with `prefix` (None: the default) and checks the binary, the
/// unit, and that `systemd-analyze verify` accepts the installed unit (its
/// ExecStart, which must name the installed binary, pointed into DESTDIR:
/// verify checks that the file exists).
fn install_and_verify(name: &str, prefix: Option<&str>) {
    let dest = common::scratch(name).join("root");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    let arg = prefix.map(|p| format!("PREFIX={p}"));
    make_install(
        &dest,
        arg.as_slice()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
    );
    let bindir = format!("{}/bin", prefix.unwrap_or("/usr/local"));
    let bin = dest.join(bindir.trim_start_matches('/')).join("pidmap");
    assert_eq!(mode(&bin), 0o755, "{}", bin.display());
    assert_eq!(
        std::fs::read(&bin).unwrap(),
        std::fs::read(pidmap_bin()).unwrap(),
        "the installed binary is the one given"
    );
    let unit = dest.join("etc/systemd/system/pidmap.service");
    assert_eq!(mode(&unit), 0o644, "{}", unit.display());
    let text = std::fs::read_to_string(&unit).unwrap();
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    let installed = format!("{bindir}/pidmap");
    assert!(
        exec.starts_with(&format!("{installed} run ")),
        "ExecStart names {exec:?}, not the installed {installed}"
    );
    let staged = unit.with_file_name("pidmap-staged.service");
    std::fs::write(
        &staged,
        text.replace(
            &format!("ExecStart={installed} "),
            &format!("ExecStart={} ", bin.display()),
        ),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&staged)
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.trim().is_empty(),
        "systemd-analyze verify of the installed unit: {err}"
    );
    std::fs::remove_dir_all(&dest).unwrap();
}

#[test]
fn make_install_gives_a_unit_that_verifies() {
    install_and_verify("install", None);
}

#[test]
fn make_install_honours_prefix() {
    install_and_verify("install-prefix", Some("/opt/pidmap"));
}

/// A counter of the agent's metrics file.
fn counter(text: &str, name: &str) -> u64 {
    let key = format!("pidmap_{name}_total ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The keys of an exited process whose trie keys were partly deleted
/// behind the agent's back: with `--delete-policy single` the rest of a
/// batch stopped at an absent key goes one key per syscall, with `batch`
/// (the default) as the next batch.
#[test]
fn delete_policy_selects_single_deletes_after_a_stop() {
    if !common::bpf_available() {
        return;
    }
    for policy in ["batch", "single"] {
        let pins = common::pin_dir(&format!("policy-{policy}"));
        let metrics = common::scratch(&format!("policy-{policy}")).join("m.prom");
        let mut sleeper = common::spawn(Command::new("/bin/sleep").arg("1000"));
        let pid = sleeper.id();
        let (mut agent, log) = common::start_serving_logged(&[
            "run",
            "--pin-dir",
            pins.to_str().unwrap(),
            "--metrics-file",
            metrics.to_str().unwrap(),
            "--delete-policy",
            policy,
            "--pid",
            &pid.to_string(),
        ]);
        let before = std::fs::read_to_string(&metrics).unwrap();
        let trie =
            pidmap::sys::bpf::MapHandle::from_pin(&pins.join(pidmap::abi::TRIE_NAME)).unwrap();
        let keys = common::keys_of(&trie, pid);
        assert!(keys.len() >= 6, "{policy}: few keys: {keys:?}");
        // absent keys spread over the process's keys: whatever order the
        // agent deletes in, some key comes after one of them
        for k in keys.iter().step_by(3) {
            trie.delete(k).unwrap();
        }
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        common::wait_until(&format!("{policy}: the exit's deletes"), WAIT, || {
            common::keys_of(&trie, pid).is_empty()
        });
        let st = Command::new("kill")
            .arg("-TERM")
            .arg(agent.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
        assert!(agent.wait().unwrap().success(), "{}", log.join().unwrap());
        let after = std::fs::read_to_string(&metrics).unwrap();
        let d = |name: &str| counter(&after, name) - counter(&before, name);
        assert!(d("resumes") >= 1, "{policy}: no resume: {after}");
        assert!(
            d("keys_absent") >= 1,
            "{policy}: no absent key counted: {after}"
        );
        match policy {
            "batch" => assert_eq!(d("single_calls"), 0, "batch policy made single calls"),
            _ => assert!(
                d("single_calls") >= 1,
                "single policy made no single call: {after}"
            ),
        }
    }
}

/// The packages the README's set-up section lists are those
/// scripts/setup installs, every one of them.
#[test]
fn the_readme_lists_what_setup_installs() {
    let setup = std::fs::read_to_string(repo().join("scripts/setup")).unwrap();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("## Set-up")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("a Set-up section");
    let words: Vec<&str> = section
        .split(|c: char| c.is_whitespace() || "`(),.;:".contains(c))
        .collect();
    let mut packages = Vec::new();
    for l in setup.lines() {
        let l = l.trim();
        let list = l
            .strip_prefix("need=(")
            .or_else(|| l.split_once("need+=(").map(|(_, r)| r));
        if let Some(list) = list {
            let list = list.split(')').next().unwrap();
            packages.extend(list.split_whitespace().map(String::from));
        }
    }
    assert!(packages.len() >= 20, "{packages:?}");
    for p in &packages {
        assert!(
            words.contains(&p.as_str()),
            "scripts/setup installs {p}, which the README's Set-up section does not list"
        );
    }
}

/// BENCHMARKS.md's profile table: every figure (shares too) is the median
/// of the runs, and output is compared with perf script's text as well.
#[test]
fn the_profile_benchmark_takes_medians_of_every_figure() {
    let o = Command::new("/usr/bin/python3")
        .arg(repo().join("scripts/bench-profile"))
        .arg("--self-test")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The README's resume policies are selectable: the flag it names exists.
#[test]
fn the_readme_names_the_delete_policy_flag_that_exists() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("`run --delete-policy batch|single`"),
        "README"
    );
    let help = pidmap::cli::COMMANDS
        .iter()
        .find(|c| c.name == "run")
        .unwrap()
        .help();
    assert!(help.contains("--delete-policy batch|single"), "{help}");
}

/// The number in front of `unit` in the README's Deployment section.
fn readme_mib(readme: &str, unit: &str) -> f64 {
    let at = readme
        .find(unit)
        .unwrap_or_else(|| panic!("no {unit:?} in the README"));
    readme[..at]
        .split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number before {unit:?}"))
}

/// The README's sizes of the static binary, as built and as stripped,
/// are those of `make static`'s output and of `strip` of it (within
/// 0.05 MiB: the README rounds to hundredths; update it when the code grows).
#[test]
fn the_readme_states_the_static_binary_size_as_built_and_stripped() {
    let Some(bin) = std::env::var_os("PIDMAP_STATIC_BIN").map(PathBuf::from) else {
        common::may_skip("PIDMAP_STATIC_BIN unset (`make test` builds and sets it)");
        return;
    };
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mib = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / (1024.0 * 1024.0);
    let stripped = common::scratch("strip").join("pidmap");
    let st = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&bin)
        .status()
        .expect("strip(1)");
    assert!(st.success());
    for (unit, actual) in [
        (" MiB as built", mib(&bin)),
        (" MiB stripped", mib(&stripped)),
    ] {
        let stated = readme_mib(&readme, unit);
        assert!(
            (stated - actual).abs() <= 0.05,
            "the README says {stated}{unit}; make static gives {actual:.2}"
        );
    }
}
