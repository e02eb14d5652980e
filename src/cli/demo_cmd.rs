//! `dualpub demo [--records N]`: both simulators in-process on free loopback ports, a temporary store, two syncs
//! with source changes in between, and a reconcile — no configuration needed.

use super::common;
use crate::config::{Config, RawConfig};
use crate::exit::{Exit, Failure};
use crate::mapping::MappingSet;
use crate::model::Kind;
use crate::sim::gen::{self, GenConfig};
use crate::sim::platform::{self, PlatformSimConfig};
use crate::sim::source::{self, SourceSimConfig};
use crate::store::Store;
use crate::sync::{self, SyncOptions};
use clap::Args;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Records the simulated enforcement system holds (permits and penalties together).
    #[arg(long, default_value_t = 2000)]
    pub records: u64,
}

fn step(n: u32, what: &str) {
    crate::say!("\n== {n}. {what}");
}

pub fn run(args: DemoArgs) -> Result<Exit, Failure> {
    if args.records == 0 || args.records > gen::MAX_RECORDS {
        return Err(Failure::usage(format!(
            "--records must be between 1 and {}",
            gen::MAX_RECORDS
        )));
    }
    let rt = common::runtime()?;
    rt.block_on(async {
        // Ctrl-C drops the demo (its store, then its folder) instead of ending the process where it stands: the
        // folder stayed in $TMPDIR, ~4 MB each time.
        tokio::select! {
            r = demo(args.records) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted (Ctrl-C); the demo's folder is removed")),
        }
    })
    .map_err(|e| Failure::new(Exit::Aborted, e))
}

/// The demo's folder (its store and config), removed however the demo ends: run through, a step that failed, or
/// Ctrl-C (until 2026-11-30 only a demo that ran through removed it).
struct DemoDir(std::path::PathBuf);

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for DemoDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

