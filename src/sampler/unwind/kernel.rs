//! Unwind tables in the kernel, where the sampler's CFI walk reads them.
//!
//! A file's table is cut into pages of 4 KiB of file offsets. In
//! `unwind_pages` (a hash, BPF_F_NO_PREALLOC) each (file_id, page, part)
//! holds up to [`UNWIND_PAGE_ROWS`] entries of the page, their pcs
//! page-relative (u16) and their rows packed (u32), and the row in effect
//! before the first; a page with more entries has more parts, each saying
//! where the next begins. Every page from the table's first to its last
//! has a part 0, so a function longer than a page is found from any of its
//! pages. `unwind_files` holds, per file_id, the first and last page. The
//! BPF side finds a row with one or two hash lookups and at most
//! [`UNWIND_SEARCH_STEPS`] steps of a binary search in one part.
//!
//! Why hashes rather than a map of maps with one array per file: an
//! update of a map of maps from user space waits for an RCU grace period
//! (measured here: 7–53 ms a table, on the loop thread), a hash update
//! does not; and nothing is allocated for files that are not there (a
//! size-class layout preallocates its buckets). A part costs 776 bytes
//! in the kernel, whatever it holds.
//!
//! A row is packed in 32 bits (bpf/pidmap.h): kind (4 bits), RBP saved
//! (1 bit), the CFA offset in bytes (19 bits, unsigned) and the offset of
//! the saved RBP from the CFA in 8-byte words (8 bits, signed). A row
//! that does not fit becomes a `Stop` row and is counted.
//!
//! A table is shared by every process that maps its file: loaded when the
//! file enters the registry, freed when its last mapping goes. Only the
//! loop thread calls this (the build runs on the file worker); keys go in
//! and out through the batch engine.

use super::{Entry, Kind, Row, UnwindTable, RBP_AT_CFA};
#[cfg(doc)]
use crate::abi::UNWIND_SEARCH_STEPS;
use crate::abi::{
    UnwindFile, UnwindPage, UnwindPageKey, UNWIND_MAX_PARTS, UNWIND_NO_NEXT, UNWIND_PAGE_ROWS,
    UNWIND_PAGE_SHIFT,
};
use crate::counters::{add, COUNTERS};
use crate::maps::engine::{self, BatchMap, EngineOptions};
use crate::sys::bpf::{MapHandle, BPF_ANY};
use crate::sys::SysError;
use std::collections::HashMap;

const CFA_BITS: u32 = 19;

/// The 32-bit form of a row, `None` when it does not fit.
pub fn encode_row(row: &Row) -> Option<u32> {
    let cfa = u32::try_from(row.cfa_offset).ok()?;
    if cfa >= 1 << CFA_BITS {
        return None;
    }
    let (saved, words) = if row.rbp == RBP_AT_CFA {
        if row.rbp_offset % 8 != 0 {
            return None;
        }
        (1u32, i8::try_from(row.rbp_offset / 8).ok()?)
    } else {
        (0, 0)
    };
    Some((row.kind as u32) | (saved << 4) | (cfa << 5) | ((words as u8 as u32) << 24))
}

/// The row a 32-bit form stands for (the BPF side's decoding, for tests).
pub fn decode_row(bits: u32) -> Row {
    let kind = match bits & 0xf {
        1 => Kind::Rsp,
        2 => Kind::Rbp,
        3 => Kind::Plt,
        4 => Kind::Signal,
        5 => Kind::End,
        6 => Kind::Stop,
        _ => Kind::Gap,
    };
    let saved = (bits >> 4) & 1 == 1;
    let cfa = ((bits >> 5) & ((1 << CFA_BITS) - 1)) as i32;
    let rbp = (bits >> 24) as u8 as i8 as i16 * 8;
    Row::regs(kind, cfa, saved.then_some(rbp))
}

