//! Pure parsers of the text the kernel exports under /proc and /sys.

pub mod maps;
