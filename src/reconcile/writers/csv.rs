//! CSV output for Excel: `summary.csv`, `months.csv` (when the report has months) and one `{category}.csv` per
//! category that has rows (such files an earlier report left in the folder are removed when this one has none), each UTF-8 with a byte-order mark (so Excel reads the Chinese correctly), RFC 4180
//! quoting and CRLF line ends, with Chinese column headers.

use super::{csv_line, date_str, percent, write_report_file, GAP_HEADERS};
use crate::reconcile::report::{Category, GapRow, Rates, Report};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const BOM: &str = "\u{feff}";

/// Writes the CSV files into `dir` (created if missing) and returns their paths, `summary.csv` first.
pub fn write_csv(r: &Report, dir: &Path) -> io::Result<Vec<PathBuf>> {
    fs::create_dir_all(dir).map_err(|e| with_path(e, "create the folder", dir))?;
    let mut written = Vec::new();

    let path = dir.join("summary.csv");
    write_file(&path, &summary(r))?;
    written.push(path);

    // A file an earlier report wrote here and this one does not (a category now empty) would be read as current.
    let stale = |name: String| {
        let path = dir.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(with_path(e, "remove the old", &path))
            }
            _ => Ok(()),
        }
    };
    if r.months.is_empty() {
        stale("months.csv".into())?;
    }
    let counts = r.counts();
    for cat in Category::ALL {
        if counts.get(&cat).copied().unwrap_or(0) == 0 {
            stale(format!("{}.csv", cat.as_str()))?;
        }
    }

    if !r.months.is_empty() {
        let mut text = csv_line(&[
            "月份",
            "按时公示",
            "超期公示",
            "逾期未公示",
            "未到期",
            "合计",
        ]);
        for m in &r.months {
            text.push_str(&csv_line(&[
                m.month.clone(),
                m.on_time.to_string(),
                m.late.to_string(),
                m.overdue.to_string(),
                m.not_yet_due.to_string(),
                m.total().to_string(),
            ]));
        }
        let path = dir.join("months.csv");
        write_file(&path, &text)?;
        written.push(path);
    }

    for cat in Category::ALL {
        if counts.get(&cat).copied().unwrap_or(0) == 0 {
            continue;
        }
        // Streamed: a category can hold a million rows.
        let path = dir.join(format!("{}.csv", cat.as_str()));
        write_report_file(&path, |w| {
            w.write_all(BOM.as_bytes())?;
            w.write_all(csv_line(&GAP_HEADERS).as_bytes())?;
            for g in r.gaps_in(cat) {
                w.write_all(csv_line(&gap_cells(&g, true)).as_bytes())?;
            }
            Ok(())
        })
        .map_err(|e| with_path(e, "write", &path))?;
        written.push(path);
    }
    Ok(written)
}

/// The cells of a gap row in `GAP_HEADERS` order. With `for_csv`, text that Excel would read as a formula is
/// prefixed with `'`.
pub(crate) fn gap_cells(g: &GapRow, for_csv: bool) -> Vec<String> {
    let defuse = |s: &str| if for_csv { defuse(s) } else { s.to_string() };
    vec![
        defuse(&g.key_shown()),
        g.category.zh().to_string(),
        g.kind.zh().to_string(),
        defuse(&g.doc_no_shown()),
        defuse(&g.party_name),
        defuse(&g.party_id_masked),
        date_str(g.decided_on),
        date_str(g.deadline),
        date_str(g.first_published),
        defuse(&g.detail),
        g.action_zh().to_string(),
    ]
}

/// Source text for a CSV cell: control characters other than line breaks and tabs become spaces (as in the table;
/// Excel shows them as boxes, a terminal obeys them), and text that starts like a formula — `=`, `+`, `-`, `@`, or
/// a tab or carriage return before one, which Excel's import drops (OWASP's list) — is prefixed with `'`, or it
/// would run as one when Excel opens the CSV.
fn defuse(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| {
            if c.is_control() && !matches!(c, '\n' | '\r' | '\t') {
                ' '
            } else {
                c
            }
        })
        .collect();
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s
    }
}

fn summary(r: &Report) -> String {
    let mut text = csv_line(&["项目", "范围", "数值", "分子", "分母"]);
    let mut line = |a: &str, b: &str, c: String, d: String, e: String| {
        text.push_str(&csv_line(&[a.to_string(), b.to_string(), c, d, e]));
    };
    let none = String::new;
    line("统计日期", "", r.today.to_string(), none(), none());
    line("决定日期起", "", date_str(r.from), none(), none());
    line("决定日期止", "", date_str(r.to), none(), none());
    let kinds = r
        .kinds
        .iter()
        .map(|k| k.zh())
        .collect::<Vec<_>>()
        .join("、");
    line("事项", "", kinds, none(), none());
    line(
        "源系统记录数",
        "",
        r.source_records.to_string(),
        none(),
        none(),
    );
    line(
        r.platform_records_label(),
        "",
        r.platform_records.to_string(),
        none(),
        none(),
    );
    for (cat, n) in r.counts() {
        line(cat.zh(), cat.as_str(), n.to_string(), none(), none());
    }
    let mut scopes: Vec<(String, Rates)> = vec![("全部".to_string(), r.overall())];
    scopes.extend(r.rates.iter().map(|(k, v)| (k.zh().to_string(), *v)));
    for (scope, rt) in &scopes {
        let pct = |x: Option<f64>| x.map(|x| percent(Some(x))).unwrap_or_default();
        line(
            "及时率",
            scope,
            pct(rt.timeliness()),
            rt.on_time.to_string(),
            rt.due.to_string(),
        );
        line(
            "入库率",
            scope,
            pct(rt.acceptance()),
            rt.accepted.to_string(),
            rt.submitted.to_string(),
        );
        line(
            "完整率",
            scope,
            pct(rt.completeness()),
            rt.filled_items.to_string(),
            rt.expected_items.to_string(),
        );
    }
    for n in &r.notes {
        line("注意", "", n.clone(), none(), none());
    }
    if let Some(rep) = &r.repair {
        line(
            "修复:重新推送",
            "",
            rep.repushed.to_string(),
            none(),
            none(),
        );
        line("修复:撤下", "", rep.withdrawn.to_string(), none(), none());
        line(
            "修复:撤下多余记录",
            "",
            rep.orphans_withdrawn.to_string(),
            none(),
            none(),
        );
        line("修复:失败", "", rep.failed.to_string(), none(), none());
        for left in &rep.left {
            line("修复:待处理", "", left.clone(), none(), none());
        }
    }
    text
}

fn write_file(path: &Path, text: &str) -> io::Result<()> {
    write_report_file(path, |w| {
        w.write_all(BOM.as_bytes())?;
        w.write_all(text.as_bytes())
    })
    .map_err(|e| with_path(e, "write", path))
}

fn with_path(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("could not {doing} {}: {e}", path.display()),
    )
}
