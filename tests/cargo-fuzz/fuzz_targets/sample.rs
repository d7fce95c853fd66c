//! Raw sample records as the BPF program emits them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(s) = pidmap::abi::Sample::parse(data) {
        // Same check as the stable harness in tests/fuzz.rs.
        assert!(s.user.len() <= 127 && s.kernel.len() <= 127);
    }
});
