//! `dualpub status [--json]`: checkpoints, ledger counts by state, quarantine and outbox size, last runs.

use super::common::{self, outln};
use crate::exit::{Exit, Failure};
use crate::model::Kind;
use crate::store::Access;
use clap::Args;
use std::path::Path;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(config: Option<&Path>, args: StatusArgs) -> Result<Exit, Failure> {
    let loaded = common::load_local(config)?;
    // Not created here: a mistyped path would otherwise leave an empty store behind and look like "never run".
    let Some(store) = common::open_existing_store(&loaded.cfg.store_path, Access::Read)? else {
        crate::say!(
            "no store at {} yet: `dualpub sync` creates it on its first run (if there should be one, check [store] path)",
            loaded.cfg.store_path.display()
        );
        if args.json {
            // The same object as for a store never read, so a script reading stdout gets JSON either way.
            let cursors: serde_json::Map<String, serde_json::Value> = Kind::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), serde_json::Value::Null))
                .collect();
            let v = serde_json::json!({
                "store": loaded.cfg.store_path,
                "cursors": cursors,
                "ledger": {},
                "quarantine": 0,
                "outbox": 0,
                "outbox_records": 0,
                "outbox_unanswered_records": 0,
                "outbox_unanswered_receipts": 0,
                "last_runs": [],
                "last_sync": null,
            });
            outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        }
        return Ok(Exit::Ok);
    };
    let mut cursors = serde_json::Map::new();
    for k in Kind::ALL {
        cursors.insert(
            k.as_str().into(),
            serde_json::to_value(store.cursor(k).map_err(common::store_failure)?)
                .unwrap_or_default(),
        );
    }
    let ledger = store.ledger_counts().map_err(common::store_failure)?;
    let runs = store.last_runs(LAST_RUNS).map_err(common::store_failure)?;
    // The newest cron run, also when an operator's retries and repairs have pushed it out of `runs`.
    let last_sync = store
        .last_run_of("sync", usize::MAX)
        .map_err(common::store_failure)?;
    // Counted once: sled counts a tree by reading all of it.
    let quarantined = store.quarantine_len();
    // What waits in the outbox (a few batches, unless a run was stopped with many in flight): its records, and those
    // the platform's receipts left out (they head every run until answered or given up on).
    let outbox = store.outbox().map_err(common::store_failure)?;
    let outbox_records: usize = outbox.iter().map(|(_, b)| b.items.len()).sum();
    let left_out: Vec<_> = outbox.iter().filter(|(_, b)| b.unanswered > 0).collect();
    let unanswered_records: usize = left_out.iter().map(|(_, b)| b.items.len()).sum();
    let unanswered_most = left_out
        .iter()
        .map(|(_, b)| b.unanswered)
        .max()
        .unwrap_or(0);
    let v = serde_json::json!({
        "store": store.path(),
        "cursors": cursors,
        "ledger": ledger,
        "quarantine": quarantined,
        "outbox": outbox.len(),
        "outbox_records": outbox_records,
        "outbox_unanswered_records": unanswered_records,
        "outbox_unanswered_receipts": unanswered_most,
        "last_runs": runs,
        "last_sync": last_sync,
    });
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(Exit::Ok);
    }
    outln!("store        {}", store.path());
    for k in Kind::ALL {
        match store.cursor(k).map_err(common::store_failure)? {
            Some(c) => outln!(
                "checkpoint   {:<8} read up to {} (id {})",
                k.as_str(),
                c.since,
                c.after_id
            ),
            None => outln!("checkpoint   {:<8} never read", k.as_str()),
        }
    }
    for (state, n) in &ledger {
        outln!("ledger       {state:<20} {n}");
    }
    outln!(
        "quarantine   {quarantined} record(s){}",
        if quarantined > 0 {
            " — see `dualpub quarantine list`"
        } else {
            ""
        }
    );
    outln!(
        "outbox       {} batch(es) of {outbox_records} record(s) waiting to be resent",
        outbox.len()
    );
    if unanswered_records > 0 {
        outln!(
            "outbox       {unanswered_records} of them left out by the platform's receipts, {unanswered_most} time(s) in a row \
             at most: every run sends them first; they go to quarantine (code {}) after {} such receipts, or {} once the \
             platform answers other records",
            crate::sync::NO_RESULT,
            crate::sync::GIVE_UP_UNANSWERED_UNSEEN,
            crate::sync::GIVE_UP_UNANSWERED
        );
    }
    let shown_sync = runs.iter().any(|r| r["command"] == "sync");
    for r in &runs {
        run_lines("run", r);
    }
    match &last_sync {
        Some(r) if !shown_sync => run_lines("last sync", r),
        None if !runs.is_empty() => outln!("last sync    none recorded (a dry run records none)"),
        _ => {}
    }
    Ok(Exit::Ok)
}

/// How many of the newest runs `status` shows (and `--json` lists in `last_runs`).
const LAST_RUNS: usize = 5;

/// A run's line in `status`, and under an aborted one why it stopped.
fn run_lines(label: &str, r: &serde_json::Value) {
    outln!(
        "{label:<12} {} {:<18} {:<9} read {} pushed {} accepted {} already held {} rejected {} withdrawn {} quarantined {} ({} ms)",
        r["finished_at"].as_str().unwrap_or(""),
        r["command"].as_str().unwrap_or(""),
        r["outcome"].as_str().unwrap_or(""),
        r["read"], r["pushed"], r["accepted"], r["platform_unchanged"], r["rejected"], r["withdrawn"],
        r["quarantined"], r["elapsed_ms"]
    );
    // Why a run stopped (exit 3), for the operator paged for it; `--json` has the whole message.
    if let Some(error) = r["error"].as_str().filter(|e| !e.trim().is_empty()) {
        outln!("             error: {}", error_line(error));
    }
}

/// How many characters of a run's error the text form shows: its start says what failed, its end the last problem
/// (a retry budget's message puts it there), so a longer one keeps both and drops the middle.
const ERROR_CHARS: usize = 400;

/// A run's stored error on one line: ID numbers masked and control characters made spaces (again: the stored text
/// is already scrubbed of secrets and ID numbers, but a store written by an older dualpub may not be), and cut to
/// [`ERROR_CHARS`].
fn error_line(error: &str) -> String {
    let line = crate::redact::scrub(error, &[]);
    let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars: Vec<char> = line.chars().collect();
    if chars.len() <= ERROR_CHARS {
        return line;
    }
    let head: String = chars[..ERROR_CHARS / 2].iter().collect();
    let tail: String = chars[chars.len() - ERROR_CHARS / 2..].iter().collect();
    format!(
        "{} … {} (all of it: `dualpub status --json`)",
        head.trim_end(),
        tail.trim_start()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_error_is_shown_on_one_line_masked_and_cut_in_the_middle() {
        assert_eq!(
            error_line("platform: gave up\nlast problem: 503"),
            "platform: gave up last problem: 503"
        );
        let id = "11010519491231002X";
        assert!(!error_line(&format!("record of {id} refused")).contains(id));
        let long = format!(
            "source at http://x/: gave up: {} last problem: connection refused",
            "x ".repeat(400)
        );
        let line = error_line(&long);
        assert!(line.starts_with("source at http://x/: gave up:"), "{line}");
        assert!(
            line.contains("last problem: connection refused (all of it: `dualpub status --json`)"),
            "{line}"
        );
        assert!(line.chars().count() < ERROR_CHARS + 60, "{line}");
    }
}
