//! Loads the embedded BPF object, reusing or creating the pinned maps, and
//! removes the pins on a clean shutdown.

use crate::abi::{Config, EVENTS_NAME, TRIE_NAME};
use crate::error::{Error, Result};
use crate::sys::bpf::{MapHandle, MAP_TYPE_HASH, MAP_TYPE_LPM_TRIE};
use crate::sys::object::{kernel_release, BpfObject};
use crate::tables::Tables;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The compiled `bpf/pidmap.bpf.c`, stripped of debug info (BTF kept).
pub const OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pidmap.bpf.o"));

pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/pidmap";
const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// The pinned maps: name, type, key size, value size.
pub const PINNED: [(&str, u32, u32, u32); 2] = [
    (TRIE_NAME, MAP_TYPE_LPM_TRIE, 16, 16),
    (EVENTS_NAME, MAP_TYPE_HASH, 8, 1),
];

pub struct Loaded {
    pub object: BpfObject,
    pub config: MapHandle,
    pub latch: MapHandle,
    pub pin_dir: PathBuf,
    /// Whether the trie came from an earlier run's pins.
    pub reused: bool,
}

fn is_bpffs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` can hold pins: mounts bpffs at /sys/fs/bpf when
/// the directory is under it and nothing is mounted there yet.
pub fn ensure_bpffs(pin_dir: &Path) -> Result<()> {
    let parent = pin_dir.parent().unwrap_or(Path::new("/"));
    if is_bpffs(parent) {
        return Ok(());
    }
    let root = Path::new("/sys/fs/bpf");
    if pin_dir.starts_with(root) && !is_bpffs(root) {
        nix::mount::mount(
            Some("bpf"),
            root,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|e| {
            Error::new(format!(
                "mounting bpffs at /sys/fs/bpf: {} (needs root; or mount it yourself: mount -t bpf bpf /sys/fs/bpf)",
                std::io::Error::from(e)
            ))
        })?;
        if is_bpffs(parent) {
            return Ok(());
        }
    }
    Err(Error::new(format!(
        "{} is not on a bpffs: choose a --pin-dir under /sys/fs/bpf, or mount one: mount -t bpf bpf {}",
        pin_dir.display(),
        parent.display()
    )))
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

/// Opens and loads the object with the given programs; pins the maps.
pub fn load(pin_dir: &Path, max_entries: u32, programs: &[&str]) -> Result<(Loaded, Tables)> {
    ensure_bpffs(pin_dir)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(pin_dir)
        .map_err(|e| Error::new(format!("creating pin directory {}: {e}", pin_dir.display())))?;
    let mut object = BpfObject::open(OBJECT, "pidmap")?;
    object.set_max_entries(TRIE_NAME, max_entries)?;
    let mut reused = false;
    let mut keep_alive = Vec::new();
    for (name, ty, k, v) in PINNED {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let map = MapHandle::from_pin(&path)?;
        check_layout(&map, &path, ty, k, v)?;
        object.set_max_entries(name, map.info().max_entries)?;
        object.reuse_map(name, std::os::fd::AsFd::as_fd(&map))?;
        reused |= name == TRIE_NAME;
        keep_alive.push(map);
    }
    for prog in ["pidmap_exec", "pidmap_fork", "pidmap_sample"] {
        object.set_autoload(prog, programs.contains(&prog))?;
    }
    object.load().map_err(|e| {
        // out of file descriptors or memory is not a kernel that is too old
        let hint = match e.source.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => "too few file descriptors: raise RLIMIT_NOFILE",
            Some(libc::ENOMEM) => "out of memory (or RLIMIT_MEMLOCK on kernels before 5.11)",
            _ => "needs BTF, Linux >= 5.5 for tp_btf",
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
        let path = pin_dir.join(name);
        if !path.exists() {
            map.pin(&path)?;
        }
    }
    let config = handle("pidmap_config")?;
    let latch = handle("report_latch")?;
    Ok((
        Loaded {
            object,
            config,
            latch,
            pin_dir: pin_dir.to_path_buf(),
            reused,
        },
        Tables::new(trie, events),
    ))
}

impl Loaded {
    pub fn set_config(&self, c: &Config) -> Result<()> {
        Ok(self.config.update(&0u32, c, crate::sys::bpf::BPF_ANY)?)
    }
}

/// Removes the pins and the directory if empty.
pub fn remove_pins(pin_dir: &Path) {
    for (name, ..) in PINNED {
        let _ = std::fs::remove_file(pin_dir.join(name));
    }
    let _ = std::fs::remove_dir(pin_dir);
}
