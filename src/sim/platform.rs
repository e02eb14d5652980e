//! The credit-platform (信用平台) simulator: an HTTP + XML server speaking the exchange protocol of DESIGN §3,
//! validating like a real platform and failing on purpose like a real network.
//!
//! Built the mini-redis way, like [`super::source`]: [`serve`] takes a bound listener and returns a
//! [`PlatformSimHandle`]; tests, `dualpub demo` and `dualpub sim platform` ([`run`]) all use it.
//!
//! Endpoints (`/api/*` are the connector's, `/admin/*` the test harness's and need no token):
//! - `POST /api/token`: `<TokenRequest>` signed with HMAC-SHA256(secret, appKey + timestamp) → `<TokenResponse>`.
//! - `POST /api/exchange` (`X-Token`): an `<ExchangeMessage>` → `<ExchangeReceipt>`, idempotent per flow id.
//! - `GET /api/records` (`X-Token`): `<RecordPage>` of the stored records of an item in key order.
//! - `GET /admin/stats`, `GET /admin/records` (JSON lines), `POST /admin/faults` (partial JSON [`Faults`]),
//!   `DELETE /admin/records/{key}`, `POST /admin/records/alter`, `POST /admin/records/published_at`.
//!
//! Storage is in memory and compact, because the simulator must hold a million records: per item, per sender, a
//! `BTreeMap` from document number to [`Stored`], whose fields are one byte string (field-name id, then the value
//! inline or, for the short values many records repeat, an id in a per-field dictionary) rather than a vector of
//! strings. Validation, digests and encoding happen outside the store's lock;
//! only the per-record bookkeeping of a committed message happens under it, in one critical section with the
//! flow table, so a flow is applied exactly once even when sent twice at the same time.
//!
//! Faults come from a deterministic sequence (splitmix64 over the seed and a request counter), so a run with the
//! same seed and the same request order fails the same way. They apply to `/api/*` only. A connection reset is
//! real: the connection's socket is switched to fail every read and write and closed with `SO_LINGER` 0, so
//! the client sees a reset instead of an HTTP answer.

use super::{format_ts, parse_ts};
use crate::findings::{Finding, FindingCode};
use crate::mapping::MappingSet;
use crate::model::{FieldName, Kind, PlatformRecord, RecordBuilder};
use crate::validate;
use crate::xml::{self, ErrorDoc, MessageOp, PageRecord, PublicStatus, Receipt, RecordPage};
use crate::xml::{RecordResult, ResultStatus, TokenResponse};
use anyhow::Context as _;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::connect_info::Connected;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Largest exchange message body (413 beyond).
pub const MAX_MESSAGE_BYTES: usize = 10 * 1024 * 1024;
/// Most records in one exchange message (413 beyond).
pub const MAX_MESSAGE_RECORDS: usize = 500;
/// Default page size of `GET /api/records`.
pub const DEFAULT_PAGE_SIZE: u64 = 100;
/// Largest page size of `GET /api/records`; larger sizes are clamped to it.
pub const MAX_PAGE_SIZE: u64 = 5000;
/// How far a token request's timestamp may be from the platform's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// Largest token request body.
const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// A body this much larger than its limit is not drained any further: the connection is closed instead.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// Rejection code of a record whose key is not `{item}:{sender}:{document number}`.
pub const CODE_KEY_MISMATCH: &str = "key_mismatch";
/// Rejection code of a withdraw of a key the platform does not hold.
pub const CODE_UNKNOWN_KEY: &str = "unknown_key";
/// Rejection code of a party the strict profile refuses.
pub const CODE_PARTY_REFUSED: &str = "party_refused";

/// The failures the simulator injects into `/api/*` calls. Rates are shares between 0 and 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Seed of the fault sequence.
    pub seed: u64,
    /// Share of calls answered 500 or 503 before anything is done.
    pub error_rate: f64,
    /// Share of calls answered 429 with `Retry-After` before anything is done.
    pub throttle_rate: f64,
    /// The `Retry-After` of a 429, in seconds (`retry_after` in a `POST /admin/faults` body, as the option).
    pub retry_after_secs: u64,
    /// Added to every `/api` call before it is answered.
    pub latency_ms: u64,
    /// Share of calls whose connection is reset without an answer, before anything is done.
    pub reset_rate: f64,
    /// Share of exchange calls committed but answered with a 500 or a reset (the answer is "lost").
    pub lost_ack_rate: f64,
    /// Lifetime of a token, in seconds (`token_ttl` in a `POST /admin/faults` body, as the option).
    pub token_ttl_secs: u64,
    /// Largest exchange message body taken (413 beyond): [`MAX_MESSAGE_BYTES`] unless a test plays a platform with
    /// a smaller limit.
    #[serde(default = "max_message_bytes")]
    pub max_message_bytes: usize,
}

fn max_message_bytes() -> usize {
    MAX_MESSAGE_BYTES
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            seed: 0,
            error_rate: 0.0,
            throttle_rate: 0.0,
            retry_after_secs: 1,
            latency_ms: 0,
            reset_rate: 0.0,
            lost_ack_rate: 0.0,
            token_ttl_secs: 3600,
            max_message_bytes: MAX_MESSAGE_BYTES,
        }
    }
}

impl Faults {
    /// Checks that every rate is a share between 0 and 1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, r) in [
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
            ("reset_rate", self.reset_rate),
            ("lost_ack_rate", self.lost_ack_rate),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("{name} must be a share between 0 and 1, got {r}"));
            }
        }
        if self.max_message_bytes < 1024 {
            return Err(format!(
                "max_message_bytes must be at least 1024 (no message would pass), got {}",
                self.max_message_bytes
            ));
        }
        Ok(())
    }
}

/// A stricter platform than the standard, so the connector's rejection path can be exercised with valid records.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StrictProfile {
    /// A length limit (in characters) for every text field, on top of the mapping's own limits.
    pub max_len: Option<usize>,
    /// Party names (XK_XDR_MC / CF_XDR_MC) refused with [`CODE_PARTY_REFUSED`].
    pub refused_parties: Vec<String>,
}

/// What the simulator accepts and how it misbehaves.
#[derive(Debug, Clone)]
pub struct PlatformSimConfig {
    pub app_key: String,
    pub secret: String,
    pub faults: Faults,
    pub strict: Option<StrictProfile>,
    /// The rules records are validated by.
    pub mappings: MappingSet,
    /// This platform's own code: a message addressed to another `receiver` is refused whole (400 `BAD_ENVELOPE`),
    /// as a real platform refuses mail for another. `None` takes any.
    pub receiver: Option<String>,
}

