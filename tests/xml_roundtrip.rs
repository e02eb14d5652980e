//! Property: whatever string a field value or a key holds, the writers produce well-formed XML (checked with
//! roxmltree, a strict standard parser), and a string XML can carry reads back exactly.

use dualpub::model::{Kind, PlatformRecord};
use dualpub::xml::*;
use proptest::prelude::*;
use std::sync::Arc;

fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "<", ">", "&", "\"", "'", "]]>", "<![CDATA[", "&amp;", "&#0;", "&lt;", "--", "<!--", "?>", "\r", "\r\n",
            "\n", "\t", " ", "\u{85}", "\u{7F}", "\u{FFFE}", "\u{FFFF}", "\u{FFFD}", "\u{2028}", "😀", "👨‍👩‍👧",
            "𠀀", "\u{EFBF}", "\u{FEFF}", "豫安许〔2024〕1号",
        ])
        .prop_map(String::from),
        2 => prop::char::range('\u{0}', '\u{1F}').prop_map(String::from),
        2 => prop::char::range('\u{20000}', '\u{2A6DF}').prop_map(String::from),
        2 => prop::char::range('\u{FF01}', '\u{FF5E}').prop_map(String::from),
        1 => prop::char::range('\u{E000}', '\u{10FFFF}').prop_map(String::from),
        2 => "[a-zA-Z0-9 ]{0,4}",
        2 => any::<String>(),
    ]
}

fn hazardous() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..8).prop_map(|v| v.concat())
}

fn record(value: &str) -> PlatformRecord {
    PlatformRecord::from_fields([
        (Arc::from("XK_XDR_MC"), value.to_string()),
        (Arc::from("XK_WSH"), format!("{value}-2")),
        (Arc::from("BZ"), "fixed".to_string()),
    ])
}

