//! The platform XML documents of DESIGN §3: the exchange message and its receipt, the record page, the token
//! request and response and the error document.
//!
//! Writers append to a `Vec<u8>` and escape by hand (no per-field allocation): `< > & " '` in attribute values
//! plus `\t \n \r` as character references (attribute-value normalization would turn them into spaces), and
//! `< > &` plus `\r` (as `&#13;`, end-of-line handling would turn it into `\n`) in text content. Quotes need no
//! escaping in text content and are written raw there. A character XML 1.0 cannot carry at all (see
//! [`first_illegal_char`]) is written as U+FFFD REPLACEMENT CHARACTER: validation upstream reports such values, so
//! this only keeps the output well-formed whatever it is handed. A field name that is not an XML name (without
//! colons) is written with each offending character replaced by `_` for the same reason.
//!
//! Readers are streaming (quick-xml `Reader` over the byte slice, no DOM) and strict: UTF-8 only (an optional BOM
//! is skipped), no `<!DOCTYPE` (so no entity expansion), only the five predefined entities and character
//! references, no character outside XML 1.0's `Char` production, end-of-line and attribute-value normalization as
//! the XML spec requires. Every violation of the document shape is an [`XmlError`] naming what was expected and
//! where; readers never panic.

use crate::model::{Kind, PlatformRecord, RecordBuilder};
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::borrow::Cow;
use std::io::Write as _;

// ---------------------------------------------------------------------------------------------------------------
// Documents
// ---------------------------------------------------------------------------------------------------------------

/// `<ExchangeMessage version="2.0">`: one batch sent to `POST /api/exchange`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeMessage {
    /// USCC of the data source unit.
    pub sender: String,
    /// Platform code.
    pub receiver: String,
    /// Batch id, the idempotency key.
    pub flow: String,
    pub kind: Kind,
    /// RFC 3339.
    pub send_time: String,
    pub records: Vec<MessageRecord>,
}

/// One `<record>` of an exchange message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub key: String,
    pub op: MessageOp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageOp {
    /// `op="upsert"`, the fields as child elements.
    Upsert(PlatformRecord),
    /// `op="withdraw"`, an empty element.
    Withdraw,
}

impl MessageOp {
    pub fn as_str(&self) -> &'static str {
        match self {
            MessageOp::Upsert(_) => "upsert",
            MessageOp::Withdraw => "withdraw",
        }
    }
}

/// `<ExchangeReceipt>`: the platform's answer to an exchange message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub flow: String,
    pub accepted: u32,
    pub unchanged: u32,
    pub rejected: u32,
    pub withdrawn: u32,
    pub results: Vec<RecordResult>,
}

/// One `<result>` of a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordResult {
    pub key: String,
    pub status: ResultStatus,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultStatus {
    Accepted,
    Unchanged,
    Rejected,
    Withdrawn,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Accepted => "accepted",
            ResultStatus::Unchanged => "unchanged",
            ResultStatus::Rejected => "rejected",
            ResultStatus::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<ResultStatus> {
        match s {
            "accepted" => Some(ResultStatus::Accepted),
            "unchanged" => Some(ResultStatus::Unchanged),
            "rejected" => Some(ResultStatus::Rejected),
            "withdrawn" => Some(ResultStatus::Withdrawn),
            _ => None,
        }
    }
}

/// `<RecordPage>`: one page of `GET /api/records`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordPage {
    pub kind: Kind,
    pub page: u64,
    pub size: u64,
    pub total: u64,
    pub records: Vec<PageRecord>,
}

/// One `<record>` of a record page. `fields` is `Some` when the page was asked with `fields=1` (written as child
/// elements; `Some` of an empty record is written as `<record …></record>`, `None` as `<record …/>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRecord {
    pub key: String,
    pub digest: String,
    pub status: PublicStatus,
    pub published_at: String,
    pub updated_at: String,
    pub fields: Option<PlatformRecord>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublicStatus {
    Public,
    Withdrawn,
}

impl PublicStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PublicStatus::Public => "public",
            PublicStatus::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(s: &str) -> Option<PublicStatus> {
        match s {
            "public" => Some(PublicStatus::Public),
            "withdrawn" => Some(PublicStatus::Withdrawn),
            _ => None,
        }
    }
}

/// `<TokenRequest><appKey/><timestamp/><sign/></TokenRequest>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub app_key: String,
    pub timestamp: String,
    pub sign: String,
}

/// `<TokenResponse><token/><expiresIn/></TokenResponse>`, `expires_in` in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenResponse {
    pub token: String,
    pub expires_in: u64,
}

/// `<Error code="…" message="…"/>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDoc {
    pub code: String,
    pub message: String,
}

// ---------------------------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------------------------

/// Why a document could not be read. Byte positions count from the start of the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the document is not UTF-8: invalid byte at {pos}")]
    NotUtf8 { pos: u64 },
    #[error("the document declares encoding `{encoding}`; only UTF-8 is accepted")]
    Encoding { encoding: String },
    #[error("a DOCTYPE declaration at byte {pos} is not accepted")]
    Doctype { pos: u64 },
    #[error("malformed XML at byte {pos}: {message}")]
    Syntax { pos: u64, message: String },
    #[error("expected {expected} at byte {pos}, found {found}")]
    Unexpected {
        expected: String,
        found: String,
        pos: u64,
    },
    #[error("the document ended early: expected {expected}")]
    Truncated { expected: String },
    #[error("<{element}> at byte {pos} lacks the required attribute `{attribute}`")]
    MissingAttribute {
        element: String,
        attribute: String,
        pos: u64,
    },
    #[error("<{element}> at byte {pos} lacks the required child <{child}>")]
    MissingElement {
        element: String,
        child: String,
        pos: u64,
    },
    #[error("<{element}> at byte {pos}: {message}")]
    Invalid {
        element: String,
        pos: u64,
        message: String,
    },
    #[error("<Header> declares count {declared} but <Body> holds {actual} records")]
    CountMismatch { declared: u64, actual: u64 },
    #[error("field <{field}> appears twice in the record at byte {pos}")]
    DuplicateField { field: String, pos: u64 },
}

impl XmlError {
    /// A short stable code for an `<Error code=…>` answer: `NOT_WELL_FORMED` for anything XML itself rejects,
    /// `BAD_ENVELOPE` for a well-formed document of the wrong shape.
    pub fn code(&self) -> &'static str {
        match self {
            XmlError::NotUtf8 { .. }
            | XmlError::Encoding { .. }
            | XmlError::Doctype { .. }
            | XmlError::Syntax { .. }
            | XmlError::Truncated { .. } => "NOT_WELL_FORMED",
            _ => "BAD_ENVELOPE",
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Characters
// ---------------------------------------------------------------------------------------------------------------

/// Whether XML 1.0 can carry `c` at all: `#x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]`
/// (surrogates cannot occur in a Rust `char`).
#[inline]
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// The first character XML 1.0 cannot carry, as (char index counted from 0, char), or `None` if all can be.
pub fn first_illegal_char(s: &str) -> Option<(usize, char)> {
    // In a `&str` the only chars XML cannot carry are the controls below U+0020 other than tab, LF and CR (single
    // bytes) and U+FFFE / U+FFFF (EF BF BE / EF BF BF; 0xEF is always a lead byte). So scan 16 bytes at a time
    // while a block has neither a byte below 0x20 nor an EF BF pair, and count chars only once something is found.
    let b = s.as_bytes();
    let n = b.len();
    if n <= BLOCK && block_clean::<SCAN>(&padded(b)) {
        return None;
    }
    let mut i = 0;
    while i < n {
        let end = match window(b, i) {
            Some(w) if block_clean::<SCAN>(w) => {
                i += BLOCK;
                continue;
            }
            Some(_) => i + BLOCK,
            // Fewer than a block left: the last window (overlapping clean bytes) covers all but the last byte,
            // which a str cannot end with the lead byte of.
            None if n > BLOCK
                && window(b, n - BLOCK - 1).is_some_and(block_clean::<SCAN>)
                && (b[n - 1] >= 0x20 || matches!(b[n - 1], b'\t' | b'\n' | b'\r')) =>
            {
                return None
            }
            None => n,
        };
        // Something in b[i..end] needs a closer look.
        while i < end && i < n {
            let illegal = match b[i] {
                b'\t' | b'\n' | b'\r' => false,
                0..0x20 => true,
                0xEF => b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)),
                _ => false,
            };
            if illegal {
                let ch = s[i..].chars().next()?;
                debug_assert!(!is_xml_char(ch));
                return Some((s[..i].chars().count(), ch));
            }
            i += 1;
        }
    }
    None
}

