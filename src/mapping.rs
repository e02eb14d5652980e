//! Mapping files (`mappings/*.toml`): how a source record becomes a platform record, as data.
//!
//! A mapping names, for each target field, where its value comes from (source paths, a value from the config,
//! a constant), how it is converted (code table, date format, yuan → 万元, ID-number upgrade) and the rules the
//! platform applies to it (required for which party categories, checksums, length, code-table membership, date
//! order). The same file drives the connector's mapping and validation and the platform simulator's validation,
//! so both sides judge a record by identical rules. A second field set (the 2016 one) is another file, not code.
//!
//! Invariant: mapping never does I/O except `MappingSet::load_dir`, and `map` never panics on any source record.

use crate::findings::{Finding, FindingCode};
use crate::model::{FieldName, Kind, PlatformRecord, RecordKey};
use crate::source_schema::{SourcePath, SourceRecord, SourceValue};
use crate::validate;
use chrono::{Months, NaiveDate};
use rust_decimal::Decimal;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

/// A mapping file that cannot be used: which file, which line, what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum MappingError {
    // `error` is shown in the message and deliberately not a `#[source]`: `{:#}` would print it twice.
    #[error("cannot read mapping file {path} (from [mapping] dir): {error}")]
    Read { path: String, error: std::io::Error },
    #[error("{file}:{line}: {message}")]
    Invalid {
        file: String,
        line: usize,
        message: String,
    },
}

/// The output date format of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFormat {
    Slash,
    Dash,
}

impl DateFormat {
    pub fn format(self, d: NaiveDate) -> String {
        let mut out = String::with_capacity(10);
        self.format_into(d, &mut out);
        out
    }

    /// Appends the date in this format.
    pub fn format_into(self, d: NaiveDate, out: &mut String) {
        use chrono::Datelike;
        let sep = match self {
            DateFormat::Slash => b'/',
            DateFormat::Dash => b'-',
        };
        let (y, m, day) = (d.year(), d.month(), d.day());
        if !(0..=9999).contains(&y) {
            // Outside four digits `{:04}` keeps its own rules (sign, more digits); rare, so format! is fine.
            let sep = sep as char;
            let _ = write!(out, "{y:04}{sep}{m:02}{sep}{day:02}");
            return;
        }
        // Fast path (every mapped date): ten ASCII bytes, no formatting machinery.
        let y = y as u32;
        let digit = |n: u32| b'0' + (n % 10) as u8;
        let bytes = [
            digit(y / 1000),
            digit(y / 100),
            digit(y / 10),
            digit(y),
            sep,
            digit(m / 10),
            digit(m),
            sep,
            digit(day / 10),
            digit(day),
        ];
        out.reserve(bytes.len());
        out.extend(bytes.iter().map(|&b| char::from(b)));
    }
}

/// Values from the configuration that a mapping may use (`config = "agency.name"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConfigKey {
    AgencyName,
    AgencyCreditCode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Convert {
    None,
    Date,
    YuanToWan,
    IdNumber,
    Timestamp,
}

/// A checksum or format rule for a target field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Uscc,
    OrgCode,
    IdNumber,
    Date,
    Amount,
}

/// The agency's field (`[agency] domain`), which decides the minimum display period of its penalties
/// (reference §3.2). Only the names the rule knows are accepted: a misspelt or other name is refused when the
/// configuration is read, never taken for the 3-month minimum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum Domain {
    /// 安全生产 (work safety): at least 1 year.
    WorkSafety,
    /// 特种设备 (special equipment): at least 1 year.
    SpecialEquipment,
    /// 消防 (fire safety): at least 1 year.
    FireSafety,
    /// 其他: every other field, at least 3 months.
    #[default]
    Other,
}

impl Domain {
    pub const ALL: [Domain; 4] = [
        Domain::WorkSafety,
        Domain::SpecialEquipment,
        Domain::FireSafety,
        Domain::Other,
    ];

    pub fn parse(s: &str) -> Option<Domain> {
        let s = s.trim();
        Domain::ALL.into_iter().find(|d| d.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Domain::WorkSafety => "安全生产",
            Domain::SpecialEquipment => "特种设备",
            Domain::FireSafety => "消防",
            Domain::Other => "其他",
        }
    }

    /// The legal minimum display period in months.
    pub fn min_months(self) -> u32 {
        match self {
            Domain::WorkSafety | Domain::SpecialEquipment | Domain::FireSafety => 12,
            Domain::Other => 3,
        }
    }
}

impl std::fmt::Display for Domain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for Domain {
    type Error = String;
    fn try_from(s: String) -> Result<Domain, String> {
        Domain::parse(&s).ok_or_else(|| {
            format!(
                "`{s}` is not a domain dualpub knows; use one of \"安全生产\", \"特种设备\", \"消防\" (penalties \
                 displayed at least 1 year) or \"其他\" (at least 3 months; for every other field)"
            )
        })
    }
}

/// The legal window for a penalty's public display (CF_GSJZQ), in months from the decision date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayPolicy {
    pub domain: Domain,
    pub period_months: u32,
    pub min_months: u32,
    pub max_months: u32,
}

impl DisplayPolicy {
    /// The legal minimum for the agency's domain (reference §3.2): 1 year for 安全生产, 特种设备 and 消防,
    /// otherwise 3 months; the maximum is 3 years. `period_months` defaults to the minimum and is clamped.
    pub fn for_domain(domain: Domain, period_months: Option<u32>) -> DisplayPolicy {
        let min_months = domain.min_months();
        let max_months = 36;
        let period = period_months
            .unwrap_or(min_months)
            .clamp(min_months, max_months);
        DisplayPolicy {
            domain,
            period_months: period,
            min_months,
            max_months,
        }
    }

    /// CF_GSJZQ for a decision date when the source supplies none.
    pub fn display_until(&self, decided: NaiveDate) -> Option<NaiveDate> {
        decided.checked_add_months(Months::new(self.period_months))
    }

    /// The last day the law allows the record to be shown.
    pub fn latest(&self, decided: NaiveDate) -> Option<NaiveDate> {
        decided.checked_add_months(Months::new(self.max_months))
    }
}

impl Default for DisplayPolicy {
    fn default() -> Self {
        DisplayPolicy::for_domain(Domain::Other, None)
    }
}

/// What the configuration contributes to mapping: the data source unit and the display-period policy.
#[derive(Debug, Clone, Default)]
pub struct MappingContext {
    pub agency_name: Option<String>,
    pub agency_credit_code: Option<String>,
    pub display: DisplayPolicy,
    /// The day decisions are judged on (a decision date after it is a finding): `sync --today` / `reconcile
    /// --today`; `None` is today in China Standard Time by this machine's clock.
    pub today: Option<chrono::NaiveDate>,
}

/// The length limit of a field whose mapping gives none: the longest field of the standard. Without one, a value
/// of any length (a `其他-*` code carries the source's text through) could make a record bigger than the platform
/// takes in one message, and that message would be refused for ever.
pub const DEFAULT_MAX_LEN: usize = 2000;

/// A code table: source code → platform value, with `prefix*` rules.
#[derive(Debug, Clone, Default)]
pub struct CodeTable {
    /// Code → value, sorted by code with distinct codes. Tables are small (a few dozen rows), so a binary search
    /// over a sorted vector beats hashing the code on every lookup.
    exact: Vec<(String, String)>,
    prefix: Vec<(String, String)>,
    /// The exact rows' values, sorted and distinct.
    values: Vec<String>,
    value_prefixes: Vec<String>,
    /// Where each row was read (file, line), by code: for the load checks' messages.
    rows_at: BTreeMap<String, (Arc<str>, usize)>,
}

impl CodeTable {
    pub fn lookup(&self, code: &str) -> Option<String> {
        self.lookup_cow(code).map(Cow::into_owned)
    }

