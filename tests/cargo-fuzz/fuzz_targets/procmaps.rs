//! /proc/PID/maps parser: pidmap::proc::maps::fuzz_one checks its own
//! invariants (entry/error counts, end > start, kernel-format round trip).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pidmap::proc::maps::fuzz_one(data);
});
