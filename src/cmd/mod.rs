//! One file per command, on top of every other layer.

pub mod audit;
pub mod bench;
pub mod churn;
pub mod diff;
pub mod notes;
pub mod probe;
pub mod profile;
pub mod repeat;
pub mod run;