impl Default for PlatformSimConfig {
    fn default() -> Self {
        PlatformSimConfig {
            app_key: "demo-app".to_string(),
            secret: "demo-secret".to_string(),
            faults: Faults::default(),
            strict: None,
            mappings: MappingSet::builtin(),
            receiver: None,
        }
    }
}

/// Counts of injected faults, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStats {
    /// 500 and 503 answers given instead of doing the work.
    pub errors: u64,
    /// 429 answers.
    pub throttles: u64,
    /// Connections reset instead of doing the work.
    pub resets: u64,
    /// Exchange messages committed whose answer was replaced by a 500 or a reset.
    pub lost_acks: u64,
}

/// A snapshot of the simulator's counts (`GET /admin/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Stored records, public and withdrawn.
    pub records: u64,
    pub public: u64,
    pub withdrawn: u64,
    /// Distinct flows applied.
    pub flows: u64,
    /// Messages whose flow had been applied before (answered with the first receipt, nothing changed).
    pub replayed_flows: u64,
    /// Upsert records received in applied flows, whatever their outcome.
    pub upserts: u64,
    pub accepted: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// Withdraw records received in applied flows, whatever their outcome.
    pub withdrawals: u64,
    pub tokens_issued: u64,
    /// Calls refused with 401.
    pub unauthorized: u64,
    pub faults: FaultStats,
    /// All injected faults together.
    pub faults_injected: u64,
}

/// Lowercase hex HMAC-SHA256(secret, app_key + timestamp): the `sign` of a token request (the client's own).
pub use crate::platform_client::sign;

/// A running simulator. Dropping it aborts the server; [`PlatformSimHandle::shutdown`] stops it gracefully.
pub struct PlatformSimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PlatformSimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformSimHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl PlatformSimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, e.g. `http://127.0.0.1:8702`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The counts right now.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Replaces the faults (what `POST /admin/faults` does with a whole object).
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
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

