//! Tests of `profile`.

use super::*;
use crate::abi::SampleHeader;
use crate::sampler::symbolize::test_util::{func_offset, test_prog};
use std::fs::File;
use std::path::Path;

/// Symbols of the test program for file 1, none for the others; with
/// `deferred`, every answer is Pending and kept in `later`.
struct FakeSource<'a> {
    prog: &'a Path,
    opens: HashMap<u64, u32>,
    deferred: bool,
    later: Vec<(u64, Option<ElfSymbols>)>,
}

impl<'a> FakeSource<'a> {
    fn new(prog: &'a Path, deferred: bool) -> FakeSource<'a> {
        FakeSource {
            prog,
            opens: HashMap::new(),
            deferred,
            later: Vec::new(),
        }
    }

    /// Hands every pending answer to the profile.
    fn deliver(&mut self, p: &mut Profile) {
        for (id, syms) in self.later.drain(..) {
            p.file_done(id, syms);
        }
    }
}

impl FileSource for FakeSource<'_> {
    fn name(&self, file_id: u64) -> Option<String> {
        match file_id {
            1 => Some(self.prog.display().to_string()),
            2 => Some("/usr/lib/libgone.so (deleted)".into()),
            _ => None,
        }
    }
    fn request(&mut self, file_id: u64, _pid: u32) -> Requested {
        *self.opens.entry(file_id).or_default() += 1;
        let syms = (file_id == 1)
            .then(|| ElfSymbols::from_file(&File::open(self.prog).unwrap(), "prog"))
            .flatten();
        if self.deferred {
            self.later.push((file_id, syms));
            Requested::Pending
        } else {
            Requested::Ready(syms)
        }
    }
}

fn sample(comm: &str, user: &[(u64, u64)], kernel: &[u64]) -> Sample {
    let mut header = SampleHeader {
        pid: 42,
        ..Default::default()
    };
    header.comm[..comm.len()].copy_from_slice(comm.as_bytes());
    Sample {
        header,
        user: user
            .iter()
            .map(|&(file_id, offset)| SampleFrame { file_id, offset })
            .collect(),
        kernel: kernel.to_vec(),
    }
}

const KALLSYMS: &str = "ffffffff81000000 T do_syscall_64\nffffffff81001000 t schedule\n";

/// The samples of the folded/top test; `between` runs after the
/// second sample.
fn scenario(
    hot: u64,
    other: u64,
    main: u64,
    src: &mut FakeSource,
    between: impl FnOnce(&mut FakeSource, &mut Profile),
) -> Profile {
    let mut p = Profile::new(Some(KernelSymbols::parse(KALLSYMS)));
    let s1 = sample("app", &[(1, hot + 1), (1, other + 4), (1, main + 8)], &[]);
    p.add(&s1, src);
    p.add(&s1, src);
    between(src, &mut p);
    p.add(
        &sample(
            "app",
            &[(2, 0x1234), (1, other + 4)],
            &[0xffffffff81001010, 0xffffffff81000020],
        ),
        src,
    );
    p.add(&sample("app", &[(0, 0xdead)], &[]), src);
    p.add(&sample("idle", &[], &[]), src);
    p.add(&sample("app", &[(3, 0x10)], &[0x10]), src);
    p.finish();
    p
}

