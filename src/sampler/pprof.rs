//! The pprof format (profile.proto, gzipped), written from a profile and
//! read back for `pidmap diff`: mappings (one per file), functions,
//! locations (one per function) and samples with a `comm` label. The few
//! protobuf messages are encoded by hand; flate2 does the gzip.

use crate::sampler::profile::{Interner, Stack};
use std::collections::HashMap;

/// A decoded protobuf field: number, varint value, length-delimited bytes.
type Field<'a> = (u32, u64, &'a [u8]);
use std::io::{Read, Write};

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u32, wire: u8) {
    varint(out, ((field as u64) << 3) | wire as u64);
}

fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    if v != 0 {
        key(out, field, 0);
        varint(out, v);
    }
}

fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    key(out, field, 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn packed(out: &mut Vec<u8>, field: u32, vs: &[u64]) {
    let mut body = Vec::new();
    for &v in vs {
        varint(&mut body, v);
    }
    bytes(out, field, &body);
}

/// Encodes stacks (comm, frames root-first as (function, file), count)
/// sampled at `freq` Hz into an uncompressed profile.proto message.
pub fn encode(stacks: &[Stack], freq: u64, duration_ns: u64) -> Vec<u8> {
    let mut s = Interner::default();
    s.intern(""); // string_table[0] must be ""
    let period = 1_000_000_000 / freq.max(1);
    let mut out = Vec::new();
    for (ty, unit) in [("samples", "count"), ("cpu", "nanoseconds")] {
        let mut vt = Vec::new();
        uint(&mut vt, 1, s.intern(ty).into());
        uint(&mut vt, 2, s.intern(unit).into());
        bytes(&mut out, 1, &vt);
    }
    let mut mappings: HashMap<String, u64> = HashMap::new();
    let mut functions: HashMap<(String, String), u64> = HashMap::new();
    let mut body_fns = Vec::new();
    let mut body_locs = Vec::new();
    let mut body_maps = Vec::new();
    let comm_key = s.intern("comm").into();
    for (comm, frames, count) in stacks {
        let mut locs = Vec::with_capacity(frames.len());
        for (name, file) in frames.iter().rev() {
            let next_map = mappings.len() as u64 + 1;
            let map_id = *mappings.entry(file.clone()).or_insert_with(|| {
                let mut m = Vec::new();
                uint(&mut m, 1, next_map);
                uint(&mut m, 5, s.intern(file).into());
                uint(&mut m, 7, 1); // has_functions
                bytes(&mut body_maps, 3, &m);
                next_map
            });
            let next_fn = functions.len() as u64 + 1;
            let fid = *functions
                .entry((name.clone(), file.clone()))
                .or_insert_with(|| {
                    let mut f = Vec::new();
                    uint(&mut f, 1, next_fn);
                    uint(&mut f, 2, s.intern(name).into());
                    uint(&mut f, 3, s.intern(name).into());
                    uint(&mut f, 4, s.intern(file).into());
                    bytes(&mut body_fns, 5, &f);
                    // one location per function
                    let mut line = Vec::new();
                    uint(&mut line, 1, next_fn);
                    let mut l = Vec::new();
                    uint(&mut l, 1, next_fn);
                    uint(&mut l, 2, map_id);
                    bytes(&mut l, 4, &line);
                    bytes(&mut body_locs, 4, &l);
                    next_fn
                });
            locs.push(fid);
        }
        let mut smp = Vec::new();
        packed(&mut smp, 1, &locs);
        packed(&mut smp, 2, &[*count, count * period]);
        let mut label = Vec::new();
        uint(&mut label, 1, comm_key);
        uint(&mut label, 2, s.intern(comm).into());
        bytes(&mut smp, 3, &label);
        bytes(&mut out, 2, &smp);
    }
    out.extend_from_slice(&body_maps);
    out.extend_from_slice(&body_locs);
    out.extend_from_slice(&body_fns);
    let mut pt = Vec::new();
    uint(&mut pt, 1, s.intern("cpu").into());
    uint(&mut pt, 2, s.intern("nanoseconds").into());
    for st in s.names() {
        bytes(&mut out, 6, st.as_bytes());
    }
    uint(&mut out, 10, duration_ns);
    bytes(&mut out, 11, &pt);
    uint(&mut out, 12, period);
    out
}

/// gzip of [`encode`], what `go tool pprof` and fleet profilers ingest.
pub fn write_gzipped(
    w: &mut dyn Write,
    stacks: &[Stack],
    freq: u64,
    duration_ns: u64,
) -> std::io::Result<()> {
    let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
    gz.write_all(&encode(stacks, freq, duration_ns))?;
    gz.finish()?;
    Ok(())
}

struct Reader<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.b.get(self.p)?;
            self.p += 1;
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return Some(v);
            }
        }
        None
    }

    /// (field, wire type, varint value or length-delimited bytes)
    fn field(&mut self) -> Option<Field<'a>> {
        let k = self.varint()?;
        let (field, wire) = ((k >> 3) as u32, k & 7);
        match wire {
            0 => Some((field, self.varint()?, &[])),
            2 => {
                let n = self.varint()? as usize;
                let end = self.p.checked_add(n)?;
                let b: &'a [u8] = self.b;
                let s = b.get(self.p..end)?;
                self.p = end;
                Some((field, 0, s))
            }
            1 => {
                self.p = self.p.checked_add(8)?;
                Some((field, 0, &[]))
            }
            5 => {
                self.p = self.p.checked_add(4)?;
                Some((field, 0, &[]))
            }
            _ => None,
        }
    }

    fn done(&self) -> bool {
        self.p >= self.b.len()
    }
}

