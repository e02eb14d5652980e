//! The stable JSON shape of `dualpub reconcile --format json` (version 1).
//!
//! ```json
//! {
//!   "version": 1,
//!   "today": "2026-11-27",
//!   "window": {"from": "2024-01-01", "to": null},
//!   "kinds": ["permit", "penalty"],
//!   "records": {"source": 1234, "platform": 1230},
//!   "total_gaps": 3,
//!   "records_with_gaps": 2,
//!   "counts": {"missing": 1, "stale": 0, "orphan": 0, "overdue": 1, "late": 0, "expired": 0,
//!              "quarantined": 1, "rejected": 0},
//!   "rates": {
//!     "overall": {"due": 50, "on_time": 49, "timeliness": 0.98,
//!                 "submitted": 60, "accepted": 59, "acceptance": 0.9833,
//!                 "filled_items": 1500, "expected_items": 1520, "completeness": 0.9868},
//!     "permit":  {…same fields…},
//!     "penalty": {…same fields…}
//!   },
//!   "months": [{"month": "2024-03", "on_time": 10, "late": 1, "overdue": 0, "not_yet_due": 0}],
//!   "gaps": [{"category": "missing", "key": "XZXK:9141…:（豫）WH安许证字〔2024〕000123", "kind": "permit",
//!             "doc_no": "（豫）WH安许证字〔2024〕000123", "party_name": "…", "party_id_masked": "410105********1234",
//!             "decided_on": "2024-03-01", "deadline": "2024-03-12", "first_published": null,
//!             "detail": "…", "action": "run `dualpub reconcile --repair`, which sends it (…)",
//!             "action_zh": "…"}],
//!   "repair": null,
//!   "notes": []
//! }
//! ```
//!
//! - Dates are `YYYY-MM-DD` (China Standard Time) or `null`; `window.from` / `window.to` are `null` when open.
//! - `counts` always holds all eight categories, in this order, 0 when empty. A record can be in several
//!   categories, so `total_gaps` (rows) can exceed `records_with_gaps` (distinct keys).
//! - Rates are shares between 0 and 1 rounded to 4 places, `null` when their denominator is 0; `rates` holds
//!   `overall` and one entry per kind the report covers. `timeliness` = 及时率 (on_time / due), `acceptance` =
//!   入库率 (accepted / submitted), `completeness` = 完整率 (filled_items / expected_items).
//! - `months` is sorted by month of decision date.
//! - `gaps` are in report order; `party_id_masked` is always masked.
//! - `repair` is `null` without `--repair`, else `{"repushed": n, "withdrawn": n, "orphans_withdrawn": n,
//!   "failed": n, "left": ["plain sentence", …]}`.
//! - `notes` (added 2026-11-29): plain sentences on what limits the report and needs a person, e.g. records whose
//!   deadline the calendar cannot give; empty when there is nothing to say. A note makes the exit code 1.
//! - New fields may be added within version 1; existing ones keep their name and meaning.

use super::round4;
use crate::model::Kind;
use crate::reconcile::gaps::date_string;
use crate::reconcile::report::{
    Category, GapRow, Gaps, MonthBucket, Rates, RepairSummary, Report, DISPLAY_ENDED_ACTION_EN,
    DISPLAY_ENDED_ACTION_ZH, OLDER_COPY_ACTION_EN, OLDER_COPY_ACTION_ZH,
};
use serde::ser::SerializeMap;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::OnceLock;

/// The version of the JSON shape; bumped only when a field changes meaning or goes away.
pub const JSON_VERSION: u32 = 1;

#[derive(Serialize)]
struct JsonReport<'a> {
    version: u32,
    today: String,
    window: Window,
    kinds: &'a [Kind],
    records: Records,
    total_gaps: usize,
    records_with_gaps: usize,
    counts: Counts,
    rates: RatesMap<'a>,
    months: &'a [MonthBucket],
    gaps: GapSeq<'a>,
    repair: Option<&'a RepairSummary>,
    notes: &'a [String],
}

#[derive(Serialize)]
struct Window {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Serialize)]
struct Records {
    source: u64,
    platform: u64,
}

/// All eight categories in `Category::ALL` order.
struct Counts(BTreeMap<Category, u64>);

impl Serialize for Counts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(Category::ALL.len()))?;
        for c in Category::ALL {
            m.serialize_entry(c.as_str(), &self.0.get(&c).copied().unwrap_or(0))?;
        }
        m.end()
    }
}

/// `overall` first, then the kinds in order.
struct RatesMap<'a> {
    overall: Rates,
    per_kind: &'a BTreeMap<Kind, Rates>,
}

