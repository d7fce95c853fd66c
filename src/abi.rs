//! Rust mirrors of the structures in `bpf/pidmap.h`, with the helpers that
//! build trie keys. Sizes and offsets are unit-tested against the C layout.

/// prefix_len of a full pid + address lookup.
pub const FULL_PREFIX: u32 = 96;
pub const TRIE_MAX_ENTRIES: u32 = 1 << 20;
pub const EVENTS_MAX_ENTRIES: u32 = 65536;
pub const TRIE_NAME: &str = "pid_page_to_mapping_info";
pub const EVENTS_NAME: &str = "pid_events";
/// Largest bias the value can hold (56 bits): `PIDMAP_BIAS_MASK`.
pub const BIAS_MASK: u64 = (1 << 56) - 1;

/// Key of `pid_page_to_mapping_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PidPage {
    pub prefix_len: u32,
    pid_be: u32,
    page_be: u64,
}

impl PidPage {
    /// The key of an address block of `block_len` bits (0..=64).
    pub fn new(pid: u32, page: u64, block_len: u32) -> PidPage {
        PidPage {
            prefix_len: 32 + block_len,
            pid_be: pid.to_be(),
            page_be: page.to_be(),
        }
    }

    /// The per-process marker: page 0, full prefix.
    pub fn marker(pid: u32) -> PidPage {
        PidPage::new(pid, 0, 64)
    }

    /// A key with an arbitrary prefix_len (tests of malformed keys).
    pub fn with_prefix_len(pid: u32, page: u64, prefix_len: u32) -> PidPage {
        PidPage {
            prefix_len,
            pid_be: pid.to_be(),
            page_be: page.to_be(),
        }
    }

    pub fn pid(&self) -> u32 {
        u32::from_be(self.pid_be)
    }

    pub fn page(&self) -> u64 {
        u64::from_be(self.page_be)
    }

    pub fn is_marker(&self) -> bool {
        self.prefix_len == FULL_PREFIX && self.page_be == 0
    }
}

/// Value of `pid_page_to_mapping_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MappingInfo {
    pub file_id: u64,
    pub bias_and_prog: u64,
}

impl MappingInfo {
    /// A file mapping; `None` when the bias does not fit 56 bits.
    pub fn new(file_id: u64, bias: u64) -> Option<MappingInfo> {
        (bias <= BIAS_MASK).then_some(MappingInfo {
            file_id,
            bias_and_prog: bias,
        })
    }

    /// The marker value: file_id 0, bias = process start time.
    pub fn marker(start_time: u64) -> MappingInfo {
        MappingInfo {
            file_id: 0,
            bias_and_prog: start_time & BIAS_MASK,
        }
    }

    pub fn bias(&self) -> u64 {
        self.bias_and_prog & BIAS_MASK
    }
}

/// `struct pidmap_config`, pidmap_config[0].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub track_all: u32,
    pub track_children: u32,
    pub kernel_stacks: u32,
    /// No effect any more: every request sends its own record (kept so
    /// the layout and the `--wake-every-request` flag stay).
    pub wake_every_request: u32,
    pub request_interval_ns: u64,
    /// How the sampler walks user stacks: [`UNWIND_FP`], [`UNWIND_AUTO`]
    /// or [`UNWIND_CFI`].
    pub unwind: u32,
    pub pad: u32,
}

pub const UNWIND_FP: u32 = 0;
pub const UNWIND_AUTO: u32 = 1;
pub const UNWIND_CFI: u32 = 2;
/// Unwind tables in the kernel: pages of 4 KiB of file offsets, up to
/// [`UNWIND_PAGE_ROWS`] entries a part, [`UNWIND_MAX_PARTS`] parts a page.
pub const UNWIND_PAGE_SHIFT: u32 = 12;
pub const UNWIND_PAGE_ROWS: usize = 128;
pub const UNWIND_MAX_PARTS: u32 = 16;
pub const UNWIND_NO_NEXT: u16 = 0xffff;
pub const UNWIND_FILES_MAX_ENTRIES: u32 = 16384;
pub const UNWIND_PAGES_MAX_ENTRIES: u32 = 65536;
/// Steps of the BPF side's binary search in one part.
pub const UNWIND_SEARCH_STEPS: u32 = 8;

