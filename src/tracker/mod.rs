//! Process tracking: the address prefixes of a mapping, the per-process
//! model, the file registry, the budgets, and the manager that keeps the
//! trie equal to what the processes map.

mod api;
pub mod budget;
pub mod prefix;
pub mod process;
pub mod registry;

pub use api::Reconciled;
