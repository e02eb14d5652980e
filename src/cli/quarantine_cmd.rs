//! `dualpub quarantine list | show KEY | retry [KEY…]`: records that failed validation or were rejected.

use super::common::{self, json_shown, shown};
use crate::exit::{Exit, Failure};
use crate::ids::{mask_id, mask_ids_in};
use crate::model::Kind;
use crate::source_schema::{find_lone_surrogate, lone_surrogates_replaced};
use crate::store::{Access, QuarantineEntry};
use crate::sync::{self, SyncOptions};
use clap::{Args, Subcommand};
use std::io::IsTerminal as _;
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

/// Masks every ID-number-like field of a source record for display.
fn masked_source(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, val)| {
                    let masked = match (k.as_str(), val) {
                        // An ID number whatever its JSON type: a number (an export that lost the quotes) is
                        // masked as its decimal text.
                        (k, _) if is_id_number_key(k) => masked_id_value(val),
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

/// A member that holds an ID number: the source's `id_no` (and any `…id_no`), or a platform-style `…ZJHM`
/// (证件号码).
fn is_id_number_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.ends_with("id_no") || k.ends_with("zjhm")
}

/// An ID-number member's value, masked whatever its JSON type: text and numbers through `mask_id` (a number
/// becomes the text of its masked digits), lists and objects throughout.
fn masked_id_value(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(mask_id(s)),
        serde_json::Value::Number(n) => serde_json::Value::String(mask_id(&n.to_string())),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.iter().map(masked_id_value).collect())
        }
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, val)| (k.clone(), masked_id_value(val)))
                .collect(),
        ),
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
    // Only a retry writes the store, and none creates it (see `status`).
    let access = if matches!(args.action, QuarantineAction::Retry { .. }) {
        Access::Write
    } else {
        Access::Read
    };
    let Some(store) = common::open_existing_store(&loaded.cfg.store_path, access)? else {
        crate::say!(
            "no store at {} yet, so nothing is in quarantine: `dualpub sync` creates it on its first run (if there should be one, check [store] path)",
            loaded.cfg.store_path.display()
        );
        return Ok(match args.action {
            QuarantineAction::List { json } => {
                if json {
                    // An empty list, so a script reading stdout gets JSON either way.
                    common::outln!("[]");
                }
                Exit::Ok
            }
            _ => Exit::Usage,
        });
    };
    match args.action {
        QuarantineAction::List { json } => {
            // Printed as read, one entry at a time: a quarantine can hold hundreds of thousands of records.
            let mut count = 0usize;
            let mut codes: std::collections::BTreeMap<(Kind, String), usize> = Default::default();
            for e in store.quarantine_iter() {
                // `quarantine list | head`: the reader is gone, and the rest of a large quarantine need not be read.
                if common::stdout_closed() {
                    break;
                }
                let e = e.map_err(common::store_failure)?;
                if json {
                    let row = serde_json::json!({"kind": e.kind, "source_id": e.source_id, "key": e.key, "reason": e.reason,
                        "codes": e.findings.iter().map(|f| f.code.clone()).collect::<Vec<_>>(),
                        // masked again: entries stored before 2026-11-29 kept a name holding an ID number as it was
                        "party_name": mask_ids_in(&e.meta.party_name), "party_id_masked": e.meta.party_id_masked,
                        "first_seen": e.first_seen, "last_seen": e.last_seen});
                    // The lines `serde_json::to_string_pretty` writes for the whole array, an element at a time.
                    let pretty = serde_json::to_string_pretty(&row).unwrap_or_default();
                    let indented = pretty.replace('\n', "\n  ");
                    let sep = if count == 0 { "[\n  " } else { ",\n  " };
                    common::out!("{sep}{}", json_shown(indented));
                } else {
                    let list: Vec<&str> = e.findings.iter().map(|f| f.code.as_str()).collect();
                    common::outln!(
                        "{:<8} {:<20} {:<9} {:<40} {}",
                        e.kind.as_str(),
                        shown(&e.source_id),
                        e.reason,
                        shown(&list.join(",")),
                        shown(e.key.as_deref().unwrap_or("(no key)"))
                    );
                    for code in list {
                        *codes.entry((e.kind, code.to_string())).or_default() += 1;
                    }
                }
                count += 1;
            }
            if json {
                common::outln!("{}", if count == 0 { "[]" } else { "\n]" });
            } else if count == 0 {
                common::outln!("quarantine is empty");
            } else {
                // What a long list holds, where an operator looks after the list has scrolled by.
                common::outln!("records by finding code:");
                for ((kind, code), n) in &codes {
                    common::outln!("{:<8} {:<20} {n} record(s)", kind.as_str(), shown(code));
                }
                common::outln!("{count} record(s); `dualpub quarantine show ID` for details");
            }
            Ok(Exit::Ok)
        }
        QuarantineAction::Show { key } => {
            let Some(e) = store.quarantine_find(&key).map_err(common::store_failure)? else {
                return Err(Failure::usage(format!("no quarantined record has the id or key `{key}`; see `dualpub quarantine list`")));
            };
            // Ids, names, document numbers and messages come from the source's data: shown, never obeyed.
            common::outln!("{} {} ({})", e.kind.zh(), shown(&e.source_id), e.reason);
            common::outln!(
                "key          {}",
                shown(e.key.as_deref().unwrap_or("(none)"))
            );
            common::outln!(
                "party        {} {}",
                shown(&mask_ids_in(&e.meta.party_name)),
                shown(&e.meta.party_id_masked)
            );
            common::outln!("first seen   {}   last seen {}", e.first_seen, e.last_seen);
            for f in &e.findings {
                // masked again: entries stored before 2026-11-29 kept the messages as made
                common::outln!(
                    "- {} [{}] {}\n  {}",
                    shown(&f.field),
                    shown(&f.code),
                    shown(&mask_ids_in(&f.zh)),
                    shown(&mask_ids_in(&f.en))
                );
            }
            let pretty = |v: &serde_json::Value| {
                json_shown(serde_json::to_string_pretty(&masked_source(v)).unwrap_or_default())
            };
            match &e.source {
                // The record's own text, which no `Value` could hold: shown as one, each lone surrogate replaced.
                serde_json::Value::String(text) => {
                    let lone = find_lone_surrogate(text)
                        .map(|s| {
                            format!(
                                ", each lone surrogate (such as {s}) shown as U+FFFD (\u{fffd})"
                            )
                        })
                        .unwrap_or_default();
                    let shown = serde_json::from_str(&lone_surrogates_replaced(text))
                        .map(|v| pretty(&v))
                        .unwrap_or_else(|_| json_shown(mask_ids_in(text)));
                    common::outln!(
                        "source record as the enforcement system sent it{lone} (ID numbers masked):\n{shown}"
                    );
                }
                serde_json::Value::Null => match &e.source_updated_at {
                    Some(at) => common::outln!(
                        "source record: no copy kept (a withdrawal, or a message sent again after a restart, \
                         carries none); `dualpub quarantine retry` sends the version of {} as the enforcement \
                         system serves it",
                        shown(at)
                    ),
                    None => common::outln!("source record: no copy kept"),
                },
                v => common::outln!("source record (ID numbers masked):\n{}", pretty(v)),
            }
            Ok(Exit::Ok)
        }
        QuarantineAction::Retry { keys } => {
            use std::sync::{Arc, Mutex};
            let chosen: Box<
                dyn Iterator<Item = Result<QuarantineEntry, crate::store::StoreError>> + Send,
            > = if keys.is_empty() {
                // Read from the store as the run goes, not all at once: a quarantine of 200,000 records held in
                // memory for a retry took 1.7 GiB before anything was sent.
                Box::new(store.quarantine_iter())
            } else {
                let mut v = Vec::new();
                for k in &keys {
                    match store.quarantine_find(k).map_err(common::store_failure)? {
                        Some(e) => v.push(Ok(e)),
                        None => {
                            return Err(Failure::usage(format!(
                                "no quarantined record has the id or key `{k}`"
                            )))
                        }
                    }
                }
                Box::new(v.into_iter())
            };
            // What the run learns of the entries as it reads them: how many, the first that cannot be read, and
            // those that hold no copy of a source record (made before unreadable records were named each apart,
            // all under "(no id)"): nothing to retry or to look up in the feed, so they go.
            let retried = Arc::new(Mutex::new((Vec::<(Kind, String)>::new(), None, Vec::new())));
            let seen = retried.clone();
            let items = chosen
                .map_while(move |e| {
                    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                    match e {
                        Ok(e) => Some(e),
                        Err(err) => {
                            seen.1 = Some(err);
                            None
                        }
                    }
                    .map(|e| {
                        let kind = e.kind;
                        // A rejected record's entry without a copy (resent after a restart): looked up in the feed.
                        let raw = sync::HeldVersion::of_entry(
                            &e.source,
                            &e.source_id,
                            e.source_updated_at.as_deref(),
                        );
                        if raw.is_some() {
                            seen.0.push((kind, e.source_id));
                        } else {
                            seen.2.push(e);
                        }
                        raw.map(|raw| (kind, raw))
                    })
                })
                .flatten();
            let opts = SyncOptions {
                kinds: Kind::ALL.to_vec(),
                dry_run: false,
                today: common::today(None)?,
                // a retry of a large quarantine takes minutes
                progress: std::io::stderr().is_terminal(),
                budget: None,
            };
            let rt = common::runtime()?;
            let result = rt.block_on(sync::send_again(
                &loaded.cfg,
                &loaded.mappings,
                &store,
                &opts,
                items,
                sync::Copies::Held,
            ));
            let (mut summary, err) = match result {
                Ok(s) => (s, None),
                Err((s, e)) => (s, Some(e)),
            };
            // The whole quarantine judged again under today's settings: nothing left to recheck (see
            // `RunSummary::quarantine_to_recheck`).
            let (retried, unreadable, empty) =
                std::mem::take(&mut *retried.lock().unwrap_or_else(|p| p.into_inner()));
            // Not when the retry stopped early (an error, or an entry it could not read): the rest was not judged.
            if keys.is_empty() && err.is_none() && unreadable.is_none() {
                let _ =
                    store.set_validated_with(&loaded.cfg.validation_fingerprint(&loaded.mappings));
            }
            if let Some(e) = unreadable {
                return Err(common::store_failure(e));
            }
            if !empty.is_empty() {
                let gone = crate::store::PageCommit {
                    quarantine_del: empty
                        .iter()
                        .map(|e| (e.kind, e.source_id.clone()))
                        .collect(),
                    ..Default::default()
                };
                store.commit_page(&gone).map_err(common::store_failure)?;
                for e in &empty {
                    if e.reason == "rejected" {
                        crate::say!(
                            "{} `{}` holds no copy of the version the platform rejected, and that version cannot be \
                             looked up in the enforcement system's feed (the entry keeps no readable \
                             `updated_at` of it): \
                             nothing to retry, removed from quarantine; a new version of the record is sent as \
                             usual, and `dualpub reconcile` lists the record while the platform lacks it",
                            e.kind.as_str(),
                            shown(&e.source_id)
                        );
                        continue;
                    }
                    crate::say!(
                        "{} `{}` holds no copy of a source record (an entry made before each unreadable record was \
                         quarantined under a name of its own): nothing to retry, removed from quarantine; a record \
                         behind it that the enforcement system still serves unreadable is quarantined again when a \
                         sync reads it",
                        e.kind.as_str(),
                        shown(&e.source_id)
                    );
                }
            }
            // A retried record that is still invalid (or kept, not sent) was quarantined again by this run, though
            // not anew. One the platform rejected again is counted `rejected` (not `quarantined` as well: one
            // record, two counts).
            let mut still = 0u64;
            for (kind, id) in &retried {
                if store
                    .quarantine_contains(*kind, id)
                    .map_err(common::store_failure)?
                {
                    still += 1;
                }
            }
            let held_again = still.saturating_sub(summary.rejected);
            if held_again > summary.quarantined {
                summary.quarantined = held_again;
                if summary.outcome == "ok" && summary.needs_attention() {
                    summary.outcome = "attention".into();
                }
                // `status` shows the run as it is printed here.
                let _ = store.amend_last_run(&serde_json::to_value(&summary).unwrap_or_default());
                let _ = store.flush();
            }
            super::sync_cmd::print_summary_titled(&summary, false, "dualpub quarantine retry");
            if summary.gone_from_source > 0 {
                crate::say!(
                    "{} retried record(s) no longer in the enforcement system as quarantine held them (deleted \
                     there, or changed since: the next sync reads the new version): not sent, removed from \
                     quarantine",
                    summary.gone_from_source
                );
            }
            crate::say!(
                "{still} of the {} retried record(s) still in quarantine, {} in all{}",
                retried.len(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reported: an ID number sent as a JSON number was shown whole by `quarantine show`.
    #[test]
    fn id_numbers_are_masked_whatever_their_json_type() {
        let shown = masked_source(&json!({
            "id": "CF-1",
            "party": {"id_no": 410105198503124030u64, "name": "张三",
                      "legal_rep": {"id_no": "410105198503124030", "FDDBR_ZJHM": 410105198503124030u64}},
            "extra": [{"XDR_ZJHM": ["410105198503124030", 410105198503124030u64]}],
            "other_id_no": {"a": 410105198503124030u64},
            "remarks": "当事人证件410105198503124030"
        }))
        .to_string();
        assert!(!shown.contains("198503"), "{shown}");
        assert_eq!(shown.matches("410105********4030").count(), 7, "{shown}");
        assert!(shown.contains(r#""id":"CF-1""#), "{shown}");
        // a number too short to be an ID number is still not shown
        let short = masked_source(&json!({"id_no": 12345678})).to_string();
        assert_eq!(short, r#"{"id_no":"******78"}"#);
    }
}
