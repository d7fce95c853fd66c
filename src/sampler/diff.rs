//! `pidmap diff BASE NEW`: the functions whose share of samples changed
//! most between two profiles (folded text or pprof), for regression labs.
//!
//! The inputs are untrusted (DESIGN §9): they are streamed, capped after
//! decompression (`--max-input`), and what they decode to is capped too.

use crate::counters::{self, COUNTERS};
use crate::error::{Error, Result};
use crate::sampler::pattern::Filters;
use crate::sampler::stats;
use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most bytes an input may hold after decompression, unless
/// `--max-input` says otherwise.
pub const DEFAULT_MAX_INPUT: u64 = 1 << 30;

/// Opens an input without blocking on it or letting it become our
/// terminal: a regular file or a pipe (given on the command line: the
/// user's own choice, so a FIFO is then opened again to wait for its
/// writer); a device, directory or socket is refused.
fn open_input(path: &Path) -> Result<std::fs::File> {
    let named = |e: std::io::Error| Error::from(e).context(format!("reading {}", path.display()));
    let open = |flags: i32| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC | flags)
            .open(path)
    };
    let f = open(libc::O_NONBLOCK).map_err(named)?;
    let ft = f.metadata().map_err(named)?.file_type();
    if ft.is_file() {
        return Ok(f);
    }
    if ft.is_fifo() {
        return open(0).map_err(named);
    }
    let what = if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_dir() {
        "a directory"
    } else {
        "a socket"
    };
    counters::add(&COUNTERS.inputs_refused, 1);
    Err(Error::new(format!(
        "{} is {what}, not a profile: give a regular file or a pipe",
        path.display()
    )))
}

/// Reads folded stacks or a (gzipped) pprof profile, as [`load_capped`]
/// with the default cap.
pub fn load(path: &Path) -> Result<Vec<(Vec<String>, u64)>> {
    load_capped(path, DEFAULT_MAX_INPUT)
}

/// Reads folded stacks or a (gzipped) pprof profile, streamed: at most
/// `max_input` bytes after decompression, and no more than that held in
/// memory for its stacks.
pub fn load_capped(path: &Path, max_input: u64) -> Result<Vec<(Vec<String>, u64)>> {
    Ok(match read_input(path, max_input)? {
        Raw::Folded(v) => v,
        Raw::Pprof(v) => crate::sampler::pprof::flatten(v),
    })
}

/// An input as read, before names are matched.
enum Raw {
    Folded(Vec<(Vec<String>, u64)>),
    Pprof(Vec<crate::sampler::pprof::Decoded>),
}

fn read_input(path: &Path, max_input: u64) -> Result<Raw> {
    let mut f = open_input(path)?;
    // the first bytes decide the format: gzip, else text without control
    // characters is folded, else raw protobuf
    let mut head = Vec::new();
    (&mut f)
        .take(4096)
        .read_to_end(&mut head)
        .map_err(|e| Error::from(e).context(format!("reading {}", path.display())))?;
    if head.is_empty() {
        return Err(Error::new(format!(
            "{} is empty, not a folded or pprof profile: nothing to compare",
            path.display()
        )));
    }
    let text = match std::str::from_utf8(&head) {
        Ok(t) => Some(t),
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    let folded = !head.starts_with(&[0x1f, 0x8b])
        && text.is_some_and(|t| !t.chars().any(|c| c.is_control() && !"\t\r\n".contains(c)));
    if text.is_some_and(looks_like_svg) {
        return Err(Error::new(format!(
            "{} is an SVG, not a folded or pprof profile: give diff the output of \
             `pidmap profile --format folded` or `--format pprof`",
            path.display()
        )));
    }
    let input = std::io::Cursor::new(head).chain(f);
    let r = if folded {
        crate::sampler::profile::parse_folded_from(
            crate::sampler::pprof::Capped::new(input, max_input),
            max_input,
        )
        .map(Raw::Folded)
    } else {
        crate::sampler::pprof::decode_labelled_from(input, max_input).map(Raw::Pprof)
    };
    r.map_err(|e| {
        if e.contains("--max-input") || e.contains("longer than") {
            counters::add(&COUNTERS.inputs_refused, 1);
        }
        Error::new(format!("{}: {e}", path.display()))
    })
}

/// Whether the start of a text input is an SVG (or other XML) document.
fn looks_like_svg(head: &str) -> bool {
    let t = head.trim_start_matches('\u{feff}').trim_start();
    t.starts_with("<?xml") || t.starts_with("<svg") || t.starts_with("<!DOCTYPE svg")
}

/// One frame as diff matches it: the function's name with any address
/// stripped, and the file when the input says (pprof: the function's
/// file; folded: `FILE+0xOFFSET` frames, and `[kernel]` for `_[k]` ones).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frame {
    pub name: String,
    pub file: Option<String>,
}

