//! Pure parsers of the text the kernel exports under /proc and /sys.

pub(crate) mod cpus;
pub mod maps;
pub mod stat;
pub(crate) mod status;
