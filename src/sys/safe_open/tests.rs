//! Tests of `safe_open`.

use super::*;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

fn scratch(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("pidmap-open-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `f` on a thread and fails instead of hanging when it blocks.
fn without_blocking<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} blocked"))
}

fn ids(p: &Path) -> (u64, u64) {
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.dev(), m.ino())
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: c is a valid path string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0);
}

/// The outcome through openat2 and through the walk.
fn both_ways(path: &Path, want: Option<(u64, u64)>) -> [Kind; 2] {
    let p = path.to_path_buf();
    let a = without_blocking("openat2", move || kind(&open_path(&p, want)));
    let p = path.to_path_buf();
    let b = without_blocking("walk", move || kind(&open_path_by_walk(&p, want)));
    [a, b]
}

#[derive(Debug, PartialEq)]
enum Kind {
    Opened,
    NotRegular,
    Mismatch,
    Gone,
    Untrusted,
    Error,
}

fn kind(o: &OpenOutcome) -> Kind {
    match o {
        OpenOutcome::Opened(_) => Kind::Opened,
        OpenOutcome::NotRegular => Kind::NotRegular,
        OpenOutcome::Mismatch => Kind::Mismatch,
        OpenOutcome::Gone => Kind::Gone,
        OpenOutcome::Untrusted(_) => Kind::Untrusted,
        OpenOutcome::Error(_) => Kind::Error,
    }
}

