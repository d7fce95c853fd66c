//! Aggregates samples into folded stacks (flamegraph input) and a top table.

use crate::abi::{Sample, SampleFrame};
use crate::symbolize::{ElfSymbols, KernelSymbols};
use std::collections::HashMap;
use std::fs::File;

const UNKNOWN: &str = "[unknown]";

/// One distinct stack: comm, frames root-first as (function, file), count.
pub type Stack = (String, Vec<(String, String)>, u64);

/// Supplied by the agent, which knows which file each `file_id` denotes.
pub trait FileOpener {
    /// Display name, e.g. the path.
    fn name(&self, file_id: u64) -> Option<String>;
    /// Called at most once per `file_id` (first sight), while `pid` still lives.
    fn open(&self, file_id: u64, pid: u32) -> Option<File>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopEntry {
    pub name: String,
    pub self_samples: u64,
    pub total_samples: u64,
}

struct FileEntry {
    base: String,
    syms: Option<ElfSymbols>,
}

/// Strings to dense ids in first-seen order (the frame names here, the
/// string table of the pprof encoder).
#[derive(Default)]
pub(crate) struct Interner {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Interner {
    /// The names, indexed by id.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    pub(crate) fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }
}

/// Only ';' and '\n' break a folded line: flamegraph.pl splits the count at
/// the last space, so spaces inside names (`operator new`) are fine.
fn sanitize(name: &str) -> String {
    name.replace([';', '\n'], "_")
}

/// `clock_gettime@@GLIBC_2.17` -> `clock_gettime`: a symbol version names
/// the ABI, not the function, and would split one function in two.
fn strip_version(name: &str) -> &str {
    match name.find('@') {
        Some(i) if i > 0 => {
            let v = name[i..].trim_start_matches('@');
            let is_version = !v.is_empty()
                && v.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.');
            if is_version {
                &name[..i]
            } else {
                name
            }
        }
        _ => name,
    }
}

pub struct Profile {
    kernel: Option<KernelSymbols>,
    files: HashMap<u64, FileEntry>,
    user_cache: HashMap<(u64, u64, bool), u32>,
    kernel_cache: HashMap<(u64, bool), u32>,
    interner: Interner,
    /// (comm, frames root-first) -> count
    stacks: HashMap<(u32, Vec<u32>), u64>,
    /// The file each frame name came from (first sight).
    origin: HashMap<u32, String>,
    /// Raw comm -> interned name, so a sample allocates nothing for it.
    comms: HashMap<[u8; 16], u32>,
    /// The frames of the sample being added; it moves into `stacks` only
    /// for a stack not seen before, so a repeated stack allocates nothing.
    scratch: Vec<u32>,
    total: u64,
}

impl Profile {
    pub fn new(kernel: Option<KernelSymbols>) -> Profile {
        Profile {
            kernel,
            files: HashMap::new(),
            user_cache: HashMap::new(),
            kernel_cache: HashMap::new(),
            interner: Interner::default(),
            stacks: HashMap::new(),
            origin: HashMap::new(),
            comms: HashMap::new(),
            scratch: Vec::new(),
            total: 0,
        }
    }

    pub fn add(&mut self, sample: &Sample, files: &dyn FileOpener) {
        let pid = sample.header.pid;
        let mut stack = std::mem::take(&mut self.scratch);
        stack.clear();
        for (i, f) in sample.user.iter().enumerate().rev() {
            stack.push(self.user_frame(*f, i == 0, pid, files));
        }
        for (i, &addr) in sample.kernel.iter().enumerate().rev() {
            stack.push(self.kernel_frame(addr, i == 0));
        }
        if stack.is_empty() {
            stack.push(self.interner.intern(UNKNOWN));
        }
        let comm = match self.comms.get(&sample.header.comm) {
            Some(&id) => id,
            None => {
                let name = sanitize(&sample.comm());
                let id = self
                    .interner
                    .intern(if name.is_empty() { UNKNOWN } else { &name });
                self.comms.insert(sample.header.comm, id);
                id
            }
        };
        let key = (comm, stack);
        match self.stacks.get_mut(&key) {
            Some(n) => {
                *n += 1;
                self.scratch = key.1;
            }
            None => {
                self.stacks.insert(key, 1);
            }
        }
        self.total += 1;
    }

