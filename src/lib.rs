//! pidmap: keeps the kernel-side table "which executable file is mapped at
//! which address of which process" exact, and samples CPUs through it.

pub mod abi;
pub mod agent;
pub mod audit;
pub mod audit_cmd;
pub mod bench;
pub mod budget;
pub mod churn;
pub mod cli;
pub mod counters;
pub mod diff;
pub mod engine;
pub mod error;
pub mod files;
pub mod loader;
pub mod metrics;
pub mod pprof;
pub mod prefix;
pub mod process;
pub mod procmaps;
pub mod profile;
pub mod profile_cmd;
pub mod ratelimit;
pub mod registry;
pub mod rng;
pub mod symbolize;
pub mod sys;
pub mod tables;
