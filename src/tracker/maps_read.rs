//! Reading one process's /proc/PID/maps into the mappings a sync wants,
//! on the maps worker thread ("pidmap-maps"), never on the event loop.
//!
//! The kernel produces the maps text under the target's mmap lock; a
//! process that holds it (an mmap storm, a fault stuck on a FUSE file a
//! user serves, a fork of a huge address space) stalls the reader for as
//! long as it likes. So the read is a job of [`crate::worker::Pool`] with
//! a deadline: the loop goes on serving exits and other syncs meanwhile,
//! and a read stuck past the deadline fails that sync and counts against
//! the process's owner (see `ProcessManager`).
//!
//! The text is read and parsed a chunk at a time: only executable file
//! mappings (and `[vdso]`) are kept, so memory follows what is tracked,
//! not the size of the file.

use crate::proc::maps::{self as procmaps, MapsEntry, MapsPath, Perms};
use crate::sys::procmap;
use crate::tracker::registry::{self, VDSO_FILE_ID};
use crate::warn_limited;
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Bytes read from the maps file at a time.
const CHUNK: usize = 64 << 10;

/// What a mapping should be according to /proc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Wanted {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub file_id: u64,
    pub dev: u64,
    pub ino: u64,
    /// Deleted (or a memfd): only /proc/PID/map_files may reach it.
    pub deleted: bool,
}

/// The mappings of one process that matter, as the maps file said.
#[derive(Debug, Default)]
pub struct MapsRead {
    pub(super) want: Vec<Wanted>,
    pub(super) paths: HashMap<u64, String>,
    pub bytes: usize,
    pub lines: usize,
    pub bad_lines: usize,
    /// Time the read took on the worker.
    pub took: Duration,
}

/// Whether a maps line can matter (executable, or `[vdso]`), from its
/// permissions field alone: most lines are skipped without a full parse.
fn may_matter(line: &[u8]) -> bool {
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        return true; // malformed: let the parser say so
    };
    line.get(sp + 3) != Some(&b'-') || line.ends_with(b"[vdso]")
}

impl Wanted {
    /// The `[vdso]` mapping at start..end.
    pub(super) fn vdso(start: u64, end: u64) -> Wanted {
        Wanted {
            start,
            end,
            offset: 0,
            file_id: VDSO_FILE_ID,
            dev: 0,
            ino: 0,
            deleted: false,
        }
    }
}

/// The vdso's name in the maps and in the registry.
pub(super) const VDSO_NAME: &str = "[vdso]";

fn wanted(e: &MapsEntry) -> Option<(Wanted, String)> {
    if e.is_vdso() {
        return Some((Wanted::vdso(e.start, e.end), VDSO_NAME.into()));
    }
    if !e.is_exec_file() {
        return None;
    }
    let (path, deleted) = match &e.path {
        MapsPath::File { path, deleted } => (path.clone(), *deleted),
        // a memfd has no path: only map_files reaches it
        MapsPath::Memfd { name, .. } => (format!("/memfd:{name}"), true),
        _ => return None,
    };
    let w = Wanted {
        start: e.start,
        end: e.end,
        offset: e.offset,
        file_id: registry::file_id(e.dev(), e.inode),
        dev: e.dev(),
        ino: e.inode,
        deleted,
    };
    Some((w, path))
}

/// Set once PROCMAP_QUERY answered that the kernel lacks it (before 6.11):
/// the maps are read as text from then on.
static NO_QUERY: AtomicBool = AtomicBool::new(false);

