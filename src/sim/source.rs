//! The enforcement-system (执法系统) simulator: an HTTP server speaking the change feed of DESIGN §2.
//!
//! Built the mini-redis way: [`serve`] takes a bound listener and returns a [`SourceSimHandle`]; tests,
//! `dualpub demo` and `dualpub sim source` ([`run`]) all use it.
//!
//! The served set of a kind is the generated records ([`super::gen`], computed on the fly, never stored), minus
//! generated ids that admin calls replaced or deleted, plus an overlay of admin-written records, merged in
//! `(updated_at, id)` order. Memory grows with admin calls only, never with `--records`.
//!
//! Endpoints:
//! - `GET /api/v1/permits/changes`, `GET /api/v1/penalties/changes` with `since` (RFC 3339, compared as an
//!   instant to the millisecond), `after_id` (absent = `""`, so every record at `since` itself is included) and
//!   `limit` (default 100, clamped to 1000). `Authorization: Bearer <token>` required (401 otherwise); a bad
//!   `since` or `limit` is a 400 whose `{"error": …}` names the parameter.
//! - Admin endpoints need no token (they are the test harness's, not the connector's): `POST /admin/records`,
//!   `DELETE /admin/records/{id}`, `GET /admin/records/{id}`, `POST /admin/touch`, `GET /admin/stats`,
//!   `POST /admin/latency` (`{"ms": N}`: every change-feed answer waits N ms from then on).
//!
//! Late commits: a late generated record ([`super::gen::is_late`]) stays hidden while no response has reached
//! its successor. A page that would pass it is cut right after the successor — the snapshot a real read would
//! have seen — and from then on the record is visible with its own, slightly older `updated_at`. A cursor that
//! rewinds by a few minutes finds it; one that does not, misses it.

use super::gen::{self, GenConfig};
use super::{format_ts, parse_ts};
use crate::model::Kind;
use crate::source_schema::SourceRecord;
use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Default page size of the change feed.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size; larger `limit`s are clamped to it.
pub const MAX_LIMIT: usize = 1000;

/// What the simulator serves and the bearer token it wants.
#[derive(Debug, Clone)]
pub struct SourceSimConfig {
    pub gen: GenConfig,
    pub token: String,
}

impl Default for SourceSimConfig {
    fn default() -> Self {
        SourceSimConfig {
            gen: GenConfig::default(),
            token: "demo-token".to_string(),
        }
    }
}

/// A running simulator. Dropping it aborts the server; [`SourceSimHandle::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct SourceSimHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SourceSimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:8701`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, lets requests in flight finish (at most 5 s), and waits for the server.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for SourceSimHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts the simulator on `listener` and returns at once; the server runs on a spawned task.
pub async fn serve(
    listener: TcpListener,
    cfg: SourceSimConfig,
) -> std::io::Result<SourceSimHandle> {
    cfg.gen
        .validate()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        state: Mutex::new(SimState::default()),
        cfg,
        latency_ms: AtomicU64::new(0),
    });
    let app = router(shared);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "source simulator stopped");
        }
    });
    Ok(SourceSimHandle {
        addr,
        stop: Some(stop),
        task: Some(task),
    })
}

// ---------------------------------------------------------------------------------------------------------------
// State.

type Key = (i64, String);

struct Shared {
    cfg: SourceSimConfig,
    state: Mutex<SimState>,
    /// Added to every change-feed answer (`POST /admin/latency`): a slow enforcement system.
    latency_ms: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves consistent-enough state for a simulator; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct KindState {
    /// Admin-written records by feed position.
    overlay: BTreeMap<Key, SourceRecord>,
    /// Overlay id → its position.
    by_id: HashMap<String, Key>,
    /// Generated indices replaced by an overlay record or deleted.
    suppressed: HashSet<u64>,
    /// The greatest position any response of this kind has reached.
    high_water: Option<Key>,
}

#[derive(Default)]
struct SimState {
    permits: KindState,
    penalties: KindState,
    last_now: i64,
    requests: u64,
    items_served: u64,
    unauthorized: u64,
    deleted: u64,
}

impl SimState {
    fn kind(&mut self, kind: Kind) -> &mut KindState {
        match kind {
            Kind::Permit => &mut self.permits,
            Kind::Penalty => &mut self.penalties,
        }
    }

