//! The comparison behind `dualpub reconcile` (DESIGN §4): the platform's records for the agency (read page by
//! page into a compact index by key), the source's records (streamed from the feed and mapped with today's
//! mappings) and the ledger, joined by record key. Every record is judged against what the platform should hold
//! and against its 7-working-day deadline; the result is a `Report` plus what `--repair` would need.

use super::annual::{AnnualAccumulator, AnnualReport};
use super::report::{Category, GapRow, MonthOutcome, Rates, Report};
use crate::calendar::{Calendar, CalendarError};
use crate::config::Config;
use crate::ids::mask_id;
use crate::mapping::MappingSet;
use crate::model::{china_offset, Digest, Kind, PlatformRecord};
use crate::platform_client::PlatformClient;
use crate::retry::{Budget, GiveUp};
use crate::source_client::SourceClient;
use crate::source_schema::{SourceRecord, SourceStatus};
use crate::store::{PlatformState, Store, StoreError};
use crate::xml::PublicStatus;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;

#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    pub kinds: Vec<Kind>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub today: NaiveDate,
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Remote(#[from] GiveUp),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error("cannot start the HTTP client: {0}")]
    Client(String),
}

/// What `--repair` needs: source records to push again, keys to withdraw.
#[derive(Debug, Default, Clone)]
pub struct RepairPlan {
    pub repush: Vec<(Kind, serde_json::Value)>,
    pub withdraw: Vec<(Kind, String)>,
    pub orphans: Vec<(Kind, String)>,
}

/// One platform record, compactly.
struct Held {
    digest: Option<Digest>,
    public: bool,
    published: Option<NaiveDate>,
    page: u64,
}

fn cst_date(ts: &str) -> Option<NaiveDate> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&china_offset()).date_naive())
}

fn in_window(d: Option<NaiveDate>, from: Option<NaiveDate>, to: Option<NaiveDate>) -> bool {
    match d {
        None => from.is_none() && to.is_none(),
        Some(d) => from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t),
    }
}

/// The fields of two versions of a record that differ.
fn differing_fields(a: &PlatformRecord, b: &PlatformRecord) -> Vec<String> {
    let names: BTreeSet<&str> = a.fields().chain(b.fields()).map(|(k, _)| k).collect();
    names
        .into_iter()
        .filter(|n| a.get(n) != b.get(n))
        .map(str::to_string)
        .collect()
}

/// Runs the comparison. Reads the source and the platform; writes nothing.
pub async fn reconcile(
    cfg: &Config,
    mappings: &MappingSet,
    store: &Store,
    calendar: &Calendar,
    opts: &ReconcileOptions,
) -> Result<(Report, RepairPlan), ReconcileError> {
    compare(cfg, mappings, store, calendar, opts, None).await
}

/// The year's numbers for `report annual`, from the same comparison (the window is the year).
pub async fn annual(
    cfg: &Config,
    mappings: &MappingSet,
    store: &Store,
    calendar: &Calendar,
    opts: &ReconcileOptions,
    mut acc: AnnualAccumulator,
) -> Result<AnnualReport, ReconcileError> {
    compare(cfg, mappings, store, calendar, opts, Some(&mut acc)).await?;
    Ok(acc.finish())
}