    /// Non-leaf frames are return addresses; looking up `addr - 1` keeps a call
    /// that ends a function (e.g. to a noreturn callee) in the caller.
    fn user_frame(&mut self, f: SampleFrame, leaf: bool, pid: u32, files: &dyn FileOpener) -> u32 {
        if f.file_id == 0 {
            return self.interner.intern(UNKNOWN);
        }
        let key = (f.file_id, f.offset, leaf);
        if let Some(&id) = self.user_cache.get(&key) {
            return id;
        }
        let entry = self
            .files
            .entry(f.file_id)
            .or_insert_with(|| open_file(files, f.file_id, pid));
        let addr = if leaf {
            f.offset
        } else {
            f.offset.saturating_sub(1)
        };
        let id = match entry.syms.as_ref().and_then(|s| s.lookup(addr)) {
            Some(name) => self.interner.intern(&sanitize(strip_version(name))),
            None => self
                .interner
                .intern(&format!("{}+0x{:x}", entry.base, f.offset)),
        };
        self.user_cache.insert(key, id);
        self.origin.entry(id).or_insert_with(|| entry.base.clone());
        id
    }

    fn kernel_frame(&mut self, addr: u64, leaf: bool) -> u32 {
        if let Some(&id) = self.kernel_cache.get(&(addr, leaf)) {
            return id;
        }
        let lookup = if leaf { addr } else { addr.saturating_sub(1) };
        let name = match self.kernel.as_ref().and_then(|k| k.lookup(lookup)) {
            Some(n) => format!("{}_[k]", sanitize(n)),
            None => "[kernel]_[k]".to_string(),
        };
        let id = self.interner.intern(&name);
        self.kernel_cache.insert((addr, leaf), id);
        self.origin
            .entry(id)
            .or_insert_with(|| "[kernel]".to_string());
        id
    }

    /// Every distinct stack: (comm, frames root-first as (function, file),
    /// count), sorted.
    pub fn stacks(&self) -> Vec<Stack> {
        let names = self.interner.names();
        let mut out: Vec<Stack> = self
            .stacks
            .iter()
            .map(|((comm, frames), count)| {
                let fr = frames
                    .iter()
                    .map(|f| {
                        let file = self.origin.get(f).cloned().unwrap_or_default();
                        (names[*f as usize].clone(), file)
                    })
                    .collect();
                (names[*comm as usize].clone(), fr, *count)
            })
            .collect();
        out.sort();
        out
    }

    pub fn samples(&self) -> u64 {
        self.total
    }

    /// One `comm;root;...;leaf count` line per distinct stack, sorted.
    pub fn write_folded(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let names = self.interner.names();
        let mut lines: Vec<String> = self
            .stacks
            .iter()
            .map(|((comm, frames), count)| {
                let mut line = names[*comm as usize].clone();
                for f in frames {
                    line.push(';');
                    line.push_str(&names[*f as usize]);
                }
                format!("{line} {count}")
            })
            .collect();
        lines.sort_unstable();
        for line in lines {
            writeln!(w, "{line}")?;
        }
        Ok(())
    }

    /// Functions by self samples, then total samples (a recursive function
    /// counts once per stack towards its total).
    pub fn top(&self, n: usize) -> Vec<TopEntry> {
        let mut acc: HashMap<u32, (u64, u64)> = HashMap::new();
        let mut seen = Vec::new();
        for ((_, frames), &count) in &self.stacks {
            if let Some(&leaf) = frames.last() {
                acc.entry(leaf).or_default().0 += count;
            }
            seen.clear();
            seen.extend_from_slice(frames);
            seen.sort_unstable();
            seen.dedup();
            for &f in &seen {
                acc.entry(f).or_default().1 += count;
            }
        }
        let mut top: Vec<TopEntry> = acc
            .into_iter()
            .map(|(id, (s, t))| TopEntry {
                name: self.interner.names()[id as usize].clone(),
                self_samples: s,
                total_samples: t,
            })
            .collect();
        top.sort_by(|a, b| {
            (b.self_samples, b.total_samples)
                .cmp(&(a.self_samples, a.total_samples))
                .then_with(|| a.name.cmp(&b.name))
        });
        top.truncate(n);
        top
    }