    /// Now in epoch millis: never before the end of the generated range, and strictly increasing, so a record
    /// stamped now always sorts after everything served before.
    fn now(&mut self) -> i64 {
        let wall = chrono::Utc::now().timestamp_millis();
        let now = wall.max(gen::END_MILLIS + 1_000).max(self.last_now + 1);
        self.last_now = now;
        now
    }
}

fn gen_key(cfg: &GenConfig, kind: Kind, i: u64) -> Key {
    (gen::updated_at_millis(cfg, kind, i), gen::id(kind, i))
}

/// The current record of `id`, overlay first, then generated (unless suppressed).
fn current(cfg: &GenConfig, ks: &KindState, kind: Kind, id: &str) -> Option<SourceRecord> {
    if let Some(key) = ks.by_id.get(id) {
        return ks.overlay.get(key).cloned();
    }
    match gen::generated_index(cfg, id) {
        Some((k, i)) if k == kind && !ks.suppressed.contains(&i) => Some(gen::record(cfg, kind, i)),
        _ => None,
    }
}

/// Inserts or replaces `rec` (whose `updated_at` is `millis`); true when it replaced a record.
fn upsert(
    cfg: &GenConfig,
    ks: &mut KindState,
    kind: Kind,
    millis: i64,
    mut rec: SourceRecord,
) -> bool {
    rec.kind = None;
    let mut replaced = false;
    if let Some(old) = ks.by_id.remove(&rec.id) {
        ks.overlay.remove(&old);
        replaced = true;
    }
    if let Some((k, i)) = gen::generated_index(cfg, &rec.id) {
        if k == kind && ks.suppressed.insert(i) {
            replaced = true;
        }
    }
    let key = (millis, rec.id.clone());
    ks.by_id.insert(rec.id.clone(), key.clone());
    ks.overlay.insert(key, rec);
    replaced
}

struct Page {
    items: Vec<SourceRecord>,
    has_more: bool,
}

/// One page of the feed after `since` (exclusive), merging generated and overlay records on the fly.
fn page(cfg: &GenConfig, ks: &mut KindState, kind: Kind, since: Option<Key>, limit: usize) -> Page {
    let n = cfg.count(kind);
    let (mut gi, lower) = match since {
        Some((ms, id)) => (
            gen::index_after(cfg, kind, ms, &id),
            Bound::Excluded((ms, id)),
        ),
        None => (0, Bound::Unbounded),
    };
    let mut overlay = ks.overlay.range((lower, Bound::Unbounded)).peekable();
    let visible_late = |i: u64| {
        ks.high_water
            .as_ref()
            .is_some_and(|hw| *hw >= gen_key(cfg, kind, i + 1))
    };
    let mut items = Vec::new();
    let mut last: Option<Key> = None;
    // Set when a hidden late record was passed: the page ends at its successor.
    let mut cut: Option<Key> = None;
    let mut reached_cut = false;
    let has_more = loop {
        while gi < n {
            if ks.suppressed.contains(&gi) {
                gi += 1;
            } else if gen::is_late(cfg, kind, gi) && !visible_late(gi) {
                if cut.is_none() {
                    cut = Some(gen_key(cfg, kind, gi + 1));
                }
                gi += 1;
            } else {
                break;
            }
        }
        let gen_next = (gi < n).then(|| gen_key(cfg, kind, gi));
        let from_overlay = match (&gen_next, overlay.peek()) {
            (None, None) => {
                reached_cut = true;
                break false;
            }
            (Some(g), Some((o, _))) => *o < g,
            (None, Some(_)) => true,
            (Some(_), None) => false,
        };
        let key = if from_overlay {
            overlay.peek().map(|(k, _)| (*k).clone())
        } else {
            gen_next
        }
        .expect("one side has a next record");
        if cut.as_ref().is_some_and(|c| key > *c) {
            reached_cut = true;
            break true;
        }
        if items.len() >= limit {
            break true;
        }
        if from_overlay {
            if let Some((_, rec)) = overlay.next() {
                items.push(rec.clone());
            }
        } else {
            items.push(gen::record(cfg, kind, gi));
            gi += 1;
        }
        last = Some(key);
    };
    drop(overlay);
    let reached = match (reached_cut, cut) {
        (true, Some(c)) => last.into_iter().chain([c]).max(),
        _ => last,
    };
    if let Some(r) = reached {
        if ks.high_water.as_ref() < Some(&r) {
            ks.high_water = Some(r);
        }
    }
    Page { items, has_more }
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP.

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/permits/changes", get(permit_changes))
        .route("/api/v1/penalties/changes", get(penalty_changes))
        .route("/admin/records", post(admin_insert))
        .route("/admin/records/{id}", get(admin_get).delete(admin_delete))
        .route("/admin/touch", post(admin_touch))
        .route("/admin/stats", get(admin_stats))
        .route("/admin/latency", post(admin_latency))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(shared)
}

fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut res = Response::new(Body::from(body));
            *res.status_mut() = status;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            res
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("serializing the response: {e}"),
        )
            .into_response(),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    json(status, &serde_json::json!({ "error": message }))
}

