//! What the commands share: configuration loading (with or without secrets), logging, the store, the runtime,
//! exit mapping, and standard output that survives a closed pipe.

use crate::config::{log_filter, Config, RawConfig};
use crate::exit::{Exit, Failure};
use crate::mapping::MappingSet;
use crate::store::{Access, Store, StoreError};
use crate::sync::SyncError;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

pub struct Loaded {
    pub cfg: Config,
    pub mappings: MappingSet,
}

/// Loads and checks the configuration for a command that talks to the source, the platform or the store.
pub fn load(config: Option<&Path>) -> Result<Loaded, Failure> {
    load_with(config, true)
}

/// [`load`] for commands that only read the store: the secrets are not read (nor needed).
pub fn load_local(config: Option<&Path>) -> Result<Loaded, Failure> {
    load_with(config, false)
}

fn load_with(config: Option<&Path>, secrets: bool) -> Result<Loaded, Failure> {
    let env = super::env_vars();
    let path = RawConfig::locate(config).ok_or_else(|| {
        Failure::usage(
            "no configuration: give --config PATH, set DUALPUB_CONFIG, or create ./dualpub.toml (see dualpub.example.toml)",
        )
    })?;
    let (raw, origin) = RawConfig::load(Some(&path), &env)?;
    let cfg = if secrets {
        Config::from_raw(&raw, &origin, &env)?
    } else {
        Config::from_raw_local(&raw, &origin, &env)?
    };
    init_logging(raw.log.format.as_deref(), raw.log.level.as_deref())?;
    let mappings = raw.mappings(&origin)?;
    Ok(Loaded { cfg, mappings })
}

/// Logs go to stderr: text by default, JSON with `[log] format = "json"`; level from `$DUALPUB_LOG`, else
/// `[log] level` (a level such as `debug`, or a filter such as `dualpub=debug,hyper=warn`), default `warn`. A bad
/// setting is a usage error (an empty `$DUALPUB_LOG` counts as unset). Logs never carry secrets or full ID
/// numbers.
pub fn init_logging(format: Option<&str>, level: Option<&str>) -> Result<(), Failure> {
    let filter = match std::env::var("DUALPUB_LOG") {
        Ok(v) if !v.trim().is_empty() => log_filter(&v)
            .map_err(|e| Failure::usage(format!("environment variable DUALPUB_LOG: {e}")))?,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Failure::usage(
                "environment variable DUALPUB_LOG: is not valid UTF-8",
            ))
        }
        // `Config::from_raw` has already refused a bad `[log] level`.
        _ => log_filter(level.unwrap_or("warn"))
            .map_err(|e| Failure::usage(format!("[log] level: {e}")))?,
    };
    let filter = tracing_subscriber::EnvFilter::new(filter);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that cannot be written (standard error's reader gone) is dropped: the default reports it with
        // `eprintln!`, which panics there (exit 101).
        .log_internal_errors(false)
        .with_target(false);
    let _ = if format == Some("json") {
        builder.json().try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
    Ok(())
}

/// Opens the store for a command that writes it, creating it if there is none yet.
pub fn open_store(path: &Path) -> Result<Store, Failure> {
    Store::open(path).map_err(store_failure)
}

/// Opens the store for a command that does not create one: `None` when there is no store yet (nothing is created).
pub fn open_existing_store(path: &Path, access: Access) -> Result<Option<Store>, Failure> {
    Store::open_existing(path, access).map_err(store_failure)
}

/// The store a report reads (`reconcile` without `--repair`, `report annual`): the one at `[store] path`, or, when
/// there is none yet, an empty one that is not kept — the report compares as if nothing had been sent, and a
/// mistyped path is left as it was (no empty store that `status` would show as "never run").
pub fn store_to_read(path: &Path) -> Result<Store, Failure> {
    if let Some(store) = open_existing_store(path, Access::Read)? {
        return Ok(store);
    }
    crate::say!(
        "no store at {} yet: read as if nothing had been sent (`dualpub sync` creates it on its first run; if there \
         should be one, check [store] path)",
        path.display()
    );
    Store::empty(path).map_err(store_failure)
}

pub fn store_failure(e: StoreError) -> Failure {
    match e {
        StoreError::Locked { .. } => Failure::new(Exit::Locked, e),
        StoreError::Unusable { .. } | StoreError::NotAStore { .. } => Failure::new(Exit::Usage, e),
        _ => Failure::new(Exit::Aborted, e),
    }
}

pub fn sync_failure(e: SyncError) -> Failure {
    match e {
        SyncError::Store(s) => store_failure(s),
        e @ SyncError::Remote(crate::retry::GiveUp::Config { .. }) => Failure::new(Exit::Usage, e),
        other => Failure::new(Exit::Aborted, other),
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::new(
                Exit::Aborted,
                anyhow::anyhow!("cannot start the async runtime: {e}"),
            )
        })
}

