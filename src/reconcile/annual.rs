//! The numbers of the 政府信息公开工作年度报告 (annual government-information report) for `dualpub report annual`:
//! permit and penalty decisions of a year by category (许可类别 / 处罚类别), fines and confiscations in 万元 as
//! exact decimals, and the share published on time; with a terminal table, JSON and xlsx writer.
//!
//! [`AnnualAccumulator`] takes decisions one at a time (memory does not grow with their number) and ignores those
//! decided outside the year.

use super::report::MonthOutcome;
use super::writers::{align_rows, percent, round4, Paint, ReportFile, WriteError};
use crate::source_schema::SourceStatus;
use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use rust_xlsxwriter::{Format, Workbook, XlsxError};
use serde::ser::SerializeMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

pub use crate::mapping::{PENALTY_CATEGORIES, PERMIT_CATEGORIES};

/// The category row of decisions whose category the mapping could not give (an unknown code, or none): they
/// still count in the totals, fines and on-time share.
pub const UNMAPPED: &str = "未分类 unmapped";

/// A year's decisions, counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnualReport {
    pub year: i32,
    /// 许可类别 (Chinese value) → decisions.
    pub permits_by_category: BTreeMap<String, u64>,
    /// 处罚类别 (Chinese value) → decisions; a decision with several categories counts once in each.
    pub penalties_by_category: BTreeMap<String, u64>,
    pub permits_total: u64,
    /// Each decision once, whatever its number of categories.
    pub penalties_total: u64,
    /// Sum of CF_NR_FK, 万元.
    pub fines_wan: Decimal,
    /// Sum of CF_NR_WFFF, 万元.
    pub confiscated_wan: Decimal,
    pub permits_on_time: u64,
    /// Permits whose timeliness is known (published, or past their deadline).
    pub permits_due: u64,
    pub penalties_on_time: u64,
    pub penalties_due: u64,
    /// Of the totals, decisions revoked since (status `revoked`): still decided that year.
    pub permits_revoked: u64,
    pub penalties_revoked: u64,
    /// Versions superseded by a corrected decision (status `changed`): not in the counts or amounts (the corrected
    /// decision is), but in the on-time share, as in reconcile's 及时率.
    pub permits_superseded: u64,
    pub penalties_superseded: u64,
    /// What limits the numbers (as reconcile's notes): records in no year, records whose deadline is unknown,
    /// amounts left out of a sum that could not take them.
    pub notes: Vec<String>,
}

impl AnnualReport {
    /// Share of due permits published on time; `None` when none was due.
    pub fn permits_timeliness(&self) -> Option<f64> {
        share(self.permits_on_time, self.permits_due)
    }

    pub fn penalties_timeliness(&self) -> Option<f64> {
        share(self.penalties_on_time, self.penalties_due)
    }

    pub fn timeliness(&self) -> Option<f64> {
        share(
            self.permits_on_time + self.penalties_on_time,
            self.permits_due + self.penalties_due,
        )
    }

    /// Permit categories: the standard ones in order (0 when absent), then any others by name.
    pub fn permit_rows(&self) -> Vec<(String, u64)> {
        ordered(&self.permits_by_category, &PERMIT_CATEGORIES)
    }

    /// Penalty categories: the standard ones in order (0 when absent), then any others by name.
    pub fn penalty_rows(&self) -> Vec<(String, u64)> {
        ordered(&self.penalties_by_category, &PENALTY_CATEGORIES)
    }
}

