//! Backfill benchmark (issue "sync engine", not a timed test): both simulators as separate processes, the real
//! release `dualpub sync` binary against them. Prints:
//! - records/s and peak RSS of `dualpub` for a backfill of BENCH_RECORDS (default 1,000,000) records,
//! - peak RSS for a tenth of that, and how much more each further record costs,
//! - the per-record way (batch size 1, concurrency 1, as hand-written uploaders do) on a sample, and the ratio, on
//!   bare loopback and at 2 ms and 20 ms per platform call,
//! - the wall time of a no-change run right after the backfill,
//! - a run half a year later, when the display periods of many penalties have ended at once: records withdrawn,
//!   time, peak RSS.
//!
//! Run: `cargo bench --bench backfill` (BENCH_RECORDS=100000 for a quicker look).

mod support;

use std::time::Duration;
use support::{bench_records, config, start_sim, start_source, sync};

/// A run that is not the backfill: its summary, wall time and peak RSS.
struct Later {
    summary: serde_json::Value,
    elapsed: Duration,
    peak_rss_mib: f64,
}

fn backfill(
    records: u64,
    batch: u32,
    concurrency: u32,
    latency_ms: u64,
    later: Option<&str>,
) -> (f64, f64, serde_json::Value, Duration, Option<Later>) {
    let dir = tempfile::tempdir().unwrap();
    let latency = latency_ms.to_string();
    let source = start_source(records, 5, &[]);
    let platform = start_sim(&["sim", "platform", "--latency-ms", &latency]);
    let cfg = config(dir.path(), &source.url, &platform.url, batch, concurrency);
    let (m, s) = sync(&cfg, "2026-11-27");
    let (again, s2) = sync(&cfg, "2026-11-27");
    assert_eq!(s2["pushed"], 0, "a second run pushes nothing");
    let later = later.map(|today| {
        let (m, summary) = sync(&cfg, today);
        Later {
            summary,
            elapsed: m.elapsed,
            peak_rss_mib: m.peak_rss_mib,
        }
    });
    (
        records as f64 / m.elapsed.as_secs_f64(),
        m.peak_rss_mib,
        s,
        again.elapsed,
        later,
    )
}

fn main() {
    let n = bench_records(1_000_000);
    println!("backfill of {n} records (permits and penalties), simulators as separate processes, batch 200, concurrency 4");
    let (rate, rss, s, again, later) = backfill(n, 200, 4, 0, Some("2027-06-01"));
    println!(
        "  {rate:.0} records/s; peak RSS of dualpub {rss:.1} MiB; pushed {} accepted {} not public (penalties past their display period, never published) {}",
        s["pushed"], s["accepted"], s["not_public"]
    );
    println!(
        "  no-change run right after: {} ms wall (whole process, including start-up)",
        again.as_millis()
    );
    if let Some(l) = later {
        println!(
            "  a run on 2027-06-01 (display periods ended): withdrew {} in {:.1} s, peak RSS {:.1} MiB",
            l.summary["withdrawn"],
            l.elapsed.as_secs_f64(),
            l.peak_rss_mib
        );
    }
    let small = (n / 10).max(1000);
    let (rate_small, rss_small, _, _, _) = backfill(small, 200, 4, 0, None);
    println!(
        "  {small} records: {rate_small:.0} records/s, peak RSS {rss_small:.1} MiB (RSS at 10× the records: {:.2}×, \
         {:.0} bytes more for every further record)",
        rss / rss_small,
        (rss - rss_small) * 1024.0 * 1024.0 / (n - small).max(1) as f64
    );

    println!(
        "the per-record way (batch 1, concurrency 1, as hand-written uploaders do), same run:"
    );
    let sample = 2000.min(n);
    let (one_local, _, _, _, _) = backfill(sample, 1, 1, 0, None);
    println!("  loopback, no added latency, {sample} records: {one_local:.0} records/s → dualpub is {:.0}× faster", rate / one_local);
    // A provincial platform is reached over the government extranet: every call pays a round trip. Both ways are
    // measured at the same added latency; 2 ms is a fast link, 20 ms a typical one.
    for (latency, sample) in [(2, 1000), (20, 300)] {
        let sample = sample.min(n);
        let (one_far, _, _, _, _) = backfill(sample, 1, 1, latency, None);
        let (batched_far, _, _, _, _) = backfill(20_000.min(n), 200, 4, latency, None);
        println!(
            "  {latency} ms per platform call: per-record {one_far:.0} records/s ({sample} records), dualpub {batched_far:.0} records/s → {:.0}× faster",
            batched_far / one_far
        );
    }
}
