//! `dualpub sync [--kind K] [--dry-run] [--json]`: one cron run.

use super::common;
use crate::exit::{Exit, Failure};
use crate::model::Kind;
use crate::sync::{self, RunSummary, SyncOptions};
use clap::Args;
use std::io::IsTerminal;
use std::path::Path;

#[derive(Args, Debug)]
pub struct SyncArgs {
    /// Only this kind: permit or penalty (default both).
    #[arg(long, value_parser = super::map_cmd::parse_kind)]
    pub kind: Option<Kind>,
    /// Read, map and validate, and say what would be pushed; send nothing, move no checkpoint, and never contact
    /// the platform (so it does not check the platform's URL, app key or secret).
    #[arg(long)]
    pub dry_run: bool,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Fix "today" (YYYY-MM-DD) for display-period checks. Any other date than today's only with --dry-run: a
    /// real run refuses it (exit 2) unless DUALPUB_ALLOW_OTHER_TODAY=1 (a rehearsal against the simulators).
    #[arg(long)]
    pub today: Option<String>,
}

pub fn run(config: Option<&Path>, args: SyncArgs) -> Result<Exit, Failure> {
    let loaded = common::load(config)?;
    let today = common::acting_today(args.today.as_deref(), !args.dry_run)?;
    let store = common::open_store(&loaded.cfg.store_path)?;
    let opts = SyncOptions {
        kinds: common::parse_kinds(args.kind),
        dry_run: args.dry_run,
        today,
        progress: std::io::stderr().is_terminal() && !args.json,
        budget: None,
    };
    let rt = common::runtime()?;
    let result = rt.block_on(sync::run(&loaded.cfg, &loaded.mappings, &store, &opts));
    let (summary, err) = match result {
        Ok(s) => (s, None),
        Err((s, e)) => (s, Some(e)),
    };
    print_summary(&summary, args.json);
    if !opts.dry_run && (summary.pushed >= 1000 || summary.read >= 10_000) {
        // A run that wrote much spends the recovery replay of it now, not at the start of the next (quiet) run.
        drop(rt);
        store.close_and_snapshot();
    }
    if let Some(e) = err {
        return Err(common::sync_failure(e));
    }
    Ok(if summary.needs_attention() {
        Exit::Attention
    } else {
        Exit::Ok
    })
}

/// The summary: a table on stderr, or JSON on stdout with `--json`.
pub fn print_summary(s: &RunSummary, json: bool) {
    print_summary_titled(s, json, "dualpub sync");
}

/// The run summary under `title` (the command that ran).
pub fn print_summary_titled(s: &RunSummary, json: bool, title: &str) {
    if json {
        common::outln!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
        return;
    }
    let rows: [(&str, &str, u64); 12] = [
        ("read", "读取", s.read),
        ("unchanged", "无变化", s.unchanged),
        ("not public", "无需公示", s.not_public),
        if s.dry_run {
            ("would push", "将推送", s.pushed)
        } else {
            ("pushed", "推送", s.pushed)
        },
        ("accepted", "平台接收", s.accepted),
        ("already held", "平台已有", s.platform_unchanged),
        ("rejected", "平台拒收", s.rejected),
        ("quarantined", "校验未通过", s.quarantined),
        ("withdrawn", "撤下", s.withdrawn),
        ("retries", "重试", s.retries),
        ("outbox resent", "补发", s.outbox_resent),
        ("elapsed ms", "耗时(毫秒)", s.elapsed_ms),
    ];
    let mut out = String::new();
    out.push_str(&format!(
        "{title}{} — {}\n",
        if s.dry_run {
            " (dry run: nothing sent)"
        } else {
            ""
        },
        s.kinds
            .iter()
            .map(|k| k.zh())
            .collect::<Vec<_>>()
            .join("、")
    ));
    for (en, zh, n) in rows {
        out.push_str(&format!("  {n:>10}  {en:<14} {zh}\n"));
    }
    if s.gone_from_source > 0 {
        let (en, zh, n) = ("gone at source", "源系统已无", s.gone_from_source);
        out.push_str(&format!("  {n:>10}  {en:<14} {zh}\n"));
    }
    if s.still_unanswered > 0 {
        let (en, zh, n) = ("still no result", "平台仍无回执结果", s.still_unanswered);
        out.push_str(&format!("  {n:>10}  {en:<14} {zh}\n"));
    }
    if s.older_copies > 0 {
        let (en, zh, n) = ("older copies", "源系统版本较旧，未推送", s.older_copies);
        out.push_str(&format!("  {n:>10}  {en:<14} {zh}\n"));
    }
    if let Some(n) = s.quarantine_to_recheck {
        out.push_str(&format!(
            "  {n:>10}  in quarantine under the old settings 按旧配置校验 — run `dualpub quarantine retry` to validate them again\n"
        ));
    }
    if let Some(why) = &s.platform_unreachable {
        out.push_str(&format!("  platform unreachable 平台无法连接: {why}\n"));
    }
    let verdict = match s.outcome.as_str() {
        "ok" => "ok: nothing needs attention".to_string(),
        "attention" => {
            let mut why = Vec::new();
            if s.quarantined > 0 || s.rejected > 0 {
                why.push(if s.dry_run {
                    format!(
                        "{} would be quarantined — nothing was written, so `dualpub quarantine list` does not \
                         show them; `dualpub map` shows each finding, or run a real sync",
                        s.quarantined
                    )
                } else {
                    format!(
                        "{} quarantined, {} rejected — see `dualpub quarantine list`",
                        s.quarantined, s.rejected
                    )
                });
            }
            if s.older_copies > 0 {
                why.push(format!(
                    "the enforcement system served {} record(s) in a version older than the platform holds (not \
                     sent) — check whether it, or the copy dualpub reads, lags behind; `dualpub reconcile` lists \
                     them",
                    s.older_copies
                ));
            }
            if s.platform_unreachable.is_some() {
                why.push(
                    "the platform could not be reached (above); nothing was due to be sent, so nothing is lost — \
                     check [platform] url and the network"
                        .to_string(),
                );
            }
            format!("needs attention: {}", why.join("; "))
        }
        _ => format!(
            "aborted: {}",
            s.error.as_deref().unwrap_or("see the error below")
        ),
    };
    out.push_str(&format!("  {verdict}\n"));
    crate::say_text!("{out}");
}
