//! The enforcement-system simulator over real loopback HTTP: auth, cursor paging with ties, determinism, late
//! commits, the admin API, and the defect mix of the generator.

use dualpub::model::Kind;
use dualpub::sim::gen::{self, GenConfig};
use dualpub::sim::source::{serve, SourceSimConfig, SourceSimHandle};
use dualpub::sim::{format_ts, parse_ts};
use dualpub::source_schema::SourceRecord;
use serde::Deserialize;
use std::collections::{BTreeSet, HashSet};
use tokio::net::TcpListener;

const TOKEN: &str = "test-token";

async fn start(gen: GenConfig) -> SourceSimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve(
        listener,
        SourceSimConfig {
            gen,
            token: TOKEN.into(),
        },
    )
    .await
    .unwrap()
}

#[derive(Debug, Deserialize)]
struct Page {
    items: Vec<SourceRecord>,
    has_more: bool,
}

fn path(kind: Kind) -> &'static str {
    match kind {
        Kind::Permit => "/api/v1/permits/changes",
        Kind::Penalty => "/api/v1/penalties/changes",
    }
}

async fn fetch_raw(
    client: &reqwest::Client,
    sim: &SourceSimHandle,
    kind: Kind,
    since: Option<(&str, &str)>,
    limit: usize,
) -> (reqwest::StatusCode, Vec<u8>) {
    let mut q = vec![("limit", limit.to_string())];
    if let Some((ts, id)) = since {
        q.push(("since", ts.to_string()));
        if !id.is_empty() {
            q.push(("after_id", id.to_string()));
        }
    }
    let res = client
        .get(format!("{}{}", sim.url(), path(kind)))
        .bearer_auth(TOKEN)
        .query(&q)
        .send()
        .await
        .unwrap();
    let status = res.status();
    (status, res.bytes().await.unwrap().to_vec())
}

async fn fetch(
    client: &reqwest::Client,
    sim: &SourceSimHandle,
    kind: Kind,
    since: Option<(&str, &str)>,
    limit: usize,
) -> Page {
    let (status, body) = fetch_raw(client, sim, kind, since, limit).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Walks the feed the naive way: the cursor is the last item's `(updated_at, id)`.
async fn walk(
    client: &reqwest::Client,
    sim: &SourceSimHandle,
    kind: Kind,
    limit: usize,
) -> Vec<SourceRecord> {
    let mut out: Vec<SourceRecord> = Vec::new();
    let mut cursor: Option<(String, String)> = None;
    for _ in 0..100_000 {
        let since = cursor.as_ref().map(|(t, i)| (t.as_str(), i.as_str()));
        let page = fetch(client, sim, kind, since, limit).await;
        assert!(page.items.len() <= limit);
        if let Some(last) = page.items.last() {
            cursor = Some((last.updated_at.clone().unwrap(), last.id.clone()));
        }
        out.extend(page.items);
        if !page.has_more {
            return out;
        }
    }
    panic!("the walk did not end");
}

fn key(r: &SourceRecord) -> (i64, String) {
    (
        parse_ts(r.updated_at.as_deref().unwrap()).unwrap(),
        r.id.clone(),
    )
}

#[tokio::test]
async fn feed_requires_the_bearer_token_and_checks_parameters() {
    let sim = start(GenConfig::default()).await;
    let client = reqwest::Client::new();
    let url = format!("{}{}", sim.url(), path(Kind::Permit));

    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("token"));
    let res = client.get(&url).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(res.status(), 401);

    let res = client
        .get(&url)
        .bearer_auth(TOKEN)
        .query(&[("since", "yesterday")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("since"));
    for bad in ["0", "-3", "ten"] {
        let res = client
            .get(&url)
            .bearer_auth(TOKEN)
            .query(&[("limit", bad)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let body: serde_json::Value = res.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("limit"));
    }
    // Larger limits are clamped, the default is 100.
    assert_eq!(
        fetch(&client, &sim, Kind::Permit, None, 5000)
            .await
            .items
            .len(),
        500
    );
    let res = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.json::<Page>().await.unwrap().items.len(), 100);

    let stats: serde_json::Value = client
        .get(format!("{}/admin/stats", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["unauthorized"], 2);
    assert_eq!(stats["generated"], 1000);
    sim.shutdown().await;
}

#[tokio::test]
async fn cursor_walk_with_ties_yields_every_record_once_in_order() {
    let cfg = GenConfig {
        records: 300,
        tie_size: 7,
        ..GenConfig::default()
    };
    let sim = start(cfg.clone()).await;
    let client = reqwest::Client::new();
    for kind in Kind::ALL {
        let all = walk(&client, &sim, kind, 5).await;
        let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
        let expected: Vec<String> = (0..cfg.count(kind)).map(|i| gen::id(kind, i)).collect();
        assert_eq!(ids, expected);
        assert!(all.windows(2).all(|w| key(&w[0]) < key(&w[1])));
        // Seven records share each timestamp.
        assert_eq!(all[0].updated_at, all[6].updated_at);
        assert_ne!(all[6].updated_at, all[7].updated_at);
    }

    // Resume from inside a tie group: index 10 is the 4th of the group 7..=13.
    let mid = gen::record(&cfg, Kind::Permit, 10);
    let ts = mid.updated_at.clone().unwrap();
    let page = fetch(&client, &sim, Kind::Permit, Some((&ts, &mid.id)), 5).await;
    let ids: Vec<&str> = page.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "XK-00000012",
            "XK-00000013",
            "XK-00000014",
            "XK-00000015",
            "XK-00000016"
        ]
    );
    assert!(page.has_more);
    // `since` alone includes the records at `since` itself; other offsets name the same instant.
    let page = fetch(&client, &sim, Kind::Permit, Some((&ts, "")), 10).await;
    assert_eq!(page.items[0].id, "XK-00000008");
    let utc = format_ts(parse_ts(&ts).unwrap());
    assert_eq!(utc, ts);
    let z = chrono::DateTime::parse_from_rfc3339(&ts)
        .unwrap()
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let page_z = fetch(&client, &sim, Kind::Permit, Some((&z, "")), 10).await;
    assert_eq!(page_z.items, page.items);
    // Past the end: nothing, and no more.
    let last = gen::record(&cfg, Kind::Penalty, cfg.count(Kind::Penalty) - 1);
    let page = fetch(
        &client,
        &sim,
        Kind::Penalty,
        Some((last.updated_at.as_deref().unwrap(), &last.id)),
        5,
    )
    .await;
    assert!(page.items.is_empty() && !page.has_more);
    sim.shutdown().await;
}

