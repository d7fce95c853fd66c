//! The loop's own read of a process's executable mappings: the
//! `pidmap_vmas` syscall program (Linux 6.7: `bpf_task_from_pid` and the
//! open-coded `task_vma` iterator), run with BPF_PROG_RUN, which writes
//! them into the mmapable array `vma_out`. One system call, no /proc file
//! opened, and the kernel takes the process's mmap lock with a trylock, so
//! the read never waits for it: a process that holds its lock answers
//! EBUSY, and its maps are read from /proc on the maps worker instead.

use crate::abi::{VmaEntry, VmaQuery, VMAS_MAX};
use crate::maps::loader::VMAS_PROG;
use crate::sys::bpf::{run_syscall_prog, MapHandle, MappedArray};
use crate::sys::SysError;
use std::os::fd::{AsFd, OwnedFd};

/// The program's fd and its answer array, mapped.
pub struct VmaReader {
    prog: OwnedFd,
    out: MappedArray,
}

/// Why a read was not done here (the maps worker reads /proc instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Declined {
    /// The kernel lacks the kfuncs (before Linux 6.7): never again.
    Unsupported,
    /// This process, this time: its errno (EBUSY: its mmap lock is held;
    /// ENOENT: no address space, a zombie leader; ESRCH: gone; E2BIG: more
    /// mappings than one run reads; ETIME: the walk took too long).
    Errno(i32),
}

impl VmaReader {
    pub fn new(prog: OwnedFd, out: &MapHandle) -> Result<VmaReader, SysError> {
        Ok(VmaReader {
            prog,
            out: MappedArray::map(out)?,
        })
    }

    /// The executable mappings of `pid` (file mappings and the vdso), in
    /// address order, appended to `into`; how many mappings were looked at.
    pub fn read(&self, pid: u32, into: &mut Vec<VmaEntry>) -> Result<u32, Declined> {
        let mut q = VmaQuery {
            pid,
            ..Default::default()
        };
        run_syscall_prog(self.prog.as_fd(), VMAS_PROG, &mut q).map_err(|e| match e.errno() {
            // ENOTSUPP (524): the kernel's own "not supported"
            libc::EINVAL | libc::EOPNOTSUPP | 524 => Declined::Unsupported,
            n => Declined::Errno(n),
        })?;
        match -q.err {
            0 => {}
            libc::EOPNOTSUPP => return Err(Declined::Unsupported),
            n => return Err(Declined::Errno(n)),
        }
        let n = (q.count as usize).min(VMAS_MAX);
        into.reserve(n);
        for i in 0..n {
            match self.out.read::<VmaEntry>(i) {
                Some(e) => into.push(e),
                None => return Err(Declined::Errno(libc::EFAULT)),
            }
        }
        Ok(q.visited)
    }
}
