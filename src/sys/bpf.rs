//! The bpf(2) system call: one dispatch function and typed wrappers for the
//! map commands pidmap uses, and [`MapHandle`], which owns a map's fd.

use super::{bytes_of, bytes_of_mut, Plain, SysError};
use libbpf_sys as sys;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The one entry point to bpf(2). Unit tests replace the kernel here.
fn sys_bpf(cmd: sys::bpf_cmd, attr: &mut sys::bpf_attr) -> Result<i64, i32> {
    #[cfg(test)]
    if let Some(r) = super::fake::bpf::dispatch(cmd, attr) {
        return r;
    }
    // SAFETY: attr points to a zero-initialised bpf_attr owned by the caller
    // and the size passed is its exact size; pointers inside it reference
    // buffers the caller keeps alive for the duration of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut sys::bpf_attr,
            std::mem::size_of::<sys::bpf_attr>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    } else {
        Ok(r)
    }
}

fn zeroed_attr() -> sys::bpf_attr {
    // SAFETY: bpf_attr is a plain C union for which all-zero is valid (and
    // what the kernel requires of unused fields).
    unsafe { std::mem::zeroed() }
}

fn fd_from(ret: i64) -> OwnedFd {
    // SAFETY: a successful fd-returning bpf command returns a new fd that
    // nothing else owns.
    unsafe { OwnedFd::from_raw_fd(ret as i32) }
}

/// The answer of a batch command: the kernel's `count` out-parameter exactly
/// as it was written back, and the result of the call.
#[derive(Debug)]
pub struct BatchAnswer {
    pub count: u32,
    pub result: Result<(), SysError>,
}

/// Static description of a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: String,
}

/// A BPF map, owning its fd.
#[derive(Debug)]
pub struct MapHandle {
    fd: OwnedFd,
    info: MapInfo,
}

pub const BPF_ANY: u64 = sys::BPF_ANY as u64;
/// Update only if absent (BPF_NOEXIST).
pub const BPF_NOEXIST: u64 = sys::BPF_NOEXIST as u64;
pub const MAP_TYPE_HASH: u32 = sys::BPF_MAP_TYPE_HASH;
pub const MAP_TYPE_LPM_TRIE: u32 = sys::BPF_MAP_TYPE_LPM_TRIE;
pub const F_NO_PREALLOC: u32 = sys::BPF_F_NO_PREALLOC;

fn map_name_bytes(name: &str) -> [libc::c_char; 16] {
    let mut out = [0 as libc::c_char; 16];
    for (o, b) in out.iter_mut().zip(name.bytes().take(15)) {
        *o = b as libc::c_char;
    }
    out
}

impl MapHandle {
    /// BPF_MAP_CREATE.
    pub fn create(
        map_type: u32,
        name: &str,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    ) -> Result<MapHandle, SysError> {
        let mut attr = zeroed_attr();
        // SAFETY: writing plain fields of the map-create member of the union.
        unsafe {
            let a = &mut attr.__bindgen_anon_1;
            a.map_type = map_type;
            a.key_size = key_size;
            a.value_size = value_size;
            a.max_entries = max_entries;
            a.map_flags = map_flags;
            a.map_name = map_name_bytes(name);
        }
        let fd = sys_bpf(sys::BPF_MAP_CREATE, &mut attr)
            .map(fd_from)
            .map_err(|e| SysError::new("BPF_MAP_CREATE", name, e))?;
        Ok(MapHandle {
            fd,
            info: MapInfo {
                map_type,
                key_size,
                value_size,
                max_entries,
                map_flags,
                name: name.to_string(),
            },
        })
    }

    /// Wraps an fd of an existing map, reading its description with
    /// BPF_OBJ_GET_INFO_BY_FD.
    pub fn from_fd(fd: OwnedFd) -> Result<MapHandle, SysError> {
        let info = map_info(fd.as_fd())?;
        Ok(MapHandle { fd, info })
    }

    /// Opens a pinned map (BPF_OBJ_GET).
    pub fn from_pin(path: &Path) -> Result<MapHandle, SysError> {
        let fd = obj_get(path)?;
        MapHandle::from_fd(fd)
    }