fn fields(b: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut r = Reader { b, p: 0 };
    let mut out = Vec::new();
    while !r.done() {
        out.push(r.field().ok_or("malformed protobuf")?);
    }
    Ok(out)
}

fn packed_or_single(v: u64, b: &[u8]) -> Result<Vec<u64>, String> {
    if b.is_empty() {
        return Ok(vec![v]);
    }
    let mut r = Reader { b, p: 0 };
    let mut out = Vec::new();
    while !r.done() {
        out.push(r.varint().ok_or("malformed packed field")?);
    }
    Ok(out)
}

/// Reads a (gzipped or plain) pprof profile held in memory; see
/// [`decode_from`].
#[cfg(test)]
pub fn decode(data: &[u8]) -> Result<Vec<(Vec<String>, u64)>, String> {
    decode_from(data, 1 << 30)
}

/// A budget of bytes: what is read, and what the decoded form holds.
struct Budget {
    left: u64,
    limit: u64,
}

impl Budget {
    fn charge(&mut self, n: u64) -> Result<(), String> {
        self.left = self.left.checked_sub(n).ok_or_else(|| {
            format!(
                "its decoded stacks would take more than {} bytes ({MEMORY_PER_INPUT} times --max-input); \
                 raise --max-input BYTES if the input is trusted",
                self.limit
            )
        })?;
        Ok(())
    }
}

/// How much memory the decoded form of an input may take, in multiples of
/// the input's cap: room for its strings, their copies in the stacks and
/// the overhead of each.
pub const MEMORY_PER_INPUT: u64 = 4;

/// What one decoded element costs beyond its bytes (a Vec or String
/// header and the allocator's share): charged so that many tiny fields
/// cannot hold far more memory than the input's size.
const OVERHEAD: u64 = 32;

/// The top-level fields of a Profile message, read one at a time from a
/// stream: a field number 0 or a truncated field ends the read at once.
struct TopLevel<R> {
    r: R,
    pos: u64,
    /// The most bytes the stream may hold: a length beyond it is refused
    /// before anything is read.
    limit: u64,
}