async fn demo(records: u64) -> anyhow::Result<Exit> {
    let today = crate::model::today_cst();
    let gen_cfg = GenConfig {
        records,
        seed: 2026,
        invalid_rate: 0.02,
        ..GenConfig::default()
    };
    let src = source::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        SourceSimConfig {
            gen: gen_cfg.clone(),
            token: "demo-token".into(),
        },
    )
    .await?;
    let plat = platform::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        PlatformSimConfig::default(),
    )
    .await?;
    let dir = tempfile_dir()?;
    step(1, "start");
    crate::say!(
        "enforcement-system simulator  {}  ({records} records, 2 % with a defect)",
        src.url()
    );
    crate::say!("credit-platform simulator     {}", plat.url());
    crate::say!(
        "store                         {}",
        dir.join("store").display()
    );

    let agency = gen::agency();
    let toml = format!(
        "[agency]\nname = \"{}\"\ncredit_code = \"{}\"\ndomain = \"安全生产\"\n[source]\nurl = \"{}\"\ntoken_env = \"DEMO_SOURCE_TOKEN\"\n\
         [platform]\nurl = \"{}\"\napp_key = \"demo-app\"\nsecret_env = \"DEMO_PLATFORM_SECRET\"\nreceiver = \"HNCREDIT\"\n[store]\npath = \"{}\"\n",
        agency.name.clone().unwrap_or_default(),
        agency.credit_code.clone().unwrap_or_default(),
        src.url(),
        plat.url(),
        dir.join("store").display()
    );
    let path = dir.join("dualpub.toml");
    std::fs::write(&path, toml)?;
    let env = vec![
        ("DEMO_SOURCE_TOKEN".to_string(), "demo-token".to_string()),
        (
            "DEMO_PLATFORM_SECRET".to_string(),
            "demo-secret".to_string(),
        ),
    ];
    let (raw, origin) = RawConfig::load(Some(&path), &env)?;
    let cfg = Config::from_raw(&raw, &origin, &env)?;
    let mappings = MappingSet::builtin();
    let store = Store::open(&cfg.store_path)?;
    let opts = SyncOptions {
        kinds: Kind::ALL.to_vec(),
        dry_run: false,
        today,
        progress: false,
        budget: None,
    };

    step(2, "first sync: the backfill");
    let s1 = sync::run(&cfg, &mappings, &store, &opts)
        .await
        .map_err(|(_, e)| e)?;
    super::sync_cmd::print_summary(&s1, false);
    crate::say!("(penalties whose display period already ended are not published; invalid records wait in quarantine)");

    // Corrections to every 7th permit (up to 20), a revoked permit and a revoked penalty, as far as the set has them.
    let n_perm = gen_cfg.count(Kind::Permit);
    let n_pen = gen_cfg.count(Kind::Penalty);
    let ids: Vec<String> = (0..20u64)
        .map(|i| i * 7 + 1)
        .filter(|&i| i < n_perm)
        .map(|i| gen::id(Kind::Permit, i))
        .collect();
    step(
        3,
        &format!(
            "the enforcement system changes: {} correction(s){}{}",
            ids.len(),
            if n_perm > 3 { ", a revoked permit" } else { "" },
            if n_pen > 0 { ", a revoked penalty" } else { "" }
        ),
    );
    let http = reqwest::Client::new();
    if !ids.is_empty() {
        http.post(format!("{}/admin/touch", src.url()))
            .json(&serde_json::json!({"kind": "permit", "ids": ids}))
            .send()
            .await?
            .error_for_status()?;
    }
    let mut changes = Vec::new();
    if n_perm > 3 {
        let mut permit = serde_json::to_value(gen::record(&gen_cfg, Kind::Permit, 3))?;
        permit["status"] = "revoked".into();
        permit["kind"] = "permit".into();
        permit["updated_at"] = serde_json::Value::Null;
        changes.push(permit);
    }
    if n_pen > 0 {
        let mut pen = serde_json::to_value(gen::record(&gen_cfg, Kind::Penalty, n_pen - 1))?;
        pen["status"] = "revoked".into();
        pen["kind"] = "penalty".into();
        pen["updated_at"] = serde_json::Value::Null;
        changes.push(pen);
    }
    http.post(format!("{}/admin/records", src.url()))
        .json(&changes)
        .send()
        .await?
        .error_for_status()?;

    step(4, "second sync: only the changes travel");
    let s2 = sync::run(&cfg, &mappings, &store, &opts)
        .await
        .map_err(|(_, e)| e)?;
    super::sync_cmd::print_summary(&s2, false);

    step(5, "a third sync right away: nothing to do");
    let s3 = sync::run(&cfg, &mappings, &store, &opts)
        .await
        .map_err(|(_, e)| e)?;
    super::sync_cmd::print_summary(&s3, false);

    step(6, "what the platform holds");
    let stats: serde_json::Value = http
        .get(format!("{}/admin/stats", plat.url()))
        .send()
        .await?
        .json()
        .await?;
    crate::say!(
        "{} records: {} public, {} withdrawn; {} flows, {} upserts",
        stats["records"],
        stats["public"],
        stats["withdrawn"],
        stats["flows"],
        stats["upserts"]
    );
    crate::say!(
        "{} record(s) in quarantine — `dualpub quarantine list` shows why",
        store.quarantine_len()
    );

    step(
        7,
        "the platform loses a record and someone edits another by hand; reconcile finds both",
    );
    let held = http
        .get(format!("{}/admin/records", plat.url()))
        .send()
        .await?
        .text()
        .await?;
    let keys: Vec<String> = held
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["status"] == "public" && v["key"].as_str().is_some_and(|k| k.starts_with("XZXK"))
        })
        .filter_map(|v| v["key"].as_str().map(str::to_string))
        .take(2)
        .collect();
    if keys.len() == 2 {
        http.delete(format!(
            "{}/admin/records/{}",
            plat.url(),
            urlencode(&keys[0])
        ))
        .send()
        .await?
        .error_for_status()?;
        http.post(format!("{}/admin/records/alter", plat.url()))
            .json(&serde_json::json!({"key": keys[1], "field": "XK_XDR_MC", "value": "（被手工修改的名称）"}))
            .send()
            .await?
            .error_for_status()?;
    }
    let ropts = crate::reconcile::engine::ReconcileOptions {
        kinds: Kind::ALL.to_vec(),
        from: None,
        to: None,
        today,
        progress: false,
        repair: true,
        budget: None,
    };
    let cal = crate::calendar::Calendar::builtin();
    let (report, plan) =
        crate::reconcile::engine::reconcile(&cfg, &mappings, &store, &cal, &ropts).await?;
    crate::reconcile::writers::write_table(&report, &mut std::io::stdout().lock(), false)?;

    step(
        8,
        "reconcile --repair: re-push what is missing or stale, withdraw what expired",
    );
    let repush: Vec<_> = plan.repush.chunks(usize::MAX)?.collect::<Result<_, _>>()?;
    let r = sync::send_again(
        &cfg,
        &mappings,
        &store,
        &opts,
        repush
            .concat()
            .into_iter()
            .map(|(kind, raw)| (kind, sync::HeldVersion::Copy(raw))),
        sync::Copies::FromFeed {
            read: plan.read_from,
        },
    )
    .await
    .map_err(|(_, e)| e)?;
    crate::say!("re-pushed {} record(s)", r.accepted);
    if !plan.withdraw.is_empty() {
        sync::withdraw(&cfg, &mappings, &store, &opts, plan.withdraw)
            .await
            .map_err(|(_, e)| e)?;
    }
    let (after, _) =
        crate::reconcile::engine::reconcile(&cfg, &mappings, &store, &cal, &ropts).await?;
    let counts = after.counts();
    use crate::reconcile::report::Category;
    crate::say!(
        "after repair: missing {}, stale {}, expired {} (the {} quarantined stay until the source is fixed)",
        counts[&Category::Missing],
        counts[&Category::Stale],
        counts[&Category::Expired],
        counts[&Category::Quarantined]
    );

    drop(store);
    src.shutdown().await;
    plat.shutdown().await;
    drop(dir);
    crate::say!("\ndemo finished; try `dualpub sim source` and `dualpub sim platform` with dualpub.example.toml next");
    Ok(Exit::Ok)
}

fn tempfile_dir() -> std::io::Result<DemoDir> {
    let dir = std::env::temp_dir().join(format!(
        "dualpub-demo-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_millis()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(DemoDir(dir))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
