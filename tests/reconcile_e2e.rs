//! `dualpub reconcile` and `report annual` end to end: every gap category made on purpose through the simulators'
//! admin endpoints and sync, found in JSON, CSV and xlsx; repair closes the repairable ones.

mod common;

use calamine::{Data, Reader};
use common::*;
use dualpub::reconcile::report::{OLDER_COPY_ACTION_EN, OLDER_COPY_ACTION_ZH};
use dualpub::sim::gen::GenConfig;
use dualpub::sim::platform::{Faults, PlatformSimConfig, StrictProfile};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

fn fixture(name: &str) -> serde_json::Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/cases")
        .join(format!("{name}.json"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    v["records"][0].clone()
}

/// A fixture record made unique: id, document number, decision date.
fn record(base: &str, kind: &str, id: &str, decided: &str) -> serde_json::Value {
    let mut r = fixture(base);
    r["id"] = id.into();
    r["kind"] = kind.into();
    r["doc_no"] = format!("测试〔2026〕{id}号").into();
    r["decided_on"] = decided.into();
    if kind == "permit" {
        r["valid_from"] = decided.into();
    }
    r["updated_at"] = serde_json::Value::Null;
    r
}

/// Both simulators, the source holding nothing until a test inserts its records.
async fn empty_env() -> Env {
    spawn(
        GenConfig {
            records: 0,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await
}

/// [`empty_env`] whose source holds one permit (the `permit_org` fixture as `id`, decided on `decided`).
async fn env_with_permit(id: &str, decided: &str) -> Env {
    let env = empty_env().await;
    env.source_insert(serde_json::json!([record(
        "permit_org",
        "permit",
        id,
        decided
    )]))
    .await;
    env
}

/// The platform loses a record (admin delete); the answer, for tests that check it.
async fn drop_from_platform(env: &Env, key: &str) -> reqwest::Response {
    env.http
        .delete(format!("{}/admin/records/{}", env.platform.url(), enc(key)))
        .send()
        .await
        .unwrap()
}

/// A penalty fixture made unique (see [`record`]) with its display end.
fn penalty(base: &str, id: &str, decided: &str, display_until: &str) -> serde_json::Value {
    let mut r = record(base, "penalty", id, decided);
    r["display_until"] = display_until.into();
    r
}

fn key(kind: &str, id: &str) -> String {
    let item = if kind == "permit" { "XZXK" } else { "XZCF" };
    format!("{item}:{}:测试〔2026〕{id}号", agency_code())
}

async fn set_published(env: &Env, key: &str, at: &str) {
    env.admin_post(
        format!("{}/admin/records/published_at", env.platform.url()),
        serde_json::json!({"key": key, "published_at": at}),
    )
    .await;
}

/// How many requests the source simulator has answered.
async fn source_requests(env: &Env) -> u64 {
    env.source_stats().await["requests"].as_u64().unwrap()
}

/// category → keys, from the JSON report.
fn categories_json(v: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in v["gaps"].as_array().unwrap() {
        m.entry(g["category"].as_str().unwrap().to_string())
            .or_default()
            .insert(g["key"].as_str().unwrap().to_string());
    }
    m
}

/// A `[mapping] dir` in the test's directory holding only `calendar.toml` with `text`.
fn mapping_dir_with_calendar(env: &Env, text: &str) -> std::path::PathBuf {
    let m = env.dir.path().join("m");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("calendar.toml"), text).unwrap();
    m
}

/// Made-up 2027 days off (not the official ones), so that a deadline shows the table was used: 7 working days
/// after 2026-12-28 is then 2027-01-11.
const MADE_UP_2027: &str =
    "[2027]\nholidays = [\"2027-01-01\", \"2027-01-04\", \"2027-01-05\"]\nworkdays = []\n";

/// The JSON report as of 2027-01-20 with `vars`, whose records are overdue (exit 1) and all have a deadline.
async fn overdue_on_2027_01_20(env: &Env, vars: &[(&str, &str)]) -> serde_json::Value {
    let out = env
        .dualpub_with(
            &["reconcile", "--today", "2027-01-20", "--format", "json"],
            vars,
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "overdue: {err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["notes"], serde_json::json!([]), "every deadline is known");
    v
}

/// The gap row of permit `id` in `category`, from the JSON report.
fn permit_gap(v: &serde_json::Value, id: &str, category: &str) -> serde_json::Value {
    v["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key("permit", id) && g["category"] == category)
        .unwrap_or_else(|| panic!("{id} is not {category}: {}", v["gaps"]))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_category_on_purpose_in_json_csv_and_xlsx() {
    let strict = StrictProfile {
        max_len: None,
        refused_parties: vec!["被拒收的公司".into()],
    };
    let env = spawn_with(
        GenConfig {
            records: 0,
            ..GenConfig::default()
        },
        PlatformSimConfig {
            strict: Some(strict),
            faults: Faults::default(),
            ..PlatformSimConfig::default()
        },
        "",
    )
    .await;
    let ok = record("permit_org", "permit", "A", "2026-11-02");
    let missing = record("permit_org", "permit", "B", "2026-11-20");
    let stale = record("permit_person", "permit", "C", "2026-11-20");
    let orphan = record("permit_org", "permit", "D", "2026-11-20");
    let late = record("penalty_fine_confiscation", "penalty", "F", "2026-10-12");
    // decided over a year before its display ends: the legal minimum for 安全生产 (display_too_short otherwise)
    let expired = penalty("penalty_multi_category", "G", "2025-10-13", "2026-11-20");
    let mut invalid = record("permit_org", "permit", "H", "2026-11-20");
    invalid["party"]["credit_code"] = "914101004157892343".into();
    let mut rejected = record("permit_org", "permit", "I", "2026-11-20");
    rejected["party"]["name"] = "被拒收的公司".into();
    env.source_insert(serde_json::json!([
        ok, missing, stale, orphan, late, expired, invalid, rejected
    ]))
    .await;
    let out = env.dualpub(&["sync", "--today", "2026-11-20"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // make the gaps
    for (k, at) in [
        (key("permit", "A"), "2026-11-05T10:00:00+08:00"),
        (key("permit", "C"), "2026-11-21T10:00:00+08:00"),
        (key("permit", "D"), "2026-11-21T10:00:00+08:00"),
        (key("penalty", "F"), "2026-10-30T10:00:00+08:00"),
        (key("penalty", "G"), "2025-10-14T10:00:00+08:00"),
    ] {
        set_published(&env, &k, at).await;
    }
    let r = drop_from_platform(&env, &key("permit", "B")).await;
    assert!(r.status().is_success());
    env.admin_post(
        format!("{}/admin/records/alter", env.platform.url()),
        serde_json::json!({"key": key("permit", "C"), "field": "XK_XDR_MC", "value": "李秀云"}),
    )
    .await;
    env.source_delete("D").await;
    // withheld: reaches the source after the last sync, decided long before its deadline passed
    env.source_insert(serde_json::json!([record(
        "permit_org",
        "permit",
        "E",
        "2026-10-09"
    )]))
    .await;

    let expected: BTreeMap<String, BTreeSet<String>> = [
        ("missing", vec![key("permit", "B"), key("permit", "E")]),
        ("stale", vec![key("permit", "C")]),
        ("orphan", vec![key("permit", "D")]),
        ("overdue", vec![key("permit", "E")]),
        ("late", vec![key("penalty", "F")]),
        ("expired", vec![key("penalty", "G")]),
        ("quarantined", vec![key("permit", "H")]),
        ("rejected", vec![key("permit", "I")]),
    ]
    .into_iter()
    .map(|(c, ks)| (c.to_string(), ks.into_iter().collect()))
    .collect();

    // JSON
    let out = env
        .dualpub(&["reconcile", "--today", "2026-11-27", "--format", "json"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        categories_json(&v),
        expected,
        "{}",
        serde_json::to_string_pretty(&v["gaps"]).unwrap()
    );
    let stale_row = v["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["category"] == "stale")
        .unwrap();
    assert!(
        stale_row["detail"].as_str().unwrap().contains("XK_XDR_MC"),
        "{stale_row}"
    );
    assert!(stale_row["party_id_masked"]
        .as_str()
        .unwrap()
        .contains("****"));
    assert!(
        !out.stdout.windows(18).any(|w| w == b"410302199211011524"),
        "no full ID number in the report"
    );

    // CSV
    let dir = env.dir.path().join("csv");
    let out = reconcile_to(&env, "csv", &dir).await;
    assert_eq!(out.status.code(), Some(1));
    let mut from_csv: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in expected.keys() {
        let text = std::fs::read_to_string(dir.join(format!("{c}.csv")))
            .unwrap_or_else(|_| panic!("{c}.csv"));
        for line in text.trim_start_matches('\u{feff}').lines().skip(1) {
            let k = line
                .split(',')
                .next()
                .unwrap()
                .trim_matches('"')
                .to_string();
            from_csv.entry(c.clone()).or_default().insert(k);
        }
    }
    assert_eq!(from_csv, expected);

    // xlsx, read back
    let xlsx = env.dir.path().join("r.xlsx");
    let out = reconcile_to(&env, "xlsx", &xlsx).await;
    assert_eq!(out.status.code(), Some(1));
    let mut wb: calamine::Xlsx<_> = calamine::open_workbook(&xlsx).unwrap();
    let zh = [
        ("missing", "缺失"),
        ("stale", "不一致"),
        ("orphan", "多余"),
        ("overdue", "逾期未公示"),
        ("late", "超期公示"),
        ("expired", "公示期满未撤下"),
        ("quarantined", "校验未通过"),
        ("rejected", "平台拒收"),
    ];
    let mut from_xlsx: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (c, sheet) in zh {
        let range = wb
            .worksheet_range(sheet)
            .unwrap_or_else(|e| panic!("sheet {sheet}: {e}"));
        let mut rows = range.rows();
        let header: Vec<String> = rows.next().unwrap().iter().map(|d| d.to_string()).collect();
        let col = header
            .iter()
            .position(|h| h == "记录键")
            .expect("a 记录键 column");
        for row in rows {
            if let Data::String(k) = &row[col] {
                from_xlsx
                    .entry(c.to_string())
                    .or_default()
                    .insert(k.clone());
            }
        }
    }
    assert_eq!(from_xlsx, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_then_sync_leaves_no_gaps() {
    let env = empty_env().await;
    // decided a year before its display ends, the legal minimum for 安全生产
    let expired = penalty("penalty_multi_category", "G", "2025-11-17", "2026-11-20");
    let recs = serde_json::json!([
        record("permit_org", "permit", "B", "2026-11-18"),
        record("permit_person", "permit", "C", "2026-11-18"),
        record("permit_org", "permit", "D", "2026-11-18"),
        expired,
    ]);
    env.source_insert(recs).await;
    let out = env.dualpub(&["sync", "--today", "2026-11-18"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for k in [key("permit", "B"), key("permit", "C"), key("permit", "D")] {
        set_published(&env, &k, "2026-11-20T09:00:00+08:00").await;
    }
    set_published(&env, &key("penalty", "G"), "2025-11-18T09:00:00+08:00").await;
    drop_from_platform(&env, &key("permit", "B")).await;
    env.admin_post(
        format!("{}/admin/records/alter", env.platform.url()),
        serde_json::json!({"key": key("permit", "C"), "field": "XK_NR", "value": "被改动"}),
    )
    .await;
    env.source_delete("D").await;

    let before = source_requests(&env).await;
    let out = env
        .dualpub(&["reconcile", "--today", "2026-11-27", "--format", "json"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let reading = source_requests(&env).await - before;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cats: BTreeSet<String> = categories_json(&v).into_keys().collect();
    assert_eq!(
        cats,
        ["expired", "missing", "orphan", "stale"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );

    // A chunk size that is not a number is refused before anything is read or pushed.
    let mut c = env.command(&["reconcile", "--today", "2026-11-27", "--repair"]);
    c.env("DUALPUB_REPAIR_CHUNK", "ten");
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DUALPUB_REPAIR_CHUNK=\"ten\""));

    // One record per chunk: the spooled records are read back and pushed in more than one go.
    let mut c = env.command(&[
        "reconcile",
        "--today",
        "2026-11-27",
        "--format",
        "json",
        "--repair",
        "--repair-orphans",
    ]);
    c.env("DUALPUB_REPAIR_CHUNK", "1");
    let before = source_requests(&env).await;
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    // The repair pushes the copies it has just read: no more feed requests than the report itself made.
    assert_eq!(source_requests(&env).await - before, reading);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["repair"]["repushed"],
        2,
        "{}\n{}",
        v["repair"],
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        v["repair"]["withdrawn"].as_u64().unwrap()
            + v["repair"]["orphans_withdrawn"].as_u64().unwrap(),
        2
    );
    // the re-pushed ones count as published today; pin the first publication so timeliness stays on time
    let (code, _, err) = env.sync(&[]).await;
    assert!(code == 0, "{err}");
    for k in [key("permit", "B"), key("permit", "C")] {
        set_published(&env, &k, "2026-11-20T09:00:00+08:00").await;
    }
    let (out, v) = env.reconcile_json("2026-11-27", &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        serde_json::to_string_pretty(&v["gaps"]).unwrap()
    );
    assert_eq!(v["gaps"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annual_report_matches_independent_counts() {
    let env = empty_env().await;
    // fixtures decided in 2024, and one in 2023 that must not count
    let mut recs = vec![
        record("permit_org", "permit", "P1", "2024-03-01"), // 核准 (P04)
        record("permit_person", "permit", "P2", "2024-05-06"), // 普通 (P01)
        record("permit_org", "permit", "P3", "2024-07-01"), // 核准
        record("penalty_fine_confiscation", "penalty", "C1", "2024-05-16"), // 罚款;没收违法所得 35000.50 / 12000 yuan
        record("penalty_multi_category", "penalty", "C2", "2024-06-03"), // 警告;罚款;吊销许可证件, 2000 yuan
        record("penalty_person", "penalty", "C3", "2024-08-01"),         // 罚款 5000 yuan
        record("permit_org", "permit", "P9", "2023-12-29"),
    ];
    for r in recs.iter_mut().filter(|r| r["kind"] == "penalty") {
        r["display_until"] = "2027-01-01".into();
    }
    // independent expectations, straight from the fixtures' source values and the code table
    let source_fines_yuan: f64 = recs
        .iter()
        .filter(|r| r["kind"] == "penalty")
        .filter_map(|r| r["fine_yuan"].as_str().map(|s| s.parse::<f64>().unwrap()))
        .sum();
    assert_eq!(source_fines_yuan, 35000.50 + 2000.0 + 5000.0);
    env.source_insert(serde_json::Value::Array(recs)).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let (code, v) = annual_json(&env, "2024").await;
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["year"], 2024);
    assert_eq!(v["permits"]["total"], 3, "{v}");
    assert_eq!(v["permits"]["by_category"]["核准"], 2);
    assert_eq!(v["permits"]["by_category"]["普通"], 1);
    assert_eq!(v["penalties"]["total"], 3);
    assert_eq!(v["penalties"]["by_category"]["罚款"], 3);
    assert_eq!(v["penalties"]["by_category"]["警告"], 1);
    assert_eq!(v["penalties"]["by_category"]["没收违法所得"], 1);
    assert_eq!(v["penalties"]["by_category"]["吊销许可证件"], 1);
    assert_eq!(
        v["penalties"]["fines_wan"],
        format!("{}", source_fines_yuan / 10000.0)
    );
    assert_eq!(v["penalties"]["confiscated_wan"], "1.2");
    // all published today, years after their deadlines: none on time
    assert_eq!(v["permits"]["on_time"], 0);
    assert_eq!(v["permits"]["due"], 3);
    let xlsx = env.dir.path().join("annual.xlsx");
    let out = env
        .dualpub(&[
            "report",
            "annual",
            "--year",
            "2024",
            "--format",
            "xlsx",
            "--out",
            xlsx.to_str().unwrap(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0));
    assert!(std::fs::metadata(&xlsx).unwrap().len() > 1000);
}

/// A penalty whose fine is not a valid amount (negative, "1,000", finer than 0.01 yuan) counts in the totals but
/// cannot be added: the fines figure was silently short. A note now says how many are left out (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annual_report_says_which_fines_it_could_not_add() {
    let env = empty_env().await;
    let mut recs = Vec::new();
    for (id, fine) in [
        ("G", "2000"),
        ("N", "-500"),
        ("M", "1,000"),
        ("S", "100.001"),
    ] {
        let mut r = record("penalty_multi_category", "penalty", id, "2024-06-03");
        r["fine_yuan"] = fine.into();
        r["display_until"] = "2027-01-01".into();
        recs.push(r);
    }
    env.source_insert(serde_json::Value::Array(recs)).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "three are quarantined: {err}");
    let (code, v) = annual_json(&env, "2024").await;
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["penalties"]["total"], 4, "{v}");
    assert_eq!(v["penalties"]["fines_wan"], "0.2", "{v}");
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("3 penalty record(s) are not in fines_wan")
            && notes.contains("not a valid amount"),
        "{notes}"
    );
}

/// Document numbers of different lengths (`…9号`, `…98号`, `…980号`) come out of the store's ledger buckets in
/// another order than the platform lists them; every one must still be matched with its ledger entry (the
/// 入库率 counts submitted and accepted from it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_entries_match_whatever_the_document_number_lengths() {
    let env = empty_env().await;
    let ids = ["9", "98", "980", "981", "99", "1", "10", "100"];
    let recs: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| record("permit_org", "permit", id, "2026-11-20"))
        .collect();
    env.source_insert(serde_json::json!(recs)).await;
    let out = env.dualpub(&["sync", "--today", "2026-11-20"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for id in ids {
        set_published(&env, &key("permit", id), "2026-11-20T09:00:00+08:00").await;
    }
    let (out, v) = env.reconcile_json("2026-11-27", &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", v["gaps"]);
    let permit = &v["rates"]["permit"];
    assert_eq!(permit["submitted"], ids.len(), "{permit}");
    assert_eq!(permit["accepted"], ids.len(), "{permit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_path_that_cannot_be_written_is_refused_before_any_repair() {
    let env = env_with_permit("B", "2026-11-20").await;
    let out = env.dualpub(&["sync", "--today", "2026-11-20"]).await;
    assert_eq!(out.status.code(), Some(0));
    // The platform loses the record: a repair would re-push it.
    drop_from_platform(&env, &key("permit", "B")).await;
    let missing_dir = env.dir.path().join("no-such-folder");
    let file_as_dir = env.dir.path().join("a-file");
    std::fs::write(&file_as_dir, "x").unwrap();
    for (format, out_path, why) in [
        ("json", missing_dir.join("r.json"), "does not exist"),
        ("xlsx", missing_dir.join("r.xlsx"), "does not exist"),
        ("json", env.dir.path().to_path_buf(), "is a folder"),
        ("csv", file_as_dir.clone(), "is a file"),
    ] {
        let out = env
            .dualpub(&[
                "reconcile",
                "--today",
                "2026-11-27",
                "--repair",
                "--format",
                format,
                "--out",
                out_path.to_str().unwrap(),
            ])
            .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{format} {out_path:?}: {err}");
        assert!(
            err.contains(out_path.to_str().unwrap()) && err.contains(why),
            "the message names the path and the problem: {err}"
        );
    }
    // A repair as of another date is refused too (it would withdraw penalties early, or publish expired ones
    // again); the report alone is not.
    for date in ["2031-01-01", "2026-11-20"] {
        let out = env
            .dualpub_live(&["reconcile", "--today", date, "--repair"])
            .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("without --repair"), "{err}");
    }
    let out = env
        .dualpub_live(&["reconcile", "--today", "2031-01-01"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "the what-if report finds the gap"
    );
    assert!(
        !env.platform_records()
            .await
            .contains_key(&key("permit", "B")),
        "nothing was repaired"
    );
    // With a good path the same repair runs and its report is written.
    let report = env.dir.path().join("r.json");
    let out = env
        .dualpub(&[
            "reconcile",
            "--today",
            "2026-11-27",
            "--repair",
            "--format",
            "json",
            "--out",
            report.to_str().unwrap(),
        ])
        .await;
    assert!(
        matches!(out.status.code(), Some(0) | Some(1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.exists());
    assert!(env
        .platform_records()
        .await
        .contains_key(&key("permit", "B")));
}

/// `cmd` run under umask 022 (the usual default, which leaves new files world-readable), whatever the umask of
/// the test process.
#[cfg(unix)]
fn under_umask_022(cmd: std::process::Command) -> std::process::Command {
    let mut c = std::process::Command::new("sh");
    c.arg("-c")
        .arg("umask 022 && exec \"$0\" \"$@\"")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c
}

/// Every report file `--out` writes (json, table, csv, xlsx, the annual report) holds party names and other
/// personal data: it is readable by its owner only (0600), also when it replaces an earlier report that others
/// could read; it was created with the umask (0644). Nothing else is left in the folder.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = env_with_permit("B", "2024-03-04").await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    drop_from_platform(&env, &key("permit", "B")).await;
    let dir = env.dir.path().join("reports");
    std::fs::create_dir(&dir).unwrap();
    let old = dir.join("old.json");
    std::fs::write(&old, "an earlier report").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out_of = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let runs: Vec<Vec<String>> = vec![
        vec![
            "reconcile".into(),
            "--format".into(),
            "json".into(),
            "--out".into(),
            out_of("old.json"),
        ],
        vec!["reconcile".into(), "--out".into(), out_of("table.txt")],
        vec![
            "reconcile".into(),
            "--format".into(),
            "csv".into(),
            "--out".into(),
            out_of("csv"),
        ],
        vec![
            "reconcile".into(),
            "--format".into(),
            "xlsx".into(),
            "--out".into(),
            out_of("r.xlsx"),
        ],
        vec![
            "report".into(),
            "annual".into(),
            "--year".into(),
            "2024".into(),
            "--out".into(),
            out_of("annual.txt"),
        ],
        vec![
            "report".into(),
            "annual".into(),
            "--year".into(),
            "2024".into(),
            "--format".into(),
            "xlsx".into(),
            "--out".into(),
            out_of("annual.xlsx"),
        ],
    ];
    for args in runs {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend(["--today", TODAY]);
        let c = under_umask_022(env.command(&args));
        let out = tokio::task::spawn_blocking(move || { c }.output().unwrap())
            .await
            .unwrap();
        assert!(
            matches!(out.status.code(), Some(0) | Some(1)),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else {
            files.push(p);
        }
    }
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "annual.txt",
            "annual.xlsx",
            "csv/missing.csv",
            "csv/months.csv",
            "csv/overdue.csv",
            "csv/summary.csv",
            "old.json",
            "r.xlsx",
            "table.txt"
        ],
        "every report, and nothing else"
    );
    for p in &files {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", p.display());
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&old).unwrap()).unwrap();
    assert_eq!(categories_json(&v)["missing"].len(), 1, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_the_platform_cuts_short_exits_3_and_still_reports() {
    let env = empty_env().await;
    let ids = ["B", "C", "E"];
    let recs: Vec<_> = ids
        .iter()
        .map(|id| record("permit_org", "permit", id, "2026-11-20"))
        .collect();
    env.source_insert(serde_json::Value::Array(recs)).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    // Two records the platform lost, and a batch an earlier run left in the outbox (its answer was lost).
    for id in ["B", "C"] {
        drop_from_platform(&env, &key("permit", id)).await;
    }
    env.http
        .post(format!("{}/admin/touch", env.source.url()))
        .json(&serde_json::json!({"kind": "permit", "ids": ["E"]}))
        .send()
        .await
        .unwrap();
    let faults =
        |v: serde_json::Value| env.admin_post(format!("{}/admin/faults", env.platform.url()), v);
    faults(serde_json::json!({"lost_ack_rate": 1.0})).await;
    let out = env
        .dualpub_with(
            &["sync", "--today", TODAY],
            &[("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "1")],
        )
        .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(read_store(&env.store_path()).outbox_len() > 0);

    // The platform's answers to pushes are lost during the repair, until the retry budget runs out: the report is
    // still written, with what was not done, and the exit code says the run was cut short (it said 1, "gaps
    // found"; counts that included the outbox's records could wrap below zero).
    let out_file = env.dir.path().join("repair.json");
    let out = env
        .dualpub_with(
            &[
                "reconcile",
                "--today",
                TODAY,
                "--format",
                "json",
                "--out",
                out_file.to_str().unwrap(),
                "--repair",
            ],
            &[("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "1")],
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(v["repair"]["repushed"], 0, "{}", v["repair"]);
    assert_eq!(v["repair"]["failed"], 2, "{}", v["repair"]);
    assert!(
        v["repair"]["left"].to_string().contains("outbox"),
        "{}",
        v["repair"]
    );

    // Once the platform is back, the outbox goes first and only the repair's own records are counted.
    faults(serde_json::json!({"lost_ack_rate": 0.0})).await;
    let (_, v) = env.reconcile_json(TODAY, &["--repair"]).await;
    assert_eq!(v["repair"]["repushed"], 2, "{}", v["repair"]);
    assert_eq!(v["repair"]["failed"], 0, "{}", v["repair"]);
    assert_eq!(read_store(&env.store_path()).outbox_len(), 0);
}

/// A loopback gateway in front of the platform that answers the first call to each path in `first` with 429 and
/// `Retry-After` its seconds, without passing it on, and passes every other call on as it is. Its URL.
async fn throttle_first(platform: String, first: &[(&'static str, u64)]) -> String {
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, Uri};
    use axum::response::IntoResponse;
    use std::sync::Mutex;
    type Shared = (
        String,
        Arc<Mutex<BTreeMap<&'static str, u64>>>,
        reqwest::Client,
    );
    async fn pass(
        State((platform, first, http)): State<Shared>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        if let Some(secs) = first.lock().unwrap().remove(uri.path()) {
            return (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
            )
                .into_response();
        }
        let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut req = http
            .request(method, format!("{platform}{path_and_query}"))
            .body(body);
        for name in ["x-token", "content-type"] {
            if let Some(v) = headers.get(name) {
                req = req.header(name, v.as_bytes());
            }
        }
        let res = req.send().await.unwrap();
        let status = axum::http::StatusCode::from_u16(res.status().as_u16()).unwrap();
        let body = res.bytes().await.unwrap().to_vec();
        (
            status,
            [("content-type", "application/xml; charset=utf-8")],
            body,
        )
            .into_response()
    }
    let first = Arc::new(Mutex::new(first.iter().copied().collect()));
    let app =
        axum::Router::new()
            .fallback(pass)
            .with_state((platform, first, reqwest::Client::new()));
    serve_local(app).await
}

/// `reconcile --repair` is one run with one retry budget: the time in trouble while it read both systems counts
/// against the repair's runs too. Reading the platform meets a 429 asking for 4 s, pushing the record it lost meets
/// one asking for 3 s, and the budget is 6 s: the repair stops with exit 3, its report written, the record left
/// for the next run. (The repair had a fresh budget of its own: it waited, pushed, and the command spent 7 s of a
/// 6 s budget in trouble.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_and_the_repair_spend_one_retry_budget() {
    let env = env_with_permit("B", "2026-11-20").await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    drop_from_platform(&env, &key("permit", "B")).await;
    let gateway = throttle_first(
        env.platform.url(),
        &[("/api/records", 4), ("/api/exchange", 3)],
    )
    .await;
    let out_file = env.dir.path().join("repair.json");
    let out = env
        .dualpub_with(
            &[
                "reconcile",
                "--today",
                TODAY,
                "--kind",
                "permit",
                "--format",
                "json",
                "--out",
                out_file.to_str().unwrap(),
                "--repair",
            ],
            &[
                ("DUALPUB_PLATFORM_URL", gateway.as_str()),
                ("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "6"),
            ],
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("retry budget of 6 s"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(
        categories_json(&v)["missing"],
        BTreeSet::from([key("permit", "B")]),
        "{v}"
    );
    assert_eq!(
        (&v["repair"]["repushed"], &v["repair"]["failed"]),
        (&0.into(), &1.into()),
        "{}",
        v["repair"]
    );
    assert!(
        v["repair"]["left"]
            .to_string()
            .contains("re-pushing stopped"),
        "{}",
        v["repair"]
    );
    assert!(!env
        .platform_records()
        .await
        .contains_key(&key("permit", "B")));

    // The next repair, with a budget of its own, pushes it.
    let (out, v) = env
        .reconcile_json(TODAY, &["--kind", "permit", "--repair"])
        .await;
    assert_eq!(v["repair"]["repushed"], 1, "{} {out:?}", v["repair"]);
    assert!(env
        .platform_records()
        .await
        .contains_key(&key("permit", "B")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_penalty_the_platform_no_longer_holds_is_withdrawn_once_without_alarm() {
    let env = empty_env().await;
    // decided a year before its display ends, the legal minimum for 安全生产
    let p = penalty("penalty_multi_category", "G", "2025-11-17", "2026-11-20");
    env.source_insert(serde_json::json!([p])).await;
    let out = env.dualpub(&["sync", "--today", "2026-11-18"]).await;
    assert_eq!(out.status.code(), Some(0));
    // someone took it down by hand before its display period ended
    drop_from_platform(&env, &key("penalty", "G")).await;
    // The period ends: the withdrawal finds nothing to take down. Nothing for a person (it exited 1, "rejected"),
    // and later runs do not ask again (it was asked on every run).
    for run in 0..2 {
        let (code, s, err) = env.sync(&[]).await;
        assert_eq!(code, 0, "run {run}: {s} {err}");
        assert_eq!(s["rejected"], 0, "run {run}: {s}");
    }
    let st = env.platform_stats().await;
    assert_eq!(
        st["withdrawals"], 1,
        "one withdrawal asked for, in two runs: {st}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_decision_date_left_the_window_is_not_an_orphan() {
    let env = env_with_permit("T9", "2025-12-30").await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    // corrected in the source to a date outside the window asked for; not synced yet
    env.source_insert(serde_json::json!([record(
        "permit_org",
        "permit",
        "T9",
        "2026-01-05"
    )]))
    .await;
    let window = ["--from", "2025-12-01", "--to", "2025-12-31"];
    let mut args = vec!["reconcile", "--today", TODAY, "--format", "json"];
    args.extend(window);
    let out = env.dualpub(&args).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !categories_json(&v).contains_key("orphan"),
        "the source has the record: {}",
        v["gaps"]
    );
    args.extend(["--repair", "--repair-orphans"]);
    let out = env.dualpub(&args).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["repair"]["orphans_withdrawn"], 0, "{}", v["repair"]);
    let held = env.platform_records().await;
    assert_eq!(
        held[&key("permit", "T9")].1,
        "public",
        "the record stays public"
    );
}

/// A record whose decision date cannot be read is in no window of dates: a windowed reconcile says so instead of
/// leaving it out unseen (without a window it is a quarantined row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_reconcile_notes_records_with_no_readable_decision_date() {
    let env = empty_env().await;
    let mut undated = record("permit_org", "permit", "U1", "2026-03-02");
    undated["decided_on"] = "2026-02-30".into();
    env.source_insert(serde_json::json!([
        record("permit_org", "permit", "U0", "2026-03-02"),
        undated
    ]))
    .await;
    env.sync(&[]).await;
    let (out, v) = env
        .reconcile_json(TODAY, &["--from", "2026-03-01", "--to", "2026-03-31"])
        .await;
    assert_eq!(out.status.code(), Some(1), "{v}");
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("1 source record(s) have no readable decision date") && notes.contains("U1"),
        "{notes}"
    );
    let (_, v) = env.reconcile_json(TODAY, &[]).await;
    assert!(
        categories_json(&v)["quarantined"]
            .iter()
            .any(|k| k.contains("U1")),
        "{}",
        v["gaps"]
    );
    assert_eq!(
        v["notes"].as_array().map(Vec::len),
        Some(0),
        "{}",
        v["notes"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_past_the_calendar_is_a_note_not_the_end_of_the_report() {
    let env = empty_env().await;
    env.source_insert(serde_json::json!([
        record("permit_org", "permit", "N1", "2026-11-20"),
        record("permit_org", "permit", "N2", "2026-12-28"),
    ]))
    .await;
    // N1 is due and not published: a gap the report must still show
    let out = env
        .dualpub(&["reconcile", "--today", "2026-12-29", "--format", "json"])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    // it was exit 2, "calendar.toml covers 2018–2026", and no report at all
    assert_eq!(out.status.code(), Some(1), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cats = categories_json(&v);
    assert!(
        cats["overdue"].contains(&key("permit", "N1")),
        "{}",
        v["gaps"]
    );
    assert!(
        cats["missing"].contains(&key("permit", "N2")),
        "{}",
        v["gaps"]
    );
    let notes = v["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    let note = notes[0].as_str().unwrap();
    assert!(
        note.starts_with("1 record(s) decided from 2026-12-28"),
        "{note}"
    );
    assert!(note.contains("add a [2027] table"), "{note}");
    assert_eq!(v["rates"]["overall"]["due"], 1, "N2 is not judged");
    // the table says it too
    let out = env.dualpub(&["reconcile", "--today", "2026-12-29"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("注意 notes") && table.contains("[2027]"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeliness_counts_every_record_that_was_due() {
    let env = empty_env().await;
    let p1 = penalty("penalty_multi_category", "P1", "2025-10-13", "2026-11-20");
    let mut h = record("permit_org", "permit", "H", "2026-11-02");
    h["party"]["credit_code"] = "914101004157892343".into();
    env.source_insert(serde_json::json!([
        record("permit_org", "permit", "A", "2026-11-02"),
        p1,
        h
    ]))
    .await;
    let out = env.dualpub(&["sync", "--today", "2026-11-05"]).await;
    assert_eq!(out.status.code(), Some(1), "H is quarantined");
    set_published(&env, &key("permit", "A"), "2026-11-05T10:00:00+08:00").await;
    set_published(&env, &key("penalty", "P1"), "2025-10-15T10:00:00+08:00").await;
    // P2 reaches the source only after its display period ended: it was never published
    let p2 = penalty("penalty_multi_category", "P2", "2025-10-13", "2026-11-20");
    env.source_insert(serde_json::json!([p2])).await;

    let (_, v) = env.reconcile_json("2026-11-27", &[]).await;
    let overall = &v["rates"]["overall"];
    // A and P1 on time; H (quarantined, past its deadline) and P2 (never published) missed. It said 1 of 1.
    assert_eq!(overall["due"], 4, "{}", v["rates"]);
    assert_eq!(overall["on_time"], 2, "{}", v["rates"]);
    assert_eq!(v["rates"]["penalty"]["due"], 2, "{}", v["rates"]);
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("1 penalty record(s) were never published"),
        "{notes}"
    );
    // the months agree with the rates
    let months = v["months"].as_array().unwrap();
    let sum = |f: &str| months.iter().map(|m| m[f].as_u64().unwrap()).sum::<u64>();
    assert_eq!(
        sum("on_time") + sum("late") + sum("overdue"),
        4,
        "{months:?}"
    );
}

/// The rows of the JSON report in `category`, by key.
fn rows_in(v: &serde_json::Value, category: &str) -> BTreeMap<String, serde_json::Value> {
    v["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["category"] == category)
        .map(|g| (g["key"].as_str().unwrap().to_string(), g.clone()))
        .collect()
}

/// The sum of one column of the JSON report's months.
fn months_sum(v: &serde_json::Value, column: &str) -> u64 {
    v["months"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m[column].as_u64().unwrap())
        .sum()
}

/// `counts` holds as many of each category as there are rows, and `total_gaps` all of them.
fn assert_counts_match_rows(v: &serde_json::Value) {
    let gaps = v["gaps"].as_array().unwrap();
    for (c, n) in v["counts"].as_object().unwrap() {
        let rows = gaps.iter().filter(|g| g["category"] == c.as_str()).count();
        assert_eq!(n.as_u64(), Some(rows as u64), "counts.{c}: {}", v["counts"]);
    }
    assert_eq!(v["total_gaps"].as_u64(), Some(gaps.len() as u64));
}

/// A penalty published late whose current version then fails validation: its last valid version stays public
/// (sync leaves it), so it is `late` as well as `quarantined`; it was only `quarantined`, though its month counted it
/// late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_penalty_whose_current_version_is_invalid_is_late_and_quarantined() {
    let env = empty_env().await;
    let mut p = record("penalty_multi_category", "penalty", "P", "2026-09-01");
    p["updated_at"] = stamp(-8).into();
    env.source_insert_one(p.clone()).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!((code, s["accepted"].as_u64()), (0, Some(1)), "{s} {err}");
    p["remarks"] = "\u{1}".into();
    p["updated_at"] = stamp(-6).into();
    env.source_insert_one(p).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!((code, s["quarantined"].as_u64()), (1, Some(1)), "{s} {err}");
    let (_, v) = env.reconcile_json(TODAY, &["--kind", "penalty"]).await;
    let k = key("penalty", "P");
    assert!(rows_in(&v, "quarantined").contains_key(&k), "{}", v["gaps"]);
    let late = rows_in(&v, "late");
    assert!(late.contains_key(&k), "{}", v["gaps"]);
    assert!(late[&k]["first_published"].is_string(), "{}", late[&k]);
    assert_counts_match_rows(&v);
    assert_eq!(months_sum(&v, "late"), 1, "{}", v["months"]);
}

/// A penalty revoked before it was ever published is not due: a valid one is not counted in 及时率 and has no
/// `overdue` row. One whose current version also fails validation was counted due, with an `overdue` row that said
/// to publish it now — a revoked decision, which must never be published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_penalty_revoked_before_it_was_published_is_not_due_even_when_invalid() {
    let env = empty_env().await;
    let mut valid = record("penalty_multi_category", "penalty", "V", "2026-09-01");
    valid["status"] = "revoked".into();
    let mut invalid = record("penalty_multi_category", "penalty", "I", "2026-09-01");
    invalid["status"] = "revoked".into();
    invalid["remarks"] = "\u{1}".into();
    env.source_insert(serde_json::json!([valid, invalid])).await;
    let (out, v) = env
        .reconcile_json("2026-11-30", &["--kind", "penalty"])
        .await;
    assert_eq!(out.status.code(), Some(1), "I is quarantined");
    assert!(rows_in(&v, "overdue").is_empty(), "{}", v["gaps"]);
    assert_eq!(
        rows_in(&v, "quarantined")
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec![key("penalty", "I")]
    );
    assert_counts_match_rows(&v);
    assert_eq!(v["rates"]["penalty"]["due"], 0, "{}", v["rates"]);
    assert_eq!(months_sum(&v, "overdue"), 0, "{}", v["months"]);
}

/// Reported: a penalty never published before its display period (CF_GSJZQ) ended counted against 及时率, in the
/// months' `overdue` and in a note, but no row gave its key or document number, and `counts.overdue` disagreed
/// with the months (1 against 8). It is `overdue` (not public, past its deadline): its row, in every format, says
/// it can no longer be published, and `--repair` does not publish it. A record failing validation, whose display
/// period ended too, says the same instead of "publish it now".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_penalty_never_published_before_its_display_period_ended_is_an_overdue_row() {
    use dualpub::reconcile::report::{DISPLAY_ENDED_ACTION_EN, DISPLAY_ENDED_ACTION_ZH};
    let env = empty_env().await;
    // No display end of its own: one year for 安全生产, CF_GSJZQ 2026/11/20, before the run's day.
    let n = record("penalty_multi_category", "penalty", "N", "2025-11-20");
    assert!(n["display_until"].is_null());
    let mut q = record("penalty_multi_category", "penalty", "Q", "2025-11-20");
    q["remarks"] = "\u{1}".into();
    // In time, for contrast: the action to publish stays.
    let mut o = record("penalty_multi_category", "penalty", "O", "2026-11-02");
    o["display_until"] = "2027-11-30".into();
    env.source_insert(serde_json::json!([n, q])).await;
    let out = env
        .dualpub(&["sync", "--json", "--today", "2026-11-30"])
        .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["not_public"], 1, "{s}");
    assert_eq!(out.status.code(), Some(1), "Q is quarantined: {s}");
    // O reaches the source after the sync: overdue and still publishable
    env.source_insert(serde_json::json!([o])).await;
    let party = fixture("penalty_multi_category")["party"]["name"].clone();

    let (out, v) = env
        .reconcile_json("2026-11-30", &["--kind", "penalty"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let (kn, kq, ko) = (
        key("penalty", "N"),
        key("penalty", "Q"),
        key("penalty", "O"),
    );
    let overdue = rows_in(&v, "overdue");
    assert_eq!(
        overdue.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([kn.clone(), kq.clone(), ko.clone()]),
        "{}",
        v["gaps"]
    );
    for k in [&kn, &kq] {
        let row = &overdue[k];
        assert_eq!(row["kind"], "penalty");
        assert_eq!(row["party_name"], party, "{row}");
        assert_eq!(row["decided_on"], "2025-11-20", "{row}");
        assert!(row["deadline"].is_string(), "{row}");
        assert!(row["first_published"].is_null(), "{row}");
        let detail = row["detail"].as_str().unwrap();
        assert!(
            detail.contains("display period ended 2026-11-20")
                && detail.contains("can no longer be published")
                && detail.contains("及时率"),
            "{row}"
        );
        assert_eq!(row["action"], DISPLAY_ENDED_ACTION_EN, "{row}");
        assert_eq!(row["action_zh"], DISPLAY_ENDED_ACTION_ZH, "{row}");
    }
    assert_eq!(overdue[&kn]["doc_no"], "测试〔2026〕N号");
    assert_eq!(
        overdue[&ko]["action"],
        serde_json::json!(dualpub::reconcile::report::Category::Overdue.action_en())
    );
    // the counts, the months and the rates agree; the note stays as a summary
    assert_counts_match_rows(&v);
    assert_eq!(v["counts"]["overdue"], 3, "{}", v["counts"]);
    assert_eq!(months_sum(&v, "overdue"), 3, "{}", v["months"]);
    assert_eq!(v["rates"]["penalty"]["due"], 3, "{}", v["rates"]);
    assert_eq!(v["rates"]["penalty"]["on_time"], 0, "{}", v["rates"]);
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("2 penalty record(s) were never published"),
        "{notes}"
    );

    // the table, CSV and xlsx show the rows with their action
    let out = env
        .dualpub(&["reconcile", "--today", "2026-11-30", "--kind", "penalty"])
        .await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("逾期未公示 overdue: 3")
            && table.contains(DISPLAY_ENDED_ACTION_EN)
            && table.contains(DISPLAY_ENDED_ACTION_ZH)
            && table.contains("测试〔2026〕N号"),
        "{table}"
    );
    let dir = env.dir.path().join("csv");
    let penalties = ["--kind", "penalty"];
    let out = reconcile_as_of_to(&env, "2026-11-30", &penalties, "csv", &dir).await;
    assert_eq!(out.status.code(), Some(1));
    let csv = std::fs::read_to_string(dir.join("overdue.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(lines.len(), 3, "{csv}");
    for id in ["N", "Q"] {
        let line = lines
            .iter()
            .find(|l| l.contains(&format!("测试〔2026〕{id}号")))
            .unwrap_or_else(|| panic!("{id}: {csv}"));
        assert!(line.contains(DISPLAY_ENDED_ACTION_ZH), "{line}");
    }
    let xlsx = env.dir.path().join("r.xlsx");
    let out = reconcile_as_of_to(&env, "2026-11-30", &penalties, "xlsx", &xlsx).await;
    assert_eq!(out.status.code(), Some(1));
    let mut wb: calamine::Xlsx<_> = calamine::open_workbook(&xlsx).unwrap();
    let range = wb.worksheet_range("逾期未公示").unwrap();
    let mut rows = range.rows();
    let header: Vec<String> = rows.next().unwrap().iter().map(|d| d.to_string()).collect();
    let col = |h: &str| header.iter().position(|x| x == h).unwrap();
    let (kc, ac) = (col("记录键"), col("处理建议"));
    let actions: BTreeMap<String, String> = rows
        .map(|r| (r[kc].to_string(), r[ac].to_string()))
        .collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert_eq!(actions[&kn], DISPLAY_ENDED_ACTION_ZH);
    assert_eq!(actions[&kq], DISPLAY_ENDED_ACTION_ZH);
    assert_eq!(
        actions[&ko],
        dualpub::reconcile::report::Category::Overdue.action_zh()
    );

    // --repair publishes O, never N (nor Q, which is invalid anyway)
    let (out, v) = env
        .reconcile_json("2026-11-30", &["--kind", "penalty", "--repair"])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(v["repair"]["repushed"], 1, "{}: {err}", v["repair"]);
    let held = env.platform_records().await;
    assert!(!held.contains_key(&kn), "{held:?}");
    assert!(!held.contains_key(&kq), "{held:?}");
    assert_eq!(held[&ko].1, "public");
    let (_, v) = env
        .reconcile_json("2026-11-30", &["--kind", "penalty"])
        .await;
    assert_eq!(
        rows_in(&v, "overdue")
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([kn.clone(), kq.clone()]),
        "{}",
        v["gaps"]
    );
    assert_counts_match_rows(&v);
    assert_eq!(months_sum(&v, "overdue"), 2, "{}", v["months"]);
}

/// Reported: a penalty still public past its display end (CF_GSJZQ), first published after its deadline, was listed
/// only `expired` — its `late` row went, though 及时率 and its month still counted it late. A record can be in
/// several categories: it is both until it is taken down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_penalty_still_public_past_its_display_end_is_late_and_expired() {
    let env = empty_env().await;
    // CF_GSJZQ 2026/11/30 (one year for 安全生产); published a year after its 7-working-day deadline
    let l = record("penalty_multi_category", "penalty", "L", "2025-11-30");
    env.source_insert(serde_json::json!([l])).await;
    let out = env
        .dualpub(&["sync", "--json", "--today", "2026-11-30"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kl = key("penalty", "L");
    set_published(&env, &kl, "2026-11-30T10:00:00+08:00").await;

    let (_, v) = env
        .reconcile_json("2026-11-30", &["--kind", "penalty"])
        .await;
    assert_eq!(
        categories_json(&v),
        BTreeMap::from([("late".to_string(), BTreeSet::from([kl.clone()]))]),
        "{}",
        v["gaps"]
    );

    for format in ["json", "table"] {
        let (out, v) = if format == "json" {
            env.reconcile_json("2026-12-01", &["--kind", "penalty"])
                .await
        } else {
            (
                env.dualpub(&["reconcile", "--today", "2026-12-01", "--kind", "penalty"])
                    .await,
                serde_json::Value::Null,
            )
        };
        assert_eq!(out.status.code(), Some(1), "{format}");
        if format == "json" {
            assert_eq!(
                categories_json(&v),
                BTreeMap::from([
                    ("expired".to_string(), BTreeSet::from([kl.clone()])),
                    ("late".to_string(), BTreeSet::from([kl.clone()])),
                ]),
                "{}",
                v["gaps"]
            );
            let late = gap_of(&v, &kl, "late");
            assert_eq!(late["first_published"], "2026-11-30", "{late}");
            assert_eq!(
                late["detail"].as_str().unwrap().get(..10),
                Some("2026-11-30")
            );
            assert_counts_match_rows(&v);
            assert_eq!(v["records_with_gaps"], 1);
            assert_eq!(
                months_sum(&v, "late"),
                v["counts"]["late"].as_u64().unwrap()
            );
            assert_eq!(v["rates"]["penalty"]["due"], 1);
            assert_eq!(v["rates"]["penalty"]["on_time"], 0);
        } else if format == "table" {
            let table = String::from_utf8_lossy(&out.stdout);
            assert!(
                table.contains("超期公示 late: 1") && table.contains("公示期满未撤下 expired: 1"),
                "{table}"
            );
        }
    }
    let dir = env.dir.path().join("csv");
    let out = reconcile_as_of_to(&env, "2026-12-01", &["--kind", "penalty"], "csv", &dir).await;
    assert_eq!(out.status.code(), Some(1));
    for c in ["late", "expired"] {
        let text = std::fs::read_to_string(dir.join(format!("{c}.csv"))).unwrap();
        assert!(text.contains("测试〔2026〕L号"), "{c}: {text}");
    }
    let xlsx = env.dir.path().join("r.xlsx");
    let out = reconcile_as_of_to(&env, "2026-12-01", &["--kind", "penalty"], "xlsx", &xlsx).await;
    assert_eq!(out.status.code(), Some(1));
    let mut wb: calamine::Xlsx<_> = calamine::open_workbook(&xlsx).unwrap();
    for sheet in ["超期公示", "公示期满未撤下"] {
        let range = wb.worksheet_range(sheet).unwrap();
        assert!(
            range.rows().any(|r| r.iter().any(|c| c.to_string() == kl)),
            "{sheet}"
        );
    }

    // taken down, it is no longer public, so no longer `late`; 及时率 and its month still count it late
    let (out, v) = env
        .reconcile_json("2026-12-01", &["--kind", "penalty", "--repair"])
        .await;
    assert_eq!(
        v["repair"]["withdrawn"],
        1,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, v) = env
        .reconcile_json("2026-12-01", &["--kind", "penalty"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", v["gaps"]);
    assert_eq!(months_sum(&v, "late"), 1, "{}", v["months"]);
    assert_eq!(v["rates"]["penalty"]["due"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_penalty_found_to_be_on_a_minor_is_withdrawn() {
    let env = empty_env().await;
    let mut p = penalty("penalty_person", "M1", "2025-11-10", "2026-11-30");
    let mut p2 = penalty("penalty_person", "M2", "2025-11-10", "2026-11-30");
    env.source_insert(serde_json::json!([p.clone(), p2.clone()]))
        .await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        env.platform_records().await[&key("penalty", "M1")].1,
        "public"
    );
    // the enforcement system corrects the party's ID number: the party was 15 on the decision date; for M2 the
    // same edit corrects the document number too
    p["party"]["id_no"] = "410105201001011233".into();
    p2["party"]["id_no"] = "410105201001011233".into();
    p2["doc_no"] = "测试〔2026〕M2改号".into();
    env.source_insert(serde_json::json!([p, p2])).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(s["quarantined"], 2, "{s}");
    assert_eq!(s["withdrawn"], 2, "{s}");
    // it stayed public before: most findings keep the last valid version, but this one must not be shown at all
    let held = env.platform_records().await;
    assert_eq!(held[&key("penalty", "M1")].1, "withdrawn");
    assert_eq!(
        held[&key("penalty", "M2")].1,
        "withdrawn",
        "under its old number too"
    );
    let q = read_store(&env.store_path()).quarantine_all().unwrap();
    assert!(
        q.iter()
            .all(|e| e.findings.iter().any(|f| f.code == "penalty_minor")),
        "{q:?}"
    );
    // and the next run leaves it so
    let (_, s, _) = env.sync(&[]).await;
    assert_eq!(s["pushed"], 0, "{s}");
    // reconcile does not ask for it to be published: no overdue row, not due for 及时率
    let (_, v) = env.reconcile_json(TODAY, &[]).await;
    let cats = categories_json(&v);
    assert!(!cats.contains_key("overdue"), "{}", v["gaps"]);
    assert!(
        cats["quarantined"].contains(&key("penalty", "M1")),
        "{}",
        v["gaps"]
    );
    assert_eq!(v["rates"]["penalty"]["due"], 0, "{}", v["rates"]);
}

/// `report annual --year Y --format json --today TODAY`: the exit code and the parsed report.
async fn annual_json(env: &Env, year: &str) -> (i32, serde_json::Value) {
    let out = env
        .dualpub(&[
            "report", "annual", "--year", year, "--format", "json", "--today", TODAY,
        ])
        .await;
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), v)
}

/// A penalty that holds a document number turns out to be on a minor: it is withdrawn, and the record held back
/// for the same number is published in the same run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_held_by_a_penalty_on_a_minor_goes_to_the_record_waiting_for_it() {
    let env = empty_env().await;
    let mut holder = penalty("penalty_person", "M3", "2025-11-10", "2026-12-31");
    env.source_insert(serde_json::json!([holder.clone()])).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let mut waiting = penalty(
        "penalty_fine_confiscation",
        "M3X",
        "2025-11-12",
        "2026-12-31",
    );
    waiting["doc_no"] = holder["doc_no"].clone();
    let waiting_party = waiting["party"]["name"].as_str().unwrap().to_string();
    assert_ne!(
        Some(waiting_party.as_str()),
        holder["party"]["name"].as_str()
    );
    env.source_insert(serde_json::json!([waiting])).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{err}");
    let store = read_store(&env.store_path());
    let q = store.quarantine_all().unwrap();
    assert!(
        q.iter()
            .any(|e| e.source_id.ends_with("M3X")
                && e.findings.iter().any(|f| f.code == "key_reused")),
        "{q:?}"
    );
    drop(store);
    holder["party"]["id_no"] = "410105201001011233".into();
    env.source_insert(serde_json::json!([holder])).await;
    let (_, s, err) = env.sync(&[]).await;
    assert_eq!(s["withdrawn"], 1, "{s} {err}");
    let held = env.platform_records().await;
    let (_, status, fields, _) = &held[&key("penalty", "M3")];
    assert_eq!(status, "public", "{err}");
    assert_eq!(
        fields["CF_XDR_MC"].as_str(),
        Some(waiting_party.as_str()),
        "the waiting record's party is on the platform now"
    );
    let q = read_store(&env.store_path()).quarantine_all().unwrap();
    assert!(q.iter().all(|e| !e.source_id.ends_with("M3X")), "{q:?}");
}

/// The annual on-time share is reconcile's 及时率 for the same year: a penalty on a minor and a revoked penalty
/// that was never published are due for neither (the annual report counted both as missed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annual_timeliness_is_reconciles_for_the_year() {
    let env = empty_env().await;
    let published = penalty("penalty_person", "T1", "2025-06-02", "2027-01-01");
    let mut minor = penalty("penalty_person", "T2", "2025-11-10", "2027-01-01");
    minor["party"]["id_no"] = "410105201001011233".into();
    let mut revoked = penalty("penalty_person", "T3", "2025-05-06", "2027-01-01");
    revoked["status"] = "revoked".into();
    let permit = record("permit_org", "permit", "T4", "2025-03-03");
    env.source_insert(serde_json::json!([published, minor, revoked, permit]))
        .await;
    let (_, _, err) = env.sync(&[]).await;
    set_published(&env, &key("penalty", "T1"), "2025-06-03T10:00:00+08:00").await;
    set_published(&env, &key("permit", "T4"), "2025-03-20T10:00:00+08:00").await;

    let (_, rec) = env
        .reconcile_json(TODAY, &["--from", "2025-01-01", "--to", "2025-12-31"])
        .await;
    let (_, v) = annual_json(&env, "2025").await;
    let rates = &rec["rates"];
    for (annual_kind, kind) in [("permits", "permit"), ("penalties", "penalty")] {
        for f in ["due", "on_time", "timeliness"] {
            assert_eq!(
                v[annual_kind][f], rates[kind][f],
                "{annual_kind}.{f}: {v} vs {rates} ({err})"
            );
        }
    }
    assert_eq!(v["timeliness"], rates["overall"]["timeliness"], "{v}");
    // only T1 was due among the penalties, and it was on time
    assert_eq!(v["penalties"]["due"], 1, "{v}");
    assert_eq!(v["penalties"]["timeliness"], 1.0, "{v}");
}

/// Every decision of the year counts, in its total and its amounts, even with no category the mapping knows
/// (under 未分类); a revoked decision counts and is shown; a `changed` version (superseded by its corrected
/// decision) is not counted twice; the JSON lists categories in the standard's order and the workbook explains
/// a 合计 below the sum of its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annual_counts_every_decision_once() {
    let env = empty_env().await;
    let mut unknown_permit = record("permit_org", "permit", "U1", "2024-03-01");
    unknown_permit["category"] = "X99".into();
    let permit = record("permit_org", "permit", "U2", "2024-03-04");
    let mut unknown_penalty = penalty("penalty_multi_category", "U3", "2024-05-16", "2027-01-01");
    unknown_penalty["penalty_types"] = serde_json::json!(["X99"]);
    let multi = penalty("penalty_multi_category", "U4", "2024-05-16", "2027-01-01");
    let mut revoked = penalty("penalty_person", "U5", "2024-08-01", "2027-01-01");
    revoked["status"] = "revoked".into();
    revoked["fine_yuan"] = "5000".into();
    let mut superseded = penalty("penalty_person", "U6", "2024-08-01", "2027-01-01");
    superseded["status"] = "changed".into();
    superseded["fine_yuan"] = "5000".into();
    let mut corrected = penalty("penalty_person", "U7", "2024-08-01", "2027-01-01");
    corrected["fine_yuan"] = "3000".into();
    env.source_insert(serde_json::json!([
        unknown_permit,
        permit,
        unknown_penalty,
        multi,
        revoked,
        superseded,
        corrected
    ]))
    .await;
    env.sync(&[]).await;

    let (_, v) = annual_json(&env, "2024").await;
    assert_eq!(v["permits"]["total"], 2, "{v}");
    assert_eq!(v["permits"]["by_category"]["核准"], 1, "{v}");
    assert_eq!(v["permits"]["by_category"]["未分类 unmapped"], 1, "{v}");
    // U3, U4, U5 and U7; not U6
    assert_eq!(v["penalties"]["total"], 4, "{v}");
    assert_eq!(v["penalties"]["by_category"]["未分类 unmapped"], 1, "{v}");
    assert_eq!(v["penalties"]["by_category"]["罚款"], 3, "{v}");
    assert_eq!(v["penalties"]["revoked"], 1, "{v}");
    assert_eq!(v["penalties"]["superseded"], 1, "{v}");
    // 2000 + 2000 + 5000 + 3000 yuan
    assert_eq!(v["penalties"]["fines_wan"], "1.2", "{v}");
    let out = env
        .dualpub(&[
            "report", "annual", "--year", "2024", "--format", "json", "--today", TODAY,
        ])
        .await;
    let raw = String::from_utf8_lossy(&out.stdout);
    let at = |c: &str| raw.find(&format!("\"{c}\"")).unwrap();
    assert!(
        at("普通") < at("特许") && at("特许") < at("核准") && at("核准") < at("其他"),
        "{raw}"
    );

    let xlsx = env.dir.path().join("annual.xlsx");
    env.dualpub(&[
        "report",
        "annual",
        "--year",
        "2024",
        "--format",
        "xlsx",
        "--out",
        xlsx.to_str().unwrap(),
        "--today",
        TODAY,
    ])
    .await;
    let mut wb: calamine::Xlsx<_> = calamine::open_workbook(&xlsx).unwrap();
    let sheet = wb.worksheet_range("年度报告").unwrap();
    let penalty_total = sheet
        .rows()
        .filter(|r| r.first() == Some(&Data::String("合计".into())))
        .nth(1)
        .unwrap()
        .to_vec();
    assert_eq!(penalty_total[1], Data::Float(4.0));
    assert!(
        matches!(&penalty_total[2], Data::String(s) if s.contains("在合计中只计一次")),
        "{penalty_total:?}"
    );
}

/// What the year's numbers lack is said, in every format, and makes the exit code 1: a decision whose date
/// cannot be read (it is in no year) and one whose deadline the calendar cannot give (not in the on-time share).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annual_notes_what_the_numbers_lack() {
    let env = empty_env().await;
    let mut undated = record("permit_org", "permit", "D1", "2026-03-02");
    undated["decided_on"] = "2026-02-30".into();
    env.source_insert(serde_json::json!([
        record("permit_org", "permit", "N0", "2026-03-02"),
        record("permit_org", "permit", "N1", "2026-12-28"),
        undated
    ]))
    .await;
    env.sync(&[]).await;

    let (code, v) = annual_json(&env, "2026").await;
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["permits"]["total"], 2, "{v}");
    assert_eq!(v["permits"]["due"], 1, "N1 is not judged: {v}");
    let notes = v["notes"].to_string();
    assert!(notes.contains("add a [2027] table"), "{notes}");
    assert!(
        notes.contains("1 source record(s) have no readable decision date") && notes.contains("D1"),
        "{notes}"
    );

    let out = env
        .dualpub(&["report", "annual", "--year", "2026", "--today", TODAY])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("注意 notes") && table.contains("[2027]") && table.contains("D1"),
        "{table}"
    );

    let xlsx = env.dir.path().join("annual.xlsx");
    let out = env
        .dualpub(&[
            "report",
            "annual",
            "--year",
            "2026",
            "--format",
            "xlsx",
            "--out",
            xlsx.to_str().unwrap(),
            "--today",
            TODAY,
        ])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let mut wb: calamine::Xlsx<_> = calamine::open_workbook(&xlsx).unwrap();
    let sheet = wb.worksheet_range("年度报告").unwrap();
    assert!(sheet
        .rows()
        .any(|r| matches!(r.first(), Some(Data::String(s)) if s.contains("D1"))));
}

/// A `[mapping] dir` holding only `calendar.toml` (the built-in calendar with a [2027] table added): the mapping
/// files are the built-in ones, and deadlines that reach into 2027 come from that table. Such a directory made
/// every command exit 2 ("cannot read mapping file …/permit.toml").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_dir_with_only_calendar_toml_extends_the_calendar() {
    let env = env_with_permit("N2", "2026-12-28").await;
    let builtin = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/calendar.toml"),
    )
    .unwrap();
    let m = mapping_dir_with_calendar(&env, &format!("{builtin}\n{MADE_UP_2027}"));
    let vars = [
        ("DUALPUB_MAPPING_DIR", m.to_str().unwrap()),
        ("DUALPUB_LOG", "info"),
    ];
    let out = env
        .dualpub_with(&["sync", "--today", "2026-12-29"], &vars)
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "from the directory: calendar.toml; built in: permit.toml, penalty.toml, codes.toml"
        ),
        "{err}"
    );
    env.source_insert(serde_json::json!([record(
        "permit_org",
        "permit",
        "N3",
        "2026-12-28"
    )]))
    .await;
    let v = overdue_on_2027_01_20(&env, &vars).await;
    let n3 = permit_gap(&v, "N3", "overdue");
    // 7 working days after 2026-12-28, skipping the table's three days off
    assert_eq!(n3["deadline"], "2027-01-11", "{n3}");
}

/// A `[mapping] dir` whose `calendar.toml` holds only the new year's table — what an operator writes when the
/// note says "add a [2027] table" — extends the built-in calendar. It used to replace it: every decision before
/// 2027 lost its deadline, an overdue permit of November 2026 was no longer `overdue` and left 及时率, and the note
/// then asked for a [2026] table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_dir_calendar_with_only_the_new_year_keeps_the_built_in_years() {
    let env = empty_env().await;
    env.source_insert(serde_json::json!([
        record("permit_org", "permit", "N1", "2026-11-20"),
        record("permit_org", "permit", "N2", "2026-12-28"),
    ]))
    .await;
    let m = mapping_dir_with_calendar(&env, MADE_UP_2027);
    let vars = [("DUALPUB_MAPPING_DIR", m.to_str().unwrap())];
    let v = overdue_on_2027_01_20(&env, &vars).await;
    let overdue = |id: &str| permit_gap(&v, id, "overdue");
    // 2026 from the built-in calendar, 2027 from the file
    assert_eq!(overdue("N1")["deadline"], "2026-12-01");
    assert_eq!(overdue("N2")["deadline"], "2027-01-11");
    assert_eq!(v["rates"]["overall"]["due"], 2);
    // the annual report reads the same calendar
    let out = env
        .dualpub_with(
            &[
                "report",
                "annual",
                "--year",
                "2026",
                "--today",
                "2027-01-20",
                "--format",
                "json",
            ],
            &vars,
        )
        .await;
    let a: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(a["notes"], serde_json::json!([]), "{a}");
    assert_eq!(a["permits"]["due"], 2, "{a}");
}

/// With the built-in calendar, the note on deadlines past it says where an operator — who has the binary, not
/// `mappings/calendar.toml` — adds the new year: a `calendar.toml` in `[mapping] dir`. It used to say "add a
/// [2027] table to mappings/calendar.toml", a file of the source tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_note_on_deadlines_past_the_built_in_calendar_names_the_mapping_dir() {
    let env = env_with_permit("N2", "2026-12-28").await;
    let (out, v) = env.reconcile_json("2026-12-29", &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let note = v["notes"][0].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(
        note.contains("[mapping] dir") && note.contains("[2027]"),
        "{note}"
    );
    assert!(
        !note.contains("add a [2027] table to mappings/calendar.toml"),
        "{note}"
    );
}

/// A penalty whose current version fails validation still follows the source on the platform: revoked, or past
/// its display period, it must come down (reference §3.2, §3.3) whatever else is wrong with it. Reconcile listed
/// such a record only as `quarantined` — no `stale` (revoked, still public) and no `expired` row — and `--repair`
/// left it public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_penalty_revoked_or_past_its_display_period_is_taken_down() {
    let env = empty_env().await;
    let r = penalty("penalty_multi_category", "R", "2025-12-01", "2026-12-31");
    let e = penalty("penalty_multi_category", "E", "2025-11-20", "2026-12-09");
    env.source_insert(serde_json::json!([r.clone(), e.clone()]))
        .await;
    let out = env.dualpub(&["sync", "--today", "2026-12-07"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // R is revoked, and both get a remark the platform cannot carry
    let (mut r, mut e) = (r, e);
    r["status"] = "revoked".into();
    r["remarks"] = "\u{1}撤销".into();
    e["remarks"] = "\u{1}".into();
    // Not synced since (a sync withdraws R itself, and E once its display period is over): reconcile must see both.
    env.source_insert(serde_json::json!([r, e])).await;

    let (out, v) = env
        .reconcile_json("2026-12-10", &["--kind", "penalty"])
        .await;
    assert_eq!(out.status.code(), Some(1));
    let cats = categories_json(&v);
    let (kr, ke) = (key("penalty", "R"), key("penalty", "E"));
    assert!(
        cats["quarantined"].contains(&kr) && cats["quarantined"].contains(&ke),
        "{cats:?}"
    );
    assert!(
        cats.get("stale").is_some_and(|s| s.contains(&kr)),
        "R: {cats:?}"
    );
    assert!(
        cats.get("expired").is_some_and(|s| s.contains(&ke)),
        "E: {cats:?}"
    );

    let out = env
        .dualpub(&[
            "reconcile",
            "--today",
            "2026-12-10",
            "--kind",
            "penalty",
            "--repair",
            "--format",
            "json",
        ])
        .await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["repair"]["withdrawn"], 2, "{}", v["repair"]);
    let held = env.platform_records().await;
    assert_eq!(held[&kr].1, "withdrawn");
    assert_eq!(held[&ke].1, "withdrawn");
}

/// Reported: `report annual` panicked (exit 101, "Addition overflowed") when the year's fines passed the largest
/// amount a `Decimal` holds — 10,001 penalties of the largest fine the mapping takes. The sum leaves what it cannot
/// take out, and a note says so (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fines_beyond_the_largest_decimal_are_a_note_not_a_panic() {
    let env = empty_env().await;
    let n = 10_001;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let records: Vec<serde_json::Value> = chunk
            .iter()
            .map(|i| {
                let mut r = penalty(
                    "penalty_fine_confiscation",
                    &format!("MAX{i}"),
                    "2025-06-02",
                    "2027-01-01",
                );
                r["fine_yuan"] = "79228162514264337593543950335".into();
                r
            })
            .collect();
        env.source_insert(serde_json::Value::Array(records)).await;
    }
    let (code, v) = annual_json(&env, "2025").await;
    assert_eq!(code, 1, "a note needs a person: {}", v["notes"]);
    assert_eq!(v["penalties"]["total"], n, "{}", v["notes"]);
    let notes = v["notes"].as_array().unwrap();
    assert!(
        notes.iter().any(|n| n
            .as_str()
            .unwrap()
            .starts_with("1 penalty record(s) are not in fines_wan")),
        "{notes:?}"
    );
}

/// A record not yet public but still in time says how many working days are left, so the deadlines at risk stand
/// out from the records decided today; past its deadline it is `overdue`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_record_still_in_time_says_how_long_it_has() {
    let env = empty_env().await;
    // decided Friday 2026-11-20: due Tuesday 2026-12-01, the 7th working day after
    env.source_insert(serde_json::json!([record(
        "permit_org",
        "permit",
        "R1",
        "2026-11-20"
    )]))
    .await;
    let gap = |today: &'static str| {
        let env = &env;
        async move {
            let out = env
                .dualpub(&["reconcile", "--today", today, "--format", "json"])
                .await;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            v["gaps"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|g| g["key"] == key("permit", "R1"))
                .map(|g| {
                    (
                        g["category"].as_str().unwrap().to_string(),
                        g["detail"].as_str().unwrap().to_string(),
                    )
                })
                .collect::<BTreeMap<String, String>>()
        }
    };
    // Friday: Monday and Tuesday are left
    let rows = gap("2026-11-27").await;
    let detail = &rows["missing"];
    assert!(
        detail.starts_with("还剩 2 个工作日（期限 2026-12-01）")
            && detail.contains("2 working days left (due 2026-12-01)"),
        "{detail}"
    );
    let rows = gap("2026-11-30").await;
    assert!(rows["missing"].contains("1 working day left"), "{rows:?}");
    let rows = gap("2026-12-01").await;
    assert!(!rows.contains_key("overdue"), "{rows:?}");
    assert!(
        rows["missing"].starts_with("今天到期（2026-12-01）"),
        "{rows:?}"
    );
    // the day after: overdue, and the missing row no longer counts days
    let rows = gap("2026-12-02").await;
    assert!(rows.contains_key("overdue"), "{rows:?}");
    assert!(!rows["missing"].contains("left"), "{rows:?}");
}

/// A penalty revoked at the source whose revoked version fails validation, with the document number another
/// record now holds on the platform (a mistaken entry revoked, then the decision entered again under its number):
/// reconcile took the other record's platform row for its own, listed it `stale` and `--repair` withdrew the other
/// record's publication. Sync leaves it (the ledger says whose the key is); so must reconcile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_revoked_penalty_never_takes_down_another_records_number() {
    let env = empty_env().await;
    // A: entered by mistake, then revoked, and its revoked version is invalid
    let mut a = penalty("penalty_multi_category", "A", "2025-12-01", "2026-12-31");
    a["status"] = "revoked".into();
    a["remarks"] = "\u{1}撤销".into();
    env.source_insert(serde_json::json!([a])).await;
    // B: the decision entered again under A's number
    let mut b = penalty("penalty_multi_category", "B", "2025-12-01", "2026-12-31");
    b["doc_no"] = "测试〔2026〕A号".into();
    env.source_insert(serde_json::json!([b])).await;
    let out = env.dualpub(&["sync", "--today", "2026-12-07"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "A is quarantined: {err}");
    let k = key("penalty", "A");
    let status = |recs: &BTreeMap<String, (String, String, serde_json::Value, u64)>| {
        recs.get(&k).map(|r| r.1.clone())
    };
    assert_eq!(
        status(&env.platform_records().await).as_deref(),
        Some("public"),
        "B is public"
    );

    let (out, v) = env
        .reconcile_json("2026-12-10", &["--kind", "penalty", "--repair"])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    let cats = categories_json(&v);
    assert_eq!(
        status(&env.platform_records().await).as_deref(),
        Some("public"),
        "B stays public: {cats:?} {err}"
    );
    assert!(
        !cats.get("stale").is_some_and(|s| s.contains(&k)),
        "B's publication is not A's: {cats:?} {err}"
    );
    // and B, which is on the platform, is not `missing` either
    assert!(
        !cats.get("missing").is_some_and(|s| s.contains(&k)),
        "{cats:?} {err}"
    );
}

/// Both simulators, the source holding `records` generated records of `seed` (default mix, no faults).
async fn generated_env(records: u64, seed: u64) -> Env {
    spawn(
        GenConfig {
            records,
            seed,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await
}

/// A source whose first feed page is empty yet says it has more (a page cut short before a commit still in
/// progress; the source simulator serves one when a late record's neighbours were deleted), and which then serves
/// the feed as it is. For a run that reads one kind.
async fn hollow_once(source: String) -> String {
    let asked = std::sync::atomic::AtomicBool::new(false);
    feed_text_proxy(
        source,
        Arc::new(move |_: &str, answer: String| {
            if !asked.swap(true, std::sync::atomic::Ordering::Relaxed) {
                r#"{"items":[],"has_more":true}"#.to_string()
            } else {
                answer
            }
        }),
    )
    .await
}

/// A first feed page that is empty yet has more: reconcile took it for the end of the feed (sync asks again since
/// 2026-11-29), read no record of the kind, listed every public one as `orphan`, and `--repair --repair-orphans`
/// withdrew them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_feed_page_that_has_more_is_not_the_end_of_the_source() {
    let env = generated_env(40, 1).await;
    let (code, _, err) = env.sync(&["--kind", "permit"]).await;
    assert_eq!(code, 0, "{err}");
    let public = |recs: &BTreeMap<String, (String, String, serde_json::Value, u64)>| {
        recs.iter()
            .filter(|(k, r)| k.starts_with("XZXK:") && r.1 == "public")
            .count()
    };
    let before = public(&env.platform_records().await);
    assert!(before > 10, "{before}");

    let source = hollow_once(env.source.url()).await;
    let (out, v) = env
        .reconcile_json_with(
            TODAY,
            &["--kind", "permit", "--repair", "--repair-orphans"],
            &[("DUALPUB_SOURCE_URL", &source)],
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    let cats = categories_json(&v);
    assert!(!cats.contains_key("orphan"), "{cats:?} {err}");
    assert_eq!(public(&env.platform_records().await), before, "{err}");
}

/// A feed whose records have no `updated_at` gives no position to read on from: reconcile asked the same page again
/// for ever (sync stops with exit 3, "cannot be read further").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_without_positions_ends_reconcile_instead_of_asking_for_ever() {
    let env = generated_env(40, 1).await;
    let blind = feed_text_proxy(
        env.source.url(),
        Arc::new(|_: &str, answer: String| {
            let mut v: serde_json::Value = serde_json::from_str(&answer).unwrap();
            for item in v["items"].as_array_mut().into_iter().flatten() {
                item.as_object_mut().unwrap().remove("updated_at");
            }
            v.to_string()
        }),
    )
    .await;
    let mut c = env.command(&[
        "reconcile",
        "--today",
        TODAY,
        "--format",
        "json",
        "--kind",
        "permit",
    ]);
    c.env("DUALPUB_SOURCE_URL", &blind)
        .env("DUALPUB_SOURCE_PAGE_SIZE", "5")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let (code, err) = tokio::task::spawn_blocking(move || {
        let mut child = c.spawn().unwrap();
        let t0 = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (status.code(), err);
            }
            if t0.elapsed() > std::time::Duration::from_secs(30) {
                child.kill().unwrap();
                let _ = child.wait();
                return (None, "still running after 30 s".to_string());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("cannot be read further"), "{err}");
}

/// The platform's state of `key` (`public`, `withdrawn`), `None` when it does not hold it.
async fn platform_status(env: &Env, key: &str) -> Option<String> {
    env.platform_records().await.get(key).map(|r| r.1.clone())
}

/// Two source records with one document number, one of which never held it: a penalty whose display period
/// ended, and one revoked, before either was ever published (sync publishes the other record under the number).
/// Coming first in the feed, each took the other record's platform row for its own, listed it `expired` or
/// `stale`, and `--repair` withdrew the other record's lawful publication (after re-pushing it as `missing`), and
/// did so again at every repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_never_held_its_document_number_does_not_withdraw_the_holders() {
    let env = empty_env().await;
    let mut expired = penalty("penalty_multi_category", "E1", "2024-11-15", "2025-11-20");
    expired["doc_no"] = "测试〔2026〕A1号".into();
    let mut revoked = penalty("penalty_multi_category", "R1", "2026-11-15", "2027-11-20");
    revoked["doc_no"] = "测试〔2026〕A2号".into();
    revoked["status"] = "revoked".into();
    env.source_insert_one(expired).await;
    env.source_insert_one(revoked).await;
    env.source_insert_one(penalty(
        "penalty_multi_category",
        "A1",
        "2026-11-20",
        "2027-11-30",
    ))
    .await;
    env.source_insert_one(penalty(
        "penalty_multi_category",
        "A2",
        "2026-11-20",
        "2027-11-30",
    ))
    .await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!((code, &s["not_public"]), (0, &2.into()), "{s} {err}");
    let (a1, a2) = (key("penalty", "A1"), key("penalty", "A2"));
    for k in [&a1, &a2] {
        assert_eq!(platform_status(&env, k).await.as_deref(), Some("public"));
    }

    let (out, v) = env.reconcile_json(TODAY, &["--repair"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    for k in [&a1, &a2] {
        assert_eq!(
            platform_status(&env, k).await.as_deref(),
            Some("public"),
            "{k}: {} {} {err}",
            v["gaps"],
            v["repair"]
        );
    }
    // nothing to report of either number: the platform shows the holders as the source has them
    let cats = categories_json(&v);
    for cat in ["expired", "stale", "missing"] {
        assert!(!cats.contains_key(cat), "{cat}: {}", v["gaps"]);
    }
    assert_eq!(v["repair"]["withdrawn"], 0, "{}", v["repair"]);
    assert_eq!(v["repair"]["repushed"], 0, "{}", v["repair"]);
}

/// A source record that changed while reconcile read the feed comes twice: as it was, then as it is. A penalty
/// whose display period was over, then extended: the first copy asked for a withdrawal, the second for a
/// re-push, and `--repair` withdrew it after re-pushing it. A penalty stale, then revoked: the second copy found
/// the row taken by the first and asked for nothing, and the repair left it public (re-pushed as it was).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_while_reconcile_reads_ends_as_its_later_version() {
    let env = empty_env().await;
    let extended = penalty("penalty_multi_category", "X", "2025-11-17", "2026-11-20");
    let revoked = penalty("penalty_multi_category", "Y", "2025-11-17", "2027-11-20");
    env.source_insert_one(extended.clone()).await;
    env.source_insert_one(revoked.clone()).await;
    let out = env.dualpub(&["sync", "--today", "2026-11-18"]).await;
    assert_eq!(out.status.code(), Some(0));
    let mut stale = revoked.clone();
    stale["content"] = "更正后的处罚内容".into();
    env.source_insert_one(stale).await;
    // the copies the feed served before the changes below
    let before = format!(
        "{},{}",
        env.source_record("X").await,
        env.source_record("Y").await
    );
    let mut x = extended;
    x["display_until"] = "2027-11-20".into();
    let mut y = revoked;
    y["status"] = "revoked".into();
    env.source_insert_one(x).await;
    env.source_insert_one(y).await;
    let first = std::sync::atomic::AtomicBool::new(true);
    let proxy = feed_text_proxy(
        env.source.url(),
        Arc::new(move |_: &str, page: String| {
            if first.swap(false, std::sync::atomic::Ordering::Relaxed) {
                page.replacen("\"items\":[", &format!("\"items\":[{before},"), 1)
            } else {
                page
            }
        }),
    )
    .await;
    let out = env
        .dualpub_with(
            &[
                "reconcile",
                "--today",
                TODAY,
                "--kind",
                "penalty",
                "--format",
                "json",
                "--repair",
            ],
            &[("DUALPUB_SOURCE_URL", proxy.as_str())],
        )
        .await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        platform_status(&env, &key("penalty", "X")).await.as_deref(),
        Some("public"),
        "its display period was extended: {} {err}",
        v["repair"]
    );
    assert_eq!(
        platform_status(&env, &key("penalty", "Y")).await.as_deref(),
        Some("withdrawn"),
        "it was revoked: {} {err}",
        v["repair"]
    );
    assert!(
        v["repair"]["left"]
            .to_string()
            .contains("1 withdrawal(s) not done"),
        "{}",
        v["repair"]
    );
}

/// A record whose current version cannot be sent keeps its last valid version public (sync leaves it so): a
/// document number corrected in the same edit that made the record invalid, and a record the source schema can
/// no longer read. Reconcile listed that row `orphan` ("the source has no such record"), and `--repair
/// --repair-orphans` withdrew the decision from the platform.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_cannot_be_sent_now_keeps_its_published_row() {
    let env = empty_env().await;
    let renumbered = record("permit_org", "permit", "P", "2026-11-20");
    let unreadable = record("permit_org", "permit", "U", "2026-11-20");
    env.source_insert_one(renumbered.clone()).await;
    env.source_insert_one(unreadable.clone()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let mut p = renumbered;
    p["doc_no"] = "测试〔2026〕P改号".into();
    p["remarks"] = "\u{1}".into();
    let mut u = unreadable;
    u["content"] = "BREAK".into();
    env.source_insert_one(p).await;
    env.source_insert_one(u).await;
    // the enforcement system serves U with a number where its schema has text
    let proxy = feed_text_proxy(
        env.source.url(),
        Arc::new(|_: &str, page: String| page.replace("\"BREAK\"", "5")),
    )
    .await;
    let via = [("DUALPUB_SOURCE_URL", proxy.as_str())];
    let (code, s, err) = env.sync_with(&via).await;
    assert_eq!((code, &s["quarantined"]), (1, &2.into()), "{s} {err}");
    let (kp, ku) = (key("permit", "P"), key("permit", "U"));
    for k in [&kp, &ku] {
        assert_eq!(platform_status(&env, k).await.as_deref(), Some("public"));
    }
    let (_, v) = env
        .reconcile_json_with(TODAY, &["--repair", "--repair-orphans"], &via)
        .await;
    assert!(!categories_json(&v).contains_key("orphan"), "{}", v["gaps"]);
    assert_eq!(v["repair"]["orphans_withdrawn"], 0, "{}", v["repair"]);
    for k in [&kp, &ku] {
        assert_eq!(
            platform_status(&env, k).await.as_deref(),
            Some("public"),
            "{k}"
        );
    }
}

/// After a damaged store is replaced, sync rebuilds the ledger from the source, and a penalty found to be on a
/// minor is not withdrawn by it (the new ledger does not know the platform shows it). The README sends the operator
/// to `reconcile --repair`, which listed it only as `quarantined` and left it public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_penalty_on_a_minor_is_withdrawn_by_repair() {
    let env = empty_env().await;
    let mut p = penalty("penalty_person", "M", "2025-11-10", "2026-12-30");
    env.source_insert_one(p.clone()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    std::fs::rename(env.store_path(), env.dir.path().join("damaged-store")).unwrap();
    // the party's ID number corrected: 15 on the decision date
    p["party"]["id_no"] = "410105201001011233".into();
    env.source_insert_one(p).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!((code, &s["quarantined"]), (1, &1.into()), "{s} {err}");
    let k = key("penalty", "M");
    assert_eq!(platform_status(&env, &k).await.as_deref(), Some("public"));
    let (out, v) = env.reconcile_json(TODAY, &["--repair"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    let cats = categories_json(&v);
    assert!(
        cats.get("stale").is_some_and(|s| s.contains(&k)),
        "{} {err}",
        v["gaps"]
    );
    assert_eq!(v["repair"]["withdrawn"], 1, "{} {err}", v["repair"]);
    assert_eq!(
        platform_status(&env, &k).await.as_deref(),
        Some("withdrawn")
    );
}

/// A new version of a public record that the platform refuses (by a rule of its own: here a party name it will not
/// take) is listed `stale` and `rejected`. `--repair` sent it again, to be refused again (one more rejection, in
/// `failed`), where a `missing` record the platform rejected is left to be fixed and retried (`quarantine retry`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_the_platform_rejected_is_not_sent_again_by_repair() {
    let env = spawn_with(
        GenConfig {
            records: 0,
            ..GenConfig::default()
        },
        PlatformSimConfig {
            strict: Some(StrictProfile {
                max_len: None,
                refused_parties: vec!["被拒收的公司".into()],
            }),
            faults: Faults::default(),
            ..PlatformSimConfig::default()
        },
        "",
    )
    .await;
    let mut p = record("permit_org", "permit", "N", "2026-11-20");
    env.source_insert_one(p.clone()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    p["party"]["name"] = "被拒收的公司".into();
    env.source_insert_one(p).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!((code, &s["rejected"]), (1, &1.into()), "{s} {err}");
    let k = key("permit", "N");
    let upserts = env.platform_stats().await["upserts"].clone();
    let (out, v) = env.reconcile_json(TODAY, &["--repair"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{} {err}", v["repair"]);
    let cats = categories_json(&v);
    assert!(
        cats["stale"].contains(&k) && cats["rejected"].contains(&k),
        "{cats:?}"
    );
    assert_eq!(
        (&v["repair"]["repushed"], &v["repair"]["failed"]),
        (&0.into(), &0.into()),
        "{}",
        v["repair"]
    );
    assert_eq!(
        env.platform_stats().await["upserts"],
        upserts,
        "nothing sent again"
    );
    assert_eq!(
        env.platform_records().await[&k].1,
        "public",
        "the version before stays"
    );
}

/// A party name that holds an ID number (`id_in_text`: the record is quarantined for it) was printed whole by
/// reconcile in every format, and by `quarantine list --json` and `quarantine show`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_number_in_a_party_name_is_masked_in_every_report() {
    let env = empty_env().await;
    let id = "410302199211011524";
    let mut p = record("permit_person", "permit", "I", "2026-11-20");
    p["party"]["name"] = format!("李秀英{id}").into();
    env.source_insert_one(p).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!((code, &s["quarantined"]), (1, &1.into()), "{s} {err}");
    let csv = env.dir.path().join("csv");
    for args in [
        &["reconcile", "--today", TODAY][..],
        &["reconcile", "--today", TODAY, "--format", "json"],
        &[
            "reconcile",
            "--today",
            TODAY,
            "--format",
            "csv",
            "--out",
            csv.to_str().unwrap(),
        ],
        &["quarantine", "list", "--json"],
        &["quarantine", "show", "I"],
    ] {
        let out = env.dualpub(args).await;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            args.contains(&"csv") || text.contains("李秀英410302"),
            "{args:?}: {text}"
        );
        assert!(!text.contains(id), "{args:?}: {text}");
    }
    let quarantined = std::fs::read_to_string(csv.join("quarantined.csv")).unwrap();
    assert!(quarantined.contains("李秀英410302"), "{quarantined}");
    for f in std::fs::read_dir(&csv).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        assert!(!text.contains(id), "{text}");
    }
}

/// What the repair summary counts: a record sync would not send after all (another record holds its number) is
/// `failed`, not left out of every count; a withdrawal the platform refuses is `failed` too, and the orphans
/// withdrawn are counted apart from the expired records (they were told apart by arithmetic, which gave the
/// orphans the expired record's withdrawal when the orphan's was refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_repair_counts_what_it_did_and_what_it_could_not() {
    let env = empty_env().await;
    env.source_insert_one(penalty(
        "penalty_multi_category",
        "H",
        "2026-11-10",
        "2027-11-30",
    ))
    .await;
    env.source_insert_one(penalty(
        "penalty_multi_category",
        "G",
        "2025-11-17",
        "2026-11-20",
    ))
    .await;
    env.source_insert_one(penalty(
        "penalty_multi_category",
        "O",
        "2026-11-10",
        "2027-11-30",
    ))
    .await;
    let out = env.dualpub(&["sync", "--today", "2026-11-18"]).await;
    assert_eq!(out.status.code(), Some(0));
    // O is deleted at the source (an orphan), G's display period is over (expired), and D takes H's number
    env.source_delete("O").await;
    let mut d = penalty("penalty_multi_category", "D", "2026-11-21", "2027-11-30");
    d["doc_no"] = "测试〔2026〕H号".into();
    env.source_insert_one(d).await;
    let orphan = key("penalty", "O");
    let refused = orphan.clone();
    // the platform refuses to withdraw the orphan (in its receipt: the simulator itself takes it down)
    let proxy = platform_proxy(
        env.platform.url(),
        receipt_rewrite(move |r: &mut dualpub::xml::Receipt| {
            for res in r.results.iter_mut().filter(|res| res.key == refused) {
                res.status = dualpub::xml::ResultStatus::Rejected;
                res.code = "LOCKED".into();
                res.message = "记录已锁定".into();
            }
        }),
    )
    .await;
    let (out, v) = env
        .reconcile_json_with(
            TODAY,
            &["--repair", "--repair-orphans"],
            &[("DUALPUB_PLATFORM_URL", proxy.as_str())],
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    let r = &v["repair"];
    assert_eq!(
        (
            &r["repushed"],
            &r["withdrawn"],
            &r["orphans_withdrawn"],
            &r["failed"]
        ),
        (&0.into(), &1.into(), &0.into(), &2.into()),
        "{r} {err}"
    );
    assert!(
        r["left"].to_string().contains("2 record(s) not repaired"),
        "{r}"
    );
    assert_eq!(
        platform_status(&env, &key("penalty", "G")).await.as_deref(),
        Some("withdrawn")
    );
    assert_eq!(
        platform_status(&env, &key("penalty", "H")).await.as_deref(),
        Some("public")
    );
}

/// A new version of a public record that the platform's receipts never answered for, given up as `NO_RESULT` (and
/// not stored by the platform either): reconcile lists it `stale`, and `--repair` sends it again. When the platform
/// still leaves it out, the repair gives it up again, as the cron run that offers such records again does: it went
/// back to the head of the outbox instead, and the repair and the next syncs ended with exit 3 (the record alone in
/// its messages, so the platform was not seen answering others).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_platform_still_leaves_out_does_not_stop_the_repair_and_the_next_syncs() {
    let env = empty_env().await;
    let mut p = record("permit_org", "permit", "N", "2026-11-20");
    let original = p["content"].as_str().unwrap().to_string();
    env.source_insert_one(p.clone()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    p["content"] = "更正后的许可内容".into();
    env.source_insert_one(p).await;
    env.source_insert_one(record("permit_org", "permit", "Q", "2026-11-20"))
        .await;
    let k = key("permit", "N");
    let left_out = k.clone();
    let proxy = platform_proxy(
        env.platform.url(),
        receipt_rewrite(move |r: &mut dualpub::xml::Receipt| {
            r.results.retain(|res| res.key != left_out)
        }),
    )
    .await;
    let via = [("DUALPUB_PLATFORM_URL", proxy.as_str())];
    let (code, s, err) = env.sync_with(&via).await;
    assert_eq!((code, &s["rejected"]), (1, &1.into()), "{s} {err}");
    // what the platform holds is the version before
    env.admin_post(
        format!("{}/admin/records/alter", env.platform.url()),
        serde_json::json!({"key": k, "field": "XK_NR", "value": original}),
    )
    .await;
    let (out, v) = env.reconcile_json_with(TODAY, &["--repair"], &via).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{} {err}", v["repair"]);
    assert!(categories_json(&v)["stale"].contains(&k), "{}", v["gaps"]);
    assert_eq!(
        (&v["repair"]["repushed"], &v["repair"]["failed"]),
        (&0.into(), &1.into()),
        "{}",
        v["repair"]
    );
    {
        let store = read_store(&env.store_path());
        assert_eq!(store.outbox_len(), 0);
        let q = store.quarantine_all().unwrap();
        assert!(
            q.iter().any(|e| e.key.as_deref() == Some(k.as_str())
                && e.findings.iter().any(|f| f.code == "NO_RESULT")),
            "{q:?}"
        );
    }
    let (code, s, err) = env.sync_with(&via).await;
    assert_eq!(code, 0, "{s} {err}");
}

/// A record whose decision date and document number were corrected in one edit (not synced yet), so that its new
/// date is outside the window asked for while its platform row, under the old number and date, is inside: the
/// window hid the record, its row was listed `orphan`, and `--repair --repair-orphans` withdrew the decision, which
/// was then off the platform until the next sync published it under its new number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_renumbered_out_of_the_window_keeps_its_row() {
    let env = env_with_permit("W", "2025-12-30").await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let mut w = record("permit_org", "permit", "W", "2026-01-05");
    w["doc_no"] = "测试〔2026〕W改号".into();
    env.source_insert_one(w).await;
    let window = ["--from", "2025-12-01", "--to", "2025-12-31"];
    let mut args = vec!["--repair", "--repair-orphans"];
    args.extend(window);
    let (out, v) = env.reconcile_json(TODAY, &args).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !categories_json(&v).contains_key("orphan"),
        "the source has the record: {} {err}",
        v["gaps"]
    );
    assert_eq!(v["repair"]["orphans_withdrawn"], 0, "{}", v["repair"]);
    assert_eq!(
        platform_status(&env, &key("permit", "W")).await.as_deref(),
        Some("public")
    );
    // the next sync moves it to its new number
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let held = env.platform_records().await;
    assert_eq!(held[&key("permit", "W")].1, "withdrawn");
    assert_eq!(
        held[&format!("XZXK:{}:测试〔2026〕W改号", agency_code())].1,
        "public"
    );
}

/// An `updated_at` `minutes` from now (negative: in the past), to the millisecond, in CST.
fn stamp(minutes: i64) -> String {
    stamped(chrono::Utc::now() + chrono::Duration::minutes(minutes))
}

/// An instant as the enforcement system stamps `updated_at` (RFC 3339, milliseconds, China time).
fn stamped(t: chrono::DateTime<chrono::Utc>) -> String {
    t.with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// `reconcile --today TODAY --format FORMAT --out OUT`: the process output.
async fn reconcile_to(env: &Env, format: &str, out: &Path) -> std::process::Output {
    reconcile_as_of_to(env, TODAY, &[], format, out).await
}

/// `reconcile --today TODAY ARGS --format FORMAT --out OUT`: the process output.
async fn reconcile_as_of_to(
    env: &Env,
    today: &str,
    args: &[&str],
    format: &str,
    out: &Path,
) -> std::process::Output {
    let out = out.to_str().unwrap();
    let head = ["reconcile", "--today", today];
    let tail = ["--format", format, "--out", out];
    env.dualpub(&[&head[..], args, &tail[..]].concat()).await
}

/// The gap row of `key` in `category`, from the JSON report.
fn gap_of(v: &serde_json::Value, key: &str, category: &str) -> serde_json::Value {
    v["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key && g["category"] == category)
        .unwrap_or_else(|| panic!("{key} is not {category}: {}", v["gaps"]))
        .clone()
}

/// `reconcile --repair` (JSON) of `kind` as of TODAY: exit code, report, stderr.
async fn repair_json(env: &Env, kind: &str) -> (Option<i32>, serde_json::Value, String) {
    let (out, v) = env
        .reconcile_json(TODAY, &["--kind", kind, "--repair"])
        .await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code(), v, err)
}

/// The source serves a record in an older version than the one sync published (a lagging replica of the
/// enforcement system, say): `reconcile --repair` pushed that older version over the newer one the platform held
/// and had acknowledged, undoing a correct publication. It lists the row, says why it leaves it, and pushes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_never_pushes_an_older_version_over_the_published_one() {
    let env = empty_env().await;
    let (old, _, published) = permit_published_then_edited(&env, -120, -60).await;
    // the replica lags: the source serves the first version again, stamped as it was
    env.source_insert_one(old.clone()).await;

    let (code, v, err) = repair_json(&env, "permit").await;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        env.platform_records().await[&key("permit", "L")].0,
        published.0,
        "the platform keeps the newer version: {} {err}",
        v["repair"]
    );
    assert_eq!(v["repair"]["repushed"], 0, "{}", v["repair"]);
    let served = old["updated_at"].as_str().unwrap();
    let detail = older_copy_detail(&v, &key("permit", "L"), "stale", served);
    assert!(detail.contains("fields differ: XK_NR"), "{detail}");
    assert!(
        v["repair"]["left"].to_string().contains(
            "1 record(s) not repaired: the enforcement system serves them in an older version"
        ),
        "{}",
        v["repair"]
    );
    // What to do says so too (the JSON row's action, checked above, and the other reports): every report said
    // `--repair` sends the current version, which it does not.
    let out = env.dualpub(&["reconcile", "--today", TODAY]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(OLDER_COPY_ACTION_EN) && table.contains(OLDER_COPY_ACTION_ZH),
        "{table}"
    );
    let csv_dir = env.dir.path().join("csv");
    let out = reconcile_to(&env, "csv", &csv_dir).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stale = std::fs::read_to_string(csv_dir.join("stale.csv")).unwrap();
    let line = stale.lines().find(|l| l.contains("L号")).unwrap();
    assert!(line.ends_with(OLDER_COPY_ACTION_ZH), "{line}");
    let xlsx = env.dir.path().join("gaps.xlsx");
    let out = reconcile_to(&env, "xlsx", &xlsx).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let mut wb: calamine::Xlsx<_> = calamine::open_workbook(&xlsx).unwrap();
    let sheet = wb.worksheet_range("不一致").unwrap();
    assert_eq!(
        sheet.get((1, 10)).map(|c| c.to_string()).as_deref(),
        Some(OLDER_COPY_ACTION_ZH)
    );
}

/// DESIGN §2's slow transaction met by reconcile: permit `L` published, then edited and published again; then a
/// transaction that began between the two commits its edit of the record, stamped before the published version. The
/// source serves it before a sync reads it. Its content was never acknowledged for the key, so it is no lagging copy
/// but the record's latest version: `stale` with its category's action, and `--repair` sends it. (Until 2026-11-30
/// its row said the enforcement system served an older version, and the repair left it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_sends_a_late_edit_stamped_before_the_published_version() {
    let env = empty_env().await;
    let (_, mut late, published) = permit_published_then_edited(&env, -120, -60).await;
    late["content"] = "批处理事务的修改（最新）".into();
    late["updated_at"] = stamp(-90).into();
    env.source_insert_one(late).await;

    let (_, v, err) = repair_json(&env, "permit").await;
    let row = gap_of(&v, &key("permit", "L"), "stale");
    let detail = row["detail"].as_str().unwrap();
    assert!(!detail.starts_with("执法系统提供的是旧版本"), "{detail}");
    assert_ne!(row["action"].as_str(), Some(OLDER_COPY_ACTION_EN), "{row}");
    assert_eq!(v["repair"]["repushed"], 1, "{} {err}", v["repair"]);
    let held = env.platform_records().await[&key("permit", "L")].clone();
    assert_ne!(held.0, published.0, "{err}");
    assert_eq!(held.2["XK_NR"], "批处理事务的修改（最新）", "{err}");
}

/// The action of an older copy's row (JSON): `--repair` leaves it, check the source; not its category's, which
/// says `--repair` sends or withdraws it.
/// The gap row of `key` in `category` from the JSON report, checked to be an older copy's (its detail names the copy's
/// version `served`, its action says `--repair` leaves it); its detail.
fn older_copy_detail(v: &serde_json::Value, key: &str, category: &str, served: &str) -> String {
    let row = gap_of(v, key, category);
    let detail = row["detail"].as_str().unwrap().to_string();
    assert!(
        detail.starts_with("执法系统提供的是旧版本")
            && detail.contains("serves an older version")
            && detail.contains(served),
        "{detail}"
    );
    assert_older_copy_action(&row);
    detail
}

fn assert_older_copy_action(row: &serde_json::Value) {
    assert_eq!(
        (row["action"].as_str(), row["action_zh"].as_str()),
        (Some(OLDER_COPY_ACTION_EN), Some(OLDER_COPY_ACTION_ZH)),
        "{row}"
    );
}

/// Permit `L` published by a sync as stamped `first` minutes from now, then edited (stamped `then`) and published
/// again: its first version, its second, and the platform's row of the second.
async fn permit_published_then_edited(
    env: &Env,
    first: i64,
    then: i64,
) -> (
    serde_json::Value,
    serde_json::Value,
    (String, String, serde_json::Value, u64),
) {
    let old = record("permit_org", "permit", "L", "2026-11-20");
    let (old, new, s) = synced_then_changed(env, old, first, then, |r| {
        r["content"] = "更正后的许可内容".into();
    })
    .await;
    assert_eq!(s["accepted"], 1, "{s}");
    let published = env.platform_records().await[&key("permit", "L")].clone();
    (old, new, published)
}

/// Source record `first`, stamped `first_at` minutes from now, synced; then changed by `change`, stamped `then`, and
/// synced again (exit 0): both versions, and the second run's summary.
async fn synced_then_changed(
    env: &Env,
    mut first: serde_json::Value,
    first_at: i64,
    then: i64,
    change: impl FnOnce(&mut serde_json::Value),
) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    first["updated_at"] = stamp(first_at).into();
    env.source_insert_one(first.clone()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let mut changed = first.clone();
    change(&mut changed);
    changed["updated_at"] = stamp(then).into();
    env.source_insert_one(changed.clone()).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    (first, changed, s)
}

/// Permit `L` synced (stamped 8 minutes ago), then renumbered `M` at the source (6 minutes ago) and synced again:
/// the first version, and the second run's summary.
async fn permit_renumbered(env: &Env) -> (serde_json::Value, serde_json::Value) {
    let old = record("permit_org", "permit", "L", "2026-11-20");
    let (old, _, s) = synced_then_changed(env, old, -8, -6, |r| {
        r["doc_no"] = "测试〔2026〕M号".into();
    })
    .await;
    (old, s)
}

/// The same lagging source met by a cron sync: the first version, served again stamped as it was (minutes ago),
/// falls in the overlap window every run re-reads, and sync pushed it over the newer one the platform held. Now it is
/// not sent (`older_copies`, exit 1, a warning), and a later edit the source serves is sent as always.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_never_pushes_an_older_version_a_lagging_source_serves_again() {
    let env = empty_env().await;
    let (old, mut new, published) = permit_published_then_edited(&env, -8, -6).await;
    env.source_insert_one(old.clone()).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(
        (&s["older_copies"], &s["pushed"]),
        (&1.into(), &0.into()),
        "{s}"
    );
    assert!(
        err.contains("older than one dualpub has already read"),
        "{err}"
    );
    assert_eq!(
        env.platform_records().await[&key("permit", "L")].0,
        published.0,
        "the platform keeps the newer version"
    );
    // The source catches up with a later edit: sent.
    new["content"] = "再次更正后的许可内容".into();
    new["updated_at"] = stamp(-4).into();
    env.source_insert_one(new).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!((code, s["accepted"].as_u64()), (0, Some(1)), "{s} {err}");
    assert_ne!(
        env.platform_records().await[&key("permit", "L")].0,
        published.0
    );
}

/// The same lagging source after an upgrade: the ledger entry was written by a dualpub before 2026-11-30, which kept
/// only the digest of the content the platform holds, not those it acknowledged before. The first version, served
/// again, has content the entry does not know was acknowledged; taken for a late edit, it was pushed over the newer
/// one. The entry's copies are judged by their stamps alone, as before, until an acknowledgement of new content
/// rewrites it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_copy_is_not_taken_for_a_late_edit_by_a_ledger_entry_written_before_the_upgrade()
{
    let env = empty_env().await;
    let (old, _, published) = permit_published_then_edited(&env, -8, -6).await;
    {
        let store = read_store(&env.store_path());
        let k = key("permit", "L");
        let mut entry = store.ledger_get(&k).unwrap().expect("published");
        assert!(
            entry.earlier.as_ref().is_some_and(|e| e.len() == 1),
            "{entry:?}"
        );
        entry.earlier = None;
        store
            .commit_receipt(&dualpub::store::ReceiptCommit {
                ledger: vec![(k, entry)],
                ..Default::default()
            })
            .unwrap();
        store.flush().unwrap();
    }
    env.source_insert_one(old).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(
        (code, &s["older_copies"], &s["pushed"]),
        (1, &1.into(), &0.into()),
        "{s} {err}"
    );
    assert_eq!(
        env.platform_records().await[&key("permit", "L")].0,
        published.0,
        "the platform keeps the newer version"
    );
}

/// Permit `L` renumbered at the source (its second version has number `M`): sync publishes `M` and withdraws the old
/// number. Then a lagging source serves the first version again, stamped as it was: it is older than what the
/// platform holds for either number, so sync neither publishes the old number again nor takes `M` down as the number
/// the record left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_copy_of_a_renumbered_record_changes_nothing() {
    let env = empty_env().await;
    let (old, s) = permit_renumbered(&env).await;
    assert_eq!(
        (s["accepted"].as_u64(), s["withdrawn"].as_u64()),
        (Some(1), Some(1)),
        "{s}"
    );
    env.source_insert_one(old).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(
        (&s["older_copies"], &s["pushed"]),
        (&1.into(), &0.into()),
        "{s}"
    );
    let held = env.platform_records().await;
    assert_eq!(held[&key("permit", "M")].1, "public");
    assert_eq!(held[&key("permit", "L")].1, "withdrawn");
    let store = read_store(&env.store_path());
    assert_eq!(
        store
            .by_source_get(dualpub::model::Kind::Permit, "L")
            .unwrap(),
        Some(key("permit", "M"))
    );
}

/// The lagging copy of a renumbered record (its first number) in the same page as another record entered with the
/// number the record holds now: the copy, not sent, still counted as the record's latest version in the page
/// (`PageKeys::wants`), so the record was taken to have given its number up, and the other record took it over on
/// the platform instead of going to quarantine (`key_reused`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_copy_of_a_renumbered_record_never_gives_its_number_away() {
    let env = empty_env().await;
    let (old, s) = permit_renumbered(&env).await;
    assert_eq!(s["accepted"].as_u64(), Some(1), "{s}");
    let published = env.platform_records().await[&key("permit", "M")].clone();
    env.source_insert_one(old).await;
    let mut other = record("permit_org", "permit", "S", "2026-11-21");
    other["doc_no"] = "测试〔2026〕M号".into();
    other["content"] = "另一条许可".into();
    other["updated_at"] = stamp(-2).into();
    env.source_insert_one(other).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(
        (&s["older_copies"], &s["quarantined"], &s["pushed"]),
        (&1.into(), &1.into(), &0.into()),
        "{s} {err}"
    );
    assert_eq!(env.platform_records().await[&key("permit", "M")], published);
    let store = read_store(&env.store_path());
    let q = store
        .quarantine_get(dualpub::model::Kind::Permit, "S")
        .unwrap()
        .expect("S waits for the number");
    assert_eq!(q.findings[0].code, "key_reused");
}

/// Permit `L` published, then edited into a version that fails validation: in quarantine, the published version
/// stays public. A lagging source then serves the published version again: valid, it took the record out of
/// quarantine as if it had been fixed, and the findings of the source's latest version were gone. Now it is an older
/// copy (`older_copies`), and the entry stays until the source serves a fixed version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_copy_never_takes_a_later_version_out_of_quarantine() {
    let env = empty_env().await;
    let (_, mut new, published) = permit_published_then_edited(&env, -8, -6).await;
    let fixed = new.clone();
    new["party"]["credit_code"] = "914101004157892343".into();
    new["updated_at"] = stamp(-4).into();
    env.source_insert_one(new).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!((code, s["quarantined"].as_u64()), (1, Some(1)), "{s} {err}");
    // The lagging replica serves the published version, stamped as it was.
    env.source_insert_one(fixed.clone()).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(
        (&s["older_copies"], &s["pushed"]),
        (&1.into(), &0.into()),
        "{s}"
    );
    let store = read_store(&env.store_path());
    let q = store
        .quarantine_get(dualpub::model::Kind::Permit, "L")
        .unwrap()
        .expect("still in quarantine");
    assert_eq!(q.source["party"]["credit_code"], "914101004157892343");
    drop(store);
    assert_eq!(env.platform_records().await[&key("permit", "L")], published);
    // The source fixes the record: it leaves quarantine.
    let mut fixed = fixed;
    fixed["updated_at"] = stamp(-2).into();
    env.source_insert_one(fixed).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 0);
}

/// The same lagging copy, when the entry of the later version keeps it as its JSON text (a lone surrogate in a field
/// dualpub does not read: no `serde_json::Value` holds it). The entry's version was not read from that text, so the
/// published version, served again, took the record out of quarantine as if it had been fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_copy_never_takes_a_later_version_kept_as_text_out_of_quarantine() {
    let env = empty_env().await;
    let proxy = feed_text_proxy(
        env.source.url(),
        Arc::new(|_: &str, text: String| {
            text.replace(
                r#""content":"无法保存的版本"#,
                r#""vendor_note":"\ud800","content":"无法保存的版本"#,
            )
        }),
    )
    .await;
    let through = [("DUALPUB_SOURCE_URL", proxy.as_str())];
    let (_, mut new, published) = permit_published_then_edited(&env, -8, -6).await;
    let fixed = new.clone();
    new["content"] = "无法保存的版本\u{1}".into();
    new["updated_at"] = stamp(-4).into();
    env.source_insert_one(new).await;
    let (code, s, err) = env.sync_with(&through).await;
    assert_eq!((code, s["quarantined"].as_u64()), (1, Some(1)), "{s} {err}");
    let q = read_store(&env.store_path())
        .quarantine_get(dualpub::model::Kind::Permit, "L")
        .unwrap()
        .expect("in quarantine");
    assert!(q.source.is_string(), "kept as its text: {:?}", q.source);
    // The lagging replica serves the published version, stamped as it was.
    env.source_insert_one(fixed).await;
    let (code, s, err) = env.sync_with(&through).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(
        (&s["older_copies"], &s["pushed"]),
        (&1.into(), &0.into()),
        "{s}"
    );
    let q = read_store(&env.store_path())
        .quarantine_get(dualpub::model::Kind::Permit, "L")
        .unwrap();
    assert!(
        q.is_some_and(|q| q
            .source
            .as_str()
            .is_some_and(|t| t.contains("无法保存的版本"))),
        "the later version stays in quarantine"
    );
    assert_eq!(env.platform_records().await[&key("permit", "L")], published);
}

/// A lagging copy that the source schema cannot read (a field of the wrong type in an old version): it went to
/// quarantine without the older-copy check, as if it were the record's latest version — listed as invalid while the
/// platform held a later version, and, once a later version was in quarantine, replacing that entry and its
/// findings. Its `id` and `updated_at` are still readable (`RawHead`), so it is an older copy like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_copy_the_schema_cannot_read_changes_nothing() {
    let env = empty_env().await;
    // The source simulator takes only readable records: the feed's text is changed on its way.
    let proxy = feed_text_proxy(
        env.source.url(),
        Arc::new(|_: &str, text: String| {
            text.replace(r#""content":"不可读的旧版本""#, r#""content":5"#)
        }),
    )
    .await;
    let through = [("DUALPUB_SOURCE_URL", proxy.as_str())];
    let (mut old, mut new, published) = permit_published_then_edited(&env, -8, -6).await;
    old["content"] = "不可读的旧版本".into();
    env.source_insert_one(old.clone()).await;
    let (code, s, err) = env.sync_with(&through).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(
        (&s["older_copies"], &s["quarantined"], &s["pushed"]),
        (&1.into(), &0.into(), &0.into()),
        "{s}"
    );
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 0);
    // A later version that fails validation goes to quarantine; the unreadable older copy served again leaves it.
    new["party"]["credit_code"] = "914101004157892343".into();
    new["updated_at"] = stamp(-4).into();
    env.source_insert_one(new).await;
    let (code, s, err) = env.sync_with(&through).await;
    assert_eq!((code, s["quarantined"].as_u64()), (1, Some(1)), "{s} {err}");
    env.source_insert_one(old).await;
    let (code, s, err) = env.sync_with(&through).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(
        (&s["older_copies"], &s["quarantined"]),
        (&1.into(), &0.into()),
        "{s}"
    );
    let q = read_store(&env.store_path())
        .quarantine_get(dualpub::model::Kind::Permit, "L")
        .unwrap()
        .expect("the later version stays in quarantine");
    assert_eq!(q.source["party"]["credit_code"], "914101004157892343");
    assert_eq!(env.platform_records().await[&key("permit", "L")], published);
}

/// A version stamped in the future (a writer's clock ahead) is read and put in the outbox while the platform is
/// down; an edit saved meanwhile by a writer whose clock is right is stamped before it. The platform comes back
/// after the future stamp has passed and refuses the first: its entry in quarantine was trusted as "not stamped in
/// the future" by the time of the receipt (`last_seen`), not the time it was read, so the edit was taken for an older
/// copy and never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_stamped_before_a_future_version_refused_late_is_sent() {
    edit_stamped_before_a_future_version_settled_late(true).await;
}

/// The same with the future version acknowledged when the platform comes back: the ledger trusted it by the time of
/// the receipt (`last_pushed`), so the edit was taken for an older copy and never sent. `last_pushed` is now when the
/// message that carried the version was built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_stamped_before_a_future_version_acknowledged_late_is_sent() {
    edit_stamped_before_a_future_version_settled_late(false).await;
}

/// The same within one sync that rides out an outage: the feed is read a page or two ahead of what is sent, so a
/// page read before the platform went down is made into its message only when it is back. A version on that page
/// stamped in the future when it was read, trusted by when its message was made, made the edit saved meanwhile
/// (stamped right, before it) an older copy, never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_stamped_before_a_future_version_read_ahead_of_an_outage_is_sent() {
    let env = empty_env().await;
    let (down, proxy) = platform_down(&env).await;
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pages = read.clone();
    let feed = feed_text_proxy(
        env.source.url(),
        Arc::new(move |_: &str, text: String| {
            pages.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            text
        }),
    )
    .await;
    // Two records on the first page, each its own message, one message at a time: the second waits for the
    // first, which waits for the platform; the page after them is read meanwhile.
    for (id, at) in [("A", -9), ("B", -8)] {
        let mut r = record("permit_org", "permit", id, "2026-11-20");
        r["updated_at"] = stamp(at).into();
        env.source_insert_one(r).await;
    }
    let mut first = record("permit_org", "permit", "L", "2026-11-20");
    // (5 s: the run reads two pages before the edit; the wait is until the stamp has passed either way)
    let ahead = chrono::Utc::now() + chrono::Duration::seconds(5);
    first["updated_at"] = stamped(ahead).into();
    env.source_insert_one(first.clone()).await;
    let mut sync = env.command(&["sync", "--json", "--today", TODAY]);
    for (k, v) in [
        ("DUALPUB_PLATFORM_URL", proxy.as_str()),
        ("DUALPUB_SOURCE_URL", feed.as_str()),
        ("DUALPUB_SOURCE_PAGE_SIZE", "2"),
        ("DUALPUB_PLATFORM_BATCH_SIZE", "1"),
        ("DUALPUB_PLATFORM_CONCURRENCY", "1"),
        ("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "60"),
    ] {
        sync.env(k, v);
    }
    let sync = tokio::task::spawn_blocking(move || sync.output().unwrap());
    // Both pages read (the second holds L).
    while read.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The edit, saved after the feed was read, stamped right: before the future stamp.
    let mut edit = first;
    edit["content"] = "更正后的许可内容".into();
    edit["updated_at"] = stamp(0).into();
    assert!(
        chrono::Utc::now() < ahead,
        "the run took too long to read the feed to test this"
    );
    env.source_insert_one(edit).await;
    while chrono::Utc::now() <= ahead + chrono::Duration::milliseconds(200) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = sync.await.unwrap();
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        (out.status.code(), &s["accepted"]),
        (Some(0), &3.into()),
        "{s} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(
        (code, &s["accepted"], &s["older_copies"]),
        (0, &1.into(), &0.into()),
        "{s} {err}"
    );
    assert_eq!(
        env.platform_records().await[&key("permit", "L")].2["XK_NR"],
        "更正后的许可内容"
    );
}

/// The same with the future version pushed by `reconcile --repair`: a repair pushes what it read of the feed only
/// after the platform is listed (and the outbox drained), so the message is made well after its records were read.
/// Trusted by when that message was made, the version, stamped in the future when it was read, made the edit saved
/// meanwhile (stamped right, before it) an older copy: never sent by sync, nor by a repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_stamped_before_a_future_version_a_repair_pushed_late_is_sent() {
    let env = empty_env().await;
    let mut first = record("permit_org", "permit", "L", "2026-11-20");
    first["updated_at"] = stamp(-8).into();
    env.source_insert_one(first.clone()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    // Stamped 3 s ahead; the repair reads it at once, and makes its message only after the platform has answered
    // its slow calls.
    let ahead = chrono::Utc::now() + chrono::Duration::seconds(3);
    let mut future = first.clone();
    future["party"]["name"] = "改名后的有限公司".into();
    future["updated_at"] = stamped(ahead).into();
    env.source_insert_one(future).await;
    let read = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = read.clone();
    let proxy = feed_text_proxy(
        env.source.url(),
        Arc::new(move |_: &str, text: String| {
            seen.store(true, std::sync::atomic::Ordering::SeqCst);
            text
        }),
    )
    .await;
    env.platform.set_faults(Faults {
        latency_ms: 2500,
        ..Faults::default()
    });
    let mut repair = env.command(&[
        "reconcile",
        "--today",
        TODAY,
        "--format",
        "json",
        "--kind",
        "permit",
        "--repair",
    ]);
    repair.env("DUALPUB_SOURCE_URL", &proxy);
    let repair = tokio::task::spawn_blocking(move || repair.output().unwrap());
    while !read.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The edit, saved after the repair read the feed, stamped right: before the future stamp.
    let mut edit = first;
    edit["content"] = "更正后的许可内容".into();
    edit["updated_at"] = stamp(0).into();
    assert!(
        chrono::Utc::now() < ahead,
        "the repair took too long to read the feed to test this"
    );
    env.source_insert_one(edit).await;
    let out = repair.await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        v["repair"]["repushed"],
        1,
        "{v} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        chrono::Utc::now() > ahead,
        "the repair ended before the future stamp passed: nothing tested"
    );
    env.platform.set_faults(Faults::default());
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(
        (code, &s["accepted"], &s["older_copies"]),
        (0, &1.into(), &0.into()),
        "{s} {err}"
    );
    assert_eq!(
        env.platform_records().await[&key("permit", "L")].2["XK_NR"],
        "更正后的许可内容"
    );
}

/// A gateway to the platform whose `/api/exchange` answers 503 until the flag it returns is cleared; its URL.
async fn platform_down(env: &Env) -> (Arc<std::sync::atomic::AtomicBool>, String) {
    let down = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let gate = down.clone();
    let proxy = platform_proxy(
        env.platform.url(),
        Arc::new(move |path: &str, status: u16, body: Vec<u8>| {
            if path == "/api/exchange" && gate.load(std::sync::atomic::Ordering::SeqCst) {
                (503, b"down".to_vec())
            } else {
                (status, body)
            }
        }),
    )
    .await;
    (down, proxy)
}

/// [`an_edit_stamped_before_a_future_version_refused_late_is_sent`], the future version refused or taken.
async fn edit_stamped_before_a_future_version_settled_late(refuse: bool) {
    let refused = "拒收的当事人有限公司";
    let env = spawn_with(
        GenConfig {
            records: 0,
            ..GenConfig::default()
        },
        PlatformSimConfig {
            strict: Some(StrictProfile {
                max_len: None,
                refused_parties: vec![refused.into()],
            }),
            ..Default::default()
        },
        "",
    )
    .await;
    let (down, proxy) = platform_down(&env).await;
    let through = [
        ("DUALPUB_PLATFORM_URL", proxy.as_str()),
        ("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "1"),
    ];
    let mut first = record("permit_org", "permit", "L", "2026-11-20");
    first["updated_at"] = stamp(-8).into();
    env.source_insert_one(first.clone()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    // Stamped 6 s ahead, and read while the platform is down: it stays in the outbox.
    let ahead = chrono::Utc::now() + chrono::Duration::seconds(6);
    let mut future = first.clone();
    future["party"]["name"] = if refuse {
        refused
    } else {
        "改名后的有限公司"
    }
    .into();
    future["updated_at"] = stamped(ahead).into();
    env.source_insert_one(future).await;
    let (code, s, err) = env.sync_with(&through).await;
    assert_eq!(code, 3, "{s} {err}");
    // The edit, stamped right: before the future stamp.
    let mut edit = first;
    edit["content"] = "更正后的许可内容".into();
    edit["updated_at"] = stamp(0).into();
    assert!(
        chrono::Utc::now() < ahead,
        "the run took too long to test this"
    );
    env.source_insert_one(edit).await;
    while chrono::Utc::now() <= ahead + chrono::Duration::milliseconds(200) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    down.store(false, std::sync::atomic::Ordering::SeqCst);
    let (code, s, err) = env.sync_with(&through).await;
    let counts = |k: &str| s[k].as_u64().unwrap_or(u64::MAX);
    assert_eq!(
        (
            code,
            counts("rejected"),
            counts("accepted"),
            counts("older_copies")
        ),
        if refuse { (1, 1, 1, 0) } else { (0, 0, 2, 0) },
        "{s} {err}"
    );
    assert_eq!(
        env.platform_records().await[&key("permit", "L")].2["XK_NR"],
        "更正后的许可内容"
    );
}

/// Penalty `R` published, edited, and published again by sync; then a lagging source serves a version stamped
/// between the two that sync never read: revoked by mistake, in a version that fails validation. The platform's row
/// of the later version, and the lagging copy.
async fn penalty_published_twice_then_a_lagging_invalid_revoked_copy(
    env: &Env,
) -> ((String, String, serde_json::Value, u64), serde_json::Value) {
    let first = penalty("penalty_multi_category", "R", "2025-12-01", "2027-11-20");
    let (first, _, s) = synced_then_changed(env, first, -8, -6, |r| {
        r["remarks"] = "更正".into();
    })
    .await;
    assert_eq!(s["accepted"], 1, "{s}");
    let published = env.platform_records().await[&key("penalty", "R")].clone();
    let mut between = first;
    between["status"] = "revoked".into();
    between["remarks"] = "\u{1}撤销".into();
    between["updated_at"] = stamp(-7).into();
    env.source_insert_one(between.clone()).await;
    (published, between)
}

/// The lagging invalid revoked copy met by sync. An invalid revoked penalty is taken down, so sync withdrew the
/// decision the platform held in its later version, and the copy's findings went to quarantine as the record's. Now
/// an invalid copy is checked for its age as a valid one is: not sent, not quarantined, counted `older_copies`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_invalid_revoked_copy_never_takes_a_later_version_down() {
    let env = empty_env().await;
    let (published, _) = penalty_published_twice_then_a_lagging_invalid_revoked_copy(&env).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(
        (&s["older_copies"], &s["withdrawn"], &s["quarantined"]),
        (&1.into(), &0.into(), &0.into()),
        "{s}"
    );
    assert_eq!(
        env.platform_records().await[&key("penalty", "R")],
        published
    );
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 0);
}

/// The same copy met by `reconcile --repair`: listed (`quarantined`, and `stale` as revoked), and the repair withdrew
/// the later version the platform held. Now the `stale` row says the copy is older, and the repair leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_never_takes_a_later_version_down_on_a_lagging_invalid_copy() {
    let env = empty_env().await;
    let (published, between) =
        penalty_published_twice_then_a_lagging_invalid_revoked_copy(&env).await;
    let (code, v, err) = repair_json(&env, "penalty").await;
    assert_eq!(code, Some(1), "{err}");
    let k = key("penalty", "R");
    assert_eq!(
        env.platform_records().await[&k],
        published,
        "{} {err}",
        v["repair"]
    );
    assert_eq!(v["repair"]["withdrawn"], 0, "{}", v["repair"]);
    older_copy_detail(&v, &k, "stale", between["updated_at"].as_str().unwrap());
}

/// A penalty revoked at the source and withdrawn by sync; then the source serves its earlier, public version
/// again. `--repair` took it for `missing` and published the revoked decision again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_never_publishes_again_a_penalty_revoked_since() {
    let env = empty_env().await;
    let active = penalty("penalty_multi_category", "R", "2025-11-17", "2027-11-20");
    let (active, _, s) = synced_then_changed(&env, active, -120, -60, |r| {
        r["status"] = "revoked".into();
    })
    .await;
    assert_eq!(s["withdrawn"], 1, "{s}");
    env.source_insert_one(active.clone()).await;

    let (code, v, err) = repair_json(&env, "penalty").await;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(
        platform_status(&env, &key("penalty", "R")).await.as_deref(),
        Some("withdrawn"),
        "it was revoked: {} {err}",
        v["repair"]
    );
    let served = active["updated_at"].as_str().unwrap();
    older_copy_detail(&v, &key("penalty", "R"), "missing", served);
}

/// A penalty whose display period was extended at the source (and on the platform, by sync); then a lagging source
/// serves its earlier version again, whose display end has passed. `expired` says the platform still shows a
/// penalty past its display period, and `--repair` withdraws such penalties: on the word of the older copy it would
/// take down a decision the platform lawfully shows. The row is listed (the older copy's display end has passed),
/// says why it is left, and the penalty stays public.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_never_withdraws_a_penalty_whose_display_was_extended_since() {
    let env = empty_env().await;
    let first = penalty("penalty_multi_category", "E", "2025-11-17", "2026-11-30");
    let (first, _, s) = synced_then_changed(&env, first, -120, -60, |r| {
        r["display_until"] = "2027-11-17".into();
    })
    .await;
    assert_eq!(s["accepted"], 1, "{s}");
    let k = key("penalty", "E");
    let published = env.platform_records().await[&k].clone();
    assert_eq!(
        (published.1.as_str(), published.2["CF_GSJZQ"].as_str()),
        ("public", Some("2027/11/17"))
    );
    // the replica lags: the source serves the first version again, stamped as it was
    env.source_insert_one(first.clone()).await;

    // A few days on, past the first version's display end.
    let (out, v) = env
        .reconcile_json("2026-12-02", &["--kind", "penalty", "--repair"])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        env.platform_records().await[&k],
        published,
        "the extended publication stays: {} {err}",
        v["repair"]
    );
    assert_eq!(
        (&v["repair"]["withdrawn"], &v["repair"]["repushed"]),
        (&0.into(), &0.into()),
        "{}",
        v["repair"]
    );
    let detail = older_copy_detail(&v, &k, "expired", first["updated_at"].as_str().unwrap());
    assert!(
        detail.contains("display ended 2026-11-30, still public"),
        "{detail}"
    );
    assert!(
        v["repair"]["left"].to_string().contains(
            "1 record(s) not repaired: the enforcement system serves them in an older version"
        ),
        "{}",
        v["repair"]
    );
}

/// The version the platform holds was stamped in the future when sync sent it (a writer's clock ahead), so its
/// `updated_at` says nothing of what came after: a later edit stamped correctly is earlier by the clock. Sync
/// reads such edits (its checkpoint stays at its own clock); one committed too late for sync is `stale`, and
/// `--repair` must send it, or nothing ever would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_sends_a_later_edit_stamped_before_a_future_stamped_version() {
    let env = empty_env().await;
    let mut ahead = record("permit_org", "permit", "F", "2026-11-20");
    ahead["updated_at"] = stamp(24 * 60).into();
    env.source_insert_one(ahead.clone()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let mut edit = ahead;
    edit["content"] = "更正后的许可内容".into();
    edit["updated_at"] = stamp(-1).into();
    env.source_insert_one(edit).await;

    let (code, v, err) = repair_json(&env, "permit").await;
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(v["repair"]["repushed"], 1, "{} {err}", v["repair"]);
    assert_eq!(
        env.platform_records().await[&key("permit", "F")].2["XK_NR"],
        "更正后的许可内容"
    );
}

/// The version the platform holds was stamped a few seconds in the future when sync sent it; an edit stamped before
/// that (correctly, later in real time) was sent once its stamp was past, and the platform rejected it. That
/// rejected attempt moved the ledger's `last_pushed` past the future stamp, and the version it says nothing of
/// became "trusted": once the platform was mended, `quarantine retry` skipped the edit as an older copy, and no run
/// would ever send it. The trust is the time the version the platform follows was acknowledged, not the last attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_attempt_never_makes_a_future_stamped_version_trusted() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let env = empty_env().await;
    let k = key("permit", "S");
    let rejecting = Arc::new(AtomicBool::new(false));
    let proxy = {
        let (rejecting, k) = (rejecting.clone(), k.clone());
        platform_proxy(
            env.platform.url(),
            receipt_rewrite(move |r: &mut dualpub::xml::Receipt| {
                if rejecting.load(Ordering::SeqCst) {
                    for res in r.results.iter_mut().filter(|res| res.key == k) {
                        res.status = dualpub::xml::ResultStatus::Rejected;
                        res.code = "E_CONTENT".into();
                        res.message = "内容不符".into();
                    }
                }
            }),
        )
        .await
    };
    let via_proxy = [("DUALPUB_PLATFORM_URL", proxy.as_str())];
    let secs = |s: i64| {
        (chrono::Utc::now() + chrono::Duration::seconds(s))
            .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
    };
    let mut ahead = record("permit_org", "permit", "S", "2026-11-20");
    let mut edit = ahead.clone();
    ahead["updated_at"] = secs(4).into();
    edit["updated_at"] = secs(2).into();
    edit["content"] = "更正后的许可内容".into();
    env.source_insert_one(ahead).await;
    let (code, _, err) = env.sync_with(&via_proxy).await;
    assert_eq!(code, 0, "{err}");
    env.source_insert_one(edit).await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    rejecting.store(true, Ordering::SeqCst);
    let (code, s, err) = env.sync_with(&via_proxy).await;
    assert_eq!((code, s["rejected"].as_u64()), (1, Some(1)), "{s} {err}");
    rejecting.store(false, Ordering::SeqCst);
    let out = env.dualpub(&["quarantine", "retry"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        !err.contains("older than one dualpub has already read"),
        "{err}"
    );
    assert_eq!(
        env.platform_records().await[&k].2["XK_NR"],
        "更正后的许可内容"
    );
}

/// A withdrawal the platform answers with "nothing to take down" (`unknown_key`: it lost the record, here by an admin
/// delete; or `unchanged`: it was not public) was counted in no field of the run's summary: `pushed` 1 and
/// accepted, already held, rejected and withdrawn all 0, so the summary did not add up. It is `platform_unchanged`
/// (the platform already was as the message asks; "already held" in the table).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_with_nothing_to_take_down_is_counted_as_already_held() {
    let env = empty_env().await;
    let p = penalty("penalty_multi_category", "W", "2026-10-12", "2027-10-12");
    env.source_insert(serde_json::json!([p.clone()])).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(
        (code, &s["accepted"]),
        (0, &serde_json::json!(1)),
        "{s} {err}"
    );
    let held = env.platform_records().await;
    let key = held.keys().next().unwrap().clone();
    assert!(drop_from_platform(&env, &key).await.status().is_success());
    let mut revoked = p;
    revoked["status"] = "revoked".into();
    env.source_insert(serde_json::json!([revoked])).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["pushed"], 1, "{s}");
    assert_eq!(s["withdrawn"], 0, "{s}");
    assert_eq!(s["platform_unchanged"], 1, "{s}");
    let answered: u64 = ["accepted", "platform_unchanged", "rejected", "withdrawn"]
        .iter()
        .map(|f| s[f].as_u64().unwrap())
        .sum();
    assert_eq!(s["pushed"].as_u64(), Some(answered), "{s}");
}

