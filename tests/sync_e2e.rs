//! End-to-end: the real `dualpub sync` binary against both simulators over loopback, with a real sled store.

mod common;

use common::*;
use dualpub::model::Kind;
use dualpub::sim::gen::GenConfig;
use dualpub::sim::platform::Faults;
use std::collections::BTreeMap;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_update_revoke_expire() {
    let gen_cfg = GenConfig {
        records: 10_000,
        seed: 11,
        invalid_rate: 0.02,
        ..GenConfig::default()
    };
    let env = spawn(gen_cfg.clone(), Faults::default()).await;
    let (expected, invalid) = expected_public(&gen_cfg, today());
    assert!(
        invalid.len() > 100,
        "the generator made {} invalid records",
        invalid.len()
    );

    // 1. backfill: exactly the valid records, with matching digests; the invalid ones quarantined.
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "quarantined records need a person: {err}");
    assert_eq!(s["read"], 10_000, "{s}");
    // a first run finds nothing already current; what it does not send is what must not be public
    assert_eq!(s["unchanged"], 0, "{s}");
    assert_eq!(
        s["not_public"],
        (10_000 - invalid.len() - expected.len()) as u64,
        "{s}"
    );
    let held = env.platform_records().await;
    let public = public_of(&held);
    assert_eq!(public.len(), expected.len());
    assert!(
        public == expected,
        "the platform's public set differs from the valid source set"
    );
    {
        let store = read_store(&env.store_path());
        let q = store.quarantine_all().unwrap();
        let got: BTreeMap<String, Vec<String>> = q
            .iter()
            .map(|e| {
                (
                    e.source_id.clone(),
                    e.findings.iter().map(|f| f.code.clone()).collect(),
                )
            })
            .collect();
        assert_eq!(got.len(), invalid.len());
        for (_, id, code) in &invalid {
            let codes = got
                .get(id)
                .unwrap_or_else(|| panic!("{id} is not in quarantine"));
            assert!(
                codes.iter().any(|c| c == code),
                "{id}: findings {codes:?} lack the intended {code}"
            );
        }
        assert_eq!(store.outbox_len(), 0);
    }

    // 2. an immediate second run pushes nothing.
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["pushed"], 0, "{s}");

    // 3. 100 source updates → the next run pushes exactly those 100.
    let ids: Vec<String> = held
        .iter()
        .filter(|(k, v)| k.starts_with("XZXK") && v.1 == "public")
        .take(100)
        .map(|(_, v)| v.2["XK_WSH"].as_str().unwrap().to_string())
        .collect();
    // find the source ids of those permits by document number
    let mut source_ids = Vec::new();
    for i in 0..gen_cfg.count(Kind::Permit) {
        let r = dualpub::sim::gen::record(&gen_cfg, Kind::Permit, i);
        if r.doc_no
            .as_deref()
            .is_some_and(|d| ids.iter().any(|x| x == d.trim()))
        {
            source_ids.push(r.id.clone());
        }
    }
    assert_eq!(source_ids.len(), 100);
    env.admin_post(
        format!("{}/admin/touch", env.source.url()),
        serde_json::json!({"kind": "permit", "ids": source_ids}),
    )
    .await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["pushed"], 100, "{s}");
    assert_eq!(s["accepted"], 100, "{s}");

    // 4. a revoked permit is re-sent with XK_ZT = 2; a revoked penalty and an expired one are withdrawn.
    let permit_id = &source_ids[0];
    let mut permit = env.source_record(permit_id).await;
    permit["status"] = "revoked".into();
    permit["updated_at"] = serde_json::Value::Null;
    let public_penalties: Vec<String> = public
        .keys()
        .filter(|k| k.starts_with("XZCF"))
        .take(2)
        .cloned()
        .collect();
    let mut pen_ids = Vec::new();
    for i in 0..gen_cfg.count(Kind::Penalty) {
        let r = dualpub::sim::gen::record(&gen_cfg, Kind::Penalty, i);
        if public_penalties
            .iter()
            .any(|k| k.ends_with(&format!(":{}", r.doc_no.as_deref().unwrap_or("").trim())))
        {
            pen_ids.push(r);
        }
    }
    assert_eq!(pen_ids.len(), 2);
    let mut revoked = serde_json::to_value(&pen_ids[0]).unwrap();
    revoked["status"] = "revoked".into();
    revoked["updated_at"] = serde_json::Value::Null;
    revoked["kind"] = "penalty".into();
    let mut expired = serde_json::to_value(&pen_ids[1]).unwrap();
    // a display period of at least the legal year (安全生产) that has ended
    expired["decided_on"] = "2025-11-03".into();
    expired["effective_until"] = "2026-11-03".into();
    expired["display_until"] = "2026-11-20".into();
    expired["updated_at"] = serde_json::Value::Null;
    expired["kind"] = "penalty".into();
    permit["kind"] = "permit".into();
    env.source_insert(serde_json::json!([permit, revoked, expired]))
        .await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["withdrawn"], 2, "{s}");
    let held = env.platform_records().await;
    let pk = held
        .iter()
        .find(|(k, _)| {
            k.starts_with("XZXK")
                && k.ends_with(&format!(":{}", permit["doc_no"].as_str().unwrap().trim()))
        })
        .unwrap();
    assert_eq!(pk.1 .1, "public");
    assert_eq!(
        pk.1 .2["XK_ZT"], "2",
        "a revoked permit stays public with XK_ZT = 2"
    );
    for k in &public_penalties {
        assert_eq!(held[k].1, "withdrawn", "{k}");
    }

    // 5. the display period of every penalty ends: a later run withdraws them all from the ledger's index. A dry
    // run first says how many, and changes nothing.
    let still_public = |held: &BTreeMap<String, (String, String, serde_json::Value, u64)>| {
        held.iter()
            .filter(|(k, v)| k.starts_with("XZCF") && v.1 == "public")
            .count() as u64
    };
    let before = env.platform_records().await;
    let out = env
        .dualpub(&["sync", "--json", "--dry-run", "--today", "2031-01-01"])
        .await;
    assert_eq!(out.status.code(), Some(0));
    let dry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(still_public(&before) > 0);
    assert_eq!(dry["withdrawn"], still_public(&before), "{dry}");
    assert_eq!(
        env.platform_records().await,
        before,
        "a dry run sends nothing"
    );
    // Acting as of another date is refused outside a rehearsal (an operator's what-if would withdraw penalties
    // early, or publish expired ones again).
    for date in ["2031-01-01", "2020-01-01"] {
        let out = env.dualpub_live(&["sync", "--json", "--today", date]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("--dry-run"), "{err}");
    }
    assert_eq!(
        env.platform_records().await,
        before,
        "refused before any work"
    );
    let out = env
        .dualpub(&["sync", "--json", "--today", "2031-01-01"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let real: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(real["withdrawn"], dry["withdrawn"], "{real}");
    let held = env.platform_records().await;
    assert!(held
        .iter()
        .filter(|(k, _)| k.starts_with("XZCF"))
        .all(|(_, v)| v.1 == "withdrawn"));
    let status = env.dualpub(&["status", "--json"]).await;
    assert_eq!(status.status.code(), Some(0));
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(st["outbox"], 0);
    assert!(st["last_runs"].as_array().unwrap().len() >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_flaky_platform() {
    let gen_cfg = GenConfig {
        records: 3_000,
        seed: 5,
        invalid_rate: 0.0,
        ..GenConfig::default()
    };
    let faults = Faults {
        seed: 42,
        error_rate: 0.30,
        throttle_rate: 0.10,
        retry_after_secs: 1,
        lost_ack_rate: 0.05,
        reset_rate: 0.02,
        token_ttl_secs: 2,
        ..Faults::default()
    };
    let env = spawn(gen_cfg.clone(), faults).await;
    let (expected, _) = expected_public(&gen_cfg, today());
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "the run completes despite the faults: {err}\n{s}");
    assert!(s["retries"].as_u64().unwrap() > 0, "{s}");
    let held = env.platform_records().await;
    assert!(
        public_of(&held) == expected,
        "every valid record exactly once, latest version"
    );
    assert!(
        held.values().all(|v| v.3 == 1),
        "no record was stored twice in different versions"
    );
    let stats: serde_json::Value = env.platform_stats().await;
    assert!(
        stats["faults"]["lost_acks"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert!(
        stats["replayed_flows"].as_u64().unwrap() > 0,
        "lost acknowledgements were replayed: {stats}"
    );
    assert!(
        stats["faults"]["errors"].as_u64().unwrap() > 0
            && stats["faults"]["throttles"].as_u64().unwrap() > 0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_hazards_lose_nothing() {
    // ties on updated_at that straddle pages, late commits, and updates while a run is going on
    let gen_cfg = GenConfig {
        records: 4_000,
        seed: 9,
        tie_size: 7,
        late_commit_rate: 0.05,
        ..GenConfig::default()
    };
    let env = spawn(
        gen_cfg.clone(),
        Faults {
            latency_ms: 20,
            ..Faults::default()
        },
    )
    .await;
    let cfg = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("token_file", "page_size = 50\ntoken_file");
    std::fs::write(&env.config, cfg).unwrap();
    let (mut expected, _) = expected_public(&gen_cfg, today());

    let mut child = env.command(&["sync", "--today", TODAY]).spawn().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let touched: Vec<String> = (0..40u64)
        .map(|i| dualpub::sim::gen::id(Kind::Permit, i * 37))
        .collect();
    let r = env
        .admin_post(
            format!("{}/admin/touch", env.source.url()),
            serde_json::json!({"kind": "permit", "ids": touched}),
        )
        .await;
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(matches!(status.code(), Some(0) | Some(1)));
    // the touched records' current versions are what the platform must end up with
    let mappings = dualpub::mapping::MappingSet::builtin();
    for rec in r["records"].as_array().unwrap() {
        let src: dualpub::source_schema::SourceRecord =
            serde_json::from_value(rec.clone()).unwrap();
        let m = mappings.permit.map(&mapping_context(), &src);
        if m.is_valid() {
            expected.insert(m.key.unwrap().to_string(), m.record.digest().to_hex());
        }
    }
    let (code2, s2, err2) = env.sync(&[]).await;
    assert!(code2 == 0 || code2 == 1, "{err2}");
    let held = env.platform_records().await;
    let public = public_of(&held);
    let missing: Vec<&String> = expected
        .keys()
        .filter(|k| !public.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "missed {} records, e.g. {:?}\n{s2}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let stale: Vec<&String> = expected
        .iter()
        .filter(|(k, d)| public.get(*k) != Some(d))
        .map(|(k, _)| k)
        .collect();
    assert!(
        stale.is_empty(),
        "{} records are not in their latest version, e.g. {:?}",
        stale.len(),
        &stale[..stale.len().min(5)]
    );
    assert_eq!(public.len(), expected.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_process_gets_4_and_damaged_store_gets_3() {
    let gen_cfg = GenConfig {
        records: 200,
        seed: 3,
        ..GenConfig::default()
    };
    let env = spawn(
        gen_cfg,
        Faults {
            latency_ms: 300,
            ..Faults::default()
        },
    )
    .await;
    let mut first = env.command(&["sync", "--today", TODAY]).spawn().unwrap();
    // wait until the first run holds the store
    for _ in 0..100 {
        if env.store_path().join("conf").exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let out = env.dualpub(&["sync", "--today", TODAY]).await;
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another dualpub run"));
    let status = tokio::task::spawn_blocking(move || first.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    // damage the store: overwrite its files with garbage
    for entry in std::fs::read_dir(env.store_path()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, b"this is not a sled file").unwrap();
        }
    }
    let out = env.dualpub(&["sync", "--today", TODAY]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("store") && !err.contains("panicked at"),
        "{err}"
    );

    // A second run that damages only the start of the log, as a disk fault would: the same exit code and advice,
    // in words (not sled's debug dump).
    let env = spawn(
        GenConfig {
            records: 200,
            seed: 3,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await;
    assert_eq!(env.sync(&[]).await.0, 0);
    let db = env.store_path().join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().take(256) {
        *b = b.wrapping_mul(31).wrapping_add(7);
    }
    std::fs::write(&db, bytes).unwrap();
    // sled opens this store as an empty one (and would write a new log over it): `status` said "never read" and
    // sync's first flush waited for ever. Every command now reports the damage, also after the first has seen it.
    for args in [&["status"][..], &["status"], &["sync", "--today", TODAY]] {
        let out = env.dualpub(args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("is damaged"), "{args:?}: {err}");
        assert!(err.to_lowercase().contains("move it aside"), "{err}");
        // a rebuilt store does not know what was published: what was revoked or expired meanwhile stays public
        // until a reconcile --repair withdraws it
        assert!(err.contains("dualpub reconcile --repair"), "{err}");
        assert!(
            !err.contains("Inline(") && !err.contains("backtrace"),
            "{err}"
        );
    }
    let note = std::fs::read_to_string(env.store_path().join("DAMAGED.txt")).unwrap();
    assert!(note.contains("dualpub reconcile --repair"), "{note}");
}

/// One byte changed near the start of sled's log once a recovery snapshot exists (any command's open writes one):
/// sled opened the store as it was at that snapshot, every run exited 0, and nothing it wrote survived the next open
/// — the checkpoint never moved, runs were never recorded, the same records were sent again every run. The newest
/// run made durable is noted outside the log (`LAST_RUN`), so the loss is found at the next open: exit 3, and the
/// note, like the other damage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_lost_durable_writes_is_damaged_not_silently_stuck() {
    let env = spawn(
        GenConfig {
            records: 30,
            seed: 3,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await;
    assert_eq!(env.sync(&[]).await.0, 0);
    assert!(env.dualpub(&["status"]).await.status.success());
    let db = env.store_path().join("db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[1] = 0;
    std::fs::write(&db, bytes).unwrap();
    let mut codes = Vec::new();
    for _ in 0..3 {
        let (code, _, err) = env.sync(&[]).await;
        codes.push(code);
        if code == 3 {
            assert!(
                err.contains("is damaged") && err.contains("lost writes"),
                "{err}"
            );
            assert!(err.contains("dualpub reconcile --repair"), "{err}");
        }
    }
    // The first run after the damage cannot know (its writes go where the next open will not find them).
    assert_eq!(codes[1..], [3, 3], "{codes:?}");
    let out = env.dualpub(&["status"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(env.store_path().join("DAMAGED.txt").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_path_that_cannot_be_used_is_a_configuration_error() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    let file = env.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for path in [file.clone(), file.join("store")] {
        let out = env
            .dualpub_with(
                &["sync", "--today", TODAY],
                &[("DUALPUB_STORE_PATH", path.to_str().unwrap())],
            )
            .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{path:?}: {err}");
        assert!(err.contains("[store] path"), "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
}

/// A store path whose parent is missing is a configuration error (exit 2), like a path that is a file; it was exit 3
/// ("store I/O error") with advice about a damaged store. Regression (D9b): `status` and `quarantine list` said
/// "no store … yet" and exited 0 for the path `sync` refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_path_whose_parent_is_missing_is_a_configuration_error() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    let missing = env.dir.path().join("nonexist").join("a");
    let path = missing.join("b");
    for args in [
        &["sync", "--today", TODAY][..],
        &["status"],
        &["status", "--json"],
        &["quarantine", "list"],
        &["quarantine", "list", "--json"],
        &["reconcile", "--today", TODAY],
    ] {
        let out = env
            .dualpub_with(args, &[("DUALPUB_STORE_PATH", path.to_str().unwrap())])
            .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("check [store] path")
                && err.contains(&format!(
                    "the directory {} does not exist",
                    missing.display()
                )),
            "{args:?}: {err}"
        );
        assert!(!err.contains("damaged"), "{args:?}: {err}");
        assert!(!err.contains("no store at"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!missing.exists(), "{args:?}: nothing was created");
    }
}

/// The store holds full ID numbers: dualpub creates its directory 0700, and sets an existing one that others may
/// enter to 0700 with a warning.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_directory_is_for_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let env = spawn(GenConfig::default(), Faults::default()).await;
    let mode = || {
        std::fs::metadata(env.store_path())
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    let (code, _, err) = env.sync(&[]).await;
    assert!(code == 0 || code == 1, "{err}");
    assert_eq!(mode(), 0o700, "created for its owner only");
    assert!(!err.contains("0700"), "{err}");

    std::fs::set_permissions(env.store_path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, err) = env.sync(&[]).await;
    assert!(code == 0 || code == 1, "{err}");
    assert_eq!(mode(), 0o700, "tightened");
    assert_eq!(
        err.matches("the store directory was open to other users (mode 755)")
            .count(),
        1,
        "warned once: {err}"
    );
    assert!(err.contains("set it to 0700"), "{err}");
    let (_, _, err) = env.sync(&[]).await;
    assert!(!err.contains("0700"), "nothing more to say: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logs_hold_no_secret_and_no_id_number() {
    let gen_cfg = GenConfig {
        records: 300,
        seed: 21,
        invalid_rate: 0.1,
        ..GenConfig::default()
    };
    let env = spawn(
        gen_cfg.clone(),
        Faults {
            seed: 1,
            error_rate: 0.2,
            token_ttl_secs: 1,
            ..Faults::default()
        },
    )
    .await;
    // an ID number where none belongs: in the record's id, its document number and its content (id_in_text
    // quarantines it, and the log line about that named the id as it was)
    let carried = "410105198001011239";
    let rec = permit_with_doc(
        &env,
        &gen_cfg,
        &format!("XK-{carried}"),
        &format!("（豫）{carried}号"),
        &format!("持证人身份证号{carried}"),
    )
    .await;
    env.source_insert_one(rec).await;
    let out = env
        .dualpub_with(&["sync", "--today", TODAY], &[("DUALPUB_LOG", "debug")])
        .await;
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("410105********1239"),
        "the record is named, masked: {log}"
    );
    assert!(
        !log.contains(carried),
        "an ID number in a record id leaked into the log"
    );
    assert!(
        log.contains("DEBUG") || log.contains("debug"),
        "debug logging is on: {log}"
    );
    assert!(
        !log.contains("demo-secret") && !log.contains("test-token"),
        "a secret leaked into the log"
    );
    // every ID number of the source set
    for kind in Kind::ALL {
        for i in 0..gen_cfg.count(kind) {
            let r = dualpub::sim::gen::record(&gen_cfg, kind, i);
            let p = r.party.unwrap_or_default();
            for id in [p.id_no, p.legal_rep.and_then(|l| l.id_no)]
                .into_iter()
                .flatten()
            {
                if id.len() >= 15 {
                    assert!(
                        !log.contains(&id),
                        "the full ID number {} leaked",
                        dualpub::ids::mask_id(&id)
                    );
                }
            }
        }
    }
    let q = env.dualpub(&["quarantine", "list"]).await;
    let shown = String::from_utf8_lossy(&q.stdout).into_owned();
    let first = shown.split_whitespace().nth(1).unwrap_or("").to_string();
    let show = env.dualpub(&["quarantine", "show", &first]).await;
    let shown = String::from_utf8_lossy(&show.stdout);
    assert!(
        shown.contains("****"),
        "ID numbers are masked in quarantine show: {shown}"
    );
}

/// A source record whose document number changes moves to a new platform key: the old key is withdrawn (found
/// through the store's source-id index), the new one is public, and nothing else is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_document_number_withdraws_the_old_key() {
    let gen_cfg = GenConfig {
        records: 600,
        seed: 23,
        invalid_rate: 0.0,
        ..GenConfig::default()
    };
    let env = spawn(gen_cfg.clone(), Faults::default()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let before = public_of(&env.platform_records().await);

    // Two permits next to each other (their ids share an index bucket) and one far away.
    let mut changed = Vec::new();
    for i in [10, 11, 250] {
        let r = dualpub::sim::gen::record(&gen_cfg, Kind::Permit, i);
        let old_doc = r.doc_no.clone().unwrap();
        let mut v = env.source_record(&r.id).await;
        let new_doc = format!("{}-更正", old_doc.trim());
        v["doc_no"] = new_doc.clone().into();
        v["permit_no"] = new_doc.clone().into();
        v["updated_at"] = serde_json::Value::Null;
        v["kind"] = "permit".into();
        env.source_insert(serde_json::json!([v])).await;
        changed.push((old_doc.trim().to_string(), new_doc));
    }
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["withdrawn"], 3, "{s}");
    let held = env.platform_records().await;
    let key_of = |doc: &str| {
        held.keys()
            .find(|k| k.starts_with("XZXK") && k.ends_with(&format!(":{doc}")))
            .unwrap_or_else(|| panic!("the platform has no key for {doc}"))
            .clone()
    };
    for (old_doc, new_doc) in &changed {
        assert_eq!(held[&key_of(old_doc)].1, "withdrawn", "{old_doc}");
        assert_eq!(held[&key_of(new_doc)].1, "public", "{new_doc}");
    }
    let after = public_of(&held);
    assert_eq!(after.len(), before.len(), "one key out, one in, per record");
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["pushed"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_stamped_in_the_future_does_not_make_later_edits_skipped() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    // A writer node whose clock is a day ahead.
    let mut ahead = permit_with_doc(
        &env,
        &gen_cfg,
        "XK-AHEAD",
        "（豫）WH安许证字〔2026〕900001",
        "时钟超前",
    )
    .await;
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    ahead["updated_at"] = tomorrow.to_rfc3339().into();
    env.source_insert(serde_json::json!([ahead])).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["pushed"], 1, "{s}");
    assert!(err.contains("in the future"), "the run warns: {err}");
    // An edit stamped correctly afterwards is still found.
    let now = permit_with_doc(
        &env,
        &gen_cfg,
        "XK-NOW",
        "（豫）WH安许证字〔2026〕900002",
        "时钟正确",
    )
    .await;
    env.source_insert(serde_json::json!([now])).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["pushed"], 1, "{s}");
    let held = env.platform_records().await;
    assert!(
        held.keys()
            .any(|k| k.ends_with(":（豫）WH安许证字〔2026〕900002")),
        "the correctly stamped record is on the platform"
    );
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["pushed"], 0, "read again, unchanged: {s}");
}

/// Twenty valid records, synced once: the start of the tests that add records of their own.
async fn backfilled(faults: Faults) -> (Env, GenConfig) {
    let gen_cfg = GenConfig {
        records: 20,
        seed: 5,
        invalid_rate: 0.0,
        ..GenConfig::default()
    };
    let env = spawn(gen_cfg.clone(), faults).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    (env, gen_cfg)
}

/// Two new permits of different source records with one document number (a data-entry slip): the clone of
/// generated permit 0's JSON under `id`, with `doc` and `content`.
async fn permit_with_doc(
    env: &Env,
    gen_cfg: &GenConfig,
    id: &str,
    doc: &str,
    content: &str,
) -> serde_json::Value {
    let r = dualpub::sim::gen::record(gen_cfg, Kind::Permit, 0);
    let mut v = env.source_record(&r.id).await;
    v["id"] = id.into();
    v["doc_no"] = doc.into();
    v["permit_no"] = doc.into();
    v["content"] = content.into();
    v["updated_at"] = serde_json::Value::Null;
    v["kind"] = "permit".into();
    v
}

/// [`permit_with_doc`], inserted into the source (then 5 ms, so the next change is stamped later).
async fn put_permit(env: &Env, gen_cfg: &GenConfig, id: &str, doc: &str, content: &str) {
    env.source_insert_one(permit_with_doc(env, gen_cfg, id, doc, content).await)
        .await;
}

/// Where a document number reuse ended up: the platform's content and status for the key, the ledger's source
/// record for it, and the quarantined source ids with their finding codes.
async fn reuse_outcome(
    env: &Env,
    doc: &str,
) -> (String, String, Option<String>, Vec<(String, Vec<String>)>) {
    let held = env.platform_records().await;
    let key = held
        .keys()
        .find(|k| k.starts_with("XZXK") && k.ends_with(&format!(":{doc}")))
        .unwrap_or_else(|| panic!("the platform has no key for {doc}"))
        .clone();
    let store = read_store(&env.store_path());
    let ledger_source = store.ledger_get(&key).unwrap().map(|e| e.source_id);
    let quarantined = store
        .quarantine_all()
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.source_id,
                e.findings.into_iter().map(|f| f.code).collect(),
            )
        })
        .collect();
    let (_, status, fields, _) = &held[&key];
    (
        fields["XK_NR"].as_str().unwrap_or_default().to_string(),
        status.clone(),
        ledger_source,
        quarantined,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_number_reused_in_one_page_quarantines_the_later_record() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let doc = "（豫）FM安许证字〔2026〕990001";
    let a = permit_with_doc(&env, &gen_cfg, "XK-REUSE-A", doc, "甲的许可内容").await;
    let b = permit_with_doc(&env, &gen_cfg, "XK-REUSE-B", doc, "乙的许可内容").await;
    env.source_insert(serde_json::json!([a, b])).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "a record in quarantine needs attention: {s} {err}");
    let (content, status, ledger_source, quarantined) = reuse_outcome(&env, doc).await;
    assert_eq!(
        (content.as_str(), status.as_str(), ledger_source.as_deref()),
        ("甲的许可内容", "public", Some("XK-REUSE-A")),
        "the first record keeps the document number"
    );
    assert_eq!(
        quarantined,
        vec![("XK-REUSE-B".to_string(), vec!["key_reused".to_string()])],
        "the later record is held with the finding, not dropped"
    );
    // Reconcile tells the same story: B is quarantined, not `missing`; A is on the platform as it should be.
    let (_, report) = env.reconcile_json(TODAY, &["--repair"]).await;
    let key = format!("XZXK:{}:{doc}", agency_code());
    let rows: Vec<(&str, &str)> = report["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["key"] == key.as_str())
        .map(|g| {
            (
                g["category"].as_str().unwrap(),
                g["detail"].as_str().unwrap_or(""),
            )
        })
        .collect();
    // (A was decided long ago, so it is also `late`, which is beside the point here)
    assert!(!rows.iter().any(|r| r.0 == "missing"), "{rows:?}");
    let quarantined: Vec<_> = rows.iter().filter(|r| r.0 == "quarantined").collect();
    assert_eq!(quarantined.len(), 1, "{rows:?}");
    assert!(quarantined[0].1.contains("key_reused"), "{rows:?}");
    assert_eq!(report["repair"]["repushed"], 0, "{}", report["repair"]);

    // The agency gives B its own number: B goes out, A stays as it is.
    let b_doc = "（豫）FM安许证字〔2026〕990002";
    let b = permit_with_doc(&env, &gen_cfg, "XK-REUSE-B", b_doc, "乙的许可内容").await;
    env.source_insert(serde_json::json!([b])).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["withdrawn"], 0, "nothing comes down: {s}");
    let (content, status, _, quarantined) = reuse_outcome(&env, doc).await;
    assert_eq!(
        (content.as_str(), status.as_str()),
        ("甲的许可内容", "public")
    );
    assert!(quarantined.is_empty(), "{quarantined:?}");
    let (content, status, ledger_source, _) = reuse_outcome(&env, b_doc).await;
    assert_eq!(
        (content.as_str(), status.as_str(), ledger_source.as_deref()),
        ("乙的许可内容", "public", Some("XK-REUSE-B"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_number_reused_while_the_first_is_in_flight_quarantines_the_later_record() {
    let (env, gen_cfg) = backfilled(Faults {
        latency_ms: 400,
        ..Faults::default()
    })
    .await;
    let doc = "（豫）FM安许证字〔2026〕990003";
    // Two records a page, each next page one record on: A's batch is still on its way (400 ms) when B's page is read.
    for (id, content) in [
        ("XK-REUSE-A", "甲的许可内容"),
        ("XK-REUSE-B", "乙的许可内容"),
    ] {
        put_permit(&env, &gen_cfg, id, doc, content).await;
    }
    let (code, _, err) = env.sync_with(&[("DUALPUB_SOURCE_PAGE_SIZE", "2")]).await;
    assert_eq!(code, 1, "{err}");
    let (content, status, ledger_source, quarantined) = reuse_outcome(&env, doc).await;
    assert_eq!(
        (content.as_str(), status.as_str(), ledger_source.as_deref()),
        ("甲的许可内容", "public", Some("XK-REUSE-A")),
        "B must not overwrite A"
    );
    assert_eq!(
        quarantined,
        vec![("XK-REUSE-B".to_string(), vec!["key_reused".to_string()])]
    );
}

/// Two published permits swap document numbers (X goes to a spare number first, so no two records ever share
/// one): each must end up under its new number, read in one page or in pages of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_records_that_swap_document_numbers_are_both_published() {
    for page_size in ["500", "2"] {
        let (env, gen_cfg) = backfilled(Faults::default()).await;
        let a = "（豫）FM安许证字〔2026〕990021";
        let b = "（豫）FM安许证字〔2026〕990022";
        let spare = "（豫）FM安许证字〔2026〕990023";
        put_permit(&env, &gen_cfg, "XK-SWAP-X", a, "X 的许可内容").await;
        put_permit(&env, &gen_cfg, "XK-SWAP-Y", b, "Y 的许可内容").await;
        let (code, _, err) = env.sync(&[]).await;
        assert_eq!(code, 0, "{err}");

        put_permit(&env, &gen_cfg, "XK-SWAP-X", spare, "X 的许可内容").await;
        put_permit(&env, &gen_cfg, "XK-SWAP-Y", a, "Y 的许可内容").await;
        // Another record between them: with two records a page (each next page one on), Y and X are never
        // read in one page.
        put_permit(
            &env,
            &gen_cfg,
            "XK-SWAP-F",
            "（豫）FM安许证字〔2026〕990024",
            "F 的许可内容",
        )
        .await;
        put_permit(&env, &gen_cfg, "XK-SWAP-X", b, "X 的许可内容").await;
        let (code, _, err) = env
            .sync_with(&[("DUALPUB_SOURCE_PAGE_SIZE", page_size)])
            .await;
        assert_eq!(code, 0, "page size {page_size}: {err}");
        let (content, status, ledger_source, quarantined) = reuse_outcome(&env, a).await;
        assert_eq!(
            (content.as_str(), status.as_str(), ledger_source.as_deref()),
            ("Y 的许可内容", "public", Some("XK-SWAP-Y")),
            "page size {page_size}"
        );
        assert!(
            quarantined.is_empty(),
            "page size {page_size}: {quarantined:?}"
        );
        let (content, status, ledger_source, _) = reuse_outcome(&env, b).await;
        assert_eq!(
            (content.as_str(), status.as_str(), ledger_source.as_deref()),
            ("X 的许可内容", "public", Some("XK-SWAP-X")),
            "page size {page_size}"
        );
        let (code, s, err) = env.sync(&[]).await;
        assert_eq!(code, 0, "{err}");
        assert_eq!(s["pushed"], 0, "page size {page_size}: {s}");
    }
}

/// Three published permits pass their numbers round (X takes Y's, Y takes Z's, Z takes X's), each read in a page
/// of its own: X and Y wait in quarantine until the run frees their numbers, one after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_of_document_numbers_is_finished_in_one_run() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let docs = [
        "（豫）FM安许证字〔2026〕995001",
        "（豫）FM安许证字〔2026〕995002",
        "（豫）FM安许证字〔2026〕995003",
    ];
    let ids = ["XK-ROT-X", "XK-ROT-Y", "XK-ROT-Z"];
    for (id, doc) in ids.iter().zip(docs) {
        put_permit(&env, &gen_cfg, id, doc, &format!("{id} 的许可内容")).await;
    }
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    for (i, id) in ids.iter().enumerate() {
        put_permit(
            &env,
            &gen_cfg,
            id,
            docs[(i + 1) % 3],
            &format!("{id} 的许可内容"),
        )
        .await;
        put_permit(
            &env,
            &gen_cfg,
            &format!("XK-ROT-F{i}"),
            [
                "（豫）FM安许证字〔2026〕995011",
                "（豫）FM安许证字〔2026〕995012",
                "（豫）FM安许证字〔2026〕995013",
            ][i],
            "其他许可",
        )
        .await;
    }
    let (code, _, err) = env.sync_with(&[("DUALPUB_SOURCE_PAGE_SIZE", "2")]).await;
    assert_eq!(code, 0, "{err}");
    for (i, id) in ids.iter().enumerate() {
        let (content, status, ledger_source, quarantined) =
            reuse_outcome(&env, docs[(i + 1) % 3]).await;
        assert_eq!(
            (content, status.as_str(), ledger_source.as_deref()),
            (format!("{id} 的许可内容"), "public", Some(*id))
        );
        assert!(quarantined.is_empty(), "{quarantined:?}");
    }
}

/// Records waiting for a number are sent as the feed serves them now: found though their `updated_at` has
/// microseconds (the feed orders within a millisecond by id), and in the feed's content when the source changed
/// them without a new `updated_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_record_is_sent_as_the_feed_serves_it_now() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let doc_b = "（豫）FM安许证字〔2026〕981001";
    let doc_c = "（豫）FM安许证字〔2026〕981002";
    // B and C hold their numbers since three hours ago (the checkpoint stays there).
    let earlier = (chrono::Utc::now() - chrono::Duration::hours(3)).to_rfc3339();
    for (id, doc, content) in [
        ("XK-HB", doc_b, "B 的许可内容"),
        ("XK-HC", doc_c, "C 的许可内容"),
    ] {
        let mut v = permit_with_doc(&env, &gen_cfg, id, doc, content).await;
        v["updated_at"] = earlier.clone().into();
        env.source_insert_one(v).await;
    }
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    // Two hours ago, in one millisecond: X (microseconds .123100) after A (.123900), as the feed orders them by id.
    let t = (chrono::Utc::now() - chrono::Duration::hours(2))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let mut a = permit_with_doc(
        &env,
        &gen_cfg,
        "XK-HA",
        "（豫）FM安许证字〔2026〕981003",
        "A 的许可内容",
    )
    .await;
    a["updated_at"] = format!("{t}.123900Z").into();
    let mut x = permit_with_doc(&env, &gen_cfg, "XK-HX", doc_b, "X 的旧内容").await;
    x["updated_at"] = format!("{t}.123100Z").into();
    let mut y = permit_with_doc(&env, &gen_cfg, "XK-HY", doc_c, "Y 的旧内容").await;
    y["updated_at"] = format!("{t}.500Z").into();
    env.source_insert_one(a).await;
    env.source_insert_one(x.clone()).await;
    env.source_insert_one(y.clone()).await;
    put_permit(
        &env,
        &gen_cfg,
        "XK-HN",
        "（豫）FM安许证字〔2026〕981004",
        "新记录",
    )
    .await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "X and Y wait: {err}");
    // Y is corrected in the source without a new updated_at.
    y["content"] = "Y 的更正内容".into();
    env.source_insert_one(y).await;
    // B and C move on: their numbers are free.
    put_permit(
        &env,
        &gen_cfg,
        "XK-HB",
        &format!("{doc_b}-更正"),
        "B 的许可内容",
    )
    .await;
    put_permit(
        &env,
        &gen_cfg,
        "XK-HC",
        &format!("{doc_c}-更正"),
        "C 的许可内容",
    )
    .await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["gone_from_source"], 0, "{s}");
    let (content, status, _, quarantined) = reuse_outcome(&env, doc_b).await;
    assert_eq!(
        (content.as_str(), status.as_str()),
        ("X 的旧内容", "public")
    );
    assert!(quarantined.is_empty(), "{quarantined:?}");
    let (content, status, _, _) = reuse_outcome(&env, doc_c).await;
    assert_eq!(
        (content.as_str(), status.as_str()),
        ("Y 的更正内容", "public")
    );
}

/// A record stamped a few minutes ahead, with an overlap shorter than that: the checkpoint stays at the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_a_little_ahead_with_a_short_overlap_skips_nothing() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let short = [("DUALPUB_SYNC_OVERLAP_MINUTES", "1")];
    let mut ahead = permit_with_doc(
        &env,
        &gen_cfg,
        "XK-AHEAD4",
        "（豫）WH安许证字〔2026〕900011",
        "快四分钟",
    )
    .await;
    ahead["updated_at"] = (chrono::Utc::now() + chrono::Duration::minutes(4))
        .to_rfc3339()
        .into();
    env.source_insert(serde_json::json!([ahead])).await;
    let (code, _, err) = env.sync_with(&short).await;
    assert_eq!(code, 0, "{err}");
    // Four minutes is within what clocks may drift: clamped, but no warning.
    assert!(!err.contains("in the future"), "{err}");
    let now = permit_with_doc(
        &env,
        &gen_cfg,
        "XK-NOW4",
        "（豫）WH安许证字〔2026〕900012",
        "时钟正确",
    )
    .await;
    env.source_insert(serde_json::json!([now])).await;
    let (code, _, err) = env.sync_with(&short).await;
    assert_eq!(code, 0, "{err}");
    let held = env.platform_records().await;
    assert!(
        held.keys()
            .any(|k| k.ends_with(":（豫）WH安许证字〔2026〕900012")),
        "the correctly stamped record is on the platform"
    );
}

/// The checkpoint that a record stamped in the future makes the run keep is the time the run read that record's
/// page, not the time the page's turn came: a page read while the engine still waited for a slow platform with the
/// pages before it was clamped to the clock of much later, and a record committed (and stamped correctly) in
/// between was never read, by that run (which had read the page before it) nor by the next (which started after
/// it), whenever the wait was longer than the overlap window. Shown here with `overlap_minutes = 0`, so that a
/// wait of a few seconds is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_committed_while_a_read_page_waits_for_the_platform_is_read_next_run() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    for i in 0..8 {
        put_permit(
            &env,
            &gen_cfg,
            &format!("XK-WAIT{i}"),
            &format!("（豫）WH安许证字〔2026〕9300{i:02}"),
            "排队",
        )
        .await;
    }
    let mut ahead = permit_with_doc(
        &env,
        &gen_cfg,
        "XK-AHEAD-DAY",
        "（豫）WH安许证字〔2026〕930100",
        "快一天",
    )
    .await;
    ahead["updated_at"] = (chrono::Utc::now() + chrono::Duration::days(1))
        .to_rfc3339()
        .into();
    env.source_insert(serde_json::json!([ahead])).await;
    // A page of the eight (each its own message, one at a time), then a page with the future-stamped record: read at
    // once, processed once the eight have gone out.
    let meanwhile = "（豫）WH安许证字〔2026〕930200";
    let held = entered_while_a_slow_run_reads(&env, &gen_cfg, "8", meanwhile).await;
    assert!(
        !on_platform(&held, meanwhile),
        "the run read the record entered meanwhile: the platform was not slow enough to show anything"
    );
    let (code, _, err) = env.sync_with(&SLOW_RUN).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        on_platform(&env.platform_records().await, meanwhile),
        "the record entered while the first run waited is published by the next"
    );
}

/// One message at a time, no overlap window: what [`entered_while_a_slow_run_reads`] runs.
const SLOW_RUN: [(&str, &str); 3] = [
    ("DUALPUB_SYNC_OVERLAP_MINUTES", "0"),
    ("DUALPUB_PLATFORM_BATCH_SIZE", "1"),
    ("DUALPUB_PLATFORM_CONCURRENCY", "1"),
];

/// A sync ([`SLOW_RUN`], feed pages of `page_size`) against a platform that takes 800 ms a call, during which
/// (2.5 s in) a permit numbered `meanwhile` is entered at the source, stamped correctly; the run must end with exit 0.
/// The platform is fast again after it. What the platform holds after that run.
async fn entered_while_a_slow_run_reads(
    env: &Env,
    gen_cfg: &GenConfig,
    page_size: &str,
    meanwhile: &str,
) -> BTreeMap<String, (String, String, serde_json::Value, u64)> {
    let faults = format!("{}/admin/faults", env.platform.url());
    env.admin_post(faults.clone(), serde_json::json!({"latency_ms": 800}))
        .await;
    let mut c = env.command(&["sync", "--json", "--today", TODAY]);
    for (k, v) in SLOW_RUN {
        c.env(k, v);
    }
    c.env("DUALPUB_SOURCE_PAGE_SIZE", page_size);
    let run = tokio::task::spawn_blocking(move || c.output().unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    put_permit(env, gen_cfg, "XK-MEANWHILE", meanwhile, "运行中录入").await;
    let out = run.await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let held = env.platform_records().await;
    env.admin_post(faults, serde_json::json!({"latency_ms": 0}))
        .await;
    held
}

/// Whether the platform holds the permit numbered `doc`.
fn on_platform(
    held: &BTreeMap<String, (String, String, serde_json::Value, u64)>,
    doc: &str,
) -> bool {
    held.keys().any(|k| k.ends_with(&format!(":{doc}")))
}

/// The same with several pages of records stamped in the future (a writer node a day ahead): the pages after the
/// first of them are asked from beyond the clock and serve nothing entered meanwhile, so the checkpoint is the time
/// of the last page asked from before it, not of the last page read. A record entered while the later pages waited
/// their turn was never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_committed_while_pages_of_future_records_are_read_is_read_next_run() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let tomorrow = chrono::Utc::now() + chrono::Duration::days(1);
    for i in 0..8i64 {
        let mut ahead = permit_with_doc(
            &env,
            &gen_cfg,
            &format!("XK-AHEAD{i}"),
            &format!("（豫）WH安许证字〔2026〕9310{i:02}"),
            "快一天",
        )
        .await;
        ahead["updated_at"] = (tomorrow + chrono::Duration::seconds(i))
            .to_rfc3339()
            .into();
        env.source_insert(serde_json::json!([ahead])).await;
    }
    // Pages of two, each record its own message, one at a time: the reader stays two pages ahead of the pushes.
    let meanwhile = "（豫）WH安许证字〔2026〕931100";
    let held = entered_while_a_slow_run_reads(&env, &gen_cfg, "2", meanwhile).await;
    assert!(
        !on_platform(&held, meanwhile)
            && held.keys().filter(|k| k.contains("〔2026〕9310")).count() == 8,
        "the first run sends the eight and not the record entered meanwhile"
    );
    let (code, _, err) = env.sync_with(&SLOW_RUN).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        on_platform(&env.platform_records().await, meanwhile),
        "the record entered while the first run read the future-stamped pages is published by the next"
    );
}

/// A duplicate held back for its document number, then deleted in the enforcement system: neither the run that
/// frees the number nor `quarantine retry` may publish the version quarantine holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantined_record_deleted_at_the_source_is_never_published() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let doc = "（豫）FM安许证字〔2026〕990031";
    put_permit(&env, &gen_cfg, "XK-ORIG", doc, "原始决定").await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    put_permit(&env, &gen_cfg, "XK-DUP", doc, "重复录入").await;
    put_permit(
        &env,
        &gen_cfg,
        "XK-BAD",
        "（豫）FM安许证字〔2026〕990032",
        "坏字符\u{1}",
    )
    .await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 2);
    env.source_delete("XK-DUP").await;
    env.source_delete("XK-BAD").await;

    // The original gets a corrected number: its old one is free, and the duplicate waiting for it is gone.
    let corrected = format!("{doc}-更正");
    put_permit(&env, &gen_cfg, "XK-ORIG", &corrected, "原始决定").await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["gone_from_source"], 1, "{s}");
    let held = env.platform_records().await;
    let status_of = |doc: &str| {
        held.iter()
            .find(|(k, _)| k.ends_with(&format!(":{doc}")))
            .map(|(_, v)| v.1.clone())
    };
    assert_eq!(
        status_of(doc).as_deref(),
        Some("withdrawn"),
        "the deleted duplicate was not published"
    );
    assert_eq!(status_of(&corrected).as_deref(), Some("public"));

    // The invalid record deleted at the source: a retry does not send it, and it leaves quarantine.
    let out = env.dualpub(&["quarantine", "retry"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("no longer in the enforcement system"), "{err}");
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 0);
}

/// A sync whose first batches are still on their way when it reads on: a slow feed (two records a page, 300 ms
/// each), a slower platform (2.5 s a call), no overlap (the first pages served are the newest records). Returned
/// once the run has been served three items (the first page may be the checkpoint's own record, read again), so
/// the test can change the source while those batches are in flight.
async fn sync_with_a_batch_in_flight(
    env: &Env,
    vars: &[(&str, &str)],
) -> tokio::task::JoinHandle<std::process::Output> {
    let before = env.source_stats().await["items_served"].as_u64().unwrap();
    env.admin_post(
        format!("{}/admin/latency", env.source.url()),
        serde_json::json!({"ms": 300}),
    )
    .await;
    env.admin_post(
        format!("{}/admin/faults", env.platform.url()),
        serde_json::json!({"latency_ms": 2500}),
    )
    .await;
    let mut c = env.command(&["sync", "--json", "--today", TODAY]);
    c.env("DUALPUB_SOURCE_PAGE_SIZE", "2")
        .env("DUALPUB_SYNC_OVERLAP_MINUTES", "0");
    for (k, v) in vars {
        c.env(k, v);
    }
    let run = tokio::task::spawn_blocking(move || c.output().unwrap());
    let t0 = std::time::Instant::now();
    while env.source_stats().await["items_served"].as_u64().unwrap() < before + 3 {
        assert!(
            t0.elapsed().as_secs() < 20,
            "the run never read its second page"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_changed_while_their_first_push_is_in_flight() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let (s_doc, s_doc2) = (
        "（豫）FM安许证字〔2026〕990011",
        "（豫）FM安许证字〔2026〕990012",
    );
    let t_doc = "（豫）FM安许证字〔2026〕990013";
    let f_doc = "（豫）FM安许证字〔2026〕990014";
    for (id, doc, content) in [
        ("XK-INRUN-S", s_doc, "S 的第一版"),
        ("XK-INRUN-T", t_doc, "T 的第一版"),
        ("XK-INRUN-F", f_doc, "F 的内容"),
    ] {
        put_permit(&env, &gen_cfg, id, doc, content).await;
    }
    // S and T are read and sent first, and their second versions are read while those batches are on their way:
    // once S and T have been served, T becomes invalid and S gets a corrected document number (both at the end of
    // the feed).
    let run = sync_with_a_batch_in_flight(&env, &[]).await;
    let t2 = permit_with_doc(&env, &gen_cfg, "XK-INRUN-T", t_doc, "T 的第二版\u{1}").await;
    env.source_insert_one(t2).await;
    let s2 = permit_with_doc(&env, &gen_cfg, "XK-INRUN-S", s_doc2, "S 的第二版").await;
    env.source_insert(serde_json::json!([s2])).await;
    let out = run.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(1),
        "T is in quarantine: {summary} {stderr}"
    );
    assert!(
        summary["read"].as_u64().unwrap() >= 5,
        "the second versions were read in the same run: {summary}"
    );

    // S: the number it no longer has comes down, the new one goes up.
    let (content, status, _, quarantined) = reuse_outcome(&env, s_doc).await;
    assert_eq!(
        (content.as_str(), status.as_str()),
        ("S 的第一版", "withdrawn")
    );
    let (content, status, ledger_source, _) = reuse_outcome(&env, s_doc2).await;
    assert_eq!(
        (content.as_str(), status.as_str(), ledger_source.as_deref()),
        ("S 的第二版", "public", Some("XK-INRUN-S"))
    );
    // T: the platform keeps the first version; the invalid second one stays in quarantine.
    let (content, status, _, _) = reuse_outcome(&env, t_doc).await;
    assert_eq!(
        (content.as_str(), status.as_str()),
        ("T 的第一版", "public")
    );
    assert_eq!(
        quarantined,
        vec![("XK-INRUN-T".to_string(), vec!["xml_char".to_string()])],
        "T's second version waits in quarantine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_records_still_invalid_needs_attention() {
    let gen_cfg = GenConfig {
        records: 200,
        seed: 7,
        invalid_rate: 0.05,
        ..GenConfig::default()
    };
    let env = spawn(gen_cfg.clone(), Faults::default()).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    let in_quarantine = read_store(&env.store_path()).quarantine_len();
    assert!(in_quarantine > 0);
    let before = env.platform_records().await;

    // Nothing was fixed: every record goes back to quarantine, and the run says so.
    let out = env.dualpub(&["quarantine", "retry"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("dualpub quarantine retry"), "{err}");
    assert!(
        err.contains(&format!(
            "{in_quarantine} of the {in_quarantine} retried record(s) still in quarantine"
        )),
        "{err}"
    );
    assert!(err.contains("needs attention"), "{err}");
    assert_eq!(
        env.platform_records().await,
        before,
        "nothing new reached the platform"
    );
    assert_eq!(
        read_store(&env.store_path()).quarantine_len(),
        in_quarantine
    );
    // `status` shows the run as it was printed (it said "ok, quarantined 0")
    let run = &read_store(&env.store_path()).last_runs(1).unwrap()[0];
    assert_eq!(run["outcome"], "attention", "{run}");
    assert_eq!(run["quarantined"], in_quarantine as u64, "{run}");

    // One record by id, and an id that is not in quarantine.
    let id = read_store(&env.store_path()).quarantine_all().unwrap()[0]
        .source_id
        .clone();
    let out = env.dualpub(&["quarantine", "retry", &id]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("1 of the 1 retried record(s) still in quarantine"),
        "{err}"
    );
    let out = env.dualpub(&["quarantine", "retry", "XK-NOT-THERE"]).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_sends_what_an_aborted_run_left_in_the_outbox_first() {
    let gen_cfg = GenConfig {
        records: 100,
        seed: 7,
        invalid_rate: 0.05,
        ..GenConfig::default()
    };
    let env = spawn(
        gen_cfg.clone(),
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    // The platform is down: the run gives up after its retry budget, its batches kept in the outbox.
    let (code, _, err) = env
        .sync_with(&[("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "1")])
        .await;
    assert_eq!(code, 3, "{err}");
    let left = read_store(&env.store_path()).outbox_len();
    assert!(left > 0, "the aborted run kept its batches");
    env.admin_post(
        format!("{}/admin/faults", env.platform.url()),
        serde_json::json!({"error_rate": 0.0}),
    )
    .await;

    // The operator retries the quarantine before the next sync: the outbox goes out first.
    let out = env.dualpub(&["quarantine", "retry"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        read_store(&env.store_path()).outbox_len(),
        0,
        "the retry resent the {left} batch(es) left behind: {err}"
    );
    let (expected, _) = expected_public(&gen_cfg, today());
    assert_eq!(public_of(&env.platform_records().await), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_show_masks_id_numbers_in_free_text_too() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let full = "410105198001011239";
    let mut v = permit_with_doc(
        &env,
        &gen_cfg,
        "XK-MASK-1",
        "（豫）FM安许证字〔2026〕990021",
        "内容\u{1}含控制字符",
    )
    .await;
    v["remarks"] = format!("当事人证件{full}，已核对").into();
    // an ID number typed into a date field: the finding's message quotes it
    v["valid_to"] = full.into();
    env.source_insert(serde_json::json!([v])).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{err}");
    let out = env.dualpub(&["quarantine", "show", "XK-MASK-1"]).await;
    assert_eq!(out.status.code(), Some(0));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("valid_to"), "the finding is shown: {shown}");
    // nor in reconcile's report of it, nor in `map`'s findings
    let out = env
        .dualpub(&["reconcile", "--today", TODAY, "--format", "json"])
        .await;
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("XK-MASK-1") || report.contains("990021"),
        "{report}"
    );
    assert!(!report.contains(full), "a full ID number in the report");
    let input = env.dir.path().join("one.json");
    std::fs::write(&input, serde_json::to_vec(&serde_json::json!([v])).unwrap()).unwrap();
    let out = env
        .dualpub(&["map", "--kind", "permit", input.to_str().unwrap()])
        .await;
    let findings = String::from_utf8_lossy(&out.stderr);
    assert!(findings.contains("valid_to"), "{findings}");
    assert!(!findings.contains(full), "{findings}");
    assert!(shown.contains("已核对"), "{shown}");
    assert!(!shown.contains(full), "a full ID number is shown: {shown}");
    assert!(
        shown.contains(&dualpub::ids::mask_id(full)),
        "the masked form is: {shown}"
    );
    // the organisation's codes and the document number stay whole: the operator looks the record up by them
    assert!(shown.contains("（豫）FM安许证字〔2026〕990021"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_stopped_before_the_platform_answers_keeps_the_record_retryable() {
    let gen_cfg = GenConfig {
        records: 60,
        seed: 7,
        ..GenConfig::default()
    };
    let first = dualpub::sim::gen::record(&gen_cfg, Kind::Permit, 0);
    let refused = first.party.unwrap().name.unwrap();
    let env = spawn_with(
        gen_cfg,
        dualpub::sim::platform::PlatformSimConfig {
            strict: Some(dualpub::sim::platform::StrictProfile {
                max_len: None,
                refused_parties: vec![refused],
            }),
            ..Default::default()
        },
        "",
    )
    .await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "the platform refused a record: {s} {err}");
    let held = |env: &Env| {
        read_store(&env.store_path())
            .quarantine_get(Kind::Permit, &first.id)
            .unwrap()
    };
    let before = held(&env).expect("the refused record is in quarantine");
    assert_eq!(before.reason, "rejected");
    assert!(before.source.is_object());
    let platform = |rate: f64| {
        env.admin_post(
            format!("{}/admin/faults", env.platform.url()),
            serde_json::json!({ "error_rate": rate }),
        )
    };

    // The operator retries it while the platform is down: the run gives up (exit 3) with the batch in the outbox.
    // The record used to leave quarantine when its batch was written, and a resent batch carries no source
    // record: it came back without one, and no retry could send it again.
    platform(1.0).await;
    let out = env
        .dualpub_with(
            &["quarantine", "retry", &first.id],
            &[("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "1")],
        )
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("1 of the 1 retried record(s) still in quarantine"),
        "{err}"
    );
    assert_eq!(
        held(&env).as_ref(),
        Some(&before),
        "unchanged until the platform answers"
    );

    // The next sync resends the batch; the platform refuses the record again, and it keeps its source record.
    platform(0.0).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{err}");
    let after = held(&env).expect("still in quarantine");
    assert_eq!(after.source, before.source);
    assert_eq!(after.first_seen, before.first_seen);

    // So a retry still sends it.
    let was = env.platform_stats().await["rejected"].as_u64().unwrap();
    let out = env.dualpub(&["quarantine", "retry", &first.id]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        env.platform_stats().await["rejected"].as_u64().unwrap(),
        was + 1,
        "the retry sent the record again"
    );
    // One record, rejected again: counted `rejected`, not `quarantined` as well.
    let table = String::from_utf8_lossy(&out.stderr);
    let count = |what: &str| {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(what))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
    };
    assert_eq!(
        (count("rejected"), count("quarantined")),
        (Some(1), Some(0)),
        "{table}"
    );
    assert!(
        table.contains("1 of the 1 retried record(s) still in quarantine"),
        "{table}"
    );
}

/// A loopback proxy in front of the source simulator that passes each change-feed page on with its items
/// rewritten by `edit` (item index in the page, item): an enforcement system whose records lack positions.
async fn feed_proxy(source: String, edit: fn(usize, &mut serde_json::Value)) -> String {
    feed_text_proxy(
        source,
        Arc::new(move |_: &str, text: String| {
            let mut body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(items) = body["items"].as_array_mut() {
                for (i, item) in items.iter_mut().enumerate() {
                    edit(i, item);
                }
            }
            body.to_string()
        }),
    )
    .await
}

/// Text replacements a [`feed_text_proxy`] applies, changeable while it runs.
type Rules = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A [`feed_text_proxy`] that replaces each `find` of `rules` with its `replace` in every change-feed page: an
/// enforcement system that serves what the simulator cannot store (lone surrogates, ids of another type or none).
async fn feed_rewriting_proxy(source: String, rules: Rules) -> String {
    feed_text_proxy(
        source,
        Arc::new(move |_: &str, text: String| rewritten(&rules, text)),
    )
    .await
}

fn rewritten(rules: &Rules, mut text: String) -> String {
    for (find, replace) in rules.lock().unwrap().iter() {
        text = text.replace(find, replace);
    }
    text
}

/// [`feed_rewriting_proxy`] for a feed that, as SQL's `(updated_at, id) > (since, after_id)` does, never serves a
/// record without a string id at `since` itself: the records whose ids `idless` names lose theirs in the rewrite,
/// so they are left out of a page that starts at their time.
async fn feed_rewriting_proxy_sql(
    source: String,
    rules: Rules,
    idless: &'static [&'static str],
) -> String {
    feed_text_proxy(
        source,
        Arc::new(move |query: &str, text: String| {
            let since = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("since="))
                .map(|v| v.replace("%3A", ":").replace("%2B", "+"));
            let mut body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let (Some(since), Some(items)) = (since, body["items"].as_array_mut()) {
                items.retain(|it| {
                    !(it["updated_at"].as_str() == Some(since.as_str())
                        && idless.contains(&it["id"].as_str().unwrap_or("")))
                });
            }
            rewritten(&rules, body.to_string())
        }),
    )
    .await
}

/// `sync` through the proxy, killed if it has not ended within 60 s (a run asking the same page for ever).
async fn sync_through(env: &Env, proxy: &str, page_size: &str) -> (Option<i32>, String) {
    let mut c = env.command(&["sync", "--json", "--today", TODAY]);
    c.env("DUALPUB_SOURCE_URL", proxy)
        .env("DUALPUB_SOURCE_PAGE_SIZE", page_size)
        // every record in the overlap: pages are "dense", the case that used to ask the same page again
        .env("DUALPUB_SYNC_OVERLAP_MINUTES", "100000000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    tokio::task::spawn_blocking(move || {
        let mut child = c.spawn().unwrap();
        let t0 = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
                return (status.code(), err);
            }
            if t0.elapsed().as_secs() > 60 {
                let _ = child.kill();
                let _ = child.wait();
                return (None, "still running after 60 s".to_string());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_whose_records_lack_positions_ends_the_run() {
    let (env, _) = backfilled(Faults::default()).await;
    // The middle record of every page of three has no updated_at: the run still goes through to the end.
    let holed = feed_proxy(env.source.url(), |i, item| {
        if i == 1 {
            item["updated_at"] = serde_json::Value::Null;
        }
    })
    .await;
    let (code, err) = sync_through(&env, &holed, "3").await;
    assert_eq!(code, Some(0), "{err}");
    // No record has a readable updated_at: the feed cannot be paged, and the run says so (exit 3).
    let blind = feed_proxy(env.source.url(), |_, item| {
        item["updated_at"] = "yesterday".into();
    })
    .await;
    let (code, err) = sync_through(&env, &blind, "3").await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("cannot be read further"), "{err}");
    // The checkpoint was never set to `yesterday`: the source itself still answers the next run.
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
}

/// A feed that ignores `since` and `after_id` (it serves its first records whatever it is asked) ends the run with
/// exit 3, and says so: the message blamed the records' `updated_at` and `id`, which were all there and readable,
/// so the vendor was sent after the wrong fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_ignores_where_it_is_asked_from_is_named_so() {
    let (env, _) = backfilled(Faults::default()).await;
    let first: serde_json::Value = env.permits_page(3).await;
    assert_eq!(first["has_more"], true, "{first}");
    let first = first.to_string();
    let deaf = feed_text_proxy(
        env.source.url(),
        Arc::new(move |_: &str, _: String| first.clone()),
    )
    .await;
    let (code, err) = sync_through(&env, &deaf, "3").await;
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("holds only records at or before that position")
            && err.contains("does it ignore them?")
            && !err.contains("readable `updated_at`"),
        "{err}"
    );
}

/// A feed that ignores `limit` sends its whole table in one answer: read whole into memory, a real one (millions of
/// records) would get the run killed for want of memory, with no message. A page far larger than `limit` records
/// take (256 KiB a record) stops the run at once (exit 3), saying so; nothing is read from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_page_far_larger_than_its_limit_stops_the_run_saying_so() {
    let (env, _) = backfilled(Faults::default()).await;
    // every record of the feed in one page, its texts made long: over the cap of 768 KiB for a limit of 3
    let all: serde_json::Value = env.permits_page(1000).await;
    let mut page = all.clone();
    for r in page["items"].as_array_mut().unwrap() {
        r["content"] = "许可内容".repeat(20_000).into();
    }
    page["has_more"] = false.into();
    let page = page.to_string();
    assert!(page.len() > 768 << 10, "{}", page.len());
    let everything = feed_text_proxy(
        env.source.url(),
        Arc::new(move |_: &str, _: String| page.clone()),
    )
    .await;
    let (code, err) = sync_through(&env, &everything, "3").await;
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("a page of more than 768 KiB for limit=3"),
        "{err}"
    );
    assert!(err.contains("it may ignore `limit`"), "{err}");
}

/// A feed that writes a UTF-8 byte order mark before each page's JSON (as servers on Windows or .NET may) is read
/// as any other: every run ended with exit 3 after the retry budget, "expected value at line 1 column 1", and
/// nothing was ever published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_whose_pages_begin_with_a_byte_order_mark_is_read() {
    let gen_cfg = GenConfig {
        records: 20,
        seed: 5,
        ..GenConfig::default()
    };
    let env = spawn(gen_cfg.clone(), Faults::default()).await;
    let marked = feed_text_proxy(
        env.source.url(),
        Arc::new(|_: &str, text: String| format!("\u{feff}{text}")),
    )
    .await;
    let (code, s, err) = env
        .sync_with(&[
            ("DUALPUB_SOURCE_URL", &marked),
            ("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "3"),
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(s["read"], 20, "{s}");
    let (expected, _) = expected_public(&gen_cfg, today());
    assert_eq!(public_of(&env.platform_records().await), expected);
}

/// An enforcement system on a database whose locale collates ids unlike bytes (hyphens ignored at first, as glibc's
/// and ICU's locales do): `records` served in `(updated_at, id)` order by that collation, `after_id` compared the
/// same way. No penalties.
async fn collated_feed(records: Vec<serde_json::Value>) -> String {
    use axum::extract::{Path, Query, State};
    use std::collections::HashMap;
    fn collated(id: &str) -> String {
        id.replace('-', "")
    }
    fn place(r: &serde_json::Value) -> (i64, String) {
        let t = r["updated_at"].as_str().unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(t).unwrap();
        (t.timestamp_millis(), collated(r["id"].as_str().unwrap()))
    }
    let mut records = records;
    records.sort_by_key(place);
    async fn changes(
        State(records): State<Arc<Vec<serde_json::Value>>>,
        Path(kind): Path<String>,
        Query(q): Query<HashMap<String, String>>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let limit: usize = q["limit"].parse().unwrap();
        let from = q.get("since").map(|since| {
            let t = chrono::DateTime::parse_from_rfc3339(since).unwrap();
            (t.timestamp_millis(), collated(&q["after_id"]))
        });
        let after: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| kind == "permits" && from.as_ref().is_none_or(|f| place(r) > *f))
            .collect();
        let page = serde_json::json!({
            "items": after.iter().take(limit).collect::<Vec<_>>(),
            "has_more": after.len() > limit,
        });
        ([("content-type", "application/json")], page.to_string()).into_response()
    }
    let app = axum::Router::new()
        .route("/api/v1/{kind}/changes", axum::routing::get(changes))
        .with_state(Arc::new(records));
    serve_local(app).await
}

/// An enforcement system whose feed selects the records after `(since, after_id)` but orders them by `id` alone (a
/// vendor's slip: `ORDER BY id`): `records` (permits only).
async fn id_ordered_feed(records: Vec<serde_json::Value>) -> String {
    use axum::extract::{Path, Query, State};
    use std::collections::HashMap;
    fn place(r: &serde_json::Value) -> (i64, String) {
        let t = r["updated_at"].as_str().unwrap();
        let t = chrono::DateTime::parse_from_rfc3339(t).unwrap();
        (t.timestamp_millis(), r["id"].as_str().unwrap().to_string())
    }
    let mut records = records;
    records.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    async fn changes(
        State(records): State<Arc<Vec<serde_json::Value>>>,
        Path(kind): Path<String>,
        Query(q): Query<HashMap<String, String>>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let limit: usize = q["limit"].parse().unwrap();
        let from = q.get("since").map(|since| {
            let t = chrono::DateTime::parse_from_rfc3339(since).unwrap();
            (t.timestamp_millis(), q["after_id"].clone())
        });
        let after: Vec<&serde_json::Value> = records
            .iter()
            .filter(|r| kind == "permits" && from.as_ref().is_none_or(|f| place(r) > *f))
            .collect();
        let page = serde_json::json!({
            "items": after.iter().take(limit).collect::<Vec<_>>(),
            "has_more": after.len() > limit,
        });
        ([("content-type", "application/json")], page.to_string()).into_response()
    }
    let app = axum::Router::new()
        .route("/api/v1/{kind}/changes", axum::routing::get(changes))
        .with_state(Arc::new(records));
    serve_local(app).await
}

/// Forty permits whose ids run against their times, served by a feed ordered by `id` alone: a run read the first
/// page, went on from its middle record (the latest of the page) and never saw the 30 earlier records after it —
/// exit 0, "ok", and a checkpoint past them, so no later run saw them either. The run (and reconcile, which would
/// have listed their published copies as `orphan`) now stops with exit 3 and says the feed is out of order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_not_ordered_by_time_stops_the_run_instead_of_skipping_records() {
    let env = spawn(
        GenConfig {
            records: 80,
            seed: 3,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await;
    let page: serde_json::Value = env.permits_page(40).await;
    let mut records = page["items"].as_array().unwrap().clone();
    assert_eq!(records.len(), 40);
    let base = chrono::DateTime::parse_from_rfc3339("2026-11-20T09:00:00.000+08:00").unwrap();
    for (n, r) in records.iter_mut().enumerate() {
        r["updated_at"] = (base - chrono::Duration::minutes(n as i64))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
            .into();
    }
    let feed = id_ordered_feed(records).await;
    let (code, err) = sync_through(&env, &feed, "10").await;
    assert_eq!(code, Some(3), "{err}");
    assert!(
        err.contains("is not ordered by `updated_at`") && err.contains("comes after record"),
        "{err}"
    );
    let (out, _) = env
        .reconcile_json_with(TODAY, &[], &[("DUALPUB_SOURCE_URL", &feed)])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("is not ordered by `updated_at`"), "{err}");
}

/// One UPDATE statement stamps 600 permits alike, half with old ids (`XK2019…`), half with new ones
/// (`XK-2024-…`), which the feed's collation puts after the old ones although their bytes sort before. Every run
/// stopped with exit 3 where the old ids ended ("no record … past where it was asked from"), and nothing after
/// that tie was ever read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tie_group_the_feed_collates_unlike_bytes_is_read_through() {
    let env = spawn(
        GenConfig {
            records: 1_300,
            seed: 21,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await;
    let page: serde_json::Value = env.permits_page(600).await;
    let mut records = page["items"].as_array().unwrap().clone();
    assert_eq!(records.len(), 600);
    for (n, r) in records.iter_mut().enumerate() {
        r["id"] = if n % 2 == 0 {
            format!("XK2019{n:05}")
        } else {
            format!("XK-2024-{n:06}")
        }
        .into();
        r["updated_at"] = "2026-11-20T09:00:00.000+08:00".into();
    }
    let mappings = dualpub::mapping::MappingSet::builtin();
    let expected: std::collections::BTreeSet<String> = records
        .iter()
        .filter_map(|r| {
            let src: dualpub::source_schema::SourceRecord =
                serde_json::from_value(r.clone()).unwrap();
            let m = mappings.permit.map(&mapping_context(), &src);
            m.is_valid().then(|| m.key.unwrap().to_string())
        })
        .collect();
    assert!(expected.len() > 500);
    let feed = collated_feed(records).await;

    let (code, err) = sync_through(&env, &feed, "100").await;
    assert_eq!(code, Some(0), "{err}");
    let held = env.platform_records().await;
    let public = public_of(&held);
    let missing: Vec<&String> = expected
        .iter()
        .filter(|k| !public.contains_key(*k))
        .collect();
    assert!(missing.is_empty(), "missed {} records", missing.len());
}

/// A late permit whose predecessor and successor were deleted comes first in the feed: the simulator's first page
/// is cut before it, empty, with `has_more`. The run took the empty page for the end of the feed and read no
/// permit at all (exit 0); asked again, the feed serves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_page_that_says_there_is_more_is_asked_again() {
    let gen_cfg = GenConfig {
        records: 40,
        seed: 1,
        late_commit_rate: 0.5,
        ..GenConfig::default()
    };
    assert!(dualpub::sim::gen::is_late(&gen_cfg, Kind::Permit, 1));
    let env = spawn(gen_cfg.clone(), Faults::default()).await;
    for i in [0, 2] {
        env.source_delete(&dualpub::sim::gen::id(Kind::Permit, i))
            .await;
    }
    let (code, summary, err) = env.sync(&["--kind", "permit"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        summary["read"],
        gen_cfg.count(Kind::Permit) - 2,
        "{summary}"
    );
}

/// A feed that says it has more but serves nothing, however often it is asked, ends the run with exit 3 (it ended
/// it with exit 0, every run, with nothing after it read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_has_more_but_serves_nothing_ends_the_run() {
    let (env, _) = backfilled(Faults::default()).await;
    let hollow = feed_text_proxy(
        env.source.url(),
        Arc::new(|_: &str, _: String| r#"{"items":[],"has_more":true}"#.to_string()),
    )
    .await;
    let (code, err) = sync_through(&env, &hollow, "3").await;
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("serves none"), "{err}");
}

/// A quarantined record looked up in a feed that answers "more to come" with an empty page: the feed cannot tell
/// whether it still has the record, so the entry stays. It was taken for gone from the source and removed from
/// quarantine, although the enforcement system still had it, still invalid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_answered_with_an_empty_page_that_has_more_keeps_the_quarantined_record() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    put_permit(
        &env,
        &gen_cfg,
        "XK-BAD",
        "（豫）FM安许证字〔2026〕990041",
        "坏字符\u{1}",
    )
    .await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{err}");
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 1);
    // Lookups ask for a few records at one position; the feed serves them nothing, yet has more.
    let hollow = hollow_lookups(&env).await;
    let (_, err) = env.retry_reading(&hollow).await;
    assert!(
        !err.contains("no longer in the enforcement system"),
        "{err}"
    );
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 1, "{err}");
}

/// The retry budget is time spent retrying, not the run's age: a run longer than its budget rides out a brief
/// outage that starts late. It was `start + budget`, so the first 503 after that ended the run (exit 3, "retry
/// budget ran out") without a single retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brief_outage_late_in_a_run_longer_than_the_retry_budget_is_ridden_out() {
    let gen_cfg = GenConfig {
        records: 200,
        seed: 11,
        invalid_rate: 0.0,
        ..GenConfig::default()
    };
    let env = spawn(gen_cfg.clone(), Faults::default()).await;
    // 20 pages at 400 ms each: about 8 s, twice the budget.
    env.admin_post(
        format!("{}/admin/latency", env.source.url()),
        serde_json::json!({"ms": 400}),
    )
    .await;
    let mut c = env.command(&["sync", "--json", "--today", TODAY]);
    c.env("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "4")
        .env("DUALPUB_SOURCE_PAGE_SIZE", "10");
    let run = tokio::task::spawn_blocking(move || c.output().unwrap());
    let faults = |rate: f64| {
        env.admin_post(
            format!("{}/admin/faults", env.platform.url()),
            serde_json::json!({ "error_rate": rate }),
        )
    };
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert!(!run.is_finished(), "the run outlasts its retry budget");
    faults(1.0).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    faults(0.0).await;
    let out = run.await.unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(out.status.code(), Some(0), "{summary} {err}");
    assert!(summary["retries"].as_u64().unwrap() > 0, "{summary}");
    assert!(
        env.platform_stats().await["faults"]["errors"]
            .as_u64()
            .unwrap()
            > 0,
        "the outage met the run"
    );
    let (expected, _) = expected_public(&gen_cfg, today());
    assert_eq!(public_of(&env.platform_records().await), expected);
}

/// A source that stays down ends the run after about the retry budget, which source calls share with platform
/// calls; the message names the key that sets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_source_outage_ends_the_run_after_about_the_retry_budget() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let t0 = std::time::Instant::now();
    let (code, _, err) = env
        .sync_with(&[
            ("DUALPUB_PLATFORM_RETRY_BUDGET_SECS", "3"),
            ("DUALPUB_SOURCE_URL", &url),
        ])
        .await;
    let took = t0.elapsed();
    assert_eq!(code, 3, "{err}");
    assert!(
        took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(20),
        "{took:?}: {err}"
    );
    assert!(
        err.contains("[platform] retry_budget_secs")
            && err.contains("calls to the enforcement system share")
            && err.contains("cannot connect to the source"),
        "{err}"
    );
}

/// A platform URL with a wrong path (here `/api` added) is a configuration error naming `[platform] url`, at the
/// login and at the calls after it. It was exit 3 with "login: HTTP 404: NOT_FOUND no such endpoint".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_url_with_a_wrong_path_is_a_configuration_error() {
    let gen_cfg = GenConfig {
        records: 20,
        seed: 5,
        invalid_rate: 0.0,
        ..GenConfig::default()
    };
    let env = spawn(gen_cfg, Faults::default()).await;
    let base = env.platform.url();
    // 404: no such path; 405: a path the simulator serves, for another method (DELETE /admin/records/{key}).
    for (url, status) in [
        (format!("{base}/api"), 404),
        (format!("{base}/admin/records"), 405),
    ] {
        for command in ["sync", "reconcile"] {
            let out = env
                .dualpub_with(
                    &[command, "--today", TODAY],
                    &[("DUALPUB_PLATFORM_URL", &url)],
                )
                .await;
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} {url}: {err}");
            assert!(
                err.contains(&format!("POST {url}/api/token answered HTTP {status}"))
                    && err.contains(&format!("check [platform] url (now {url})")),
                "{command}: {err}"
            );
        }
    }
    // A gateway that serves the login but nothing else: the exchange and the listing are not where they should be.
    let proxy = token_only_proxy(base.to_string()).await;
    for (command, call) in [
        (
            "sync",
            format!("POST {proxy}/api/exchange answered HTTP 404"),
        ),
        (
            "reconcile",
            format!("GET {proxy}/api/records answered HTTP 404"),
        ),
    ] {
        let out = env
            .dualpub_with(
                &[command, "--today", TODAY],
                &[("DUALPUB_PLATFORM_URL", &proxy)],
            )
            .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {err}");
        assert!(
            err.contains(&call) && err.contains("check [platform] url"),
            "{command}: {err}"
        );
    }
}