/// One stack of an input: its comm (folded: the first of two or more
/// frames; pprof: the `comm` label), frames root-first, count.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    pub comm: Option<String>,
    pub frames: Vec<Frame>,
    pub count: u64,
}

/// The name a frame is matched by: `NAME+0xOFFSET` is `NAME` (a symbol
/// with its offset is the symbol; an unsymbolized frame is its file,
/// since offsets move between builds); a bare address is `[unknown]`.
/// Also returns the address-stripped part when one was stripped.
pub fn match_name(name: &str) -> (String, bool) {
    let is_hex = |h: &str| !h.is_empty() && h.bytes().all(|b| b.is_ascii_hexdigit());
    if let Some(h) = name.strip_prefix("0x") {
        if is_hex(h) {
            return ("[unknown]".into(), false);
        }
    }
    match name.rsplit_once("+0x") {
        Some((n, h)) if is_hex(h) && !n.is_empty() => (n.to_string(), true),
        _ => (name.to_string(), false),
    }
}

fn folded_frame(name: &str) -> Frame {
    if name.ends_with("_[k]") {
        return Frame {
            name: name.to_string(),
            file: Some("[kernel]".into()),
        };
    }
    let (n, stripped) = match_name(name);
    Frame {
        file: stripped.then(|| n.clone()),
        name: n,
    }
}

/// Reads one input into stacks as diff matches them.
pub fn load_stacks(path: &Path, max_input: u64) -> Result<Vec<Stack>> {
    Ok(match read_input(path, max_input)? {
        Raw::Folded(v) => v
            .into_iter()
            .map(|(mut names, count)| {
                let comm = (names.len() >= 2).then(|| names.remove(0));
                Stack {
                    comm,
                    frames: names.iter().map(|n| folded_frame(n)).collect(),
                    count,
                }
            })
            .collect(),
        Raw::Pprof(v) => v
            .into_iter()
            .map(|d| Stack {
                comm: d.comm,
                frames: d
                    .frames
                    .into_iter()
                    .map(|(name, file)| Frame {
                        name: match_name(&name).0,
                        file: (!file.is_empty()).then_some(file),
                    })
                    .collect(),
                count: d.count,
            })
            .collect(),
    })
}

/// The stacks the filters keep.
pub fn filter(stacks: Vec<Stack>, f: &Filters) -> Vec<Stack> {
    if f.is_empty() {
        return stacks;
    }
    stacks
        .into_iter()
        .filter(|s| {
            f.keeps(
                s.comm.as_deref(),
                s.frames
                    .iter()
                    .map(|fr| (fr.name.as_str(), fr.file.as_deref())),
            )
        })
        .collect()
}

/// The shares of one run: self (the function is the leaf) and total
/// (the function is anywhere in the stack, counted once per stack), in
/// 0..1 of the run's samples.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunShares {
    pub samples: u64,
    pub self_: HashMap<String, f64>,
    pub total: HashMap<String, f64>,
}

