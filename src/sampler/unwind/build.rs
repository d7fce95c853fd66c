//! Building a table: the FDEs of `.eh_frame` and `.debug_frame`
//! evaluated with gimli, each row classified, the two sections merged.
//!
//! The file is untrusted (DESIGN §9): it is read by bounded positioned
//! reads (`sys::pread`, the caps of `symbolize`), only its headers and the
//! CFI sections; a bad entry is skipped and counted, never a panic.
//! `.eh_frame` wins where both sections describe the same code (it is what
//! the program's own unwinder uses); `.debug_frame` fills what it leaves.

use super::{BuildStats, Entry, Kind, Row, UnwindTable};
use crate::error::Error;
use crate::sampler::symbolize::{FILE_BUDGET, MAX_SECTION};
use crate::sys::pread::BoundedReader;
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, CommonInformationEntry, DebugFrame, EhFrame, EhFrameHdr,
    EndianSlice, LittleEndian, Register, RegisterRule, UnwindContext, UnwindExpression,
    UnwindSection, UnwindTableRow,
};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{elf::FileHeader64, Endianness, ReadRef};
use std::collections::HashMap;
use std::fs::File;
use std::time::Instant;

type Slice<'d> = EndianSlice<'d, LittleEndian>;

const RBP: Register = Register(6);
const RSP: Register = Register(7);
const RA: Register = Register(16);

/// `DW_OP_breg7 (rsp) n` as bytes (n a signed LEB128).
fn breg7(n: i64) -> Vec<u8> {
    let mut out = vec![0x77];
    let mut v = n;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        let done = (v == 0 && byte & 0x40 == 0) || (v == -1 && byte & 0x40 != 0);
        out.push(if done { byte } else { byte | 0x80 });
        if done {
            return out;
        }
    }
}

/// The PLT's CFA: `breg7 8; breg16 0; lit15; and; lit11; ge; lit3; shl;
/// plus` (binutils' `.plt` with 16-byte entries).
const PLT_CFA: [u8; 11] = [
    0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
];

/// A half-open range of addresses (or file offsets) and its row.
type Span = (u64, u64, Row);

/// The table of an opened file, read by bounded positioned reads.
pub fn from_file(file: &File) -> Result<UnwindTable, Error> {
    let len = file
        .metadata()
        .map_err(|e| Error::from(e).context("fstat of the ELF file"))?
        .len();
    from_reader(&BoundedReader::new(file, len, MAX_SECTION, FILE_BUDGET))
}

/// The table of a file read through `reader` (its caps apply).
pub fn from_reader(reader: &BoundedReader<'_>) -> Result<UnwindTable, Error> {
    let mut table = from_data(reader)?;
    let refused = reader.refusals();
    table.stats.refused_reads = refused.over_budget + u64::from(refused.over_cap.is_some());
    Ok(table)
}