/// `struct unwind_page_key`: a part of a page of a file's unwind table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnwindPageKey {
    pub file_id: u64,
    pub page: u32,
    pub part: u32,
}

/// `struct unwind_page`: the entries of one part of a page.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnwindPage {
    /// The row in effect before `pc[0]`.
    pub prev_row: u32,
    pub count: u16,
    /// The page-relative pc where the next part starts, or
    /// [`UNWIND_NO_NEXT`].
    pub next: u16,
    pub pc: [u16; UNWIND_PAGE_ROWS],
    pub row: [u32; UNWIND_PAGE_ROWS],
}

impl Default for UnwindPage {
    fn default() -> UnwindPage {
        UnwindPage {
            prev_row: 0,
            count: 0,
            next: UNWIND_NO_NEXT,
            pc: [0; UNWIND_PAGE_ROWS],
            row: [0; UNWIND_PAGE_ROWS],
        }
    }
}

/// `struct unwind_file`: the pages a file's table spans.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindFile {
    pub first_page: u32,
    pub last_page: u32,
}

/// `sample_header.walk`: how the CFI walk of a sample's user stack ended.
pub const WALK_NONE: u32 = 0;
pub const WALK_END_MARKER: u32 = 1;
pub const WALK_NO_MAPPING: u32 = 2;
pub const WALK_NO_TABLE: u32 = 3;
pub const WALK_NO_ROW: u32 = 4;
pub const WALK_STOP_ROW: u32 = 5;
pub const WALK_READ_FAULT: u32 = 6;
pub const WALK_FRAME_LIMIT: u32 = 7;
pub const WALK_NO_REGS: u32 = 8;

pub const SAMPLE_UNKNOWN_PROCESS: u32 = 1 << 0;
pub const SAMPLE_USER_STACK_ERROR: u32 = 1 << 1;
pub const SAMPLE_KERNEL_STACK_ERROR: u32 = 1 << 2;
pub const SAMPLE_REQUESTED: u32 = 1 << 3;
pub const SAMPLE_KTHREAD: u32 = 1 << 4;
pub const MAX_USER_FRAMES: usize = 127;
pub const MAX_KERNEL_FRAMES: usize = 127;

/// `struct report_event`: a sync request on report_events.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportEvent {
    pub pid: u32,
    pub tid: u32,
    /// The process's start_boottime (ns) at the request.
    pub start_ns: u64,
    /// The inode of its struct pid in pidfs (0 before Linux 6.9).
    pub pid_ino: u64,
    /// The real uid of its leader at the request.
    pub uid: u32,
    pub pad: u32,
}

impl ReportEvent {
    /// The record's raw bytes (the BPF side's `struct report_event`);
    /// `None` when it is shorter.
    pub fn parse(raw: &[u8]) -> Option<ReportEvent> {
        let u32_at = |o: usize| Some(u32::from_ne_bytes(raw.get(o..o + 4)?.try_into().ok()?));
        let u64_at = |o: usize| Some(u64::from_ne_bytes(raw.get(o..o + 8)?.try_into().ok()?));
        Some(ReportEvent {
            pid: u32_at(0)?,
            tid: u32_at(4)?,
            start_ns: u64_at(8)?,
            pid_ino: u64_at(16)?,
            uid: u32_at(24)?,
            pad: 0,
        })
    }

    /// Its key in pid_events: pid << 32 | tid.
    pub fn key(&self) -> u64 {
        (u64::from(self.pid) << 32) | u64::from(self.tid)
    }
}

/// Entries of `vma_out`: the most executable mappings one run of
/// `pidmap_vmas` reports.
pub const VMAS_MAX: usize = 64;
/// Mappings one run of `pidmap_vmas` looks at before it gives up (E2BIG).
pub const VMAS_VISIT_MAX: u32 = 256;
/// How long one run of `pidmap_vmas` walks before it gives up (ETIME), ns.
pub const VMAS_NS_MAX: u64 = 200_000;
pub const VMA_FILE: u32 = 1;
pub const VMA_DELETED: u32 = 2;
pub const VMA_VDSO: u32 = 4;

