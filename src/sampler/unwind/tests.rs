//! Tables of real files checked against `readelf --debug-dump=frames-interp`
//! (binutils, an independent DWARF reader), and the rows this table
//! treats specially: the PLT, the signal frame, the end of a stack, and
//! every kind of `Stop`.

use super::readelf::{expected, readelf_fdes, ReadelfFde};
use super::*;
use crate::sampler::symbolize::test_util::{func_offset, run, scratch_dir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// ELF vaddr -> file offset through the executable segments (read here
/// with `object` on the whole file: a test's own, independent path).
fn vaddr_to_offset(path: &Path) -> impl Fn(u64) -> Option<u64> {
    use object::{Object, ObjectSegment};
    let data = std::fs::read(path).unwrap();
    let file = object::File::parse(&*data).unwrap();
    let segs: Vec<(u64, u64, u64)> = file
        .segments()
        .filter(|s| matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & 1 != 0))
        .map(|s| (s.address(), s.file_range().0, s.file_range().1))
        .collect();
    move |a| {
        segs.iter()
            .find(|&&(v, _, sz)| a >= v && a - v < sz)
            .map(|&(v, o, _)| a - v + o)
    }
}

fn table_of(path: &Path) -> UnwindTable {
    let f = std::fs::File::open(path).unwrap();
    from_file(&f).unwrap_or_else(|e| panic!("table of {}: {e}", path.display()))
}

