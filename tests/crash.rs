//! Crash safety: the real `dualpub sync` binary is killed with SIGKILL at many random moments of a backfill, then
//! run to completion. The platform must hold exactly the valid source set, one version per key, and the outbox
//! must be empty — including kills that land between the platform's commit and the client's acknowledgement.

mod common;

use common::*;
use dualpub::sim::gen::GenConfig;
use dualpub::sim::platform::Faults;
use std::time::Duration;

struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

async fn kill_repeatedly(env: &Env, kills: usize, seed: u64, max_ms: u64) -> usize {
    kill_repeatedly_with(env, kills, seed, max_ms, &[]).await
}

/// [`kill_repeatedly`] with environment variables set (a proxy's URL in place of a simulator's, say).
async fn kill_repeatedly_with(
    env: &Env,
    kills: usize,
    seed: u64,
    max_ms: u64,
    vars: &[(&str, &str)],
) -> usize {
    let mut rng = Lcg(seed);
    let mut killed = 0;
    for _ in 0..kills {
        let mut child = env
            .command(&["sync", "--today", TODAY])
            .envs(vars.iter().copied())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30 + rng.next(max_ms))).await;
        // SIGKILL: no destructor, no flush, no goodbye.
        if child.kill().is_ok() {
            killed += 1;
        }
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    }
    killed
}

async fn run_to_completion(env: &Env) {
    run_to_completion_with(env, &[]).await
}

async fn run_to_completion_with(env: &Env, vars: &[(&str, &str)]) {
    for _ in 0..5 {
        let (code, s, err) = env.sync_with(vars).await;
        assert!(code == 0 || code == 1, "exit {code}: {err}");
        if s["pushed"] == 0 {
            return;
        }
    }
    panic!("sync did not settle within 5 runs");
}

/// The platform holds exactly `expected` public (key → digest): nothing missing, extra or in another version; and
/// nothing is left in the outbox.
async fn assert_public_is(env: &Env, expected: &std::collections::BTreeMap<String, String>) {
    let public = public_of(&env.platform_records().await);
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !public.contains_key(*k))
        .collect();
    let extra: Vec<_> = public
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .collect();
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, d)| public.get(*k).is_some_and(|p| p != *d))
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        (missing.len(), extra.len(), wrong.len()),
        (0, 0, 0),
        "missing {missing:?}, extra {extra:?}, wrong version {wrong:?}"
    );
    let store = read_store(&env.store_path());
    assert_eq!(store.outbox_len(), 0, "nothing left in the outbox");
}

