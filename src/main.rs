//! The `pidmap` binary: parses the command line, runs the command, maps the
//! outcome to an exit status.

use pidmap::cli::{self, BenchArgs, Cmd};
use pidmap::error::Result;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    pidmap::sys::signal::default_sigpipe();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    let cmd = match cli::parse(std::env::args_os().collect()) {
        Ok(c) => c,
        Err(u) => {
            eprintln!("pidmap: {}\n{}", u.msg, u.see());
            return ExitCode::from(2);
        }
    };
    // `audit --json`: an error is also a JSON object on stdout, so a
    // consumer that parses stdout always gets JSON
    let json = matches!(cmd, Cmd::Audit { json: true, .. });
    match run(cmd) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pidmap: error: {e}");
            if json {
                let _ = print(&format!(
                    "{{\"error\":\"{}\"}}\n",
                    pidmap::text::json_escape(&e.to_string())
                ));
            }
            ExitCode::from(2)
        }
    }
}

fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn run(cmd: Cmd) -> Result<u8> {
    match cmd {
        Cmd::Help(text) => {
            print(&text)?;
            Ok(0)
        }
        Cmd::Version => {
            print(&format!("pidmap {}\n", env!("CARGO_PKG_VERSION")))?;
            Ok(0)
        }
        Cmd::Run(r) => pidmap::cmd::run::run(r),
        Cmd::Audit {
            pin_dir,
            repair,
            json,
        } => pidmap::cmd::audit::run(&pin_dir, repair, json),
        Cmd::Bench(b) => {
            match b {
                BenchArgs::Delete(d) => {
                    let rows = pidmap::cmd::bench::delete_bench(&d)?;
                    pidmap::cmd::bench::print_delete(&d, &rows);
                }
                BenchArgs::Insert(i) => pidmap::cmd::bench::insert_bench(&i)?,
                BenchArgs::Churn(c) => pidmap::cmd::churn::run(&c)?,
                BenchArgs::Probe { json } => pidmap::cmd::probe::run(json)?,
            }
            Ok(0)
        }
        Cmd::Profile(p) if p.repeat > 1 => pidmap::cmd::repeat::run(p),
        Cmd::Profile(p) => pidmap::cmd::profile::run(p),
        Cmd::Diff(d) => pidmap::cmd::diff::run(&d),
    }
}
