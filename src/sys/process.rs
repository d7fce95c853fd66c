//! Starting a command gated on the agent: fork, wait until the agent has
//! tracked the child, then exec — so nothing the command runs is missed.
//! The command leads a process group of its own (a terminal's Ctrl-C
//! reaches pidmap only, which forwards it) and dies with pidmap
//! (`PR_SET_PDEATHSIG`), so even a SIGKILL of pidmap leaves no orphan.

use super::SysError;
use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// A forked child waiting at its gate before exec. Dropped without
/// [`Gated::release`], the child is killed and reaped: it never runs.
#[derive(Debug)]
pub struct Gated {
    pub pid: u32,
    gate: Option<OwnedFd>,
    status: OwnedFd,
    program: String,
    /// Released: the child is the caller's (running) or reaped.
    done: bool,
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

/// What the child exits with when it never reaches exec (its parent died
/// or gave up before the release): it ran nothing.
const NOT_RUN: i32 = 127;

/// Forks a child that leads a new process group (`setpgid(0, 0)`), dies
/// with the forking thread (`prctl(PR_SET_PDEATHSIG, SIGKILL)`, then
/// `getppid` to catch a parent that died before it), waits for
/// [`Gated::release`] and then execs `argv` (searched in PATH) with an
/// empty signal mask. Without the release byte it exits and runs nothing.
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
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: after fork the child only calls async-signal-safe functions
    // (setpgid, prctl, getppid, sigprocmask, read, write, execvp, _exit)
    // on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(SysError::last("fork", program));
    }
    if pid == 0 {
        // SAFETY: in the child, see above.
        unsafe {
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != parent {
                libc::_exit(NOT_RUN);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            let mut b = 0u8;
            if libc::read(gate_r.as_raw_fd(), (&mut b as *mut u8).cast(), 1) != 1 {
                libc::_exit(NOT_RUN);
            }
            libc::execvp(ptrs[0], ptrs.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(status_w.as_raw_fd(), (&errno as *const i32).cast(), 4);
            libc::_exit(NOT_RUN);
        }
    }
    // the child's own setpgid may come later: both set it, whichever first
    // SAFETY: setpgid takes two integers.
    unsafe { libc::setpgid(pid, pid) };
    drop(gate_r);
    drop(status_w);
    Ok(Gated {
        pid: pid as u32,
        gate: Some(gate_w),
        status: status_r,
        program,
        done: false,
    })
}

impl Gated {
    /// Lets the child exec; fails with exec's errno if it could not (the
    /// child has then exited and is reaped here).
    pub fn release(mut self) -> Result<u32, SysError> {
        let b = 1u8;
        if let Some(gate) = self.gate.take() {
            // SAFETY: writing one byte from a live local to an owned pipe fd.
            unsafe { libc::write(gate.as_raw_fd(), (&b as *const u8).cast(), 1) };
        }
        let mut errno = 0i32;
        // SAFETY: reading at most 4 bytes into a live local; EOF (0) means
        // the exec succeeded and closed the CLOEXEC pipe.
        let n = unsafe { libc::read(self.status.as_raw_fd(), (&mut errno as *mut i32).cast(), 4) };
        self.done = true;
        if n == 4 {
            wait(self.pid);
            return Err(SysError::new("execvp", self.program.clone(), errno));
        }
        Ok(self.pid)
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        if !self.done {
            // SAFETY: kill takes two integers; the child is ours, unreaped.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
            wait(self.pid);
        }
    }
}

/// The exit status as a shell reports it: the exit code, 128 + signal
/// when killed by one.
fn shell_status(status: i32) -> Option<i32> {
    if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        Some(128 + libc::WTERMSIG(status))
    } else {
        None
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
    shell_status(status)
}

/// Waits for the child `pid` to end and reaps it (`waitpid(pid, 0)`);
/// for a child known to be ending.
pub fn wait(pid: u32) -> Option<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into a live local.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if r == pid as libc::pid_t {
            return shell_status(status);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return None;
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

/// Clock ticks per second of /proc/PID/stat's times (`_SC_CLK_TCK`,
/// 100 when sysconf cannot tell).
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the C library, no pointers.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as u64
    } else {
        100
    }
}
