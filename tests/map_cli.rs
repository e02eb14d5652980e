//! `dualpub map` through the real binary: exit codes, output streams, and no panic on hostile input.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn dualpub(args: &[&str], stdin: &[u8], dir: &Path) -> Output {
    dualpub_with(args, stdin, dir, &[])
}

/// [`dualpub`] with the environment variables `vars` set.
fn dualpub_with(args: &[&str], stdin: &[u8], dir: &Path, vars: &[(&str, &str)]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dualpub"))
        .args(args)
        .current_dir(dir)
        .env_remove("DUALPUB_CONFIG")
        .env_remove("DUALPUB_MAPPING_DIR")
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut sin = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn fixture_records(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/cases")
        .join(format!("{name}.json"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    serde_json::to_vec(&v["records"]).unwrap()
}

#[test]
fn valid_input_exits_0_with_xml_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let out = dualpub(
        &["map", "--kind", "permit"],
        &fixture_records("permit_org"),
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8(out.stdout).unwrap();
    assert!(
        xml.starts_with("<record op=\"upsert\" key=\"XZXK:"),
        "{xml}"
    );
    assert!(xml.contains("<XK_XDR_MC>河南豫东化工有限公司</XK_XDR_MC>"));
    // with no config the data source unit is the deciding authority
    assert!(xml.contains("<XK_LYDW>河南省应急管理厅</XK_LYDW>"));
}

#[test]
fn json_lines_from_a_file_and_findings_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    for name in ["permit_org", "finding_uscc_check"] {
        let v: Vec<serde_json::Value> = serde_json::from_slice(&fixture_records(name)).unwrap();
        for r in v {
            lines.extend(serde_json::to_vec(&r).unwrap());
            lines.push(b'\n');
        }
    }
    std::fs::write(dir.path().join("in.jsonl"), &lines).unwrap();
    let out = dualpub(&["map", "--kind", "permit", "in.jsonl"], b"", dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("XK-U-2\tXK_XDR_SHXYM\tuscc_check\t"), "{err}");
    assert!(
        err.contains("2 permit record(s): 1 valid, 1 invalid"),
        "{err}"
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 1);
}

#[test]
fn config_supplies_agency_and_mapping_dir() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    for f in ["permit.toml", "penalty.toml", "codes.toml"] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("mappings")
                .join(f),
        )
        .unwrap();
        std::fs::write(
            m.join(f),
            text.replace(
                "date_format = \"YYYY/MM/DD\"",
                "date_format = \"YYYY-MM-DD\"",
            ),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("dualpub.toml"),
        "[agency]\nname = \"洛阳市应急管理局\"\ncredit_code = \"11410300000012343Y\"\n[mapping]\ndir = \"m\"\n",
    )
    .unwrap();
    let out = dualpub(
        &["map", "--kind", "permit"],
        &fixture_records("permit_org"),
        dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8(out.stdout).unwrap();
    assert!(xml.contains("<XK_LYDW>洛阳市应急管理局</XK_LYDW>"), "{xml}");
    assert!(xml.contains("key=\"XZXK:11410300000012343Y:"), "{xml}");
    assert!(
        xml.contains("<XK_JDRQ>2024-03-01</XK_JDRQ>"),
        "the mapping dir's date format is used: {xml}"
    );
}

#[test]
fn broken_mapping_or_unreadable_input_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("dualpub.toml"),
        "[mapping]\ndir = \"nowhere\"\n",
    )
    .unwrap();
    let out = dualpub(&["map", "--kind", "permit"], b"[]", dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("[mapping] dir: the directory nowhere does not exist"));

    let dir = tempfile::tempdir().unwrap();
    let out = dualpub(
        &["map", "--kind", "permit", "missing.json"],
        b"",
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read missing.json"));
    let out = dualpub(&["map", "--kind", "permit"], b"[{\"id\": 1,", dir.path());
    assert_eq!(out.status.code(), Some(2));
    let out = dualpub(&["map", "--kind", "parking"], b"[]", dir.path());
    assert_eq!(out.status.code(), Some(2));
    let out = dualpub(
        &["map", "--kind", "permit"],
        &[0xff, 0xfe, 0x00],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn hostile_input_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
    let deep_obj = format!(
        "[{{\"id\":\"d\",\"party\":{}1{}}}]",
        "{\"a\":".repeat(5000),
        "}".repeat(5000)
    );
    let huge = format!(
        "[{{\"id\":\"h\",\"doc_no\":\"{}\",\"content\":\"{}\",\"party\":{{\"name\":\"{}\"}}}}]",
        "号".repeat(100_000),
        "<&>\\u0000".repeat(200_000),
        "\\ud800x".repeat(10)
    );
    let inputs: Vec<Vec<u8>> = vec![
        b"{".to_vec(),
        b"]".to_vec(),
        b"null".to_vec(),
        b"42\n\"x\"\n[1,2]\n{\"id\":null}\n{}\n".to_vec(),
        b"{\"id\":\"a\",\"penalty_types\":\"C02\"}\n{\"id\":\"b\",\"fine_yuan\":20000}\n{\"id\":\"c\",\"party\":[]}\n".to_vec(),
        b"{\"id\":\"a\"} trailing\n{bad json\n".to_vec(),
        deep.into_bytes(),
        deep_obj.into_bytes(),
        huge.into_bytes(),
        b"[{\"id\":\"z\",\"decided_on\":\"9999999-99-99\",\"valid_to\":\"\xe5\x8f\xb7\",\"fine_yuan\":\"99999999999999999999999999999999\"}]".to_vec(),
    ];
    for kind in ["permit", "penalty"] {
        for input in &inputs {
            let out = dualpub(&["map", "--kind", kind], input, dir.path());
            let code = out.status.code();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                matches!(code, Some(1) | Some(2)),
                "exit {code:?} for {:?}: {err}",
                String::from_utf8_lossy(&input[..input.len().min(80)])
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

#[test]
fn input_that_is_not_json_at_all_exits_2_but_a_bad_line_among_records_is_a_finding() {
    let dir = tempfile::tempdir().unwrap();
    for input in [
        &b"not json\n"[..],
        b"not json",
        b"id,doc_no\nXK-1,x\n",
        b"<html><body>502 Bad Gateway</body></html>\n",
    ] {
        for kind in ["permit", "penalty"] {
            let out = dualpub(&["map", "--kind", kind], input, dir.path());
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(
                err.contains("not a JSON array, object or JSON lines"),
                "{err}"
            );
            assert!(!err.contains("source_schema"), "{err}");
            assert!(out.stdout.is_empty());
        }
    }
    // JSON lines with one broken line: the broken line is that record's finding, the others are mapped
    let mut input = Vec::new();
    let v: Vec<serde_json::Value> = serde_json::from_slice(&fixture_records("permit_org")).unwrap();
    input.extend(serde_json::to_vec(&v[0]).unwrap());
    input.extend(b"\nnot json\n");
    let out = dualpub(&["map", "--kind", "permit"], &input, dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("#2\t(record)\tsource_schema\t"), "{err}");
    assert!(
        err.contains("2 permit record(s): 1 valid, 1 invalid"),
        "{err}"
    );
    // JSON that is not a source record stays a finding
    let out = dualpub(&["map", "--kind", "permit"], b"42\n", dir.path());
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let one: Vec<serde_json::Value> =
        serde_json::from_slice(&fixture_records("permit_org")).unwrap();
    // far more XML than a pipe holds
    let many: Vec<serde_json::Value> = std::iter::repeat_n(one[0].clone(), 20_000).collect();
    let input = serde_json::to_vec(&many).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dualpub"))
        .args(["map", "--kind", "permit"])
        .current_dir(dir.path())
        .env_remove("DUALPUB_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("<record "), "{first}");
    // the reader is gone (like `| head -1`)
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("20000 permit record(s): 20000 valid"), "{err}");
}

// ---- regression tests for data-correctness defects (each named after the bug it pins) ----

/// The first record of a fixture, to change one thing in it.
/// A finding's line names its record by id; an id made from the party's ID number was printed whole, though the
/// messages beside it mask every ID number (as sync's logs mask the id).
#[test]
fn a_record_id_made_from_an_id_number_is_masked_in_the_findings() {
    let rec = with(
        with(
            fixture_record("permit_org"),
            "/id",
            "XK-410105194912310021".into(),
        ),
        "/party/credit_code",
        "914101004157892343".into(),
    );
    let (code, _, err) = map_records("permit", &[rec], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("XK-410105********0021"), "{err}");
    assert!(!err.contains("410105194912310021"), "{err}");
}

/// A space around `[agency] credit_code` (easy to get from an environment file) passed the start-up check, which
/// reads the code trimmed, but went into every record as it was: every record was quarantined as `uscc_format`.
#[test]
fn the_agency_fields_go_into_records_trimmed_as_they_are_checked() {
    let config = "[agency]\nname = \" 洛阳市应急管理局 \"\ncredit_code = \"11410300000012343Y \"\n";
    let (code, xml, err) = map_records("permit", &[fixture_record("permit_org")], Some(config));
    assert_eq!(code, Some(0), "{err}");
    assert!(xml.contains("<XK_LYDW>洛阳市应急管理局</XK_LYDW>"), "{xml}");
    assert!(
        xml.contains("<XK_LYDWDM>11410300000012343Y</XK_LYDWDM>"),
        "{xml}"
    );
}

fn fixture_record(name: &str) -> serde_json::Value {
    let v: Vec<serde_json::Value> = serde_json::from_slice(&fixture_records(name)).unwrap();
    v.into_iter().next().unwrap()
}

fn with(mut rec: serde_json::Value, pointer: &str, value: serde_json::Value) -> serde_json::Value {
    *rec.pointer_mut(pointer)
        .unwrap_or_else(|| panic!("{pointer} is in the fixture")) = value;
    rec
}

/// Maps records in a fresh directory (with `dualpub.toml` when `config` is given): exit code, stdout, stderr.
fn map_records(
    kind: &str,
    records: &[serde_json::Value],
    config: Option<&str>,
) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    if let Some(c) = config {
        std::fs::write(dir.path().join("dualpub.toml"), c).unwrap();
    }
    let out = dualpub(
        &["map", "--kind", kind],
        &serde_json::to_vec(records).unwrap(),
        dir.path(),
    );
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_decision_timestamp_is_a_date_in_china_standard_time() {
    use serde_json::json;
    let at = |ts: &str| with(fixture_record("penalty_person"), "/decided_on", json!(ts));
    let (code, xml, err) = map_records("penalty", &[at("2024-05-16T20:00:00Z")], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        xml.contains("<CF_JDRQ>2024/05/17</CF_JDRQ>"),
        "20:00 UTC is the next day in CST: {xml}"
    );
    assert!(xml.contains("<CF_GSJZQ>2024/08/17</CF_GSJZQ>"), "{xml}");
    let (code, xml, err) = map_records("penalty", &[at("2024-05-16T23:30:00+08:00")], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(xml.contains("<CF_JDRQ>2024/05/16</CF_JDRQ>"), "{xml}");
    for bad in [
        "2024-05-16Tgarbage",
        "2024-05-16T20:00:00",
        "2024-05-16 junk",
    ] {
        let (code, _, err) = map_records("penalty", &[at(bad)], None);
        assert_eq!(code, Some(1), "{bad}: {err}");
        assert!(err.contains("\tCF_JDRQ\tdate_invalid\t"), "{bad}: {err}");
    }
}

#[test]
fn an_invalid_decision_date_is_reported_once_not_also_as_a_missing_display_period() {
    use serde_json::json;
    for decided in [
        json!("2024-02-30"),
        json!("2024-05-16Tgarbage"),
        json!(null),
    ] {
        let rec = with(
            fixture_record("penalty_person"),
            "/decided_on",
            decided.clone(),
        );
        let (code, _, err) = map_records("penalty", &[rec], None);
        assert_eq!(code, Some(1), "{decided}: {err}");
        assert!(err.contains("\tCF_JDRQ\t"), "{decided}: {err}");
        assert!(!err.contains("CF_GSJZQ"), "{decided}: {err}");
    }
}

#[test]
fn a_15_digit_number_is_converted_only_when_the_id_type_is_the_resident_id_card() {
    use serde_json::json;
    let legacy = "340524800101001";
    for id_type in ["PASSPORT", "OTHER:军官证"] {
        let person = with(
            with(
                fixture_record("permit_person"),
                "/party/id_type",
                json!(id_type),
            ),
            "/party/id_no",
            json!(legacy),
        );
        let org = with(
            with(
                fixture_record("permit_org"),
                "/party/legal_rep/id_type",
                json!(id_type),
            ),
            "/party/legal_rep/id_no",
            json!(legacy),
        );
        let (code, xml, err) = map_records("permit", &[person, org], None);
        assert_eq!(code, Some(0), "{id_type}: {err}");
        assert!(
            xml.contains(&format!("<XK_XDR_ZJHM>{legacy}</XK_XDR_ZJHM>")),
            "{id_type}: a number of another document is kept as given: {xml}"
        );
        assert!(
            xml.contains(&format!("<XK_FR_ZJHM>{legacy}</XK_FR_ZJHM>")),
            "{id_type}: also for the legal representative: {xml}"
        );
    }
    // the resident ID card's legacy number is still converted, for the party and the legal representative
    let person = with(
        fixture_record("permit_person"),
        "/party/id_no",
        json!(legacy),
    );
    let org = with(
        fixture_record("permit_org"),
        "/party/legal_rep/id_no",
        json!(legacy),
    );
    let (code, xml, err) = map_records("permit", &[person, org], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        xml.contains("<XK_XDR_ZJHM>34052419800101001X</XK_XDR_ZJHM>"),
        "{xml}"
    );
    assert!(
        xml.contains("<XK_FR_ZJHM>34052419800101001X</XK_FR_ZJHM>"),
        "{xml}"
    );
}

#[test]
fn codes_are_pushed_in_their_normalised_form() {
    use serde_json::json;
    let org = with(
        with(
            fixture_record("permit_org"),
            "/party/org_code",
            json!("41578923-4"),
        ),
        "/party/legal_rep/id_no",
        json!("34052419800101001x"),
    );
    let (code, xml, err) = map_records("permit", &[org], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        xml.contains("<XK_XDR_ZZJG>415789234</XK_XDR_ZZJG>"),
        "{xml}"
    );
    assert!(
        xml.contains("<XK_FR_ZJHM>34052419800101001X</XK_FR_ZJHM>"),
        "{xml}"
    );

    let person = with(
        fixture_record("penalty_person"),
        "/party/id_no",
        json!("41050219880101561x"),
    );
    let (code, xml, err) = map_records("penalty", &[person], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        xml.contains("<CF_XDR_ZJHM>41050219880101561X</CF_XDR_ZJHM>"),
        "{xml}"
    );
}

#[test]
fn an_unknown_agency_domain_is_refused_not_taken_for_three_months() {
    let rec = fixture_record("penalty_person");
    let (code, xml, err) = map_records(
        "penalty",
        std::slice::from_ref(&rec),
        Some("[agency]\ndomain = \"应急管理\"\n"),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(xml.is_empty(), "{xml}");
    assert!(err.contains("[agency] domain"), "{err}");
    assert!(err.contains("应急管理"), "{err}");
    for accepted in ["安全生产", "特种设备", "消防", "其他"] {
        assert!(err.contains(accepted), "{err} should list {accepted}");
    }
    let (code, xml, err) = map_records("penalty", &[rec], Some("[agency]\ndomain = \"其他\"\n"));
    assert_eq!(code, Some(0), "{err}");
    assert!(xml.contains("<CF_GSJZQ>2024/08/16</CF_GSJZQ>"), "{xml}");
}

#[test]
fn a_display_until_below_the_legal_minimum_is_a_finding() {
    use serde_json::json;
    // decided 2024-05-16, no config: 3 months at least
    let short = with(
        fixture_record("penalty_person"),
        "/display_until",
        json!("2024-08-15"),
    );
    let (code, xml, err) = map_records("penalty", &[short], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(xml.is_empty(), "{xml}");
    assert!(err.contains("\tCF_GSJZQ\tdisplay_too_short\t"), "{err}");
    assert!(err.contains("3 个月") && err.contains("3 months"), "{err}");
    assert!(
        err.contains("2024/08/16"),
        "names the earliest allowed end: {err}"
    );
    let enough = with(
        fixture_record("penalty_person"),
        "/display_until",
        json!("2024-08-16"),
    );
    let (code, xml, err) = map_records("penalty", &[enough], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(xml.contains("<CF_GSJZQ>2024/08/16</CF_GSJZQ>"), "{xml}");

    // 安全生产: a year at least
    let config = "[agency]\ndomain = \"安全生产\"\n";
    let short = with(
        fixture_record("penalty_person"),
        "/display_until",
        json!("2025-05-15"),
    );
    let (code, _, err) = map_records("penalty", &[short], Some(config));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("\tCF_GSJZQ\tdisplay_too_short\t"), "{err}");
    assert!(err.contains("安全生产") && err.contains("12 个月"), "{err}");

    // a decision of 2019 fell under the rules of its time: its display period is not judged by today's minimum
    let old = with(
        with(
            fixture_record("penalty_person"),
            "/decided_on",
            json!("2019-10-10"),
        ),
        "/display_until",
        json!("2020-04-10"),
    );
    let (code, xml, err) = map_records("penalty", &[old], Some(config));
    assert_eq!(code, Some(0), "{err}");
    assert!(xml.contains("<CF_GSJZQ>2020/04/10</CF_GSJZQ>"), "{xml}");
}

#[test]
fn a_birth_date_after_the_decision_date_is_a_finding() {
    use serde_json::json;
    // born 2025-01-01, a permit decided 2024-03-01
    let unborn = "410302202501011527";
    let rec = with(
        fixture_record("permit_person"),
        "/party/id_no",
        json!(unborn),
    );
    let (code, xml, err) = map_records("permit", &[rec], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(xml.is_empty(), "{xml}");
    assert!(err.contains("\tXK_XDR_ZJHM\tid_format\t"), "{err}");
    assert!(err.contains("出生日期晚于决定日期"), "{err}");
    assert!(
        !err.contains("20250101"),
        "not the birth date either, the part of the number that masks hide: {err}"
    );
    assert!(
        !err.contains(unborn),
        "no full ID number in a finding: {err}"
    );
    // the same for a legal representative
    let rec = with(
        fixture_record("permit_org"),
        "/party/legal_rep/id_no",
        json!(unborn),
    );
    let (code, _, err) = map_records("permit", &[rec], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("\tXK_FR_ZJHM\tid_format\t"), "{err}");
}

#[test]
fn a_penalty_on_a_minor_is_not_published() {
    use serde_json::json;
    // decided 2024-05-16: born 2006-05-16 has the 18th birthday that day and is still a minor (周岁 count from
    // the day after the birthday); born 2006-05-15 is 18 周岁 that day
    let minor = "410502200605165610";
    let adult = "410502200605155615";
    let rec = with(
        fixture_record("penalty_person"),
        "/party/id_no",
        json!(minor),
    );
    let (code, xml, err) = map_records("penalty", &[rec], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(xml.is_empty(), "{xml}");
    assert!(err.contains("\tCF_XDR_ZJHM\tpenalty_minor\t"), "{err}");
    assert!(err.contains("未成年人"), "{err}");
    assert!(err.contains("minor"), "{err}");
    assert!(
        !err.contains(minor),
        "no full ID number in a finding: {err}"
    );

    let rec = with(
        fixture_record("penalty_person"),
        "/party/id_no",
        json!(adult),
    );
    let (code, _, err) = map_records("penalty", &[rec], None);
    assert_eq!(
        code,
        Some(0),
        "18 周岁 on the decision date is an adult: {err}"
    );

    // the same number under another ID type, or a 户口簿 or 居住证 number (a valid 公民身份号码): still a minor
    for id_type in ["PASSPORT", "OTHER:户口簿", "OTHER:港澳居民居住证"] {
        let rec = with(
            with(
                fixture_record("penalty_person"),
                "/party/id_no",
                json!(minor),
            ),
            "/party/id_type",
            json!(id_type),
        );
        let (code, xml, err) = map_records("penalty", &[rec], None);
        assert_eq!(code, Some(1), "{id_type}: {err}");
        assert!(xml.is_empty(), "{id_type}: {xml}");
        assert!(
            err.contains("\tCF_XDR_ZJHM\tpenalty_minor\t"),
            "{id_type}: {err}"
        );
        let rec = with(
            with(
                fixture_record("penalty_person"),
                "/party/id_no",
                json!(adult),
            ),
            "/party/id_type",
            json!(id_type),
        );
        let (code, _, err) = map_records("penalty", &[rec], None);
        assert_eq!(code, Some(0), "{id_type}, an adult: {err}");
    }
    // a passport number is no ID number: nothing to judge
    let rec = with(
        with(
            fixture_record("penalty_person"),
            "/party/id_no",
            json!("E12345678"),
        ),
        "/party/id_type",
        json!("PASSPORT"),
    );
    let (code, _, err) = map_records("penalty", &[rec], None);
    assert_eq!(code, Some(0), "{err}");

    // a permit on a minor is not affected
    let rec = with(
        with(
            fixture_record("permit_person"),
            "/party/id_no",
            json!(minor),
        ),
        "/decided_on",
        json!("2024-05-16"),
    );
    let (code, _, err) = map_records("permit", &[rec], None);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn a_named_other_permit_category_is_sent_as_other_dash_name() {
    use serde_json::json;
    let rec = with(
        fixture_record("permit_org"),
        "/category",
        json!("OTHER:备案"),
    );
    let (code, xml, err) = map_records("permit", &[rec], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(xml.contains("<XK_XKLB>其他-备案</XK_XKLB>"), "{xml}");
    let rec = with(fixture_record("permit_org"), "/category", json!("OTHER:"));
    let (code, _, err) = map_records("permit", &[rec], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("\tXK_XKLB\tcode_unknown\t"), "{err}");
}

#[test]
fn a_bare_other_permit_category_is_a_finding() {
    use serde_json::json;
    let rec = with(fixture_record("permit_org"), "/category", json!("P06"));
    let (code, xml, err) = map_records("permit", &[rec], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(xml.is_empty(), "{xml}");
    assert!(err.contains("\tXK_XKLB\tother_unnamed\t"), "{err}");
    assert!(err.contains("具体"), "{err}");
}

#[test]
fn an_id_number_in_a_field_the_platform_shows_as_it_is_is_a_finding() {
    use serde_json::json;
    let id = "410105198001011239";
    let full_width = "４１０１０５１９８００１０１１２３９";
    for (pointer, value) in [
        (
            "/facts",
            format!("当事人陈志强（公民身份号码{id}）于2024年4月12日……"),
        ),
        ("/party/name", format!("陈志强（身份证{full_width}）")),
    ] {
        let rec = with(fixture_record("penalty_person"), pointer, json!(value));
        let (code, xml, err) = map_records("penalty", &[rec], None);
        assert_eq!(code, Some(1), "{pointer}: {err}");
        assert!(xml.is_empty(), "{pointer}: {xml}");
        assert!(err.contains("\tid_in_text\t"), "{pointer}: {err}");
        assert!(err.contains("410105********1239"), "{pointer}: {err}");
        assert!(!err.contains(id), "no full ID number in a finding: {err}");
    }
    // nor in a number that names the record or its certificate: an all-digit 施工许可证 number (area, date,
    // sequence) may pass an ID number's check, and no one can reword it
    let rec = with(
        with(
            fixture_record("permit_org"),
            "/permit_no",
            json!("410105202403010019"),
        ),
        "/doc_no",
        json!("410105202403010019"),
    );
    let (code, _, err) = map_records("permit", &[rec], None);
    assert_eq!(code, Some(0), "{err}");
    // the number where it belongs is no finding, nor is a number that only looks like one
    let rec = with(fixture_record("penalty_person"), "/party/id_no", json!(id));
    let (code, _, err) = map_records("penalty", &[rec], None);
    assert_eq!(code, Some(0), "{err}");
    let rec = with(
        fixture_record("penalty_person"),
        "/facts",
        json!("罚款 410105198001011238 元（校验位不对，不是身份证号码）"),
    );
    let (code, _, err) = map_records("penalty", &[rec], None);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn every_field_has_a_length_limit_even_a_named_other_code() {
    use serde_json::json;
    // `OTHER:<name>` carries the source's text through to 证件类型 / 许可类别; a field without a limit of its own
    // gets the standard's longest (2000), so no record can outgrow the platform's message limit.
    let long = "证".repeat(3000);
    for (kind, fixture, pointer, field) in [
        ("penalty", "penalty_person", "/party/id_type", "CF_XDR_ZJLX"),
        ("permit", "permit_org", "/category", "XK_XKLB"),
        (
            "permit",
            "permit_org",
            "/party/legal_rep/id_type",
            "XK_FR_ZJLX",
        ),
    ] {
        let rec = with(
            fixture_record(fixture),
            pointer,
            json!(format!("OTHER:{long}")),
        );
        let (code, xml, err) = map_records(kind, &[rec], None);
        assert_eq!(code, Some(1), "{field}: {err}");
        assert!(xml.is_empty(), "{field}");
        assert!(
            err.contains(&format!("\t{field}\ttoo_long\t")),
            "{field}: {err}"
        );
    }
    // a finding quotes the start of a long value, not all of it (it is kept in quarantine and reports)
    let rec = with(
        fixture_record("penalty_person"),
        "/fine_yuan",
        json!("1".repeat(2500)),
    );
    let (code, _, err) = map_records("penalty", &[rec], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("\tCF_NR_FK\tamount_invalid\t"), "{err}");
    assert!(err.contains("2500 characters") && err.len() < 1000, "{err}");
}

/// A `[mapping] dir` holding only the files it changes: the others are the built-in ones. A directory with only
/// `codes.toml` made every command exit 2 ("cannot read mapping file …/permit.toml", three times over).
#[test]
fn a_mapping_dir_with_only_codes_toml_uses_it_with_the_built_in_mapping_files() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let codes =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/codes.toml"))
            .unwrap();
    let ours = codes.replacen("P06 = \"其他\"", "P06 = \"其他-危险化学品登记\"", 1);
    assert_ne!(ours, codes);
    std::fs::write(m.join("codes.toml"), ours).unwrap();
    std::fs::write(
        dir.path().join("dualpub.toml"),
        "[mapping]\ndir = \"m\"\n[log]\nlevel = \"info\"\n",
    )
    .unwrap();
    let rec = with(fixture_record("permit_org"), "/category", json!("P06"));
    let out = dualpub(
        &["map", "--kind", "permit"],
        &serde_json::to_vec(&[rec]).unwrap(),
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let xml = String::from_utf8(out.stdout).unwrap();
    assert!(
        xml.contains("<XK_XKLB>其他-危险化学品登记</XK_XKLB>"),
        "{xml}"
    );
    // the built-in permit.toml writes dates with slashes
    assert!(xml.contains("<XK_JDRQ>2024/03/01</XK_JDRQ>"), "{xml}");
    assert!(
        err.contains(
            "from the directory: codes.toml; built in: permit.toml, penalty.toml, calendar.toml"
        ),
        "{err}"
    );
}

/// A settings file saved as GBK (an editor on a Chinese Windows): exit 2 naming the file, and saying to save it as
/// UTF-8 — the message said only "stream did not contain valid UTF-8". (`calendar.toml`: its unit test.)
#[test]
fn a_settings_file_that_is_not_utf8_says_to_save_it_as_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    // 罚款 in GBK
    let gbk: &[u8] = &[0xB7, 0xA3, 0xBF, 0xEE];
    let mut codes = b"[penalty_category]\nC02 = \"".to_vec();
    codes.extend_from_slice(gbk);
    codes.extend_from_slice(b"\"\n");
    std::fs::write(m.join("codes.toml"), &codes).unwrap();
    let mut config = b"# ".to_vec();
    config.extend_from_slice(gbk);
    config.extend_from_slice(b"\n[mapping]\ndir = \"m\"\n");
    // the configuration first, then (it mended) the code table
    for (config, named) in [
        (config, "dualpub.toml"),
        (b"[mapping]\ndir = \"m\"\n".to_vec(), "codes.toml"),
    ] {
        std::fs::write(dir.path().join("dualpub.toml"), config).unwrap();
        let out = dualpub(&["map", "--kind", "penalty"], b"[]", dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(named) && err.contains("save it as UTF-8"),
            "{err}"
        );
    }
}

/// A `[mapping] dir` that is not there, or empty, is named once with its key; a file of it that cannot be read is
/// named once (it was three times, the cause twice more).
#[test]
fn a_mapping_dir_that_cannot_be_used_is_named_once() {
    let dir = tempfile::tempdir().unwrap();
    for (setting, says) in [
        (
            "nowhere",
            "[mapping] dir: the directory nowhere does not exist; ",
        ),
        ("", "[mapping] dir: is empty; "),
    ] {
        std::fs::write(
            dir.path().join("dualpub.toml"),
            format!("[mapping]\ndir = \"{setting}\"\n"),
        )
        .unwrap();
        let out = dualpub(&["map", "--kind", "permit"], b"[]", dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(says), "{err}");
        assert_eq!(err.matches("[mapping] dir").count(), 1, "{err}");
        assert!(err.contains("or remove the key"), "{err}");
    }
    let m = dir.path().join("m");
    std::fs::create_dir_all(m.join("permit.toml")).unwrap();
    std::fs::write(dir.path().join("dualpub.toml"), "[mapping]\ndir = \"m\"\n").unwrap();
    let out = dualpub(&["map", "--kind", "permit"], b"[]", dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.matches("m/permit.toml").count(), 1, "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");
    assert!(err.contains("[mapping] dir"), "{err}");
}

/// Reported: a `[mapping] dir` that was empty, or held only a misnamed copy (`permits.toml`), was accepted with
/// exit 0 and an info line nobody sees at the default level — every mapping the built-in one while the operator
/// took their edit to be in force. Such a directory is exit 2 naming the key and the files it may hold; hidden
/// files and editors' backups do not count.
#[test]
fn a_mapping_dir_holding_none_of_its_files_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let expected = "(permit.toml, penalty.toml, codes.toml, calendar.toml)";
    let m_env = m.to_str().unwrap().to_string();
    let fail = |vars: &[(&str, &str)], says: &[&str]| {
        let out = dualpub_with(
            &["map", "--kind", "permit"],
            &fixture_records("permit_org"),
            dir.path(),
            vars,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(out.stdout.is_empty(), "nothing mapped: {err}");
        assert!(
            err.contains(expected) && err.contains("or remove the key"),
            "{err}"
        );
        for s in says {
            assert!(err.contains(s), "{s}: {err}");
        }
    };
    // empty, named by the environment (no config file) or by the file
    let by_env = [("DUALPUB_MAPPING_DIR", m_env.as_str())];
    fail(
        &by_env,
        &[
            "environment variable DUALPUB_MAPPING_DIR (sets [mapping] dir)",
            "), but is empty; ",
        ],
    );
    std::fs::write(dir.path().join("dualpub.toml"), "[mapping]\ndir = \"m\"\n").unwrap();
    fail(
        &[],
        &[
            "line 2: [mapping] dir: the directory m ",
            "), but is empty; ",
        ],
    );
    // only hidden files and editors' backups
    for f in [
        ".permit.toml.swp",
        "permit.toml~",
        "#permit.toml#",
        "codes.toml.bak",
    ] {
        std::fs::write(m.join(f), "x = 1\n").unwrap();
    }
    fail(
        &[],
        &["), but holds only hidden files and editors' backups (#permit.toml#, .permit.toml.swp, \
           codes.toml.bak, permit.toml~); "],
    );
    // a misnamed copy, and a file that is no mapping at all: named, with the name it was likely meant to have
    std::fs::write(m.join("permits.toml"), "x = 1\n").unwrap();
    std::fs::write(m.join("notes.txt"), "changed P06\n").unwrap();
    fail(
        &by_env,
        &["holds none of them, only notes.txt, permits.toml (meant as permit.toml?)"],
    );
}

/// A `[mapping] dir` that holds one of its files and others besides: the others are not read, so a warning names
/// them (at the default level), with the file each was likely meant to be; hidden files, editors' backups and the
/// code-table files its mappings name are not warned about.
#[test]
fn files_a_mapping_dir_does_not_read_are_named_in_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    std::fs::copy(builtin.join("codes.toml"), m.join("codes.toml")).unwrap();
    for f in [
        "penalties.toml",
        "Calendar.toml",
        "README.txt",
        "codes.toml~",
        ".codes.toml.swp",
    ] {
        std::fs::write(m.join(f), "x = 1\n").unwrap();
    }
    std::fs::create_dir(m.join("mappings")).unwrap();
    std::fs::write(dir.path().join("dualpub.toml"), "[mapping]\ndir = \"m\"\n").unwrap();
    let out = dualpub(
        &["map", "--kind", "permit"],
        &fixture_records("permit_org"),
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("WARN")
            && err.contains(
                "[mapping] dir: not read, so not in force: Calendar.toml (meant as calendar.toml?), README.txt, \
                 mappings/, penalties.toml (meant as penalty.toml?); dualpub reads there only permit.toml, \
                 penalty.toml, codes.toml, calendar.toml and the code-table files its mappings name"
            ),
        "{err}"
    );
    assert!(
        !err.contains("codes.toml~") && !err.contains(".swp"),
        "{err}"
    );
    assert_eq!(err.matches("WARN").count(), 1, "{err}");

    // A link to a file that is not there (a copy moved away): not taken for a file the directory lacks.
    std::os::unix::fs::symlink(dir.path().join("moved-away.toml"), m.join("permit.toml")).unwrap();
    let out = dualpub(&["map", "--kind", "permit"], b"[]", dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 2: [mapping] dir: cannot use m/permit.toml: No such file or directory"),
        "{err}"
    );

    // The 2016 field set: permit.toml and penalty.toml name codes2016.toml, which is read, so nothing to warn about.
    let set2016 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mapping2016");
    let out = dualpub_with(
        &["map", "--kind", "permit"],
        &fixture_records("permit_org"),
        dir.path(),
        &[("DUALPUB_MAPPING_DIR", set2016.to_str().unwrap())],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(1),
        "{err}"
    );
    assert!(!err.contains("not read"), "{err}");
}

/// Reported: a record with a lone surrogate ("\ud800") was refused with the parser's "unexpected end of hex
/// escape", and two records with an empty id were mapped as if the id told them apart.
#[test]
fn a_lone_surrogate_and_an_empty_id_are_named_in_the_findings() {
    let dir = tempfile::tempdir().unwrap();
    let rec = fixture_record("permit_org");
    let line = |r: &serde_json::Value| serde_json::to_string(r).unwrap();
    let surrogate =
        line(&with(rec.clone(), "/content", "检查@@发现".into())).replace("@@", r"\ud800");
    let blank = line(&with(rec.clone(), "/id", " ".into()));
    let input = format!("{}\n{surrogate}\n{blank}\n", line(&rec));
    let out = dualpub(&["map", "--kind", "permit"], input.as_bytes(), dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("#2\t(record)\tsource_schema\t")
            && err.contains(r"the escape \ud800, a lone surrogate"),
        "{err}"
    );
    assert!(
        err.contains("#3\t(record)\tsource_schema\t") && err.contains("`id` is empty"),
        "{err}"
    );
    assert!(
        err.contains("3 permit record(s): 1 valid, 2 invalid"),
        "{err}"
    );
    // alone, or pretty-printed, it is still one record with a finding, not input that is not JSON (exit 2)
    let pretty = serde_json::to_string_pretty(&with(rec.clone(), "/content", "检查@@发现".into()))
        .unwrap()
        .replace("@@", r"\ud800");
    for input in [surrogate, pretty] {
        let out = dualpub(&["map", "--kind", "permit"], input.as_bytes(), dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("a lone surrogate"), "{err}");
        assert!(
            err.contains("1 permit record(s): 0 valid, 1 invalid"),
            "{err}"
        );
    }
}

/// Reported: one pretty-printed record (as `quarantine show` prints one) or a fixture file of this repository
/// was read as JSON lines: dozens of bogus records, each with a parser message about a fragment, exit 1.
#[test]
fn a_pretty_printed_record_or_a_fixture_file_is_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let rec = fixture_record("penalty_person");
    let pretty = serde_json::to_vec_pretty(&rec).unwrap();
    let out = dualpub(&["map", "--kind", "penalty"], &pretty, dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "{err}"
    );
    // a file of fixtures/cases: the records it wraps
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cases/finding_key_reused.json");
    let out = dualpub(
        &["map", "--kind", "permit", fixture.to_str().unwrap()],
        b"",
        dir.path(),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("\tkey_reused\t"), "{err}");
    assert!(
        err.contains("2 permit record(s): 1 valid, 1 invalid"),
        "{err}"
    );
}

/// The record's own ID numbers (the party's, the legal representative's) are found in the text the platform shows
/// as it is even when written with a wrong or missing check character, or inside a longer number: the first 17
/// digits name the person whatever the 18th is. (Only valid 18-character numbers were found, so the party's number
/// quoted with its `X` written as `0` was published.) A number of someone else with a wrong check character is still
/// no finding (see the test above).
#[test]
fn the_records_own_id_number_is_found_in_text_whatever_its_check_character() {
    use serde_json::json;
    let person = fixture_record("penalty_person");
    let own = person["party"]["id_no"].as_str().unwrap().to_string();
    assert_eq!(own.len(), 18);
    let first17 = &own[..17];
    for (pointer, value) in [
        ("/facts", format!("当事人陈志强（身份证号{first17}0）……")),
        ("/remarks", format!("证件号码：{first17}")),
        (
            "/content",
            format!("没收其特种作业操作证（编号T{first17}X01）"),
        ),
    ] {
        let rec = with(person.clone(), pointer, json!(value));
        let (code, xml, err) = map_records("penalty", &[rec], None);
        assert_eq!(code, Some(1), "{pointer}: {err}");
        assert!(xml.is_empty(), "{pointer}: {xml}");
        assert!(err.contains("\tid_in_text\t"), "{pointer}: {err}");
        assert!(
            !err.contains(first17),
            "no full ID number in a finding: {err}"
        );
    }
    // the legal representative's, in an organisation's record
    let org = fixture_record("penalty_fine_confiscation");
    let rep = org["party"]["legal_rep"]["id_no"]
        .as_str()
        .unwrap()
        .to_string();
    let rec = with(
        org,
        "/facts",
        json!(format!("法定代表人王建国（{}）", &rep[..17])),
    );
    let (code, _, err) = map_records("penalty", &[rec], None);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("\tCF_SY\tid_in_text\t"), "{err}");
}

/// A slip in a code table or in a rule's category names used to load without a word: a code-table value that is not
/// one of the standard's (a typo, a space around it) was sent to the platform as it was — and a party category the
/// rules do not know dropped every rule of the category (the credit code of an organisation was left out) — a code
/// with a space around it put every record with it in quarantine, and a misspelt category in `required_for` made a
/// required field optional, a `join` other than `;` put every penalty of several categories in quarantine; a `[tables.NAME]` in a mapping file named as a table of `codes.toml` replaced it
/// whole. Each is now a broken mapping file (exit 2) naming the file, the line and the slip.
#[test]
fn a_slip_in_a_code_table_or_a_rules_category_names_is_a_broken_mapping_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    let read = |name: &str| std::fs::read_to_string(root.join(name)).unwrap();
    let cases: &[(&str, &str, &str, &str, &str)] = &[
        (
            "codes.toml",
            "org = \"法人及非法人组织\"",
            "org = \"法人及非法人组识\"",
            "codes.toml:10: code table [party_category]: code `org` maps to `法人及非法人组识`, which is not a value of the national code table of XK_XDR_LB",
            "permit",
        ),
        (
            "codes.toml",
            "org = \"法人及非法人组织\"",
            "org = \"法人及非法人组织 \"",
            "codes.toml:10: code table [party_category]: code `org` maps to `法人及非法人组织 `, with a space around it",
            "permit",
        ),
        (
            "codes.toml",
            "C02 = \"罚款\"",
            "C02 = \"罚金\"",
            "codes.toml:35: code table [penalty_type]: code `C02` maps to `罚金`, which is not a value of the national code table of CF_CFLB",
            "penalty",
        ),
        (
            "codes.toml",
            "\"OTHER:*\" = \"其他-*\"          #",
            "\"OTHER:*\" = \"其它-*\"          #",
            "codes.toml:31: code table [permit_category]: code `OTHER:*` maps to `其它-*`",
            "permit",
        ),
        (
            "codes.toml",
            "P04 = ",
            "\"P04 \" = ",
            "codes.toml:26: code table [permit_category]: code `P04 ` has a space around it",
            "permit",
        ),
        (
            "permit.toml",
            "required_for = [\"法人及非法人组织\", \"个体工商户\"]",
            "required_for = [\"法人及非法人组识\", \"个体工商户\"]",
            "permit.toml:24: field XK_XDR_SHXYM: required_for names `法人及非法人组识`, which code table [party_category] of the category field cannot give",
            "permit",
        ),
        (
            "penalty.toml",
            "contains_any = [\"罚款\"]",
            "contains_any = [\"罚金\"]",
            "field CF_NR_FK: required_if tests CF_CFLB for `罚金`, which its code table [penalty_type] cannot give",
            "penalty",
        ),
        (
            "penalty.toml",
            "join = \";\"",
            "join = \"；\"",
            "penalty.toml:132: field CF_CFLB: join = \"；\": lists are joined with \";\"",
            "penalty",
        ),
        (
            // a table of codes.toml's name in a mapping file replaced it whole: P01–P03, P05, P06 unknown
            "permit.toml",
            "from = \"remarks\"\nmax_len = 1000",
            "from = \"remarks\"\nmax_len = 1000\n\n[tables.permit_category]\nP04 = \"核准\"",
            "permit.toml:207: code table [permit_category] is already in",
            "permit",
        ),
    ];
    for (file, from, to, said, kind) in cases {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::create_dir(&m).unwrap();
        for name in ["permit.toml", "penalty.toml", "codes.toml"] {
            std::fs::write(m.join(name), read(name)).unwrap();
        }
        let text = read(file);
        let broken = text.replacen(from, to, 1);
        assert_ne!(broken, text, "{file}: `{from}` is in it");
        std::fs::write(m.join(file), broken).unwrap();
        std::fs::write(dir.path().join("dualpub.toml"), "[mapping]\ndir = \"m\"\n").unwrap();
        let fixture = if *kind == "permit" {
            "permit_org"
        } else {
            "penalty_fine_confiscation"
        };
        let out = dualpub(
            &["map", "--kind", kind],
            &fixture_records(fixture),
            dir.path(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {to}: {err}");
        assert!(err.contains(said), "{file}: {to}: {err}");
        assert!(out.stdout.is_empty(), "{file}: {to}: nothing is mapped");
    }
}

/// A wrong top-level key of a mapping file is named at its own line (it was always line 1).
#[test]
fn a_wrong_top_level_key_of_a_mapping_file_is_named_at_its_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
    for (file, from, to, said) in [
        (
            "permit.toml",
            "date_format = \"YYYY/MM/DD\"",
            "date_format = \"YYYY.MM.DD\"",
            "permit.toml:5: date_format = \"YYYY.MM.DD\": expected",
        ),
        (
            "penalty.toml",
            "key_field = \"CF_WSH\"",
            "key_field = \"CF_WHS\"",
            "penalty.toml:6: key_field = \"CF_WHS\" is not a field of this mapping",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::create_dir(&m).unwrap();
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let broken = text.replacen(from, to, 1);
        assert_ne!(broken, text);
        std::fs::write(m.join(file), broken).unwrap();
        std::fs::write(dir.path().join("dualpub.toml"), "[mapping]\ndir = \"m\"\n").unwrap();
        let out = dualpub(
            &["map", "--kind", "permit"],
            &fixture_records("permit_org"),
            dir.path(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(said), "{err}");
    }
}