/// A loopback server that answers every request with `status` and, when given, `Location: location`. Its URL.
async fn redirecting(status: u16, location: Option<&'static str>) -> String {
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(move || async move {
        let status = axum::http::StatusCode::from_u16(status).unwrap();
        match location {
            Some(l) => (status, [("location", l)]).into_response(),
            None => status.into_response(),
        }
    });
    serve_local(app).await
}

/// A redirect from the source said "set [source] url to the address it points to" without the address. It names
/// the URL asked and where the answer points — without user name, password, query or fragment, which may carry a
/// token — and, when that is the feed under another base address, the base address to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_redirect_names_where_it_points() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    for (status, location, says) in [
        (
            301,
            Some("https://svc:pw0@zf.example/feed/api/v1/permits/changes?sig=TOKEN1#at=TOKEN2"),
            vec![
                " with a redirect (HTTP 301) to https://zf.example/feed/api/v1/permits/changes; ",
                "set [source] url to https://zf.example/feed (now URL)",
            ],
        ),
        (
            302,
            Some("/sso/login?ticket=TOKEN1"),
            vec![
                " with a redirect (HTTP 302) to URL/sso/login, which is not the feed",
                "check [source] url (now URL): it should be the enforcement system's base address",
            ],
        ),
        (
            302,
            None,
            vec![
                " with a redirect (HTTP 302) that names no address",
                "check [source] url (now URL)",
            ],
        ),
    ] {
        let url = redirecting(status, location).await;
        for args in [&["sync", "--dry-run"][..], &["sync"]] {
            let mut args = args.to_vec();
            args.extend(["--today", TODAY]);
            let out = env
                .dualpub_with(&args, &[("DUALPUB_SOURCE_URL", &url)])
                .await;
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(
                err.contains(&format!(
                    "answered GET {url}/api/v1/permits/changes with a redirect"
                )),
                "{err}"
            );
            for s in &says {
                assert!(err.contains(&s.replace("URL", &url)), "{s}: {err}");
            }
            assert!(!err.contains("pw0") && !err.contains("TOKEN"), "{err}");
        }
    }
}