/// Bytes looked at together: the compiler turns a block test into a few vector instructions.
const BLOCK: usize = 16;
/// What [`block_clean`] looks for: chars XML cannot carry (and all controls), plus text escapes, plus attribute
/// escapes.
const SCAN: u8 = 0;
const TEXT: u8 = 1;
const ATTR: u8 = 2;

/// `BLOCK` bytes from `i` and the byte after them (to see an EF BF pair across the block's end).
#[inline(always)]
fn window(b: &[u8], i: usize) -> Option<&[u8; BLOCK + 1]> {
    b.get(i..i + BLOCK + 1).and_then(|w| w.try_into().ok())
}

/// A short string (at most `BLOCK` bytes) as a window, padded with spaces (which no test looks for).
#[inline(always)]
fn padded(b: &[u8]) -> [u8; BLOCK + 1] {
    let mut w = [b' '; BLOCK + 1];
    w[..b.len()].copy_from_slice(b);
    w
}

/// Whether the first `BLOCK` bytes of `w` need no closer look: no byte below 0x20, no EF BF pair (which U+FFFE
/// and U+FFFF start with; other EF-led chars such as the fullwidth `，` EF BC 8C are common in Chinese text and
/// pass), and for `TEXT` / `ATTR` nothing to escape. Branch-free over the block, so it vectorises.
#[inline(always)]
fn block_clean<const MODE: u8>(w: &[u8; BLOCK + 1]) -> bool {
    let mut hit = 0u8;
    for k in 0..BLOCK {
        let c = w[k];
        let mut m = (c < 0x20) as u8 | ((c == 0xEF) & (w[k + 1] == 0xBF)) as u8;
        if MODE >= TEXT {
            m |= (c == b'<') as u8 | (c == b'>') as u8 | (c == b'&') as u8;
        }
        if MODE == ATTR {
            m |= (c == b'"') as u8 | (c == b'\'') as u8;
        }
        hit |= m;
    }
    hit == 0
}

// ---------------------------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------------------------

const PASS: u8 = 0;
const ESC: u8 = 1; // a char written as a reference
const CTRL: u8 = 2; // a control char XML cannot carry
const LEAD_EF: u8 = 3; // may start U+FFFE / U+FFFF

const fn escape_table(attr: bool) -> [u8; 256] {
    let mut t = [PASS; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = CTRL;
        i += 1;
    }
    t[b'\r' as usize] = ESC;
    if attr {
        t[b'\t' as usize] = ESC;
        t[b'\n' as usize] = ESC;
        t[b'"' as usize] = ESC;
        t[b'\'' as usize] = ESC;
    } else {
        t[b'\t' as usize] = PASS;
        t[b'\n' as usize] = PASS;
    }
    t[b'<' as usize] = ESC;
    t[b'>' as usize] = ESC;
    t[b'&' as usize] = ESC;
    t[0xEF] = LEAD_EF;
    t
}

static TEXT_ESCAPES: [u8; 256] = escape_table(false);
static ATTR_ESCAPES: [u8; 256] = escape_table(true);

const REPLACEMENT: &[u8] = "\u{FFFD}".as_bytes();

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `x` is below `n` (exact for `n <= 128`).
#[inline(always)]
fn has_less(x: u64, n: u8) -> bool {
    x.wrapping_sub(LO * n as u64) & !x & HI != 0
}

/// Whether any byte of `x` equals `b`.
#[inline(always)]
fn has_byte(x: u64, b: u8) -> bool {
    has_less(x ^ (LO * b as u64), 1)
}

#[inline(always)]
fn chunk(b: &[u8], i: usize) -> Option<u64> {
    b.get(i..i + 8)
        .and_then(|c| c.try_into().ok())
        .map(u64::from_le_bytes)
}

#[inline]
fn escape_into<const MODE: u8>(s: &str, out: &mut Vec<u8>) {
    let table = if MODE == ATTR {
        &ATTR_ESCAPES
    } else {
        &TEXT_ESCAPES
    };
    let b = s.as_bytes();
    let n = b.len();
    if n <= BLOCK && block_clean::<MODE>(&padded(b)) {
        out.extend_from_slice(b);
        return;
    }
    let mut start = 0;
    let mut i = 0;
    while i < n {
        // Skip a clean block at a time; look at single bytes otherwise.
        let end = match window(b, i) {
            Some(w) if block_clean::<MODE>(w) => {
                i += BLOCK;
                continue;
            }
            Some(_) => i + BLOCK,
            // Less than a block left: when the last window (overlapping bytes already looked at) and the last
            // byte are clean, so is the rest, which the final copy below takes as is.
            None if n > BLOCK
                && window(b, n - BLOCK - 1).is_some_and(block_clean::<MODE>)
                && table[b[n - 1] as usize] == PASS =>
            {
                break;
            }
            None => n,
        };
        while i < end && i < n {
            let c = b[i];
            match table[c as usize] {
                PASS => i += 1,
                ESC => {
                    out.extend_from_slice(&b[start..i]);
                    out.extend_from_slice(match c {
                        b'<' => b"&lt;",
                        b'>' => b"&gt;",
                        b'&' => b"&amp;",
                        b'"' => b"&quot;",
                        b'\'' => b"&apos;",
                        b'\t' => b"&#9;",
                        b'\n' => b"&#10;",
                        _ => b"&#13;",
                    });
                    i += 1;
                    start = i;
                }
                CTRL => {
                    out.extend_from_slice(&b[start..i]);
                    out.extend_from_slice(REPLACEMENT);
                    i += 1;
                    start = i;
                }
                _ => {
                    // 0xEF: U+FFFE is EF BF BE, U+FFFF is EF BF BF.
                    if n > i + 2 && b[i + 1] == 0xBF && (b[i + 2] == 0xBE || b[i + 2] == 0xBF) {
                        out.extend_from_slice(&b[start..i]);
                        out.extend_from_slice(REPLACEMENT);
                        i += 3;
                        start = i;
                    } else {
                        i += 1;
                    }
                }
            }
        }
    }
    out.extend_from_slice(&b[start..]);
}

/// Appends `s` escaped for text content.
#[inline]
pub fn escape_text(s: &str, out: &mut Vec<u8>) {
    escape_into::<TEXT>(s, out);
}

/// How many bytes [`escape_text`] writes for `s`, without writing them (sizing messages before they are built).
pub fn escaped_text_len(s: &str) -> usize {
    let b = s.as_bytes();
    if b.len() <= BLOCK && block_clean::<TEXT>(&padded(b)) {
        return b.len();
    }
    let mut n = b.len();
    let mut i = 0;
    while i < b.len() {
        if window(b, i).is_some_and(block_clean::<TEXT>) {
            i += BLOCK;
            continue;
        }
        match TEXT_ESCAPES[b[i] as usize] {
            ESC => {
                n += match b[i] {
                    b'&' | b'\r' => 4,
                    _ => 3,
                }
            }
            CTRL => n += REPLACEMENT.len() - 1,
            PASS => {}
            _ => {
                if b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF)) {
                    i += 2; // three bytes become the three of U+FFFD
                }
            }
        }
        i += 1;
    }
    n
}

/// Appends `s` escaped for a double-quoted attribute value.
#[inline]
pub fn escape_attr(s: &str, out: &mut Vec<u8>) {
    escape_into::<ATTR>(s, out);
}

const fn ascii_name_chars() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.';
        i += 1;
    }
    t
}

static ASCII_NAME_CHAR: [bool; 256] = ascii_name_chars();

fn is_name_start_char(c: char) -> bool {
    matches!(c,
        'A'..='Z' | '_' | 'a'..='z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}' | '\u{2070}'..='\u{218F}'
        | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}' | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}'
        | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// `name` as an XML element name without colons (an NCName): itself when it already is one, otherwise each
/// character that may not stand where it does replaced by `_` (and `_` for an empty name).
pub fn element_name(name: &str) -> Cow<'_, str> {
    let b = name.as_bytes();
    let ascii_ok = !b.is_empty()
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b[1..].iter().all(|&c| ASCII_NAME_CHAR[c as usize]);
    if ascii_ok {
        return Cow::Borrowed(name);
    }
    let mut chars = name.chars();
    let valid = match chars.next() {
        Some(c) => is_name_start_char(c) && chars.all(is_name_char),
        None => false,
    };
    if valid {
        return Cow::Borrowed(name);
    }
    let mut s = String::with_capacity(name.len() + 1);
    for (i, c) in name.chars().enumerate() {
        if i == 0 && !is_name_start_char(c) {
            s.push('_');
            if is_name_char(c) {
                s.push(c);
            }
        } else if is_name_char(c) {
            s.push(c);
        } else {
            s.push('_');
        }
    }
    if s.is_empty() {
        s.push('_');
    }
    Cow::Owned(s)
}