/// Checks the table of `path` against readelf at every FDE's start, every
/// row's first address and the byte before each FDE's end; returns the
/// table and how many addresses were checked.
fn check_against_readelf(path: &Path) -> (UnwindTable, usize) {
    let t0 = Instant::now();
    let table = table_of(path);
    let took = t0.elapsed();
    let fdes = readelf_fdes(path);
    let to_off = vaddr_to_offset(path);
    assert!(!fdes.is_empty(), "{}: readelf lists no FDE", path.display());
    // where an `.eh_frame` FDE covers an address it wins; overlapping FDEs
    // of one section (none in these files) would make addresses ambiguous
    let mut by_start: Vec<&ReadelfFde> = fdes.iter().collect();
    by_start.sort_by_key(|f| f.start);
    let max_end: Vec<u64> = by_start
        .iter()
        .scan(0, |m, f| {
            *m = f.end.max(*m);
            Some(*m)
        })
        .collect();
    let (by_start, max_end) = (&by_start, &max_end);
    let covering = |a: u64, debug: bool| {
        let n = by_start.partition_point(|f| f.start <= a);
        (0..n)
            .rev()
            .take_while(move |&i| max_end[i] > a)
            .map(|i| by_start[i])
            .filter(move |f| f.debug == debug && a < f.end)
    };
    let mut checked = 0;
    let mut skipped = 0;
    let mut failures = Vec::new();
    for fde in &fdes {
        let mut addrs: Vec<u64> = fde.rows.iter().map(|r| r.loc).collect();
        addrs.push(fde.start);
        addrs.push(fde.end.saturating_sub(1));
        for a in addrs {
            let owner = covering(a, false).count() == 0;
            let mut over = covering(a, owner);
            let (Some(f), None) = (over.next(), over.next()) else {
                continue;
            };
            let Some(r) = f.rows.iter().rev().find(|r| r.loc <= a) else {
                continue;
            };
            let Some(off) = to_off(a) else { continue };
            let Some(want) = expected(r) else {
                skipped += 1;
                continue;
            };
            let got = table.lookup(off);
            let ok = match (want, got) {
                (Ok(want), Some(got)) => want == got,
                (Err(kinds), Some(got)) => kinds.contains(&got.kind),
                (_, None) => false,
            };
            checked += 1;
            if !ok {
                failures.push(format!(
                    "{a:#x}: readelf {:?} ({}), table {got:?}",
                    r.cols,
                    if f.debug { ".debug_frame" } else { ".eh_frame" }
                ));
            }
        }
        // past the end, with no FDE there: a gap, not the last row stretched
        if covering(fde.end, false).count() + covering(fde.end, true).count() == 0 {
            if let Some(off) = to_off(fde.end) {
                let got = table.lookup(off);
                checked += 1;
                if got != Some(Row::GAP) {
                    failures.push(format!("{:#x} (after an FDE): table {got:?}", fde.end));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}: {} of {checked} addresses differ from readelf, first: {:#?}",
        path.display(),
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    // the table's own promises: sorted, equal neighbours coalesced
    for w in table.entries.windows(2) {
        assert!(w[0].pc < w[1].pc, "unsorted: {w:?}");
        assert_ne!(w[0].row, w[1].row, "not coalesced: {w:?}");
    }
    let s = &table.stats;
    let mb = (s.eh_frame_bytes + s.debug_frame_bytes) as f64 / (1 << 20) as f64;
    let distinct: std::collections::HashSet<Row> = table.entries.iter().map(|e| e.row).collect();
    let gaps = table.entries.iter().filter(|e| e.row == Row::GAP).count();
    eprintln!(
        "{}: {} distinct rows, {gaps} gap entries",
        path.display(),
        distinct.len()
    );
    eprintln!(
        "{}: {} FDEs (+{} .debug_frame), {} CFI rows -> {} entries ({} bytes), {:.2} MB CFI, \
         {:.0} entries/MB, built in {:.1} ms ({:.1} ms/MB), stops {:?}, {} checked, {} skipped",
        path.display(),
        s.eh_fdes,
        s.debug_fdes,
        s.cfi_rows,
        table.entries.len(),
        table.bytes(),
        mb,
        table.entries.len() as f64 / mb,
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3 / mb,
        s.stops,
        checked,
        skipped
    );
    (table, checked)
}

/// Path of the first file mapped in this process whose name contains `part`.
fn mapped(part: &str) -> PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.rsplit('/').next().is_some_and(|n| n.contains(part)))
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("no {part} mapped in this test"))
}

#[test]
fn libc_rows_match_readelf() {
    let (table, checked) = check_against_readelf(&mapped("libc.so"));
    assert!(checked > 1000, "only {checked} addresses checked");
    assert!(table.stats.eh_fdes > 1000 && table.stats.bad_fdes == 0);
    assert!(table.stats.eh_frame_hdr, "FDEs listed by .eh_frame_hdr");
}

#[test]
fn ld_so_and_this_test_binary_match_readelf() {
    for path in [mapped("ld-linux"), std::env::current_exe().unwrap()] {
        let (table, checked) = check_against_readelf(&path);
        assert!(checked > 100, "{}: only {checked} checked", path.display());
        assert_eq!(table.stats.bad_fdes, 0);
    }
}

#[test]
fn python3_matches_readelf() {
    // Debian's python3 (no frame pointers; scripts/setup test installs it)
    let path = Path::new("/usr/bin/python3")
        .canonicalize()
        .expect("/usr/bin/python3: run scripts/setup test");
    let (table, checked) = check_against_readelf(&path);
    assert!(checked > 10_000 && table.stats.bad_fdes == 0, "{checked}");
}

/// The vdso, copied out of this process's memory into a file.
fn dump_vdso(dir: &Path) -> PathBuf {
    let out = dir.join("vdso.so");
    std::fs::write(&out, own_vdso_image().unwrap()).unwrap();
    out
}

#[test]
fn vdso_matches_readelf() {
    let dir = scratch_dir("unwind-vdso");
    let vdso = dump_vdso(&dir);
    let (table, checked) = check_against_readelf(&vdso);
    assert!(checked >= 4, "only {checked} checked");
    assert!(table.entries.iter().any(|e| e.row.kind == Kind::Rbp));
    // a byte slice is an `object::ReadRef` too: the same table from memory
    let bytes = std::fs::read(&vdso).unwrap();
    let from_mem = from_data(&*bytes).unwrap();
    assert_eq!(from_mem, table);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn libc_plt_and_signal_frame() {
    use object::{Object, ObjectSection};
    let libc = mapped("libc.so");
    let table = table_of(&libc);
    let to_off = vaddr_to_offset(&libc);
    // the PLT: entries after the first (16 bytes each) use the expression
    let data = std::fs::read(&libc).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let plt = elf.section_by_name(".plt").expect("libc has a .plt");
    let (start, end) = (plt.address(), plt.address() + plt.size());
    assert!(end - start >= 48, "a .plt of a few entries");
    for a in [start + 16, start + 16 + 11, end - 1] {
        assert_eq!(table.lookup(to_off(a).unwrap()), Some(Row::PLT), "{a:#x}");
    }
    // __restore_rt: the FDE of the CIE with the "S" augmentation, which
    // starts one byte before the function (a return address minus one)
    let fdes = readelf_fdes(&libc);
    let signal: Vec<_> = fdes
        .iter()
        .filter(|f| f.augmentation.contains('S'))
        .collect();
    assert_eq!(signal.len(), 1, "one signal frame FDE in libc");
    for a in signal[0].start..signal[0].end {
        assert_eq!(
            table.lookup(to_off(a).unwrap()),
            Some(Row::SIGNAL),
            "{a:#x}"
        );
    }
    assert_eq!(table.stats.stops.cfa_expression, 0, "{:?}", table.stats);
}

/// Functions whose CFI says what a compact row cannot (each row kind once),
/// in `.eh_frame`, linked with C functions described only in `.debug_frame`.
const SYNTH_S: &str = r#"
    .section .note.GNU-stack,"",@progbits
    .text
    .macro fn name
    .globl \name
    .type \name, @function
\name:
    .cfi_startproc
    .endm
    fn f_fp
    push %rbp
    .cfi_def_cfa_offset 16
    .cfi_offset %rbp, -16
    mov %rsp, %rbp
    .cfi_def_cfa_register %rbp
    nop
    pop %rbp
    .cfi_def_cfa %rsp, 8
    ret
    .cfi_endproc
    fn f_expr
    nop
    .cfi_escape 0x0f, 0x03, 0x77, 0x10, 0x06
    nop
    ret
    .cfi_endproc
    fn f_reg
    nop
    .cfi_def_cfa %r10, 0
    nop
    ret
    .cfi_endproc
    fn f_ra
    nop
    .cfi_offset %rip, -16
    nop
    ret
    .cfi_endproc
    fn f_rbp_reg
    nop
    .cfi_register %rbp, %rbx
    nop
    ret
    .cfi_endproc
    fn f_rbp_far
    nop
    .cfi_offset %rbp, -80000
    nop
    ret
    .cfi_endproc
    fn f_end
    nop
    .cfi_undefined %rip
    nop
    ret
    .cfi_endproc
"#;

const DEBUG_C: &str = r#"
int g_leaf(int x) { return x * 3; }
int g_frame(int x) { volatile int a[8]; a[x & 7] = x; return a[1] + g_leaf(x); }
"#;

/// The synthetic library: SYNTH_S's `.eh_frame` and DEBUG_C's `.debug_frame`;
/// beside it `libsynth-nohdr.so`, the same without `.eh_frame_hdr`.
fn synth_lib(dir: &Path) -> Option<PathBuf> {
    std::fs::write(dir.join("synth.s"), SYNTH_S).unwrap();
    std::fs::write(dir.join("debug.c"), DEBUG_C).unwrap();
    let lib = dir.join("libsynth.so");
    let ok = run(Command::new("gcc")
        .current_dir(dir)
        .args(["-c", "-o", "synth.o", "synth.s"]))
        && run(Command::new("gcc").current_dir(dir).args([
            "-c",
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fno-asynchronous-unwind-tables",
            "-o",
            "debug.o",
            "debug.c",
        ]))
        && run(Command::new("gcc").current_dir(dir).args([
            "-shared",
            "-nostdlib",
            "-o",
            "libsynth.so",
            "synth.o",
            "debug.o",
        ]))
        && run(Command::new("gcc").current_dir(dir).args([
            "-shared",
            "-nostdlib",
            "-Wl,--no-eh-frame-hdr",
            "-o",
            "libsynth-nohdr.so",
            "synth.o",
            "debug.o",
        ]));
    if !ok && crate::sys::fake::may_skip("gcc could not build the CFI test library") {
        return None;
    }
    Some(lib)
}

#[test]
fn stops_are_counted_by_kind_and_debug_frame_fills_in() {
    let dir = scratch_dir("unwind-synth");
    let Some(lib) = synth_lib(&dir) else { return };
    let (table, _) = check_against_readelf(&lib);
    let s = table.stats;
    let want = StopCounts {
        cfa_expression: 1,
        cfa_register: 1,
        cfa_offset: 0,
        ra_rule: 1,
        rbp_rule: 2,
    };
    assert_eq!(s.stops, want, "{s:?}");
    assert_eq!(s.end_rows, 1);
    assert!(s.eh_fdes >= 7 && s.debug_fdes >= 2, "{s:?}");
    let at = |name: &str, plus: u64| table.lookup(func_offset(&lib, name) + plus);
    // the first byte of each function is a plain row; past its `nop`, the
    // row the CFI describes
    for f in ["f_expr", "f_reg", "f_ra", "f_rbp_reg", "f_rbp_far"] {
        assert_eq!(at(f, 0), Some(Row::regs(Kind::Rsp, 8, None)), "{f}");
        assert_eq!(at(f, 1), Some(Row::STOP), "{f}");
    }
    assert_eq!(at("f_end", 1), Some(Row::END));
    assert_eq!(at("f_fp", 4), Some(Row::regs(Kind::Rbp, 16, Some(-16))));
    assert_eq!(at("f_fp", 1), Some(Row::regs(Kind::Rsp, 16, Some(-16))));
    // the C functions have rows only in .debug_frame
    assert_eq!(at("g_leaf", 0), Some(Row::regs(Kind::Rsp, 8, None)));
    assert!(
        matches!(at("g_frame", 4), Some(r) if r.kind == Kind::Rbp),
        "{:?}",
        at("g_frame", 4)
    );
    // without .eh_frame_hdr, .eh_frame is walked entry by entry: same rows
    assert!(s.eh_frame_hdr);
    let (nohdr, _) = check_against_readelf(&dir.join("libsynth-nohdr.so"));
    assert!(!nohdr.stats.eh_frame_hdr);
    assert_eq!(nohdr.entries.len(), table.entries.len());
    assert_eq!(nohdr.stats.stops, want);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn corrupt_cfi_is_skipped_not_a_panic() {
    use object::{Object, ObjectSection};
    let dir = scratch_dir("unwind-corrupt");
    let bytes = std::fs::read(dump_vdso(&dir)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let elf = object::File::parse(&*bytes).unwrap();
    let ranges: Vec<(usize, usize)> = [".eh_frame", ".eh_frame_hdr"]
        .iter()
        .filter_map(|n| elf.section_by_name(n)?.file_range())
        .map(|(o, s)| (o as usize, s as usize))
        .collect();
    assert_eq!(ranges.len(), 2);
    let clean = from_data(&*bytes).unwrap();
    let mut rng = crate::rng::Rng::new(12);
    let mut differed = 0;
    for _ in 0..500 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let (o, s) = rng.pick(&ranges);
            b[o + rng.index(s)] = rng.next_u64() as u8;
        }
        let t = from_data(&*b).unwrap();
        for w in t.entries.windows(2) {
            assert!(w[0].pc < w[1].pc, "unsorted: {w:?}");
        }
        differed += usize::from(t != clean);
    }
    assert!(
        differed > 100,
        "the corruption reached the parser: {differed}"
    );
}

#[test]
fn sections_over_the_read_cap_are_counted_not_read() {
    let libc = mapped("libc.so");
    let f = std::fs::File::open(&libc).unwrap();
    let len = f.metadata().unwrap().len();
    // headers fit 64 KiB reads; libc's .eh_frame (150 KiB) does not
    let reader = crate::sys::pread::BoundedReader::new(&f, len, 64 << 10, 1 << 30);
    let t = from_reader(&reader).unwrap();
    assert!(t.stats.refused_reads >= 1, "{:?}", t.stats);
    assert_eq!(t.stats.eh_fdes, 0);
    assert!(t.entries.is_empty());
    assert_eq!(table_of(&libc).stats.refused_reads, 0);
}