/// [`assert_public_is`] the generated source's public set, each record stored in one version only (the source
/// never changed).
async fn assert_exact(env: &Env, gen_cfg: &GenConfig) {
    let (expected, _) = expected_public(gen_cfg, today());
    assert_public_is(env, &expected).await;
    let multi = env
        .platform_records()
        .await
        .values()
        .filter(|v| v.3 != 1)
        .count();
    assert_eq!(
        multi, 0,
        "records stored in more than one version although the source never changed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_of_a_backfill() {
    let gen_cfg = GenConfig {
        records: 20_000,
        seed: 77,
        invalid_rate: 0.01,
        ..GenConfig::default()
    };
    let env = spawn(
        gen_cfg.clone(),
        Faults {
            latency_ms: 15,
            ..Faults::default()
        },
    )
    .await;
    let killed = kill_repeatedly(&env, 22, 0xC0FFEE, 1500).await;
    assert!(killed >= 20, "killed only {killed} times");
    run_to_completion(&env).await;
    assert_exact(&env, &gen_cfg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_commit_and_acknowledgement() {
    // Half the acknowledgements are lost after the platform committed; the client backs off before retrying,
    // and the kills land in that window.
    let gen_cfg = GenConfig {
        records: 3_000,
        seed: 78,
        ..GenConfig::default()
    };
    let env = spawn(
        gen_cfg.clone(),
        Faults {
            seed: 4,
            lost_ack_rate: 0.5,
            latency_ms: 10,
            ..Faults::default()
        },
    )
    .await;
    let cfg = std::fs::read_to_string(&env.config)
        .unwrap()
        .replace("max_backoff_secs = 1", "max_backoff_secs = 3");
    std::fs::write(&env.config, cfg).unwrap();
    let killed = kill_repeatedly(&env, 10, 0xBEEF, 1200).await;
    assert!(killed >= 8);
    let before: serde_json::Value = env.platform_stats().await;
    assert!(before["faults"]["lost_acks"].as_u64().unwrap() > 0);
    env.admin_post(
        format!("{}/admin/faults", env.platform.url()),
        serde_json::json!({"lost_ack_rate": 0.0}),
    )
    .await;
    run_to_completion(&env).await;
    let after: serde_json::Value = env.platform_stats().await;
    assert!(
        after["replayed_flows"].as_u64().unwrap() > 0,
        "flows committed before a kill were replayed: {after}"
    );
    assert_exact(&env, &gen_cfg).await;
}

/// Killed at random moments of a backfill through a platform whose receipts never answer for three records and
/// which refuses as malformed (HTTP 400) every message holding one of two others: batches are held, split, given
/// up and settled at the end of runs, and kills land in all of that. Run to completion, the platform holds every
/// other record once in its version, the five are in quarantine (`NO_RESULT`, `MESSAGE_REFUSED`), and nothing is
/// left in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_records_are_held_given_up_and_split() {
    use dualpub::xml::Receipt;
    let gen_cfg = GenConfig {
        records: 3_000,
        seed: 79,
        invalid_rate: 0.0,
        ..GenConfig::default()
    };
    let env = spawn(
        gen_cfg.clone(),
        Faults {
            latency_ms: 10,
            ..Faults::default()
        },
    )
    .await;
    let (expected, _) = expected_public(&gen_cfg, today());
    let keys: Vec<String> = expected.keys().step_by(97).take(5).cloned().collect();
    let (silent, poison) = (keys[..3].to_vec(), keys[3..].to_vec());
    let proxy = platform_proxy(
        env.platform.url(),
        std::sync::Arc::new(move |path: &str, status: u16, body: Vec<u8>| {
            if path != "/api/exchange" || status != 200 {
                return (status, body);
            }
            let mut receipt: Receipt = dualpub::xml::read_receipt(&body).unwrap();
            if receipt.results.iter().any(|r| poison.contains(&r.key)) {
                let refusal = r#"<Error code="BAD_ENVELOPE" message="报文格式错误"/>"#;
                return (400, refusal.as_bytes().to_vec());
            }
            receipt.results.retain(|r| !silent.contains(&r.key));
            let mut out = Vec::new();
            dualpub::xml::write_receipt(&receipt, &mut out);
            (status, out)
        }),
    )
    .await;
    let via_proxy = [("DUALPUB_PLATFORM_URL", proxy.as_str())];
    let killed = kill_repeatedly_with(&env, 12, 0x3333, 900, &via_proxy).await;
    assert!(killed >= 10, "killed only {killed} times");
    run_to_completion_with(&env, &via_proxy).await;
    let held = env.platform_records().await;
    let public = public_of(&held);
    for (key, digest) in &expected {
        if !keys.contains(key) {
            assert_eq!(public.get(key), Some(digest), "{key}");
        }
    }
    assert_eq!(
        held.values().filter(|v| v.3 != 1).count(),
        0,
        "records stored in more than one version"
    );
    let store = read_store(&env.store_path());
    assert_eq!(store.outbox_len(), 0, "nothing left in the outbox");
    let mut codes: Vec<(String, String)> = store
        .quarantine_iter()
        .map(Result::unwrap)
        .map(|q| (q.key.unwrap_or_default(), q.findings[0].code.clone()))
        .collect();
    codes.sort();
    let mut want: Vec<(String, String)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let code = if i < 3 {
                "NO_RESULT"
            } else {
                "MESSAGE_REFUSED"
            };
            (k.clone(), code.to_string())
        })
        .collect();
    want.sort();
    assert_eq!(codes, want);
}

/// Killed at random moments while the source keeps changing records (several versions of one key in one run, some
/// in flight when the next is read), with half the acknowledgements lost: run to completion, the platform holds
/// every record in its latest version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_while_records_change_during_the_runs() {
    use dualpub::model::Kind;
    let gen_cfg = GenConfig {
        records: 2_000,
        seed: 80,
        invalid_rate: 0.0,
        ..GenConfig::default()
    };
    let env = spawn(
        gen_cfg.clone(),
        Faults {
            seed: 5,
            lost_ack_rate: 0.3,
            latency_ms: 5,
            ..Faults::default()
        },
    )
    .await;
    let mut rng = Lcg(0xABCD);
    let permits = gen_cfg.count(Kind::Permit);
    let mut changed = std::collections::BTreeSet::new();
    for round in 0..14 {
        let mut child = env
            .command(&["sync", "--today", TODAY])
            .env("DUALPUB_PLATFORM_BATCH_SIZE", "7")
            .env("DUALPUB_SOURCE_PAGE_SIZE", "20")
            .spawn()
            .unwrap();
        let stop_at = 40 + rng.next(900);
        let start = std::time::Instant::now();
        let mut n = 0;
        while (start.elapsed().as_millis() as u64) < stop_at {
            // the same few permits change again and again
            let i = rng.next(permits.min(12));
            let id = dualpub::sim::gen::record(&gen_cfg, Kind::Permit, i).id;
            let mut v = env.source_record(&id).await;
            v["remarks"] = format!("第{round}轮第{n}版").into();
            v["updated_at"] = serde_json::Value::Null;
            v["kind"] = "permit".into();
            env.source_insert(serde_json::json!([v])).await;
            changed.insert(id);
            n += 1;
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        let _ = child.kill();
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    }
    env.admin_post(
        format!("{}/admin/faults", env.platform.url()),
        serde_json::json!({"lost_ack_rate": 0.0}),
    )
    .await;
    run_to_completion(&env).await;
    let (mut expected, _) = expected_public(&gen_cfg, today());
    let mappings = dualpub::mapping::MappingSet::builtin();
    for id in &changed {
        let v = env.source_record(id).await;
        let rec = dualpub::source_schema::read_record(&v.to_string()).unwrap();
        let m = mappings.get(Kind::Permit).map(&mapping_context(), &rec);
        assert!(m.is_valid());
        expected.insert(m.key.unwrap().to_string(), m.record.digest().to_hex());
    }
    assert_public_is(&env, &expected).await;
}

