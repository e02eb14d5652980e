//! `dualpub reconcile` and `dualpub report annual`.

use super::common;
use crate::calendar::Calendar;
use crate::exit::{Exit, Failure};
use crate::model::Kind;
use crate::reconcile::annual::AnnualAccumulator;
use crate::reconcile::engine::{self, ReconcileError, ReconcileOptions};
use crate::reconcile::report::{Category, RepairSummary, Report};
use crate::reconcile::writers;
use crate::sync::{self, SyncOptions};
use clap::{Args, ValueEnum};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
    Xlsx,
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// First decision date of the window (YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<String>,
    /// Last decision date of the window (YYYY-MM-DD).
    #[arg(long)]
    pub to: Option<String>,
    /// Only this kind: permit or penalty.
    #[arg(long, value_parser = super::map_cmd::parse_kind)]
    pub kind: Option<Kind>,
    /// Judge deadlines and display periods as of this date (default: today in China Standard Time). With --repair
    /// only today's date, unless DUALPUB_ALLOW_OTHER_TODAY=1 (a rehearsal against the simulators).
    #[arg(long)]
    pub today: Option<String>,
    /// Output format; csv and xlsx need --out.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Output file (json, xlsx) or directory (csv); json and table default to stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Re-push missing and stale records, withdraw expired ones; then report what was done and what is left.
    #[arg(long)]
    pub repair: bool,
    /// With --repair: also withdraw orphans (platform records the source does not have).
    #[arg(long, requires = "repair")]
    pub repair_orphans: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(subcommand)]
    pub which: ReportWhich,
}

#[derive(clap::Subcommand, Debug)]
pub enum ReportWhich {
    /// The year's numbers for the 政府信息公开工作年度报告.
    Annual {
        /// The year to count (decisions dated 1 January to 31 December), e.g. 2025.
        #[arg(long)]
        year: i32,
        /// Output format; xlsx needs --out FILE.
        #[arg(long, default_value = "table", value_parser = annual_format())]
        format: Format,
        /// Output file; table and json default to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Judge publication deadlines as of this date (YYYY-MM-DD; default: today in China Standard Time).
        #[arg(long)]
        today: Option<String>,
    },
}

/// The formats of `report annual`: reconcile's, without csv.
fn annual_format() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(["table", "json", "xlsx"])
        .map(|s| <Format as ValueEnum>::from_str(&s, false).expect("a listed format"))
}

fn date_arg(name: &str, v: Option<&str>) -> Result<Option<chrono::NaiveDate>, Failure> {
    match v {
        None => Ok(None),
        Some(s) => crate::validate::parse_date(s.trim())
            .map(Some)
            .ok_or_else(|| {
                Failure::usage(format!("--{name} {s}: expected a date like 2026-01-31"))
            }),
    }
}

/// The calendar: the built-in one, extended (and per year replaced) by `calendar.toml` of the configured mapping
/// directory when it has one.
fn calendar(mapping_dir: Option<&Path>) -> Result<Calendar, Failure> {
    match mapping_dir
        .map(|d| d.join("calendar.toml"))
        .filter(|p| p.exists())
    {
        Some(p) => Calendar::load_over_builtin(&p).map_err(Failure::usage),
        None => Ok(Calendar::builtin()),
    }
}

fn reconcile_failure(e: ReconcileError) -> Failure {
    match e {
        ReconcileError::Calendar(c) => Failure::usage(c),
        ReconcileError::Store(s) => common::store_failure(s),
        e @ ReconcileError::Remote(crate::retry::GiveUp::Config { .. }) => {
            Failure::new(Exit::Usage, e)
        }
        other => Failure::new(Exit::Aborted, other),
    }
}

/// Records `--repair` pushes again per `sync::send_again` call: 10,000, or `DUALPUB_REPAIR_CHUNK` (the tests set it
/// small to cover several chunks).
fn repush_chunk() -> Result<usize, Failure> {
    match std::env::var("DUALPUB_REPAIR_CHUNK") {
        Err(_) => Ok(10_000),
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .ok_or_else(|| {
                Failure::usage(format!(
                    "DUALPUB_REPAIR_CHUNK=\"{v}\" is not a whole number of records above 0"
                ))
            }),
    }
}