impl Drop for PlatformSimHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts the simulator on `listener` and returns at once; the server runs on a spawned task.
pub async fn serve(listener: TcpListener, cfg: PlatformSimConfig) -> io::Result<PlatformSimHandle> {
    cfg.faults
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared {
        app_key: cfg.app_key,
        secret: cfg.secret,
        strict: cfg.strict,
        mappings: cfg.mappings,
        receiver: cfg.receiver,
        faults: Mutex::new(cfg.faults),
        calls: AtomicU64::new(0),
        names: RwLock::new(NameTable::default()),
        state: Mutex::new(Store::default()),
    });
    let app = router(shared.clone()).into_make_service_with_connect_info::<Conn>();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let result = axum::serve(ResettableListener(listener), app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "platform simulator stopped");
        }
    });
    Ok(PlatformSimHandle {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Connections that can be reset from a handler.

/// A TCP listener whose connections carry a kill switch a handler can throw.
struct ResettableListener(TcpListener);

impl Listener for ResettableListener {
    type Io = ResettableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    let _ = stream.set_nodelay(true);
                    let io = ResettableStream {
                        inner: stream,
                        kill: Arc::new(AtomicBool::new(false)),
                        lingered: false,
                    };
                    return (io, addr);
                }
                // Out of file descriptors and the like: wait instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "platform simulator: accepting a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// A TCP stream that fails every read and write once its kill switch is on, and then closes with a RST.
struct ResettableStream {
    inner: TcpStream,
    kill: Arc<AtomicBool>,
    lingered: bool,
}

impl ResettableStream {
    fn killed(&mut self) -> Option<io::Error> {
        if !self.kill.load(Ordering::Acquire) {
            return None;
        }
        if !self.lingered {
            // SO_LINGER 0: closing sends a RST, so the client sees a reset, not a clean end of stream.
            let _ = self.inner.set_zero_linger();
            self.lingered = true;
        }
        Some(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "simulated connection reset",
        ))
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.killed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The kill switch of the connection a request came on, handed to handlers as connect info.
#[derive(Clone)]
struct Conn {
    kill: Arc<AtomicBool>,
}

impl Conn {
    /// Resets the connection: nothing more is read or written on it, and it closes with a RST.
    fn reset(&self) -> Response {
        self.kill.store(true, Ordering::Release);
        // Never reaches the client: writing it fails.
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    }
}

impl Connected<IncomingStream<'_, ResettableListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, ResettableListener>) -> Self {
        Conn {
            kill: stream.io().kill.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// State.

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves consistent-enough state for a simulator; keep serving.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Shared {
    app_key: String,
    secret: String,
    strict: Option<StrictProfile>,
    receiver: Option<String>,
    mappings: MappingSet,
    faults: Mutex<Faults>,
    /// `/api` calls so far: the position in the fault sequence.
    calls: AtomicU64,
    names: RwLock<NameTable>,
    state: Mutex<Store>,
}

/// Values of at most this many bytes may be stored once in a field's dictionary instead of in every record.
const MAX_SHARED_VALUE: usize = 128;
/// Distinct values a field's dictionary holds at most; later new values of the field are stored inline.
const MAX_SHARED_VALUES: usize = 4096;

/// Field names by a small id, so a stored record spends two bytes per field name; and per field a dictionary of
/// its first distinct short values, so the values most records repeat (the agency, code-table values, dates) are
/// stored once. A field whose values are all different (names, document numbers) fills its dictionary once and
/// is stored inline from then on.
#[derive(Default)]
struct NameTable {
    names: Vec<FieldName>,
    ids: HashMap<FieldName, u16, FastHash>,
    /// Per name id: the shared values.
    dicts: Vec<Dict>,
}

#[derive(Default)]
struct Dict {
    values: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32, FastHash>,
}

/// A multiply-rotate hash (FxHash's) for the dictionaries: looked up for every field of every record, where
/// SipHash costs a quarter of the ingest. A dictionary holds at most [`MAX_SHARED_VALUES`] entries, so crafted
/// collisions can slow it only that far.
#[derive(Default, Clone, Copy)]
struct FastHash;

impl std::hash::BuildHasher for FastHash {
    type Hasher = FastHasher;
    fn build_hasher(&self) -> FastHasher {
        FastHasher(0)
    }
}

struct FastHasher(u64);

impl std::hash::Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// How one field of a record is stored: name id and, when the value is shared, its id in the name's dictionary.
type Slot = (u16, Option<u32>);

impl NameTable {
    /// The slot of a field without changing the table, or `None` when the table must learn something first.
    fn lookup(&self, name: &str, value: &str) -> Option<Slot> {
        let id = *self.ids.get(name)?;
        let dict = &self.dicts[id as usize];
        match dict.ids.get(value) {
            Some(v) => Some((id, Some(*v))),
            None if value.len() <= MAX_SHARED_VALUE && dict.values.len() < MAX_SHARED_VALUES => {
                None
            }
            None => Some((id, None)),
        }
    }

    fn intern(&mut self, name: &str, value: &str) -> Slot {
        let id = match self.ids.get(name) {
            Some(id) => *id,
            None => {
                let id = u16::try_from(self.names.len()).unwrap_or(u16::MAX);
                // 65,535 distinct field names cannot come from a mapping; stop learning rather than wrap.
                if id == u16::MAX {
                    return (id, None);
                }
                let name = FieldName::from(name);
                self.names.push(name.clone());
                self.ids.insert(name, id);
                self.dicts.push(Dict::default());
                id
            }
        };
        let dict = &mut self.dicts[id as usize];
        if let Some(v) = dict.ids.get(value) {
            return (id, Some(*v));
        }
        if value.len() <= MAX_SHARED_VALUE && dict.values.len() < MAX_SHARED_VALUES {
            let v = dict.values.len() as u32;
            dict.values.push(value.into());
            dict.ids.insert(value.into(), v);
            return (id, Some(v));
        }
        (id, None)
    }
}

fn push_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn read_varint(blob: &mut &[u8]) -> u64 {
    let (mut n, mut shift) = (0u64, 0);
    while let Some((&b, rest)) = blob.split_first() {
        *blob = rest;
        if shift < 64 {
            n |= u64::from(b & 0x7f) << shift;
        }
        shift += 7;
        if b & 0x80 == 0 {
            break;
        }
    }
    n
}

/// Encodes a record's fields, in the record's order, as `(name id: u16 LE, tag: LEB128, [value bytes])*` where
/// the tag is `value id << 1 | 1` for a shared value and `length << 1` for a value that follows inline.
fn encode(names: &RwLock<NameTable>, rec: &PlatformRecord) -> Box<[u8]> {
    let mut slots: Vec<Slot> = Vec::with_capacity(rec.len());
    {
        let table = names.read().unwrap_or_else(|e| e.into_inner());
        for (name, value) in rec.fields() {
            match table.lookup(name, value) {
                Some(slot) => slots.push(slot),
                None => break,
            }
        }
    }
    if slots.len() < rec.len() {
        let mut table = names.write().unwrap_or_else(|e| e.into_inner());
        for (name, value) in rec.fields().skip(slots.len()) {
            slots.push(table.intern(name, value));
        }
    }
    let len: usize = rec
        .fields()
        .zip(&slots)
        .map(|((_, v), (_, shared))| if shared.is_some() { 5 } else { v.len() + 5 })
        .sum();
    let mut out = Vec::with_capacity(len);
    for ((_, value), (id, shared)) in rec.fields().zip(slots) {
        out.extend_from_slice(&id.to_le_bytes());
        match shared {
            Some(v) => push_varint(&mut out, u64::from(v) << 1 | 1),
            None => {
                push_varint(&mut out, (value.len() as u64) << 1);
                out.extend_from_slice(value.as_bytes());
            }
        }
    }
    out.into_boxed_slice()
}

/// The inverse of [`encode`].
fn decode(table: &NameTable, mut blob: &[u8]) -> PlatformRecord {
    let mut rec = RecordBuilder::with_capacity(32, 2 * blob.len());
    while blob.len() >= 2 {
        let id = u16::from_le_bytes([blob[0], blob[1]]) as usize;
        blob = &blob[2..];
        let tag = read_varint(&mut blob);
        let value = if tag & 1 == 1 {
            table
                .dicts
                .get(id)
                .and_then(|d| d.values.get((tag >> 1) as usize))
                .map(|v| Cow::Borrowed(&**v))
        } else {
            let n = usize::try_from(tag >> 1)
                .unwrap_or(usize::MAX)
                .min(blob.len());
            let (value, rest) = blob.split_at(n);
            blob = rest;
            Some(String::from_utf8_lossy(value))
        };
        if let (Some(name), Some(value)) = (table.names.get(id), value) {
            rec.push(name, &value);
        }
    }
    rec.finish()
}

/// One stored record.
struct Stored {
    digest: [u8; 32],
    /// The digests of earlier versions, oldest first.
    history: Vec<[u8; 32]>,
    public: bool,
    /// First publication, epoch millis; kept by later versions, withdrawals and re-publications.
    published_at: i64,
    updated_at: i64,
    /// The fields, see [`encode`].
    fields: Box<[u8]>,
}

impl Stored {
    fn versions(&self) -> usize {
        self.history.len() + 1
    }
}

/// Records of one item: sender → document number → record. Iterating it is key order.
type ItemStore = BTreeMap<String, BTreeMap<Box<str>, Stored>>;

#[derive(Default)]
struct Store {
    permits: ItemStore,
    penalties: ItemStore,
    /// Receipt bytes by flow id.
    flows: HashMap<String, Bytes>,
    /// Token → expiry.
    tokens: HashMap<String, Instant>,
    stats: Stats,
    last_now: i64,
}

impl Store {
    fn item(&self, kind: Kind) -> &ItemStore {
        match kind {
            Kind::Permit => &self.permits,
            Kind::Penalty => &self.penalties,
        }
    }

    fn item_mut(&mut self, kind: Kind) -> &mut ItemStore {
        match kind {
            Kind::Permit => &mut self.permits,
            Kind::Penalty => &mut self.penalties,
        }
    }

    /// Now in epoch millis, strictly increasing.
    fn now(&mut self) -> i64 {
        let now = chrono::Utc::now().timestamp_millis().max(self.last_now + 1);
        self.last_now = now;
        now
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Stored> {
        let (kind, sender, doc) = split_key(key)?;
        self.item_mut(kind).get_mut(sender)?.get_mut(doc)
    }
}

/// `{item}:{sender}:{doc}` → its parts, or `None` when it is not of that form.
fn split_key(key: &str) -> Option<(Kind, &str, &str)> {
    let mut parts = key.splitn(3, ':');
    let kind = Kind::from_item(parts.next()?)?;
    Some((kind, parts.next()?, parts.next()?))
}

impl Shared {
    fn stats(&self) -> Stats {
        let st = lock(&self.state);
        let mut stats = st.stats.clone();
        let (mut public, mut withdrawn) = (0, 0);
        for kind in Kind::ALL {
            for docs in st.item(kind).values() {
                for s in docs.values() {
                    if s.public {
                        public += 1;
                    } else {
                        withdrawn += 1;
                    }
                }
            }
        }
        stats.public = public;
        stats.withdrawn = withdrawn;
        stats.records = public + withdrawn;
        stats.flows = st.flows.len() as u64;
        let f = &stats.faults;
        stats.faults_injected = f.errors + f.throttles + f.resets + f.lost_acks;
        stats
    }

    /// A number in [0, 1) for draw `slot` of call `call`: the same seed and call give the same number.
    fn draw(seed: u64, call: u64, slot: u64) -> f64 {
        let x = splitmix64(seed ^ splitmix64(call.wrapping_mul(8).wrapping_add(slot)));
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Latency, then the faults that strike before any work: an error, a throttle or a reset. Returns the call
    /// number (for later draws) or the answer that replaces the call's.
    async fn before_call(&self, conn: &Conn) -> Result<(u64, Faults), Box<Response>> {
        let faults = lock(&self.faults).clone();
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        let seed = faults.seed;
        if Self::draw(seed, call, 0) < faults.error_rate {
            lock(&self.state).stats.faults.errors += 1;
            return Err(Box::new(self.injected_error(seed, call)));
        }
        if Self::draw(seed, call, 1) < faults.throttle_rate {
            lock(&self.state).stats.faults.throttles += 1;
            let mut res = error(
                StatusCode::TOO_MANY_REQUESTS,
                "THROTTLED",
                "请求过于频繁，请稍后重试 (too many requests)",
            );
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(faults.retry_after_secs),
            );
            return Err(Box::new(res));
        }
        if Self::draw(seed, call, 2) < faults.reset_rate {
            lock(&self.state).stats.faults.resets += 1;
            return Err(Box::new(conn.reset()));
        }
        Ok((call, faults))
    }

    fn injected_error(&self, seed: u64, call: u64) -> Response {
        if Self::draw(seed, call, 3) < 0.5 {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "平台内部错误 (simulated internal error)",
            )
        } else {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "平台暂不可用 (simulated outage)",
            )
        }
    }

    /// `Ok` when the `X-Token` header names a live token; the 401 answer otherwise.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Box<Response>> {
        let token = headers
            .get("x-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let mut st = lock(&self.state);
        let why = match token {
            None | Some("") => "missing X-Token header; log in at POST /api/token",
            Some(t) => match st.tokens.get(t) {
                Some(expiry) if *expiry > Instant::now() => return Ok(()),
                Some(_) => "the token has expired; log in again at POST /api/token",
                None => "unknown token; log in at POST /api/token",
            },
        };
        st.stats.unauthorized += 1;
        Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            why,
        )))
    }

    /// Validates and encodes a message's records (no lock held), then applies them and stores the receipt in one
    /// critical section. Returns the receipt bytes.
    fn apply(&self, msg: xml::ExchangeMessage) -> Bytes {
        if let Some(first) = self.replayed(&msg.flow) {
            return first;
        }
        let kind = msg.kind;
        let key_prefix = format!("{}:{}:", kind.item(), msg.sender);
        let mut prepared = Vec::with_capacity(msg.records.len());
        let mut findings = Vec::new();
        for rec in msg.records {
            let op = match rec.op {
                MessageOp::Upsert(fields) => {
                    self.judge_upsert(kind, &key_prefix, &rec.key, &fields, &mut findings)
                }
                MessageOp::Withdraw => match rec.key.strip_prefix(&key_prefix) {
                    Some(doc) if !doc.is_empty() => Prep::Withdraw { doc: doc.into() },
                    _ => Prep::UnknownKey,
                },
            };
            prepared.push((rec.key, op));
        }

        let mut guard = lock(&self.state);
        let st = &mut *guard;
        if let Some(first) = st.flows.get(&msg.flow) {
            st.stats.replayed_flows += 1;
            return first.clone();
        }
        let now = st.now();
        let mut receipt = Receipt {
            flow: msg.flow.clone(),
            accepted: 0,
            unchanged: 0,
            rejected: 0,
            withdrawn: 0,
            results: Vec::with_capacity(prepared.len()),
        };
        let stats = &mut st.stats;
        let store = match kind {
            Kind::Permit => &mut st.permits,
            Kind::Penalty => &mut st.penalties,
        };
        if !store.contains_key(&msg.sender) {
            store.insert(msg.sender.clone(), BTreeMap::new());
        }
        let docs = store
            .get_mut(&msg.sender)
            .expect("inserted just above when absent");
        for (key, op) in prepared {
            let (status, code, message) = match op {
                Prep::Rejected { code, message } => {
                    stats.upserts += 1;
                    (ResultStatus::Rejected, code, message)
                }
                Prep::Upsert {
                    doc,
                    digest,
                    fields,
                } => {
                    stats.upserts += 1;
                    match docs.get_mut(&doc) {
                        Some(s) if s.public && s.digest == digest => ok(ResultStatus::Unchanged),
                        Some(s) => {
                            if s.digest != digest {
                                s.history.push(s.digest);
                                s.digest = digest;
                                s.fields = fields;
                            }
                            s.public = true;
                            s.updated_at = now;
                            ok(ResultStatus::Accepted)
                        }
                        None => {
                            docs.insert(
                                doc,
                                Stored {
                                    digest,
                                    history: Vec::new(),
                                    public: true,
                                    published_at: now,
                                    updated_at: now,
                                    fields,
                                },
                            );
                            ok(ResultStatus::Accepted)
                        }
                    }
                }
                Prep::Withdraw { doc } => {
                    stats.withdrawals += 1;
                    match docs.get_mut(&doc) {
                        Some(s) if s.public => {
                            s.public = false;
                            s.updated_at = now;
                            ok(ResultStatus::Withdrawn)
                        }
                        Some(_) => ok(ResultStatus::Unchanged),
                        None => unknown_key(),
                    }
                }
                Prep::UnknownKey => {
                    stats.withdrawals += 1;
                    unknown_key()
                }
            };
            match status {
                ResultStatus::Accepted => receipt.accepted += 1,
                ResultStatus::Unchanged => receipt.unchanged += 1,
                ResultStatus::Rejected => receipt.rejected += 1,
                ResultStatus::Withdrawn => receipt.withdrawn += 1,
            }
            receipt.results.push(RecordResult {
                key,
                status,
                code,
                message,
            });
        }
        if docs.is_empty() {
            store.remove(&msg.sender);
        }
        stats.accepted += u64::from(receipt.accepted);
        stats.unchanged += u64::from(receipt.unchanged);
        stats.rejected += u64::from(receipt.rejected);
        let mut out = Vec::with_capacity(128 + receipt.results.len() * 160);
        xml::write_receipt(&receipt, &mut out);
        let bytes = Bytes::from(out);
        st.flows.insert(msg.flow, bytes.clone());
        bytes
    }

    /// Judges an upsert: its key, the strict profile's refusals, the mapping's rules, the strict length limit.
    fn judge_upsert(
        &self,
        kind: Kind,
        key_prefix: &str,
        key: &str,
        fields: &PlatformRecord,
        findings: &mut Vec<Finding>,
    ) -> Prep {
        let mapping = self.mappings.get(kind);
        let mut why = Rejection::default();
        let doc = fields.get(&mapping.key_field).unwrap_or("").trim();
        if doc.is_empty() {
            why.add(
                CODE_KEY_MISMATCH,
                &mapping.key_field,
                "文书号为空，无法确定记录标识",
            );
        } else if key.strip_prefix(key_prefix) != Some(doc) {
            why.add(
                CODE_KEY_MISMATCH,
                &mapping.key_field,
                &format!("记录标识应为 {key_prefix}{doc}"),
            );
        }
        let party_field = match kind {
            Kind::Permit => "XK_XDR_MC",
            Kind::Penalty => "CF_XDR_MC",
        };
        let strict = self.strict.as_ref();
        if let (Some(strict), Some(party)) = (strict, fields.get(party_field)) {
            if strict
                .refused_parties
                .iter()
                .any(|p| p.trim() == party.trim())
            {
                why.add(
                    CODE_PARTY_REFUSED,
                    party_field,
                    &format!("行政相对人“{party}”被平台拒收，请与平台核实"),
                );
            }
        }
        findings.clear();
        validate::validate_record(mapping, fields, findings);
        for f in findings.iter() {
            why.add(f.code.as_str(), &f.field, &f.zh);
        }
        if let Some(max) = strict.and_then(|s| s.max_len) {
            for (name, value) in fields.fields() {
                let n = value.chars().count();
                if n > max {
                    why.add(
                        FindingCode::TooLong.as_str(),
                        name,
                        &format!("长度 {n} 字，超过平台上限 {max} 字，请精简"),
                    );
                }
            }
        }
        if let Some(rejected) = why.into_prep() {
            return rejected;
        }
        Prep::Upsert {
            doc: doc.into(),
            digest: fields.digest().0,
            fields: encode(&self.names, fields),
        }
    }

    /// The first receipt of a flow already applied (counted as a replay).
    fn replayed(&self, flow: &str) -> Option<Bytes> {
        let mut st = lock(&self.state);
        let first = st.flows.get(flow)?.clone();
        st.stats.replayed_flows += 1;
        Some(first)
    }
}