    pub fn info(&self) -> &MapInfo {
        &self.info
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    fn check<K: Plain>(&self, what: &'static str) -> Result<(), SysError> {
        if std::mem::size_of::<K>() != self.info.key_size as usize {
            return Err(SysError::new(what, self.info.name.clone(), libc::EINVAL));
        }
        Ok(())
    }

    /// BPF_OBJ_PIN.
    pub fn pin(&self, path: &Path) -> Result<(), SysError> {
        obj_pin(self.fd.as_fd(), path)
    }

    /// BPF_MAP_UPDATE_ELEM.
    pub fn update<K: Plain, V: Plain>(
        &self,
        key: &K,
        value: &V,
        flags: u64,
    ) -> Result<(), SysError> {
        self.check::<K>("BPF_MAP_UPDATE_ELEM")?;
        let mut attr = zeroed_attr();
        // SAFETY: plain fields of the element member; key and value outlive
        // the call.
        unsafe {
            let a = &mut attr.__bindgen_anon_2;
            a.map_fd = self.fd.as_raw_fd() as u32;
            a.key = key as *const K as u64;
            a.__bindgen_anon_1.value = value as *const V as u64;
            a.flags = flags;
        }
        sys_bpf(sys::BPF_MAP_UPDATE_ELEM, &mut attr)
            .map(drop)
            .map_err(|e| SysError::new("BPF_MAP_UPDATE_ELEM", self.info.name.clone(), e))
    }

    /// BPF_MAP_LOOKUP_ELEM: `None` when the key is absent.
    pub fn lookup<K: Plain, V: Plain>(&self, key: &K) -> Result<Option<V>, SysError> {
        let mut value = vec![0u8; self.info.value_size as usize];
        if value.len() < std::mem::size_of::<V>() {
            return Err(SysError::new(
                "BPF_MAP_LOOKUP_ELEM",
                self.info.name.clone(),
                libc::EINVAL,
            ));
        }
        Ok(self
            .lookup_raw(key, &mut value)?
            .then(|| super::read_plain(&value))
            .flatten())
    }

    /// BPF_MAP_LOOKUP_ELEM into a raw buffer of value_size bytes (per-CPU
    /// maps return one value per possible CPU).
    pub fn lookup_raw<K: Plain>(&self, key: &K, out: &mut [u8]) -> Result<bool, SysError> {
        self.check::<K>("BPF_MAP_LOOKUP_ELEM")?;
        let per_cpu = matches!(
            self.info.map_type,
            sys::BPF_MAP_TYPE_PERCPU_HASH
                | sys::BPF_MAP_TYPE_PERCPU_ARRAY
                | sys::BPF_MAP_TYPE_LRU_PERCPU_HASH
        );
        let need = if per_cpu {
            (self.info.value_size as usize).next_multiple_of(8) * possible_cpus()
        } else {
            self.info.value_size as usize
        };
        if out.len() < need {
            // the kernel would write past the buffer
            return Err(SysError::new(
                "BPF_MAP_LOOKUP_ELEM",
                self.info.name.clone(),
                libc::EINVAL,
            ));
        }
        let mut attr = zeroed_attr();
        // SAFETY: plain fields; `out` holds at least what the kernel writes
        // (checked above) and outlives the call.
        unsafe {
            let a = &mut attr.__bindgen_anon_2;
            a.map_fd = self.fd.as_raw_fd() as u32;
            a.key = key as *const K as u64;
            a.__bindgen_anon_1.value = out.as_mut_ptr() as u64;
        }
        match sys_bpf(sys::BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(_) => Ok(true),
            Err(libc::ENOENT) => Ok(false),
            Err(e) => Err(SysError::new(
                "BPF_MAP_LOOKUP_ELEM",
                self.info.name.clone(),
                e,
            )),
        }
    }

    /// BPF_MAP_DELETE_ELEM. The errno is kept for the engine to classify.
    pub fn delete<K: Plain>(&self, key: &K) -> Result<(), SysError> {
        self.check::<K>("BPF_MAP_DELETE_ELEM")?;
        let mut attr = zeroed_attr();
        // SAFETY: plain fields; key outlives the call.
        unsafe {
            let a = &mut attr.__bindgen_anon_2;
            a.map_fd = self.fd.as_raw_fd() as u32;
            a.key = key as *const K as u64;
        }
        sys_bpf(sys::BPF_MAP_DELETE_ELEM, &mut attr)
            .map(drop)
            .map_err(|e| SysError::new("BPF_MAP_DELETE_ELEM", self.info.name.clone(), e))
    }

    /// BPF_MAP_GET_NEXT_KEY: the key after `key` (the first key for `None`),
    /// or `None` at the end.
    pub fn next_key<K: Plain>(&self, key: Option<&K>) -> Result<Option<K>, SysError> {
        self.check::<K>("BPF_MAP_GET_NEXT_KEY")?;
        let mut next = [0u8; 64];
        let len = std::mem::size_of::<K>();
        if len > next.len() {
            return Err(SysError::new(
                "BPF_MAP_GET_NEXT_KEY",
                self.info.name.clone(),
                libc::EINVAL,
            ));
        }
        let mut attr = zeroed_attr();
        // SAFETY: plain fields; key (or null) and `next` (64 bytes >= key
        // size) outlive the call.
        unsafe {
            let a = &mut attr.__bindgen_anon_2;
            a.map_fd = self.fd.as_raw_fd() as u32;
            a.key = key.map_or(0, |k| k as *const K as u64);
            a.__bindgen_anon_1.next_key = next.as_mut_ptr() as u64;
        }
        match sys_bpf(sys::BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => Ok(super::read_plain(&next[..len])),
            Err(libc::ENOENT) => Ok(None),
            Err(e) => Err(SysError::new(
                "BPF_MAP_GET_NEXT_KEY",
                self.info.name.clone(),
                e,
            )),
        }
    }

    /// Every key of the map, walked with get_next_key, at most `limit`.
    pub fn keys<K: Plain>(&self, limit: usize) -> Result<Vec<K>, SysError> {
        let mut out = Vec::new();
        let mut cur: Option<K> = None;
        while out.len() < limit {
            match self.next_key(cur.as_ref())? {
                Some(k) => {
                    out.push(k);
                    cur = Some(k);
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// BPF_MAP_DELETE_BATCH of `keys[..count]`. The answer carries the
    /// kernel's count untouched.
    pub fn delete_batch<K: Plain>(&self, keys: &[K], count: u32) -> BatchAnswer {
        if let Err(e) = self.check::<K>("BPF_MAP_DELETE_BATCH") {
            return BatchAnswer {
                count,
                result: Err(e),
            };
        }
        let count = count.min(keys.len() as u32);
        let mut attr = zeroed_attr();
        // SAFETY: plain fields of the batch member; `keys` holds at least
        // `count` keys and outlives the call.
        unsafe {
            let b = &mut attr.batch;
            b.map_fd = self.fd.as_raw_fd() as u32;
            b.keys = bytes_of(keys).as_ptr() as u64;
            b.count = count;
        }
        let r = sys_bpf(sys::BPF_MAP_DELETE_BATCH, &mut attr);
        // SAFETY: reading back a plain field the kernel may have written.
        let count = unsafe { attr.batch.count };
        BatchAnswer {
            count,
            result: r
                .map(drop)
                .map_err(|e| SysError::new("BPF_MAP_DELETE_BATCH", self.info.name.clone(), e)),
        }
    }

    /// BPF_MAP_UPDATE_BATCH of `keys[..count]` with `values[..count]`.
    pub fn update_batch<K: Plain, V: Plain>(
        &self,
        keys: &[K],
        values: &[V],
        count: u32,
        elem_flags: u64,
    ) -> BatchAnswer {
        if let Err(e) = self.check::<K>("BPF_MAP_UPDATE_BATCH") {
            return BatchAnswer {
                count,
                result: Err(e),
            };
        }
        let count = count.min(keys.len().min(values.len()) as u32);
        let mut attr = zeroed_attr();
        // SAFETY: plain fields; both arrays hold at least `count` elements
        // and outlive the call.
        unsafe {
            let b = &mut attr.batch;
            b.map_fd = self.fd.as_raw_fd() as u32;
            b.keys = bytes_of(keys).as_ptr() as u64;
            b.values = bytes_of(values).as_ptr() as u64;
            b.count = count;
            b.elem_flags = elem_flags;
        }
        let r = sys_bpf(sys::BPF_MAP_UPDATE_BATCH, &mut attr);
        // SAFETY: reading back a plain field the kernel may have written.
        let count = unsafe { attr.batch.count };
        BatchAnswer {
            count,
            result: r
                .map(drop)
                .map_err(|e| SysError::new("BPF_MAP_UPDATE_BATCH", self.info.name.clone(), e)),
        }
    }

    /// BPF_MAP_LOOKUP_AND_DELETE_BATCH (hash maps): takes up to
    /// `keys.len()` entries. `token` is the kernel's opaque batch cursor
    /// (None to start). Returns the count and whether the walk is finished.
    pub fn lookup_and_delete_batch<K: Plain, V: Plain>(
        &self,
        token: &mut Option<u64>,
        keys: &mut [K],
        values: &mut [V],
    ) -> Result<(usize, bool), SysError> {
        self.check::<K>("BPF_MAP_LOOKUP_AND_DELETE_BATCH")?;
        let n = keys.len().min(values.len()) as u32;
        let in_batch = token.unwrap_or(0);
        let mut out_batch = 0u64;
        let mut attr = zeroed_attr();
        // SAFETY: plain fields; the cursor words and both arrays (n
        // elements) outlive the call.
        unsafe {
            let b = &mut attr.batch;
            b.map_fd = self.fd.as_raw_fd() as u32;
            b.in_batch = if token.is_some() {
                &in_batch as *const u64 as u64
            } else {
                0
            };
            b.out_batch = &mut out_batch as *mut u64 as u64;
            b.keys = bytes_of_mut(keys).as_mut_ptr() as u64;
            b.values = bytes_of_mut(values).as_mut_ptr() as u64;
            b.count = n;
        }
        let r = sys_bpf(sys::BPF_MAP_LOOKUP_AND_DELETE_BATCH, &mut attr);
        // SAFETY: reading back a plain field the kernel wrote.
        let count = unsafe { attr.batch.count } as usize;
        *token = Some(out_batch);
        match r {
            Ok(_) => Ok((count.min(n as usize), false)),
            Err(libc::ENOENT) => Ok((count.min(n as usize), true)),
            Err(e) => Err(SysError::new(
                "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
                self.info.name.clone(),
                e,
            )),
        }
    }
}

impl AsFd for MapHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The values of a `BPF_F_MMAPABLE` array map, mapped into this process
/// (read and written without a system call). Unmapped on drop.
pub struct MappedArray {
    base: std::ptr::NonNull<libc::c_void>,
    len: usize,
}

// SAFETY: the mapping is process-wide; it is reached only through
// volatile reads or atomics.
unsafe impl Send for MappedArray {}

impl MappedArray {
    /// `mmap(NULL, max_entries * value_size rounded to pages, RW,
    /// MAP_SHARED, map fd, 0)`; fails (EINVAL) for a map created without
    /// `BPF_F_MMAPABLE`.
    pub fn map(map: &MapHandle) -> Result<MappedArray, SysError> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let info = &map.info;
        let bytes = info.max_entries as usize * (info.value_size as usize).next_multiple_of(8);
        let len = bytes.max(1).next_multiple_of(page);
        // SAFETY: a new shared mapping (addr NULL) of a map's fd; it
        // aliases no Rust memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd.as_raw_fd(),
                0,
            )
        };
        let err = |e: i32| SysError::new("mmap", info.name.clone(), e);
        if p == libc::MAP_FAILED {
            return Err(err(std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO)));
        }
        let base = std::ptr::NonNull::new(p).ok_or_else(|| err(libc::EFAULT))?;
        Ok(MappedArray { base, len })
    }

    /// The first value as a u32 the kernel and BPF programs also write.
    pub fn word(&self) -> &std::sync::atomic::AtomicU32 {
        // SAFETY: the mapping is page-aligned, at least a page long and
        // lives as long as self; others write it concurrently, so it is
        // only reached atomically.
        unsafe { &*self.base.as_ptr().cast::<std::sync::atomic::AtomicU32>() }
    }

    /// Copies out value `i` of an array whose values are `T` (8-byte
    /// aligned, as the kernel lays them out); None past the mapping.
    pub fn read<T: Plain>(&self, i: usize) -> Option<T> {
        let stride = std::mem::size_of::<T>().next_multiple_of(8);
        let end = i
            .checked_mul(stride)?
            .checked_add(std::mem::size_of::<T>())?;
        if end > self.len {
            return None;
        }
        // SAFETY: in bounds (checked above) and aligned (page base, stride
        // a multiple of 8, T's alignment at most 8); T is Plain, so any
        // bytes are a valid T; a volatile read, as the kernel writes it.
        Some(unsafe {
            std::ptr::read_volatile(self.base.as_ptr().cast::<u8>().add(i * stride).cast::<T>())
        })
    }
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `map`, used by nothing else.
        unsafe { libc::munmap(self.base.as_ptr(), self.len) };
    }
}