async fn compare(
    cfg: &Config,
    mappings: &MappingSet,
    store: &Store,
    calendar: &Calendar,
    opts: &ReconcileOptions,
    mut annual: Option<&mut AnnualAccumulator>,
) -> Result<(Report, RepairPlan), ReconcileError> {
    let budget = Budget::new(cfg.retry_budget, cfg.max_backoff);
    let source = SourceClient::new(
        &cfg.source_url,
        cfg.source_token.clone(),
        cfg.source_page_size,
        cfg.source_timeout,
    )
    .map_err(|e| ReconcileError::Client(e.to_string()))?;
    let platform = PlatformClient::new(
        &cfg.platform_url,
        &cfg.app_key,
        cfg.platform_secret.clone(),
        cfg.platform_timeout,
    )
    .map_err(|e| ReconcileError::Client(e.to_string()))?;
    let mut report = Report::new(opts.today);
    report.from = opts.from;
    report.to = opts.to;
    report.kinds = opts.kinds.clone();
    let mut plan = RepairPlan::default();
    let pb = opts.progress.then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        pb
    });
    let ctx = &cfg.mapping_context;

    for &kind in &opts.kinds {
        let mapping = mappings.get(kind);
        let mut rates = Rates::default();
        // 1. The platform side, as a compact index.
        let mut held: HashMap<String, Held> = HashMap::new();
        let mut page = 1u64;
        loop {
            let p = platform
                .records(
                    &budget,
                    kind,
                    &cfg.agency_credit_code,
                    page,
                    cfg.platform_page_size,
                    false,
                )
                .await?;
            let n = p.records.len();
            for r in p.records {
                held.insert(
                    r.key,
                    Held {
                        digest: Digest::parse(&r.digest),
                        public: r.status == PublicStatus::Public,
                        published: cst_date(&r.published_at),
                        page,
                    },
                );
            }
            if let Some(pb) = &pb {
                pb.set_message(format!(
                    "{}: {} platform records read",
                    kind.zh(),
                    held.len()
                ));
            }
            if n == 0 || page * u64::from(cfg.platform_page_size) >= p.total {
                break;
            }
            page += 1;
        }
        report.platform_records += held.len() as u64;

        // 2. The source side, streamed and mapped.
        let mut pos: Option<(String, String)> = None;
        let mut need_fields: BTreeMap<u64, Vec<(usize, PlatformRecord)>> = BTreeMap::new();
        let mut seen: usize = 0;
        loop {
            let p = source
                .changes(
                    &budget,
                    kind,
                    pos.as_ref().map(|c| c.0.as_str()),
                    pos.as_ref().map(|c| c.1.as_str()).unwrap_or(""),
                )
                .await?;
            for raw in &p.items {
                if let (Some(u), Some(i)) = (
                    raw.get("updated_at").and_then(|v| v.as_str()),
                    raw.get("id").and_then(|v| v.as_str()),
                ) {
                    pos = Some((u.to_string(), i.to_string()));
                }
                let Ok(src) = <SourceRecord as serde::Deserialize>::deserialize(raw) else {
                    // A record the source schema cannot read: only quarantine can tell its story.
                    continue;
                };
                let decided = src
                    .decided_on
                    .as_deref()
                    .and_then(crate::mapping::parse_source_date);
                if !in_window(decided, opts.from, opts.to) {
                    continue;
                }
                report.source_records += 1;
                seen += 1;
                let mapped = mapping.map(ctx, &src);
                let meta = crate::sync::record_meta(kind, &src, &mapped.record);
                // 完整率: filled items among those that apply to the record's category.
                let category = mapping.category(&mapped.record);
                for rule in mapping.fields.iter().filter(|r| r.applies(category)) {
                    rates.expected_items += 1;
                    if mapped.record.get(&rule.name).is_some() {
                        rates.filled_items += 1;
                    }
                }
                let deadline = match decided {
                    Some(d) => Some(calendar.deadline(d)?),
                    None => None,
                };
                let row = |category: Category,
                           key: &str,
                           detail: String,
                           published: Option<NaiveDate>| GapRow {
                    category,
                    key: key.to_string(),
                    kind,
                    doc_no: meta.doc_no.clone(),
                    party_name: meta.party_name.clone(),
                    party_id_masked: meta.party_id_masked.clone(),
                    decided_on: decided,
                    deadline,
                    first_published: published,
                    detail,
                };
                let key_str = mapped.key.as_ref().map(|k| k.to_string());
                let h = key_str.as_ref().and_then(|k| held.remove(k));
                // First publication is kept by the platform even after a withdrawal; timeliness is judged on it.
                let first_pub = h.as_ref().and_then(|h| h.published);
                let published = h.as_ref().filter(|h| h.public).and_then(|h| h.published);
                if let (Some(acc), Some(d)) = (annual.as_deref_mut(), decided) {
                    let on_time = match (deadline, first_pub) {
                        (Some(dl), Some(p)) => Some(p <= dl),
                        (Some(dl), None) if opts.today > dl => Some(false),
                        _ => None,
                    };
                    let r = &mapped.record;
                    match kind {
                        Kind::Permit => {
                            if let Some(c) = r.get("XK_XKLB") {
                                acc.add_permit(c, d, on_time);
                            }
                        }
                        Kind::Penalty => {
                            if let Some(c) = r.get("CF_CFLB") {
                                let cats: Vec<&str> = c.split(';').collect();
                                let amount =
                                    |f: &str| r.get(f).and_then(|v| Decimal::from_str(v).ok());
                                acc.add_penalty(
                                    &cats,
                                    amount("CF_NR_FK"),
                                    amount("CF_NR_WFFF"),
                                    d,
                                    on_time,
                                );
                            }
                        }
                    }
                }
                let display_key = key_str
                    .clone()
                    .unwrap_or_else(|| format!("({} {})", kind.as_str(), src.id));
                if !mapped.is_valid() {
                    let detail = mapped
                        .findings
                        .iter()
                        .map(|f| format!("{} [{}] {}", f.field, f.code, f.zh))
                        .collect::<Vec<_>>()
                        .join("；");
                    report
                        .gaps
                        .push(row(Category::Quarantined, &display_key, detail, published));
                    if published.is_none() {
                        if let Some(dl) = deadline {
                            if opts.today > dl {
                                report.gaps.push(row(
                                    Category::Overdue,
                                    &display_key,
                                    "校验未通过，尚未公示".into(),
                                    None,
                                ));
                                if let Some(d) = decided {
                                    report.record_month(d, MonthOutcome::Overdue);
                                }
                            } else if let Some(d) = decided {
                                report.record_month(d, MonthOutcome::NotYetDue);
                            }
                        }
                    }
                    continue;
                }
                let key = key_str.expect("a valid mapping has a key");
                let digest = mapped.record.digest();
                let ledger = store.ledger_get(&key)?;
                if let Some(l) = &ledger {
                    if l.attempts > 0 {
                        rates.submitted += 1;
                        if l.state == PlatformState::Public
                            || l.state == PlatformState::Withdrawn
                            || l.digest.is_some()
                        {
                            rates.accepted += 1;
                        }
                    }
                }
                let revoked = kind == Kind::Penalty
                    && matches!(
                        src.status(),
                        Some(SourceStatus::Revoked) | Some(SourceStatus::Changed)
                    );
                let until = mapped
                    .record
                    .get("CF_GSJZQ")
                    .and_then(crate::validate::parse_date);
                let expired = kind == Kind::Penalty && until.is_some_and(|u| u < opts.today);
                let should_be_public = !revoked && !expired;
                let public = h.as_ref().is_some_and(|h| h.public);
                let rejected = ledger.as_ref().filter(|l| {
                    l.state == PlatformState::Rejected
                        || l.rejected_digest.as_deref() == Some(digest.to_hex().as_str())
                });
                if let Some(l) = rejected {
                    report.gaps.push(row(
                        Category::Rejected,
                        &key,
                        l.last_error.clone().unwrap_or_default(),
                        published,
                    ));
                }
                if should_be_public {
                    // A rejected record is not `missing`: sending it again cannot help until it is fixed.
                    if !public {
                        if rejected.is_none() {
                            report.gaps.push(row(
                                Category::Missing,
                                &key,
                                "平台上没有公示这条记录 / the platform does not show it".into(),
                                None,
                            ));
                            plan.repush.push((kind, raw.clone()));
                        }
                    } else if h.as_ref().and_then(|h| h.digest) != Some(digest) {
                        let idx = report.gaps.len();
                        report
                            .gaps
                            .push(row(Category::Stale, &key, String::new(), published));
                        need_fields
                            .entry(h.as_ref().map(|h| h.page).unwrap_or(1))
                            .or_default()
                            .push((idx, mapped.record.clone()));
                        plan.repush.push((kind, raw.clone()));
                    }
                    match (deadline, first_pub) {
                        (Some(dl), Some(p)) => {
                            rates.due += 1;
                            if p <= dl {
                                rates.on_time += 1;
                                report.record_month(
                                    decided.expect("a deadline comes from a decision date"),
                                    MonthOutcome::OnTime,
                                );
                            } else {
                                report.gaps.push(row(
                                    Category::Late,
                                    &key,
                                    format!("{p} 公示，期限 {dl} / published {p}, due {dl}"),
                                    published,
                                ));
                                report.record_month(
                                    decided.expect("a deadline comes from a decision date"),
                                    MonthOutcome::Late,
                                );
                            }
                        }
                        (Some(dl), None) => {
                            if opts.today > dl {
                                rates.due += 1;
                                report.gaps.push(row(
                                    Category::Overdue,
                                    &key,
                                    format!(
                                        "期限 {dl} 已过，仍未公示 / due {dl}, still not public"
                                    ),
                                    None,
                                ));
                                report.record_month(
                                    decided.expect("deadline"),
                                    MonthOutcome::Overdue,
                                );
                            } else {
                                report.record_month(
                                    decided.expect("deadline"),
                                    MonthOutcome::NotYetDue,
                                );
                            }
                        }
                        _ => {}
                    }
                } else if public {
                    if expired {
                        let u = until.map(|u| u.to_string()).unwrap_or_default();
                        report.gaps.push(row(
                            Category::Expired,
                            &key,
                            format!(
                                "公示截止期 {u} 已过，仍在公示 / display ended {u}, still public"
                            ),
                            published,
                        ));
                    } else {
                        report.gaps.push(row(Category::Stale, &key, "源系统已撤销，平台仍在公示 / revoked at the source, still public on the platform".into(), published));
                    }
                    plan.withdraw.push((kind, key.clone()));
                }
            }
            if let Some(pb) = &pb {
                pb.set_message(format!("{}: {seen} source records compared", kind.zh()));
            }
            if !p.has_more || p.items.is_empty() {
                break;
            }
        }

        // 3. What is left on the platform is not the source's: orphans (public ones only).
        let mut orphans: Vec<(String, u64)> = held
            .iter()
            .filter(|(_, h)| h.public)
            .map(|(k, h)| (k.clone(), h.page))
            .collect();
        orphans.sort();
        let mut orphan_rows: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (k, page) in orphans {
            orphan_rows.entry(page).or_default().push(k);
        }
        // 4. Fields for stale and orphan rows, from just the pages that hold them.
        let pages: BTreeSet<u64> = need_fields
            .keys()
            .chain(orphan_rows.keys())
            .copied()
            .collect();
        for page in pages {
            let p = platform
                .records(
                    &budget,
                    kind,
                    &cfg.agency_credit_code,
                    page,
                    cfg.platform_page_size,
                    true,
                )
                .await?;
            let by_key: HashMap<&str, &crate::xml::PageRecord> =
                p.records.iter().map(|r| (r.key.as_str(), r)).collect();
            for (idx, ours) in need_fields.get(&page).into_iter().flatten() {
                let theirs = by_key
                    .get(report.gaps[*idx].key.as_str())
                    .and_then(|r| r.fields.clone())
                    .unwrap_or_default();
                let diff = differing_fields(ours, &theirs);
                report.gaps[*idx].detail =
                    format!("字段不一致 / fields differ: {}", diff.join(", "));
            }
            for key in orphan_rows.get(&page).into_iter().flatten() {
                let rec = by_key.get(key.as_str());
                let fields = rec.and_then(|r| r.fields.clone()).unwrap_or_default();
                let (date_field, name_field, id_fields) = match kind {
                    Kind::Permit => ("XK_JDRQ", "XK_XDR_MC", ["XK_XDR_ZJHM", "XK_XDR_SHXYM"]),
                    Kind::Penalty => ("CF_JDRQ", "CF_XDR_MC", ["CF_XDR_ZJHM", "CF_XDR_SHXYM"]),
                };
                let decided = fields.get(date_field).and_then(crate::validate::parse_date);
                if !in_window(decided, opts.from, opts.to)
                    && (opts.from.is_some() || opts.to.is_some())
                {
                    continue;
                }
                report.gaps.push(GapRow {
                    category: Category::Orphan,
                    key: key.clone(),
                    kind,
                    doc_no: crate::model::RecordKey::parse(key)
                        .map(|k| k.doc_no().to_string())
                        .unwrap_or_default(),
                    party_name: fields.get(name_field).unwrap_or("").to_string(),
                    party_id_masked: id_fields
                        .iter()
                        .find_map(|f| fields.get(f))
                        .map(mask_id)
                        .unwrap_or_default(),
                    decided_on: decided,
                    deadline: None,
                    first_published: rec.and_then(|r| cst_date(&r.published_at)),
                    detail: "源系统中没有这条记录 / the source has no such record".into(),
                });
                plan.orphans.push((kind, key.clone()));
            }
        }
        report.rates.insert(kind, rates);
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    report.sort_gaps();
    Ok((report, plan))
}
