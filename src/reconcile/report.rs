//! The data model of a reconcile gap report: what differs between the source, the ledger and the platform
//! (DESIGN §4), how the platform would grade the agency, and what was repaired.
//!
//! The comparison engine fills a [`Report`]; the `writers` render it. Pure: no I/O. A record can appear in several
//! categories (e.g. `missing` and `overdue`), so [`Report::gaps`] holds one row per (category, record).

pub use super::gaps::Gaps;
use crate::model::Kind;
use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use std::collections::BTreeMap;

/// A gap category (DESIGN §4). The declaration order is the order of every report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    /// A valid source record that should be public and that the platform does not hold as public.
    Missing,
    /// The platform holds it, but its digest (or state) differs from the source record mapped today.
    Stale,
    /// The platform holds it as public, but the source has no such record.
    Orphan,
    /// Not public on the platform, and today is past its deadline.
    Overdue,
    /// Public, but first published after its deadline.
    Late,
    /// A penalty still public after its CF_GSJZQ.
    Expired,
    /// Failed local validation.
    Quarantined,
    /// The platform refused it.
    Rejected,
}

impl Category {
    pub const ALL: [Category; 8] = [
        Category::Missing,
        Category::Stale,
        Category::Orphan,
        Category::Overdue,
        Category::Late,
        Category::Expired,
        Category::Quarantined,
        Category::Rejected,
    ];

    /// The lowercase English name used in JSON, CSV file names and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Missing => "missing",
            Category::Stale => "stale",
            Category::Orphan => "orphan",
            Category::Overdue => "overdue",
            Category::Late => "late",
            Category::Expired => "expired",
            Category::Quarantined => "quarantined",
            Category::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The Chinese name operators know the category by; also the xlsx sheet name.
    pub fn zh(self) -> &'static str {
        match self {
            Category::Missing => "缺失",
            Category::Stale => "不一致",
            Category::Orphan => "多余",
            Category::Overdue => "逾期未公示",
            Category::Late => "超期公示",
            Category::Expired => "公示期满未撤下",
            Category::Quarantined => "校验未通过",
            Category::Rejected => "平台拒收",
        }
    }

    /// What the operator should do about a row of this category, in plain English.
    pub fn action_en(self) -> &'static str {
        match self {
            Category::Missing => {
                "run `dualpub reconcile --repair`, which sends it now (a sync sends only records that changed since \
                 the last sync read the feed: one never synced is sent by the next sync, one the platform lost is not)"
            }
            Category::Stale => {
                "run `dualpub reconcile --repair`, which sends the current version or withdraws a revoked penalty \
                 now (a sync sends only records that changed since the last sync read the feed)"
            }
            Category::Orphan => {
                "check whether the platform record is yours; `--repair --repair-orphans` withdraws it"
            }
            Category::Overdue => {
                "publish it now: it is past its 7-working-day deadline (`dualpub reconcile --repair`; \
                 if it is also quarantined or rejected, fix that first)"
            }
            Category::Late => {
                "nothing to re-send; it lowers 及时率 — find out why it was late \
                 (committed late in the source, connector not running, or rejected first)"
            }
            Category::Expired => {
                "take it down: its display period (CF_GSJZQ) has ended; `dualpub reconcile --repair` withdraws \
                 it (a sync withdraws only what this store published)"
            }
            Category::Quarantined => {
                "fix the fields listed in the source system; the next sync re-validates"
            }
            Category::Rejected => {
                "read the platform's message, fix the record, then `dualpub quarantine retry KEY`"
            }
        }
    }

    /// What the operator should do about a row of this category, in plain Chinese.
    pub fn action_zh(self) -> &'static str {
        match self {
            Category::Missing => {
                "运行 `dualpub reconcile --repair` 立即推送该记录（同步只推送上次同步以来执法系统中有变动的记录：\
                 从未同步过的记录下次同步会推送，平台丢失的记录则不会）"
            }
            Category::Stale => {
                "运行 `dualpub reconcile --repair` 立即推送当前版本，或撤下已撤销的处罚（同步只推送上次同步以来执法系统中有变动的记录）"
            }
            Category::Orphan => {
                "核实平台上的该记录是否属于本单位；`--repair --repair-orphans` 会将其撤下"
            }
            Category::Overdue => {
                "立即公示：已超过 7 个工作日的公示期限（`dualpub reconcile --repair`；\
                 如同时校验未通过或被平台拒收，请先处理）"
            }
            Category::Late => {
                "无需重新推送；该记录拉低及时率，请查明延迟原因（执法系统迟录入、同步未运行或先被拒收）"
            }
            Category::Expired => {
                "公示期（CF_GSJZQ）已满，应撤下：运行 `dualpub reconcile --repair`（同步只撤下本存储发布过的记录）"
            }
            Category::Quarantined => "在执法系统中修正所列字段，下次同步将重新校验",
            Category::Rejected => {
                "查看平台返回的信息，修正记录后运行 `dualpub quarantine retry KEY`"
            }
        }
    }
}