fn share(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn ordered(counts: &BTreeMap<String, u64>, standard: &[&str]) -> Vec<(String, u64)> {
    let mut rows: Vec<(String, u64)> = standard
        .iter()
        .map(|c| (c.to_string(), counts.get(*c).copied().unwrap_or(0)))
        .collect();
    rows.extend(
        counts
            .iter()
            .filter(|(c, _)| !standard.contains(&c.as_str()) && c.as_str() != UNMAPPED)
            .map(|(c, n)| (c.clone(), *n)),
    );
    if let Some(n) = counts.get(UNMAPPED) {
        rows.push((UNMAPPED.to_string(), *n));
    }
    rows
}

/// Whether a decision counts as published on time; `None` when it is not due (as reconcile's 及时率 counts).
fn on_time(judged: Option<MonthOutcome>) -> Option<bool> {
    match judged? {
        MonthOutcome::OnTime => Some(true),
        MonthOutcome::Late | MonthOutcome::Overdue => Some(false),
        MonthOutcome::NotYetDue => None,
    }
}

/// Counts decisions of one year as they are read.
#[derive(Debug, Clone)]
pub struct AnnualAccumulator {
    report: AnnualReport,
    /// Penalties whose fine / confiscation the sum could not take (see [`add_amount`]).
    fines_left_out: u64,
    confiscated_left_out: u64,
    /// Penalties whose fine / confiscation is not a valid amount (a finding on it: negative, not a plain number,
    /// finer than 0.01 yuan): not in the sums, and said so (see [`AnnualAccumulator::amount_unreadable`]).
    fines_unreadable: u64,
    confiscated_unreadable: u64,
}

/// Adds an amount to a sum; one the sum cannot take (a total beyond 79228162514264337593543950335, the largest
/// `Decimal`) is left out of it and counted, for a note: a report must never panic on what the source holds.
fn add_amount(sum: &mut Decimal, amount: Option<Decimal>, left_out: &mut u64) {
    if let Some(a) = amount {
        match sum.checked_add(a) {
            Some(s) => *sum = s,
            None => *left_out += 1,
        }
    }
}

/// The note for amounts a sum could not take: which sum, how many penalties, what the figure shown is.
fn left_out_note(n: u64, field: &str, total: &str, zh: &str) -> String {
    format!(
        "{n} penalty record(s) are not in {total}: adding their {field} would pass the largest amount dualpub can \
         add (79228162514264337593543950335), so the figure shown is the sum of the others; check those amounts in \
         the enforcement system ({zh}合计超出可计算范围，{n} 条处罚决定未计入)"
    )
}

impl AnnualAccumulator {
    pub fn new(year: i32) -> AnnualAccumulator {
        AnnualAccumulator {
            report: AnnualReport {
                year,
                permits_by_category: BTreeMap::new(),
                penalties_by_category: BTreeMap::new(),
                permits_total: 0,
                penalties_total: 0,
                fines_wan: Decimal::ZERO,
                confiscated_wan: Decimal::ZERO,
                permits_on_time: 0,
                permits_due: 0,
                penalties_on_time: 0,
                penalties_due: 0,
                permits_revoked: 0,
                penalties_revoked: 0,
                permits_superseded: 0,
                penalties_superseded: 0,
                notes: Vec::new(),
            },
            fines_left_out: 0,
            fines_unreadable: 0,
            confiscated_unreadable: 0,
            confiscated_left_out: 0,
        }
    }

    /// Counts a permit decision. `category`: its 许可类别, [`UNMAPPED`] when none. `judged`: how reconcile's
    /// 及时率 judged it (`None` or `NotYetDue`: not due). A superseded version (`changed`) counts only there.
    pub fn add_permit(
        &mut self,
        category: Option<&str>,
        status: Option<SourceStatus>,
        decided: NaiveDate,
        judged: Option<MonthOutcome>,
    ) {
        if decided.year() != self.report.year {
            return;
        }
        let r = &mut self.report;
        if let Some(ok) = on_time(judged) {
            r.permits_due += 1;
            r.permits_on_time += u64::from(ok);
        }
        if status == Some(SourceStatus::Changed) {
            r.permits_superseded += 1;
            return;
        }
        let category = category.map(str::trim).filter(|c| !c.is_empty());
        *r.permits_by_category
            .entry(category.unwrap_or(UNMAPPED).to_string())
            .or_default() += 1;
        r.permits_total += 1;
        r.permits_revoked += u64::from(status == Some(SourceStatus::Revoked));
    }

    /// Counts a penalty decision: once in the total, once in each of its (distinct) categories ([`UNMAPPED`]
    /// when it has none), its amounts in the sums. As [`AnnualAccumulator::add_permit`] for `status` and `judged`.
    pub fn add_penalty(
        &mut self,
        categories: &[&str],
        status: Option<SourceStatus>,
        fine_wan: Option<Decimal>,
        confiscated_wan: Option<Decimal>,
        decided: NaiveDate,
        judged: Option<MonthOutcome>,
    ) {
        if decided.year() != self.report.year {
            return;
        }
        let r = &mut self.report;
        if let Some(ok) = on_time(judged) {
            r.penalties_due += 1;
            r.penalties_on_time += u64::from(ok);
        }
        if status == Some(SourceStatus::Changed) {
            r.penalties_superseded += 1;
            return;
        }
        let mut seen: Vec<&str> = Vec::with_capacity(categories.len());
        for c in categories
            .iter()
            .map(|c| c.trim())
            .filter(|c| !c.is_empty())
        {
            if !seen.contains(&c) {
                seen.push(c);
                *r.penalties_by_category.entry(c.to_string()).or_default() += 1;
            }
        }
        if seen.is_empty() {
            *r.penalties_by_category
                .entry(UNMAPPED.to_string())
                .or_default() += 1;
        }
        r.penalties_total += 1;
        r.penalties_revoked += u64::from(status == Some(SourceStatus::Revoked));
        add_amount(&mut r.fines_wan, fine_wan, &mut self.fines_left_out);
        add_amount(
            &mut r.confiscated_wan,
            confiscated_wan,
            &mut self.confiscated_left_out,
        );
    }

    /// Counts a penalty of the year counted by [`AnnualAccumulator::add_penalty`] whose fine (`fine`) or
    /// confiscation (`confiscated`) the mapping could not read as an amount: it is in the counts but not in the sum,
    /// which a note says (until 2026-11-30 the sum was silently short).
    pub fn amount_unreadable(
        &mut self,
        status: Option<SourceStatus>,
        decided: NaiveDate,
        fine: bool,
        confiscated: bool,
    ) {
        if decided.year() != self.report.year || status == Some(SourceStatus::Changed) {
            return;
        }
        self.fines_unreadable += u64::from(fine);
        self.confiscated_unreadable += u64::from(confiscated);
    }

    /// The report, with a note for each sum that had to leave amounts out.
    pub fn finish(mut self) -> AnnualReport {
        for (n, field, total, zh) in [
            (
                self.fines_unreadable,
                "fine (CF_NR_FK)",
                "fines_wan",
                "罚款金额",
            ),
            (
                self.confiscated_unreadable,
                "confiscation (CF_NR_WFFF)",
                "confiscated_wan",
                "没收金额",
            ),
        ] {
            if n > 0 {
                self.report.notes.push(format!(
                    "{n} penalty record(s) are not in {total}: their {field} is not a valid amount (negative, not a \
                     plain number of yuan, or finer than 0.01 yuan; `dualpub quarantine list` names them), so the \
                     figure shown is the sum of the others; fix them in the enforcement system ({zh}有误，{n} 条处罚\
                     决定未计入合计)"
                ));
            }
        }
        if self.fines_left_out > 0 {
            self.report.notes.push(left_out_note(
                self.fines_left_out,
                "fines (CF_NR_FK)",
                "fines_wan",
                "罚款金额",
            ));
        }
        if self.confiscated_left_out > 0 {
            self.report.notes.push(left_out_note(
                self.confiscated_left_out,
                "confiscations (CF_NR_WFFF)",
                "confiscated_wan",
                "没收金额",
            ));
        }
        self.report
    }
}

/// An amount in 万元 with its exact decimal and no trailing zeros ("12.5", "0.000001", "0").
pub fn wan_str(d: Decimal) -> String {
    d.normalize().to_string()
}

fn on_time_cell(on_time: u64, due: u64, rate: Option<f64>) -> String {
    if due == 0 {
        percent(None)
    } else {
        format!("{} ({on_time}/{due})", percent(rate))
    }
}

/// Writes the annual numbers for a terminal; ANSI colour only when `color` is true.
pub fn write_annual_table(r: &AnnualReport, out: &mut dyn Write, color: bool) -> io::Result<()> {
    let p = Paint { on: color };
    writeln!(
        out,
        "{}",
        p.bold(&format!(
            "{} 年度 行政许可 / 行政处罚 决定数量（政府信息公开工作年度报告）",
            r.year
        ))
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{}",
        p.bold(&format!("行政许可 permits: {}", r.permits_total))
    )?;
    let rows: Vec<Vec<String>> = r
        .permit_rows()
        .into_iter()
        .map(|(c, n)| vec![c, n.to_string()])
        .collect();
    for line in align_rows(&rows, &[1], "  ") {
        writeln!(out, "{line}")?;
    }
    write_status_lines(out, r.permits_revoked, r.permits_superseded)?;
    writeln!(
        out,
        "  按时公示率 on time: {}",
        on_time_cell(r.permits_on_time, r.permits_due, r.permits_timeliness())
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{}",
        p.bold(&format!("行政处罚 penalties: {}", r.penalties_total))
    )?;
    let rows: Vec<Vec<String>> = r
        .penalty_rows()
        .into_iter()
        .map(|(c, n)| vec![c, n.to_string()])
        .collect();
    for line in align_rows(&rows, &[1], "  ") {
        writeln!(out, "{line}")?;
    }
    write_status_lines(out, r.penalties_revoked, r.penalties_superseded)?;
    writeln!(out, "  罚款金额 fines: {} 万元", wan_str(r.fines_wan))?;
    writeln!(
        out,
        "  没收金额 confiscated: {} 万元",
        wan_str(r.confiscated_wan)
    )?;
    writeln!(
        out,
        "  按时公示率 on time: {}",
        on_time_cell(
            r.penalties_on_time,
            r.penalties_due,
            r.penalties_timeliness()
        )
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "合计按时公示率 overall on time: {}",
        on_time_cell(
            r.permits_on_time + r.penalties_on_time,
            r.permits_due + r.penalties_due,
            r.timeliness()
        )
    )?;
    if multi_category(r) {
        writeln!(out, "{}", p.dim(MULTI_CATEGORY_NOTE))?;
    }
    if !r.notes.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", p.bold("注意 notes"))?;
        for n in &r.notes {
            writeln!(out, "  - {n}")?;
        }
    }
    Ok(())
}

