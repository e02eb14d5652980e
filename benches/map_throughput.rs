//! Benchmark: map + validate + serialize throughput on one core, for 100,000 mixed records (permits and
//! penalties; organisations, sole traders and natural persons; 2 % invalid) from the source simulator's
//! generator. Prints records/s with and without JSON parsing.
//!
//! Run: `cargo bench --bench map_throughput` (target: ≥ 200,000 records/s).

use dualpub::mapping::{DisplayPolicy, MappingContext, MappingSet};
use dualpub::model::Kind;
use dualpub::sim::gen::{self, GenConfig};
use dualpub::source_schema::SourceRecord;
use std::time::Instant;

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
        display: DisplayPolicy::for_domain(Some("安全生产"), None),
    };
    let parsed: Vec<(Kind, SourceRecord)> = records
        .iter()
        .map(|(k, s)| (*k, serde_json::from_str(s).unwrap()))
        .collect();

    let mut best = f64::MAX;
    let mut valid = 0;
    let mut out = Vec::with_capacity(1 << 20);
    let mut bytes = 0;
    for _ in 0..3 {
        let t = Instant::now();
        (valid, bytes) = map_batches(&mappings, &ctx, &parsed, &mut out);
        best = best.min(t.elapsed().as_secs_f64());
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

/// The measured work: every record mapped, validated and (when valid) written, a batch at a time into one reused
/// buffer as sync does. Returns (valid records, XML bytes). Not inlined, so a profiler can be limited to it:
/// `valgrind --tool=callgrind --toggle-collect='map_throughput::map_batches' target/release/deps/map_throughput-…`.
#[inline(never)]
fn map_batches(
    mappings: &MappingSet,
    ctx: &MappingContext,
    parsed: &[(Kind, SourceRecord)],
    out: &mut Vec<u8>,
) -> (usize, usize) {
    let (mut valid, mut bytes) = (0, 0);
    for batch in parsed.chunks(BATCH) {
        // As sync does: one reused buffer holds a batch's records, then goes to the wire.
        out.clear();
        for (kind, src) in batch {
            let m = mappings.get(*kind).map(ctx, src);
            if m.is_valid() {
                valid += 1;
                dualpub::xml::write_record(m.key.as_ref().unwrap().as_str(), &m.record, out);
            }
        }
        bytes += out.len();
        std::hint::black_box(&out);
    }
    (valid, bytes)
}
