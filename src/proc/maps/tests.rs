//! Tests of `maps`.

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
    let e = ok("7ffd4b1f2000-7ffd4b1f4000 r-xp 00000000 00:00 0                          [vdso]");
    assert!(e.is_vdso());
    assert_eq!(e.path, MapsPath::Vdso);
    assert!(!e.is_exec_file());
}

#[test]
fn vsyscall_top_of_address_space() {
    let e =
        ok("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]");
    assert_eq!(e.start, 0xffff_ffff_ff60_0000);
    assert_eq!(e.end, 0xffff_ffff_ff60_1000);
    assert_eq!(e.path, MapsPath::Pseudo("[vsyscall]".into()));
    assert!(!e.perms.read && e.perms.exec);
}

#[test]
fn anon_named() {
    let e = ok(
        "7f1c2e600000-7f1c2e800000 rw-p 00000000 00:00 0                          [anon:some name]",
    );
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
    let e = ok("5581f6d4e000-5581f6d6f000 rw-p 00000000 00:00 0                          [heap]");
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
