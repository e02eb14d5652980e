//! Identifier checksums: 统一社会信用代码 (USCC, GB 32100-2015), 组织机构代码 (organisation code, GB 11714)
//! and 居民身份证号 (resident ID number, GB 11643-1999).
//!
//! Every parser validates length, alphabet and check character (and, for ID numbers, the birth date) and
//! returns an [`IdError`] that tells the operator exactly what to fix, in English ([`std::fmt::Display`]) or
//! Chinese ([`IdError::zh`]). Positions in errors are 1-based character positions in the input as given.
//!
//! Conventions:
//! - Trimming whitespace is the caller's job; a leading or trailing space is reported as a bad character or a
//!   wrong length.
//! - USCCs and organisation codes must be upper case: lower-case input is an error, never silently upper-cased.
//! - ID numbers accept a lower-case `x` check character and normalise it to `X` (people type it both ways and it
//!   is unambiguous). 15-digit legacy ID numbers are converted to the 18-digit form, which is what is stored.
//!
//! No function in this module panics, whatever the input (empty, arbitrary Unicode, multibyte characters): all
//! work is done on `char`s, never by byte-slicing unvalidated strings.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

/// Errors from identifier validation. Each variant carries enough detail to tell the operator what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Wrong number of characters (counted as `char`s, not bytes).
    Length {
        /// Accepted length(s), e.g. `"18"` or `"15 or 18"`.
        expected: &'static str,
        /// Number of characters found.
        found: usize,
    },
    /// A character that is not allowed at this position.
    BadChar {
        /// 1-based character position in the input as given.
        position: usize,
        /// The offending character.
        ch: char,
    },
    /// Everything else is well-formed but the check character does not match.
    CheckChar {
        /// The check character the algorithm computes for the rest of the identifier.
        expected: char,
        /// The check character found in the input.
        found: char,
    },
    /// The birth date of an ID number (YYYYMMDD) is not a real date from 1900 on.
    BirthDate {
        /// The eight birth-date digits (for a 15-digit number, after inserting `19`).
        digits: String,
    },
    /// The birth date of an ID number is a real date, but after today (China Standard Time).
    BirthInFuture {
        /// The eight birth-date digits.
        digits: String,
    },
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Length { expected, found } => {
                write!(f, "length is {found} characters but should be {expected}")
            }
            IdError::BadChar { position, ch } => {
                let shown = ch.escape_debug();
                if ch.is_ascii_lowercase() {
                    write!(
                        f,
                        "character '{shown}' at position {position} is lower case; use upper case '{}'",
                        ch.to_ascii_uppercase()
                    )
                } else {
                    write!(
                        f,
                        "character '{shown}' at position {position} is not allowed there"
                    )
                }
            }
            IdError::CheckChar { expected, found } => {
                write!(f, "check character is '{found}' but should be '{expected}'")
            }
            // The digits are not quoted: the birth date is the part of the number that masks hide.
            IdError::BirthDate { .. } => write!(
                f,
                "the birth date in it is not a real date (YYYYMMDD, year 1900 or later)"
            ),
            IdError::BirthInFuture { .. } => {
                write!(f, "the birth date in it is in the future")
            }
        }
    }
}

