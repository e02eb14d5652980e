//! Validation findings: a stable code, the field, and a message in Chinese and English that tells the operator
//! what to fix. Codes are a contract (quarantine, reports, the platform simulator's rejections and the README all
//! use them); add new ones, never rename.

use serde::Serialize;
use std::fmt;

macro_rules! finding_codes {
    ($( $variant:ident = $code:literal : $doc:literal ,)*) => {
        /// Every kind of problem validation can find.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum FindingCode { $( #[doc = $doc] $variant, )* }

        impl FindingCode {
            pub const ALL: &'static [FindingCode] = &[$(FindingCode::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(FindingCode::$variant => $code,)* }
            }

            pub fn parse(s: &str) -> Option<FindingCode> {
                match s { $($code => Some(FindingCode::$variant),)* _ => None }
            }

            /// One line for the README and `--help`: what the code means.
            pub fn describe(self) -> &'static str {
                match self { $(FindingCode::$variant => $doc,)* }
            }
        }
    };
}

finding_codes! {
    SourceSchema = "source_schema": "the source record is not a JSON object of the source schema (wrong type, missing id)",
    Required = "required": "a field required for this party category or penalty category is empty",
    UsccFormat = "uscc_format": "a 统一社会信用代码 has the wrong length or a character outside its alphabet",
    UsccCheck = "uscc_check": "a 统一社会信用代码's check character is wrong (the message names the expected one)",
    UsccPlaceholder = "uscc_placeholder": "the placeholder USCC 00000000000000000X used where it is not allowed",
    OrgCodeFormat = "org_code_format": "an 组织机构代码 has the wrong length or characters",
    OrgCodeCheck = "org_code_check": "an 组织机构代码's check character is wrong",
    IdFormat = "id_format": "an ID number has the wrong length, characters or birth date",
    IdCheck = "id_check": "an ID number's check character is wrong",
    DateInvalid = "date_invalid": "a date that is not a real calendar date",
    PeriodOrder = "period_order": "a period that ends before it starts",
    CodeUnknown = "code_unknown": "a value outside its code table",
    AmountInvalid = "amount_invalid": "an amount that is not a plain decimal number",
    AmountNegative = "amount_negative": "a negative amount",
    AmountScale = "amount_scale": "an amount with more than 6 decimal places in 万元 (finer than 0.01 yuan)",
    TooLong = "too_long": "a value longer than the field allows",
    XmlChar = "xml_char": "a character that XML 1.0 cannot carry (control characters, U+FFFE, U+FFFF)",
    KeyReused = "key_reused": "another source record already maps to the same record key (a reused document number)",
    PenaltyMinor = "penalty_minor": "a penalty on a natural person under 18 on the decision date (ID type 身份证): it must not be published",
    OtherUnnamed = "other_unnamed": "a bare 其他 (other) where the standard wants the concrete category named (许可类别)",
    DisplayTooShort = "display_too_short": "a penalty's display end (CF_GSJZQ) before the legal minimum display period of the agency's domain",
    DateOutOfRange = "date_out_of_range": "a decision date after today (China Standard Time) or before 1949-10-01: a typo, most likely",
    IdInText = "id_in_text": "a natural person's ID number in a field the platform shows as it is (only 证件号码 fields are masked there): it must not be published",
}

impl fmt::Display for FindingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FindingCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// One problem with one field of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: FindingCode,
    /// The platform field (e.g. `XK_XDR_SHXYM`), or a source path for source-level problems.
    pub field: String,
    /// What is wrong and what to do, in Chinese.
    pub zh: String,
    /// The same in English.
    pub en: String,
}

impl Finding {
    pub fn new(
        code: FindingCode,
        field: impl Into<String>,
        zh: impl Into<String>,
        en: impl Into<String>,
    ) -> Self {
        Finding {
            code,
            field: field.into(),
            zh: zh.into(),
            en: en.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] {} / {}",
            self.field, self.code, self.zh, self.en
        )
    }
}
