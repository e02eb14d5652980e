//! Tests as data: every `fixtures/cases/*.json` is mapped with the built-in mappings and compared with its
//! `.out` golden file (XML of the valid records, then every finding). The fixture's `expect` list names the
//! finding codes it must produce — exactly those, so a fixture per code proves each rule fires on its own.
//! Regenerate the golden files after an intended change with `UPDATE_GOLDEN=1 cargo test --test golden`, and
//! read the diff.

use dualpub::findings::FindingCode;
use dualpub::map_input::{map_input, render_findings, render_xml};
use dualpub::mapping::{DisplayPolicy, Domain, MappingContext, MappingSet};
use dualpub::model::Kind;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cases")
}

fn context(case: &serde_json::Value) -> MappingContext {
    let ag = &case["agency"];
    let s = |k: &str| ag.get(k).and_then(|v| v.as_str()).map(str::to_string);
    MappingContext {
        agency_name: s("name"),
        agency_credit_code: s("credit_code"),
        display: DisplayPolicy::for_domain(
            s("domain")
                .map(|d| Domain::parse(&d).unwrap_or_else(|| panic!("fixture domain `{d}`")))
                .unwrap_or_default(),
            None,
        ),
        today: None,
    }
}

#[test]
fn golden_cases() {
    let mappings = MappingSet::builtin();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let mut covered: BTreeSet<&'static str> = BTreeSet::new();
    let mut n = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("fixtures/cases exists")
        .map(|e| e.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for path in files {
        n += 1;
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let case: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let kind = Kind::parse(case["kind"].as_str().unwrap()).unwrap();
        let input = serde_json::to_vec(&case["records"]).unwrap();
        let items =
            map_input(kind, &mappings, &context(&case), &input).expect("input is a JSON array");
        let mut rendered = String::from_utf8(render_xml(&items)).unwrap();
        rendered.push_str(&render_findings(&items));

        let expected_codes: BTreeSet<String> = case["expect"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        let got_codes: BTreeSet<String> = items
            .iter()
            .flat_map(|i| i.findings.iter().map(|f| f.code.as_str().to_string()))
            .collect();
        if expected_codes != got_codes {
            failures.push(format!(
                "{name}: expected finding codes {expected_codes:?}, got {got_codes:?}\n{rendered}"
            ));
        }
        for c in &got_codes {
            if let Some(code) = FindingCode::parse(c) {
                if expected_codes.len() == 1 && name == format!("finding_{c}") {
                    covered.insert(code.as_str());
                }
            }
        }
        if expected_codes.is_empty() && items.iter().any(|i| !i.is_valid()) {
            failures.push(format!(
                "{name}: a story fixture has invalid records\n{rendered}"
            ));
        }

        let golden = path.with_extension("out");
        if update {
            std::fs::write(&golden, &rendered).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == rendered => {}
            Ok(want) => failures.push(format!(
                "{name}: output differs from {}\n--- want\n{want}\n--- got\n{rendered}",
                golden.display()
            )),
            Err(_) => failures.push(format!(
                "{name}: no golden file {}; run with UPDATE_GOLDEN=1",
                golden.display()
            )),
        }
    }
    let missing: Vec<&str> = FindingCode::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !covered.contains(c))
        .collect();
    if !missing.is_empty() {
        failures.push(format!("finding codes without their own fixture (fixtures/cases/finding_CODE.json): {missing:?}"));
    }
    assert!(n >= 20, "only {n} fixtures found");
    assert!(
        failures.is_empty(),
        "{} golden failures:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The 2016 field set is another mapping file and no code (reference §1.3).
#[test]
fn mapping_2016_needs_no_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mapping2016");
    let set = MappingSet::load_dir(&dir).expect("the 2016 mapping loads");
    let ctx = MappingContext::default();
    let case: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cases_dir().join("permit_revoked.json")).unwrap())
            .unwrap();
    let items = map_input(
        Kind::Permit,
        &set,
        &ctx,
        &serde_json::to_vec(&case["records"]).unwrap(),
    )
    .unwrap();
    let m = items[0].mapped.as_ref().unwrap();
    assert!(items[0].findings.is_empty(), "{:?}", items[0].findings);
    let r = &m.record;
    assert_eq!(r.get("XK_XDR"), Some("河南豫东化工有限公司"));
    assert_eq!(
        r.get("XK_ZT"),
        Some("1"),
        "revoked is 1 撤销 in the 2016 status table"
    );
    assert_eq!(
        r.get("XK_JDRQ"),
        Some("2023-06-01"),
        "the 2016 mapping writes YYYY-MM-DD"
    );
    assert_eq!(r.get("XK_JZQ"), Some("2026-05-31"));
    assert_eq!(r.get("XK_XMMC"), Some("危险化学品经营许可证"));
    assert_eq!(r.get("XK_SPLB"), Some("核准"));
    assert_eq!(r.get("DFBM"), Some("410000"));
    assert_eq!(r.get("SJC"), Some("2024-03-05 10:22:31"));
    assert_eq!(
        r.get("XK_XDR_LB"),
        None,
        "no field of the current set leaks into the 2016 one"
    );

    let pen: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cases_dir().join("penalty_multi_category.json")).unwrap(),
    )
    .unwrap();
    let items = map_input(
        Kind::Penalty,
        &set,
        &ctx,
        &serde_json::to_vec(&pen["records"]).unwrap(),
    )
    .unwrap();
    assert!(items[0].findings.is_empty(), "{:?}", items[0].findings);
    let r = &items[0].mapped.as_ref().unwrap().record;
    assert_eq!(
        r.get("CF_CFLB1"),
        Some("警告;罚款;暂扣或者吊销许可证、暂扣或者吊销执照")
    );
    assert_eq!(r.get("CF_ZT"), Some("0"));
    // and its rules are its own: a bad ID number in XK_XDR_SFZ is still caught.
    let bad = br#"[{"id":"x","doc_no":"D","cert_name":"c","category":"P01","content":"c","decided_on":"2024-01-01",
        "status":"active","authority":{"name":"a","credit_code":"11410000000012343F"},
        "party":{"kind":"person","name":"n","id_no":"410302199211011525"}}]"#;
    let items = map_input(Kind::Permit, &set, &ctx, bad).unwrap();
    let codes: Vec<&str> = items[0].findings.iter().map(|f| f.code.as_str()).collect();
    assert_eq!(codes, ["id_check"]);
}

