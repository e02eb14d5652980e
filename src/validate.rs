//! Validation: every rule of the standard a platform applies to a record, as pure functions over a mapped
//! record and its mapping's rules. The connector runs it before pushing; the platform simulator runs the same
//! function on what it receives. Returns all findings, never just the first.

use crate::findings::{Finding, FindingCode};
use crate::ids::{self, IdError};
use crate::mapping::{CategoryId, Check, CodeTable, FieldRule, Mapping};
use crate::model::PlatformRecord;
use chrono::NaiveDate;

/// Validates a mapped record against its mapping's rules. Fields in `skip` already have a finding from mapping
/// (a bad date, an unknown code) and are not judged again.
pub fn validate_record(m: &Mapping, rec: &PlatformRecord, out: &mut Vec<Finding>) {
    let values: Vec<Option<&str>> = m.fields.iter().map(|r| rec.get(&r.name)).collect();
    validate_values(m, &values, &[], out);
}

// `validate_record` and `validate_values` (the platform's view) do not judge the decision date against a day:
// what "today" is belongs to the agency's run (`MappingContext::today`), which `Mapping::map` passes on.

/// Validates the values of a record given per rule of the mapping (`values[i]` is rule `i`'s value). Rules
/// whose `skip` flag is set already have a finding from mapping (a bad date, an unknown code) and are not
/// judged again.
pub fn validate_values(
    m: &Mapping,
    values: &[Option<&str>],
    skip: &[bool],
    out: &mut Vec<Finding>,
) {
    let category = m.resolve_category(m.category_index().and_then(|i| values[i]));
    validate_with(m, values, category, skip, None, out);
}

/// [`validate_values`] on the values as `Mapping::map` holds them, with the category it already resolved: saves
/// collecting a `Vec<Option<&str>>` per record. A decision date after `today` is a finding.
pub(crate) fn validate_slots(
    m: &Mapping,
    values: &Slots<'_>,
    category: CategoryId,
    skip: &[bool],
    today: NaiveDate,
    out: &mut Vec<Finding>,
) {
    validate_with(m, values, category, skip, Some(today), out);
}

/// The values of a record per rule of its mapping, however the caller holds them.
trait Values {
    fn at(&self, i: usize) -> Option<&str>;
    /// Whether no value can hold a character XML cannot carry (so the per-value scan can be skipped).
    fn known_xml_clean(&self) -> bool {
        false
    }
}

impl Values for [Option<&str>] {
    #[inline]
    fn at(&self, i: usize) -> Option<&str> {
        self[i]
    }
}

/// The values as `Mapping::map` holds them: spans of one text.
pub(crate) struct Slots<'a> {
    pub text: &'a str,
    pub spans: &'a [Option<crate::mapping::Span>],
}

impl Values for Slots<'_> {
    #[inline]
    fn at(&self, i: usize) -> Option<&str> {
        self.spans[i].map(|s| s.of(self.text))
    }

    /// Every value is a span of `text`, so one scan of all of it (a few dozen 16-byte blocks) answers for all
    /// of them; only a record that has such a character is scanned value by value to name the field.
    fn known_xml_clean(&self) -> bool {
        crate::xml::first_illegal_char(self.text).is_none()
    }
}

fn validate_with<V: Values + ?Sized>(
    m: &Mapping,
    values: &V,
    category_id: CategoryId,
    skip: &[bool],
    today: Option<NaiveDate>,
    out: &mut Vec<Finding>,
) {
    let category = m.category_index().and_then(|i| values.at(i));
    let cat = Cat {
        text: category,
        id: category_id,
    };
    let xml_clean = values.known_xml_clean();
    let decided = m
        .decision_date_index()
        .and_then(|i| values.at(i))
        .and_then(parse_date);
    if let (Some(d), Some(i)) = (decided, m.decision_date_index()) {
        check_decision_date(&m.fields[i].name, d, today, out);
    }
    // The record's own ID numbers (证件号码 fields), to find in the text the platform shows as it is.
    let mut own = [""; 4];
    let mut owned = 0;
    for (i, rule) in m.fields.iter().enumerate() {
        if rule.check == Some(Check::IdNumber) && owned < own.len() {
            if let Some(v) = values.at(i).filter(|v| id_digits(v).is_some()) {
                own[owned] = v;
                owned += 1;
            }
        }
    }
    let own = &own[..owned];
    for (i, rule) in m.fields.iter().enumerate() {
        if skip.get(i).copied().unwrap_or(false) {
            continue;
        }
        if !rule.applies_to_category(category_id) {
            // Mapping leaves fields that do not apply to the category empty; the platform ignores them.
            continue;
        }
        match values.at(i) {
            None => {
                if let Some(why) = required_because(rule, cat, values) {
                    out.push(required(&rule.name, &why));
                }
            }
            Some(v) => check_value(rule, v, cat, values, xml_clean, (decided, own), out),
        }
    }
}