/// What a record of a message will do, decided before the store is locked.
enum Prep {
    Rejected {
        code: String,
        message: String,
    },
    Upsert {
        doc: Box<str>,
        digest: [u8; 32],
        fields: Box<[u8]>,
    },
    Withdraw {
        doc: Box<str>,
    },
    /// A withdraw of a key that is not of this message's item and sender.
    UnknownKey,
}

fn ok(status: ResultStatus) -> (ResultStatus, String, String) {
    (status, String::new(), String::new())
}

fn unknown_key() -> (ResultStatus, String, String) {
    (
        ResultStatus::Rejected,
        CODE_UNKNOWN_KEY.into(),
        "撤回的记录不存在".into(),
    )
}

/// Why a record is rejected: the first problem's code, and every problem's Chinese message.
#[derive(Default)]
struct Rejection {
    code: Option<String>,
    messages: Vec<String>,
}

impl Rejection {
    fn add(&mut self, code: &str, field: &str, zh: &str) {
        if self.code.is_none() {
            self.code = Some(code.to_string());
        }
        self.messages.push(format!("{field}：{zh}"));
    }

    fn into_prep(self) -> Option<Prep> {
        let code = self.code?;
        Some(Prep::Rejected {
            code,
            message: self.messages.join("；"),
        })
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP.

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/token", post(token))
        .route("/api/exchange", post(exchange))
        .route("/api/records", get(records))
        .route("/admin/stats", get(admin_stats))
        .route("/admin/faults", post(admin_faults))
        .route("/admin/records", get(admin_records))
        .route("/admin/records/alter", post(admin_alter))
        .route("/admin/records/published_at", post(admin_published_at))
        .route("/admin/records/{*key}", delete(admin_delete))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NOT_FOUND", "no such endpoint") })
        // Bodies are read by hand, with limits and 413s of their own.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

fn xml_response(status: StatusCode, body: impl Into<Body>) -> Response {
    let mut res = Response::new(body.into());
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/xml; charset=utf-8"),
    );
    res
}

/// An `<Error code message/>` answer.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut out = Vec::with_capacity(128 + message.len());
    xml::write_error_doc(
        &ErrorDoc {
            code: code.to_string(),
            message: message.to_string(),
        },
        &mut out,
    );
    xml_response(status, out)
}