#[test]
fn only_regular_files_with_the_right_identity_open() {
    let d = scratch("kinds");
    let reg = d.join("lib.so");
    std::fs::write(&reg, b"\x7fELF contents").unwrap();
    let id = ids(&reg);
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    let link = d.join("link");
    std::os::unix::fs::symlink(&reg, &link).unwrap();
    let via_dir_link = d.join("dirlink");
    std::os::unix::fs::symlink(&d, &via_dir_link).unwrap();
    use Kind::*;
    assert_eq!(both_ways(&reg, Some(id)), [Opened, Opened]);
    match open_path(&reg, Some(id)) {
        OpenOutcome::Opened(mut f) => {
            let mut s = String::new();
            f.read_to_string(&mut s).unwrap();
            assert_eq!(s, "\x7fELF contents");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(both_ways(&fifo, Some(ids(&fifo))), [NotRegular, NotRegular]);
    assert_eq!(both_ways(&fifo, None), [NotRegular, NotRegular]);
    assert_eq!(both_ways(&link, Some(id)), [NotRegular, NotRegular]);
    // a symlinked directory on the way is refused too
    let via = via_dir_link.join("lib.so");
    assert_eq!(both_ways(&via, Some(id)), [NotRegular, NotRegular]);
    assert_eq!(both_ways(&d, None), [NotRegular, NotRegular]);
    let null = Path::new("/dev/null");
    assert_eq!(both_ways(null, Some(ids(null))), [NotRegular, NotRegular]);
    assert_eq!(
        both_ways(&reg, Some((id.0, id.1 + 1))),
        [Mismatch, Mismatch]
    );
    assert_eq!(
        both_ways(&reg, Some((id.0 + 1, id.1))),
        [Mismatch, Mismatch]
    );
    assert_eq!(both_ways(&d.join("nope"), Some(id)), [Gone, Gone]);
    assert_eq!(kind(&open_path(Path::new("rel/x"), None)), Error);
    assert_eq!(kind(&open_path(&d.join("../x"), None)), Error);
    // the ENOSYS fallback is the walk
    crate::sys::fake::open::openat2_missing_on(true);
    assert_eq!(kind(&open_path(&link, Some(id))), Kind::NotRegular);
    assert_eq!(kind(&open_path(&reg, Some(id))), Kind::Opened);
    crate::sys::fake::open::openat2_missing_on(false);
    let _ = std::fs::remove_dir_all(&d);
}

/// A mapping of our own, opened through map_files even after its path
/// became a FIFO; a deleted mapping is never opened by its path.
#[test]
fn mappings_open_through_map_files_and_deleted_ones_never_by_path() {
    let d = scratch("mapped");
    let reg = d.join("lib.so");
    std::fs::write(&reg, vec![7u8; 8192]).unwrap();
    let id = ids(&reg);
    let f = File::open(&reg).unwrap();
    // SAFETY: a fresh private read-only mapping of an open file; it is
    // unmapped below and never dereferenced.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let start = addr as u64;
    let m = MappedFile {
        pid: std::process::id(),
        start,
        end: start + 8192,
        dev: id.0,
        ino: id.1,
        path: reg.display().to_string(),
        deleted: false,
    };
    let map_files_usable =
        std::fs::metadata(format!("/proc/self/map_files/{:x}-{:x}", m.start, m.end)).is_ok();
    assert_eq!(kind(&open_mapped(&m)), Kind::Opened);
    // another file than the maps line's: refused both ways
    let other = MappedFile {
        ino: m.ino + 1,
        ..m.clone()
    };
    assert_eq!(kind(&open_mapped(&other)), Kind::Mismatch);
    // the path becomes a FIFO, the mapping shows as deleted
    std::fs::remove_file(&reg).unwrap();
    mkfifo(&reg);
    let deleted = MappedFile {
        deleted: true,
        ..m.clone()
    };
    let mc = deleted.clone();
    let got = without_blocking("open_mapped", move || kind(&open_mapped(&mc)));
    if map_files_usable {
        assert_eq!(got, Kind::Opened, "through map_files");
    } else {
        assert_eq!(got, Kind::Gone, "never by path");
    }
    // a range that maps nothing: a deleted mapping is gone, the path
    // (a FIFO now) is refused
    let nothing = MappedFile {
        start: 0x1000,
        end: 0x2000,
        ..deleted.clone()
    };
    assert_eq!(kind(&open_mapped(&nothing)), Kind::Gone);
    let by_path = MappedFile {
        deleted: false,
        ..nothing
    };
    let got = without_blocking("open_mapped", move || kind(&open_mapped(&by_path)));
    assert_eq!(got, Kind::NotRegular);
    // SAFETY: the mapping made above, unmapped once.
    unsafe { libc::munmap(addr, 8192) };
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn trusted_opens_check_every_directory() {
    let d = scratch("trust");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sub = d.join("usr/lib/debug");
    std::fs::create_dir_all(&sub).unwrap();
    for p in [d.join("usr"), d.join("usr/lib"), sub.clone()] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(sub.join("x.debug"), b"debug").unwrap();
    mkfifo(&sub.join("fifo.debug"));
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let trust = Trust {
        anchor: d.clone(),
        owner: me,
    };
    assert_eq!(
        kind(&open_trusted(&trust, &sub.join("x.debug"))),
        Kind::Opened
    );
    let t = trust.clone();
    let fifo = sub.join("fifo.debug");
    assert_eq!(
        without_blocking("open_trusted", move || kind(&open_trusted(&t, &fifo))),
        Kind::NotRegular
    );
    assert_eq!(kind(&open_trusted(&trust, &sub.join("none"))), Kind::Gone);
    // outside the anchor, another owner, a writable directory
    assert_eq!(
        kind(&open_trusted(&trust, Path::new("/etc/passwd"))),
        Kind::Untrusted
    );
    let other = Trust {
        anchor: d.clone(),
        owner: me + 1,
    };
    assert_eq!(
        kind(&open_trusted(&other, &sub.join("x.debug"))),
        Kind::Untrusted
    );
    std::fs::set_permissions(d.join("usr/lib"), std::fs::Permissions::from_mode(0o775)).unwrap();
    match open_trusted(&trust, &sub.join("x.debug")) {
        OpenOutcome::Untrusted(why) => assert!(why.contains("usr/lib is writable"), "{why}"),
        o => panic!("{o:?}"),
    }
    std::fs::set_permissions(d.join("usr/lib"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // a symlinked directory on the way
    std::os::unix::fs::symlink(&sub, d.join("usr/link")).unwrap();
    assert_eq!(
        kind(&open_trusted(&trust, &d.join("usr/link/x.debug"))),
        Kind::NotRegular
    );
    // the production default: /tmp (1777) is not trusted
    let tmp_file = d.join("usr/lib/debug/x.debug");
    if tmp_file.starts_with("/tmp") {
        assert_eq!(
            kind(&open_trusted(&Trust::default(), &tmp_file)),
            Kind::Untrusted
        );
    }
    let _ = std::fs::remove_dir_all(&d);
}
