//! Directory calls for the places pidmap writes (the pin directory, the
//! metrics file's directory): opened without following a symbolic link,
//! inspected through the open descriptor, entries looked at with
//! `fstatat(AT_SYMLINK_NOFOLLOW)` and removed with `unlinkat`, so a name
//! swapped by someone else is never followed (DESIGN §9). The pin
//! directory's lock is `flock` on that same open descriptor (bpffs holds
//! no regular files, so there is no lock file).

use super::SysError;
use nix::fcntl::AtFlags;
use nix::sys::stat::{fstatat, Mode, SFlag};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// What `fstat` says of a directory: owner and permission bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirStat {
    pub uid: u32,
    /// The permission bits, sticky bit included (`st_mode & 0o7777`).
    pub mode: u32,
}

/// Which file an open descriptor or a path is: device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The device's major number, as /proc/locks prints it.
    pub fn major(&self) -> u64 {
        nix::sys::stat::major(self.dev)
    }

    /// The device's minor number, as /proc/locks prints it.
    pub fn minor(&self) -> u64 {
        nix::sys::stat::minor(self.dev)
    }
}

/// A directory opened with `open(O_RDONLY|O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC)`.
pub struct Dir {
    file: File,
}

impl Dir {
    /// `open(path, O_RDONLY|O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC)`: ELOOP when
    /// the last component is a symbolic link (the kernel says ENOTDIR;
    /// `lstat` tells them apart), ENOTDIR when it is no directory.
    pub fn open_nofollow(path: &Path) -> Result<Dir, SysError> {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map(|file| Dir { file })
            .map_err(|e| {
                // with O_DIRECTORY the kernel answers ENOTDIR for a link:
                // ELOOP says what it is
                let errno = match errno_of(&e) {
                    libc::ENOTDIR
                        if std::fs::symlink_metadata(path)
                            .is_ok_and(|m| m.file_type().is_symlink()) =>
                    {
                        libc::ELOOP
                    }
                    n => n,
                };
                SysError::new(
                    "open(O_DIRECTORY|O_NOFOLLOW)",
                    path.display().to_string(),
                    errno,
                )
            })
    }

    /// `fstat` of the open directory.
    pub fn stat(&self) -> Result<DirStat, SysError> {
        let m = self
            .file
            .metadata()
            .map_err(|e| SysError::new("fstat", "directory", errno_of(&e)))?;
        Ok(DirStat {
            uid: m.uid(),
            mode: m.mode() & 0o7777,
        })
    }

    /// `fstat` of the open directory: which file it is.
    pub fn id(&self) -> Result<FileId, SysError> {
        let m = self
            .file
            .metadata()
            .map_err(|e| SysError::new("fstat", "directory", errno_of(&e)))?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// `flock(fd, LOCK_EX|LOCK_NB)` on the open directory: `Ok(true)` when
    /// this descriptor now holds the exclusive lock, `Ok(false)` when
    /// another open of the directory holds a lock (EWOULDBLOCK). The lock
    /// belongs to this open file description (CLOEXEC, so no command
    /// inherits it) and goes when it is closed or the process dies,
    /// SIGKILL included.
    pub fn try_lock_exclusive(&self) -> Result<bool, SysError> {
        loop {
            // SAFETY: flock on a descriptor this Dir owns; no memory passed.
            let r = unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return Ok(true);
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EWOULDBLOCK) => return Ok(false),
                _ => return Err(SysError::last("flock(LOCK_EX|LOCK_NB)", "directory")),
            }
        }
    }

    /// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: the entry's file type, or
    /// None when there is no such entry.
    pub fn entry_kind(&self, name: &str) -> Result<Option<EntryKind>, SysError> {
        match fstatat(
            Some(self.file.as_raw_fd()),
            name,
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => {
                let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                Ok(Some(if fmt == SFlag::S_IFLNK {
                    EntryKind::Symlink
                } else if fmt == SFlag::S_IFDIR {
                    EntryKind::Directory
                } else if fmt == SFlag::S_IFREG {
                    EntryKind::File
                } else {
                    EntryKind::Other
                }))
            }
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(SysError::new("fstatat", name.to_string(), e as i32)),
        }
    }

    /// `unlinkat(dir, name, 0)`: removes the entry itself, never what a
    /// symbolic link points to. An absent entry is not an error.
    pub fn unlink(&self, name: &str) -> Result<(), SysError> {
        match nix::unistd::unlinkat(
            Some(self.file.as_raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
            Err(e) => Err(SysError::new("unlinkat", name.to_string(), e as i32)),
        }
    }
}

/// The type of a directory entry, as `lstat` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    Symlink,
    Other,
}

/// `mkdir(path, mode)`: only the last component; EEXIST when anything is
/// there already (a symbolic link included).
pub fn mkdir(path: &Path, mode: u32) -> Result<(), SysError> {
    nix::unistd::mkdir(path, Mode::from_bits_truncate(mode))
        .map_err(|e| SysError::new("mkdir", path.display().to_string(), e as i32))
}

/// `lstat(path)`: owner and permission bits of the entry itself.
pub fn lstat(path: &Path) -> Result<DirStat, SysError> {
    std::fs::symlink_metadata(path)
        .map(|m| DirStat {
            uid: m.uid(),
            mode: m.mode() & 0o7777,
        })
        .map_err(|e| SysError::new("lstat", path.display().to_string(), errno_of(&e)))
}

/// `lstat(path)`: which file the entry itself is.
pub fn lstat_id(path: &Path) -> Result<FileId, SysError> {
    std::fs::symlink_metadata(path)
        .map(|m| FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
        .map_err(|e| SysError::new("lstat", path.display().to_string(), errno_of(&e)))
}

/// The effective uid of this process (`geteuid`).
pub fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// `statfs(p)`: whether `p` is on a bpffs.
pub fn is_bpffs(p: &Path) -> bool {
    /// `BPF_FS_MAGIC` of linux/magic.h.
    const BPF_FS_MAGIC: libc::c_long = 0xcafe4a11;
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// `mount("bpf", root, "bpf", 0, "mode=0700")`: a bpffs only root may
/// enter (not the kernel's default 1777: others could squat pin dirs).
pub fn mount_bpffs(root: &Path) -> Result<(), SysError> {
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(|e| SysError::new("mount", format!("bpffs at {}", root.display()), e as i32))
}

/// `mkfifo(path, mode)` (tests make FIFOs where files are expected).
#[cfg(test)]
pub fn mkfifo(path: &Path, mode: u32) -> Result<(), SysError> {
    nix::unistd::mkfifo(path, Mode::from_bits_truncate(mode))
        .map_err(|e| SysError::new("mkfifo", path.display().to_string(), e as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_open_of_a_directory_holds_its_lock_until_closed() {
        let base = tempfile::tempdir().unwrap();
        let a = Dir::open_nofollow(base.path()).unwrap();
        let b = Dir::open_nofollow(base.path()).unwrap();
        assert!(a.try_lock_exclusive().unwrap());
        assert!(
            a.try_lock_exclusive().unwrap(),
            "the holder may take it again"
        );
        // another open file description, even in this process, is refused
        assert!(!b.try_lock_exclusive().unwrap());
        assert_eq!(a.id().unwrap(), b.id().unwrap());
        assert_eq!(a.id().unwrap(), lstat_id(base.path()).unwrap());
        drop(a);
        assert!(b.try_lock_exclusive().unwrap(), "closing releases it");
    }
}
