//! The fake kernel's BPF maps: in-memory maps per thread behind the bpf(2)
//! dispatch (`sys_bpf`), with knobs for the answers old or unhappy kernels
//! give (no batch command, ENOTSUPP, transient errors, EFAULT, untouched
//! counts). The installed map answers every fd; [`add_map`] binds more maps
//! to the fds of the next map creations (tests that need two maps, as the
//! audit).

use libbpf_sys as sys;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

/// How the fake answers a batch command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeBatch {
    Supported,
    /// ENOTSUPP: map type without batch ops.
    NotSupported,
    /// EINVAL with count untouched: command unknown.
    Unknown,
}

/// One fake BPF map: its sizes, its entries and how it answers.
#[derive(Debug)]
pub struct FakeMap {
    pub key_size: usize,
    pub value_size: usize,
    pub max_entries: usize,
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
    pub delete_batch: FakeBatch,
    pub update_batch: FakeBatch,
    /// A key that fails with errno for its next n delete or update attempts.
    pub transient: HashMap<Vec<u8>, (i32, u32)>,
    /// The next delete batch that reaches a key at this position of its
    /// list answers EFAULT, as the kernel does when it cannot copy that key
    /// in: the keys before it are deleted and count says how many.
    pub efault_at: Option<usize>,
    /// The next batch call fails with this errno, count left untouched.
    pub setup_error: Option<i32>,
    /// Batch calls that go through before `setup_error` strikes.
    pub setup_error_after: u32,
    /// (command, count sent) of every call.
    pub calls: Vec<(u32, u32)>,
}

impl FakeMap {
    pub fn new(key_size: usize, value_size: usize, max_entries: usize) -> FakeMap {
        FakeMap {
            key_size,
            value_size,
            max_entries,
            entries: BTreeMap::new(),
            delete_batch: FakeBatch::Supported,
            update_batch: FakeBatch::Supported,
            transient: HashMap::new(),
            efault_at: None,
            setup_error: None,
            setup_error_after: 0,
            calls: Vec::new(),
        }
    }

    pub fn calls_of(&self, cmd: u32) -> usize {
        self.calls.iter().filter(|(c, _)| *c == cmd).count()
    }

    fn invalid(&self, key: &[u8]) -> bool {
        // an LPM key whose prefix_len exceeds 96 bits
        self.key_size == 16 && u32::from_ne_bytes([key[0], key[1], key[2], key[3]]) > 96
    }

    fn delete_one(&mut self, key: &[u8]) -> Result<(), i32> {
        if let Some((errno, n)) = self.transient.get_mut(key) {
            if *n > 0 {
                *n -= 1;
                return Err(*errno);
            }
        }
        if self.invalid(key) {
            return Err(libc::EINVAL);
        }
        self.entries.remove(key).map(drop).ok_or(libc::ENOENT)
    }

    fn update_one(&mut self, key: &[u8], value: &[u8], flags: u64) -> Result<(), i32> {
        if let Some((errno, n)) = self.transient.get_mut(key) {
            if *n > 0 {
                *n -= 1;
                return Err(*errno);
            }
        }
        if self.invalid(key) {
            return Err(libc::EINVAL);
        }
        let exists = self.entries.contains_key(key);
        if exists && flags == sys::BPF_NOEXIST as u64 {
            return Err(libc::EEXIST);
        }
        if !exists && self.entries.len() >= self.max_entries {
            return Err(libc::ENOSPC);
        }
        self.entries.insert(key.to_vec(), value.to_vec());
        Ok(())
    }
}

thread_local! {
    static FAKE: RefCell<Option<FakeMap>> = const { RefCell::new(None) };
    /// Maps waiting for their BPF_MAP_CREATE, and maps bound to an fd.
    static QUEUED: RefCell<Vec<FakeMap>> = const { RefCell::new(Vec::new()) };
    static BOUND: RefCell<HashMap<u32, FakeMap>> = RefCell::new(HashMap::new());
}

/// Routes this thread's bpf(2) calls to `k` until [`uninstall`].
pub fn install(k: FakeMap) {
    FAKE.with(|f| *f.borrow_mut() = Some(k));
}

/// Removes every fake map of this thread; returns the installed one.
pub fn uninstall() -> Option<FakeMap> {
    QUEUED.with(|q| q.borrow_mut().clear());
    BOUND.with(|b| b.borrow_mut().clear());
    FAKE.with(|f| f.borrow_mut().take())
}

