//! dualpub: publishes an agency's administrative permits and penalties (双公示) from its enforcement system to the
//! provincial credit platform. See ARCHITECTURE.md for the map of modules.

/// `eprintln!` without its panic: a message to standard error whose reader went away (`dualpub … 2>&1 | head -1`)
/// is dropped, and the command ends with its own exit code rather than 101. Every message of the commands goes
/// through this or [`say_text!`]; the logs' writer (tracing) already drops what it cannot write.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `eprint!` without its panic (see [`say!`]).
#[macro_export]
macro_rules! say_text {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

pub mod calendar;
pub mod cli;
pub mod config;
pub mod exit;
pub mod findings;
pub mod ids;
pub mod map_input;
pub mod mapping;
pub mod model;
pub mod platform_client;
pub mod reconcile;
pub mod redact;
pub mod retry;
pub mod sim;
pub mod source_client;
pub mod source_schema;
pub mod store;
pub mod sync;
pub mod validate;
pub mod xml;

/// Reads a settings file an operator writes (`dualpub.toml`, mapping files, `calendar.toml`) as text. One that is not
/// UTF-8 — saved as GBK by an editor on a Chinese Windows, say — says so and what to do, not only "stream did not
/// contain valid UTF-8".
pub fn read_settings_text(path: &std::path::Path) -> std::io::Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            std::io::Error::new(
                e.kind(),
                "it is not UTF-8 text (saved as GBK by an editor on a Chinese Windows, say): save it as UTF-8",
            )
        } else {
            e
        }
    })
}