impl Serialize for RatesMap<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1 + self.per_kind.len()))?;
        m.serialize_entry("overall", &JsonRates::from(&self.overall))?;
        for (k, r) in self.per_kind {
            m.serialize_entry(k.as_str(), &JsonRates::from(r))?;
        }
        m.end()
    }
}

#[derive(Serialize)]
struct JsonRates {
    due: u64,
    on_time: u64,
    timeliness: Option<f64>,
    submitted: u64,
    accepted: u64,
    acceptance: Option<f64>,
    filled_items: u64,
    expected_items: u64,
    completeness: Option<f64>,
}

impl From<&Rates> for JsonRates {
    fn from(r: &Rates) -> Self {
        JsonRates {
            due: r.due,
            on_time: r.on_time,
            timeliness: round4(r.timeliness()),
            submitted: r.submitted,
            accepted: r.accepted,
            acceptance: round4(r.acceptance()),
            filled_items: r.filled_items,
            expected_items: r.expected_items,
            completeness: round4(r.completeness()),
        }
    }
}

#[derive(Serialize)]
struct JsonGap<'a> {
    category: Category,
    key: std::borrow::Cow<'a, str>,
    kind: Kind,
    doc_no: std::borrow::Cow<'a, str>,
    party_name: &'a str,
    party_id_masked: &'a str,
    decided_on: Option<String>,
    deadline: Option<String>,
    first_published: Option<String>,
    detail: &'a str,
    action: &'static RawValue,
    action_zh: &'static RawValue,
}

/// A row's two action sentences (its category's, or an older copy's: `GapRow::action_en`) as JSON text, escaped
/// once per process instead of once per row.
fn actions(g: &GapRow) -> (&'static RawValue, &'static RawValue) {
    static ACTIONS: OnceLock<Vec<(Box<RawValue>, Box<RawValue>)>> = OnceLock::new();
    let all = ACTIONS.get_or_init(|| {
        let raw = |t: &str| {
            RawValue::from_string(serde_json::to_string(t).expect("a string serializes"))
                .expect("serde_json writes valid JSON")
        };
        Category::ALL
            .iter()
            .map(|c| (c.action_en(), c.action_zh()))
            .chain([
                (OLDER_COPY_ACTION_EN, OLDER_COPY_ACTION_ZH),
                (DISPLAY_ENDED_ACTION_EN, DISPLAY_ENDED_ACTION_ZH),
            ])
            .map(|(en, zh)| (raw(en), raw(zh)))
            .collect()
    });
    let i = if g.is_older_copy() {
        Category::ALL.len()
    } else if g.is_display_ended() {
        Category::ALL.len() + 1
    } else {
        Category::ALL
            .iter()
            .position(|x| *x == g.category)
            .expect("every category is in Category::ALL")
    };
    (&all[i].0, &all[i].1)
}

impl<'a> From<&'a GapRow> for JsonGap<'a> {
    fn from(g: &'a GapRow) -> Self {
        JsonGap {
            category: g.category,
            key: g.key_shown(),
            kind: g.kind,
            doc_no: g.doc_no_shown(),
            party_name: &g.party_name,
            party_id_masked: &g.party_id_masked,
            decided_on: g.decided_on.map(date_string),
            deadline: g.deadline.map(date_string),
            first_published: g.first_published.map(date_string),
            detail: &g.detail,
            action: actions(g).0,
            action_zh: actions(g).1,
        }
    }
}

/// The rows, decoded and written one at a time (a report can hold a million).
struct GapSeq<'a>(&'a Gaps);

impl Serialize for GapSeq<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for g in self.0.iter() {
            seq.serialize_element(&JsonGap::from(&g))?;
        }
        seq.end()
    }
}

/// Writes the report as one pretty-printed JSON object (the shape above) followed by a newline.
pub fn write_json(r: &Report, out: &mut dyn Write) -> io::Result<()> {
    let doc = JsonReport {
        version: JSON_VERSION,
        today: r.today.to_string(),
        window: Window {
            from: r.from.map(|d| d.to_string()),
            to: r.to.map(|d| d.to_string()),
        },
        kinds: &r.kinds,
        records: Records {
            source: r.source_records,
            platform: r.platform_records,
        },
        total_gaps: r.gaps.len(),
        records_with_gaps: r.records_with_gaps(),
        counts: Counts(r.counts()),
        rates: RatesMap {
            overall: r.overall(),
            per_kind: &r.rates,
        },
        months: &r.months,
        gaps: GapSeq(&r.gaps),
        repair: r.repair.as_ref(),
        notes: &r.notes,
    };
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::other)?;
    writeln!(out)
}
