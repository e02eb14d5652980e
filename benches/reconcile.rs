//! Reconcile benchmark (issue "reconcile", not a timed test): BENCH_RECORDS (default 1,000,000) source records,
//! synced so the platform holds them too, then `dualpub reconcile` over everything. Prints the wall time and the
//! peak RSS of the reconcile process. Both run as of 2026-10-31, the day after the generator's last decision (a
//! decision after the run's day is held back), with a display period of 36 months, so no penalty without its own
//! display end has expired and both sides really hold about the same number of records. (Until 2026-11-29 they ran
//! as of 2024-01-01, before most decisions.)
//!
//! Then the same again with a display period the platform's records were not made with (`display_months = 35`
//! instead of 36), so every penalty without its own display end is `stale`: the stale rows wait for the platform's fields on disk,
//! and the peak RSS shows whether memory stays flat with hundreds of thousands of them.
//!
//! Run: `cargo bench --bench reconcile`.

mod support;

use std::path::Path;
use support::{bench_records, config, run, start_sim, start_source, sync, Measured};

fn main() {
    let n = bench_records(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let source = start_source(n, 6, &[]);
    let platform = start_sim(&["sim", "platform"]);
    let cfg = config(dir.path(), &source.url, &platform.url, 500, 4);
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replacen("[agency]\n", "[agency]\ndisplay_months = 36\n", 1),
    )
    .unwrap();
    let (m, s) = sync(&cfg, AS_OF);
    println!(
        "filled the platform: {} records pushed in {:.1} s ({:.0} records/s)",
        s["pushed"],
        m.elapsed.as_secs_f64(),
        n as f64 / m.elapsed.as_secs_f64()
    );
    let out = dir.path().join("report.json");
    let (r, v) = reconcile(&cfg, &out);
    println!(
        "reconcile of {} source and {} platform records: {:.1} s, peak RSS {:.1} MiB, {} gaps",
        v["records"]["source"],
        v["records"]["platform"],
        r.elapsed.as_secs_f64(),
        r.peak_rss_mib,
        v["gaps"].as_array().map(|a| a.len()).unwrap_or(0)
    );

    let text = std::fs::read_to_string(&cfg).unwrap();
    let changed = dir.path().join("display-14.toml");
    std::fs::write(
        &changed,
        text.replacen("display_months = 36", "display_months = 35", 1),
    )
    .unwrap();
    let (r, v) = reconcile(&changed, &out);
    println!(
        "the same with display_months changed: {} stale, {:.1} s, peak RSS {:.1} MiB",
        v["counts"]["stale"],
        r.elapsed.as_secs_f64(),
        r.peak_rss_mib
    );
}

/// The day both the sync and the reconciles run as of.
const AS_OF: &str = "2026-10-31";

/// `reconcile --today AS_OF --format json --out OUT`, measured; the report read back.
fn reconcile(cfg: &Path, out: &Path) -> (Measured, serde_json::Value) {
    let r = run(&[
        "--config",
        cfg.to_str().unwrap(),
        "reconcile",
        "--today",
        AS_OF,
        "--format",
        "json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        matches!(r.code, Some(0) | Some(1)),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let v = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    (r, v)
}