pub fn run(config: Option<&Path>, args: ReconcileArgs) -> Result<Exit, Failure> {
    let loaded = common::load(config)?;
    let today = common::acting_today(args.today.as_deref(), args.repair)?;
    let chunk_size = if args.repair { repush_chunk()? } else { 0 };
    let from = date_arg("from", args.from.as_deref())?;
    let to = date_arg("to", args.to.as_deref())?;
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(Failure::usage(format!("--from {f} is after --to {t}")));
        }
    }
    if matches!(args.format, Format::Csv | Format::Xlsx) && args.out.is_none() {
        return Err(Failure::usage(
            "--format csv and xlsx need --out (a directory for csv, a file for xlsx)",
        ));
    }
    check_out(args.format, args.out.as_deref())?;
    let cal = calendar(loaded.cfg.mapping_dir.as_deref())?;
    // A repair sends, and creates the store if there is none yet; a reconcile before the first sync reads an empty
    // one that is not kept.
    let store = if args.repair {
        common::open_store(&loaded.cfg.store_path)?
    } else {
        common::store_to_read(&loaded.cfg.store_path)?
    };
    // One retry budget for the whole command, as for a sync: reading both systems and every run of the repair
    // spend it (the repair had a fresh one of its own, so the command could spend twice the time in trouble).
    let budget = std::sync::Arc::new(crate::retry::Budget::new(
        loaded.cfg.retry_budget,
        loaded.cfg.max_backoff,
    ));
    let opts = ReconcileOptions {
        kinds: common::parse_kinds(args.kind),
        from,
        to,
        today,
        progress: std::io::stderr().is_terminal(),
        repair: args.repair,
        budget: Some(budget.clone()),
    };
    let rt = common::runtime()?;
    let (mut report, plan) = rt
        .block_on(engine::reconcile(
            &loaded.cfg,
            &loaded.mappings,
            &store,
            &cal,
            &opts,
        ))
        .map_err(reconcile_failure)?;

    if args.repair {
        // The command's budget, what reading both systems left of it, for every run of the repair.
        let sopts = SyncOptions {
            kinds: opts.kinds.clone(),
            dry_run: false,
            today,
            progress: false,
            budget: Some(budget),
        };
        let mut summary = RepairSummary::default();
        // Why the repair stopped before its end, when the source, platform or store gave out: the report is still
        // written, and the exit code then says the run was cut short (3), as sync's does.
        let mut stopped: Option<sync::SyncError> = None;
        // First what an earlier run left in the outbox (sent later, an old batch could undo the repair). On its
        // own, so the counts below are the repair's records only.
        if let Err((_, e)) = rt.block_on(sync::send_again(
            &loaded.cfg,
            &loaded.mappings,
            &store,
            &sopts,
            Vec::new(),
            sync::Copies::FromFeed {
                read: plan.read_from,
            },
        )) {
            summary.left.push(format!(
                "nothing was repaired: resending what an earlier run left in the outbox stopped: {e}"
            ));
            stopped = Some(e);
        }
        // Read back from the spool and pushed a chunk at a time, so memory stays flat however many there are.
        let total = plan.repush.len() as u64;
        let mut done = 0u64;
        match plan.repush.chunks(chunk_size) {
            _ if stopped.is_some() => summary.failed += total,
            Err(e) => {
                summary.failed += total;
                summary.left.push(format!(
                    "re-pushing could not start: the re-push spool in {}: {e}",
                    std::env::temp_dir().display()
                ));
            }
            Ok(chunks) => {
                for chunk in chunks {
                    let chunk = match chunk {
                        Ok(c) => c,
                        Err(e) => {
                            summary.failed += total - done;
                            summary.left.push(format!(
                                "re-pushing stopped: the re-push spool in {}: {e}",
                                std::env::temp_dir().display()
                            ));
                            break;
                        }
                    };
                    let n = chunk.len() as u64;
                    let (s, err) = match rt.block_on(sync::send_again(
                        &loaded.cfg,
                        &loaded.mappings,
                        &store,
                        &sopts,
                        chunk
                            .into_iter()
                            .map(|(kind, raw)| (kind, sync::HeldVersion::Copy(raw))),
                        sync::Copies::FromFeed {
                            read: plan.read_from,
                        },
                    )) {
                        Ok(s) => (s, None),
                        Err((s, e)) => (s, Some(e)),
                    };
                    let fixed = (s.accepted + s.platform_unchanged).min(n);
                    summary.repushed += fixed;
                    // the old keys of records whose document number changed
                    summary.withdrawn += s.withdrawn;
                    if let Some(e) = err {
                        summary.failed += (total - done).saturating_sub(fixed);
                        summary.left.push(format!("re-pushing stopped: {e}"));
                        stopped = Some(e);
                        break;
                    }
                    // Rejected by the platform, given up again for want of an answer, or held back by sync
                    // (invalid now, or a document number another record holds: quarantined); not repaired.
                    summary.failed +=
                        (s.rejected + s.still_unanswered + s.quarantined).min(n - fixed);
                    done += n;
                }
            }
        }
        // The withdrawals the gaps call for, then the orphans: one run each, so each count is its own.
        let orphans = if args.repair_orphans {
            plan.orphans.clone()
        } else {
            Vec::new()
        };
        let mut not_attempted = 0;
        for (keys, is_orphans) in [(plan.withdraw.clone(), false), (orphans, true)] {
            if keys.is_empty() {
                continue;
            }
            if stopped.is_some() {
                not_attempted += keys.len();
                continue;
            }
            let asked = keys.len() as u64;
            let (s, err) = match rt.block_on(sync::withdraw(
                &loaded.cfg,
                &loaded.mappings,
                &store,
                &sopts,
                keys,
            )) {
                Ok(s) => (s, None),
                Err((s, e)) => (s, Some(e)),
            };
            if is_orphans {
                summary.orphans_withdrawn += s.withdrawn;
            } else {
                summary.withdrawn += s.withdrawn;
            }
            // rejected, or given up for want of an answer (`NO_RESULT`)
            summary.failed += s.rejected.min(asked);
            if let Some(e) = err {
                summary.left.push(format!("withdrawing stopped: {e}"));
                stopped = Some(e);
            }
        }
        if not_attempted > 0 {
            summary.left.push(format!(
                "{not_attempted} withdrawal(s) not attempted: the repair stopped before them"
            ));
        }
        if summary.failed > 0 && stopped.is_none() {
            summary.left.push(format!(
                "{} record(s) not repaired: the platform rejected them or left them unanswered (NO_RESULT), or sync \
                 held them back (invalid now, or a document number another record holds); see `dualpub quarantine list`",
                summary.failed
            ));
        }
        if plan.held_back > 0 {
            summary.left.push(format!(
                "{} withdrawal(s) not done: a record that should be public was pushed to the same key (it changed while \
                 reconcile read it, or another record has the same document number); the next sync settles it, and the \
                 next reconcile shows where it stands",
                plan.held_back
            ));
        }
        if plan.older_copies > 0 {
            summary.left.push(format!(
                "{} record(s) not repaired: the enforcement system serves them in an older version than the one the \
                 platform holds and acknowledged, and the repair does not undo a publication with it (their rows say \
                 which versions); check whether the enforcement system, or the replica dualpub reads, lags behind",
                plan.older_copies
            ));
        }
        let counts = report.counts();
        if !args.repair_orphans && counts[&Category::Orphan] > 0 {
            summary.left.push(format!(
                "{} orphan(s) only reported: check they are not another system's records, then run with --repair --repair-orphans",
                counts[&Category::Orphan]
            ));
        }
        if counts[&Category::Quarantined] > 0 || counts[&Category::Rejected] > 0 {
            summary.left.push(format!(
                "{} quarantined and {} rejected record(s) need fixing in the enforcement system (`dualpub quarantine list`)",
                counts[&Category::Quarantined],
                counts[&Category::Rejected]
            ));
        }
        if counts[&Category::Late] > 0 {
            summary.left.push(format!(
                "{} record(s) were published late; that cannot be undone, only explained",
                counts[&Category::Late]
            ));
        }
        report.repair = Some(summary);
        write(&report, args.format, args.out.as_deref())?;
        if let Some(e) = stopped {
            return Err(common::sync_failure(e));
        }
    } else {
        write(&report, args.format, args.out.as_deref())?;
    }
    Ok(if report.has_gaps() || !report.notes.is_empty() {
        Exit::Attention
    } else {
        Exit::Ok
    })
}

