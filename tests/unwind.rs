//! Whole stacks of programs without frame pointers (root, real kernel):
//! Debian's python3, a C program and its library built with -O2
//! -fomit-frame-pointer calling each other through the PLT, a Rust release
//! binary, threads, a signal handler, and processes that exit right after
//! being sampled, each unwound by `pidmap profile --unwind cfi` and
//! compared with `perf record --call-graph dwarf` on the same run.
//!
//! The same run: pidmap's command is `perf record ... -- WORKLOAD`, so
//! both sample one execution of the workload, at the same frequency, with
//! their own cpu-clock events; perf's own process is left out by its comm.
//! Two separate runs would add the workload's run-to-run variation (CPU
//! contention on a shared machine, phases drifting) to the comparison;
//! attaching both by pid would lose the start of the run to whichever
//! attaches last. What is left is the sampling noise of two independent
//! samplers, which the share bounds below allow for.
//!
//! PIDMAP_UNWIND_FLAG=none runs pidmap without `--unwind` (a binary from
//! before the flag, to measure what frame pointers alone give); any other
//! value replaces the mode the test asks for (e.g. `fp`).

mod common;
#[path = "unwind/harness.rs"]
mod harness;

use common::pidmap_bin;
use harness::*;
use std::process::Command;

fn python_cmd() -> Vec<String> {
    vec![
        "/usr/bin/python3".into(),
        src("uw_python.py").display().to_string(),
        "1.5".into(),
    ]
}

/// A workload compared with perf.
struct Case {
    name: &'static str,
    comm: &'static str,
    cmd: Vec<String>,
    /// the fewest samples each tool must have of it (~150 expected)
    min: u64,
    /// the least share (%) of samples with only caller -> callee pairs
    /// perf has: as much as one run of perf sees of another's. Measured
    /// over 7 pairs of perf runs: 100 % of the samples of the C, threads
    /// and signal workloads, whose paths are few (bound 97 %); 88-98.6 %
    /// of Rust's, whose std formatting and allocation take many rare paths
    /// (bound 80 %); 85-91 % of python's (bound 75 %). A wrong frame
    /// anywhere in a stack makes a pair nobody else sees.
    pairs_pct: u64,
}

fn cases() -> Vec<Case> {
    let w = workloads();
    let c = |name, comm, cmd: &[&str], min, pairs_pct| Case {
        name,
        comm,
        cmd: strings(cmd),
        min,
        pairs_pct,
    };
    let python = python_cmd();
    let python: Vec<&str> = python.iter().map(String::as_str).collect();
    vec![
        c("python", "python3", &python, 100, 75),
        c("c-plt", "uwapp", &[&w.exe("uwapp"), "1.5"], 100, 97),
        c("rust", "uwrust", &[&w.exe("uwrust"), "1.5"], 100, 80),
        c(
            "threads",
            "uwthreads",
            &[&w.exe("uwthreads"), "0.6", "4"],
            150,
            97,
        ),
        c("signal", "uwsignal", &[&w.exe("uwsignal"), "1.5"], 100, 97),
    ]
}

fn case(name: &str) -> Case {
    cases()
        .into_iter()
        .find(|c| c.name == name)
        .expect("a known workload")
}

fn compare_case(name: &str) {
    if !common::bpf_available() || !perf_usable() {
        return;
    }
    let c = case(name);
    let b = profile_with_perf("cfi", FREQ, c.comm, &c.cmd);
    compare(name, &b, c.min, c.pairs_pct, Shares::Checked);
}

// Measured with frame pointers only (the binary before --unwind, flag
// omitted), 3 runs each: user-mode samples reaching the end / user frames
// per sample: python 0 % / 1.8-2.8, c-plt 0 % / 1.0, rust 0 % / 2.3-2.6,
// threads 0 % / 2.0, signal 0 % / 1.0, short 0 % / 1.0 (0 of 870-942
// samples in short_hot), the frame-pointer workload of tests/sampling.rs
// 0 % / 3.0 (whole from __libc_start_call_main, which has no frame
// pointer above it). perf dwarf on the same runs: 99.3-100 % on each.

#[test]
fn python3_is_unwound_to_start_like_perf() {
    compare_case("python");
}

#[test]
fn c_program_and_library_are_unwound_through_the_plt_like_perf() {
    compare_case("c-plt");
}

#[test]
fn rust_release_binary_is_unwound_to_start_like_perf() {
    compare_case("rust");
}

#[test]
fn every_thread_is_unwound_to_its_start_like_perf() {
    compare_case("threads");
}

