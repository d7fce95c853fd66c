//! Pure parsers of the text the kernel exports under /proc and /sys.

pub(crate) mod cpus;
pub(crate) mod locks;
pub mod maps;
pub mod stat;
pub(crate) mod status;
