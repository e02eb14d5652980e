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

async fn assert_exact(env: &Env, gen_cfg: &GenConfig) {
    let (expected, _) = expected_public(gen_cfg, today());
    let held = env.platform_records().await;
    let public = public_of(&held);
    let missing = expected.keys().filter(|k| !public.contains_key(*k)).count();
    let extra = public.keys().filter(|k| !expected.contains_key(*k)).count();
    let wrong = expected
        .iter()
        .filter(|(k, d)| public.get(*k).is_some_and(|p| p != *d))
        .count();
    assert_eq!(
        (missing, extra, wrong),
        (0, 0, 0),
        "missing, extra, wrong-version records"
    );
    let multi = held.values().filter(|v| v.3 != 1).count();
    assert_eq!(
        multi, 0,
        "records stored in more than one version although the source never changed"
    );
    let store = read_store(&env.store_path());
    assert_eq!(store.outbox_len(), 0, "nothing left in the outbox");
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
    let public = public_of(&env.platform_records().await);
    let wrong: Vec<_> = expected
        .iter()
        .filter(|(k, d)| public.get(*k) != Some(*d))
        .map(|(k, _)| k.clone())
        .collect();
    assert!(wrong.is_empty(), "not in their latest version: {wrong:?}");
    assert_eq!(public.len(), expected.len());
    let store = read_store(&env.store_path());
    assert_eq!(store.outbox_len(), 0, "nothing left in the outbox");
}