    pub fn top_table(&self, n: usize) -> String {
        let pct = |v: u64| {
            if self.total == 0 {
                0.0
            } else {
                v as f64 * 100.0 / self.total as f64
            }
        };
        let mut out = format!("{:>7} {:>7}  function\n", "self%", "total%");
        for e in self.top(n) {
            out.push_str(&format!(
                "{:>7.2} {:>7.2}  {}\n",
                pct(e.self_samples),
                pct(e.total_samples),
                e.name
            ));
        }
        out
    }

    /// Share (0..1) of all samples whose leaf is each function.
    pub fn function_shares(&self) -> HashMap<String, f64> {
        let mut shares = HashMap::new();
        for ((_, frames), &count) in &self.stacks {
            if let Some(&leaf) = frames.last() {
                *shares
                    .entry(self.interner.names()[leaf as usize].clone())
                    .or_insert(0.0) += count as f64;
            }
        }
        shares
            .values_mut()
            .for_each(|v| *v /= self.total.max(1) as f64);
        shares
    }
}

fn open_file(files: &dyn FileOpener, file_id: u64, pid: u32) -> FileEntry {
    let name = files.name(file_id);
    let base = name
        .as_deref()
        .and_then(|n| n.rsplit('/').next())
        .filter(|b| !b.is_empty())
        .map_or_else(|| format!("file_{file_id:x}"), sanitize);
    let syms = files
        .open(file_id, pid)
        .and_then(|f| ElfSymbols::from_file(&f, name.as_deref().unwrap_or("")));
    if syms.is_none() {
        log::debug!("no symbols for file {file_id:#x} ({base})");
    }
    FileEntry { base, syms }
}

/// Parses folded stacks (`a;b;c count`); the count follows the last space.
pub fn parse_folded(text: &str) -> Result<Vec<(Vec<String>, u64)>, String> {
    parse_folded_from(text.as_bytes(), u64::MAX)
}

/// The longest line [`parse_folded_from`] accepts: a stack of thousands
/// of long frames fits many times over; a file with no newline does not.
pub const MAX_FOLDED_LINE: usize = 4 << 20;

/// Parses folded stacks from a stream, line by line: a line longer than
/// [`MAX_FOLDED_LINE`] is an error, and the stacks held (names plus a
/// fixed overhead per frame) may not exceed
/// [`MEMORY_PER_INPUT`](crate::pprof::MEMORY_PER_INPUT) times `max_bytes`.
pub fn parse_folded_from(
    r: impl std::io::Read,
    max_bytes: u64,
) -> Result<Vec<(Vec<String>, u64)>, String> {
    use std::io::{BufRead, Read};
    let mut r = std::io::BufReader::new(r);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut held = 0u64;
    let memory = max_bytes.saturating_mul(crate::pprof::MEMORY_PER_INPUT);
    for i in 1.. {
        buf.clear();
        let n = (&mut r)
            .take(MAX_FOLDED_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| match e.get_ref() {
                Some(inner) if inner.is::<crate::pprof::InputLimit>() => inner.to_string(),
                _ => format!("reading line {i}: {e}"),
            })?;
        if n == 0 {
            break;
        }
        if buf.len() > MAX_FOLDED_LINE {
            return Err(format!(
                "line {i} is longer than {} MiB: not folded stacks",
                MAX_FOLDED_LINE >> 20
            ));
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let (stack, count) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("line {i}: missing count"))?;
        let count = count
            .parse::<u64>()
            .map_err(|e| format!("line {i}: bad count {count:?}: {e}"))?;
        if stack.is_empty() {
            return Err(format!("line {i}: empty stack"));
        }
        let frames: Vec<String> = stack.split(';').map(str::to_string).collect();
        held = held.saturating_add(frames.iter().map(|f| f.len() as u64 + 32).sum::<u64>());
        if held > memory {
            return Err(format!(
                "its stacks would take more than {memory} bytes ({} times --max-input); \
                 raise --max-input BYTES if the input is trusted",
                crate::pprof::MEMORY_PER_INPUT
            ));
        }
        out.push((frames, count));
    }
    Ok(out)
}

/// Share (0..1) of all counts whose leaf (last element) is each name.
pub fn leaf_shares(stacks: &[(Vec<String>, u64)]) -> HashMap<String, f64> {
    let total: u64 = stacks.iter().map(|s| s.1).sum();
    let mut shares = HashMap::new();
    for (stack, count) in stacks {
        if let Some(leaf) = stack.last() {
            *shares.entry(leaf.clone()).or_insert(0.0) += *count as f64;
        }
    }
    shares.values_mut().for_each(|v| *v /= total.max(1) as f64);
    shares
}

#[cfg(test)]
mod version_tests {
    #[test]
    fn symbol_versions_are_stripped() {
        assert_eq!(
            super::strip_version("clock_gettime@@GLIBC_2.17"),
            "clock_gettime"
        );
        assert_eq!(super::strip_version("memcpy@GLIBC_2.2.5"), "memcpy");
        assert_eq!(super::strip_version("plain"), "plain");
        assert_eq!(super::strip_version("@odd"), "@odd");
        assert_eq!(super::strip_version("a@b c"), "a@b c");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::SampleHeader;
    use crate::symbolize::test_util::{func_offset, test_prog};
    use std::cell::RefCell;
    use std::path::Path;

    struct FakeOpener<'a> {
        prog: &'a Path,
        opens: RefCell<HashMap<u64, u32>>,
    }