/// Before any work (a repair changes the platform): can the report be written where `--out` says? A folder for
/// csv (created when missing, so its parent must exist), a file otherwise, in a folder that exists and takes new
/// files. Refused with exit 2 and the path named; the report is never lost after the work is done.
fn check_out(format: Format, out: Option<&Path>) -> Result<(), Failure> {
    let Some(out) = out else {
        return Ok(());
    };
    let bad = |why: &str| Failure::usage(format!("--out {}: {why}", out.display()));
    let folder = if format == Format::Csv {
        if out.is_dir() {
            out.to_path_buf()
        } else if out.exists() {
            return Err(bad(
                "is a file; csv needs a folder (it writes several files)",
            ));
        } else {
            match out.parent().filter(|p| !p.as_os_str().is_empty()) {
                Some(p) if !p.is_dir() => {
                    return Err(bad(&format!("the folder {} does not exist", p.display())))
                }
                Some(p) => p.to_path_buf(),
                None => PathBuf::from("."),
            }
        }
    } else {
        if out.is_dir() {
            return Err(bad("is a folder; give a file name"));
        }
        // A device or a named pipe is written into, the report made first in the temporary folder; a link to a
        // file replaces the file it points to (`writers::Target`).
        let target = writers::Target::of(out);
        // A device or an open file of this process is tried now, before any work (a `--repair`); a named pipe is
        // not (opening it waits for its reader).
        #[cfg(unix)]
        if target == writers::Target::Through
            && !std::fs::metadata(out)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()))
        {
            if let Err(e) = std::fs::OpenOptions::new().append(true).open(out) {
                return Err(bad(&format!("cannot be written: {e}")));
            }
        }
        let folder = target.folder();
        if !folder.is_dir() {
            return Err(bad(&format!(
                "the folder {} does not exist",
                folder.display()
            )));
        }
        folder
    };
    let probe = folder.join(format!(".dualpub-write-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(bad(&format!(
            "cannot create files in {}: {e}",
            folder.display()
        ))),
    }
}

