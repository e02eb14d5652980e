//! The gap-report and annual-report writers, read back the way operators and scripts read them: JSON parsed,
//! CSV bytes checked, xlsx opened with calamine, the table scanned as text.

use calamine::{open_workbook, Data, DataType, Reader, Xlsx};
use chrono::NaiveDate;
use dualpub::model::Kind;
use dualpub::reconcile::annual::{
    write_annual_json, write_annual_table, write_annual_xlsx, AnnualAccumulator,
    PENALTY_CATEGORIES, PERMIT_CATEGORIES, UNMAPPED,
};
use dualpub::reconcile::report::{Category, GapRow, MonthOutcome, Rates, RepairSummary, Report};
use dualpub::reconcile::writers::{display_width, write_csv, write_json, write_table, write_xlsx};
use dualpub::source_schema::SourceStatus;
use rust_decimal::Decimal;
use std::str::FromStr;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
}

const TRICKY_DETAIL: &str = "平台信息: \"证件号码\" 校验位错误,\n请核对";

fn row(category: Category, key_no: u32, kind: Kind) -> GapRow {
    let doc_no = format!("（豫）WH安许证字〔2024〕{key_no:06}");
    GapRow {
        category,
        key: format!("{}:91410000MA1B3N1N2M:{doc_no}", kind.item()),
        kind,
        doc_no,
        party_name: "河南省郑州市金水区安达化工贸易有限公司".to_string(),
        party_id_masked: "410105********1234".to_string(),
        decided_on: Some(d("2024-03-01")),
        deadline: Some(d("2024-03-12")),
        first_published: None,
        detail: String::new(),
    }
}

fn sample() -> Report {
    let mut r = Report::new(d("2024-12-31"));
    r.from = Some(d("2024-01-01"));
    r.to = Some(d("2024-12-31"));
    r.source_records = 120;
    r.platform_records = 117;
    r.rates.insert(
        Kind::Permit,
        Rates {
            due: 80,
            on_time: 78,
            submitted: 82,
            accepted: 81,
            filled_items: 2200,
            expected_items: 2240,
        },
    );
    r.rates.insert(
        Kind::Penalty,
        Rates {
            due: 20,
            on_time: 19,
            submitted: 21,
            accepted: 20,
            filled_items: 590,
            expected_items: 600,
        },
    );
    r.record_month(d("2024-03-01"), MonthOutcome::OnTime);
    r.record_month(d("2024-03-02"), MonthOutcome::Overdue);
    r.record_month(d("2024-01-15"), MonthOutcome::Late);
    r.record_month(d("2024-12-30"), MonthOutcome::NotYetDue);

    r.gaps.push(row(Category::Missing, 1, Kind::Permit));
    r.gaps.push(row(Category::Overdue, 1, Kind::Permit));
    let mut stale = row(Category::Stale, 2, Kind::Permit);
    stale.first_published = Some(d("2024-03-05"));
    stale.detail = "XK_XDR_MC, XK_NR differ".to_string();
    r.gaps.push(stale);
    let mut orphan = row(Category::Orphan, 3, Kind::Penalty);
    orphan.party_name = "张三".to_string();
    orphan.decided_on = None;
    orphan.deadline = None;
    orphan.first_published = Some(d("2023-11-02"));
    r.gaps.push(orphan);
    let mut rejected = row(Category::Rejected, 4, Kind::Penalty);
    rejected.detail = TRICKY_DETAIL.to_string();
    r.gaps.push(rejected);
    r
}

