use super::*;
use crate::agent::Mode;
use crate::cmd::bench::{MapKind, Pattern};
use crate::maps::tables::DeleteStrategy;
use crate::tracker::budget::Budgets;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

fn p(s: &str) -> Result<Cmd, Usage> {
    parse(
        std::iter::once("pidmap")
            .chain(s.split_whitespace())
            .map(OsString::from)
            .collect(),
    )
}

fn pv(words: &[&str]) -> Result<Cmd, Usage> {
    parse(
        std::iter::once("pidmap")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect(),
    )
}

fn help_of(cmd: &str) -> String {
    match p(&format!("{cmd} --help")) {
        Ok(Cmd::Help(h)) => h,
        other => panic!("{cmd} --help: {other:?}"),
    }
}

#[test]
fn modes_and_options() {
    let Cmd::Run(r) = p("run --pid 5 --pid 7 --pin-dir /sys/fs/bpf/x --keep-pins").unwrap() else {
        panic!()
    };
    assert_eq!(r.mode, Mode::Pids(vec![5, 7]));
    assert!(r.keep_pins);
    assert_eq!(r.pin_dir, PathBuf::from("/sys/fs/bpf/x"));
    let Cmd::Run(r) = p("run --max-entries 10 -- /bin/true --pid 3").unwrap() else {
        panic!()
    };
    assert_eq!(
        r.mode,
        Mode::Command(vec!["/bin/true".into(), "--pid".into(), "3".into()])
    );
    assert_eq!(r.max_entries, 10);
    assert!(!r.wake_every_request);
    assert_eq!(r.budgets, Budgets::default(), "default fractions");
    let Cmd::Run(r) = p("run --all --max-keys-per-process 0 --max-keys-per-uid 500").unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (r.budgets.per_process, r.budgets.per_uid),
        (Some(0), Some(500))
    );
    let Cmd::Profile(pr) = p("profile --max-keys-per-uid 7").unwrap() else {
        panic!()
    };
    assert_eq!(pr.budgets.per_uid, Some(7));
    assert_eq!(pr.duration, Some(10.0), "the whole system for 10 s");
    let Cmd::Run(r) = p("run --all --wake-every-request --delete-strategy reissue-all").unwrap()
    else {
        panic!()
    };
    assert!(r.wake_every_request);
    assert_eq!(r.delete_strategy, DeleteStrategy::ReissueAll);
    let Cmd::Bench(BenchArgs::Churn(c)) =
        p("bench churn --wake-every-request --ring-pages 1 --delete-strategy resume").unwrap()
    else {
        panic!()
    };
    assert!(c.wake_every_request);
    assert_eq!(c.ring_pages, 1);
    assert_eq!(c.strategy, Some(DeleteStrategy::Resume));
    assert!(matches!(
        p("run").unwrap(),
        Cmd::Run(RunArgs {
            mode: Mode::Serve,
            ..
        })
    ));
    assert_eq!(p("run --help").unwrap(), Cmd::Help(run::SPEC.help()));
    assert_eq!(p("help run").unwrap(), Cmd::Help(run::SPEC.help()));
    let none = p("").unwrap_err();
    assert!(none.msg.starts_with("a command is needed\n\n"), "{none:?}");
    assert!(none.msg.contains("Usage: pidmap <COMMAND>"), "{none:?}");
    assert_eq!(
        p("help nosuch").unwrap_err().msg,
        "help: unknown command \"nosuch\"; the commands are run, profile, audit, bench, diff"
    );
    assert_eq!(p("--version").unwrap(), Cmd::Version);
    let Cmd::Diff(d) = p("diff a.folded --threshold 2 b.folded").unwrap() else {
        panic!()
    };
    assert_eq!(
        (d.base, d.new),
        (vec!["a.folded".into()], vec!["b.folded".into()])
    );
    assert_eq!((d.threshold, d.alpha), (2.0, 0.01));
}