/// The packed rows of a table: a (pc, row) list where rows that do not
/// fit are `Stop` rows and equal neighbours are merged; and how many rows
/// did not fit.
pub fn encode(entries: &[Entry]) -> (Vec<(u32, u32)>, u64) {
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(entries.len());
    let mut unfit = 0;
    for e in entries {
        let bits = encode_row(&e.row).unwrap_or_else(|| {
            unfit += 1;
            Kind::Stop as u32
        });
        if out.last().is_some_and(|l| l.1 == bits) {
            continue;
        }
        out.push((e.pc, bits));
    }
    (out, unfit)
}

/// The pages of a table, as the kernel holds them, and how many pages had
/// more entries than [`UNWIND_MAX_PARTS`] parts hold (made one stop row).
pub fn pages(
    file_id: u64,
    rows: &[(u32, u32)],
) -> (UnwindFile, Vec<(UnwindPageKey, UnwindPage)>, u64) {
    let mut out = Vec::new();
    let mut dense = 0;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return (UnwindFile::default(), out, 0);
    };
    let (first_page, last_page) = (first.0 >> UNWIND_PAGE_SHIFT, last.0 >> UNWIND_PAGE_SHIFT);
    let mut i = 0;
    // the row in effect at the start of the page (before any entry: a gap)
    let mut before = Kind::Gap as u32;
    for page in first_page..=last_page {
        let start = i;
        while i < rows.len() && rows[i].0 >> UNWIND_PAGE_SHIFT == page {
            i += 1;
        }
        let here = &rows[start..i];
        let parts: Vec<&[(u32, u32)]> = if here.is_empty() {
            vec![here]
        } else {
            here.chunks(UNWIND_PAGE_ROWS).collect()
        };
        let key = |part: u32| UnwindPageKey {
            file_id,
            page,
            part,
        };
        if parts.len() > UNWIND_MAX_PARTS as usize {
            dense += 1;
            let stop = UnwindPage {
                prev_row: Kind::Stop as u32,
                ..UnwindPage::default()
            };
            out.push((key(0), stop));
        } else {
            let mut prev = before;
            for (n, part) in parts.iter().enumerate() {
                let mut v = UnwindPage {
                    prev_row: prev,
                    count: part.len() as u16,
                    ..UnwindPage::default()
                };
                for (j, &(pc, row)) in part.iter().enumerate() {
                    v.pc[j] = (pc & ((1 << UNWIND_PAGE_SHIFT) - 1)) as u16;
                    v.row[j] = row;
                }
                if let Some(next) = parts.get(n + 1).and_then(|p| p.first()) {
                    v.next = (next.0 & ((1 << UNWIND_PAGE_SHIFT) - 1)) as u16;
                } else {
                    v.next = UNWIND_NO_NEXT;
                }
                if let Some(l) = part.last() {
                    prev = l.1;
                }
                out.push((key(n as u32), v));
            }
        }
        if let Some(l) = here.last() {
            before = l.1;
        }
    }
    (
        UnwindFile {
            first_page,
            last_page,
        },
        out,
        dense,
    )
}

/// A table ready for the kernel: its parts, keyed with file_id 0 until
/// [`KernelTables::begin`] gives them their file. Made off the loop (the
/// file worker), from the built table.
#[derive(Debug, Default)]
pub struct Prepared {
    pub span: UnwindFile,
    pub keys: Vec<UnwindPageKey>,
    pub values: Vec<UnwindPage>,
    /// Rows of the built table.
    pub entries: usize,
}

/// Encodes and pages a built table (counting rows that do not fit and
/// pages too dense).
pub fn prepare(table: &UnwindTable) -> Prepared {
    let (rows, unfit) = encode(&table.entries);
    add(&COUNTERS.unwind_rows_unencodable, unfit);
    let (span, parts, dense) = pages(0, &rows);
    add(&COUNTERS.unwind_pages_dense, dense);
    let (keys, values) = parts.into_iter().unzip();
    Prepared {
        span,
        keys,
        values,
        entries: table.entries.len(),
    }
}

/// One table in the kernel: the keys of its parts.
struct Loaded {
    keys: Vec<UnwindPageKey>,
}

