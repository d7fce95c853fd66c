//! Parser for Linux `/proc/PID/maps`.
//!
//! Owns the text format only: turning the bytes the kernel emits into
//! [`MapsEntry`] values. It never reads files itself, never panics on any
//! input, and keeps going past malformed lines so that one odd line (a racing
//! kernel, a truncated read) does not hide the rest of a process's mappings.

use std::fmt;

/// Access bits of a mapping, as shown in the 4-character perms column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// `s` (shared) rather than `p` (private, copy-on-write).
    pub shared: bool,
}

impl fmt::Display for Perms {
    /// Renders the kernel's form, e.g. `r-xp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = if self.read { 'r' } else { '-' };
        let w = if self.write { 'w' } else { '-' };
        let x = if self.exec { 'x' } else { '-' };
        let s = if self.shared { 's' } else { 'p' };
        write!(f, "{r}{w}{x}{s}")
    }
}

/// What backs a mapping, classified from the trailing path column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MapsPath {
    /// No path column at all.
    Anonymous,
    /// A filesystem path (also kernel names such as `anon_inode:...` or
    /// `/SYSV00000000`). `deleted` means the kernel appended ` (deleted)`,
    /// which is stripped from `path`.
    File { path: String, deleted: bool },
    /// `[vdso]`.
    Vdso,
    /// Any other bracketed name, kept verbatim including the brackets:
    /// `[heap]`, `[stack]`, `[vvar]`, `[vsyscall]`, `[anon:name]`, ...
    Pseudo(String),
    /// `/memfd:NAME`; `name` excludes the `/memfd:` prefix and ` (deleted)`.
    Memfd { name: String, deleted: bool },
}

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MapsEntry {
    pub start: u64,
    /// Exclusive; always greater than `start`.
    pub end: u64,
    pub perms: Perms,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    pub path: MapsPath,
}

/// A device number from its major and minor in the Linux userspace
/// `makedev` encoding (what `stat(2)` reports as `st_dev`).
pub fn makedev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (u64::from(major), u64::from(minor));
    ((major & 0x0000_0fff) << 8)
        | ((major & 0xffff_f000) << 32)
        | (minor & 0x0000_00ff)
        | ((minor & 0xffff_ff00) << 12)
}

impl MapsEntry {
    /// Device number in the Linux userspace `makedev` encoding, so it compares
    /// equal to `st_dev` from `stat(2)` on the mapped file.
    pub fn dev(&self) -> u64 {
        makedev(self.dev_major, self.dev_minor)
    }

    /// True for executable mappings that are backed by a real inode, i.e.
    /// code worth symbolising from a file; excludes JIT and other anonymous
    /// executable memory.
    pub fn is_exec_file(&self) -> bool {
        self.perms.exec
            && self.inode != 0
            && matches!(self.path, MapsPath::File { .. } | MapsPath::Memfd { .. })
    }

    pub fn is_vdso(&self) -> bool {
        matches!(self.path, MapsPath::Vdso)
    }
}

/// A malformed line found by [`parse_maps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number within the input.
    pub line_no: usize,
    /// The offending line, lossily decoded and cut to 200 characters so a
    /// hostile input cannot blow up log lines.
    pub line: String,
    pub what: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "maps line {}: {}: {:?}",
            self.line_no, self.what, self.line
        )
    }
}

impl std::error::Error for ParseError {}

const MAX_ERROR_LINE_CHARS: usize = 200;
const DELETED_SUFFIX: &[u8] = b" (deleted)";
const MEMFD_PREFIX: &[u8] = b"/memfd:";

/// Parses one maps line. A single trailing `\n` is ignored.
pub fn parse_line(line: &[u8]) -> Result<MapsEntry, &'static str> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let mut cur = Cursor { rest: line };

    let range = cur.field().ok_or("missing address range")?;
    let (start, end) = parse_range(range).ok_or("bad address range")?;
    if end <= start {
        return Err("end address not above start");
    }

    let perms = parse_perms(cur.field().ok_or("missing perms")?).ok_or("bad perms")?;
    let offset = parse_hex_u64(cur.field().ok_or("missing offset")?).ok_or("bad offset")?;
    let (dev_major, dev_minor) =
        parse_dev(cur.field().ok_or("missing device")?).ok_or("bad device")?;
    let inode = parse_dec_u64(cur.field().ok_or("missing inode")?).ok_or("bad inode")?;

    // The kernel pads after the inode so paths line up in a column; paths may
    // themselves contain spaces, so everything after that padding is the path.
    let path = classify_path(cur.skip_spaces());

    Ok(MapsEntry {
        start,
        end,
        perms,
        offset,
        dev_major,
        dev_minor,
        inode,
        path,
    })
}

/// Parses a whole maps file. Every well-formed line is returned even when
/// others are malformed; empty lines are skipped.
pub fn parse_maps(data: &[u8]) -> (Vec<MapsEntry>, Vec<ParseError>) {
    let mut entries = Vec::new();
    let mut errors = Vec::new();
    for (idx, line) in data.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok(e) => entries.push(e),
            Err(what) => errors.push(ParseError {
                line_no: idx.saturating_add(1),
                line: String::from_utf8_lossy(line)
                    .chars()
                    .take(MAX_ERROR_LINE_CHARS)
                    .collect(),
                what,
            }),
        }
    }
    (entries, errors)
}

