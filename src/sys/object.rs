//! A libbpf object: the embedded BPF ELF opened from memory, its maps
//! (possibly reusing pinned ones), its programs and their links.

use super::bpf::MapHandle;
use super::SysError;
use libbpf_sys as sys;
use std::ffi::{CStr, CString};
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::ptr::NonNull;

/// An opened (and later loaded) BPF object with the links it attached.
pub struct BpfObject {
    obj: NonNull<sys::bpf_object>,
    links: Vec<NonNull<sys::bpf_link>>,
    name: String,
}

fn errno_now() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

extern "C" {
    /// vsnprintf(3), bound here with libbpf-sys's `va_list` so the list a
    /// print callback receives is passed on as it came.
    fn vsnprintf(
        buf: *mut std::ffi::c_char,
        len: usize,
        fmt: *const std::ffi::c_char,
        ap: *mut sys::__va_list_tag,
    ) -> std::ffi::c_int;
}

/// libbpf's own messages, formatted and logged at debug level (with a
/// `libbpf:` prefix): what went wrong reaches the user as our error, not
/// as raw lines of the library on stderr.
unsafe extern "C" fn libbpf_print(
    _level: sys::libbpf_print_level,
    fmt: *const std::ffi::c_char,
    ap: *mut sys::__va_list_tag,
) -> std::ffi::c_int {
    if !log::log_enabled!(log::Level::Debug) || fmt.is_null() {
        return 0;
    }
    // a verifier log comes as one argument: room for a long one (the
    // argument list can be consumed only once)
    let mut buf = vec![0u8; 1 << 20];
    // SAFETY: buf is writable for its length; fmt and ap come from libbpf
    // as a matching format and argument list, consumed once here.
    let n = unsafe { vsnprintf(buf.as_mut_ptr().cast(), buf.len(), fmt, ap) };
    if n > 0 {
        let end = (n as usize).min(buf.len() - 1);
        let text = String::from_utf8_lossy(&buf[..end]);
        log::debug!("libbpf: {}", text.trim_end());
    }
    0
}

/// Routes libbpf's prints through [`libbpf_print`]; done once, before the
/// first object is opened.
pub fn route_libbpf_prints() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: libbpf_set_print only stores the pointer; libbpf_print is a
    // valid callback of the signature libbpf expects, for the program's life.
    ONCE.call_once(|| unsafe {
        sys::libbpf_set_print(Some(libbpf_print));
    });
}

