//! Starting a command gated on the agent: fork, wait until the agent has
//! tracked the child, then exec — so nothing the command runs is missed.

use super::SysError;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// A forked child waiting at its gate before exec.
#[derive(Debug)]
pub struct Gated {
    pub pid: u32,
    gate: OwnedFd,
    status: OwnedFd,
    program: String,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SysError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SysError::last("pipe2", "command gate"));
    }
    // SAFETY: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks a child that waits for [`Gated::release`] and then execs `argv`
/// (searched in PATH) with an empty signal mask.
pub fn spawn_gated(argv: &[OsString]) -> Result<Gated, SysError> {
    let program = argv
        .first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| SysError::new("execvp", program.clone(), libc::EINVAL))?;
    if args.is_empty() {
        return Err(SysError::new("execvp", "empty command", libc::EINVAL));
    }
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let (gate_r, gate_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    // SAFETY: after fork the child only calls async-signal-safe functions
    // (sigprocmask, read, write, execvp, _exit) on memory prepared before
    // the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SysError::last("fork", program));
    }
    if pid == 0 {
        // SAFETY: in the child, see above.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            let mut b = 0u8;
            libc::read(gate_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1);
            libc::execvp(ptrs[0], ptrs.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(status_w.as_raw_fd(), (&errno as *const i32).cast(), 4);
            libc::_exit(127);
        }
    }
    drop(gate_r);
    drop(status_w);
    Ok(Gated {
        pid: pid as u32,
        gate: gate_w,
        status: status_r,
        program,
    })
}

impl Gated {
    /// Lets the child exec; fails with exec's errno if it could not.
    pub fn release(self) -> Result<u32, SysError> {
        let b = 1u8;
        // SAFETY: writing one byte from a live local to an owned pipe fd.
        unsafe { libc::write(self.gate.as_raw_fd(), (&b as *const u8).cast(), 1) };
        drop(self.gate);
        let mut errno = 0i32;
        // SAFETY: reading at most 4 bytes into a live local; EOF (0) means
        // the exec succeeded and closed the CLOEXEC pipe.
        let n = unsafe { libc::read(self.status.as_raw_fd(), (&mut errno as *mut i32).cast(), 4) };
        if n == 4 {
            return Err(SysError::new("execvp", self.program, errno));
        }
        Ok(self.pid)
    }
}

/// Reaps `pid` if it has exited: its exit code, 128 + signal when killed.
pub fn try_wait(pid: u32) -> Option<i32> {
    let mut status = 0;
    // SAFETY: waitpid writes the status into a live local.
    let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
    if r != pid as libc::pid_t {
        return None;
    }
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
    }
}

/// Raises RLIMIT_NOFILE to its hard limit (one pidfd per tracked process
/// is needed); does nothing when it cannot.
pub fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// The real uid of this process (`getuid`).
#[cfg(test)]
pub fn uid() -> u32 {
    nix::unistd::getuid().as_raw()
}