const DECL: &[u8] = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";

#[inline]
fn attr(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    escape_attr(value, out);
    out.push(b'"');
}

fn attr_num(out: &mut Vec<u8>, name: &str, value: u64) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, " {name}=\"{value}\"");
}

/// `<name>escaped text</name>`; `name` must be a literal XML name.
#[inline]
fn text_elem(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(b'<');
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
    escape_text(value, out);
    out.extend_from_slice(b"</");
    out.extend_from_slice(name.as_bytes());
    out.push(b'>');
}

/// The fields of a record as child elements, in the record's (sorted) order.
#[inline]
fn write_fields(rec: &PlatformRecord, out: &mut Vec<u8>) {
    let (text, spans) = rec.parts();
    // One reservation for the record (escapes may still grow it).
    // Each name twice, each value once, five bytes of tags per field: at most twice the text plus the tags.
    out.reserve(2 * text.len() + 5 * spans.len() + 64);
    // One scan of the whole text (names and values) instead of one per value: the usual record has nothing to
    // escape, and then values are copied as they are.
    let plain = all_clean::<TEXT>(text.as_bytes());
    let mut start = 0;
    for &(name_end, value_end) in spans {
        let (name_end, value_end) = (name_end as usize, value_end as usize);
        let name = element_name(&text[start..name_end]);
        let value = &text[name_end..value_end];
        start = value_end;
        out.push(b'<');
        out.extend_from_slice(name.as_bytes());
        out.push(b'>');
        if plain {
            out.extend_from_slice(value.as_bytes());
        } else {
            escape_text(value, out);
        }
        out.extend_from_slice(b"</");
        out.extend_from_slice(name.as_bytes());
        out.push(b'>');
    }
}

/// Whether no byte of `b` needs a closer look in `MODE` (see [`block_clean`]), a block at a time.
#[inline]
fn all_clean<const MODE: u8>(b: &[u8]) -> bool {
    let n = b.len();
    let mut i = 0;
    while let Some(w) = window(b, i) {
        if !block_clean::<MODE>(w) {
            return false;
        }
        i += BLOCK;
    }
    // The last (at most) BLOCK bytes, padded: overlaps bytes already looked at, which is harmless.
    block_clean::<MODE>(&padded(&b[n.saturating_sub(BLOCK)..]))
}

/// Appends one `<record op="upsert" key="…"><FIELD>…</FIELD>…</record>` (no XML declaration).
pub fn write_record(key: &str, rec: &PlatformRecord, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<record op=\"upsert\" key=\"");
    escape_attr(key, out);
    out.extend_from_slice(b"\">");
    write_fields(rec, out);
    out.extend_from_slice(b"</record>");
}

/// Appends one `<record op="withdraw" key="…"/>` (no XML declaration).
pub fn write_withdraw(key: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(b"<record op=\"withdraw\" key=\"");
    escape_attr(key, out);
    out.extend_from_slice(b"\"/>");
}

/// Appends a whole exchange message, XML declaration included; `count` is the number of records.
pub fn write_exchange_message(msg: &ExchangeMessage, out: &mut Vec<u8>) {
    out.extend_from_slice(DECL);
    out.extend_from_slice(b"<ExchangeMessage version=\"2.0\"><Header>");
    text_elem(out, "sender", &msg.sender);
    text_elem(out, "receiver", &msg.receiver);
    text_elem(out, "flow", &msg.flow);
    text_elem(out, "item", msg.kind.item());
    let _ = write!(out, "<count>{}</count>", msg.records.len());
    text_elem(out, "sendTime", &msg.send_time);
    out.extend_from_slice(b"</Header><Body>");
    for r in &msg.records {
        match &r.op {
            MessageOp::Upsert(rec) => write_record(&r.key, rec, out),
            MessageOp::Withdraw => write_withdraw(&r.key, out),
        }
    }
    out.extend_from_slice(b"</Body></ExchangeMessage>");
}

/// Appends an exchange receipt, XML declaration included.
pub fn write_receipt(r: &Receipt, out: &mut Vec<u8>) {
    out.extend_from_slice(DECL);
    out.extend_from_slice(b"<ExchangeReceipt");
    attr(out, "flow", &r.flow);
    attr_num(out, "accepted", r.accepted.into());
    attr_num(out, "unchanged", r.unchanged.into());
    attr_num(out, "rejected", r.rejected.into());
    attr_num(out, "withdrawn", r.withdrawn.into());
    out.push(b'>');
    for res in &r.results {
        out.extend_from_slice(b"<result");
        attr(out, "key", &res.key);
        attr(out, "status", res.status.as_str());
        attr(out, "code", &res.code);
        attr(out, "message", &res.message);
        out.extend_from_slice(b"/>");
    }
    out.extend_from_slice(b"</ExchangeReceipt>");
}

/// Appends a record page, XML declaration included.
pub fn write_record_page(p: &RecordPage, out: &mut Vec<u8>) {
    out.extend_from_slice(DECL);
    out.extend_from_slice(b"<RecordPage");
    attr(out, "item", p.kind.item());
    attr_num(out, "page", p.page);
    attr_num(out, "size", p.size);
    attr_num(out, "total", p.total);
    out.push(b'>');
    for r in &p.records {
        out.extend_from_slice(b"<record");
        attr(out, "key", &r.key);
        attr(out, "digest", &r.digest);
        attr(out, "status", r.status.as_str());
        attr(out, "publishedAt", &r.published_at);
        attr(out, "updatedAt", &r.updated_at);
        match &r.fields {
            Some(rec) => {
                out.push(b'>');
                write_fields(rec, out);
                out.extend_from_slice(b"</record>");
            }
            None => out.extend_from_slice(b"/>"),
        }
    }
    out.extend_from_slice(b"</RecordPage>");
}

/// Appends a token request, XML declaration included.
pub fn write_token_request(t: &TokenRequest, out: &mut Vec<u8>) {
    out.extend_from_slice(DECL);
    out.extend_from_slice(b"<TokenRequest>");
    text_elem(out, "appKey", &t.app_key);
    text_elem(out, "timestamp", &t.timestamp);
    text_elem(out, "sign", &t.sign);
    out.extend_from_slice(b"</TokenRequest>");
}

/// Appends a token response, XML declaration included.
pub fn write_token_response(t: &TokenResponse, out: &mut Vec<u8>) {
    out.extend_from_slice(DECL);
    out.extend_from_slice(b"<TokenResponse>");
    text_elem(out, "token", &t.token);
    let _ = write!(out, "<expiresIn>{}</expiresIn>", t.expires_in);
    out.extend_from_slice(b"</TokenResponse>");
}

/// Appends `<Error code="…" message="…"/>`, XML declaration included.
pub fn write_error_doc(e: &ErrorDoc, out: &mut Vec<u8>) {
    out.extend_from_slice(DECL);
    out.extend_from_slice(b"<Error");
    attr(out, "code", &e.code);
    attr(out, "message", &e.message);
    out.extend_from_slice(b"/>");
}

// ---------------------------------------------------------------------------------------------------------------
// Reading: unescaping
// ---------------------------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Norm {
    /// Text content: end-of-line handling (`\r\n` and a lone `\r` become `\n`).
    Text,
    /// Attribute value: end-of-line handling, then raw `\t \n` become spaces; `<` is not allowed.
    Attr,
}

const U_AMP: u8 = 1;
const U_CR: u8 = 2;
const U_WS: u8 = 3; // \t \n in an attribute
const U_CTRL: u8 = 4;
const U_EF: u8 = 5;
const U_LT: u8 = 6; // < in an attribute

const fn unescape_table(attr: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = U_CTRL;
        i += 1;
    }
    t[b'\t' as usize] = if attr { U_WS } else { 0 };
    t[b'\n' as usize] = if attr { U_WS } else { 0 };
    t[b'\r' as usize] = U_CR;
    t[b'&' as usize] = U_AMP;
    if attr {
        t[b'<' as usize] = U_LT;
    }
    t[0xEF] = U_EF;
    t
}

static TEXT_UNESCAPES: [u8; 256] = unescape_table(false);
static ATTR_UNESCAPES: [u8; 256] = unescape_table(true);

