//! The terminal rendering of a gap report: the summary first (window, counts, rates, a one-line verdict), then
//! the gaps grouped by category with what to do about them, in columns aligned for CJK text.

use super::{align_rows, one_line, percent, truncate, Paint};
use crate::model::Kind;
use crate::reconcile::gaps::{DISPLAY_ENDED_LEAD, OLDER_COPY_LEAD};
use crate::reconcile::report::{
    Category, GapRow, Rates, Report, DISPLAY_ENDED_ACTION_EN, DISPLAY_ENDED_ACTION_ZH,
    OLDER_COPY_ACTION_EN, OLDER_COPY_ACTION_ZH,
};
use std::io::{self, Write};

/// Rows shown per category; the rest are counted, and the CSV / xlsx output has them all.
pub const TABLE_ROWS_PER_CATEGORY: usize = 50;

/// Column caps (display columns) of the gap rows: key, doc no, party, ID; the detail is the last column.
const KEY_MAX: usize = 72;
const DOC_NO_MAX: usize = 32;
const PARTY_MAX: usize = 24;
const ID_MAX: usize = 20;
const DETAIL_MAX: usize = 60;

/// Writes the report for a terminal. ANSI colour only when `color` is true (the caller checks isatty).
pub fn write_table(r: &Report, out: &mut dyn Write, color: bool) -> io::Result<()> {
    let p = Paint { on: color };
    write_summary(r, out, p)?;
    if !r.notes.is_empty() {
        writeln!(out)?;
        writeln!(out, "{}", p.bold("注意 notes"))?;
        for n in &r.notes {
            writeln!(out, "  - {}", one_line(n))?;
        }
    }
    let counts = r.counts();
    for cat in Category::ALL {
        let total = counts.get(&cat).copied().unwrap_or(0) as usize;
        if total > 0 {
            let rows: Vec<GapRow> = r.gaps_in(cat).take(TABLE_ROWS_PER_CATEGORY).collect();
            writeln!(out)?;
            write_category(cat, &rows, total, out, p)?;
        }
    }
    if let Some(rep) = &r.repair {
        writeln!(out)?;
        writeln!(out, "{}", p.bold("修复 repair"))?;
        writeln!(
            out,
            "  re-pushed {}, withdrawn {}, orphans withdrawn {}, failed {}",
            rep.repushed, rep.withdrawn, rep.orphans_withdrawn, rep.failed
        )?;
        if rep.left.is_empty() {
            writeln!(out, "  nothing left for a person")?;
        }
        for line in &rep.left {
            writeln!(out, "  - {}", one_line(line))?;
        }
    }
    Ok(())
}

fn window(r: &Report) -> String {
    let side = |d: Option<chrono::NaiveDate>| d.map(|d| d.to_string()).unwrap_or("…".into());
    if r.from.is_none() && r.to.is_none() {
        "all decisions".to_string()
    } else {
        format!("{} – {}", side(r.from), side(r.to))
    }
}

