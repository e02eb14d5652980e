//! Test harness: both simulators in-process on 127.0.0.1:0, a throw-away store and config, and the real
//! `dualpub` binary driven through them (the `spawn_app` of zero-to-production).
#![allow(dead_code)]

use dualpub::mapping::{DisplayPolicy, Domain, Mapped, MappingContext, MappingSet};
use dualpub::model::Kind;
use dualpub::sim::gen::{self, GenConfig};
use dualpub::sim::platform::{self, Faults, PlatformSimConfig, PlatformSimHandle};
use dualpub::sim::source::{self, SourceSimConfig, SourceSimHandle};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

pub const TODAY: &str = "2026-11-27";

pub struct Env {
    pub source: SourceSimHandle,
    pub platform: PlatformSimHandle,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub gen: GenConfig,
    pub http: reqwest::Client,
}

pub fn agency_code() -> String {
    gen::agency().credit_code.unwrap()
}

pub fn mapping_context() -> MappingContext {
    MappingContext {
        agency_name: gen::agency().name,
        agency_credit_code: Some(agency_code()),
        display: DisplayPolicy::for_domain(Domain::WorkSafety, None),
        today: None,
    }
}

pub async fn spawn(gen_cfg: GenConfig, faults: Faults) -> Env {
    spawn_with(
        gen_cfg,
        PlatformSimConfig {
            faults,
            ..PlatformSimConfig::default()
        },
        "",
    )
    .await
}

/// Starts both simulators and writes a config; `extra` is appended to the config file.
pub async fn spawn_with(gen_cfg: GenConfig, pcfg: PlatformSimConfig, extra: &str) -> Env {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source = source::serve(
        l,
        SourceSimConfig {
            gen: gen_cfg.clone(),
            token: "test-token".into(),
        },
    )
    .await
    .unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let platform = platform::serve(l, pcfg).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("source.token"), "test-token\n").unwrap();
    std::fs::write(dir.path().join("platform.secret"), "demo-secret\n").unwrap();
    let config = dir.path().join("dualpub.toml");
    std::fs::write(
        &config,
        format!(
            "[agency]\nname = \"{}\"\ncredit_code = \"{}\"\ndomain = \"安全生产\"\n\n[source]\nurl = \"{}\"\ntoken_file = \"{}\"\n\n\
             [platform]\nurl = \"{}\"\napp_key = \"demo-app\"\nsecret_file = \"{}\"\nreceiver = \"HNCREDIT\"\n\
             batch_size = 200\nconcurrency = 4\nretry_budget_secs = 120\nmax_backoff_secs = 1\ntimeout_secs = 10\n\n\
             [store]\npath = \"{}\"\n{extra}",
            gen::agency().name.unwrap(),
            agency_code(),
            source.url(),
            dir.path().join("source.token").display(),
            platform.url(),
            dir.path().join("platform.secret").display(),
            dir.path().join("store").display(),
        ),
    )
    .unwrap();
    Env {
        source,
        platform,
        dir,
        config,
        gen: gen_cfg,
        http: reqwest::Client::new(),
    }
}

impl Env {
    pub fn store_path(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_dualpub"));
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("DUALPUB_CONFIG")
            .env_remove("DUALPUB_LOG")
            // every test is a rehearsal: it acts as of TODAY, whatever the date ([`Env::dualpub_live`] does not)
            .env("DUALPUB_ALLOW_OTHER_TODAY", "1");
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Runs the real binary to completion (off the async threads, so the simulators keep serving).
    pub async fn dualpub(&self, args: &[&str]) -> Output {
        self.dualpub_with(args, &[]).await
    }

    /// [`Env::dualpub`] as an operator runs it: `--today` is taken as a question, not a rehearsal.
    pub async fn dualpub_live(&self, args: &[&str]) -> Output {
        let mut c = self.command(args);
        c.env_remove("DUALPUB_ALLOW_OTHER_TODAY");
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }

    /// [`Env::dualpub`] with environment variables added (e.g. configuration overrides).
    pub async fn dualpub_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in vars {
            c.env(k, v);
        }
        tokio::task::spawn_blocking(move || c.output().unwrap())
            .await
            .unwrap()
    }

