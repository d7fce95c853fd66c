//! Fair share of the trie: how many keys a process may land, from budgets
//! per process and per uid and two reserves, so one user cannot take the
//! trie from the others (DESIGN §9). Pure accounting, no syscalls: the
//! process manager charges every key that landed and releases every key it
//! stops recording, so the totals equal the model at every step.
//!
//! The uid a process is charged to is its real uid, read once from
//! /proc/PID/status when it is first synced: a user cannot change it
//! without privilege (the owner of /proc/PID follows the effective uid and
//! turns to root for a non-dumpable process, so a user could move there).

use std::collections::HashMap;

pub const ROOT_UID: u32 = 0;

/// The limits, in trie keys (markers included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Trie capacity (max_entries).
    pub capacity: u64,
    /// Keys one process may hold; 0: no limit.
    pub per_process: u64,
    /// Keys the processes of one non-root uid may hold together; 0: no
    /// limit (and then no reserve for root either).
    pub per_uid: u64,
    /// The last keys of the trie, which non-root processes together never
    /// take.
    pub root_reserve: u64,
    /// The last keys of the trie, which a process not yet synced never
    /// takes: re-syncs of tracked processes (after a dlopen) still land.
    pub tracked_reserve: u64,
}

impl Limits {
    /// The defaults for a trie of `capacity` keys: a process 1/16, a
    /// non-root uid 1/4, root keeps the last 1/8 and tracked processes the
    /// last 1/32.
    pub fn defaults(capacity: u64) -> Limits {
        Limits::new(capacity, None, None)
    }

    /// Limits with the budgets given (None: the default fraction; 0: no
    /// limit).
    pub fn new(capacity: u64, per_process: Option<u64>, per_uid: Option<u64>) -> Limits {
        let per_uid = per_uid.unwrap_or(capacity / 4);
        Limits {
            capacity,
            per_process: per_process.unwrap_or(capacity / 16),
            per_uid,
            root_reserve: if per_uid == 0 { 0 } else { capacity / 8 },
            tracked_reserve: capacity / 32,
        }
    }
}

/// The budgets asked for on the command line: `None` is the default
/// fraction of the capacity, 0 no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budgets {
    pub per_process: Option<u64>,
    pub per_uid: Option<u64>,
}

impl Budgets {
    pub fn limits(&self, capacity: u64) -> Limits {
        Limits::new(capacity, self.per_process, self.per_uid)
    }
}

/// Keys held, in total and per uid, against optional limits.
#[derive(Debug, Default)]
pub struct Budget {
    limits: Option<Limits>,
    total: u64,
    non_root: u64,
    by_uid: HashMap<u32, u64>,
}

impl Budget {
    /// `None`: keys are accounted, never refused.
    pub fn new(limits: Option<Limits>) -> Budget {
        Budget {
            limits,
            ..Default::default()
        }
    }

    /// How many more keys a process of `uid` that holds `held` keys may
    /// land now; `new` while it has never been synced completely.
    pub fn allowance(&self, uid: u32, held: u64, new: bool) -> u64 {
        let Some(l) = self.limits else {
            return u64::MAX;
        };
        let mut a = u64::MAX;
        if l.per_process > 0 {
            a = a.min(l.per_process.saturating_sub(held));
        }
        if uid != ROOT_UID && l.per_uid > 0 {
            a = a.min(l.per_uid.saturating_sub(self.held_by(uid)));
            let shared = l.capacity.saturating_sub(l.root_reserve);
            a = a.min(shared.saturating_sub(self.non_root));
        }
        if new {
            let open = l.capacity.saturating_sub(l.tracked_reserve);
            a = a.min(open.saturating_sub(self.total));
        }
        a
    }

    /// `n` keys of a process of `uid` landed.
    pub fn charge(&mut self, uid: u32, n: u64) {
        if n == 0 {
            return;
        }
        self.total += n;
        if uid != ROOT_UID {
            self.non_root += n;
        }
        *self.by_uid.entry(uid).or_default() += n;
    }

