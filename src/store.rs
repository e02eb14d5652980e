//! The sled store: the only module that knows the key layout. Everything the connector remembers between runs
//! lives here, so a run killed at any instant resumes from exactly what was made durable.
//!
//! Schema (version 5), one tree per kind of thing, named for its key; `0xff` separates composite keys (it never
//! occurs in UTF-8); integers are big-endian so keys sort:
//!
//! | tree                | key                              | value                                        |
//! |---------------------|----------------------------------|----------------------------------------------|
//! | `meta`              | `schema`                         | u32 BE schema version                        |
//! | `cursor`            | kind (`permit`/`penalty`)        | JSON [`Cursor`]: `(updated_at, id)` read up to |
//! | `ledger_buckets`    | bucket of record key             | bucket: record key ending → binary [`LedgerEntry`] (`encode_ledger`): what the platform holds |
//! | `by_source_buckets` | bucket of kind 0xff source id    | bucket: source id ending → record key the source record maps to now |
//! |                     |                                  | (none for a record never sent whose key the ledger does not know) |
//! | `outbox`            | u64 BE sequence [+ split path]   | JSON [`OutboxBatch`], written before sending  |
//! | `quarantine`        | kind 0xff source id              | JSON [`QuarantineEntry`]                      |
//! | `quarantine_due`    | kind 0xff source id              | empty: an entry held back only for a decision date after its day (`date_out_of_range`), or given up on for want of an answer (`NO_RESULT`) |
//! | `quarantine_waiting`| kind 0xff source id              | record key an entry waits for (`key_reused`)  |
//! | `expiry_buckets`    | bucket of `YYYYMMDD` 0xff record key | bucket: record key ending → empty: public penalties by CF_GSJZQ |
//! | `runs`              | u64 BE sequence                  | JSON run summary                              |
//! | `released`          | kind 0xff record key             | empty: a key a record moved away from, until the run has offered it to the records quarantined for it |
//!
//! The ledger and the two indexes are packed into buckets: sled keeps ~35 bytes of memory per key for as long as
//! the store is open (its page table: an entry and a fragment list for every 8–16 keys), so one key per record
//! in three trees made a sync's memory grow with the store (1M records: +55 MiB just to open it). An index
//! bucket (`bucket_cut`) is the key without its last two characters (three when it ends in a digit and a
//! symbol, as `…〔2026〕984号` does); a ledger bucket (`ledger_cut`) lacks one character (two). Source ids and
//! document numbers end in sequence numbers, so about a hundred (index) or ten (ledger) consecutive records
//! share a bucket; keys that do not (random ids) get buckets of one entry, as before. A bucket value is its
//! entries sorted by name (the rest of the key), each as u32 BE length + name, u32 BE length + value. Reading
//! the ledger bucket by bucket gives key order except where keys of different lengths meet; reconcile copes.
//!
//! Version 1 stored ledger values as JSON; version 2 writes them in a compact binary form that starts with a
//! tag byte (JSON always starts with `{`), and still reads JSON values. Version 3 packs the ledger and the
//! indexes: a version 1 or 2 store is upgraded when it is opened (the old `ledger`, `by_source` and `expiry`
//! trees are moved into buckets a chunk at a time, then dropped; continued where it stopped if interrupted), and
//! an older binary then refuses it as newer.
//!
//! Version 4 adds the quarantine's two indexes, so that a cron run finds the entries it looks at every time
//! (decision dates come due, document numbers freed) without reading the whole quarantine: with 200,000 records
//! quarantined that read took 2 s and 400 MiB a run. A version 3 store gets them built when it is opened
//! (`index_quarantine`: one pass over the quarantine, done again from the start if interrupted).
//!
//! Related writes happen in one sled transaction: a page's outbox batches, quarantine changes and the cursor
//! move together; a receipt's ledger updates, quarantine changes and the outbox removal move together.

use crate::findings::Finding;
use crate::model::Kind;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// Version 5 (2026-11-30) may hold ledger values with the earlier versions the platform acknowledged (`LEDGER_V3`),
/// which a dualpub of version 4 cannot read: the version tells it so ("written by a newer dualpub") instead of a
/// ledger entry found damaged. The layout is 4's; a version-4 store only has its number raised.
pub const SCHEMA_VERSION: u32 = 5;
/// The version whose layout `migrate_indexes` produces (ledger and indexes in buckets).
const BUCKETS_SCHEMA: u32 = 3;
/// The version from which the quarantine has its indexes (`index_quarantine`).
const QUARANTINE_INDEX_SCHEMA: u32 = 4;
const SEP: u8 = 0xff;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store {path} is in use by another dualpub run (it holds the lock); wait for it to finish, or check for a stuck process")]
    Locked { path: String },
    #[error("the store {path} is damaged: {detail}. Move it aside and run `dualpub sync` to rebuild it from the source (the platform keeps what was pushed; nothing is pushed twice), then `dualpub reconcile --repair` to withdraw what was revoked or expired meanwhile (a new store does not know it was published)")]
    Damaged { path: String, detail: String },
    #[error("the store {path} was written by a newer dualpub (schema {found}, this one knows {SCHEMA_VERSION}); use the newer binary")]
    NewerVersion { path: String, found: u32 },
    #[error("store I/O error at {path}: {detail}. If the disk is fine, the store may be damaged: move it aside and run `dualpub sync` to rebuild it from the source, then `dualpub reconcile --repair`")]
    Io { path: String, detail: String },
    #[error("cannot use {path} as the store: {detail}; check [store] path, and that dualpub may create and write files there")]
    Unusable { path: String, detail: String },
    #[error("[store] path {path} is a directory that holds files that are not a dualpub store's (`{found}`), so dualpub leaves it as it is: the store needs a directory of its own (it holds full ID numbers, and dualpub keeps its directory at mode 0700). Set [store] path to a directory that does not exist yet (dualpub creates it) or to an empty one; if this is the store and someone put those files in it, move them out")]
    NotAStore { path: String, found: String },
}

/// Where a kind's change feed has been read up to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cursor {
    pub since: String,
    pub after_id: String,
}

/// What the platform holds for a key, as far as the connector knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlatformState {
    /// Sent, no receipt yet.
    Pending,
    Public,
    Withdrawn,
    Rejected,
}

/// Facts about a record that reports need without asking the source (masked: no full ID numbers).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordMeta {
    pub doc_no: String,
    pub party_name: String,
    pub party_id_masked: String,
    pub decided_on: Option<String>,
    pub display_until: Option<String>,
}

/// The ledger entry of one record key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub kind: Kind,
    pub source_id: String,
    /// `updated_at` of the source version the platform's state last followed: the version it acknowledged (an
    /// upsert), or the later one it was withdrawn for (a revocation, a renumbering). Reconcile's repair does not
    /// act on a copy of the record older than this (`reconcile::engine::older_copy`).
    pub source_updated_at: String,
    /// Digest of the content the platform last acknowledged (accepted or unchanged).
    pub digest: Option<String>,
    /// Digest of content the platform rejected, so the same content is not sent again until it changes; for a
    /// withdrawal it rejected (or never answered), `withdrawal ` and the `updated_at` of the version it was sent for.
    pub rejected_digest: Option<String>,
    pub state: PlatformState,
    /// When the platform first acknowledged the record (RFC 3339).
    pub first_published: Option<String>,
    /// When the version the platform's state follows (`source_updated_at`) was read, its message's `created`: the
    /// connector's clock then (RFC 3339), set by the first receipt that moved the state to it; not moved by rejected or unanswered attempts, nor by the same version acknowledged again. (Until
    /// 2026-11-29, late: the receipt's time, which trusted a future-stamped version acknowledged after its stamp.)
    pub last_pushed: Option<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub meta: RecordMeta,
    /// The versions the platform acknowledged before the one `digest` is, latest first, at most
    /// [`EARLIER_VERSIONS`]: what an older copy of the record (a lagging replica, a restored backup) serves, as
    /// opposed to a late edit, which serves content never acknowledged ([`LedgerEntry::holds_later_version_of`]).
    /// `None`: not known, in an entry written before 2026-11-30 (ledger values `LEDGER_V2` and JSON) that no
    /// acknowledgement of new content has rewritten since: its copies are judged by their stamps alone, as before,
    /// so that a lagging copy of a version acknowledged before the upgrade is not taken for a late edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub earlier: Option<Vec<AckedVersion>>,
}

/// A version of a record the platform acknowledged before the one its ledger entry follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckedVersion {
    /// Digest of its mapped content.
    pub digest: String,
    /// The `updated_at` the ledger followed while this was the acknowledged content.
    pub source_updated_at: String,
}

/// How many versions acknowledged before the current one a ledger entry keeps ([`LedgerEntry::earlier`]).
pub const EARLIER_VERSIONS: usize = 3;

impl LedgerEntry {
    /// Whether a copy of source record `id` stamped `served_at` is an older copy of a version the platform's state
    /// (public or withdrawn) follows, so that it must not be applied over it: what sync asks of every copy it reads.
    ///
    /// `digest`: the copy's mapped digest, for a valid copy. Such a copy is older when it is stamped before the
    /// followed version ([`LedgerEntry::follows_later_than`]) and serves content the platform acknowledged (the
    /// current digest or one of [`LedgerEntry::earlier`]), or when it is exactly a version acknowledged before
    /// (content and stamp): what a lagging replica or a restored backup serves. A valid copy stamped earlier with
    /// content never acknowledged is a late edit (a transaction that began before the followed version was saved
    /// and committed after it): the record's latest version, sent like any change. (Until 2026-11-30 every copy
    /// stamped earlier was taken for an older one, and such an edit was never published.)
    ///
    /// `None`: a copy that is invalid or that the source schema cannot read as it is. It has no digest the
    /// platform could have acknowledged to compare, so the stamp alone decides, as before: it must not put its
    /// findings over a later version, nor take down (revoked, on a minor) what the platform holds of one.
    pub fn holds_later_version_of(&self, id: &str, served_at: &str, digest: Option<&str>) -> bool {
        self.source_id == id
            && matches!(self.state, PlatformState::Public | PlatformState::Withdrawn)
            && self.follows_later_than_copy(served_at, digest)
    }

    /// [`LedgerEntry::holds_later_version_of`] without asking whose entry this is nor in what state: whether a copy
    /// stamped `served_at` with content `digest` (`None`: invalid or unreadable) is older than the version this
    /// entry follows.
    pub fn follows_later_than_copy(&self, served_at: &str, digest: Option<&str>) -> bool {
        let (Some(digest), Some(_)) = (digest, &self.earlier) else {
            // No content to compare, or the versions acknowledged before are not known (an entry written before
            // 2026-11-30): the stamps alone decide.
            return self.follows_later_than(served_at);
        };
        (self.follows_later_than(served_at) && self.acknowledged_content(digest))
            || self.was_acknowledged_before(digest, served_at)
    }

    /// [`LedgerEntry::earlier`], none when not known.
    fn earlier(&self) -> &[AckedVersion] {
        self.earlier.as_deref().unwrap_or_default()
    }

    /// Whether the platform acknowledged content `digest` for this key: the current version's, or an earlier one's.
    pub fn acknowledged_content(&self, digest: &str) -> bool {
        self.digest.as_deref() == Some(digest) || self.earlier().iter().any(|v| v.digest == digest)
    }

    /// Whether content `digest` stamped `served_at` is exactly a version acknowledged before the current one (a
    /// replica serving it again after the ledger followed a late edit stamped earlier).
    pub fn was_acknowledged_before(&self, digest: &str, served_at: &str) -> bool {
        let instant = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
        self.digest.as_deref() != Some(digest)
            && self.earlier().iter().any(|v| {
                v.digest == digest
                    && match (instant(&v.source_updated_at), instant(served_at)) {
                        (Some(a), Some(b)) => a == b,
                        _ => v.source_updated_at == served_at,
                    }
            })
    }

    /// Records that the platform acknowledged content `digest` for version `updated_at`: the content it replaces
    /// (with the version the entry followed then) goes to [`LedgerEntry::earlier`].
    pub fn acknowledge_content(&mut self, digest: Option<String>, updated_at: &str) {
        let earlier = self.earlier.get_or_insert_with(Vec::new);
        if let Some(old) = self.digest.take().filter(|d| Some(d) != digest.as_ref()) {
            earlier.retain(|v| v.digest != old);
            earlier.insert(
                0,
                AckedVersion {
                    digest: old,
                    source_updated_at: self.source_updated_at.clone(),
                },
            );
        }
        if let Some(d) = &digest {
            earlier.retain(|v| &v.digest != d);
        }
        earlier.truncate(EARLIER_VERSIONS);
        self.digest = digest;
        self.source_updated_at = updated_at.to_string();
    }

    /// Whether a copy of this entry's source record stamped `served_at` is older than the version the platform's
    /// state follows (`source_updated_at`), as far as that can be trusted: only when that version was not stamped in
    /// the future when it was read (`last_pushed`, the connector's clock then). A future-stamped version says
    /// nothing of what came after it: an edit stamped correctly later in real time carries an earlier `updated_at`.
    /// Unreadable times: not older.
    pub fn follows_later_than(&self, served_at: &str) -> bool {
        let instant = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
        let (Some(served), Some(followed), Some(pushed)) = (
            instant(served_at),
            instant(&self.source_updated_at),
            self.last_pushed.as_deref().and_then(instant),
        ) else {
            return false;
        };
        served < followed && followed <= pushed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Withdraw,
}

/// One record of an outbox batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub key: String,
    pub op: Op,
    pub digest: Option<String>,
    pub source_id: String,
    pub source_updated_at: String,
    pub meta: RecordMeta,
    /// The source record's JSON text (upserts only, in memory only), so a rejected record can be quarantined with it and
    /// retried. Not persisted: it would double what every batch writes; a batch resent after a crash quarantines
    /// a rejection without it (the record is retried when the source changes it).
    #[serde(skip)]
    pub source: Option<Box<str>>,
    /// The key's ledger entry as the engine read it when it built the batch, when no batch in flight held the key
    /// then (so nothing can have changed it before this batch's receipt); `None`: read it when the receipt comes.
    /// In memory only.
    #[serde(skip)]
    pub ledger: Option<Option<LedgerEntry>>,
}