/// Appends the unescaped, normalized `raw` to `out`; an error is a message, the caller adds where.
fn unescape_into(s: &str, out: &mut String, norm: Norm) -> Result<(), String> {
    let b = s.as_bytes();
    let table = match norm {
        Norm::Text => &TEXT_UNESCAPES,
        Norm::Attr => &ATTR_UNESCAPES,
    };
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if let Some(x) = chunk(b, i) {
            // Controls (\t \n \r included), `&`, `<`, and the lead byte of U+FFFE/U+FFFF.
            if !(has_less(x, 0x20) || has_byte(x, b'&') || has_byte(x, b'<') || has_byte(x, 0xEF)) {
                i += 8;
                continue;
            }
        }
        let c = b[i];
        match table[c as usize] {
            0 => i += 1,
            U_AMP => {
                out.push_str(&s[start..i]);
                let Some(len) = b[i + 1..].iter().position(|&x| x == b';') else {
                    return Err("`&` without a terminating `;`".into());
                };
                let name = &s[i + 1..i + 1 + len];
                match name {
                    "lt" => out.push('<'),
                    "gt" => out.push('>'),
                    "amp" => out.push('&'),
                    "quot" => out.push('"'),
                    "apos" => out.push('\''),
                    _ => match name.strip_prefix('#') {
                        Some(num) => out.push(parse_char_ref(num)?),
                        None => {
                            return Err(format!(
                                "unknown entity `&{}`; only the predefined entities are accepted",
                                truncate(name, 40)
                            ))
                        }
                    },
                }
                i += len + 2;
                start = i;
            }
            U_CR => {
                out.push_str(&s[start..i]);
                out.push(if norm == Norm::Text { '\n' } else { ' ' });
                i += 1;
                if b.get(i) == Some(&b'\n') {
                    i += 1;
                }
                start = i;
            }
            U_WS => {
                out.push_str(&s[start..i]);
                out.push(' ');
                i += 1;
                start = i;
            }
            U_CTRL => return Err(format!("character U+{c:04X} is not allowed in XML")),
            U_LT => return Err("`<` is not allowed in an attribute value".into()),
            _ => {
                if b.len() > i + 2 && b[i + 1] == 0xBF && (b[i + 2] == 0xBE || b[i + 2] == 0xBF) {
                    return Err(format!(
                        "character U+FF{:02X} is not allowed in XML",
                        if b[i + 2] == 0xBE { 0xFE } else { 0xFF }
                    ));
                }
                i += 1;
            }
        }
    }
    out.push_str(&s[start..]);
    Ok(())
}

fn parse_char_ref(num: &str) -> Result<char, String> {
    let (digits, radix) = match num.strip_prefix('x') {
        Some(h) => (h, 16),
        None => (num, 10),
    };
    let bad = || format!("invalid character reference `&#{};`", truncate(num, 40));
    if digits.is_empty() || !digits.bytes().all(|d| (d as char).is_digit(radix)) {
        return Err(bad());
    }
    let code = u32::from_str_radix(digits, radix).map_err(|_| bad())?;
    match char::from_u32(code) {
        Some(c) if is_xml_char(c) => Ok(c),
        _ => Err(format!(
            "character reference `&#{};` names a character XML cannot carry",
            truncate(num, 40)
        )),
    }
}

fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Reading: the event stream
// ---------------------------------------------------------------------------------------------------------------

/// A structural event: whitespace-only text, comments, processing instructions and the declaration are skipped.
enum Node<'a> {
    Start(BytesStart<'a>),
    Empty(BytesStart<'a>),
    End,
    Eof,
}

fn name_of<'s>(s: &'s BytesStart<'_>) -> &'s [u8] {
    s.name().into_inner()
}

fn show(name: &[u8]) -> String {
    truncate(&String::from_utf8_lossy(name), 60).to_string()
}

fn describe(node: &Node<'_>) -> String {
    match node {
        Node::Start(s) | Node::Empty(s) => format!("<{}>", show(name_of(s))),
        Node::End => "an end tag".into(),
        Node::Eof => "the end of the document".into(),
    }
}

struct Parser<'a> {
    reader: Reader<&'a [u8]>,
    /// The reader's input, known to be UTF-8.
    src: &'a str,
    /// Bytes skipped before the reader's input (a BOM).
    base: u64,
    /// Where the last event started.
    pos: u64,
}

impl<'a> Parser<'a> {
    fn new(xml: &'a [u8]) -> Result<Self, XmlError> {
        let src = match std::str::from_utf8(xml) {
            Ok(s) => s,
            Err(e) => {
                return Err(XmlError::NotUtf8 {
                    pos: e.valid_up_to() as u64,
                })
            }
        };
        let (src, base) = match src.strip_prefix('\u{FEFF}') {
            Some(rest) => (rest, 3),
            None => (src, 0),
        };
        let mut reader = Reader::from_reader(src.as_bytes());
        let c = reader.config_mut();
        c.trim_text(false);
        c.check_end_names = true;
        c.check_comments = true;
        c.expand_empty_elements = false;
        c.allow_unmatched_ends = false;
        Ok(Parser {
            reader,
            src,
            base,
            pos: 0,
        })
    }

    /// `seg` as text. The reader hands out slices of its input cut at ASCII delimiters, which are UTF-8 because
    /// the input is: find them in `src` (a boundary check) instead of validating them again.
    fn as_str<'s>(&self, seg: &'s [u8]) -> Result<&'s str, XmlError>
    where
        'a: 's,
    {
        let start = (seg.as_ptr() as usize).wrapping_sub(self.src.as_ptr() as usize);
        if let Some(s) = start
            .checked_add(seg.len())
            .and_then(|end| self.src.get(start..end))
        {
            if s.as_ptr() == seg.as_ptr() {
                return Ok(s);
            }
        }
        std::str::from_utf8(seg).map_err(|_| self.syntax("invalid UTF-8"))
    }

    fn syntax(&self, message: impl Into<String>) -> XmlError {
        XmlError::Syntax {
            pos: self.pos,
            message: message.into(),
        }
    }

    fn raw_event(&mut self) -> Result<Event<'a>, XmlError> {
        self.pos = self.base + self.reader.buffer_position();
        match self.reader.read_event() {
            Ok(Event::DocType(_)) => Err(XmlError::Doctype { pos: self.pos }),
            Ok(Event::Decl(d)) => {
                if self.pos != self.base {
                    return Err(self.syntax("an XML declaration is only allowed at the very start"));
                }
                match d.encoding() {
                    Some(Ok(enc))
                        if !enc.eq_ignore_ascii_case(b"utf-8")
                            && !enc.eq_ignore_ascii_case(b"utf8") =>
                    {
                        return Err(XmlError::Encoding {
                            encoding: show(&enc),
                        });
                    }
                    None | Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(self.syntax(format!("bad XML declaration: {e}"))),
                }
                Ok(Event::Decl(d))
            }
            Ok(ev) => Ok(ev),
            Err(e) => Err(XmlError::Syntax {
                pos: self.base + self.reader.error_position(),
                message: e.to_string(),
            }),
        }
    }

    fn next(&mut self) -> Result<Node<'a>, XmlError> {
        loop {
            match self.raw_event()? {
                Event::Start(s) => return Ok(Node::Start(s)),
                Event::Empty(s) => return Ok(Node::Empty(s)),
                Event::End(_) => return Ok(Node::End),
                Event::Eof => return Ok(Node::Eof),
                Event::Text(t) => {
                    if !t.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
                        return Err(XmlError::Unexpected {
                            expected: "an element".into(),
                            found: "text".into(),
                            pos: self.pos,
                        });
                    }
                }
                Event::CData(_) => {
                    return Err(XmlError::Unexpected {
                        expected: "an element".into(),
                        found: "a CDATA section".into(),
                        pos: self.pos,
                    })
                }
                Event::Comment(_) | Event::PI(_) | Event::Decl(_) | Event::DocType(_) => {}
            }
        }
    }

    /// The root element, which must be `name`; returns it and whether it has content (not `<name/>`).
    fn root(&mut self, name: &str) -> Result<(BytesStart<'a>, bool, u64), XmlError> {
        let node = self.next()?;
        let pos = self.pos;
        match node {
            Node::Start(s) if name_of(&s) == name.as_bytes() => Ok((s, true, pos)),
            Node::Empty(s) if name_of(&s) == name.as_bytes() => Ok((s, false, pos)),
            Node::Eof => Err(XmlError::Truncated {
                expected: format!("the root element <{name}>"),
            }),
            other => Err(XmlError::Unexpected {
                expected: format!("the root element <{name}>"),
                found: describe(&other),
                pos,
            }),
        }
    }

    /// Nothing but comments, processing instructions and white space may follow the root element.
    fn finish(&mut self) -> Result<(), XmlError> {
        match self.next()? {
            Node::Eof => Ok(()),
            other => Err(XmlError::Unexpected {
                expected: "the end of the document".into(),
                found: describe(&other),
                pos: self.pos,
            }),
        }
    }

    fn unexpected(&self, expected: impl Into<String>, node: &Node<'_>) -> XmlError {
        match node {
            Node::Eof => XmlError::Truncated {
                expected: expected.into(),
            },
            other => XmlError::Unexpected {
                expected: expected.into(),
                found: describe(other),
                pos: self.pos,
            },
        }
    }

    /// The text content of the element whose start tag was just read, up to and including its end tag.
    fn read_text(&mut self, element: &[u8], out: &mut String) -> Result<(), XmlError> {
        let start = self.pos;
        loop {
            match self.raw_event()? {
                Event::Text(t) => {
                    unescape_into(self.as_str(&t)?, out, Norm::Text).map_err(|m| self.syntax(m))?
                }
                Event::CData(c) => {
                    // CDATA is taken literally, after end-of-line handling.
                    let raw = self.as_str(&c)?;
                    push_literal(raw, out).map_err(|m| self.syntax(m))?;
                }
                Event::End(_) => return Ok(()),
                Event::Comment(_) | Event::PI(_) => {}
                Event::Start(s) | Event::Empty(s) => {
                    return Err(XmlError::Invalid {
                        element: show(element),
                        pos: start,
                        message: format!(
                            "holds the element <{}>; only text is allowed here",
                            show(name_of(&s))
                        ),
                    })
                }
                Event::Eof => {
                    return Err(XmlError::Truncated {
                        expected: format!("</{}>", show(element)),
                    })
                }
                Event::Decl(_) | Event::DocType(_) => {
                    return Err(self.syntax("unexpected declaration"))
                }
            }
        }
    }

    /// Attributes `names` of `s` (others are ignored), unescaped.
    fn attrs<const N: usize>(
        &self,
        s: &BytesStart<'_>,
        names: [&str; N],
    ) -> Result<[Option<String>; N], XmlError> {
        let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
        for a in s.attributes() {
            let a = a.map_err(|e| {
                self.syntax(format!("bad attribute in <{}>: {e}", show(name_of(s))))
            })?;
            if let Some(i) = names.iter().position(|n| n.as_bytes() == a.key.as_ref()) {
                let mut v = String::new();
                unescape_into(self.as_str(&a.value)?, &mut v, Norm::Attr).map_err(|m| {
                    self.syntax(format!(
                        "attribute `{}` of <{}>: {m}",
                        names[i],
                        show(name_of(s))
                    ))
                })?;
                out[i] = Some(v);
            }
        }
        Ok(out)
    }

    /// Children that each hold text, any order, each at most once, up to the parent's end tag.
    fn text_children<const N: usize>(
        &mut self,
        parent: &str,
        names: [&str; N],
    ) -> Result<[Option<String>; N], XmlError> {
        let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
        loop {
            let node = self.next()?;
            let (s, has_content) = match node {
                Node::Start(s) => (s, true),
                Node::Empty(s) => (s, false),
                Node::End => return Ok(out),
                Node::Eof => {
                    return Err(XmlError::Truncated {
                        expected: format!("</{parent}>"),
                    })
                }
            };
            let name = name_of(&s);
            let Some(i) = names.iter().position(|n| n.as_bytes() == name) else {
                return Err(XmlError::Unexpected {
                    expected: format!("one of <{}> in <{parent}>", names.join(">, <")),
                    found: format!("<{}>", show(name)),
                    pos: self.pos,
                });
            };
            if out[i].is_some() {
                return Err(XmlError::Invalid {
                    element: parent.into(),
                    pos: self.pos,
                    message: format!("<{}> appears twice", names[i]),
                });
            }
            let mut v = String::new();
            if has_content {
                self.read_text(name, &mut v)?;
            }
            out[i] = Some(v);
        }
    }
}