/// A record's party category: its value (for messages) and its resolved id (for rule tests).
#[derive(Clone, Copy)]
struct Cat<'a> {
    text: Option<&'a str>,
    id: CategoryId,
}

/// Why an empty field is required, or None when it may be empty.
fn required_because<V: Values + ?Sized>(
    rule: &FieldRule,
    category: Cat<'_>,
    values: &V,
) -> Option<(String, String)> {
    if rule.required {
        return Some(("必填项".into(), "it is always required".into()));
    }
    if let Some(c) = category.text {
        if category.id.is_in(&rule.required_for_ids) {
            return Some((
                format!("行政相对人类别为「{c}」时必填"),
                format!("it is required for party category {c}"),
            ));
        }
    }
    if let Some(cond) = &rule.required_if {
        if cond.holds_value(values.at(cond.index).unwrap_or("")) {
            let what = cond
                .equals
                .clone()
                .unwrap_or_else(|| cond.contains_any.join("/"));
            return Some((
                format!("{} 为「{what}」时必填", cond.field),
                format!("it is required when {} contains {what}", cond.field),
            ));
        }
    }
    None
}

fn check_value<V: Values + ?Sized>(
    rule: &FieldRule,
    v: &str,
    category: Cat<'_>,
    values: &V,
    xml_clean: bool,
    (decided, own): (Option<NaiveDate>, &[&str]),
    out: &mut Vec<Finding>,
) {
    let name = &*rule.name;
    if let Some((i, ch)) = (!xml_clean)
        .then(|| crate::xml::first_illegal_char(v))
        .flatten()
    {
        out.push(Finding::new(
            FindingCode::XmlChar,
            name,
            format!("第 {} 个字符 U+{:04X} 是 XML 无法传输的控制字符，请在源系统中删除", i + 1, ch as u32),
            format!(
                "character {} is U+{:04X}, which XML 1.0 cannot carry; remove it in the source system",
                i + 1,
                ch as u32
            ),
        ));
    }
    // Only the 证件号码 fields (which have an identifier check) are masked by the platform; every other field is
    // shown as it is, and a natural person's ID number must not be (reference §3.4).
    if rule.check.is_none() && !rule.identifier {
        // Any valid number, or the record's own whatever its check character (its first 17 digits name the person:
        // the party's number quoted with its X written as 0 is still its number).
        let found = ids::find_id_number_in(v).or_else(|| {
            own.iter()
                .find(|id| id_digits(id).is_some_and(|d| v.contains(d)))
                .map(|id| id.to_string())
        });
        if let Some(id) = found {
            let masked = ids::mask_id(&id);
            out.push(Finding::new(
                FindingCode::IdInText,
                name,
                format!(
                    "{name} 中含有自然人身份证号码（{masked}）：平台只遮蔽证件号码字段，其他字段原样公示，身份证号码不得公开；\
                     请在源系统中删去或改写"
                ),
                format!(
                    "{name} holds a natural person's ID number ({masked}); the platform masks only the 证件号码 \
                     fields and shows this one as it is, and an ID number must not be published: remove or reword it \
                     in the source system"
                ),
            ));
        }
    }
    // A string never has more chars than bytes, so only a long one needs counting.
    if let Some(max) = rule.max_len.filter(|&max| v.len() > max) {
        let n = v.chars().count();
        if n > max {
            out.push(Finding::new(
                FindingCode::TooLong,
                name,
                format!("长度 {n} 字，超过上限 {max} 字，请精简"),
                format!("{n} characters, more than the {max} allowed; shorten it"),
            ));
        }
    }
    if let Some((t, table)) = &rule.one_of {
        let mut parts = v.split(';');
        let mut whole = Some(v);
        let is_list = rule.is_list();
        // Each `;` part of a list value, or the whole value once.
        let next = || {
            if is_list {
                parts.next().map(str::trim)
            } else {
                whole.take()
            }
        };
        for p in std::iter::from_fn(next) {
            if !table.contains_value(p) {
                let p = shown(p);
                out.push(Finding::new(
                    FindingCode::CodeUnknown,
                    name,
                    format!(
                        "「{p}」不在代码表 {t} 中，可用值：{}",
                        table.value_list().join("、")
                    ),
                    format!(
                        "`{p}` is not a value of code table {t}; allowed: {}",
                        table.value_list().join(", ")
                    ),
                ));
            }
        }
    }
    if rule.other_must_name && v.split(';').any(|p| p.trim() == "其他") {
        let concrete: Vec<String> = rule
            .one_of
            .as_ref()
            .map(|(_, t)| t.value_list())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| !c.starts_with("其他"))
            .collect();
        out.push(Finding::new(
            FindingCode::OtherUnnamed,
            name,
            format!(
                "{name} 为「其他」时须写明具体类别，而源记录没有填写类别名称的字段：请在源系统中改选具体类别（{}），\
                 或在 mappings/codes.toml 中把该代码对应为「其他-具体类别」",
                concrete.join("、")
            ),
            format!(
                "{name} is a bare 其他 (other), which must name the concrete category, and the source record has no \
                 field for that name: choose the concrete category in the source system ({}), or map the code to \
                 `其他-<category>` in mappings/codes.toml",
                concrete.join(", ")
            ),
        ));
    }
    match rule.check {
        None => {}
        Some(Check::Uscc) => check_uscc(rule, v, category, values, out),
        Some(Check::OrgCode) => {
            if let Err(e) = ids::OrgCode::parse(v) {
                let code = match e {
                    IdError::CheckChar { .. } => FindingCode::OrgCodeCheck,
                    _ => FindingCode::OrgCodeFormat,
                };
                out.push(id_finding(
                    code,
                    name,
                    "组织机构代码",
                    "organisation code",
                    &e,
                ));
            }
        }
        Some(Check::IdNumber) => {
            let applies = rule
                .check_if
                .as_ref()
                .is_none_or(|c| c.holds_value(values.at(c.index).unwrap_or("")));
            if applies {
                let born = if is_valid_id_number(v) {
                    birth_date_of_valid(v)
                } else {
                    match ids::IdNumber::parse(v) {
                        Ok(id) => Some(id.birth_date()),
                        Err(e) => {
                            let code = match e {
                                IdError::CheckChar { .. } => FindingCode::IdCheck,
                                _ => FindingCode::IdFormat,
                            };
                            out.push(id_finding(code, name, "身份证号码", "ID number", &e));
                            None
                        }
                    }
                };
                if let (Some(born), Some(decided)) = (born, decided) {
                    check_age(rule, born, decided, out);
                }
            } else if rule.forbid_minor && v.len() == 18 {
                // The standard forbids publishing a penalty on a minor whatever the document is called (§3.4): a
                // number of another ID type that is a whole, valid 公民身份号码 — from a 户口簿 (under-16s often
                // have no card), a 居住证, a card entered under the wrong type — tells the birth date as well.
                // Only the minor rule applies: the number's format is not this type's to judge.
                if let (Ok(id), Some(decided)) = (ids::IdNumber::parse(v), decided) {
                    if id.birth_date() <= decided {
                        check_age(rule, id.birth_date(), decided, out);
                    }
                }
            }
        }
        Some(Check::Date) if parse_date(v).is_none() => out.push(date_invalid(name, name, v)),
        Some(Check::Date) => {}
        Some(Check::Amount) => {
            if let Err(code) = check_amount(v) {
                out.push(amount_problem(code, name, name, v));
            }
        }
    }
    if let Some(other) = &rule.not_before {
        let other_value = rule.not_before_index.and_then(|j| values.at(j));
        if let (Some(start), Some(end)) = (other_value.and_then(parse_date), parse_date(v)) {
            if end < start {
                let v = shown(v);
                out.push(Finding::new(
                    FindingCode::PeriodOrder,
                    name,
                    format!(
                        "{name}（{v}）早于 {other}（{}），期限的结束不能早于开始",
                        other_value.unwrap_or("")
                    ),
                    format!(
                        "{name} ({v}) is before {other} ({}); a period cannot end before it starts",
                        other_value.unwrap_or("")
                    ),
                ));
            }
        }
    }
}