/// Writes a report with `write` to `out` (a file for this user only, [`writers::ReportFile`]) or to standard
/// output, buffered: the writers emit many small pieces.
fn to_sink(
    out: Option<&Path>,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    match out {
        Some(p) => writers::write_report_file(p, write),
        None => {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, common::Stdout);
            write(&mut w)?;
            w.flush()
        }
    }
}

fn write(report: &Report, format: Format, out: Option<&Path>) -> Result<(), Failure> {
    let started = std::time::Instant::now();
    let written = write_format(report, format, out);
    tracing::debug!(
        gaps = report.gaps.len(),
        ms = started.elapsed().as_millis() as u64,
        "reconcile: report written"
    );
    written
}

fn write_format(report: &Report, format: Format, out: Option<&Path>) -> Result<(), Failure> {
    let to = out.map_or_else(String::new, |p| format!(" to {}", p.display()));
    let io = |e: std::io::Error| {
        Failure::new(
            Exit::Aborted,
            anyhow::anyhow!("cannot write the report{to}: {e}"),
        )
    };
    match format {
        Format::Table => {
            let color = out.is_none() && std::io::stdout().is_terminal();
            to_sink(out, |w| writers::write_table(report, w, color)).map_err(io)
        }
        Format::Json => to_sink(out, |w| writers::write_json(report, w)).map_err(io),
        Format::Csv => {
            let dir = out.expect("checked above");
            let files = writers::write_csv(report, dir).map_err(io)?;
            crate::say!("wrote {} file(s) to {}", files.len(), dir.display());
            Ok(())
        }
        Format::Xlsx => {
            let p = out.expect("checked above");
            writers::write_xlsx(report, p).map_err(|e| Failure::new(Exit::Aborted, e))?;
            crate::say!("wrote {}", p.display());
            Ok(())
        }
    }
}

pub fn run_report(config: Option<&Path>, args: ReportArgs) -> Result<Exit, Failure> {
    let ReportWhich::Annual {
        year,
        format,
        out,
        today,
    } = args.which;
    if !(2000..=2100).contains(&year) {
        return Err(Failure::usage(format!(
            "--year {year}: expected a year like 2025"
        )));
    }
    if format == Format::Csv {
        return Err(Failure::usage("report annual writes table, json or xlsx"));
    }
    if format == Format::Xlsx && out.is_none() {
        return Err(Failure::usage("--format xlsx needs --out FILE"));
    }
    check_out(format, out.as_deref())?;
    let loaded = common::load(config)?;
    let today = common::today(today.as_deref())?;
    let cal = calendar(loaded.cfg.mapping_dir.as_deref())?;
    let store = common::store_to_read(&loaded.cfg.store_path)?;
    let from = chrono::NaiveDate::from_ymd_opt(year, 1, 1);
    let to = chrono::NaiveDate::from_ymd_opt(year, 12, 31);
    let opts = ReconcileOptions {
        kinds: Kind::ALL.to_vec(),
        from,
        to,
        today,
        progress: std::io::stderr().is_terminal(),
        repair: false,
        budget: None,
    };
    let rt = common::runtime()?;
    let annual = rt
        .block_on(engine::annual(
            &loaded.cfg,
            &loaded.mappings,
            &store,
            &cal,
            &opts,
            AnnualAccumulator::new(year),
        ))
        .map_err(reconcile_failure)?;
    let io = |e: std::io::Error| {
        Failure::new(
            Exit::Aborted,
            anyhow::anyhow!("cannot write the report: {e}"),
        )
    };
    use crate::reconcile::annual as a;
    match format {
        Format::Xlsx => {
            let p = out.as_deref().expect("checked above");
            a::write_annual_xlsx(&annual, p).map_err(|e| Failure::new(Exit::Aborted, e))?;
            crate::say!("wrote {}", p.display());
        }
        Format::Json => {
            to_sink(out.as_deref(), |w| a::write_annual_json(&annual, w)).map_err(io)?;
        }
        _ => {
            let color = out.is_none() && std::io::stdout().is_terminal();
            to_sink(out.as_deref(), |w| a::write_annual_table(&annual, w, color)).map_err(io)?;
        }
    }
    // As for reconcile: a note says the numbers lack something a person must see to.
    Ok(if annual.notes.is_empty() {
        Exit::Ok
    } else {
        Exit::Attention
    })
}