#[test]
fn a_signal_handler_is_unwound_through_the_signal_frame_like_perf() {
    if !common::bpf_available() || !perf_usable() {
        return;
    }
    let c = case("signal");
    let b = profile_with_perf("cfi", FREQ, c.comm, &c.cmd);
    // the handler's samples go on through the signal frame into main
    let (own, _) = b.ours.shares();
    let in_handler: Vec<&Stack> = b
        .ours
        .stacks
        .iter()
        .filter(|s| !s.kernel && s.user.last().is_some_and(|f| f == "handler_hot"))
        .collect();
    let n: u64 = in_handler.iter().map(|s| s.n).sum();
    let through: u64 = in_handler
        .iter()
        .filter(|s| s.user.iter().any(|f| f == "main"))
        .map(|s| s.n)
        .sum();
    eprintln!(
        "signal: {through} of {n} handler samples go on to main ({:.1} % of the samples in the handler)",
        own.get("handler_hot").copied().unwrap_or(0.0) * 100.0
    );
    compare("signal", &b, c.min, c.pairs_pct, Shares::Checked);
    // measured: the handler holds 56-85 % of the samples (2.5 ms of CPU
    // in every 4 ms; more when the machine is busy and the timer's
    // deliveries bunch up); bound 40 %
    assert!(
        n * 100 >= 40 * b.ours.stats().user_mode,
        "signal: only {n} samples in the handler\n{}",
        b.ours.top_stacks(12)
    );
    assert!(
        through * 100 >= 97 * n,
        "signal: {through} of {n} handler samples reach main\n{}",
        b.ours.top_stacks(12)
    );
}

#[test]
fn processes_that_exit_right_after_being_sampled_are_fully_unwound() {
    if !common::bpf_available() {
        return;
    }
    // 200 fresh execs, each burning 2 ms in short_warm (while libc,
    // mapped by ld.so after the exec, gets synced: uwshort.c) and 5 ms in
    // short_hot, and exiting: at 999 Hz each is sampled ~5 times in
    // short_hot, the last just before it exits
    let w = workloads();
    let pins = common::pin_dir("unwind-short");
    let out = w.dir.join(format!("short-{}.folded", tag()));
    let o = common::output_within(
        Command::new(pidmap_bin())
            .args(["profile", "--kernel", "-F", "999", "--pin-dir"])
            .arg(&pins)
            .arg("-o")
            .arg(&out)
            .args(unwind_args("cfi"))
            .arg("--")
            .args([&w.exe("uwshort"), "200", "5"]),
        common::RUN,
    );
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    let seen = Seen {
        stacks: fold_pidmap(&std::fs::read_to_string(&out).unwrap(), "uwshort"),
        size: 0,
    };
    let _ = std::fs::remove_file(&out);
    let st = seen.stats();
    let hot: Vec<&Stack> = seen
        .stacks
        .iter()
        .filter(|s| !s.kernel && s.user.iter().any(|f| f == "short_hot"))
        .collect();
    let n_hot: u64 = hot.iter().map(|s| s.n).sum();
    let hot_to_end: u64 = hot
        .iter()
        .filter(|s| s.user.first().is_some_and(|f| f == "_start"))
        .map(|s| s.n)
        .sum();
    eprintln!("short: {st}; {hot_to_end} of {n_hot} samples in short_hot reach _start");
    // 200 x 5 ms at 999 Hz: ~1000 samples in short_hot
    assert!(n_hot >= 500, "{n_hot} samples in short_hot\n{stderr}");
    // Only the samples in short_hot count: a child sampled in its first
    // half millisecond (ld.so at work) before the agent has its new
    // mappings has no key to unwind or name with (14 % of all samples
    // here, every frame [unknown], the same with frame pointers); that is
    // the trie's latency, which tests/sampling.rs bounds, not unwinding.
    assert!(
        hot_to_end * 100 >= 97 * n_hot,
        "short: {hot_to_end} of {n_hot} short_hot samples reach _start; {st}\n{}{stderr}",
        seen.top_stacks(12)
    );
}

#[test]
fn frame_pointer_workload_stays_accurate_with_unwind_auto() {
    if !common::bpf_available() {
        return;
    }
    // the frame-pointer workload of tests/sampling.rs: every sample of its
    // hot functions still carries main, and now reaches _start
    let (dir, exe) = common::sampled_workload("unwind-fp");
    let out = dir.join("auto.folded");
    let pins = common::pin_dir("unwind-auto");
    let o = common::output_within(
        Command::new(pidmap_bin())
            .args(["profile", "--kernel", "-F", "199", "--pin-dir"])
            .arg(&pins)
            .arg("-o")
            .arg(&out)
            .args(unwind_args("auto"))
            .arg("--")
            .arg(&exe)
            .args(["1", "1", "50"]),
        common::RUN,
    );
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{stderr}");
    let seen = Seen {
        stacks: fold_pidmap(&std::fs::read_to_string(&out).unwrap(), "sampled"),
        size: 0,
    };
    eprintln!("sampled (auto): {}", seen.stats());
    for (f, parent) in [
        ("main_hot", "burn"),
        ("lib_hot", "burn"),
        ("child_hot", "main"),
    ] {
        let with: Vec<&Stack> = seen
            .stacks
            .iter()
            .filter(|s| s.user.last().is_some_and(|x| x == f))
            .collect();
        let n: u64 = with.iter().map(|s| s.n).sum();
        let good: u64 = with
            .iter()
            .filter(|s| {
                s.user.first().is_some_and(|x| x == "_start")
                    && s.user.len() >= 2
                    && s.user[s.user.len() - 2] == parent
            })
            .map(|s| s.n)
            .sum();
        eprintln!("sampled (auto): {good} of {n} {f} samples are _start;...;{parent};{f}");
        assert!(
            n >= 80 && good * 100 >= 97 * n,
            "{f}: {good} of {n} samples whole\n{}{stderr}",
            seen.top_stacks(12)
        );
    }
}