/// A broken mapping file fails at load with the file, the line and what is wrong.
#[test]
fn broken_mapping_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/permit.toml"))
            .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/codes.toml"),
        dir.path().join("codes.toml"),
    )
    .unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/penalty.toml"),
        dir.path().join("penalty.toml"),
    )
    .unwrap();
    let cases = [
        (
            src.replacen("from = \"party.name\"", "from = \"party.nmae\"", 1),
            "unknown source path `party.nmae`",
        ),
        (
            src.replacen("table = \"party_category\"", "table = \"party_kinds\"", 1),
            "unknown code table `party_kinds`",
        ),
        (
            src.replacen("check = \"uscc\"", "check = \"usc\"", 1),
            "check = \"usc\"",
        ),
        (
            src.replacen("max_len = 200", "max_len = \"200\"", 1),
            "invalid type",
        ),
        (
            src.replacen("not_before = \"XK_YXQZ\"", "not_before = \"XK_YXQ\"", 1),
            "refers to `XK_YXQ`",
        ),
        (
            src.replacen(
                "[[field]]\nname = \"XK_XDR_MC\"",
                "[[field]]\nname = \"XK_XDR_MC\"\nbogus = 1",
                1,
            ),
            "unknown field `bogus`",
        ),
    ];
    for (text, want) in cases {
        assert_ne!(text, src, "the test's replacement must apply ({want})");
        let line = text
            .lines()
            .position(|l| {
                l.contains("nmae")
                    || l.contains("party_kinds")
                    || l.contains("\"usc\"")
                    || l.contains("\"200\"")
                    || l.contains("XK_YXQ\"")
                    || l.contains("bogus")
            })
            .unwrap()
            + 1;
        std::fs::write(dir.path().join("permit.toml"), &text).unwrap();
        let err = MappingSet::load_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("permit.toml:"), "{err}");
        assert!(err.contains(want), "{err} should say {want}");
        let got_line: usize = err
            .split("permit.toml:")
            .nth(1)
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        // the error points at the field's table or the offending line itself
        assert!(
            got_line <= line && line - got_line < 40,
            "{err}: line {got_line}, offending line {line}"
        );
    }
}