#[tokio::test]
async fn same_seed_same_bytes_other_seed_other_bytes() {
    let cfg = GenConfig {
        records: 500,
        seed: 7,
        invalid_rate: 0.1,
        ..GenConfig::default()
    };
    let (a, b) = (start(cfg.clone()).await, start(cfg.clone()).await);
    let c = start(GenConfig {
        seed: 8,
        ..cfg.clone()
    })
    .await;
    let client = reqwest::Client::new();
    let since = gen::record(&cfg, Kind::Penalty, 100);
    let since = (since.updated_at.as_deref().unwrap(), since.id.as_str());
    for (kind, since) in [(Kind::Permit, None), (Kind::Penalty, Some(since))] {
        let pa = fetch_raw(&client, &a, kind, since, 50).await;
        let pb = fetch_raw(&client, &b, kind, since, 50).await;
        let pc = fetch_raw(&client, &c, kind, since, 50).await;
        assert_eq!(pa.0, 200);
        assert_eq!(pa, pb);
        assert_ne!(pa.1, pc.1);
    }
    assert_eq!(
        gen::record(&cfg, Kind::Penalty, 42),
        gen::record(&cfg, Kind::Penalty, 42)
    );
    assert_ne!(
        gen::record(&cfg, Kind::Penalty, 42),
        gen::record(&GenConfig { seed: 8, ..cfg }, Kind::Penalty, 42)
    );
}

#[tokio::test]
async fn late_commits_are_missed_by_a_plain_cursor_and_found_with_an_overlap() {
    let cfg = GenConfig {
        records: 800,
        late_commit_rate: 0.2,
        ..GenConfig::default()
    };
    let kind = Kind::Penalty;
    let all: BTreeSet<String> = (0..cfg.count(kind)).map(|i| gen::id(kind, i)).collect();
    let late: BTreeSet<String> = (0..cfg.count(kind))
        .filter(|&i| gen::is_late(&cfg, kind, i))
        .map(|i| gen::id(kind, i))
        .collect();
    assert!(late.len() > 20, "{}", late.len());
    let client = reqwest::Client::new();

    // A plain cursor walk misses exactly the late records.
    let sim = start(cfg.clone()).await;
    let seen: BTreeSet<String> = walk(&client, &sim, kind, 20)
        .await
        .into_iter()
        .map(|r| r.id)
        .collect();
    let missed: BTreeSet<String> = all.difference(&seen).cloned().collect();
    assert_eq!(missed, late);
    // They are there now, with their original, older timestamps.
    let again: Vec<SourceRecord> = walk(&client, &sim, kind, 1000).await;
    assert_eq!(again.len(), all.len());
    sim.shutdown().await;

    // A fresh server read with a 10-minute overlap loses nothing.
    let sim = start(cfg.clone()).await;
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut quiet_rounds = 0;
    for _ in 0..10_000 {
        let since = cursor
            .as_ref()
            .map(|t| format_ts(parse_ts(t).unwrap() - 10 * 60 * 1000));
        let page = fetch(&client, &sim, kind, since.as_deref().map(|s| (s, "")), 20).await;
        let mut new = 0;
        for r in &page.items {
            if seen.insert(r.id.clone()) {
                new += 1;
            }
        }
        if let Some(last) = page.items.last() {
            cursor = last.updated_at.clone();
        }
        if !page.has_more && new == 0 {
            quiet_rounds += 1;
            if quiet_rounds == 2 {
                break;
            }
        }
    }
    let seen: BTreeSet<String> = seen.into_iter().collect();
    assert_eq!(seen, all);
    sim.shutdown().await;
}

