//! The command line (DESIGN §1): argument parsing and dispatch. Each command lives in its own module and returns
//! an `Exit` or a `Failure`; `main` prints and maps them to the process exit code in one place.

mod map_cmd;

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
    /// Map and validate source records (JSON array or JSON lines) and print the platform XML or every error.
    Map(map_cmd::MapArgs),
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
    match cli.command {
        Command::Map(args) => map_cmd::run(cli.config.as_deref(), args),
    }
}

/// The process environment, as the configuration loader takes it.
pub fn env_vars() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}