/// `[source] url` with a path (`…/api/v1`) said "HTTP 404: no such endpoint; check [source] url" without the URL
/// asked. It names the URL (without the query, whose `after_id` may hold an ID number) and what the key should be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_url_with_a_wrong_path_names_the_url_asked() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    let url = format!("{}/api/v1", env.source.url());
    let (code, _, err) = env.sync_with(&[("DUALPUB_SOURCE_URL", &url)]).await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("answered GET {url}/api/v1/permits/changes with HTTP 404"))
            && err.contains(&format!(
                "check [source] url (now {url}): it should be the enforcement system's base address, to which \
                 dualpub adds /api/v1/permits/changes and /api/v1/penalties/changes"
            )),
        "{err}"
    );
    assert!(!err.contains("limit="), "{err}");
}

/// A redirect from the platform said "…set [platform] url to the address it points to: the platform has no such
/// endpoint there", and not the address. It says where the redirect points and what to set, and nothing about
/// endpoints the platform has not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_redirect_names_where_it_points() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    for (status, location, says) in [
        (
            308,
            Some("https://gw:pw0@credit.example/hub/api/token?appKey=TOKEN1"),
            "POST URL/api/token answered with a redirect (HTTP 308) to https://credit.example/hub/api/token; \
             dualpub does not follow redirects, so that the token and the records go nowhere else: set [platform] \
             url to https://credit.example/hub (now URL)",
        ),
        (
            302,
            Some("https://sso.example/login?ticket=TOKEN1"),
            "POST URL/api/token answered with a redirect (HTTP 302) to https://sso.example/login, which is not the \
             platform's /api/token (a login page or a gateway?); dualpub does not follow redirects, so that the token \
             and the records go nowhere else: check [platform] url (now URL)",
        ),
    ] {
        let url = redirecting(status, location).await;
        for command in ["sync", "reconcile"] {
            let out = env
                .dualpub_with(
                    &[command, "--today", TODAY],
                    &[("DUALPUB_PLATFORM_URL", &url)],
                )
                .await;
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command}: {err}");
            assert!(err.contains(&says.replace("URL", &url)), "{command}: {err}");
            assert!(
                !err.contains("no such endpoint") && !err.contains("pw0") && !err.contains("TOKEN"),
                "{command}: {err}"
            );
        }
    }
}

