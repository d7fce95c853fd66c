//! What an agent is asked to do: the mode, the sampler, the pins, the
//! budgets and the loop's intervals.

use super::files::{self, FilesConfig};
use crate::maps::engine::ResumePolicy;
use crate::maps::loader;
use crate::maps::tables::DeleteStrategy;
use crate::tracker::budget::Budgets;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Data pages of each request ring, unless asked otherwise (`--ring-pages`
/// of run and bench).
pub const DEFAULT_RING_PAGES: usize = 8;
/// Data pages of each sample ring, unless asked otherwise (`profile
/// --ring-pages`).
pub const DEFAULT_SAMPLE_RING_PAGES: usize = 64;

/// How often the agent drains pid_events whatever the request records say
/// (requests written there by other programs are served within this).
pub const REQUEST_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Time an iteration spends on queued sync steps (each step is bounded
/// too: a few thousand keys or 64 KiB of maps).
pub const WORK_SLICE: Duration = Duration::from_millis(2);
/// The loop thread's EEVDF slice (Linux 6.12; the shortest it takes).
pub const LOOP_SLICE: Duration = Duration::from_micros(100);

/// What the agent tracks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Serve sync requests arriving through pid_events.
    Serve,
    /// Every process: a /proc scan at start, then fork/exec events.
    All,
    /// Given processes and their children.
    Pids(Vec<u32>),
    /// Start a command, track it and its descendants until it exits.
    Command(Vec<OsString>),
}

/// The sampler's settings (pidmap profile).
#[derive(Clone, Debug)]
pub struct Sampling {
    pub freq: u64,
    pub kernel: bool,
    pub ring_pages: usize,
    pub request_interval: Duration,
    /// How user stacks are walked (tables are built unless `Fp`).
    pub unwind: crate::sampler::unwind::Mode,
}

pub struct AgentConfig {
    pub mode: Mode,
    pub pin_dir: PathBuf,
    pub keep_pins: bool,
    pub metrics_file: Option<PathBuf>,
    pub metrics_interval: Duration,
    pub max_entries: u32,
    /// Data pages per report ring (a power of two).
    pub ring_pages: usize,
    pub delete_strategy: DeleteStrategy,
    /// What the engine does with the rest of a chunk after a stop.
    pub delete_policy: ResumePolicy,
    pub sweep_interval: Duration,
    /// How often pid_events is drained whatever the records say: the
    /// longest a request written there without a record (another program,
    /// or one whose record and latch both failed) waits.
    pub request_sweep_interval: Duration,
    /// Take SIGINT/SIGTERM/SIGHUP through a signalfd (the caller blocked them).
    pub signals: bool,
    /// Stop after this long (profile --duration).
    pub duration: Option<Duration>,
    pub sampling: Option<Sampling>,
    /// Tests: one perf record per request, so a tiny ring can lose some.
    pub wake_every_request: bool,
    /// Print elapsed time and samples on stderr every second.
    /// The file worker's deadline per job and stuck-worker cap.
    pub files: FilesConfig,
    /// What the file worker does with a mapping (tests); default: read
    /// its symbols ([`files::read_symbols`]).
    pub file_reader: Option<files::Reader>,
    /// Budgets of trie keys per process and uid; `None`: no budget (every
    /// process may take the whole trie).
    pub budgets: Option<Budgets>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            mode: Mode::Serve,
            pin_dir: PathBuf::from(loader::DEFAULT_PIN_DIR),
            keep_pins: false,
            metrics_file: None,
            metrics_interval: Duration::from_secs(5),
            max_entries: crate::abi::TRIE_MAX_ENTRIES,
            ring_pages: DEFAULT_RING_PAGES,
            delete_strategy: DeleteStrategy::Resume,
            delete_policy: ResumePolicy::Batch,
            sweep_interval: Duration::from_secs(10),
            request_sweep_interval: REQUEST_SWEEP_INTERVAL,
            signals: false,
            duration: None,
            sampling: None,
            wake_every_request: false,
            files: FilesConfig::default(),
            file_reader: None,
            budgets: None,
        }
    }
}
