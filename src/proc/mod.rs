//! Pure parsers of the text the kernel exports under /proc and /sys.

pub mod cpus;
pub mod maps;
pub mod stat;
pub mod status;