/// Several profiles a side: BASE... -- NEW..., --base/--new lists, and
/// the old `-- A B` pair.
#[test]
fn diff_takes_runs_on_each_side() {
    let sides = |argv: &str| match p(argv).unwrap() {
        Cmd::Diff(d) => (d.base, d.new),
        other => panic!("{other:?}"),
    };
    let v = |names: &[&str]| names.iter().map(PathBuf::from).collect::<Vec<_>>();
    assert_eq!(
        sides("diff a1 a2 a3 -- b1 b2 b3"),
        (v(&["a1", "a2", "a3"]), v(&["b1", "b2", "b3"]))
    );
    assert_eq!(
        sides("diff --base a1 --new b1 --base a2 --new b2"),
        (v(&["a1", "a2"]), v(&["b1", "b2"]))
    );
    assert_eq!(
        sides("diff --base a1 a2 -- b1"),
        (v(&["a1", "a2"]), v(&["b1"]))
    );
    assert_eq!(sides("diff -- -a -b"), (v(&["-a"]), v(&["-b"])));
    let Cmd::Diff(d) = p("diff a b --format svg --reverse --function ^hot --alpha 0.05").unwrap()
    else {
        panic!()
    };
    assert!(d.reverse && d.format == DiffFormat::Svg && d.alpha == 0.05);
    assert!(d.filters.function.unwrap().is_match("hot_a"));
}

/// The bench options are enums, parsed here; a bad value lists the
/// accepted ones.
#[test]
fn bench_options_are_enums_with_the_accepted_values_in_the_error() {
    let Cmd::Bench(BenchArgs::Delete(d)) =
        p("bench delete --map hash --pattern middle --keys 10 --chunk 0").unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (d.map, d.pattern, d.keys, d.chunk),
        (MapKind::Hash, Pattern::Middle, 10, 1)
    );
    let Cmd::Bench(BenchArgs::Insert(i)) = p("bench insert").unwrap() else {
        panic!()
    };
    assert_eq!(i.map, MapKind::Lpm);
    let e = p("bench delete --pattern zigzag").unwrap_err();
    assert_eq!(
        e.msg,
        "--pattern: random, front, middle or back, not \"zigzag\""
    );
    assert_eq!(
        p("bench delete --map array").unwrap_err().msg,
        "--map: lpm or hash, not \"array\""
    );
    assert_eq!(
        p("bench churn --delete-strategy fast").unwrap_err().msg,
        "--delete-strategy: resume or reissue-all, not \"fast\""
    );
    assert_eq!(
        p("profile --format png").unwrap_err().msg,
        "--format: folded, pprof or svg, not \"png\""
    );
    // a benchmark takes only its own options
    assert_eq!(
        p("bench insert --pattern front").unwrap_err().msg,
        "unknown option \"--pattern\""
    );
}

/// Defect: `profile --help` lacked `--output` although the parser took it.
#[test]
fn profile_help_lists_output() {
    let h = help_of("profile");
    assert!(h.contains("-o, --output FILE"), "{h}");
    let Cmd::Profile(pr) = p("profile --output x.svg --format svg").unwrap() else {
        panic!()
    };
    assert_eq!(pr.output, Some(PathBuf::from("x.svg")));
}

/// Defect: `run --pid 0` was refused but `profile --pid 0` accepted.
#[test]
fn pid_zero_is_refused_by_run_and_profile_alike() {
    let run = p("run --pid 0").unwrap_err();
    let profile = p("profile --pid 0").unwrap_err();
    assert_eq!(run.msg, "--pid: 0 is not a process");
    assert_eq!(profile.msg, run.msg);
    assert_eq!((run.command, profile.command), ("run", "profile"));
}

/// Defect: under `profile` the mode error named `--all`, which profile
/// does not have.
#[test]
fn mode_conflicts_name_only_the_commands_own_modes() {
    let e = p("profile --pid 3 -- /bin/true").unwrap_err();
    assert_eq!(e.msg, "choose one of --pid and -- CMD");
    assert_eq!(e.command, "profile");
    let e = p("run --all --pid 3").unwrap_err();
    assert_eq!(e.msg, "choose one of --all, --pid and -- CMD");
    // and every flag such a message names is one of the command's own
    for (cmd, spec) in [
        ("profile --pid 3 -- /bin/true", &profile::SPEC),
        ("run --all -- /bin/true", &run::SPEC),
    ] {
        let msg = p(cmd).unwrap_err().msg;
        for w in msg.split([' ', ',']).filter(|w| w.starts_with("--")) {
            assert!(spec.flags().any(|f| f.long == w), "{cmd}: {msg} names {w}");
        }
    }
}

