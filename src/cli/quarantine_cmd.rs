//! `dualpub quarantine list | show KEY | retry [KEY…]`: records that failed validation or were rejected.

use super::common;
use crate::exit::{Exit, Failure};
use crate::ids::{mask_id, mask_ids_in};
use crate::model::Kind;
use crate::store::QuarantineEntry;
use crate::sync::{self, SyncOptions};
use clap::{Args, Subcommand};
use std::path::Path;

#[derive(Args, Debug)]
pub struct QuarantineArgs {
    #[command(subcommand)]
    pub action: QuarantineAction,
}

#[derive(Subcommand, Debug)]
pub enum QuarantineAction {
    /// One line per quarantined record.
    List {
        /// Print the list as a JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Every finding of one record, and the source record with ID numbers masked. KEY is the source id or the
    /// record key.
    Show {
        /// The record's source id (e.g. XK-2024-000123) or its record key (XZXK:…).
        key: String,
    },
    /// Map the stored source records again (after a mapping or platform fix) and push the valid ones; all when no
    /// KEY is given.
    Retry {
        /// Source ids (e.g. XK-2024-000123) or record keys (XZXK:…) of quarantined records; none: all of them.
        #[arg(value_name = "KEY")]
        keys: Vec<String>,
    },
}

fn matches(e: &QuarantineEntry, key: &str) -> bool {
    e.source_id == key || e.key.as_deref() == Some(key)
}

/// Masks every ID-number-like field of a source record for display.
fn masked_source(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, val)| {
                    let masked = match (k.as_str(), val) {
                        ("id_no", serde_json::Value::String(s)) => {
                            serde_json::Value::String(mask_id(s))
                        }
                        // Codes of organisations and documents, which the operator needs whole to find the record.
                        (
                            "id" | "credit_code" | "org_code" | "reg_no" | "tax_no"
                            | "social_org_no" | "inst_cert_no" | "doc_no" | "permit_no",
                            _,
                        ) => val.clone(),
                        // Free text can hold an ID number too (`当事人证件4101…`).
                        (_, serde_json::Value::String(s)) => {
                            serde_json::Value::String(mask_ids_in(s))
                        }
                        _ => masked_source(val),
                    };
                    (k.clone(), masked)
                })
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.iter().map(masked_source).collect())
        }
        other => other.clone(),
    }
}

