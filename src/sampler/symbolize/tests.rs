//! Tests of `symbolize`.

use super::test_util::*;
use super::*;
use std::process::Command;

#[test]
fn demangle_cases() {
    assert_eq!(
        demangle("_ZN4core3fmt5write17h0123456789abcdefE"),
        "core::fmt::write"
    );
    assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
    assert_eq!(demangle("_ZN3foo3barEv"), "foo::bar()");
    assert_eq!(demangle("main"), "main");
    assert_eq!(demangle("_Zgarbage"), "_Zgarbage");
    assert_eq!(demangle(""), "");
}

#[test]
fn crc32_known_vector() {
    let dir = scratch_dir("crc");
    let f = dir.join("v");
    std::fs::write(&f, b"123456789").unwrap();
    assert_eq!(crc32_of(&File::open(&f).unwrap()), Some(0xcbf4_3926));
    std::fs::write(&f, b"").unwrap();
    assert_eq!(crc32_of(&File::open(&f).unwrap()), Some(0));
    // more than one chunk
    let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(&f, &big).unwrap();
    assert_eq!(
        crc32_of(&File::open(&f).unwrap()),
        Some(crc32fast::hash(&big))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Makes every directory under `dir` (and `dir`) mode 0755.
fn not_writable_by_others(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            not_writable_by_others(&e.path());
        }
    }
}

/// Debug lookups trusting only directories under `dir` owned by us.
fn debug_dirs(dir: &Path, root: &Path) -> DebugDirs {
    DebugDirs {
        root: root.to_path_buf(),
        trust: Trust {
            anchor: dir.to_path_buf(),
            owner: crate::sys::fs::euid(),
        },
    }
}

#[test]
fn kallsyms_parsing() {
    let text = "ffffffff81000000 T _stext\n\
                ffffffff81000100 t helper\n\
                ffffffff81000050 D some_data\n\
                garbage line\n\
                zzzz T bad_addr\n\
                ffffffffc0000000 t mod_fn\t[mymod]\n\
                ffffffff81000200 W weak_fn\n\
                ffffffff81000300\n";
    let ks = KernelSymbols::parse(text);
    assert_eq!(ks.len(), 4);
    assert_eq!(ks.lookup(0xffffffff81000000), Some("_stext"));
    assert_eq!(ks.lookup(0xffffffff81000050), Some("_stext"));
    assert_eq!(ks.lookup(0xffffffff81000150), Some("helper"));
    assert_eq!(ks.lookup(0xffffffff81000250), Some("weak_fn"));
    assert_eq!(ks.lookup(0xffffffffc0000010), Some("mod_fn [mymod]"));
    assert_eq!(ks.lookup(0x1000), None);
    let hidden = KernelSymbols::parse("0000000000000000 T _stext\n0000000000000000 t x\n");
    assert!(hidden.is_empty());
}

