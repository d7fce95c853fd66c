//! Profiles from samples: attribution and folding, symbolization, the pprof
//! output, and the diff of two profiles.

pub mod diff;
pub(crate) mod pprof;
pub mod profile;
pub mod symbolize;
pub mod unwind;