/// The earliest decision date taken as real: the founding of the People's Republic.
const EARLIEST_DECISION: (i32, u32, u32) = (1949, 10, 1);

/// A decision date after `today` (the run's day; China Standard Time by this machine's clock unless `--today` says
/// otherwise) or before 1949-10-01 is a typo: published, it would show a decision not yet made, put its deadline
/// and display period decades away, and leave every later reconcile asking for a calendar of that year.
fn check_decision_date(
    name: &str,
    decided: NaiveDate,
    today: Option<NaiveDate>,
    out: &mut Vec<Finding>,
) {
    let (y, m, d) = EARLIEST_DECISION;
    let earliest = NaiveDate::from_ymd_opt(y, m, d).unwrap_or(NaiveDate::MIN);
    let on = decided.format("%Y-%m-%d");
    if today.is_some_and(|today| decided > today) {
        out.push(Finding::new(
            FindingCode::DateOutOfRange,
            name,
            format!("决定日期 {on} 晚于今天：尚未作出的决定不能公示，请在源系统中核对日期"),
            format!(
                "the decision date {on} is after today: a decision not yet made cannot be published; check the date \
                 in the source system"
            ),
        ));
    } else if decided < earliest {
        out.push(Finding::new(
            FindingCode::DateOutOfRange,
            name,
            format!("决定日期 {on} 早于 1949-10-01，不是真实的决定日期，请在源系统中核对"),
            format!("the decision date {on} is before 1949-10-01, so it cannot be real; check it in the source system"),
        ));
    }
}

