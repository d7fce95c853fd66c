//! Unwind tables: the call frame information (CFI) of one ELF file as a
//! sorted array of compact rows, the form a BPF stack walk can search.
//!
//! Built in user space from `.eh_frame` (its FDEs listed by
//! `.eh_frame_hdr`'s search table when there is one) and `.debug_frame`,
//! parsed with `gimli` (`build.rs`). Every row of every FDE is evaluated
//! and reduced to what an x86_64 walk needs: how to find the CFA (the
//! caller's stack pointer), where the caller's RBP is, and that the return
//! address is at CFA − 8. A row that says anything else becomes a `Stop`
//! row, counted by why ([`StopCounts`]).
//!
//! # Layout (what will be shipped to the kernel)
//!
//! A table is a `Vec<Entry>` sorted by `pc`, strictly increasing. An entry
//! is 12 bytes, `#[repr(C)]`, 4-byte aligned, no padding:
//!
//! | bytes | field | meaning |
//! | --- | --- | --- |
//! | 0..4 | `pc: u32` | offset in the file (as the trie gives it: ip − bias) where the row starts |
//! | 4..8 | `cfa_offset: i32` | added to the CFA's base register (see `kind`) |
//! | 8..10 | `rbp_offset: i16` | with `rbp == AT_CFA`: the caller's RBP is saved at CFA + this |
//! | 10 | `kind: u8` | [`Kind`]: how the CFA is found (or why not) |
//! | 11 | `rbp: u8` | [`RBP_UNCHANGED`] or [`RBP_AT_CFA`] |
//!
//! The row applies from its `pc` up to the next entry's `pc`. Where no FDE
//! covers the code (between functions, after the last one) a `Gap` row
//! ends the one before, so a lookup never stretches a function's row over
//! code that has none. Adjacent entries never hold equal rows (they are
//! coalesced). The return address is always at CFA − 8 in `Rsp`, `Rbp`
//! and `Plt` rows; rows where it is elsewhere are `Stop` rows. Offsets of
//! files of 4 GiB and more do not fit `pc`: such rows are dropped and
//! counted.

mod build;
pub mod kernel;
#[cfg(test)]
mod readelf;
#[cfg(test)]
mod tests;

pub use build::{from_data, from_file, from_reader};

/// How the sampler walks user stacks (`--unwind`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// By CFI where the file has a table, a frame-pointer step elsewhere.
    #[default]
    Auto,
    /// By CFI only: a frame whose file has no table ends the walk.
    Cfi,
    /// By frame pointers only (the kernel's walk); no tables are built.
    Fp,
}

impl Mode {
    /// The value of `pidmap_config.unwind`.
    pub fn config(self) -> u32 {
        match self {
            Mode::Auto => crate::abi::UNWIND_AUTO,
            Mode::Cfi => crate::abi::UNWIND_CFI,
            Mode::Fp => crate::abi::UNWIND_FP,
        }
    }

    /// Its `--unwind` name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Cfi => "cfi",
            Mode::Fp => "fp",
        }
    }

    /// Whether tables are built and loaded.
    pub fn uses_tables(self) -> bool {
        self != Mode::Fp
    }
}

/// The table of this process's own vdso: the vdso image is the same in
/// every process of a kernel, so this is every process's. Read from
/// /proc/self/mem, never from a file a user controls.
pub fn of_own_vdso() -> Result<UnwindTable, crate::error::Error> {
    from_data(own_vdso_image()?.as_slice())
}

/// This process's vdso image, read from /proc/self/mem (at most 1 MiB).
pub(crate) fn own_vdso_image() -> Result<Vec<u8>, crate::error::Error> {
    use crate::error::Error;
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string("/proc/self/maps")
        .map_err(|e| Error::from(e).context("reading /proc/self/maps"))?;
    let range = maps
        .lines()
        .find(|l| l.ends_with("[vdso]"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| {
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
            ))
        })
        .ok_or_else(|| Error::new("this process has no [vdso] mapping"))?;
    let len = range.1.saturating_sub(range.0).min(1 << 20) as usize;
    let mut image = vec![0u8; len];
    std::fs::File::open("/proc/self/mem")
        .and_then(|f| f.read_exact_at(&mut image, range.0))
        .map_err(|e| Error::from(e).context("reading the vdso from /proc/self/mem"))?;
    Ok(image)
}