pub fn run_shares(stacks: &[Stack]) -> RunShares {
    let mut r = RunShares::default();
    let mut seen: Vec<&str> = Vec::new();
    for s in stacks {
        r.samples += s.count;
        let Some(leaf) = s.frames.last() else {
            continue;
        };
        *r.self_.entry(leaf.name.clone()).or_default() += s.count as f64;
        seen.clear();
        seen.extend(s.frames.iter().map(|f| f.name.as_str()));
        seen.sort_unstable();
        seen.dedup();
        for n in &seen {
            *r.total.entry(n.to_string()).or_default() += s.count as f64;
        }
    }
    let total = r.samples.max(1) as f64;
    r.self_.values_mut().for_each(|v| *v /= total);
    r.total.values_mut().for_each(|v| *v /= total);
    r
}

/// One measure (self or total share) of one function on both sides.
#[derive(Clone, Debug, PartialEq)]
pub struct Measure {
    /// The share in each run, 0..1.
    pub base_runs: Vec<f64>,
    pub new_runs: Vec<f64>,
    /// The means.
    pub base: f64,
    pub new: f64,
    /// Welch's two-sided p-value; `None` with one run on a side.
    pub p: Option<f64>,
    /// The change is beyond the threshold.
    pub beyond: bool,
    /// Beyond the threshold and significant (or beyond it, with one run
    /// a side, where no test can be made).
    pub changed: bool,
}

impl Measure {
    fn new(base_runs: Vec<f64>, new_runs: Vec<f64>, threshold: f64, alpha: f64) -> Measure {
        let (base, new) = (stats::mean(&base_runs), stats::mean(&new_runs));
        let p = stats::welch(&base_runs, &new_runs).map(|w| w.p);
        let beyond = (new - base).abs() * 100.0 > threshold;
        Measure {
            changed: beyond && p.is_none_or(|p| p < alpha),
            base_runs,
            new_runs,
            base,
            new,
            p,
            beyond,
        }
    }

    /// The change in percentage points.
    pub fn delta_points(&self) -> f64 {
        (self.new - self.base) * 100.0
    }

    /// new / base; `None` when base is 0.
    pub fn ratio(&self) -> Option<f64> {
        (self.base > 0.0).then(|| self.new / self.base)
    }
}

/// Where a function was seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Both,
    BaseOnly,
    NewOnly,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub function: String,
    pub presence: Presence,
    pub self_: Measure,
    pub total: Measure,
}

impl Row {
    pub fn changed(&self) -> bool {
        self.self_.changed || self.total.changed
    }

    /// The largest ratio of the measures that changed (a function new
    /// in NEW: infinite), for sorting.
    fn growth(&self) -> f64 {
        [&self.self_, &self.total]
            .into_iter()
            .filter(|m| m.changed)
            .map(|m| m.ratio().unwrap_or(f64::INFINITY))
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// The larger change of the two measures, in points (for sorting).
    fn size(&self) -> f64 {
        self.self_
            .delta_points()
            .abs()
            .max(self.total.delta_points().abs())
    }
}

/// The comparison of two sets of runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub base_samples: Vec<u64>,
    pub new_samples: Vec<u64>,
    pub threshold: f64,
    pub alpha: f64,
    /// Changed rows first, the largest growth first; then by the size of
    /// the change.
    pub rows: Vec<Row>,
    pub scale: Scale,
}

impl Report {
    /// Whether a test across runs was made (2 runs or more a side).
    pub fn significance(&self) -> bool {
        self.base_samples.len() >= 2 && self.new_samples.len() >= 2
    }

    pub fn changed(&self) -> usize {
        self.rows.iter().filter(|r| r.changed()).count()
    }
}

/// What a function's value in one run is a share of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// The run's own samples: for runs of a fixed duration. Shares sum to
    /// 100 %, so when one function grows every other one's share shrinks
    /// by the same ratio.
    Run,
    /// The base runs' mean number of samples: for runs of a fixed amount
    /// of work (a benchmark), where a function's samples measure its CPU
    /// time; a function that did not change keeps its value while another
    /// grows.
    Base,
}