#[tokio::test]
async fn admin_changes_show_up_in_the_feed() {
    let cfg = GenConfig {
        records: 20,
        ..GenConfig::default()
    };
    let sim = start(cfg.clone()).await;
    let client = reqwest::Client::new();
    let admin = |p: &str| format!("{}{}", sim.url(), p);

    // Read everything once; remember the cursor.
    let first = walk(&client, &sim, Kind::Permit, 100).await;
    assert_eq!(first.len(), 10);
    let last = first.last().unwrap();
    let cursor = (last.updated_at.clone().unwrap(), last.id.clone());

    // Insert a new record (updated_at defaults to now), replace a generated one with an older stamp.
    let mut replacement = gen::record(&cfg, Kind::Permit, 2);
    replacement.content = Some("更正后的许可内容".into());
    replacement.updated_at = Some("2024-01-01T00:00:00+08:00".into());
    replacement.kind = Some(Kind::Permit);
    let new = serde_json::json!({
        "kind": "permit", "id": "XK-2024-000123", "status": "active", "doc_no": "（豫）WH安许证字〔2026〕009999",
        "updated_at": null
    });
    let res = client
        .post(admin("/admin/records"))
        .json(&serde_json::json!([new, replacement]))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let counts: serde_json::Value = res.json().await.unwrap();
    assert_eq!(counts, serde_json::json!({"inserted": 1, "replaced": 1}));

    // Delete one generated record; an unknown id is a 404.
    let res = client
        .delete(admin("/admin/records/XK-00000005"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = client
        .delete(admin("/admin/records/XK-99999999"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        client
            .get(admin("/admin/records/XK-00000005"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // From the start: the replacement comes first (older stamp), the deleted one is gone, the new one is last.
    let all = walk(&client, &sim, Kind::Permit, 3).await;
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 10);
    assert_eq!(ids[0], "XK-00000003");
    assert_eq!(all[0].content.as_deref(), Some("更正后的许可内容"));
    assert_eq!(all[0].kind, None);
    assert!(!ids.contains(&"XK-00000005"));
    assert_eq!(ids[9], "XK-2024-000123");
    let stamped = parse_ts(all[9].updated_at.as_deref().unwrap()).unwrap();
    assert!(stamped > gen::END_MILLIS);

    // From the old cursor: only the new record.
    let page = fetch(
        &client,
        &sim,
        Kind::Permit,
        Some((&cursor.0, &cursor.1)),
        100,
    )
    .await;
    let ids: Vec<&str> = page.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["XK-2024-000123"]);
    let cursor = (
        page.items[0].updated_at.clone().unwrap(),
        page.items[0].id.clone(),
    );

    // Touch a generated record that was already served: it reappears after the cursor, with new remarks.
    let res = client
        .post(admin("/admin/touch"))
        .json(&serde_json::json!({"kind": "permit", "ids": ["XK-00000002"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let touched: serde_json::Value = res.json().await.unwrap();
    let remarks = touched["records"][0]["remarks"]
        .as_str()
        .unwrap()
        .to_string();
    let page = fetch(
        &client,
        &sim,
        Kind::Permit,
        Some((&cursor.0, &cursor.1)),
        100,
    )
    .await;
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, "XK-00000002");
    assert_eq!(page.items[0].remarks.as_deref(), Some(remarks.as_str()));
    assert!(key(&page.items[0]) > (parse_ts(&cursor.0).unwrap(), cursor.1.clone()));
    let res = client
        .post(admin("/admin/touch"))
        .json(&serde_json::json!({"kind": "penalty", "ids": ["CF-00000099"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);

    let got: serde_json::Value = client
        .get(admin("/admin/records/XK-00000002"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["kind"], "permit");
    assert_eq!(got["remarks"], remarks.as_str());

    let stats: serde_json::Value = client
        .get(admin("/admin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["overlay"], 3);
    assert_eq!(stats["deleted"], 1);
    assert!(stats["requests"].as_u64().unwrap() >= 6);

    let url = sim.url();
    sim.shutdown().await;
    assert!(client
        .get(format!("{url}/admin/stats"))
        .send()
        .await
        .is_err());
}

#[test]
fn invalid_rate_picks_about_that_share_and_covers_every_defect() {
    let cfg = GenConfig {
        records: 4000,
        seed: 3,
        invalid_rate: 0.2,
        ..GenConfig::default()
    };
    let mut invalid = 0;
    let mut codes = BTreeSet::new();
    for kind in Kind::ALL {
        for i in 0..cfg.count(kind) {
            if let Some(d) = gen::defect(&cfg, kind, i) {
                invalid += 1;
                codes.insert(d.code());
            }
        }
    }
    let share = invalid as f64 / 4000.0;
    assert!((0.17..0.23).contains(&share), "{share}");
    assert_eq!(
        codes.into_iter().collect::<Vec<_>>(),
        [
            "amount_negative",
            "date_invalid",
            "id_check",
            "required",
            "too_long",
            "uscc_check",
            "xml_char"
        ]
    );
    assert_eq!(gen::defect(&GenConfig::default(), Kind::Permit, 0), None);
}