    /// As [`CodeTable::lookup`], borrowing the value when it is a row's value as is.
    pub fn lookup_cow(&self, code: &str) -> Option<Cow<'_, str>> {
        if let Ok(i) = self.exact.binary_search_by(|(k, _)| k.as_str().cmp(code)) {
            return Some(Cow::Borrowed(self.exact[i].1.as_str()));
        }
        for (p, out) in &self.prefix {
            if let Some(rest) = code.strip_prefix(p.as_str()) {
                if !rest.trim().is_empty() {
                    return Some(Cow::Owned(out.replacen('*', rest.trim(), 1)));
                }
            }
        }
        None
    }

    /// Whether a platform value belongs to the table.
    pub fn contains_value(&self, v: &str) -> bool {
        self.values.binary_search_by(|x| x.as_str().cmp(v)).is_ok()
            || self.value_prefixes.iter().any(|p| {
                v.strip_prefix(p.as_str())
                    .is_some_and(|rest| !rest.trim().is_empty())
            })
    }

    /// The platform values, for messages.
    pub fn value_list(&self) -> Vec<String> {
        let mut v: Vec<String> = self.values.clone();
        v.extend(self.value_prefixes.iter().map(|p| format!("{p}…")));
        v
    }
}

/// A condition on another field: equal to a value, or (for `;` lists) containing any of some values.
#[derive(Debug, Clone)]
pub struct Condition {
    pub field: FieldName,
    /// The index of `field` in the mapping's rules.
    pub index: usize,
    pub equals: Option<String>,
    pub contains_any: Vec<String>,
}

impl Condition {
    pub fn holds(&self, rec: &PlatformRecord) -> bool {
        self.holds_value(rec.get(&self.field).unwrap_or(""))
    }

    /// Judges the condition on the value of its field.
    pub fn holds_value(&self, v: &str) -> bool {
        if let Some(eq) = &self.equals {
            return v == eq;
        }
        v.split(';')
            .map(str::trim)
            .any(|part| self.contains_any.iter().any(|c| c == part))
    }
}

/// One target field of a mapping, compiled.
#[derive(Debug, Clone)]
pub struct FieldRule {
    pub name: FieldName,
    pub line: usize,
    sources: Vec<SourcePath>,
    config: Option<ConfigKey>,
    constant: Option<String>,
    default: Option<String>,
    table: Option<(String, Arc<CodeTable>)>,
    join: Option<String>,
    convert: Convert,
    display_period: bool,
    timestamp_format: Option<String>,
    pub required: bool,
    pub required_for: Vec<String>,
    pub required_if: Option<Condition>,
    pub applies_to: Option<Vec<String>>,
    pub check: Option<Check>,
    pub check_if: Option<Condition>,
    pub placeholder_for: Vec<String>,
    pub placeholder_requires: Option<FieldName>,
    pub one_of: Option<(String, Arc<CodeTable>)>,
    pub max_len: Option<usize>,
    pub not_before: Option<FieldName>,
    /// The holder of this ID number must be 18 or older on the decision date (a penalty on a minor must not be
    /// published, reference §3.4).
    pub forbid_minor: bool,
    /// A bare 其他 is not enough: the value must name the concrete category (许可类别, reference §2.3).
    pub other_must_name: bool,
    /// A number that names the record or its certificate (文书号, 许可编号): not searched for ID numbers in text
    /// (`id_in_text`). An all-digit 施工许可证 number can pass an ID number's check, and no one can reword a
    /// certificate's number.
    pub identifier: bool,
    /// Precomputed at load, so mapping and validation compare small integers instead of strings per record:
    /// `applies_to`, `required_for` and `placeholder_for` as ids into `Mapping::categories`, and the rule indexes
    /// of `placeholder_requires` and `not_before`.
    pub(crate) applies_ids: Option<Vec<u32>>,
    pub(crate) required_for_ids: Vec<u32>,
    pub(crate) placeholder_for_ids: Vec<u32>,
    pub(crate) placeholder_requires_index: Option<usize>,
    pub(crate) not_before_index: Option<usize>,
}

impl FieldRule {
    /// Whether the rule's list values are `;`-joined (then `one_of` and conditions look at each part).
    pub fn is_list(&self) -> bool {
        self.join.is_some()
    }

    pub fn applies(&self, category: Option<&str>) -> bool {
        match (&self.applies_to, category) {
            (Some(list), Some(c)) => list.iter().any(|x| x == c),
            _ => true,
        }
    }

    /// [`FieldRule::applies`] for a category resolved by [`Mapping::resolve_category`].
    #[inline]
    pub(crate) fn applies_to_category(&self, category: CategoryId) -> bool {
        match (&self.applies_ids, category) {
            (Some(ids), CategoryId::Listed(id)) => ids.contains(&id),
            (Some(_), CategoryId::Unlisted) => false,
            _ => true,
        }
    }
}

/// A record's party category, resolved once per record against the category names a mapping's rules mention
/// (`applies_to`, `required_for`, `placeholder_for`), so per-rule tests are integer compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CategoryId {
    /// The record has no category (or the field set has none).
    Absent,
    /// A category that no rule names: in no list.
    Unlisted,
    /// `Mapping::categories[id]`.
    Listed(u32),
}

impl CategoryId {
    /// Whether the category is one of `ids`.
    #[inline]
    pub(crate) fn is_in(self, ids: &[u32]) -> bool {
        matches!(self, CategoryId::Listed(id) if ids.contains(&id))
    }
}

/// A compiled mapping file for one kind.
#[derive(Debug, Clone)]
pub struct Mapping {
    pub kind: Kind,
    pub origin: String,
    pub date_format: DateFormat,
    /// The field holding the party category, when the field set has one (the 2016 set does not).
    pub category_field: Option<FieldName>,
    pub key_field: FieldName,
    pub fields: Vec<FieldRule>,
    pub tables: HashMap<String, CodeTable>,
    by_name: HashMap<FieldName, usize>,
    /// Rule indexes in ascending field-name order, the order of a `PlatformRecord`.
    sorted: Vec<usize>,
    /// The rule index of `category_field`.
    category_index: Option<usize>,
    /// The rule index of `decision_date_field`: the date birth dates in ID numbers are judged against.
    decision_date_index: Option<usize>,
    /// Every category name some rule mentions; `CategoryId::Listed` indexes it.
    categories: Vec<String>,
    /// Whether a required date rule reads the source's `decided_on`, so a missing or invalid decision date is
    /// always reported on its own field (and a display period derived from it need not be reported again).
    decision_date_reported: bool,
}

/// The files a `[mapping] dir` may hold, each used instead of the built-in one when it is there (`calendar.toml` is
/// read by `calendar`).
pub const DIR_FILES: [&str; 4] = ["permit.toml", "penalty.toml", "codes.toml", "calendar.toml"];

/// A mapping file built into the binary, by name.
pub(crate) fn builtin_file(name: &str) -> Option<&'static str> {
    match name {
        "permit.toml" => Some(include_str!("../mappings/permit.toml")),
        "penalty.toml" => Some(include_str!("../mappings/penalty.toml")),
        "codes.toml" => Some(include_str!("../mappings/codes.toml")),
        _ => None,
    }
}

/// Both kinds' mappings, as used by every command.
#[derive(Debug, Clone)]
pub struct MappingSet {
    pub permit: Mapping,
    pub penalty: Mapping,
    /// A digest (hex SHA-256) of every mapping and code-table file the set was read from, by name and text, built-in
    /// ones included: what `sync` compares to tell that the quarantine was judged under other mappings
    /// (`Config::validation_fingerprint`). Files the set does not read (the calendar, notes, editor backups) are not
    /// in it.
    pub fingerprint: String,
}

impl MappingSet {
    /// The mappings shipped in the binary (the national field set of `mappings/`).
    pub fn builtin() -> MappingSet {
        MappingSet::load_from(None)
            .map(|(set, _)| set)
            .expect("the built-in mapping files are tested and always load")
    }

    /// Loads `permit.toml` and `penalty.toml` and the code tables they name (`codes = "…"`) from a directory
    /// (`[mapping] dir`); each of [`DIR_FILES`] the directory lacks is the built-in one, so a directory may hold
    /// just the file it changes. The directory itself must exist (the caller checks, naming the key).
    pub fn load_dir(dir: &Path) -> Result<MappingSet, MappingError> {
        MappingSet::load_from(Some(dir)).map(|(set, _)| set)
    }

    /// [`MappingSet::load_dir`], with the names of the files it read from the directory, as the mappings give them
    /// (`permit.toml`, a `codes = "…"` file): the caller tells the operator about the directory's other files.
    pub fn load_dir_reporting_files(dir: &Path) -> Result<(MappingSet, Vec<String>), MappingError> {
        MappingSet::load_from(Some(dir))
    }

