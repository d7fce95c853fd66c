//! ELF symbol reader: pidmap::sampler::symbolize::fuzz_one parses the input as an ELF
//! file and probes build id, segments and symbol lookups.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pidmap::sampler::symbolize::fuzz_one(data);
});
