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

impl MapsEntry {
    /// Device number in the Linux userspace `makedev` encoding, so it compares
    /// equal to `st_dev` from `stat(2)` on the mapped file.
    pub fn dev(&self) -> u64 {
        let major = u64::from(self.dev_major);
        let minor = u64::from(self.dev_minor);
        ((major & 0x0000_0fff) << 8)
            | ((major & 0xffff_f000) << 32)
            | (minor & 0x0000_00ff)
            | ((minor & 0xffff_ff00) << 12)
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

fn classify_path(raw: &[u8]) -> MapsPath {
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
mod tests {
    use super::*;

    fn ok(line: &str) -> MapsEntry {
        match parse_line(line.as_bytes()) {
            Ok(e) => e,
            Err(e) => panic!("{line:?} failed: {e}"),
        }
    }

    fn file(path: &str, deleted: bool) -> MapsPath {
        MapsPath::File {
            path: path.to_string(),
            deleted,
        }
    }

    #[test]
    fn libc_text() {
        let e = ok("7f3a1c228000-7f3a1c3bd000 r-xp 00028000 fd:01 1837203                    /usr/lib/x86_64-linux-gnu/libc.so.6\n");
        assert_eq!(
            e,
            MapsEntry {
                start: 0x7f3a_1c22_8000,
                end: 0x7f3a_1c3b_d000,
                perms: Perms {
                    read: true,
                    write: false,
                    exec: true,
                    shared: false
                },
                offset: 0x28000,
                dev_major: 0xfd,
                dev_minor: 1,
                inode: 1_837_203,
                path: file("/usr/lib/x86_64-linux-gnu/libc.so.6", false),
            }
        );
        assert!(e.is_exec_file());
        assert!(!e.is_vdso());
        assert_eq!(e.perms.to_string(), "r-xp");
    }

    #[test]
    fn path_with_spaces() {
        let e = ok("7f0000001000-7f0000002000 r--s 00000000 08:02 42                         /home/u/My Files/a  b.bin ");
        assert_eq!(e.path, file("/home/u/My Files/a  b.bin ", false));
        assert!(e.perms.shared);
    }

    #[test]
    fn deleted_file() {
        let e = ok("55d0c0a00000-55d0c0a20000 r-xp 00002000 103:05 917510                    /opt/app/bin/server (deleted)");
        assert_eq!(e.path, file("/opt/app/bin/server", true));
        assert_eq!((e.dev_major, e.dev_minor), (0x103, 5));
        assert!(e.is_exec_file());
    }

    #[test]
    fn vdso() {
        let e =
            ok("7ffd4b1f2000-7ffd4b1f4000 r-xp 00000000 00:00 0                          [vdso]");
        assert!(e.is_vdso());
        assert_eq!(e.path, MapsPath::Vdso);
        assert!(!e.is_exec_file());
    }

    #[test]
    fn vsyscall_top_of_address_space() {
        let e = ok(
            "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]",
        );
        assert_eq!(e.start, 0xffff_ffff_ff60_0000);
        assert_eq!(e.end, 0xffff_ffff_ff60_1000);
        assert_eq!(e.path, MapsPath::Pseudo("[vsyscall]".into()));
        assert!(!e.perms.read && e.perms.exec);
    }

    #[test]
    fn anon_named() {
        let e = ok("7f1c2e600000-7f1c2e800000 rw-p 00000000 00:00 0                          [anon:some name]");
        assert_eq!(e.path, MapsPath::Pseudo("[anon:some name]".into()));
    }

    #[test]
    fn memfd_deleted() {
        let e = ok("7f9a8b000000-7f9a8b001000 r-xs 00000000 00:01 2049                       /memfd:foo (deleted)");
        assert_eq!(
            e.path,
            MapsPath::Memfd {
                name: "foo".into(),
                deleted: true
            }
        );
        assert!(e.is_exec_file());
        let e = ok("7f9a8b000000-7f9a8b001000 r-xs 00000000 00:01 0 /memfd:foo");
        assert!(!e.is_exec_file(), "memfd with inode 0 is not file-backed");
    }

    #[test]
    fn anonymous_no_path() {
        // The kernel leaves a trailing space after the inode.
        let e = ok("7f3a1c3f0000-7f3a1c3fd000 rw-p 00000000 00:00 0 \n");
        assert_eq!(e.path, MapsPath::Anonymous);
        let e = ok("7f3a1c3f0000-7f3a1c3fd000 rw-p 00000000 00:00 0");
        assert_eq!(e.path, MapsPath::Anonymous);
    }

    #[test]
    fn heap() {
        let e =
            ok("5581f6d4e000-5581f6d6f000 rw-p 00000000 00:00 0                          [heap]");
        assert_eq!(e.path, MapsPath::Pseudo("[heap]".into()));
    }

    #[test]
    fn jit_exec_anonymous() {
        let e = ok("3d8f4a200000-3d8f4a280000 rwxp 00000000 00:00 0 ");
        assert!(e.perms.exec && e.perms.write);
        assert_eq!(e.inode, 0);
        assert!(!e.is_exec_file());
    }

    #[test]
    fn invalid_utf8_path() {
        let e = parse_line(b"1000-2000 r--p 00000000 08:01 7 /tmp/\xffx").unwrap();
        assert_eq!(e.path, file("/tmp/\u{fffd}x", false));
    }

    #[test]
    fn dev_matches_makedev() {
        let mut e = ok("1000-2000 r--p 00000000 fd:01 7 /x");
        assert_eq!(e.dev(), 0xfd01);
        e.dev_major = 0x1234;
        e.dev_minor = 0x12_3456;
        // Expected values produced by glibc's makedev().
        assert_eq!(e.dev(), 0x1001_2342_3456);
        e.dev_major = 0xffff_f123;
        e.dev_minor = 0xffff_fff0;
        assert_eq!(e.dev(), 0xffff_ffff_fff1_23f0);
    }

    #[test]
    fn malformed_lines() {
        let cases: &[(&[u8], &str)] = &[
            (b"zz-10 r-xp 00000000 00:00 0", "bad address range"),
            (b"1000-2000 r-xp 0000zz00 00:00 0", "bad offset"),
            (
                b"2000-2000 r-xp 00000000 00:00 0",
                "end address not above start",
            ),
            (
                b"3000-2000 r-xp 00000000 00:00 0",
                "end address not above start",
            ),
            (b"1000-2000 r-x 00000000 00:00 0", "bad perms"),
            (b"1000-2000 r-xpp 00000000 00:00 0", "bad perms"),
            (b"1000-2000 rwxq 00000000 00:00 0", "bad perms"),
            (b"1000-2000 r-xp 00000000 00:00", "missing inode"),
            (b"1000-2000 r-xp", "missing offset"),
            (b"1000-2000", "missing perms"),
            (b"", "missing address range"),
            (b"   ", "missing address range"),
            (
                b"10000000000000000-10000000000000001 r-xp 00000000 00:00 0",
                "bad address range",
            ),
            (b"1000-2000 r-xp 00000000000000000 00:00 0", "bad offset"),
            (b"1000-2000 r-xp 00000000 0000 0", "bad device"),
            (b"1000-2000 r-xp 00000000 100000000:00 0", "bad device"),
            (
                b"1000-2000 r-xp 00000000 00:00 18446744073709551616",
                "bad inode",
            ),
            (b"1000-2000 r-xp 00000000 00:00 -1", "bad inode"),
            (b"\xff\xfe\x00garbage", "bad address range"),
            (b"-2000 r-xp 00000000 00:00 0", "bad address range"),
            (b"+1000-2000 r-xp 00000000 00:00 0", "bad address range"),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_line(line),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        assert_eq!(
            parse_line(b"1000-2000 r-xp 00000000 00:00 18446744073709551615").map(|e| e.inode),
            Ok(u64::MAX)
        );
    }

    #[test]
    fn parse_maps_keeps_healthy_lines() {
        let data = b"00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon\n\
            \n\
            zz-10 r-xp 00000000 00:00 0\n\
            00651000-00652000 r--p 00051000 08:02 173521      /usr/bin/dbus-daemon\n\
            \xff\xff\xff\n\
            7fff6ac4f000-7fff6ac70000 rw-p 00000000 00:00 0                          [stack]\n";
        let (entries, errors) = parse_maps(data);
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].path, MapsPath::Pseudo("[stack]".into()));
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].line_no, 3);
        assert_eq!(errors[0].what, "bad address range");
        assert_eq!(errors[0].line, "zz-10 r-xp 00000000 00:00 0");
        assert_eq!(
            errors[0].to_string(),
            "maps line 3: bad address range: \"zz-10 r-xp 00000000 00:00 0\""
        );
        assert_eq!(errors[1].line_no, 5);
        assert_eq!(errors[1].line, "\u{fffd}\u{fffd}\u{fffd}");
    }