fn json_response<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
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

fn json_error(status: StatusCode, message: &str) -> Response {
    json_response(status, &serde_json::json!({ "error": message }))
}

enum BodyError {
    TooLarge,
    Io(String),
}

/// Reads a request body of at most `limit` bytes. A larger body is still drained (up to a bound) so the client,
/// still sending, gets to read the 413 instead of a broken pipe.
async fn read_body(headers: &HeaderMap, mut body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut buf = Vec::with_capacity(declared.map_or(8192, |n| n.min(limit as u64) as usize));
    let mut seen = 0usize;
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| BodyError::Io(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= limit {
                buf.extend_from_slice(&data);
            } else if seen > limit + MAX_DRAIN_BYTES {
                return Err(BodyError::TooLarge);
            }
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(buf))
}

fn body_error(e: BodyError, limit: usize) -> Response {
    match e {
        BodyError::TooLarge => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TOO_LARGE",
            &format!("报文超过 {limit} 字节 (the body is larger than {limit} bytes)"),
        ),
        BodyError::Io(e) => error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            &format!("reading the request body: {e}"),
        ),
    }
}

/// Epoch seconds of a token request's timestamp: RFC 3339, or epoch seconds (13+ digits: milliseconds).
fn token_time(ts: &str) -> Option<i64> {
    let ts = ts.trim();
    if !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = ts.parse().ok()?;
        return Some(if ts.len() >= 13 { n / 1000 } else { n });
    }
    parse_ts(ts).map(|ms| ms.div_euclid(1000))
}

