//! The pprof format (profile.proto, gzipped), written from a profile and
//! read back for `pidmap diff`: mappings (one per file), functions,
//! locations (one per function) and samples with a `comm` label. The few
//! protobuf messages are encoded by hand; flate2 does the gzip.

use crate::profile::{Interner, Stack};
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

/// Reads a (gzipped or plain) pprof profile into folded stacks
/// (comm first when labelled, then functions root-first) with the first
/// sample value as count.
pub fn decode(data: &[u8]) -> Result<Vec<(Vec<String>, u64)>, String> {
    let raw = if data.starts_with(&[0x1f, 0x8b]) {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(data)
            .take(1 << 30)
            .read_to_end(&mut v)
            .map_err(|e| format!("gzip: {e}"))?;
        v
    } else {
        data.to_vec()
    };
    let top = fields(&raw)?;
    let strings: Vec<String> = top
        .iter()
        .filter(|f| f.0 == 6)
        .map(|f| String::from_utf8_lossy(f.2).into_owned())
        .collect();
    let st = |i: u64| strings.get(i as usize).cloned().unwrap_or_default();
    let mut fn_names = HashMap::new();
    for f in top.iter().filter(|f| f.0 == 5) {
        let (mut id, mut name) = (0, 0);
        for (n, v, _) in fields(f.2)? {
            match n {
                1 => id = v,
                2 => name = v,
                _ => {}
            }
        }
        fn_names.insert(id, st(name));
    }
    let mut loc_names: HashMap<u64, Vec<String>> = HashMap::new();
    for f in top.iter().filter(|f| f.0 == 4) {
        let mut id = 0;
        let mut names = Vec::new();
        for (n, v, b) in fields(f.2)? {
            match n {
                1 => id = v,
                4 => {
                    for (ln, lv, _) in fields(b)? {
                        if ln == 1 {
                            names.push(
                                fn_names
                                    .get(&lv)
                                    .cloned()
                                    .unwrap_or_else(|| "[unknown]".into()),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        loc_names.insert(id, names);
    }
    let mut out = Vec::new();
    for f in top.iter().filter(|f| f.0 == 2) {
        let (mut locs, mut values, mut comm) = (Vec::new(), Vec::new(), None);
        for (n, v, b) in fields(f.2)? {
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
        let mut stack: Vec<String> = comm.into_iter().collect();
        // locations are leaf first; inlined lines are innermost first
        for l in locs.iter().rev() {
            let names = loc_names
                .get(l)
                .cloned()
                .unwrap_or_else(|| vec!["[unknown]".into()]);
            stack.extend(names.into_iter().rev());
        }
        out.push((stack, values.first().copied().unwrap_or(0)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_gzip() {
        let stacks = vec![
            (
                "work".to_string(),
                vec![
                    ("main".to_string(), "/bin/w".to_string()),
                    ("hot".to_string(), "/bin/w".to_string()),
                ],
                7,
            ),
            (
                "work".to_string(),
                vec![
                    ("main".to_string(), "/bin/w".to_string()),
                    ("lib_hot".to_string(), "/lib/l.so".to_string()),
                ],
                3,
            ),
        ];
        let mut gz = Vec::new();
        write_gzipped(&mut gz, &stacks, 99, 1_000_000_000).unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let back = decode(&gz).unwrap();
        assert_eq!(
            back,
            vec![
                (vec!["work".to_string(), "main".into(), "hot".into()], 7),
                (vec!["work".to_string(), "main".into(), "lib_hot".into()], 3)
            ]
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(&[0x1f, 0x8b, 1, 2, 3]).is_err());
        let mut rng = crate::rng::Rng::new(0x1234_5678);
        for n in 0..20000 {
            let v: Vec<u8> = (0..(n % 64)).map(|_| rng.next_u64() as u8).collect();
            let _ = decode(&v);
        }
    }
}
