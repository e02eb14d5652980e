//! The domain types shared by every stage: record kinds, party categories, the mapped platform record, its key
//! and digest. Pure: no I/O. The source schema (what the enforcement system sends) lives in `source_schema`.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::sync::Arc;

/// China Standard Time (UTC+8), in which all dates of the domain are calendar dates.
pub fn china_offset() -> chrono::FixedOffset {
    chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset")
}

/// Today's date in China Standard Time.
pub fn today_cst() -> chrono::NaiveDate {
    chrono::Utc::now()
        .with_timezone(&china_offset())
        .date_naive()
}

/// Which data set a record belongs to: 行政许可 (`XZXK`) or 行政处罚 (`XZCF`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Permit,
    Penalty,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Permit, Kind::Penalty];

    /// The platform's data-set code used in envelopes and record keys.
    pub fn item(self) -> &'static str {
        match self {
            Kind::Permit => "XZXK",
            Kind::Penalty => "XZCF",
        }
    }

    pub fn from_item(item: &str) -> Option<Kind> {
        match item {
            "XZXK" => Some(Kind::Permit),
            "XZCF" => Some(Kind::Penalty),
            _ => None,
        }
    }

    /// The lowercase English name used on the command line and in the source's URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Permit => "permit",
            Kind::Penalty => "penalty",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "permit" | "permits" => Some(Kind::Permit),
            "penalty" | "penalties" => Some(Kind::Penalty),
            _ => None,
        }
    }

    /// The Chinese name operators know the kind by.
    pub fn zh(self) -> &'static str {
        match self {
            Kind::Permit => "行政许可",
            Kind::Penalty => "行政处罚",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `s.trim()`, answering at once for the usual value that neither starts nor ends with white space (two chars
/// looked at instead of the general search from both ends).
#[inline(always)]
pub fn trim(s: &str) -> &str {
    match s.as_bytes() {
        [] => s,
        [a, .., z] | [a @ z] if !may_start_space(*a) && !may_end_space(s.as_bytes()) => s,
        _ => trim_slow(s),
    }
}

/// Whether a char starting with byte `a` may be white space: ASCII at or below b' ' (DEL is not white space), or
/// the lead byte of U+0085 / U+00A0 (C2), U+1680 (E1), U+2000–U+205F (E2) or U+3000 (E3). CJK text (E4–E9 leads)
/// answers no at once.
#[inline(always)]
fn may_start_space(a: u8) -> bool {
    a <= b' ' || matches!(a, 0xC2 | 0xE1 | 0xE2 | 0xE3)
}

/// Whether the last char of non-empty `b` may be white space: ASCII at or below b' ', or a char that ends with
/// a byte one of the non-ASCII white-space chars ends with (U+0085 85, U+00A0 A0, U+1680 / U+2000 / U+3000 80,
/// U+2001–U+200A 81–8A, U+2028 A8, U+2029 A9, U+202F AF, U+205F 9F) and starts like one (C2 for two bytes;
/// E1–E3 for three: a CJK ideograph such as 局 E5 B1 80 is not white space).
#[inline(always)]
fn may_end_space(b: &[u8]) -> bool {
    let n = b.len();
    let z = b[n - 1];
    if z < 0x80 {
        return z <= b' ';
    }
    if !matches!(z, 0x80..=0x8A | 0x9F | 0xA0 | 0xA8 | 0xA9 | 0xAF) {
        return false;
    }
    match (n >= 2).then(|| b[n - 2]) {
        Some(0xC0..=0xDF) => b[n - 2] == 0xC2,
        _ => n < 3 || matches!(b[n - 3], 0xE1..=0xE3) || b[n - 3] < 0xE0,
    }
}

/// [`trim`] for a value that starts or ends with a non-ASCII char or ASCII white space.
#[inline(never)]
fn trim_slow(s: &str) -> &str {
    let mut chars = s.chars();
    match (chars.next(), chars.next_back()) {
        (None, _) => s,
        (Some(a), None) if !a.is_whitespace() => s,
        (Some(a), Some(b)) if !a.is_whitespace() && !b.is_whitespace() => s,
        _ => s.trim(),
    }
}

/// A platform field name such as `XK_XDR_MC`. Shared, because every record of a mapping uses the same names.
pub type FieldName = Arc<str>;

/// A record in the platform's field set: only non-empty fields, sorted by field name (the digest's order).
///
/// Names and values live back to back in one string, with one span per field: a record costs two allocations
/// however many fields it has (it used to be one per field plus a shared name's reference count each, which was
/// most of the mapping's cost).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PlatformRecord {
    /// `name value name value …` without separators; the spans say where each part ends.
    text: String,
    /// Per field, in name order: where its name ends and where its value ends (its name starts where the previous
    /// field's value ended).
    spans: Vec<(u32, u32)>,
}

/// The fields of a [`PlatformRecord`] as `(name, value)`, in name order.
#[derive(Clone)]
pub struct Fields<'a> {
    rec: &'a PlatformRecord,
    front: usize,
    back: usize,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (&'a str, &'a str);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        let f = self.rec.field(self.front);
        self.front += 1;
        Some(f)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.back - self.front;
        (n, Some(n))
    }

    #[inline]
    fn nth(&mut self, n: usize) -> Option<Self::Item> {
        self.front = self.front.saturating_add(n).min(self.back);
        self.next()
    }
}

