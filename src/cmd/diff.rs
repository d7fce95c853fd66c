//! `pidmap diff`: the functions whose share of the samples changed most
//! between two profiles (folded or pprof).

use crate::error::Result;
use crate::sampler::diff::{changes, load_capped};
use std::path::Path;

/// Prints the top changes; exit status 1 when one exceeds `threshold`
/// percentage points, else 0.
pub fn run(base: &Path, new: &Path, threshold: f64, top: usize, max_input: u64) -> Result<u8> {
    let (a, b) = (load_capped(base, max_input)?, load_capped(new, max_input)?);
    let ch = changes(&a, &b);
    println!("{:>8} {:>8} {:>8}  function", "base%", "new%", "delta");
    for c in ch.iter().take(top) {
        println!(
            "{:>8.2} {:>8.2} {:>+8.2}  {}",
            c.base * 100.0,
            c.new * 100.0,
            c.delta() * 100.0,
            c.function
        );
    }
    let worst = ch.first().map_or(0.0, |c| c.delta().abs() * 100.0);
    if worst > threshold {
        eprintln!(
            "pidmap diff: {} changed by {:.2} points (threshold {threshold})",
            ch[0].function, worst
        );
        return Ok(1);
    }
    Ok(0)
}