/// As [`compare`], with each run's shares taken of `scale`'s samples.
pub fn compare_scaled(
    base: &[RunShares],
    new: &[RunShares],
    threshold: f64,
    alpha: f64,
    scale: Scale,
) -> Report {
    if scale == Scale::Run {
        return compare(base, new, threshold, alpha);
    }
    let mean = stats::mean(&base.iter().map(|r| r.samples as f64).collect::<Vec<_>>());
    let rescale = |side: &[RunShares]| {
        side.iter()
            .map(|r| {
                let k = r.samples as f64 / mean.max(1.0);
                let mut r = r.clone();
                r.self_.values_mut().for_each(|v| *v *= k);
                r.total.values_mut().for_each(|v| *v *= k);
                r
            })
            .collect::<Vec<_>>()
    };
    let mut r = compare(&rescale(base), &rescale(new), threshold, alpha);
    r.scale = scale;
    r
}

/// Compares every function of either side: the mean of its per-run
/// shares, their change, and Welch's t-test across the runs.
pub fn compare(base: &[RunShares], new: &[RunShares], threshold: f64, alpha: f64) -> Report {
    let names: BTreeSet<&String> = base
        .iter()
        .chain(new)
        .flat_map(|r| r.total.keys())
        .collect();
    let runs = |side: &[RunShares], pick: fn(&RunShares) -> &HashMap<String, f64>, n: &str| {
        side.iter()
            .map(|r| pick(r).get(n).copied().unwrap_or(0.0))
            .collect::<Vec<f64>>()
    };
    let seen = |side: &[RunShares], n: &str| side.iter().any(|r| r.total.contains_key(n));
    let mut rows: Vec<Row> = names
        .into_iter()
        .map(|n| {
            let presence = match (seen(base, n), seen(new, n)) {
                (true, true) => Presence::Both,
                (true, false) => Presence::BaseOnly,
                _ => Presence::NewOnly,
            };
            Row {
                function: n.clone(),
                presence,
                self_: Measure::new(
                    runs(base, |r| &r.self_, n),
                    runs(new, |r| &r.self_, n),
                    threshold,
                    alpha,
                ),
                total: Measure::new(
                    runs(base, |r| &r.total, n),
                    runs(new, |r| &r.total, n),
                    threshold,
                    alpha,
                ),
            }
        })
        .collect();
    // changed rows first, the largest growth first (what got slower is
    // what a lab looks for: new functions, then the highest ratio, then
    // what shrank, what vanished last); the others by size of change
    rows.sort_by(|a, b| {
        b.changed()
            .cmp(&a.changed())
            .then_with(|| {
                if a.changed() && b.changed() {
                    b.growth().total_cmp(&a.growth())
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .then(b.size().total_cmp(&a.size()))
            .then(a.function.cmp(&b.function))
    });
    Report {
        base_samples: base.iter().map(|r| r.samples).collect(),
        new_samples: new.iter().map(|r| r.samples).collect(),
        threshold,
        alpha,
        rows,
        scale: Scale::Run,
    }
}

/// The comms of a side's stacks.
pub fn comms(runs: &[Vec<Stack>]) -> BTreeSet<&str> {
    runs.iter()
        .flatten()
        .filter_map(|s| s.comm.as_deref())
        .collect()
}

/// The mean share (0..1) of each distinct stack over a side's runs, keyed
/// by its folded line (`comm;outer;...;leaf`, without the comm unless
/// `with_comm`: two builds' processes are often named after them), for
/// the differential flame graph.
pub fn mean_stacks(runs: &[Vec<Stack>], with_comm: bool) -> HashMap<String, f64> {
    let mut out: HashMap<String, f64> = HashMap::new();
    for run in runs {
        let total: u64 = run.iter().map(|s| s.count).sum();
        for s in run {
            let comm = s.comm.as_ref().filter(|_| with_comm);
            let mut line = comm.cloned().unwrap_or_default();
            for (i, f) in s.frames.iter().enumerate() {
                if i > 0 || comm.is_some() {
                    line.push(';');
                }
                line.push_str(&f.name);
            }
            *out.entry(line).or_default() +=
                s.count as f64 / total.max(1) as f64 / runs.len() as f64;
        }
    }
    out
}

#[cfg(test)]
mod tests;