async fn permit_changes(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    s.delay().await;
    changes(&s, Kind::Permit, &headers, query)
}

async fn penalty_changes(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    s.delay().await;
    changes(&s, Kind::Penalty, &headers, query)
}

impl Shared {
    async fn delay(&self) {
        let ms = self.latency_ms.load(Ordering::Relaxed);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    match value.split_once(' ') {
        Some((scheme, given)) => scheme.eq_ignore_ascii_case("bearer") && given.trim() == token,
        None => false,
    }
}

fn changes(
    s: &Shared,
    kind: Kind,
    headers: &HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if !authorized(headers, &s.cfg.token) {
        s.lock().unauthorized += 1;
        let mut res = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        );
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return res;
    }
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("bad query string: {e}")),
    };
    let since = match q.get("since").map(String::as_str) {
        None | Some("") => None,
        // An unencoded `+` in the offset arrives as a space.
        Some(raw) => match parse_ts(raw).or_else(|| parse_ts(&raw.replace(' ', "+"))) {
            Some(ms) => Some((ms, q.get("after_id").cloned().unwrap_or_default())),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("parameter `since` is not an RFC 3339 timestamp with offset: `{raw}`"),
                )
            }
        },
    };
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") => DEFAULT_LIMIT,
        Some(raw) => match raw.parse::<u64>() {
            Ok(n) if n > 0 => n.min(MAX_LIMIT as u64) as usize,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("parameter `limit` must be a positive integer, got `{raw}`"),
                )
            }
        },
    };
    let page = {
        let mut st = s.lock();
        st.requests += 1;
        let page = page(&s.cfg.gen, st.kind(kind), kind, since, limit);
        st.items_served += page.items.len() as u64;
        page
    };
    #[derive(Serialize)]
    struct Body<'a> {
        items: &'a [SourceRecord],
        has_more: bool,
    }
    json(
        StatusCode::OK,
        &Body {
            items: &page.items,
            has_more: page.has_more,
        },
    )
}

fn kind_of(rec: &SourceRecord) -> Option<Kind> {
    rec.kind.or_else(|| {
        if rec.id.starts_with("XK-") {
            Some(Kind::Permit)
        } else if rec.id.starts_with("CF-") {
            Some(Kind::Penalty)
        } else {
            None
        }
    })
}