/// Killed at random moments of `reconcile --repair --repair-orphans` while the platform loses half its
/// acknowledgements, with gaps only the repair closes: records the platform lost and records altered on it behind
/// the connector's back (the ledger believes both are public as sent), and records deleted from the enforcement
/// system since they were published (orphans); and penalties revoked at the source since. Run to completion (a
/// repair, then syncs), the platform holds exactly the public source set in its versions, reconcile finds no gap
/// the repair should have closed, and nothing is left in the outbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_moments_of_a_repair() {
    use dualpub::model::Kind;
    let gen_cfg = GenConfig {
        records: 3_000,
        seed: 81,
        invalid_rate: 0.0,
        ..GenConfig::default()
    };
    let env = spawn(
        gen_cfg.clone(),
        Faults {
            latency_ms: 10,
            ..Faults::default()
        },
    )
    .await;
    run_to_completion(&env).await;
    let (mut expected, _) = expected_public(&gen_cfg, today());
    let keys: Vec<String> = expected.keys().cloned().collect();
    for k in keys.iter().step_by(23) {
        let r = env
            .http
            .delete(format!("{}/admin/records/{}", env.platform.url(), enc(k)))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
    }
    for (_, k) in keys
        .iter()
        .enumerate()
        .skip(7)
        .step_by(29)
        .filter(|(i, _)| i % 23 != 0)
    {
        let field = if k.starts_with("XZXK") {
            "XK_NR"
        } else {
            "CF_NR"
        };
        env.admin_post(
            format!("{}/admin/records/alter", env.platform.url()),
            serde_json::json!({"key": k, "field": field, "value": "被改动的内容"}),
        )
        .await;
    }
    let mappings = dualpub::mapping::MappingSet::builtin();
    let mut gone = 0;
    for kind in Kind::ALL {
        for i in (0..gen_cfg.count(kind)).step_by(37) {
            let rec = dualpub::sim::gen::record(&gen_cfg, kind, i);
            let key = mappings.get(kind).map(&mapping_context(), &rec).key;
            let Some(key) = key.map(|k| k.to_string()) else {
                continue;
            };
            if expected.remove(&key).is_none() {
                continue;
            }
            if kind == Kind::Penalty && i % 2 == 1 {
                let mut v = env.source_record(&rec.id).await;
                v["status"] = "revoked".into();
                v["updated_at"] = serde_json::Value::Null;
                v["kind"] = "penalty".into();
                env.source_insert(serde_json::json!([v])).await;
            } else {
                env.source_delete(&rec.id).await;
            }
            gone += 1;
        }
    }
    assert!(gone > 50, "only {gone} records taken from the public set");
    env.admin_post(
        format!("{}/admin/faults", env.platform.url()),
        serde_json::json!({"seed": 6, "lost_ack_rate": 0.4, "latency_ms": 60}),
    )
    .await;
    let mut rng = Lcg(0x5EED);
    let mut killed = 0;
    for _ in 0..12 {
        let mut child = env
            .command(&[
                "reconcile",
                "--repair",
                "--repair-orphans",
                "--today",
                TODAY,
                "--format",
                "json",
            ])
            .env("DUALPUB_REPAIR_CHUNK", "20")
            .env("DUALPUB_PLATFORM_BATCH_SIZE", "10")
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(30 + rng.next(2500))).await;
        if child.kill().is_ok() {
            killed += 1;
        }
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    }
    assert!(killed >= 6, "killed only {killed} times");
    env.admin_post(
        format!("{}/admin/faults", env.platform.url()),
        serde_json::json!({"lost_ack_rate": 0.0, "latency_ms": 10}),
    )
    .await;
    let (out, report) = env
        .reconcile_json(TODAY, &["--repair", "--repair-orphans"])
        .await;
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 1)),
        "{code:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["repair"]["failed"], 0, "{}", report["repair"]);
    let stats = env.platform_stats().await;
    assert!(
        stats["replayed_flows"].as_u64().unwrap() > 0,
        "flows committed before their acknowledgement was lost were replayed: {stats}"
    );
    run_to_completion(&env).await;
    assert_public_is(&env, &expected).await;
    let (_, report) = env.reconcile_json(TODAY, &[]).await;
    for category in ["missing", "stale", "orphan", "expired"] {
        assert_eq!(
            report["counts"][category], 0,
            "{category}: {}",
            report["counts"]
        );
    }
}