#[test]
fn json_has_every_count_and_every_row() {
    let r = sample();
    let mut buf = Vec::new();
    write_json(&r, &mut buf).expect("write json");
    let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
    assert_eq!(v["version"], 1);
    assert_eq!(v["today"], "2024-12-31");
    assert_eq!(v["window"]["from"], "2024-01-01");
    let counts = v["counts"].as_object().expect("counts object");
    assert_eq!(counts.len(), 8);
    for c in Category::ALL {
        assert!(counts.contains_key(c.as_str()), "count for {c}");
    }
    assert_eq!(counts["missing"], 1);
    assert_eq!(counts["expired"], 0);
    assert_eq!(v["total_gaps"], 5);
    assert_eq!(v["records_with_gaps"], 4);
    let gaps = v["gaps"].as_array().expect("gaps array");
    assert_eq!(gaps.len(), 5);
    assert_eq!(gaps[0]["category"], "missing");
    assert_eq!(gaps[0]["kind"], "permit");
    assert_eq!(gaps[0]["decided_on"], "2024-03-01");
    assert_eq!(gaps[0]["party_id_masked"], "410105********1234");
    assert!(gaps[3]["deadline"].is_null());
    assert_eq!(gaps[4]["detail"], TRICKY_DETAIL);
    assert!(gaps[0]["action"]
        .as_str()
        .expect("action")
        .contains("--repair"));
    assert_eq!(v["rates"]["overall"]["due"], 100);
    assert_eq!(v["rates"]["overall"]["timeliness"], 0.97);
    assert_eq!(v["rates"]["permit"]["on_time"], 78);
    assert_eq!(v["months"][0]["month"], "2024-01");
    assert!(v["repair"].is_null());
}

#[test]
fn json_of_an_empty_report_has_null_rates_and_all_counts() {
    let r = Report::new(d("2026-11-27"));
    let mut buf = Vec::new();
    write_json(&r, &mut buf).expect("write json");
    let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
    assert_eq!(v["counts"].as_object().expect("counts").len(), 8);
    assert!(v["rates"]["overall"]["timeliness"].is_null());
    assert!(v["window"]["from"].is_null());
}

#[test]
fn csv_files_per_category_with_bom_and_rfc4180_quoting() {
    let r = sample();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("nested/report");
    let files = write_csv(&r, &out).expect("write csv");
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().expect("name").to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "summary.csv",
            "months.csv",
            "missing.csv",
            "stale.csv",
            "orphan.csv",
            "overdue.csv",
            "rejected.csv"
        ]
    );
    for f in &files {
        let bytes = std::fs::read(f).expect("read csv");
        assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "BOM in {}", f.display());
    }
    let rejected = std::fs::read_to_string(out.join("rejected.csv")).expect("read");
    let rejected = rejected.trim_start_matches('\u{feff}');
    assert!(rejected.starts_with(
        "记录键,类别,事项,文书号,行政相对人名称,证件号码(脱敏),决定日期,公示期限,首次公示时间,说明,处理建议\r\n"
    ));
    assert!(rejected.contains("\"平台信息: \"\"证件号码\"\" 校验位错误,\n请核对\""));
    assert!(rejected.contains(",410105********1234,2024-03-01,2024-03-12,,"));
    let orphan = std::fs::read_to_string(out.join("orphan.csv")).expect("read");
    assert!(orphan.contains(",张三,410105********1234,,,2023-11-02,"));
    let summary = std::fs::read_to_string(out.join("summary.csv")).expect("read");
    assert!(summary.contains("缺失,missing,1,,\r\n"));
    assert!(summary.contains("及时率,全部,97.00%,97,100\r\n"));
    // The window limits the source side only: the platform's count says it is of every decision date.
    assert!(summary.contains("源系统记录数,,120,"));
    assert!(summary.contains("平台记录数（不限决定日期 every decision date）,,117,"));
}

/// Party names from the source that start like a formula, also behind a tab (which Excel's import wizard drops, a
/// formula after it then runs), are prefixed with `'`; control characters (an ANSI colour code) were written raw.
#[test]
fn csv_cells_never_start_a_formula_nor_hold_control_characters() {
    let mut r = Report::new(d("2024-12-31"));
    for (n, name) in [
        "=1+2",
        "\t=1+1",
        "\r@SUM(1,1)",
        "\u{1b}[31m红色公司\u{1b}[0m",
        "-5",
    ]
    .into_iter()
    .enumerate()
    {
        let mut g = row(Category::Missing, n as u32, Kind::Penalty);
        g.party_name = name.to_string();
        r.gaps.push(g);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    write_csv(&r, dir.path()).expect("write csv");
    let text = std::fs::read_to_string(dir.path().join("missing.csv")).expect("read");
    for cell in [
        "'=1+2",
        ",'\t=1+1,",
        "\"'\r@SUM(1,1)\"",
        " [31m红色公司 [0m",
        "'-5",
    ] {
        assert!(text.contains(cell), "{cell:?} in {text:?}");
    }
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

#[test]
fn a_later_csv_report_into_the_same_folder_leaves_no_old_category_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("report");
    write_csv(&sample(), &out).expect("write csv");
    assert!(out.join("orphan.csv").exists());
    std::fs::write(out.join("notes.txt"), "the operator's own file").expect("write");
    // the gaps were fixed: the next report has none
    let files = write_csv(&Report::new(d("2026-11-28")), &out).expect("write csv");
    assert_eq!(files, [out.join("summary.csv")]);
    let mut left: Vec<String> = std::fs::read_dir(&out)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["notes.txt", "summary.csv"],
        "what the old report wrote is gone, nothing else"
    );
}

