//! The xlsx workbook of a gap report: a 汇总 sheet (window, counts, rates as percentages, decisions per month
//! with a stacked column chart) and one sheet per category, named with its Chinese name, present even when empty
//! so operators always find the same layout. Dates are real Excel dates.

use super::{csv::gap_cells, display_width, ReportFile, WriteError, GAP_HEADERS};
use crate::reconcile::report::{Category, Rates, Report};
use rust_xlsxwriter::{
    Chart, ChartType, Color, Format, FormatAlign, FormatBorder, Workbook, Worksheet, XlsxError,
};
use std::path::Path;

/// The summary sheet's name.
pub const SUMMARY_SHEET: &str = "汇总";

/// Columns of the gap sheets holding dates (indexes into `GAP_HEADERS`).
const DATE_COLS: [usize; 3] = [6, 7, 8];

pub(crate) struct Formats {
    pub title: Format,
    pub header: Format,
    pub date: Format,
    pub percent: Format,
    pub label: Format,
    pub wrap: Format,
}

impl Formats {
    pub fn new() -> Formats {
        Formats {
            title: Format::new().set_bold().set_font_size(14),
            header: Format::new()
                .set_bold()
                .set_background_color(Color::RGB(0xDDEBF7))
                .set_border(FormatBorder::Thin)
                .set_align(FormatAlign::Center),
            date: Format::new().set_num_format("yyyy-mm-dd"),
            percent: Format::new().set_num_format("0.00%"),
            label: Format::new().set_bold(),
            wrap: Format::new().set_text_wrap(),
        }
    }
}

/// Writes the workbook to `path`, replacing any file there.
pub fn write_xlsx(r: &Report, path: &Path) -> Result<(), WriteError> {
    build(r)
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

fn build(r: &Report) -> Result<Workbook, XlsxError> {
    let f = Formats::new();
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    summary_sheet(r, ws, &f)?;
    for cat in Category::ALL {
        let ws = wb.add_worksheet();
        gap_sheet(r, cat, ws, &f)?;
    }
    Ok(wb)
}

fn summary_sheet(r: &Report, ws: &mut Worksheet, f: &Formats) -> Result<(), XlsxError> {
    ws.set_name(SUMMARY_SHEET)?;
    ws.write_string_with_format(0, 0, "双公示数据核对报告", &f.title)?;

    let mut row = 2;
    ws.write_string_with_format(row, 0, "统计日期", &f.label)?;
    ws.write_datetime_with_format(row, 1, r.today, &f.date)?;
    row += 1;
    for (label, d) in [("决定日期起", r.from), ("决定日期止", r.to)] {
        ws.write_string_with_format(row, 0, label, &f.label)?;
        match d {
            Some(d) => ws.write_datetime_with_format(row, 1, d, &f.date)?,
            None => ws.write_string(row, 1, "不限")?,
        };
        row += 1;
    }
    ws.write_string_with_format(row, 0, "事项", &f.label)?;
    let kinds = r
        .kinds
        .iter()
        .map(|k| k.zh())
        .collect::<Vec<_>>()
        .join("、");
    ws.write_string(row, 1, kinds)?;
    row += 1;
    ws.write_string_with_format(row, 0, "源系统记录数", &f.label)?;
    ws.write_number(row, 1, r.source_records as f64)?;
    row += 1;
    ws.write_string_with_format(row, 0, r.platform_records_label(), &f.label)?;
    ws.write_number(row, 1, r.platform_records as f64)?;
    row += 2;

    // Counts per category.
    for (c, h) in ["类别", "category", "数量", "处理建议"].iter().enumerate() {
        ws.write_string_with_format(row, c as u16, *h, &f.header)?;
    }
    row += 1;
    for (cat, n) in r.counts() {
        ws.write_string(row, 0, cat.zh())?;
        ws.write_string(row, 1, cat.as_str())?;
        ws.write_number(row, 2, n as f64)?;
        ws.write_string(row, 3, cat.action_zh())?;
        row += 1;
    }
    ws.write_string_with_format(row, 0, "合计", &f.label)?;
    ws.write_number_with_format(row, 2, r.gaps.len() as f64, &f.label)?;
    row += 2;

    // Rates.
    let heads = [
        "范围",
        "及时率",
        "按时公示",
        "应公示",
        "入库率",
        "入库",
        "报送",
        "完整率",
        "已填数据项",
        "应填数据项",
    ];
    for (c, h) in heads.iter().enumerate() {
        ws.write_string_with_format(row, c as u16, *h, &f.header)?;
    }
    row += 1;
    let mut scopes: Vec<(&str, Rates)> = vec![("全部", r.overall())];
    scopes.extend(r.rates.iter().map(|(k, v)| (k.zh(), *v)));
    for (scope, rt) in scopes {
        ws.write_string(row, 0, scope)?;
        let triples = [
            (rt.timeliness(), rt.on_time, rt.due),
            (rt.acceptance(), rt.accepted, rt.submitted),
            (rt.completeness(), rt.filled_items, rt.expected_items),
        ];
        for (i, (rate, num, den)) in triples.into_iter().enumerate() {
            let c = 1 + 3 * i as u16;
            match rate {
                Some(x) => ws.write_number_with_format(row, c, x, &f.percent)?,
                None => ws.write_string(row, c, "—")?,
            };
            ws.write_number(row, c + 1, num as f64)?;
            ws.write_number(row, c + 2, den as f64)?;
        }
        row += 1;
    }
    row += 1;

    // Decisions per month, and a stacked column chart of them.
    let heads = [
        "月份",
        "按时公示",
        "超期公示",
        "逾期未公示",
        "未到期",
        "合计",
    ];
    let head_row = row;
    for (c, h) in heads.iter().enumerate() {
        ws.write_string_with_format(row, c as u16, *h, &f.header)?;
    }
    row += 1;
    for m in &r.months {
        ws.write_string(row, 0, &m.month)?;
        for (c, v) in [m.on_time, m.late, m.overdue, m.not_yet_due, m.total()]
            .into_iter()
            .enumerate()
        {
            ws.write_number(row, 1 + c as u16, v as f64)?;
        }
        row += 1;
    }
    if !r.months.is_empty() {
        let (first, last) = (head_row + 1, row - 1);
        let mut chart = Chart::new(ChartType::ColumnStacked);
        let colors = [0x70AD47, 0xFFC000, 0xC00000, 0xA5A5A5];
        for (i, color) in colors.into_iter().enumerate() {
            let col = 1 + i as u16;
            chart
                .add_series()
                .set_name((SUMMARY_SHEET, head_row, col))
                .set_categories((SUMMARY_SHEET, first, 0, last, 0))
                .set_values((SUMMARY_SHEET, first, col, last, col))
                .set_format(rust_xlsxwriter::ChartFormat::new().set_solid_fill(
                    rust_xlsxwriter::ChartSolidFill::new().set_color(Color::RGB(color)),
                ));
        }
        chart.title().set_name("每月决定公示情况");
        chart.x_axis().set_name("决定月份");
        chart.y_axis().set_name("决定数");
        chart.set_width(640).set_height(360);
        ws.insert_chart(2, 11, &chart)?;
    }

    ws.set_column_width(0, 14)?;
    ws.set_column_width(1, 12)?;
    for c in 2..10 {
        ws.set_column_width(c, 11)?;
    }

    if !r.notes.is_empty() {
        row += 1;
        ws.write_string_with_format(row, 0, "注意", &f.label)?;
        row += 1;
        for n in &r.notes {
            ws.write_string(row, 0, fit_cell(n))?;
            row += 1;
        }
    }
    if let Some(rep) = &r.repair {
        row += 1;
        ws.write_string_with_format(row, 0, "修复", &f.label)?;
        row += 1;
        for (label, n) in [
            ("重新推送", rep.repushed),
            ("撤下", rep.withdrawn),
            ("撤下多余记录", rep.orphans_withdrawn),
            ("失败", rep.failed),
        ] {
            ws.write_string(row, 0, label)?;
            ws.write_number(row, 1, n as f64)?;
            row += 1;
        }
        for left in &rep.left {
            ws.write_string(row, 0, "待处理")?;
            ws.write_string(row, 1, fit_cell(left))?;
            row += 1;
        }
    }
    Ok(())
}

/// Characters a spreadsheet cell holds (Excel's limit; rust_xlsxwriter refuses a longer string).
const CELL_CHARS: usize = 32_767;
const CUT_MARK: &str = "…（已截断 / cut）";

/// `text` as a cell can hold it: a longer text (a platform's message stored before such messages were cut, say)
/// is cut, and says so, instead of failing the whole report.
pub(crate) fn fit_cell(text: &str) -> std::borrow::Cow<'_, str> {
    // Most texts are far below the limit in bytes already; counting characters is for the rest.
    if text.len() <= CELL_CHARS || text.chars().count() <= CELL_CHARS {
        return std::borrow::Cow::Borrowed(text);
    }
    let keep = CELL_CHARS - CUT_MARK.chars().count();
    let mut cut: String = text.chars().take(keep).collect();
    cut.push_str(CUT_MARK);
    std::borrow::Cow::Owned(cut)
}

