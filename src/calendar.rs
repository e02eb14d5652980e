//! Working-day calendar (调休) and publication deadlines.
//!
//! Permits and penalties must be public within 7 working days of the decision date (standard §3.1); the
//! deadline is the 7th working day after the decision date, the decision day itself not counted (DESIGN.md §4).
//! Working days follow the official calendar of mainland China: Monday–Friday unless a public holiday, and
//! Saturday/Sunday only when the State Council makes it a working day (调休).
//!
//! The calendar is data, not code: `mappings/calendar.toml` (built into the binary, see [`Calendar::builtin`])
//! holds one `[YEAR]` table per covered year with `holidays` (Monday–Friday days off) and `workdays`
//! (weekend days made working days). An operator can load an edited copy with [`Calendar::load`]. A date in a
//! year the file does not cover is an error ([`CalendarError::NotCovered`]) that says which file to extend —
//! never a guess.
//!
//! Everything here is pure except [`Calendar::load`], which reads the file.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use chrono::{Datelike, NaiveDate, Weekday};

/// The origin recorded for the built-in calendar, the file to extend each year.
pub const BUILTIN_ORIGIN: &str = "mappings/calendar.toml";

/// Working days allowed between a decision and its publication (standard §3.1).
pub const PUBLICATION_WORKING_DAYS: u32 = 7;

const BUILTIN_TEXT: &str = include_str!("../mappings/calendar.toml");

const HOLIDAYS: &str = "holidays";
const WORKDAYS: &str = "workdays";

/// The official working-day calendar for a consecutive range of years.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    origin: String,
    source: CalendarSource,
    first_year: i32,
    last_year: i32,
    /// Monday–Friday dates that are public holidays.
    holidays: HashSet<NaiveDate>,
    /// Saturday/Sunday dates made working days (调休).
    workdays: HashSet<NaiveDate>,
}

/// Why a calendar file could not be used, or a date could not be classified.
#[derive(Debug, thiserror::Error)]
pub enum CalendarError {
    #[error("cannot read calendar file {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: not valid TOML: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: no year tables; add one [YEAR] table per year with `holidays` and `workdays` lists")]
    Empty { file: String },
    #[error("{file}: unknown top-level key `{key}`: only year tables such as [2024] are allowed")]
    NotAYear { file: String, key: String },
    #[error("{file}: [{year}] must be a table with `holidays` and `workdays` lists")]
    NotATable { file: String, year: i32 },
    #[error(
        "{file}: [{year}] has unknown key `{key}`: only `holidays` and `workdays` are allowed"
    )]
    UnknownKey {
        file: String,
        year: i32,
        key: String,
    },
    #[error(
        "{file}: [{year}] has no `{key}` list; write `{key} = []` if that year has none, so a forgotten list \
         is never mistaken for an empty one"
    )]
    MissingKey {
        file: String,
        year: i32,
        key: &'static str,
    },
    #[error("{file}: [{year}] {key} must be a list of \"YYYY-MM-DD\" dates; found {found}")]
    NotAList {
        file: String,
        year: i32,
        key: &'static str,
        found: String,
    },
    #[error("{file}: [{year}] {key}: {value} is not a date in YYYY-MM-DD form")]
    BadDate {
        file: String,
        year: i32,
        key: &'static str,
        value: String,
    },
    #[error("{file}: [{year}] {key}: {date} is in year {}, not {year}; move it to the [{}] table", .date.year(), .date.year())]
    WrongYear {
        file: String,
        year: i32,
        key: &'static str,
        date: NaiveDate,
    },
    #[error(
        "{file}: [{year}] holidays: {date} is a {weekday}; list only Monday–Friday holidays \
         (weekends are rest days anyway)"
    )]
    HolidayOnWeekend {
        file: String,
        year: i32,
        date: NaiveDate,
        weekday: Weekday,
    },
    #[error(
        "{file}: [{year}] workdays: {date} is a {weekday}; list only Saturdays and Sundays made working \
         days (调休)"
    )]
    WorkdayOnWeekday {
        file: String,
        year: i32,
        date: NaiveDate,
        weekday: Weekday,
    },
    #[error("{file}: [{year}] {key}: {date} is listed twice")]
    Duplicate {
        file: String,
        year: i32,
        key: &'static str,
        date: NaiveDate,
    },
    #[error(
        "{file}: no [{year}] table, but [{first_year}] and [{last_year}] are present; covered years must be \
         consecutive: add the [{year}] table, with that year's `holidays` and `workdays`"
    )]
    MissingYear {
        file: String,
        year: i32,
        first_year: i32,
        last_year: i32,
    },
    #[error(
        "{file}: [{year}] lists no holidays, and every year has weekday holidays (元旦, 春节, 国庆节…): without \
         them every deadline of {year} would count them as working days. Copy the year's holidays and 调休 \
         working days from the State Council's notice"
    )]
    NoHolidays { file: String, year: i32 },
    #[error("{}", not_covered_message(*.date, *.first_year, *.last_year, .file, *.calendar))]
    NotCovered {
        date: NaiveDate,
        first_year: i32,
        last_year: i32,
        file: String,
        /// Where the calendar came from, which decides what the operator is told to do.
        calendar: CalendarSource,
    },
}