/// A `[mapping] dir` that holds none of the mapping files (a misnamed copy) stops `sync`, dry or not, before it
/// reads or sends anything: it used to run on the built-in mappings with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapping_dir_holding_none_of_its_files_stops_sync() {
    let env = spawn(GenConfig::default(), Faults::default()).await;
    let m = env.dir.path().join("typomap");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("permits.toml"), "x = 1\n").unwrap();
    for args in [
        &["sync", "--dry-run", "--today", TODAY][..],
        &["sync", "--today", TODAY],
    ] {
        let out = env
            .dualpub_with(args, &[("DUALPUB_MAPPING_DIR", m.to_str().unwrap())])
            .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("environment variable DUALPUB_MAPPING_DIR (overrides [mapping] dir of ")
                && err.contains("(permit.toml, penalty.toml, codes.toml, calendar.toml)")
                && err.contains("only permits.toml (meant as permit.toml?)"),
            "{args:?}: {err}"
        );
    }
    assert!(env.platform_records().await.is_empty(), "nothing sent");
}

/// A loopback server that passes `POST /api/token` on to the platform simulator and answers everything else 404.
async fn token_only_proxy(platform: String) -> String {
    use axum::extract::State;
    use axum::response::IntoResponse;
    async fn token(
        State((platform, http)): State<(String, reqwest::Client)>,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let res = http
            .post(format!("{platform}/api/token"))
            .header("content-type", "application/xml; charset=utf-8")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = axum::http::StatusCode::from_u16(res.status().as_u16()).unwrap();
        (status, res.bytes().await.unwrap()).into_response()
    }
    let app = axum::Router::new()
        .route("/api/token", axum::routing::post(token))
        .with_state((platform, reqwest::Client::new()));
    serve_local(app).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_that_takes_smaller_messages_gets_them_and_a_record_too_big_alone_is_rejected() {
    let gen_cfg = GenConfig {
        records: 300,
        seed: 13,
        invalid_rate: 0.0,
        ..GenConfig::default()
    };
    // A platform that takes messages of 8 KiB: the default batch of 200 records is refused (413). Before, that
    // batch stayed in the outbox, was resent first by every run and refused again: nothing was published any more.
    let env = spawn(
        gen_cfg.clone(),
        Faults {
            max_message_bytes: 8 * 1024,
            ..Faults::default()
        },
    )
    .await;
    // and one permit that passes 8 KiB alone, every field within its length limit
    let mut big = permit_with_doc(
        &env,
        &gen_cfg,
        "XK-BIG",
        "（豫）大证字〔2026〕1号",
        &"很".repeat(2000),
    )
    .await;
    big["remarks"] = "备".repeat(1000).into();
    env.source_insert_one(big).await;
    let (expected, _) = expected_public(&gen_cfg, today());

    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "the big permit needs a person: {s} {err}");
    assert_eq!(s["rejected"], 1, "{s}");
    let public = public_of(&env.platform_records().await);
    assert!(
        public == expected,
        "the platform holds every generated record and not the big one"
    );
    let store = read_store(&env.store_path());
    assert_eq!(store.outbox_len(), 0, "nothing left to resend");
    let q = store
        .quarantine_get(Kind::Permit, "XK-BIG")
        .unwrap()
        .expect("the big permit is in quarantine");
    assert_eq!(q.reason, "rejected");
    assert!(
        q.findings
            .iter()
            .any(|f| f.code == "MESSAGE_REFUSED" && f.en.contains("413")),
        "{:?}",
        q.findings
    );
    drop(store);

    // the next run has nothing to resend and nothing to push
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["pushed"], 0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_nothing_to_send_still_finds_out_that_the_platform_refuses_the_secret() {
    let (env, _) = backfilled(Faults::default()).await;
    std::fs::write(env.dir.path().join("platform.secret"), "not-the-secret\n").unwrap();
    // Nothing changed at the source: this run sends nothing. It said "ok" (exit 0) until a record changed.
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 2, "{s} {err}");
    assert!(
        err.contains("refused the login") && err.contains("secret"),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "{err}");
    // a dry run still talks to no platform
    let out = env.dualpub(&["sync", "--dry-run", "--today", TODAY]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Records the source schema cannot read, several of them without a readable id (reported: all quarantined under
/// one name, "(no id)", with no copy of the record; lone surrogates counted as no id; a stale entry for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_records_are_quarantined_each_under_a_name_of_its_own() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let rules: Rules = Arc::new(std::sync::Mutex::new(vec![
        ("@@SURR@@".to_string(), r"\ud800".to_string()),
        (r#""id":"XK-NOID-1""#.into(), r#""xid":"XK-NOID-1""#.into()),
        (r#""id":"XK-NOID-2""#.into(), r#""xid":"XK-NOID-2""#.into()),
        (r#""id":"XK-BLANK-1""#.into(), r#""id":"""#.into()),
        (r#""id":"XK-BLANK-2""#.into(), r#""id":" ""#.into()),
        (r#""id":"XK-NUM""#.into(), r#""id":6"#.into()),
    ]));
    let proxy = feed_rewriting_proxy(env.source.url(), rules.clone()).await;
    let records = [
        ("XK-SURR-1", "检查@@SURR@@发现"),
        ("XK-SURR-2", "依据@@SURR@@"),
        ("6", "编号为文本@@SURR@@"),
        ("XK-NOID-1", "无编号一"),
        ("XK-NOID-2", "无编号二"),
        ("XK-BLANK-1", "空编号一"),
        ("XK-BLANK-2", "空编号二"),
        ("XK-NUM", "编号为数字"),
    ];
    let put_all = |fixed: bool| {
        let (env, gen_cfg) = (&env, &gen_cfg);
        async move {
            for (i, (id, content)) in records.iter().enumerate() {
                let content = if fixed {
                    content.replace("@@SURR@@", "")
                } else {
                    content.to_string()
                };
                let doc = format!("（豫）FM安许证字〔2026〕99100{i}");
                put_permit(env, gen_cfg, id, &doc, &content).await;
            }
        }
    };
    put_all(false).await;
    let through = [
        ("DUALPUB_SOURCE_URL", proxy.as_str()),
        // every record read again by each run: the same record must find its own entry
        ("DUALPUB_SYNC_OVERLAP_MINUTES", "100000000"),
    ];
    let out = env
        .dualpub_with(&["sync", "--json", "--today", TODAY], &through)
        .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert_eq!(s["quarantined"], 8, "{s}");
    let q = read_store(&env.store_path()).quarantine_all().unwrap();
    let names: Vec<&str> = q.iter().map(|e| e.source_id.as_str()).collect();
    assert_eq!(q.len(), 8, "one entry per record: {names:?}");
    for id in ["XK-SURR-1", "XK-SURR-2", "6", "(id 6)"] {
        assert!(names.contains(&id), "{id} in {names:?}");
    }
    assert_eq!(
        names.iter().filter(|n| n.starts_with("(no id) ")).count(),
        4,
        "{names:?}"
    );
    for e in &q {
        assert!(!e.source.is_null(), "{} keeps its record", e.source_id);
    }

    // Each entry shows its record; a lone surrogate is named as such.
    let show = |name: String| {
        let env = &env;
        async move {
            let out = env.dualpub(&["quarantine", "show", &name]).await;
            assert_eq!(out.status.code(), Some(0), "{name}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let shown = show("XK-SURR-1".into()).await;
    assert!(shown.contains("lone surrogate"), "{shown}");
    assert!(shown.contains("检查\u{fffd}发现"), "{shown}");
    assert!(shown.contains("99100"), "{shown}");
    for e in q.iter().filter(|e| e.source_id.starts_with("(no id) ")) {
        let shown = show(e.source_id.clone()).await;
        assert!(shown.contains("（豫）FM安许证字〔2026〕99100"), "{shown}");
        assert!(
            !shown.contains("source record (ID numbers masked):\nnull"),
            "{shown}"
        );
    }

    // Read again, the same records are the same entries.
    let out = env
        .dualpub_with(&["sync", "--json", "--today", TODAY], &through)
        .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(s["quarantined"], 0, "{s}");
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 8);

    // A retry while the enforcement system still serves them as they were finds each (records without a string
    // id too: the feed may sort them before any id, so the look starts a millisecond early) and keeps it. The
    // id-less ones were taken for gone and removed, and the checkpoint had passed them: lost.
    let sql = feed_rewriting_proxy_sql(
        env.source.url(),
        rules.clone(),
        &[
            "XK-NOID-1",
            "XK-NOID-2",
            "XK-BLANK-1",
            "XK-BLANK-2",
            "XK-NUM",
        ],
    )
    .await;
    let (out, err) = env.retry_reading(&sql).await;
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        !err.contains("no longer in the enforcement system"),
        "{err}"
    );
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 8, "{err}");

    // The enforcement system fixes every record (new versions, with ids): those named by their id leave
    // quarantine with the next sync; a retry finds the others no longer served and removes them.
    rules.lock().unwrap().clear();
    put_all(true).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    let left: Vec<String> = read_store(&env.store_path())
        .quarantine_all()
        .unwrap()
        .into_iter()
        .map(|e| e.source_id)
        .collect();
    assert_eq!(left.len(), 5, "{left:?}");
    let out = env.dualpub(&["quarantine", "retry"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("5 retried record(s) no longer in the enforcement system"),
        "{err}"
    );
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 0);
}

/// Before each unreadable record had a name of its own, they all shared the entry "(no id)", which held no copy
/// of a record (`null`): nothing can retry it or look it up, so a retry removes it, saying so, instead of keeping
/// it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_removes_an_old_no_id_entry_that_holds_no_record() {
    let (env, _) = backfilled(Faults::default()).await;
    {
        let store = read_store(&env.store_path());
        let old = dualpub::store::QuarantineEntry {
            kind: Kind::Penalty,
            source_id: "(no id)".into(),
            key: None,
            reason: "invalid".into(),
            findings: Vec::new(),
            source: serde_json::Value::Null,
            first_seen: "2026-11-01T00:00:00.000+08:00".into(),
            last_seen: "2026-11-01T00:00:00.000+08:00".into(),
            meta: Default::default(),
            source_updated_at: None,
            read_at: None,
        };
        store
            .commit_page(&dualpub::store::PageCommit {
                quarantine_put: vec![old],
                ..Default::default()
            })
            .unwrap();
        store.flush().unwrap();
    }
    let out = env.dualpub(&["quarantine", "retry", "(no id)"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("`(no id)` holds no copy of a source record")
            && err.contains("removed from quarantine"),
        "{err}"
    );
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 0);
}

/// Reported: escape sequences in a record id, a document number or a party name reached the terminal raw through
/// `quarantine list` and `quarantine show` (clearing the screen, hiding text, erasing the lines above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_list_and_show_never_print_control_characters_from_the_data() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let mut a = permit_with_doc(
        &env,
        &gen_cfg,
        "XK-ESC-1",
        "DOC-\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[31mESC",
        "内容",
    )
    .await;
    a["party"]["name"] = "\u{1b}[8m隐藏公司\u{9b}2J".into();
    let b_id = "XK-ESC-2\u{1b}[1A\u{1b}[2K";
    let b = permit_with_doc(
        &env,
        &gen_cfg,
        b_id,
        "（豫）FM安许证字〔2026〕990041",
        "内容\u{1}\u{9b}",
    )
    .await;
    env.source_insert(serde_json::json!([a, b])).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(read_store(&env.store_path()).quarantine_len(), 2);
    let mut shown = Vec::new();
    for args in [
        vec!["quarantine", "list"],
        vec!["quarantine", "list", "--json"],
        vec!["quarantine", "show", "XK-ESC-1"],
        vec!["quarantine", "show", b_id],
    ] {
        let out = env.dualpub(&args).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{args:?} printed a control character: {text:?}"
        );
        shown.push(text);
    }
    // what the data holds is still there to see
    assert!(
        shown[0].contains(r"XK-ESC-2\u{1b}[1A\u{1b}[2K"),
        "{}",
        shown[0]
    );
    assert!(
        shown[2].contains(r"\u{1b}[8m隐藏公司\u{9b}2J"),
        "{}",
        shown[2]
    );
    let listed: serde_json::Value = serde_json::from_str(&shown[1]).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["party_name"] == "\u{1b}[8m隐藏公司\u{9b}2J"),
        "{listed}"
    );
}

