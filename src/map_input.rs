//! `dualpub map`'s core: read source records (a JSON array or JSON lines), map and validate each, and render the
//! platform XML of the valid ones and every finding of the others. Pure apart from its input bytes.

use crate::findings::{Finding, FindingCode};
use crate::mapping::{Mapped, MappingContext, MappingSet};
use crate::model::{Kind, RecordKey};
use crate::source_schema::{describe_json_error, SourceRecord};
use serde_json::value::RawValue;
use std::collections::HashMap;

/// The input as a whole could not be read as JSON.
#[derive(Debug, thiserror::Error)]
#[error("the input is not a JSON array, object or JSON lines: {0}")]
pub struct InputError(pub String);

/// One input record's outcome.
#[derive(Debug, Clone)]
pub struct MapItem {
    /// The source record's `id`, or `#N` (its 1-based position) when it has none.
    pub id: String,
    pub key: Option<RecordKey>,
    pub mapped: Option<Mapped>,
    pub findings: Vec<Finding>,
}

impl MapItem {
    pub fn is_valid(&self) -> bool {
        self.findings.is_empty() && self.key.is_some() && self.mapped.is_some()
    }
}

/// Splits the input into JSON values. First the input as one JSON value: an array is the records; an object is
/// one record (pretty-printed, say, as `quarantine show` prints one), unless it is a wrapper such as the files of
/// `fixtures/cases/` — an object without an `id` whose `records` is an array: then those are the records. Only
/// input that is not one JSON value is read as JSON lines, one value per non-blank line. A record that no
/// `serde_json::Value` can hold (a lone surrogate, a number out of range) is an `Err` for that record only, as in
/// sync; so is a line that is not JSON, unless no line is: input that is not JSON at all (an error page, CSV, the
/// wrong file) is an `InputError`, not a run of findings (README, `dualpub map`: exit 2).
pub fn split_input(input: &[u8]) -> Result<Vec<Result<serde_json::Value, String>>, InputError> {
    let text = std::str::from_utf8(input).map_err(|e| InputError(format!("not UTF-8 ({e})")))?;
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    // JSON text as such (a `RawValue` takes what a `Value` refuses), then each record as a `Value`.
    let whole = match serde_json::from_str::<&RawValue>(trimmed) {
        Ok(whole) => return Ok(records_in(whole).into_iter().map(record_value).collect()),
        Err(e) => e,
    };
    if trimmed.starts_with('[') {
        return Err(InputError(describe_json_error(trimmed, &whole)));
    }
    let mut any_json = false;
    let values: Vec<Result<serde_json::Value, String>> = trimmed
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            let line = |msg: String| format!("line {}: {msg}", n + 1);
            match serde_json::from_str::<&RawValue>(l) {
                Ok(raw) => {
                    any_json = true;
                    record_value(raw).map_err(line)
                }
                Err(e) => Err(line(describe_json_error(l, &e))),
            }
        })
        .collect();
    if !values.is_empty() && !any_json {
        // Not JSON lines either: what the parser says of the input as a whole, with its line and column.
        return Err(InputError(describe_json_error(trimmed, &whole)));
    }
    Ok(values)
}

/// The records one JSON value holds (see [`split_input`]), as their JSON text.
fn records_in(whole: &RawValue) -> Vec<&RawValue> {
    #[derive(serde::Deserialize)]
    struct Wrapper<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
        #[serde(borrow, default)]
        records: Option<Vec<&'a RawValue>>,
    }
    let text = whole.get();
    if text.starts_with('[') {
        if let Ok(records) = serde_json::from_str::<Vec<&RawValue>>(text) {
            return records;
        }
    } else if text.starts_with('{') {
        if let Ok(Wrapper {
            id: None,
            records: Some(records),
        }) = serde_json::from_str(text)
        {
            return records;
        }
    }
    vec![whole]
}

/// One record's JSON text as a `Value`; the parser's words (a lone surrogate named) when no `Value` can hold it.
fn record_value(raw: &RawValue) -> Result<serde_json::Value, String> {
    serde_json::from_str(raw.get()).map_err(|e| describe_json_error(raw.get(), &e))
}

/// Maps every record of the input with the kind's mapping.
pub fn map_input(
    kind: Kind,
    mappings: &MappingSet,
    ctx: &MappingContext,
    input: &[u8],
) -> Result<Vec<MapItem>, InputError> {
    let values = split_input(input)?;
    let mapping = mappings.get(kind);
    let mut seen: HashMap<RecordKey, String> = HashMap::new();
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        let position = format!("#{}", i + 1);
        let value = match v {
            Ok(v) => v,
            Err(msg) => {
                out.push(schema_item(position, msg));
                continue;
            }
        };
        let id = value
            .get("id")
            .and_then(|v| v.as_str())
            .filter(|s| !s.trim().is_empty())
            .map(str::to_string)
            .unwrap_or(position);
        let src: SourceRecord = match serde_json::from_value(value)
            .map_err(|e| e.to_string())
            .and_then(|s: SourceRecord| s.check_id().map(|()| s))
        {
            Ok(s) => s,
            Err(e) => {
                out.push(schema_item(id, e));
                continue;
            }
        };
        let mut mapped = mapping.map(ctx, &src);
        if let Some(key) = &mapped.key {
            match seen.get(key) {
                Some(first) if *first != src.id => mapped.findings.push(key_reused(key, first)),
                Some(_) => {}
                None => {
                    seen.insert(key.clone(), src.id.clone());
                }
            }
        }
        out.push(MapItem {
            id,
            key: mapped.key.clone(),
            findings: mapped.findings.clone(),
            mapped: Some(mapped),
        });
    }
    Ok(out)
}