impl MapsRead {
    /// The executable mappings by PROCMAP_QUERY, one ioctl each (the
    /// kernel skips the others and formats nothing); false when there are
    /// none. `bytes` counts the mappings found, `lines` too.
    fn query(&mut self, f: &File) -> std::io::Result<bool> {
        thread_local! {
            static NAME: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        NAME.with(|n| {
            let mut name = n.borrow_mut();
            name.resize(libc::PATH_MAX as usize + 1, 0);
            let mut addr = 0u64;
            while let Some(v) = procmap::next_exec(f.as_fd(), addr, &mut name)? {
                if v.end <= addr {
                    break; // no progress: never loop on a confused answer
                }
                addr = v.end;
                self.lines += 1;
                self.bytes += 1;
                let e = MapsEntry {
                    start: v.start,
                    end: v.end,
                    perms: Perms {
                        read: v.read,
                        write: v.write,
                        exec: v.exec,
                        shared: v.shared,
                    },
                    offset: v.offset,
                    dev_major: v.dev_major,
                    dev_minor: v.dev_minor,
                    inode: v.inode,
                    path: procmaps::classify_path(&name[..v.name_len]),
                };
                if let Some((w, path)) = wanted(&e) {
                    self.paths.entry(w.file_id).or_insert(path);
                    self.want.push(w);
                }
            }
            Ok(self.lines > 0)
        })
    }

    /// Parses complete lines of `data`; a first bad line is logged.
    pub(super) fn parse(&mut self, pid: u32, data: &[u8]) {
        for line in data.split(|&b| b == b'\n') {
            if line.is_empty() {
                continue;
            }
            self.lines += 1;
            if !may_matter(line) {
                continue;
            }
            match procmaps::parse_line(line) {
                Ok(e) => {
                    if let Some((w, path)) = wanted(&e) {
                        self.paths.entry(w.file_id).or_insert(path);
                        self.want.push(w);
                    }
                }
                Err(what) => {
                    self.bad_lines += 1;
                    if self.bad_lines == 1 {
                        let text: String =
                            String::from_utf8_lossy(line).chars().take(200).collect();
                        warn_limited!("maps line", "pid {pid}: maps line {text:?}: {what}");
                    }
                }
            }
        }
    }

    /// Reads and parses a whole maps file a chunk at a time.
    fn read_from(&mut self, pid: u32, file: &mut File) -> std::io::Result<()> {
        // one buffer per thread, kept across reads: a read of a small
        // process costs no allocation and no page faults
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with(|b| {
            let mut buf = b.borrow_mut();
            buf.resize(CHUNK, 0);
            self.read_with(pid, file, &mut buf)
        })
    }

    fn read_with(&mut self, pid: u32, file: &mut File, buf: &mut [u8]) -> std::io::Result<()> {
        let mut carry = Vec::new();
        loop {
            let n = match file.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            if n == 0 {
                self.parse(pid, &carry);
                return Ok(());
            }
            self.bytes += n;
            let data = &buf[..n];
            match data.iter().rposition(|&b| b == b'\n') {
                Some(last) => {
                    carry.extend_from_slice(&data[..=last]);
                    self.parse(pid, &carry);
                    carry.clear();
                    carry.extend_from_slice(&data[last + 1..]);
                }
                None => carry.extend_from_slice(data),
            }
        }
    }
}

/// Reads the mappings of `pid` that matter: /proc/PID/maps, or a live
/// thread's maps when the leader is a zombie (its own maps file reads
/// empty while threads still run). The worker's job.
pub fn read(pid: u32) -> std::io::Result<MapsRead> {
    let t0 = Instant::now();
    let mut out = MapsRead::default();
    let mut f = File::open(format!("/proc/{pid}/maps"))?;
    if !NO_QUERY.load(Ordering::Relaxed) {
        match out.query(&f) {
            Ok(true) => {
                out.took = t0.elapsed();
                return Ok(out);
            }
            // nothing executable: the text decides (a zombie leader's maps
            // read empty, and its threads' are read then)
            Ok(false) => {}
            Err(e) if procmap::unsupported(&e) => NO_QUERY.store(true, Ordering::Relaxed),
            // anything else (a path longer than the buffer; a zombie
            // leader, whose mm is gone: ESRCH where the text reads empty):
            // the text decides, as it did before the query
            Err(_) => {}
        }
        out = MapsRead::default();
    }
    out.read_from(pid, &mut f)?;
    if out.bytes == 0 {
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let name = t.file_name();
                if name.to_str() == Some(&pid.to_string()) {
                    continue;
                }
                let p = Path::new("/proc")
                    .join(pid.to_string())
                    .join("task")
                    .join(&name)
                    .join("maps");
                let Ok(mut f) = File::open(p) else { continue };
                let mut thread = MapsRead::default();
                if thread.read_from(pid, &mut f).is_ok() && thread.bytes > 0 {
                    out = thread;
                    break;
                }
            }
        }
    }
    out.took = t0.elapsed();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROCMAP_QUERY and the text give the same mappings (this kernel has
    /// the ioctl: 6.11 and later), for this process and a python3.
    #[test]
    fn the_query_and_the_text_agree() {
        let mut child = std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import json, re, sys; print('ready', flush=True); sys.stdin.read()",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        // its libraries are mapped once it says so
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "ready\n");
        let pid = child.id();
        for pid in [std::process::id(), pid] {
            let f = File::open(format!("/proc/{pid}/maps")).unwrap();
            let mut q = MapsRead::default();
            assert!(
                q.query(&f).unwrap(),
                "pid {pid}: PROCMAP_QUERY found nothing"
            );
            let mut t = MapsRead::default();
            t.read_from(pid, &mut File::open(format!("/proc/{pid}/maps")).unwrap())
                .unwrap();
            assert!(t.want.len() >= 4, "{:?}", t.want);
            assert_eq!(q.want, t.want, "pid {pid}");
            assert_eq!(q.paths, t.paths, "pid {pid}");
        }
        drop(child.stdin.take());
        child.wait().unwrap();
    }

    #[test]
    fn only_executable_file_mappings_and_the_vdso_are_kept() {
        let text = b"\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon
00651000-00652000 r--p 00051000 08:02 173521      /usr/bin/dbus-daemon
7f0000000000-7f0000001000 rw-p 00000000 00:00 0
7ffd5e5fe000-7ffd5e600000 r-xp 00000000 00:00 0                          [vdso]
7f1000000000-7f1000010000 r-xp 00002000 08:02 99 /tmp/x (deleted)
";
        let mut r = MapsRead::default();
        r.parse(1, text);
        assert_eq!(r.lines, 5);
        let starts: Vec<u64> = r.want.iter().map(|w| w.start).collect();
        assert_eq!(starts, vec![0x400000, 0x7ffd5e5fe000, 0x7f1000000000]);
        assert!(r.want[2].deleted);
        assert_eq!(r.want[0].offset, 0);
        assert_eq!(r.want[2].offset, 0x2000);
        assert_eq!(r.want[1].file_id, VDSO_FILE_ID);
    }

    #[test]
    fn lines_split_across_chunks_are_parsed_whole() {
        // more than one chunk of lines, each executable
        let mut text = Vec::new();
        for i in 0..3000u64 {
            let s = 0x10000000 + i * 0x2000;
            text.extend_from_slice(
                format!(
                    "{:x}-{:x} r-xp 00000000 08:02 {} /usr/lib/lib{i}.so\n",
                    s,
                    s + 0x1000,
                    1000 + i
                )
                .as_bytes(),
            );
        }
        assert!(text.len() > 2 * CHUNK);
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, &text).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).unwrap();
        let mut r = MapsRead::default();
        r.read_from(1, &mut f).unwrap();
        assert_eq!(r.bad_lines, 0);
        assert_eq!(r.lines, 3000);
        assert_eq!(r.want.len(), 3000);
        assert_eq!(r.bytes, text.len());
    }

    #[test]
    fn our_own_maps_are_read() {
        let r = read(std::process::id()).unwrap();
        assert!(r.lines > 0 && !r.want.is_empty());
        assert!(r.want.iter().any(|w| w.file_id == VDSO_FILE_ID));
    }
}
