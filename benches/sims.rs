//! Benchmark of the two simulators over loopback HTTP. Prints figures; not a timed test.
//!
//! 1. Source simulator with `BENCH_RECORDS` generated records: walk the whole permit and penalty feeds with
//!    `limit=1000` (records parsed into the source schema) and report records/s served.
//! 2. Platform simulator: ingest the same number of valid records (generated, mapped with the built-in mappings)
//!    in messages of 500 with 4 concurrent clients, and report records/s. The messages are written to a temporary
//!    file first, so the ingest figure measures the platform and not the generator.
//! 3. Peak and current RSS after each phase, and the RSS growth attributable to the platform's store.
//!
//! Both simulators run in this process (the `dualpub sim` commands are wired elsewhere), so RSS figures mix
//! them: the phases run one after the other and the source simulator is stopped before the platform starts.
//!
//! Run: `cargo bench --bench sims` (`BENCH_RECORDS=100000` for a quick run). Targets: the source serves 1,000,000
//! records with RSS < 100 MB; the platform holds 1,000,000 in < 1.5 GB and ingests ≥ 50,000 records/s.

use dualpub::mapping::{DisplayPolicy, Domain, MappingContext, MappingSet};
use dualpub::model::Kind;
use dualpub::sim::gen::{self, GenConfig};
use dualpub::sim::platform::{self, PlatformSimConfig};
use dualpub::sim::source::{self, SourceSimConfig};
use dualpub::source_schema::SourceRecord;
use dualpub::xml::{self, ExchangeMessage, MessageOp, MessageRecord, TokenRequest};
use serde::Deserialize;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

const BATCH: usize = 500;
const CLIENTS: usize = 4;

/// (`VmHWM`, `VmRSS`) of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn print_rss(label: &str) -> f64 {
    let (hwm, rss) = rss_mib();
    println!("  RSS {label}: {rss:.0} MiB (peak {hwm:.0} MiB)");
    rss
}

