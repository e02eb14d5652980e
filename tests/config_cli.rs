//! Configuration errors through the real binary: exit code 2 and a message that names the file (or the
//! environment variable), the key and the problem.

use std::path::Path;
use std::process::{Command, Output};

const BASE: &str = r#"
[agency]
name = "河南省应急管理厅"
credit_code = "11410000000012343F"
domain = "安全生产"

[source]
url = "http://127.0.0.1:8701"
token_env = "DUALPUB_SOURCE_TOKEN"

[platform]
url = "http://127.0.0.1:8702"
app_key = "demo-app"
secret_env = "DUALPUB_PLATFORM_SECRET"
receiver = "HNCREDIT"
batch_size = 200
concurrency = 4

[store]
path = "store"
"#;

/// `dualpub ARGS` in `dir` with `dualpub.toml` holding `config`, every `DUALPUB_` variable of this process
/// removed, and `vars` set.
fn dualpub_in(dir: &Path, config: &str, args: &[&str], vars: &[(&str, &str)]) -> Output {
    std::fs::write(dir.join("dualpub.toml"), config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dualpub"));
    cmd.args(["--config", "dualpub.toml"])
        .args(args)
        .current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("DUALPUB_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

/// The secrets the base configuration names.
const SECRETS: [(&str, &str); 2] = [
    ("DUALPUB_SOURCE_TOKEN", "t"),
    ("DUALPUB_PLATFORM_SECRET", "s"),
];

/// `dualpub status` in `dir` with `dualpub.toml` holding `config`, the secrets set, and `vars` added.
fn status(dir: &Path, config: &str, vars: &[(&str, &str)]) -> Output {
    let all: Vec<(&str, &str)> = SECRETS.iter().chain(vars).copied().collect();
    dualpub_in(dir, config, &["status"], &all)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_base_configuration_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = status(dir.path(), BASE, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_wrong_type_names_the_file_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = BASE.replace("batch_size = 200", "batch_size = \"200\"");
    let line = text.lines().position(|l| l.contains("batch_size")).unwrap() + 1;
    let out = status(dir.path(), &text, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "dualpub.toml: line {line}: [platform] batch_size: "
        )),
        "{err}"
    );
}

#[test]
fn a_feed_page_of_one_record_is_refused() {
    // A page of one record cannot look back for a record committed late behind it.
    let dir = tempfile::tempdir().unwrap();
    for (size, code) in [("1", 2), ("2", 0)] {
        let text = BASE.replace(
            "token_env = \"DUALPUB_SOURCE_TOKEN\"",
            &format!("token_env = \"DUALPUB_SOURCE_TOKEN\"\npage_size = {size}"),
        );
        let out = status(dir.path(), &text, &[]);
        assert_eq!(out.status.code(), Some(code), "{size}: {}", stderr(&out));
        if code == 2 {
            assert!(
                stderr(&out).contains("[source] page_size"),
                "{}",
                stderr(&out)
            );
        }
    }
}

#[test]
fn a_bad_override_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("DUALPUB_PLATFORM_CONCURRENCY", "-3"),
        ("DUALPUB_PLATFORM_BATCH_SIZE", "9999"),
    ] {
        let out = status(dir.path(), BASE, &[(var, value)]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("environment variable {var} ")),
            "{err}"
        );
        assert!(!err.contains("]:"), "{err}");
    }
}

