//! Aggregates samples into folded stacks (flamegraph input) and a top table.
//!
//! Samples are kept by raw frame (file, offset) until the symbols of their
//! files arrive: a file's symbols are asked for at its first sight (from
//! the file worker, which reads it while its process lives) and come back
//! later through [`Profile::file_done`]; names are resolved then, and at the
//! latest by [`Profile::finish`]. This module never opens a file.

use crate::abi::{Sample, SampleFrame};
use crate::sampler::symbolize::{ElfSymbols, KernelSymbols};
use std::collections::HashMap;

const UNKNOWN: &str = "[unknown]";
/// The frame of a sample with no user frames (a kernel thread) when
/// kernel stacks are not recorded.
const IN_KERNEL: &str = "[kernel]";

/// One distinct stack: comm, frames root-first as (function, file), count.
pub type Stack = (String, Vec<(String, String)>, u64);

/// Supplied by the agent, which knows which file each `file_id` denotes.
pub trait FileSource {
    /// Display name, e.g. the path.
    fn name(&self, file_id: u64) -> Option<String>;
    /// Asks for the symbols of `file_id`: called at most once per file
    /// (first sight), while `pid` still lives. A `Pending` answer comes
    /// later through [`Profile::file_done`].
    fn request(&mut self, file_id: u64, pid: u32) -> Requested;
}

/// The answer of [`FileSource::request`].
#[derive(Debug)]
pub enum Requested {
    /// Known now (`None`: no symbols; frames show as `file+0xoffset`).
    Ready(Option<ElfSymbols>),
    Pending,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopEntry {
    pub name: String,
    pub self_samples: u64,
    pub total_samples: u64,
}

enum Symbols {
    Pending,
    Ready(Option<ElfSymbols>),
}

struct FileEntry {
    base: String,
    syms: Symbols,
}

/// A frame as sampled, before names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RawFrame {
    User {
        file_id: u64,
        offset: u64,
        leaf: bool,
    },
    Kernel {
        addr: u64,
        leaf: bool,
    },
    Unknown,
    /// A sample with no user frames and no kernel stack taken.
    InKernel,
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
    /// Distinct raw frames in first-seen order, and their ids.
    raw: Vec<RawFrame>,
    raw_ids: HashMap<RawFrame, u32>,
    /// The name id of each raw frame, once its file's symbols are known.
    resolved: Vec<Option<u32>>,
    interner: Interner,
    /// (comm, frame names root-first) -> count
    stacks: HashMap<(u32, Vec<u32>), u64>,
    /// (comm, raw frames root-first) -> count, for stacks with a frame
    /// whose file's symbols have not arrived yet.
    pending: HashMap<(u32, Vec<u32>), u64>,
    /// Raw comm -> interned name, so a sample allocates nothing for it.
    comms: HashMap<[u8; 16], u32>,
    /// The frames of the sample being added; it moves into a map only for
    /// a stack not seen before, so a repeated stack allocates nothing.
    scratch: Vec<u32>,
    name_scratch: Vec<u32>,
    total: u64,
}

impl Profile {
    pub fn new(kernel: Option<KernelSymbols>) -> Profile {
        Profile {
            kernel,
            files: HashMap::new(),
            raw: Vec::new(),
            raw_ids: HashMap::new(),
            resolved: Vec::new(),
            interner: Interner::default(),
            stacks: HashMap::new(),
            pending: HashMap::new(),
            comms: HashMap::new(),
            scratch: Vec::new(),
            name_scratch: Vec::new(),
            total: 0,
        }
    }

