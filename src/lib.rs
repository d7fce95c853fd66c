//! pidmap: keeps the kernel-side table "which executable file is mapped at
//! which address of which process" exact, and samples CPUs through it.

pub mod abi;
pub mod counters;
pub mod engine;
pub mod prefix;
pub mod procmaps;
pub mod sys;
