//! Symbolization of user-space ELF file offsets and kernel addresses.
//!
//! Touches user-controlled files (DESIGN §9): the mapped file a caller
//! opened (see `sys::safe_open`), and its separate debug file found through
//! `.gnu_debuglink` or the build id. Only the file worker calls
//! [`ElfSymbols::from_file`]. Reads are positioned and bounded
//! (`sys::pread`): the headers and the sections needed, never the whole
//! file, at most [`MAX_SECTION`] per section and [`FILE_BUDGET`] per file.
//! Debug files are looked for only in directories owned by root and
//! writable by nobody else, with no symlink on the way (Debian's dbgsym
//! packages ship real files under `.build-id`), and opened only when
//! regular.
//!
//! Nothing here panics on malformed input: bad ELF files or kallsyms text
//! simply produce no (or fewer) symbols.

use crate::sys::pread::BoundedReader;
use crate::sys::safe_open::{self, OpenOutcome, Trust};
use object::{
    Object, ObjectSection, ObjectSegment, ObjectSymbol, ObjectSymbolTable, ReadRef, SectionIndex,
    SymbolSection,
};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const DEFAULT_DEBUG_ROOT: &str = "/usr/lib/debug";
/// The largest single section (or header table) read from a file.
pub const MAX_SECTION: u64 = 256 << 20;
/// All reads of one file together.
pub const FILE_BUDGET: u64 = 512 << 20;
/// The largest debug file whose CRC is computed (read in chunks).
const MAX_CRC_FILE: u64 = 4 << 30;
/// cpp_demangle recurses; very long names are not worth the stack risk.
const MAX_CPP_NAME: usize = 4096;

/// Where separate debug files are looked for, and who must own the
/// directories they are read from.
#[derive(Clone, Debug)]
pub struct DebugDirs {
    /// `/usr/lib/debug`: `.build-id/xx/rest.debug` and `<dir>/<debuglink>`.
    pub root: PathBuf,
    pub trust: Trust,
}

