//! What the process-level benchmarks share: simulators as separate processes, and running the release
//! `dualpub` binary while sampling its peak RSS.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_dualpub");

/// The `dualpub` binary measured: this build's, or `BENCH_DUALPUB` (another build, for a before/after comparison).
pub fn bin() -> String {
    std::env::var("BENCH_DUALPUB").unwrap_or_else(|_| BIN.to_string())
}

pub struct Sim {
    child: Child,
    pub url: String,
}

impl Sim {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `dualpub sim …` on a free loopback port and reads the address it prints.
pub fn start_sim(args: &[&str]) -> Sim {
    let mut child = Command::new(bin())
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the simulator starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the simulator prints its address")
        .to_string();
    Sim { child, url }
}

/// How many records a bench works on: `BENCH_RECORDS`, else `default`.
pub fn bench_records(default: u64) -> u64 {
    std::env::var("BENCH_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The source simulator with `records` records from `seed` and the benches' token, plus `extra` options.
pub fn start_source(records: u64, seed: u64, extra: &[&str]) -> Sim {
    let (n, seed) = (records.to_string(), seed.to_string());
    let mut args = vec![
        "sim",
        "source",
        "--records",
        &n,
        "--seed",
        &seed,
        "--token",
        "bench-token",
    ];
    args.extend_from_slice(extra);
    start_sim(&args)
}

pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub struct Measured {
    pub elapsed: Duration,
    pub peak_rss_mib: f64,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `dualpub ARGS` with the bench secrets, sampling its peak RSS every 20 ms.
pub fn run(args: &[&str]) -> Measured {
    let t = Instant::now();
    let mut child = Command::new(bin())
        .args(args)
        .env("DUALPUB_SOURCE_TOKEN", "bench-token")
        .env("DUALPUB_PLATFORM_SECRET", "demo-secret")
        // a rehearsal: the runs act as of fixed dates, the expiry run half a year ahead
        .env("DUALPUB_ALLOW_OTHER_TODAY", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    // read stdout and stderr in threads so a large report, or many log lines, never blocks the child (a pipe
    // left unread fills and stops the child mid-write)
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            pipe.read_to_end(&mut v).ok();
            v
        })
    };
    let reader = drain(Box::new(child.stdout.take().unwrap()));
    let err_reader = drain(Box::new(child.stderr.take().unwrap()));
    loop {
        if let Some(h) = vm_hwm_kib(pid) {
            peak = peak.max(h);
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let elapsed = t.elapsed();
    let status = child.wait().unwrap();
    Measured {
        elapsed,
        peak_rss_mib: peak as f64 / 1024.0,
        code: status.code(),
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// A config for the two simulators with a store in `dir`.
pub fn config(dir: &Path, source: &str, platform: &str, batch: u32, concurrency: u32) -> PathBuf {
    let p = dir.join(format!("dualpub-{batch}-{concurrency}.toml"));
    std::fs::write(
        &p,
        format!(
            "[agency]\nname = \"河南省应急管理厅\"\ncredit_code = \"{}\"\ndomain = \"安全生产\"\n\
             [source]\nurl = \"{source}\"\ntoken_env = \"DUALPUB_SOURCE_TOKEN\"\npage_size = 1000\n\
             [platform]\nurl = \"{platform}\"\napp_key = \"demo-app\"\nsecret_env = \"DUALPUB_PLATFORM_SECRET\"\nreceiver = \"HNCREDIT\"\n\
             batch_size = {batch}\nconcurrency = {concurrency}\npage_size = 5000\n[store]\npath = \"{}\"\n",
            dualpub::sim::gen::agency().credit_code.unwrap(),
            dir.join(format!("store-{batch}-{concurrency}")).display()
        ),
    )
    .unwrap();
    p
}

/// `dualpub sync` for a config; panics unless it exits 0 or 1.
pub fn sync(config: &Path, today: &str) -> (Measured, serde_json::Value) {
    let m = run(&[
        "--config",
        config.to_str().unwrap(),
        "sync",
        "--json",
        "--today",
        today,
    ]);
    assert!(
        matches!(m.code, Some(0) | Some(1)),
        "sync failed: {}",
        String::from_utf8_lossy(&m.stderr)
    );
    let s = serde_json::from_slice(&m.stdout).unwrap_or_default();
    (m, s)
}