/// How the CFA of a row is found, or why the walk ends there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// No FDE covers this code.
    Gap = 0,
    /// CFA = RSP + `cfa_offset`.
    Rsp = 1,
    /// CFA = RBP + `cfa_offset`.
    Rbp = 2,
    /// The PLT's expression: CFA = RSP + `cfa_offset` (8), plus 8 more when
    /// (RIP & 15) >= [`PLT_THRESHOLD`] (after the entry's `push`).
    Plt = 3,
    /// The signal trampoline (`__restore_rt`): RSP points at the kernel's
    /// `ucontext`; the caller's RSP, RBP and RIP are read from it at
    /// [`SIGNAL_RSP`], [`SIGNAL_RBP`], [`SIGNAL_RIP`]. Offsets are 0.
    Signal = 4,
    /// The return address is undefined: the outermost frame (`_start`,
    /// a thread's start). The walk is complete.
    End = 5,
    /// Covered by CFI this table cannot express (see [`StopCounts`]).
    Stop = 6,
}

/// `rbp`: the caller's RBP is the current RBP (not saved, or unchanged).
pub const RBP_UNCHANGED: u8 = 0;
/// `rbp`: the caller's RBP is saved at CFA + `rbp_offset`.
pub const RBP_AT_CFA: u8 = 1;

/// `Plt` rows: RIP & 15 at and above which the entry has pushed its index.
pub const PLT_THRESHOLD: u8 = 11;
/// `Signal` rows: offsets from RSP, in the `ucontext` the kernel pushed
/// (`uc_mcontext` at 40, then `gregs[]` in `REG_*` order), of the caller's
/// RSP (`REG_RSP` 15), RBP (`REG_RBP` 10) and RIP (`REG_RIP` 16).
pub const SIGNAL_RSP: i64 = 40 + 15 * 8;
pub const SIGNAL_RBP: i64 = 40 + 10 * 8;
pub const SIGNAL_RIP: i64 = 40 + 16 * 8;

/// Rows of the CFI evaluated for one file at most (a hostile 256 MiB
/// `.eh_frame` could otherwise hold a row a byte). Chromium-sized binaries
/// have about 2 M; each costs 24 bytes while the table is built.
pub const MAX_CFI_ROWS: u64 = 1 << 22;

/// The longest a table's build runs: a file with more CFI than this
/// evaluates (a 16 MiB `.eh_frame`, ~1 s) keeps the rows found until then.
/// Well inside the file worker's deadline, so a big file never costs the
/// worker thread.
pub const MAX_BUILD_TIME: std::time::Duration = std::time::Duration::from_millis(500);

/// One row: how to find the caller's frame from a pc inside this range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct Row {
    pub cfa_offset: i32,
    pub rbp_offset: i16,
    pub kind: Kind,
    pub rbp: u8,
}

impl Row {
    pub const GAP: Row = Row::only(Kind::Gap);
    pub const STOP: Row = Row::only(Kind::Stop);
    pub const END: Row = Row::only(Kind::End);
    pub const SIGNAL: Row = Row::only(Kind::Signal);
    pub const PLT: Row = Row {
        cfa_offset: 8,
        rbp_offset: 0,
        kind: Kind::Plt,
        rbp: RBP_UNCHANGED,
    };

    const fn only(kind: Kind) -> Row {
        Row {
            cfa_offset: 0,
            rbp_offset: 0,
            kind,
            rbp: RBP_UNCHANGED,
        }
    }