impl<R: Read> TopLevel<R> {
    fn byte(&mut self) -> Result<Option<u8>, String> {
        let mut b = [0u8];
        loop {
            return match self.r.read(&mut b) {
                Ok(0) => Ok(None),
                Ok(_) => {
                    self.pos += 1;
                    Ok(Some(b[0]))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(read_error(e)),
            };
        }
    }

    /// A varint; None at the end of the stream before its first byte.
    fn varint(&mut self) -> Result<Option<u64>, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let Some(byte) = self.byte()? else {
                return if shift == 0 {
                    Ok(None)
                } else {
                    Err(format!("truncated protobuf varint at byte {}", self.pos))
                };
            };
            v |= ((byte & 0x7f) as u64) << shift;
            if byte < 0x80 {
                return Ok(Some(v));
            }
        }
        Err(format!("malformed protobuf varint at byte {}", self.pos))
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        let got =
            std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink()).map_err(read_error)?;
        self.pos += got;
        if got < n {
            return Err(format!("truncated protobuf field at byte {}", self.pos));
        }
        Ok(())
    }

    /// The next field: (number, varint value, bytes when kept). The bytes
    /// of fields in `keep` are read (charged to `budget`), others skipped.
    fn field(
        &mut self,
        keep: &[u32],
        budget: &mut Budget,
    ) -> Result<Option<(u32, u64, Vec<u8>)>, String> {
        let at = self.pos;
        let Some(k) = self.varint()? else {
            return Ok(None);
        };
        let (field, wire) = ((k >> 3) as u32, k & 7);
        if field == 0 {
            return Err(format!("malformed protobuf: field number 0 at byte {at}"));
        }
        match wire {
            0 => {
                let v = self
                    .varint()?
                    .ok_or_else(|| format!("truncated protobuf field at byte {}", self.pos))?;
                Ok(Some((field, v, Vec::new())))
            }
            2 => {
                let n = self
                    .varint()?
                    .ok_or_else(|| format!("truncated protobuf field at byte {}", self.pos))?;
                if n > self.limit.saturating_sub(self.pos) {
                    return Err(format!(
                        "a field of {n} bytes at byte {at} runs past {} bytes (after decompression); \
                         raise --max-input BYTES if the input is trusted",
                        self.limit
                    ));
                }
                if !keep.contains(&field) {
                    self.skip(n)?;
                    return Ok(Some((field, 0, Vec::new())));
                }
                // grows with what arrives (the stream is capped), never
                // allocated from the length
                let mut b = Vec::new();
                (&mut self.r)
                    .take(n)
                    .read_to_end(&mut b)
                    .map_err(read_error)?;
                self.pos += b.len() as u64;
                if (b.len() as u64) < n {
                    return Err(format!("truncated protobuf field at byte {}", self.pos));
                }
                budget.charge(n.saturating_add(OVERHEAD))?;
                Ok(Some((field, 0, b)))
            }
            1 => self.skip(8).map(|_| Some((field, 0, Vec::new()))),
            5 => self.skip(4).map(|_| Some((field, 0, Vec::new()))),
            w => Err(format!("malformed protobuf: wire type {w} at byte {at}")),
        }
    }
}

/// An error of the underlying reader; gzip errors say so.
fn read_error(e: std::io::Error) -> String {
    match e.get_ref() {
        // a limit of the caller's reader: its message stands alone
        Some(inner) if inner.is::<InputLimit>() => inner.to_string(),
        _ => format!("gzip: {e}"),
    }
}

/// The error [`Capped`] returns when its input is over its limit; passed
/// through the decoders unchanged.
#[derive(Debug)]
pub struct InputLimit(pub String);