#[test]
fn elf_lookup_strip_and_debuglink() {
    let Some(prog) = test_prog() else { return };
    let dir = scratch_dir("elf");
    let hot = func_offset(prog, "hot_function");
    let other = func_offset(prog, "other_function");

    let syms = ElfSymbols::from_file(&File::open(prog).unwrap(), prog.to_str().unwrap()).unwrap();
    assert_eq!(syms.lookup(hot + 1), Some("hot_function"));
    assert_eq!(syms.lookup(other), Some("other_function"));
    assert_eq!(syms.lookup(u64::MAX), None);

    // Stripped, no debug info reachable: no name, no panic.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let stripped = bin.join("prog.stripped");
    assert!(run(Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&stripped)
        .arg(prog)));
    let empty_root = dir.join("empty-root");
    let s = ElfSymbols::from_file_with_debug(
        &File::open(&stripped).unwrap(),
        stripped.to_str().unwrap(),
        &debug_dirs(&dir, &empty_root),
    )
    .unwrap();
    assert_eq!(s.lookup(hot + 1), None);
    assert_eq!(s.build_id(), syms.build_id());

    // Separate debug file found via .gnu_debuglink under <root>/<dir>/.
    let debug = dir.join("prog.debug");
    assert!(run(Command::new("objcopy")
        .arg("--only-keep-debug")
        .arg(prog)
        .arg(&debug)));
    let linked = bin.join("prog.linked");
    assert!(run(Command::new("objcopy")
        .arg(format!("--add-gnu-debuglink={}", debug.display()))
        .arg(&stripped)
        .arg(&linked)));
    let root = dir.join("root");
    let target = root.join(bin.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&target).unwrap();
    std::fs::copy(&debug, target.join("prog.debug")).unwrap();
    not_writable_by_others(&dir);
    let open_with = |dirs: &DebugDirs| {
        ElfSymbols::from_file_with_debug(
            &File::open(&linked).unwrap(),
            linked.to_str().unwrap(),
            dirs,
        )
        .unwrap()
    };
    let open_linked = || open_with(&debug_dirs(&dir, &root));
    assert_eq!(open_linked().lookup(hot + 1), Some("hot_function"));

    // Not followed where directories are not trusted: another owner ...
    let mut others = debug_dirs(&dir, &root);
    others.trust.owner += 1;
    let untrusted = crate::counters::COUNTERS.snapshot().debug_files_untrusted;
    assert_eq!(open_with(&others).lookup(hot + 1), None);
    assert!(crate::counters::COUNTERS.snapshot().debug_files_untrusted > untrusted);
    // ... or the production rule, since /tmp is writable by all
    if dir.starts_with("/tmp") {
        assert_eq!(
            open_with(&DebugDirs {
                root: root.clone(),
                trust: Trust::default()
            })
            .lookup(hot + 1),
            None
        );
    }
    // A debug link naming a FIFO (beside the binary) is not opened.
    let fifo = bin.join("prog.debug");
    crate::sys::fs::mkfifo(&fifo, 0o644).unwrap();
    let not_regular = crate::counters::COUNTERS.snapshot().files_not_regular;
    let (tx, rx) = crossbeam_channel::bounded(1);
    let dirs = debug_dirs(&dir, &root);
    let (l, n) = (linked.clone(), linked.to_str().unwrap().to_string());
    std::thread::spawn(move || {
        let s = ElfSymbols::from_file_with_debug(&File::open(&l).unwrap(), &n, &dirs);
        let _ = tx.send(s.and_then(|s| s.lookup(hot + 1).map(str::to_string)));
    });
    let got = rx
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("a FIFO named by .gnu_debuglink blocked the lookup");
    assert_eq!(
        got.as_deref(),
        Some("hot_function"),
        "the next candidate is used"
    );
    assert!(crate::counters::COUNTERS.snapshot().files_not_regular > not_regular);
    std::fs::remove_file(&fifo).unwrap();

    // A CRC mismatch must reject the debug file.
    let mut bytes = std::fs::read(&debug).unwrap();
    bytes.push(0);
    std::fs::write(target.join("prog.debug"), &bytes).unwrap();
    assert_eq!(open_linked().lookup(hot + 1), None);

    // Build-id lookup under <root>/.build-id/.
    if let Some(id) = syms.build_id() {
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let p = dir.join("bid-root/.build-id").join(&hex[..2]);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::copy(&debug, p.join(format!("{}.debug", &hex[2..]))).unwrap();
        not_writable_by_others(&dir);
        let s = ElfSymbols::from_file_with_debug(
            &File::open(&stripped).unwrap(),
            "prog.stripped",
            &debug_dirs(&dir, &dir.join("bid-root")),
        )
        .unwrap();
        assert_eq!(s.lookup(hot + 1), Some("hot_function"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A section header claiming more than the cap (in a sparse file that
/// is that long) is refused before anything is allocated or read.
#[test]
fn a_section_over_the_cap_is_not_read() {
    let Some(prog) = test_prog() else { return };
    let hot = func_offset(prog, "hot_function");
    let dir = scratch_dir("cap");
    let big = dir.join("big");
    std::fs::copy(prog, &big).unwrap();
    let data = std::fs::read(&big).unwrap();
    let elf = object::File::parse(&*data).unwrap();
    let symtab = elf.section_by_name(".symtab").unwrap().index().0 as u64;
    let shoff = u64::from_le_bytes(data[0x28..0x30].try_into().unwrap());
    let shentsize = u64::from(u16::from_le_bytes(data[0x3a..0x3c].try_into().unwrap()));
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    // whole symbols (24 bytes each), just over the cap
    let size = (MAX_SECTION / 24 + 1) * 24;
    f.write_all_at(&size.to_le_bytes(), shoff + symtab * shentsize + 32)
        .unwrap();
    f.set_len(size + 2 * data.len() as u64).unwrap();
    drop(f);
    let t = std::time::Instant::now();
    let s = ElfSymbols::from_file(&File::open(&big).unwrap(), big.to_str().unwrap());
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(s.and_then(|s| s.lookup(hot + 1).map(str::to_string)), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn garbage_is_rejected() {
    assert!(ElfSymbols::from_bytes(b"", "x").is_none());
    assert!(ElfSymbols::from_bytes(b"\x7fELF\x02\x01\x01", "x").is_none());
    assert!(ElfSymbols::from_bytes(&[0xab; 4096], "x").is_none());
    if let Some(prog) = test_prog() {
        let data = std::fs::read(prog).unwrap();
        for len in [16, 64, 100, data.len() / 2, data.len() - 1] {
            if let Some(s) = ElfSymbols::from_bytes(&data[..len], "x") {
                let _ = s.lookup(0x1100);
            }
        }
    }
}

#[test]
fn fuzz_20k() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let seed = test_prog().and_then(|p| std::fs::read(p).ok());
    for i in 0..20_000 {
        let data: Vec<u8> = match &seed {
            Some(seed) if i % 8 != 0 => {
                let mut d = seed.clone();
                for _ in 0..1 + next() % 8 {
                    // Headers and section/symbol tables are where parsers break.
                    let pos = match next() % 3 {
                        0 => next() % 64,
                        1 => d.len() as u64 - 1 - next() % 4096.min(d.len() as u64),
                        _ => next() % d.len() as u64,
                    } as usize;
                    d[pos] = match next() % 4 {
                        0 => 0,
                        1 => 0xff,
                        2 => 0x80,
                        _ => next() as u8,
                    };
                }
                if next() % 4 == 0 {
                    d.truncate((next() % d.len() as u64) as usize);
                }
                d
            }
            _ => {
                let mut d: Vec<u8> = (0..next() % 2048).map(|_| next() as u8).collect();
                if d.len() >= 4 && next() % 2 == 0 {
                    d[..4].copy_from_slice(b"\x7fELF");
                }
                d
            }
        };
        fuzz_one(&data);
    }
}