/// The birth date in an ID number against the decision date: nobody is born after a decision about them
/// (reference §4.3), and a penalty on someone under 18 that day must not be published (§3.4).
fn check_age(rule: &FieldRule, born: NaiveDate, decided: NaiveDate, out: &mut Vec<Finding>) {
    let name = &*rule.name;
    let on = decided.format("%Y/%m/%d");
    if born > decided {
        // The birth date is not quoted: it is the part of the number that masks hide.
        out.push(Finding::new(
            FindingCode::IdFormat,
            name,
            format!("身份证号码有误：其中的出生日期晚于决定日期（{on}），请核对原始证照"),
            format!(
                "ID number is wrong: the birth date in it is after the decision date ({on}); check it against the \
                 original certificate"
            ),
        ));
        return;
    }
    // 周岁 count from the day after the birthday: on the 18th birthday itself a person is still a minor.
    let eighteenth = born.checked_add_months(chrono::Months::new(18 * 12));
    if rule.forbid_minor && eighteenth.is_some_and(|a| decided <= a) {
        out.push(Finding::new(
            FindingCode::PenaltyMinor,
            name,
            format!(
                "当事人在处罚决定日期（{on}）未满 18 周岁：对未成年人的行政处罚不得公示，本记录不会推送；\
                 如证件号码有误，请在源系统中更正"
            ),
            format!(
                "the party was under 18 on the decision date ({on}): a penalty on a minor must not be published, \
                 so this record is not pushed; if the ID number is wrong, correct it in the source system"
            ),
        ));
    }
}

/// The 17 digits before the check character of an 18-character identity number, which name the person whatever
/// the 18th is; `None` for any other value (a passport number, a 15-digit number).
fn id_digits(v: &str) -> Option<&str> {
    v.get(..17)
        .filter(|d| v.len() == 18 && d.bytes().all(|b| b.is_ascii_digit()))
}

/// The birth date of an ID number [`is_valid_id_number`] accepted.
fn birth_date_of_valid(v: &str) -> Option<NaiveDate> {
    let b = v.as_bytes().get(6..14)?;
    let num =
        |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    NaiveDate::from_ymd_opt(num(0..4) as i32, num(4..6), num(6..8))
}

