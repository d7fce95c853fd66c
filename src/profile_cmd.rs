//! `pidmap profile` (filled in below).
use crate::cli::ProfileArgs;
use crate::error::Result;
pub fn run(_p: ProfileArgs) -> Result<u8> {
    Err(crate::error::Error::new("profile: not built yet"))
}
