//! Process tracking: the address prefixes of a mapping, the per-process
//! model, the file registry, the budgets, and the manager that keeps the
//! trie equal to what the processes map.

mod api;
pub(crate) mod budget;
pub mod maps_read;
pub(crate) mod prefix;
pub mod process;
pub(crate) mod registry;

pub use api::Reconciled;
pub use registry::{file_id, Born, Change};