fn push_literal(raw: &str, out: &mut String) -> Result<(), String> {
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                out.push('\n');
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
            }
            c if !is_xml_char(c) => {
                return Err(format!(
                    "character U+{:04X} is not allowed in XML",
                    c as u32
                ))
            }
            c => out.push(c),
        }
    }
    Ok(())
}

fn required(
    v: Option<String>,
    element: &str,
    attribute: &str,
    pos: u64,
) -> Result<String, XmlError> {
    v.ok_or_else(|| XmlError::MissingAttribute {
        element: element.into(),
        attribute: attribute.into(),
        pos,
    })
}

fn required_child(
    v: Option<String>,
    element: &str,
    child: &str,
    pos: u64,
) -> Result<String, XmlError> {
    v.ok_or_else(|| XmlError::MissingElement {
        element: element.into(),
        child: child.into(),
        pos,
    })
}

/// A header value that must say something: blank is as bad as missing.
fn non_blank(v: String, what: &str, pos: u64) -> Result<String, XmlError> {
    if v.trim().is_empty() {
        return Err(XmlError::Invalid {
            element: "Header".into(),
            pos,
            message: format!("`{what}` is empty"),
        });
    }
    Ok(v)
}

fn number<T: std::str::FromStr>(
    v: &str,
    element: &str,
    what: &str,
    pos: u64,
) -> Result<T, XmlError> {
    v.trim().parse().map_err(|_| XmlError::Invalid {
        element: element.into(),
        pos,
        message: format!(
            "`{what}` is `{}`, not a non-negative integer",
            truncate(v, 40)
        ),
    })
}

fn kind_of(item: &str, element: &str, pos: u64) -> Result<Kind, XmlError> {
    Kind::from_item(item.trim()).ok_or_else(|| XmlError::Invalid {
        element: element.into(),
        pos,
        message: format!(
            "unknown item `{}`, expected XZXK or XZCF",
            truncate(item, 40)
        ),
    })
}

/// The fields of the record being read, names and values back to back, kept between the records of one read
/// (no allocation per field).
#[derive(Default)]
struct FieldScratch {
    text: String,
    /// Per field: where its name ends and where its value ends (its name starts where the previous value ended).
    spans: Vec<(usize, usize)>,
}

impl FieldScratch {
    fn field(&self, i: usize) -> (&str, &str) {
        let start = if i == 0 { 0 } else { self.spans[i - 1].1 };
        let (name_end, value_end) = self.spans[i];
        (&self.text[start..name_end], &self.text[name_end..value_end])
    }
}

/// Reads the field elements of a `<record>` whose start tag was just read, up to its end tag.
fn read_fields(
    p: &mut Parser<'_>,
    scratch: &mut FieldScratch,
    record_pos: u64,
) -> Result<PlatformRecord, XmlError> {
    scratch.text.clear();
    scratch.spans.clear();
    let mut sorted = true;
    loop {
        let node = p.next()?;
        let (s, has_content) = match node {
            Node::Start(s) => (s, true),
            Node::Empty(s) => (s, false),
            Node::End => break,
            Node::Eof => {
                return Err(XmlError::Truncated {
                    expected: "</record>".into(),
                })
            }
        };
        let raw_name = name_of(&s);
        let name = p
            .as_str(raw_name)
            .map_err(|_| p.syntax("invalid UTF-8 in an element name"))?;
        if let Some(last) = scratch.spans.len().checked_sub(1) {
            if scratch.field(last).0 >= name {
                sorted = false;
            }
        }
        scratch.text.push_str(name);
        let name_end = scratch.text.len();
        if has_content {
            p.read_text(raw_name, &mut scratch.text)?;
        }
        scratch.spans.push((name_end, scratch.text.len()));
    }
    let n = scratch.spans.len();
    let mut order: Vec<usize> = Vec::new();
    if !sorted {
        order.extend(0..n);
        order.sort_by(|&a, &b| scratch.field(a).0.cmp(scratch.field(b).0));
        if let Some(w) = order
            .windows(2)
            .find(|w| scratch.field(w[0]).0 == scratch.field(w[1]).0)
        {
            return Err(XmlError::DuplicateField {
                field: show(scratch.field(w[0]).0.as_bytes()),
                pos: record_pos,
            });
        }
    }
    let mut rec = RecordBuilder::with_capacity(n, scratch.text.len());
    let mut push = |k: usize| {
        let (name, value) = scratch.field(k);
        rec.push(name, value);
    };
    if sorted {
        (0..n).for_each(&mut push);
    } else {
        order.iter().copied().for_each(&mut push);
    }
    Ok(rec.finish())
}

// ---------------------------------------------------------------------------------------------------------------
// Reading: documents
// ---------------------------------------------------------------------------------------------------------------

