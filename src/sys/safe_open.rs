//! Opening files that untrusted processes name (DESIGN §9).
//!
//! Every path in /proc/PID/maps belongs to the mapping process's owner, who
//! can rename, delete or replace it with a FIFO, a device or a symlink at any
//! moment, or name a regular file `x (deleted)`. The functions here are the
//! only ones in pidmap that open such a file, and only the file worker calls
//! them. Each open:
//! - resolves with `O_PATH` first, which never opens the object itself (a
//!   FIFO does not block, a device driver is never called);
//! - `fstat`s that descriptor and accepts only a regular file (and, for a
//!   mapping, the (device, inode) of the maps line);
//! - only then reopens it for reading through `/proc/self/fd/N` with
//!   `O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC`.
//!
//! A mapping is opened through `/proc/PID/map_files/START-END` (the mapped
//! file itself, whatever its name became); by its path only when it is not
//! a deleted one, with `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
//! (a component-by-component `O_NOFOLLOW` walk on kernels without openat2).
//! Debug files are opened only inside directories owned by a trusted user
//! and writable by nobody else, checked from the anchor down
//! ([`open_trusted`]).
//!
//! A lookup on a hostile FUSE mount can still block in the kernel: that is
//! why only the worker thread calls these, each job with a deadline.

use super::SysError;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// The answer of an open of an untrusted file.
#[derive(Debug)]
pub enum OpenOutcome {
    /// A regular file (with the expected device and inode), open for reading.
    Opened(File),
    /// A FIFO, device, directory, socket or symlink: never opened for reading.
    NotRegular,
    /// A regular file, but not the one the maps line names.
    Mismatch,
    /// No such mapping, process or path (any more).
    Gone,
    /// A directory on the way is not trusted (debug files only): which, why.
    Untrusted(String),
    Error(SysError),
}

/// One mapping of a process, as its maps line describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedFile {
    pub pid: u32,
    pub start: u64,
    pub end: u64,
    /// Device in the `makedev` encoding of the maps line's major:minor.
    pub dev: u64,
    pub ino: u64,
    /// The path of the maps line, ` (deleted)` stripped.
    pub path: String,
    /// The maps line said ` (deleted)` (or names a memfd): opened through
    /// map_files only, never by path.
    pub deleted: bool,
}

const O_PATH_FLAGS: i32 = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
const READ_FLAGS: i32 = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;

fn cstring(bytes: &[u8]) -> Option<CString> {
    CString::new(bytes).ok()
}