/// The table of an x86_64 ELF file. Only the headers and the CFI sections
/// are read (not `object::File`, which reads every symbol table first).
pub fn from_data<'d, R: ReadRef<'d>>(data: R) -> Result<UnwindTable, Error> {
    let bad = |what: &str, e: object::Error| Error::new(format!("ELF {what}: {e}"));
    let header = FileHeader64::<Endianness>::parse(data).map_err(|e| bad("header", e))?;
    let endian = header.endian().map_err(|e| bad("header", e))?;
    let machine = header.e_machine(endian);
    if machine != object::elf::EM_X86_64 || endian != Endianness::Little {
        return Err(Error::new(format!(
            "unwind tables are built for x86_64 only, not ELF machine {machine}"
        )));
    }
    let sections = header
        .sections(endian, data)
        .map_err(|e| bad("section headers", e))?;
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| bad("program headers", e))?;
    let section = |name: &str| {
        let (_, sh) = sections.section_by_name(endian, name.as_bytes())?;
        let compressed = sh.sh_flags(endian) & u64::from(object::elf::SHF_COMPRESSED) != 0;
        if compressed || sh.sh_type(endian) == object::elf::SHT_NOBITS {
            return None;
        }
        Some((sh.sh_addr(endian), sh.data(endian, data).ok()?))
    };
    let mut stats = BuildStats {
        deadline: Some(Instant::now() + super::MAX_BUILD_TIME),
        ..BuildStats::default()
    };
    let mut bases = BaseAddresses::default();
    if let Some((text, _)) = section(".text") {
        bases = bases.set_text(text);
    }
    if let Some((got, _)) = section(".got") {
        bases = bases.set_got(got);
    }
    let mut ctx = UnwindContext::new();
    let mut eh_spans = Vec::new();
    if let Some((addr, data)) = section(".eh_frame") {
        stats.eh_frame_bytes = data.len() as u64;
        let bases = bases.clone().set_eh_frame(addr);
        let mut eh = EhFrame::new(data, LittleEndian);
        eh.set_address_size(8);
        let hdr = section(".eh_frame_hdr");
        let listed = hdr.is_some_and(|(hdr_addr, hdr_data)| {
            let bases = bases.clone().set_eh_frame_hdr(hdr_addr);
            eh_frame_by_hdr(
                &eh,
                &bases,
                hdr_data,
                addr,
                &mut ctx,
                &mut eh_spans,
                &mut stats,
            )
        });
        stats.eh_frame_hdr = listed;
        // (a table that does not fit fails before its first FDE)
        if !listed {
            all_fdes(&eh, &bases, &mut ctx, &mut eh_spans, &mut stats, false);
        }
    }
    let mut debug_spans = Vec::new();
    if let Some((_, data)) = section(".debug_frame") {
        stats.debug_frame_bytes = data.len() as u64;
        let mut df = DebugFrame::new(data, LittleEndian);
        df.set_address_size(8);
        all_fdes(&df, &bases, &mut ctx, &mut debug_spans, &mut stats, true);
    }
    let segments: Vec<(u64, u64, u64)> = phdrs
        .iter()
        .filter(|ph| {
            ph.p_type(endian) == object::elf::PT_LOAD && ph.p_flags(endian) & object::elf::PF_X != 0
        })
        .map(|ph| (ph.p_vaddr(endian), ph.p_offset(endian), ph.p_filesz(endian)))
        .collect();
    let eh = clip_sorted(to_offsets(&segments, eh_spans, &mut stats));
    let debug = clip_sorted(to_offsets(&segments, debug_spans, &mut stats));
    let entries = to_entries(&fill_gaps(&eh, &debug));
    stats.deadline = None;
    Ok(UnwindTable { entries, stats })
}

/// `.eh_frame`'s FDEs as `.eh_frame_hdr`'s search table lists them; false
/// when there is no usable table (the caller then walks `.eh_frame`).
fn eh_frame_by_hdr(
    eh: &EhFrame<Slice<'_>>,
    bases: &BaseAddresses,
    hdr_data: &[u8],
    eh_addr: u64,
    ctx: &mut UnwindContext<usize>,
    out: &mut Vec<Span>,
    stats: &mut BuildStats,
) -> bool {
    let Ok(hdr) = EhFrameHdr::new(hdr_data, LittleEndian).parse(bases, 8) else {
        return false;
    };
    // the table must describe the `.eh_frame` section read here
    if hdr.eh_frame_ptr().direct().ok() != Some(eh_addr) {
        return false;
    }
    let Some(table) = hdr.table() else {
        return false;
    };
    let mut cies = HashMap::new();
    let mut iter = table.iter(bases);
    loop {
        if stats.truncated {
            return true;
        }
        let fde_ptr = match iter.next() {
            Ok(Some((_, ptr))) => ptr,
            Ok(None) => return true,
            Err(_) => {
                stats.bad_fdes += 1;
                return true;
            }
        };
        // not `EhHdrTable::pointer_to_offset`: it subtracts unchecked (an
        // FDE pointer below `.eh_frame` panics a debug build)
        let off = fde_ptr
            .direct()
            .ok()
            .and_then(|p| p.checked_sub(eh_addr))
            .and_then(|o| usize::try_from(o).ok());
        let Some(off) = off else {
            stats.bad_fdes += 1;
            continue;
        };
        let fde = eh.fde_from_offset(bases, gimli::EhFrameOffset(off), |s, b, o| {
            cached_cie(&mut cies, s, b, o)
        });
        match fde {
            Ok(fde) => {
                stats.eh_fdes += 1;
                if eval_fde(eh, bases, ctx, &fde, out, stats).is_err() {
                    stats.bad_fdes += 1;
                }
            }
            Err(_) => stats.bad_fdes += 1,
        }
    }
}

