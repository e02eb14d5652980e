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

/// A platform field name such as `XK_XDR_MC`. Shared, because every record of a mapping uses the same names.
pub type FieldName = Arc<str>;

/// A record in the platform's field set: only non-empty fields, sorted by field name (the digest's order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PlatformRecord {
    fields: Vec<(FieldName, String)>,
}

impl PlatformRecord {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a record from any fields; empty values are dropped and the rest sorted by name. A field named twice
    /// keeps its last value.
    pub fn from_fields<I: IntoIterator<Item = (FieldName, String)>>(fields: I) -> Self {
        let mut v: Vec<(FieldName, String)> =
            fields.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        // keep the last of equal names
        let mut out: Vec<(FieldName, String)> = Vec::with_capacity(v.len());
        for (k, val) in v {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = val,
                _ => out.push((k, val)),
            }
        }
        Self { fields: out }
    }

    /// Builds a record from fields already in ascending name order with distinct names (as a mapping produces
    /// them); empty values are dropped.
    pub fn from_sorted<I: IntoIterator<Item = (FieldName, String)>>(fields: I) -> Self {
        let fields = fields.into_iter();
        // One allocation: a filtered iterator's lower bound is 0, so `collect` would grow the vector step by step;
        // reserve the (sane) upper bound, a mapping's field count, instead.
        let (lower, upper) = fields.size_hint();
        let mut out: Vec<(FieldName, String)> =
            Vec::with_capacity(upper.filter(|&u| u <= 4096).unwrap_or(lower));
        out.extend(fields.filter(|(_, v)| !v.is_empty()));
        let fields = out;
        debug_assert!(
            fields.windows(2).all(|w| w[0].0 < w[1].0),
            "fields must be sorted and distinct"
        );
        Self { fields }
    }

    /// Sets a field; an empty value removes it.
    pub fn set(&mut self, name: FieldName, value: String) {
        match self.fields.binary_search_by(|(k, _)| (**k).cmp(&*name)) {
            Ok(i) => {
                if value.is_empty() {
                    self.fields.remove(i);
                } else {
                    self.fields[i].1 = value;
                }
            }
            Err(i) => {
                if !value.is_empty() {
                    self.fields.insert(i, (name, value));
                }
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| self.fields[i].1.as_str())
    }

    pub fn fields(&self) -> &[(FieldName, String)] {
        &self.fields
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The digest of DESIGN §3: SHA-256 over `NAME=value\n` of the non-empty fields in ascending name order.
    pub fn digest(&self) -> Digest {
        let mut h = Sha256::new();
        for (k, v) in &self.fields {
            h.update(k.as_bytes());
            h.update(b"=");
            h.update(v.as_bytes());
            h.update(b"\n");
        }
        Digest(h.finalize().into())
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
        let doc = doc_no.trim();
        let sender = sender.trim();
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
        PlatformRecord::from_fields(pairs.iter().map(|(k, v)| (Arc::from(*k), v.to_string())))
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
        r.set(Arc::from("A"), "1".into());
        r.set(Arc::from("C"), "3".into());
        r.set(Arc::from("B"), String::new());
        let names: Vec<&str> = r.fields().iter().map(|(k, _)| &**k).collect();
        assert_eq!(names, ["A", "C"]);
        assert_eq!(r.get("C"), Some("3"));
    }
}
