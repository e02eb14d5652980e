//! Writers that render a [`Report`](super::report::Report) for operators: a terminal table (`table`), a stable
//! JSON object (`json`), CSV files Excel opens correctly (`csv`) and an xlsx workbook (`xlsx`); plus the small
//! text helpers they share (display width of CJK text, truncation, percentages, CSV quoting, ANSI styles).
//!
//! Writers never compute anything the report does not hold; they only choose how to show it.

mod csv;
mod json;
mod report_file;
mod table;
mod xlsx;

pub use csv::write_csv;
pub use json::write_json;
pub use report_file::{write_report_file, ReportFile, Target};
pub use table::write_table;
pub use xlsx::write_xlsx;

use chrono::NaiveDate;
use std::path::PathBuf;

/// A workbook could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("could not write the workbook {}: {source}; check that the folder exists, is writable and the file is not open in Excel", path.display())]
    Xlsx {
        path: PathBuf,
        #[source]
        source: rust_xlsxwriter::XlsxError,
    },
}

/// Column headers of a gap row, shared by the CSV files and the xlsx sheets.
pub(crate) const GAP_HEADERS: [&str; 11] = [
    "记录键",
    "类别",
    "事项",
    "文书号",
    "行政相对人名称",
    "证件号码(脱敏)",
    "决定日期",
    "公示期限",
    "首次公示时间",
    "说明",
    "处理建议",
];

/// Columns a terminal shows: East Asian wide and full-width characters take 2, combining marks and
/// zero-width characters 0, everything else 1.
pub fn display_width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    let u = c as u32;
    if c.is_control() {
        return 0;
    }
    match u {
        0x0300..=0x036F | 0x200B..=0x200F | 0x2060..=0x2064 | 0xFE00..=0xFE0F | 0xFEFF => 0,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE10..=0xFE19
        | 0xFE30..=0xFE6F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x2FFFD
        | 0x30000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// One line of cell text safe for a terminal: control characters (newlines, tabs, escape sequences from the
/// data) become spaces.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Cuts `s` to at most `max` columns, ending with "…" when something was cut.
pub fn truncate(s: &str, max: usize) -> String {
    if display_width(s) <= max {
        return s.to_string();
    }
    let mut out = String::new();
    let mut w = 0;
    for c in s.chars() {
        let cw = char_width(c);
        if w + cw + 1 > max {
            break;
        }
        out.push(c);
        w += cw;
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// `s` followed by spaces up to `width` columns.
pub(crate) fn pad(s: &str, width: usize) -> String {
    let mut out = s.to_string();
    for _ in display_width(s)..width {
        out.push(' ');
    }
    out
}

/// Spaces then `s`, right-aligned in `width` columns.
pub(crate) fn pad_left(s: &str, width: usize) -> String {
    let mut out = String::new();
    for _ in display_width(s)..width {
        out.push(' ');
    }
    out.push_str(s);
    out
}

/// "98.25%", or "—" when there is nothing to measure.
pub(crate) fn percent(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{:.2}%", r * 100.0),
        None => "—".to_string(),
    }
}

/// A ratio rounded to 4 decimal places for JSON (0.9825 = 98.25 %).
pub(crate) fn round4(r: Option<f64>) -> Option<f64> {
    r.map(|r| (r * 10_000.0).round() / 10_000.0)
}

pub(crate) fn date_str(d: Option<NaiveDate>) -> String {
    d.map(|d| d.to_string()).unwrap_or_default()
}

/// One CSV field quoted as RFC 4180 requires: in double quotes when it holds a comma, a quote, CR or LF (or
/// leading/trailing spaces), with inner quotes doubled.
pub(crate) fn csv_field(s: &str) -> String {
    let needs = s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ');
    if needs {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A CSV line (with CRLF, as RFC 4180 writes it).
pub(crate) fn csv_line<S: AsRef<str>>(fields: &[S]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

/// ANSI styles, applied only when colour is on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paint {
    pub on: bool,
}

impl Paint {
    fn wrap(self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn bold(self, s: &str) -> String {
        self.wrap("1", s)
    }
    pub fn red(self, s: &str) -> String {
        self.wrap("1;31", s)
    }
    pub fn yellow(self, s: &str) -> String {
        self.wrap("33", s)
    }
    pub fn green(self, s: &str) -> String {
        self.wrap("32", s)
    }
    pub fn dim(self, s: &str) -> String {
        self.wrap("2", s)
    }
}

/// Lays out rows of cells in aligned columns; the last column is not padded.
pub(crate) fn align_rows(rows: &[Vec<String>], right: &[usize], indent: &str) -> Vec<String> {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..ncols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| display_width(s))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = indent.to_string();
            for (c, cell) in r.iter().enumerate() {
                if c > 0 {
                    line.push_str("  ");
                }
                if right.contains(&c) {
                    line.push_str(&pad_left(cell, widths[c]));
                } else if c + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&pad(cell, widths[c]));
                }
            }
            line.trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_count_cjk_as_two() {
        assert_eq!(display_width("河南ab"), 6);
        assert_eq!(display_width("（豫）〔2024〕"), 14);
        assert_eq!(display_width("a\u{0301}"), 1);
        assert_eq!(display_width("ＡＢ"), 4);
    }

    #[test]
    fn truncate_respects_width() {
        assert_eq!(truncate("河南省应急管理厅", 7), "河南省…");
        assert_eq!(display_width(&truncate("河南省应急管理厅", 7)), 7);
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(pad("河南", 6), "河南  ");
        assert_eq!(pad_left("7", 3), "  7");
    }

    #[test]
    fn csv_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\"\nnow"), "\"say \"\"hi\"\"\nnow\"");
        assert_eq!(csv_line(&["a", "b,c"]), "a,\"b,c\"\r\n");
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(one_line("a\nb\x1b[31mc"), "a b [31mc");
    }

    #[test]
    fn percentages() {
        assert_eq!(percent(Some(0.98254)), "98.25%");
        assert_eq!(percent(None), "—");
        assert_eq!(round4(Some(2.0 / 3.0)), Some(0.6667));
    }
}