    /// CFA = RSP or RBP + `cfa_offset`; RBP saved at CFA + `rbp` or
    /// unchanged (`None`).
    pub const fn regs(kind: Kind, cfa_offset: i32, rbp: Option<i16>) -> Row {
        match rbp {
            Some(off) => Row {
                cfa_offset,
                rbp_offset: off,
                kind,
                rbp: RBP_AT_CFA,
            },
            None => Row {
                cfa_offset,
                rbp_offset: 0,
                kind,
                rbp: RBP_UNCHANGED,
            },
        }
    }
}

/// One entry of a table: a row and the file offset it starts at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Entry {
    pub pc: u32,
    pub row: Row,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 12);
const _: () = assert!(std::mem::align_of::<Entry>() == 4);
const _: () = assert!(std::mem::size_of::<Row>() == 8);

/// Why rows became `Stop` rows (each counts rows of the CFI as evaluated,
/// before coalescing), and what else was left out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StopCounts {
    /// The CFA is an expression other than the PLT's or the signal frame's.
    pub cfa_expression: u64,
    /// The CFA is based on a register other than RSP and RBP (a function
    /// that realigns its stack: `r10`, ...).
    pub cfa_register: u64,
    /// The CFA offset does not fit `i32`.
    pub cfa_offset: u64,
    /// The return address is not at CFA − 8 (nor undefined).
    pub ra_rule: u64,
    /// RBP's rule is neither "unchanged" nor "saved at CFA + n", or n does
    /// not fit `i16`.
    pub rbp_rule: u64,
}

impl StopCounts {
    pub fn total(&self) -> u64 {
        self.cfa_expression + self.cfa_register + self.cfa_offset + self.ra_rule + self.rbp_rule
    }
}

/// What building a table saw, beside the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    /// FDEs evaluated, from `.eh_frame` and from `.debug_frame`.
    pub eh_fdes: u64,
    pub debug_fdes: u64,
    /// `.eh_frame`'s FDEs were listed by `.eh_frame_hdr`'s search table
    /// (else the section was walked entry by entry).
    pub eh_frame_hdr: bool,
    /// Rows of the CFI as evaluated (before merging and coalescing).
    pub cfi_rows: u64,
    /// Entries or FDEs that did not parse or evaluate (skipped).
    pub bad_fdes: u64,
    /// Rows outside every executable segment, or at file offsets ≥ 4 GiB.
    pub unmapped_rows: u64,
    /// Reads of the file refused by the caps of the bounded reader (a
    /// section over 256 MiB, or past the file's budget): what they held is
    /// missing from the table.
    pub refused_reads: u64,
    /// The file had more than [`MAX_CFI_ROWS`] rows, or its build ran out
    /// of [`MAX_BUILD_TIME`]: the rest were left out.
    pub truncated: bool,
    /// The build ran out of [`MAX_BUILD_TIME`].
    pub timed_out: bool,
    /// When the build stops (set by the builder).
    pub(super) deadline: Option<std::time::Instant>,
    /// Rows where the return address is undefined (the end of a stack).
    pub end_rows: u64,
    pub stops: StopCounts,
    /// Size of the `.eh_frame` and `.debug_frame` sections read.
    pub eh_frame_bytes: u64,
    pub debug_frame_bytes: u64,
}

/// The unwind table of one file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnwindTable {
    pub entries: Vec<Entry>,
    pub stats: BuildStats,
}

impl UnwindTable {
    /// The row for `offset` (a file offset), `None` before the first entry.
    pub fn lookup(&self, offset: u64) -> Option<Row> {
        let idx = self
            .entries
            .partition_point(|e| u64::from(e.pc) <= offset)
            .checked_sub(1)?;
        Some(self.entries[idx].row)
    }

    /// The table's size as shipped (12 bytes an entry).
    pub fn bytes(&self) -> usize {
        self.entries.len() * std::mem::size_of::<Entry>()
    }
}