/// A permit numbered by its holder's ID number (a 特种作业操作证 is numbered `T` + the ID number, and a permit
/// without a document number goes out under its permit number, XK_WSH): the record key and the document number
/// hold the party's ID number. Every report masks it there too, as it masks the 证件号码 column beside them (it
/// used to print it whole in the key and document-number columns of every format).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_number_in_the_document_number_is_masked_in_every_report() {
    let env = empty_env().await;
    let id_no = "410302199211011524";
    let mut with_t = record("permit_person", "permit", "T1", "2026-11-02");
    with_t["doc_no"] = serde_json::Value::Null;
    with_t["permit_no"] = format!("T{id_no}").into();
    let mut bare = record("permit_person", "permit", "T2", "2026-11-02");
    bare["doc_no"] = serde_json::Value::Null;
    bare["permit_no"] = id_no.into();
    env.source_insert(serde_json::json!([with_t, bare])).await;
    let dir = env.dir.path().join("reports");
    std::fs::create_dir(&dir).unwrap();
    let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let mut seen = Vec::new();
    for (format, out) in [
        ("table", None),
        ("json", None),
        ("csv", Some(path("csv"))),
        ("xlsx", Some(path("r.xlsx"))),
    ] {
        let mut args = vec!["reconcile", "--today", TODAY, "--format", format];
        if let Some(out) = &out {
            args.extend(["--out", out.as_str()]);
        }
        let o = env.dualpub(&args).await;
        assert_eq!(
            o.status.code(),
            Some(1),
            "{format}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let text = match format {
            "csv" => std::fs::read_to_string(dir.join("csv/overdue.csv")).unwrap(),
            "xlsx" => {
                let mut wb: calamine::Xlsx<_> = calamine::open_workbook(path("r.xlsx")).unwrap();
                let mut cells = String::new();
                for name in wb.sheet_names() {
                    for row in wb.worksheet_range(&name).unwrap().rows() {
                        for c in row {
                            cells.push_str(&c.to_string());
                            cells.push('\t');
                        }
                    }
                }
                cells
            }
            _ => String::from_utf8_lossy(&o.stdout).into_owned(),
        };
        assert!(text.contains("410302********1524"), "{format}: {text}");
        assert!(
            !text.contains(id_no),
            "{format} shows the ID number: {text}"
        );
        seen.push(format);
    }
    assert_eq!(seen.len(), 4);
}

