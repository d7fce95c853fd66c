//! Folded stacks read back (`comm;outer;...;leaf count`, one stack a
//! line): what `pidmap diff` reads, streamed and capped.

use std::collections::HashMap;

/// Parses folded stacks (`a;b;c count`); the count follows the last space.
pub fn parse_folded(text: &str) -> Result<Vec<(Vec<String>, u64)>, String> {
    parse_folded_from(text.as_bytes(), u64::MAX)
}

/// The longest line [`parse_folded_from`] accepts: a stack of thousands
/// of long frames fits many times over; a file with no newline does not.
pub const MAX_FOLDED_LINE: usize = 4 << 20;

/// Parses folded stacks from a stream, line by line: a line longer than
/// [`MAX_FOLDED_LINE`] is an error, and the stacks held (names plus a
/// fixed overhead per frame) may not exceed
/// [`MEMORY_PER_INPUT`](crate::sampler::pprof::MEMORY_PER_INPUT) times `max_bytes`.
pub fn parse_folded_from(
    r: impl std::io::Read,
    max_bytes: u64,
) -> Result<Vec<(Vec<String>, u64)>, String> {
    use std::io::{BufRead, Read};
    let mut r = std::io::BufReader::new(r);
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut held = 0u64;
    let memory = max_bytes.saturating_mul(crate::sampler::pprof::MEMORY_PER_INPUT);
    for i in 1.. {
        buf.clear();
        let n = (&mut r)
            .take(MAX_FOLDED_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|e| match e.get_ref() {
                Some(inner) if inner.is::<crate::sampler::pprof::InputLimit>() => inner.to_string(),
                _ => format!("reading line {i}: {e}"),
            })?;
        if n == 0 {
            break;
        }
        if buf.len() > MAX_FOLDED_LINE {
            return Err(format!(
                "line {i} is longer than {} MiB: not folded stacks",
                MAX_FOLDED_LINE >> 20
            ));
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let (stack, count) = line
            .rsplit_once(' ')
            .ok_or_else(|| format!("line {i}: missing count"))?;
        let count = count
            .parse::<u64>()
            .map_err(|e| format!("line {i}: bad count {count:?}: {e}"))?;
        if stack.is_empty() {
            return Err(format!("line {i}: empty stack"));
        }
        let frames: Vec<String> = stack.split(';').map(str::to_string).collect();
        held = held.saturating_add(frames.iter().map(|f| f.len() as u64 + 32).sum::<u64>());
        if held > memory {
            return Err(format!(
                "its stacks would take more than {memory} bytes ({} times --max-input); \
                 raise --max-input BYTES if the input is trusted",
                crate::sampler::pprof::MEMORY_PER_INPUT
            ));
        }
        out.push((frames, count));
    }
    Ok(out)
}

/// Share (0..1) of all counts whose leaf (last element) is each name.
pub fn leaf_shares(stacks: &[(Vec<String>, u64)]) -> HashMap<String, f64> {
    let total: u64 = stacks.iter().map(|s| s.1).sum();
    let mut shares = HashMap::new();
    for (stack, count) in stacks {
        if let Some(leaf) = stack.last() {
            *shares.entry(leaf.clone()).or_insert(0.0) += *count as f64;
        }
    }
    shares.values_mut().for_each(|v| *v /= total.max(1) as f64);
    shares
}
