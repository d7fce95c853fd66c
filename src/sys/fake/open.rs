//! The fake kernel's openat2: missing (ENOSYS), as before Linux 5.6, so
//! the component-by-component walk of `safe_open` is the one taken.

use std::cell::Cell;

thread_local! {
    static NO_OPENAT2: Cell<bool> = const { Cell::new(false) };
}

/// Makes this thread's openat2 answer ENOSYS (`true`) or reach the kernel
/// again (`false`).
pub fn openat2_missing_on(on: bool) {
    NO_OPENAT2.with(|f| f.set(on));
}

/// Whether this thread's openat2 is made to be missing.
pub(in crate::sys) fn openat2_missing() -> bool {
    NO_OPENAT2.with(|f| f.get())
}