/// The next BPF_MAP_CREATE of this thread (with a map installed) returns
/// an fd that `k` answers, instead of the installed map.
pub fn add_map(k: FakeMap) {
    QUEUED.with(|q| q.borrow_mut().push(k));
}

/// The fd a command addresses (0 for a map creation).
fn target_fd(cmd: u32, attr: &sys::bpf_attr) -> u32 {
    // SAFETY: reading the plain u32 fd member the wrapper filled for this
    // command; every member of the union is plain data.
    unsafe {
        match cmd {
            sys::BPF_MAP_DELETE_BATCH
            | sys::BPF_MAP_UPDATE_BATCH
            | sys::BPF_MAP_LOOKUP_AND_DELETE_BATCH => attr.batch.map_fd,
            sys::BPF_OBJ_GET_INFO_BY_FD => attr.info.bpf_fd,
            sys::BPF_MAP_CREATE => 0,
            _ => attr.__bindgen_anon_2.map_fd,
        }
    }
}

/// Runs `f` on the installed map (panics if none is).
pub fn with<R>(f: impl FnOnce(&mut FakeMap) -> R) -> R {
    FAKE.with(|k| f(k.borrow_mut().as_mut().expect("fake kernel installed")))
}

/// # Safety
/// `addr` must point to `len` readable bytes.
unsafe fn read(addr: u64, len: usize) -> Vec<u8> {
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len).to_vec() }
}

/// # Safety
/// `addr` must point to `data.len()` writable bytes.
unsafe fn write(addr: u64, data: &[u8]) {
    // SAFETY: guaranteed by the caller.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) }
}

pub(in crate::sys) fn dispatch(cmd: u32, attr: &mut sys::bpf_attr) -> Option<Result<i64, i32>> {
    if FAKE.with(|f| f.borrow().is_none()) {
        return None;
    }
    let fd = target_fd(cmd, attr);
    let bound = BOUND.with(|b| b.borrow_mut().remove(&fd));
    if let Some(mut k) = bound {
        // SAFETY: as below.
        let r = unsafe { answer(&mut k, cmd, attr) };
        BOUND.with(|b| b.borrow_mut().insert(fd, k));
        return Some(r);
    }
    if cmd == sys::BPF_MAP_CREATE {
        if let Some(mut k) = QUEUED.with(|q| q.borrow_mut().pop()) {
            // SAFETY: as below.
            let r = unsafe { answer(&mut k, cmd, attr) };
            if let Ok(fd) = r {
                BOUND.with(|b| b.borrow_mut().insert(fd as u32, k));
            }
            return Some(r);
        }
    }
    FAKE.with(|f| {
        let mut guard = f.borrow_mut();
        let k = guard.as_mut()?;
        // SAFETY: the wrappers in bpf.rs fill attr with pointers to live
        // buffers of the map's key/value sizes, exactly as for the kernel.
        Some(unsafe { answer(k, cmd, attr) })
    })
}