/// Where a [`Calendar`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarSource {
    /// The one built into the binary ([`Calendar::builtin`]); its file is not on the operator's machine.
    Builtin,
    /// A file alone ([`Calendar::load`]).
    File,
    /// A file's year tables over the built-in ones ([`Calendar::load_over_builtin`], the `[mapping] dir` one).
    FileOverBuiltin,
}

/// What a date outside the calendar means and what to do about it, for each kind of calendar: the built-in one
/// names no file the operator has, but the `[mapping] dir` where a `calendar.toml` extends it.
fn not_covered_message(
    date: NaiveDate,
    first_year: i32,
    last_year: i32,
    file: &str,
    source: CalendarSource,
) -> String {
    let year = date.year();
    match source {
        CalendarSource::Builtin => format!(
            "the built-in calendar ({file}) covers {first_year}–{last_year}; {date} is outside it: once the \
             State Council has published {year}'s holidays, add a [{year}] table (its `holidays` and 调休 \
             `workdays`) to a calendar.toml in the directory that `[mapping] dir` names (add the key to \
             dualpub.toml if it has none): its year tables extend the built-in ones"
        ),
        CalendarSource::File => format!(
            "{file} covers {first_year}–{last_year}; {date} is outside it: add a [{year}] table to {file} with \
             that year's official holidays and 调休 working days"
        ),
        CalendarSource::FileOverBuiltin => format!(
            "the built-in calendar with {file} covers {first_year}–{last_year}; {date} is outside it: add a \
             [{year}] table to {file} with that year's official holidays and 调休 working days"
        ),
    }
}

impl Calendar {
    /// The calendar built into the binary from `mappings/calendar.toml`.
    pub fn builtin() -> Calendar {
        let mut cal = Calendar::from_toml_str(BUILTIN_TEXT, BUILTIN_ORIGIN)
            .expect("mappings/calendar.toml is part of the crate and checked by its tests, so it always parses");
        cal.source = CalendarSource::Builtin;
        cal
    }

    /// The calendar of a `[mapping] dir`: the year tables of the file at `path` added to the built-in ones — a
    /// year only the file holds is the file's, and a year both hold has the days of both (a `[2026]` table there
    /// holding just the late-December 调休 days that the next year's notice adds keeps every built-in 2026
    /// holiday; replacing the year lost them without a word). So adding the new year's table is all an operator
    /// has to write; a copy of the whole built-in file works too. A day off in one and a working day in the other
    /// cannot happen (holidays are weekdays, 调休 working days weekends). The years of both together must be
    /// consecutive. Errors name `path`.
    pub fn load_over_builtin(path: &Path) -> Result<Calendar, CalendarError> {
        let file = path.display().to_string();
        let text = crate::read_settings_text(path).map_err(|source| CalendarError::Io {
            file: file.clone(),
            source,
        })?;
        let builtin = parse_years(BUILTIN_TEXT, BUILTIN_ORIGIN).expect(
            "mappings/calendar.toml is part of the crate and checked by its tests, so it always parses",
        );
        let mut years = parse_years(&text, &file)?;
        // A year the built-in calendar lacks must be the whole year, and no year is without holidays: an empty
        // table (the way to fill a gap between years, once) made every day of that year a working day.
        if let Some((&year, _)) = years
            .iter()
            .find(|(year, (holidays, _))| holidays.is_empty() && !builtin.contains_key(year))
        {
            return Err(CalendarError::NoHolidays { file, year });
        }
        for (year, (holidays, workdays)) in builtin {
            let days = years.entry(year).or_default();
            for (mine, built_in) in [(&mut days.0, holidays), (&mut days.1, workdays)] {
                mine.extend(built_in);
                mine.sort_unstable();
                mine.dedup();
            }
        }
        build(&file, CalendarSource::FileOverBuiltin, years)
    }