async fn token(
    State(s): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (call, faults) = match s.before_call(&conn).await {
        Ok(c) => c,
        Err(res) => return *res,
    };
    let bytes = match read_body(&headers, body, MAX_TOKEN_BYTES).await {
        Ok(b) => b,
        Err(e) => return body_error(e, MAX_TOKEN_BYTES),
    };
    let req = match xml::read_token_request(&bytes) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    let refuse = |why: &str| {
        lock(&s.state).stats.unauthorized += 1;
        error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", why)
    };
    if req.app_key != s.app_key {
        return refuse("unknown appKey");
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(s.secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(req.app_key.as_bytes());
    mac.update(req.timestamp.as_bytes());
    // Lowercase hex, as DESIGN §3 says: an upper-case sign was taken, so a client that sends one passed here and
    // failed against a platform that compares the text.
    let sign = req.sign.trim();
    let given = hex::decode(sign)
        .ok()
        .filter(|_| !sign.bytes().any(|b| b.is_ascii_uppercase()))
        .unwrap_or_default();
    if mac.verify_slice(&given).is_err() {
        return refuse("bad sign: expected lowercase hex HMAC-SHA256(secret, appKey + timestamp)");
    }
    let Some(at) = token_time(&req.timestamp) else {
        return refuse("timestamp is neither RFC 3339 nor epoch seconds");
    };
    let skew = (chrono::Utc::now().timestamp() - at).abs();
    if skew > MAX_CLOCK_SKEW_SECS {
        return refuse(&format!(
            "timestamp is {skew} s away from the platform's clock (at most {MAX_CLOCK_SKEW_SECS} s)"
        ));
    }
    let token = {
        let mut h = Sha256::new();
        h.update(faults.seed.to_le_bytes());
        h.update(call.to_le_bytes());
        h.update(s.secret.as_bytes());
        h.update(
            chrono::Utc::now()
                .timestamp_nanos_opt()
                .unwrap_or(0)
                .to_le_bytes(),
        );
        hex::encode(&h.finalize()[..16])
    };
    let now = Instant::now();
    {
        let mut st = lock(&s.state);
        if st.tokens.len() >= 1024 {
            st.tokens.retain(|_, expiry| *expiry > now);
        }
        st.tokens.insert(
            token.clone(),
            now + Duration::from_secs(faults.token_ttl_secs),
        );
        st.stats.tokens_issued += 1;
    }
    let mut out = Vec::with_capacity(256);
    xml::write_token_response(
        &TokenResponse {
            token,
            expires_in: faults.token_ttl_secs,
        },
        &mut out,
    );
    xml_response(StatusCode::OK, out)
}

async fn exchange(
    State(s): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (call, faults) = match s.before_call(&conn).await {
        Ok(c) => c,
        Err(res) => return *res,
    };
    // The body is read before anything is answered, so a large message's sender reads the answer, not a reset.
    let limit = faults.max_message_bytes;
    let bytes = read_body(&headers, body, limit).await;
    if let Err(res) = s.authorize(&headers) {
        return *res;
    }
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => return body_error(e, limit),
    };
    let msg = match xml::read_exchange_message(&bytes) {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.code(), &e.to_string()),
    };
    drop(bytes);
    if let Some(ours) = s.receiver.as_deref().filter(|r| *r != msg.receiver) {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_ENVELOPE",
            &format!(
                "接收方 {} 不是本平台 {ours} (receiver `{}` is not this platform's code `{ours}`)",
                msg.receiver, msg.receiver
            ),
        );
    }
    if msg.records.len() > MAX_MESSAGE_RECORDS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TOO_MANY_RECORDS",
            &format!(
                "报文含 {} 条记录，超过上限 {MAX_MESSAGE_RECORDS} 条 ({} records, at most {MAX_MESSAGE_RECORDS})",
                msg.records.len(),
                msg.records.len()
            ),
        );
    }
    let receipt = s.apply(msg);
    if Shared::draw(faults.seed, call, 4) < faults.lost_ack_rate {
        lock(&s.state).stats.faults.lost_acks += 1;
        return if Shared::draw(faults.seed, call, 5) < 0.5 {
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                "平台内部错误 (simulated internal error)",
            )
        } else {
            conn.reset()
        };
    }
    xml_response(StatusCode::OK, receipt)
}

async fn records(
    State(s): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    headers: HeaderMap,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    if let Err(res) = s.before_call(&conn).await {
        return *res;
    }
    if let Err(res) = s.authorize(&headers) {
        return *res;
    }
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "BAD_REQUEST", &m);
    let Query(q) = match query {
        Ok(q) => q,
        Err(e) => return bad(format!("bad query string: {e}")),
    };
    let kind = match q.get("item").map(String::as_str) {
        Some(item) => match Kind::from_item(item) {
            Some(k) => k,
            None => {
                return bad(format!(
                    "parameter `item` must be XZXK or XZCF, got `{item}`"
                ))
            }
        },
        None => return bad("parameter `item` (XZXK or XZCF) is required".into()),
    };
    let number = |name: &str, default: u64| -> Result<u64, String> {
        match q.get(name).map(String::as_str) {
            None | Some("") => Ok(default),
            Some(raw) => match raw.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!(
                    "parameter `{name}` must be a positive integer, got `{raw}`"
                )),
            },
        }
    };
    let page = match number("page", 1) {
        Ok(n) => n,
        Err(m) => return bad(m),
    };
    let size = match number("size", DEFAULT_PAGE_SIZE) {
        Ok(n) => n.min(MAX_PAGE_SIZE),
        Err(m) => return bad(m),
    };
    let with_fields = match q.get("fields").map(String::as_str) {
        None | Some("") | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(raw) => return bad(format!("parameter `fields` must be 0 or 1, got `{raw}`")),
    };
    let sender = q
        .get("sender")
        .map(String::as_str)
        .filter(|s| !s.is_empty());

    let st = lock(&s.state);
    let names = s.names.read().unwrap_or_else(|e| e.into_inner());
    let item = st.item(kind);
    let senders: Vec<(&String, &BTreeMap<Box<str>, Stored>)> = match sender {
        Some(sender) => item.get_key_value(sender).into_iter().collect(),
        None => item.iter().collect(),
    };
    let total: u64 = senders.iter().map(|(_, docs)| docs.len() as u64).sum();
    let skip = (page - 1).saturating_mul(size);
    let mut records = Vec::new();
    let all = senders
        .iter()
        .flat_map(|(sender, docs)| docs.iter().map(move |(doc, s)| (sender, doc, s)));
    for (sender, doc, stored) in all
        .skip(usize::try_from(skip).unwrap_or(usize::MAX))
        .take(size as usize)
    {
        records.push(PageRecord {
            key: format!("{}:{sender}:{doc}", kind.item()),
            digest: hex::encode(stored.digest),
            status: if stored.public {
                PublicStatus::Public
            } else {
                PublicStatus::Withdrawn
            },
            published_at: format_ts(stored.published_at),
            updated_at: format_ts(stored.updated_at),
            fields: with_fields.then(|| decode(&names, &stored.fields)),
        });
    }
    drop(names);
    drop(st);
    let mut out = Vec::with_capacity(256 + records.len() * if with_fields { 1200 } else { 250 });
    xml::write_record_page(
        &RecordPage {
            kind,
            page,
            size,
            total,
            records,
        },
        &mut out,
    );
    xml_response(StatusCode::OK, out)
}