fn cached_cie<'d, S: UnwindSection<Slice<'d>>>(
    cache: &mut HashMap<usize, CommonInformationEntry<Slice<'d>>>,
    section: &S,
    bases: &BaseAddresses,
    offset: S::Offset,
) -> gimli::Result<CommonInformationEntry<Slice<'d>>> {
    let key = gimli::UnwindOffset::into(offset);
    if let Some(cie) = cache.get(&key) {
        return Ok(cie.clone());
    }
    let cie = section.cie_from_offset(bases, offset)?;
    cache.insert(key, cie.clone());
    Ok(cie)
}

/// Every FDE of a section, in the section's order.
fn all_fdes<'d, S: UnwindSection<Slice<'d>>>(
    section: &S,
    bases: &BaseAddresses,
    ctx: &mut UnwindContext<usize>,
    out: &mut Vec<Span>,
    stats: &mut BuildStats,
    debug: bool,
) {
    let mut cies = HashMap::new();
    let mut entries = section.entries(bases);
    loop {
        if stats.truncated {
            return;
        }
        let partial = match entries.next() {
            Ok(Some(CieOrFde::Fde(partial))) => partial,
            Ok(Some(CieOrFde::Cie(_))) => continue,
            Ok(None) => return,
            // the length of a bad entry is not known: nothing after it is
            Err(_) => {
                stats.bad_fdes += 1;
                return;
            }
        };
        match partial.parse(|s, b, o| cached_cie(&mut cies, s, b, o)) {
            Ok(fde) => {
                if debug {
                    stats.debug_fdes += 1;
                } else {
                    stats.eh_fdes += 1;
                }
                if eval_fde(section, bases, ctx, &fde, out, stats).is_err() {
                    stats.bad_fdes += 1;
                }
            }
            Err(_) => stats.bad_fdes += 1,
        }
    }
}

/// The rows of one FDE, classified, as address spans.
fn eval_fde<'d, S: UnwindSection<Slice<'d>>>(
    section: &S,
    bases: &BaseAddresses,
    ctx: &mut UnwindContext<usize>,
    fde: &gimli::FrameDescriptionEntry<Slice<'d>>,
    out: &mut Vec<Span>,
    stats: &mut BuildStats,
) -> gimli::Result<()> {
    let signal = fde.is_signal_trampoline();
    let mut rows = fde.rows(section, bases, ctx)?;
    while let Some(row) = rows.next_row()? {
        if row.start_address() >= row.end_address() {
            continue;
        }
        if stats.cfi_rows >= super::MAX_CFI_ROWS {
            stats.truncated = true;
            return Ok(());
        }
        // the clock is read every 4096 rows (~0.2 ms of work)
        if stats.cfi_rows.is_multiple_of(4096)
            && stats.deadline.is_some_and(|d| Instant::now() >= d)
        {
            stats.truncated = true;
            stats.timed_out = true;
            return Ok(());
        }
        stats.cfi_rows += 1;
        let compact = classify(section, row, signal, stats);
        out.push((row.start_address(), row.end_address(), compact));
    }
    Ok(())
}

/// Whether an expression's bytes are exactly `want`.
fn expr_is<'d, S: UnwindSection<Slice<'d>>>(
    section: &S,
    expr: &UnwindExpression<usize>,
    want: &[u8],
) -> bool {
    expr.get(section).is_ok_and(|e| e.0.slice() == want)
}