/// A table being loaded, a few parts a loop turn.
struct Loading {
    file_id: u64,
    table: Prepared,
    /// Parts inserted so far.
    done: usize,
}

/// The loop's side of `unwind_files` and `unwind_pages`.
pub struct KernelTables {
    files: MapHandle,
    pages: BatchMap,
    opts: EngineOptions,
    loaded: HashMap<u64, Loaded>,
    loading: std::collections::VecDeque<Loading>,
    parts: u64,
}

/// Parts inserted by one call of the batch engine while loading.
pub const LOAD_CHUNK: usize = 64;

impl KernelTables {
    pub fn new(files: MapHandle, pages: MapHandle) -> KernelTables {
        KernelTables {
            files,
            pages: BatchMap::probe::<UnwindPageKey, UnwindPage>(pages),
            opts: EngineOptions::default(),
            loaded: HashMap::new(),
            loading: std::collections::VecDeque::new(),
            parts: 0,
        }
    }

    /// Whether `file_id` has a table, loaded or loading (an empty table
    /// counts: it was built).
    pub fn has(&self, file_id: u64) -> bool {
        self.loaded.contains_key(&file_id) || self.loading.iter().any(|l| l.file_id == file_id)
    }

    /// Files with a table (empty ones included).
    pub fn len(&self) -> usize {
        self.loaded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty()
    }

    /// Parts in the kernel, all files together.
    pub fn parts(&self) -> u64 {
        self.parts
    }

    /// Whether a table is still being loaded.
    pub fn loading(&self) -> bool {
        !self.loading.is_empty()
    }

    /// What the kernel holds, read back: see [`read_back`].
    pub fn read_back(&self) -> Result<ReadBack, SysError> {
        read_back(&self.files, &self.pages.map)
    }

    /// Starts loading `table` for `file_id`; [`KernelTables::step`] does
    /// it. An empty table is remembered and not loaded: the walk takes a
    /// frame-pointer step in such files.
    pub fn begin(&mut self, file_id: u64, mut table: Prepared) {
        if self.has(file_id) {
            return;
        }
        if table.keys.is_empty() {
            add(&COUNTERS.unwind_tables_empty, 1);
            self.loaded.insert(file_id, Loaded { keys: Vec::new() });
            return;
        }
        for k in &mut table.keys {
            k.file_id = file_id;
        }
        self.loading.push_back(Loading {
            file_id,
            table,
            done: 0,
        });
    }

    /// Loads parts until `until`, [`LOAD_CHUNK`] at a time: a table's
    /// pages first, then its `unwind_files` entry, so the BPF side sees it
    /// whole or not at all. A table whose pages do not all fit is taken
    /// out again; the errors are returned with their file.
    pub fn step(&mut self, until: std::time::Instant) -> Vec<(u64, SysError)> {
        let mut failed = Vec::new();
        while let Some(l) = self.loading.front_mut() {
            let end = (l.done + LOAD_CHUNK).min(l.table.keys.len());
            let (keys, values) = (&l.table.keys[l.done..end], &l.table.values[l.done..end]);
            let report = engine::insert_keys(&self.pages, keys, values, BPF_ANY, &self.opts);
            let mut error = None;
            if report.landed() < keys.len() {
                let errno = if report.full() {
                    libc::E2BIG
                } else {
                    libc::EIO
                };
                error = Some(SysError::new(
                    "BPF_MAP_UPDATE_BATCH",
                    format!(
                        "unwind_pages ({} of {} parts landed)",
                        l.done + report.landed(),
                        l.table.keys.len()
                    ),
                    errno,
                ));
                // exactly what landed goes again: the parts before this
                // chunk and those of it that landed
                let mut landed: Vec<UnwindPageKey> = l.table.keys[..l.done].to_vec();
                landed.extend(report.landed_indices().map(|i| keys[i]));
                engine::delete_keys(&self.pages, &landed, &self.opts);
            } else {
                l.done = end;
                if l.done == l.table.keys.len() {
                    if let Err(e) = self.files.update(&l.file_id, &l.table.span, BPF_ANY) {
                        engine::delete_keys(&self.pages, &l.table.keys, &self.opts);
                        error = Some(e);
                    }
                }
            }
            if let Some(e) = error {
                let l = self.loading.pop_front().expect("the front");
                failed.push((l.file_id, e));
            } else if l.done == l.table.keys.len() {
                let l = self.loading.pop_front().expect("the front");
                add(&COUNTERS.unwind_tables_loaded, 1);
                self.parts += l.table.keys.len() as u64;
                self.loaded.insert(l.file_id, Loaded { keys: l.table.keys });
            }
            if std::time::Instant::now() >= until {
                break;
            }
        }
        failed
    }