fn kinds(ks: &[Kind]) -> String {
    ks.iter()
        .map(|k| format!("{} {}", k.zh(), k.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_summary(r: &Report, out: &mut dyn Write, p: Paint) -> io::Result<()> {
    writeln!(out, "{}", p.bold("双公示核对报告 — dualpub reconcile"))?;
    let facts = vec![
        vec!["决定日期 window".to_string(), window(r)],
        vec!["统计日期 today".to_string(), r.today.to_string()],
        vec!["事项 kinds".to_string(), kinds(&r.kinds)],
        vec![
            "记录 records".to_string(),
            if r.from.is_some() || r.to.is_some() {
                format!(
                    "source {} in the window, platform {} of every decision date",
                    r.source_records, r.platform_records
                )
            } else {
                format!(
                    "source {}, platform {}",
                    r.source_records, r.platform_records
                )
            },
        ],
    ];
    for line in align_rows(&facts, &[], "  ") {
        writeln!(out, "{line}")?;
    }

    writeln!(out)?;
    writeln!(out, "{}", p.bold("差异 gaps"))?;
    let counts = r.counts();
    let mut rows = Vec::new();
    for cat in Category::ALL {
        let n = counts.get(&cat).copied().unwrap_or(0);
        rows.push(vec![
            cat.zh().to_string(),
            cat.as_str().to_string(),
            n.to_string(),
        ]);
    }
    for (line, cat) in align_rows(&rows, &[2], "  ").into_iter().zip(Category::ALL) {
        if counts.get(&cat).copied().unwrap_or(0) > 0 {
            writeln!(out, "{}", p.yellow(&line))?;
        } else {
            writeln!(out, "{line}")?;
        }
    }

    writeln!(out)?;
    writeln!(out, "{}", p.bold("评分 rates"))?;
    let mut rows = vec![vec![
        String::new(),
        "及时率 timeliness".to_string(),
        "入库率 acceptance".to_string(),
        "完整率 completeness".to_string(),
    ]];
    rows.push(rate_row("全部 overall".to_string(), &r.overall()));
    for (kind, rates) in &r.rates {
        rows.push(rate_row(format!("{} {}", kind.zh(), kind.as_str()), rates));
    }
    for line in align_rows(&rows, &[1, 2, 3], "  ") {
        writeln!(out, "{line}")?;
    }

    writeln!(out)?;
    let n = r.gaps.len();
    let verdict = match n {
        0 => p.green("no gaps"),
        _ => {
            let recs = r.records_with_gaps();
            let gaps = if n == 1 {
                "1 gap"
            } else {
                &format!("{n} gaps")
            };
            let on = if recs == n {
                String::new()
            } else if recs == 1 {
                " on 1 record".to_string()
            } else {
                format!(" on {recs} records")
            };
            let verb = if n == 1 { "needs" } else { "need" };
            p.red(&format!("{gaps}{on} {verb} attention"))
        }
    };
    writeln!(out, "结论 verdict: {verdict}")
}

fn rate_row(label: String, r: &Rates) -> Vec<String> {
    let cell = |rate: Option<f64>, num: u64, den: u64| {
        if den == 0 {
            percent(None)
        } else {
            format!("{} ({num}/{den})", percent(rate))
        }
    };
    vec![
        label,
        cell(r.timeliness(), r.on_time, r.due),
        cell(r.acceptance(), r.accepted, r.submitted),
        cell(r.completeness(), r.filled_items, r.expected_items),
    ]
}

fn write_category(
    cat: Category,
    rows: &[GapRow],
    total: usize,
    out: &mut dyn Write,
    p: Paint,
) -> io::Result<()> {
    writeln!(
        out,
        "{} {}",
        p.bold(&format!("== {} {}: {}", cat.zh(), cat.as_str(), total)),
        p.dim("==")
    )?;
    writeln!(out, "   处理 to do: {}", cat.action_en())?;
    writeln!(out, "   {}", cat.action_zh())?;
    // Rows `--repair` leaves alone (an older copy in the feed) have an action of their own.
    if rows.iter().any(GapRow::is_older_copy) {
        writeln!(
            out,
            "   说明以「{OLDER_COPY_LEAD}」开头的行 rows whose detail starts so: {OLDER_COPY_ACTION_EN}"
        )?;
        writeln!(out, "   {OLDER_COPY_ACTION_ZH}")?;
    }
    // Penalties whose display period ended before they were ever published: not to be published any more.
    if rows.iter().any(GapRow::is_display_ended) {
        writeln!(
            out,
            "   说明以「{DISPLAY_ENDED_LEAD}」开头的行 rows whose detail starts so: {DISPLAY_ENDED_ACTION_EN}"
        )?;
        writeln!(out, "   {DISPLAY_ENDED_ACTION_ZH}")?;
    }
    let date = |d: Option<chrono::NaiveDate>| d.map(|d| d.to_string()).unwrap_or("—".into());
    let mut table = vec![[
        "记录键",
        "文书号",
        "相对人",
        "证件号码",
        "决定日期",
        "公示期限",
        "首次公示",
        "说明",
    ]
    .map(String::from)
    .to_vec()];
    for g in rows.iter().take(TABLE_ROWS_PER_CATEGORY) {
        table.push(vec![
            truncate(&one_line(&g.key_shown()), KEY_MAX),
            truncate(&one_line(&g.doc_no_shown()), DOC_NO_MAX),
            truncate(&one_line(&g.party_name), PARTY_MAX),
            truncate(&one_line(&g.party_id_masked), ID_MAX),
            date(g.decided_on),
            date(g.deadline),
            date(g.first_published),
            truncate(&one_line(&g.detail), DETAIL_MAX),
        ]);
    }
    for (i, line) in align_rows(&table, &[], "   ").into_iter().enumerate() {
        if i == 0 {
            writeln!(out, "{}", p.dim(&line))?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    if total > TABLE_ROWS_PER_CATEGORY {
        let more = total - TABLE_ROWS_PER_CATEGORY;
        writeln!(out, "   … and {more} more (use --format csv/xlsx for all)")?;
    }
    Ok(())
}
