//! The enforcement system's record schema (DESIGN §2), as serde types at the edge. Field names are the
//! source's own; codes in them are the source's internal codes, translated by `mappings/`.

use crate::model::Kind;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The deciding authority (决定机关) as the source names it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Authority {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub credit_code: Option<String>,
}

/// A legal representative (法定代表人).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LegalRep {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub id_type: Option<String>,
    #[serde(default)]
    pub id_no: Option<String>,
}

/// The party a decision concerns (行政相对人).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Party {
    /// `org`, `person` or `sole_trader`.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub credit_code: Option<String>,
    #[serde(default)]
    pub reg_no: Option<String>,
    #[serde(default)]
    pub org_code: Option<String>,
    #[serde(default)]
    pub tax_no: Option<String>,
    #[serde(default)]
    pub inst_cert_no: Option<String>,
    #[serde(default)]
    pub social_org_no: Option<String>,
    #[serde(default)]
    pub legal_rep: Option<LegalRep>,
    #[serde(default)]
    pub id_type: Option<String>,
    #[serde(default)]
    pub id_no: Option<String>,
}

/// One source record of either kind. Permit-only and penalty-only fields are optional, so one type carries both;
/// `kind` is not in the source's JSON (the endpoint decides it) except in the simulator's admin API.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SourceRecord {
    pub id: String,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub doc_no: Option<String>,
    // permit
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc_title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permit_no: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<String>,
    // penalty
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basis: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub penalty_types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fine_yuan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confiscated_yuan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_until: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_until: Option<String>,
    // both
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub decided_on: Option<String>,
    #[serde(default)]
    pub authority: Option<Authority>,
    #[serde(default)]
    pub party: Option<Party>,
    #[serde(default)]
    pub remarks: Option<String>,
}

/// What a source path yields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceValue<'a> {
    Absent,
    Text(&'a str),
    List(&'a [String]),
}

macro_rules! source_paths {
    ($( $variant:ident => $path:literal => |$r:ident| $get:expr ;)*) => {
        /// A field of the source schema that a mapping may read, by its dotted path (`party.legal_rep.id_no`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SourcePath { $($variant,)* }

        impl SourcePath {
            pub const ALL: &'static [SourcePath] = &[$(SourcePath::$variant,)*];

            pub fn parse(path: &str) -> Option<SourcePath> {
                match path { $($path => Some(SourcePath::$variant),)* _ => None }
            }

            pub fn as_str(self) -> &'static str {
                match self { $(SourcePath::$variant => $path,)* }
            }

            /// Reads this path from a record; a missing parent object reads as absent.
            pub fn get<'a>(self, rec: &'a SourceRecord) -> SourceValue<'a> {
                match self { $(SourcePath::$variant => { let $r = rec; $get })* }
            }
        }
    };
}

fn text(v: &Option<String>) -> SourceValue<'_> {
    match v {
        Some(s) => SourceValue::Text(s),
        None => SourceValue::Absent,
    }
}

fn party(r: &SourceRecord) -> Option<&Party> {
    r.party.as_ref()
}

fn rep(r: &SourceRecord) -> Option<&LegalRep> {
    r.party.as_ref().and_then(|p| p.legal_rep.as_ref())
}

fn opt_text<'a, T>(o: Option<&'a T>, f: impl Fn(&'a T) -> &'a Option<String>) -> SourceValue<'a> {
    match o {
        Some(t) => text(f(t)),
        None => SourceValue::Absent,
    }
}