    /// `n` recorded keys of a process of `uid` left the model. Never more
    /// than was charged: a release beyond it is a bug, clamped here.
    pub fn release(&mut self, uid: u32, n: u64) {
        if n == 0 {
            return;
        }
        let held = self.by_uid.get(&uid).copied().unwrap_or(0);
        debug_assert!(n <= held, "uid {uid}: release {n} > held {held}");
        let n = n.min(held);
        self.total -= n;
        if uid != ROOT_UID {
            self.non_root -= n;
        }
        if held == n {
            self.by_uid.remove(&uid);
        } else {
            self.by_uid.insert(uid, held - n);
        }
    }

    pub fn held_by(&self, uid: u32) -> u64 {
        self.by_uid.get(&uid).copied().unwrap_or(0)
    }

    /// Keys held by every process.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Uids holding at least one key.
    pub fn uids(&self) -> usize {
        self.by_uid.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fractions_of_the_capacity() {
        let l = Limits::defaults(65536);
        assert_eq!(
            (l.per_process, l.per_uid, l.root_reserve, l.tracked_reserve),
            (4096, 16384, 8192, 2048)
        );
        let l = Limits::new(1000, Some(0), Some(0));
        assert_eq!((l.per_process, l.per_uid, l.root_reserve), (0, 0, 0));
        assert_eq!(l.tracked_reserve, 31);
    }

    #[test]
    fn no_limits_never_refuse() {
        let mut b = Budget::new(None);
        b.charge(1000, 1 << 40);
        assert_eq!(b.allowance(1000, 1 << 40, true), u64::MAX);
    }

    #[test]
    fn a_process_and_a_uid_get_their_share() {
        let mut b = Budget::new(Some(Limits::defaults(1024)));
        // per process 64, per uid 256
        assert_eq!(b.allowance(1000, 0, true), 64);
        assert_eq!(b.allowance(1000, 60, false), 4);
        assert_eq!(b.allowance(1000, 64, false), 0);
        assert_eq!(b.allowance(1000, 100, false), 0, "over: nothing, no wrap");
        for _ in 0..4 {
            b.charge(1000, 64);
        }
        assert_eq!(b.allowance(1000, 0, true), 0, "the uid's share is spent");
        assert_eq!(b.allowance(1001, 0, true), 64, "another uid is not");
        assert_eq!(b.allowance(ROOT_UID, 0, true), 64, "nor root");
        b.release(1000, 10);
        assert_eq!(b.allowance(1000, 0, true), 10);
    }

    #[test]
    fn root_keeps_its_reserve_and_tracked_processes_theirs() {
        // no per-process limit, per uid 1/4; 4 users fill the shared part
        let mut b = Budget::new(Some(Limits::new(1024, Some(0), None)));
        for uid in 1..=3 {
            b.charge(uid, 256);
        }
        // 1024 - 128 (root reserve) - 768 = 128 left for all non-root
        assert_eq!(b.allowance(4, 0, true), 128);
        b.charge(4, 128);
        assert_eq!(b.allowance(4, 128, false), 0);
        assert_eq!(b.allowance(5, 0, true), 0, "a fifth user gets nothing");
        // root: the last 128, but a new root process not the last 32
        assert_eq!(b.allowance(ROOT_UID, 0, true), 96);
        b.charge(ROOT_UID, 96);
        assert_eq!(b.allowance(ROOT_UID, 0, true), 0);
        assert_eq!(
            b.allowance(ROOT_UID, 96, false),
            u64::MAX,
            "the kernel is the limit"
        );
        assert_eq!(b.total(), 1024 - 32);
        assert_eq!(b.uids(), 5);
    }

    #[test]
    fn charge_and_release_balance() {
        let mut b = Budget::new(Some(Limits::defaults(1 << 16)));
        let mut rng = crate::rng::Rng::new(7);
        let mut held = [0u64; 4];
        for _ in 0..10000 {
            let x = rng.next_u64();
            let uid = (x % 4) as u32;
            let n = (x >> 8) % 50;
            if x & (1 << 40) != 0 {
                b.charge(uid, n);
                held[uid as usize] += n;
            } else {
                let n = n.min(held[uid as usize]);
                b.release(uid, n);
                held[uid as usize] -= n;
            }
            assert_eq!(b.total(), held.iter().sum::<u64>());
            assert_eq!(b.held_by(uid), held[uid as usize]);
        }
        for (uid, h) in held.iter().enumerate() {
            b.release(uid as u32, *h);
        }
        assert_eq!((b.total(), b.uids(), b.non_root), (0, 0, 0));
    }
}
