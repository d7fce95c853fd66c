//! Profiles from samples: attribution and folding, symbolization, the pprof
//! output, and the diff of two profiles.

pub mod diff;
pub mod diff_report;
pub mod folded;
pub mod pattern;
pub(crate) mod pprof;
pub mod profile;
pub mod stats;
pub mod symbolize;
pub mod unwind;