/// openat(2) returning an owned fd or the errno.
fn openat(dirfd: RawFd, path: &CStr, flags: i32) -> Result<OwnedFd, i32> {
    // SAFETY: path is a valid NUL-terminated string; dirfd is AT_FDCWD or a
    // descriptor the caller holds open for the call's duration.
    let fd = unsafe { libc::openat(dirfd, path.as_ptr(), flags, 0) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a successful openat returns a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2(2) (Linux 5.6) with `resolve` flags.
fn openat2(dirfd: RawFd, path: &CStr, flags: i32, resolve: u64) -> Result<OwnedFd, i32> {
    #[cfg(test)]
    if super::fake::open::openat2_missing() {
        return Err(libc::ENOSYS);
    }
    // SAFETY: open_how is plain integers; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = resolve;
    // SAFETY: path is NUL-terminated, `how` is a valid open_how whose size
    // is passed alongside; the kernel only reads both.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dirfd,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: a successful openat2 returns a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// fstat(2) of any descriptor, O_PATH ones included.
fn fstat(fd: &OwnedFd) -> Result<libc::stat, i32> {
    // SAFETY: stat is plain data; zeroed is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is open; st is a valid, writable stat buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(errno());
    }
    Ok(st)
}

fn is_type(st: &libc::stat, ty: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == ty
}

/// An errno of an open or lookup, as an outcome.
fn classify(call: &'static str, object: &str, e: i32) -> OpenOutcome {
    match e {
        libc::ENOENT | libc::ESRCH | libc::ENOTDIR => OpenOutcome::Gone,
        // a symlink on the way (RESOLVE_NO_SYMLINKS, O_NOFOLLOW)
        libc::ELOOP => OpenOutcome::NotRegular,
        e => OpenOutcome::Error(SysError::new(call, object, e)),
    }
}

/// Checks an O_PATH descriptor and reopens it for reading through
/// /proc/self/fd: only a regular file, with (dev, ino) when given.
fn check_and_reopen(fd: OwnedFd, want: Option<(u64, u64)>, object: &str) -> OpenOutcome {
    let st = match fstat(&fd) {
        Ok(st) => st,
        Err(e) => return classify("fstat", object, e),
    };
    if !is_type(&st, libc::S_IFREG) {
        return OpenOutcome::NotRegular;
    }
    if want.is_some_and(|(dev, ino)| (st.st_dev, st.st_ino) != (dev, ino)) {
        return OpenOutcome::Mismatch;
    }
    let proc_path = format!("/proc/self/fd/{}\0", fd.as_raw_fd());
    let Ok(proc_path) = CStr::from_bytes_with_nul(proc_path.as_bytes()) else {
        return OpenOutcome::Error(SysError::new("open", object, libc::EINVAL));
    };
    let file = match openat(libc::AT_FDCWD, proc_path, READ_FLAGS) {
        Ok(f) => f,
        Err(e) => return classify("open(/proc/self/fd)", object, e),
    };
    // the reopened descriptor must still be the object checked above
    match fstat(&file) {
        Ok(again)
            if is_type(&again, libc::S_IFREG)
                && (again.st_dev, again.st_ino) == (st.st_dev, st.st_ino) =>
        {
            OpenOutcome::Opened(File::from(file))
        }
        Ok(_) => OpenOutcome::Mismatch,
        Err(e) => classify("fstat", object, e),
    }
}

/// Opens the file of one mapping: `/proc/PID/map_files/START-END` first
/// (the mapped file itself); then, unless the mapping is a deleted one, its
/// path without following any symlink. Only a regular file whose (dev, ino)
/// is the maps line's is opened for reading.
pub fn open_mapped(m: &MappedFile) -> OpenOutcome {
    let via_map = format!("/proc/{}/map_files/{:x}-{:x}", m.pid, m.start, m.end);
    let first = match cstring(via_map.as_bytes()) {
        // the magic link is followed on purpose: it is the mapped file
        Some(p) => match openat(libc::AT_FDCWD, &p, libc::O_PATH | libc::O_CLOEXEC) {
            Ok(fd) => check_and_reopen(fd, Some((m.dev, m.ino)), &via_map),
            // no CAP_SYS_ADMIN (or CAP_CHECKPOINT_RESTORE): try the path
            Err(libc::EPERM | libc::EACCES) => OpenOutcome::Gone,
            Err(e) => classify("open", &via_map, e),
        },
        None => OpenOutcome::Gone,
    };
    match first {
        OpenOutcome::Opened(_) | OpenOutcome::Error(_) | OpenOutcome::Untrusted(_) => first,
        _ if m.deleted => first,
        OpenOutcome::Gone => open_path(Path::new(&m.path), Some((m.dev, m.ino))),
        // map_files holds another file now: the path may still hold ours
        refused => match open_path(Path::new(&m.path), Some((m.dev, m.ino))) {
            OpenOutcome::Gone | OpenOutcome::Error(_) => refused,
            other => other,
        },
    }
}

/// Opens an absolute path without following any symlink (a symlink
/// anywhere on it is refused as not regular), checking (dev, ino) when
/// given: `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, or a
/// component-by-component `O_NOFOLLOW` walk where openat2 is missing
/// (ENOSYS, or EPERM from a seccomp filter).
pub fn open_path(path: &Path, want: Option<(u64, u64)>) -> OpenOutcome {
    let object = path.display().to_string();
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return OpenOutcome::Error(SysError::new("openat2", object, libc::EINVAL));
    }
    let Some(c) = cstring(path.as_os_str().as_bytes()) else {
        return OpenOutcome::Error(SysError::new("openat2", object, libc::EINVAL));
    };
    let resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    match openat2(libc::AT_FDCWD, &c, O_PATH_FLAGS, resolve) {
        Ok(fd) => check_and_reopen(fd, want, &object),
        // ENOSYS before 5.6; EPERM from container seccomp profiles that
        // predate openat2
        Err(libc::ENOSYS | libc::EPERM) => open_walk(path, want),
        Err(e) => classify("openat2", &object, e),
    }
}

/// Resolves `path` one component at a time with `O_PATH | O_NOFOLLOW`:
/// a symlink anywhere is refused (kernels before openat2, 5.6).
fn open_walk(path: &Path, want: Option<(u64, u64)>) -> OpenOutcome {
    walk(path, want, |_, _| None)
}

/// The walk behind [`open_walk`] and [`open_trusted`]: `dir_check` judges
/// every directory from the first one down (Some(why) refuses).
fn walk(
    path: &Path,
    want: Option<(u64, u64)>,
    dir_check: impl Fn(&Path, &libc::stat) -> Option<String>,
) -> OpenOutcome {
    let object = path.display().to_string();
    let root = match openat(libc::AT_FDCWD, c"/", O_PATH_FLAGS | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) => return classify("open", "/", e),
    };
    walk_from(root, Path::new("/"), path, want, &object, dir_check)
}