async fn admin_stats(State(s): State<Arc<Shared>>) -> Response {
    json_response(StatusCode::OK, &s.stats())
}

async fn admin_faults(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let patch: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => return json_error(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("bad JSON: {e}")),
    };
    let mut faults = lock(&s.faults);
    let mut merged = match serde_json::to_value(&*faults) {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    if let (Some(m), serde_json::Value::Object(p)) = (merged.as_object_mut(), patch) {
        // The command line's names are accepted too (`--retry-after`, `--token-ttl`).
        m.extend(p.into_iter().map(|(k, v)| match k.as_str() {
            "retry_after" => ("retry_after_secs".to_string(), v),
            "token_ttl" => ("token_ttl_secs".to_string(), v),
            _ => (k, v),
        }));
    }
    let new: Faults = match serde_json::from_value(merged) {
        Ok(f) => f,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("bad faults: {e}")),
    };
    if let Err(e) = new.validate() {
        return json_error(StatusCode::BAD_REQUEST, &e);
    }
    *faults = new.clone();
    json_response(StatusCode::OK, &new)
}

/// One line of `GET /admin/records`.
#[derive(Serialize)]
struct RecordLine<'a> {
    key: String,
    digest: String,
    status: &'static str,
    published_at: String,
    updated_at: String,
    versions: usize,
    fields: BTreeMap<&'a str, &'a str>,
}

async fn admin_records(State(s): State<Arc<Shared>>) -> Response {
    let st = lock(&s.state);
    let names = s.names.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Vec::new();
    for kind in Kind::ALL {
        for (sender, docs) in st.item(kind) {
            for (doc, stored) in docs {
                let rec = decode(&names, &stored.fields);
                let line = RecordLine {
                    key: format!("{}:{sender}:{doc}", kind.item()),
                    digest: hex::encode(stored.digest),
                    status: if stored.public { "public" } else { "withdrawn" },
                    published_at: format_ts(stored.published_at),
                    updated_at: format_ts(stored.updated_at),
                    versions: stored.versions(),
                    fields: rec.fields().collect(),
                };
                if serde_json::to_writer(&mut out, &line).is_ok() {
                    out.push(b'\n');
                }
            }
        }
    }
    let mut res = Response::new(Body::from(out));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    res
}

async fn admin_delete(State(s): State<Arc<Shared>>, Path(key): Path<String>) -> Response {
    let mut st = lock(&s.state);
    let removed = split_key(&key).and_then(|(kind, sender, doc)| {
        let item = st.item_mut(kind);
        let docs = item.get_mut(sender)?;
        let removed = docs.remove(doc);
        if docs.is_empty() {
            item.remove(sender);
        }
        removed
    });
    match removed {
        Some(_) => json_response(StatusCode::OK, &serde_json::json!({ "deleted": key })),
        None => json_error(StatusCode::NOT_FOUND, &format!("no stored record `{key}`")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Alter {
    key: String,
    field: String,
    value: String,
}

async fn admin_alter(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let alter: Alter = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("the body must be {{\"key\", \"field\", \"value\"}}: {e}"),
            )
        }
    };
    let mut st = lock(&s.state);
    let Some(stored) = st.get_mut(&alter.key) else {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("no stored record `{}`", alter.key),
        );
    };
    let mut rec = decode(
        &s.names.read().unwrap_or_else(|e| e.into_inner()),
        &stored.fields,
    );
    rec.set(&alter.field, &alter.value);
    stored.digest = rec.digest().0;
    stored.fields = encode(&s.names, &rec);
    let digest = hex::encode(stored.digest);
    json_response(
        StatusCode::OK,
        &serde_json::json!({ "key": alter.key, "digest": digest }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishedAt {
    key: String,
    /// RFC 3339, or epoch milliseconds.
    published_at: serde_json::Value,
}

async fn admin_published_at(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let req: PublishedAt = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("the body must be {{\"key\", \"published_at\"}}: {e}"),
            )
        }
    };
    let millis = match &req.published_at {
        serde_json::Value::String(t) => parse_ts(t),
        serde_json::Value::Number(n) => n.as_i64(),
        _ => None,
    };
    let Some(millis) = millis else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "published_at must be an RFC 3339 timestamp or epoch milliseconds",
        );
    };
    let mut st = lock(&s.state);
    match st.get_mut(&req.key) {
        Some(stored) => {
            stored.published_at = millis;
            json_response(
                StatusCode::OK,
                &serde_json::json!({ "key": req.key, "published_at": format_ts(millis) }),
            )
        }
        None => json_error(
            StatusCode::NOT_FOUND,
            &format!("no stored record `{}`", req.key),
        ),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Command line.

/// `dualpub sim platform` options (DESIGN §1).
#[derive(clap::Args, Debug, Clone)]
pub struct PlatformArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8702")]
    pub listen: SocketAddr,
    /// The app key clients log in with.
    #[arg(long, default_value = "demo-app")]
    pub app_key: String,
    /// The secret token requests are signed with.
    #[arg(long, default_value = "demo-secret")]
    pub secret: String,
    /// Seed of the fault sequence (the same seed and calls fail the same way).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Share of calls (0–1) answered 500 or 503.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub error_rate: f64,
    /// Share of calls (0–1) answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub throttle_rate: f64,
    /// Retry-After of a 429, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 1)]
    pub retry_after: u64,
    /// Latency added to every call, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of calls (0–1) whose connection is reset without an answer.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub reset_rate: f64,
    /// Share of exchange calls (0–1) committed but answered with an error or a reset.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    pub lost_ack_rate: f64,
    /// Token lifetime, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub token_ttl: u64,
    /// Largest exchange message taken, in bytes (413 beyond): to rehearse a platform with a smaller limit.
    #[arg(long, value_name = "BYTES", default_value_t = MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Strict profile: a length limit (characters) for every field.
    #[arg(long, value_name = "N")]
    pub strict_max_len: Option<usize>,
    /// Strict profile: refuse records of this party (repeatable).
    #[arg(long = "refuse-party", value_name = "NAME")]
    pub refuse_party: Vec<String>,
    /// This platform's code: refuse messages addressed to another receiver (HTTP 400). Any, when not given.
    #[arg(long, value_name = "CODE")]
    pub receiver: Option<String>,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("`{s}` is not a share between 0 and 1")),
    }
}