/// Reported: an ID number the enforcement system sends as a JSON number (an export that lost the quotes) was
/// shown whole by `quarantine show`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_show_masks_an_id_number_sent_as_a_number() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let full = "410105198503124030";
    let rules: Rules = Arc::new(std::sync::Mutex::new(vec![(
        r#""@@ID@@""#.to_string(),
        format!(r#"{full},"FDDBR_ZJHM":{full}"#),
    )]));
    let proxy = feed_rewriting_proxy(env.source.url(), rules).await;
    let mut v = permit_with_doc(
        &env,
        &gen_cfg,
        "XK-IDNUM-1",
        "（豫）FM安许证字〔2026〕990051",
        "内容",
    )
    .await;
    v["party"]["legal_rep"]["id_no"] = "@@ID@@".into();
    env.source_insert_one(v).await;
    let out = env
        .dualpub_with(
            &["sync", "--json", "--today", TODAY],
            &[("DUALPUB_SOURCE_URL", proxy.as_str())],
        )
        .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.dualpub(&["quarantine", "show", "XK-IDNUM-1"]).await;
    assert_eq!(out.status.code(), Some(0));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("source_schema"), "{shown}");
    assert!(!shown.contains(full), "{shown}");
    assert!(
        shown.contains(r#""id_no": "410105********4030""#)
            && shown.contains(r#""FDDBR_ZJHM": "410105********4030""#),
        "{shown}"
    );
}

/// A record held back for a document number, whose text no `serde_json::Value` can hold (a lone surrogate in a
/// field dualpub does not read): quarantine keeps its text, and when the number is freed the run sends it from
/// that text (the copy could not be read again, and the record stayed in quarantine for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_waiting_for_its_number_is_sent_even_if_no_value_can_hold_it() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let rules: Rules = Arc::new(std::sync::Mutex::new(vec![(
        r#""id":"XK-WAIT""#.to_string(),
        r#""id":"XK-WAIT","vendor_note":"\ud800""#.to_string(),
    )]));
    let proxy = feed_rewriting_proxy(env.source.url(), rules).await;
    let through = [
        ("DUALPUB_SOURCE_URL", proxy.as_str()),
        // the waiting record is not read again: only the copy quarantine holds can send it
        ("DUALPUB_SYNC_OVERLAP_MINUTES", "0"),
    ];
    let doc = "（豫）FM安许证字〔2026〕990061";
    put_permit(&env, &gen_cfg, "XK-HOLD", doc, "先录入").await;
    let (code, s, err) = env.sync_with(&through).await;
    assert_eq!(code, 0, "{s} {err}");
    put_permit(&env, &gen_cfg, "XK-WAIT", doc, "后录入").await;
    // records after it, so that the checkpoint passes it
    for i in 0..4 {
        let other = format!("（豫）FM安许证字〔2026〕99007{i}");
        put_permit(&env, &gen_cfg, &format!("XK-AFTER-{i}"), &other, "其他").await;
    }
    let (code, s, err) = env.sync_with(&through).await;
    assert_eq!(code, 1, "{s} {err}");
    let q = read_store(&env.store_path()).quarantine_all().unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].source_id, "XK-WAIT");
    assert!(
        q[0].source.is_string(),
        "kept as its text: {:?}",
        q[0].source
    );

    // The holder moves to another number: the waiting record gets this one in the same run.
    put_permit(&env, &gen_cfg, "XK-HOLD", &format!("{doc}-更正"), "先录入").await;
    let (code, s, err) = env.sync_with(&through).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["read"], 3, "XK-WAIT is not read again: {s}");
    let (content, status, ledger_source, quarantined) = reuse_outcome(&env, doc).await;
    assert_eq!(
        (content.as_str(), status.as_str(), ledger_source.as_deref()),
        ("后录入", "public", Some("XK-WAIT")),
        "{quarantined:?}"
    );
    assert!(quarantined.is_empty(), "{quarantined:?}");
}