/// What the operator should do about a row `--repair` leaves alone because the enforcement system served the record
/// in an older version than the one the platform holds and acknowledged ([`GapRow::is_older_copy`]), in English.
pub const OLDER_COPY_ACTION_EN: &str =
    "nothing for `dualpub reconcile --repair` to do: it leaves this row as it is, because the enforcement system \
     serves an older version of the record than the one the platform holds and acknowledged (see the detail); check \
     whether the enforcement system, or the replica dualpub reads, lags behind, and reconcile again once it serves \
     the current version; if the version it serves is the current one — a later edit saved with a clock running \
     behind, or by a transaction that began before the published version was saved (a database that stamps \
     updated_at when a transaction begins), that brings back content the platform acknowledged before, or that fails \
     validation — save the record again in the enforcement system (the next sync sends it), and set such a clock \
     right (a valid late edit with new content is not listed here: its row is `stale` or `missing`, and --repair \
     sends it)";

/// [`OLDER_COPY_ACTION_EN`] in Chinese.
pub const OLDER_COPY_ACTION_ZH: &str =
    "`dualpub reconcile --repair` 不处理此行：执法系统提供的是比平台上已确认版本更旧的版本（见说明）；请检查执法系统\
     （或 dualpub 读取的数据库副本）是否同步滞后，待其提供当前版本后再核对；如其提供的就是当前版本（时钟滞后的机器保存\
     的新修改，或在已公示版本保存前开始、之后才提交的事务所作的修改——数据库在事务开始时记录 updated_at——且其内容与平台此前确认过的某一版本\
     相同，或未通过校验），请在执法系统中重新保存该记录（下次同步将推送），并校正滞后的时钟（内容为新的、通过校验的此类修改\
     不列于此：其行为 stale 或 missing，--repair 会推送）";

/// What the operator should do about an `overdue` row of a penalty whose display period ended before it was ever
/// published ([`GapRow::is_display_ended`]), in English: nothing can be published any more.
pub const DISPLAY_ENDED_ACTION_EN: &str =
    "do not publish it: its display period (CF_GSJZQ) ended before it was ever published, so it can no longer be \
     published and must not be (`dualpub reconcile --repair` leaves it, and so does sync); it counts against 及时率 \
     as a missed deadline for good — find out why it was never published (committed late in the source, connector \
     not running, or quarantined or rejected until its display period was over)";

/// [`DISPLAY_ENDED_ACTION_EN`] in Chinese.
pub const DISPLAY_ENDED_ACTION_ZH: &str =
    "不得补公示：该处罚的公示期（CF_GSJZQ）已满而从未公示，已不能也不得再公示（`dualpub reconcile --repair` 与同步均不会\
     推送）；该记录按逾期未公示计入及时率，请查明未公示的原因（执法系统迟录入、同步未运行，或校验未通过、被平台拒收直至公示期满）";

impl std::fmt::Display for Category {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One gap: a record in one category, with what an operator needs to find it in both systems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRow {
    pub category: Category,
    /// The platform record key `{item}:{sender}:{document number}`.
    pub key: String,
    pub kind: Kind,
    pub doc_no: String,
    pub party_name: String,
    /// Already masked (`ids::mask_id`); never a full ID number.
    pub party_id_masked: String,
    pub decided_on: Option<NaiveDate>,
    /// The 7th working day after the decision; `None` when it cannot be computed (e.g. an orphan).
    pub deadline: Option<NaiveDate>,
    /// The CST calendar date the platform first published it.
    pub first_published: Option<NaiveDate>,
    /// What differs, e.g. for stale "XK_XDR_MC, XK_NR differ", or the findings / the platform's message.
    pub detail: String,
}

impl GapRow {
    /// The record key as a report shows it: an ID number in its document number masked (see
    /// [`GapRow::doc_no_shown`]).
    pub fn key_shown(&self) -> std::borrow::Cow<'_, str> {
        shown_masked(&self.key)
    }

