//! Loads the embedded BPF object, reusing or creating the pinned maps, and
//! removes the pins on a clean shutdown. One agent per pin directory: the
//! directory is locked ([`lock_pin_dir`]) for the agent's life.

use crate::abi::{Config, EVENTS_NAME, TRIE_NAME};
use crate::counters::{self, COUNTERS};
use crate::error::{Error, Result};
use crate::maps::features;
use crate::maps::tables::Tables;
use crate::maps::vmas::VmaReader;
use crate::sys::bpf::{MapHandle, MAP_TYPE_HASH, MAP_TYPE_LPM_TRIE};
use crate::sys::fs::{self, Dir, DirStat, EntryKind, FileId};
use crate::sys::object::{kernel_release, BpfObject};
use crate::sys::SysError;
use std::os::fd::OwnedFd;
use std::path::Path;

/// The compiled `bpf/pidmap.bpf.c`, stripped of debug info (BTF kept).
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pidmap.bpf.o"));

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/pidmap";

/// The pinned maps: name, type, key size, value size.
pub const PINNED: [(&str, u32, u32, u32); 2] = [
    (TRIE_NAME, MAP_TYPE_LPM_TRIE, 16, 16),
    (EVENTS_NAME, MAP_TYPE_HASH, 8, 1),
];

pub struct Loaded {
    object: BpfObject,
    config: MapHandle,
    latch: MapHandle,
    /// The latch mapped into this process (`BPF_F_MMAPABLE`): read after
    /// every batch of records without a system call; None when the mmap
    /// failed, and the latch is read with a lookup.
    latch_word: Option<crate::sys::bpf::MappedArray>,
    /// The loop's own maps read, until the agent takes it.
    vmas: Option<VmaReader>,
    /// Whether the trie came from an earlier run's pins.
    reused: bool,
}

/// Makes sure `pin_dir` can hold pins: mounts bpffs at /sys/fs/bpf when
/// the directory is under it and nothing is mounted there yet.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<()> {
    let parent = pin_dir.parent().unwrap_or(Path::new("/"));
    if fs::is_bpffs(parent) {
        return Ok(());
    }
    let root = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(root) && !fs::is_bpffs(root) {
        fs::mount_bpffs(root).map_err(|e| {
            Error::new(format!(
                "mounting bpffs at /sys/fs/bpf: {} (needs root; or mount it yourself: mount -t bpf bpf /sys/fs/bpf)",
                e.source
            ))
        })?;
        if fs::is_bpffs(parent) {
            return Ok(());
        }
    }
    if std::fs::metadata(parent).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Err(missing_parent(pin_dir));
    }
    Err(Error::new(format!(
        "{} is not on a bpffs: choose a --pin-dir under /sys/fs/bpf, or mount one: mount -t bpf bpf {}",
        pin_dir.display(),
        parent.display()
    )))
}

/// A refusal of a pin directory or pin: counted, then returned.
fn refused(msg: String) -> Error {
    counters::add(&COUNTERS.unsafe_pin_dir, 1);
    Error::new(msg)
}

/// Why a pin directory with this owner and mode is not ours, if it is not:
/// someone else who owns it, or can write it, could put any pin in it
/// (a link to another agent's map, a map of their own).
pub fn pin_dir_problem(pin_dir: &Path, st: DirStat, euid: u32) -> Option<String> {
    let p = pin_dir.display();
    if st.uid != euid {
        return Some(format!(
            "pin directory {p} is owned by uid {}, not by uid {euid} that runs pidmap: \
             refused, its owner could replace the pins; remove it (rm -r {p}) or choose another --pin-dir",
            st.uid
        ));
    }
    if st.mode & 0o077 != 0 {
        return Some(format!(
            "pin directory {p} has mode {:04o}: group or others have access, refused; \
             pidmap needs it 0700 (chmod 0700 {p}) or choose another --pin-dir",
            st.mode
        ));
    }
    None
}

