//! `pidmap diff BASE NEW`: the functions whose share of samples changed
//! most between two profiles (folded text or pprof), for regression labs.
//!
//! The inputs are untrusted (DESIGN §9): they are streamed, capped after
//! decompression (`--max-input`), and what they decode to is capped too.

use crate::counters::{self, COUNTERS};
use crate::error::{Error, Result};
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
    } else {
        crate::sampler::pprof::decode_from(input, max_input)
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

/// Self share of each function (the leaf of each stack), in 0..1.
pub fn self_shares(stacks: &[(Vec<String>, u64)]) -> HashMap<String, f64> {
    crate::sampler::profile::leaf_shares(stacks)
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
