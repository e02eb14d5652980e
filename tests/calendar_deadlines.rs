//! Publication deadlines as data: every row of `tests/data/deadlines.tsv` (computed independently from the
//! official calendar) against `Calendar::builtin().deadline(..)`, plus the errors at the ends of the calendar.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate};
use dualpub::calendar::{Calendar, CalendarError};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/deadlines.tsv");

struct Row {
    line: usize,
    decided: NaiveDate,
    deadline: NaiveDate,
    note: String,
}

fn date(s: &str, line: usize) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .unwrap_or_else(|e| panic!("{DATA}:{line}: bad date {s:?}: {e}"))
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(DATA).unwrap_or_else(|e| panic!("cannot read {DATA}: {e}"));
    let mut rows = Vec::new();
    let mut header_seen = false;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() || raw.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = raw.split('\t').collect();
        assert_eq!(
            cols.len(),
            3,
            "{DATA}:{line}: expected decided<TAB>deadline<TAB>note"
        );
        if !header_seen {
            assert_eq!(
                cols,
                ["decided", "deadline", "note"],
                "{DATA}:{line}: header"
            );
            header_seen = true;
            continue;
        }
        rows.push(Row {
            line,
            decided: date(cols[0], line),
            deadline: date(cols[1], line),
            note: cols[2].to_string(),
        });
    }
    rows
}

#[test]
fn every_row_matches_the_builtin_calendar() {
    let cal = Calendar::builtin();
    let rows = rows();
    let mut failures = Vec::new();
    for row in &rows {
        match cal.deadline(row.decided) {
            Ok(got) if got == row.deadline => {}
            Ok(got) => failures.push(format!(
                "line {}: decided {} expected {} got {} ({})",
                row.line, row.decided, row.deadline, got, row.note
            )),
            Err(e) => failures.push(format!(
                "line {}: decided {} expected {} got error: {e} ({})",
                row.line, row.decided, row.deadline, row.note
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows of {DATA} disagree:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

#[test]
fn data_covers_every_year_and_festival() {
    let rows = rows();
    assert!(rows.len() > 100, "only {} rows", rows.len());
    let years: BTreeSet<i32> = rows.iter().map(|r| r.decided.year()).collect();
    assert_eq!(years, (2018..=2026).collect::<BTreeSet<_>>());
    for year in 2018..=2026 {
        for festival in [
            "Spring Festival",
            "Qingming",
            "Labour Day",
            "Dragon Boat",
            "Mid-Autumn",
            "National Day",
        ] {
            let of = |what: &str| {
                rows.iter().any(|r| {
                    r.decided.year() == year && r.note.contains(festival) && r.note.contains(what)
                })
            };
            assert!(
                of("last working day before"),
                "{festival} {year}: no decision on the last working day before"
            );
            assert!(
                of("during the holiday") || of("first day off"),
                "{festival} {year}: no decision during the holiday"
            );
        }
    }
    let tiaoxiu = rows
        .iter()
        .filter(|r| r.note.contains("decided on 调休"))
        .count();
    assert!(tiaoxiu >= 50, "only {tiaoxiu} decisions on 调休 days");
}

fn assert_names_builtin_file(err: &CalendarError) {
    let msg = err.to_string();
    assert!(
        msg.contains("mappings/calendar.toml"),
        "message does not name the file: {msg}"
    );
}

#[test]
fn deadline_beyond_the_last_year_is_an_error_naming_the_file() {
    let cal = Calendar::builtin();
    let decided = NaiveDate::from_ymd_opt(2026, 12, 28).unwrap();
    let err = cal
        .deadline(decided)
        .expect_err("deadline reaches into 2027");
    match &err {
        CalendarError::NotCovered {
            date,
            first_year,
            last_year,
            file,
            ..
        } => {
            assert_eq!(date.year(), 2027);
            assert_eq!((*first_year, *last_year), (2018, 2026));
            assert_eq!(file, "mappings/calendar.toml");
        }
        other => panic!("expected NotCovered, got {other:?}"),
    }
    assert_names_builtin_file(&err);
    let msg = err.to_string();
    assert!(msg.contains("2018–2026") && msg.contains("[2027]"), "{msg}");
}

#[test]
fn dates_before_the_first_year_are_errors_naming_the_file() {
    let cal = Calendar::builtin();
    for d in [
        NaiveDate::from_ymd_opt(2017, 12, 29).unwrap(),
        NaiveDate::from_ymd_opt(2017, 12, 31).unwrap(),
        NaiveDate::from_ymd_opt(2010, 6, 1).unwrap(),
    ] {
        let err = cal.deadline(d).expect_err("before 2018");
        assert!(matches!(err, CalendarError::NotCovered { .. }), "{err:?}");
        assert_names_builtin_file(&err);
        assert!(
            err.to_string().contains("[2017]") || d.year() != 2017,
            "{err}"
        );
        assert_names_builtin_file(&cal.is_working_day(d).unwrap_err());
    }
}

#[test]
fn is_working_day_outside_the_calendar_is_an_error() {
    let cal = Calendar::builtin();
    let err = cal
        .is_working_day(NaiveDate::from_ymd_opt(2027, 1, 4).unwrap())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the built-in calendar (mappings/calendar.toml) covers 2018–2026; 2027-01-04 is outside it: once the \
         State Council has published 2027's holidays, add a [2027] table (its `holidays` and 调休 `workdays`) to \
         a calendar.toml in the directory that `[mapping] dir` names (add the key to dualpub.toml if it has none): \
         its year tables extend the built-in ones"
    );
}