/// The error for a pin directory whose parent is missing: pidmap makes
/// only the last component, never directories others could have made
/// first on the way.
fn missing_parent(pin_dir: &Path) -> Error {
    Error::new(format!(
        "creating pin directory {}: its parent {} does not exist: pidmap creates only \
         the last component; create the parent (owned by root, not writable by others) \
         or choose another --pin-dir",
        pin_dir.display(),
        pin_dir.parent().unwrap_or(Path::new("/")).display()
    ))
}

/// Opens the pin directory without following a symbolic link and checks it
/// is ours (owned by our euid, mode 0700). With `create`, makes it first,
/// 0700 and only its last component; returns whether it was made here.
pub fn open_pin_dir(pin_dir: &Path, create: bool) -> Result<(Dir, bool)> {
    let p = pin_dir.display();
    let mut created = false;
    if create {
        match fs::mkdir(pin_dir, 0o700) {
            Ok(()) => created = true,
            Err(e) if e.errno() == libc::EEXIST => {}
            Err(e) if e.errno() == libc::ENOENT => return Err(missing_parent(pin_dir)),
            Err(e) => {
                return Err(Error::new(format!(
                    "creating pin directory {p}: {}",
                    e.source
                )))
            }
        }
    }
    // a directory made here goes again when it cannot be opened
    let undo = |e: Error| {
        if created {
            let _ = std::fs::remove_dir(pin_dir);
        }
        e
    };
    let dir = Dir::open_nofollow(pin_dir).map_err(|e| undo(match e.errno() {
        libc::ELOOP => refused(format!(
            "pin directory {p} is a symbolic link: refused; the pin directory must be a real \
             directory owned by this user with mode 0700 (remove the link or choose another --pin-dir)"
        )),
        libc::ENOTDIR => refused(format!(
            "pin directory {p} is not a directory: remove it or choose another --pin-dir"
        )),
        libc::EACCES => {
            let why = match fs::lstat(pin_dir) {
                Ok(st) => format!(
                    "the directory belongs to uid {} with mode {:04o}, which gives uid {} no access; \
                     run this as uid {} (the user of the agent that made it)",
                    st.uid,
                    st.mode,
                    fs::euid(),
                    st.uid
                ),
                Err(_) => format!(
                    "uid {} may not search a directory on the way to it",
                    fs::euid()
                ),
            };
            Error::new(format!("{e}: {why}"))
        }
        _ => Error::new(e.to_string()),
    }))?;
    let st = dir
        .stat()
        .map_err(|e| undo(Error::new(format!("{e} of pin directory {p}"))))?;
    if let Some(why) = pin_dir_problem(pin_dir, st, fs::euid()) {
        return Err(refused(why));
    }
    Ok((dir, created))
}

/// The pin directory, open and locked: `flock(LOCK_EX)` on the directory
/// itself (bpffs holds no regular file for a lock file). One agent, or one
/// `audit --repair`, per directory; the kernel drops the lock when its
/// holder ends, however it ends, so a restart after SIGKILL takes it again.
pub struct PinLock {
    dir: Dir,
    created: bool,
}

impl PinLock {
    /// The open, locked directory.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }

    /// Whether the directory was made by this lock's opening.
    pub fn created(&self) -> bool {
        self.created
    }
}

/// Opens the pin directory as [`open_pin_dir`] does (with `create`, makes
/// it, bpffs mounted first when needed) and takes its lock. Refused, naming
/// the holder's pid, when another process holds it; `instead` says what
/// to do then. A directory this call made is removed again when it fails.
pub fn lock_pin_dir(pin_dir: &Path, create: bool, instead: &str) -> Result<PinLock> {
    if create {
        ensure_bpffs(pin_dir)?;
    }
    let p = pin_dir.display();
    // a directory removed (by an agent that stopped) between the open and
    // the lock is locked in vain: nobody else finds it; open it again
    for _ in 0..8 {
        let (dir, created) = open_pin_dir(pin_dir, create)?;
        let undo = |e: Error| {
            if created {
                let _ = std::fs::remove_dir(pin_dir);
            }
            e
        };
        let locked = dir
            .try_lock_exclusive()
            .map_err(|e| undo(Error::from(e).context(format!("locking pin directory {p}"))))?;
        let id = dir
            .id()
            .map_err(|e| undo(Error::from(e).context(format!("pin directory {p}"))))?;
        if !locked {
            return Err(held(pin_dir, id, instead));
        }
        if fs::lstat_id(pin_dir).is_ok_and(|now| now == id) {
            return Ok(PinLock { dir, created });
        }
    }
    Err(Error::new(format!(
        "pin directory {p} was removed each time it was locked (8 times): another \
         pidmap is starting and stopping on it; {instead}"
    )))
}