const MULTI_CATEGORY_NOTE: &str =
    "注：一个处罚决定有多个处罚类别时，在每个类别中各计一次，在合计中只计一次。";

/// Whether the penalty category rows add up to more than the total (a decision with several categories).
fn multi_category(r: &AnnualReport) -> bool {
    r.penalties_total > 0 && r.penalties_by_category.values().sum::<u64>() > r.penalties_total
}

const REVOKED_LABEL: &str = "其中 已撤销 revoked";
const SUPERSEDED_LABEL: &str = "不计 已被更正 superseded";

fn write_status_lines(out: &mut dyn Write, revoked: u64, superseded: u64) -> io::Result<()> {
    writeln!(out, "  {REVOKED_LABEL}: {revoked}")?;
    if superseded > 0 {
        writeln!(
            out,
            "  {SUPERSEDED_LABEL}: {superseded}（被更正后的决定取代，不计入数量和金额 / replaced by the corrected decision, not in the counts or amounts）"
        )?;
    }
    Ok(())
}

/// Writes the annual numbers as JSON (version 1):
///
/// ```json
/// {"version": 1, "year": 2024,
///  "permits":   {"total": 12, "by_category": {"普通": 10, "特许": 0, …, "其他": 0, "未分类 unmapped": 1},
///                "revoked": 1, "superseded": 0,
///                "due": 12, "on_time": 11, "timeliness": 0.9167},
///  "penalties": {"total": 5, "by_category": {"警告": 1, "通报批评": 0, "罚款": 4, …},
///                "revoked": 0, "superseded": 1,
///                "fines_wan": "12.35", "confiscated_wan": "0.2",
///                "due": 5, "on_time": 5, "timeliness": 1.0},
///  "timeliness": 0.9412,
///  "notes": []}
/// ```
///
/// `by_category` lists the standard categories in the standard's order (0 when none), then any others by name,
/// then [`UNMAPPED`] if any: the object's keys are written in that order. A penalty with several categories counts
/// in each. `revoked` is part of `total`; `superseded` is not (nor in the amounts). Amounts are 万元 as exact
/// decimal strings. Shares are between 0 and 1, rounded to 4 places, `null` when nothing was due. `notes` are
/// plain sentences on what limits the numbers.
pub fn write_annual_json(r: &AnnualReport, out: &mut dyn Write) -> io::Result<()> {
    let doc = AnnualJson {
        version: 1,
        year: r.year,
        permits: KindJson {
            total: r.permits_total,
            by_category: InOrder(r.permit_rows()),
            revoked: r.permits_revoked,
            superseded: r.permits_superseded,
            fines_wan: None,
            confiscated_wan: None,
            due: r.permits_due,
            on_time: r.permits_on_time,
            timeliness: round4(r.permits_timeliness()),
        },
        penalties: KindJson {
            total: r.penalties_total,
            by_category: InOrder(r.penalty_rows()),
            revoked: r.penalties_revoked,
            superseded: r.penalties_superseded,
            fines_wan: Some(wan_str(r.fines_wan)),
            confiscated_wan: Some(wan_str(r.confiscated_wan)),
            due: r.penalties_due,
            on_time: r.penalties_on_time,
            timeliness: round4(r.penalties_timeliness()),
        },
        timeliness: round4(r.timeliness()),
        notes: &r.notes,
    };
    // Serialized straight from the structs, not through `serde_json::Value` (whose objects sort their keys).
    serde_json::to_writer_pretty(&mut *out, &doc).map_err(io::Error::other)?;
    writeln!(out)
}