    /// The document number as a report shows it, any ID number in it masked (`410302********1524`), as in the
    /// 证件号码 column beside it: a permit without a document number goes out under its permit number, and some
    /// permits are numbered by their holder's ID number (a 特种作业操作证 is `T` + the ID number). Until 2026-11-30
    /// every report printed it whole there. (The key used inside, and by `--repair`, stays whole.)
    pub fn doc_no_shown(&self) -> std::borrow::Cow<'_, str> {
        shown_masked(&self.doc_no)
    }

    /// Whether `--repair` leaves this row alone because the feed served the record in an older version than the one
    /// the platform holds and acknowledged: a `missing`, `stale` or `expired` row whose detail the engine started
    /// with `gaps::older_copy_detail`. (Other categories' details may quote the platform or the source, and
    /// `--repair` does not act on them anyway.)
    pub fn is_older_copy(&self) -> bool {
        matches!(
            self.category,
            Category::Missing | Category::Stale | Category::Expired
        ) && self.detail.starts_with(super::gaps::OLDER_COPY_LEAD)
    }

    /// Whether this is the `overdue` row of a penalty whose display period ended before it was ever published: one
    /// whose detail the engine made with `gaps::display_ended_detail`. Nothing can be published for it any more, so
    /// its action is not its category's "publish it now".
    pub fn is_display_ended(&self) -> bool {
        self.category == Category::Overdue
            && self.detail.starts_with(super::gaps::DISPLAY_ENDED_LEAD)
    }

    /// What the operator should do about this row, in English: its category's action, or for an older copy
    /// ([`GapRow::is_older_copy`]) what is true of it instead (`--repair` leaves it), or for a penalty whose display
    /// period ended before it was ever published ([`GapRow::is_display_ended`]) that it must not be published.
    pub fn action_en(&self) -> &'static str {
        if self.is_older_copy() {
            OLDER_COPY_ACTION_EN
        } else if self.is_display_ended() {
            DISPLAY_ENDED_ACTION_EN
        } else {
            self.category.action_en()
        }
    }

    /// [`GapRow::action_en`] in Chinese.
    pub fn action_zh(&self) -> &'static str {
        if self.is_older_copy() {
            OLDER_COPY_ACTION_ZH
        } else if self.is_display_ended() {
            DISPLAY_ENDED_ACTION_ZH
        } else {
            self.category.action_zh()
        }
    }
}

/// The counts behind the platform's grades. The rates are `None` when their denominator is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
    /// Records whose deadline has passed, or that were published (so their timeliness is known).
    pub due: u64,
    /// Of those, published on or before their deadline.
    pub on_time: u64,
    pub submitted: u64,
    pub accepted: u64,
    pub filled_items: u64,
    pub expected_items: u64,
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl Rates {
    /// 及时率: on time / due.
    pub fn timeliness(&self) -> Option<f64> {
        ratio(self.on_time, self.due)
    }

    /// 入库率: accepted / submitted.
    pub fn acceptance(&self) -> Option<f64> {
        ratio(self.accepted, self.submitted)
    }

    /// 完整率: filled data items / expected data items.
    pub fn completeness(&self) -> Option<f64> {
        ratio(self.filled_items, self.expected_items)
    }

    pub fn add(&mut self, other: &Rates) {
        self.due += other.due;
        self.on_time += other.on_time;
        self.submitted += other.submitted;
        self.accepted += other.accepted;
        self.filled_items += other.filled_items;
        self.expected_items += other.expected_items;
    }
}

/// How a decision fared against its publication deadline, for the per-month table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MonthOutcome {
    /// Published on or before its deadline.
    OnTime,
    /// Published after its deadline.
    Late,
    /// Not published, and the deadline has passed.
    Overdue,
    /// Not published, and the deadline has not passed yet.
    NotYetDue,
}

/// Decisions of one month (by decision date) split by outcome.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct MonthBucket {
    /// `YYYY-MM`.
    pub month: String,
    pub on_time: u64,
    pub late: u64,
    pub overdue: u64,
    pub not_yet_due: u64,
}

