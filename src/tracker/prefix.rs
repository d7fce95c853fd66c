//! The cover of an address range by the minimal list of aligned
//! power-of-two blocks, each an LPM prefix (DESIGN §2).

use crate::abi::PidPage;
use std::fmt;

/// One aligned block: `len` leading bits of `start` count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub start: u64,
    pub len: u32,
}

impl Block {
    /// Size in bytes; a /0 block (the whole space) saturates.
    #[cfg(test)]
    pub fn size(&self) -> u128 {
        1u128 << (64 - self.len)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmptyRange {
    pub start: u64,
    pub end: u64,
}

impl fmt::Display for EmptyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "empty or inverted address range [{:#x}, {:#x})",
            self.start, self.end
        )
    }
}

impl std::error::Error for EmptyRange {}

/// Covers [start, end) with aligned blocks, lowest first. At most 128.
pub fn cover(start: u64, end: u64) -> Result<Vec<Block>, EmptyRange> {
    if end <= start {
        return Err(EmptyRange { start, end });
    }
    let mut out = Vec::new();
    let mut cursor = start as u128;
    let end = end as u128;
    while cursor < end {
        // the largest block aligned at cursor...
        let mut size: u128 = if cursor == 0 {
            1 << 63
        } else {
            1u128 << cursor.trailing_zeros()
        };
        // ...that does not overrun the end
        while cursor + size > end {
            size >>= 1;
        }
        out.push(Block {
            start: cursor as u64,
            len: 64 - size.trailing_zeros(),
        });
        cursor += size;
    }
    Ok(out)
}

/// The trie keys of the mapping `[start, end)` of `pid`: one per block of
/// its cover, in cover order; none for an empty range.
pub fn keys(pid: u32, start: u64, end: u64) -> Vec<PidPage> {
    cover(start, end)
        .map(|blocks| {
            blocks
                .into_iter()
                .map(|b| PidPage::new(pid, b.start, b.len))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(start: u64, len: u32) -> Block {
        Block { start, len }
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            cover(0x7f5b6ef4f000, 0x7f5b6ef5d000).unwrap(),
            vec![
                b(0x7f5b6ef4f000, 52),
                b(0x7f5b6ef50000, 49),
                b(0x7f5b6ef58000, 50),
                b(0x7f5b6ef5c000, 52)
            ]
        );
        assert_eq!(
            cover(10, 22).unwrap(),
            vec![b(10, 63), b(12, 62), b(16, 62), b(20, 63)]
        );
        assert_eq!(cover(0, 1).unwrap(), vec![b(0, 64)]);
        assert_eq!(cover(0x1000, 0x2000).unwrap(), vec![b(0x1000, 52)]);
    }

    #[test]
    fn empty_and_inverted_ranges_are_errors() {
        assert_eq!(cover(5, 5), Err(EmptyRange { start: 5, end: 5 }));
        assert!(cover(6, 5).is_err());
        assert!(cover(u64::MAX, 0).is_err());
    }

    #[test]
    fn extremes() {
        let all = cover(0, u64::MAX).unwrap();
        assert_eq!(all.len(), 64);
        let top = cover(u64::MAX - 1, u64::MAX).unwrap();
        assert_eq!(top, vec![b(u64::MAX - 1, 64)]);
        let worst = cover(1, u64::MAX).unwrap();
        assert!(worst.len() <= 128);
    }

    /// Minimal: no two neighbours could merge into one aligned block.
    fn check(start: u64, end: u64) {
        let blocks = cover(start, end).unwrap();
        assert!(blocks.len() <= 128);
        let mut cursor = start as u128;
        for w in &blocks {
            assert_eq!(w.start as u128, cursor, "disjoint and contiguous");
            assert!((w.start as u128).is_multiple_of(w.size()), "aligned");
            cursor += w.size();
        }
        assert_eq!(cursor, end as u128, "covers exactly");
        for pair in blocks.windows(2) {
            let (a, c) = (pair[0], pair[1]);
            let merged = a.size() * 2;
            let mergeable = a.len == c.len && (a.start as u128).is_multiple_of(merged);
            assert!(!mergeable, "{a:?} {c:?} could be one block");
        }
        // the greedy choice is optimal: each block is the largest aligned
        // block at its start that fits
        for w in &blocks {
            let bigger = w.size() * 2;
            let fits =
                (w.start as u128).is_multiple_of(bigger) && w.start as u128 + bigger <= end as u128;
            assert!(!fits || w.len == 0, "{w:?} not maximal");
        }
    }

    #[test]
    fn property_random_ranges() {
        let mut rng = crate::rng::Rng::new(0x9e3779b97f4a7c15);
        let mut next = || rng.next_u64();
        for i in 0..20000 {
            let a = next();
            let span = match i % 4 {
                0 => next() % 64,
                1 => next() % (1 << 24),
                2 => next() >> (next() % 64),
                _ => next(),
            };
            let (s, e) = (a, a.saturating_add(span.max(1)));
            if e > s {
                check(s, e);
            }
            let page = a & !0xfff;
            check(
                page,
                page.saturating_add(0x1000 * (1 + next() % 4096))
                    .max(page + 1),
            );
        }
    }
}