source_paths! {
    Id => "id" => |r| SourceValue::Text(&r.id);
    UpdatedAt => "updated_at" => |r| text(&r.updated_at);
    Status => "status" => |r| text(&r.status);
    DocNo => "doc_no" => |r| text(&r.doc_no);
    DocTitle => "doc_title" => |r| text(&r.doc_title);
    Category => "category" => |r| text(&r.category);
    CertName => "cert_name" => |r| text(&r.cert_name);
    PermitNo => "permit_no" => |r| text(&r.permit_no);
    ValidFrom => "valid_from" => |r| text(&r.valid_from);
    ValidTo => "valid_to" => |r| text(&r.valid_to);
    Violation => "violation" => |r| text(&r.violation);
    Facts => "facts" => |r| text(&r.facts);
    Basis => "basis" => |r| text(&r.basis);
    PenaltyTypes => "penalty_types" => |r| match &r.penalty_types { Some(v) => SourceValue::List(v), None => SourceValue::Absent };
    FineYuan => "fine_yuan" => |r| text(&r.fine_yuan);
    ConfiscatedYuan => "confiscated_yuan" => |r| text(&r.confiscated_yuan);
    LicenseAction => "license_action" => |r| text(&r.license_action);
    EffectiveUntil => "effective_until" => |r| text(&r.effective_until);
    DisplayUntil => "display_until" => |r| text(&r.display_until);
    Content => "content" => |r| text(&r.content);
    DecidedOn => "decided_on" => |r| text(&r.decided_on);
    AuthorityName => "authority.name" => |r| opt_text(r.authority.as_ref(), |a| &a.name);
    AuthorityCreditCode => "authority.credit_code" => |r| opt_text(r.authority.as_ref(), |a| &a.credit_code);
    PartyKind => "party.kind" => |r| opt_text(party(r), |p| &p.kind);
    PartyName => "party.name" => |r| opt_text(party(r), |p| &p.name);
    PartyCreditCode => "party.credit_code" => |r| opt_text(party(r), |p| &p.credit_code);
    PartyRegNo => "party.reg_no" => |r| opt_text(party(r), |p| &p.reg_no);
    PartyOrgCode => "party.org_code" => |r| opt_text(party(r), |p| &p.org_code);
    PartyTaxNo => "party.tax_no" => |r| opt_text(party(r), |p| &p.tax_no);
    PartyInstCertNo => "party.inst_cert_no" => |r| opt_text(party(r), |p| &p.inst_cert_no);
    PartySocialOrgNo => "party.social_org_no" => |r| opt_text(party(r), |p| &p.social_org_no);
    PartyIdType => "party.id_type" => |r| opt_text(party(r), |p| &p.id_type);
    PartyIdNo => "party.id_no" => |r| opt_text(party(r), |p| &p.id_no);
    LegalRepName => "party.legal_rep.name" => |r| opt_text(rep(r), |l| &l.name);
    LegalRepIdType => "party.legal_rep.id_type" => |r| opt_text(rep(r), |l| &l.id_type);
    LegalRepIdNo => "party.legal_rep.id_no" => |r| opt_text(rep(r), |l| &l.id_no);
    Remarks => "remarks" => |r| text(&r.remarks);
}

/// The lifecycle status of a source record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceStatus {
    Active,
    Revoked,
    Changed,
}

impl SourceRecord {
    /// An `id` that is empty or only white space is no id: records with one could not be told apart.
    pub fn check_id(&self) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("the record's `id` is empty: a record needs an id of its own".into());
        }
        Ok(())
    }

    /// The record's status; an unknown or missing status reads as `None` (validation reports it).
    pub fn status(&self) -> Option<SourceStatus> {
        match self.status.as_deref() {
            Some("active") => Some(SourceStatus::Active),
            Some("revoked") => Some(SourceStatus::Revoked),
            Some("changed") => Some(SourceStatus::Changed),
            _ => None,
        }
    }
}

/// Reads a source record from its JSON text the way `serde_json::Value` → `SourceRecord` would, without building
/// the tree unless the direct way refuses it (e.g. a field given twice, which a `Value` resolves to the last). An
/// `id` that is empty or only white space is no id: two such records could not be told apart. The error says
/// what is wrong in the operator's terms (a lone surrogate by name: the parser's own words miss it).
pub fn read_record(raw: &str) -> Result<SourceRecord, String> {
    let rec = serde_json::from_str::<SourceRecord>(raw).or_else(|_| {
        let v: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| describe_json_error(raw, &e))?;
        <SourceRecord as Deserialize>::deserialize(&v).map_err(|e| e.to_string())
    })?;
    rec.check_id()?;
    Ok(rec)
}

/// A JSON parser's message about `text`, saying so when the cause is a lone surrogate (serde_json calls it "lone
/// leading surrogate" or "unexpected end of hex escape").
pub fn describe_json_error(text: &str, e: &serde_json::Error) -> String {
    match find_lone_surrogate(text) {
        Some(escape) => format!(
            "a string holds the escape {escape}, a lone surrogate (half of a UTF-16 pair, which is no character), \
             so it is not text ({e})"
        ),
        None => e.to_string(),
    }
}

/// The members of a source record's JSON text that name and place it, `id` and `updated_at`, as their JSON text;
/// the others are skipped unread. What a record that neither the schema nor `serde_json::Value` can read still
/// says about itself: a lone surrogate (`"\ud800"`) or a number out of range elsewhere does not hide them. A
/// member given twice counts as its last (as a `Value` reads it); a text that is not an object has neither.
#[derive(Debug, Default, Clone, Copy)]
pub struct RawHead<'a> {
    pub id: Option<&'a RawValue>,
    pub updated_at: Option<&'a RawValue>,
    /// `status`: a penalty revoked in a version nothing else of can be read still comes down.
    pub status: Option<&'a RawValue>,
}