    #[test]
    fn error_line_truncated() {
        let long = "x".repeat(1000);
        let (_, errors) = parse_maps(long.as_bytes());
        assert_eq!(errors[0].line.chars().count(), 200);
    }

    use crate::rng::Rng;

    #[test]
    fn prop_random_bytes_never_panic() {
        const ALPHABET: &[u8] = b"0123456789abcdefABCDEF-- ::/[]rwxps\n";
        let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
        let mut buf = Vec::with_capacity(200);
        for _ in 0..200_000 {
            buf.clear();
            let len = rng.below(200);
            for _ in 0..len {
                let b = if rng.below(8) == 0 {
                    rng.next_u64() as u8
                } else {
                    rng.pick(ALPHABET)
                };
                buf.push(b);
            }
            fuzz_one(&buf);
        }
    }

    #[test]
    fn fuzz_one_on_valid_and_invalid_samples() {
        fuzz_one(b"");
        fuzz_one(b"\n\n");
        fuzz_one(b"ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]\n");
        fuzz_one(b"1000-2000 r-xp 00000000 00:00 0 /a (deleted) (deleted)\n");
    }

    fn random_text(rng: &mut Rng, max: u64) -> String {
        // No parentheses, so a random name can never fake a " (deleted)" suffix.
        const CHARS: &[char] = &[
            'a', 'Z', '0', '.', '_', '-', ' ', '/', ':', '[', ']', 'é', '字',
        ];
        (0..rng.below(max)).map(|_| rng.pick(CHARS)).collect()
    }