    /// Reads a calendar file in the `mappings/calendar.toml` format; errors name `path`.
    pub fn load(path: &Path) -> Result<Calendar, CalendarError> {
        let file = path.display().to_string();
        let text = crate::read_settings_text(path).map_err(|source| CalendarError::Io {
            file: file.clone(),
            source,
        })?;
        Calendar::from_toml_str(&text, &file)
    }

    /// Parses calendar text; `origin` names the file in error messages (and is returned by [`Calendar::origin`]).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Calendar, CalendarError> {
        build(origin, CalendarSource::File, parse_years(text, origin)?)
    }

    /// First covered year.
    pub fn first_year(&self) -> i32 {
        self.first_year
    }

    /// Last covered year.
    pub fn last_year(&self) -> i32 {
        self.last_year
    }

    /// The file the calendar came from (`mappings/calendar.toml` for the built-in one).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Whether `date` falls in a covered year.
    pub fn covers(&self, date: NaiveDate) -> bool {
        (self.first_year..=self.last_year).contains(&date.year())
    }

    /// Whether `date` is an official working day: Monday–Friday unless a public holiday, Saturday/Sunday only
    /// when made a working day (调休). A date outside the covered years is [`CalendarError::NotCovered`].
    pub fn is_working_day(&self, date: NaiveDate) -> Result<bool, CalendarError> {
        self.check_covered(date)?;
        Ok(if is_weekend(date.weekday()) {
            self.workdays.contains(&date)
        } else {
            !self.holidays.contains(&date)
        })
    }

    /// The publication deadline: the 7th working day after `decided`, the decision day itself not counted
    /// (whatever kind of day it is).
    pub fn deadline(&self, decided: NaiveDate) -> Result<NaiveDate, CalendarError> {
        self.nth_working_day_after(decided, PUBLICATION_WORKING_DAYS)
    }

    /// The `n`th working day after `decided`, `decided` itself not counted; `n = 0` gives `decided`.
    /// Both `decided` and every day up to the result must be in covered years.
    pub fn nth_working_day_after(
        &self,
        decided: NaiveDate,
        n: u32,
    ) -> Result<NaiveDate, CalendarError> {
        self.check_covered(decided)?;
        let mut day = decided;
        let mut counted = 0;
        while counted < n {
            // Past NaiveDate::MAX no year can be covered; report the last representable date.
            day = day
                .succ_opt()
                .ok_or_else(|| self.not_covered(NaiveDate::MAX))?;
            if self.is_working_day(day)? {
                counted += 1;
            }
        }
        Ok(day)
    }

    /// The working days after `from` up to and including `to` (0 when `to` is not after `from`): on a deadline's
    /// eve, 1. Every day counted must be in covered years.
    pub fn working_days_between(
        &self,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<u32, CalendarError> {
        let mut n = 0;
        for day in from.iter_days().skip(1).take_while(|d| *d <= to) {
            if self.is_working_day(day)? {
                n += 1;
            }
        }
        Ok(n)
    }

    fn check_covered(&self, date: NaiveDate) -> Result<(), CalendarError> {
        if self.covers(date) {
            Ok(())
        } else {
            Err(self.not_covered(date))
        }
    }

    fn not_covered(&self, date: NaiveDate) -> CalendarError {
        CalendarError::NotCovered {
            date,
            first_year: self.first_year,
            last_year: self.last_year,
            file: self.origin.clone(),
            calendar: self.source,
        }
    }
}

fn is_weekend(weekday: Weekday) -> bool {
    matches!(weekday, Weekday::Sat | Weekday::Sun)
}

/// One year's days off (Monday–Friday) and working weekend days, as a calendar file lists them.
type YearDays = (Vec<NaiveDate>, Vec<NaiveDate>);