fn folded(p: &Profile) -> String {
    let mut out = Vec::new();
    p.write_folded(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn symbols_that_arrive_later_give_the_same_profile() {
    let Some(prog) = test_prog() else { return };
    let (hot, other, main) = (
        func_offset(prog, "hot_function"),
        func_offset(prog, "other_function"),
        func_offset(prog, "main"),
    );
    let now = scenario(
        hot,
        other,
        main,
        &mut FakeSource::new(prog, false),
        |_, _| {},
    );
    // file 1's symbols arrive after two samples, the rest after all
    let mut src = FakeSource::new(prog, true);
    let mut late = scenario(hot, other, main, &mut src, |src, p| {
        assert_eq!(p.files_pending(), 1);
        src.deliver(p)
    });
    src.deliver(&mut late);
    assert_eq!(src.opens, HashMap::from([(1, 1), (2, 1), (3, 1)]));
    assert_eq!(folded(&late), folded(&now));
    assert_eq!(late.stacks(), now.stacks(), "names and their files");
    assert_eq!(late.top(100), now.top(100));
    // symbols that never come: finish names the frames file+0xoffset
    let mut src = FakeSource::new(prog, true);
    let never = scenario(hot, other, main, &mut src, |_, _| {});
    assert_eq!(never.files_pending(), 0);
    let text = folded(&never);
    let base = prog.file_name().unwrap().to_str().unwrap();
    assert!(text.contains(&format!("app;{base}+0x")), "{text}");
    assert!(!text.contains("hot_function"), "{text}");
    assert_eq!(never.samples(), now.samples());
}

#[test]
fn folded_top_and_roundtrip() {
    let Some(prog) = test_prog() else { return };
    let (hot, other, main) = (
        func_offset(prog, "hot_function"),
        func_offset(prog, "other_function"),
        func_offset(prog, "main"),
    );
    let mut opener = FakeSource::new(prog, false);
    let p = scenario(hot, other, main, &mut opener, |_, _| {});
    let mut out = Vec::new();
    p.write_folded(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let expected = "app;[unknown] 1\n\
                    app;file_3+0x10;[kernel]_[k] 1\n\
                    app;main;other_function;hot_function 2\n\
                    app;other_function;libgone.so (deleted)+0x1234;do_syscall_64_[k];schedule_[k] 1\n\
                    idle;[kernel] 1\n";
    assert_eq!(text, expected);
    assert_eq!(p.samples(), 6);
    assert_eq!(opener.opens, HashMap::from([(1, 1), (2, 1), (3, 1)]));

    let top = p.top(100);
    assert_eq!(
        top[0],
        TopEntry {
            name: "hot_function".into(),
            self_samples: 2,
            total_samples: 2
        }
    );
    assert_eq!(top.iter().map(|e| e.self_samples).sum::<u64>(), p.samples());
    let other_entry = top.iter().find(|e| e.name == "other_function").unwrap();
    assert_eq!(
        (other_entry.self_samples, other_entry.total_samples),
        (0, 3)
    );
    assert_eq!(p.top(1).len(), 1);

    let table = p.top_table(100);
    let mut lines = table.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["self%", "total%", "function"]
    );
    let self_sum: f64 = lines
        .map(|l| l.split_whitespace().next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!((self_sum - 100.0).abs() < 0.05, "{table}");
    assert!(table.contains("  33.33   33.33  hot_function\n"), "{table}");

    let parsed = parse_folded(&text).unwrap();
    assert_eq!(parsed.len(), 5);
    assert_eq!(
        parsed[2],
        (
            vec![
                "app".into(),
                "main".into(),
                "other_function".into(),
                "hot_function".into()
            ],
            2
        )
    );
    assert_eq!(parsed[3].0[2], "libgone.so (deleted)+0x1234");
    assert_eq!(leaf_shares(&parsed), p.function_shares());
    assert!((p.function_shares()["hot_function"] - 2.0 / 6.0).abs() < 1e-9);
}

#[test]
fn recursion_counts_total_once() {
    let Some(prog) = test_prog() else { return };
    let hot = func_offset(prog, "hot_function");
    let mut src = FakeSource::new(prog, false);
    let mut p = Profile::new(None);
    p.add(
        &sample("r", &[(1, hot + 1), (1, hot + 1), (1, hot + 1)], &[]),
        &mut src,
    );
    p.finish();
    assert_eq!(
        p.top(10),
        [TopEntry {
            name: "hot_function".into(),
            self_samples: 1,
            total_samples: 1
        }]
    );
}

#[test]
fn folded_lines_and_stacks_are_capped() {
    let e = parse_folded_from(std::io::repeat(b'a'), u64::MAX).unwrap_err();
    assert_eq!(e, "line 1 is longer than 4 MiB: not folded stacks");
    let e = parse_folded_from(std::io::repeat(0), u64::MAX).unwrap_err();
    assert_eq!(e, "line 1 is longer than 4 MiB: not folded stacks");
    let text = "a;b 1\n".repeat(1000);
    assert_eq!(
        parse_folded_from(text.as_bytes(), 1 << 20).unwrap().len(),
        1000
    );
    let e = parse_folded_from(text.as_bytes(), 1000).unwrap_err();
    assert!(
        e.starts_with("its stacks would take more than 4000 bytes (4 times --max-input)"),
        "{e}"
    );
    assert_eq!(
        parse_folded_from("a;b 1\r\nc 2".as_bytes(), u64::MAX).unwrap(),
        vec![
            (vec!["a".to_string(), "b".into()], 1),
            (vec!["c".to_string()], 2)
        ]
    );
}

#[test]
fn parse_folded_errors_and_sanitize() {
    assert!(parse_folded("a;b 1\nbad\n").unwrap_err().contains("line 2"));
    assert!(parse_folded("a;b x\n").unwrap_err().contains("line 1"));
    assert_eq!(
        parse_folded("\na;op new 3\n").unwrap(),
        [(vec!["a".to_string(), "op new".to_string()], 3)]
    );
    assert_eq!(sanitize("a;b\nc d"), "a_b_c d");
    assert!(leaf_shares(&[]).is_empty());
    assert!(Profile::new(None)
        .top_table(5)
        .starts_with("  self%  total%  function\n"));
}

/// A kernel thread (or any sample with no user frames) is `[kernel]`
/// under its comm without --kernel; a user stack that could not be read
/// stays `[unknown]`; with kernel frames they are the stack.
#[test]
fn samples_without_user_frames_are_the_kernel() {
    let mut src = FakeSource::new(Path::new("/nonexistent"), false);
    let mut p = Profile::new(Some(KernelSymbols::parse(KALLSYMS)));
    let mut kworker = sample("kworker/u8:0", &[], &[]);
    kworker.header.flags = crate::abi::SAMPLE_KTHREAD;
    p.add(&kworker, &mut src);
    p.add(&sample("app", &[], &[]), &mut src);
    let mut failed = sample("app", &[], &[]);
    failed.header.flags = crate::abi::SAMPLE_USER_STACK_ERROR;
    p.add(&failed, &mut src);
    let mut with_stack = sample("kworker/u8:0", &[], &[0xffffffff81001010]);
    with_stack.header.flags = crate::abi::SAMPLE_KTHREAD;
    p.add(&with_stack, &mut src);
    p.finish();
    assert_eq!(
        folded(&p),
        "app;[kernel] 1\n\
         app;[unknown] 1\n\
         kworker/u8:0;[kernel] 1\n\
         kworker/u8:0;schedule_[k] 1\n"
    );
    let files: Vec<String> = p
        .stacks()
        .iter()
        .flat_map(|s| s.1.iter().map(|f| f.1.clone()))
        .collect();
    assert!(files.iter().any(|f| f == "[kernel]"), "{files:?}");
}

#[test]
fn filters_keep_the_matching_stacks() {
    use crate::sampler::pattern::{Filters, Pattern};
    let Some(prog) = test_prog() else { return };
    let (hot, other, main) = (
        func_offset(prog, "hot_function"),
        func_offset(prog, "other_function"),
        func_offset(prog, "main"),
    );
    let make = || {
        let mut opener = FakeSource::new(prog, false);
        scenario(hot, other, main, &mut opener, |_, _| {})
    };
    let mut p = make();
    let f = Filters {
        function: Some(Pattern::new("^hot_").unwrap()),
        ..Filters::default()
    };
    assert_eq!(p.retain(&f), 2);
    assert_eq!(folded(&p), "app;main;other_function;hot_function 2\n");
    assert!(p.top_table(5).contains(" 100.00  100.00  hot_function\n"));
    let mut p = make();
    let f = Filters {
        comm: Some(Pattern::new("^idle$").unwrap()),
        ..Filters::default()
    };
    assert_eq!(p.retain(&f), 1);
    // the file of a frame: the kernel's, a library's
    let mut p = make();
    let f = Filters {
        dso: Some(Pattern::new("^libgone").unwrap()),
        ..Filters::default()
    };
    assert_eq!(p.retain(&f), 1, "{}", folded(&make()));
    let mut p = make();
    assert_eq!(p.retain(&Filters::default()), 6);
}
