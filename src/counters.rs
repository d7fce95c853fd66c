//! Process-wide monotonic counters of every engine outcome, and of the
//! agent's work, readable as a snapshot and exported as metrics.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident: $help:literal,)*) => {
        /// The live counters.
        pub struct Counters { $(pub $name: AtomicU64,)* }

        pub static COUNTERS: Counters = Counters { $($name: AtomicU64::new(0),)* };

        /// A point-in-time copy of every counter.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Snapshot { $(pub $name: u64,)* }

        impl Counters {
            pub fn snapshot(&self) -> Snapshot {
                Snapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }

        impl Snapshot {
            /// (name, help, value) of every counter.
            pub fn entries(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![$((stringify!($name), $help, self.$name),)*]
            }

            /// The difference `self - earlier`, counter by counter.
            pub fn since(&self, earlier: &Snapshot) -> Snapshot {
                Snapshot { $($name: self.$name.wrapping_sub(earlier.$name),)* }
            }
        }
    };
}

counters! {
    batch_calls: "batch syscalls issued (delete and update)",
    single_calls: "single-key syscalls issued (delete and update)",
    keys_deleted: "trie/map keys deleted",
    keys_absent: "keys that were already absent when deleted",
    keys_invalid: "keys the kernel refused as malformed",
    keys_failed: "keys whose delete failed for another reason",
    resumes: "batches resumed after the kernel stopped at a key",
    retries: "retries of a key after a transient error",
    single_fallbacks: "keys deleted one by one after a fault, retry exhaustion or missing batch support",
    untrusted_counts: "batch answers whose count could not be trusted",
    keys_inserted: "keys inserted",
    keys_refused: "keys refused on insert (map full, invalid, failed)",
    syncs_ok: "process syncs that succeeded",
    syncs_gone: "process syncs of a process that had exited",
    syncs_failed: "process syncs that failed",
    exits: "process exits handled",
    lost_records: "perf records lost",
    pidfd_fallbacks: "processes tracked without a pidfd (liveness sweep)",
    bias_refused: "mappings refused because the bias does not fit 56 bits",
    requests_drained: "sync requests drained from pid_events",
    samples_read: "samples read from the sampler ring",
    samples_malformed: "malformed sample records",
    samples_lost: "sample records lost",
    files_opened: "mapped files opened for reading by the file worker",
    files_not_regular: "files refused: not a regular file (FIFO, device, directory, symlink)",
    files_mismatch: "files refused: device/inode differ from the maps line",
    files_gone: "files not opened: mapping, process or path gone (or a deleted file without map_files)",
    files_failed: "files not opened: another error",
    debug_files_untrusted: "debug files not read: a directory on the way is not root-owned or is writable by others",
    file_jobs_timed_out: "file jobs past their deadline (the file is never retried)",
    file_jobs_refused: "file jobs refused (the file failed before, or too many stuck workers)",
    file_workers_abandoned: "file worker threads abandoned while stuck in a job",
    unsafe_pin_dir: "pin directories or pins refused (not ours, open to others, a symbolic link, a wrong layout)",
    unsafe_metrics_dir: "metrics writes refused (directory open to others, a symbolic link, missing)",
    inputs_refused: "command inputs refused (diff: over --max-input or the line cap, not a file or pipe; bench --keys over memory)",
    keys_over_budget: "keys not inserted because their process or uid was over its budget",
    processes_over_budget: "processes tracked partially because of a budget",
    sync_steps: "steps of chunked syncs (start, plan, deletes, inserts)",
    warnings_suppressed: "warning lines suppressed by the rate limit",
    maps_reads_timed_out: "/proc/PID/maps reads past their deadline on the maps worker (a stall, counted against the process's uid)",
    maps_reads_refused: "/proc/PID/maps reads refused (the uid stalled reads before, or too many stuck maps workers)",
    maps_workers_abandoned: "maps worker threads abandoned while stuck in a read",
    maps_reads_fast: "maps read by the loop itself through the pidmap_vmas BPF program (no /proc, never waiting for the mmap lock)",
    maps_reads_fast_declined: "maps the loop's BPF read handed to the maps worker (mmap lock held, a file not yet known or deleted, no address space, too many mappings)",
    short_resyncs: "syncs of processes left short (budget, full trie) asked again because keys were freed",
    syncs_unreadable: "process syncs skipped: the maps could not be read (EACCES, EPERM, ESRCH)",
    requests_recorded: "sync requests served from their record on the request ring",
    request_drains: "scans of pid_events (latch raised, records lost, periodic request sweep)",
    latch_resyncs: "re-syncs of everything because the BPF side raised the latch (a request record the ring could not take)",
    unwind_tables_loaded: "unwind tables loaded into the kernel (one per file in use while sampling with CFI)",
    unwind_tables_freed: "unwind tables freed from the kernel (the last mapping of their file went)",
    unwind_tables_empty: "files with no unwind rows (no .eh_frame or .debug_frame): walked by frame pointers",
    unwind_tables_dropped: "unwind tables built after their file had left the registry: not loaded",
    unwind_builds_failed: "unwind tables that could not be built (not ELF x86_64, malformed)",
    unwind_loads_failed: "unwind tables that could not be loaded (map create or update failed, table map full)",
    unwind_rows_unencodable: "unwind rows too large for the kernel's 32-bit row (made stop rows)",
    unwind_pages_dense: "4 KiB pages of code with more unwind rows than 16 parts of 128 hold (made one stop row)",
    unwind_tables_over_budget: "unwind tables not loaded: the uid whose process mapped the file holds its share of unwind_pages",
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}