impl DoubleEndedIterator for Fields<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.front == self.back {
            return None;
        }
        self.back -= 1;
        Some(self.rec.field(self.back))
    }
}

impl ExactSizeIterator for Fields<'_> {}

impl PlatformRecord {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a record from any fields; empty values are dropped and the rest sorted by name. A field named twice
    /// keeps its last value.
    pub fn from_fields<I, N, V>(fields: I) -> Self
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let mut v: Vec<(N, V)> = fields
            .into_iter()
            .filter(|(_, v)| !v.as_ref().is_empty())
            .collect();
        // A stable sort keeps equal names in their order, so the last of them is the last given.
        v.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        let mut keep: Vec<(N, V)> = Vec::with_capacity(v.len());
        for (k, val) in v {
            match keep.last_mut() {
                Some(last) if last.0.as_ref() == k.as_ref() => last.1 = val,
                _ => keep.push((k, val)),
            }
        }
        Self::from_sorted(keep)
    }

    /// Builds a record from fields already in ascending name order with distinct names (as a mapping produces
    /// them); empty values are dropped.
    pub fn from_sorted<I, N, V>(fields: I) -> Self
    where
        I: IntoIterator<Item = (N, V)>,
        N: AsRef<str>,
        V: AsRef<str>,
    {
        let fields = fields.into_iter();
        let mut b = RecordBuilder::with_capacity(fields.size_hint().0, 0);
        for (n, v) in fields {
            b.push(n.as_ref(), v.as_ref());
        }
        b.finish()
    }

    #[inline]
    fn field(&self, i: usize) -> (&str, &str) {
        let start = match i {
            0 => 0,
            _ => self.spans[i - 1].1 as usize,
        };
        let (name_end, value_end) = self.spans[i];
        (
            &self.text[start..name_end as usize],
            &self.text[name_end as usize..value_end as usize],
        )
    }

    /// A record from its text and spans as [`RecordBuilder`] would have made them: names and values back to back,
    /// names ascending and distinct, values non-empty, spans on char boundaries (checked in debug builds).
    pub(crate) fn from_parts(text: String, spans: Vec<(u32, u32)>) -> Self {
        let rec = Self { text, spans };
        debug_assert!({
            let mut start = 0;
            rec.spans.iter().all(|&(n, v)| {
                let ok = start < n
                    && n < v
                    && rec.text.get(start as usize..v as usize).is_some()
                    && rec.text.is_char_boundary(n as usize);
                start = v;
                ok
            }) && start as usize == rec.text.len()
        });
        debug_assert!(rec
            .fields()
            .zip(rec.fields().skip(1))
            .all(|(a, b)| a.0 < b.0));
        rec
    }

    /// The text and spans themselves (names and values back to back; per field where its name and its value
    /// end), for writers that walk every field.
    #[inline]
    pub fn parts(&self) -> (&str, &[(u32, u32)]) {
        (&self.text, &self.spans)
    }

    /// Sets a field; an empty value removes it.
    pub fn set(&mut self, name: &str, value: &str) {
        let mut fields: Vec<(&str, &str)> = self.fields().filter(|(k, _)| *k != name).collect();
        fields.push((name, value));
        *self = Self::from_fields(fields);
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        let (mut lo, mut hi) = (0, self.spans.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (k, v) = self.field(mid);
            match k.cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(v),
            }
        }
        None
    }

    /// The fields as `(name, value)` in name order.
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            rec: self,
            front: 0,
            back: self.spans.len(),
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The bytes of all names and values together (for sizing messages).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// The digest of DESIGN §3: SHA-256 over `NAME=value\n` of the non-empty fields in ascending name order.
    pub fn digest(&self) -> Digest {
        let mut h = Sha256::new();
        for (k, v) in self.fields() {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        Digest(h.finalize().into())
    }
}