    pub fn add(&mut self, sample: &Sample, files: &mut dyn FileSource) {
        let pid = sample.header.pid;
        let mut stack = std::mem::take(&mut self.scratch);
        stack.clear();
        for (i, f) in sample.user.iter().enumerate().rev() {
            stack.push(self.user_frame(*f, i == 0, pid, files));
        }
        for (i, &addr) in sample.kernel.iter().enumerate().rev() {
            stack.push(self.raw_id(RawFrame::Kernel { addr, leaf: i == 0 }));
        }
        if stack.is_empty() {
            // no user frames: a kernel thread, or a task sampled in the
            // kernel whose user stack is empty; without --kernel its
            // kernel stack is not taken, so it is the kernel, not a
            // failed unwind (a user stack that could not be read is)
            let failed = sample.header.flags & crate::abi::SAMPLE_USER_STACK_ERROR != 0
                && sample.header.flags & crate::abi::SAMPLE_KTHREAD == 0;
            let f = if failed {
                RawFrame::Unknown
            } else {
                RawFrame::InKernel
            };
            stack.push(self.raw_id(f));
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
        self.count(comm, stack, 1);
        self.total += 1;
    }

    /// Adds `n` to a stack of raw frames: by names when every frame can be
    /// named now, else kept raw until its files' symbols arrive.
    fn count(&mut self, comm: u32, raw: Vec<u32>, n: u64) {
        let mut names = std::mem::take(&mut self.name_scratch);
        names.clear();
        for &r in &raw {
            match self.resolve(r) {
                Some(id) => names.push(id),
                None => {
                    self.name_scratch = names;
                    bump(&mut self.pending, (comm, raw), n, &mut self.scratch);
                    return;
                }
            }
        }
        self.scratch = raw;
        bump(&mut self.stacks, (comm, names), n, &mut self.name_scratch);
    }

    fn user_frame(
        &mut self,
        f: SampleFrame,
        leaf: bool,
        pid: u32,
        files: &mut dyn FileSource,
    ) -> u32 {
        if f.file_id == 0 {
            return self.raw_id(RawFrame::Unknown);
        }
        self.files
            .entry(f.file_id)
            .or_insert_with(|| open_file(files, f.file_id, pid));
        self.raw_id(RawFrame::User {
            file_id: f.file_id,
            offset: f.offset,
            leaf,
        })
    }

    fn raw_id(&mut self, f: RawFrame) -> u32 {
        if let Some(&id) = self.raw_ids.get(&f) {
            return id;
        }
        let id = self.raw.len() as u32;
        self.raw.push(f);
        self.raw_ids.insert(f, id);
        self.resolved.push(None);
        id
    }

    /// The name of a raw frame, when its file's symbols are known.
    /// Non-leaf frames are return addresses; looking up `addr - 1` keeps a
    /// call that ends a function (e.g. to a noreturn callee) in the caller.
    fn resolve(&mut self, raw: u32) -> Option<u32> {
        if let Some(id) = self.resolved[raw as usize] {
            return Some(id);
        }
        let id = match self.raw[raw as usize] {
            RawFrame::Unknown => self.interner.intern(UNKNOWN),
            RawFrame::InKernel => self.interner.intern(IN_KERNEL),
            RawFrame::Kernel { addr, leaf } => {
                let lookup = if leaf { addr } else { addr.saturating_sub(1) };
                let name = match self.kernel.as_ref().and_then(|k| k.lookup(lookup)) {
                    Some(n) => format!("{}_[k]", sanitize(n)),
                    None => "[kernel]_[k]".to_string(),
                };
                self.interner.intern(&name)
            }
            RawFrame::User {
                file_id,
                offset,
                leaf,
            } => {
                let entry = self.files.get(&file_id)?;
                let Symbols::Ready(syms) = &entry.syms else {
                    return None;
                };
                let addr = if leaf {
                    offset
                } else {
                    offset.saturating_sub(1)
                };
                match syms.as_ref().and_then(|s| s.lookup(addr)) {
                    Some(name) => self.interner.intern(&sanitize(strip_version(name))),
                    None => self
                        .interner
                        .intern(&format!("{}+0x{:x}", entry.base, offset)),
                }
            }
        };
        self.resolved[raw as usize] = Some(id);
        Some(id)
    }

    /// The symbols of a file asked for with [`Requested::Pending`]
    /// (`None`: unreadable, refused or timed out).
    pub fn file_done(&mut self, file_id: u64, syms: Option<ElfSymbols>) {
        let Some(entry) = self.files.get_mut(&file_id) else {
            return;
        };
        if !matches!(entry.syms, Symbols::Pending) {
            return;
        }
        if syms.is_none() {
            log::debug!("no symbols for file {file_id:#x} ({})", entry.base);
        }
        entry.syms = Symbols::Ready(syms);
        self.recount_pending();
    }

    /// Files whose symbols are still awaited.
    #[cfg(test)]
    pub fn files_pending(&self) -> usize {
        self.files
            .values()
            .filter(|f| matches!(f.syms, Symbols::Pending))
            .count()
    }

    fn recount_pending(&mut self) {
        for ((comm, raw), n) in std::mem::take(&mut self.pending) {
            self.count(comm, raw, n);
        }
    }

    /// Names every frame still waiting for symbols (as `file+0xoffset`).
    /// Call before writing the profile.
    pub fn finish(&mut self) {
        for f in self.files.values_mut() {
            if matches!(f.syms, Symbols::Pending) {
                f.syms = Symbols::Ready(None);
            }
        }
        self.recount_pending();
    }

    /// The file each frame name came from: the first raw frame (in the
    /// order frames were first seen) that has this name.
    fn origins(&self) -> HashMap<u32, String> {
        let mut origin = HashMap::new();
        for (raw, name) in self.raw.iter().zip(&self.resolved) {
            let Some(name) = name else { continue };
            let file = match raw {
                RawFrame::User { file_id, .. } => match self.files.get(file_id) {
                    Some(f) => f.base.clone(),
                    None => continue,
                },
                RawFrame::Kernel { .. } | RawFrame::InKernel => "[kernel]".to_string(),
                RawFrame::Unknown => continue,
            };
            origin.entry(*name).or_insert(file);
        }
        origin
    }

    /// Every distinct stack: (comm, frames root-first as (function, file),
    /// count), sorted.
    pub fn stacks(&self) -> Vec<Stack> {
        let names = self.interner.names();
        let origin = self.origins();
        let mut out: Vec<Stack> = self
            .stacks
            .iter()
            .map(|((comm, frames), count)| {
                let fr = frames
                    .iter()
                    .map(|f| {
                        let file = origin.get(f).cloned().unwrap_or_default();
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

    /// Keeps only the stacks `f` keeps (a frame's file is the file its
    /// name came from); the shares are then of the kept samples. Returns
    /// how many samples were kept. Call after [`Profile::finish`].
    pub fn retain(&mut self, f: &crate::sampler::pattern::Filters) -> u64 {
        if f.is_empty() {
            return self.total;
        }
        let origin = self.origins();
        let names = self.interner.names();
        let mut kept = 0;
        self.stacks.retain(|(comm, frames), count| {
            let keep = f.keeps(
                Some(names[*comm as usize].as_str()),
                frames.iter().map(|id| {
                    (
                        names[*id as usize].as_str(),
                        origin.get(id).map(String::as_str),
                    )
                }),
            );
            if keep {
                kept += *count;
            }
            keep
        });
        self.total = kept;
        kept
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
    #[cfg(test)]
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

/// Adds `n` to `key`; a key already present goes back to `spare` (so a
/// repeated stack allocates nothing).
fn bump(
    map: &mut HashMap<(u32, Vec<u32>), u64>,
    key: (u32, Vec<u32>),
    n: u64,
    spare: &mut Vec<u32>,
) {
    match map.get_mut(&key) {
        Some(c) => {
            *c += n;
            *spare = key.1;
        }
        None => {
            map.insert(key, n);
        }
    }
}

fn open_file(files: &mut dyn FileSource, file_id: u64, pid: u32) -> FileEntry {
    let name = files.name(file_id);
    let base = name
        .as_deref()
        .and_then(|n| n.rsplit('/').next())
        .filter(|b| !b.is_empty())
        .map_or_else(|| format!("file_{file_id:x}"), sanitize);
    let syms = match files.request(file_id, pid) {
        Requested::Pending => Symbols::Pending,
        Requested::Ready(syms) => {
            if syms.is_none() {
                log::debug!("no symbols for file {file_id:#x} ({base})");
            }
            Symbols::Ready(syms)
        }
    };
    FileEntry { base, syms }
}

// Folded text in: `folded.rs`.
pub use crate::sampler::folded::{leaf_shares, parse_folded, parse_folded_from, MAX_FOLDED_LINE};

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
mod tests;