fn assert_well_formed(bytes: &[u8]) -> Result<(), TestCaseError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| TestCaseError::fail(format!("not UTF-8: {e}")))?;
    roxmltree::Document::parse(text)
        .map_err(|e| TestCaseError::fail(format!("roxmltree rejects the output: {e}\n{text:?}")))?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn exchange_message_is_well_formed_and_round_trips(value in hazardous(), key in hazardous()) {
        let key = if key.is_empty() { "k".to_string() } else { key };
        // A blank sender or flow is refused by the reader (`BAD_ENVELOPE`); any other text round-trips.
        let msg = ExchangeMessage {
            sender: format!("S{value}"),
            receiver: "R".into(),
            flow: format!("F{key}"),
            kind: Kind::Penalty,
            send_time: "2024-05-01T08:00:00+08:00".into(),
            records: vec![
                MessageRecord { key: key.clone(), op: MessageOp::Upsert(record(&value)) },
                MessageRecord { key: key.clone(), op: MessageOp::Withdraw },
            ],
        };
        let mut out = Vec::new();
        write_exchange_message(&msg, &mut out);
        assert_well_formed(&out)?;
        // Whatever was written, our own reader accepts it (the replaced characters are legal).
        let back = read_exchange_message(&out);
        prop_assert!(back.is_ok(), "{:?}", back);
        if first_illegal_char(&value).is_none() && first_illegal_char(&key).is_none() {
            prop_assert_eq!(back.unwrap(), msg);
        }

        // A record written alone is a well-formed fragment too.
        let mut one = Vec::new();
        write_record(&key, &record(&value), &mut one);
        assert_well_formed(&one)?;
    }

    #[test]
    fn record_page_is_well_formed_and_round_trips(value in hazardous(), key in hazardous()) {
        let page = RecordPage {
            kind: Kind::Permit,
            page: 1,
            size: 2,
            total: 2,
            records: vec![
                PageRecord {
                    key: key.clone(),
                    digest: value.clone(),
                    status: PublicStatus::Public,
                    published_at: value.clone(),
                    updated_at: key.clone(),
                    fields: Some(record(&value)),
                },
                PageRecord {
                    key: value.clone(),
                    digest: key.clone(),
                    status: PublicStatus::Withdrawn,
                    published_at: String::new(),
                    updated_at: String::new(),
                    fields: None,
                },
            ],
        };
        let mut out = Vec::new();
        write_record_page(&page, &mut out);
        assert_well_formed(&out)?;
        let back = read_record_page(&out);
        prop_assert!(back.is_ok(), "{:?}", back);
        if first_illegal_char(&value).is_none() && first_illegal_char(&key).is_none() {
            prop_assert_eq!(back.unwrap(), page);
        }
    }

    #[test]
    fn receipt_and_small_documents_round_trip(value in hazardous(), key in hazardous()) {
        let legal = first_illegal_char(&value).is_none() && first_illegal_char(&key).is_none();
        let r = Receipt {
            flow: key.clone(),
            accepted: 1,
            unchanged: 0,
            rejected: 1,
            withdrawn: 0,
            results: vec![RecordResult {
                key: key.clone(),
                status: ResultStatus::Rejected,
                code: value.clone(),
                message: value.clone(),
            }],
        };
        let mut out = Vec::new();
        write_receipt(&r, &mut out);
        assert_well_formed(&out)?;
        if legal {
            prop_assert_eq!(read_receipt(&out).unwrap(), r);
        }

        let t = TokenRequest { app_key: key.clone(), timestamp: value.clone(), sign: key.clone() };
        out.clear();
        write_token_request(&t, &mut out);
        assert_well_formed(&out)?;
        if legal {
            prop_assert_eq!(read_token_request(&out).unwrap(), t);
        }

        let e = ErrorDoc { code: key.clone(), message: value.clone() };
        out.clear();
        write_error_doc(&e, &mut out);
        assert_well_formed(&out)?;
        if legal {
            prop_assert_eq!(read_error_doc(&out).unwrap(), e);
        }
    }

    #[test]
    fn first_illegal_char_matches_the_xml_char_production(s in hazardous(), pad in 0usize..40, tail in 0usize..40) {
        // Padding moves each hazard across every offset of the scanners' 16-byte blocks.
        let s = format!("{}{s}{}", "a".repeat(pad), "中".repeat(tail / 3));
        let expected = s.chars().enumerate().find(|&(_, c)| {
            !matches!(c as u32, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
        });
        prop_assert_eq!(first_illegal_char(&s), expected);
    }

    #[test]
    fn escaping_matches_the_char_by_char_definition(s in hazardous(), pad in 0usize..40, tail in 0usize..40) {
        let s = format!("{}{s}{}", "b".repeat(pad), "，".repeat(tail / 3));
        // Text: `<`, `>`, `&` and CR escaped; a char XML cannot carry becomes U+FFFD. Attributes also escape
        // quotes, tab and LF.
        let naive = |attr: bool| -> String {
            s.chars()
                .map(|c| match c {
                    '<' => "&lt;".to_string(),
                    '>' => "&gt;".to_string(),
                    '&' => "&amp;".to_string(),
                    '\r' => "&#13;".to_string(),
                    '"' if attr => "&quot;".to_string(),
                    '\'' if attr => "&apos;".to_string(),
                    '\t' if attr => "&#9;".to_string(),
                    '\n' if attr => "&#10;".to_string(),
                    c if !is_xml_char(c) => "\u{FFFD}".to_string(),
                    c => c.to_string(),
                })
                .collect()
        };
        let mut out = Vec::new();
        escape_text(&s, &mut out);
        prop_assert_eq!(String::from_utf8(out).unwrap(), naive(false));
        let mut out = Vec::new();
        escape_attr(&s, &mut out);
        prop_assert_eq!(String::from_utf8(out).unwrap(), naive(true));
    }

    #[test]
    fn readers_never_panic_on_mangled_input(value in hazardous(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let msg = ExchangeMessage {
            sender: "S".into(),
            receiver: "R".into(),
            flow: "F".into(),
            kind: Kind::Permit,
            send_time: "T".into(),
            records: vec![MessageRecord { key: "k".into(), op: MessageOp::Upsert(record(&value)) }],
        };
        let mut out = Vec::new();
        write_exchange_message(&msg, &mut out);
        let i = cut.index(out.len());
        let _ = read_exchange_message(&out[..i]);
        let mut flipped = out.clone();
        flipped[i] = byte;
        let _ = read_exchange_message(&flipped);
        let _ = read_record_page(&flipped);
        let _ = read_receipt(&flipped);
    }
}
