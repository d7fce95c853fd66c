//! ELF symbol reader: pidmap::symbolize::fuzz_one parses the input as an ELF
//! file and probes build id, segments and symbol lookups.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pidmap::symbolize::fuzz_one(data);
});
