//! Benchmark: map + validate + serialize throughput on one core, for 100,000 mixed records (permits and
//! penalties; organisations, sole traders and natural persons; 2 % invalid) from the source simulator's
//! generator. Prints records/s with and without JSON parsing.
//!
//! The first figure times mapping, validation and writing only, a batch of 200 at a time right after the batch was
//! parsed — as sync maps a page it has just read. (It used to map 100,000 records parsed long before: their
//! ~150 MB of strings fit no cache, and the figure swung between 155k and 280k records/s from run to run with
//! the memory layout; the same code on 5,000 records measured ~275k.)
//!
//! Run: `cargo bench --bench map_throughput` (target: ≥ 200,000 records/s).

use dualpub::mapping::{DisplayPolicy, Domain, MappingContext, MappingSet};
use dualpub::model::Kind;
use dualpub::sim::gen::{self, GenConfig};
use dualpub::source_schema::SourceRecord;
use std::time::{Duration, Instant};

/// Records per batch: the default `[platform] batch_size`, which is how sync writes them (one envelope buffer
/// per batch, reused).
const BATCH: usize = 200;

fn main() {
    let n: usize = std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    // The simulator's generator: realistic content, organisations / sole traders / persons, 2 % invalid.
    let cfg = GenConfig {
        records: n as u64,
        seed: 7,
        invalid_rate: 0.02,
        ..GenConfig::default()
    };
    let records: Vec<(Kind, String)> = (0..n as u64)
        .map(|i| {
            let kind = if i % 2 == 0 {
                Kind::Permit
            } else {
                Kind::Penalty
            };
            let rec = gen::record(&cfg, kind, i / 2);
            (kind, serde_json::to_string(&rec).unwrap())
        })
        .collect();
    let mappings = MappingSet::builtin();
    let ctx = MappingContext {
        agency_name: Some("河南省应急管理厅".into()),
        agency_credit_code: Some("11410000000012343F".into()),
        display: DisplayPolicy::for_domain(Domain::WorkSafety, None),
        today: None,
    };

    let mut best = f64::MAX;
    let (mut valid, mut bytes) = (0, 0);
    let mut out = Vec::with_capacity(1 << 20);
    let mut batch: Vec<(Kind, SourceRecord)> = Vec::with_capacity(BATCH);
    for _ in 0..3 {
        let mut elapsed = Duration::ZERO;
        (valid, bytes) = (0, 0);
        for chunk in records.chunks(BATCH) {
            batch.clear();
            batch.extend(
                chunk
                    .iter()
                    .map(|(k, s)| (*k, serde_json::from_str(s).unwrap())),
            );
            let t = Instant::now();
            let (v, b) = map_batch(&mappings, &ctx, &batch, &mut out);
            elapsed += t.elapsed();
            valid += v;
            bytes += b;
        }
        best = best.min(elapsed.as_secs_f64());
    }
    println!(
        "map+validate+serialize: {n} records ({valid} valid, {} MiB XML) in {:.3} s = {:.0} records/s",
        bytes >> 20,
        best,
        n as f64 / best
    );

    let mut best_json = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        for (i, (kind, s)) in records.iter().enumerate() {
            if i % BATCH == 0 {
                out.clear();
            }
            let src: SourceRecord = serde_json::from_str(s).unwrap();
            let m = mappings.get(*kind).map(&ctx, &src);
            if m.is_valid() {
                dualpub::xml::write_record(m.key.as_ref().unwrap().as_str(), &m.record, &mut out);
            }
        }
        best_json = best_json.min(t.elapsed().as_secs_f64());
    }
    println!(
        "JSON parse+map+validate+serialize: {n} records in {:.3} s = {:.0} records/s",
        best_json,
        n as f64 / best_json
    );
}

/// The measured work: a batch of records mapped, validated and (when valid) written into one reused buffer, as
/// sync does. Returns (valid records, XML bytes). Not inlined, so a profiler can be limited to it:
/// `valgrind --tool=callgrind --toggle-collect='map_throughput::map_batch' target/release/deps/map_throughput-…`.
#[inline(never)]
fn map_batch(
    mappings: &MappingSet,
    ctx: &MappingContext,
    batch: &[(Kind, SourceRecord)],
    out: &mut Vec<u8>,
) -> (usize, usize) {
    out.clear();
    let mut valid = 0;
    for (kind, src) in batch {
        let m = mappings.get(*kind).map(ctx, src);
        if m.is_valid() {
            valid += 1;
            dualpub::xml::write_record(m.key.as_ref().unwrap().as_str(), &m.record, out);
        }
    }
    std::hint::black_box(&out);
    (valid, out.len())
}
