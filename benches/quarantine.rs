//! Large-quarantine benchmark (not a timed test): a legacy enforcement system whose data is half bad leaves
//! hundreds of thousands of records in quarantine. Both simulators as separate processes, the real release
//! `dualpub` binary against them. After a backfill of BENCH_RECORDS (default 200,000) records with an invalid rate
//! of 0.5, prints the wall time and peak RSS of: the no-change cron run, `status`, `quarantine list`,
//! `quarantine list --json`, `quarantine show` by source id and by record key, and `quarantine retry` of all.
//!
//! Run: `cargo bench --bench quarantine` (about a minute). `BENCH_DUALPUB=PATH` measures another `dualpub`
//! binary (an older build, for a before/after comparison) in the same way.

mod support;

use support::{bench_records, bin, config, run, start_sim, start_source, sync};

fn main() {
    let records = bench_records(200_000);
    let dir = tempfile::tempdir().unwrap();
    let source = start_source(records, 5, &["--invalid-rate", "0.5"]);
    let platform = start_sim(&["sim", "platform"]);
    let cfg = config(dir.path(), &source.url, &platform.url, 200, 4);
    let (m, s) = sync(&cfg, "2026-11-27");
    println!(
        "{}: a store of {records} records, {} quarantined (invalid rate 0.5); backfill {:.1} s, peak RSS {:.1} MiB",
        bin(),
        s["quarantined"],
        m.elapsed.as_secs_f64(),
        m.peak_rss_mib
    );
    // the first run after a backfill pays sled's log replay; the cron run after it is the one measured
    sync(&cfg, "2026-11-27");
    for i in 1..=3 {
        let (m, _) = sync(&cfg, "2026-11-27");
        println!(
            "  no-change run {i}: {} ms wall, peak RSS {:.1} MiB",
            m.elapsed.as_millis(),
            m.peak_rss_mib
        );
    }
    let c = cfg.to_str().unwrap();
    let key = format!(
        "XZCF:{}:nothing has this number",
        dualpub::sim::gen::agency().credit_code.unwrap()
    );
    for (what, args) in [
        ("status", vec!["--config", c, "status"]),
        ("quarantine list", vec!["--config", c, "quarantine", "list"]),
        (
            "quarantine list --json",
            vec!["--config", c, "quarantine", "list", "--json"],
        ),
        (
            "quarantine show (source id)",
            vec!["--config", c, "quarantine", "show", "CF-00000002"],
        ),
        (
            "quarantine show (record key, none has it)",
            vec!["--config", c, "quarantine", "show", &key],
        ),
        (
            "quarantine retry (all)",
            vec!["--config", c, "quarantine", "retry"],
        ),
    ] {
        let m = run(&args);
        println!(
            "  {what}: {:.2} s wall, peak RSS {:.1} MiB, {} bytes on stdout, exit {:?}",
            m.elapsed.as_secs_f64(),
            m.peak_rss_mib,
            m.stdout.len(),
            m.code
        );
    }
}
