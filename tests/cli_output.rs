//! What the commands do with standard output when its reader goes away early (`dualpub status | head -1`) or it
//! cannot be written at all, and what they say when the source or the platform cannot be reached.

mod common;

use common::*;
use dualpub::sim::gen::GenConfig;
use dualpub::sim::platform::Faults;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs the binary with the read end of its standard output closed before it writes anything.
fn with_closed_stdout(mut c: Command) -> Output {
    c.stdout(Stdio::piped());
    let mut child = c.spawn().expect("the binary starts");
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

/// Runs the binary with the read end of its standard error closed before it writes anything (`2>&1 | head -0`).
fn with_closed_stderr(mut c: Command) -> Output {
    c.stderr(Stdio::piped());
    let mut child = c.spawn().expect("the binary starts");
    drop(child.stderr.take());
    child.wait_with_output().unwrap()
}

/// Both simulators with `records` generated records of the default generator, no faults.
async fn spawn_small(records: u64) -> Env {
    spawn(
        GenConfig {
            records,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_goes_away_ends_the_output_quietly() {
    let gen_cfg = GenConfig {
        records: 200,
        seed: 3,
        invalid_rate: 0.2,
        ..GenConfig::default()
    };
    let env = spawn(gen_cfg, Faults::default()).await;
    let (code, summary, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "records are quarantined: {err}");
    assert!(summary["quarantined"].as_u64().unwrap() > 0);
    let list = env.dualpub(&["quarantine", "list", "--json"]).await;
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    let id = rows[0]["source_id"].as_str().unwrap().to_string();

    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["quarantine", "list"],
        vec!["quarantine", "list", "--json"],
        vec!["quarantine", "show", id.as_str()],
        vec!["sync", "--json", "--today", TODAY],
        vec!["reconcile", "--today", TODAY],
        vec!["reconcile", "--today", TODAY, "--format", "json"],
        vec!["report", "annual", "--year", "2026", "--today", TODAY],
    ] {
        let read = env.dualpub(&args).await;
        assert!(!read.stdout.is_empty(), "{args:?}");
        let c = env.command(&args);
        let out = tokio::task::spawn_blocking(move || with_closed_stdout(c))
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("Broken pipe"), "{args:?}: {err}");
        // the same exit code as when the output is read in full (reconcile: 1, it finds the quarantined records)
        assert_eq!(out.status.code(), read.status.code(), "{args:?}: {err}");
        assert!(matches!(out.status.code(), Some(0 | 1)), "{args:?}: {err}");
    }

    // Output that cannot be written for another reason is an error (exit 3), still without a panic.
    #[cfg(target_os = "linux")]
    for args in [vec!["status"], vec!["quarantine", "list"]] {
        let mut c = env.command(&args);
        c.stdout(std::fs::File::create("/dev/full").unwrap());
        let out = tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains("cannot write to standard output"),
            "{args:?}: {err}"
        );
    }
}

/// Every message on standard error (the error line, a sync's summary, quarantine's notes) was written with a
/// panic on failure: with its reader gone (`dualpub … 2>&1 | head -0`), any exit became 101. The exit code is the
/// one the command has when its messages are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_standard_error_that_goes_away_changes_no_exit_code() {
    let env = spawn(
        GenConfig {
            records: 50,
            seed: 4,
            invalid_rate: 0.2,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await;
    // The first sync (its summary table on stderr) quarantines records: exit 1, its reader gone or not.
    let c = env.command(&["sync", "--today", TODAY]);
    let out = tokio::task::spawn_blocking(move || with_closed_stderr(c))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(env.dualpub(&["quarantine", "list"]).await.status.success());
    for (args, code) in [
        (vec!["quarantine", "show", "NOPE"], 2),
        (vec!["quarantine", "retry", "NOPE"], 2),
        (vec!["sync", "--kind", "nope"], 2),
    ] {
        let read = env.dualpub(&args).await;
        assert_eq!(read.status.code(), Some(code), "{args:?}");
        assert!(!read.stderr.is_empty(), "{args:?} says something");
        let c = env.command(&args);
        let out = tokio::task::spawn_blocking(move || with_closed_stderr(c))
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
    }
}

#[test]
fn a_simulator_whose_stdout_is_closed_keeps_serving() {
    for which in ["source", "platform"] {
        let port = closed_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_dualpub"))
            .args(["sim", which, "--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(s) = child.try_wait().unwrap() {
                panic!("sim {which} ended early: {s:?}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "sim {which} never listened"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // the banner is written right after the listener is up
        std::thread::sleep(Duration::from_millis(1000));
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "sim {which} ended when its banner could not be printed: {:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let status = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(out.status.code(), Some(0), "sim {which}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_or_secret_is_a_configuration_error() {
    let env = spawn_small(20).await;
    for (file, key) in [
        ("source.token", "[source] token_env / token_file"),
        ("platform.secret", "[platform] app_key and the secret"),
    ] {
        let path = env.dir.path().join(file);
        let good = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, "not-the-right-one\n").unwrap();
        for args in [
            &["sync", "--today", TODAY][..],
            &["reconcile", "--today", TODAY],
        ] {
            let out = env.dualpub(args).await;
            let err = String::from_utf8_lossy(&out.stderr);
            // it was 3, "source or platform unavailable", which sends the operator to the network
            assert_eq!(out.status.code(), Some(2), "{file} {args:?}: {err}");
            assert!(err.contains(key), "{file} {args:?}: {err}");
            assert!(!err.contains("not-the-right-one"), "{err}");
        }
        std::fs::write(&path, good).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_source_or_platform_is_named_with_its_url() {
    let env = spawn_small(20).await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    assert!(text.contains("retry_budget_secs = 120"));
    let text = text.replace("retry_budget_secs = 120", "retry_budget_secs = 2");
    let port = closed_port();
    let dead = format!("http://127.0.0.1:{port}");
    for (system, live, path) in [
        ("source", env.source.url(), "/api/v1/"),
        ("platform", env.platform.url(), "/api/token"),
    ] {
        assert!(text.contains(&format!("url = \"{live}\"")));
        std::fs::write(
            &env.config,
            text.replace(&format!("url = \"{live}\""), &format!("url = \"{dead}\"")),
        )
        .unwrap();
        let (code, _, err) = env.sync(&[]).await;
        assert_eq!(code, 3, "{system}: {err}");
        assert!(
            err.contains(&format!("cannot connect to the {system} at {dead}{path}")),
            "{system}: {err}"
        );
        assert!(err.contains("connection refused"), "{system}: {err}");
        assert!(!err.contains("error sending request"), "{system}: {err}");
        assert!(
            !err.contains("test-token") && !err.contains("demo-secret"),
            "{system}: {err}"
        );
    }
}

/// Regression (D9a): `status` showed an aborted run as `aborted` with no reason (only `--json` had its `error`), and
/// the operator paged for its exit 3 had to know to ask for JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_why_a_run_was_aborted() {
    let env = spawn_small(20).await;
    let text = std::fs::read_to_string(&env.config).unwrap();
    let live = env.platform.url();
    let dead = format!("http://127.0.0.1:{}", closed_port());
    let text = text
        .replace("retry_budget_secs = 120", "retry_budget_secs = 2")
        .replace(&format!("url = \"{live}\""), &format!("url = \"{dead}\""));
    std::fs::write(&env.config, text).unwrap();
    let (code, summary, err) = env.sync(&[]).await;
    assert_eq!(code, 3, "{err}");
    assert_eq!(summary["outcome"], "aborted", "{summary}");

    let out = env.dualpub(&["status"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let run = lines
        .iter()
        .position(|l| l.starts_with("run ") && l.contains(" aborted "))
        .unwrap_or_else(|| panic!("an aborted run: {text}"));
    let why = lines.get(run + 1).copied().unwrap_or_default();
    assert!(why.trim_start().starts_with("error: "), "{text}");
    assert!(
        why.contains(&format!("cannot connect to the platform at {dead}")),
        "{text}"
    );
    assert!(
        why.contains("connection refused"),
        "the last problem is kept: {text}"
    );
    assert!(
        !text.contains("test-token") && !text.contains("demo-secret"),
        "{text}"
    );
}

#[test]
fn help_texts_say_what_each_option_takes() {
    let help = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_dualpub"))
            .args(args)
            .arg("--help")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let annual = help(&["report", "annual"]);
    assert!(
        annual.contains("[possible values: table, json, xlsx]"),
        "{annual}"
    );
    assert!(!annual.contains("csv"), "{annual}");
    let list = help(&["quarantine", "list"]);
    let show = help(&["quarantine", "show"]);
    let retry = help(&["quarantine", "retry"]);
    let reconcile = help(&["reconcile"]);
    let sync = help(&["sync"]);
    let status = help(&["status"]);
    assert!(status.contains("outbox"), "{status}");
    // a real run refuses another date: help says so, and how a rehearsal allows it
    let today = sync.lines().find(|l| l.contains("--today")).unwrap();
    assert!(
        today.contains("--dry-run") && today.contains("DUALPUB_ALLOW_OTHER_TODAY=1"),
        "{sync}"
    );
    assert!(sync.contains("never contact the platform"), "{sync}");
    // every option and argument has a help text: no line that ends right after its name
    for (text, names) in [
        (
            &annual,
            &[
                "--year <YEAR>",
                "--format <FORMAT>",
                "--out <OUT>",
                "--today <TODAY>",
            ][..],
        ),
        (&list, &["--json"][..]),
        (&show, &["<KEY>"][..]),
        (&retry, &["[KEY]..."][..]),
        (&reconcile, &["--format <FORMAT>", "--today <TODAY>"][..]),
        (
            &sync,
            &["--kind <KIND>", "--dry-run", "--json", "--today <TODAY>"][..],
        ),
        (&status, &["--json"][..]),
    ] {
        for name in names {
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_else(|| panic!("{name} missing: {text}"));
            assert!(
                line.trim_end().len() > line.find(name).unwrap() + name.len(),
                "{name} has no help: {text}"
            );
        }
    }
    // what help does not list is refused as usage (exit 2), before any config is read
    let out = Command::new(env!("CARGO_BIN_EXE_dualpub"))
        .args(["report", "annual", "--year", "2025", "--format", "csv"])
        .env_remove("DUALPUB_CONFIG")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'csv'"), "{err}");
}

/// `status` printed a run's line without what the platform already held or withdrew: the first run on a rebuilt
/// store read "pushed 60 accepted 0", as if the platform had not answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_what_the_platform_already_held_and_what_was_withdrawn() {
    let gen_cfg = GenConfig {
        records: 100,
        seed: 5,
        ..GenConfig::default()
    };
    let env = spawn(gen_cfg, Faults::default()).await;
    let (code, first, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let pushed = first["pushed"].as_u64().unwrap();
    assert!(pushed > 0, "{first}");

    // a store moved aside and rebuilt: the platform holds every record already
    std::fs::rename(env.store_path(), env.dir.path().join("store.aside")).unwrap();
    let (code, rebuilt, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        rebuilt["platform_unchanged"].as_u64(),
        Some(pushed),
        "{rebuilt}"
    );

    // a published penalty revoked at the source is withdrawn by the next run
    let penalty_id = {
        let store = read_store(&env.store_path());
        let mut public = store.ledger_iter().map(|r| r.unwrap().1).filter(|e| {
            e.kind == dualpub::model::Kind::Penalty
                && e.state == dualpub::store::PlatformState::Public
        });
        public.next().expect("a public penalty").source_id
    };
    let mut revoked = env.source_record(&penalty_id).await;
    revoked["status"] = "revoked".into();
    revoked["updated_at"] = serde_json::Value::Null;
    revoked["kind"] = "penalty".into();
    env.source_insert_one(revoked).await;
    let (code, withdrew, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(withdrew["withdrawn"], 1, "{withdrew}");

    let out = env.dualpub(&["status"]).await;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let runs: Vec<&str> = text.lines().filter(|l| l.starts_with("run ")).collect();
    assert_eq!(runs.len(), 2, "the rebuilt store knows two runs: {text}");
    assert!(runs[0].contains(" withdrawn 1 "), "{text}");
    assert!(
        runs[1].contains(&format!(" accepted 0 already held {pushed} ")),
        "{text}"
    );
}

/// A cron run with nothing to send logs in first (a refused secret is exit 2 at once), but when the platform could
/// not be reached at all (a wrong port or scheme, an outage) it said so only in a debug log and reported success:
/// green in cron until the day a record changed. It now needs attention (exit 1), says why, and keeps the reason in
/// its summary; nothing was due, so nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_nothing_to_send_says_when_the_platform_cannot_be_reached() {
    let env = spawn_small(20).await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 0, "{err}");
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(
        (code, &s["platform_unreachable"]),
        (0, &serde_json::Value::Null),
        "{s} {err}"
    );
    let text = std::fs::read_to_string(&env.config).unwrap();
    let live = format!("url = \"{}\"", env.platform.url());
    assert!(text.contains(&live));
    let dead = format!("http://127.0.0.1:{}", closed_port());
    std::fs::write(
        &env.config,
        text.replace(&live, &format!("url = \"{dead}\"")),
    )
    .unwrap();
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    assert_eq!(s["outcome"], "attention", "{s}");
    let why = s["platform_unreachable"].as_str().unwrap_or_default();
    assert!(
        why.contains(&dead) && why.contains("connection refused"),
        "{s}"
    );
    assert!(
        err.contains("WARN") && err.contains("could not reach the platform"),
        "{err}"
    );
    let out = env.dualpub(&["sync", "--today", TODAY]).await;
    let table = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("platform unreachable"), "{table}");
    // A platform down behind a gateway that answers every call with 503: the same (it said "ok").
    std::fs::write(&env.config, &text).unwrap();
    env.admin_post(
        format!("{}/admin/faults", env.platform.url()),
        serde_json::json!({ "error_rate": 1.0 }),
    )
    .await;
    let (code, s, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{s} {err}");
    let why = s["platform_unreachable"].as_str().unwrap_or_default();
    assert!(why.contains("HTTP 50"), "{s}");
}

/// A dry run's summary sent the operator to `dualpub quarantine list`, which a dry run never writes to ("quarantine
/// is empty"), and called what it would send "pushed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_says_what_it_would_do_not_what_it_did() {
    let env = spawn(
        GenConfig {
            records: 60,
            seed: 5,
            invalid_rate: 0.2,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await;
    let out = env.dualpub(&["sync", "--dry-run", "--today", TODAY]).await;
    let table = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("would push"), "{table}");
    assert!(table.contains("would be quarantined"), "{table}");
    assert!(!table.contains("see `dualpub quarantine list`"), "{table}");
    assert!(!table.contains("record quarantined"), "{table}");
    let list = env.dualpub(&["quarantine", "list"]).await;
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("empty")
            || String::from_utf8_lossy(&list.stderr).contains("empty"),
        "a dry run writes no quarantine"
    );
}

/// `status` listed an operator's `quarantine retry` like a cron sync ("attention read 12 … quarantined 12" reads as
/// a sync that just quarantined 12 records). Each run says which command made it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_which_command_made_each_run() {
    let env = spawn(
        GenConfig {
            records: 40,
            seed: 6,
            invalid_rate: 0.2,
            ..GenConfig::default()
        },
        Faults::default(),
    )
    .await;
    let (code, _, err) = env.sync(&[]).await;
    assert_eq!(code, 1, "{err}");
    let out = env.dualpub(&["quarantine", "retry"]).await;
    assert_eq!(out.status.code(), Some(1));
    let out = env.dualpub(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let commands: Vec<&str> = v["last_runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["command"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(commands, ["quarantine retry", "sync"], "{v}");
    let out = env.dualpub(&["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let runs: Vec<&str> = text.lines().filter(|l| l.starts_with("run ")).collect();
    assert!(
        runs.len() == 2 && runs[0].contains(" quarantine retry ") && runs[1].contains(" sync "),
        "{text}"
    );
    assert!(
        !text.contains("last sync"),
        "the sync is among the runs shown: {text}"
    );

    // An operator's retries push the cron run out of the five shown: `status` still shows the newest sync, and
    // `--json` has it as `last_sync`.
    for _ in 0..5 {
        let out = env.dualpub(&["quarantine", "retry"]).await;
        assert_eq!(out.status.code(), Some(1));
    }
    let out = env.dualpub(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = v["last_runs"].as_array().unwrap();
    assert!(
        runs.len() == 5 && runs.iter().all(|r| r["command"] == "quarantine retry"),
        "{v}"
    );
    assert_eq!(v["last_sync"]["command"], "sync", "{v}");
    let quarantined = commands_quarantined(&env).await;
    assert!(quarantined.as_u64() > Some(0), "{v}");
    assert_eq!(v["last_sync"]["quarantined"], quarantined, "{v}");
    let out = env.dualpub(&["status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let last: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("last sync "))
        .collect();
    assert!(last.len() == 1 && last[0].contains(" sync "), "{text}");
}

/// How many records the quarantine holds, as `quarantine list --json` counts them.
async fn commands_quarantined(env: &Env) -> serde_json::Value {
    let out = env.dualpub(&["quarantine", "list", "--json"]).await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::json!(v.as_array().map_or(0, |a| a.len()))
}
