//! `pidmap run`: the agent itself, with signals taken through its loop,
//! until a signal, the end of `-- CMD` or (without a mode) forever.

use crate::agent::{Agent, AgentConfig};
use crate::cli::RunArgs;
use crate::error::Result;

/// Runs the agent; the exit status is the command's under `-- CMD` (126 or
/// 127 when it could not be executed, as a shell's).
pub fn run(r: RunArgs) -> Result<u8> {
    crate::sys::signal::block_agent_signals()?;
    let cfg = AgentConfig {
        mode: r.mode,
        pin_dir: r.pin_dir,
        keep_pins: r.keep_pins,
        metrics_file: r.metrics_file,
        max_entries: r.max_entries,
        ring_pages: r.ring_pages,
        delete_strategy: r.delete_strategy,
        delete_policy: r.delete_policy,
        wake_every_request: r.wake_every_request,
        budgets: Some(r.budgets),
        signals: true,
        ..Default::default()
    };
    let (agent, _handle) = Agent::new(cfg)?;
    let ended = agent.run()?;
    if let Some(why) = &ended.not_started {
        eprintln!("pidmap: error: {why}");
    }
    Ok(ended.exit_code.map_or(0, |c| c.clamp(0, 255) as u8))
}