/// A record the platform refuses whose text no `serde_json::Value` can hold (a lone surrogate in a field dualpub
/// does not read): quarantine keeps its text (it kept `null`, and a retry could not send it again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_no_value_can_hold_keeps_its_text_for_a_retry() {
    let gen_cfg = GenConfig {
        records: 20,
        seed: 7,
        ..GenConfig::default()
    };
    let first = dualpub::sim::gen::record(&gen_cfg, Kind::Permit, 0);
    let env = spawn_with(
        gen_cfg,
        dualpub::sim::platform::PlatformSimConfig {
            strict: Some(dualpub::sim::platform::StrictProfile {
                max_len: None,
                refused_parties: vec![first.party.unwrap().name.unwrap()],
            }),
            ..Default::default()
        },
        "",
    )
    .await;
    let rules: Rules = Arc::new(std::sync::Mutex::new(vec![(
        format!(r#""id":"{}""#, first.id),
        format!(r#""id":"{}","vendor_note":"\ud800""#, first.id),
    )]));
    let proxy = feed_rewriting_proxy(env.source.url(), rules).await;
    let through = [("DUALPUB_SOURCE_URL", proxy.as_str())];
    let (code, s, err) = env.sync_with(&through).await;
    assert_eq!(code, 1, "the platform refused a record: {s} {err}");
    let held = read_store(&env.store_path())
        .quarantine_get(Kind::Permit, &first.id)
        .unwrap()
        .expect("the refused record is in quarantine");
    assert_eq!(held.reason, "rejected");
    let text = held.source.as_str().expect("its text");
    assert!(text.contains(r#""vendor_note":"\ud800""#), "{text}");

    let was = env.platform_stats().await["rejected"].as_u64().unwrap();
    let out = env
        .dualpub_with(&["quarantine", "retry", &first.id], &through)
        .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.platform_stats().await["rejected"].as_u64().unwrap(),
        was + 1,
        "the retry sent the record again"
    );
}

/// A record's second version, invalid and with a text no `serde_json::Value` can hold, goes to quarantine while
/// its first version is on its way: the first one's receipt must leave the entry (it took the copy held as text
/// for an older one and removed it — a silent drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_version_kept_as_text_stays_in_quarantine_when_the_older_ones_receipt_comes() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let doc = "（豫）FM安许证字〔2026〕990081";
    put_permit(&env, &gen_cfg, "XK-TEXT-T", doc, "T 的第一版").await;
    for i in 0..3 {
        let other = format!("（豫）FM安许证字〔2026〕99009{i}");
        put_permit(&env, &gen_cfg, &format!("XK-TEXT-F{i}"), &other, "F").await;
    }
    let rules: Rules = Arc::new(std::sync::Mutex::new(vec![(
        r#""content":"T 的第二版"#.to_string(),
        r#""vendor_note":"\ud800","content":"T 的第二版"#.to_string(),
    )]));
    let proxy = feed_rewriting_proxy(env.source.url(), rules).await;
    let run = sync_with_a_batch_in_flight(&env, &[("DUALPUB_SOURCE_URL", &proxy)]).await;
    let t2 = permit_with_doc(&env, &gen_cfg, "XK-TEXT-T", doc, "T 的第二版\u{1}").await;
    env.source_insert_one(t2).await;
    let out = run.await.unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(1),
        "T is in quarantine: {summary} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (content, status, _, quarantined) = reuse_outcome(&env, doc).await;
    assert_eq!(
        (content.as_str(), status.as_str()),
        ("T 的第一版", "public")
    );
    assert_eq!(
        quarantined,
        vec![("XK-TEXT-T".to_string(), vec!["xml_char".to_string()])],
        "T's second version waits in quarantine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_entered_the_day_before_its_date_is_published_when_the_day_comes() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let mut early = permit_with_doc(
        &env,
        &gen_cfg,
        "XK-EARLY",
        "（豫）早证字〔2026〕1号",
        "次日生效的许可",
    )
    .await;
    early["decided_on"] = "2026-11-28".into();
    early["valid_from"] = "2026-11-28".into();
    env.source_insert_one(early).await;
    put_permit(
        &env,
        &gen_cfg,
        "XK-LATER",
        "（豫）晚证字〔2026〕2号",
        "其后录入",
    )
    .await;
    // no overlap: the feed serves XK-EARLY to the first run only, as it would a record entered days ago
    let vars = [("DUALPUB_SYNC_OVERLAP_MINUTES", "0")];
    let run = |day: &'static str| {
        let env = &env;
        async move {
            let out = env
                .dualpub_with(&["sync", "--json", "--today", day], &vars)
                .await;
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            (
                out.status.code(),
                s,
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, s, err) = run("2026-11-27").await;
    assert_eq!(code, Some(1), "{s} {err}");
    let q = read_store(&env.store_path())
        .quarantine_get(Kind::Permit, "XK-EARLY")
        .unwrap()
        .expect("held back the day before its decision");
    assert_eq!(q.findings[0].code, "date_out_of_range");
    let published = || async {
        env.platform_records()
            .await
            .keys()
            .any(|k| k.ends_with("（豫）早证字〔2026〕1号"))
    };
    assert!(!published().await);
    // On its day the feed has nothing new, yet the record goes out (it waited for its next change, and missed its
    // deadline).
    let (code, s, err) = run("2026-11-28").await;
    assert_eq!(code, Some(0), "{s} {err}");
    assert_eq!(s["accepted"], 1, "{s}");
    assert!(published().await);
    assert!(read_store(&env.store_path())
        .quarantine_get(Kind::Permit, "XK-EARLY")
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_penalty_revoked_in_a_version_that_fails_validation_is_still_taken_down() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let held = env.platform_records().await;
    let (key, penalty) = (0..gen_cfg.count(Kind::Penalty))
        .map(|i| dualpub::sim::gen::record(&gen_cfg, Kind::Penalty, i))
        .find_map(|r| {
            let doc = r.doc_no.as_deref().unwrap_or("").trim().to_string();
            held.iter()
                .find(|(k, v)| {
                    k.starts_with("XZCF") && k.ends_with(&format!(":{doc}")) && v.1 == "public"
                })
                .map(|(k, _)| (k.clone(), r))
        })
        .expect("a published penalty");
    // Revoked, and in the same edit a remark the platform cannot take (a control character).
    let mut v = env.source_record(&penalty.id).await;
    v["status"] = "revoked".into();
    v["remarks"] = "\u{1}决定已撤销".into();
    v["updated_at"] = serde_json::Value::Null;
    v["kind"] = "penalty".into();
    env.source_insert_one(v).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "quarantined: {s} {err}");
    assert_eq!(s["withdrawn"], 1, "{s}");
    assert_eq!(env.platform_records().await[&key].1, "withdrawn", "{key}");
    let store = read_store(&env.store_path());
    let q = store
        .quarantine_get(Kind::Penalty, &penalty.id)
        .unwrap()
        .expect("the invalid version is in quarantine");
    assert!(
        q.findings.iter().any(|f| f.code == "xml_char"),
        "{:?}",
        q.findings
    );
    drop(store);
    // The revoked penalty keeps its number: another record with it is a reused number, not a new publication.
    let mut other = env.source_record(&penalty.id).await;
    other["id"] = "CF-SAME-NUMBER".into();
    other["status"] = "active".into();
    other["remarks"] = serde_json::Value::Null;
    other["updated_at"] = serde_json::Value::Null;
    other["kind"] = "penalty".into();
    env.source_insert_one(other).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(s["pushed"], 0, "{s}");
    let q = read_store(&env.store_path())
        .quarantine_get(Kind::Penalty, "CF-SAME-NUMBER")
        .unwrap()
        .expect("held back");
    assert_eq!(q.findings[0].code, "key_reused");
    assert_eq!(env.platform_records().await[&key].1, "withdrawn");
}

/// Records quarantined under settings the operator then mended (a misspelt agency name, a mapping file): nothing
/// said the quarantine was judged under the old ones, and the next runs said "ok" with the records still held. The
/// first run after such a change says how many are in quarantine and to run `quarantine retry`; the next says
/// nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_the_settings_that_validate_records_points_to_quarantine_retry() {
    let env = spawn(
        GenConfig {
            records: 80,
            seed: 9,
            invalid_rate: 0.2,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    let held = s["quarantined"].as_u64().unwrap();
    assert!(held > 0);
    let (_, s, _) = env.sync(&[]).await;
    assert_eq!(s["quarantine_to_recheck"], serde_json::Value::Null, "{s}");
    // The agency's name changes.
    let text = std::fs::read_to_string(&env.config).unwrap();
    let name = text
        .lines()
        .find(|l| l.starts_with("name = "))
        .unwrap()
        .to_string();
    std::fs::write(
        &env.config,
        text.replace(&name, "name = \"河南省应急管理厅（更正）\""),
    )
    .unwrap();
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(s["quarantine_to_recheck"], held, "{s}");
    assert!(err.contains("quarantine retry"), "{err}");
    let (_, s, _) = env.sync(&[]).await;
    assert_eq!(s["quarantine_to_recheck"], serde_json::Value::Null, "{s}");
    // A mapping directory (a copy of the built-in files, then one of them edited) is a change too.
    let dir = env.dir.path().join("mappings");
    std::fs::create_dir(&dir).unwrap();
    let codes = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/codes.toml"),
    )
    .unwrap();
    std::fs::write(dir.join("codes.toml"), &codes).unwrap();
    let with_dir = [("DUALPUB_MAPPING_DIR", dir.to_str().unwrap())];
    let out = env
        .dualpub_with(&["sync", "--json", "--today", TODAY], &with_dir)
        .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        s["quarantine_to_recheck"],
        serde_json::Value::Null,
        "the same files: {s}"
    );
    // Files that validate nothing: an editor's swap file, a note, a calendar (deadlines, not validity).
    let calendar = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/calendar.toml"),
    )
    .unwrap();
    std::fs::write(dir.join(".codes.toml.swp"), "swap").unwrap();
    std::fs::write(
        dir.join("calendar.toml"),
        format!("{calendar}\n# local copy\n"),
    )
    .unwrap();
    let out = env
        .dualpub_with(&["sync", "--json", "--today", TODAY], &with_dir)
        .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        s["quarantine_to_recheck"],
        serde_json::Value::Null,
        "nothing that validates changed: {s}"
    );
    std::fs::write(
        dir.join("codes.toml"),
        format!("{codes}\n# 2026-11-30 checked\n"),
    )
    .unwrap();
    let out = env
        .dualpub_with(&["sync", "--json", "--today", TODAY], &with_dir)
        .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["quarantine_to_recheck"], held, "{s}");
    // Changed again, then the whole quarantine retried: nothing is left to recheck.
    std::fs::write(dir.join("codes.toml"), format!("{codes}\n# 2026-12-01\n")).unwrap();
    let out = env.dualpub_with(&["quarantine", "retry"], &with_dir).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 1)), "{err}");
    let out = env
        .dualpub_with(&["sync", "--json", "--today", TODAY], &with_dir)
        .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["quarantine_to_recheck"], serde_json::Value::Null, "{s}");
    // A code table in a folder of its own, named by the mapping, is a file in force too.
    let permit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings/permit.toml"),
    )
    .unwrap();
    std::fs::create_dir(dir.join("t")).unwrap();
    std::fs::write(dir.join("t/codes.toml"), &codes).unwrap();
    std::fs::write(
        dir.join("permit.toml"),
        permit.replace("codes = \"codes.toml\"", "codes = \"t/codes.toml\""),
    )
    .unwrap();
    let sync = || env.dualpub_with(&["sync", "--json", "--today", TODAY], &with_dir);
    let s: serde_json::Value = serde_json::from_slice(&sync().await.stdout).unwrap();
    assert!(s["quarantine_to_recheck"].as_u64() > Some(0), "{s}");
    std::fs::write(dir.join("t/codes.toml"), format!("{codes}\n# t\n")).unwrap();
    let s: serde_json::Value = serde_json::from_slice(&sync().await.stdout).unwrap();
    assert!(s["quarantine_to_recheck"].as_u64() > Some(0), "{s}");
}