    fn load_from(dir: Option<&Path>) -> Result<(MappingSet, Vec<String>), MappingError> {
        use sha2::Digest;
        let read = std::cell::RefCell::new(Vec::new());
        let digest = std::cell::RefCell::new(sha2::Sha256::new());
        // A file of the directory, else the built-in file of that name.
        let read_file = |name: &str| -> Result<(String, String), MappingError> {
            if let Some(dir) = dir {
                let path = dir.join(name);
                match crate::read_settings_text(&path) {
                    Ok(text) => {
                        read.borrow_mut().push(name.to_string());
                        return Ok((path.display().to_string(), text));
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::NotFound
                            && builtin_file(name).is_some() => {}
                    Err(error) => {
                        return Err(MappingError::Read {
                            path: path.display().to_string(),
                            error,
                        })
                    }
                }
            }
            match builtin_file(name) {
                Some(text) => Ok((format!("mappings/{name}"), text.to_string())),
                None => Err(MappingError::Read {
                    path: name.to_string(),
                    error: std::io::ErrorKind::NotFound.into(),
                }),
            }
        };
        // Every file read, by name and text, into the set's fingerprint.
        let file = |name: &str| -> Result<(String, String), MappingError> {
            let (origin, text) = read_file(name)?;
            let mut d = digest.borrow_mut();
            for part in [name.as_bytes(), text.as_bytes()] {
                d.update((part.len() as u64).to_be_bytes());
                d.update(part);
            }
            Ok((origin, text))
        };
        let load = |want: Kind| -> Result<Mapping, MappingError> {
            let (origin, text) = file(&format!("{want}.toml"))?;
            let m = Mapping::from_str_with(&text, &origin, file)?;
            if m.kind != want {
                return Err(MappingError::Invalid {
                    file: m.origin.clone(),
                    line: key_line(&text, "kind"),
                    message: format!(
                        "this file must describe `kind = \"{want}\"`, but says `{}`",
                        m.kind
                    ),
                });
            }
            Ok(m)
        };
        let permit = load(Kind::Permit)?;
        let penalty = load(Kind::Penalty)?;
        let set = MappingSet {
            permit,
            penalty,
            fingerprint: hex::encode(digest.into_inner().finalize()),
        };
        Ok((set, read.into_inner()))
    }

    pub fn get(&self, kind: Kind) -> &Mapping {
        match kind {
            Kind::Permit => &self.permit,
            Kind::Penalty => &self.penalty,
        }
    }
}

// ---- the file format, as serde sees it ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    kind: String,
    #[serde(default)]
    date_format: Option<String>,
    #[serde(default)]
    category_field: Option<String>,
    key_field: String,
    #[serde(default)]
    decision_date_field: Option<String>,
    #[serde(default)]
    codes: Option<String>,
    #[serde(default)]
    tables: BTreeMap<String, BTreeMap<String, toml::Spanned<String>>>,
    #[serde(default, rename = "field")]
    fields: Vec<toml::Spanned<FieldSpec>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionSpec {
    field: String,
    #[serde(default)]
    equals: Option<String>,
    #[serde(default)]
    contains_any: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldSpec {
    name: String,
    #[serde(default)]
    from: Option<OneOrMany>,
    #[serde(default)]
    config: Option<String>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    table: Option<String>,
    #[serde(default)]
    join: Option<String>,
    #[serde(default)]
    convert: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    otherwise: Option<String>,
    #[serde(default)]
    required: Option<bool>,
    #[serde(default)]
    required_for: Option<Vec<String>>,
    #[serde(default)]
    required_if: Option<ConditionSpec>,
    #[serde(default)]
    applies_to: Option<Vec<String>>,
    #[serde(default)]
    check: Option<String>,
    #[serde(default)]
    check_if: Option<ConditionSpec>,
    #[serde(default)]
    placeholder_for: Option<Vec<String>>,
    #[serde(default)]
    placeholder_requires: Option<String>,
    #[serde(default)]
    one_of: Option<String>,
    #[serde(default)]
    max_len: Option<usize>,
    #[serde(default)]
    not_before: Option<String>,
    #[serde(default)]
    forbid_minor: Option<bool>,
    #[serde(default)]
    other_must_name: Option<bool>,
    #[serde(default)]
    identifier: Option<bool>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of a top-level `key = …` of a mapping file (1 when it is not found): the top-level keys are read
/// without their spans.
fn key_line(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

/// Turns a toml error into file:line: message.
fn toml_error(file: &str, text: &str, e: toml::de::Error) -> MappingError {
    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
    MappingError::Invalid {
        file: file.to_string(),
        line,
        message: e.message().trim().to_string(),
    }
}

fn parse_tables(
    file: &str,
    text: &str,
    into: &mut HashMap<String, CodeTable>,
) -> Result<(), MappingError> {
    let raw: BTreeMap<String, BTreeMap<String, toml::Spanned<String>>> =
        toml::from_str(text).map_err(|e| toml_error(file, text, e))?;
    add_tables(file, text, raw, into)
}

fn add_tables(
    file: &str,
    text: &str,
    raw: BTreeMap<String, BTreeMap<String, toml::Spanned<String>>>,
    into: &mut HashMap<String, CodeTable>,
) -> Result<(), MappingError> {
    let origin: Arc<str> = Arc::from(file);
    for (name, rows) in raw {
        if let Some((at, _)) = into.get(&name).and_then(|t| t.rows_at.values().next()) {
            // A mapping file's [tables.NAME] adds a table; one of the code-table file's name replaced it whole,
            // without a word (every code it lacked became `code_unknown`).
            let header = format!("[tables.{name}]");
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with(&header))
                .map_or(1, |i| i + 1);
            return Err(MappingError::Invalid {
                file: file.to_string(),
                line,
                message: format!(
                    "code table [{name}] is already in {at}; [tables.{name}] in a mapping file adds a table of its own, it does not replace or extend one: give it another name, or change {at}"
                ),
            });
        }
        let mut t = CodeTable::default();
        for (code, value) in rows {
            let line = line_of(text, value.span().start);
            let value = value.into_inner();
            let err = |message: String| MappingError::Invalid {
                file: file.to_string(),
                line,
                message: format!("code table [{name}]: {message}"),
            };
            if value.trim().is_empty() {
                return Err(err(format!("code `{code}` maps to an empty value")));
            }
            // A space around a code never matches the source's code (every record with it would be quarantined
            // `code_unknown`), and one around a value is sent as it is (not a value of the standard's tables).
            if code.trim() != code || code.is_empty() {
                return Err(err(format!(
                    "code `{code}` has a space around it (or is empty), so no source code matches it; write `{}`",
                    code.trim()
                )));
            }
            if value.trim() != value {
                return Err(err(format!(
                    "code `{code}` maps to `{value}`, with a space around it that would be sent to the platform; write `{}`",
                    value.trim()
                )));
            }
            t.rows_at.insert(code.clone(), (origin.clone(), line));
            if let Some(p) = code.strip_suffix('*') {
                let vp = value.split('*').next().unwrap_or("").to_string();
                t.value_prefixes.push(vp);
                t.prefix.push((p.to_string(), value));
            } else {
                t.values.push(value.clone());
                // `rows` is a BTreeMap: codes arrive sorted and distinct, as `lookup_cow` needs.
                t.exact.push((code, value));
            }
        }
        t.values.sort();
        t.values.dedup();
        into.insert(name, t);
    }
    Ok(())
}

/// 许可类别 in the standard's order (reference §2.3); reports list these first, even at 0.
pub const PERMIT_CATEGORIES: [&str; 6] = ["普通", "特许", "认可", "核准", "登记", "其他"];

/// 处罚类别 in the order of 行政处罚法 (2021) art. 9 (reference §2.4); reports list these first, even at 0.
pub const PENALTY_CATEGORIES: [&str; 14] = [
    "警告",
    "通报批评",
    "罚款",
    "没收违法所得",
    "没收非法财物",
    "暂扣许可证件",
    "降低资质等级",
    "吊销许可证件",
    "限制开展生产经营活动",
    "责令停产停业",
    "责令关闭",
    "限制从业",
    "行政拘留",
    "其他",
];
/// The code tables of the national field set (reference §2), by the target fields that carry them: a code table
/// that translates into one of these fields may map only to these values (a typo in a value, say 法人及非法人组识,
/// was sent as it was, and the record lost every rule of its party category). `true`: a `其他-…` value naming the
/// concrete kind is one of them too. Fields of other field sets (the 2016 one: XK_SPLB, CF_CFLB1) are not checked.
const NATIONAL_VALUES: &[(&[&str], &[&str], bool)] = &[
    (
        &["XK_XDR_LB", "CF_XDR_LB"],
        &["法人及非法人组织", "自然人", "个体工商户"],
        false,
    ),
    (
        &["XK_FR_ZJLX", "XK_XDR_ZJLX", "CF_FR_ZJLX", "CF_XDR_ZJLX"],
        &[
            "身份证",
            "护照号",
            "港澳居民来往内地通行证",
            "台湾居民来往大陆通行证",
            "外国人永久居留身份证",
        ],
        true,
    ),
    (&["XK_XKLB"], &PERMIT_CATEGORIES, true),
    (&["CF_CFLB"], &PENALTY_CATEGORIES, false),
];

/// Checks the values a national field can receive from its code table or constant (see [`NATIONAL_VALUES`]).
fn check_national_values(file: &str, rule: &FieldRule) -> Result<(), MappingError> {
    let Some((_, values, other_named)) = NATIONAL_VALUES
        .iter()
        .find(|(fields, _, _)| fields.contains(&&*rule.name))
    else {
        return Ok(());
    };
    let named = |v: &str| {
        *other_named
            && v.strip_prefix("其他-")
                .is_some_and(|rest| !rest.trim().is_empty())
    };
    let fits = |v: &str| values.contains(&v) || named(v);
    let expected = || {
        let mut s = values.join(", ");
        if *other_named {
            s.push_str(", 其他-<name>");
        }
        s
    };
    if let Some(v) = &rule.constant {
        if !fits(v) {
            return Err(MappingError::Invalid {
                file: file.to_string(),
                line: rule.line,
                message: format!(
                    "field {}: value = \"{v}\" is not a value of the national code table ({})",
                    rule.name,
                    expected()
                ),
            });
        }
    }
    if let Some((tname, table)) = &rule.table {
        // Exact rows, then prefix rules (`OTHER:*` = `其他-*`: the source's text goes in for `*`).
        let exact = table.exact.iter().map(|(c, v)| (c.clone(), v, fits(v)));
        let prefix = table.prefix.iter().map(|(p, v)| {
            let ok = match v.split_once('*') {
                Some((head, _)) => *other_named && head.starts_with("其他-"),
                None => fits(v),
            };
            (format!("{p}*"), v, ok)
        });
        for (code, value, ok) in exact.chain(prefix) {
            if ok {
                continue;
            }
            let (at_file, at_line) = table
                .rows_at
                .get(&code)
                .map(|(f, l)| (f.to_string(), *l))
                .unwrap_or_else(|| (file.to_string(), rule.line));
            return Err(MappingError::Invalid {
                file: at_file,
                line: at_line,
                message: format!(
                    "code table [{tname}]: code `{code}` maps to `{value}`, which is not a value of the national code table of {} ({}); {file}:{} sends it",
                    rule.name,
                    expected(),
                    rule.line
                ),
            });
        }
    }
    Ok(())
}

impl Mapping {
    /// Parses a mapping from text; `read_codes` supplies the code-table file named by `codes = "…"`.
    pub fn from_str_with(
        text: &str,
        file: &str,
        read_codes: impl Fn(&str) -> Result<(String, String), MappingError>,
    ) -> Result<Mapping, MappingError> {
        let spec: FileSpec = toml::from_str(text).map_err(|e| toml_error(file, text, e))?;
        let err = |line: usize, message: String| MappingError::Invalid {
            file: file.to_string(),
            line,
            message,
        };
        let kind = Kind::parse(&spec.kind).ok_or_else(|| {
            err(
                key_line(text, "kind"),
                format!(
                    "kind = \"{}\": expected \"permit\" or \"penalty\"",
                    spec.kind
                ),
            )
        })?;
        let date_format = match spec.date_format.as_deref() {
            None | Some("YYYY/MM/DD") => DateFormat::Slash,
            Some("YYYY-MM-DD") => DateFormat::Dash,
            Some(other) => {
                return Err(err(
                    key_line(text, "date_format"),
                    format!("date_format = \"{other}\": expected \"YYYY/MM/DD\" or \"YYYY-MM-DD\""),
                ))
            }
        };
        let mut tables = HashMap::new();
        if let Some(codes) = &spec.codes {
            let (cfile, ctext) = read_codes(codes)?;
            parse_tables(&cfile, &ctext, &mut tables)?;
        }
        add_tables(file, text, spec.tables, &mut tables)?;

        let mut fields: Vec<FieldRule> = Vec::new();
        let mut by_name: HashMap<FieldName, usize> = HashMap::new();
        for spanned in &spec.fields {
            let line = line_of(text, spanned.span().start);
            let f = spanned.get_ref();
            let e = |m: String| err(line, format!("field {}: {m}", f.name));
            let name = f.name.trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(err(
                    line,
                    format!("field name `{}` must be letters, digits and _ only", f.name),
                ));
            }
            let name: FieldName = Arc::from(name);
            if by_name.contains_key(&name) {
                return Err(e("this field is defined twice".into()));
            }
            let sources = match &f.from {
                None => vec![],
                Some(OneOrMany::One(s)) => vec![s.clone()],
                Some(OneOrMany::Many(v)) => v.clone(),
            };
            let sources = sources
                .iter()
                .map(|s| {
                    SourcePath::parse(s.trim()).ok_or_else(|| {
                        let known: Vec<&str> = SourcePath::ALL.iter().map(|p| p.as_str()).collect();
                        e(format!(
                            "unknown source path `{s}`; known paths: {}",
                            known.join(", ")
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let config = match f.config.as_deref() {
                None => None,
                Some("agency.name") => Some(ConfigKey::AgencyName),
                Some("agency.credit_code") => Some(ConfigKey::AgencyCreditCode),
                Some(other) => {
                    return Err(e(format!(
                        "config = \"{other}\": expected \"agency.name\" or \"agency.credit_code\""
                    )))
                }
            };
            if sources.is_empty() && config.is_none() && f.value.is_none() && f.otherwise.is_none()
            {
                return Err(e(
                    "says nowhere where its value comes from: give `from`, `config` or `value`"
                        .into(),
                ));
            }
            let convert = match f.convert.as_deref() {
                None => Convert::None,
                Some("date") => Convert::Date,
                Some("yuan_to_wan") => Convert::YuanToWan,
                Some("id_number") => Convert::IdNumber,
                Some("timestamp") => Convert::Timestamp,
                Some(other) => {
                    return Err(e(format!(
                        "convert = \"{other}\": expected one of date, yuan_to_wan, id_number, timestamp"
                    )))
                }
            };
            let display_period = match f.otherwise.as_deref() {
                None => false,
                Some("display_period") => true,
                Some(other) => {
                    return Err(e(format!(
                        "otherwise = \"{other}\": expected \"display_period\""
                    )))
                }
            };
            let check = match f.check.as_deref() {
                None => None,
                Some("uscc") => Some(Check::Uscc),
                Some("org_code") => Some(Check::OrgCode),
                Some("id_number") => Some(Check::IdNumber),
                Some("date") => Some(Check::Date),
                Some("amount") => Some(Check::Amount),
                Some(other) => {
                    return Err(e(format!(
                    "check = \"{other}\": expected one of uscc, org_code, id_number, date, amount"
                )))
                }
            };
            // Lists are checked (one_of) and tested (required_if, check_if) as `;`-separated, as the standard
            // writes them: another separator (a full-width `；`) put every record of several values in
            // quarantine as `code_unknown`.
            if let Some(j) = f.join.as_deref().filter(|j| *j != ";") {
                return Err(e(format!(
                    "join = \"{j}\": lists are joined with \";\" (the standard's separator, the one the checks split on)"
                )));
            }
            for t in [&f.table, &f.one_of].into_iter().flatten() {
                if !tables.contains_key(t) {
                    let mut known: Vec<&String> = tables.keys().collect();
                    known.sort();
                    return Err(e(format!(
                        "unknown code table `{t}`; known tables: {known:?}"
                    )));
                }
            }
            let rule = FieldRule {
                name: name.clone(),
                line,
                sources,
                config,
                constant: f.value.clone(),
                default: f.default.clone(),
                table: f
                    .table
                    .as_ref()
                    .map(|t| (t.clone(), Arc::new(tables[t].clone()))),
                join: f.join.clone(),
                convert,
                display_period,
                timestamp_format: f.format.clone(),
                required: f.required.unwrap_or(false),
                required_for: f.required_for.clone().unwrap_or_default(),
                required_if: None,
                applies_to: f.applies_to.clone(),
                check,
                check_if: None,
                placeholder_for: f.placeholder_for.clone().unwrap_or_default(),
                placeholder_requires: f.placeholder_requires.as_deref().map(Arc::from),
                one_of: f
                    .one_of
                    .as_ref()
                    .map(|t| (t.clone(), Arc::new(tables[t].clone()))),
                max_len: Some(f.max_len.unwrap_or(DEFAULT_MAX_LEN)),
                not_before: f.not_before.as_deref().map(Arc::from),
                forbid_minor: f.forbid_minor.unwrap_or(false),
                other_must_name: f.other_must_name.unwrap_or(false),
                identifier: f.identifier.unwrap_or(false),
                applies_ids: None,
                required_for_ids: Vec::new(),
                placeholder_for_ids: Vec::new(),
                placeholder_requires_index: None,
                not_before_index: None,
            };
            by_name.insert(name, fields.len());
            fields.push(rule);
        }
        // Second pass: references to other fields must name fields of this mapping.
        for (spanned, rule) in spec.fields.iter().zip(fields.iter_mut()) {
            let f = spanned.get_ref();
            let line = rule.line;
            let known = |n: &str| -> Result<FieldName, MappingError> {
                by_name
                    .get_key_value(n)
                    .map(|(k, _)| k.clone())
                    .ok_or_else(|| {
                        err(
                            line,
                            format!(
                                "field {}: refers to `{n}`, which this mapping does not define",
                                f.name
                            ),
                        )
                    })
            };
            let cond = |c: &ConditionSpec| -> Result<Condition, MappingError> {
                if c.equals.is_none() == c.contains_any.is_none() {
                    return Err(err(
                        line,
                        format!(
                            "field {}: a condition needs exactly one of `equals`, `contains_any`",
                            f.name
                        ),
                    ));
                }
                let field = known(&c.field)?;
                Ok(Condition {
                    index: by_name[&field],
                    field,
                    equals: c.equals.clone(),
                    contains_any: c.contains_any.clone().unwrap_or_default(),
                })
            };
            rule.required_if = f.required_if.as_ref().map(cond).transpose()?;
            rule.check_if = f.check_if.as_ref().map(cond).transpose()?;
            if let Some(n) = &f.placeholder_requires {
                rule.placeholder_requires_index = Some(by_name[&known(n)?]);
            }
            if let Some(n) = &f.not_before {
                rule.not_before_index = Some(by_name[&known(n)?]);
            }
        }
        // Category names as ids (see `CategoryId`).
        let mut categories: Vec<String> = Vec::new();
        let mut ids_of = |names: &[String]| -> Vec<u32> {
            names
                .iter()
                .map(|n| match categories.iter().position(|c| c == n) {
                    Some(i) => i as u32,
                    None => {
                        categories.push(n.clone());
                        (categories.len() - 1) as u32
                    }
                })
                .collect()
        };
        for rule in &mut fields {
            rule.applies_ids = rule.applies_to.as_deref().map(&mut ids_of);
            rule.required_for_ids = ids_of(&rule.required_for);
            rule.placeholder_for_ids = ids_of(&rule.placeholder_for);
        }
        let category_field: Option<FieldName> = match &spec.category_field {
            None => None,
            Some(c) => Some(
                by_name
                    .get_key_value(c.as_str())
                    .map(|(k, _)| k.clone())
                    .ok_or_else(|| {
                        err(
                            key_line(text, "category_field"),
                            format!("category_field = \"{c}\" is not a field of this mapping"),
                        )
                    })?,
            ),
        };
        let key_field: FieldName = by_name
            .get_key_value(spec.key_field.as_str())
            .map(|(k, _)| k.clone())
            .ok_or_else(|| {
                err(
                    key_line(text, "key_field"),
                    format!(
                        "key_field = \"{}\" is not a field of this mapping",
                        spec.key_field
                    ),
                )
            })?;
        let mut sorted: Vec<usize> = (0..fields.len()).collect();
        sorted.sort_by(|&a, &b| fields[a].name.cmp(&fields[b].name));
        let category_index = category_field.as_ref().map(|f| by_name[f]);
        let decision_date_index = match &spec.decision_date_field {
            None => None,
            Some(d) => Some(*by_name.get(d.as_str()).ok_or_else(|| {
                err(
                    key_line(text, "decision_date_field"),
                    format!("decision_date_field = \"{d}\" is not a field of this mapping"),
                )
            })?),
        };
        if let Some(r) = fields.iter().find(|r| r.forbid_minor) {
            if decision_date_index.is_none() || r.check != Some(Check::IdNumber) {
                return Err(err(
                    r.line,
                    format!(
                        "field {}: forbid_minor needs check = \"id_number\" and the file's decision_date_field",
                        r.name
                    ),
                ));
            }
        }
        // Values named in rules must be values the fields can hold: a party category in `applies_to` /
        // `required_for` / `placeholder_for` that the category field's code table cannot give (a typo on either
        // side) silently dropped the rule — a required field became optional, or a field was left out.
        let table_of = |r: &FieldRule| r.one_of.clone().or_else(|| r.table.clone());
        let category_table = category_index.and_then(|i| table_of(&fields[i]));
        for rule in &fields {
            check_national_values(file, rule)?;
            if let Some((tname, table)) = &category_table {
                let lists = [
                    ("applies_to", rule.applies_to.as_deref().unwrap_or_default()),
                    ("required_for", &rule.required_for[..]),
                    ("placeholder_for", &rule.placeholder_for[..]),
                ];
                for (key, names) in lists {
                    if let Some(n) = names.iter().find(|n| !table.contains_value(n)) {
                        return Err(err(
                            rule.line,
                            format!(
                                "field {}: {key} names `{n}`, which code table [{tname}] of the category field cannot give (its values: {})",
                                rule.name,
                                table.value_list().join(", ")
                            ),
                        ));
                    }
                }
            }
            for (key, cond) in [
                ("required_if", &rule.required_if),
                ("check_if", &rule.check_if),
            ] {
                let Some(c) = cond else { continue };
                let Some((tname, table)) = table_of(&fields[c.index]) else {
                    continue;
                };
                let named = c.equals.iter().chain(c.contains_any.iter());
                if let Some(v) = named.into_iter().find(|v| !table.contains_value(v)) {
                    return Err(err(
                        rule.line,
                        format!(
                            "field {}: {key} tests {} for `{v}`, which its code table [{tname}] cannot give (its values: {})",
                            rule.name,
                            c.field,
                            table.value_list().join(", ")
                        ),
                    ));
                }
            }
        }
        let decision_date_reported = fields.iter().any(|r| {
            r.required
                && r.convert == Convert::Date
                && r.sources.first() == Some(&SourcePath::DecidedOn)
        });
        Ok(Mapping {
            decision_date_index,
            decision_date_reported,
            category_index,
            categories,
            kind,
            origin: file.to_string(),
            date_format,
            category_field,
            key_field,
            fields,
            tables,
            by_name,
            sorted,
        })
    }

    pub fn rule_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn rule(&self, name: &str) -> Option<&FieldRule> {
        self.by_name.get(name).map(|&i| &self.fields[i])
    }

    /// Resolves a party category value to its id among the names the rules mention.
    pub(crate) fn resolve_category(&self, category: Option<&str>) -> CategoryId {
        match category {
            None => CategoryId::Absent,
            Some(c) => match self.categories.iter().position(|x| x == c) {
                Some(i) => CategoryId::Listed(i as u32),
                None => CategoryId::Unlisted,
            },
        }
    }

    /// The rule index of `category_field`.
    pub(crate) fn category_index(&self) -> Option<usize> {
        self.category_index
    }

    /// The rule index of `decision_date_field`.
    pub(crate) fn decision_date_index(&self) -> Option<usize> {
        self.decision_date_index
    }

    /// Maps and validates one source record. Never panics; every problem becomes a finding.
    pub fn map(&self, ctx: &MappingContext, src: &SourceRecord) -> Mapped {
        thread_local! {
            /// The values of the record being mapped, back to back (kept between records: no allocation).
            static SCRATCH: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
        }
        let mut buf = SCRATCH.take();
        buf.clear();
        let mapped = self.map_with(ctx, src, &mut buf);
        SCRATCH.set(buf);
        mapped
    }

    fn map_with(&self, ctx: &MappingContext, src: &SourceRecord, buf: &mut String) -> Mapped {
        let mut findings = Vec::new();
        // Per rule: where its value is in `buf`, and whether mapping already reported a problem with it. On the
        // stack for any ordinary field set, on the heap beyond that.
        const STACK: usize = 64;
        let n = self.fields.len();
        let (mut slots_stack, mut failed_stack) = ([None; STACK], [false; STACK]);
        let (mut slots_heap, mut failed_heap) = (Vec::new(), Vec::new());
        let (slots, failed): (&mut [Option<Span>], &mut [bool]) = if n <= STACK {
            (&mut slots_stack[..n], &mut failed_stack[..n])
        } else {
            slots_heap.resize(n, None);
            failed_heap.resize(n, false);
            (&mut slots_heap, &mut failed_heap)
        };

        // `buf` becomes the record's text: the category's value first (it decides which fields apply, so it is
        // mapped before the rest), then `name value` per field in name order — so the record is one copy of
        // `buf` past the category's value, not one copy per name and per value.
        let mut category = CategoryId::Absent;
        if let Some(ci) = self.category_index {
            slots[ci] = self.produce(ci, ctx, src, &mut findings, failed, buf);
            category = self.resolve_category(slots[ci].map(|s| s.of(buf)));
        }
        let text_start = buf.len();
        let mut fields = 0;
        for &i in &self.sorted {
            let rule = &self.fields[i];
            let category_value = match self.category_index {
                Some(ci) if ci == i => Some(slots[i]),
                _ => None,
            };
            if category_value.is_none() && !rule.applies_to_category(category) {
                continue;
            }
            let name_start = buf.len();
            buf.push_str(&rule.name);
            let span = match category_value {
                Some(Some(s)) => {
                    let start = buf.len();
                    // (`String::extend_from_within` needs Rust 1.87.) A category value is a short code-table
                    // value, copied through the stack; a long one through the heap.
                    let value = s.of(buf);
                    let mut tmp = [0u8; 64];
                    match tmp.get_mut(..value.len()) {
                        Some(t) => {
                            t.copy_from_slice(value.as_bytes());
                            buf.push_str(std::str::from_utf8(t).unwrap_or_default());
                        }
                        None => {
                            let v = value.to_owned();
                            buf.push_str(&v);
                        }
                    }
                    Some(Span(start as u32, buf.len() as u32))
                }
                Some(None) => None,
                None => self.produce(i, ctx, src, &mut findings, failed, buf),
            };
            match span {
                Some(s) if s.1 > s.0 => {
                    slots[i] = span;
                    fields += 1;
                }
                // No value, or an empty one: the record leaves the field out (validation still sees the empty
                // value).
                _ => {
                    buf.truncate(name_start);
                    let empty = Span(name_start as u32, name_start as u32);
                    slots[i] = span.map(|_| empty);
                }
            }
        }
        let values = validate::Slots {
            text: buf,
            spans: slots,
        };
        let today = ctx.today.unwrap_or_else(crate::model::today_cst);
        validate::validate_slots(self, &values, category, failed, today, &mut findings);
        // Per field in name order: where its name and its value end, counted from the record text's start.
        let mut spans = Vec::with_capacity(fields);
        for &i in &self.sorted {
            if let Some(s) = slots[i].filter(|s| s.1 > s.0 && s.0 as usize >= text_start) {
                spans.push((s.0 - text_start as u32, s.1 - text_start as u32));
            }
        }
        let record = PlatformRecord::from_parts(buf[text_start..].to_string(), spans);

        let sender = ctx
            .agency_credit_code
            .as_deref()
            .or_else(|| {
                src.authority
                    .as_ref()
                    .and_then(|a| a.credit_code.as_deref())
            })
            .unwrap_or("");
        let key = RecordKey::new(self.kind, sender, record.get(&self.key_field).unwrap_or("")).ok();
        Mapped {
            record,
            key,
            findings,
        }
    }

    /// Computes one field's value from the source into `buf`; conversion problems become findings.
    ///
    /// Values are borrowed from the rule, the context or the source until they are appended to `buf`, so a field
    /// costs no allocation of its own.
    fn produce(
        &self,
        index: usize,
        ctx: &MappingContext,
        src: &SourceRecord,
        findings: &mut Vec<Finding>,
        failed: &mut [bool],
        buf: &mut String,
    ) -> Option<Span> {
        let start = buf.len();
        let done = |buf: &String| Some(Span(start as u32, buf.len() as u32));
        let rule = &self.fields[index];
        let mut raw: Option<&str> = rule.constant.as_deref();
        if raw.is_none() {
            raw = match rule.config {
                Some(ConfigKey::AgencyName) => ctx.agency_name.as_deref(),
                Some(ConfigKey::AgencyCreditCode) => ctx.agency_credit_code.as_deref(),
                None => None,
            }
            .filter(|s| !crate::model::trim(s).is_empty());
        }
        if raw.is_none() {
            for path in &rule.sources {
                match path.get(src) {
                    SourceValue::Absent => {}
                    SourceValue::Text(t) => {
                        let t = crate::model::trim(t);
                        if !t.is_empty() {
                            raw = Some(t);
                            break;
                        }
                    }
                    SourceValue::List(items) => {
                        let mut items = items
                            .iter()
                            .map(|s| crate::model::trim(s))
                            .filter(|s| !s.is_empty())
                            .peekable();
                        if items.peek().is_none() {
                            continue;
                        }
                        let sep = rule.join.as_deref().unwrap_or(";");
                        let mut out: Vec<Cow<'_, str>> =
                            Vec::with_capacity(items.size_hint().1.unwrap_or(0));
                        for it in items {
                            match &rule.table {
                                Some(t) => match t.1.lookup_cow(it) {
                                    Some(v) => {
                                        if !out.contains(&v) {
                                            out.push(v)
                                        }
                                    }
                                    None => {
                                        findings.push(validate::code_unknown(
                                            &rule.name,
                                            path.as_str(),
                                            it,
                                            &t.1,
                                        ));
                                        failed[index] = true;
                                        return None;
                                    }
                                },
                                None => out.push(Cow::Borrowed(it)),
                            }
                        }
                        for (i, v) in out.iter().enumerate() {
                            if i > 0 {
                                buf.push_str(sep);
                            }
                            buf.push_str(v);
                        }
                        return done(buf);
                    }
                }
            }
        }
        if raw.is_none() {
            raw = rule.default.as_deref();
        }
        let Some(raw) = raw else {
            if rule.display_period {
                let Some(d) = self.computed_display_until(ctx, src) else {
                    // No decision date to count from: that date's own finding (required / date_invalid) says
                    // what to fix; "display period empty" would only repeat it.
                    if self.decision_date_reported
                        && src
                            .decided_on
                            .as_deref()
                            .and_then(parse_source_date)
                            .is_none()
                    {
                        failed[index] = true;
                    }
                    return None;
                };
                self.date_format.format_into(d, buf);
                return done(buf);
            }
            return None;
        };
        let path = rule.sources.first().map(|p| p.as_str()).unwrap_or("config");
        let value: Cow<'_, str> = match &rule.table {
            Some(t) => match t.1.lookup_cow(raw) {
                Some(v) => v,
                None => {
                    findings.push(validate::code_unknown(&rule.name, path, raw, &t.1));
                    failed[index] = true;
                    return None;
                }
            },
            None => Cow::Borrowed(raw),
        };
        let converted: Result<(), Finding> = match rule.convert {
            Convert::None => {
                buf.push_str(&value);
                Ok(())
            }
            Convert::Date => match parse_source_date(&value) {
                Some(d) if rule.display_period => self
                    .judge_display_until(ctx, src, &rule.name, d)
                    .map(|d| self.date_format.format_into(d, buf)),
                Some(d) => {
                    self.date_format.format_into(d, buf);
                    Ok(())
                }
                None => Err(validate::date_invalid(&rule.name, path, &value)),
            },
            Convert::YuanToWan => match yuan_to_wan(&value) {
                Ok(v) => {
                    buf.push_str(&v);
                    Ok(())
                }
                Err(code) => Err(validate::amount_problem(code, &rule.name, path, &value)),
            },
            Convert::IdNumber => {
                // Only a 居民身份证号 has a legacy 15-digit form (reference §4.3); a passport or other document
                // number of 15 digits is kept as given.
                if self.check_condition_holds(rule, ctx, src) {
                    buf.push_str(&upgrade_id_number(value));
                } else {
                    buf.push_str(&value);
                }
                Ok(())
            }
            Convert::Timestamp => match chrono::DateTime::parse_from_rfc3339(&value) {
                Ok(t) => {
                    let t = t.with_timezone(&crate::model::china_offset());
                    match rule.timestamp_format.as_deref() {
                        None => write_timestamp(&t, buf),
                        Some(f) => {
                            let _ = write!(buf, "{}", t.format(f));
                        }
                    }
                    Ok(())
                }
                Err(_) => Err(validate::date_invalid(&rule.name, path, &value)),
            },
        };
        match converted {
            Ok(()) => {
                self.normalise_identifier(rule, ctx, src, start, buf);
                done(buf)
            }
            Err(f) => {
                buf.truncate(start);
                findings.push(f);
                failed[index] = true;
                None
            }
        }
    }

    /// Whether the rule's `check_if` (e.g. `XK_FR_ZJLX` equals 身份证) holds for the record being mapped; true
    /// without one. Fields are produced in name order, so the condition's field (XK_FR_ZJLX) may not be mapped
    /// yet when its subject (XK_FR_ZJHM) is: its value is worked out from the source here.
    fn check_condition_holds(
        &self,
        rule: &FieldRule,
        ctx: &MappingContext,
        src: &SourceRecord,
    ) -> bool {
        rule.check_if
            .as_ref()
            .is_none_or(|c| c.holds_value(&self.peek(c.index, ctx, src).unwrap_or_default()))
    }

    /// The value a plain (not list, not converted) field maps to, without writing it anywhere.
    fn peek<'a>(
        &'a self,
        index: usize,
        ctx: &'a MappingContext,
        src: &'a SourceRecord,
    ) -> Option<Cow<'a, str>> {
        let rule = &self.fields[index];
        let nonempty = |s: &'a str| Some(crate::model::trim(s)).filter(|t| !t.is_empty());
        let raw = rule
            .constant
            .as_deref()
            .or_else(|| {
                match rule.config {
                    Some(ConfigKey::AgencyName) => ctx.agency_name.as_deref(),
                    Some(ConfigKey::AgencyCreditCode) => ctx.agency_credit_code.as_deref(),
                    None => None,
                }
                .and_then(nonempty)
            })
            .or_else(|| {
                rule.sources.iter().find_map(|p| match p.get(src) {
                    SourceValue::Text(t) => nonempty(t),
                    _ => None,
                })
            })
            .or(rule.default.as_deref())?;
        match &rule.table {
            Some(t) => t.1.lookup_cow(raw),
            None => Some(Cow::Borrowed(raw)),
        }
    }

    /// A valid identifier is pushed in its normal form, the one its check judges: an 组织机构代码 printed
    /// `MA1B3N1N-2` as the field's 9 characters `MA1B3N1N2`, an ID number typed with a lower-case `x` with `X`.
    /// An invalid one is left as given, for its finding to quote.
    fn normalise_identifier(
        &self,
        rule: &FieldRule,
        ctx: &MappingContext,
        src: &SourceRecord,
        start: usize,
        buf: &mut String,
    ) {
        let v = &buf[start..];
        let normal = match rule.check {
            Some(Check::OrgCode) if v.contains('-') => crate::ids::OrgCode::parse(v)
                .ok()
                .map(|c| c.as_str().to_owned()),
            Some(Check::IdNumber)
                if v.ends_with('x') && self.check_condition_holds(rule, ctx, src) =>
            {
                crate::ids::IdNumber::parse(v)
                    .ok()
                    .map(|id| id.as_str().to_owned())
            }
            _ => None,
        };
        if let Some(n) = normal {
            buf.truncate(start);
            buf.push_str(&n);
        }
    }

    fn computed_display_until(
        &self,
        ctx: &MappingContext,
        src: &SourceRecord,
    ) -> Option<NaiveDate> {
        let decided = parse_source_date(src.decided_on.as_deref()?)?;
        ctx.display.display_until(decided)
    }

    /// A display end supplied by the source is kept, but never beyond the legal maximum; one before the legal
    /// minimum of the agency's domain is a finding (reference §3.2), not published as given.
    fn judge_display_until(
        &self,
        ctx: &MappingContext,
        src: &SourceRecord,
        field: &str,
        d: NaiveDate,
    ) -> Result<NaiveDate, Finding> {
        let Some(decided) = src.decided_on.as_deref().and_then(parse_source_date) else {
            return Ok(d);
        };
        let policy = &ctx.display;
        // The minimum is today's rule; decisions before 2021 had other ones (reference §3.2), and a display period
        // set right under them is not a defect to hold back now.
        let current_rules = decided >= NaiveDate::from_ymd_opt(2021, 1, 1).expect("a real date");
        if let Some(earliest) = decided
            .checked_add_months(Months::new(policy.min_months))
            .filter(|_| current_rules)
        {
            if d < earliest {
                let f = |d: NaiveDate| self.date_format.format(d);
                let (given, decided, earliest) = (f(d), f(decided), f(earliest));
                let (domain, months) = (policy.domain, policy.min_months);
                return Err(Finding::new(
                    FindingCode::DisplayTooShort,
                    field,
                    format!(
                        "{field}（{given}）不足法定最短公示期：领域「{domain}」的行政处罚自决定日期（{decided}）起至少公示 \
                         {months} 个月，即不早于 {earliest}；请在源系统中更正公示截止期，或留空由系统计算"
                    ),
                    format!(
                        "{field} ({given}) ends before the legal minimum display period: penalties of the domain {domain} are \
                         displayed at least {months} months from the decision date ({decided}), i.e. until {earliest} \
                         or later; correct display_until in the source system, or leave it empty for dualpub to compute"
                    ),
                ));
            }
        }
        Ok(match policy.latest(decided) {
            Some(max) if d > max => max,
            _ => d,
        })
    }

    /// The party category value of a mapped record.
    pub fn category<'a>(&self, rec: &'a PlatformRecord) -> Option<&'a str> {
        self.category_field.as_ref().and_then(|f| rec.get(f))
    }

    /// The 完整率 counts of a mapped record: (filled, expected) — how many data items the record requires (as
    /// platforms grade it, reference §6: items supplied / items required), and how many of those have a value.
    /// Required: `required`, `required_for` its party category, `required_if` a condition that holds, or the
    /// `placeholder_requires` of a field holding the USCC placeholder. Optional items (备注, 许可证书名称, …) count
    /// neither way: until 2026-11-30 every item that applies to the category was expected, so a complete record
    /// without remarks scored under 100 %. One walk over rules and fields together, both in name order.
    pub fn completeness(&self, rec: &PlatformRecord) -> (u64, u64) {
        let category = self.resolve_category(self.category(rec));
        let mut fields = rec.fields().peekable();
        let (mut filled, mut expected) = (0, 0);
        for &i in &self.sorted {
            let rule = &self.fields[i];
            let present = loop {
                match fields.peek() {
                    Some((name, _)) if *name < &*rule.name => {
                        fields.next();
                    }
                    Some((name, _)) => break *name == &*rule.name,
                    None => break false,
                }
            };
            if rule.applies_to_category(category) && self.requires(rule, category, rec) {
                expected += 1;
                filled += u64::from(present);
            }
        }
        (filled, expected)
    }

    /// Whether `rule`'s item is required of a record of `category` with these values (the rules validation calls
    /// `required`).
    fn requires(&self, rule: &FieldRule, category: CategoryId, rec: &PlatformRecord) -> bool {
        rule.required
            || category.is_in(&rule.required_for_ids)
            || rule.required_if.as_ref().is_some_and(|c| c.holds(rec))
            || self.fields.iter().any(|other| {
                other.placeholder_requires.as_deref() == Some(&*rule.name)
                    && category.is_in(&other.placeholder_for_ids)
                    && rec
                        .get(&other.name)
                        .is_some_and(crate::ids::is_uscc_placeholder)
            })
    }
}

/// Where a value is in the buffer `Mapping::map` writes a record's values to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span(u32, u32);

impl Span {
    #[inline]
    pub(crate) fn of(self, text: &str) -> &str {
        text.get(self.0 as usize..self.1 as usize).unwrap_or("")
    }
}

/// The result of mapping one source record: the platform record, its key (when the document number and sender
/// allow one) and every finding. Valid means no findings and a key.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub record: PlatformRecord,
    pub key: Option<RecordKey>,
    pub findings: Vec<Finding>,
}

impl Mapped {
    pub fn is_valid(&self) -> bool {
        self.findings.is_empty() && self.key.is_some()
    }
}

/// Source dates: a plain date `YYYY-MM-DD` (also `/` or `.` as separator), or a full RFC 3339 timestamp, whose
/// date is taken in China Standard Time (the domain's dates are CST dates: `2024-05-16T20:00:00Z` is 2024-05-17).
/// Anything else — a timestamp without offset, trailing text after a date — is not a date.
pub fn parse_source_date(s: &str) -> Option<NaiveDate> {
    let s = crate::model::trim(s);
    if s.len() <= 10 {
        return validate::parse_date(s);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&crate::model::china_offset()).date_naive())
}

/// Converts a yuan amount to 万元, exactly: `2000` → `0.2`. Errors name the finding code.
pub fn yuan_to_wan(yuan: &str) -> Result<String, FindingCode> {
    let s = crate::model::trim(yuan);
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
    {
        return Err(FindingCode::AmountInvalid);
    }
    // Judged on the text, before `Decimal` rounds what it cannot hold (28 significant digits): finer than 0.01
    // yuan is a finding however many places it takes.
    let places = s
        .split_once('.')
        .map_or(0, |(_, frac)| frac.trim_end_matches('0').len());
    let d = Decimal::from_str(s).map_err(|_| FindingCode::AmountInvalid)?;
    if d.is_sign_negative() && !d.is_zero() {
        return Err(FindingCode::AmountNegative);
    }
    if places > 2 {
        return Err(FindingCode::AmountScale);
    }
    // The point moved four places on the text, not `d / 10000`: `Decimal` holds 28 significant digits, and a longer
    // amount lost its last ones in the division (until 2026-11-30 `1234567890123456789012345678.01` went out as
    // …234.5678, its fen dropped). `d` has vouched for the shape: digits, at most one point, a sign.
    let body = s.trim_start_matches(['+', '-']);
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let frac = frac.trim_end_matches('0');
    let digits: String = int
        .trim_start_matches('0')
        .chars()
        .chain(frac.chars())
        .collect();
    let scale = frac.len() + 4;
    let mut out = if digits.len() > scale {
        let (i, f) = digits.split_at(digits.len() - scale);
        format!("{i}.{f}")
    } else {
        format!("0.{}{digits}", "0".repeat(scale - digits.len()))
    };
    let trimmed = out.trim_end_matches('0').trim_end_matches('.').len();
    out.truncate(trimmed);
    Ok(out)
}

/// A 15-digit legacy ID number becomes its 18-digit form; anything else is left for validation to judge.
fn upgrade_id_number(v: Cow<'_, str>) -> Cow<'_, str> {
    if v.len() == 15 && v.bytes().all(|b| b.is_ascii_digit()) {
        if let Some(v18) = crate::ids::IdNumber::convert_15(&v) {
            return Cow::Owned(v18);
        }
    }
    v
}

/// Appends `t` as `YYYY-MM-DD HH:MM:SS` (the default timestamp format) without the formatting machinery.
fn write_timestamp(t: &chrono::DateTime<chrono::FixedOffset>, out: &mut String) {
    use chrono::{Datelike, Timelike};
    let y = t.year();
    if !(0..=9999).contains(&y) {
        let _ = write!(out, "{}", t.format("%Y-%m-%d %H:%M:%S"));
        return;
    }
    let d2 = |out: &mut String, n: u32| {
        out.push((b'0' + (n / 10 % 10) as u8) as char);
        out.push((b'0' + (n % 10) as u8) as char);
    };
    d2(out, y as u32 / 100);
    d2(out, y as u32 % 100);
    out.push('-');
    d2(out, t.month());
    out.push('-');
    d2(out, t.day());
    out.push(' ');
    d2(out, t.hour());
    out.push(':');
    d2(out, t.minute());
    out.push(':');
    d2(out, t.second());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::gen::{self, GenConfig};

    #[test]
    fn source_dates_are_plain_dates_or_full_timestamps_in_cst() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day);
        assert_eq!(parse_source_date("2024-05-16"), d(2024, 5, 16));
        assert_eq!(parse_source_date(" 2024/5/16 "), d(2024, 5, 16));
        assert_eq!(parse_source_date("2024-05-16T20:00:00Z"), d(2024, 5, 17));
        assert_eq!(parse_source_date("2024-05-16T15:59:59Z"), d(2024, 5, 16));
        assert_eq!(
            parse_source_date("2024-05-17T01:00:00+08:00"),
            d(2024, 5, 17)
        );
        assert_eq!(
            parse_source_date("2024-05-16T23:00:00-05:00"),
            d(2024, 5, 17)
        );
        for bad in [
            "2024-05-16Tgarbage",
            "2024-05-16T20:00:00",
            "2024-05-16 20:00:00",
            "2024-05-16xyz",
            "2024-02-30T10:00:00Z",
            "2024-05-16T",
        ] {
            assert_eq!(parse_source_date(bad), None, "{bad}");
        }
    }