fn cname(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

impl BpfObject {
    /// bpf_object__open_mem on an embedded object.
    pub fn open(bytes: &'static [u8], name: &str) -> Result<BpfObject, SysError> {
        route_libbpf_prints();
        let cn = cname(name);
        // SAFETY: opts is a plain C struct; zero then set its size as libbpf
        // requires. The object bytes are 'static; libbpf copies what it keeps.
        let obj = unsafe {
            let mut opts: sys::bpf_object_open_opts = std::mem::zeroed();
            opts.sz = std::mem::size_of::<sys::bpf_object_open_opts>() as _;
            opts.object_name = cn.as_ptr();
            sys::bpf_object__open_mem(bytes.as_ptr().cast(), bytes.len() as _, &opts)
        };
        let obj = NonNull::new(obj)
            .ok_or_else(|| SysError::new("bpf_object__open_mem", name, errno_now()))?;
        Ok(BpfObject {
            obj,
            links: Vec::new(),
            name: name.to_string(),
        })
    }

    fn map_ptr(&self, map: &str) -> Result<NonNull<sys::bpf_map>, SysError> {
        let c = cname(map);
        // SAFETY: obj is a live object; the name is a valid C string.
        let p = unsafe { sys::bpf_object__find_map_by_name(self.obj.as_ptr(), c.as_ptr()) };
        NonNull::new(p)
            .ok_or_else(|| SysError::new("bpf_object__find_map_by_name", map, libc::ENOENT))
    }

    fn prog_ptr(&self, prog: &str) -> Result<NonNull<sys::bpf_program>, SysError> {
        let c = cname(prog);
        // SAFETY: obj is a live object; the name is a valid C string.
        let p = unsafe { sys::bpf_object__find_program_by_name(self.obj.as_ptr(), c.as_ptr()) };
        NonNull::new(p)
            .ok_or_else(|| SysError::new("bpf_object__find_program_by_name", prog, libc::ENOENT))
    }

    /// Sets a map's max_entries before load.
    pub fn set_max_entries(&mut self, map: &str, n: u32) -> Result<(), SysError> {
        let m = self.map_ptr(map)?;
        // SAFETY: m belongs to the live, not yet loaded object.
        let r = unsafe { sys::bpf_map__set_max_entries(m.as_ptr(), n) };
        if r < 0 {
            return Err(SysError::new("bpf_map__set_max_entries", map, -r));
        }
        Ok(())
    }

    /// Makes the object use an existing map (a pinned one) instead of
    /// creating its own.
    pub fn reuse_map(&mut self, map: &str, fd: BorrowedFd<'_>) -> Result<(), SysError> {
        use std::os::fd::AsRawFd;
        let m = self.map_ptr(map)?;
        // SAFETY: m belongs to the live object; libbpf dups the fd.
        let r = unsafe { sys::bpf_map__reuse_fd(m.as_ptr(), fd.as_raw_fd()) };
        if r < 0 {
            return Err(SysError::new("bpf_map__reuse_fd", map, -r));
        }
        Ok(())
    }

    /// Chooses whether a program is loaded at all.
    pub fn set_autoload(&mut self, prog: &str, on: bool) -> Result<(), SysError> {
        let p = self.prog_ptr(prog)?;
        // SAFETY: p belongs to the live, not yet loaded object.
        let r = unsafe { sys::bpf_program__set_autoload(p.as_ptr(), on) };
        if r < 0 {
            return Err(SysError::new("bpf_program__set_autoload", prog, -r));
        }
        Ok(())
    }

    /// bpf_object__load: creates maps, verifies and loads programs.
    pub fn load(&mut self) -> Result<(), SysError> {
        // SAFETY: obj is a live, opened object.
        let r = unsafe { sys::bpf_object__load(self.obj.as_ptr()) };
        if r < 0 {
            return Err(SysError::new("bpf_object__load", self.name.clone(), -r));
        }
        Ok(())
    }

    /// The fd of a loaded map, borrowed from the object.
    pub fn map_fd(&self, map: &str) -> Result<BorrowedFd<'_>, SysError> {
        let m = self.map_ptr(map)?;
        // SAFETY: m belongs to the live object.
        let fd = unsafe { sys::bpf_map__fd(m.as_ptr()) };
        if fd < 0 {
            return Err(SysError::new("bpf_map__fd", map, -fd));
        }
        // SAFETY: the fd stays open as long as the object, which the
        // returned borrow cannot outlive.
        Ok(unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// A handle of its own (a duplicated fd) on one of the object's maps.
    pub fn map(&self, map: &str) -> Result<MapHandle, SysError> {
        let owned = self.map_fd(map)?.try_clone_to_owned().map_err(|e| {
            SysError::new(
                "dup",
                format!("fd of map {map}"),
                e.raw_os_error().unwrap_or(libc::EIO),
            )
        })?;
        MapHandle::from_fd(owned)
    }

    /// The kernel's run statistics of a loaded program: (runs, total ns).
    /// Counted only while `kernel.bpf_stats_enabled` is 1 (zeros else).
    pub fn prog_stats(&self, prog: &str) -> Result<(u64, u64), SysError> {
        let p = self.prog_ptr(prog)?;
        // SAFETY: p belongs to the live, loaded object.
        let fd = unsafe { sys::bpf_program__fd(p.as_ptr()) };
        if fd < 0 {
            return Err(SysError::new("bpf_program__fd", prog, -fd));
        }
        // SAFETY: bpf_prog_info is a plain C struct; all-zero is valid, and
        // the kernel writes at most info_len bytes into it.
        let mut info: sys::bpf_prog_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<sys::bpf_prog_info>() as u32;
        // SAFETY: fd is the program's open fd; info outlives the call.
        let r = unsafe { sys::bpf_prog_get_info_by_fd(fd, &mut info, &mut len) };
        if r < 0 {
            return Err(SysError::new("BPF_OBJ_GET_INFO_BY_FD", prog, -r));
        }
        Ok((info.run_cnt, info.run_time_ns))
    }

    /// A loaded program's fd, duplicated: the caller's to keep.
    pub fn prog_fd(&self, prog: &str) -> Result<OwnedFd, SysError> {
        let p = self.prog_ptr(prog)?;
        // SAFETY: p belongs to the live, loaded object.
        let fd = unsafe { sys::bpf_program__fd(p.as_ptr()) };
        if fd < 0 {
            return Err(SysError::new("bpf_program__fd", prog, -fd));
        }
        // SAFETY: fd is the program's open fd for the object's lifetime;
        // the duplicate is owned by the returned OwnedFd.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(SysError::new("fcntl(F_DUPFD_CLOEXEC)", prog, errno_now()));
        }
        // SAFETY: dup is a fresh fd nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(dup) })
    }

    /// Attaches a program by its section (tp_btf, ...), keeping the link.
    pub fn attach(&mut self, prog: &str) -> Result<(), SysError> {
        let p = self.prog_ptr(prog)?;
        // SAFETY: p belongs to the live, loaded object.
        let link = unsafe { sys::bpf_program__attach(p.as_ptr()) };
        let link = NonNull::new(link)
            .ok_or_else(|| SysError::new("bpf_program__attach", prog, errno_now()))?;
        self.links.push(link);
        Ok(())
    }

    /// Attaches a perf_event program to a perf event, which the link then
    /// owns (and closes on detach).
    pub fn attach_perf_event(&mut self, prog: &str, event: OwnedFd) -> Result<(), SysError> {
        let p = self.prog_ptr(prog)?;
        let raw = event.into_raw_fd();
        // SAFETY: p belongs to the live, loaded object; raw is an open perf
        // event fd whose ownership passes to the link.
        let link = unsafe { sys::bpf_program__attach_perf_event(p.as_ptr(), raw) };
        match NonNull::new(link) {
            Some(l) => {
                self.links.push(l);
                Ok(())
            }
            None => {
                let e = errno_now();
                // SAFETY: the attach failed, so the fd is still ours to close.
                unsafe { libc::close(raw) };
                Err(SysError::new("bpf_program__attach_perf_event", prog, e))
            }
        }
    }

    /// Detaches every link.
    pub fn detach_all(&mut self) {
        for l in self.links.drain(..) {
            // SAFETY: each link was returned by libbpf and is destroyed once.
            unsafe { sys::bpf_link__destroy(l.as_ptr()) };
        }
    }
}

impl Drop for BpfObject {
    fn drop(&mut self) {
        self.detach_all();
        // SAFETY: the object is live and closed exactly once.
        unsafe { sys::bpf_object__close(self.obj.as_ptr()) };
    }
}

/// The kernel release, for error messages.
pub fn kernel_release() -> String {
    // SAFETY: utsname is a plain C struct filled by uname(2).
    unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return "unknown".into();
        }
        CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}
