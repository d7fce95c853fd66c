//! pidmap: keeps the kernel-side table "which executable file is mapped at
//! which address of which process" exact, and samples CPUs through it.
//!
//! The tree is the architecture, one layer per directory, each using only
//! the layers above it in this list (see ARCHITECTURE.md):
//! - `sys`: every system call and every `unsafe`, one file per kernel object;
//! - `abi`: the Rust mirrors of the structs shared with the BPF program;
//! - `proc`: pure parsers of /proc and /sys text;
//! - `maps`: the BPF maps: the LPM trie engine, the pinned tables, audit;
//! - `tracker`: processes: prefixes, the per-process model, the manager;
//! - `sampler`: profiles from samples: symbolize, fold, pprof, diff;
//! - `agent`: the event loop, its control handle, the file worker, metrics;
//! - `cmd`: one file per command, on top; `cli` parses the command line.
//!
//! Beside the layers, used by all of them: `error` (the crate's error),
//! `counters` (the process-wide counters), `ratelimit` (rate-limited
//! warnings) and `rng` (a small deterministic generator).

pub mod abi;
pub mod agent;
pub mod cli;
pub mod cmd;
pub mod counters;
pub mod error;
pub mod maps;
pub mod proc;
pub(crate) mod ratelimit;
pub mod rng;
pub mod sampler;
pub mod sys;
pub mod text;
pub mod tracker;
pub mod worker;