/// A penalty revoked in a version the source schema cannot read (here its fine sent as a JSON number, not the
/// decimal string DESIGN §2 asks for) is still taken down: a revoked decision must not stay public until someone
/// mends a field the withdrawal does not need (as for one that fails validation, above). It stayed public, with the
/// record only in quarantine as `source_schema`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_penalty_revoked_in_a_version_the_schema_cannot_read_is_still_taken_down() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let held = env.platform_records().await;
    let (key, penalty) = (0..gen_cfg.count(Kind::Penalty))
        .map(|i| dualpub::sim::gen::record(&gen_cfg, Kind::Penalty, i))
        .filter(|r| r.fine_yuan.is_some())
        .find_map(|r| {
            let doc = r.doc_no.as_deref().unwrap_or("").trim().to_string();
            held.iter()
                .find(|(k, v)| {
                    k.starts_with("XZCF") && k.ends_with(&format!(":{doc}")) && v.1 == "public"
                })
                .map(|(k, _)| (k.clone(), r))
        })
        .expect("a published penalty with a fine");
    let mut v = env.source_record(&penalty.id).await;
    v["status"] = "revoked".into();
    v["updated_at"] = serde_json::Value::Null;
    v["kind"] = "penalty".into();
    env.source_insert_one(v).await;
    // The feed sends the revoked version's fine as a number.
    let numbers = feed_proxy(env.source.url(), |_, item| {
        if item["status"] == "revoked" {
            if let Some(fine) = item["fine_yuan"]
                .as_str()
                .and_then(|f| f.parse::<f64>().ok())
            {
                item["fine_yuan"] = fine.into();
            }
        }
    })
    .await;
    let (code, s, err) = env.sync_with(&[("DUALPUB_SOURCE_URL", &numbers)]).await;
    assert_eq!(code, 1, "quarantined: {s} {err}");
    assert_eq!(s["withdrawn"], 1, "{s}");
    assert_eq!(env.platform_records().await[&key].1, "withdrawn", "{key}");
    let q = read_store(&env.store_path())
        .quarantine_get(Kind::Penalty, &penalty.id)
        .unwrap()
        .expect("the unreadable version is in quarantine");
    assert_eq!(q.findings[0].code, "source_schema", "{:?}", q.findings);
    // Read again (the overlap window), it withdraws nothing more; mended at the source, it stays down.
    let (code, s, err) = env.sync_with(&[("DUALPUB_SOURCE_URL", &numbers)]).await;
    assert_eq!(
        (code, &s["withdrawn"], &s["pushed"]),
        (0, &0.into(), &0.into()),
        "{s} {err}"
    );
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{s} {err}");
    assert_eq!(env.platform_records().await[&key].1, "withdrawn", "{key}");
}

