//! Metrics in the Prometheus text format, written atomically (temporary
//! file, then rename) so a scraper never reads half a file. The directory
//! is checked first: a user who can write it could otherwise make root
//! write through a link they placed (DESIGN §9).

use crate::counters::{self, Snapshot, COUNTERS};
use crate::error::{Error, Result};
use crate::sys::fs::{Dir, DirStat};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Gauges of the agent at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    pub tracked_processes: u64,
    pub trie_entries: u64,
    pub files: u64,
    /// Files with an unwind table, and the parts of those tables in the
    /// kernel (776 bytes each).
    pub unwind_tables: u64,
    pub unwind_parts: u64,
}

pub fn render(c: &Snapshot, g: &Gauges) -> String {
    let mut s = String::new();
    for (name, help, v) in [
        (
            "tracked_processes",
            "processes tracked",
            g.tracked_processes,
        ),
        (
            "trie_entries",
            "trie keys recorded for tracked processes",
            g.trie_entries,
        ),
        ("files", "files in the registry", g.files),
        (
            "unwind_tables",
            "files with an unwind table (sampling with --unwind auto or cfi)",
            g.unwind_tables,
        ),
        (
            "unwind_parts",
            "parts of unwind tables in the kernel's unwind_pages (776 bytes each)",
            g.unwind_parts,
        ),
    ] {
        s += &format!(
            "# HELP pidmap_{name} {help}\n# TYPE pidmap_{name} gauge\npidmap_{name} {v}\n"
        );
    }
    for (name, help, v) in c.entries() {
        s += &format!("# HELP pidmap_{name}_total {help}\n# TYPE pidmap_{name}_total counter\npidmap_{name}_total {v}\n");
    }
    s
}

/// Upper bounds (seconds) of the loop iteration histogram's buckets.
pub const LOOP_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// A Prometheus histogram of durations, with the largest value seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Per bucket of [`LOOP_BUCKETS`], observations <= its bound (not
    /// cumulative; made cumulative when rendered).
    counts: [u64; LOOP_BUCKETS.len()],
    pub count: u64,
    pub sum: f64,
    pub max: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = LOOP_BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += s;
        if s > self.max {
            self.max = s;
        }
    }

    /// `name` as a histogram (`_bucket`, `_sum`, `_count`) and its
    /// maximum as the gauge `max_name`.
    pub fn render(&self, name: &str, help: &str, max_name: &str) -> String {
        let mut s = format!("# HELP {name} {help}\n# TYPE {name} histogram\n");
        let mut cum = 0;
        for (b, c) in LOOP_BUCKETS.iter().zip(self.counts) {
            cum += c;
            s += &format!("{name}_bucket{{le=\"{b}\"}} {cum}\n");
        }
        s += &format!("{name}_bucket{{le=\"+Inf\"}} {}\n", self.count);
        s += &format!("{name}_sum {}\n{name}_count {}\n", self.sum, self.count);
        s += &format!(
            "# HELP {max_name} the longest value of {name}\n# TYPE {max_name} gauge\n{max_name} {}\n",
            self.max
        );
        s
    }
}

/// The loop iteration histogram in the text format.
pub fn render_loop(h: &Histogram) -> String {
    h.render(
        "pidmap_loop_iteration_seconds",
        "time of one event loop iteration, from poll return to the next poll",
        "pidmap_loop_iteration_max_seconds",
    )
}

/// The directory the metrics file goes in ("." for a bare name).
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Why a metrics directory with this owner and mode is unsafe, if it is:
/// anyone who can write it but root could swap the file under our rename.
pub fn dir_problem(dir: &Path, st: DirStat) -> Option<String> {
    let open_to_others = st.mode & 0o022 != 0;
    let root_sticky = st.mode & 0o1000 != 0 && st.uid == 0;
    (open_to_others && !root_sticky).then(|| {
        format!(
            "metrics directory {} (mode {:04o}, owner uid {}) is writable by group or others and \
             is not a root-owned sticky directory: refused, others could replace the metrics file; \
             choose a directory only root can write, such as /run/pidmap",
            dir.display(),
            st.mode,
            st.uid
        )
    })
}