fn check_uscc<V: Values + ?Sized>(
    rule: &FieldRule,
    v: &str,
    category: Cat<'_>,
    values: &V,
    out: &mut Vec<Finding>,
) {
    let name = &*rule.name;
    if ids::is_uscc_placeholder(v) {
        let allowed = category.id.is_in(&rule.placeholder_for_ids);
        if !allowed {
            let who = if rule.placeholder_for.is_empty() {
                "无".to_string()
            } else {
                rule.placeholder_for.join("、")
            };
            out.push(Finding::new(
                FindingCode::UsccPlaceholder,
                name,
                format!("占位代码 00000000000000000X 只允许用于：{who}；请填写真实的统一社会信用代码"),
                format!(
                    "the placeholder 00000000000000000X is only allowed for: {}; give the real USCC",
                    if rule.placeholder_for.is_empty() { "none".to_string() } else { rule.placeholder_for.join(", ") }
                ),
            ));
        } else if let Some(req) = &rule.placeholder_requires {
            if rule
                .placeholder_requires_index
                .and_then(|j| values.at(j))
                .is_none()
            {
                out.push(Finding::new(
                    FindingCode::Required,
                    &**req,
                    format!("{name} 使用占位代码 00000000000000000X 时，{req}（工商注册号）必填"),
                    format!("{req} (registration number) is required when {name} is the placeholder 00000000000000000X"),
                ));
            }
        }
        return;
    }
    // Fast path for the common, valid code, without `Uscc::parse`'s allocations: 18 ASCII bytes whose last is the
    // check character computed from the first 17 (which also proves all 18 are of the USCC alphabet), exactly
    // when `Uscc::parse` accepts. Anything else goes through `Uscc::parse` for its precise error.
    let b = v.as_bytes();
    if b.len() == 18 && b.is_ascii() && ids::uscc_check_char(&v[..17]) == Some(char::from(b[17])) {
        return;
    }
    if let Err(e) = ids::Uscc::parse(v) {
        let code = match e {
            IdError::CheckChar { .. } => FindingCode::UsccCheck,
            _ => FindingCode::UsccFormat,
        };
        out.push(id_finding(code, name, "统一社会信用代码", "USCC", &e));
    }
}

fn id_finding(
    code: FindingCode,
    field: &str,
    zh_what: &str,
    en_what: &str,
    e: &IdError,
) -> Finding {
    Finding::new(
        code,
        field,
        format!("{zh_what}有误：{}，请核对原始证照", e.zh()),
        format!("{en_what} is wrong: {e}; check it against the original certificate"),
    )
}

fn required(field: &str, why: &(String, String)) -> Finding {
    Finding::new(
        FindingCode::Required,
        field,
        format!("{field} 为空（{}），请在源系统中补全", why.0),
        format!(
            "{field} is empty but {}; fill it in the source system",
            why.1
        ),
    )
}

/// The common case without allocating: 17 ASCII digits with a real birth date (year ≥ 1900, not after today)
/// and the right upper-case check character — exactly what `IdNumber::parse` accepts in 18-character form.
/// Anything else goes through `IdNumber::parse`, which explains the problem (or accepts a 15-digit or
/// lower-case-x number).
fn is_valid_id_number(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() != 18 || !b[..17].iter().all(u8::is_ascii_digit) {
        return false;
    }
    let num =
        |r: std::ops::Range<usize>| b[r].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let (y, m, d) = (num(6..10), num(10..12), num(12..14));
    match NaiveDate::from_ymd_opt(y as i32, m, d) {
        Some(born) if y >= 1900 && born <= crate::model::today_cst() => {}
        _ => return false,
    }
    ids::id_check_char(&v[..17]) == Some(b[17] as char)
}

/// A value as a finding quotes it: whole up to 64 characters, else its start and its length (a finding is kept in
/// the quarantine and shown in reports; a value of megabytes must not be copied into each).
pub fn shown(v: &str) -> std::borrow::Cow<'_, str> {
    const QUOTED: usize = 64;
    match v.char_indices().nth(QUOTED) {
        None => v.into(),
        Some((cut, _)) => format!(
            "{}…（共 {} 字 / {} characters）",
            &v[..cut],
            v.chars().count(),
            v.chars().count()
        )
        .into(),
    }
}

/// A source code that no row of the code table maps.
pub fn code_unknown(field: &str, path: &str, code: &str, table: &CodeTable) -> Finding {
    let _ = table;
    let code = shown(code);
    Finding::new(
        FindingCode::CodeUnknown,
        field,
        format!("源字段 {path} 的代码「{code}」在代码表中没有对应值，请修正源数据或在 mappings/codes.toml 中补充"),
        format!("source {path} has code `{code}`, which the code table does not map; fix the record or add it to mappings/codes.toml"),
    )
}

/// A date that is not a real date.
pub fn date_invalid(field: &str, path: &str, value: &str) -> Finding {
    let value = shown(value);
    Finding::new(
        FindingCode::DateInvalid,
        field,
        format!("{path} 的值「{value}」不是有效日期（应为 YYYY-MM-DD 的真实日期）"),
        format!("{path} is `{value}`, which is not a real date (expected YYYY-MM-DD)"),
    )
}