/// Defect: the flag list existed three times. Now the tables are the
/// list: every flag of a table is in its help and accepted with its
/// example value, every choice it names is accepted, and every flag the
/// help text mentions is in the table.
#[test]
fn tables_help_and_parser_agree() {
    for spec in COMMANDS {
        let help = help_of(spec.name);
        assert_eq!(help, spec.help());
        for (si, section) in spec.sections.iter().enumerate() {
            for f in section.flags {
                assert!(
                    help.contains(f.long),
                    "{} --help lacks {}",
                    spec.name,
                    f.long
                );
                if let Some(c) = f.short {
                    assert!(help.contains(&format!("-{c}, {}", f.long)), "{}", f.long);
                }
                let mut argv = spec.argv_prefix(si);
                argv.extend(f.example_args());
                assert!(pv(&argv).is_ok(), "{argv:?}: {:?}", pv(&argv));
                if let (Some(c), Some(_)) = (f.short, f.value) {
                    let short = format!("-{c}");
                    let mut argv = spec.argv_prefix(si);
                    argv.extend([short.as_str(), f.example]);
                    assert!(pv(&argv).is_ok(), "{argv:?}");
                }
                if let Some(v) = f.value.filter(|v| v.contains('|')) {
                    for choice in v.split('|') {
                        let mut argv = spec.argv_prefix(si);
                        argv.extend([f.long, choice]);
                        assert!(pv(&argv).is_ok(), "{argv:?}");
                    }
                }
            }
        }
        for w in flag_words(&help) {
            let known = w == "--help"
                || w == "-h"
                || spec
                    .flags()
                    .any(|f| f.long == w || f.short.map(|c| format!("-{c}")) == Some(w.clone()));
            assert!(known, "{} --help names {w}, which no table has", spec.name);
        }
    }
}