    impl FileOpener for FakeOpener<'_> {
        fn name(&self, file_id: u64) -> Option<String> {
            match file_id {
                1 => Some(self.prog.display().to_string()),
                2 => Some("/usr/lib/libgone.so (deleted)".into()),
                _ => None,
            }
        }
        fn open(&self, file_id: u64, _pid: u32) -> Option<File> {
            *self.opens.borrow_mut().entry(file_id).or_default() += 1;
            (file_id == 1).then(|| File::open(self.prog).ok()).flatten()
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

    #[test]
    fn folded_top_and_roundtrip() {
        let Some(prog) = test_prog() else { return };
        let (hot, other, main) = (
            func_offset(prog, "hot_function"),
            func_offset(prog, "other_function"),
            func_offset(prog, "main"),
        );
        let opener = FakeOpener {
            prog,
            opens: RefCell::default(),
        };
        let mut p = Profile::new(Some(KernelSymbols::parse(KALLSYMS)));
        let s1 = sample("app", &[(1, hot + 1), (1, other + 4), (1, main + 8)], &[]);
        p.add(&s1, &opener);
        p.add(&s1, &opener);
        p.add(
            &sample(
                "app",
                &[(2, 0x1234), (1, other + 4)],
                &[0xffffffff81001010, 0xffffffff81000020],
            ),
            &opener,
        );
        p.add(&sample("app", &[(0, 0xdead)], &[]), &opener);
        p.add(&sample("idle", &[], &[]), &opener);
        p.add(&sample("app", &[(3, 0x10)], &[0x10]), &opener);

        let mut out = Vec::new();
        p.write_folded(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let expected = "app;[unknown] 1\n\
                        app;file_3+0x10;[kernel]_[k] 1\n\
                        app;main;other_function;hot_function 2\n\
                        app;other_function;libgone.so (deleted)+0x1234;do_syscall_64_[k];schedule_[k] 1\n\
                        idle;[unknown] 1\n";
        assert_eq!(text, expected);
        assert_eq!(p.samples(), 6);
        assert_eq!(
            opener.opens.borrow().clone(),
            HashMap::from([(1, 1), (2, 1), (3, 1)])
        );

        let top = p.top(100);
        assert_eq!(
            top[0],
            TopEntry {
                name: "[unknown]".into(),
                self_samples: 2,
                total_samples: 2
            }
        );
        assert_eq!(
            top[1],
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
        let opener = FakeOpener {
            prog,
            opens: RefCell::default(),
        };
        let mut p = Profile::new(None);
        p.add(
            &sample("r", &[(1, hot + 1), (1, hot + 1), (1, hot + 1)], &[]),
            &opener,
        );
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
}