    /// The one-walk count equals the definition: the items validation requires of the record (an item is required
    /// when the record without it has a `required` finding on it), and those with a value — over generated records
    /// of every party category, both kinds, some invalid.
    #[test]
    fn completeness_counts_required_and_filled_items() {
        let set = MappingSet::builtin();
        let ctx = MappingContext::default();
        let cfg = GenConfig {
            invalid_rate: 0.2,
            ..GenConfig::default()
        };
        for kind in [Kind::Permit, Kind::Penalty] {
            let m = set.get(kind);
            for i in 0..2000 {
                let rec = m.map(&ctx, &gen::record(&cfg, kind, i)).record;
                let category = m.category(&rec);
                let required: Vec<&FieldRule> = m
                    .fields
                    .iter()
                    .filter(|r| r.applies(category))
                    .filter(|r| {
                        let without = PlatformRecord::from_fields(
                            rec.fields().filter(|(n, _)| *n != &*r.name),
                        );
                        let mut findings = Vec::new();
                        validate::validate_record(m, &without, &mut findings);
                        findings
                            .iter()
                            .any(|f| f.code == FindingCode::Required && f.field == *r.name)
                    })
                    .collect();
                let filled = required
                    .iter()
                    .filter(|r| rec.get(&r.name).is_some())
                    .count();
                assert_eq!(
                    m.completeness(&rec),
                    (filled as u64, required.len() as u64),
                    "{kind:?} {i}"
                );
            }
        }
    }
}