/// # Safety
/// The pointers in `attr` must be valid for the command, as for bpf(2).
unsafe fn answer(k: &mut FakeMap, cmd: u32, attr: &mut sys::bpf_attr) -> Result<i64, i32> {
    let (ks, vs) = (k.key_size, k.value_size);
    match cmd {
        sys::BPF_MAP_CREATE => {
            // SAFETY: opening /dev/null for an fd the caller will own.
            let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
            k.calls.push((cmd, 0));
            Ok(fd as i64)
        }
        sys::BPF_MAP_DELETE_ELEM => {
            // SAFETY: the caller's key pointer covers key_size bytes.
            let key = unsafe { read(attr.__bindgen_anon_2.key, ks) };
            k.calls.push((cmd, 1));
            k.delete_one(&key).map(|_| 0)
        }
        sys::BPF_MAP_UPDATE_ELEM => {
            // SAFETY: key and value pointers cover their sizes.
            let (key, value, flags) = unsafe {
                let a = &attr.__bindgen_anon_2;
                (read(a.key, ks), read(a.__bindgen_anon_1.value, vs), a.flags)
            };
            k.calls.push((cmd, 1));
            k.update_one(&key, &value, flags).map(|_| 0)
        }
        sys::BPF_MAP_LOOKUP_ELEM => {
            // SAFETY: key pointer covers key_size bytes.
            let key = unsafe { read(attr.__bindgen_anon_2.key, ks) };
            k.calls.push((cmd, 1));
            match k.entries.get(&key) {
                // SAFETY: the value buffer covers value_size bytes.
                Some(v) => unsafe {
                    write(attr.__bindgen_anon_2.__bindgen_anon_1.value, v);
                    Ok(0)
                },
                None => Err(libc::ENOENT),
            }
        }
        sys::BPF_MAP_GET_NEXT_KEY => {
            // SAFETY: key is null or covers key_size bytes.
            let cur = unsafe {
                let p = attr.__bindgen_anon_2.key;
                (p != 0).then(|| read(p, ks))
            };
            let next = match cur {
                None => k.entries.keys().next().cloned(),
                Some(c) => k
                    .entries
                    .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                    .next()
                    .map(|(kk, _)| kk.clone()),
            };
            match next {
                // SAFETY: next_key buffer covers key_size bytes.
                Some(n) => unsafe {
                    write(attr.__bindgen_anon_2.__bindgen_anon_1.next_key, &n);
                    Ok(0)
                },
                None => Err(libc::ENOENT),
            }
        }
        sys::BPF_OBJ_GET_INFO_BY_FD => {
            // SAFETY: info points to a bpf_map_info of info_len bytes.
            unsafe {
                let info = &mut *(attr.info.info as *mut sys::bpf_map_info);
                info.key_size = ks as u32;
                info.value_size = vs as u32;
                info.max_entries = k.max_entries as u32;
            }
            Ok(0)
        }
        sys::BPF_MAP_DELETE_BATCH | sys::BPF_MAP_UPDATE_BATCH => {
            // SAFETY: reading the batch member the wrapper filled.
            let b = unsafe { attr.batch };
            k.calls.push((cmd, b.count));
            let support = if cmd == sys::BPF_MAP_DELETE_BATCH {
                k.delete_batch
            } else {
                k.update_batch
            };
            match support {
                FakeBatch::NotSupported => return Err(crate::sys::ENOTSUPP),
                FakeBatch::Unknown => return Err(libc::EINVAL),
                FakeBatch::Supported => {}
            }
            if k.setup_error.is_some() && k.setup_error_after > 0 {
                k.setup_error_after -= 1;
            } else if let Some(e) = k.setup_error.take() {
                return Err(e); // count untouched, as kernels before 6.8
            }
            let n = b.count as usize;
            let mut done = 0;
            let mut result = Ok(0);
            for i in 0..n {
                if cmd == sys::BPF_MAP_DELETE_BATCH && k.efault_at == Some(i) {
                    // the kernel stops at the key it cannot copy and
                    // reports the keys it processed before it
                    k.efault_at = None;
                    attr.batch.count = done;
                    return Err(libc::EFAULT);
                }
                // SAFETY: keys/values cover count elements.
                let key = unsafe { read(b.keys + (i * ks) as u64, ks) };
                let r = if cmd == sys::BPF_MAP_DELETE_BATCH {
                    k.delete_one(&key)
                } else {
                    // SAFETY: as above.
                    let value = unsafe { read(b.values + (i * vs) as u64, vs) };
                    k.update_one(&key, &value, b.elem_flags)
                };
                if let Err(e) = r {
                    result = Err(e);
                    break;
                }
                done += 1;
            }
            attr.batch.count = done;
            result
        }
        sys::BPF_MAP_LOOKUP_AND_DELETE_BATCH => {
            // SAFETY: reading the batch member the wrapper filled.
            let b = unsafe { attr.batch };
            k.calls.push((cmd, b.count));
            match k.delete_batch {
                FakeBatch::NotSupported => return Err(crate::sys::ENOTSUPP),
                FakeBatch::Unknown => return Err(libc::EINVAL),
                FakeBatch::Supported => {}
            }
            // the entries from the front (each taken is deleted, so a
            // cursor is not needed); ENOENT once the walk is over
            let taken: Vec<(Vec<u8>, Vec<u8>)> = k
                .entries
                .iter()
                .take(b.count as usize)
                .map(|(kk, v)| (kk.clone(), v.clone()))
                .collect();
            for (i, (kk, v)) in taken.iter().enumerate() {
                // SAFETY: keys/values cover count elements.
                unsafe {
                    write(b.keys + (i * ks) as u64, kk);
                    write(b.values + (i * vs) as u64, v);
                }
                k.entries.remove(kk);
            }
            attr.batch.count = taken.len() as u32;
            if k.entries.is_empty() {
                Err(libc::ENOENT)
            } else {
                Ok(0)
            }
        }
        _ => Err(libc::EINVAL),
    }
}