/// Reads an exchange message and checks its envelope: version `2.0`, a known item, `count` equal to the number of
/// records, `op` upsert or withdraw, a non-empty key, a withdraw without content, no field twice in a record.
pub fn read_exchange_message(xml: &[u8]) -> Result<ExchangeMessage, XmlError> {
    let mut p = Parser::new(xml)?;
    let (head, declared) = exchange_head(&mut p)?;
    let ExchangeMessage {
        sender,
        receiver,
        flow,
        kind,
        send_time,
        ..
    } = head;

    // <Body>
    let node = p.next()?;
    let mut records = Vec::with_capacity(declared.min(1024) as usize);
    match node {
        Node::Start(ref s) if name_of(s) == b"Body" => {
            let mut names = FieldScratch::default();
            loop {
                let node = p.next()?;
                let rec_pos = p.pos;
                let (s, has_content) = match node {
                    Node::Start(s) if name_of(&s) == b"record" => (s, true),
                    Node::Empty(s) if name_of(&s) == b"record" => (s, false),
                    Node::End => break,
                    other => return Err(p.unexpected("<record> or </Body>", &other)),
                };
                let [op, key] = p.attrs(&s, ["op", "key"])?;
                let op = required(op, "record", "op", rec_pos)?;
                let key = required(key, "record", "key", rec_pos)?;
                if key.is_empty() {
                    return Err(XmlError::Invalid {
                        element: "record".into(),
                        pos: rec_pos,
                        message: "the key is empty".into(),
                    });
                }
                let op = match op.as_str() {
                    "upsert" => MessageOp::Upsert(if has_content {
                        read_fields(&mut p, &mut names, rec_pos)?
                    } else {
                        PlatformRecord::new()
                    }),
                    "withdraw" => {
                        if has_content {
                            match p.next()? {
                                Node::End => {}
                                other => {
                                    return Err(XmlError::Invalid {
                                        element: "record".into(),
                                        pos: rec_pos,
                                        message: format!(
                                            "a withdraw record must be empty, found {}",
                                            describe(&other)
                                        ),
                                    })
                                }
                            }
                        }
                        MessageOp::Withdraw
                    }
                    other => {
                        return Err(XmlError::Invalid {
                            element: "record".into(),
                            pos: rec_pos,
                            message: format!(
                                "unknown op `{}`, expected upsert or withdraw",
                                truncate(other, 40)
                            ),
                        })
                    }
                };
                records.push(MessageRecord { key, op });
            }
        }
        Node::Empty(ref s) if name_of(s) == b"Body" => {}
        other => return Err(p.unexpected("<Body>", &other)),
    }
    match p.next()? {
        Node::End => {}
        other => return Err(p.unexpected("</ExchangeMessage>", &other)),
    }
    p.finish()?;
    if declared != records.len() as u64 {
        return Err(XmlError::CountMismatch {
            declared,
            actual: records.len() as u64,
        });
    }
    Ok(ExchangeMessage {
        sender,
        receiver,
        flow,
        kind,
        send_time,
        records,
    })
}

/// Reads only the envelope of an exchange message (its root and `<Header>`, checked as [`read_exchange_message`]
/// checks them): the message without its records, and the count it declares. Cheap whatever the message's size.
pub fn read_exchange_envelope(xml: &[u8]) -> Result<ExchangeMessage, XmlError> {
    let mut p = Parser::new(xml)?;
    Ok(exchange_head(&mut p)?.0)
}

/// The root and `<Header>` of an exchange message: the message without records, and the count it declares.
fn exchange_head(p: &mut Parser<'_>) -> Result<(ExchangeMessage, u64), XmlError> {
    let (root, has_content, root_pos) = p.root("ExchangeMessage")?;
    let [version] = p.attrs(&root, ["version"])?;
    let version = required(version, "ExchangeMessage", "version", root_pos)?;
    if version != "2.0" {
        return Err(XmlError::Invalid {
            element: "ExchangeMessage".into(),
            pos: root_pos,
            message: format!(
                "version `{}` is not supported, expected 2.0",
                truncate(&version, 40)
            ),
        });
    }
    if !has_content {
        return Err(XmlError::MissingElement {
            element: "ExchangeMessage".into(),
            child: "Header".into(),
            pos: root_pos,
        });
    }

    // <Header>
    let node = p.next()?;
    let header_pos = p.pos;
    let header = match node {
        Node::Start(ref s) if name_of(s) == b"Header" => p.text_children(
            "Header",
            ["sender", "receiver", "flow", "item", "count", "sendTime"],
        )?,
        Node::Empty(ref s) if name_of(s) == b"Header" => Default::default(),
        other => return Err(p.unexpected("<Header>", &other)),
    };
    let [sender, receiver, flow, item, count, send_time] = header;
    let sender = non_blank(
        required_child(sender, "Header", "sender", header_pos)?,
        "sender",
        header_pos,
    )?;
    let receiver = non_blank(
        required_child(receiver, "Header", "receiver", header_pos)?,
        "receiver",
        header_pos,
    )?;
    // The flow is the idempotency key: an empty one would make every such message a replay of the first.
    let flow = non_blank(
        required_child(flow, "Header", "flow", header_pos)?,
        "flow",
        header_pos,
    )?;
    let item = required_child(item, "Header", "item", header_pos)?;
    let count = required_child(count, "Header", "count", header_pos)?;
    let send_time = required_child(send_time, "Header", "sendTime", header_pos)?;
    let kind = kind_of(&item, "item", header_pos)?;
    let declared: u64 = number(&count, "count", "count", header_pos)?;
    Ok((
        ExchangeMessage {
            sender,
            receiver,
            flow,
            kind,
            send_time,
            records: Vec::new(),
        },
        declared,
    ))
}

/// Skips to the end tag of an element that must be empty (`<x …></x>` is read like `<x …/>`).
fn expect_empty(p: &mut Parser<'_>, element: &str, has_content: bool) -> Result<(), XmlError> {
    if has_content {
        match p.next()? {
            Node::End => {}
            other => return Err(p.unexpected(format!("</{element}>"), &other)),
        }
    }
    Ok(())
}

/// Reads an exchange receipt. `code` and `message` of a result default to empty when absent.
pub fn read_receipt(xml: &[u8]) -> Result<Receipt, XmlError> {
    let mut p = Parser::new(xml)?;
    let (root, has_content, root_pos) = p.root("ExchangeReceipt")?;
    let el = "ExchangeReceipt";
    let [flow, accepted, unchanged, rejected, withdrawn] = p.attrs(
        &root,
        ["flow", "accepted", "unchanged", "rejected", "withdrawn"],
    )?;
    let flow = required(flow, el, "flow", root_pos)?;
    let mut counts = [0u32; 4];
    for (slot, (v, name)) in counts.iter_mut().zip([
        (accepted, "accepted"),
        (unchanged, "unchanged"),
        (rejected, "rejected"),
        (withdrawn, "withdrawn"),
    ]) {
        *slot = number(&required(v, el, name, root_pos)?, el, name, root_pos)?;
    }
    let mut results = Vec::new();
    if has_content {
        loop {
            let node = p.next()?;
            let pos = p.pos;
            let (s, has_content) = match node {
                Node::Start(s) if name_of(&s) == b"result" => (s, true),
                Node::Empty(s) if name_of(&s) == b"result" => (s, false),
                Node::End => break,
                other => return Err(p.unexpected("<result> or </ExchangeReceipt>", &other)),
            };
            let [key, status, code, message] = p.attrs(&s, ["key", "status", "code", "message"])?;
            let key = required(key, "result", "key", pos)?;
            let status = required(status, "result", "status", pos)?;
            let status = ResultStatus::parse(&status).ok_or_else(|| XmlError::Invalid {
                element: "result".into(),
                pos,
                message: format!(
                    "unknown status `{}`, expected accepted, unchanged, rejected or withdrawn",
                    truncate(&status, 40)
                ),
            })?;
            expect_empty(&mut p, "result", has_content)?;
            results.push(RecordResult {
                key,
                status,
                code: code.unwrap_or_default(),
                message: message.unwrap_or_default(),
            });
        }
    }
    p.finish()?;
    let [accepted, unchanged, rejected, withdrawn] = counts;
    Ok(Receipt {
        flow,
        accepted,
        unchanged,
        rejected,
        withdrawn,
        results,
    })
}