/// One row of the CFI as a compact row (see the module doc of `unwind`).
fn classify<'d, S: UnwindSection<Slice<'d>>>(
    section: &S,
    row: &UnwindTableRow<usize>,
    signal: bool,
    stats: &mut BuildStats,
) -> Row {
    let ra = row.register(RA);
    if ra == Some(RegisterRule::Undefined) {
        stats.end_rows += 1;
        return Row::END;
    }
    let reg_expr = |reg: Register, off: i64| matches!(row.register(reg), Some(RegisterRule::Expression(e)) if expr_is(section, &e, &breg7(off)));
    let (kind, cfa_offset) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let kind = match *register {
                RSP => Kind::Rsp,
                RBP => Kind::Rbp,
                _ => {
                    stats.stops.cfa_register += 1;
                    return Row::STOP;
                }
            };
            let Ok(offset) = i32::try_from(*offset) else {
                stats.stops.cfa_offset += 1;
                return Row::STOP;
            };
            (kind, offset)
        }
        CfaRule::Expression(e) if expr_is(section, e, &PLT_CFA) => (Kind::Plt, 8),
        CfaRule::Expression(e)
            if signal
                && expr_is(section, e, &[breg7(super::SIGNAL_RSP), vec![0x06]].concat())
                && reg_expr(RA, super::SIGNAL_RIP)
                && reg_expr(RBP, super::SIGNAL_RBP) =>
        {
            return Row::SIGNAL;
        }
        CfaRule::Expression(_) => {
            stats.stops.cfa_expression += 1;
            return Row::STOP;
        }
    };
    if ra != Some(RegisterRule::Offset(-8)) {
        stats.stops.ra_rule += 1;
        return Row::STOP;
    }
    let rbp = match row.register(RBP) {
        None | Some(RegisterRule::SameValue | RegisterRule::Undefined) => None,
        Some(RegisterRule::Offset(n)) => match i16::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                stats.stops.rbp_rule += 1;
                return Row::STOP;
            }
        },
        Some(_) => {
            stats.stops.rbp_rule += 1;
            return Row::STOP;
        }
    };
    Row::regs(kind, cfa_offset, rbp)
}

/// Address spans as file offset spans: each clipped to the executable
/// segment holding its start and below 4 GiB; the rest dropped, counted.
fn to_offsets(segments: &[(u64, u64, u64)], spans: Vec<Span>, stats: &mut BuildStats) -> Vec<Span> {
    let mut out = Vec::with_capacity(spans.len());
    for (start, end, row) in spans {
        let seg = segments
            .iter()
            .find(|&&(vaddr, _, size)| start >= vaddr && start - vaddr < size);
        let mapped = seg.and_then(|&(vaddr, offset, size)| {
            let s = offset.checked_add(start - vaddr)?;
            let e = offset.checked_add(end.min(vaddr.checked_add(size)?) - vaddr)?;
            let e = e.min(u64::from(u32::MAX));
            (s < e).then_some((s, e, row))
        });
        match mapped {
            Some(span) => out.push(span),
            None => stats.unmapped_rows += 1,
        }
    }
    out
}

/// Sorted by start, overlaps removed: a span keeps only what no span
/// before it (by start, then by order) covered.
fn clip_sorted(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| s.0);
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    let mut covered = 0;
    for (start, end, row) in spans {
        let start = start.max(covered);
        if start < end {
            out.push((start, end, row));
            covered = end;
        }
    }
    out
}