fn main() {
    let n: u64 = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    println!(
        "sims benchmark: {n} records, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    print_rss("at start");
    rt.block_on(source_phase(n));
    rt.block_on(platform_phase(n));
}

async fn source_phase(n: u64) {
    #[derive(Deserialize)]
    struct Page {
        items: Vec<SourceRecord>,
        has_more: bool,
    }
    let cfg = SourceSimConfig {
        gen: GenConfig {
            records: n,
            seed: 7,
            ..GenConfig::default()
        },
        token: "bench".into(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = source::serve(listener, cfg).await.unwrap();
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut served = 0u64;
    for path in ["permits", "penalties"] {
        let mut cursor: Option<(String, String)> = None;
        loop {
            let mut q = vec![("limit", "1000".to_string())];
            if let Some((since, id)) = &cursor {
                q.push(("since", since.clone()));
                q.push(("after_id", id.clone()));
            }
            let res = client
                .get(format!("{}/api/v1/{path}/changes", sim.url()))
                .bearer_auth("bench")
                .query(&q)
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success(), "{}", res.status());
            let page: Page = res.json().await.unwrap();
            served += page.items.len() as u64;
            if let Some(last) = page.items.last() {
                cursor = Some((last.updated_at.clone().unwrap_or_default(), last.id.clone()));
            }
            if !page.has_more {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "source: served {served} records (limit 1000) in {secs:.2} s = {:.0} records/s",
        served as f64 / secs
    );
    print_rss("after the source walk");
    sim.shutdown().await;
}

/// Writes the exchange messages for `n` valid records (half permits, half penalties) to a temporary file;
/// returns the file and each message's (offset, length, records).
fn write_messages(n: u64) -> (std::fs::File, Vec<(u64, usize, usize)>) {
    let cfg = GenConfig {
        records: n,
        seed: 11,
        invalid_rate: 0.0,
        ..GenConfig::default()
    };
    let agency = gen::agency();
    let sender = agency.credit_code.clone().unwrap_or_default();
    let ctx = MappingContext {
        agency_name: agency.name.clone(),
        agency_credit_code: agency.credit_code.clone(),
        display: DisplayPolicy::for_domain(Domain::WorkSafety, None),
        today: None,
    };
    let mappings = MappingSet::builtin();
    let mut file = std::io::BufWriter::new(tempfile::tempfile().unwrap());
    let mut index = Vec::new();
    let mut offset = 0u64;
    let mut invalid = 0u64;
    let mut buf = Vec::new();
    for kind in Kind::ALL {
        let count = cfg.count(kind);
        let mut i = 0;
        while i < count {
            let mut records = Vec::with_capacity(BATCH);
            while records.len() < BATCH && i < count {
                let mapped = mappings.get(kind).map(&ctx, &gen::record(&cfg, kind, i));
                i += 1;
                match (mapped.is_valid(), mapped.key) {
                    (true, Some(key)) => records.push(MessageRecord {
                        key: key.as_str().to_string(),
                        op: MessageOp::Upsert(mapped.record),
                    }),
                    _ => invalid += 1,
                }
            }
            let msg = ExchangeMessage {
                sender: sender.clone(),
                receiver: "HNCREDIT".into(),
                flow: format!("bench-{}-{}", kind.item(), index.len()),
                kind,
                send_time: "2026-01-05T10:00:00+08:00".into(),
                records,
            };
            buf.clear();
            xml::write_exchange_message(&msg, &mut buf);
            file.write_all(&buf).unwrap();
            index.push((offset, buf.len(), msg.records.len()));
            offset += buf.len() as u64;
        }
    }
    if invalid > 0 {
        println!("  (the generator made {invalid} invalid records although invalid_rate is 0)");
    }
    (file.into_inner().unwrap(), index)
}

async fn platform_phase(n: u64) {
    let started = Instant::now();
    let (file, index) = tokio::task::spawn_blocking(move || write_messages(n))
        .await
        .unwrap();
    let records: usize = index.iter().map(|m| m.2).sum();
    let bytes: u64 = index.iter().map(|m| m.1 as u64).sum();
    println!(
        "platform: generated and mapped {records} records into {} messages ({} MiB of XML) in {:.2} s",
        index.len(),
        bytes >> 20,
        started.elapsed().as_secs_f64()
    );

    let before = print_rss("before the platform starts");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = platform::serve(listener, PlatformSimConfig::default())
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let ts = chrono::Utc::now().to_rfc3339();
    let mut req = Vec::new();
    xml::write_token_request(
        &TokenRequest {
            app_key: "demo-app".into(),
            timestamp: ts.clone(),
            sign: platform::sign("demo-secret", "demo-app", &ts),
        },
        &mut req,
    );
    let res = client
        .post(format!("{}/api/token", sim.url()))
        .body(req)
        .send()
        .await
        .unwrap();
    let token = xml::read_token_response(&res.bytes().await.unwrap())
        .unwrap()
        .token;

    let file = Arc::new(file);
    let index = Arc::new(index);
    let next = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (file, index, next, accepted) =
            (file.clone(), index.clone(), next.clone(), accepted.clone());
        let (client, url, token) = (client.clone(), sim.url(), token.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(offset, len, _)) = index.get(i) else {
                    break;
                };
                let mut body = vec![0u8; len];
                file.read_exact_at(&mut body, offset).unwrap();
                let res = client
                    .post(format!("{url}/api/exchange"))
                    .header("X-Token", &token)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(res.status().is_success(), "{}", res.status());
                let receipt = xml::read_receipt(&res.bytes().await.unwrap()).unwrap();
                accepted.fetch_add(u64::from(receipt.accepted), Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = sim.stats();
    println!(
        "platform: ingested {records} records ({} accepted, {} unchanged, {} rejected; {} stored) in {secs:.2} s \
         with {CLIENTS} clients = {:.0} records/s",
        accepted.load(Ordering::Relaxed),
        stats.unchanged,
        stats.rejected,
        stats.records,
        records as f64 / secs
    );
    let after = print_rss("after the ingest");
    println!(
        "platform: store growth {:.0} MiB = {:.0} bytes per stored record",
        after - before,
        (after - before) * 1024.0 * 1024.0 / stats.records.max(1) as f64
    );

    // Reading everything back: what a reconcile does.
    let started = Instant::now();
    let mut read = 0u64;
    for item in ["XZXK", "XZCF"] {
        let mut page = 1u64;
        loop {
            let res = client
                .get(format!("{}/api/records", sim.url()))
                .header("X-Token", &token)
                .query(&[
                    ("item", item.to_string()),
                    ("page", page.to_string()),
                    ("size", "5000".to_string()),
                ])
                .send()
                .await
                .unwrap();
            let p = xml::read_record_page(&res.bytes().await.unwrap()).unwrap();
            read += p.records.len() as u64;
            if p.records.is_empty() || page * p.size >= p.total {
                break;
            }
            page += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "platform: paged {read} records back (size 5000, no fields) in {secs:.2} s = {:.0} records/s",
        read as f64 / secs
    );
    print_rss("at the end");
    sim.shutdown().await;
}