impl OutboxItem {
    /// A withdrawal of `key`, for the source record `source_id` at `source_updated_at`.
    pub fn withdraw(
        key: String,
        source_id: String,
        source_updated_at: String,
        meta: RecordMeta,
    ) -> OutboxItem {
        OutboxItem {
            key,
            op: Op::Withdraw,
            digest: None,
            source_id,
            source_updated_at,
            meta,
            source: None,
            ledger: None,
        }
    }
}

/// A message written to the store before it is sent; a restarted run resends it with the same flow id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxBatch {
    pub flow: String,
    pub kind: Kind,
    /// When its records were read from the feed (the page's request, a look-up's, or where `reconcile --repair`
    /// began reading), not when the message was made, which may be long after (a page read ahead of an outage, a
    /// repair's pushes); kept by the pieces it is split into and the records a receipt left unanswered (see
    /// `QuarantineEntry::read_at`). A withdrawal of what the ledger holds: when it was made.
    pub created: String,
    /// The exact ExchangeMessage bytes (UTF-8 XML); stored raw after the JSON of the rest (see `encode_batch`).
    /// Shared, so sending it (and sending it again) copies nothing.
    #[serde(skip)]
    pub body: bytes::Bytes,
    pub items: Vec<OutboxItem>,
    /// How many receipts in a row gave its records no usable result (a batch made of the records a receipt left
    /// out), counted on across runs; 0 for a batch not yet answered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unanswered: u32,
    /// Whether one of those receipts answered another record of its message (the platform answers, only not
    /// for these records), or the batch holds records offered again after they were given up on for want of an
    /// answer: either way the records are given up on after three such receipts, not nine.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub others_answered: bool,
    /// A piece of a batch the platform refused as malformed (HTTP 400) after it had taken a message with the same
    /// envelope (sender, receiver, item): refused again, it is split on down to the record refused alone, in a later
    /// run too (a run killed in the middle of that would otherwise wait for new proof).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub envelope_proven: bool,
    /// A half of a batch the platform refused as malformed before it was seen taking that envelope: split once to
    /// tell a record's fault (the other half is taken) from the envelope's (both are refused), not again unproven.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub split_unproven: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An outbox value: u32 BE length of the batch's JSON (without the body), that JSON, then the body bytes — so
/// the large XML body is written as it is instead of being escaped into JSON.
fn encode_batch(b: &OutboxBatch) -> Vec<u8> {
    let meta = json(b);
    let mut v = Vec::with_capacity(4 + meta.len() + b.body.len());
    v.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    v.extend_from_slice(&meta);
    v.extend_from_slice(&b.body);
    v
}

fn decode_batch(v: &[u8]) -> Result<OutboxBatch, String> {
    let len = v
        .get(..4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or("too short")? as usize;
    let meta = v.get(4..4 + len).ok_or("truncated")?;
    let mut b: OutboxBatch = serde_json::from_slice(meta).map_err(|e| e.to_string())?;
    let body = &v[4 + len..];
    std::str::from_utf8(body).map_err(|e| e.to_string())?;
    b.body = bytes::Bytes::copy_from_slice(body);
    Ok(b)
}

/// How long a flush may take before the store is reported as damaged ([`Store::flush`]).
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The file in a store's directory that marks it as found damaged (see [`Store::open`]).
const DAMAGE_NOTE: &str = "DAMAGED.txt";

/// The file in a store's directory that holds the key of the newest run recorded in the store once it was made
/// durable ([`Store::flush`]), outside sled's log: a store that opens without that run lost writes sled had made
/// durable (see [`Store::open`]).
const LAST_RUN_MARK: &str = "LAST_RUN";

/// The run key [`LAST_RUN_MARK`] in `dir` holds; `None` when there is none or it cannot be read (nothing to check).
fn last_run_mark(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(LAST_RUN_MARK))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Runs `f` on its own thread and waits up to `timeout` for it: `None` if it has not finished by then (it goes on
/// in the background). Runs `f` here, unwatched, if no thread can be started.
fn watched<T: Send + 'static>(
    timeout: std::time::Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let f = std::sync::Arc::new(std::sync::Mutex::new(Some(f)));
    let job = f.clone();
    let spawned = std::thread::Builder::new()
        .name("store flush".into())
        .spawn(move || {
            let f = job.lock().ok().and_then(|mut f| f.take());
            if let Some(f) = f {
                let _ = tx.send(f());
            }
        });
    if spawned.is_err() {
        let f = f.lock().ok().and_then(|mut f| f.take())?;
        return Some(f());
    }
    rx.recv_timeout(timeout).ok()
}

/// Whether sled's log file at `db` holds anything but zeros (sled lays out a new log's first segment as zeros).
/// Reads only up to the first non-zero byte.
fn log_has_data(db: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(db) else {
        return false;
    };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) if buf[..n].iter().any(|&b| b != 0) => return true,
            Ok(_) => {}
        }
    }
}

/// The tags that start a binary ledger value (a JSON value starts with `{`): version 3 adds the versions
/// acknowledged before the current one ([`LedgerEntry::earlier`]); an entry that does not know them (one written
/// before 2026-11-30, not rewritten by an acknowledgement of new content since) is still written as version 2.
const LEDGER_V2: u8 = 2;
const LEDGER_V3: u8 = 3;

/// A ledger value, compactly: tag, kind, state, attempts (u32 LE), then the text fields, each an optional string
/// (0 = none; 1 = length as LEB128, then UTF-8; 2 = 32 raw bytes of a lowercase hex digest); in version 3 then the
/// number of earlier versions (one byte) and each one's digest and `updated_at`, as text fields.
fn encode_ledger(e: &LedgerEntry) -> Vec<u8> {
    let mut v = Vec::with_capacity(256);
    v.push(if e.earlier.is_none() {
        LEDGER_V2
    } else {
        LEDGER_V3
    });
    v.push(match e.kind {
        Kind::Permit => 0,
        Kind::Penalty => 1,
    });
    v.push(match e.state {
        PlatformState::Pending => 0,
        PlatformState::Public => 1,
        PlatformState::Withdrawn => 2,
        PlatformState::Rejected => 3,
    });
    v.extend_from_slice(&e.attempts.to_le_bytes());
    put_str(&mut v, Some(&e.source_id));
    put_str(&mut v, Some(&e.source_updated_at));
    put_str(&mut v, e.digest.as_deref());
    put_str(&mut v, e.rejected_digest.as_deref());
    put_str(&mut v, e.first_published.as_deref());
    put_str(&mut v, e.last_pushed.as_deref());
    put_str(&mut v, e.last_error.as_deref());
    put_str(&mut v, Some(&e.meta.doc_no));
    put_str(&mut v, Some(&e.meta.party_name));
    put_str(&mut v, Some(&e.meta.party_id_masked));
    put_str(&mut v, e.meta.decided_on.as_deref());
    put_str(&mut v, e.meta.display_until.as_deref());
    if let Some(earlier) = &e.earlier {
        let n = earlier.len().min(usize::from(u8::MAX));
        v.push(n as u8);
        for a in &earlier[..n] {
            put_str(&mut v, Some(&a.digest));
            put_str(&mut v, Some(&a.source_updated_at));
        }
    }
    v
}

fn put_str(v: &mut Vec<u8>, s: Option<&str>) {
    let Some(s) = s else {
        v.push(0);
        return;
    };
    if let Some(d) = crate::model::Digest::parse(s).filter(|d| d.to_hex() == s) {
        v.push(2);
        v.extend_from_slice(&d.0);
        return;
    }
    v.push(1);
    let mut n = s.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            v.push(b);
            break;
        }
        v.push(b | 0x80);
    }
    v.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn opt(&mut self) -> Result<Option<String>, String> {
        match self.byte()? {
            0 => Ok(None),
            1 => {
                let mut n = 0usize;
                for shift in (0..35).step_by(7) {
                    let b = self.byte()?;
                    n |= usize::from(b & 0x7f) << shift;
                    if b & 0x80 == 0 {
                        let s = self.take(n)?;
                        return String::from_utf8(s.to_vec())
                            .map(Some)
                            .map_err(|e| e.to_string());
                    }
                }
                Err("bad length".into())
            }
            2 => Ok(Some(hex::encode(self.take(32)?))),
            t => Err(format!("bad field tag {t}")),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.opt()?
            .ok_or_else(|| "a required field is missing".into())
    }
}

/// Reads a ledger value in any form: binary (version 3, or 2: no earlier versions) or JSON (version 1).
fn decode_ledger(v: &[u8]) -> Result<LedgerEntry, String> {
    let version = match v.first() {
        Some(&t @ (LEDGER_V2 | LEDGER_V3)) => t,
        _ => return serde_json::from_slice(v).map_err(|e| e.to_string()),
    };
    let mut r = Reader(&v[1..]);
    let kind = match r.byte()? {
        0 => Kind::Permit,
        1 => Kind::Penalty,
        k => return Err(format!("bad kind {k}")),
    };
    let state = match r.byte()? {
        0 => PlatformState::Pending,
        1 => PlatformState::Public,
        2 => PlatformState::Withdrawn,
        3 => PlatformState::Rejected,
        s => return Err(format!("bad state {s}")),
    };
    let attempts = u32::from_le_bytes(r.take(4)?.try_into().map_err(|_| "truncated")?);
    let mut e = LedgerEntry {
        kind,
        state,
        attempts,
        source_id: r.string()?,
        source_updated_at: r.string()?,
        digest: r.opt()?,
        rejected_digest: r.opt()?,
        first_published: r.opt()?,
        last_pushed: r.opt()?,
        last_error: r.opt()?,
        meta: RecordMeta {
            doc_no: r.string()?,
            party_name: r.string()?,
            party_id_masked: r.string()?,
            decided_on: r.opt()?,
            display_until: r.opt()?,
        },
        earlier: None,
    };
    if version == LEDGER_V3 {
        let mut earlier = Vec::new();
        for _ in 0..r.byte()? {
            earlier.push(AckedVersion {
                digest: r.string()?,
                source_updated_at: r.string()?,
            });
        }
        e.earlier = Some(earlier);
    }
    if !r.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(e)
}

/// Why a record is held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineEntry {
    pub kind: Kind,
    pub source_id: String,
    pub key: Option<String>,
    /// `invalid` (local validation) or `rejected` (the platform refused it).
    pub reason: String,
    pub findings: Vec<StoredFinding>,
    /// The source record as read (JSON), so `quarantine retry` can re-map it after a mapping fix.
    pub source: serde_json::Value,
    pub first_seen: String,
    pub last_seen: String,
    pub meta: RecordMeta,
    /// For a record the platform rejected, the `updated_at` of the version sent: when `source` is null (a batch
    /// resent after a restart holds no source text), `quarantine retry` looks that version up in the feed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_updated_at: Option<String>,
    /// For an entry a receipt made (`rejected`), when the version sent was read from the feed: its message's
    /// `created` (the connector's clock). Its `last_seen` is when the receipt came, which may be long after (the
    /// platform down for a while). `None`: `last_seen`, which for an entry of a record that fails validation is
    /// when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
}