/// Fuzzing entry point: parses `data` and asserts the module's invariants.
/// Panics only if the parser itself is wrong.
pub fn fuzz_one(data: &[u8]) {
    let (entries, errors) = parse_maps(data);
    let lines = data.split(|&b| b == b'\n').count();
    assert!(entries.len().saturating_add(errors.len()) <= lines);
    for e in &entries {
        assert!(e.end > e.start, "entry with end <= start: {e:?}");
        assert_eq!(parse_line(&format_like_kernel(e)).as_ref(), Ok(e));
    }
    let mut prev = 0;
    for err in &errors {
        assert!(err.line_no > prev, "error line numbers not increasing");
        prev = err.line_no;
        assert!(err.line.chars().count() <= MAX_ERROR_LINE_CHARS);
        assert!(!err.what.is_empty());
    }
}

/// Re-renders an entry the way the kernel would; used by [`fuzz_one`] to check
/// that whatever was accepted survives a round trip.
fn format_like_kernel(e: &MapsEntry) -> Vec<u8> {
    let mut s = format!(
        "{:08x}-{:08x} {} {:08x} {:02x}:{:02x} {} ",
        e.start, e.end, e.perms, e.offset, e.dev_major, e.dev_minor, e.inode
    );
    let deleted = |d: bool| if d { " (deleted)" } else { "" };
    match &e.path {
        MapsPath::Anonymous => {}
        MapsPath::File { path, deleted: d } => {
            s.push_str(path);
            s.push_str(deleted(*d));
        }
        MapsPath::Vdso => s.push_str("[vdso]"),
        MapsPath::Pseudo(p) => s.push_str(p),
        MapsPath::Memfd { name, deleted: d } => {
            s.push_str("/memfd:");
            s.push_str(name);
            s.push_str(deleted(*d));
        }
    }
    s.into_bytes()
}

struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn skip_spaces(&mut self) -> &'a [u8] {
        let n = self.rest.iter().take_while(|&&b| b == b' ').count();
        self.rest = self.rest.get(n..).unwrap_or_default();
        self.rest
    }

    /// Next space-delimited field, or `None` if the line ran out.
    fn field(&mut self) -> Option<&'a [u8]> {
        let rest = self.skip_spaces();
        let n = rest.iter().take_while(|&&b| b != b' ').count();
        if n == 0 {
            return None;
        }
        let (field, tail) = rest.split_at_checked(n)?;
        self.rest = tail;
        Some(field)
    }
}

fn parse_range(field: &[u8]) -> Option<(u64, u64)> {
    let (start, end) = split_once(field, b'-')?;
    Some((parse_hex_u64(start)?, parse_hex_u64(end)?))
}

fn parse_perms(field: &[u8]) -> Option<Perms> {
    let &[r, w, x, s] = field else {
        return None;
    };
    let flag = |b: u8, yes: u8| match b {
        _ if b == yes => Some(true),
        b'-' => Some(false),
        _ => None,
    };
    Some(Perms {
        read: flag(r, b'r')?,
        write: flag(w, b'w')?,
        exec: flag(x, b'x')?,
        shared: match s {
            b's' => true,
            b'p' => false,
            _ => return None,
        },
    })
}

fn parse_dev(field: &[u8]) -> Option<(u32, u32)> {
    let (major, minor) = split_once(field, b':')?;
    Some((parse_hex_u32(major)?, parse_hex_u32(minor)?))
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let mut parts = s.splitn(2, |&b| b == sep);
    Some((parts.next()?, parts.next()?))
}

/// Hex without prefix or sign; length-capped so overlong input is rejected
/// rather than silently wrapped.
fn parse_hex_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let d = char::from(b).to_digit(16)?;
        Some((acc << 4) | u64::from(d))
    })
}

fn parse_hex_u32(s: &[u8]) -> Option<u32> {
    if s.len() > 8 {
        return None;
    }
    parse_hex_u64(s).and_then(|v| u32::try_from(v).ok())
}

fn parse_dec_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let d = char::from(b).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// What backs a mapping, from its path column (or a PROCMAP_QUERY name).
pub fn classify_path(raw: &[u8]) -> MapsPath {
    if raw.is_empty() {
        return MapsPath::Anonymous;
    }
    if raw.first() == Some(&b'[') && raw.last() == Some(&b']') {
        if raw == b"[vdso]" {
            return MapsPath::Vdso;
        }
        return MapsPath::Pseudo(String::from_utf8_lossy(raw).into_owned());
    }
    let (body, deleted) = match raw.strip_suffix(DELETED_SUFFIX) {
        Some(b) => (b, true),
        None => (raw, false),
    };
    match body.strip_prefix(MEMFD_PREFIX) {
        Some(name) => MapsPath::Memfd {
            name: String::from_utf8_lossy(name).into_owned(),
            deleted,
        },
        None => MapsPath::File {
            path: String::from_utf8_lossy(body).into_owned(),
            deleted,
        },
    }
}

#[cfg(test)]
mod tests;