/// A reader that fails once more than `limit` bytes came through it.
pub struct Capped<R> {
    r: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Capped<R> {
    pub fn new(r: R, limit: u64) -> Capped<R> {
        Capped {
            r,
            left: limit,
            limit,
        }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // one byte beyond the limit is asked for, to tell "exactly at the
        // limit" from "over it"
        let want = buf
            .len()
            .min(self.left.saturating_add(1).min(usize::MAX as u64) as usize);
        let n = self.r.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(InputLimit(format!(
                "more than {} bytes (after decompression); raise --max-input BYTES if the input is trusted",
                self.limit
            ))));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

impl std::fmt::Display for InputLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputLimit {}

/// Reads a (gzipped or plain) pprof profile from a stream into folded
/// stacks (comm first when labelled, then functions root-first) with the
/// first sample value as count. The top-level message is read field by
/// field, at most `max_bytes` of it after decompression; what is kept, and
/// the stacks it decodes to, are charged to [`MEMORY_PER_INPUT`] times
/// `max_bytes`, so no input makes it hold much more than that.
#[cfg(test)]
pub fn decode_from(r: impl Read, max_bytes: u64) -> Result<Vec<(Vec<String>, u64)>, String> {
    Ok(flatten(decode_labelled_from(r, max_bytes)?))
}

/// Decoded samples as stacks of names, comm first when labelled.
pub fn flatten(v: Vec<Decoded>) -> Vec<(Vec<String>, u64)> {
    v.into_iter()
        .map(|d| {
            let mut stack: Vec<String> = d.comm.into_iter().collect();
            stack.extend(d.frames.into_iter().map(|(name, _)| name));
            (stack, d.count)
        })
        .collect()
}

/// One sample of a decoded profile: its `comm` label when it has one,
/// its frames root-first as (function, file: empty when not known), and
/// its first value.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    pub comm: Option<String>,
    pub frames: Vec<(String, String)>,
    pub count: u64,
}

/// As [`decode_from`], with the comm label apart and each function's file.
pub fn decode_labelled_from(r: impl Read, max_bytes: u64) -> Result<Vec<Decoded>, String> {
    let mut r = std::io::BufReader::new(r);
    let gz = std::io::BufRead::fill_buf(&mut r)
        .map_err(read_error)?
        .starts_with(&[0x1f, 0x8b]);
    let src: Box<dyn Read + '_> = if gz {
        // buffered: the top level is read a byte at a time
        Box::new(Capped::new(
            std::io::BufReader::new(flate2::read::GzDecoder::new(r)),
            max_bytes,
        ))
    } else {
        Box::new(Capped::new(r, max_bytes))
    };
    let mut top = TopLevel {
        r: src,
        pos: 0,
        limit: max_bytes,
    };
    let memory = max_bytes.saturating_mul(MEMORY_PER_INPUT);
    let mut budget = Budget {
        left: memory,
        limit: memory,
    };
    let (mut strings, mut functions, mut locations, mut samples) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    while let Some((n, _, b)) = top.field(&[2, 4, 5, 6], &mut budget)? {
        match n {
            2 => samples.push(b),
            4 => locations.push(b),
            5 => functions.push(b),
            6 => strings.push(String::from_utf8_lossy(&b).into_owned()),
            _ => {}
        }
    }
    let st = |i: u64| strings.get(i as usize).cloned().unwrap_or_default();
    let mut fn_names = HashMap::new();
    for f in &functions {
        let (mut id, mut name, mut file) = (0, 0, 0);
        for (n, v, _) in fields(f)? {
            match n {
                1 => id = v,
                2 => name = v,
                4 => file = v,
                _ => {}
            }
        }
        fn_names.insert(id, (st(name), st(file)));
    }
    drop(functions);
    let mut loc_names: HashMap<u64, Vec<(String, String)>> = HashMap::new();
    for f in &locations {
        let mut id = 0;
        let mut names = Vec::new();
        for (n, v, b) in fields(f)? {
            match n {
                1 => id = v,
                4 => {
                    for (ln, lv, _) in fields(b)? {
                        if ln == 1 {
                            let name = fn_names
                                .get(&lv)
                                .cloned()
                                .unwrap_or_else(|| ("[unknown]".into(), String::new()));
                            budget.charge((name.0.len() + name.1.len()) as u64 + OVERHEAD)?;
                            names.push(name);
                        }
                    }
                }
                _ => {}
            }
        }
        loc_names.insert(id, names);
    }
    drop(locations);
    let mut out = Vec::new();
    for f in &samples {
        let (mut locs, mut values, mut comm) = (Vec::new(), Vec::new(), None);
        for (n, v, b) in fields(f)? {
            match n {
                1 => locs.extend(packed_or_single(v, b)?),
                2 => values.extend(packed_or_single(v, b)?),
                3 => {
                    let (mut k, mut sv) = (0, 0);
                    for (ln, lv, _) in fields(b)? {
                        match ln {
                            1 => k = lv,
                            2 => sv = lv,
                            _ => {}
                        }
                    }
                    if st(k) == "comm" {
                        comm = Some(st(sv));
                    }
                }
                _ => {}
            }
        }
        let mut stack = Vec::new();
        // locations are leaf first; inlined lines are innermost first
        for l in locs.iter().rev() {
            let names = loc_names
                .get(l)
                .cloned()
                .unwrap_or_else(|| vec![("[unknown]".into(), String::new())]);
            // a few bytes of sample can name long stacks: charged as made
            let bytes: u64 = names
                .iter()
                .map(|n| (n.0.len() + n.1.len()) as u64 + OVERHEAD)
                .sum();
            budget.charge(bytes)?;
            stack.extend(names.into_iter().rev());
        }
        out.push(Decoded {
            comm,
            frames: stack,
            count: values.first().copied().unwrap_or(0),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