/// Reads and checks every year table of calendar text; `origin` names the file in error messages.
fn parse_years(text: &str, origin: &str) -> Result<BTreeMap<i32, YearDays>, CalendarError> {
    let file = || origin.to_string();
    let table: toml::Table = toml::from_str(text).map_err(|e| CalendarError::Syntax {
        file: file(),
        message: e.to_string().trim_end().to_string(),
    })?;

    let mut years = BTreeMap::new();
    for (key, value) in &table {
        let year = parse_year(key).ok_or_else(|| CalendarError::NotAYear {
            file: file(),
            key: key.clone(),
        })?;
        let toml::Value::Table(inner) = value else {
            return Err(CalendarError::NotATable { file: file(), year });
        };
        if let Some(unknown) = inner.keys().find(|k| *k != HOLIDAYS && *k != WORKDAYS) {
            return Err(CalendarError::UnknownKey {
                file: file(),
                year,
                key: unknown.clone(),
            });
        }
        let mut holidays = HashSet::new();
        let mut workdays = HashSet::new();
        for key in [HOLIDAYS, WORKDAYS] {
            let list = inner.get(key).ok_or_else(|| CalendarError::MissingKey {
                file: file(),
                year,
                key,
            })?;
            let want_weekend = key == WORKDAYS;
            let set = if want_weekend {
                &mut workdays
            } else {
                &mut holidays
            };
            for date in parse_list(list, origin, year, key)? {
                let weekday = date.weekday();
                match (want_weekend, is_weekend(weekday)) {
                    (false, true) => {
                        return Err(CalendarError::HolidayOnWeekend {
                            file: file(),
                            year,
                            date,
                            weekday,
                        })
                    }
                    (true, false) => {
                        return Err(CalendarError::WorkdayOnWeekday {
                            file: file(),
                            year,
                            date,
                            weekday,
                        })
                    }
                    _ => {}
                }
                if !set.insert(date) {
                    return Err(CalendarError::Duplicate {
                        file: file(),
                        year,
                        key,
                        date,
                    });
                }
            }
        }
        let mut holidays: Vec<NaiveDate> = holidays.into_iter().collect();
        let mut workdays: Vec<NaiveDate> = workdays.into_iter().collect();
        holidays.sort_unstable();
        workdays.sort_unstable();
        years.insert(year, (holidays, workdays));
    }
    Ok(years)
}

/// A calendar of `years`, which must be consecutive; `origin` names the file in error messages.
fn build(
    origin: &str,
    source: CalendarSource,
    years: BTreeMap<i32, YearDays>,
) -> Result<Calendar, CalendarError> {
    let file = || origin.to_string();
    let list: Vec<i32> = years.keys().copied().collect();
    let (Some(&first_year), Some(&last_year)) = (list.first(), list.last()) else {
        return Err(CalendarError::Empty { file: file() });
    };
    if let Some(gap) = list.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(CalendarError::MissingYear {
            file: file(),
            year: gap[0] + 1,
            first_year: gap[0],
            last_year: gap[1],
        });
    }

    let mut holidays = HashSet::new();
    let mut workdays = HashSet::new();
    for (h, w) in years.into_values() {
        holidays.extend(h);
        workdays.extend(w);
    }
    Ok(Calendar {
        origin: origin.to_string(),
        source,
        first_year,
        last_year,
        holidays,
        workdays,
    })
}

/// A table name is a year: exactly four ASCII digits.
fn parse_year(key: &str) -> Option<i32> {
    if key.len() == 4 && key.bytes().all(|b| b.is_ascii_digit()) {
        key.parse().ok()
    } else {
        None
    }
}

/// Parses one `holidays`/`workdays` list: "YYYY-MM-DD" strings (or bare TOML dates), all in `year`.
fn parse_list(
    value: &toml::Value,
    file: &str,
    year: i32,
    key: &'static str,
) -> Result<Vec<NaiveDate>, CalendarError> {
    let toml::Value::Array(items) = value else {
        return Err(CalendarError::NotAList {
            file: file.to_string(),
            year,
            key,
            found: format!("{} {value}", value.type_str()),
        });
    };
    items
        .iter()
        .map(|item| {
            let date = parse_date(item).ok_or_else(|| CalendarError::BadDate {
                file: file.to_string(),
                year,
                key,
                value: item.to_string(),
            })?;
            if date.year() != year {
                return Err(CalendarError::WrongYear {
                    file: file.to_string(),
                    year,
                    key,
                    date,
                });
            }
            Ok(date)
        })
        .collect()
}