impl PlatformArgs {
    /// The simulator configuration these options describe (built-in mappings).
    pub fn config(&self) -> PlatformSimConfig {
        let strict = (self.strict_max_len.is_some() || !self.refuse_party.is_empty()).then(|| {
            StrictProfile {
                max_len: self.strict_max_len,
                refused_parties: self.refuse_party.clone(),
            }
        });
        PlatformSimConfig {
            app_key: self.app_key.clone(),
            secret: self.secret.clone(),
            faults: Faults {
                seed: self.seed,
                error_rate: self.error_rate,
                throttle_rate: self.throttle_rate,
                retry_after_secs: self.retry_after,
                latency_ms: self.latency_ms,
                reset_rate: self.reset_rate,
                lost_ack_rate: self.lost_ack_rate,
                token_ttl_secs: self.token_ttl,
                max_message_bytes: self.max_message_bytes,
            },
            strict,
            mappings: MappingSet::builtin(),
            receiver: self.receiver.clone(),
        }
    }
}

/// `dualpub sim platform`: serve until Ctrl-C.
/// Runs the simulator until Ctrl-C. Bad options and an address that cannot be bound are usage errors (exit 2);
/// anything later is exit 3.
pub async fn run(args: PlatformArgs) -> Result<(), crate::exit::Failure> {
    use crate::exit::{Exit, Failure};
    let cfg = args.config();
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the platform simulator to {}", args.listen))
        .map_err(|e| Failure::new(Exit::Usage, e))?;
    let handle = serve(listener, cfg)
        .await
        .context("starting the platform simulator")
        .map_err(|e| Failure::new(Exit::Aborted, e))?;
    let banner = format!("dualpub sim platform listening on {}", handle.url());
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
        args: PlatformArgs,
    }

    #[test]
    fn options_default_and_reject_bad_rates() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.args.listen.to_string(), "127.0.0.1:8702");
        let cfg = cli.args.config();
        assert_eq!(cfg.app_key, "demo-app");
        assert_eq!(cfg.secret, "demo-secret");
        assert_eq!(cfg.faults, Faults::default());
        assert!(cfg.strict.is_none());
        for opt in [
            "--error-rate",
            "--throttle-rate",
            "--reset-rate",
            "--lost-ack-rate",
        ] {
            assert!(Cli::try_parse_from(["x", opt, "1.5"]).is_err(), "{opt}");
            assert!(Cli::try_parse_from(["x", opt, "-0.1"]).is_err(), "{opt}");
        }
        let cli = Cli::try_parse_from([
            "x",
            "--refuse-party",
            "甲",
            "--refuse-party",
            "乙",
            "--strict-max-len",
            "10",
            "--error-rate",
            "0.25",
        ])
        .unwrap();
        let cfg = cli.args.config();
        assert_eq!(cfg.faults.error_rate, 0.25);
        assert_eq!(
            cfg.strict,
            Some(StrictProfile {
                max_len: Some(10),
                refused_parties: vec!["甲".into(), "乙".into()],
            })
        );
    }

    #[test]
    fn encoded_records_decode_to_the_same_fields() {
        let names = RwLock::new(NameTable::default());
        let long = "长".repeat(200);
        let rec = PlatformRecord::from_fields([
            (FieldName::from("A"), "1".to_string()),
            (FieldName::from("B_LONG"), long.clone()),
            (FieldName::from("C"), "値<&>".to_string()),
        ]);
        let blob = encode(&names, &rec);
        // Stored again: the short values are shared, only the long one is inline.
        let again = encode(&names, &rec);
        assert_eq!(blob, again);
        assert!(blob.len() < long.len() + 20, "{}", blob.len());
        let table = names.read().unwrap();
        assert_eq!(decode(&table, &blob), rec);
        assert_eq!(decode(&table, &blob).digest(), rec.digest());
        drop(table);
        // A field with more distinct values than a dictionary holds is stored inline past that.
        for i in 0..MAX_SHARED_VALUES + 10 {
            let r = PlatformRecord::from_fields([(FieldName::from("N"), format!("值{i}"))]);
            let blob = encode(&names, &r);
            assert_eq!(decode(&names.read().unwrap(), &blob), r);
        }
    }

    #[test]
    fn fault_draws_are_deterministic_and_spread() {
        let a: Vec<f64> = (0..1000).map(|c| Shared::draw(7, c, 0)).collect();
        let b: Vec<f64> = (0..1000).map(|c| Shared::draw(7, c, 0)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|x| (0.0..1.0).contains(x)));
        let below = a.iter().filter(|x| **x < 0.3).count();
        assert!((200..400).contains(&below), "{below}");
        assert_ne!(Shared::draw(7, 1, 0), Shared::draw(8, 1, 0));
    }

    #[test]
    fn token_timestamps_accept_rfc3339_and_epoch_seconds() {
        assert_eq!(token_time("1700000000"), Some(1_700_000_000));
        assert_eq!(token_time("1700000000123"), Some(1_700_000_000));
        assert_eq!(token_time("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(token_time("yesterday"), None);
    }

    #[test]
    fn sign_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        assert_eq!(
            sign("Jefe", "what do ya want ", "for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