/// Checks that `path` can be written safely: its directory exists, is not
/// reached through a symbolic link as its last component, and is not
/// writable by others unless root-owned and sticky. The agent checks this
/// at start, before loading anything, and before each write.
pub fn check_target(path: &Path) -> Result<()> {
    let dir = dir_of(path);
    let d = dir.display();
    let opened = Dir::open_nofollow(dir).map_err(|e| {
        counters::add(&COUNTERS.unsafe_metrics_dir, 1);
        match e.errno() {
            libc::ENOENT => Error::new(format!(
                "--metrics-file {}: directory {d} does not exist: create it (systemd: RuntimeDirectory=) \
                 or choose another --metrics-file",
                path.display()
            )),
            libc::ELOOP => Error::new(format!(
                "--metrics-file {}: directory {d} is a symbolic link: refused; give the real directory",
                path.display()
            )),
            libc::ENOTDIR => Error::new(format!(
                "--metrics-file {}: {d} is not a directory",
                path.display()
            )),
            _ => Error::from(e).context(format!("--metrics-file {}", path.display())),
        }
    })?;
    let st = opened
        .stat()
        .map_err(|e| Error::new(format!("{e} of metrics directory {d}")))?;
    if let Some(why) = dir_problem(dir, st) {
        counters::add(&COUNTERS.unsafe_metrics_dir, 1);
        return Err(Error::new(why));
    }
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        counters::add(&COUNTERS.unsafe_metrics_dir, 1);
        return Err(Error::new(format!(
            "--metrics-file {} is a directory",
            path.display()
        )));
    }
    Ok(())
}

/// The checks of a start: [`check_target`], then a file made and removed in
/// the directory, so a directory the agent cannot write (read-only, or a
/// filesystem that holds no regular files) is refused now with exit 2, not
/// a warning at every write.
pub fn check_at_start(path: &Path) -> Result<()> {
    check_target(path)?;
    let dir = dir_of(path);
    // a random name made with O_EXCL, as the writes' temporary files: in a
    // shared sticky directory nobody can block the start by placing a file
    // at a name known in advance
    tempfile::Builder::new()
        .prefix(".pidmap-probe.")
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| {
            counters::add(&COUNTERS.unsafe_metrics_dir, 1);
            // the errno, without the random name tempfile appends
            let why = e.to_string();
            let why = why.split(" at path ").next().unwrap_or(&why);
            Error::new(format!(
                "--metrics-file {}: cannot create a file in {}: {why}: choose a writable \
                 directory (systemd: RuntimeDirectory=)",
                path.display(),
                dir.display()
            ))
        })
}