#[cfg(test)]
mod amount_tests {
    use super::*;

    #[test]
    fn an_amount_finer_than_a_fen_is_a_finding_even_past_what_decimal_holds() {
        // 32 decimal places: Decimal would round it to 100 and publish 0.01 万元
        assert_eq!(
            yuan_to_wan("100.00000000000000000000000000001"),
            Err(FindingCode::AmountScale)
        );
        assert_eq!(yuan_to_wan("12.345"), Err(FindingCode::AmountScale));
        assert_eq!(yuan_to_wan("100.010000").as_deref(), Ok("0.010001"));
        assert_eq!(yuan_to_wan("35000.50").as_deref(), Ok("3.50005"));
        assert_eq!(yuan_to_wan("5000.").as_deref(), Ok("0.5"));
    }
}

#[cfg(test)]
mod exact_amount_tests {
    use super::*;

    /// 28 significant digits are all `Decimal` holds: a fine written with more (29 or 30 digits, still a plain
    /// decimal in yuan) lost its fen in the division and went out rounded. The shift to 万元 is exact on the text.
    #[test]
    fn an_amount_is_never_rounded_however_many_digits_it_has() {
        assert_eq!(
            yuan_to_wan("1234567890123456789012345678.01").as_deref(),
            Ok("123456789012345678901234.567801")
        );
        assert_eq!(
            yuan_to_wan("123456789012345678901234567.89").as_deref(),
            Ok("12345678901234567890123.456789")
        );
        for (yuan, wan) in [
            ("0", "0"),
            ("0.00", "0"),
            ("-0", "0"),
            ("+500", "0.05"),
            ("0.01", "0.000001"),
            (".5", "0.00005"),
            ("000120", "0.012"),
            ("10000", "1"),
            ("1000000000", "100000"),
            ("35000.50", "3.50005"),
        ] {
            assert_eq!(yuan_to_wan(yuan).as_deref(), Ok(wan), "{yuan}");
        }
    }
}