impl fmt::Debug for PlatformRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.fields()).finish()
    }
}

/// Builds a [`PlatformRecord`] field by field, in ascending name order.
pub struct RecordBuilder {
    rec: PlatformRecord,
}

impl RecordBuilder {
    /// Room for `fields` fields of `bytes` bytes of names and values together.
    pub fn with_capacity(fields: usize, bytes: usize) -> Self {
        Self {
            rec: PlatformRecord {
                text: String::with_capacity(bytes),
                spans: Vec::with_capacity(fields),
            },
        }
    }

    /// Appends a field; an empty value is dropped. Names must come in ascending order and be distinct (checked
    /// in debug builds). A record over 4 GiB is cut short there (no input comes near).
    #[inline]
    pub fn push(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        debug_assert!(
            self.rec
                .fields()
                .next_back()
                .is_none_or(|(last, _)| last < name),
            "fields must be sorted and distinct"
        );
        let r = &mut self.rec;
        if r.text.len() + name.len() + value.len() > u32::MAX as usize {
            return;
        }
        r.text.push_str(name);
        let name_end = r.text.len() as u32;
        r.text.push_str(value);
        r.spans.push((name_end, r.text.len() as u32));
    }

    pub fn finish(self) -> PlatformRecord {
        self.rec
    }
}

/// SHA-256 digest of a platform record, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex characters (either case); anything else is `None`.
    pub fn parse(s: &str) -> Option<Digest> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// `{item}:{sender}:{document number}`, the platform's identity of a record (DESIGN §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RecordKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the document number is empty")]
    EmptyDocNo,
    #[error("the sender (data source unit USCC) is empty")]
    EmptySender,
    #[error("`{0}` is not a record key of the form ITEM:SENDER:DOCNO")]
    Malformed(String),
}

impl RecordKey {
    pub fn new(kind: Kind, sender: &str, doc_no: &str) -> Result<RecordKey, KeyError> {
        let doc = trim(doc_no);
        let sender = trim(sender);
        if doc.is_empty() {
            return Err(KeyError::EmptyDocNo);
        }
        if sender.is_empty() {
            return Err(KeyError::EmptySender);
        }
        let item = kind.item();
        let mut key = String::with_capacity(item.len() + sender.len() + doc.len() + 2);
        for (i, part) in [item, sender, doc].into_iter().enumerate() {
            if i > 0 {
                key.push(':');
            }
            key.push_str(part);
        }
        Ok(RecordKey(key))
    }

