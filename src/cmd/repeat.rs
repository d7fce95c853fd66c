//! `pidmap profile --repeat N -- CMD`: the command profiled N times, one
//! profile per run (each with its own totals), then the spread of the top
//! functions over the runs: what a lab needs before it compares builds
//! with `pidmap diff BASE... -- NEW...`.

use crate::agent::Mode;
use crate::cli::{Format, ProfileArgs};
use crate::error::{Error, Result};
use crate::sampler::diff::{load_stacks, run_shares, RunShares, DEFAULT_MAX_INPUT};
use crate::sampler::stats;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The file of each run: `-o` with `{}` is a pattern (the run number
/// replaces it), else a directory (made when missing) of `run-N.EXT`.
pub fn run_paths(output: &Path, n: u32, format: Format) -> Result<Vec<PathBuf>> {
    let width = n.to_string().len();
    let num = |i: u32| format!("{i:0width$}");
    let text = output.to_string_lossy();
    if text.contains("{}") {
        return Ok((1..=n)
            .map(|i| PathBuf::from(text.replace("{}", &num(i))))
            .collect());
    }
    std::fs::create_dir_all(output).map_err(|e| {
        Error::from(e).context(format!("creating the directory {}", output.display()))
    })?;
    let ext = match format {
        Format::Folded => "folded",
        Format::Pprof => "pb.gz",
        Format::Svg => "svg",
    };
    Ok((1..=n)
        .map(|i| output.join(format!("run-{}.{ext}", num(i))))
        .collect())
}

pub fn run(p: ProfileArgs) -> Result<u8> {
    if !matches!(p.mode, Mode::Command(_)) {
        return Err(Error::new(
            "--repeat runs a command N times: give -- CMD ARGS",
        ));
    }
    let Some(output) = p.output.clone() else {
        return Err(Error::new(
            "--repeat writes one profile per run: give -o DIR (or -o a pattern with {}, \
             e.g. -o base-{}.folded)",
        ));
    };
    if p.svg.is_some() {
        return Err(Error::new(
            "--svg names one file: with --repeat give --format svg for a flame graph per run",
        ));
    }
    let paths = run_paths(&output, p.repeat, p.format)?;
    let mut done = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        eprintln!("pidmap: run {} of {}: {}", i + 1, p.repeat, path.display());
        let mut one = p.clone();
        one.repeat = 1;
        one.output = Some(path.clone());
        let code = super::profile::run(one)?;
        done.push(path.clone());
        if code != 0 {
            eprintln!(
                "pidmap: run {} ended with status {code}: stopping (a failed run measures \
                 nothing)",
                i + 1
            );
            summary(&done, p.format, p.top);
            return Ok(code);
        }
    }
    summary(&done, p.format, p.top);
    Ok(0)
}

/// The spread table on stderr (folded and pprof runs; SVG cannot be read).
fn summary(paths: &[PathBuf], format: Format, top: usize) {
    if format == Format::Svg || paths.len() < 2 || top == 0 {
        return;
    }
    let mut runs = Vec::new();
    for p in paths {
        match load_stacks(p, DEFAULT_MAX_INPUT) {
            Ok(s) => runs.push(run_shares(&s)),
            Err(e) => {
                eprintln!("pidmap: no summary: {e}");
                return;
            }
        }
    }
    eprint!("{}", spread_table(&runs, top));
}

/// Self or total shares of a run.
type Pick = fn(&RunShares) -> &HashMap<String, f64>;

/// The top functions by mean self share, with mean, standard deviation,
/// min and max over the runs of their self and total shares (in %).
pub fn spread_table(runs: &[RunShares], top: usize) -> String {
    let samples: Vec<f64> = runs.iter().map(|r| r.samples as f64).collect();
    let mut names: Vec<(&String, f64)> = runs
        .iter()
        .flat_map(|r| r.self_.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|n| {
            let v: Vec<f64> = runs
                .iter()
                .map(|r| r.self_.get(n).copied().unwrap_or(0.0))
                .collect();
            (n, stats::mean(&v))
        })
        .collect();
    names.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let mut out = format!(
        "pidmap: {} runs, {:.0} samples per run (min {:.0}, max {:.0}); the spread over \
         the runs, in % of each run's samples:\n",
        runs.len(),
        stats::mean(&samples),
        samples.iter().copied().fold(f64::INFINITY, f64::min),
        samples.iter().copied().fold(0.0, f64::max),
    );
    out.push_str(&format!(
        "{:>7} {:>6} {:>7} {:>7}  {:>7} {:>6} {:>7} {:>7}  function\n",
        "self%", "sd", "min", "max", "total%", "sd", "min", "max"
    ));
    for (n, _) in names.into_iter().take(top) {
        let mut cols = String::new();
        let picks: [Pick; 2] = [|r| &r.self_, |r| &r.total];
        for pick in picks {
            let v: Vec<f64> = runs
                .iter()
                .map(|r| pick(r).get(n).copied().unwrap_or(0.0) * 100.0)
                .collect();
            let sd = stats::mean_var(&v).map_or(0.0, |(_, var)| var.sqrt());
            cols.push_str(&format!(
                "{:>7.2} {:>6.2} {:>7.2} {:>7.2}  ",
                stats::mean(&v),
                sd,
                v.iter().copied().fold(f64::INFINITY, f64::min),
                v.iter().copied().fold(0.0, f64::max)
            ));
        }
        out.push_str(&format!("{cols}{n}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_go_to_a_directory_or_a_pattern() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("runs");
        let p = run_paths(&dir, 10, Format::Folded).unwrap();
        assert!(dir.is_dir());
        assert_eq!(p[0], dir.join("run-01.folded"));
        assert_eq!(p[9], dir.join("run-10.folded"));
        let p = run_paths(&d.path().join("base-{}.pb.gz"), 3, Format::Pprof).unwrap();
        assert_eq!(p[2], d.path().join("base-3.pb.gz"));
        assert_eq!(
            run_paths(&dir, 2, Format::Pprof).unwrap()[1],
            dir.join("run-2.pb.gz")
        );
    }

    #[test]
    fn the_spread_table_shows_mean_sd_min_max() {
        let run = |a: f64| RunShares {
            samples: 100,
            self_: [("a".to_string(), a), ("b".to_string(), 1.0 - a)].into(),
            total: [("a".to_string(), a), ("b".to_string(), 1.0 - a)].into(),
        };
        let t = spread_table(&[run(0.6), run(0.7), run(0.8)], 5);
        let mut lines = t.lines();
        assert!(lines
            .next()
            .unwrap()
            .starts_with("pidmap: 3 runs, 100 samples per run"));
        lines.next();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            ["70.00", "10.00", "60.00", "80.00", "70.00", "10.00", "60.00", "80.00", "a"]
        );
        assert!(lines.next().unwrap().ends_with(" b"));
        assert_eq!(spread_table(&[run(0.6)], 1).lines().count(), 3);
    }
}