/// `first`'s spans, plus the parts of `second`'s that `first` leaves
/// uncovered; both sorted and without overlaps, and so is the result.
fn fill_gaps(first: &[Span], second: &[Span]) -> Vec<Span> {
    let mut out = first.to_vec();
    for &(start, end, row) in second {
        let mut cur = start;
        let mut j = first.partition_point(|f| f.1 <= start);
        while cur < end {
            match first.get(j) {
                Some(&(fs, fe, _)) if fs < end => {
                    if cur < fs {
                        out.push((cur, fs, row));
                    }
                    cur = cur.max(fe);
                    j += 1;
                }
                _ => {
                    out.push((cur, end, row));
                    break;
                }
            }
        }
    }
    out.sort_by_key(|s| s.0);
    out
}

/// Sorted spans as entries: a `Gap` after each span that the next does
/// not start at, equal neighbours coalesced.
fn to_entries(spans: &[Span]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::with_capacity(spans.len());
    let mut push = |pc: u64, row: Row| {
        // spans end below 4 GiB (`to_offsets`)
        let Ok(pc) = u32::try_from(pc) else { return };
        match entries.last_mut() {
            Some(last) if last.row == row => {}
            Some(last) if last.pc == pc => last.row = row,
            _ => entries.push(Entry { pc, row }),
        }
    };
    let mut prev_end = None;
    for &(start, end, row) in spans {
        if prev_end.is_some_and(|e| e < start) {
            push(prev_end.unwrap_or(start), Row::GAP);
        }
        push(start, row);
        prev_end = Some(end);
    }
    if let Some(end) = prev_end {
        push(end, Row::GAP);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Row = Row::regs(Kind::Rsp, 8, None);
    const B: Row = Row::regs(Kind::Rsp, 16, None);
    const C: Row = Row::regs(Kind::Rbp, 16, Some(-16));

    #[test]
    fn signed_leb128_of_breg7() {
        assert_eq!(breg7(8), [0x77, 0x08]);
        assert_eq!(breg7(120), [0x77, 0xf8, 0x00]);
        assert_eq!(breg7(160), [0x77, 0xa0, 0x01]);
        assert_eq!(breg7(-8), [0x77, 0x78]);
    }

    #[test]
    fn merging_prefers_the_first_section_and_fills_its_gaps() {
        let first = clip_sorted(vec![(10, 20, A), (30, 40, A)]);
        let second = clip_sorted(vec![(0, 35, B), (40, 50, C), (60, 70, C)]);
        let merged = fill_gaps(&first, &second);
        assert_eq!(
            merged,
            vec![
                (0, 10, B),
                (10, 20, A),
                (20, 30, B),
                (30, 40, A),
                (40, 50, C),
                (60, 70, C)
            ]
        );
        let e = to_entries(&merged);
        let pcs: Vec<(u32, Kind)> = e.iter().map(|e| (e.pc, e.row.kind)).collect();
        assert_eq!(
            pcs,
            vec![
                (0, Kind::Rsp),
                (10, Kind::Rsp),
                (20, Kind::Rsp),
                (30, Kind::Rsp),
                (40, Kind::Rbp),
                (50, Kind::Gap),
                (60, Kind::Rbp),
                (70, Kind::Gap)
            ]
        );
    }

    #[test]
    fn overlaps_are_clipped_and_equal_neighbours_coalesced() {
        // the second span starts inside the first: it keeps only its tail
        let spans = clip_sorted(vec![(0, 10, A), (5, 15, B), (15, 20, B), (20, 30, A)]);
        assert_eq!(
            spans,
            vec![(0, 10, A), (10, 15, B), (15, 20, B), (20, 30, A)]
        );
        let e = to_entries(&spans);
        assert_eq!(
            e.iter().map(|e| e.pc).collect::<Vec<_>>(),
            vec![0, 10, 20, 30],
            "{e:?}"
        );
        let t = UnwindTable {
            entries: e,
            stats: BuildStats::default(),
        };
        assert_eq!(t.lookup(0), Some(A));
        assert_eq!(t.lookup(19), Some(B));
        assert_eq!(t.lookup(29), Some(A));
        assert_eq!(t.lookup(30), Some(Row::GAP));
        assert_eq!(
            UnwindTable::default().lookup(0),
            None,
            "empty table: no row"
        );
    }
}