async fn admin_insert(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let records: Vec<SourceRecord> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body must be a JSON array of source records with \"kind\": {e}"),
            )
        }
    };
    // Check everything first, so a bad record changes nothing.
    let mut checked = Vec::with_capacity(records.len());
    for rec in records {
        let Some(kind) = kind_of(&rec) else {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("record `{}` has no \"kind\" (permit or penalty)", rec.id),
            );
        };
        if rec.id.trim().is_empty() {
            return error(StatusCode::BAD_REQUEST, "a record has an empty id");
        }
        let millis = match rec.updated_at.as_deref() {
            None | Some("") => None,
            Some(t) => match parse_ts(t) {
                Some(ms) => Some(ms),
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("record `{}`: updated_at `{t}` is not RFC 3339", rec.id),
                    )
                }
            },
        };
        checked.push((kind, millis, rec));
    }
    let (mut inserted, mut replaced) = (0u64, 0u64);
    let mut st = s.lock();
    for (kind, millis, mut rec) in checked {
        let ms = match millis {
            Some(ms) => ms,
            None => {
                let now = st.now();
                rec.updated_at = Some(format_ts(now));
                now
            }
        };
        if upsert(&s.cfg.gen, st.kind(kind), kind, ms, rec) {
            replaced += 1;
        } else {
            inserted += 1;
        }
    }
    json(
        StatusCode::OK,
        &serde_json::json!({ "inserted": inserted, "replaced": replaced }),
    )
}

async fn admin_get(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut st = s.lock();
    for kind in Kind::ALL {
        if let Some(mut rec) = current(&s.cfg.gen, st.kind(kind), kind, &id) {
            rec.kind = Some(kind);
            return json(StatusCode::OK, &rec);
        }
    }
    error(StatusCode::NOT_FOUND, &format!("no record `{id}`"))
}

async fn admin_delete(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let mut st = s.lock();
    let mut found = false;
    for kind in Kind::ALL {
        let ks = st.kind(kind);
        if let Some(key) = ks.by_id.remove(&id) {
            ks.overlay.remove(&key);
            found = true;
        }
        if let Some((k, i)) = gen::generated_index(&s.cfg.gen, &id) {
            if k == kind && ks.suppressed.insert(i) {
                found = true;
            }
        }
    }
    if !found {
        return error(StatusCode::NOT_FOUND, &format!("no record `{id}`"));
    }
    st.deleted += 1;
    json(StatusCode::OK, &serde_json::json!({ "deleted": id }))
}

#[derive(Deserialize)]
struct Touch {
    kind: Kind,
    ids: Vec<String>,
}

async fn admin_touch(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let touch: Touch = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "the body must be {{\"kind\": \"permit\"|\"penalty\", \"ids\": [...]}}: {e}"
                ),
            )
        }
    };
    let mut st = s.lock();
    let kind = touch.kind;
    let mut records = Vec::with_capacity(touch.ids.len());
    let mut unknown = Vec::new();
    for id in &touch.ids {
        match current(&s.cfg.gen, st.kind(kind), kind, id) {
            Some(rec) => records.push(rec),
            None => unknown.push(id.as_str()),
        }
    }
    if !unknown.is_empty() {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no {kind} records {}", unknown.join(", ")),
        );
    }
    for rec in &mut records {
        let now = st.now();
        let stamp = format_ts(now);
        rec.remarks = Some(format!("已更正（{stamp}）"));
        rec.updated_at = Some(stamp);
        upsert(&s.cfg.gen, st.kind(kind), kind, now, rec.clone());
        rec.kind = Some(kind);
    }
    json(StatusCode::OK, &serde_json::json!({ "records": records }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Latency {
    ms: u64,
}

/// Sets the delay of every change-feed answer from now on.
async fn admin_latency(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Latency>(&body) {
        Ok(l) => {
            s.latency_ms.store(l.ms, Ordering::Relaxed);
            json(StatusCode::OK, &serde_json::json!({ "ms": l.ms }))
        }
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            &format!("the body must be {{\"ms\": milliseconds}}: {e}"),
        ),
    }
}

async fn admin_stats(State(s): State<Arc<Shared>>) -> Response {
    let st = s.lock();
    let overlay = st.permits.overlay.len() + st.penalties.overlay.len();
    let suppressed = st.permits.suppressed.len() + st.penalties.suppressed.len();
    json(
        StatusCode::OK,
        &serde_json::json!({
            "generated": s.cfg.gen.records,
            "overlay": overlay,
            "suppressed": suppressed,
            "deleted": st.deleted,
            "requests": st.requests,
            "items_served": st.items_served,
            "unauthorized": st.unauthorized,
        }),
    )
}

// ---------------------------------------------------------------------------------------------------------------
// Command line.

/// `dualpub sim source` options (DESIGN §1).
#[derive(clap::Args, Debug, Clone)]
pub struct SourceArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8701")]
    pub listen: SocketAddr,
    /// Records to generate, permits and penalties together.
    #[arg(long, default_value_t = 1000)]
    pub records: u64,
    /// Seed of the generated records.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Share of records (0–1) with exactly one defect.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub invalid_rate: f64,
    /// Bearer token the feed requires.
    #[arg(long, default_value = "demo-token")]
    pub token: String,
    /// Consecutive records sharing one updated_at.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub tie_size: u32,
    /// Share of records (0–1) committed late, behind records already served.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub late_commit_rate: f64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a share between 0 and 1")),
    }
}