    pub fn parse(s: &str) -> Result<RecordKey, KeyError> {
        let mut parts = s.splitn(3, ':');
        let (item, sender, doc) = (parts.next(), parts.next(), parts.next());
        match (item.and_then(Kind::from_item), sender, doc) {
            (Some(_), Some(sender), Some(doc))
                if !sender.is_empty() && !doc.is_empty() && doc.trim() == doc =>
            {
                Ok(RecordKey(s.to_string()))
            }
            _ => Err(KeyError::Malformed(s.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn kind(&self) -> Kind {
        Kind::from_item(&self.0[..4]).expect("a RecordKey always starts with a valid item")
    }

    /// The document number part.
    pub fn doc_no(&self) -> &str {
        self.0.splitn(3, ':').nth(2).unwrap_or("")
    }
}

impl TryFrom<String> for RecordKey {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        RecordKey::parse(&s)
    }
}

impl From<RecordKey> for String {
    fn from(k: RecordKey) -> String {
        k.0
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(pairs: &[(&str, &str)]) -> PlatformRecord {
        PlatformRecord::from_fields(pairs.iter().copied())
    }

    #[test]
    fn digest_ignores_empty_fields_and_order() {
        let a = rec(&[("B", "2"), ("A", "1"), ("C", "")]);
        let b = rec(&[("A", "1"), ("B", "2")]);
        assert_eq!(a.digest(), b.digest());
        // independently computed: sha256("A=1\nB=2\n")
        assert_eq!(
            a.digest().to_hex(),
            hex::encode(Sha256::digest(b"A=1\nB=2\n"))
        );
        assert_ne!(a.digest(), rec(&[("A", "1"), ("B", "3")]).digest());
    }

    #[test]
    fn trim_is_str_trim() {
        for s in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\u{3000}公司\u{3000}",
            "公司",
            "\u{b}x",
            "x\u{85}",
            "\t",
            "ab",
            "a b",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
        // Every white-space char (and its neighbours) at either end, next to ASCII and to CJK.
        for c in (0..0x3100u32)
            .chain((0x3100..0x11_0000).step_by(97))
            .filter_map(char::from_u32)
        {
            for s in [
                format!("{c}公司"),
                format!("公司{c}"),
                format!("{c}a"),
                format!("a{c}"),
                format!("{c}"),
            ] {
                assert_eq!(trim(&s), s.trim(), "U+{:04X} in {s:?}", c as u32);
            }
        }
    }

    #[test]
    fn key_trims_document_number() {
        let k =
            RecordKey::new(Kind::Permit, "91230500MA1B3N1N2M", "  豫安许〔2024〕1号 \n").unwrap();
        assert_eq!(k.as_str(), "XZXK:91230500MA1B3N1N2M:豫安许〔2024〕1号");
        assert_eq!(k.doc_no(), "豫安许〔2024〕1号");
        assert_eq!(k.kind(), Kind::Permit);
        assert_eq!(RecordKey::parse(k.as_str()).unwrap(), k);
        assert!(RecordKey::new(Kind::Penalty, "X", "   ").is_err());
        assert!(RecordKey::parse("XZZZ:a:b").is_err());
    }

    #[test]
    fn set_keeps_order_and_drops_empty() {
        let mut r = rec(&[("B", "2")]);
        r.set("A", "1");
        r.set("C", "3");
        r.set("B", "");
        let names: Vec<&str> = r.fields().map(|(k, _)| k).collect();
        assert_eq!(names, ["A", "C"]);
        assert_eq!(r.get("C"), Some("3"));
        assert_eq!(r.get("A"), Some("1"));
        assert_eq!(r.get("B"), None);
        assert_eq!(r.get("0"), None);
        assert_eq!(r.get("D"), None);
        r.set("C", "三");
        assert_eq!(r, rec(&[("A", "1"), ("C", "三")]));
        assert_eq!(format!("{r:?}"), r#"{"A": "1", "C": "三"}"#);
    }

    #[test]
    fn fields_iterate_both_ways() {
        let r = rec(&[("B", "2"), ("A", "1"), ("B", "二"), ("C", "3")]);
        assert_eq!(
            r.fields().collect::<Vec<_>>(),
            [("A", "1"), ("B", "二"), ("C", "3")]
        );
        assert_eq!(r.fields().rev().map(|f| f.0).collect::<String>(), "CBA");
        assert_eq!(r.fields().len(), 3);
        assert_eq!(r.fields().nth(1), Some(("B", "二")));
        assert_eq!(r.fields().nth(5), None);
    }
}