#[derive(Serialize)]
struct AnnualJson<'a> {
    version: u32,
    year: i32,
    permits: KindJson,
    penalties: KindJson,
    timeliness: Option<f64>,
    notes: &'a [String],
}

#[derive(Serialize)]
struct KindJson {
    total: u64,
    by_category: InOrder,
    revoked: u64,
    superseded: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    fines_wan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    confiscated_wan: Option<String>,
    due: u64,
    on_time: u64,
    timeliness: Option<f64>,
}

/// Category rows written as one JSON object, keys in the rows' order.
struct InOrder(Vec<(String, u64)>);

impl Serialize for InOrder {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (c, n) in &self.0 {
            m.serialize_entry(c, n)?;
        }
        m.end()
    }
}

/// Writes the annual numbers as an xlsx workbook with one sheet, 年度报告.
pub fn write_annual_xlsx(r: &AnnualReport, path: &Path) -> Result<(), WriteError> {
    build_annual(r)
        .and_then(|mut wb| {
            let mut file = ReportFile::create(path)?;
            wb.save_to_writer(&mut file)?;
            Ok(file.finish()?)
        })
        .map_err(|source| WriteError::Xlsx {
            path: path.to_path_buf(),
            source,
        })
}

fn build_annual(r: &AnnualReport) -> Result<Workbook, XlsxError> {
    let title = Format::new().set_bold().set_font_size(14);
    let bold = Format::new().set_bold();
    let header = Format::new()
        .set_bold()
        .set_background_color(rust_xlsxwriter::Color::RGB(0xDDEBF7))
        .set_border(rust_xlsxwriter::FormatBorder::Thin);
    let pct = Format::new().set_num_format("0.00%");
    let wan = Format::new().set_num_format("#,##0.00####");

    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("年度报告")?;
    ws.write_string_with_format(
        0,
        0,
        format!("{} 年度 行政许可 / 行政处罚 决定数量", r.year),
        &title,
    )?;
    let mut row = 2u32;
    let sections = [
        (
            "行政许可",
            "许可类别",
            r.permit_rows(),
            r.permits_total,
            r.permits_revoked,
            r.permits_superseded,
        ),
        (
            "行政处罚",
            "处罚类别",
            r.penalty_rows(),
            r.penalties_total,
            r.penalties_revoked,
            r.penalties_superseded,
        ),
    ];
    let on_time = [
        (r.permits_on_time, r.permits_due, r.permits_timeliness()),
        (
            r.penalties_on_time,
            r.penalties_due,
            r.penalties_timeliness(),
        ),
    ];
    for ((kind, col_name, rows, total, revoked, superseded), (ok, due, rate)) in
        sections.into_iter().zip(on_time)
    {
        ws.write_string_with_format(row, 0, kind, &bold)?;
        row += 1;
        ws.write_string_with_format(row, 0, col_name, &header)?;
        ws.write_string_with_format(row, 1, "本年处理决定数量", &header)?;
        row += 1;
        for (c, n) in rows {
            ws.write_string(row, 0, c)?;
            ws.write_number(row, 1, n as f64)?;
            row += 1;
        }
        ws.write_string_with_format(row, 0, "合计", &bold)?;
        ws.write_number_with_format(row, 1, total as f64, &bold)?;
        if kind == "行政处罚" && multi_category(r) {
            ws.write_string(row, 2, MULTI_CATEGORY_NOTE)?;
        }
        row += 1;
        ws.write_string(row, 0, REVOKED_LABEL)?;
        ws.write_number(row, 1, revoked as f64)?;
        row += 1;
        if superseded > 0 {
            ws.write_string(row, 0, SUPERSEDED_LABEL)?;
            ws.write_number(row, 1, superseded as f64)?;
            ws.write_string(row, 2, "被更正后的决定取代，不计入数量和金额")?;
            row += 1;
        }
        if kind == "行政处罚" {
            for (label, amount) in [
                ("罚款金额（万元）", r.fines_wan),
                ("没收金额（万元）", r.confiscated_wan),
            ] {
                ws.write_string(row, 0, label)?;
                // Excel holds numbers as doubles; 15 significant digits keep every 万元 amount with 6 places
                // exact on display, and the exact text is beside it.
                let value: f64 = wan_str(amount).parse().unwrap_or(0.0);
                ws.write_number_with_format(row, 1, value, &wan)?;
                ws.write_string(row, 2, wan_str(amount))?;
                row += 1;
            }
        }
        ws.write_string(row, 0, "按时公示率")?;
        match rate {
            Some(x) => ws.write_number_with_format(row, 1, x, &pct)?,
            None => ws.write_string(row, 1, "—")?,
        };
        ws.write_string(row, 2, format!("{ok}/{due}"))?;
        row += 2;
    }
    ws.write_string_with_format(row, 0, "合计按时公示率", &bold)?;
    match r.timeliness() {
        Some(x) => ws.write_number_with_format(row, 1, x, &pct)?,
        None => ws.write_string(row, 1, "—")?,
    };
    if !r.notes.is_empty() {
        row += 2;
        ws.write_string_with_format(row, 0, "注意", &bold)?;
        for n in &r.notes {
            row += 1;
            ws.write_string(row, 0, n)?;
        }
    }
    ws.set_column_width(0, 24)?;
    ws.set_column_width(1, 18)?;
    ws.set_column_width(2, 14)?;
    Ok(wb)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
    }

    #[test]
    fn counts_multi_category_penalties_once_per_category() {
        let mut acc = AnnualAccumulator::new(2024);
        let fine = Decimal::from_str("0.2").expect("decimal");
        acc.add_penalty(
            &["警告", "罚款", "罚款"],
            None,
            Some(fine),
            None,
            d("2024-05-01"),
            Some(MonthOutcome::OnTime),
        );
        acc.add_penalty(
            &["罚款"],
            None,
            Some(fine),
            None,
            d("2023-12-31"),
            Some(MonthOutcome::OnTime),
        );
        let r = acc.finish();
        assert_eq!(r.penalties_total, 1);
        assert_eq!(r.penalties_by_category.get("罚款"), Some(&1));
        assert_eq!(r.penalties_by_category.get("警告"), Some(&1));
        assert_eq!(wan_str(r.fines_wan), "0.2");
        assert_eq!(r.penalty_rows()[0], ("警告".to_string(), 1));
        assert_eq!(r.penalty_rows().len(), PENALTY_CATEGORIES.len());
    }

    /// Reported: `report annual` panicked (exit 101, "Addition overflowed") on fines whose total passes the
    /// largest `Decimal`.
    #[test]
    fn sums_beyond_the_largest_decimal_leave_amounts_out_with_a_note() {
        let mut acc = AnnualAccumulator::new(2024);
        for fine in [Decimal::MAX; 4] {
            acc.add_penalty(
                &["罚款"],
                None,
                Some(fine),
                Some(Decimal::MAX),
                d("2024-05-01"),
                None,
            );
        }
        let r = acc.finish();
        assert_eq!(r.penalties_total, 4);
        assert_eq!(r.fines_wan, Decimal::MAX, "the first, then nothing fits");
        assert_eq!(r.confiscated_wan, Decimal::MAX);
        assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
        assert!(
            r.notes[0].starts_with("3 penalty record(s) are not in fines_wan")
                && r.notes[0].contains("CF_NR_FK"),
            "{:?}",
            r.notes
        );
        assert!(
            r.notes[1].starts_with("3 penalty record(s) are not in confiscated_wan"),
            "{:?}",
            r.notes
        );
        // the table and JSON writers take such a report as any other
        let mut out = Vec::new();
        write_annual_json(&r, &mut out).expect("json");
        write_annual_table(&r, &mut out, false).expect("table");
    }
}