fn walk_from(
    mut dir: OwnedFd,
    dir_path: &Path,
    rel: &Path,
    want: Option<(u64, u64)>,
    object: &str,
    dir_check: impl Fn(&Path, &libc::stat) -> Option<String>,
) -> OpenOutcome {
    let mut at = dir_path.to_path_buf();
    let names: Vec<&std::ffi::OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    let Some((last, dirs)) = names.split_last() else {
        return OpenOutcome::NotRegular;
    };
    let check_dir = |fd: &OwnedFd, at: &Path| -> Option<OpenOutcome> {
        match fstat(fd) {
            Ok(st) if !is_type(&st, libc::S_IFDIR) => Some(OpenOutcome::NotRegular),
            Ok(st) => dir_check(at, &st).map(OpenOutcome::Untrusted),
            Err(e) => Some(classify("fstat", object, e)),
        }
    };
    if let Some(refused) = check_dir(&dir, &at) {
        return refused;
    }
    for name in dirs {
        at.push(name);
        let Some(c) = cstring(name.as_bytes()) else {
            return OpenOutcome::Error(SysError::new("openat", object, libc::EINVAL));
        };
        dir = match openat(dir.as_raw_fd(), &c, O_PATH_FLAGS) {
            Ok(fd) => fd,
            Err(e) => return classify("openat", object, e),
        };
        // a symlink shows as S_IFLNK here: not a directory, refused
        if let Some(refused) = check_dir(&dir, &at) {
            return refused;
        }
    }
    let Some(c) = cstring(last.as_bytes()) else {
        return OpenOutcome::Error(SysError::new("openat", object, libc::EINVAL));
    };
    match openat(dir.as_raw_fd(), &c, O_PATH_FLAGS) {
        Ok(fd) => check_and_reopen(fd, want, object),
        Err(e) => classify("openat", object, e),
    }
}

/// Who may own the directories a debug file is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    /// The walk's first directory, checked like the others ("/" in
    /// production; tests anchor it in a private directory).
    pub anchor: std::path::PathBuf,
    /// The only owner accepted for every directory (root in production).
    pub owner: u32,
}

impl Default for Trust {
    fn default() -> Trust {
        Trust {
            anchor: "/".into(),
            owner: 0,
        }
    }
}

/// Opens a regular file beneath `trust.anchor` only when the anchor and
/// every directory below it on the way are owned by `trust.owner` and not
/// writable by group or others, and no component is a symlink.
pub fn open_trusted(trust: &Trust, path: &Path) -> OpenOutcome {
    let object = path.display().to_string();
    let Ok(rel) = path.strip_prefix(&trust.anchor) else {
        return OpenOutcome::Untrusted(format!("{object} is not under {}", trust.anchor.display()));
    };
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return OpenOutcome::Untrusted(format!("{object}: relative components"));
    }
    let Some(anchor) = cstring(trust.anchor.as_os_str().as_bytes()) else {
        return OpenOutcome::Error(SysError::new("open", object, libc::EINVAL));
    };
    let dir = match openat(libc::AT_FDCWD, &anchor, O_PATH_FLAGS | libc::O_DIRECTORY) {
        Ok(fd) => fd,
        Err(e) => return classify("open", &trust.anchor.display().to_string(), e),
    };
    let owner = trust.owner;
    walk_from(dir, &trust.anchor, rel, None, &object, |at, st| {
        if st.st_uid != owner {
            Some(format!(
                "{} is owned by uid {}, not {owner}",
                at.display(),
                st.st_uid
            ))
        } else if st.st_mode & (libc::S_IWGRP | libc::S_IWOTH) != 0 {
            Some(format!(
                "{} is writable by group or others (mode {:o})",
                at.display(),
                st.st_mode & 0o7777
            ))
        } else {
            None
        }
    })
}

/// The component-by-component walk, reachable from tests.
#[cfg(test)]
pub(crate) fn open_path_by_walk(path: &Path, want: Option<(u64, u64)>) -> OpenOutcome {
    open_walk(path, want)
}

#[cfg(test)]
mod tests;