/// A default the help states is the one the parser uses: passing it
/// changes nothing. (Some defaults describe rather than spell a value.)
#[test]
fn defaults_in_the_help_are_the_parsers() {
    const DESCRIBED: &[&str] = &[
        "stdout",
        "max-entries / 16",
        "max-entries / 4",
        "1/16 of the trie",
        "1/4 of the trie",
        "both, side by side",
        "1073741824 (1 GiB)",
    ];
    let mut checked = 0;
    for spec in COMMANDS {
        for (si, section) in spec.sections.iter().enumerate() {
            for f in section.flags {
                let Some(d) = f.default else { continue };
                if DESCRIBED.contains(&d) {
                    continue;
                }
                let base = spec.argv_prefix(si);
                let mut argv = base.clone();
                argv.extend([f.long, d]);
                assert_eq!(pv(&argv), pv(&base), "{argv:?}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "{checked}");
    let argv = ["diff", "a", "b", "--max-input", "1073741824"];
    assert_eq!(pv(&argv), p("diff a b"));
}

#[test]
fn flag_equals_value_works() {
    let Cmd::Run(r) = p("run --pin-dir=/sys/fs/bpf/x --max-entries=10 --pid=4 --pid 5").unwrap()
    else {
        panic!()
    };
    assert_eq!(r.pin_dir, PathBuf::from("/sys/fs/bpf/x"));
    assert_eq!(r.max_entries, 10);
    assert_eq!(r.mode, Mode::Pids(vec![4, 5]));
    let Cmd::Profile(pr) = p("profile -F=49 -oout.folded --format=pprof").unwrap() else {
        panic!()
    };
    assert_eq!((pr.freq, pr.format), (49, Format::Pprof));
    assert_eq!(pr.output, Some(PathBuf::from("out.folded")));
    let Cmd::Profile(pr) = p("profile -F7").unwrap() else {
        panic!()
    };
    assert_eq!(pr.freq, 7);
    assert_eq!(
        p("run --all=yes").unwrap_err().msg,
        "--all takes no value (got \"yes\")"
    );
}

#[test]
fn non_utf8_paths_and_commands_pass_through_byte_exact() {
    let raw = |b: &[u8]| OsString::from_vec(b.to_vec());
    let odd = raw(b"/tmp/caf\xe9/\xff\xfe");
    let argv = |words: Vec<OsString>| {
        parse(
            std::iter::once(OsString::from("pidmap"))
                .chain(words)
                .collect(),
        )
    };
    let Cmd::Run(r) = argv(vec![
        "run".into(),
        "--pin-dir".into(),
        odd.clone(),
        "--metrics-file".into(),
        odd.clone(),
        "--".into(),
        odd.clone(),
        raw(b"\x80"),
    ])
    .unwrap() else {
        panic!()
    };
    assert_eq!(r.pin_dir.as_os_str().as_bytes(), odd.as_bytes());
    assert_eq!(r.metrics_file.unwrap().as_os_str(), odd);
    assert_eq!(r.mode, Mode::Command(vec![odd.clone(), raw(b"\x80")]));
    let mut eq = OsString::from("--pin-dir=");
    eq.push(&odd);
    let Cmd::Audit { pin_dir, .. } = argv(vec!["audit".into(), eq]).unwrap() else {
        panic!()
    };
    assert_eq!(pin_dir.as_os_str(), odd);
    let Cmd::Profile(pr) = argv(vec!["profile".into(), "-o".into(), odd.clone()]).unwrap() else {
        panic!()
    };
    assert_eq!(pr.output.unwrap().as_os_str(), odd);
    let Cmd::Diff(d) = argv(vec!["diff".into(), odd.clone(), raw(b"\xc3\x28")]).unwrap() else {
        panic!()
    };
    assert_eq!(
        (d.base[0].as_os_str(), d.new[0].as_os_str()),
        (odd.as_os_str(), raw(b"\xc3\x28").as_os_str())
    );
    // a number that is not UTF-8 is a usage error naming the flag
    let e = argv(vec!["run".into(), "--pid".into(), raw(b"\xff")]).unwrap_err();
    assert!(e.msg.starts_with("--pid: invalid value"), "{}", e.msg);
}

#[test]
fn usage_errors_name_the_flag_and_the_commands_help() {
    for (argv, msg, command) in [
        ("run --bogus", "unknown option \"--bogus\"", "run"),
        ("profile -x", "unknown option \"-x\"", "profile"),
        ("run --pid", "--pid needs a value", "run"),
        ("profile -o", "-o needs a value", "profile"),
        ("run --pid x", "--pid: invalid value \"x\"", "run"),
        (
            "run --ring-pages 3",
            "--ring-pages: 3 is not a power of two up to 4096",
            "run",
        ),
        ("profile --freq 0", "--freq: 0 is not in 1..9999", "profile"),
        ("profile -F 0", "-F: 0 is not in 1..9999", "profile"),
        ("bench delete --keys", "--keys needs a value", "bench"),
        (
            "bench nope",
            "unknown benchmark \"nope\": delete, insert, churn or probe",
            "bench",
        ),
        ("diff a", "diff takes two profiles: BASE NEW", "diff"),
        ("diff a b --", "-- needs the NEW profiles", "diff"),
        (
            "diff a b c",
            "3 profiles and no --: put -- between the BASE and the NEW ones (BASE... -- NEW...)",
            "diff",
        ),
        (
            "diff -- a b c",
            "no BASE profile before --: give BASE... -- NEW... (or -- BASE NEW for a pair \
             whose names start with -)",
            "diff",
        ),
        (
            "diff --base a",
            "1 BASE and 0 NEW profiles: each side needs one or more",
            "diff",
        ),
        (
            "diff --base a b",
            "b: which side? with --base/--new give every profile with them, or put -- \
             between the BASE and the NEW ones",
            "diff",
        ),
        (
            "diff a b --alpha 1",
            "--alpha: a probability between 0 and 1, not 1",
            "diff",
        ),
        (
            "diff a b --reverse --format json",
            "--reverse draws a flame graph: --format svg",
            "diff",
        ),
        (
            "diff a b --function (x",
            "--function: pattern \"(x\": ( at 0: groups and counted repetitions are not \
             supported (write \\( for the character)",
            "diff",
        ),
        ("audit --bogus", "unknown option \"--bogus\"", "audit"),
        ("frobnicate", "unknown command \"frobnicate\"", ""),
    ] {
        let e = p(argv).unwrap_err();
        assert_eq!((e.msg.as_str(), e.command), (msg, command), "{argv}");
    }
    assert_eq!(
        p("run --pid x").unwrap_err().see(),
        "See `pidmap run --help`."
    );
    assert_eq!(p("frobnicate").unwrap_err().see(), "See `pidmap --help`.");
}

#[test]
fn bad_input_is_a_usage_error_never_a_panic() {
    for bad in [
        "run --all --pid 3",
        "run --pid",
        "run --pid x",
        "run --pid 0",
        "run --",
        "run stray",
        "run --max-entries 0",
        "run --ring-pages 3",
        "run --delete-strategy fast",
        "run --max-keys-per-process -1",
        "run --max-keys-per-uid",
        "profile --max-keys-per-process x",
        "profile --pid 0",
        "run --bogus",
        "audit --bogus",
        "audit stray",
        "bench",
        "bench --json",
        "bench nope",
        "bench delete --map array",
        "bench delete --missing-pct 200",
        "bench delete --pattern zigzag",
        "bench delete --keys 0",
        "bench delete stray",
        "bench churn --rate 0",
        "bench churn --rate NaN",
        "profile --freq 0",
        "profile --freq 10000",
        "profile --duration -1",
        "profile --format png",
        "diff onlyone",
        "diff a b c",
        "diff a b --threshold -1",
        "frobnicate",
        "--bogus",
    ] {
        assert!(p(bad).is_err(), "{bad}");
    }
}

#[test]
fn random_arguments_never_panic() {
    let words = [
        "run",
        "audit",
        "bench",
        "profile",
        "diff",
        "help",
        "delete",
        "churn",
        "--pid",
        "--all",
        "--",
        "-F",
        "-F=",
        "-o",
        "-h",
        "5",
        "0",
        "--keys",
        "--map",
        "--map=",
        "lpm",
        "x",
        "--json",
        "--repair",
        "--duration",
        "1e400",
        "NaN",
        "-1",
        "--=",
        "-",
        "-=",
        "--pin-dir=",
    ];
    let mut rng = crate::rng::Rng::new(88172645463325252);
    for _ in 0..20000 {
        let mut v = vec![OsString::from("pidmap")];
        let x = rng.next_u64();
        for i in 0..(x % 7) {
            v.push(words[((x >> (i * 5)) % words.len() as u64) as usize].into());
        }
        if x.is_multiple_of(11) {
            v.push(OsString::from_vec(vec![b'-', 0xff, b'=', 0x80]));
        }
        let _ = parse(v);
    }
}

/// `profile --keep-pins` then `audit` look in one place: every command
/// that pins or reads pins has the same default directory, and says so.
#[test]
fn every_command_that_reads_pins_has_one_default_pin_dir() {
    let Ok(Cmd::Run(r)) = p("run") else { panic!() };
    let Ok(Cmd::Profile(pr)) = p("profile") else {
        panic!()
    };
    let Ok(Cmd::Audit { pin_dir, .. }) = p("audit") else {
        panic!()
    };
    let default = PathBuf::from(crate::maps::loader::DEFAULT_PIN_DIR);
    assert_eq!(r.pin_dir, default);
    assert_eq!(pr.pin_dir, default, "profile pins where audit looks");
    assert_eq!(pin_dir, default);
    for cmd in ["run", "profile", "audit"] {
        let help = help_of(cmd)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            help.contains(&format!("[default: {}]", default.display())),
            "{cmd}: {help}"
        );
    }
}
