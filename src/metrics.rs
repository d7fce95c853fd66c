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
