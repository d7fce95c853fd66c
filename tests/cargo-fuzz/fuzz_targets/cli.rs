//! Command-line parser: the input is split at NUL bytes into arguments
//! (arbitrary bytes, not necessarily UTF-8) after a fixed "pidmap" argv[0].
#![no_main]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let argv: Vec<OsString> = std::iter::once(OsString::from("pidmap"))
        .chain(
            data.split(|&b| b == 0)
                .map(|a| OsStr::from_bytes(a).to_os_string()),
        )
        .collect();
    let _ = pidmap::cli::parse(argv);
});
