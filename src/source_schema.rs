//! The enforcement system's record schema (DESIGN §2), as serde types at the edge. Field names are the
//! source's own; codes in them are the source's internal codes, translated by `mappings/`.

use crate::model::Kind;
use serde::{Deserialize, Serialize};

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

/// The `id` of a source record as its JSON text gives it (a record the schema cannot read may still have one):
/// a string as it is, any other value as its JSON text; `None` without one.
pub fn raw_id(raw: &serde_json::value::RawValue) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    v.get("id")
        .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
}
