//! The fake kernel's answers to libbpf's feature probes: a helper or a
//! program type made missing, as on a kernel too old for it.

use std::cell::RefCell;

thread_local! {
    /// (program type, helper) pairs answered "missing"; a helper of `None`
    /// makes the program type itself missing.
    static MISSING: RefCell<Vec<(u32, Option<u32>)>> = const { RefCell::new(Vec::new()) };
}

/// From now on this thread's probes say programs of `prog_type` cannot
/// call `helper` (or, with `None`, cannot be loaded at all).
pub fn missing(prog_type: u32, helper: Option<u32>) {
    MISSING.with(|m| m.borrow_mut().push((prog_type, helper)));
}

/// The real kernel answers again.
pub fn uninstall() {
    MISSING.with(|m| m.borrow_mut().clear());
}

fn installed() -> bool {
    MISSING.with(|m| !m.borrow().is_empty())
}

/// `Some(answer)` while the fake is installed.
pub(in crate::sys) fn prog_type(prog_type: u32) -> Option<bool> {
    installed().then(|| MISSING.with(|m| !m.borrow().contains(&(prog_type, None))))
}

/// `Some(answer)` while the fake is installed.
pub(in crate::sys) fn helper(prog_type: u32, helper: u32) -> Option<bool> {
    installed().then(|| {
        MISSING.with(|m| {
            let m = m.borrow();
            !m.contains(&(prog_type, None)) && !m.contains(&(prog_type, Some(helper)))
        })
    })
}