/// Reads a record page; a `<record>` with content (even none: `<record …></record>`) has `fields: Some`.
pub fn read_record_page(xml: &[u8]) -> Result<RecordPage, XmlError> {
    let mut p = Parser::new(xml)?;
    let (root, has_content, root_pos) = p.root("RecordPage")?;
    let el = "RecordPage";
    let [item, page, size, total] = p.attrs(&root, ["item", "page", "size", "total"])?;
    let kind = kind_of(&required(item, el, "item", root_pos)?, el, root_pos)?;
    let page = number(&required(page, el, "page", root_pos)?, el, "page", root_pos)?;
    let size = number(&required(size, el, "size", root_pos)?, el, "size", root_pos)?;
    let total = number(
        &required(total, el, "total", root_pos)?,
        el,
        "total",
        root_pos,
    )?;
    let mut records = Vec::new();
    if has_content {
        let mut names = FieldScratch::default();
        loop {
            let node = p.next()?;
            let pos = p.pos;
            let (s, has_content) = match node {
                Node::Start(s) if name_of(&s) == b"record" => (s, true),
                Node::Empty(s) if name_of(&s) == b"record" => (s, false),
                Node::End => break,
                other => return Err(p.unexpected("<record> or </RecordPage>", &other)),
            };
            let [key, digest, status, published_at, updated_at] =
                p.attrs(&s, ["key", "digest", "status", "publishedAt", "updatedAt"])?;
            let key = required(key, "record", "key", pos)?;
            let digest = required(digest, "record", "digest", pos)?;
            let status = required(status, "record", "status", pos)?;
            let status = PublicStatus::parse(&status).ok_or_else(|| XmlError::Invalid {
                element: "record".into(),
                pos,
                message: format!(
                    "unknown status `{}`, expected public or withdrawn",
                    truncate(&status, 40)
                ),
            })?;
            let published_at = required(published_at, "record", "publishedAt", pos)?;
            let updated_at = required(updated_at, "record", "updatedAt", pos)?;
            let fields = if has_content {
                Some(read_fields(&mut p, &mut names, pos)?)
            } else {
                None
            };
            records.push(PageRecord {
                key,
                digest,
                status,
                published_at,
                updated_at,
                fields,
            });
        }
    }
    p.finish()?;
    Ok(RecordPage {
        kind,
        page,
        size,
        total,
        records,
    })
}

fn read_text_doc<const N: usize>(
    xml: &[u8],
    root: &str,
    names: [&str; N],
) -> Result<([String; N], u64), XmlError> {
    let mut p = Parser::new(xml)?;
    let (_, has_content, root_pos) = p.root(root)?;
    let values = if has_content {
        p.text_children(root, names)?
    } else {
        std::array::from_fn(|_| None)
    };
    p.finish()?;
    let mut out: [String; N] = std::array::from_fn(|_| String::new());
    for (i, v) in values.into_iter().enumerate() {
        out[i] = required_child(v, root, names[i], root_pos)?;
    }
    Ok((out, root_pos))
}

pub fn read_token_request(xml: &[u8]) -> Result<TokenRequest, XmlError> {
    let ([app_key, timestamp, sign], _) =
        read_text_doc(xml, "TokenRequest", ["appKey", "timestamp", "sign"])?;
    Ok(TokenRequest {
        app_key,
        timestamp,
        sign,
    })
}

pub fn read_token_response(xml: &[u8]) -> Result<TokenResponse, XmlError> {
    let ([token, expires_in], pos) = read_text_doc(xml, "TokenResponse", ["token", "expiresIn"])?;
    let expires_in = number(&expires_in, "expiresIn", "expiresIn", pos)?;
    Ok(TokenResponse { token, expires_in })
}