impl SourceArgs {
    /// The simulator configuration these options describe, checked.
    pub fn config(&self) -> anyhow::Result<SourceSimConfig> {
        let gen = GenConfig {
            records: self.records,
            seed: self.seed,
            invalid_rate: self.invalid_rate,
            tie_size: self.tie_size,
            late_commit_rate: self.late_commit_rate,
        };
        gen.validate()
            .context("checking the source simulator options")?;
        Ok(SourceSimConfig {
            gen,
            token: self.token.clone(),
        })
    }
}

/// `dualpub sim source`: serve until Ctrl-C.
/// Runs the simulator until Ctrl-C. Bad options and an address that cannot be bound are usage errors (exit 2);
/// anything later is exit 3.
pub async fn run(args: SourceArgs) -> Result<(), crate::exit::Failure> {
    use crate::exit::{Exit, Failure};
    let cfg = args.config().map_err(|e| Failure::new(Exit::Usage, e))?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the source simulator to {}", args.listen))
        .map_err(|e| Failure::new(Exit::Usage, e))?;
    let handle = serve(listener, cfg)
        .await
        .context("starting the source simulator")
        .map_err(|e| Failure::new(Exit::Aborted, e))?;
    let banner = format!(
        "dualpub sim source listening on {} ({} records, seed {})",
        handle.url(),
        args.records,
        args.seed
    );
    let waited = super::announce_until_ctrl_c(&banner).await;
    handle.shutdown().await;
    waited.map_err(|e| Failure::new(Exit::Aborted, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SourceArgs,
    }

    #[test]
    fn options_default_and_reject_bad_rates() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.args.listen.to_string(), "127.0.0.1:8701");
        assert_eq!(cli.args.token, "demo-token");
        assert_eq!(cli.args.config().unwrap().gen, GenConfig::default());
        assert!(Cli::try_parse_from(["x", "--invalid-rate", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["x", "--late-commit-rate", "-0.1"]).is_err());
        assert!(Cli::try_parse_from(["x", "--tie-size", "0"]).is_err());
        let ok = Cli::try_parse_from(["x", "--invalid-rate", "0.2", "--tie-size", "3"]).unwrap();
        assert_eq!(ok.args.config().unwrap().gen.tie_size, 3);
    }

    #[test]
    fn late_records_appear_only_after_their_successor_was_served() {
        let cfg = GenConfig {
            records: 400,
            late_commit_rate: 0.3,
            ..GenConfig::default()
        };
        let kind = Kind::Permit;
        let late = (0..cfg.count(kind))
            .find(|&i| gen::is_late(&cfg, kind, i))
            .unwrap();
        let mut ks = KindState::default();
        // From the start with a big limit: the page is cut right after the late record's successor.
        let p = page(&cfg, &mut ks, kind, None, 1000);
        assert!(p.has_more);
        let ids: Vec<&str> = p.items.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids.last().copied(), Some(gen::id(kind, late + 1).as_str()));
        assert!(!ids.contains(&gen::id(kind, late).as_str()));
        // Now it is visible to a reader that rewinds.
        let p = page(&cfg, &mut ks, kind, None, 1000);
        assert!(p.items.iter().any(|r| r.id == gen::id(kind, late)));
    }
}