/// An amount problem with its code.
pub fn amount_problem(code: FindingCode, field: &str, path: &str, value: &str) -> Finding {
    let (zh, en) = match code {
        FindingCode::AmountNegative => ("金额不能为负数", "an amount cannot be negative"),
        FindingCode::AmountScale => (
            "金额精度超过 0.01 元（万元最多 6 位小数）",
            "the amount is finer than 0.01 yuan (at most 6 decimal places in 万元)",
        ),
        _ => (
            "不是数字金额（应为如 20000 或 35000.50 的十进制数）",
            "not a decimal amount (like 20000 or 35000.50)",
        ),
    };
    let value = shown(value);
    Finding::new(
        code,
        field,
        format!("{path} 的值「{value}」：{zh}"),
        format!("{path} is `{value}`: {en}"),
    )
}

/// Platform amounts in 万元: a non-negative decimal with at most 6 places.
pub fn check_amount(v: &str) -> Result<(), FindingCode> {
    let s = crate::model::trim(v);
    let body = match s.strip_prefix('-') {
        Some(rest) => {
            if is_decimal(rest).is_some() {
                return Err(FindingCode::AmountNegative);
            }
            return Err(FindingCode::AmountInvalid);
        }
        None => s,
    };
    match is_decimal(body) {
        None => Err(FindingCode::AmountInvalid),
        Some(places) if places > 6 => Err(FindingCode::AmountScale),
        Some(_) => Ok(()),
    }
}

/// `digits[.digits]` → number of decimal places.
fn is_decimal(s: &str) -> Option<usize> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match frac {
        None => Some(0),
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => Some(f.len()),
        Some(_) => None,
    }
}

/// Platform dates: `YYYY[-/.]M[M][-/.]D[D]` with one separator throughout, and a real calendar date.
pub fn parse_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() < 8 || b.len() > 10 || !b[..4].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sep = b[4];
    if !matches!(sep, b'-' | b'/' | b'.') {
        return None;
    }
    // On bytes rather than with `split_once` and `str::parse`: this runs several times per record.
    let rest = &b[5..];
    let k = rest.iter().position(|&c| c == sep)?;
    let number = |p: &[u8]| -> Option<u32> {
        if !(1..=2).contains(&p.len()) || !p.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(p.iter().fold(0, |n, &c| n * 10 + u32::from(c - b'0')))
    };
    let (m, d) = (number(&rest[..k])?, number(&rest[k + 1..])?);
    let y = b[..4]
        .iter()
        .fold(0i32, |n, &c| n * 10 + i32::from(c - b'0'));
    NaiveDate::from_ymd_opt(y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(
            parse_date("2024/03/01"),
            NaiveDate::from_ymd_opt(2024, 3, 1)
        );
        assert_eq!(parse_date("2024-3-1"), NaiveDate::from_ymd_opt(2024, 3, 1));
        assert_eq!(
            parse_date("2024.03.01"),
            NaiveDate::from_ymd_opt(2024, 3, 1)
        );
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2024/03-01"), None);
        assert_eq!(parse_date("２０２４-03-01"), None);
        assert_eq!(parse_date(""), None);
    }

    #[test]
    fn fast_id_check_agrees_with_the_parser() {
        for v in [
            "34052419800101001X",
            "11010519491231002X",
            "340524198001010013",
            "34052419800101001x",
            "340524800101001",
            "34052418990101001X",
            "34052419800230001X",
            "3405241980010100１X",
            "",
        ] {
            let fast = is_valid_id_number(v);
            let parsed = ids::IdNumber::parse(v);
            assert!(
                !fast || parsed.is_ok(),
                "{v}: the fast path accepts only what the parser accepts"
            );
            if v.len() == 18 && v.ends_with(|c: char| c.is_ascii_digit() || c == 'X') {
                assert_eq!(fast, parsed.is_ok(), "{v}");
            }
        }
    }

    #[test]
    fn amounts() {
        assert_eq!(check_amount("0.2"), Ok(()));
        assert_eq!(check_amount("12.000001"), Ok(()));
        assert_eq!(check_amount("12.0000001"), Err(FindingCode::AmountScale));
        assert_eq!(check_amount("-1"), Err(FindingCode::AmountNegative));
        assert_eq!(check_amount("1e3"), Err(FindingCode::AmountInvalid));
        assert_eq!(check_amount(".5"), Err(FindingCode::AmountInvalid));
    }
}