fn gap_sheet(r: &Report, cat: Category, ws: &mut Worksheet, f: &Formats) -> Result<(), XlsxError> {
    ws.set_name(cat.zh())?;
    let mut widths: Vec<usize> = GAP_HEADERS.iter().map(|h| display_width(h)).collect();
    for (c, h) in GAP_HEADERS.iter().enumerate() {
        ws.write_string_with_format(0, c as u16, *h, &f.header)?;
    }
    let mut row = 0u32;
    for g in r.gaps_in(cat) {
        row += 1;
        // Strings in xlsx are never formulas, so the text goes in as it is.
        let cells = gap_cells(&g, false);
        let dates = [g.decided_on, g.deadline, g.first_published];
        for (c, text) in cells.iter().enumerate() {
            if let Some(i) = DATE_COLS.iter().position(|&d| d == c) {
                if let Some(d) = dates[i] {
                    ws.write_datetime_with_format(row, c as u16, d, &f.date)?;
                }
                widths[c] = widths[c].max(10);
                continue;
            }
            let text = fit_cell(text);
            ws.write_string(row, c as u16, &*text)?;
            widths[c] = widths[c].max(display_width(&text));
        }
    }
    for (c, w) in widths.iter().enumerate() {
        let cap = if c == 9 || c == 10 { 60 } else { 48 };
        ws.set_column_width(c as u16, ((*w).min(cap) + 2) as f64)?;
    }
    ws.set_column_format(9, &f.wrap)?;
    ws.set_freeze_panes(1, 0)?;
    ws.autofilter(0, 0, row, (GAP_HEADERS.len() - 1) as u16)?;
    Ok(())
}