/// The refusal of a pin directory another process holds locked.
fn held(pin_dir: &Path, id: FileId, instead: &str) -> Error {
    let holders = crate::proc::locks::holders(id.major(), id.minor(), id.ino);
    let who = match holders.as_slice() {
        [] => "another process (/proc/locks does not name it)".to_string(),
        [pid] => format!("pid {pid}"),
        pids => format!(
            "pids {}",
            pids.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    Error::new(format!(
        "pin directory {} is in use: {who} holds its lock (a running pidmap agent, or an \
         audit --repair): refused; {instead}",
        pin_dir.display()
    ))
}

/// Opens the pin `name` of an opened pin directory, if there is one: the
/// entry must be the pinned map itself (not a symbolic link) with the
/// layout this build expects.
pub fn open_pin(dir: &Dir, pin_dir: &Path, name: &str) -> Result<Option<MapHandle>> {
    let path = pin_dir.join(name);
    let p = path.display();
    match dir.entry_kind(name)? {
        None => return Ok(None),
        Some(EntryKind::File) => {}
        Some(EntryKind::Symlink) => {
            return Err(refused(format!(
            "pin {p} is a symbolic link: refused, a pin must be the map itself; remove it (rm {p})"
        )))
        }
        Some(_) => {
            return Err(refused(format!(
                "pin {p} is not a pinned map: remove it or choose another --pin-dir"
            )))
        }
    }
    let map = MapHandle::from_pin(&path)?;
    let (_, ty, k, v) = PINNED
        .iter()
        .find(|p| p.0 == name)
        .copied()
        .unwrap_or((name, 0, 0, 0));
    check_layout(&map, &path, ty, k, v)
        .inspect_err(|_| counters::add(&COUNTERS.unsafe_pin_dir, 1))?;
    Ok(Some(map))
}

/// Checks a pinned map against the layout this build expects.
pub fn check_layout(map: &MapHandle, path: &Path, ty: u32, key: u32, value: u32) -> Result<()> {
    let i = map.info();
    if i.map_type != ty || i.key_size != key || i.value_size != value {
        return Err(Error::new(format!(
            "pinned map {} has type {} key {} B value {} B, expected type {ty} key {key} B value {value} B: \
             it is not pidmap's layout; remove it (rm {}) or use another --pin-dir",
            path.display(),
            i.map_type,
            i.key_size,
            i.value_size,
            path.display()
        )));
    }
    Ok(())
}

/// Opens and loads the object with the given programs; pins the maps in
/// the locked directory `lock` (at `pin_dir`).
pub fn load(
    lock: &PinLock,
    pin_dir: &Path,
    max_entries: u32,
    programs: &[&str],
) -> Result<(Loaded, Tables)> {
    let mut pinned = Vec::new();
    for (name, ..) in PINNED {
        if let Some(map) = open_pin(lock.dir(), pin_dir, name)? {
            pinned.push((name, map));
        }
    }
    let reused = pinned.iter().any(|(name, _)| *name == TRIE_NAME);
    let keep_alive = pinned;
    // the loop's own maps read (pidmap_vmas, a syscall program) goes with
    // the agent's programs; a kernel that refuses it (before 5.14, or a
    // verifier that rejects it) loads the object without it
    let want_vmas = programs.contains(&"pidmap_exec");
    let attempt = |vmas: bool| -> std::result::Result<BpfObject, SysError> {
        let mut object = BpfObject::open(OBJECT, "pidmap")?;
        object.set_max_entries(TRIE_NAME, max_entries)?;
        for (name, map) in &keep_alive {
            object.set_max_entries(name, map.info().max_entries)?;
            object.reuse_map(name, std::os::fd::AsFd::as_fd(map))?;
        }
        for prog in ["pidmap_exec", "pidmap_fork", "pidmap_sample"] {
            object.set_autoload(prog, programs.contains(&prog))?;
        }
        object.set_autoload(VMAS_PROG, vmas)?;
        object.load()?;
        Ok(object)
    };
    let loaded = match attempt(want_vmas) {
        Err(e)
            if want_vmas
                && !matches!(
                    e.source.raw_os_error(),
                    Some(libc::EPERM | libc::EACCES | libc::EMFILE | libc::ENFILE | libc::ENOMEM)
                ) =>
        {
            log::info!(
                "{e}: loading without {VMAS_PROG} (every maps read goes through /proc on the maps worker)"
            );
            attempt(false).map(|o| (o, false))
        }
        r => r.map(|o| (o, want_vmas)),
    };
    let (mut object, with_vmas) = loaded.map_err(|e| {
        let errno = e.source.raw_os_error();
        if matches!(errno, Some(libc::EPERM | libc::EACCES)) && !crate::sys::caps::bpf_capable() {
            // privileges, not the kernel: say so first, and only that
            return Error::new(format!(
                "loading BPF programs needs root, or the capabilities CAP_BPF and CAP_PERFMON, \
                 which this process (uid {}) lacks: {e}",
                fs::euid()
            ));
        }
        // out of file descriptors or memory is not a kernel that is too old
        let hint = match errno {
            Some(libc::EMFILE | libc::ENFILE) => {
                "too few file descriptors: raise RLIMIT_NOFILE".to_string()
            }
            Some(libc::ENOMEM) => {
                "out of memory (or RLIMIT_MEMLOCK on kernels before 5.11)".to_string()
            }
            // a probe names what this kernel lacks, with its version
            _ => match features::missing_for(programs, Path::new(features::VMLINUX_BTF)) {
                Some(f) => format!("this kernel lacks {}", f.needs()),
                // every feature is here: the verifier refused a program
                None if matches!(errno, Some(libc::EACCES | libc::EINVAL)) => {
                    "the kernel's verifier refused a program; RUST_LOG=debug prints its log"
                        .to_string()
                }
                None => format!("needs BTF, Linux >= {} for tp_btf", features::BTF.since),
            },
        };
        Error::from(e).context(format!(
            "loading the BPF object on Linux {} ({hint})",
            kernel_release()
        ))
    })?;
    for prog in programs {
        if *prog != "pidmap_sample" {
            object.attach(prog)?;
        }
    }
    let handle = |name: &str| -> Result<MapHandle> { Ok(object.map(name)?) };
    let trie = handle(TRIE_NAME)?;
    let events = handle(EVENTS_NAME)?;
    for (name, map) in [(TRIE_NAME, &trie), (EVENTS_NAME, &events)] {
        // the directory is ours (0700): nobody else added a pin meanwhile
        if !keep_alive.iter().any(|(n, _)| *n == name) {
            map.pin(&pin_dir.join(name))?;
        }
    }
    let config = handle("pidmap_config")?;
    let latch = handle("report_latch")?;
    let latch_word = crate::sys::bpf::MappedArray::map(&latch)
        .map_err(|e| log::debug!("{e}: the latch is read with a lookup"))
        .ok();
    let vmas = if with_vmas {
        object
            .prog_fd(VMAS_PROG)
            .and_then(|fd| VmaReader::new(fd, &object.map("vma_out")?))
            .map_err(|e| log::info!("{e}: every maps read goes through /proc on the maps worker"))
            .ok()
    } else {
        None
    };
    Ok((
        Loaded {
            object,
            config,
            latch,
            latch_word,
            vmas,
            reused,
        },
        Tables::new(trie, events),
    ))
}

/// The syscall program that reads a process's executable mappings.
pub const VMAS_PROG: &str = "pidmap_vmas";

impl Loaded {
    /// The loop's own maps read (None when the kernel refused the
    /// program); taken once.
    pub fn take_vma_reader(&mut self) -> Option<VmaReader> {
        self.vmas.take()
    }

    pub fn set_config(&self, c: &Config) -> Result<()> {
        Ok(self.config.update(&0u32, c, crate::sys::bpf::BPF_ANY)?)
    }

    /// Whether the trie came from an earlier run's pins.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// A map of the object by name.
    pub fn map(&self, name: &str) -> Result<MapHandle> {
        Ok(self.object.map(name)?)
    }

    /// Attaches program `prog` to the perf event `event`.
    pub fn attach_perf_event(&mut self, prog: &str, event: OwnedFd) -> Result<()> {
        Ok(self.object.attach_perf_event(prog, event)?)
    }

    /// The kernel's run statistics of a program: (runs, total ns), while
    /// `kernel.bpf_stats_enabled` is 1.
    pub fn prog_stats(&self, prog: &str) -> Result<(u64, u64)> {
        Ok(self.object.prog_stats(prog)?)
    }

    /// Detaches every program: nothing is written to the maps after.
    pub fn detach_all(&mut self) {
        self.object.detach_all();
    }

    /// Clears the latch before a drain of pid_events.
    pub fn clear_latch(&self) -> Result<()> {
        if let Some(w) = &self.latch_word {
            w.word().store(0, std::sync::atomic::Ordering::SeqCst);
            return Ok(());
        }
        Ok(self.latch.update(&0u32, &0u32, crate::sys::bpf::BPF_ANY)?)
    }

    /// Whether the BPF side raised the latch: a request may be pending in
    /// pid_events that no record announced (a failed write to the ring, or
    /// a full pid_events).
    pub fn latch_raised(&self) -> Result<bool> {
        if let Some(w) = &self.latch_word {
            return Ok(w.word().load(std::sync::atomic::Ordering::SeqCst) != 0);
        }
        Ok(self.latch.lookup::<u32, u32>(&0)?.unwrap_or(0) != 0)
    }
}

/// What of a locked pin directory exists (the pins seen with lstat), to
/// know after a failed start what the start made.
pub fn existing(lock: &PinLock, pin_dir: &Path) -> (bool, [bool; 2]) {
    let there = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    (
        !lock.created(),
        PINNED.map(|(name, ..)| there(&pin_dir.join(name))),
    )
}

/// Removes the pins the directory holds, and the directory if empty; only
/// from a directory that is ours, never through a symbolic link.
pub fn remove_pins(pin_dir: &Path) {
    remove_created(pin_dir, (false, [false; 2]));
}

/// Removes what a failed start made: the pins and directory that did not
/// exist before it (`before`, from [`existing`]); only from a directory
/// that is ours, never through a symbolic link.
pub fn remove_created(pin_dir: &Path, before: (bool, [bool; 2])) {
    let Ok(dir) = Dir::open_nofollow(pin_dir) else {
        // (out of descriptors, say) an empty directory the start made
        // still goes; rmdir neither follows a link nor removes content
        if !before.0 {
            let _ = std::fs::remove_dir(pin_dir);
        }
        return;
    };
    if dir.stat().map_or(true, |st| {
        pin_dir_problem(pin_dir, st, fs::euid()).is_some()
    }) {
        return;
    }
    for ((name, ..), existed) in PINNED.iter().zip(before.1) {
        if !existed {
            let _ = dir.unlink(name);
        }
    }
    drop(dir);
    if !before.0 {
        let _ = std::fs::remove_dir(pin_dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_dir_is_ours_only_when_owned_by_us_and_closed_to_others() {
        let p = Path::new("/sys/fs/bpf/p");
        let problem = |uid, mode| pin_dir_problem(p, DirStat { uid, mode }, 0);
        assert_eq!(problem(0, 0o700), None);
        let squatted = problem(65534, 0o700).unwrap();
        assert!(
            squatted.starts_with(
                "pin directory /sys/fs/bpf/p is owned by uid 65534, not by uid 0 that runs pidmap: refused"
            ),
            "{squatted}"
        );
        for mode in [0o755, 0o750, 0o701, 0o710, 0o1777, 0o707] {
            let e = problem(0, mode).unwrap();
            assert!(
                e.contains(&format!(
                    "has mode {mode:04o}: group or others have access, refused"
                )),
                "{e}"
            );
        }
        assert!(pin_dir_problem(
            p,
            DirStat {
                uid: 0,
                mode: 0o700
            },
            1000
        )
        .is_some());
    }

    #[test]
    fn a_locked_pin_dir_is_refused_naming_its_holder() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("pins");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let first = lock_pin_dir(&dir, false, "do this").unwrap();
        assert!(!first.created());
        let e = lock_pin_dir(&dir, false, "do this")
            .err()
            .expect("a second lock is refused")
            .to_string();
        let want = format!(
            "pin directory {} is in use: pid {} holds its lock",
            dir.display(),
            std::process::id()
        );
        assert!(e.starts_with(&want), "{e}");
        assert!(e.ends_with("refused; do this"), "{e}");
        drop(first);
        let again = lock_pin_dir(&dir, false, "do this").expect("released with its holder");
        // a directory removed under a lock is not the directory any more:
        // the next lock takes the one made at the path since
        std::fs::remove_dir(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let new = lock_pin_dir(&dir, false, "do this").expect("a new directory, unlocked");
        assert_ne!(again.dir().id().unwrap(), new.dir().id().unwrap());
    }

    #[test]
    fn links_and_foreign_directories_are_refused_and_counted() {
        let base = std::env::temp_dir().join(format!("pidmap-pindir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        let before = COUNTERS.snapshot().unsafe_pin_dir;
        // made here: 0700 and ours
        let made = base.join("made");
        let (_, created) = open_pin_dir(&made, true).unwrap();
        assert!(created);
        assert_eq!(fs::lstat(&made).unwrap().mode, 0o700);
        let (_, created) = open_pin_dir(&made, true).unwrap();
        assert!(!created, "an existing directory of ours is reused");
        // a link to it
        let link = base.join("link");
        std::os::unix::fs::symlink(&made, &link).unwrap();
        let e = open_pin_dir(&link, true).err().unwrap().to_string();
        assert!(
            e.contains("pin directory ") && e.contains("is a symbolic link: refused"),
            "{e}"
        );
        // open to others
        let open = base.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let e = open_pin_dir(&open, true).err().unwrap().to_string();
        assert!(
            e.contains("has mode 0755: group or others have access"),
            "{e}"
        );
        // a missing parent is named, and not created
        let deep = base.join("no-parent").join("pins");
        let e = open_pin_dir(&deep, true).err().unwrap().to_string();
        assert!(e.contains("no-parent does not exist"), "{e}");
        assert!(!base.join("no-parent").exists());
        // a pin that is a link
        std::os::unix::fs::symlink("/dev/null", made.join(TRIE_NAME)).unwrap();
        let (dir, _) = open_pin_dir(&made, false).unwrap();
        let e = open_pin(&dir, &made, TRIE_NAME).err().unwrap().to_string();
        assert!(
            e.contains("is a symbolic link: refused, a pin must be the map itself"),
            "{e}"
        );
        assert_eq!(
            open_pin(&dir, &made, EVENTS_NAME).unwrap().map(|_| ()),
            None
        );
        assert!(COUNTERS.snapshot().unsafe_pin_dir >= before + 3);
        // removal goes through the directory: the link itself goes, not
        // its target; a foreign-mode directory is left alone
        remove_pins(&made);
        assert!(!made.exists());
        assert!(Path::new("/dev/null").exists());
        remove_pins(&open);
        assert!(open.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
