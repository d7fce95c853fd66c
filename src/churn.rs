//! `pidmap bench churn` (filled in below).
use crate::cli::BenchArgs;
use crate::error::Result;
pub fn run(_b: &BenchArgs) -> Result<()> {
    Err(crate::error::Error::new("bench churn: not built yet"))
}
