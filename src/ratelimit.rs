//! Rate-limited warnings: a flood of one kind of warning (trie full, over
//! budget, sync failed) costs one line per interval, and the next line says
//! how many were suppressed. A user who can trigger a warning at will
//! cannot fill the log or slow the loop with it.

use crate::counters::{add, COUNTERS};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one line of a kind per this interval.
pub const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Slot {
    kind: &'static str,
    last: Instant,
    suppressed: u64,
}

/// Per kind: when its last line was written and how many were held back.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    slots: Vec<Slot>,
}

impl RateLimiter {
    pub const fn new(interval: Duration) -> RateLimiter {
        RateLimiter {
            interval,
            slots: Vec::new(),
        }
    }

    /// Whether a line of `kind` may be written at `now`: `Some(n)` with the
    /// number suppressed since the last line, or `None` (suppressed, counted).
    pub fn check(&mut self, kind: &'static str, now: Instant) -> Option<u64> {
        let Some(s) = self.slots.iter_mut().find(|s| s.kind == kind) else {
            self.slots.push(Slot {
                kind,
                last: now,
                suppressed: 0,
            });
            return Some(0);
        };
        if now.saturating_duration_since(s.last) >= self.interval {
            s.last = now;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

static WARNINGS: Mutex<RateLimiter> = Mutex::new(RateLimiter::new(INTERVAL));

/// The process-wide limiter behind [`warn_limited!`]: `Some(suppressed)`
/// when a line may be written now.
pub fn allow(kind: &'static str) -> Option<u64> {
    let mut l = WARNINGS.lock().unwrap_or_else(|p| p.into_inner());
    let r = l.check(kind, Instant::now());
    if r.is_none() {
        add(&COUNTERS.warnings_suppressed, 1);
    }
    r
}

/// `log::warn!` at most once per [`INTERVAL`] for each `kind`, with the
/// count of the lines suppressed since the last one.
#[macro_export]
macro_rules! warn_limited {
    ($kind:expr, $($arg:tt)+) => {
        match $crate::ratelimit::allow($kind) {
            Some(0) => log::warn!($($arg)+),
            Some(n) => log::warn!("{} ({n} similar warnings suppressed)", format_args!($($arg)+)),
            None => {}
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_per_interval_then_the_count() {
        let mut l = RateLimiter::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s);
        assert_eq!(l.check("full", at(0)), Some(0));
        assert_eq!(l.check("budget", at(1)), Some(0), "kinds are separate");
        for i in 1..=99 {
            assert_eq!(l.check("full", at(i * 10)), None);
        }
        assert_eq!(l.check("full", at(9_999)), None);
        assert_eq!(l.check("full", at(10_000)), Some(100));
        assert_eq!(l.check("full", at(10_001)), None);
        assert_eq!(l.check("full", at(25_000)), Some(1));
        assert_eq!(l.check("full", at(40_000)), Some(0), "nothing held back");
        assert_eq!(l.check("budget", at(40_000)), Some(0));
        // a clock that goes back never panics nor floods
        assert_eq!(l.check("full", t0), None);
    }

    #[test]
    fn the_global_limiter_counts_what_it_suppresses() {
        let before = COUNTERS.snapshot().warnings_suppressed;
        assert_eq!(allow("test-only kind"), Some(0));
        for _ in 0..5 {
            assert_eq!(allow("test-only kind"), None);
        }
        assert!(COUNTERS.snapshot().warnings_suppressed >= before + 5);
    }
}