impl QuarantineEntry {
    /// Whether a copy of this entry's source record stamped `served_at` is older than the version in quarantine,
    /// as far as that can be trusted (as [`LedgerEntry::follows_later_than`]): only when that version was not stamped
    /// in the future when it was last read (`read_at`, else `last_seen`: the connector's clock then), not when the
    /// platform's answer to it came. Unreadable times: not older.
    /// The version is the one sent (`source_updated_at`), else that of the copy held, an object or the JSON text of
    /// a record no `serde_json::Value` can hold.
    pub fn holds_later_than(&self, served_at: &str) -> bool {
        let instant = |t: &str| chrono::DateTime::parse_from_rfc3339(t).ok();
        let version = self
            .source_updated_at
            .clone()
            .or_else(|| match &self.source {
                serde_json::Value::String(text) => {
                    crate::source_schema::RawHead::of(text).updated_at_text()
                }
                v => v.get("updated_at")?.as_str().map(str::to_string),
            });
        let (Some(served), Some(held), Some(seen)) = (
            instant(served_at),
            version.as_deref().and_then(instant),
            instant(self.read_at.as_deref().unwrap_or(&self.last_seen)),
        ) else {
            return false;
        };
        served < held && held <= seen
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFinding {
    pub code: String,
    pub field: String,
    pub zh: String,
    pub en: String,
}

impl From<&Finding> for StoredFinding {
    fn from(f: &Finding) -> Self {
        StoredFinding {
            code: f.code.as_str().to_string(),
            field: f.field.clone(),
            // a message may quote a source value, and that may be an ID number (one in the wrong field, say)
            zh: crate::ids::mask_ids_in(&f.zh),
            en: crate::ids::mask_ids_in(&f.en),
        }
    }
}

/// A ledger change as a receipt or page decides it.
#[derive(Debug, Clone)]
pub enum LedgerChange {
    Put(String, LedgerEntry),
}

/// Everything one processed page makes durable at once.
#[derive(Debug, Default)]
pub struct PageCommit {
    pub cursor: Option<(Kind, Cursor)>,
    pub batches: Vec<(u64, OutboxBatch)>,
    pub quarantine_put: Vec<QuarantineEntry>,
    pub quarantine_del: Vec<(Kind, String)>,
    pub by_source: Vec<(Kind, String, String)>,
    /// Keys records of the page moved away from (see [`Store::released_keys`]).
    pub released: Vec<(Kind, String)>,
}

/// Where a batch sits in the outbox: the sequence number it was written under (8 bytes, big-endian), and for a
/// piece of a batch split after the platform refused it as too large, the path to that piece (one byte a split: 1
/// the first half, 2 the second). A piece's key begins with its batch's, so the pieces sort in their batch's place
/// — after what was written before it, before anything written after it — and a later version of a record is
/// never resent before an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OutboxId(Vec<u8>);

impl OutboxId {
    /// The id of a batch written under sequence number `seq`.
    pub fn new(seq: u64) -> OutboxId {
        OutboxId(seq.to_be_bytes().to_vec())
    }

    /// Piece `n` (1 or 2) of the batch with this id.
    pub fn piece(&self, n: u8) -> OutboxId {
        let mut k = self.0.clone();
        k.push(n);
        OutboxId(k)
    }

    fn key(&self) -> &[u8] {
        &self.0
    }
}

/// Everything one receipt makes durable at once.
#[derive(Debug, Default)]
pub struct ReceiptCommit {
    pub outbox_seq: Option<OutboxId>,
    /// Batches put in the outbox in the same transaction: the records of `outbox_seq` the receipt gave no usable
    /// result for, to be sent again under a flow id of their own.
    pub outbox_put: Vec<(OutboxId, OutboxBatch)>,
    pub ledger: Vec<(String, LedgerEntry)>,
    pub quarantine_put: Vec<QuarantineEntry>,
    pub quarantine_del: Vec<(Kind, String)>,
    /// The quarantine entries `quarantine_put` and `quarantine_del` were decided on, as read before the transaction
    /// (`None`: there was none). An entry found changed inside the transaction — the engine quarantined a newer
    /// version of the record while the receipt was being applied — is left as it is: the decision was about
    /// another entry.
    pub quarantine_seen: HashMap<(Kind, String), Option<QuarantineEntry>>,
    /// (display_until YYYYMMDD, key, add?)
    pub expiry: Vec<(String, String, bool)>,
}

/// Cheap to clone: every field is a handle on the same open database (the send tasks apply receipts with it).
#[derive(Clone)]
pub struct Store {
    path: String,
    db: sled::Db,
    meta: sled::Tree,
    cursor: sled::Tree,
    ledger: sled::Tree,
    by_source: sled::Tree,
    outbox: sled::Tree,
    quarantine: sled::Tree,
    quarantine_due: sled::Tree,
    quarantine_waiting: sled::Tree,
    expiry: sled::Tree,
    runs: sled::Tree,
    released: sled::Tree,
    /// Set when a flush did not finish in time: later flushes fail at once instead of waiting again.
    flush_stuck: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The run key last written to [`LAST_RUN_MARK`] by this process (0: none).
    marked: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn composite(kind: Kind, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.as_str().len() + 1 + id.len());
    k.extend_from_slice(kind.as_str().as_bytes());
    k.push(SEP);
    k.extend_from_slice(id.as_bytes());
    k
}

fn expiry_key(date: &str, key: &str) -> Vec<u8> {
    let mut k = date.as_bytes().to_vec();
    k.push(SEP);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Where an index key splits into its bucket (before) and the entry's name in the bucket (after): before the
/// last two characters of the part after the first `0xff`, or the last three when that part ends in an ASCII
/// digit followed by something else (`…984号`). Never inside the part before `0xff` (kind or date), so an
/// expiry bucket holds one date only. A part that is not UTF-8 stays whole (a bucket of one).
fn bucket_cut(key: &[u8]) -> usize {
    let min = key
        .iter()
        .position(|&b| b == SEP)
        .map_or(key.len(), |p| p + 1);
    cut_before_last(key, min, 2)
}

/// Where a ledger key splits into its bucket and the entry's name: before its last character, or the last two
/// when it ends in an ASCII digit followed by something else — about ten consecutive document numbers a
/// bucket. Fewer than the indexes' hundred because ledger entries are ~200 bytes: a sled leaf holds up to 16
/// buckets, and a leaf over 128 KiB would be written as a separate blob file.
fn ledger_cut(key: &[u8]) -> usize {
    cut_before_last(key, 0, 1)
}

/// Before the last `n` characters of `key[min..]`, or `n + 1` when they end in an ASCII digit followed by
/// something else; never before `min`. Not UTF-8 there: the whole key (a bucket of one).
fn cut_before_last(key: &[u8], min: usize, n: usize) -> usize {
    let Ok(tail) = std::str::from_utf8(&key[min..]) else {
        return key.len();
    };
    let last: Vec<(usize, char)> = tail.char_indices().rev().take(n + 1).collect();
    let keep = match (last.first(), last.get(1)) {
        (Some(&(_, a)), Some(&(_, b))) if !a.is_ascii_digit() && b.is_ascii_digit() => n + 1,
        _ => n,
    };
    last.get(keep - 1).map_or(min, |&(i, _)| min + i)
}

/// One entry of a bucket: its name (the end of the index key) and value.
type BucketEntry<'a> = (&'a [u8], &'a [u8]);

/// The entries of a bucket value, in the order stored (sorted by name): u32 BE name length, name, u32 BE value
/// length, value; repeated.
fn bucket_entries(mut v: &[u8]) -> Result<Vec<BucketEntry<'_>>, String> {
    fn part<'a>(v: &mut &'a [u8]) -> Result<&'a [u8], String> {
        let Some((len, rest)) = v.split_first_chunk::<4>() else {
            return Err("a bucket is cut short".into());
        };
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err("a bucket is cut short".into());
        }
        let (p, rest) = rest.split_at(len);
        *v = rest;
        Ok(p)
    }
    let mut out = Vec::new();
    while !v.is_empty() {
        let name = part(&mut v)?;
        let value = part(&mut v)?;
        out.push((name, value));
    }
    Ok(out)
}

/// The value of `name` in a bucket.
fn bucket_get<'a>(v: &'a [u8], name: &[u8]) -> Result<Option<&'a [u8]>, String> {
    Ok(bucket_entries(v)?
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value))
}

/// Where a key splits into its bucket and its name in the bucket ([`bucket_cut`], [`ledger_cut`]).
type Cut = fn(&[u8]) -> usize;

/// Changes to one bucket: entry names and their new values (`None`: remove), applied in order.
type BucketChanges = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// A bucket after `changes`; `None` when nothing is left in it.
fn bucket_apply(old: Option<&[u8]>, changes: &BucketChanges) -> Result<Option<Vec<u8>>, String> {
    let mut entries: std::collections::BTreeMap<&[u8], &[u8]> = match old {
        Some(v) => bucket_entries(v)?.into_iter().collect(),
        None => Default::default(),
    };
    for (name, value) in changes {
        match value {
            Some(v) => entries.insert(name, v),
            None => entries.remove(name.as_slice()),
        };
    }
    if entries.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(entries.iter().map(|(n, v)| 8 + n.len() + v.len()).sum());
    for (name, value) in entries {
        for p in [name, value] {
            let len =
                u32::try_from(p.len()).map_err(|_| "a bucket entry over 4 GiB".to_string())?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(p);
        }
    }
    Ok(Some(out))
}

/// Applies bucket changes (from [`by_bucket`]) to a tree inside a transaction; a bucket that cannot be read
/// aborts it.
fn apply_in_tx(
    tree: &sled::transaction::TransactionalTree,
    buckets: &std::collections::BTreeMap<Vec<u8>, BucketChanges>,
) -> Result<(), ConflictableTransactionError<String>> {
    for (bucket, changes) in buckets {
        let old = tree.get(bucket)?;
        match bucket_apply(old.as_deref(), changes).map_err(ConflictableTransactionError::Abort)? {
            Some(v) => tree.insert(bucket.as_slice(), v)?,
            None => tree.remove(bucket.as_slice())?,
        };
    }
    Ok(())
}

/// Index changes grouped by bucket, so a bucket is read and written once per commit.
fn by_bucket(
    changes: impl IntoIterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
    cut: Cut,
) -> std::collections::BTreeMap<Vec<u8>, BucketChanges> {
    let mut out: std::collections::BTreeMap<Vec<u8>, BucketChanges> = Default::default();
    for (mut key, value) in changes {
        let name = key.split_off(cut(&key));
        out.entry(key).or_default().push((name, value));
    }
    out
}

/// The finding code of a record given up on for want of a usable result from the platform (`sync::NO_RESULT`).
pub const NO_RESULT: &str = "NO_RESULT";

/// What the quarantine's indexes hold of an entry: whether a cron run looks at it again (`quarantine_due`: held back
/// only for a decision date after its day, or given up on for want of an answer), and the record key it waits for
/// because another record holds it (`quarantine_waiting`).
fn quarantine_index(e: &QuarantineEntry) -> (bool, Option<&str>) {
    let due = (e.reason == "invalid"
        && !e.findings.is_empty()
        && e.findings.iter().all(|f| f.code == "date_out_of_range"))
        || (e.reason == "rejected" && e.findings.iter().any(|f| f.code == NO_RESULT));
    let waits_for = e
        .key
        .as_deref()
        .filter(|_| e.findings.iter().any(|f| f.code == "key_reused"));
    (due, waits_for)
}

type QuarantineTrees<'a> = (
    &'a sled::transaction::TransactionalTree,
    &'a sled::transaction::TransactionalTree,
    &'a sled::transaction::TransactionalTree,
);

/// Puts a quarantine entry and its index entries (replacing what an earlier entry of the record had there).
fn quarantine_put_in_tx(
    (quarantine, due, waiting): QuarantineTrees<'_>,
    q: &QuarantineEntry,
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    let k = composite(q.kind, &q.source_id);
    let (is_due, waits_for) = quarantine_index(q);
    if is_due {
        due.insert(k.as_slice(), &[])?;
    } else {
        due.remove(k.as_slice())?;
    }
    match waits_for {
        Some(key) => waiting.insert(k.as_slice(), key.as_bytes())?,
        None => waiting.remove(k.as_slice())?,
    };
    quarantine.insert(k, json(q))?;
    Ok(())
}

/// Removes a quarantine entry and its index entries.
fn quarantine_del_in_tx(
    (quarantine, due, waiting): QuarantineTrees<'_>,
    k: Vec<u8>,
) -> Result<(), sled::transaction::UnabortableTransactionError> {
    due.remove(k.as_slice())?;
    waiting.remove(k.as_slice())?;
    quarantine.remove(k)?;
    Ok(())
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("store values are plain data and always serialize")
}

/// How a command uses the store ([`Store::open_existing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Looks only (`status`, `quarantine list|show`): a missing or empty directory is no store, and the directory's
    /// mode is left as it is (a warning says when others may enter it).
    Read,
    /// Changes a store that exists (`quarantine retry`): none is created, and its directory is set to 0700.
    Write,
    /// Creates the store if there is none yet ([`Store::open`]: `sync`, `reconcile`, `report`).
    Create,
}

/// What `[store] path` names, found before anything is created or changed there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreDir {
    Missing,
    /// An empty directory, or one that holds only what sled leaves of a store it had begun to create.
    Empty,
    /// A store: sled's settings file `conf` and log `db`, or the note of a store found damaged.
    Store,
}

/// Whether a directory entry is one a store holds: sled's files (`conf`, `db`, `blobs/`, `snap.*`), the note of a
/// damaged store, the mark of its last run (and its temporary file), and `lost+found` (a file system of its own
/// mounted at the store's path).
fn store_entry(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    matches!(
        name.as_ref(),
        "conf" | "db" | "blobs" | DAMAGE_NOTE | LAST_RUN_MARK | "LAST_RUN.tmp" | "lost+found"
    ) || name.starts_with("snap.")
}

/// Looks at `[store] path` without changing anything. A directory that holds anything a store does not, and is no
/// store, is someone else's (a typo such as `/var/lib` or `/tmp`): `NotAStore`, before dualpub sets its mode or
/// writes a file there. A missing parent directory, or a path that is a file, is `Unusable`.
fn inspect(path: &Path, shown: &str) -> Result<StoreDir, StoreError> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            return Err(StoreError::Unusable {
                path: shown.to_string(),
                detail: format!(
                    "the directory {} does not exist (dualpub creates the store's own directory, not its parents)",
                    parent.display()
                ),
            });
        }
    }
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // A link to nothing: dualpub cannot create the store there (the link's name is taken), and sled's error
        // said only "File exists".
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::read_link(path) {
            Ok(to) => {
                return Err(StoreError::Unusable {
                    path: shown.to_string(),
                    detail: format!(
                        "it is a symbolic link to {}, which does not exist: create that directory (mode 0700), \
                         or set [store] path to where the store is",
                        to.display()
                    ),
                })
            }
            Err(_) => return Ok(StoreDir::Missing),
        },
        Err(e) => return Err(classify_error(shown, sled::Error::Io(e), true)),
    };
    if !meta.is_dir() {
        return Err(StoreError::Unusable {
            path: shown.to_string(),
            detail: "it is a file, not a directory".into(),
        });
    }
    let is_file = |name: &str| path.join(name).is_file();
    if is_file(DAMAGE_NOTE) || (is_file("conf") && is_file("db")) {
        return Ok(StoreDir::Store);
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| classify_error(shown, sled::Error::Io(e), true))?;
    let mut foreign = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| classify_error(shown, sled::Error::Io(e), true))?;
        if !store_entry(&entry.file_name()) {
            foreign.push(
                entry
                    .file_name()
                    .to_string_lossy()
                    .escape_debug()
                    .to_string(),
            );
            // Enough to show; `/tmp` may hold thousands.
            if foreign.len() == 3 {
                break;
            }
        }
    }
    if foreign.is_empty() {
        return Ok(StoreDir::Empty);
    }
    Err(StoreError::NotAStore {
        path: shown.to_string(),
        found: foreign.join("`, `"),
    })
}

/// Makes `[store] path` ready for `access`: `Ok(false)` when there is no store for a command that does not create
/// one. The store holds full ID numbers, so its directory is for its owner only: created with mode 0700, and an
/// existing one that group or others may enter is set to 0700 by a command that writes, with a warning (once a
/// process); a command that only looks warns and leaves it.
fn prepare(path: &Path, shown: &str, access: Access) -> Result<bool, StoreError> {
    match (inspect(path, shown)?, access) {
        (StoreDir::Missing, Access::Create) => {
            create_private_dir(path, shown)?;
            Ok(true)
        }
        (StoreDir::Missing | StoreDir::Empty, Access::Read | Access::Write) => Ok(false),
        (StoreDir::Empty | StoreDir::Store, _) => {
            protect(path, shown, access);
            Ok(true)
        }
    }
}

#[cfg(unix)]
fn create_private_dir(path: &Path, shown: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        // Made by another run since `inspect` looked: that run's store, which sled's lock guards.
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            Err(classify_error(shown, sled::Error::Io(e), true))
        }
        _ => Ok(()),
    }
}

/// Elsewhere sled creates the directory.
#[cfg(not(unix))]
fn create_private_dir(_path: &Path, _shown: &str) -> Result<(), StoreError> {
    Ok(())
}

