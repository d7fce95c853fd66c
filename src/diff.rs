//! `pidmap diff BASE NEW`: the functions whose share of samples changed
//! most between two profiles (folded text or pprof), for regression labs.

use crate::error::{Error, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Reads folded stacks or a (gzipped) pprof profile.
pub fn load(path: &Path) -> Result<Vec<(Vec<String>, u64)>> {
    let data =
        std::fs::read(path).map_err(|e| Error::new(format!("reading {}: {e}", path.display())))?;
    let looks_pprof = data.starts_with(&[0x1f, 0x8b]) || std::str::from_utf8(&data).is_err();
    let r = if looks_pprof {
        crate::pprof::decode(&data)
    } else {
        crate::profile::parse_folded(&String::from_utf8_lossy(&data))
    };
    r.map_err(|e| Error::new(format!("{}: {e}", path.display())))
}

/// Self share of each function (the leaf of each stack), in 0..1.
pub fn self_shares(stacks: &[(Vec<String>, u64)]) -> HashMap<String, f64> {
    crate::profile::leaf_shares(stacks)
}

#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub function: String,
    pub base: f64,
    pub new: f64,
}

impl Change {
    pub fn delta(&self) -> f64 {
        self.new - self.base
    }
}

/// Every function of either profile, largest absolute change first.
pub fn changes(base: &[(Vec<String>, u64)], new: &[(Vec<String>, u64)]) -> Vec<Change> {
    let (a, b) = (self_shares(base), self_shares(new));
    let names: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out: Vec<Change> = names
        .into_iter()
        .map(|n| Change {
            function: n.clone(),
            base: a.get(n).copied().unwrap_or(0.0),
            new: b.get(n).copied().unwrap_or(0.0),
        })
        .collect();
    out.sort_by(|x, y| {
        y.delta()
            .abs()
            .total_cmp(&x.delta().abs())
            .then(x.function.cmp(&y.function))
    });
    out
}

/// Prints the top changes; exit status 1 when one exceeds `threshold`
/// percentage points, else 0.
pub fn run(base: &Path, new: &Path, threshold: f64, top: usize) -> Result<u8> {
    let (a, b) = (load(base)?, load(new)?);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str], n: u64) -> (Vec<String>, u64) {
        (v.iter().map(|x| x.to_string()).collect(), n)
    }

    #[test]
    fn largest_changes_first() {
        let base = vec![s(&["w", "main", "a"], 50), s(&["w", "main", "b"], 50)];
        let new = vec![
            s(&["w", "main", "a"], 80),
            s(&["w", "main", "b"], 10),
            s(&["w", "c"], 10),
        ];
        let ch = changes(&base, &new);
        assert_eq!(ch[0].function, "b");
        assert!((ch[0].delta() + 0.4).abs() < 1e-9);
        assert_eq!(ch[1].function, "a");
        assert_eq!(ch[2].function, "c");
        assert!((ch[2].base - 0.0).abs() < 1e-12);
    }
}