/// BPF_PROG_TEST_RUN of the `syscall` program `name` with `ctx` as its
/// context, which the kernel copies back into `ctx` after the run. Returns
/// the program's return value.
pub fn run_syscall_prog<T: Plain>(
    prog: BorrowedFd<'_>,
    name: &str,
    ctx: &mut T,
) -> Result<u32, SysError> {
    let mut attr = zeroed_attr();
    // writing plain fields of the test member of a zeroed union; ctx
    // outlives the call
    attr.test.prog_fd = prog.as_raw_fd() as u32;
    attr.test.ctx_in = ctx as *mut T as u64;
    attr.test.ctx_size_in = std::mem::size_of::<T>() as u32;
    match sys_bpf(sys::BPF_PROG_TEST_RUN, &mut attr) {
        // SAFETY: reading back a plain field the kernel wrote.
        Ok(_) => Ok(unsafe { attr.test.retval }),
        Err(e) => Err(SysError::new("BPF_PROG_TEST_RUN", name, e)),
    }
}

fn path_cstring(call: &'static str, path: &Path) -> Result<CString, SysError> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| SysError::new(call, path.display().to_string(), libc::EINVAL))
}

/// BPF_OBJ_PIN: pins the object behind `fd` at `path` on a bpffs.
pub fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> Result<(), SysError> {
    let c = path_cstring("BPF_OBJ_PIN", path)?;
    let mut attr = zeroed_attr();
    // SAFETY: plain fields; the path string outlives the call.
    unsafe {
        let a = &mut attr.__bindgen_anon_4;
        a.pathname = c.as_ptr() as u64;
        a.bpf_fd = fd.as_raw_fd() as u32;
    }
    sys_bpf(sys::BPF_OBJ_PIN, &mut attr)
        .map(drop)
        .map_err(|e| SysError::new("BPF_OBJ_PIN", path.display().to_string(), e))
}