impl IdError {
    /// The same message in Chinese, for operators and reports.
    pub fn zh(&self) -> String {
        match self {
            IdError::Length { expected, found } => {
                format!(
                    "长度应为 {} 位，实际为 {found} 位",
                    expected.replace(" or ", " 或 ")
                )
            }
            IdError::BadChar { position, ch } => {
                let shown = ch.escape_debug();
                if ch.is_ascii_lowercase() {
                    format!(
                        "第 {position} 位字符“{shown}”为小写字母，应为大写“{}”",
                        ch.to_ascii_uppercase()
                    )
                } else {
                    format!("第 {position} 位字符“{shown}”不合法")
                }
            }
            IdError::CheckChar { expected, found } => {
                format!("校验位应为 {expected}，实际为 {found}")
            }
            IdError::BirthDate { .. } => {
                "其中的出生日期不是有效日期（应为 1900 年以后的 YYYYMMDD）".to_string()
            }
            IdError::BirthInFuture { .. } => "其中的出生日期晚于今天".to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 统一社会信用代码 (GB 32100-2015)
// ---------------------------------------------------------------------------------------------------------------

/// USCC alphabet; a character's value is its index (31 symbols, no I, O, S, V, Z).
pub const USCC_ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
/// Weights for positions 1–17 (3^(i−1) mod 31).
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// Placeholder USCC legal only for 个体工商户 that have a registration number. It fails the checksum, so
/// [`Uscc::parse`] rejects it; callers that allow it must test with [`is_uscc_placeholder`] first.
pub const USCC_PLACEHOLDER: &str = "00000000000000000X";

/// Whether `s` is exactly the placeholder [`USCC_PLACEHOLDER`] (no trimming, case-sensitive).
pub fn is_uscc_placeholder(s: &str) -> bool {
    s == USCC_PLACEHOLDER
}

/// Each ASCII byte's value in the USCC alphabet, or `NOT_USCC`.
const NOT_USCC: u8 = u8::MAX;
static USCC_VALUES: [u8; 128] = {
    let mut t = [NOT_USCC; 128];
    let a = USCC_ALPHABET.as_bytes();
    let mut i = 0;
    while i < a.len() {
        t[a[i] as usize] = i as u8;
        i += 1;
    }
    t
};

fn uscc_value(c: char) -> Option<u32> {
    match USCC_VALUES.get(c as usize) {
        Some(&v) if v != NOT_USCC => Some(u32::from(v)),
        _ => None,
    }
}

fn uscc_char(v: u32) -> Option<char> {
    USCC_ALPHABET
        .as_bytes()
        .get(v as usize)
        .map(|&b| char::from(b))
}

/// Check character for the first 17 characters of a USCC; `None` unless `first17` is exactly 17 characters of
/// the USCC alphabet.
pub fn uscc_check_char(first17: &str) -> Option<char> {
    // The alphabet is ASCII, so 17 characters of it are exactly 17 bytes; any other length (or a non-ASCII
    // byte, which the table lacks) is not 17 characters of the alphabet.
    let b: &[u8; 17] = first17.as_bytes().try_into().ok()?;
    let mut sum = 0u32;
    let mut bad = 0u8;
    for (&c, &w) in b.iter().zip(&USCC_WEIGHTS) {
        let v = USCC_VALUES[usize::from(c & 0x7F)] | if c >= 0x80 { NOT_USCC } else { 0 };
        bad |= (v == NOT_USCC) as u8;
        sum += u32::from(v) * w;
    }
    if bad != 0 {
        return None;
    }
    uscc_char((31 - sum % 31) % 31)
}

/// `first17` plus its check character, or `None` if `first17` is not 17 characters of the USCC alphabet.
pub fn make_uscc(first17: &str) -> Option<String> {
    let check = uscc_check_char(first17)?;
    let mut s = String::with_capacity(18);
    s.push_str(first17);
    s.push(check);
    Some(s)
}

/// A validated 统一社会信用代码 (unified social credit code), 18 characters, checksum verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uscc(String);

impl Uscc {
    /// Validates a USCC: exactly 18 characters of the alphabet `0123456789ABCDEFGHJKLMNPQRTUWXY` (upper case
    /// only) with a correct check character.
    pub fn parse(s: &str) -> Result<Uscc, IdError> {
        let chars: Vec<char> = s.chars().collect();
        if chars.len() != 18 {
            return Err(IdError::Length {
                expected: "18",
                found: chars.len(),
            });
        }
        for (i, &c) in chars.iter().enumerate() {
            if uscc_value(c).is_none() {
                return Err(IdError::BadChar {
                    position: i + 1,
                    ch: c,
                });
            }
        }
        let first17: String = chars[..17].iter().collect();
        let expected = uscc_check_char(&first17).ok_or(IdError::Length {
            expected: "18",
            found: chars.len(),
        })?;
        let found = chars[17];
        if found != expected {
            return Err(IdError::CheckChar { expected, found });
        }
        Ok(Uscc(s.to_owned()))
    }

    /// The code as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Positions 9–17: the embedded organisation code (GB 11714 body + check), without hyphen.
    pub fn org_code_part(&self) -> &str {
        // The code is 18 ASCII characters by construction, so byte and char indices coincide.
        self.0.get(8..17).unwrap_or("")
    }
}

impl fmt::Display for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Uscc {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Uscc {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uscc::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 组织机构代码 (GB 11714)
// ---------------------------------------------------------------------------------------------------------------

const ORG_WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];

/// Value of an organisation-code body character: digits 0–9, upper-case letters A=10 … Z=35.
fn org_value(c: char) -> Option<u32> {
    match c {
        '0'..='9' => Some(c as u32 - '0' as u32),
        'A'..='Z' => Some(c as u32 - 'A' as u32 + 10),
        _ => None,
    }
}

/// Check character for an 8-character organisation-code body; `None` unless `body8` is exactly 8 digits or
/// upper-case letters.
pub fn org_code_check_char(body8: &str) -> Option<char> {
    let mut sum = 0u32;
    let mut n = 0usize;
    for c in body8.chars() {
        let w = ORG_WEIGHTS.get(n)?;
        sum += org_value(c)? * w;
        n += 1;
    }
    if n != 8 {
        return None;
    }
    match 11 - sum % 11 {
        10 => Some('X'),
        11 => Some('0'),
        v => char::from_digit(v, 10),
    }
}

/// `body8` plus its check character (9 characters, no hyphen), or `None` if `body8` is not a valid body.
pub fn make_org_code(body8: &str) -> Option<String> {
    let check = org_code_check_char(body8)?;
    let mut s = String::with_capacity(9);
    s.push_str(body8);
    s.push(check);
    Some(s)
}

/// A validated 组织机构代码 (organisation code), stored normalised as 9 characters without hyphen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgCode(String);

impl OrgCode {
    /// Validates an organisation code given as 9 characters (`XXXXXXXXX`) or as printed with a hyphen
    /// (`XXXXXXXX-X`). Body characters are digits or upper-case letters; the check character is a digit or `X`.
    pub fn parse(s: &str) -> Result<OrgCode, IdError> {
        let chars: Vec<char> = s.chars().collect();
        match chars.len() {
            9 => {}
            10 => {
                if chars[8] != '-' {
                    return Err(IdError::BadChar {
                        position: 9,
                        ch: chars[8],
                    });
                }
            }
            n => {
                return Err(IdError::Length {
                    expected: "9 or 10",
                    found: n,
                })
            }
        }
        let check_pos = chars.len(); // 1-based position of the check character in the input
        let found = chars[check_pos - 1];
        let body: String = chars[..8].iter().collect();
        for (i, &c) in chars[..8].iter().enumerate() {
            if org_value(c).is_none() {
                return Err(IdError::BadChar {
                    position: i + 1,
                    ch: c,
                });
            }
        }
        // Any upper-case letter or digit in the check position is "well-formed but wrong" (report the expected
        // check character); anything else is a bad character.
        if org_value(found).is_none() {
            return Err(IdError::BadChar {
                position: check_pos,
                ch: found,
            });
        }
        let expected = org_code_check_char(&body).ok_or(IdError::Length {
            expected: "9 or 10",
            found: chars.len(),
        })?;
        if found != expected {
            return Err(IdError::CheckChar { expected, found });
        }
        let mut norm = body;
        norm.push(found);
        Ok(OrgCode(norm))
    }

    /// The normalised 9-character code (no hyphen).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The code as usually printed, `XXXXXXXX-X`.
    pub fn hyphenated(&self) -> String {
        let mut out = String::with_capacity(10);
        for (i, c) in self.0.chars().enumerate() {
            if i == 8 {
                out.push('-');
            }
            out.push(c);
        }
        out
    }
}

impl fmt::Display for OrgCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for OrgCode {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for OrgCode {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        OrgCode::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// 居民身份证号 (GB 11643-1999)
// ---------------------------------------------------------------------------------------------------------------

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// Check character indexed by Σ digit·weight mod 11.
const ID_CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// Check character for the first 17 characters of an ID number; `None` unless `first17` is exactly 17 ASCII
/// digits. Does not look at the birth date.
pub fn id_check_char(first17: &str) -> Option<char> {
    let mut sum = 0u32;
    let mut n = 0usize;
    for c in first17.chars() {
        let w = ID_WEIGHTS.get(n)?;
        if !c.is_ascii_digit() {
            return None;
        }
        sum += (c as u32 - '0' as u32) * w;
        n += 1;
    }
    if n != 17 {
        return None;
    }
    ID_CHECK.get((sum % 11) as usize).copied()
}

/// `first17` plus its check character, or `None` if `first17` is not 17 ASCII digits. Does not validate the
/// birth date; generators must put a real date in positions 7–14.
pub fn make_id_number(first17: &str) -> Option<String> {
    let check = id_check_char(first17)?;
    let mut s = String::with_capacity(18);
    s.push_str(first17);
    s.push(check);
    Some(s)
}

/// Checks that the 8 digits (YYYYMMDD) are a real date with year ≥ 1900 and not after today (CST).
fn check_birth_date(digits: &[char]) -> Result<NaiveDate, IdError> {
    let text: String = digits.iter().collect();
    let bad = || IdError::BirthDate {
        digits: text.clone(),
    };
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        digits
            .get(range)?
            .iter()
            .try_fold(0u32, |acc, c| Some(acc * 10 + c.to_digit(10)?))
    };
    let (y, m, d) = match (num(0..4), num(4..6), num(6..8)) {
        (Some(y), Some(m), Some(d)) if digits.len() == 8 => (y, m, d),
        _ => return Err(bad()),
    };
    if y < 1900 {
        return Err(bad());
    }
    match NaiveDate::from_ymd_opt(y as i32, m, d) {
        Some(date) if date > crate::model::today_cst() => {
            Err(IdError::BirthInFuture { digits: text })
        }
        Some(date) => Ok(date),
        None => Err(bad()),
    }
}

/// A validated 居民身份证号 (resident ID number), always stored in the 18-character form with upper-case `X`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdNumber(String, NaiveDate);

impl IdNumber {
    /// Validates an ID number.
    ///
    /// - 18 characters: 17 digits plus check character (digit or `X`; a lower-case `x` is accepted and stored as
    ///   `X`). The birth date (positions 7–14) must be a real date from 1900 on, and the check character must match.
    /// - 15 digits (legacy, pre-1999): converted with [`IdNumber::convert_15`]; the birth date is validated after
    ///   conversion and the stored value is the 18-character form.
    pub fn parse(s: &str) -> Result<IdNumber, IdError> {
        let chars: Vec<char> = s.chars().collect();
        match chars.len() {
            15 => {
                if let Some((i, &c)) = chars.iter().enumerate().find(|(_, c)| !c.is_ascii_digit()) {
                    return Err(IdError::BadChar {
                        position: i + 1,
                        ch: c,
                    });
                }
                let full = IdNumber::convert_15(s).ok_or(IdError::Length {
                    expected: "15 or 18",
                    found: chars.len(),
                })?;
                let full_chars: Vec<char> = full.chars().collect();
                let born = check_birth_date(full_chars.get(6..14).unwrap_or(&[]))?;
                Ok(IdNumber(full, born))
            }
            18 => {
                if let Some((i, &c)) = chars[..17]
                    .iter()
                    .enumerate()
                    .find(|(_, c)| !c.is_ascii_digit())
                {
                    return Err(IdError::BadChar {
                        position: i + 1,
                        ch: c,
                    });
                }
                let found = match chars[17] {
                    'x' | 'X' => 'X',
                    c if c.is_ascii_digit() => c,
                    c => {
                        return Err(IdError::BadChar {
                            position: 18,
                            ch: c,
                        })
                    }
                };
                let born = check_birth_date(&chars[6..14])?;
                let first17: String = chars[..17].iter().collect();
                let expected = id_check_char(&first17).ok_or(IdError::Length {
                    expected: "15 or 18",
                    found: chars.len(),
                })?;
                if found != expected {
                    return Err(IdError::CheckChar { expected, found });
                }
                let mut norm = first17;
                norm.push(found);
                Ok(IdNumber(norm, born))
            }
            n => Err(IdError::Length {
                expected: "15 or 18",
                found: n,
            }),
        }
    }

    /// Converts a 15-digit legacy ID number to 18 characters: inserts `19` before the 2-digit birth year and
    /// appends the computed check character. `None` unless `s` is exactly 15 ASCII digits. Does not validate
    /// the birth date (use [`IdNumber::parse`] for that).
    pub fn convert_15(s: &str) -> Option<String> {
        let chars: Vec<char> = s.chars().collect();
        if chars.len() != 15 || !chars.iter().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let mut first17 = String::with_capacity(18);
        first17.extend(&chars[..6]);
        first17.push_str("19");
        first17.extend(&chars[6..]);
        make_id_number(&first17)
    }

    /// The 18-character ID number.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The holder's birth date (positions 7–14).
    pub fn birth_date(&self) -> NaiveDate {
        self.1
    }
}

impl fmt::Display for IdNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IdNumber {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for IdNumber {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdNumber::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Masking
// ---------------------------------------------------------------------------------------------------------------

/// Masks every ID number in free text, e.g. in a parser's message or a finding that quotes a value: a run of 15
/// to 19 digits (the 18th may be `X`), not part of a longer run of digits, whose birth date (positions 7–14, or 7–12
/// for 15 digits) could be one — so a number typed with a digit too many or too few is masked too. Codes that only
/// look alike stay whole — a USCC such as `91410100…` or `…12343F`, the placeholder `00000000000000000X`, document
/// numbers — so the operator can still look records up by them. Other text is left as it is.
pub fn mask_ids_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, end, run) in digit_runs(text) {
        if looks_like_id_number(&run) {
            out.push_str(&text[last..start]);
            out.push_str(&mask_id(&text[start..end]));
            last = end;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// [`mask_ids_in`] of an owned text, which is given back as it is (no copy) when it holds no digit at all, as most
/// names do.
pub fn mask_ids_in_owned(text: String) -> String {
    if text
        .chars()
        .any(|c| c.is_ascii_digit() || ('０'..='９').contains(&c))
    {
        mask_ids_in(&text)
    } else {
        text
    }
}

/// The first valid 18-character 公民身份号码 (check character and birth date right) written in free text, in
/// ASCII or full-width digits, and not part of a longer run of digits; in its ASCII form.
pub fn find_id_number_in(text: &str) -> Option<String> {
    // Most text has no run of 17 digits: a cheap look first.
    if text.len() < 18 {
        return None;
    }
    digit_runs(text)
        .map(|(_, _, run)| run)
        .find(|run| run.len() == 18 && IdNumber::parse(run).is_ok())
}

/// A digit as ASCII: `0`–`9`, or its full-width form `０`–`９`.
fn ascii_digit(c: char) -> Option<char> {
    match c {
        '0'..='9' => Some(c),
        '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32),
        _ => None,
    }
}

/// Every maximal run of digits (ASCII or full-width) in `text`, with an `X` after exactly 17 of them: its byte
/// range and its ASCII form.
fn digit_runs(text: &str) -> impl Iterator<Item = (usize, usize, String)> + '_ {
    let mut it = text.char_indices().peekable();
    std::iter::from_fn(move || loop {
        let (start, c) = it.next()?;
        let Some(d) = ascii_digit(c) else { continue };
        let mut run = String::from(d);
        let mut end = start + c.len_utf8();
        while let Some(d) = it.peek().and_then(|&(_, c)| ascii_digit(c)) {
            let (i, c) = it.next()?;
            run.push(d);
            end = i + c.len_utf8();
        }
        if run.len() == 17 {
            if let Some(&(i, c @ ('X' | 'x' | 'Ｘ' | 'ｘ'))) = it.peek() {
                it.next();
                run.push('X');
                end = i + c.len_utf8();
            }
        }
        return Some((start, end, run));
    })
}

/// 15 to 19 characters (digits, the 18th possibly `X`) with a birth date that could be one.
fn looks_like_id_number(run: &str) -> bool {
    let b = run.as_bytes();
    let num = |r: std::ops::Range<usize>| {
        std::str::from_utf8(&b[r])
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
    };
    let (year, md) = match b.len() {
        16..=19 => (num(6..10), 10),
        15 => (num(6..8).map(|y| 1900 + y), 8),
        _ => return false,
    };
    let (Some(year), Some(month), Some(day)) = (year, num(md..md + 2), num(md + 2..md + 4)) else {
        return false;
    };
    (1900..=2100).contains(&year) && (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// Masks an identifier for logs and reports (counting `char`s, not bytes):
/// - 15 or more characters: keep the first 6 and last 4, star the middle (`410105********1234`);
/// - 5 to 14 characters: keep only the last 2;
/// - fewer than 5: all stars.
///
/// The output has as many characters as the input.
pub fn mask_id(s: &str) -> String {
    let n = s.chars().count();
    let (keep_head, keep_tail) = if n >= 15 {
        (6, 4)
    } else if n >= 5 {
        (0, 2)
    } else {
        (0, 0)
    };
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if i < keep_head || i >= n - keep_tail {
                c
            } else {
                '*'
            }
        })
        .collect()
}

#[cfg(test)]
mod mask_text_tests {
    use super::*;

    #[test]
    fn ids_in_text_are_masked() {
        let t = r#"invalid type: string "410105198503124030", expected struct Party; 34052419800101001X at 3"#;
        let m = mask_ids_in(t);
        assert!(
            !m.contains("410105198503124030") && !m.contains("34052419800101001X"),
            "{m}"
        );
        assert!(m.contains("410105********4030"), "{m}");
        assert!(m.ends_with(" at 3"), "{m}");
        assert_eq!(
            mask_ids_in("line 3, column 12: 河南"),
            "line 3, column 12: 河南"
        );
        // in Chinese text, and a 15-digit one
        assert_eq!(
            mask_ids_in("证件410105198001011239，旧号410105800101123。"),
            "证件410105********1239，旧号410105*****1123。"
        );
        // in full-width digits, with a full-width or lower-case X
        assert_eq!(
            mask_ids_in(
                "证件４１０１０５１９８００１０１１２３９；３４０５２４１９８００１０１００１Ｘ号"
            ),
            "证件４１０１０５********１２３９；３４０５２４********００１Ｘ号"
        );
        assert_eq!(mask_ids_in("34052419800101001x"), "340524********001x");
    }

    #[test]
    fn a_valid_id_number_is_found_in_text_and_nothing_else_is() {
        assert_eq!(
            find_id_number_in("李四（身份证410105198001011239）").as_deref(),
            Some("410105198001011239")
        );
        assert_eq!(
            find_id_number_in("住所：４１０１０５１９８００１０１１２３９，电话").as_deref(),
            Some("410105198001011239")
        );
        assert_eq!(
            find_id_number_in("34052419800101001x").as_deref(),
            Some("34052419800101001X")
        );
        for t in [
            "",
            "罚款 50000 元",
            "wrong check character 410105198001011238",
            "part of a longer run 4101051980010112391",
            "a USCC 91320105780688132K, the placeholder 00000000000000000X",
            "a 15-digit old number 410105800101123",
        ] {
            assert_eq!(find_id_number_in(t), None, "{t}");
        }
    }

    #[test]
    fn codes_that_only_look_like_id_numbers_stay_whole() {
        for t in [
            "key XZXK:11410000000012343F:K1",
            "占位代码 00000000000000000X 只允许用于",
            "914101004157892342",
            "（豫）WH安许证字〔2024〕000123",
            "a run of 20 digits 41010519800101123912",
        ] {
            assert_eq!(mask_ids_in(t), t);
        }
        // but a number typed with a digit too few or too many is masked
        assert_eq!(
            mask_ids_in("号码41010519800101123"),
            "号码410105*******1123"
        );
        assert_eq!(
            mask_ids_in("号码4101051980010112391"),
            "号码410105*********2391"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const VALID_USCCS: [&str; 6] = [
        "91230500MA1B3N1N2M",
        "11230500001755309F",
        "91320105780688132K",
        "913301087458306077",
        "91330000755918469E",
        "91441900MA56F3693R",
    ];

    #[test]
    fn reference_usccs_are_valid_and_embed_org_codes() {
        for s in VALID_USCCS {
            let u = Uscc::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(u.as_str(), s);
            assert_eq!(u.to_string(), s);
            let chars: Vec<char> = s.chars().collect();
            let first17: String = chars[..17].iter().collect();
            assert_eq!(uscc_check_char(&first17), Some(chars[17]));
            assert_eq!(make_uscc(&first17).as_deref(), Some(s));

            // Positions 9–17 are a valid organisation code, also in the hyphenated form.
            let org: String = chars[8..17].iter().collect();
            assert_eq!(u.org_code_part(), org);
            let o = OrgCode::parse(&org).unwrap_or_else(|e| panic!("{org}: {e}"));
            assert_eq!(o.as_str(), org);
            let hyph = o.hyphenated();
            assert_eq!(hyph.chars().nth(8), Some('-'));
            assert_eq!(OrgCode::parse(&hyph), Ok(o.clone()));
            assert_eq!(make_org_code(&org[..8]).as_deref(), Some(org.as_str()));
        }
    }

    #[test]
    fn placeholder_is_recognised_but_fails_parse() {
        assert!(is_uscc_placeholder(USCC_PLACEHOLDER));
        assert!(!is_uscc_placeholder(" 00000000000000000X"));
        assert!(!is_uscc_placeholder("00000000000000000x"));
        // Seventeen zeros sum to 0, so the check character would be '0'.
        assert_eq!(
            Uscc::parse(USCC_PLACEHOLDER),
            Err(IdError::CheckChar {
                expected: '0',
                found: 'X'
            })
        );
    }

    #[test]
    fn early_pilot_code_fails_naming_expected_char() {
        let err = Uscc::parse("91350100M0001TGQXM").unwrap_err();
        // Computed independently: Σ value·weight over "91350100M0001TGQX" ≡ 30 (mod 31), so the check value is
        // (31 − 30) mod 31 = 1 → '1'.
        assert_eq!(uscc_check_char("91350100M0001TGQX"), Some('1'));
        assert_eq!(
            err,
            IdError::CheckChar {
                expected: '1',
                found: 'M'
            }
        );
        assert_eq!(err.to_string(), "check character is 'M' but should be '1'");
        assert_eq!(err.zh(), "校验位应为 1，实际为 M");
    }

    #[test]
    fn uscc_rejects_lowercase_and_bad_lengths() {
        let err = Uscc::parse("91230500ma1B3N1N2M").unwrap_err();
        assert_eq!(
            err,
            IdError::BadChar {
                position: 9,
                ch: 'm'
            }
        );
        assert!(err.to_string().contains("lower case"), "{err}");
        assert!(err.zh().contains("小写"));
        // Letters outside the alphabet (I, O, S, V, Z).
        assert_eq!(
            Uscc::parse("91230500MI1B3N1N2M"),
            Err(IdError::BadChar {
                position: 10,
                ch: 'I'
            })
        );
        assert_eq!(
            Uscc::parse(""),
            Err(IdError::Length {
                expected: "18",
                found: 0
            })
        );
        assert_eq!(
            Uscc::parse("91230500MA1B3N1N2M "),
            Err(IdError::Length {
                expected: "18",
                found: 19
            })
        );
        // Multibyte characters count as one character each.
        assert_eq!(
            Uscc::parse("9123050０MA1B3N1N2M"),
            Err(IdError::BadChar {
                position: 8,
                ch: '０'
            })
        );
        assert_eq!(uscc_check_char("9123050"), None);
        assert_eq!(uscc_check_char("91230500MA1B3N1N2M"), None);
        assert_eq!(uscc_check_char("91230500ma1B3N1N2"), None);
    }

    #[test]
    fn org_code_forms_and_errors() {
        // 78068813-2 is embedded in 91320105780688132K.
        assert_eq!(OrgCode::parse("78068813-2").unwrap().as_str(), "780688132");
        assert_eq!(
            OrgCode::parse("780688133"),
            Err(IdError::CheckChar {
                expected: '2',
                found: '3'
            })
        );
        assert_eq!(
            OrgCode::parse("78068813_2"),
            Err(IdError::BadChar {
                position: 9,
                ch: '_'
            })
        );
        assert_eq!(
            OrgCode::parse("78068813-"),
            Err(IdError::BadChar {
                position: 9,
                ch: '-'
            })
        );
        assert_eq!(
            OrgCode::parse("ma1b3n1n-2"),
            Err(IdError::BadChar {
                position: 1,
                ch: 'm'
            })
        );
        assert_eq!(
            OrgCode::parse("12345"),
            Err(IdError::Length {
                expected: "9 or 10",
                found: 5
            })
        );
        assert_eq!(
            IdError::Length {
                expected: "9 or 10",
                found: 5
            }
            .zh(),
            "长度应为 9 或 10 位，实际为 5 位"
        );
        // Check value 10 → 'X', 11 → '0'.
        // Body 00000001: Σ = 2, 11 − 2 = 9. Body 00000000: Σ = 0, 11 → '0'.
        assert_eq!(org_code_check_char("00000001"), Some('9'));
        assert_eq!(org_code_check_char("00000000"), Some('0'));
        // Body 00000005: Σ = 10, 11 − 10 = 1. Body 00000006: Σ = 12 ≡ 1, 11 − 1 = 10 → 'X'.
        assert_eq!(org_code_check_char("00000005"), Some('1'));
        assert_eq!(org_code_check_char("00000006"), Some('X'));
        assert_eq!(org_code_check_char("0000000"), None);
        assert_eq!(org_code_check_char("0000000a"), None);
        assert_eq!(org_code_check_char("000000000"), None);
    }

    #[test]
    fn reference_id_numbers() {
        for s in ["34052419800101001X", "11010519491231002X"] {
            let id = IdNumber::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(id.as_str(), s);
            assert_eq!(make_id_number(&s[..17]).as_deref(), Some(s));
        }
        let err = IdNumber::parse("340524198001010013").unwrap_err();
        assert_eq!(
            err,
            IdError::CheckChar {
                expected: 'X',
                found: '3'
            }
        );
        assert_eq!(err.to_string(), "check character is '3' but should be 'X'");
        assert_eq!(err.zh(), "校验位应为 X，实际为 3");
    }

    #[test]
    fn id_lowercase_x_is_normalised() {
        let id = IdNumber::parse("34052419800101001x").unwrap();
        assert_eq!(id.as_str(), "34052419800101001X");
        // But not elsewhere.
        assert_eq!(
            IdNumber::parse("3405241980010100x1"),
            Err(IdError::BadChar {
                position: 17,
                ch: 'x'
            })
        );
    }

    #[test]
    fn id_birth_date_must_be_real() {
        // 1980-02-30 does not exist; the check character is computed so only the date is wrong.
        let bad = make_id_number("34052419800230001").unwrap();
        assert_eq!(
            IdNumber::parse(&bad),
            Err(IdError::BirthDate {
                digits: "19800230".into()
            })
        );
        // Year before 1900.
        let old = make_id_number("34052418991231001").unwrap();
        assert!(matches!(
            IdNumber::parse(&old),
            Err(IdError::BirthDate { .. })
        ));
        // 2000-02-29 exists (leap year), 1900-02-29 does not.
        assert!(IdNumber::parse(&make_id_number("34052420000229001").unwrap()).is_ok());
        assert!(matches!(
            IdNumber::parse(&make_id_number("34052419000229001").unwrap()),
            Err(IdError::BirthDate { .. })
        ));
        let e = IdError::BirthDate {
            digits: "19800230".into(),
        };
        // the message says what is wrong without the digits masks hide
        assert!(
            e.to_string().contains("not a real date") && !e.to_string().contains("19800230"),
            "{e}"
        );
        assert!(
            e.zh().contains("出生日期") && !e.zh().contains("19800230"),
            "{}",
            e.zh()
        );
    }

    #[test]
    fn id_birth_date_in_the_future_is_refused() {
        use chrono::Datelike;
        let next_year = crate::model::today_cst().year() + 1;
        let future = make_id_number(&format!("410302{next_year}0101152")).unwrap();
        assert_eq!(
            IdNumber::parse(&future),
            Err(IdError::BirthInFuture {
                digits: format!("{next_year}0101")
            })
        );
        let e = IdNumber::parse(&future).unwrap_err();
        assert!(e.to_string().contains("future"), "{e}");
        assert!(e.zh().contains("晚于今天"), "{}", e.zh());
        let id = IdNumber::parse("34052419800101001X").unwrap();
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1980, 1, 1).unwrap()
        );
    }

    #[test]
    fn id_15_digit_conversion() {
        // 340524800101001 → insert "19" before the year: 34052419800101001.
        // Σ digit·weight = 3·7 + 4·9 + 0·10 + 5·5 + 2·8 + 4·4 + 1·2 + 9·1 + 8·6 + 0·3 + 0·7 + 1·9 + 0·10
        //                + 1·5 + 0·8 + 0·4 + 1·2
        //                = 21 + 36 + 0 + 25 + 16 + 16 + 2 + 9 + 48 + 0 + 0 + 9 + 0 + 5 + 0 + 0 + 2 = 189.
        // 189 mod 11 = 2 → "10X98765432"[2] = 'X'. Result: 34052419800101001X.
        assert_eq!(
            IdNumber::convert_15("340524800101001").as_deref(),
            Some("34052419800101001X")
        );
        assert_eq!(
            IdNumber::parse("340524800101001").unwrap().as_str(),
            "34052419800101001X"
        );
        assert_eq!(IdNumber::convert_15("34052480010100X"), None);
        assert_eq!(IdNumber::convert_15("3405248001010"), None);
        assert_eq!(
            IdNumber::parse("34052480010100X"),
            Err(IdError::BadChar {
                position: 15,
                ch: 'X'
            })
        );
        // 15-digit with an impossible date (month 13).
        assert_eq!(
            IdNumber::parse("340524801301001"),
            Err(IdError::BirthDate {
                digits: "19801301".into()
            })
        );
        assert_eq!(
            IdNumber::parse("3405241980"),
            Err(IdError::Length {
                expected: "15 or 18",
                found: 10
            })
        );
    }

    #[test]
    fn mask_id_examples() {
        assert_eq!(mask_id("410105199001011234"), "410105********1234");
        assert_eq!(mask_id("340524800101001"), "340524*****1001");
        assert_eq!(mask_id("12345678901234"), "************34");
        assert_eq!(mask_id("12345"), "***45");
        assert_eq!(mask_id("1234"), "****");
        assert_eq!(mask_id(""), "");
        // Multibyte: counted in chars, never sliced on bytes.
        assert_eq!(mask_id("张三丰"), "***");
        assert_eq!(mask_id("身份证号码是"), "****码是");
        assert_eq!(
            mask_id("一二三四五六七八九十壹贰叁肆伍陆"),
            "一二三四五六******叁肆伍陆"
        );
        assert_eq!(mask_id("😀😀😀😀😀"), "***😀😀");
    }

    fn uscc_alphabet() -> Vec<char> {
        USCC_ALPHABET.chars().collect()
    }

    fn set_char(s: &str, pos: usize, c: char) -> String {
        s.chars()
            .enumerate()
            .map(|(i, x)| if i == pos { c } else { x })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn generated_uscc_valid_and_substitutions_detected(
            body in proptest::collection::vec(0usize..31, 17)
        ) {
            let alpha = uscc_alphabet();
            let first17: String = body.iter().map(|&i| alpha[i]).collect();
            let code = make_uscc(&first17).unwrap();
            prop_assert!(Uscc::parse(&code).is_ok());
            // mod 31 is prime, every weight is nonzero mod 31 and every value difference is in 1..31, so
            // changing any one character within the alphabet changes Σ mod 31: always detected.
            for pos in 0..18 {
                for &c in &alpha {
                    if code.chars().nth(pos) == Some(c) {
                        continue;
                    }
                    let bad = set_char(&code, pos, c);
                    prop_assert!(Uscc::parse(&bad).is_err(), "{} accepted", bad);
                }
            }
        }

        #[test]
        fn generated_org_code_valid_and_digit_substitutions_detected(
            body in proptest::collection::vec(0u32..36, 8),
        ) {
            let body8: String = body.iter().map(|&v| char::from_digit(v, 36).unwrap().to_ascii_uppercase()).collect();
            let code = make_org_code(&body8).unwrap();
            let parsed = OrgCode::parse(&code).unwrap();
            prop_assert_eq!(parsed.as_str(), code.as_str());
            let printed = parsed.hyphenated();
            prop_assert_eq!(OrgCode::parse(&printed), Ok(parsed.clone()));
            // GB 11714 works mod 11 but body values go up to 35, so two characters whose values differ by a
            // multiple of 11 (e.g. '0' = 0 and 'B' = 11) give the same Σ mod 11: such substitutions are NOT
            // detectable by design. Digit-for-digit substitutions differ by 1..9, weights are 2..10, 11 is
            // prime, so those are always detected; so is any other check character in the check position.
            let chars: Vec<char> = code.chars().collect();
            for (pos, &orig) in chars.iter().enumerate().take(8) {
                if !orig.is_ascii_digit() {
                    continue;
                }
                for c in '0'..='9' {
                    if c == orig {
                        continue;
                    }
                    let bad = set_char(&code, pos, c);
                    prop_assert!(OrgCode::parse(&bad).is_err(), "{} accepted", bad);
                }
            }
            for c in "0123456789X".chars() {
                if c == chars[8] {
                    continue;
                }
                let bad = set_char(&code, 8, c);
                prop_assert_eq!(
                    OrgCode::parse(&bad),
                    Err(IdError::CheckChar { expected: chars[8], found: c })
                );
            }
        }

        #[test]
        fn generated_id_valid_and_substitutions_detected(
            area in 110000u32..660000,
            days in 0i64..(120 * 365),
            seq in 0u32..1000,
        ) {
            let base = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap();
            let birth = base + chrono::Duration::days(days);
            let first17 = format!("{area:06}{}{seq:03}", birth.format("%Y%m%d"));
            let id = make_id_number(&first17).unwrap();
            let parsed = IdNumber::parse(&id).unwrap();
            prop_assert_eq!(parsed.as_str(), id.as_str());
            // mod 11 is prime, weights are nonzero mod 11 and digit differences are 1..9: any digit
            // substitution changes Σ mod 11 (or breaks the birth date); any other check char is wrong.
            let chars: Vec<char> = id.chars().collect();
            for (pos, &orig) in chars.iter().enumerate().take(17) {
                for c in '0'..='9' {
                    if c == orig {
                        continue;
                    }
                    let bad = set_char(&id, pos, c);
                    prop_assert!(IdNumber::parse(&bad).is_err(), "{} accepted", bad);
                }
            }
            for c in "0123456789X".chars() {
                if c == chars[17] {
                    continue;
                }
                let bad = set_char(&id, 17, c);
                prop_assert_eq!(
                    IdNumber::parse(&bad),
                    Err(IdError::CheckChar { expected: chars[17], found: c })
                );
            }
        }

        #[test]
        fn nothing_panics_on_arbitrary_input(s in any::<String>()) {
            let _ = Uscc::parse(&s);
            let _ = OrgCode::parse(&s);
            let _ = IdNumber::parse(&s);
            let _ = IdNumber::convert_15(&s);
            let _ = uscc_check_char(&s);
            let _ = org_code_check_char(&s);
            let _ = id_check_char(&s);
            let _ = make_uscc(&s);
            let _ = make_org_code(&s);
            let _ = make_id_number(&s);
            let _ = is_uscc_placeholder(&s);
            let masked = mask_id(&s);
            prop_assert_eq!(masked.chars().count(), s.chars().count());
            if let Err(e) = Uscc::parse(&s) {
                let _ = (e.to_string(), e.zh());
            }
        }

        #[test]
        fn nothing_panics_on_near_miss_lengths(s in "[0-9A-Za-z\\-xX一😀 ]{0,20}") {
            for r in [
                Uscc::parse(&s).err(),
                OrgCode::parse(&s).err(),
                IdNumber::parse(&s).err(),
            ].into_iter().flatten() {
                let _ = (r.to_string(), r.zh());
            }
            let _ = mask_id(&s);
        }
    }
}