/// `struct vma_query`: the context of `pidmap_vmas` (in: pid; out: err,
/// count, visited).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaQuery {
    pub pid: u32,
    pub err: i32,
    pub count: u32,
    pub visited: u32,
}

/// `struct vma_entry`: one executable mapping `pidmap_vmas` found.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaEntry {
    pub start: u64,
    pub end: u64,
    /// The file offset in pages.
    pub pgoff: u64,
    pub ino: u64,
    /// The kernel's dev_t: major << 20 | minor.
    pub dev: u32,
    /// `VMA_FILE`, `VMA_DELETED`, `VMA_VDSO`.
    pub flags: u32,
}

/// `struct sample_header`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleHeader {
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub user_frames: u16,
    pub kernel_frames: u16,
    pub flags: u32,
    /// `WALK_*`: how the CFI walk ended (`WALK_NONE`: no CFI walk).
    pub walk: u32,
    pub time_ns: u64,
    pub comm: [u8; 16],
}

/// `struct sample_frame`: file_id 0 means unresolved, offset = raw ip.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SampleFrame {
    pub file_id: u64,
    pub offset: u64,
}

/// One decoded sample record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub header: SampleHeader,
    pub user: Vec<SampleFrame>,
    pub kernel: Vec<u64>,
}

impl Sample {
    /// Decodes a raw sample record; `None` when it is malformed (short,
    /// frame counts beyond the limits or beyond the record).
    pub fn parse(raw: &[u8]) -> Option<Sample> {
        let header: SampleHeader = crate::sys::read_plain(raw)?;
        let nu = header.user_frames as usize;
        let nk = header.kernel_frames as usize;
        if nu > MAX_USER_FRAMES || nk > MAX_KERNEL_FRAMES {
            return None;
        }
        let hs = std::mem::size_of::<SampleHeader>();
        let need = hs + nu * 16 + nk * 8;
        if raw.len() < need {
            return None;
        }
        let mut user = Vec::with_capacity(nu);
        for i in 0..nu {
            user.push(crate::sys::read_plain(&raw[hs + i * 16..])?);
        }
        let kbase = hs + nu * 16;
        let mut kernel = Vec::with_capacity(nk);
        for i in 0..nk {
            kernel.push(crate::sys::read_plain(&raw[kbase + i * 8..])?);
        }
        Some(Sample {
            header,
            user,
            kernel,
        })
    }

    /// Encodes a sample the way the BPF program lays it out (tests, fuzz).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = crate::sys::bytes_of(std::slice::from_ref(&self.header)).to_vec();
        out.extend_from_slice(crate::sys::bytes_of(&self.user));
        out.extend_from_slice(crate::sys::bytes_of(&self.kernel));
        out
    }

    pub fn comm(&self) -> String {
        let end = self.header.comm.iter().position(|&c| c == 0).unwrap_or(16);
        String::from_utf8_lossy(&self.header.comm[..end]).into_owned()
    }
}

/// Value of `sample_requests` (per-process request rate limit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestState {
    pub last_ns: u64,
    pub gap_ns: u64,
    pub count: u64,
}