impl MonthBucket {
    pub fn total(&self) -> u64 {
        self.on_time + self.late + self.overdue + self.not_yet_due
    }
}

/// What `reconcile --repair` did, and what it could not do.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct RepairSummary {
    pub repushed: u64,
    pub withdrawn: u64,
    pub orphans_withdrawn: u64,
    pub failed: u64,
    /// Plain sentences of what is left for a person.
    pub left: Vec<String>,
}

/// A whole reconcile report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The date deadlines and display periods were judged against (`--today`).
    pub today: NaiveDate,
    /// The window of decision dates asked for; `None` = open.
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub kinds: Vec<Kind>,
    pub source_records: u64,
    pub platform_records: u64,
    /// Per kind; the overall rates are their sum ([`Report::overall`]).
    pub rates: BTreeMap<Kind, Rates>,
    /// Sorted by month; fill with [`Report::record_month`].
    pub months: Vec<MonthBucket>,
    /// One row per (category, record), compactly; see [`Gaps`].
    pub gaps: Gaps,
    pub repair: Option<RepairSummary>,
    /// Plain sentences on what limits the report itself and needs a person (a calendar that does not cover a
    /// decision's deadline, say).
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report for `today` over all kinds and an open window.
    pub fn new(today: NaiveDate) -> Report {
        Report {
            today,
            from: None,
            to: None,
            kinds: Kind::ALL.to_vec(),
            source_records: 0,
            platform_records: 0,
            rates: BTreeMap::new(),
            months: Vec::new(),
            gaps: Gaps::new(),
            repair: None,
            notes: Vec::new(),
        }
    }

    /// Rows per category; every category is present, with 0 when it has no rows.
    pub fn counts(&self) -> BTreeMap<Category, u64> {
        Category::ALL
            .into_iter()
            .zip(self.gaps.category_counts())
            .collect()
    }

    /// The rates over all kinds.
    pub fn overall(&self) -> Rates {
        let mut total = Rates::default();
        for r in self.rates.values() {
            total.add(r);
        }
        total
    }

    /// The label of the platform's record count: a window of decision dates limits the source side only (the
    /// platform's list carries no decision dates), and the label says so.
    pub fn platform_records_label(&self) -> &'static str {
        if self.from.is_some() || self.to.is_some() {
            "平台记录数（不限决定日期 every decision date）"
        } else {
            "平台记录数"
        }
    }

    pub fn has_gaps(&self) -> bool {
        !self.gaps.is_empty()
    }

    /// The number of distinct records with at least one gap.
    pub fn records_with_gaps(&self) -> usize {
        self.gaps.distinct_keys()
    }

    /// The rows of one category, in report order.
    pub fn gaps_in(&self, category: Category) -> impl Iterator<Item = GapRow> + '_ {
        self.gaps.iter_in(category)
    }

    /// Sorts the rows by category, then decision date (undated last), then key: the order operators read.
    pub fn sort_gaps(&mut self) {
        self.gaps.sort();
    }

    /// Counts one decision in the month of its decision date, keeping `months` sorted.
    pub fn record_month(&mut self, decided: NaiveDate, outcome: MonthOutcome) {
        let month = format!("{:04}-{:02}", decided.year(), decided.month());
        let i = match self.months.binary_search_by(|b| b.month.cmp(&month)) {
            Ok(i) => i,
            Err(i) => {
                self.months.insert(
                    i,
                    MonthBucket {
                        month,
                        ..MonthBucket::default()
                    },
                );
                i
            }
        };
        let b = &mut self.months[i];
        match outcome {
            MonthOutcome::OnTime => b.on_time += 1,
            MonthOutcome::Late => b.late += 1,
            MonthOutcome::Overdue => b.overdue += 1,
            MonthOutcome::NotYetDue => b.not_yet_due += 1,
        }
    }
}