/// Writes `text` to `path` atomically: a fresh temporary file beside it
/// (O_CREAT|O_EXCL with a random name, so nothing there is followed or
/// reused), written and fsynced, then renamed over `path` (rename replaces
/// a symbolic link at `path`, never writes through it).
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    check_target(path)?;
    let dir = dir_of(path);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| {
            Error::from(e).context(format!("creating a temporary file in {}", dir.display()))
        })?;
    let f = tmp.as_file_mut();
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|_| f.write_all(text.as_bytes()))
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::from(e).context(format!("writing {}", tmp.path().display())))?;
    tmp.persist(path)
        .map_err(|e| Error::from(e.error).context(format!("renaming over {}", path.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn renders_every_counter_and_writes_atomically() {
        let c = Snapshot {
            keys_absent: 3,
            ..Default::default()
        };
        let g = Gauges {
            tracked_processes: 2,
            ..Default::default()
        };
        let text = render(&c, &g);
        assert!(text.contains("pidmap_keys_absent_total 3\n"));
        assert!(text.contains("pidmap_tracked_processes 2\n"));
        assert_eq!(text.matches("# TYPE").count(), 5 + c.entries().len());
        let dir = std::env::temp_dir().join(format!("pidmap-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.prom");
        write_atomic(&p, &text).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        assert!(!dir.join("m.prom.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A fresh directory of mode `mode` under the temp dir.
    fn dir_with_mode(name: &str, mode: u32) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("pidmap-metrics-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    #[test]
    fn links_at_temporary_names_and_at_the_target_are_never_followed() {
        let dir = dir_with_mode("links", 0o700);
        let victim = dir_with_mode("victim", 0o700).join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let p = dir.join("m.prom");
        // the old fixed temporary name, and names like ours
        let traps = ["m.prom.tmp", ".m.prom.tmp", ".m.prom.000000.tmp", "m.prom~"];
        for t in traps {
            std::os::unix::fs::symlink(&victim, dir.join(t)).unwrap();
        }
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        write_atomic(&p, "pidmap_x 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(
            m.file_type().is_file(),
            "the link at the target is replaced"
        );
        assert_eq!(m.mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "pidmap_x 1\n");
        for t in traps {
            assert!(std::fs::symlink_metadata(dir.join(t))
                .unwrap()
                .file_type()
                .is_symlink());
        }
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "m.prom" && !traps.contains(&n.as_str()))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(victim.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_reader_sees_a_whole_file_at_every_moment() {
        let dir = dir_with_mode("atomic", 0o700);
        let p = dir.join("m.prom");
        let (a, b) = ("a".repeat(200_000), "b".repeat(300_000));
        write_atomic(&p, &a).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (p, a, b, stop) = (p.clone(), a.clone(), b.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let t = std::fs::read_to_string(&p).unwrap();
                    assert!(t == a || t == b, "a partial file of {} bytes", t.len());
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..100 {
            write_atomic(&p, if i % 2 == 0 { &b } else { &a }).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_others_can_write_are_refused_unless_root_sticky() {
        let d = Path::new("/x");
        let ok = |uid, mode| dir_problem(d, DirStat { uid, mode }).is_none();
        assert!(ok(0, 0o755));
        assert!(ok(0, 0o700));
        assert!(ok(1000, 0o755), "a directory only its owner writes");
        assert!(ok(0, 0o1777), "/tmp");
        assert!(!ok(0, 0o777));
        assert!(!ok(0, 0o775), "group-writable");
        assert!(!ok(1000, 0o1777), "sticky but not root's");
        let e = dir_problem(
            d,
            DirStat {
                uid: 0,
                mode: 0o777,
            },
        )
        .unwrap();
        assert!(
            e.contains(
                "metrics directory /x (mode 0777, owner uid 0) is writable by group or others"
            ),
            "{e}"
        );
    }

    #[test]
    fn the_target_is_checked_before_anything_is_written() {
        let open = dir_with_mode("open", 0o777);
        let e = write_atomic(&open.join("m.prom"), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("is writable by group or others"), "{e}");
        assert_eq!(
            std::fs::read_dir(&open).unwrap().count(),
            0,
            "nothing written"
        );
        let missing = open.join("no-such-dir").join("m.prom");
        let e = check_target(&missing).unwrap_err().to_string();
        assert!(e.contains("no-such-dir does not exist"), "{e}");
        let real = dir_with_mode("real", 0o755);
        let link = real
            .parent()
            .unwrap()
            .join(format!("pidmap-metrics-link-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let e = check_target(&link.join("m.prom")).unwrap_err().to_string();
        assert!(e.contains("is a symbolic link: refused"), "{e}");
        assert!(check_target(&real.join("m.prom")).is_ok());
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_dir_all(&open).unwrap();
        std::fs::remove_dir_all(&real).unwrap();
    }

    #[test]
    fn the_loop_histogram_is_cumulative_with_its_maximum() {
        use std::time::Duration;
        let mut h = Histogram::default();
        for us in [50, 80, 300, 2_000, 40_000, 3_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let text = render_loop(&h);
        assert!(text.contains("# TYPE pidmap_loop_iteration_seconds histogram\n"));
        assert!(text.contains("pidmap_loop_iteration_seconds_bucket{le=\"0.0001\"} 2\n"));
        assert!(text.contains("pidmap_loop_iteration_seconds_bucket{le=\"0.0005\"} 3\n"));
        assert!(text.contains("pidmap_loop_iteration_seconds_bucket{le=\"0.0025\"} 4\n"));
        assert!(text.contains("pidmap_loop_iteration_seconds_bucket{le=\"0.05\"} 5\n"));
        assert!(text.contains("pidmap_loop_iteration_seconds_bucket{le=\"1\"} 5\n"));
        assert!(text.contains("pidmap_loop_iteration_seconds_bucket{le=\"+Inf\"} 6\n"));
        assert!(text.contains("pidmap_loop_iteration_seconds_count 6\n"));
        assert!(text.contains("pidmap_loop_iteration_max_seconds 3\n"));
        assert_eq!(h.max, 3.0);
    }
}