impl<'a> RawHead<'a> {
    pub fn of(raw: &'a str) -> RawHead<'a> {
        use serde::de::{Deserializer as _, IgnoredAny, MapAccess, Visitor};

        enum Member {
            Id,
            UpdatedAt,
            Status,
            Other,
        }
        // A member name as its bytes (WTF-8: a lone surrogate in a name is no error here).
        impl<'de> Deserialize<'de> for Member {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Member, D::Error> {
                struct Name;
                impl Visitor<'_> for Name {
                    type Value = Member;
                    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                        f.write_str("a member name")
                    }
                    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<Member, E> {
                        Ok(match b {
                            b"id" => Member::Id,
                            b"updated_at" => Member::UpdatedAt,
                            b"status" => Member::Status,
                            _ => Member::Other,
                        })
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Member, E> {
                        self.visit_bytes(s.as_bytes())
                    }
                }
                d.deserialize_bytes(Name)
            }
        }
        struct Head;
        impl<'de> Visitor<'de> for Head {
            type Value = RawHead<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHead<'de>, A::Error> {
                let mut head = RawHead::default();
                while let Some(member) = map.next_key::<Member>()? {
                    match member {
                        Member::Id => head.id = Some(map.next_value()?),
                        Member::UpdatedAt => head.updated_at = Some(map.next_value()?),
                        Member::Status => head.status = Some(map.next_value()?),
                        Member::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(head)
            }
        }
        serde_json::Deserializer::from_str(raw)
            .deserialize_map(Head)
            .unwrap_or_default()
    }

    /// `id`, when it is a JSON string that is text (holds no lone surrogate).
    pub fn id_text(&self) -> Option<String> {
        serde_json::from_str(self.id?.get()).ok()
    }

    /// `updated_at`, when it is a JSON string that is text.
    pub fn updated_at_text(&self) -> Option<String> {
        serde_json::from_str(self.updated_at?.get()).ok()
    }

    /// `status`, when it is a JSON string that is text.
    pub fn status_text(&self) -> Option<String> {
        serde_json::from_str(self.status?.get()).ok()
    }
}

/// The name a source record goes by in quarantine (and in messages), from its JSON text, whatever else is wrong
/// with it: its `id` when that is a non-blank string (as written, escapes and all, when it holds a lone surrogate);
/// `(id 6)` for a numeric id, which must not share a name with the record whose id is the string "6"; otherwise
/// `(no id) ` and a short hash of the record, so that records without an id do not share one entry and the same
/// record read again finds its own. The hash is over the record as a `serde_json::Value` writes it (so the copy
/// quarantine holds hashes like the feed's text), or over the text itself when no `Value` can hold it.
pub fn record_name(raw: &str) -> String {
    let head = RawHead::of(raw);
    if let Some(id) = head.id.map(RawValue::get) {
        if let Some(quoted) = id.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            let name = serde_json::from_str::<String>(id).unwrap_or_else(|_| quoted.to_string());
            if !name.trim().is_empty() {
                return name;
            }
        } else if id.len() <= MAX_NUMERIC_ID
            && id.starts_with(['-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
        {
            return format!("(id {id})");
        }
    }
    use sha2::Digest as _;
    let hash = match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v) => sha2::Sha256::digest(v.to_string()),
        Err(_) => sha2::Sha256::digest(raw),
    };
    format!("{NO_ID_PREFIX}{}", hex::encode(&hash[..6]))
}

/// How quarantine names a record without a usable id: this, then a short hash (see [`record_name`]).
pub const NO_ID_PREFIX: &str = "(no id) ";

/// Numeric ids longer than this (a number of any length is valid JSON) are named by hash instead.
const MAX_NUMERIC_ID: usize = 40;

/// The first lone surrogate escape in a JSON text (`\ud800` as written): a UTF-16 half that no string can hold.
/// Escapes only occur inside strings, so the text is scanned without tracking them.
pub fn find_lone_surrogate(text: &str) -> Option<&str> {
    surrogate_escapes(text).find_map(|(range, lone)| lone.then(|| &text[range]))
}

/// The JSON text with every lone surrogate escape replaced by `\ufffd` (the replacement character), so that a
/// `serde_json::Value` can hold it (for display).
pub fn lone_surrogates_replaced(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut last = 0;
    for (range, _) in surrogate_escapes(text).filter(|(_, lone)| *lone) {
        out.push_str(&text[last..range.start]);
        out.push_str("\\ufffd");
        last = range.end;
    }
    if out.is_empty() {
        return text.into();
    }
    out.push_str(&text[last..]);
    out.into()
}