fn cell(range: &calamine::Range<Data>, row: usize, col: usize) -> Data {
    range.get((row, col)).cloned().unwrap_or(Data::Empty)
}

#[test]
fn xlsx_has_summary_and_a_sheet_per_category_with_real_dates() {
    let mut r = sample();
    r.repair = Some(RepairSummary {
        repushed: 2,
        left: vec!["1 record is rejected by the platform".into()],
        ..RepairSummary::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gaps.xlsx");
    write_xlsx(&r, &path).expect("write xlsx");

    let mut wb: Xlsx<_> = open_workbook(&path).expect("open xlsx");
    let mut expected = vec!["汇总".to_string()];
    expected.extend(Category::ALL.iter().map(|c| c.zh().to_string()));
    assert_eq!(wb.sheet_names(), expected);

    let missing = wb.worksheet_range("缺失").expect("missing sheet");
    let header: Vec<String> = (0..11).map(|c| cell(&missing, 0, c).to_string()).collect();
    assert_eq!(header[0], "记录键");
    assert_eq!(header[4], "行政相对人名称");
    assert_eq!(header[5], "证件号码(脱敏)");
    assert_eq!(header[6], "决定日期");
    assert_eq!(
        cell(&missing, 1, 4).to_string(),
        "河南省郑州市金水区安达化工贸易有限公司"
    );
    assert_eq!(cell(&missing, 1, 5).to_string(), "410105********1234");
    match cell(&missing, 1, 6) {
        Data::DateTime(dt) => assert_eq!(dt.as_f64(), 45352.0, "2024-03-01 as an Excel serial"),
        other => panic!("decision date should be an Excel date, got {other:?}"),
    }
    // An empty category still has its header row.
    let expired = wb.worksheet_range("公示期满未撤下").expect("expired sheet");
    assert_eq!(expired.height(), 1);
    assert_eq!(cell(&expired, 0, 0).to_string(), "记录键");
    // No deadline: an empty cell, not a string.
    let orphan = wb.worksheet_range("多余").expect("orphan sheet");
    assert_eq!(cell(&orphan, 1, 7), Data::Empty);

    let summary = wb.worksheet_range("汇总").expect("summary sheet");
    let mut counts = std::collections::BTreeMap::new();
    let mut saw_rate = false;
    for row in summary.rows() {
        if let (Some(Data::String(en)), Some(n)) = (row.get(1), row.get(2)) {
            if Category::parse(en).is_some() {
                counts.insert(en.clone(), n.as_f64().unwrap_or(-1.0));
            }
        }
        if row.first() == Some(&Data::String("全部".into())) {
            assert_eq!(row.get(1).and_then(|c| c.as_f64()), Some(0.97));
            saw_rate = true;
        }
    }
    assert!(saw_rate, "overall rates row");
    assert_eq!(counts.len(), 8);
    assert_eq!(counts["missing"], 1.0);
    assert_eq!(counts["rejected"], 1.0);
    assert_eq!(counts["late"], 0.0);
    match cell(&summary, 2, 1) {
        Data::DateTime(_) => {}
        other => panic!("today should be an Excel date, got {other:?}"),
    }
}

/// A platform message stored before such messages were cut on arrival can be longer than a cell holds (32,767
/// characters): every `--format xlsx` report failed (exit 3) for as long as the record stayed rejected.
#[test]
fn xlsx_cuts_a_text_longer_than_a_cell_holds() {
    let mut r = sample();
    let mut rejected = row(Category::Rejected, 9, Kind::Permit);
    rejected.detail = format!("E123 {}", "错".repeat(40_000));
    r.gaps.push(rejected);
    r.notes.push("注".repeat(33_000));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gaps.xlsx");
    write_xlsx(&r, &path).expect("write xlsx");
    let mut wb: Xlsx<_> = open_workbook(&path).expect("open xlsx");
    let sheet = wb.worksheet_range("平台拒收").expect("rejected sheet");
    let detail = (1..sheet.height())
        .map(|row| cell(&sheet, row, 9).to_string())
        .find(|d| d.starts_with("E123"))
        .expect("the long row is there");
    assert_eq!(detail.chars().count(), 32_767);
    assert!(
        detail.ends_with("（已截断 / cut）"),
        "{}",
        &detail[detail.len() - 40..]
    );
}

#[test]
fn table_starts_with_the_summary_and_has_no_ansi_without_color() {
    let r = sample();
    let mut buf = Vec::new();
    write_table(&r, &mut buf, false).expect("write table");
    let text = String::from_utf8(buf).expect("utf-8");
    assert!(!text.contains('\x1b'), "no ANSI escapes:\n{text}");
    let summary_at = text.find("差异 gaps").expect("summary");
    let first_group = text.find("== 缺失 missing: 1").expect("missing group");
    assert!(summary_at < first_group);
    assert!(text.contains("5 gaps on 4 records need attention"));
    assert!(text.contains("97.00% (97/100)"));
    assert!(text.contains("410105********1234"));
    assert!(text.contains("source 120 in the window, platform 117 of every decision date"));
    assert!(
        !text.contains("平台信息: \"证件号码\" 校验位错误,\n"),
        "newline kept out of a row"
    );

    let mut coloured = Vec::new();
    write_table(&r, &mut coloured, true).expect("write table");
    assert!(String::from_utf8(coloured).expect("utf-8").contains('\x1b'));

    let mut empty = Vec::new();
    write_table(&Report::new(d("2024-12-31")), &mut empty, false).expect("write");
    assert!(String::from_utf8(empty)
        .expect("utf-8")
        .contains("verdict: no gaps"));
    let mut open = Report::new(d("2024-12-31"));
    open.source_records = 3;
    open.platform_records = 2;
    let mut buf = Vec::new();
    write_table(&open, &mut buf, false).expect("write");
    assert!(String::from_utf8(buf)
        .expect("utf-8")
        .contains("source 3, platform 2\n"));
}

#[test]
fn table_columns_align_with_cjk_text() {
    let mut r = sample();
    let mut short = row(Category::Missing, 9, Kind::Permit);
    short.party_name = "李四ab".to_string();
    r.gaps.push(short);
    let mut buf = Vec::new();
    write_table(&r, &mut buf, false).expect("write table");
    let text = String::from_utf8(buf).expect("utf-8");
    let cols: Vec<usize> = text
        .lines()
        .skip_while(|l| !l.starts_with("== 缺失"))
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.find("410105").map(|i| display_width(&l[..i])))
        .collect();
    assert_eq!(cols.len(), 2);
    assert_eq!(cols[0], cols[1]);
}

#[test]
fn table_caps_rows_per_category() {
    let mut r = Report::new(d("2024-12-31"));
    for i in 0..60 {
        r.gaps.push(row(Category::Missing, i, Kind::Permit));
    }
    let mut buf = Vec::new();
    write_table(&r, &mut buf, false).expect("write table");
    let text = String::from_utf8(buf).expect("utf-8");
    assert!(text.contains("… and 10 more (use --format csv/xlsx for all)"));
}

#[test]
fn display_width_counts_cjk_as_two_columns() {
    assert_eq!(display_width("河南ab"), 6);
}

#[test]
fn annual_counts_sums_and_writes() {
    let wan = |s: &str| Decimal::from_str(s).expect("decimal");
    let mut acc = AnnualAccumulator::new(2024);
    acc.add_permit(
        Some("普通"),
        None,
        d("2024-01-10"),
        Some(MonthOutcome::OnTime),
    );
    acc.add_permit(
        Some("普通"),
        None,
        d("2024-06-10"),
        Some(MonthOutcome::Late),
    );
    acc.add_permit(
        Some("特许"),
        None,
        d("2024-12-30"),
        Some(MonthOutcome::NotYetDue),
    );
    acc.add_permit(
        Some("普通"),
        None,
        d("2025-01-02"),
        Some(MonthOutcome::OnTime),
    ); // another year
    acc.add_penalty(
        &["警告", "罚款"],
        None,
        Some(wan("0.2")),
        None,
        d("2024-02-01"),
        Some(MonthOutcome::OnTime),
    );
    acc.add_penalty(
        &["罚款", "没收违法所得"],
        None,
        Some(wan("1.000001")),
        Some(wan("0.35")),
        d("2024-03-01"),
        Some(MonthOutcome::OnTime),
    );
    acc.add_penalty(
        &["罚款"],
        None,
        Some(wan("10.1")),
        None,
        d("2024-04-01"),
        Some(MonthOutcome::Late),
    );
    acc.add_penalty(
        &["罚款"],
        None,
        Some(wan("99")),
        None,
        d("2023-12-31"),
        Some(MonthOutcome::OnTime),
    ); // another year
    let r = acc.finish();

    assert_eq!(r.permits_total, 3);
    assert_eq!(r.permits_by_category["普通"], 2);
    assert_eq!(r.permits_by_category["特许"], 1);
    assert_eq!((r.permits_on_time, r.permits_due), (1, 2));
    assert_eq!(r.penalties_total, 3);
    assert_eq!(r.penalties_by_category["罚款"], 3);
    assert_eq!(r.penalties_by_category["警告"], 1);
    assert_eq!(r.penalties_by_category["没收违法所得"], 1);
    assert_eq!(r.fines_wan, wan("11.300001"));
    assert_eq!(r.confiscated_wan, wan("0.35"));
    assert_eq!(r.penalties_timeliness(), Some(2.0 / 3.0));

    let mut buf = Vec::new();
    write_annual_table(&r, &mut buf, false).expect("table");
    let text = String::from_utf8(buf).expect("utf-8");
    assert!(text.contains("行政许可 permits: 3"));
    assert!(text.contains("罚款金额 fines: 11.300001 万元"));
    assert!(text.contains("66.67% (2/3)"));
    assert!(!text.contains('\x1b'));

    let mut buf = Vec::new();
    write_annual_json(&r, &mut buf).expect("json");
    let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
    assert_eq!(v["year"], 2024);
    assert_eq!(v["penalties"]["fines_wan"], "11.300001");
    assert_eq!(v["penalties"]["by_category"]["罚款"], 3);
    assert_eq!(v["permits"]["by_category"]["核准"], 0);
    assert_eq!(v["permits"]["timeliness"], 0.5);

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("annual.xlsx");
    write_annual_xlsx(&r, &path).expect("xlsx");
    let mut wb: Xlsx<_> = open_workbook(&path).expect("open xlsx");
    assert_eq!(wb.sheet_names(), ["年度报告"]);
    let sheet = wb.worksheet_range("年度报告").expect("sheet");
    let fines = sheet
        .rows()
        .find(|row| row.first() == Some(&Data::String("罚款金额（万元）".into())))
        .expect("fines row");
    assert_eq!(fines[1].as_f64(), Some(11.300001));
    assert_eq!(fines[2], Data::String("11.300001".into()));
}

/// A decision with no mapped category is counted under 未分类; a revoked one counts (and is shown), a superseded
/// (`changed`) version counts only in the on-time share; notes are written in every format; the JSON lists the
/// categories in the standard's order; the workbook says why 合计 is not the sum of the penalty rows.
#[test]
fn annual_unmapped_revoked_superseded_notes_and_order() {
    let wan = |s: &str| Decimal::from_str(s).expect("decimal");
    let mut acc = AnnualAccumulator::new(2024);
    acc.add_permit(None, None, d("2024-01-10"), Some(MonthOutcome::OnTime));
    acc.add_permit(
        Some("普通"),
        Some(SourceStatus::Revoked),
        d("2024-01-11"),
        Some(MonthOutcome::OnTime),
    );
    acc.add_penalty(&[], None, Some(wan("0.5")), None, d("2024-02-01"), None);
    acc.add_penalty(
        &["警告", "罚款"],
        Some(SourceStatus::Active),
        Some(wan("0.2")),
        None,
        d("2024-02-02"),
        Some(MonthOutcome::Late),
    );
    acc.add_penalty(
        &["罚款"],
        Some(SourceStatus::Changed),
        Some(wan("9")),
        None,
        d("2024-02-03"),
        Some(MonthOutcome::OnTime),
    );
    let mut r = acc.finish();
    r.notes
        .push("1 source record(s) have no readable decision date".into());
    assert_eq!(r.permits_total, 2);
    assert_eq!(r.permits_by_category[UNMAPPED], 1);
    assert_eq!(r.permits_revoked, 1);
    assert_eq!(r.penalties_total, 2);
    assert_eq!(r.penalties_by_category[UNMAPPED], 1);
    assert_eq!(
        r.penalties_by_category["罚款"], 1,
        "the superseded one is not counted"
    );
    assert_eq!(r.penalties_superseded, 1);
    assert_eq!(r.fines_wan, wan("0.7"));
    assert_eq!((r.penalties_on_time, r.penalties_due), (1, 2));
    assert_eq!(r.penalty_rows().last(), Some(&(UNMAPPED.to_string(), 1)));

    let mut buf = Vec::new();
    write_annual_table(&r, &mut buf, false).expect("table");
    let text = String::from_utf8(buf).expect("utf-8");
    assert!(text.contains(UNMAPPED), "{text}");
    assert!(text.contains("其中 已撤销 revoked: 1"), "{text}");
    assert!(text.contains("不计 已被更正 superseded: 1"), "{text}");
    assert!(
        text.contains("注意 notes") && text.contains("no readable decision date"),
        "{text}"
    );

    let mut buf = Vec::new();
    write_annual_json(&r, &mut buf).expect("json");
    let raw = String::from_utf8(buf.clone()).expect("utf-8");
    let v: serde_json::Value = serde_json::from_slice(&buf).expect("valid JSON");
    assert_eq!(
        v["notes"][0],
        "1 source record(s) have no readable decision date"
    );
    assert_eq!(v["permits"]["revoked"], 1);
    assert_eq!(v["penalties"]["superseded"], 1);
    assert_eq!(v["penalties"]["by_category"][UNMAPPED], 1);
    // the keys in the text come in the standard's order, 未分类 last (they were sorted by code point)
    let (permits, penalties) = raw.split_at(raw.find("\"penalties\"").expect("penalties"));
    for (section, standard) in [
        (permits, &PERMIT_CATEGORIES[..]),
        (penalties, &PENALTY_CATEGORIES[..]),
    ] {
        let at: Vec<usize> = standard
            .iter()
            .chain([&UNMAPPED])
            .map(|c| section.find(&format!("\"{c}\"")).expect("category listed"))
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{section}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("annual.xlsx");
    write_annual_xlsx(&r, &path).expect("xlsx");
    let mut wb: Xlsx<_> = open_workbook(&path).expect("open xlsx");
    let sheet = wb.worksheet_range("年度报告").expect("sheet");
    let rows: Vec<&[Data]> = sheet.rows().collect();
    let penalty_total = rows
        .iter()
        .filter(|row| row.first() == Some(&Data::String("合计".into())))
        .nth(1)
        .expect("the penalties' 合计");
    assert_eq!(penalty_total[1].as_f64(), Some(2.0));
    assert!(
        penalty_total[2]
            .get_string()
            .is_some_and(|s| s.contains("在合计中只计一次")),
        "{penalty_total:?}"
    );
    assert!(rows
        .iter()
        .any(|row| row.first() == Some(&Data::String(UNMAPPED.into()))));
    assert!(rows.iter().any(|row| row
        .first()
        .and_then(|c| c.get_string())
        .is_some_and(|s| s.contains("no readable decision date"))));
}