    /// Frees the table of `file_id`, if it has one: its `unwind_files`
    /// entry first (the BPF side stops using it), then its pages.
    pub fn unload(&mut self, file_id: u64) {
        if let Some(at) = self.loading.iter().position(|l| l.file_id == file_id) {
            let l = self.loading.remove(at).expect("found");
            engine::delete_keys(&self.pages, &l.table.keys[..l.done], &self.opts);
            return;
        }
        let Some(l) = self.loaded.remove(&file_id) else {
            return;
        };
        if l.keys.is_empty() {
            return;
        }
        if let Err(e) = self.files.delete(&file_id) {
            crate::warn_limited!("unwind table delete", "{e}");
        }
        let report = engine::delete_keys(&self.pages, &l.keys, &self.opts);
        self.parts -= l.keys.len() as u64;
        if report.deleted < l.keys.len() as u64 {
            crate::warn_limited!(
                "unwind pages delete",
                "unwind_pages: {} of {} parts deleted",
                report.deleted,
                l.keys.len()
            );
        }
        add(&COUNTERS.unwind_tables_freed, 1);
    }
}

/// What the kernel holds of the unwind tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// The file_ids in `unwind_files`.
    pub files: Vec<u64>,
    /// Parts in `unwind_pages`, per file_id.
    pub parts: HashMap<u64, usize>,
}

impl ReadBack {
    /// Bytes of the values in `unwind_pages` (the kernel's own overhead
    /// per element aside).
    pub fn bytes(&self) -> usize {
        self.parts.values().sum::<usize>() * std::mem::size_of::<UnwindPage>()
    }
}