/// Reads `<Error code="…" message="…"/>` or `<Error><code/><message/></Error>` (child elements win).
pub fn read_error_doc(xml: &[u8]) -> Result<ErrorDoc, XmlError> {
    let mut p = Parser::new(xml)?;
    let (root, has_content, root_pos) = p.root("Error")?;
    let [mut code, mut message] = p.attrs(&root, ["code", "message"])?;
    if has_content {
        let [c, m] = p.text_children("Error", ["code", "message"])?;
        code = c.or(code);
        message = m.or(message);
    }
    p.finish()?;
    Ok(ErrorDoc {
        code: required(code, "Error", "code", root_pos)?,
        message: message.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, &str)]) -> PlatformRecord {
        PlatformRecord::from_fields(pairs.iter().copied())
    }

    fn message() -> ExchangeMessage {
        ExchangeMessage {
            sender: "11410000005184143N".into(),
            receiver: "HA-CREDIT".into(),
            flow: "flow-1".into(),
            kind: Kind::Permit,
            send_time: "2024-05-01T08:00:00+08:00".into(),
            records: vec![
                MessageRecord {
                    key: "XZXK:11410000005184143N:豫安许〔2024〕1号".into(),
                    op: MessageOp::Upsert(rec(&[
                        ("XK_XDR_MC", "郑州<某>&\"公司\"'"),
                        ("XK_WSH", "豫安许〔2024〕1号"),
                        ("BZ", "a\r\nb\tc"),
                    ])),
                },
                MessageRecord {
                    key: "XZXK:11410000005184143N:x\"y".into(),
                    op: MessageOp::Withdraw,
                },
            ],
        }
    }

    #[test]
    fn golden_message() {
        let mut out = Vec::new();
        write_exchange_message(&message(), &mut out);
        let expected = concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
            "<ExchangeMessage version=\"2.0\"><Header><sender>11410000005184143N</sender>",
            "<receiver>HA-CREDIT</receiver><flow>flow-1</flow><item>XZXK</item><count>2</count>",
            "<sendTime>2024-05-01T08:00:00+08:00</sendTime></Header><Body>",
            "<record op=\"upsert\" key=\"XZXK:11410000005184143N:豫安许〔2024〕1号\">",
            "<BZ>a&#13;\nb\tc</BZ><XK_WSH>豫安许〔2024〕1号</XK_WSH>",
            "<XK_XDR_MC>郑州&lt;某&gt;&amp;\"公司\"'</XK_XDR_MC></record>",
            "<record op=\"withdraw\" key=\"XZXK:11410000005184143N:x&quot;y\"/>",
            "</Body></ExchangeMessage>"
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn message_round_trip() {
        let m = message();
        let mut out = Vec::new();
        write_exchange_message(&m, &mut out);
        assert_eq!(read_exchange_message(&out).unwrap(), m);
    }

    #[test]
    fn attribute_escapes() {
        let mut out = Vec::new();
        escape_attr("a\tb\nc\rd<>&\"'", &mut out);
        assert_eq!(out, b"a&#9;b&#10;c&#13;d&lt;&gt;&amp;&quot;&apos;");
        out.clear();
        escape_text("]]>\u{0}\u{FFFE}\u{FFFF}\u{FFFD}\u{EFBF}x", &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "]]&gt;\u{FFFD}\u{FFFD}\u{FFFD}\u{FFFD}\u{EFBF}x"
        );
    }

    #[test]
    fn illegal_chars() {
        assert_eq!(first_illegal_char("abc\t\r\n中"), None);
        assert_eq!(first_illegal_char("中a\u{1}"), Some((2, '\u{1}')));
        assert_eq!(first_illegal_char("\u{FFFF}"), Some((0, '\u{FFFF}')));
        assert_eq!(
            first_illegal_char("\u{FFFD}\u{FFFE}"),
            Some((1, '\u{FFFE}'))
        );
        assert_eq!(first_illegal_char("\u{7F}\u{85}\u{10FFFF}"), None);
    }

    #[test]
    fn bad_field_names_are_sanitized() {
        assert_eq!(element_name("XK_XDR_MC"), "XK_XDR_MC");
        assert_eq!(element_name("名称"), "名称");
        assert_eq!(element_name("1a b:c"), "_1a_b_c");
        assert_eq!(element_name(""), "_");
        let mut out = Vec::new();
        write_record("k", &rec(&[("a<b", "v")]), &mut out);
        assert_eq!(
            out,
            b"<record op=\"upsert\" key=\"k\"><a_b>v</a_b></record>"
        );
    }

    #[test]
    fn receipt_round_trip() {
        let r = Receipt {
            flow: "f\"1".into(),
            accepted: 1,
            unchanged: 2,
            rejected: 3,
            withdrawn: 4,
            results: vec![
                RecordResult {
                    key: "XZCF:a:b".into(),
                    status: ResultStatus::Rejected,
                    code: "E101".into(),
                    message: "统一社会信用代码校验位错误\n第二行\t<&>".into(),
                },
                RecordResult {
                    key: "XZCF:a:c".into(),
                    status: ResultStatus::Withdrawn,
                    code: String::new(),
                    message: String::new(),
                },
            ],
        };
        let mut out = Vec::new();
        write_receipt(&r, &mut out);
        assert_eq!(read_receipt(&out).unwrap(), r);
    }

    #[test]
    fn record_page_round_trip() {
        let p = RecordPage {
            kind: Kind::Penalty,
            page: 3,
            size: 100,
            total: 1234,
            records: vec![
                PageRecord {
                    key: "XZCF:a:1".into(),
                    digest: "ab".repeat(32),
                    status: PublicStatus::Public,
                    published_at: "2024-01-01T00:00:00Z".into(),
                    updated_at: "2024-01-02T00:00:00Z".into(),
                    fields: Some(rec(&[("CF_WSH", "1"), ("CF_JE", "100.5")])),
                },
                PageRecord {
                    key: "XZCF:a:2".into(),
                    digest: "cd".repeat(32),
                    status: PublicStatus::Withdrawn,
                    published_at: "x".into(),
                    updated_at: "y".into(),
                    fields: None,
                },
                PageRecord {
                    key: "XZCF:a:3".into(),
                    digest: String::new(),
                    status: PublicStatus::Public,
                    published_at: String::new(),
                    updated_at: String::new(),
                    fields: Some(PlatformRecord::new()),
                },
            ],
        };
        let mut out = Vec::new();
        write_record_page(&p, &mut out);
        assert_eq!(read_record_page(&out).unwrap(), p);
    }

    #[test]
    fn small_documents_round_trip() {
        let t = TokenRequest {
            app_key: "app&1".into(),
            timestamp: "1714521600".into(),
            sign: "0a1b".into(),
        };
        let mut out = Vec::new();
        write_token_request(&t, &mut out);
        assert_eq!(read_token_request(&out).unwrap(), t);

        let t = TokenResponse {
            token: "tok<en>".into(),
            expires_in: 7200,
        };
        out.clear();
        write_token_response(&t, &mut out);
        assert_eq!(read_token_response(&out).unwrap(), t);

        let e = ErrorDoc {
            code: "BAD_ENVELOPE".into(),
            message: "count 不符\r\n".into(),
        };
        out.clear();
        write_error_doc(&e, &mut out);
        assert_eq!(read_error_doc(&out).unwrap(), e);
        let e2 =
            read_error_doc(b"<Error><code>429</code><message>slow &#x4E0B; down</message></Error>")
                .unwrap();
        assert_eq!(
            e2,
            ErrorDoc {
                code: "429".into(),
                message: "slow 下 down".into()
            }
        );
    }

    fn msg_xml(count: &str, body: &str) -> Vec<u8> {
        format!(
            "<?xml version=\"1.0\"?><ExchangeMessage version=\"2.0\"><Header><sender>s</sender>\
             <receiver>r</receiver><flow>f</flow><item>XZCF</item><count>{count}</count>\
             <sendTime>t</sendTime></Header><Body>{body}</Body></ExchangeMessage>"
        )
        .into_bytes()
    }

    #[test]
    fn reader_accepts_whitespace_comments_cdata_and_references() {
        let xml = msg_xml(
            "1",
            "\n  <!-- c --><record op=\"upsert\" key=\"k&#x9;&#10;\r\n\">\n <A><![CDATA[<&>]]>&#13;x\r\ny</A><B/><C></C></record>\n",
        );
        let m = read_exchange_message(&xml).unwrap();
        assert_eq!(m.kind, Kind::Penalty);
        assert_eq!(m.records[0].key, "k\t\n ");
        let MessageOp::Upsert(r) = &m.records[0].op else {
            panic!()
        };
        assert_eq!(r.fields().len(), 1);
        assert_eq!(r.get("A"), Some("<&>\rx\ny"));
    }

    #[test]
    fn envelope_errors() {
        let err = |xml: &[u8]| read_exchange_message(xml).unwrap_err();
        assert_eq!(
            err(&msg_xml("2", "<record op=\"withdraw\" key=\"a\"/>")),
            XmlError::CountMismatch {
                declared: 2,
                actual: 1
            }
        );
        assert!(matches!(err(&msg_xml("x", "")), XmlError::Invalid { .. }));
        let e = err(&msg_xml("1", "<record op=\"delete\" key=\"a\"/>"));
        assert!(e.to_string().contains("unknown op `delete`"), "{e}");
        assert!(matches!(
            err(&msg_xml("1", "<record op=\"upsert\" key=\"\"/>")),
            XmlError::Invalid { .. }
        ));
        assert!(matches!(
            err(&msg_xml("1", "<record op=\"upsert\"/>")),
            XmlError::MissingAttribute { .. }
        ));
        assert!(matches!(
            err(&msg_xml(
                "1",
                "<record op=\"upsert\" key=\"a\"><A>1</A><B/><A>2</A></record>"
            )),
            XmlError::DuplicateField { .. }
        ));
        assert!(matches!(
            err(&msg_xml(
                "1",
                "<record op=\"withdraw\" key=\"a\"><A>1</A></record>"
            )),
            XmlError::Invalid { .. }
        ));
        assert!(matches!(
            err(&msg_xml(
                "1",
                "<record op=\"upsert\" key=\"a\"><A><B/></A></record>"
            )),
            XmlError::Invalid { .. }
        ));
        let xml = String::from_utf8(msg_xml("0", "")).unwrap();
        let e = err(xml.replace("XZCF", "XZZZ").as_bytes());
        assert!(e.to_string().contains("unknown item"), "{e}");
        let e = err(xml.replace("\"2.0\"", "\"1.0\"").as_bytes());
        assert!(e.to_string().contains("version"), "{e}");
        assert!(matches!(
            err(xml.replace("<sendTime>t</sendTime>", "").as_bytes()),
            XmlError::MissingElement { .. }
        ));
        assert!(matches!(
            err(xml.replace("Body", "Bodx").as_bytes()),
            XmlError::Unexpected { .. }
        ));
        assert!(matches!(
            err(format!("{xml}<x/>").as_bytes()),
            XmlError::Unexpected { .. }
        ));
        assert!(matches!(
            err(xml.replace("<flow>f", "<flow>f&ent;").as_bytes()),
            XmlError::Syntax { .. }
        ));
        assert!(matches!(
            err(xml.replace("<flow>f", "<flow>&#0;").as_bytes()),
            XmlError::Syntax { .. }
        ));
        assert!(matches!(
            err(xml.replace("<flow>f", "<flow>\u{1}").as_bytes()),
            XmlError::Syntax { .. }
        ));
    }

    #[test]
    fn doctype_is_rejected() {
        let xml = b"<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><ExchangeMessage version=\"2.0\">&e;</ExchangeMessage>";
        assert!(matches!(
            read_exchange_message(xml),
            Err(XmlError::Doctype { .. })
        ));
        assert!(matches!(
            read_error_doc(b"<!DOCTYPE Error><Error code=\"1\"/>"),
            Err(XmlError::Doctype { .. })
        ));
    }

    #[test]
    fn truncated_and_non_utf8_are_errors() {
        let mut out = Vec::new();
        write_exchange_message(&message(), &mut out);
        for cut in 0..out.len() {
            assert!(
                read_exchange_message(&out[..cut]).is_err(),
                "accepted a cut at {cut}"
            );
        }
        let mut bad = out.clone();
        let at = bad.iter().position(|&b| b >= 0x80).unwrap();
        bad[at] = 0xFF;
        assert_eq!(
            read_exchange_message(&bad),
            Err(XmlError::NotUtf8 { pos: at as u64 })
        );
        let gbk = b"<?xml version=\"1.0\" encoding=\"GBK\"?><Error code=\"1\"/>";
        assert!(matches!(
            read_error_doc(gbk),
            Err(XmlError::Encoding { .. })
        ));
        // A UTF-8 BOM is fine.
        assert!(read_error_doc(b"\xEF\xBB\xBF<Error code=\"1\"/>").is_ok());
    }

    #[test]
    fn deep_nesting_and_garbage_do_not_panic() {
        let deep = "<a>".repeat(100_000);
        assert!(read_exchange_message(deep.as_bytes()).is_err());
        let deep = msg_xml(
            "1",
            &format!("<record op=\"upsert\" key=\"k\">{}", "<A>".repeat(100_000)),
        );
        assert!(read_exchange_message(&deep).is_err());
        for g in [
            &b""[..],
            b"<",
            b"<<<>>>",
            b"&",
            b"<Error",
            b"<Error code=\"1\"",
            b"<Error code=1/>",
            b"]]>",
            b"<?xml",
        ] {
            let _ = read_exchange_message(g);
            let _ = read_error_doc(g);
            let _ = read_record_page(g);
            let _ = read_receipt(g);
        }
    }

    #[test]
    fn escaped_text_len_is_what_escape_text_writes() {
        let samples = [
            "",
            "plain ascii",
            "郑州市某某有限公司",
            "a&b<c>d\re\tf\ng\"h'i",
            "&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&&",
            "bad\u{1}control\u{1f}chars",
            "non-chars \u{FFFE} and \u{FFFF} and \u{FFFD} and \u{EFFF}",
            "\u{EF}\u{BF}",
        ];
        let long = "罚款&".repeat(700) + &"<>".repeat(300);
        for s in samples.iter().copied().chain([long.as_str()]) {
            let mut out = Vec::new();
            escape_text(s, &mut out);
            assert_eq!(escaped_text_len(s), out.len(), "{s:?}");
        }
    }
}