    /// `sync --json --today TODAY`: the exit code and the parsed summary.
    pub async fn sync(&self, extra: &[&str]) -> (i32, serde_json::Value, String) {
        let mut args = vec!["sync", "--json", "--today", TODAY];
        args.extend_from_slice(extra);
        let out = self.dualpub(&args).await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let summary = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code().unwrap_or(-1), summary, stderr)
    }

    /// The platform's stored records: key → (digest, status, fields).
    pub async fn platform_records(
        &self,
    ) -> BTreeMap<String, (String, String, serde_json::Value, u64)> {
        let body = self
            .http
            .get(format!("{}/admin/records", self.platform.url()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        body.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["key"].as_str().unwrap().to_string(),
                    (
                        v["digest"].as_str().unwrap().to_string(),
                        v["status"].as_str().unwrap().to_string(),
                        v["fields"].clone(),
                        v["versions"].as_u64().unwrap_or(0),
                    ),
                )
            })
            .collect()
    }

    /// `reconcile --today TODAY --format json EXTRA…`: the process output and the parsed report (`null` if none).
    pub async fn reconcile_json(&self, today: &str, extra: &[&str]) -> (Output, serde_json::Value) {
        self.reconcile_json_with(today, extra, &[]).await
    }

    /// [`Env::reconcile_json`] with environment variables set (a proxy's URL in place of a simulator's, say).
    pub async fn reconcile_json_with(
        &self,
        today: &str,
        extra: &[&str],
        vars: &[(&str, &str)],
    ) -> (Output, serde_json::Value) {
        let mut args = vec!["reconcile", "--today", today, "--format", "json"];
        args.extend_from_slice(extra);
        let out = self.dualpub_with(&args, vars).await;
        let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, report)
    }

    /// `quarantine retry` reading the enforcement system at `source` (a proxy in front of the simulator, say): the
    /// process output and its stderr as text.
    pub async fn retry_reading(&self, source: &str) -> (Output, String) {
        let out = self
            .dualpub_with(&["quarantine", "retry"], &[("DUALPUB_SOURCE_URL", source)])
            .await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (out, err)
    }

    /// `sync --json --today TODAY` with environment variables set (e.g. `DUALPUB_SOURCE_PAGE_SIZE`): as
    /// [`Env::sync`].
    pub async fn sync_with(&self, vars: &[(&str, &str)]) -> (i32, serde_json::Value, String) {
        let out = self
            .dualpub_with(&["sync", "--json", "--today", TODAY], vars)
            .await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let summary = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code().unwrap_or(-1), summary, stderr)
    }

    /// A simulator's JSON answer to `GET url`.
    pub async fn get_json(&self, url: String) -> serde_json::Value {
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The source's first page of permit changes, `limit` long, as the feed serves it (to serve again changed).
    pub async fn permits_page(&self, limit: usize) -> serde_json::Value {
        self.http
            .get(format!(
                "{}/api/v1/permits/changes?limit={limit}",
                self.source.url()
            ))
            .bearer_auth("test-token")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The platform simulator's counts (`GET /admin/stats`).
    pub async fn platform_stats(&self) -> serde_json::Value {
        self.get_json(format!("{}/admin/stats", self.platform.url()))
            .await
    }

    /// The source simulator's counts (`GET /admin/stats`: requests, items_served, …).
    pub async fn source_stats(&self) -> serde_json::Value {
        self.get_json(format!("{}/admin/stats", self.source.url()))
            .await
    }

    /// One source record as the source simulator holds it (`GET /admin/records/{id}`).
    pub async fn source_record(&self, id: &str) -> serde_json::Value {
        self.get_json(format!("{}/admin/records/{id}", self.source.url()))
            .await
    }

    /// Inserts or replaces one source record, then waits 5 ms, so the next change is stamped later.
    pub async fn source_insert_one(&self, record: serde_json::Value) {
        self.source_insert(serde_json::json!([record])).await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    /// Deletes a source record (`DELETE /admin/records/{id}`).
    pub async fn source_delete(&self, id: &str) {
        let r = self
            .http
            .delete(format!("{}/admin/records/{id}", self.source.url()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    pub async fn admin_post(&self, url: String, body: serde_json::Value) -> serde_json::Value {
        let r = self.http.post(url).json(&body).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.json().await.unwrap_or(serde_json::Value::Null)
    }

    pub async fn source_insert(&self, records: serde_json::Value) {
        self.admin_post(format!("{}/admin/records", self.source.url()), records)
            .await;
    }
}

/// The generated records that fail validation: kind, source id, the intended finding code.
pub type Invalid = Vec<(Kind, String, &'static str)>;

/// What the platform must hold for the generated source set: key → digest of the public records.
pub fn expected_public(
    gen_cfg: &GenConfig,
    today: chrono::NaiveDate,
) -> (BTreeMap<String, String>, Invalid) {
    let mappings = MappingSet::builtin();
    let ctx = mapping_context();
    let mut public = BTreeMap::new();
    let mut invalid = Vec::new();
    for kind in Kind::ALL {
        for i in 0..gen_cfg.count(kind) {
            let rec = gen::record(gen_cfg, kind, i);
            let m: Mapped = mappings.get(kind).map(&ctx, &rec);
            if !m.is_valid() {
                let code = gen::defect(gen_cfg, kind, i)
                    .map(|d| d.code())
                    .unwrap_or("?");
                invalid.push((kind, rec.id.clone(), code));
                continue;
            }
            if kind == Kind::Penalty {
                let withdrawn = matches!(rec.status.as_deref(), Some("revoked") | Some("changed"));
                let until = m
                    .record
                    .get("CF_GSJZQ")
                    .and_then(dualpub::validate::parse_date);
                if withdrawn || until.is_some_and(|d| d < today) {
                    continue;
                }
            }
            public.insert(m.key.unwrap().to_string(), m.record.digest().to_hex());
        }
    }
    (public, invalid)
}

pub fn today() -> chrono::NaiveDate {
    dualpub::validate::parse_date(TODAY).unwrap()
}

/// Public records on the platform: key → digest.
pub fn public_of(
    records: &BTreeMap<String, (String, String, serde_json::Value, u64)>,
) -> BTreeMap<String, String> {
    records
        .iter()
        .filter(|(_, v)| v.1 == "public")
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect()
}

/// Opens the store a run left. A store this test process opened and dropped just before may still be locked for a
/// moment (sled's background threads let go of its file after the drop returns: seen once as a failed open), so a
/// lock is waited out for up to 5 s; any other error fails at once.
pub fn read_store(path: &Path) -> dualpub::store::Store {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match dualpub::store::Store::open(path) {
            Err(dualpub::store::StoreError::Locked { .. }) if std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => return r.expect("the store opens after the run ended"),
        }
    }
}

/// How a [`platform_proxy`] rewrites an answer: from the path asked, the status and the body of the platform's
/// answer, the status and body passed on.
pub type PlatformRewrite =
    std::sync::Arc<dyn Fn(&str, u16, Vec<u8>) -> (u16, Vec<u8>) + Send + Sync>;

/// A loopback proxy in front of the platform simulator that passes every call on (`X-Token` and the body along)
/// and the answer back as `rewrite` makes it: a platform, or a gateway before it, that answers what the simulator
/// never does.
pub async fn platform_proxy(platform: String, rewrite: PlatformRewrite) -> String {
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, Uri};
    use axum::response::IntoResponse;
    type Shared = (String, PlatformRewrite, reqwest::Client);
    async fn pass(
        State((platform, rewrite, http)): State<Shared>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> axum::response::Response {
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
        let mut req = http
            .request(method, format!("{platform}{path_and_query}"))
            .body(body);
        for name in ["x-token", "content-type"] {
            if let Some(v) = headers.get(name).and_then(|v| v.to_str().ok()) {
                req = req.header(name, v);
            }
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = res.bytes().await.unwrap().to_vec();
        let (status, body) = rewrite(uri.path(), status, body);
        let mut out = (
            axum::http::StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/xml; charset=utf-8")],
            body,
        )
            .into_response();
        if !retry_after.is_empty() {
            out.headers_mut()
                .insert("retry-after", retry_after.parse().unwrap());
        }
        out
    }
    let app =
        axum::Router::new()
            .fallback(pass)
            .with_state((platform, rewrite, reqwest::Client::new()));
    serve_local(app).await
}

/// A [`PlatformRewrite`] that passes everything but the 200 answers to `POST /api/exchange`, whose receipts
/// `edit` changes.
pub fn receipt_rewrite(
    edit: impl Fn(&mut dualpub::xml::Receipt) + Send + Sync + 'static,
) -> PlatformRewrite {
    std::sync::Arc::new(move |path: &str, status: u16, body: Vec<u8>| {
        if path != "/api/exchange" || status != 200 {
            return (status, body);
        }
        let mut receipt = dualpub::xml::read_receipt(&body).unwrap();
        edit(&mut receipt);
        let mut out = Vec::new();
        dualpub::xml::write_receipt(&receipt, &mut out);
        (status, out)
    })
}

/// Serves `app` on a loopback port of its own, for a fake or a proxy a test puts in front of a simulator; its URL.
pub async fn serve_local(app: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

/// A [`feed_text_proxy`] whose answers to lookups (a few records asked for at one position, as a retry or an
/// offer looks a held version up) are empty pages that say the feed has more: a feed that cannot tell. Its URL.
pub async fn hollow_lookups(env: &Env) -> String {
    feed_text_proxy(
        env.source.url(),
        std::sync::Arc::new(|query: &str, text: String| {
            if query.contains("limit=16") {
                r#"{"items":[],"has_more":true}"#.to_string()
            } else {
                text
            }
        }),
    )
    .await
}

/// How a [`feed_text_proxy`] rewrites a page: from the query it was asked with and the page's text.
pub type Rewrite = std::sync::Arc<dyn Fn(&str, String) -> String + Send + Sync>;

/// A loopback proxy in front of the source simulator that passes each change-feed page on with its text
/// rewritten by `rewrite`.
pub async fn feed_text_proxy(source: String, rewrite: Rewrite) -> String {
    use axum::extract::{Path, RawQuery, State};
    use axum::http::HeaderMap;
    use axum::response::IntoResponse;
    type Shared = (String, Rewrite, reqwest::Client);
    async fn changes(
        State((source, rewrite, http)): State<Shared>,
        Path(kind): Path<String>,
        RawQuery(query): RawQuery,
        headers: HeaderMap,
    ) -> axum::response::Response {
        let query = query.unwrap_or_default();
        let url = format!("{source}/api/v1/{kind}/changes?{query}");
        let mut req = http.get(url);
        if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
            req = req.header("authorization", auth);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let body = rewrite(&query, res.text().await.unwrap_or_default());
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            body,
        )
            .into_response()
    }
    let app = axum::Router::new()
        .route("/api/v1/{kind}/changes", axum::routing::get(changes))
        .with_state((source, rewrite, reqwest::Client::new()));
    serve_local(app).await
}

/// A path segment percent-encoded (a record key in an admin URL: Chinese document numbers, `:`).
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