/// Reads back, key by key, what the kernel holds in the two maps.
pub fn read_back(files: &MapHandle, pages: &MapHandle) -> Result<ReadBack, SysError> {
    let files = files.keys::<u64>(1 << 20)?;
    let mut parts: HashMap<u64, usize> = HashMap::new();
    for k in pages.keys::<UnwindPageKey>(1 << 22)? {
        *parts.entry(k.file_id).or_default() += 1;
    }
    Ok(ReadBack { files, parts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pc: u32, row: Row) -> Entry {
        Entry { pc, row }
    }

    #[test]
    fn rows_round_trip_through_32_bits() {
        for row in [
            Row::GAP,
            Row::STOP,
            Row::END,
            Row::SIGNAL,
            Row::PLT,
            Row::regs(Kind::Rsp, 8, None),
            Row::regs(Kind::Rsp, 0x7ffff, Some(-16)),
            Row::regs(Kind::Rbp, 16, Some(-16)),
            Row::regs(Kind::Rsp, 56, Some(-1024)),
            Row::regs(Kind::Rsp, 56, Some(1016)),
        ] {
            let bits = encode_row(&row).unwrap_or_else(|| panic!("{row:?} fits"));
            assert_eq!(decode_row(bits), row, "{bits:#x}");
        }
    }

    #[test]
    fn rows_that_do_not_fit_are_refused() {
        for row in [
            Row::regs(Kind::Rsp, 1 << 19, None),
            Row::regs(Kind::Rsp, -8, None),
            Row::regs(Kind::Rsp, 16, Some(-1032)),
            Row::regs(Kind::Rsp, 16, Some(1024)),
            Row::regs(Kind::Rsp, 16, Some(-12)),
        ] {
            assert_eq!(encode_row(&row), None, "{row:?}");
        }
    }

    #[test]
    fn encoding_counts_and_merges() {
        let rsp8 = Row::regs(Kind::Rsp, 8, None);
        let huge = Row::regs(Kind::Rsp, 1 << 20, None);
        let huge2 = Row::regs(Kind::Rsp, 1 << 21, None);
        let (rows, unfit) = encode(&[
            entry(0x10, rsp8),
            entry(0x20, huge),
            entry(0x28, huge2),
            entry(0x30, Row::GAP),
        ]);
        assert_eq!(unfit, 2);
        // two stop rows in a row are one
        assert_eq!(
            rows,
            [
                (0x10, encode_row(&rsp8).unwrap()),
                (0x20, Kind::Stop as u32),
                (0x30, Kind::Gap as u32)
            ]
        );
    }

    /// The BPF side's lookup, written again over the parts (bpf/pidmap.bpf.c
    /// `find_row`).
    fn find(
        span: &UnwindFile,
        parts: &HashMap<UnwindPageKey, UnwindPage>,
        file_id: u64,
        q: u64,
    ) -> Option<u32> {
        let page = (q >> UNWIND_PAGE_SHIFT) as u32;
        let low = (q & ((1 << UNWIND_PAGE_SHIFT) - 1)) as u16;
        if page < span.first_page || page > span.last_page {
            return None;
        }
        let mut v = None;
        for part in 0..UNWIND_MAX_PARTS {
            let p = parts.get(&UnwindPageKey {
                file_id,
                page,
                part,
            })?;
            if low < p.next {
                v = Some(p);
                break;
            }
        }
        let v = v?;
        let (mut lo, mut hi) = (0usize, (v.count as usize).min(UNWIND_PAGE_ROWS));
        for _ in 0..crate::abi::UNWIND_SEARCH_STEPS {
            if lo >= hi {
                break;
            }
            let mid = (lo + hi) / 2;
            if v.pc[mid] <= low {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Some(if lo == 0 { v.prev_row } else { v.row[lo - 1] })
    }

    #[test]
    fn every_offset_finds_the_row_of_the_table_through_the_pages() {
        // rows every few bytes over 3 pages, one page dense enough for 3
        // parts, a function spanning an empty page, a gap at the end
        let mut entries = Vec::new();
        let mut pc = 0x1ff0u32;
        let mut n = 0i32;
        while pc < 0x3000 {
            entries.push(entry(pc, Row::regs(Kind::Rsp, 8 + 8 * (n % 7), None)));
            pc += if pc < 0x2400 { 3 } else { 61 };
            n += 1;
        }
        entries.push(entry(0x3000, Row::regs(Kind::Rbp, 16, Some(-16))));
        entries.push(entry(0x5010, Row::GAP));
        let table = UnwindTable {
            entries,
            ..Default::default()
        };
        let (rows, _) = encode(&table.entries);
        let (span, parts, dense) = pages(7, &rows);
        assert_eq!(dense, 0);
        assert!(parts.iter().any(|(k, _)| k.part >= 2), "a page of 3 parts");
        assert!(parts.iter().any(|(k, _)| k.page == 4), "the empty page 4");
        let map: HashMap<_, _> = parts.into_iter().collect();
        // before the first row and after the last, a gap either way
        let gap = Kind::Gap as u32;
        for q in 0x1f00u64..0x5100 {
            let want = table.lookup(q).and_then(|r| encode_row(&r));
            let got = find(&span, &map, 7, q);
            assert_eq!(got.unwrap_or(gap), want.unwrap_or(gap), "offset {q:#x}");
        }
    }

    #[test]
    fn a_page_denser_than_its_parts_hold_is_one_stop_row() {
        let entries: Vec<Entry> = (0..(UNWIND_PAGE_ROWS as u32 * UNWIND_MAX_PARTS + 1))
            .map(|i| entry(i, Row::regs(Kind::Rsp, 8 * (i as i32 % 2 + 1), None)))
            .collect();
        let (rows, _) = encode(&entries);
        let (span, parts, dense) = pages(1, &rows);
        assert_eq!(dense, 1);
        let map: HashMap<_, _> = parts.into_iter().collect();
        assert_eq!(find(&span, &map, 1, 0x10), Some(Kind::Stop as u32));
    }

    mod in_the_fake_kernel {
        use super::*;
        use crate::sys::bpf::MAP_TYPE_HASH;
        use crate::sys::fake::bpf::{self as fake, FakeMap};
        use std::time::{Duration, Instant};

        struct Fake;
        impl Drop for Fake {
            fn drop(&mut self) {
                fake::uninstall();
            }
        }

        /// Tables on fake maps: unwind_pages holding `max_parts`.
        fn tables(max_parts: usize) -> (KernelTables, Fake) {
            fake::install(FakeMap::new(8, 8, 16));
            fake::add_map(FakeMap::new(
                16,
                std::mem::size_of::<UnwindPage>(),
                max_parts,
            ));
            let pages = MapHandle::create(
                MAP_TYPE_HASH,
                "unwind_pages",
                16,
                std::mem::size_of::<UnwindPage>() as u32,
                max_parts as u32,
                0,
            )
            .unwrap();
            let files = MapHandle::create(MAP_TYPE_HASH, "unwind_files", 8, 8, 16, 0).unwrap();
            (KernelTables::new(files, pages), Fake)
        }

        /// A table of `n` parts: one row a page.
        fn table(n: u32) -> Prepared {
            let entries = (0..n)
                .map(|i| entry(i << 12, Row::regs(Kind::Rsp, 8 * (i as i32 % 3 + 1), None)))
                .collect();
            let p = prepare(&UnwindTable {
                entries,
                ..Default::default()
            });
            assert_eq!(p.keys.len(), n as usize);
            p
        }

        fn kernel(t: &KernelTables) -> ReadBack {
            t.read_back().unwrap()
        }

        fn load_all(t: &mut KernelTables) -> Vec<(u64, SysError)> {
            let mut failed = Vec::new();
            while t.loading() {
                failed.extend(t.step(Instant::now() + Duration::from_secs(1)));
            }
            failed
        }

        #[test]
        fn a_table_loads_whole_and_a_table_that_does_not_fit_leaves_nothing() {
            let (mut t, _f) = tables(100);
            t.begin(1, table(30));
            assert!(load_all(&mut t).is_empty());
            let k = kernel(&t);
            assert_eq!(
                (k.files.as_slice(), k.parts.get(&1)),
                (&[1u64][..], Some(&30))
            );
            // 80 more parts do not fit in 100: the 70 that landed go again
            t.begin(2, table(80));
            let failed = load_all(&mut t);
            assert_eq!(failed.len(), 1, "{failed:?}");
            assert_eq!(failed[0].1.errno(), libc::E2BIG);
            let k = kernel(&t);
            assert_eq!(k.files, [1]);
            assert_eq!(k.parts.len(), 1, "{k:?}");
            assert!(!t.has(2));
            t.unload(1);
            let k = kernel(&t);
            assert!(k.files.is_empty() && k.parts.is_empty(), "{k:?}");
            assert_eq!(t.parts(), 0);
        }

        #[test]
        fn a_table_loads_a_chunk_a_step_and_unloading_it_midway_removes_what_landed() {
            let (mut t, _f) = tables(1000);
            t.begin(3, table(200));
            // a deadline already past: one chunk, then the loop's turn
            assert!(t.step(Instant::now()).is_empty());
            let k = kernel(&t);
            assert_eq!(k.parts.get(&3), Some(&LOAD_CHUNK));
            assert!(k.files.is_empty(), "not visible before it is whole");
            assert!(t.loading() && t.has(3));
            t.unload(3);
            assert!(!t.loading() && !t.has(3));
            let k = kernel(&t);
            assert!(k.parts.is_empty(), "{k:?}");
        }
    }
}
