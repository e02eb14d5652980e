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
    let mut rng = Lcg(seed);
    let mut killed = 0;
    for _ in 0..kills {
        let mut child = env.command(&["sync", "--today", TODAY]).spawn().unwrap();
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
    for _ in 0..5 {
        let (code, s, err) = env.sync(&[]).await;
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