/// Every `\u` escape of a surrogate in a JSON text: its byte range (a pair counts as one) and whether it is lone.
fn surrogate_escapes(text: &str) -> impl Iterator<Item = (std::ops::Range<usize>, bool)> + '_ {
    let b = text.as_bytes();
    let unit = move |at: usize| -> Option<u16> {
        if b.get(at..at + 2)? != b"\\u" {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(b.get(at + 2..at + 6)?).ok()?, 16).ok()
    };
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            if b[i] != b'\\' {
                i += 1;
                continue;
            }
            let Some(u) = unit(i) else {
                // any other escape: its backslash and the character escaped
                i += 2;
                continue;
            };
            let start = i;
            i += 6;
            match u {
                0xD800..=0xDBFF if unit(i).is_some_and(|l| (0xDC00..=0xDFFF).contains(&l)) => {
                    i += 6;
                    return Some((start..i, false));
                }
                0xD800..=0xDFFF => return Some((start..i, true)),
                _ => {}
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_of_a_record_reads_past_what_a_value_refuses() {
        // a lone surrogate elsewhere, a number no f64 holds, a member given twice, an escaped member name
        let raw = r#"{"facts": "检查\ud800发现", "n": 1e400, "id": "A", "\u0069d": "CF-1", "x\udc00": 1,
                      "updated_at": "2026-11-20T10:00:00.000+08:00"}"#;
        assert!(serde_json::from_str::<serde_json::Value>(raw).is_err());
        let head = RawHead::of(raw);
        assert_eq!(head.id_text().as_deref(), Some("CF-1"));
        assert_eq!(
            head.updated_at_text().as_deref(),
            Some("2026-11-20T10:00:00.000+08:00")
        );
        assert!(RawHead::of("42").id.is_none());
        assert!(RawHead::of(r#"["id", 1]"#).id.is_none());
    }

    #[test]
    fn quarantine_names_tell_unreadable_records_apart() {
        assert_eq!(record_name(r#"{"id": "CF-1", "facts": "\ud800"}"#), "CF-1");
        // the id itself holds a lone surrogate: as written
        assert_eq!(record_name(r#"{"id": "CF-\ud800"}"#), r"CF-\ud800");
        // a number is not the string with its digits
        assert_eq!(record_name(r#"{"id": 6}"#), "(id 6)");
        assert_eq!(record_name(r#"{"id": "6"}"#), "6");
        // no id, a blank one, or one of another type: a hash of the record
        let names: Vec<String> = [
            r#"{"xid": "A"}"#,
            r#"{"xid": "B"}"#,
            r#"{"id": "", "doc_no": "1"}"#,
            r#"{"id": " ", "doc_no": "2"}"#,
            r#"{"id": null, "doc_no": "3"}"#,
            r#"{"xid": "C", "facts": "\ud800"}"#,
            r#"{"xid": "C", "facts": "\udc00"}"#,
        ]
        .iter()
        .map(|r| record_name(r))
        .collect();
        for (i, n) in names.iter().enumerate() {
            assert!(n.starts_with(NO_ID_PREFIX), "{n}");
            assert!(!names[..i].contains(n), "{names:?}");
        }
        // the same record, however its text is laid out, has the same name (quarantine holds it as a Value)
        assert_eq!(
            record_name(r#"{"xid": "A", "b": 1}"#),
            record_name("{ \"b\" : 1,\n \"xid\" : \"A\" }")
        );
        assert_eq!(
            record_name(r#"{"xid": "C", "facts": "\ud800"}"#),
            record_name(r#"{"xid": "C", "facts": "\ud800"}"#)
        );
    }

    #[test]
    fn lone_surrogates_are_found_and_named() {
        assert_eq!(find_lone_surrogate(r#"{"a": "x\ud800y"}"#), Some(r"\ud800"));
        assert_eq!(find_lone_surrogate(r#"{"a": "x\uDC00"}"#), Some(r"\uDC00"));
        assert_eq!(
            find_lone_surrogate(r#"{"a": "\ud83d\ude00", "b": "\\ud800"}"#),
            None
        );
        assert_eq!(
            find_lone_surrogate(r#"{"a": "\ud800\ud83d\ude00"}"#),
            Some(r"\ud800")
        );
        let fixed = lone_surrogates_replaced(r#"{"a": "x\ud800y\ud83d\ude00"}"#);
        let v: serde_json::Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(v["a"], "x\u{fffd}y\u{1f600}");
        let e = read_record(r#"{"id": "CF-1", "facts": "检查\ud800发现"}"#).unwrap_err();
        assert!(e.contains(r"\ud800") && e.contains("lone surrogate"), "{e}");
        let e = read_record(r#"{"id": "  "}"#).unwrap_err();
        assert!(e.contains("`id` is empty"), "{e}");
    }
}