fn parse_date(item: &toml::Value) -> Option<NaiveDate> {
    match item {
        toml::Value::String(s) => {
            // Strict: exactly YYYY-MM-DD with zero padding, a real date.
            let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            (date.format("%Y-%m-%d").to_string() == *s).then_some(date)
        }
        toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => {
            let d = dt.date?;
            NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_calendar_file_that_is_not_utf8_says_to_save_it_as_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calendar.toml");
        // `# 调休` in GBK, then a year
        let mut text = b"# \xB5\xF7\xD0\xDD\n".to_vec();
        text.extend_from_slice(b"[2027]\nholidays = [\"2027-01-01\"]\nworkdays = []\n");
        std::fs::write(&path, text).unwrap();
        for e in [
            Calendar::load(&path).unwrap_err(),
            Calendar::load_over_builtin(&path).unwrap_err(),
        ] {
            let e = e.to_string();
            assert!(
                e.contains("calendar.toml") && e.contains("save it as UTF-8"),
                "{e}"
            );
        }
    }

    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn parse(text: &str) -> Result<Calendar, CalendarError> {
        Calendar::from_toml_str(text, "test/cal.toml")
    }

    fn parse_err(text: &str) -> String {
        let e = parse(text).expect_err("should not parse");
        let msg = e.to_string();
        assert!(
            msg.contains("test/cal.toml"),
            "error does not name the file: {msg}"
        );
        msg
    }

    const SMALL: &str = r#"
        [2024]
        holidays = ["2024-05-01", "2024-05-02", "2024-05-03"]
        workdays = ["2024-04-28", "2024-05-11"]
        [2025]
        holidays = []
        workdays = []
    "#;

    #[test]
    fn builtin_parses_and_covers_2018_to_2026() {
        let cal = Calendar::builtin();
        assert_eq!(cal.first_year(), 2018);
        assert_eq!(cal.last_year(), 2026);
        assert_eq!(cal.origin(), BUILTIN_ORIGIN);
    }

    #[test]
    fn weekend_rules() {
        let cal = Calendar::builtin();
        // Ordinary week: Mon–Fri work, Sat/Sun rest.
        assert!(cal.is_working_day(d(2024, 3, 15)).unwrap()); // Fri
        assert!(!cal.is_working_day(d(2024, 3, 16)).unwrap()); // Sat
        assert!(!cal.is_working_day(d(2024, 3, 17)).unwrap()); // Sun
        assert!(cal.is_working_day(d(2024, 3, 18)).unwrap()); // Mon
                                                              // Weekday public holiday.
        assert!(!cal.is_working_day(d(2024, 10, 1)).unwrap()); // Tue, National Day
                                                               // Weekend inside a holiday period stays a rest day.
        assert!(!cal.is_working_day(d(2024, 10, 5)).unwrap());
    }

    #[test]
    fn tiaoxiu_saturday_is_a_working_day() {
        let cal = Calendar::builtin();
        // Sat 2024-05-11 was made a working day for Labour Day 2024; the Saturday before was not.
        assert_eq!(d(2024, 5, 11).weekday(), Weekday::Sat);
        assert!(cal.is_working_day(d(2024, 5, 11)).unwrap());
        assert!(!cal.is_working_day(d(2024, 5, 4)).unwrap());
        // Sun 2024-02-18 after Spring Festival.
        assert!(cal.is_working_day(d(2024, 2, 18)).unwrap());
    }

    #[test]
    fn deadline_counts_tiaoxiu_and_skips_holidays() {
        let cal = parse(SMALL).unwrap();
        // Tue 04-30: 05-01..05-05 off; Mon 06 1, Tue 07 2, Wed 08 3, Thu 09 4, Fri 10 5, Sat 11 调休 6, Mon 13 7.
        assert_eq!(cal.deadline(d(2024, 4, 30)).unwrap(), d(2024, 5, 13));
        // Decided on the 调休 Saturday itself: that day is not counted.
        assert_eq!(cal.deadline(d(2024, 5, 11)).unwrap(), d(2024, 5, 21));
        assert_eq!(
            cal.nth_working_day_after(d(2024, 5, 10), 1).unwrap(),
            d(2024, 5, 11)
        );
        assert_eq!(
            cal.nth_working_day_after(d(2024, 5, 4), 0).unwrap(),
            d(2024, 5, 4)
        );
        // An empty year table still covers its year: plain weeks.
        assert_eq!(cal.deadline(d(2025, 12, 19)).unwrap(), d(2025, 12, 30));
    }

    #[test]
    fn outside_covered_years_is_an_explained_error() {
        let cal = parse(SMALL).unwrap();
        let err = cal.deadline(d(2025, 12, 26)).unwrap_err();
        match &err {
            CalendarError::NotCovered {
                date,
                first_year,
                last_year,
                file,
                calendar,
            } => {
                assert_eq!(*calendar, CalendarSource::File);
                assert_eq!(*date, d(2026, 1, 1));
                assert_eq!((*first_year, *last_year), (2024, 2025));
                assert_eq!(file, "test/cal.toml");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "test/cal.toml covers 2024–2025; 2026-01-01 is outside it: add a [2026] table to test/cal.toml \
             with that year's official holidays and 调休 working days"
        );
        assert!(matches!(
            cal.is_working_day(d(2023, 12, 29)),
            Err(CalendarError::NotCovered { .. })
        ));
        // The decision date itself must be covered.
        assert!(cal.deadline(d(2023, 12, 29)).is_err());
    }

    #[test]
    fn native_toml_dates_are_accepted() {
        let cal = parse("[2024]\nholidays = [2024-10-01]\nworkdays = [2024-10-12]\n").unwrap();
        assert!(!cal.is_working_day(d(2024, 10, 1)).unwrap());
        assert!(cal.is_working_day(d(2024, 10, 12)).unwrap());
    }

    #[test]
    fn syntax_error_names_the_file() {
        let msg = parse_err("[2024\nholidays = []");
        assert!(msg.contains("not valid TOML"), "{msg}");
    }

    #[test]
    fn empty_file_is_an_error() {
        assert!(matches!(
            parse("# nothing\n"),
            Err(CalendarError::Empty { .. })
        ));
    }

    #[test]
    fn unknown_top_level_key() {
        let msg = parse_err("version = 1\n[2024]\nholidays = []\nworkdays = []\n");
        assert!(msg.contains("`version`"), "{msg}");
        let msg = parse_err("[24]\nholidays = []\nworkdays = []\n");
        assert!(msg.contains("`24`"), "{msg}");
    }

    #[test]
    fn unknown_key_in_year() {
        let msg = parse_err("[2024]\nholidays = []\nworkdays = []\nholiday = [\"2024-10-01\"]\n");
        assert!(msg.contains("[2024]") && msg.contains("`holiday`"), "{msg}");
    }

    #[test]
    fn missing_key_in_year() {
        let msg = parse_err("[2024]\nholidays = []\n");
        assert!(
            msg.contains("[2024]") && msg.contains("`workdays`"),
            "{msg}"
        );
    }

    #[test]
    fn year_must_be_a_table_and_lists_must_be_lists() {
        assert!(matches!(
            parse("2024 = 1\n"),
            Err(CalendarError::NotATable { year: 2024, .. })
        ));
        let msg = parse_err("[2024]\nholidays = \"2024-10-01\"\nworkdays = []\n");
        assert!(msg.contains("[2024] holidays must be a list"), "{msg}");
    }

    #[test]
    fn bad_date_strings() {
        for bad in [
            "2024-13-01",
            "2024-02-30",
            "2024-1-1",
            "20240101",
            "Oct 1",
            " 2024-10-01",
        ] {
            let text = format!("[2024]\nholidays = [\"{bad}\"]\nworkdays = []\n");
            let msg = parse_err(&text);
            assert!(
                msg.contains("[2024] holidays") && msg.contains(bad) && msg.contains("YYYY-MM-DD"),
                "{bad}: {msg}"
            );
        }
        let msg = parse_err("[2024]\nholidays = [20241001]\nworkdays = []\n");
        assert!(msg.contains("20241001"), "{msg}");
    }

    #[test]
    fn date_in_the_wrong_year_table() {
        // Sat 2018-12-29 was a 调休 day for New Year 2019, but it belongs to [2018].
        let msg = parse_err("[2019]\nholidays = []\nworkdays = [\"2018-12-29\"]\n");
        assert!(
            msg.contains("[2019] workdays") && msg.contains("2018-12-29") && msg.contains("[2018]"),
            "{msg}"
        );
    }

    #[test]
    fn holiday_on_a_weekend_is_rejected() {
        let msg = parse_err("[2024]\nholidays = [\"2024-10-05\"]\nworkdays = []\n");
        assert!(msg.contains("2024-10-05 is a Sat"), "{msg}");
        assert!(matches!(
            parse("[2024]\nholidays = [\"2024-10-05\"]\nworkdays = []\n"),
            Err(CalendarError::HolidayOnWeekend { year: 2024, .. })
        ));
    }

    #[test]
    fn workday_on_a_weekday_is_rejected() {
        let msg = parse_err("[2024]\nholidays = []\nworkdays = [\"2024-10-08\"]\n");
        assert!(
            msg.contains("2024-10-08 is a Tue") && msg.contains("调休"),
            "{msg}"
        );
    }

    #[test]
    fn duplicates_are_rejected() {
        let msg = parse_err("[2024]\nholidays = [\"2024-10-01\", \"2024-10-01\"]\nworkdays = []\n");
        assert!(msg.contains("listed twice"), "{msg}");
    }

    #[test]
    fn years_must_be_consecutive() {
        let text = "[2024]\nholidays = []\nworkdays = []\n[2026]\nholidays = []\nworkdays = []\n";
        let msg = parse_err(text);
        assert!(msg.contains("no [2025] table"), "{msg}");
    }

    #[test]
    fn load_names_the_path() {
        let err = Calendar::load(Path::new("/nonexistent/dir/calendar.toml")).unwrap_err();
        assert!(matches!(err, CalendarError::Io { .. }));
        assert!(err.to_string().contains("/nonexistent/dir/calendar.toml"));
    }

    fn over_builtin(text: &str) -> Result<Calendar, CalendarError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calendar.toml");
        std::fs::write(&path, text).unwrap();
        Calendar::load_over_builtin(&path)
    }

    #[test]
    fn a_file_over_the_builtin_adds_to_its_years_and_keeps_the_others() {
        // The file's [2026] adds a made-up day off (and repeats a built-in one) to the built-in 2026: National
        // Day stays a holiday, and 2025 stays built in.
        let cal =
            over_builtin("[2026]\nholidays = [\"2026-12-30\", \"2026-10-01\"]\nworkdays = []\n")
                .unwrap();
        assert_eq!((cal.first_year(), cal.last_year()), (2018, 2026));
        assert!(!cal.is_working_day(d(2026, 12, 30)).unwrap());
        assert!(!cal.is_working_day(d(2026, 10, 1)).unwrap());
        assert!(!cal.is_working_day(d(2025, 10, 1)).unwrap());
        // the built-in 调休 working days of 2026 too
        assert!(cal.is_working_day(d(2026, 2, 14)).unwrap());
        // beyond it, the message names the file and the next year
        let err = cal.deadline(d(2026, 12, 28)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("the built-in calendar with ")
                && msg.contains("add a [2027] table to "),
            "{msg}"
        );
    }

    #[test]
    fn a_file_over_the_builtin_must_leave_no_gap_and_is_checked() {
        let err = over_builtin("[2028]\nholidays = [\"2028-01-03\"]\nworkdays = []\n").unwrap_err();
        assert!(
            matches!(err, CalendarError::MissingYear { year: 2027, .. }),
            "{err}"
        );
        let err = over_builtin("[2026]\nholidays = [\"2026-10-03\"]\nworkdays = []\n").unwrap_err();
        assert!(
            matches!(err, CalendarError::HolidayOnWeekend { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("calendar.toml"), "{err}");
    }

    /// A new year with no holidays — what the gap message once told to write (`holidays = []`) — made every
    /// weekday of the year a working day, and every deadline in it too early, without a word.
    #[test]
    fn a_new_year_without_holidays_over_the_builtin_is_refused() {
        let err = over_builtin(
            "[2027]\nholidays = []\nworkdays = []\n[2028]\nholidays = [\"2028-01-03\"]\nworkdays = []\n",
        )
        .unwrap_err();
        assert!(
            matches!(err, CalendarError::NoHolidays { year: 2027, .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("calendar.toml: [2027] lists no holidays"),
            "{err}"
        );
        // nothing to add to a built-in year is fine
        over_builtin("[2026]\nholidays = []\nworkdays = []\n").unwrap();
        let err = over_builtin("[2028]\nholidays = [\"2028-01-03\"]\nworkdays = []\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("add the [2027] table, with that year's"),
            "{err}"
        );
    }
}