/// 完整率 is graded as data items supplied / data items required (reference §6; full marks at 95 %): a record
/// holding every item its party category requires is complete, whatever optional items (备注, 许可证书名称) it
/// leaves empty, and a missing required item counts against it. It used to count every item that applies to the
/// category as expected, so two complete, accepted permits of natural persons without remarks scored 94.7 %, under
/// the platform's full-marks line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completeness_counts_the_items_a_record_requires() {
    let env = empty_env().await;
    let mut complete = record("permit_person", "permit", "P1", "2026-11-20");
    complete["remarks"] = serde_json::Value::Null;
    complete["cert_name"] = serde_json::Value::Null;
    let mut lacking = record("permit_person", "permit", "P2", "2026-11-20");
    lacking["content"] = serde_json::Value::Null;
    env.source_insert(serde_json::json!([complete])).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let rates = |v: &serde_json::Value| v["rates"]["permit"].clone();
    async fn report(env: &Env) -> serde_json::Value {
        let out = env
            .dualpub(&["reconcile", "--today", TODAY, "--format", "json"])
            .await;
        serde_json::from_slice(&out.stdout).unwrap()
    }
    // 自然人: 名称, 类别, 证件类型, 证件号码, 文书名称, 文书号, 许可类别, 内容, 决定日期, 有效期自, 有效期至,
    // 许可机关 and its code, 状态, 数据来源单位 and its code.
    let v = report(&env).await;
    assert_eq!(rates(&v)["filled_items"], 16, "{v}");
    assert_eq!(rates(&v)["expected_items"], 16, "{v}");
    assert_eq!(rates(&v)["completeness"], 1.0, "{v}");
    env.source_insert(serde_json::json!([lacking])).await;
    let v = report(&env).await;
    assert_eq!(rates(&v)["filled_items"], 31, "{v}");
    assert_eq!(rates(&v)["expected_items"], 32, "{v}");
}

/// A permit whose document number is empty text rather than null goes out under its permit number (XK_WSH takes
/// the first non-empty of the two); the reports' 文书号 column shows that number, as the key does (it was empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_document_number_is_shown_as_the_permit_number_it_went_out_under() {
    let env = empty_env().await;
    let mut r = record("permit_person", "permit", "E1", "2026-11-02");
    r["doc_no"] = " ".into();
    r["permit_no"] = "豫应急许〔2026〕77号".into();
    env.source_insert(serde_json::json!([r])).await;
    let out = env
        .dualpub(&["reconcile", "--today", TODAY, "--format", "json"])
        .await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let gaps = v["gaps"].as_array().unwrap();
    assert!(!gaps.is_empty(), "{v}");
    for g in gaps {
        assert_eq!(
            g["key"],
            format!("XZXK:{}:豫应急许〔2026〕77号", agency_code()),
            "{g}"
        );
        assert_eq!(g["doc_no"], "豫应急许〔2026〕77号", "{g}");
    }
}
