//! The BPF maps: the LPM trie engine, the pinned tables, their audit, and
//! loading the BPF object.

pub(crate) mod audit;
pub mod engine;
pub mod features;
pub mod loader;
pub mod tables;
pub mod vmas;
