//! Perf ring reader over a heap ring built from the input (layout in the doc
//! comment of pidmap::sys::perf_ring::fuzz_one).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pidmap::sys::perf_ring::fuzz_one(data);
});