impl Default for DebugDirs {
    fn default() -> DebugDirs {
        DebugDirs {
            root: PathBuf::from(DEFAULT_DEBUG_ROOT),
            trust: Trust::default(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Segment {
    offset: u64,
    vaddr: u64,
    filesz: u64,
    #[allow(dead_code)] // kept for completeness of the segment description
    memsz: u64,
}

#[derive(Clone, Copy, Debug)]
struct Sym {
    start: u64,
    size: u64,
    name: u32,
    len: u32,
}

/// Function symbols of one ELF file, addressed by file offset.
///
/// Size-0 symbols (common in hand-written assembly) are extended to the next
/// symbol or the end of their section, whichever comes first.
#[derive(Debug)]
pub struct ElfSymbols {
    name: String,
    segments: Vec<Segment>,
    syms: Vec<Sym>,
    names: String,
    /// Demangling every symbol up front is slow for big C++ libraries; only
    /// the few symbols that samples hit are demangled, once.
    demangled: Vec<OnceLock<Box<str>>>,
    build_id: Option<Vec<u8>>,
}

/// What one parse of an ELF image yields; the image bytes can be dropped after.
struct Parsed {
    segments: Vec<Segment>,
    syms: Vec<Sym>,
    names: String,
    has_symtab: bool,
    build_id: Option<Vec<u8>>,
    debuglink: Option<(String, u32)>,
}

impl ElfSymbols {
    /// The symbols of an open ELF file (opened by `sys::safe_open`), by
    /// bounded positioned reads. `path` (absolute, from the maps line)
    /// names the directory of `.gnu_debuglink` lookups.
    pub fn from_file(file: &File, path: &str) -> Option<ElfSymbols> {
        Self::from_file_with_debug(file, path, &DebugDirs::default())
    }

    pub fn from_file_with_debug(file: &File, path: &str, debug: &DebugDirs) -> Option<ElfSymbols> {
        let mut parsed = parse_file(file, path)?;
        if !parsed.has_symtab {
            if let Some(dbg) = find_debug_file(&parsed, path, debug) {
                parsed.syms = dbg.syms;
                parsed.names = dbg.names;
            }
        }
        Some(Self::build(parsed, path))
    }

    /// Parses an in-memory image; never touches the file system.
    pub fn from_bytes(data: &[u8], display_name: &str) -> Option<ElfSymbols> {
        parse(data).map(|p| Self::build(p, display_name))
    }

    fn build(p: Parsed, display_name: &str) -> ElfSymbols {
        let demangled = (0..p.syms.len()).map(|_| OnceLock::new()).collect();
        ElfSymbols {
            name: display_name.to_string(),
            segments: p.segments,
            syms: p.syms,
            names: p.names,
            demangled,
            build_id: p.build_id,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn build_id(&self) -> Option<&[u8]> {
        self.build_id.as_deref()
    }

    /// Maps a file offset inside an executable PT_LOAD segment to its link-time vaddr.
    pub fn offset_to_vaddr(&self, file_offset: u64) -> Option<u64> {
        self.segments.iter().find_map(|s| {
            let delta = file_offset.checked_sub(s.offset)?;
            if delta < s.filesz {
                s.vaddr.checked_add(delta)
            } else {
                None
            }
        })
    }

    /// Demangled name of the function containing `file_offset`.
    pub fn lookup(&self, file_offset: u64) -> Option<&str> {
        let vaddr = self.offset_to_vaddr(file_offset)?;
        let idx = self
            .syms
            .partition_point(|s| s.start <= vaddr)
            .checked_sub(1)?;
        let sym = self.syms[idx];
        if vaddr >= sym.start.saturating_add(sym.size) {
            return None;
        }
        let raw = self
            .names
            .get(sym.name as usize..(sym.name as usize).checked_add(sym.len as usize)?)?;
        Some(
            self.demangled
                .get(idx)?
                .get_or_init(|| demangle(raw).into_boxed_str()),
        )
    }
}

/// Parses a file by bounded reads; warns when a section was too big.
fn parse_file(file: &File, name: &str) -> Option<Parsed> {
    let len = file.metadata().ok()?.len();
    let reader = BoundedReader::new(file, len, MAX_SECTION, FILE_BUDGET);
    let parsed = object::File::parse(&reader).ok().and_then(|file| {
        // symbol names are read one by one: their string tables are read
        // first in one go each, and the names are sliced from them
        for section in file.sections() {
            if matches!(section.name(), Ok(".strtab" | ".dynstr")) {
                if let Some((offset, size)) = section.file_range() {
                    reader.preload(offset, size);
                }
            }
        }
        parse_object(&file)
    });
    let refused = reader.refusals();
    if let Some((offset, size)) = refused.over_cap {
        crate::warn_limited!(
            "section over cap",
            "{name}: not reading {size} bytes at offset {offset:#x} (more than the {} MiB cap of one ELF section): its symbols may be missing",
            MAX_SECTION >> 20
        );
    }
    if refused.over_budget > 0 {
        crate::warn_limited!(
            "file over budget",
            "{name}: {} reads refused after {} MiB read from it (the per-file budget): its symbols may be missing",
            refused.over_budget,
            FILE_BUDGET >> 20
        );
    }
    parsed
}

fn parse<'d, R: ReadRef<'d>>(data: R) -> Option<Parsed> {
    parse_object(&object::File::parse(data).ok()?)
}

fn parse_object<'d, R: ReadRef<'d>>(file: &object::File<'d, R>) -> Option<Parsed> {
    let segments = file
        .segments()
        .filter_map(|seg| match seg.flags() {
            object::SegmentFlags::Elf { p_flags } if p_flags & object::elf::PF_X != 0 => {
                let (offset, filesz) = seg.file_range();
                Some(Segment {
                    offset,
                    vaddr: seg.address(),
                    filesz,
                    memsz: seg.size(),
                })
            }
            _ => None,
        })
        .collect();
    let symtab = file.symbol_table();
    let has_symtab = symtab.is_some();
    let (syms, names) = match symtab.or_else(|| file.dynamic_symbol_table()) {
        Some(table) => collect_symbols(file, table.symbols()),
        None => (Vec::new(), String::new()),
    };
    let build_id = file
        .build_id()
        .ok()
        .flatten()
        .filter(|id| !id.is_empty())
        .map(<[u8]>::to_vec);
    let debuglink = file
        .gnu_debuglink()
        .ok()
        .flatten()
        .and_then(|(n, crc)| Some((std::str::from_utf8(n).ok()?.to_string(), crc)));
    Some(Parsed {
        segments,
        syms,
        names,
        has_symtab,
        build_id,
        debuglink,
    })
}

fn collect_symbols<'d: 'f, 'f, R: ReadRef<'d>>(
    file: &'f object::File<'d, R>,
    symbols: impl Iterator<Item = object::Symbol<'d, 'f, R>>,
) -> (Vec<Sym>, String) {
    // (start, size, section end, rank, name offset, name len)
    let mut raw: Vec<(u64, u64, u64, u8, u32, u32)> = Vec::new();
    let mut names = String::new();
    let thumb = file.architecture() == object::Architecture::Arm;
    let mut section_ends: std::collections::HashMap<SectionIndex, u64> = Default::default();
    for sym in symbols {
        let (st_info, binding) = match sym.flags() {
            object::SymbolFlags::Elf { st_info, .. } => (st_info, st_info >> 4),
            _ => continue,
        };
        let st_type = st_info & 0xf;
        let size = sym.size();
        let wanted = matches!(st_type, object::elf::STT_FUNC | object::elf::STT_GNU_IFUNC)
            || (st_type == object::elf::STT_NOTYPE && size > 0);
        let SymbolSection::Section(sec) = sym.section() else {
            continue;
        };
        let mut start = sym.address();
        if thumb {
            start &= !1; // bit 0 marks Thumb code, not an address bit
        }
        if !wanted || start == 0 {
            continue;
        }
        let Ok(name) = sym.name_bytes() else { continue };
        if name.is_empty() {
            continue;
        }
        let end = *section_ends.entry(sec).or_insert_with(|| {
            file.section_by_index(sec)
                .map(|s| s.address().saturating_add(s.size()))
                .unwrap_or(0)
        });
        let name = String::from_utf8_lossy(name);
        let (Ok(off), Ok(len)) = (u32::try_from(names.len()), u32::try_from(name.len())) else {
            break;
        };
        if off.checked_add(len).is_none() {
            break;
        }
        names.push_str(&name);
        // Prefer sized, then global, then weak symbols among aliases.
        let rank = u8::from(size == 0) * 4
            + match binding {
                object::elf::STB_GLOBAL => 0,
                object::elf::STB_WEAK => 1,
                _ => 2,
            };
        raw.push((start, size, end, rank, off, len));
    }
    raw.sort_unstable_by(|a, b| {
        a.0.cmp(&b.0)
            .then(a.3.cmp(&b.3))
            .then(b.1.cmp(&a.1))
            .then(a.4.cmp(&b.4))
    });
    raw.dedup_by_key(|r| r.0);
    let mut syms = Vec::with_capacity(raw.len());
    for (i, &(start, size, end, _, name, len)) in raw.iter().enumerate() {
        let size = if size > 0 {
            size
        } else {
            let next = raw.get(i + 1).map_or(u64::MAX, |r| r.0);
            end.min(next).saturating_sub(start)
        };
        if size > 0 {
            syms.push(Sym {
                start,
                size,
                name,
                len,
            });
        }
    }
    (syms, names)
}

fn find_debug_file(main: &Parsed, path: &str, debug: &DebugDirs) -> Option<Parsed> {
    if let Some(id) = main.build_id.as_deref().filter(|id| id.len() >= 2) {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let path = debug
            .root
            .join(".build-id")
            .join(&hex[..2])
            .join(format!("{}.debug", &hex[2..]));
        if let Some(p) = load_debug(&path, &debug.trust, |_, p| {
            p.build_id.as_deref() == Some(id)
        }) {
            return Some(p);
        }
    }
    let (link, crc) = main.debuglink.as_ref()?;
    if link.is_empty() || link.contains('/') || link == "." || link == ".." {
        return None;
    }
    let dir = Path::new(path).parent().filter(|d| d.is_absolute())?;
    let candidates: [PathBuf; 3] = [
        dir.join(link),
        dir.join(".debug").join(link),
        debug.root.join(dir.strip_prefix("/").ok()?).join(link),
    ];
    candidates.iter().find_map(|path| {
        load_debug(path, &debug.trust, |f, _| {
            crc32_of(f).is_some_and(|c| c == *crc)
        })
    })
}

/// A debug file, opened only when regular and inside trusted directories.
fn load_debug(
    path: &Path,
    trust: &Trust,
    accept: impl Fn(&File, &Parsed) -> bool,
) -> Option<Parsed> {
    let file = match safe_open::open_trusted(trust, path) {
        OpenOutcome::Opened(f) => f,
        OpenOutcome::Gone => return None,
        OpenOutcome::Untrusted(why) => {
            crate::counters::add(&crate::counters::COUNTERS.debug_files_untrusted, 1);
            log::debug!("not reading debug file {}: {why}", path.display());
            return None;
        }
        OpenOutcome::NotRegular => {
            crate::counters::add(&crate::counters::COUNTERS.files_not_regular, 1);
            log::debug!(
                "not reading debug file {}: not a regular file",
                path.display()
            );
            return None;
        }
        other => {
            log::debug!("debug file {}: {other:?}", path.display());
            return None;
        }
    };
    let parsed = parse_file(&file, &path.display().to_string())?;
    if parsed.has_symtab && accept(&file, &parsed) {
        log::debug!("using debug symbols from {}", path.display());
        Some(parsed)
    } else {
        None
    }
}

/// CRC-32 of a whole file (the `.gnu_debuglink` check), read in chunks.
fn crc32_of(file: &File) -> Option<u32> {
    let len = file.metadata().ok()?.len();
    if len > MAX_CRC_FILE {
        return None;
    }
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut at = 0u64;
    while at < len {
        let n = file.read_at(&mut buf, at).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
    Some(h.finalize())
}

/// Demangles Rust (legacy and v0, without hash) and C++ names; others pass through.
pub fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z") && name.len() <= MAX_CPP_NAME {
        // cpp_demangle is fuzzed, but a bug there must not take the agent down.
        let res = std::panic::catch_unwind(|| {
            cpp_demangle::Symbol::new(name)
                .ok()?
                .demangle(&Default::default())
                .ok()
        });
        if let Ok(Some(s)) = res {
            return s;
        }
    }
    name.to_string()
}

/// Kernel text symbols from `/proc/kallsyms`.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    syms: Vec<(u64, u32, u32)>,
    names: String,
}

impl KernelSymbols {
    /// Keeps `t T w W` symbols with non-zero addresses; malformed lines are skipped.
    pub fn parse(text: &str) -> KernelSymbols {
        let mut ks = KernelSymbols::default();
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(addr), Some(ty), Some(name)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            if addr == 0 || !matches!(ty, "t" | "T" | "w" | "W") {
                continue;
            }
            let full = match parts.next() {
                Some(m) if m.starts_with('[') && m.ends_with(']') => format!("{name} {m}"),
                _ => name.to_string(),
            };
            let (Ok(off), Ok(len)) = (u32::try_from(ks.names.len()), u32::try_from(full.len()))
            else {
                break;
            };
            if off.checked_add(len).is_none() {
                break;
            }
            ks.names.push_str(&full);
            ks.syms.push((addr, off, len));
        }
        ks.syms.sort_by_key(|s| s.0);
        ks.syms.dedup_by_key(|s| s.0);
        ks
    }

    /// `None` when unreadable or when every address is hidden (kptr_restrict).
    pub fn load() -> Option<KernelSymbols> {
        let ks = Self::parse(&std::fs::read_to_string("/proc/kallsyms").ok()?);
        (!ks.syms.is_empty()).then_some(ks)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.syms.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.syms.is_empty()
    }

    /// Name (`name` or `name [module]`) of the closest symbol at or below `addr`.
    pub fn lookup(&self, addr: u64) -> Option<&str> {
        let idx = self.syms.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        let (_, off, len) = self.syms[idx];
        self.names
            .get(off as usize..(off as usize).checked_add(len as usize)?)
    }
}

/// Parses `data` as ELF (and as kallsyms text) and runs lookups; for fuzzing.
pub fn fuzz_one(data: &[u8]) {
    if let Some(s) = ElfSymbols::from_bytes(data, "fuzz") {
        let _ = s.build_id();
        let mut probes = vec![0, 1, 0x1000, u64::MAX, u64::MAX / 2];
        for seg in &s.segments {
            probes.extend([
                seg.offset,
                seg.offset.wrapping_add(seg.filesz / 2),
                seg.offset.wrapping_add(seg.filesz),
            ]);
        }
        for sym in s.syms.iter().take(16) {
            probes.push(sym.start);
        }
        for p in probes {
            let _ = s.offset_to_vaddr(p);
            let _ = s.lookup(p);
        }
    }
    let ks = KernelSymbols::parse(&String::from_utf8_lossy(data));
    for a in [0, 1, u64::MAX, 0xffff_ffff_8100_0000] {
        let _ = ks.lookup(a);
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::OnceLock;

    pub const PROG_C: &str = r#"
#include <stdio.h>
int hot_function(int x) { int s = 0; for (int i = 0; i < x; i++) s += i * i; return s; }
int other_function(int x) { return hot_function(x) + 1; }
int main(int argc, char **argv) { (void)argv; printf("%d\n", other_function(argc * 1000)); return 0; }
"#;

    pub fn scratch_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pidmap-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create scratch dir");
        d
    }

    pub fn run(cmd: &mut Command) -> bool {
        cmd.status().map(|s| s.success()).unwrap_or(false)
    }

    /// The gcc-built test program, built once per test process; without
    /// gcc the test fails, or is skipped (`None`) when skipping was asked
    /// for (see `sys::fake::may_skip`).
    pub fn test_prog() -> Option<&'static Path> {
        static PROG: OnceLock<Option<PathBuf>> = OnceLock::new();
        PROG.get_or_init(|| {
            let dir = scratch_dir("prog");
            std::fs::write(dir.join("prog.c"), PROG_C).ok()?;
            let built = dir.join("prog");
            let ok = run(Command::new("gcc")
                .args(["-O0", "-fno-omit-frame-pointer", "-o"])
                .arg(&built)
                .arg(dir.join("prog.c")));
            // One shared copy (atomic rename) so test runs leave a single file behind.
            let out = std::env::temp_dir().join("pidmap-test-prog");
            let ok = ok && std::fs::rename(&built, &out).is_ok();
            let _ = std::fs::remove_dir_all(&dir);
            if !ok && crate::sys::fake::may_skip("gcc could not build the ELF test program") {
                return None;
            }
            Some(out)
        })
        .as_deref()
    }

    /// File offset of `name` in an unstripped ELF, computed independently via `object`.
    pub fn func_offset(path: &Path, name: &str) -> u64 {
        use object::{Object, ObjectSegment, ObjectSymbol};
        let data = std::fs::read(path).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let addr = file
            .symbols()
            .find(|s| s.name() == Ok(name))
            .unwrap()
            .address();
        file.segments()
            .find_map(|seg| {
                let (off, size) = seg.file_range();
                (seg.address() <= addr && addr < seg.address() + size)
                    .then(|| addr - seg.address() + off)
            })
            .unwrap()
    }
}

#[cfg(test)]
mod tests;