#[cfg(unix)]
fn protect(path: &Path, shown: &str, access: Access) {
    use std::os::unix::fs::PermissionsExt;
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if !meta.is_dir() || mode & 0o077 == 0 {
        return;
    }
    let tightened = match access {
        Access::Read => None,
        Access::Write | Access::Create => Some(std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(0o700),
        )),
    };
    if WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    match tightened {
        Some(Ok(())) => tracing::warn!(
            store = %shown,
            "the store directory was open to other users (mode {mode:03o}); it holds full ID numbers, so \
             dualpub set it to 0700"
        ),
        Some(Err(e)) => tracing::warn!(
            store = %shown,
            "the store directory is open to other users (mode {mode:03o}) and dualpub could not set it to \
             0700 ({e}); it holds full ID numbers: restrict it by hand"
        ),
        None => tracing::warn!(
            store = %shown,
            "the store directory is open to other users (mode {mode:03o}); it holds full ID numbers: the next \
             `dualpub sync` sets it to 0700, or restrict it by hand now (chmod 700)"
        ),
    }
}

#[cfg(not(unix))]
fn protect(_path: &Path, _shown: &str, _access: Access) {}

impl Store {
    /// Opens (or creates) the store. A directory that holds other files and no store gets `NotAStore` (and is left
    /// as it was); a second process gets `Locked`; a damaged store gets `Damaged`; a newer schema gets
    /// `NewerVersion`. Never panics on a bad directory.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        prepare(path, &path.display().to_string(), Access::Create)?;
        Store::open_with(path, 300_000)
    }

    /// [`Store::open`] for a command that does not create the store: `None` when `[store] path` is missing or an
    /// empty directory (nothing is created there). Only [`Access::Read`] leaves the directory's mode as it is.
    pub fn open_existing(path: &Path, access: Access) -> Result<Option<Store>, StoreError> {
        if !prepare(path, &path.display().to_string(), access)? {
            return Ok(None);
        }
        Store::open_with(path, 300_000).map(Some)
    }

    /// The store's trees in sled database `db`, for the store at `p` (as messages name it).
    fn with_trees(db: sled::Db, p: &str) -> Result<Store, StoreError> {
        let tree = |name: &str| db.open_tree(name).map_err(|e| classify_error(p, e, true));
        Ok(Store {
            meta: tree("meta")?,
            cursor: tree("cursor")?,
            ledger: tree("ledger_buckets")?,
            by_source: tree("by_source_buckets")?,
            outbox: tree("outbox")?,
            quarantine: tree("quarantine")?,
            quarantine_due: tree("quarantine_due")?,
            quarantine_waiting: tree("quarantine_waiting")?,
            expiry: tree("expiry_buckets")?,
            runs: tree("runs")?,
            released: tree("released")?,
            path: p.to_string(),
            db,
            flush_stuck: Default::default(),
            marked: Default::default(),
        })
    }

    /// An empty store of the current schema in a directory of its own under `$TMPDIR` that sled removes when it is
    /// dropped (its temporary mode; not sled's default place for that, `/dev/shm`, where a killed process would
    /// leave it in memory): what `reconcile` without `--repair` and `report annual` read when there is no store at
    /// `path` yet ("nothing sent yet"), so that they create nothing there.
    pub fn empty(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        let dir = std::env::temp_dir().join(format!(
            "dualpub-empty-store-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let db = sled::Config::new()
            .path(&dir)
            .temporary(true)
            .cache_capacity(8 << 20)
            .open()
            .map_err(|e| classify_error(&p, e, true))?;
        let store = Store::with_trees(db, &p)?;
        store
            .meta
            .insert(b"schema", &SCHEMA_VERSION.to_be_bytes())
            .map_err(|e| store.io(e))?;
        Ok(store)
    }

    /// [`Store::open`], upgrading an old store `migrate_chunk` entries between reopenings.
    fn open_with(path: &Path, migrate_chunk: usize) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        // A bounded page cache keeps memory flat however many records the store holds. 8 MiB: the ledger is
        // written where new document numbers go (a few hot leaves per authority and year), so a larger cache buys
        // no speed in a backfill (measured: the same rate at 32 MiB) and costs ~35 MiB of RSS at 1M records.
        let cfg = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(200))
            .cache_capacity(8 << 20);
        if let Ok(note) = std::fs::read_to_string(path.join(DAMAGE_NOTE)) {
            let first = note.lines().next().unwrap_or_default();
            return Err(StoreError::Damaged {
                path: p,
                detail: format!("{DAMAGE_NOTE} says: {}", first.trim_end_matches('.')),
            });
        }
        let had_data = log_has_data(&path.join("db"));
        // sled may panic on some kinds of damage; turn that into an error the operator can act on.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cfg.open()));
        let db = match opened {
            Err(_) => {
                return Err(StoreError::Damaged {
                    path: p,
                    detail: "sled could not read its files".into(),
                })
            }
            Ok(Err(e)) => return Err(classify_error(&p, e, true)),
            Ok(Ok(db)) => db,
        };
        // A log whose start is unreadable (seen with its first bytes overwritten) opens as an empty store: status
        // would say "never read", and sled's first flush would then wait for ever. sled recovered nothing from a
        // log that holds data: that is damage, said before anything reads or writes.
        // sled has by then begun a new log in place of the damaged one, so the next run would find a store that
        // looks never used; a note in the store's directory keeps it reported as damaged until it is moved aside.
        if had_data && !db.was_recovered() {
            std::mem::forget(db);
            let detail =
                "sled found none of its data in its log (`db`); the start of the log is unreadable";
            let note = format!(
                "dualpub found this store damaged at {}: {detail}.\nMove the whole directory aside and run `dualpub sync` to rebuild it from the source, then\n`dualpub reconcile --repair` to withdraw what was revoked or expired meanwhile.\n",
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            let _ = std::fs::write(path.join(DAMAGE_NOTE), note);
            return Err(StoreError::Damaged {
                path: p,
                detail: detail.into(),
            });
        }
        let store = Store::with_trees(db, &p)?;
        match store.meta.get(b"schema").map_err(|e| store.io(e))? {
            None => {
                if !store.ledger.is_empty() || !store.cursor.is_empty() {
                    return Err(StoreError::Damaged {
                        path: p,
                        detail: "it has data but no schema version".into(),
                    });
                }
                store
                    .meta
                    .insert(b"schema", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(|e| store.io(e))?;
                store.flush()?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| StoreError::Damaged {
                        path: p.clone(),
                        detail: "its schema version is unreadable".into(),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(StoreError::NewerVersion { path: p, found });
                }
                if found == 1 || found == 2 {
                    // Versions 1 and 2 differ in the index layout (and 1 in how ledger values are written, which
                    // are still read). Upgraded a part at a time, reopening in between (see `migrate_indexes`);
                    // the next open goes on from version 3.
                    if !store.migrate_indexes(migrate_chunk)? {
                        drop(store);
                        return Store::reopen_with(path, migrate_chunk);
                    }
                } else if found < BUCKETS_SCHEMA {
                    return Err(StoreError::Damaged {
                        path: p,
                        detail: format!("unknown old schema {found}"),
                    });
                } else {
                    // A migration that set the version but was stopped before it dropped the old trees.
                    store.drop_old_indexes()?;
                }
                if found < QUARANTINE_INDEX_SCHEMA {
                    store.index_quarantine()?;
                }
                if found < SCHEMA_VERSION {
                    store
                        .meta
                        .insert(b"schema", &SCHEMA_VERSION.to_be_bytes())
                        .map_err(|e| store.io(e))?;
                    store.flush()?;
                }
            }
        }
        store.check_last_run(path)?;
        Ok(store)
    }

    /// A store that opens without the newest run it had made durable (`LAST_RUN`) lost writes: seen with the first
    /// bytes of sled's log (`db`) overwritten once a recovery snapshot exists — sled then opens the store as it was
    /// at that snapshot, and every later write is lost again at the next open, so every run would exit 0, send the
    /// same records again and never move its checkpoint. Reported as damage (with the note), like the other kinds.
    fn check_last_run(&self, path: &Path) -> Result<(), StoreError> {
        let Some(marked) = last_run_mark(path) else {
            return Ok(());
        };
        let newest = self
            .runs
            .last()
            .map_err(|e| self.io(e))?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        if newest >= marked {
            self.marked
                .store(newest, std::sync::atomic::Ordering::Relaxed);
            return Ok(());
        }
        let detail = format!(
            "it lacks the runs it had recorded and made durable (its newest run is {newest}, {LAST_RUN_MARK} says \
             {marked}): sled's log (`db`) lost writes, so nothing written now would be kept either"
        );
        let note = format!(
            "dualpub found this store damaged at {}: {detail}.\nMove the whole directory aside and run `dualpub sync` to rebuild it from the source, then\n`dualpub reconcile --repair` to withdraw what was revoked or expired meanwhile.\n",
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let _ = std::fs::write(path.join(DAMAGE_NOTE), note);
        Err(StoreError::Damaged {
            path: self.path.clone(),
            detail,
        })
    }

    /// Notes the newest run in [`LAST_RUN_MARK`] once the store has made it durable (best effort: a mark not written
    /// only leaves a check undone; it is never ahead of what sled made durable).
    fn mark_last_run(&self) {
        use std::sync::atomic::Ordering;
        let Ok(Some((k, _))) = self.runs.last() else {
            return;
        };
        let Ok(key) = <[u8; 8]>::try_from(k.as_ref()).map(u64::from_be_bytes) else {
            return;
        };
        if self.marked.load(Ordering::Relaxed) == key {
            return;
        }
        let dir = Path::new(&self.path);
        let temp = dir.join(format!("{LAST_RUN_MARK}.tmp"));
        let text = format!(
            "{key}\nThe newest run this store recorded and made durable; dualpub checks it when it opens the store.\n"
        );
        if std::fs::write(&temp, text).is_ok()
            && std::fs::rename(&temp, dir.join(LAST_RUN_MARK)).is_ok()
        {
            self.marked.store(key, Ordering::Relaxed);
        }
    }

    /// Moves up to `limit` entries of the one-key-per-record `ledger`, `by_source` and `expiry` trees of schema 1
    /// and 2 into buckets, a chunk at a time: each chunk is merged into the bucket trees, then removed from the
    /// old tree. `Ok(true)` once the old trees are empty, the schema version set and the old trees dropped.
    /// The caller closes and reopens the store between calls: sled writes its recovery snapshot only when it
    /// opens, and replaying the log of a whole 1M-record upgrade at once took ~660 MiB. Stopped anywhere, the
    /// next open goes on where it was: a chunk merged but not yet removed is merged again to the same result.
    fn migrate_indexes(&self, limit: usize) -> Result<bool, StoreError> {
        let names = self.db.tree_names();
        let trees: [(&str, &sled::Tree, Cut); 3] = [
            ("ledger", &self.ledger, ledger_cut),
            ("by_source", &self.by_source, bucket_cut),
            ("expiry", &self.expiry, bucket_cut),
        ];
        let mut moved = 0;
        for (old_name, new, cut) in trees {
            if !names.iter().any(|n| n.as_ref() == old_name.as_bytes()) {
                continue;
            }
            let old = self.db.open_tree(old_name).map_err(|e| self.io(e))?;
            if moved == 0 && !old.is_empty() {
                tracing::info!(
                    store = %self.path,
                    tree = old_name,
                    left = old.len(),
                    "upgrading the store to schema {BUCKETS_SCHEMA} (once; about half a minute per million records)"
                );
            }
            loop {
                let mut chunk = Vec::new();
                for r in old.iter().take(limit.min(10_000)) {
                    let (k, v) = r.map_err(|e| self.io(e))?;
                    chunk.push((k.to_vec(), Some(v.to_vec())));
                }
                if chunk.is_empty() {
                    break;
                }
                let keys: Vec<Vec<u8>> = chunk.iter().map(|(k, _)| k.clone()).collect();
                self.merge_into(new, chunk, cut)?;
                moved += keys.len();
                for k in keys {
                    old.remove(k).map_err(|e| self.io(e))?;
                }
                if moved >= limit {
                    self.flush()?;
                    return Ok(false);
                }
            }
        }
        self.flush()?;
        self.meta
            .insert(b"schema", &BUCKETS_SCHEMA.to_be_bytes())
            .map_err(|e| self.io(e))?;
        self.flush()?;
        self.drop_old_indexes()?;
        tracing::info!(store = %self.path, "store upgraded to schema {BUCKETS_SCHEMA}");
        Ok(true)
    }

    /// Builds the quarantine's indexes (`quarantine_due`, `quarantine_waiting`) from the quarantine, then sets
    /// the schema version: the upgrade from version 3. Stopped anywhere, the next open builds them again from the
    /// start (what it writes depends on the quarantine alone).
    fn index_quarantine(&self) -> Result<(), StoreError> {
        if !self.quarantine.is_empty() {
            tracing::info!(
                store = %self.path,
                "upgrading the store to schema {QUARANTINE_INDEX_SCHEMA}: indexing the quarantine (once; a few seconds per \
                 100,000 quarantined records)"
            );
        }
        self.quarantine_due.clear().map_err(|e| self.io(e))?;
        self.quarantine_waiting.clear().map_err(|e| self.io(e))?;
        let (mut due, mut waiting, mut n) = (sled::Batch::default(), sled::Batch::default(), 0);
        for r in self.quarantine.iter() {
            let (k, v) = r.map_err(|e| self.io(e))?;
            let e: QuarantineEntry =
                serde_json::from_slice(&v).map_err(|e| self.damaged("quarantine entry", e))?;
            let (is_due, waits_for) = quarantine_index(&e);
            if is_due {
                due.insert(k.clone(), &[]);
            }
            if let Some(key) = waits_for {
                waiting.insert(k, key.as_bytes());
            }
            n += 1;
            if n % 10_000 == 0 {
                self.quarantine_due
                    .apply_batch(std::mem::take(&mut due))
                    .map_err(|e| self.io(e))?;
                self.quarantine_waiting
                    .apply_batch(std::mem::take(&mut waiting))
                    .map_err(|e| self.io(e))?;
            }
        }
        self.quarantine_due
            .apply_batch(due)
            .map_err(|e| self.io(e))?;
        self.quarantine_waiting
            .apply_batch(waiting)
            .map_err(|e| self.io(e))?;
        self.flush()?;
        self.meta
            .insert(b"schema", &QUARANTINE_INDEX_SCHEMA.to_be_bytes())
            .map_err(|e| self.io(e))?;
        self.flush()?;
        if n > 0 {
            tracing::info!(store = %self.path, quarantined = n, "store upgraded to schema {QUARANTINE_INDEX_SCHEMA}");
        }
        Ok(())
    }

    /// Applies index changes to `tree` bucket by bucket (outside a transaction: only the migration does this).
    fn merge_into(
        &self,
        tree: &sled::Tree,
        changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        cut: Cut,
    ) -> Result<(), StoreError> {
        for (bucket, changes) in by_bucket(changes, cut) {
            let old = tree.get(&bucket).map_err(|e| self.io(e))?;
            match bucket_apply(old.as_deref(), &changes)
                .map_err(|e| self.damaged("store bucket", e))?
            {
                Some(v) => tree.insert(bucket, v).map_err(|e| self.io(e))?,
                None => tree.remove(bucket).map_err(|e| self.io(e))?,
            };
        }
        Ok(())
    }

    fn drop_old_indexes(&self) -> Result<(), StoreError> {
        let names = self.db.tree_names();
        for old_name in ["ledger", "by_source", "expiry"] {
            if names.iter().any(|n| n.as_ref() == old_name.as_bytes()) {
                self.db.drop_tree(old_name).map_err(|e| self.io(e))?;
            }
        }
        Ok(())
    }

    fn io(&self, e: sled::Error) -> StoreError {
        classify_error(&self.path, e, false)
    }

    fn damaged(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Damaged {
            path: self.path.clone(),
            detail: format!("{what}: {e}"),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Closes the store and opens it once more, so that sled writes its recovery snapshot now. sled replays, when
    /// it opens, the whole log written since its last snapshot (it takes one only when it opens): without this
    /// the next cron run, even one with nothing to do, would pay for replaying everything this run wrote. Best
    /// effort: if another run takes the lock in between, that run replays the log instead.
    pub fn close_and_snapshot(self) {
        let path = std::path::PathBuf::from(&self.path);
        if self.flush().is_err() {
            return;
        }
        drop(self);
        let _ = Store::reopen(&path);
    }

    /// Opens a store this process has just closed. sled releases its file lock from a background thread a moment
    /// after the last handle is dropped, so `Locked` is waited out for up to two seconds here (only here: from
    /// another process it means a running sync).
    fn reopen(path: &Path) -> Result<Store, StoreError> {
        Store::reopen_with(path, 300_000)
    }

    fn reopen_with(path: &Path, migrate_chunk: usize) -> Result<Store, StoreError> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match Store::open_with(path, migrate_chunk) {
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
    }

    /// Makes everything written so far durable. Watched: on a store whose log is damaged in some ways, sled's
    /// flush waits forever for a write that never comes (seen with the first bytes of `db` overwritten, which
    /// [`Store::open`] now catches first), and a cron run stuck there would hold the lock and turn every later
    /// run away with exit 4. A flush that has not finished in [`FLUSH_TIMEOUT`] (normally it takes milliseconds)
    /// is reported as damage (exit 3).
    pub fn flush(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        let stuck = || StoreError::Damaged {
            path: self.path.clone(),
            detail: format!(
                "sled could not make its log durable in {} s",
                FLUSH_TIMEOUT.as_secs()
            ),
        };
        if self.flush_stuck.load(Ordering::Relaxed) {
            return Err(stuck());
        }
        let db = self.db.clone();
        match watched(FLUSH_TIMEOUT, move || db.flush()) {
            Some(r) => {
                r.map_err(|e| self.io(e))?;
                self.mark_last_run();
                Ok(())
            }
            None => {
                self.flush_stuck.store(true, Ordering::Relaxed);
                Err(stuck())
            }
        }
    }

    pub fn cursor(&self, kind: Kind) -> Result<Option<Cursor>, StoreError> {
        match self.cursor.get(kind.as_str()).map_err(|e| self.io(e))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.damaged("cursor", e)),
        }
    }

    pub fn ledger_get(&self, key: &str) -> Result<Option<LedgerEntry>, StoreError> {
        let key = key.as_bytes();
        let (bucket, name) = key.split_at(ledger_cut(key));
        let Some(v) = self.ledger.get(bucket).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        match bucket_get(&v, name).map_err(|e| self.damaged("ledger", e))? {
            None => Ok(None),
            Some(raw) => decode_ledger(raw)
                .map(Some)
                .map_err(|e| self.damaged("ledger entry", e)),
        }
    }

    /// Every ledger entry (streaming), bucket by bucket: in key order within a bucket, and overall except where
    /// keys of different lengths meet (`…9840号` comes after `…984号`, whose bucket is `…98`, not `…984`).
    pub fn ledger_iter(
        &self,
    ) -> impl Iterator<Item = Result<(String, LedgerEntry), StoreError>> + '_ {
        self.ledger_entries(self.ledger.iter(), "")
    }

    /// The ledger entries whose key starts with `prefix` (e.g. one kind's `XZXK:`), in the order of
    /// [`Store::ledger_iter`] (streaming).
    pub fn ledger_iter_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = Result<(String, LedgerEntry), StoreError>> + 'a {
        // A key's bucket lacks at most its last two characters, so its bucket starts with the prefix minus those.
        let scan = prefix
            .char_indices()
            .rev()
            .nth(1)
            .map_or("", |(i, _)| &prefix[..i]);
        self.ledger_entries(self.ledger.scan_prefix(scan.as_bytes()), prefix)
    }

    fn ledger_entries<'a>(
        &'a self,
        buckets: sled::Iter,
        prefix: &'a str,
    ) -> impl Iterator<Item = Result<(String, LedgerEntry), StoreError>> + 'a {
        buckets.flat_map(move |r| {
            let (bucket, v) = match r {
                Ok(kv) => kv,
                Err(e) => return vec![Err(self.io(e))],
            };
            let entries = match bucket_entries(&v) {
                Ok(entries) => entries,
                Err(e) => return vec![Err(self.damaged("ledger", e))],
            };
            entries
                .into_iter()
                .filter_map(|(name, raw)| {
                    let mut key = bucket.to_vec();
                    key.extend_from_slice(name);
                    if !key.starts_with(prefix.as_bytes()) {
                        return None;
                    }
                    let entry = String::from_utf8(key)
                        .map_err(|e| self.damaged("ledger key", e))
                        .and_then(|key| {
                            let e =
                                decode_ledger(raw).map_err(|e| self.damaged("ledger entry", e))?;
                            Ok((key, e))
                        });
                    Some(entry)
                })
                .collect()
        })
    }

    pub fn by_source_get(&self, kind: Kind, id: &str) -> Result<Option<String>, StoreError> {
        let key = composite(kind, id);
        let (bucket, name) = key.split_at(bucket_cut(&key));
        let Some(v) = self.by_source.get(bucket).map_err(|e| self.io(e))? else {
            return Ok(None);
        };
        match bucket_get(&v, name).map_err(|e| self.damaged("by_source", e))? {
            None => Ok(None),
            Some(k) => String::from_utf8(k.to_vec())
                .map(Some)
                .map_err(|e| self.damaged("by_source", e)),
        }
    }

    pub fn next_seq(&self) -> Result<u64, StoreError> {
        self.db.generate_id().map_err(|e| self.io(e))
    }

    /// The outbox in the order batches were written.
    pub fn outbox(&self) -> Result<Vec<(OutboxId, OutboxBatch)>, StoreError> {
        let mut out = Vec::new();
        for r in self.outbox.iter() {
            let (k, v) = r.map_err(|e| self.io(e))?;
            if k.len() < 8 {
                return Err(self.damaged("outbox key", format!("{} bytes, not 8 or more", k.len())));
            }
            out.push((
                OutboxId(k.to_vec()),
                decode_batch(&v).map_err(|e| self.damaged("outbox batch", e))?,
            ));
        }
        Ok(out)
    }

    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    pub fn quarantine_get(
        &self,
        kind: Kind,
        id: &str,
    ) -> Result<Option<QuarantineEntry>, StoreError> {
        match self
            .quarantine
            .get(composite(kind, id))
            .map_err(|e| self.io(e))?
        {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.damaged("quarantine entry", e)),
        }
    }

    /// Whether a source record is in quarantine (cheap: no decoding).
    pub fn quarantine_contains(&self, kind: Kind, id: &str) -> Result<bool, StoreError> {
        self.quarantine
            .contains_key(composite(kind, id))
            .map_err(|e| self.io(e))
    }

    /// Whether nothing is in quarantine (one cheap look, so the usual case skips a lookup per record).
    pub fn quarantine_is_empty(&self) -> bool {
        self.quarantine.is_empty()
    }

    pub fn quarantine_all(&self) -> Result<Vec<QuarantineEntry>, StoreError> {
        self.quarantine_iter().collect()
    }

    /// Every quarantine entry, in key order, decoded one at a time: the quarantine of an agency with bad data can
    /// hold hundreds of thousands of records (200,000 held at once took 1.7 GiB).
    pub fn quarantine_iter(
        &self,
    ) -> impl Iterator<Item = Result<QuarantineEntry, StoreError>> + Send + 'static {
        let path = self.path.clone();
        self.quarantine.iter().map(move |r| {
            let (_, v) = r.map_err(|e| classify_error(&path, e, false))?;
            serde_json::from_slice(&v).map_err(|e| StoreError::Damaged {
                path: path.clone(),
                detail: format!("quarantine entry: {e}"),
            })
        })
    }

    /// The quarantine entry whose source id or record key is `name`: looked up by id, else found by its key (only
    /// the entries whose JSON holds the key's text are decoded).
    pub fn quarantine_find(&self, name: &str) -> Result<Option<QuarantineEntry>, StoreError> {
        for kind in Kind::ALL {
            if let Some(e) = self.quarantine_get(kind, name)? {
                return Ok(Some(e));
            }
        }
        let needle = serde_json::to_string(name).unwrap_or_default();
        for r in self.quarantine.iter() {
            let (_, v) = r.map_err(|e| self.io(e))?;
            if !v.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                continue;
            }
            let e: QuarantineEntry =
                serde_json::from_slice(&v).map_err(|e| self.damaged("quarantine entry", e))?;
            if e.key.as_deref() == Some(name) {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// Quarantined records of `kind` held back because another record held their document number
    /// (`key_reused`) and waiting for one of `keys` (all of them when `None`): (source id, the key, the entry).
    /// Found through `quarantine_waiting`, so the rest of the quarantine is not read.
    pub fn quarantine_waiting_for(
        &self,
        kind: Kind,
        keys: Option<&std::collections::HashSet<String>>,
    ) -> Result<Vec<(String, String, QuarantineEntry)>, StoreError> {
        let mut prefix = kind.as_str().as_bytes().to_vec();
        prefix.push(SEP);
        let mut out = Vec::new();
        for r in self.quarantine_waiting.scan_prefix(&prefix) {
            let (k, key) = r.map_err(|e| self.io(e))?;
            let key = String::from_utf8_lossy(&key);
            if keys.is_some_and(|keys| !keys.contains(key.as_ref())) {
                continue;
            }
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let Some(e) = self.quarantine_get(kind, &id)? else {
                continue;
            };
            if e.findings.iter().any(|f| f.code == "key_reused") {
                out.push((id, key.into_owned(), e));
            }
        }
        Ok(out)
    }

    /// The quarantine entries of `kind` held back only for a decision date after the day they were read
    /// (`date_out_of_range`), found through `quarantine_due`: a cron run looks at them every time, and the rest
    /// of the quarantine is not read.
    pub fn quarantine_due(&self, kind: Kind) -> Result<Vec<QuarantineEntry>, StoreError> {
        let mut prefix = kind.as_str().as_bytes().to_vec();
        prefix.push(SEP);
        let mut out = Vec::new();
        for r in self.quarantine_due.scan_prefix(&prefix) {
            let (k, _) = r.map_err(|e| self.io(e))?;
            let id = String::from_utf8_lossy(&k[prefix.len()..]);
            if let Some(e) = self.quarantine_get(kind, &id)? {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Keys of `kind` that records moved away from (a changed document number, a penalty on a minor withdrawn)
    /// and that records quarantined for them (`key_reused`) have not yet been offered: kept across a crash,
    /// so a run stopped before it offered them leaves the next run to do it.
    pub fn released_keys(
        &self,
        kind: Kind,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut prefix = kind.as_str().as_bytes().to_vec();
        prefix.push(SEP);
        let mut out = std::collections::HashSet::new();
        for r in self.released.scan_prefix(&prefix) {
            let (k, _) = r.map_err(|e| self.io(e))?;
            out.insert(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(out)
    }

    /// Forgets released keys once they have been offered.
    pub fn released_clear(
        &self,
        kind: Kind,
        keys: &std::collections::HashSet<String>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(composite(kind, k));
        }
        self.released.apply_batch(batch).map_err(|e| self.io(e))
    }

    pub fn quarantine_len(&self) -> usize {
        self.quarantine.len()
    }

    /// Keys of public penalties whose display period ended before `today` (CF_GSJZQ < today).
    pub fn expired_before(&self, today_yyyymmdd: &str) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for r in self.expiry.range(..today_yyyymmdd.as_bytes().to_vec()) {
            let (bucket, v) = r.map_err(|e| self.io(e))?;
            let Some(pos) = bucket.iter().position(|&b| b == SEP) else {
                continue;
            };
            for (name, _) in bucket_entries(&v).map_err(|e| self.damaged("expiry", e))? {
                let mut key = bucket[pos + 1..].to_vec();
                key.extend_from_slice(name);
                out.push(String::from_utf8_lossy(&key).into_owned());
            }
        }
        Ok(out)
    }

    /// Puts `parts` in the outbox in place of batch `seq`, in one transaction: a message the platform refused
    /// whole is sent again in smaller pieces, and a crash leaves either the batch or all of its pieces.
    pub fn outbox_split(
        &self,
        id: &OutboxId,
        parts: &[(OutboxId, OutboxBatch)],
    ) -> Result<(), StoreError> {
        let r: Result<(), TransactionError<String>> = self.outbox.transaction(|outbox| {
            outbox.remove(id.key())?;
            for (piece, b) in parts {
                outbox.insert(piece.key(), encode_batch(b))?;
            }
            Ok::<(), ConflictableTransactionError<String>>(())
        });
        r.map_err(|e| self.tx_error(e))
    }

    /// Makes a processed page durable: its outbox batches, quarantine changes, source→key links and cursor.
    pub fn commit_page(&self, c: &PageCommit) -> Result<(), StoreError> {
        let links = by_bucket(
            c.by_source
                .iter()
                .map(|(kind, id, key)| (composite(*kind, id), Some(key.as_bytes().to_vec()))),
            bucket_cut,
        );
        let r: Result<(), TransactionError<String>> = (
            &self.outbox,
            &self.quarantine,
            &self.quarantine_due,
            &self.quarantine_waiting,
            &self.by_source,
            &self.cursor,
            &self.released,
        )
            .transaction(
                |(outbox, quarantine, due, waiting, by_source, cursor, released)| {
                    for (seq, b) in &c.batches {
                        outbox.insert(&seq.to_be_bytes(), encode_batch(b))?;
                    }
                    for (kind, key) in &c.released {
                        released.insert(composite(*kind, key), &[])?;
                    }
                    let trees = (quarantine, due, waiting);
                    for q in &c.quarantine_put {
                        quarantine_put_in_tx(trees, q)?;
                    }
                    for (kind, id) in &c.quarantine_del {
                        quarantine_del_in_tx(trees, composite(*kind, id))?;
                    }
                    apply_in_tx(by_source, &links)?;
                    if let Some((kind, cur)) = &c.cursor {
                        cursor.insert(kind.as_str(), json(cur))?;
                    }
                    Ok::<(), ConflictableTransactionError<String>>(())
                },
            );
        r.map_err(|e| self.tx_error(e))
    }

    /// Makes a receipt durable: ledger entries, quarantine changes, the expiry index, and the outbox removal.
    pub fn commit_receipt(&self, c: &ReceiptCommit) -> Result<(), StoreError> {
        let expiry_changes = by_bucket(
            c.expiry
                .iter()
                .map(|(date, key, add)| (expiry_key(date, key), add.then(Vec::new))),
            bucket_cut,
        );
        let ledger_changes = by_bucket(
            c.ledger
                .iter()
                .map(|(key, e)| (key.as_bytes().to_vec(), Some(encode_ledger(e)))),
            ledger_cut,
        );
        let r: Result<(), TransactionError<String>> = (
            &self.outbox,
            &self.ledger,
            &self.quarantine,
            &self.quarantine_due,
            &self.quarantine_waiting,
            &self.expiry,
        )
            .transaction(|(outbox, ledger, quarantine, due, waiting, expiry)| {
                apply_in_tx(ledger, &ledger_changes)?;
                let trees = (quarantine, due, waiting);
                // The entries no longer the ones the receipt's decisions were made on (found before any is
                // changed here, so that this receipt's own changes count as none).
                let mut changed = HashSet::new();
                for ((kind, id), seen) in &c.quarantine_seen {
                    let now: Option<QuarantineEntry> = trees
                        .0
                        .get(composite(*kind, id))?
                        .and_then(|v| serde_json::from_slice(&v).ok());
                    if now.as_ref().map(json) != seen.as_ref().map(json) {
                        changed.insert((*kind, id.as_str()));
                    }
                }
                for q in &c.quarantine_put {
                    if !changed.contains(&(q.kind, q.source_id.as_str())) {
                        quarantine_put_in_tx(trees, q)?;
                    }
                }
                for (kind, id) in &c.quarantine_del {
                    if !changed.contains(&(*kind, id.as_str())) {
                        quarantine_del_in_tx(trees, composite(*kind, id))?;
                    }
                }
                apply_in_tx(expiry, &expiry_changes)?;
                if let Some(id) = &c.outbox_seq {
                    outbox.remove(id.key())?;
                }
                for (id, b) in &c.outbox_put {
                    outbox.insert(id.key(), encode_batch(b))?;
                }
                Ok::<(), ConflictableTransactionError<String>>(())
            });
        r.map_err(|e| self.tx_error(e))
    }

    fn tx_error(&self, e: TransactionError<String>) -> StoreError {
        match e {
            TransactionError::Storage(e) => self.io(e),
            TransactionError::Abort(detail) => self.damaged("store bucket", detail),
        }
    }

    /// The fingerprint of the settings that validated the quarantine ([`crate::config::Config::validation_fingerprint`],
    /// noted by the last run); `None` for a store that has none yet.
    pub fn validated_with(&self) -> Result<Option<String>, StoreError> {
        let v = self.meta.get(b"validated_with").map_err(|e| self.io(e))?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    pub fn set_validated_with(&self, now: &str) -> Result<(), StoreError> {
        self.meta
            .insert(b"validated_with", now.as_bytes())
            .map_err(|e| self.io(e))?;
        Ok(())
    }

    pub fn record_run(&self, summary: &serde_json::Value) -> Result<(), StoreError> {
        let seq = self.next_seq()?;
        self.runs
            .insert(seq.to_be_bytes(), json(summary))
            .map_err(|e| self.io(e))?;
        // keep the last 1000 runs
        while self.runs.len() > 1000 {
            if self.runs.pop_min().map_err(|e| self.io(e))?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// Replaces the newest run summary (a command that learns more of its run after the engine recorded it).
    pub fn amend_last_run(&self, summary: &serde_json::Value) -> Result<(), StoreError> {
        if let Some((k, _)) = self.runs.last().map_err(|e| self.io(e))? {
            self.runs.insert(k, json(summary)).map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    pub fn last_runs(&self, n: usize) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut out = Vec::new();
        for r in self.runs.iter().rev().take(n) {
            let (_, v) = r.map_err(|e| self.io(e))?;
            out.push(serde_json::from_slice(&v).map_err(|e| self.damaged("run summary", e))?);
        }
        Ok(out)
    }

    /// The newest run summary whose `command` is `command` (runs of older versions, which have none, are passed
    /// over), at most `within` runs back.
    pub fn last_run_of(
        &self,
        command: &str,
        within: usize,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        for r in self.runs.iter().rev().take(within) {
            let (_, v) = r.map_err(|e| self.io(e))?;
            let run: serde_json::Value =
                serde_json::from_slice(&v).map_err(|e| self.damaged("run summary", e))?;
            if run["command"].as_str() == Some(command) {
                return Ok(Some(run));
            }
        }
        Ok(None)
    }

    /// Ledger counts by platform state.
    pub fn ledger_counts(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        let mut m = std::collections::BTreeMap::new();
        for r in self.ledger_iter() {
            let (_, e) = r?;
            let k = format!(
                "{}:{}",
                e.kind.as_str(),
                serde_json::to_value(e.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            );
            *m.entry(k).or_insert(0) += 1;
        }
        Ok(m)
    }
}

/// A sled error as the operator should see it. `opening`: a path that cannot hold a store is a configuration
/// problem only when the store is being opened; later the same I/O errors mean the store itself is in trouble.
fn classify_error(path: &str, e: sled::Error, opening: bool) -> StoreError {
    match e {
        sled::Error::Io(io) => {
            let msg = io.to_string();
            if msg.contains("lock") || io.kind() == std::io::ErrorKind::WouldBlock {
                StoreError::Locked {
                    path: path.to_string(),
                }
            } else if opening
                && matches!(
                    io.kind(),
                    std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::NotADirectory
                        | std::io::ErrorKind::AlreadyExists
                        | std::io::ErrorKind::ReadOnlyFilesystem
                        | std::io::ErrorKind::NotFound
                )
            {
                StoreError::Unusable {
                    path: path.to_string(),
                    detail: msg,
                }
            } else {
                StoreError::Io {
                    path: path.to_string(),
                    detail: msg,
                }
            }
        }
        // sled's own text is a debug dump ("… at file offset Some(Inline(20)) backtrace ()").
        sled::Error::Corruption { .. } => StoreError::Damaged {
            path: path.to_string(),
            detail: "sled found corrupted data in its files".to_string(),
        },
        other => StoreError::Damaged {
            path: path.to_string(),
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LedgerEntry {
        LedgerEntry {
            kind: Kind::Penalty,
            source_id: "CF-00000001".into(),
            source_updated_at: "2024-03-05T10:22:31.123+08:00".into(),
            digest: Some("ab".repeat(32)),
            rejected_digest: Some("AB".repeat(32)),
            state: PlatformState::Rejected,
            first_published: None,
            last_pushed: Some("2026-11-28T11:00:23.554+08:00".into()),
            attempts: 300,
            last_error: Some("x".repeat(200)),
            meta: RecordMeta {
                doc_no: "（豫）WH应急罚〔2024〕000123".into(),
                party_name: "某某化工有限公司".into(),
                party_id_masked: "410105********1234".into(),
                decided_on: Some("2024-03-01".into()),
                display_until: None,
            },
            earlier: None,
        }
    }

    #[test]
    fn ledger_values_with_earlier_versions_round_trip_and_version_2_values_read_with_none() {
        let v2 = encode_ledger(&entry());
        assert_eq!(
            v2[0], LEDGER_V2,
            "an entry that does not know its earlier versions is written as before"
        );
        let mut e = entry();
        e.earlier = Some(vec![
            AckedVersion {
                digest: "cd".repeat(32),
                source_updated_at: "2024-03-04T09:00:00.000+08:00".into(),
            },
            AckedVersion {
                digest: "not a digest".into(),
                source_updated_at: "2024-03-03T09:00:00Z".into(),
            },
        ]);
        let v3 = encode_ledger(&e);
        assert_eq!(v3[0], LEDGER_V3);
        assert_eq!(decode_ledger(&v3).unwrap(), e);
        assert_eq!(decode_ledger(&json(&e)).unwrap(), e);
        let mut short = v3.clone();
        short.pop();
        assert!(decode_ledger(&short).is_err());
        // known to be none (a new entry): version 3, one byte more
        let known_none = LedgerEntry {
            earlier: Some(Vec::new()),
            ..entry()
        };
        let bin = encode_ledger(&known_none);
        assert_eq!((bin[0], bin.len()), (LEDGER_V3, v2.len() + 1));
        assert_eq!(decode_ledger(&bin).unwrap(), known_none);
        // a value written by a dualpub before 2026-11-30 (tag 2, no count of earlier versions) reads with no
        // earlier digests: not known (its copies are judged by their stamps alone, as before)
        let read = decode_ledger(&v2).unwrap();
        assert_eq!(read.earlier, None);
        assert_eq!(read, entry());
        let mut old_json = serde_json::to_value(entry()).unwrap();
        old_json.as_object_mut().unwrap().remove("earlier");
        assert_eq!(
            decode_ledger(&serde_json::to_vec(&old_json).unwrap()).unwrap(),
            entry()
        );
    }

    #[test]
    fn an_acknowledgement_keeps_the_content_it_replaces_among_the_earlier_versions() {
        let mut e = entry();
        e.state = PlatformState::Public;
        let d = |n: u8| format!("{n:02x}").repeat(32);
        e.digest = Some(d(1));
        e.source_updated_at = "2026-11-30T10:00:00.000+08:00".into();
        e.acknowledge_content(Some(d(1)), "2026-11-30T10:01:00.000+08:00");
        assert_eq!(
            e.earlier,
            Some(Vec::new()),
            "the same content again is no earlier version (and from now on they are known)"
        );
        for n in 2..=6u8 {
            e.acknowledge_content(Some(d(n)), &format!("2026-11-30T10:0{n}:00.000+08:00"));
        }
        assert_eq!(e.digest, Some(d(6)));
        let kept: Vec<_> = e.earlier().iter().map(|v| v.digest.clone()).collect();
        assert_eq!(kept, [d(5), d(4), d(3)]);
        assert_eq!(
            e.earlier()[0].source_updated_at,
            "2026-11-30T10:05:00.000+08:00"
        );
        // content acknowledged before comes back: it is the current one, no longer an earlier one
        e.acknowledge_content(Some(d(4)), "2026-11-30T10:07:00.000+08:00");
        let kept: Vec<_> = e.earlier().iter().map(|v| v.digest.clone()).collect();
        assert_eq!(kept, [d(6), d(5), d(3)]);
    }

    #[test]
    fn ledger_values_round_trip_and_old_json_values_still_read() {
        let e = entry();
        let bin = encode_ledger(&e);
        assert!(bin.len() < json(&e).len() - 150);
        assert_eq!(decode_ledger(&bin).unwrap(), e);
        assert_eq!(decode_ledger(&json(&e)).unwrap(), e);
        let mut short = bin.clone();
        short.pop();
        assert!(decode_ledger(&short).is_err());
        let mut plain = e.clone();
        plain.digest = None;
        plain.rejected_digest = Some(String::new());
        plain.state = PlatformState::Pending;
        plain.kind = Kind::Permit;
        assert_eq!(decode_ledger(&encode_ledger(&plain)).unwrap(), plain);
    }

    #[test]
    fn a_version_1_store_is_upgraded_and_its_json_ledger_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let db = sled::open(&path).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(b"schema", &1u32.to_be_bytes())
                .unwrap();
            db.open_tree("ledger")
                .unwrap()
                .insert(b"XZCF:k", json(&entry()))
                .unwrap();
            db.flush().unwrap();
        }
        let store = Store::reopen(&path).unwrap();
        assert_eq!(store.ledger_get("XZCF:k").unwrap(), Some(entry()));
        assert_eq!(
            store.meta.get(b"schema").unwrap().unwrap().as_ref(),
            &SCHEMA_VERSION.to_be_bytes()
        );
    }

    #[test]
    fn index_keys_split_before_their_sequence_number() {
        let split = |k: &[u8]| {
            let (b, n) = k.split_at(bucket_cut(k));
            (b.to_vec(), n.to_vec())
        };
        let id = composite(Kind::Permit, "XK-00000123");
        assert_eq!(
            split(&id),
            (composite(Kind::Permit, "XK-000001"), b"23".to_vec())
        );
        // A trailing symbol after a number goes with the last two digits.
        let doc = expiry_key("20270101", "XZCF:914101:豫应急罚〔2026〕984号");
        let (bucket, name) = split(&doc);
        assert_eq!(name, "84号".as_bytes());
        assert_eq!(
            bucket,
            expiry_key("20270101", "XZCF:914101:豫应急罚〔2026〕9")
        );
        // Never into the kind or the date: an expiry bucket holds one date.
        assert_eq!(
            split(&composite(Kind::Permit, "7")).0,
            composite(Kind::Permit, "")
        );
        assert_eq!(
            split(&expiry_key("20270101", "k号")).0,
            expiry_key("20270101", "")
        );
        // Not UTF-8 after the separator: a bucket of its own.
        let odd = [b'p', SEP, 0xc3, 0x28, b'1'];
        assert_eq!(bucket_cut(&odd), odd.len());
    }

    #[test]
    fn buckets_apply_changes_in_order_and_vanish_when_empty() {
        let changes: BucketChanges = vec![
            (b"23".to_vec(), Some(b"K23".to_vec())),
            (b"05".to_vec(), Some(b"K05".to_vec())),
            (b"23".to_vec(), Some(b"K23b".to_vec())),
        ];
        let v = bucket_apply(None, &changes).unwrap().unwrap();
        assert_eq!(bucket_get(&v, b"23").unwrap(), Some(&b"K23b"[..]));
        assert_eq!(bucket_get(&v, b"05").unwrap(), Some(&b"K05"[..]));
        assert_eq!(bucket_get(&v, b"2").unwrap(), None);
        let names: Vec<&[u8]> = bucket_entries(&v)
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, vec![&b"05"[..], &b"23"[..]]);
        let gone = vec![(b"23".to_vec(), None), (b"05".to_vec(), None)];
        assert_eq!(bucket_apply(Some(&v), &gone).unwrap(), None);
        assert!(bucket_entries(&v[..v.len() - 1]).is_err());
    }

    #[test]
    fn outbox_batches_and_quarantine_entries_written_before_the_receipt_counts_still_read() {
        // As a dualpub before 2026-11-29 wrote them: no `unanswered`, `others_answered` or `source_updated_at`.
        let meta = br#"{"flow":"F","kind":"permit","created":"","items":[]}"#;
        let mut v = (meta.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(meta);
        v.extend_from_slice(b"<m/>");
        let b = decode_batch(&v).unwrap();
        assert_eq!((b.unanswered, b.others_answered), (0, false));
        assert_eq!(&b.body[..], b"<m/>");
        // and what is written for such a batch reads the same in an older dualpub (no new fields)
        assert_eq!(&encode_batch(&b), &v);
        let q: QuarantineEntry = serde_json::from_str(
            r#"{"kind":"penalty","source_id":"CF-1","key":null,"reason":"rejected","findings":[],
                "source":null,"first_seen":"","last_seen":"","meta":{"doc_no":"","party_name":"",
                "party_id_masked":"","decided_on":null,"display_until":null}}"#,
        )
        .unwrap();
        assert_eq!(q.source_updated_at, None);
    }

    #[test]
    fn the_pieces_of_a_split_batch_take_its_place_in_the_outbox() {
        let (_dir, store) = index_store();
        let batch = |flow: &str| OutboxBatch {
            flow: flow.into(),
            kind: Kind::Permit,
            created: String::new(),
            body: bytes::Bytes::from_static(b"<m/>"),
            items: Vec::new(),
            unanswered: 0,
            others_answered: false,
            envelope_proven: false,
            split_unproven: false,
        };
        // B1 holds a record's old version; B2, written after it, the new one.
        let (s1, s2) = (store.next_seq().unwrap(), store.next_seq().unwrap());
        store
            .commit_page(&PageCommit {
                batches: vec![(s1, batch("B1")), (s2, batch("B2"))],
                ..Default::default()
            })
            .unwrap();
        // B1 is refused as too large and split, and its first half split again.
        let b1 = OutboxId::new(s1);
        store
            .outbox_split(
                &b1,
                &[(b1.piece(1), batch("B1.1")), (b1.piece(2), batch("B1.2"))],
            )
            .unwrap();
        let first = b1.piece(1);
        store
            .outbox_split(
                &first,
                &[
                    (first.piece(1), batch("B1.1.1")),
                    (first.piece(2), batch("B1.1.2")),
                ],
            )
            .unwrap();
        // A run that stops here resends them before B2: the old version can never follow the new one.
        let order: Vec<String> = store
            .outbox()
            .unwrap()
            .into_iter()
            .map(|(_, b)| b.flow)
            .collect();
        assert_eq!(order, ["B1.1.1", "B1.1.2", "B1.2", "B2"]);
        // and a receipt removes exactly its piece
        let (id, _) = store.outbox().unwrap().remove(0);
        store
            .commit_receipt(&ReceiptCommit {
                outbox_seq: Some(id),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(store.outbox_len(), 3);
    }

    fn index_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        (dir, store)
    }

    fn held(id: &str, key: &str, codes: &[&str]) -> QuarantineEntry {
        QuarantineEntry {
            kind: Kind::Penalty,
            source_id: id.into(),
            key: Some(key.into()),
            reason: "invalid".into(),
            findings: codes
                .iter()
                .map(|c| StoredFinding {
                    code: (*c).into(),
                    field: "CF_JDRQ".into(),
                    zh: String::new(),
                    en: String::new(),
                })
                .collect(),
            source: serde_json::json!({"id": id}),
            first_seen: String::new(),
            last_seen: String::new(),
            meta: RecordMeta::default(),
            source_updated_at: None,
            read_at: None,
        }
    }

    /// The empty store a report reads when there is none yet lives in a directory of its own under `$TMPDIR`, gone
    /// once it is dropped; it was in `/dev/shm` (sled's default for temporary stores), where a killed reconcile
    /// left it in memory.
    #[test]
    fn an_empty_store_lives_under_tmpdir_until_dropped() {
        let ours = || -> Vec<std::path::PathBuf> {
            std::fs::read_dir(std::env::temp_dir())
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().is_some_and(|n| {
                        n.to_string_lossy()
                            .starts_with(&format!("dualpub-empty-store-{}-", std::process::id()))
                    })
                })
                .collect()
        };
        let store = Store::empty(Path::new("/nonexistent/store")).unwrap();
        assert!(store.quarantine_is_empty());
        assert!(store.ledger_get("XZXK:1").unwrap().is_none());
        let dirs = ours();
        assert_eq!(dirs.len(), 1, "{dirs:?}");
        drop(store);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while dirs[0].exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!dirs[0].exists(), "{dirs:?} left behind");
    }

    /// A receipt decides on the quarantine entry it read before its transaction (remove it: the version was
    /// acknowledged; replace it: rejected). An entry the engine changed meanwhile — a newer version of the record
    /// quarantined while the receipt was being applied — was removed or replaced all the same, and the newer
    /// version's findings were lost (helper-61). It is left as it is; the decision holds on the entry it was made on.
    #[test]
    fn a_receipt_leaves_a_quarantine_entry_changed_since_it_was_read() {
        let (_dir, store) = index_store();
        let put = |q: QuarantineEntry| {
            store
                .commit_receipt(&ReceiptCommit {
                    quarantine_put: vec![q],
                    ..ReceiptCommit::default()
                })
                .unwrap()
        };
        let codes = |store: &Store| {
            store.quarantine_get(Kind::Penalty, "P1").unwrap().map(|q| {
                q.findings
                    .iter()
                    .map(|f| f.code.clone())
                    .collect::<Vec<_>>()
            })
        };
        let seen_as =
            |q: Option<QuarantineEntry>| HashMap::from([((Kind::Penalty, "P1".into()), q)]);
        put(held("P1", "XZCF:1", &["OLD"]));
        // the receipt reads the entry …
        let seen = store.quarantine_get(Kind::Penalty, "P1").unwrap();
        // … the engine quarantines a newer version …
        put(held("P1", "XZCF:1", &["NEWER"]));
        // … and the receipt, which acknowledged the old version, would remove the entry, or, which rejected it,
        // replace it
        store
            .commit_receipt(&ReceiptCommit {
                quarantine_del: vec![(Kind::Penalty, "P1".into())],
                quarantine_seen: seen_as(seen.clone()),
                ..ReceiptCommit::default()
            })
            .unwrap();
        assert_eq!(codes(&store), Some(vec!["NEWER".to_string()]));
        store
            .commit_receipt(&ReceiptCommit {
                quarantine_put: vec![held("P1", "XZCF:1", &["REJECTED"])],
                quarantine_seen: seen_as(seen),
                ..ReceiptCommit::default()
            })
            .unwrap();
        assert_eq!(codes(&store), Some(vec!["NEWER".to_string()]));
        // none there when read, one there now: left too
        store
            .commit_receipt(&ReceiptCommit {
                quarantine_put: vec![held("P1", "XZCF:1", &["REJECTED"])],
                quarantine_seen: seen_as(None),
                ..ReceiptCommit::default()
            })
            .unwrap();
        assert_eq!(codes(&store), Some(vec!["NEWER".to_string()]));
        // the entry still the one read: the decision holds
        let seen = store.quarantine_get(Kind::Penalty, "P1").unwrap();
        store
            .commit_receipt(&ReceiptCommit {
                quarantine_put: vec![held("P1", "XZCF:1", &["REJECTED"])],
                quarantine_seen: seen_as(seen),
                ..ReceiptCommit::default()
            })
            .unwrap();
        assert_eq!(codes(&store), Some(vec!["REJECTED".to_string()]));
        let seen = store.quarantine_get(Kind::Penalty, "P1").unwrap();
        store
            .commit_receipt(&ReceiptCommit {
                quarantine_del: vec![(Kind::Penalty, "P1".into())],
                quarantine_seen: seen_as(seen),
                ..ReceiptCommit::default()
            })
            .unwrap();
        assert_eq!(codes(&store), None);
    }

    #[test]
    fn a_quarantined_version_is_later_than_an_older_copy_only_when_it_was_not_stamped_ahead() {
        let mut q = held("P1", "XZCF:1", &["X"]);
        q.source["updated_at"] = "2026-11-27T10:00:00.000+08:00".into();
        q.last_seen = "2026-11-27T10:05:00.000+08:00".into();
        assert!(q.holds_later_than("2026-11-27T09:59:59.999+08:00"));
        assert!(!q.holds_later_than("2026-11-27T10:00:00.000+08:00"));
        // the same instant written in UTC
        assert!(!q.holds_later_than("2026-11-27T02:00:00.000Z"));
        // a rejected record's entry names its version when it keeps no source text
        q.source = serde_json::Value::Null;
        assert!(!q.holds_later_than("2026-11-27T09:00:00.000+08:00"));
        q.source_updated_at = Some("2026-11-27T10:00:00.000+08:00".into());
        assert!(q.holds_later_than("2026-11-27T09:00:00.000+08:00"));
        // a copy kept as its JSON text (a lone surrogate no `serde_json::Value` holds)
        q.source_updated_at = None;
        q.source =
            r#"{"id":"P1","updated_at":"2026-11-27T10:00:00.000+08:00","note":"\ud800"}"#.into();
        assert!(q.holds_later_than("2026-11-27T09:00:00.000+08:00"));
        q.source_updated_at = Some("2026-11-27T10:00:00.000+08:00".into());
        // stamped in the future when read: says nothing of what came after
        q.last_seen = "2026-11-27T09:30:00.000+08:00".into();
        assert!(!q.holds_later_than("2026-11-27T09:00:00.000+08:00"));
        q.last_seen = "not a time".into();
        assert!(!q.holds_later_than("2026-11-27T09:00:00.000+08:00"));
        // rejected: read when its message was made, not when the receipt came
        q.last_seen = "2026-11-27T10:05:00.000+08:00".into();
        q.read_at = Some("2026-11-27T09:30:00.000+08:00".into());
        assert!(!q.holds_later_than("2026-11-27T09:00:00.000+08:00"));
    }

    fn due_ids(store: &Store) -> Vec<String> {
        let due = store.quarantine_due(Kind::Penalty).unwrap();
        due.into_iter().map(|e| e.source_id).collect()
    }

    fn waiting_ids(store: &Store, key: &str) -> Vec<String> {
        let keys = std::collections::HashSet::from([key.to_string()]);
        let waiting = store
            .quarantine_waiting_for(Kind::Penalty, Some(&keys))
            .unwrap();
        waiting.into_iter().map(|(id, _, _)| id).collect()
    }

    /// A cron run looked through every quarantined record for decision dates come due and freed document numbers
    /// (2 s and 400 MiB a run with 200,000 quarantined): the two it looks for are indexed, and the indexes follow
    /// every change of an entry.
    #[test]
    fn the_quarantine_indexes_follow_its_entries() {
        let (_dir, store) = index_store();
        let put = |q: Vec<QuarantineEntry>, del: Vec<&str>| {
            store
                .commit_page(&PageCommit {
                    quarantine_put: q,
                    quarantine_del: del
                        .into_iter()
                        .map(|id| (Kind::Penalty, id.to_string()))
                        .collect(),
                    ..Default::default()
                })
                .unwrap()
        };
        put(
            vec![
                held("CF-1", "XZCF:a", &["date_out_of_range"]),
                held("CF-2", "XZCF:b", &["date_out_of_range", "required"]),
                held("CF-3", "XZCF:a", &["key_reused"]),
                held("CF-4", "XZCF:c", &["uscc_check"]),
            ],
            vec![],
        );
        assert_eq!(due_ids(&store), ["CF-1"]);
        assert_eq!(waiting_ids(&store, "XZCF:a"), ["CF-3"]);
        assert!(waiting_ids(&store, "XZCF:b").is_empty());
        assert!(store.quarantine_due(Kind::Permit).unwrap().is_empty());
        // held back again for another reason, and a receipt's rejection
        put(
            vec![
                held("CF-1", "XZCF:a", &["required"]),
                held("CF-2", "XZCF:b", &["date_out_of_range"]),
                held("CF-4", "XZCF:b", &["key_reused"]),
            ],
            vec!["CF-3"],
        );
        assert_eq!(due_ids(&store), ["CF-2"]);
        assert!(waiting_ids(&store, "XZCF:a").is_empty());
        assert_eq!(waiting_ids(&store, "XZCF:b"), ["CF-4"]);
        let mut rejected = held("CF-2", "XZCF:b", &["date_out_of_range"]);
        rejected.reason = "rejected".into();
        store
            .commit_receipt(&ReceiptCommit {
                quarantine_put: vec![rejected],
                quarantine_del: vec![(Kind::Penalty, "CF-4".into())],
                ..Default::default()
            })
            .unwrap();
        assert!(due_ids(&store).is_empty());
        assert!(waiting_ids(&store, "XZCF:b").is_empty());
        assert_eq!(store.quarantine_len(), 2);
    }

    #[test]
    fn a_quarantined_record_is_found_by_its_source_id_or_its_key() {
        let (_dir, store) = index_store();
        let mut permit = held("XK-1", "XZXK:x", &["required"]);
        permit.kind = Kind::Permit;
        store
            .commit_page(&PageCommit {
                quarantine_put: vec![
                    held("CF-1", "XZCF:a\"b〔2026〕1号", &["required"]),
                    held("CF-2", "XZCF:c", &["required"]),
                    permit,
                ],
                ..Default::default()
            })
            .unwrap();
        let found = |name: &str| store.quarantine_find(name).unwrap().map(|e| e.source_id);
        assert_eq!(found("CF-2").as_deref(), Some("CF-2"));
        assert_eq!(found("XK-1").as_deref(), Some("XK-1"));
        assert_eq!(found("XZCF:a\"b〔2026〕1号").as_deref(), Some("CF-1"));
        assert_eq!(found("XZXK:x").as_deref(), Some("XK-1"));
        assert_eq!(found("XZCF:a"), None);
        assert_eq!(found("CF-3"), None);
    }

    #[test]
    fn a_version_3_store_gets_its_quarantine_indexed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).unwrap();
            store
                .commit_page(&PageCommit {
                    quarantine_put: vec![
                        held("CF-1", "XZCF:a", &["date_out_of_range"]),
                        held("CF-3", "XZCF:a", &["key_reused"]),
                        held("CF-4", "XZCF:c", &["uscc_check"]),
                    ],
                    ..Default::default()
                })
                .unwrap();
            // as schema 3 left it: no indexes
            store.quarantine_due.clear().unwrap();
            store.quarantine_waiting.clear().unwrap();
            store.meta.insert(b"schema", &3u32.to_be_bytes()).unwrap();
            store.flush().unwrap();
        }
        let store = Store::reopen(&path).unwrap();
        assert_eq!(due_ids(&store), ["CF-1"]);
        assert_eq!(waiting_ids(&store, "XZCF:a"), ["CF-3"]);
        assert_eq!(
            store.meta.get(b"schema").unwrap().unwrap().as_ref(),
            &SCHEMA_VERSION.to_be_bytes()
        );
    }

    /// A version-4 store (before ledger values could hold earlier versions) has its number raised to 5 on open, so
    /// that a dualpub of version 4 refuses it as newer once it may hold such values; what it holds is kept.
    #[test]
    fn a_version_4_store_is_raised_to_5_keeping_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).unwrap();
            store
                .commit_receipt(&ReceiptCommit {
                    ledger: vec![("XZCF:k".into(), entry())],
                    quarantine_put: vec![held("CF-1", "XZCF:a", &["date_out_of_range"])],
                    ..Default::default()
                })
                .unwrap();
            store.meta.insert(b"schema", &4u32.to_be_bytes()).unwrap();
            store.flush().unwrap();
        }
        let store = Store::reopen(&path).unwrap();
        assert_eq!(
            store.meta.get(b"schema").unwrap().unwrap().as_ref(),
            &5u32.to_be_bytes()
        );
        assert_eq!(SCHEMA_VERSION, 5);
        assert_eq!(store.ledger_get("XZCF:k").unwrap(), Some(entry()));
        assert_eq!(due_ids(&store), ["CF-1"]);
    }

    #[test]
    fn released_keys_outlive_the_process_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let store = Store::open(&path).unwrap();
            let commit = PageCommit {
                released: vec![
                    (Kind::Permit, "XZXK:S:甲〔2026〕1号".into()),
                    (Kind::Permit, "XZXK:S:甲〔2026〕2号".into()),
                    (Kind::Penalty, "XZCF:S:罚〔2026〕1号".into()),
                ],
                ..PageCommit::default()
            };
            store.commit_page(&commit).unwrap();
            store.flush().unwrap();
        }
        // A run stopped after the page: the next one finds the keys.
        let store = Store::open(&path).unwrap();
        let permits = store.released_keys(Kind::Permit).unwrap();
        assert_eq!(permits.len(), 2);
        assert!(permits.contains("XZXK:S:甲〔2026〕2号"));
        store.released_clear(Kind::Permit, &permits).unwrap();
        assert!(store.released_keys(Kind::Permit).unwrap().is_empty());
        assert_eq!(
            store
                .released_keys(Kind::Penalty)
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            ["XZCF:S:罚〔2026〕1号"]
        );
    }

    #[test]
    fn source_links_are_packed_and_read_back() {
        let (_dir, store) = index_store();
        let ids: Vec<String> = (0..3000).map(|i| format!("XK-{i:08}")).collect();
        for page in ids.chunks(1000) {
            let commit = PageCommit {
                by_source: page
                    .iter()
                    .map(|id| (Kind::Permit, id.clone(), format!("XZXK:{id}")))
                    .collect(),
                ..Default::default()
            };
            store.commit_page(&commit).unwrap();
        }
        // A record whose document number changed points to its new key.
        store
            .commit_page(&PageCommit {
                by_source: vec![(Kind::Permit, ids[1234].clone(), "XZXK:new".into())],
                ..Default::default()
            })
            .unwrap();
        for (i, id) in ids.iter().enumerate() {
            let want = if i == 1234 {
                "XZXK:new".to_string()
            } else {
                format!("XZXK:{id}")
            };
            assert_eq!(store.by_source_get(Kind::Permit, id).unwrap(), Some(want));
        }
        assert_eq!(store.by_source_get(Kind::Penalty, &ids[0]).unwrap(), None);
        assert_eq!(
            store.by_source_get(Kind::Permit, "XK-99999999").unwrap(),
            None
        );
        // 3,000 links in 30 sled keys: memory no longer grows one key per record.
        assert_eq!(store.by_source.len(), 30);
    }

    #[test]
    fn expiry_entries_are_packed_added_removed_and_found_by_date() {
        let (_dir, store) = index_store();
        let key = |i: u32| format!("XZCF:914101:豫应急罚〔2026〕{i}号");
        let date = |i: u32| format!("202701{:02}", 1 + i % 3);
        let adds: Vec<(String, String, bool)> =
            (1..=600).map(|i| (date(i), key(i), true)).collect();
        for chunk in adds.chunks(200) {
            store
                .commit_receipt(&ReceiptCommit {
                    expiry: chunk.to_vec(),
                    ..Default::default()
                })
                .unwrap();
        }
        let removed: Vec<(String, String, bool)> = (1..=600)
            .filter(|i| i % 5 == 0)
            .map(|i| (date(i), key(i), false))
            .collect();
        store
            .commit_receipt(&ReceiptCommit {
                expiry: removed,
                ..Default::default()
            })
            .unwrap();
        let mut got = store.expired_before("20270103").unwrap();
        got.sort();
        let mut want: Vec<String> = (1..=600)
            .filter(|i| i % 5 != 0 && date(*i).as_str() < "20270103")
            .map(key)
            .collect();
        want.sort();
        assert_eq!(got, want);
        assert!(
            store.expiry.len() < 40,
            "{} expiry keys",
            store.expiry.len()
        );
    }

    #[test]
    fn a_version_2_store_gets_its_indexes_packed_even_after_an_interrupted_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        {
            let db = sled::open(&path).unwrap();
            db.open_tree("meta")
                .unwrap()
                .insert(b"schema", &2u32.to_be_bytes())
                .unwrap();
            let by_source = db.open_tree("by_source").unwrap();
            let expiry = db.open_tree("expiry").unwrap();
            let ledger = db.open_tree("ledger").unwrap();
            for i in 0..250 {
                let id = format!("CF-{i:08}");
                let mut e = entry();
                e.source_id = id.clone();
                ledger
                    .insert(format!("XZCF:{id}").as_bytes(), encode_ledger(&e))
                    .unwrap();
                by_source
                    .insert(
                        composite(Kind::Penalty, &id),
                        format!("XZCF:{id}").as_bytes(),
                    )
                    .unwrap();
                expiry
                    .insert(
                        expiry_key(
                            if i < 100 { "20260101" } else { "20280101" },
                            &format!("XZCF:{id}"),
                        ),
                        &[],
                    )
                    .unwrap();
            }
            // What an upgrade stopped between merging a chunk and removing it from the old tree leaves: the
            // first 30 links in buckets and still in the old tree, version unchanged.
            let half: Vec<(Vec<u8>, Option<Vec<u8>>)> = by_source
                .iter()
                .take(30)
                .map(|r| r.map(|(k, v)| (k.to_vec(), Some(v.to_vec()))).unwrap())
                .collect();
            let buckets = db.open_tree("by_source_buckets").unwrap();
            for (bucket, changes) in by_bucket(half, bucket_cut) {
                buckets
                    .insert(bucket, bucket_apply(None, &changes).unwrap().unwrap())
                    .unwrap();
            }
            db.flush().unwrap();
        }
        // Upgraded 100 entries between reopenings (the real chunk is 300,000): several rounds.
        let store = Store::reopen_with(&path, 100).unwrap();
        assert_eq!(
            store.meta.get(b"schema").unwrap().unwrap().as_ref(),
            &SCHEMA_VERSION.to_be_bytes()
        );
        for i in 0..250 {
            let id = format!("CF-{i:08}");
            assert_eq!(
                store.by_source_get(Kind::Penalty, &id).unwrap(),
                Some(format!("XZCF:{id}"))
            );
            let e = store.ledger_get(&format!("XZCF:{id}")).unwrap().unwrap();
            assert_eq!(e.source_id, id);
        }
        assert_eq!(store.ledger_iter().count(), 250);
        let mut expired = store.expired_before("20270101").unwrap();
        expired.sort();
        assert_eq!(
            expired,
            (0..100)
                .map(|i| format!("XZCF:CF-{i:08}"))
                .collect::<Vec<_>>()
        );
        let names = store.db.tree_names();
        assert!(!names
            .iter()
            .any(|n| [&b"ledger"[..], b"by_source", b"expiry"].contains(&n.as_ref())));
        drop(store);
        // Opened again: nothing to do, same answers.
        let store = Store::reopen(&path).unwrap();
        assert_eq!(
            store
                .by_source_get(Kind::Penalty, "CF-00000249")
                .unwrap()
                .as_deref(),
            Some("XZCF:CF-00000249")
        );
    }

    #[test]
    fn a_damaged_index_bucket_is_reported_as_damage() {
        let (_dir, store) = index_store();
        let key = composite(Kind::Permit, "XK-00000123");
        store
            .by_source
            .insert(&key[..bucket_cut(&key)], &[0, 0, 0, 9, b'x'][..])
            .unwrap();
        assert!(matches!(
            store.by_source_get(Kind::Permit, "XK-00000123"),
            Err(StoreError::Damaged { .. })
        ));
        let commit = PageCommit {
            by_source: vec![(Kind::Permit, "XK-00000123".into(), "XZXK:k".into())],
            ..Default::default()
        };
        assert!(matches!(
            store.commit_page(&commit),
            Err(StoreError::Damaged { .. })
        ));
    }

    #[test]
    fn a_watched_job_that_does_not_finish_in_time_is_given_up() {
        let quick = watched(std::time::Duration::from_secs(5), || 7);
        assert_eq!(quick, Some(7));
        let stuck = watched(std::time::Duration::from_millis(50), || {
            std::thread::sleep(std::time::Duration::from_secs(2));
            7
        });
        assert_eq!(stuck, None);
    }

    #[test]
    fn ledger_entries_are_packed_read_back_and_listed_by_kind() {
        let (_dir, store) = index_store();
        let keys: Vec<String> = (1..=1500)
            .map(|i| format!("XZCF:914101:豫应急罚〔2026〕{i}号"))
            .chain((0..500).map(|i| format!("XZXK:914101:（豫）WH安许证字〔2026〕{i:06}")))
            .collect();
        for chunk in keys.chunks(200) {
            let ledger = chunk
                .iter()
                .map(|k| {
                    let mut e = entry();
                    e.source_id = k.clone();
                    (k.clone(), e)
                })
                .collect();
            store
                .commit_receipt(&ReceiptCommit {
                    ledger,
                    ..Default::default()
                })
                .unwrap();
        }
        // A later receipt changes one entry of a bucket and leaves its neighbours alone.
        let mut changed = entry();
        changed.state = PlatformState::Public;
        changed.source_id = keys[41].clone();
        store
            .commit_receipt(&ReceiptCommit {
                ledger: vec![(keys[41].clone(), changed.clone())],
                ..Default::default()
            })
            .unwrap();
        for (i, k) in keys.iter().enumerate() {
            let got = store.ledger_get(k).unwrap().unwrap();
            assert_eq!(got.source_id, *k);
            assert_eq!(got.state == PlatformState::Public, i == 41, "{k}");
        }
        assert_eq!(
            store
                .ledger_get("XZCF:914101:豫应急罚〔2026〕1501号")
                .unwrap(),
            None
        );
        let mut penalties: Vec<String> = store
            .ledger_iter_prefix("XZCF:")
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(penalties.len(), 1500);
        penalties.sort();
        penalties.dedup();
        let mut want = keys[..1500].to_vec();
        want.sort();
        assert_eq!(penalties, want);
        assert_eq!(store.ledger_iter().count(), 2000);
        assert_eq!(store.ledger_counts().unwrap()["penalty:public"], 1);
        // 2,000 entries in a few hundred sled keys (ten consecutive numbers a bucket).
        assert!(
            store.ledger.len() <= 250,
            "{} ledger keys",
            store.ledger.len()
        );
    }
}