/// `text` with every ID number in it masked, borrowed when it holds no digit (most document numbers are short
/// digit runs among CJK text, which `ids::mask_ids_in` leaves as they are).
fn shown_masked(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() < 15 {
        return text.into();
    }
    let masked = crate::ids::mask_ids_in(text);
    if masked == text {
        text.into()
    } else {
        masked.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
    }

    #[test]
    fn rates_are_none_without_denominator() {
        let r = Rates::default();
        assert_eq!(r.timeliness(), None);
        assert_eq!(r.acceptance(), None);
        assert_eq!(r.completeness(), None);
        let mut a = Rates {
            due: 4,
            on_time: 3,
            submitted: 10,
            accepted: 9,
            filled_items: 50,
            expected_items: 56,
        };
        a.add(&Rates {
            due: 4,
            on_time: 4,
            ..Rates::default()
        });
        assert_eq!(a.timeliness(), Some(7.0 / 8.0));
        assert_eq!(a.acceptance(), Some(0.9));
    }

    #[test]
    fn months_stay_sorted_and_counted() {
        let mut r = Report::new(d("2024-12-31"));
        r.record_month(d("2024-03-05"), MonthOutcome::OnTime);
        r.record_month(d("2024-01-31"), MonthOutcome::Late);
        r.record_month(d("2024-03-20"), MonthOutcome::Overdue);
        r.record_month(d("2023-12-01"), MonthOutcome::NotYetDue);
        let months: Vec<&str> = r.months.iter().map(|m| m.month.as_str()).collect();
        assert_eq!(months, ["2023-12", "2024-01", "2024-03"]);
        assert_eq!(r.months[2].on_time, 1);
        assert_eq!(r.months[2].overdue, 1);
        assert_eq!(r.months[2].total(), 2);
    }

    #[test]
    fn an_older_copys_row_says_the_repair_leaves_it() {
        let row = |category, detail: String| GapRow {
            category,
            key: "XZXK:1:a".into(),
            kind: Kind::Permit,
            doc_no: "a".into(),
            party_name: String::new(),
            party_id_masked: String::new(),
            decided_on: None,
            deadline: None,
            first_published: None,
            detail,
        };
        let older = crate::reconcile::gaps::older_copy_detail("t1", "t2");
        for c in [Category::Missing, Category::Stale, Category::Expired] {
            let r = row(c, format!("{older}；字段不一致"));
            assert!(r.is_older_copy());
            assert_eq!(
                (r.action_en(), r.action_zh()),
                (OLDER_COPY_ACTION_EN, OLDER_COPY_ACTION_ZH)
            );
            let r = row(c, crate::reconcile::gaps::MISSING_DETAIL.into());
            assert_eq!(
                (r.action_en(), r.action_zh()),
                (c.action_en(), c.action_zh())
            );
        }
        // a platform's message that happens to start so is no older copy
        let r = row(Category::Rejected, older);
        assert_eq!(r.action_en(), Category::Rejected.action_en());
    }

    #[test]
    fn a_penalty_never_published_in_its_display_period_is_not_to_be_published() {
        let row = |category, detail: String| GapRow {
            category,
            key: "XZCF:1:a".into(),
            kind: Kind::Penalty,
            doc_no: "a".into(),
            party_name: String::new(),
            party_id_masked: String::new(),
            decided_on: Some(d("2025-11-20")),
            deadline: Some(d("2025-12-01")),
            first_published: None,
            detail,
        };
        let ended = crate::reconcile::gaps::display_ended_detail(d("2026-11-20"));
        let r = row(Category::Overdue, ended.clone());
        assert!(r.is_display_ended());
        assert_eq!(
            (r.action_en(), r.action_zh()),
            (DISPLAY_ENDED_ACTION_EN, DISPLAY_ENDED_ACTION_ZH)
        );
        assert!(!r.action_en().contains("publish it now"));
        // other overdue rows keep their category's action, and so does another category's detail that starts so
        let r = row(
            Category::Overdue,
            crate::reconcile::gaps::overdue_detail(d("2025-12-01")),
        );
        assert_eq!(r.action_en(), Category::Overdue.action_en());
        let r = row(Category::Rejected, ended);
        assert_eq!(r.action_en(), Category::Rejected.action_en());
    }

    #[test]
    fn counts_have_every_category() {
        let r = Report::new(d("2024-12-31"));
        assert_eq!(r.counts().len(), 8);
        assert!(!r.has_gaps());
        assert_eq!(Category::parse("orphan"), Some(Category::Orphan));
        assert_eq!(
            serde_json::to_string(&Category::Quarantined).expect("serialize"),
            "\"quarantined\""
        );
    }
}