/// DESIGN §2: "a slow transaction can commit a record whose `updated_at` is a little older than records already
/// served: the connector must lose none of these." A database that stamps `updated_at` at the start of the writing
/// transaction (PostgreSQL's `now()`) does this to a record edited twice: a clerk's quick edit (stamped 30 s ago) is
/// read and published, then a batch job that began a minute ago commits its edit of the same record, stamped a minute
/// ago. That is the record's latest version, the only one the enforcement system still has. Until 2026-11-30 sync
/// took it for a lagging replica's older copy (`older_copies`), never sent it, and once the overlap window had passed
/// every run exited 0 with the clerk's version public for good. Its content was never acknowledged for the key, so
/// it is a late edit, not a lagging copy (which serves content the platform held before): it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_edit_a_slow_transaction_stamped_earlier_is_published() {
    let (env, gen_cfg) = backfilled(Faults::default()).await;
    let doc = "（豫）WH安许证字〔2026〕770001";
    let ago = |s: i64| {
        (chrono::Utc::now() - chrono::Duration::seconds(s))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let mut clerk = permit_with_doc(&env, &gen_cfg, "XK-SLOW", doc, "书记员的修改").await;
    clerk["updated_at"] = ago(30).into();
    env.source_insert_one(clerk.clone()).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let mut batch =
        permit_with_doc(&env, &gen_cfg, "XK-SLOW", doc, "批处理事务的修改（最新）").await;
    batch["updated_at"] = ago(60).into();
    env.source_insert_one(batch).await;
    let (code, s, err) = env.sync(&[]).await;
    let key = format!("XZXK:{}:{doc}", agency_code());
    assert_eq!(
        env.platform_records().await[&key].2["XK_NR"],
        "批处理事务的修改（最新）",
        "{s} {err}"
    );
    assert_eq!((code, &s["older_copies"]), (0, &0.into()), "{s} {err}");
    // A lagging replica then serves the clerk's version again, stamped as it was (later than the version now
    // published): exactly a version the platform acknowledged before, so an older copy, not sent over the latest.
    env.source_insert_one(clerk).await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(
        (code, &s["older_copies"], &s["pushed"]),
        (1, &1.into(), &0.into()),
        "{s} {err}"
    );
    assert_eq!(
        env.platform_records().await[&key].2["XK_NR"],
        "批处理事务的修改（最新）"
    );
}
