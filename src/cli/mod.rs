//! The command line (DESIGN §1): argument parsing and dispatch. Each command lives in its own module and returns
//! an `Exit` or a `Failure`; `main` prints and maps them to the process exit code in one place.

pub(crate) mod common;
mod demo_cmd;
mod map_cmd;
mod quarantine_cmd;
mod reconcile_cmd;
mod status_cmd;
mod sync_cmd;

use crate::exit::{Exit, Failure};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "dualpub",
    version,
    about = "Publishes administrative permits and penalties (双公示) to the credit platform"
)]
pub struct Cli {
    /// Configuration file (default: $DUALPUB_CONFIG, else ./dualpub.toml when it exists).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One cron run: read changes since the checkpoint, map, validate, push, record receipts.
    Sync(sync_cmd::SyncArgs),
    /// Compare source, ledger and platform; report every gap, with deadlines; --repair fixes what it can.
    Reconcile(reconcile_cmd::ReconcileArgs),
    /// Reports to file: `report annual --year YYYY`.
    Report(reconcile_cmd::ReportArgs),
    /// Checkpoints, ledger counts by state, quarantine and outbox size, last runs; reads only the store (no secrets).
    Status(status_cmd::StatusArgs),
    /// Inspect and retry records that failed validation or were rejected.
    Quarantine(quarantine_cmd::QuarantineArgs),
    /// Map and validate source records (a JSON array, one object or JSON lines) and print the platform XML or every
    /// error.
    Map(map_cmd::MapArgs),
    /// Run a simulator of the enforcement system or the credit platform.
    Sim(SimArgs),
    /// Both simulators in-process, two syncs with changes in between, a reconcile; needs no config.
    Demo(demo_cmd::DemoArgs),
}

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    pub which: SimWhich,
}

#[derive(Subcommand, Debug)]
pub enum SimWhich {
    /// The enforcement-system simulator (DESIGN §2).
    Source(crate::sim::source::SourceArgs),
    /// The credit-platform simulator (DESIGN §3).
    Platform(crate::sim::platform::PlatformArgs),
}

/// Parses the arguments and runs the command. Clap's own errors exit 2 (usage), `--help` exits 0.
pub fn run() -> Result<Exit, Failure> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            let _ = e.print();
            return Ok(code);
        }
    };
    let config = cli.config.as_deref();
    let result = match cli.command {
        Command::Sync(args) => sync_cmd::run(config, args),
        Command::Status(args) => status_cmd::run(config, args),
        Command::Reconcile(args) => reconcile_cmd::run(config, args),
        Command::Report(args) => reconcile_cmd::run_report(config, args),
        Command::Quarantine(args) => quarantine_cmd::run(config, args),
        Command::Map(args) => map_cmd::run(config, args),
        Command::Demo(args) => demo_cmd::run(args),
        Command::Sim(SimArgs { which }) => {
            let rt = common::runtime()?;
            let r = match which {
                SimWhich::Source(a) => rt.block_on(crate::sim::source::run(a)),
                SimWhich::Platform(a) => rt.block_on(crate::sim::platform::run(a)),
            };
            r.map(|()| Exit::Ok)
        }
    };
    // What a command printed reached its reader, or the reader went away (a broken pipe is not an error), or
    // writing failed: then the output is incomplete, and the run says so.
    let _ = std::io::Write::flush(&mut common::Stdout);
    match (result, common::stdout_error()) {
        (Ok(_), Some(e)) => Err(Failure::new(
            Exit::Aborted,
            anyhow::anyhow!("cannot write to standard output: {e}"),
        )),
        (r, _) => r,
    }
}

/// The process environment, as the configuration loader takes it.
pub fn env_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}