    fn random_path(rng: &mut Rng) -> MapsPath {
        match rng.below(6) {
            0 => MapsPath::Anonymous,
            1 => MapsPath::Vdso,
            2 => {
                let inner = random_text(rng, 20);
                let p = format!("[{inner}]");
                if p == "[vdso]" {
                    MapsPath::Vdso
                } else {
                    MapsPath::Pseudo(p)
                }
            }
            3 => MapsPath::Memfd {
                name: random_text(rng, 20),
                deleted: rng.bool(),
            },
            _ => {
                let mut path = format!("/{}", random_text(rng, 40));
                if path.starts_with("/memfd:") {
                    path.insert(1, 'x');
                }
                MapsPath::File {
                    path,
                    deleted: rng.bool(),
                }
            }
        }
    }

    fn kernel_line(e: &MapsEntry, pad: usize) -> String {
        let mut s = format!(
            "{:08x}-{:08x} {} {:08x} {:02x}:{:02x} {}",
            e.start, e.end, e.perms, e.offset, e.dev_major, e.dev_minor, e.inode
        );
        let del = |d: bool| if d { " (deleted)" } else { "" };
        let tail = match &e.path {
            MapsPath::Anonymous => String::new(),
            MapsPath::File { path, deleted } => format!("{path}{}", del(*deleted)),
            MapsPath::Vdso => "[vdso]".to_string(),
            MapsPath::Pseudo(p) => p.clone(),
            MapsPath::Memfd { name, deleted } => format!("/memfd:{name}{}", del(*deleted)),
        };
        s.push_str(&" ".repeat(pad));
        s.push_str(&tail);
        s
    }

    #[test]
    fn prop_round_trip() {
        let mut rng = Rng::new(0x0123_4567_89ab_cdef);
        let mut text = String::new();
        let mut want = Vec::new();
        for _ in 0..20_000 {
            let start = match rng.below(4) {
                0 => rng.below(1 << 32),
                _ => rng.next_u64() >> rng.below(64),
            }
            .min(u64::MAX - 1);
            let end = start + 1 + rng.below(u64::MAX - start);
            let e = MapsEntry {
                start,
                end,
                perms: Perms {
                    read: rng.bool(),
                    write: rng.bool(),
                    exec: rng.bool(),
                    shared: rng.bool(),
                },
                offset: rng.next_u64() >> rng.below(64),
                dev_major: (rng.next_u64() >> rng.below(64)) as u32,
                dev_minor: (rng.next_u64() >> rng.below(64)) as u32,
                inode: rng.next_u64() >> rng.below(64),
                path: random_path(&mut rng),
            };
            let pad = if e.path == MapsPath::Anonymous {
                rng.below(30) as usize
            } else {
                1 + rng.below(29) as usize
            };
            let line = kernel_line(&e, pad);
            assert_eq!(parse_line(line.as_bytes()).as_ref(), Ok(&e), "{line:?}");
            text.push_str(&line);
            text.push('\n');
            want.push(e);
        }
        let (got, errors) = parse_maps(text.as_bytes());
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(got, want);
        fuzz_one(text.as_bytes());
    }
}