/// The finding for a record the source schema cannot read. The parser's message may quote a value, so any ID
/// number in it is masked.
pub fn schema_finding(msg: &str) -> Finding {
    let msg = crate::ids::mask_ids_in(msg);
    Finding::new(
        FindingCode::SourceSchema,
        "(record)",
        format!("源记录不符合执法系统数据格式：{msg}"),
        format!("the source record does not fit the source schema: {msg}"),
    )
}

fn schema_item(id: String, msg: String) -> MapItem {
    let f = schema_finding(&msg);
    MapItem {
        id,
        key: None,
        mapped: None,
        findings: vec![f],
    }
}

/// The finding for a document number that another source record already uses.
pub fn key_reused(key: &RecordKey, first_id: &str) -> Finding {
    let key = key.to_string();
    let (key, first_id) = (
        crate::validate::shown(&key),
        crate::validate::shown(first_id),
    );
    Finding::new(
        FindingCode::KeyReused,
        "(key)",
        format!("文书号与源记录 {first_id} 相同（记录键 {key}），平台上会互相覆盖；请核对文书号"),
        format!("source record {first_id} already has this document number (key {key}); the platform would overwrite one with the other — check the document number"),
    )
}

/// The XML `<record>` elements of the valid items, one per line.
pub fn render_xml(items: &[MapItem]) -> Vec<u8> {
    let mut out = Vec::new();
    for it in items.iter().filter(|i| i.is_valid()) {
        if let (Some(key), Some(m)) = (&it.key, &it.mapped) {
            crate::xml::write_record(key.as_str(), &m.record, &mut out);
            out.push(b'\n');
        }
    }
    out
}

/// Every finding of the invalid items, one per line: record id, field, code, message (Chinese / English). ID numbers
/// are masked in all of them, the record id too (an id made from one, as sync's logs mask it).
pub fn render_findings(items: &[MapItem]) -> String {
    let mut out = String::new();
    for it in items {
        let id = crate::ids::mask_ids_in(&it.id);
        for f in &it.findings {
            out.push_str(&format!(
                "{}\t{}\t{}\t{} / {}\n",
                id,
                f.field,
                f.code,
                crate::ids::mask_ids_in(&f.zh),
                crate::ids::mask_ids_in(&f.en)
            ));
        }
        if it.findings.is_empty() && it.key.is_none() {
            out.push_str(&format!(
                "{}\t(key)\trequired\t无法生成记录键 / no record key can be made\n",
                id
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_that_is_not_json_at_all_is_an_input_error_but_a_bad_line_is_one_record() {
        for text in [
            &b"not json\n"[..],
            b"id,doc_no\nXK-1,x\n",
            b"<html>\n<body>502</body>\n",
        ] {
            let e = split_input(text).unwrap_err();
            assert!(e.to_string().contains("line 1"), "{e}");
        }
        let v = split_input(b"{\"id\":\"a\"}\nnot json\n").unwrap();
        assert!(v[0].is_ok());
        assert!(v[1].as_ref().unwrap_err().starts_with("line 2: "));
        // JSON that is not a record is still JSON: a source_schema finding, not an input error
        assert!(split_input(b"42\n").unwrap()[0].is_ok());
        assert!(split_input(b"").unwrap().is_empty());
        assert!(split_input(b"\n  \n").unwrap().is_empty());
    }

    /// Reported: a pretty-printed record was read as JSON lines, one bogus record per line.
    #[test]
    fn one_json_value_is_read_whole_before_json_lines() {
        let one =
            split_input(b"{\n  \"id\": \"a\",\n  \"party\": {\n    \"name\": \"x\"\n  }\n}\n")
                .unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].as_ref().unwrap()["party"]["name"], "x");
        // the fixtures' wrapper: its records
        let wrapped = split_input(
            br#"{"note": "n", "kind": "permit", "records": [{"id": "a"}, {"id": "b"}]}"#,
        )
        .unwrap();
        let ids: Vec<&str> = wrapped
            .iter()
            .map(|r| r.as_ref().unwrap()["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        // a record with a `records` field of its own is a record
        let rec = split_input(br#"{"id": "a", "records": []}"#).unwrap();
        assert_eq!(rec.len(), 1);
        let odd = split_input(br#"{"records": 1}"#).unwrap();
        assert_eq!(odd[0].as_ref().unwrap()["records"], 1);
        // a pretty-printed object that is not JSON: the parser's words on the whole, not on its first line
        let e = split_input(b"{\n  \"id\": \"a\",\n  \"facts\": \"x\"\n\n").unwrap_err();
        assert!(
            e.to_string()
                .contains("EOF while parsing an object at line 5"),
            "{e}"
        );
    }

    /// Reported: a record with a lone surrogate made `map` refuse the whole input (exit 2) with the parser's
    /// "unexpected end of hex escape"; sync quarantines such a record with a finding.
    #[test]
    fn a_record_no_value_can_hold_is_one_record_with_a_finding() {
        let bad = r#"{"id": "b", "facts": "x\ud800", "n": 1e400}"#;
        for input in [
            format!("{bad}\n"),
            format!("[{{\"id\": \"a\"}}, {bad}]"),
            format!("{{\"id\": \"a\"}}\n{bad}\n"),
            format!("{{\"records\": [{{\"id\": \"a\"}}, {bad}]}}"),
            bad.replace(", ", ",\n  "),
        ] {
            let v = split_input(input.as_bytes()).unwrap();
            let e = v.iter().find_map(|r| r.as_ref().err()).expect(&input);
            assert!(e.contains(r"\ud800, a lone surrogate"), "{input}: {e}");
            assert!(
                v.len() <= 2 && v.iter().filter(|r| r.is_ok()).count() == v.len() - 1,
                "{input}"
            );
        }
    }
}