pub fn run(config: Option<&Path>, args: QuarantineArgs) -> Result<Exit, Failure> {
    // Only a retry talks to the systems; looking at the quarantine needs no secrets.
    let loaded = if matches!(args.action, QuarantineAction::Retry { .. }) {
        common::load(config)?
    } else {
        common::load_local(config)?
    };
    if !loaded.cfg.store_path.exists() {
        // Not created here (see `status`).
        eprintln!(
            "no store at {} yet, so nothing is in quarantine: `dualpub sync` creates it on its first run (if there should be one, check [store] path)",
            loaded.cfg.store_path.display()
        );
        return Ok(match args.action {
            QuarantineAction::List { .. } => Exit::Ok,
            _ => Exit::Usage,
        });
    }
    let store = common::open_store(&loaded.cfg.store_path)?;
    let all = store.quarantine_all().map_err(common::store_failure)?;
    match args.action {
        QuarantineAction::List { json } => {
            if json {
                let rows: Vec<serde_json::Value> = all
                    .iter()
                    .map(|e| {
                        serde_json::json!({"kind": e.kind, "source_id": e.source_id, "key": e.key, "reason": e.reason,
                            "codes": e.findings.iter().map(|f| f.code.clone()).collect::<Vec<_>>(),
                            "party_name": e.meta.party_name, "party_id_masked": e.meta.party_id_masked,
                            "first_seen": e.first_seen, "last_seen": e.last_seen})
                    })
                    .collect();
                common::outln!(
                    "{}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            } else if all.is_empty() {
                common::outln!("quarantine is empty");
            } else {
                for e in &all {
                    let codes: Vec<&str> = e.findings.iter().map(|f| f.code.as_str()).collect();
                    common::outln!(
                        "{:<8} {:<20} {:<9} {:<40} {}",
                        e.kind.as_str(),
                        e.source_id,
                        e.reason,
                        codes.join(","),
                        e.key.as_deref().unwrap_or("(no key)")
                    );
                }
                common::outln!(
                    "{} record(s); `dualpub quarantine show ID` for details",
                    all.len()
                );
            }
            Ok(Exit::Ok)
        }
        QuarantineAction::Show { key } => {
            let Some(e) = all.iter().find(|e| matches(e, &key)) else {
                return Err(Failure::usage(format!("no quarantined record has the id or key `{key}`; see `dualpub quarantine list`")));
            };
            common::outln!("{} {} ({})", e.kind.zh(), e.source_id, e.reason);
            common::outln!("key          {}", e.key.as_deref().unwrap_or("(none)"));
            common::outln!(
                "party        {} {}",
                e.meta.party_name,
                e.meta.party_id_masked
            );
            common::outln!("first seen   {}   last seen {}", e.first_seen, e.last_seen);
            for f in &e.findings {
                // masked again: entries stored before 2026-11-29 kept the messages as made
                common::outln!(
                    "- {} [{}] {}\n  {}",
                    f.field,
                    f.code,
                    mask_ids_in(&f.zh),
                    mask_ids_in(&f.en)
                );
            }
            common::outln!(
                "source record (ID numbers masked):\n{}",
                serde_json::to_string_pretty(&masked_source(&e.source)).unwrap_or_default()
            );
            Ok(Exit::Ok)
        }
        QuarantineAction::Retry { keys } => {
            let chosen: Vec<&QuarantineEntry> = if keys.is_empty() {
                all.iter().collect()
            } else {
                let mut v = Vec::new();
                for k in &keys {
                    match all.iter().find(|e| matches(e, k)) {
                        Some(e) => v.push(e),
                        None => {
                            return Err(Failure::usage(format!(
                                "no quarantined record has the id or key `{k}`"
                            )))
                        }
                    }
                }
                v
            };
            let items: Vec<(Kind, Box<serde_json::value::RawValue>)> = chosen
                .iter()
                .filter(|e| !e.source.is_null())
                .filter_map(|e| Some((e.kind, serde_json::value::to_raw_value(&e.source).ok()?)))
                .collect();
            let opts = SyncOptions {
                kinds: Kind::ALL.to_vec(),
                dry_run: false,
                today: common::today(None)?,
                progress: false,
            };
            let rt = common::runtime()?;
            let result = rt.block_on(sync::retry(
                &loaded.cfg,
                &loaded.mappings,
                &store,
                &opts,
                items,
            ));
            let (mut summary, err) = match result {
                Ok(s) => (s, None),
                Err((s, e)) => (s, Some(e)),
            };
            // A retried record that is still invalid was quarantined again by this run, though not anew.
            let mut still = 0u64;
            for e in &chosen {
                if store
                    .quarantine_contains(e.kind, &e.source_id)
                    .map_err(common::store_failure)?
                {
                    still += 1;
                }
            }
            summary.quarantined = summary.quarantined.max(still);
            if summary.outcome == "ok" && summary.needs_attention() {
                summary.outcome = "attention".into();
            }
            super::sync_cmd::print_summary_titled(&summary, false, "dualpub quarantine retry");
            if summary.gone_from_source > 0 {
                eprintln!(
                    "{} retried record(s) no longer in the enforcement system as quarantine held them (deleted \
                     there, or changed since: the next sync reads the new version): not sent, removed from \
                     quarantine",
                    summary.gone_from_source
                );
            }
            eprintln!(
                "{still} of the {} retried record(s) still in quarantine, {} in all{}",
                chosen.len(),
                store.quarantine_len(),
                if still > 0 {
                    " — `dualpub quarantine show ID` says why"
                } else {
                    ""
                }
            );
            if let Some(e) = err {
                return Err(common::sync_failure(e));
            }
            Ok(if summary.needs_attention() {
                Exit::Attention
            } else {
                Exit::Ok
            })
        }
    }
}
