//! `pidmap diff`: profiles of a base build against profiles of a new one
//! (folded or pprof, one per run): what changed beyond the noise of runs.

use crate::cli::{DiffArgs, DiffFormat};
use crate::error::{Error, Result};
use crate::sampler::diff::{
    comms, compare_scaled, filter, load_stacks, mean_stacks, run_shares, RunShares, Stack,
};
use crate::sampler::diff_report;
use std::io::Write;
use std::path::PathBuf;

/// Reads one side's profiles, filtered, one at a time: each run's shares,
/// and its stacks only when the flame graph needs them (an input may
/// decode to 4 times --max-input: runs are not held together otherwise).
fn side(paths: &[PathBuf], a: &DiffArgs) -> Result<(Vec<RunShares>, Vec<Vec<Stack>>)> {
    let (mut shares, mut stacks) = (Vec::new(), Vec::new());
    for p in paths {
        let s = filter(load_stacks(p, a.max_input)?, &a.filters);
        shares.push(run_shares(&s));
        if a.format == DiffFormat::Svg {
            stacks.push(s);
        }
    }
    Ok((shares, stacks))
}

/// Writes the report; exit status 1 when a function changed (beyond the
/// threshold and, with several runs a side, significant), else 0.
pub fn run(a: &DiffArgs) -> Result<u8> {
    let ((bs, base), (ns, new)) = (side(&a.base, a)?, side(&a.new, a)?);
    for (paths, s) in [(&a.base, &bs), (&a.new, &ns)] {
        for (p, r) in paths.iter().zip(s) {
            if r.samples == 0 {
                let why = if a.filters.is_empty() {
                    "it holds no samples"
                } else {
                    "the filters keep none of its samples"
                };
                return Err(Error::new(format!(
                    "{}: {why}: nothing to compare",
                    p.display()
                )));
            }
        }
    }
    let report = compare_scaled(&bs, &ns, a.threshold, a.alpha, a.scale);
    if !report.significance() {
        eprintln!(
            "pidmap diff: {} base and {} new: no significance can be computed (that needs \
             two or more runs a side); a change beyond --threshold counts as changed. For a \
             test across runs: pidmap diff BASE... -- NEW...",
            crate::text::counted(a.base.len() as u64, "profile", "profiles"),
            crate::text::counted(a.new.len() as u64, "profile", "profiles"),
        );
    }
    let write = |w: &mut dyn Write| -> std::io::Result<()> {
        match a.format {
            DiffFormat::Text => w.write_all(diff_report::text(&report, a.top).as_bytes())?,
            DiffFormat::Json => w.write_all(diff_report::json(&report, a.top).as_bytes())?,
            DiffFormat::Markdown => {
                w.write_all(diff_report::markdown(&report, a.top).as_bytes())?
            }
            DiffFormat::Svg => {
                let scale = report.new_samples.iter().sum::<u64>() as f64
                    / report.new_samples.len().max(1) as f64;
                // processes named after their build (bench-old, bench-new)
                // would draw two towers: without comms they are one
                let with_comm = comms(&base) == comms(&new);
                if !with_comm {
                    eprintln!(
                        "pidmap diff: the two sides' process names differ: the flame graph \
                         starts at the functions, not at the process names"
                    );
                }
                diff_report::svg(
                    &mean_stacks(&base, with_comm),
                    &mean_stacks(&new, with_comm),
                    scale,
                    a.reverse,
                    w,
                )?
            }
        }
        w.flush()
    };
    match &a.output {
        Some(path) => {
            let f = std::fs::File::create(path)
                .map_err(|e| Error::from(e).context(format!("creating {}", path.display())))?;
            write(&mut std::io::BufWriter::new(f))
                .map_err(|e| Error::from(e).context(format!("writing {}", path.display())))?;
        }
        None => write(&mut std::io::stdout().lock())?,
    }
    let changed: Vec<&str> = report
        .rows
        .iter()
        .filter(|r| r.changed())
        .map(|r| r.function.as_str())
        .collect();
    if changed.is_empty() {
        return Ok(0);
    }
    eprintln!(
        "pidmap diff: {} changed: {}",
        crate::text::counted(changed.len() as u64, "function", "functions"),
        changed.join(", ")
    );
    Ok(1)
}