/// The sampler_stats indices of pidmap.h (`SAMPLER_STAT_<NAME>`), in order.
pub const SAMPLER_STAT_NAMES: [&str; 23] = [
    "samples",
    "out_of_scope",
    "unknown_process",
    "frames",
    "unresolved_frames",
    "requests",
    "requests_suppressed",
    "output_errors",
    "stack_errors",
    "kthread",
    "walks",
    "cfi_frames",
    "fp_steps",
    "walk_end_marker",
    "walk_no_mapping",
    "walk_no_table",
    "walk_no_row",
    "walk_stop_row",
    "walk_read_fault",
    "walk_frame_limit",
    "walk_no_regs",
    "user_walk_ns",
    "user_walks",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::unwind::{Kind, PLT_THRESHOLD, SIGNAL_RBP, SIGNAL_RIP, SIGNAL_RSP};
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_pidmap_h() {
        assert_eq!(size_of::<PidPage>(), 16);
        assert_eq!(offset_of!(PidPage, prefix_len), 0);
        assert_eq!(offset_of!(PidPage, pid_be), 4);
        assert_eq!(offset_of!(PidPage, page_be), 8);
        assert_eq!(size_of::<MappingInfo>(), 16);
        assert_eq!(offset_of!(MappingInfo, bias_and_prog), 8);
        assert_eq!(size_of::<Config>(), 32);
        assert_eq!(offset_of!(Config, unwind), 24);
        assert_eq!(offset_of!(Config, kernel_stacks), 8);
        assert_eq!(offset_of!(Config, request_interval_ns), 16);
        assert_eq!(size_of::<SampleHeader>(), 48);
        assert_eq!(offset_of!(SampleHeader, cpu), 8);
        assert_eq!(offset_of!(SampleHeader, user_frames), 12);
        assert_eq!(offset_of!(SampleHeader, kernel_frames), 14);
        assert_eq!(offset_of!(SampleHeader, flags), 16);
        assert_eq!(offset_of!(SampleHeader, time_ns), 24);
        assert_eq!(offset_of!(SampleHeader, comm), 32);
        assert_eq!(size_of::<SampleFrame>(), 16);
    }

    /// Every `#define` of pidmap.h with its Rust mirror's value.
    fn rust_constants() -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = vec![
            ("PIDMAP_TRIE_MAX_ENTRIES".into(), TRIE_MAX_ENTRIES as u64),
            (
                "PIDMAP_EVENTS_MAX_ENTRIES".into(),
                EVENTS_MAX_ENTRIES as u64,
            ),
            ("PIDMAP_FULL_PREFIX".into(), FULL_PREFIX as u64),
            ("PIDMAP_MAX_USER_FRAMES".into(), MAX_USER_FRAMES as u64),
            ("PIDMAP_MAX_KERNEL_FRAMES".into(), MAX_KERNEL_FRAMES as u64),
            ("PIDMAP_BIAS_MASK".into(), BIAS_MASK),
            ("PIDMAP_VMAS_MAX".into(), VMAS_MAX as u64),
            ("PIDMAP_VMAS_VISIT_MAX".into(), VMAS_VISIT_MAX as u64),
            ("PIDMAP_VMAS_NS_MAX".into(), VMAS_NS_MAX),
            ("PIDMAP_VMA_FILE".into(), VMA_FILE as u64),
            ("PIDMAP_VMA_DELETED".into(), VMA_DELETED as u64),
            ("PIDMAP_VMA_VDSO".into(), VMA_VDSO as u64),
            (
                "SAMPLE_UNKNOWN_PROCESS".into(),
                SAMPLE_UNKNOWN_PROCESS as u64,
            ),
            (
                "SAMPLE_USER_STACK_ERROR".into(),
                SAMPLE_USER_STACK_ERROR as u64,
            ),
            (
                "SAMPLE_KERNEL_STACK_ERROR".into(),
                SAMPLE_KERNEL_STACK_ERROR as u64,
            ),
            ("SAMPLE_REQUESTED".into(), SAMPLE_REQUESTED as u64),
            ("SAMPLE_KTHREAD".into(), SAMPLE_KTHREAD as u64),
            ("SAMPLER_STAT_COUNT".into(), SAMPLER_STAT_NAMES.len() as u64),
            ("PIDMAP_UNWIND_FP".into(), UNWIND_FP as u64),
            ("PIDMAP_UNWIND_AUTO".into(), UNWIND_AUTO as u64),
            ("PIDMAP_UNWIND_CFI".into(), UNWIND_CFI as u64),
            ("UNWIND_PAGE_SHIFT".into(), UNWIND_PAGE_SHIFT as u64),
            ("UNWIND_PAGE_ROWS".into(), UNWIND_PAGE_ROWS as u64),
            ("UNWIND_MAX_PARTS".into(), UNWIND_MAX_PARTS as u64),
            ("UNWIND_NO_NEXT".into(), UNWIND_NO_NEXT as u64),
            (
                "UNWIND_FILES_MAX_ENTRIES".into(),
                UNWIND_FILES_MAX_ENTRIES as u64,
            ),
            (
                "UNWIND_PAGES_MAX_ENTRIES".into(),
                UNWIND_PAGES_MAX_ENTRIES as u64,
            ),
            ("UNWIND_SEARCH_STEPS".into(), UNWIND_SEARCH_STEPS as u64),
            ("WALK_NONE".into(), WALK_NONE as u64),
            ("WALK_END_MARKER".into(), WALK_END_MARKER as u64),
            ("WALK_NO_MAPPING".into(), WALK_NO_MAPPING as u64),
            ("WALK_NO_TABLE".into(), WALK_NO_TABLE as u64),
            ("WALK_NO_ROW".into(), WALK_NO_ROW as u64),
            ("WALK_STOP_ROW".into(), WALK_STOP_ROW as u64),
            ("WALK_READ_FAULT".into(), WALK_READ_FAULT as u64),
            ("WALK_FRAME_LIMIT".into(), WALK_FRAME_LIMIT as u64),
            ("WALK_NO_REGS".into(), WALK_NO_REGS as u64),
        ];
        for (name, kind) in [
            ("UNWIND_GAP", Kind::Gap),
            ("UNWIND_RSP", Kind::Rsp),
            ("UNWIND_RBP", Kind::Rbp),
            ("UNWIND_PLT", Kind::Plt),
            ("UNWIND_SIGNAL", Kind::Signal),
            ("UNWIND_END", Kind::End),
            ("UNWIND_STOP", Kind::Stop),
        ] {
            v.push((name.into(), kind as u64));
        }
        v.push(("UNWIND_SIGNAL_RSP".into(), SIGNAL_RSP as u64));
        v.push(("UNWIND_SIGNAL_RBP".into(), SIGNAL_RBP as u64));
        v.push(("UNWIND_SIGNAL_RIP".into(), SIGNAL_RIP as u64));
        v.push(("UNWIND_PLT_THRESHOLD".into(), PLT_THRESHOLD as u64));
        for (i, n) in SAMPLER_STAT_NAMES.iter().enumerate() {
            v.push((format!("SAMPLER_STAT_{}", n.to_uppercase()), i as u64));
        }
        v
    }

    /// Every field of every struct of pidmap.h: (struct, field, offset,
    /// size of the field, size of the struct) of its Rust mirror.
    fn rust_fields() -> Vec<(&'static str, &'static str, usize, usize, usize)> {
        fn field_size<T, F>(_: fn(&T) -> &F) -> usize {
            size_of::<F>()
        }
        macro_rules! f {
            ($c:literal, $cf:literal, $t:ty, $rf:ident) => {
                (
                    $c,
                    $cf,
                    offset_of!($t, $rf),
                    field_size(|x: &$t| &x.$rf),
                    size_of::<$t>(),
                )
            };
        }
        vec![
            f!("pid_page_key", "prefix_len", PidPage, prefix_len),
            f!("pid_page_key", "pid", PidPage, pid_be),
            f!("pid_page_key", "page", PidPage, page_be),
            f!("mapping_info", "file_id", MappingInfo, file_id),
            f!("mapping_info", "bias_and_prog", MappingInfo, bias_and_prog),
            f!("pidmap_config", "track_all", Config, track_all),
            f!("pidmap_config", "track_children", Config, track_children),
            f!("pidmap_config", "kernel_stacks", Config, kernel_stacks),
            f!(
                "pidmap_config",
                "wake_every_request",
                Config,
                wake_every_request
            ),
            f!(
                "pidmap_config",
                "request_interval_ns",
                Config,
                request_interval_ns
            ),
            f!("pidmap_config", "unwind", Config, unwind),
            f!("pidmap_config", "pad", Config, pad),
            f!("unwind_page_key", "file_id", UnwindPageKey, file_id),
            f!("unwind_page_key", "page", UnwindPageKey, page),
            f!("unwind_page_key", "part", UnwindPageKey, part),
            f!("unwind_page", "prev_row", UnwindPage, prev_row),
            f!("unwind_page", "count", UnwindPage, count),
            f!("unwind_page", "next", UnwindPage, next),
            f!("unwind_page", "pc", UnwindPage, pc),
            f!("unwind_page", "row", UnwindPage, row),
            f!("unwind_file", "first_page", UnwindFile, first_page),
            f!("unwind_file", "last_page", UnwindFile, last_page),
            f!("report_event", "pid", ReportEvent, pid),
            f!("report_event", "tid", ReportEvent, tid),
            f!("report_event", "start_ns", ReportEvent, start_ns),
            f!("report_event", "pid_ino", ReportEvent, pid_ino),
            f!("report_event", "uid", ReportEvent, uid),
            f!("vma_query", "pid", VmaQuery, pid),
            f!("vma_query", "err", VmaQuery, err),
            f!("vma_query", "count", VmaQuery, count),
            f!("vma_query", "visited", VmaQuery, visited),
            f!("vma_entry", "start", VmaEntry, start),
            f!("vma_entry", "end", VmaEntry, end),
            f!("vma_entry", "pgoff", VmaEntry, pgoff),
            f!("vma_entry", "ino", VmaEntry, ino),
            f!("vma_entry", "dev", VmaEntry, dev),
            f!("vma_entry", "flags", VmaEntry, flags),
            f!("report_event", "pad", ReportEvent, pad),
            f!("request_state", "last_ns", RequestState, last_ns),
            f!("request_state", "gap_ns", RequestState, gap_ns),
            f!("request_state", "count", RequestState, count),
            f!("sample_header", "pid", SampleHeader, pid),
            f!("sample_header", "tid", SampleHeader, tid),
            f!("sample_header", "cpu", SampleHeader, cpu),
            f!("sample_header", "user_frames", SampleHeader, user_frames),
            f!(
                "sample_header",
                "kernel_frames",
                SampleHeader,
                kernel_frames
            ),
            f!("sample_header", "flags", SampleHeader, flags),
            f!("sample_header", "walk", SampleHeader, walk),
            f!("sample_header", "time_ns", SampleHeader, time_ns),
            f!("sample_header", "comm", SampleHeader, comm),
            f!("sample_frame", "file_id", SampleFrame, file_id),
            f!("sample_frame", "offset", SampleFrame, offset),
        ]
    }

    /// pidmap.h is the one source of truth: every constant and every struct
    /// field it declares is read from the header itself (names by parsing,
    /// values and offsets by compiling it with the C compiler) and must
    /// equal its Rust mirror; a constant or field without a mirror fails.
    #[test]
    fn every_constant_and_struct_of_pidmap_h_matches_its_mirror() {
        let header = concat!(env!("CARGO_MANIFEST_DIR"), "/bpf/pidmap.h");
        let text = std::fs::read_to_string(header).expect("reading bpf/pidmap.h");
        let defines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("#define "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| *n != "PIDMAP_H")
            .collect();
        let mut fields: Vec<(String, String)> = Vec::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let t = line.trim();
            if let Some(name) = t.strip_prefix("struct ").and_then(|r| r.strip_suffix(" {")) {
                current = Some(name.to_string());
            } else if t.starts_with("};") {
                current = None;
            } else if let Some(s) = &current {
                let decl = t.split(';').next().unwrap_or("");
                if let Some(name) = decl.split_whitespace().last() {
                    let name = name.split('[').next().unwrap_or(name);
                    fields.push((s.clone(), name.to_string()));
                }
            }
        }
        assert!(
            defines.len() >= 20 && fields.len() >= 20,
            "parsed too little of pidmap.h"
        );
        let mut c =
            String::from("#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n");
        c += &format!("#include \"{header}\"\nint main(void) {{\n");
        for d in &defines {
            c += &format!("printf(\"C {d} %llu\\n\", (unsigned long long)({d}));\n");
        }
        for (s, f) in &fields {
            c += &format!(
                "printf(\"F {s} {f} %zu %zu %zu\\n\", offsetof(struct {s}, {f}), sizeof(((struct {s} *)0)->{f}), sizeof(struct {s}));\n"
            );
        }
        c += "return 0; }\n";
        let dir = std::env::temp_dir().join(format!("pidmap-abi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("abi.c"), c).unwrap();
        let built = std::process::Command::new("gcc")
            .arg("-o")
            .arg(dir.join("abi"))
            .arg(dir.join("abi.c"))
            .status()
            .expect("gcc is needed to read pidmap.h (scripts/setup installs it)");
        assert!(
            built.success(),
            "gcc could not compile pidmap.h's layout probe"
        );
        let out = std::process::Command::new(dir.join("abi"))
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let out = String::from_utf8(out.stdout).unwrap();
        let consts = rust_constants();
        let rfields = rust_fields();
        let mut checked = 0;
        for line in out.lines() {
            let w: Vec<&str> = line.split(' ').collect();
            match w[0] {
                "C" => {
                    let v: u64 = w[2].parse().unwrap();
                    let mirror = consts.iter().find(|(n, _)| n == w[1]);
                    assert_eq!(
                        mirror.map(|m| m.1),
                        Some(v),
                        "{} = {v} in pidmap.h; its Rust mirror differs or is missing",
                        w[1]
                    );
                }
                _ => {
                    let n: Vec<usize> = w[3..].iter().map(|x| x.parse().unwrap()).collect();
                    let mirror = rfields.iter().find(|f| f.0 == w[1] && f.1 == w[2]);
                    assert_eq!(
                        mirror.map(|m| vec![m.2, m.3, m.4]),
                        Some(n.clone()),
                        "struct {} field {}: offset, field size, struct size {n:?} in pidmap.h; the Rust mirror differs or is missing",
                        w[1],
                        w[2]
                    );
                }
            }
            checked += 1;
        }
        assert_eq!(checked, defines.len() + fields.len());
        assert_eq!(
            consts.len(),
            defines.len(),
            "a Rust constant has no #define"
        );
        assert_eq!(rfields.len(), fields.len(), "a Rust field has no C field");
    }

    #[test]
    fn keys_are_big_endian_with_host_prefix() {
        let k = PidPage::new(0x01020304, 0x7f00_0000_1000, 52);
        let b = crate::sys::bytes_of(std::slice::from_ref(&k));
        assert_eq!(&b[0..4], &84u32.to_ne_bytes());
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[8..16], &0x7f00_0000_1000u64.to_be_bytes());
        assert_eq!(k.pid(), 0x01020304);
        assert_eq!(k.page(), 0x7f00_0000_1000);
        let m = PidPage::marker(7);
        assert!(m.is_marker());
        assert_eq!(m.prefix_len, 96);
        assert!(!k.is_marker());
    }

    #[test]
    fn bias_must_fit_56_bits() {
        assert!(MappingInfo::new(1, BIAS_MASK).is_some());
        assert!(MappingInfo::new(1, BIAS_MASK + 1).is_none());
        assert_eq!(MappingInfo::marker(1234).bias(), 1234);
    }

    #[test]
    fn samples_round_trip_and_reject_garbage() {
        let s = Sample {
            header: SampleHeader {
                pid: 5,
                tid: 6,
                user_frames: 2,
                kernel_frames: 1,
                comm: *b"work\0\0\0\0\0\0\0\0\0\0\0\0",
                ..Default::default()
            },
            user: vec![
                SampleFrame {
                    file_id: 9,
                    offset: 0x10,
                },
                SampleFrame {
                    file_id: 0,
                    offset: 0x20,
                },
            ],
            kernel: vec![0xffff_ffff_8100_0000],
        };
        let raw = s.encode();
        assert_eq!(Sample::parse(&raw), Some(s.clone()));
        assert_eq!(s.comm(), "work");
        assert_eq!(Sample::parse(&raw[..raw.len() - 1]), None);
        assert_eq!(Sample::parse(&[0u8; 10]), None);
        let mut bad = raw.clone();
        bad[12] = 200; // user_frames beyond the limit
        assert_eq!(Sample::parse(&bad), None);
    }

    #[test]
    fn report_events_parse_to_their_pid_events_key() {
        let mut raw = 7u32.to_ne_bytes().to_vec();
        raw.extend(9u32.to_ne_bytes());
        raw.extend(11u64.to_ne_bytes());
        raw.extend(13u64.to_ne_bytes());
        raw.extend(1000u32.to_ne_bytes());
        raw.extend(0u32.to_ne_bytes());
        let ev = ReportEvent::parse(&raw).unwrap();
        let want = ReportEvent {
            pid: 7,
            tid: 9,
            start_ns: 11,
            pid_ino: 13,
            uid: 1000,
            pad: 0,
        };
        assert_eq!(ev, want);
        assert_eq!(ev.key(), 7 << 32 | 9);
        assert_eq!(ReportEvent::parse(&raw[..27]), None);
    }
}