#[test]
fn perf_dwarf_is_a_stable_reference_on_every_workload() {
    // The reference of the comparisons above, and the harness, on their
    // own: two runs of perf on each workload pass the per-sample checks
    // pidmap must pass (to the end, caller -> callee pairs), with "pidmap"
    // played by the first. So perf reaches the end of these workloads and
    // a failure of those checks against pidmap is pidmap's. Their shares
    // are printed, not checked: on a loaded machine a workload's own split
    // moves from run to run (measured: the signal handler 61-85 %, the C
    // program's app_outer 35-55 % of the CPU), which pidmap's comparison
    // takes out by sampling the same run. (Two perf on one run, one
    // running the other, would take it out here too, but the outer one
    // then often loses _start and __libc_start_main from every stack of a
    // workload: in 5 of 8 runs.)
    //
    // Measured (10 runs): 99.3-100 % of the user-mode samples reach the
    // end, 6.1 (C), 14 (Rust), 16 (python), 4.0 (threads), 6.3 (signal)
    // frames per sample, 1.3 MB of perf.data per ~150 samples (2.0 MB per
    // ~235 for the threads).
    if !perf_usable() {
        return;
    }
    for c in cases() {
        let first = perf_alone(c.name, c.comm, &c.cmd);
        let second = perf_alone(c.name, c.comm, &c.cmd);
        let b = Both {
            ours: first,
            perf: second,
            stderr: String::new(),
        };
        compare(
            &format!("{} (perf against perf)", c.name),
            &b,
            c.min,
            c.pairs_pct,
            Shares::Shown,
        );
    }
}

#[test]
fn the_folds_read_both_tools_alike() {
    // the harness itself: one stack as each tool writes it folds to the
    // same user stack, kernel frames set apart, names made alike
    let folded = "uwapp;_start;__libc_start_main_impl;main;app_tiny_loop;uwapp+0x1060;\
                  entry_SYSCALL_64_[k] 3\nother;main 1\n";
    let ours = fold_pidmap(folded, "uwapp");
    let script = "uwapp 123 \n\
                  \tffffffff81000000 entry_SYSCALL_64+0x1 ([kernel.kallsyms])\n\
                  \t1060 lib_tiny@plt+0x0 (/x/uwapp)\n\
                  \t1335 app_tiny_loop+0x25 (/x/uwapp)\n\
                  \t1116 main+0x16 (/x/uwapp)\n\
                  \t27304 __libc_start_main@@GLIBC_2.34+0x84 (/usr/lib/libc.so.6)\n\
                  \t11a0 _start+0x20 (/x/uwapp)\n\
                  \nother 5 \n\t1 main (/x/other)\n";
    let theirs = fold_perf(script, "uwapp");
    assert_eq!(ours.len(), 1);
    assert_eq!(theirs.len(), 1);
    assert_eq!(ours[0].user, theirs[0].user);
    assert_eq!(
        ours[0].user,
        [
            "_start",
            "__libc_start_main",
            "main",
            "app_tiny_loop",
            "[unknown]"
        ]
    );
    assert!(ours[0].kernel && theirs[0].kernel);
    assert_eq!((ours[0].n, theirs[0].n), (3, 1));
    let st = Seen {
        stacks: ours,
        size: 0,
    }
    .stats();
    assert_eq!((st.user_mode, st.to_end), (0, 0));
    assert_eq!(
        fold_pidmap("s;_start;main;__restore_rt;handler_hot 1\n", "s")[0].user,
        ["_start", "main", "[unknown]", "handler_hot"]
    );
    let user = Seen {
        stacks: fold_pidmap("t;clone3;start_thread;f 2\nt;f 2\n", "t"),
        size: 0,
    }
    .stats();
    assert_eq!((user.user_mode, user.to_end), (4, 2));
    assert_eq!(user.frames, 2.0);
}