#[test]
fn a_secret_in_the_dualpub_namespace_is_read_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = BASE.replace("DUALPUB_PLATFORM_SECRET", "DUALPUB_PLATFORM_PASSWORD");
    let out = status(dir.path(), &text, &[("DUALPUB_PLATFORM_PASSWORD", "pw")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_bad_log_level_is_refused_and_a_good_filter_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let out = status(dir.path(), BASE, &[("DUALPUB_LOG", "verbose")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("DUALPUB_LOG"), "{}", stderr(&out));
    let text = format!("{BASE}\n[log]\nlevel = \"verbose\"\n");
    let out = status(dir.path(), &text, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("[log] level"), "{}", stderr(&out));
    for good in ["debug", "dualpub=debug,hyper=warn"] {
        let out = status(dir.path(), BASE, &[("DUALPUB_LOG", good)]);
        assert_eq!(out.status.code(), Some(0), "{good}: {}", stderr(&out));
    }
}

#[test]
fn a_missing_file_says_why_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dualpub"))
        .args(["--config", "nope.toml", "status"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("nope.toml"), "{err}");
    assert_eq!(err.matches("os error 2").count(), 1, "{err}");
}

/// `dualpub ARGS` in `dir` with the base configuration and no secrets in the environment.
fn without_secrets(dir: &Path, args: &[&str]) -> Output {
    dualpub_in(dir, BASE, args, &[])
}

#[test]
fn looking_at_the_store_needs_no_secrets_but_talking_to_the_systems_does() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["status"][..],
        &["quarantine", "list"][..],
        &["quarantine", "list", "--json"][..],
    ] {
        let out = without_secrets(dir.path(), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        // looking does not create a store (a mistyped path would leave an empty one behind)
        assert!(
            stderr(&out).contains("no store at"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(!dir.path().join("store").exists(), "{args:?}");
    }
    // with --json, a script reading stdout gets the same object as for a store never read
    let out = without_secrets(dir.path(), &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["quarantine"], 0, "{v}");
    assert_eq!(v["outbox"], 0, "{v}");
    assert!(
        v["cursors"]["permit"].is_null() && v["last_runs"] == serde_json::json!([]),
        "{v}"
    );
    assert!(!dir.path().join("store").exists());
    let out = without_secrets(dir.path(), &["quarantine", "list", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    for args in [
        &["sync", "--today", "2026-11-27"][..],
        &["quarantine", "retry"][..],
        &["reconcile", "--today", "2026-11-27"][..],
    ] {
        let out = without_secrets(dir.path(), args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("DUALPUB_SOURCE_TOKEN"), "{args:?}: {err}");
    }
}

/// `dualpub ARGS` in `dir` with `dualpub.toml` holding `config` and the secrets set (a configuration error stops
/// every command before it talks to anything).
fn run(dir: &Path, config: &str, args: &[&str]) -> Output {
    dualpub_in(dir, config, args, &SECRETS)
}

#[test]
fn a_secret_written_where_its_variable_name_belongs_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let text = BASE.replace("\"DUALPUB_SOURCE_TOKEN\"", "\"s3cr3t-p@ss!\"");
    let out = run(dir.path(), &text, &["sync", "--dry-run"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("[source] token_env"), "{err}");
    assert!(
        err.contains("not the name of an environment variable"),
        "{err}"
    );
    assert!(!err.contains("s3cr3t"), "{err}");
    // a variable's name is still named when it is not set
    let text = BASE.replace("\"DUALPUB_SOURCE_TOKEN\"", "\"AGENCY_FEED_TOKEN\"");
    let err = stderr(&run(dir.path(), &text, &["sync", "--dry-run"]));
    assert!(err.contains("AGENCY_FEED_TOKEN is not set"), "{err}");
}

/// A secret written where its variable's name belongs was echoed whenever it happened to look like a name (hex,
/// base64, a JWT's head: letters and digits). Only a conventional name (capitals, digits, `_`) is named now.
#[test]
fn a_secret_that_looks_like_a_variable_name_is_not_echoed_either() {
    let dir = tempfile::tempdir().unwrap();
    let hex = "f86d081884c7d659a2feaa0c55ad015";
    let text = BASE.replace("\"DUALPUB_PLATFORM_SECRET\"", &format!("\"{hex}\""));
    let err = stderr(&run(dir.path(), &text, &["sync", "--dry-run"]));
    assert!(err.contains("[platform] secret_env"), "{err}");
    assert!(err.contains("not set or empty"), "{err}");
    assert!(!err.contains(hex), "{err}");
    let jwt = "eyJhbGciOiJIUzI1NiJ9";
    let out = dualpub_in(
        dir.path(),
        BASE,
        &["sync", "--dry-run"],
        &[
            ("DUALPUB_SOURCE_TOKEN", "t"),
            ("DUALPUB_PLATFORM_SECRET_ENV", jwt),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("DUALPUB_PLATFORM_SECRET_ENV"), "{err}");
    assert!(!err.contains(jwt), "{err}");
}

/// A token an HTTP header cannot carry (a token file of two lines, a control character) failed every request before
/// it left, and the run retried that as an outage until its budget was spent: exit 3 after five minutes, the store
/// locked meanwhile. It is a configuration error naming the key, at once.
#[test]
fn a_token_no_header_can_carry_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source.token");
    std::fs::write(&file, "srcTOKEN123\nsecondline\n").unwrap();
    let text = BASE.replace(
        "token_env = \"DUALPUB_SOURCE_TOKEN\"",
        &format!("token_file = \"{}\"", file.display()),
    );
    let out = run(dir.path(), &text, &["sync"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("[source] token_file"), "{err}");
    assert!(err.contains("line break"), "{err}");
    assert!(!err.contains("secondline"), "{err}");
    let out = dualpub_in(
        dir.path(),
        BASE,
        &["sync"],
        &[
            ("DUALPUB_SOURCE_TOKEN", "abc\u{1}def"),
            ("DUALPUB_PLATFORM_SECRET", "s"),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("[source] token_env"), "{err}");
    assert!(err.contains("control character (U+0001)"), "{err}");
}

#[test]
fn an_agency_name_no_record_could_carry_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let long = "局".repeat(201);
    for (name, says) in [
        ("河南省应急\\u0007管理厅", "U+0007"),
        (long.as_str(), "201 characters"),
    ] {
        let text = BASE.replace("河南省应急管理厅", name);
        let out = run(dir.path(), &text, &["sync", "--dry-run"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("[agency] name") && err.contains(says), "{err}");
    }
}