/// BPF_OBJ_GET: opens a pinned object.
pub fn obj_get(path: &Path) -> Result<OwnedFd, SysError> {
    let c = path_cstring("BPF_OBJ_GET", path)?;
    let mut attr = zeroed_attr();
    // the path string outlives the call
    attr.__bindgen_anon_4.pathname = c.as_ptr() as u64;
    sys_bpf(sys::BPF_OBJ_GET, &mut attr)
        .map(fd_from)
        .map_err(|e| SysError::new("BPF_OBJ_GET", path.display().to_string(), e))
}

/// BPF_OBJ_GET_INFO_BY_FD for a map.
pub fn map_info(fd: BorrowedFd<'_>) -> Result<MapInfo, SysError> {
    // SAFETY: bpf_map_info is a plain C struct; all-zero is valid.
    let mut info: sys::bpf_map_info = unsafe { std::mem::zeroed() };
    let mut attr = zeroed_attr();
    // `info` outlives the call and info_len is its size
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<sys::bpf_map_info>() as u32;
    attr.info.info = &mut info as *mut sys::bpf_map_info as u64;
    sys_bpf(sys::BPF_OBJ_GET_INFO_BY_FD, &mut attr)
        .map_err(|e| SysError::new("BPF_OBJ_GET_INFO_BY_FD", "map", e))?;
    let name: Vec<u8> = info
        .name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(MapInfo {
        map_type: info.type_,
        key_size: info.key_size,
        value_size: info.value_size,
        max_entries: info.max_entries,
        map_flags: info.map_flags,
        name: String::from_utf8_lossy(&name).into_owned(),
    })
}

/// The number of possible CPUs, the stride of per-CPU map values.
pub fn possible_cpus() -> usize {
    // SAFETY: libbpf_num_possible_cpus only reads a sysfs file.
    let n = unsafe { sys::libbpf_num_possible_cpus() };
    if n > 0 {
        n as usize
    } else {
        1
    }
}