/// `--today`, else today's date in China Standard Time.
pub fn today(arg: Option<&str>) -> Result<chrono::NaiveDate, Failure> {
    match arg {
        None => Ok(crate::model::today_cst()),
        Some(s) => crate::validate::parse_date(s.trim())
            .ok_or_else(|| Failure::usage(format!("--today {s}: expected a date like 2026-11-27"))),
    }
}

/// `--today` for a command that changes the platform (`acting`): only today's own date. A later one would withdraw
/// penalties whose display period has not ended (and no later sync would put them back); an earlier one would
/// publish again penalties whose period is over. Rehearsals against the simulators set
/// `DUALPUB_ALLOW_OTHER_TODAY=1`.
pub fn acting_today(arg: Option<&str>, acting: bool) -> Result<chrono::NaiveDate, Failure> {
    let Some(arg) = arg else {
        return Ok(crate::model::today_cst());
    };
    let date = today(Some(arg))?;
    let real = crate::model::today_cst();
    let allowed = std::env::var("DUALPUB_ALLOW_OTHER_TODAY").is_ok_and(|v| v.trim() == "1");
    if acting && date != real && !allowed {
        let what = if date > real {
            "withdraw penalties whose display period has not ended"
        } else {
            "publish again penalties whose display period is over"
        };
        return Err(Failure::usage(format!(
            "--today {date} is not today ({real}): acting as of another date would {what}. Ask the question \
             without acting (sync --dry-run, or reconcile without --repair); a rehearsal against the simulators \
             may set DUALPUB_ALLOW_OTHER_TODAY=1"
        )));
    }
    Ok(date)
}

pub fn parse_kinds(kind: Option<crate::model::Kind>) -> Vec<crate::model::Kind> {
    match kind {
        Some(k) => vec![k],
        None => crate::model::Kind::ALL.to_vec(),
    }
}

/// Text from another system (a record id, a party name, a document number, a message quoting a value) made safe
/// for a terminal on one line: each control character — ESC and so the sequences that clear a screen, hide text or
/// move the cursor, line breaks, the C1 controls such as U+009B — is written as its escape (`\u{1b}`), so the
/// operator sees what the data holds instead of the terminal obeying it.
pub fn shown(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return s.into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// JSON text as serde_json writes it, made safe for a terminal: serde_json escapes C0 controls in strings but
/// leaves DEL and the C1 controls (U+0080–U+009F, which some terminals obey as ESC sequences) as they are; they
/// become `\u00XX` escapes, so the text stays the same JSON. Its own line breaks stay.
pub fn json_shown(text: String) -> String {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return text;
    }
    text.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                format!("\\u{:04x}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Standard output for what a command prints. `println!` panics when the reader has gone away
/// (`dualpub status | head -1`); this writer does not: a broken pipe ends the output quietly (the rest is discarded
/// and the command finishes and exits as it would have), like most Unix tools. Any other write error is returned
/// to the caller and remembered, so that a command that printed through [`outln!`] still exits 3
/// (see [`stdout_error`]).
pub struct Stdout;

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDOUT_ERROR: Mutex<Option<String>> = Mutex::new(None);

impl Stdout {
    fn outcome<T>(r: std::io::Result<T>, ok: T) -> std::io::Result<T> {
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                STDOUT_CLOSED.store(true, Ordering::Relaxed);
                Ok(ok)
            }
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => {
                if let Ok(mut first) = STDOUT_ERROR.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
                Err(e)
            }
            r => r,
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if STDOUT_CLOSED.load(Ordering::Relaxed) {
            return Ok(buf.len());
        }
        Stdout::outcome(std::io::stdout().write(buf), buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if STDOUT_CLOSED.load(Ordering::Relaxed) {
            return Ok(());
        }
        Stdout::outcome(std::io::stdout().flush(), ())
    }
}

/// Whether the reader of standard output has gone away (a broken pipe): what is left to print can be skipped.
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(Ordering::Relaxed)
}

/// The first error other than a broken pipe that writing to standard output met, if any.
pub fn stdout_error() -> Option<String> {
    STDOUT_ERROR.lock().ok().and_then(|e| e.clone())
}

/// `println!` through [`Stdout`]: never panics.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!($crate::cli::common::Stdout, $($arg)*);
    }};
}
pub(crate) use outln;

/// [`outln!`] without the line's end.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!($crate::cli::common::Stdout, $($arg)*);
    }};
}
pub(crate) use out;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_not_obeyed() {
        assert_eq!(shown("CF-1"), "CF-1");
        assert_eq!(shown("a\u{1b}[2Jb\n\u{9b}c"), r"a\u{1b}[2Jb\u{a}\u{9b}c");
        let json = serde_json::to_string_pretty(&serde_json::json!({"a": "x\u{1b}\u{9b}\u{7f}y"}))
            .unwrap();
        let safe = json_shown(json);
        assert!(!safe.chars().any(|c| c.is_control() && c != '\n'), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["a"], "x\u{1b}\u{9b}\u{7f}y");
    }
}
