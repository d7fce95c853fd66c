//! Metrics in the Prometheus text format, written atomically (temporary
//! file, then rename) so a scraper never reads half a file.

use crate::counters::Snapshot;
use std::io::Write;
use std::path::Path;

/// Gauges of the agent at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Gauges {
    pub tracked_processes: u64,
    pub trie_entries: u64,
    pub files: u64,
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

pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all().ok();
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(text.matches("# TYPE").count(), 3 + c.entries().len());
        let dir = std::env::temp_dir().join(format!("pidmap-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m.prom");
        write_atomic(&p, &text).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        assert!(!dir.join("m.prom.tmp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
