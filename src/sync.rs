//! `dualpub sync`: one cron run. Read the change feed from the checkpoint (minus an overlap window, so late
//! commits are caught), map and validate, and push idempotently:
//!
//! 1. drain the outbox left by an earlier run, with the same flow ids (the platform replays a committed flow's
//!    first receipt, so nothing is applied twice);
//! 2. withdraw public penalties whose display period ended;
//! 3. for each kind, page through the feed; each page's batches, quarantine changes and the cursor are written
//!    to the store in one transaction *before* anything is sent;
//! 4. send up to `concurrency` batches at once, never two batches holding the same key, and apply each receipt
//!    (ledger, quarantine for rejections, outbox removal) in one transaction.
//!
//! Records whose mapped digest equals the acknowledged one cost no push. A kill at any instant loses nothing:
//! what was not durable is read again from the source, and the platform is idempotent by key and content.

use crate::config::Config;
use crate::findings::Finding;
use crate::ids::{mask_id, mask_ids_in};
use crate::mapping::{Mapped, MappingSet};
use crate::model::{china_offset, Kind, PlatformRecord};
use crate::platform_client::PlatformClient;
use crate::retry::{Budget, GiveUp};
use crate::source_client::SourceClient;
use crate::source_schema::{RawHead, SourceRecord, SourceStatus};
use crate::store::{
    Cursor, LedgerEntry, Op, OutboxBatch, OutboxId, OutboxItem, PageCommit, PlatformState,
    QuarantineEntry, ReceiptCommit, RecordMeta, Store, StoreError, StoredFinding,
};
use crate::xml::{self, ExchangeMessage, MessageOp, MessageRecord, Receipt, ResultStatus};
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::task::JoinSet;

/// Largest message body dualpub builds (the platform takes 10 MiB).
const MAX_MESSAGE_BYTES: usize = 8 << 20;

#[derive(Debug, Clone)]
pub struct SyncOptions {
    pub kinds: Vec<Kind>,
    pub dry_run: bool,
    pub today: NaiveDate,
    pub progress: bool,
    /// The retry budget to spend, when runs share one (a `reconcile --repair` sends in several runs, and its
    /// operator set one budget for the command); `None`: a budget of its own, `[platform] retry_budget_secs`.
    pub budget: Option<Arc<Budget>>,
}

/// The run summary printed at the end and kept in the store (`status` shows the last ones). Its JSON form is
/// the stable `--json` output documented in the README.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// What made the run: `sync`, `quarantine retry` or `reconcile --repair` (empty in runs stored before
    /// 2026-11-30), so `status` does not show an operator's retry as a cron sync.
    #[serde(default)]
    pub command: String,
    pub started_at: String,
    pub finished_at: String,
    pub dry_run: bool,
    pub kinds: Vec<Kind>,
    /// Source records read (including the overlap window).
    pub read: u64,
    /// Records whose platform copy is already current: no push.
    pub unchanged: u64,
    /// Records that must not be public and are not (a revoked penalty, a display period over, never published or
    /// withdrawn before): nothing to send. Counted apart from `unchanged`, which a first run would otherwise show
    /// for records it never sent.
    pub not_public: u64,
    /// Records sent (upserts and withdrawals), including resent outbox batches.
    pub pushed: u64,
    pub accepted: u64,
    /// Records the platform already held as sent: upserts it answered `unchanged` (held with that content), and
    /// withdrawals with nothing to take down (`unchanged`: not public; `unknown_key`: never held, or lost).
    pub platform_unchanged: u64,
    pub rejected: u64,
    /// Records newly quarantined by local validation in this run.
    pub quarantined: u64,
    pub withdrawn: u64,
    pub retries: u64,
    pub outbox_resent: u64,
    /// Quarantined versions about to be sent (`quarantine retry`, or a record waiting for a number this run
    /// freed) that the enforcement system no longer serves (deleted, or changed since): not sent, removed from
    /// quarantine.
    #[serde(default)]
    pub gone_from_source: u64,
    /// Records given up on for want of an answer ([`NO_RESULT`]), offered again an hour later and still left out by
    /// the platform's receipts: back in quarantine as they were, not counted as `rejected` again.
    pub still_unanswered: u64,
    /// Copies the feed served in a version older than the one the platform's state follows (a lagging replica of the
    /// enforcement system, say): not sent, so that no older version is applied over a newer one.
    #[serde(default)]
    pub older_copies: u64,
    /// Why the platform could not be reached, when a run that had nothing to send never reached it (its opening
    /// login, tried again at the end, failed for another reason than a refused app key or secret): nothing was due,
    /// so nothing is lost, but a wrong `[platform] url` or an outage must not look like success.
    #[serde(default)]
    pub platform_unreachable: Option<String>,
    /// Records in quarantine that were validated under other settings than this run's: the agency's name, code or
    /// domain, or the mapping files, changed since the last run (see `Config::validation_fingerprint`). Said once, by
    /// the first run after the change; `quarantine retry` validates them again.
    #[serde(default)]
    pub quarantine_to_recheck: Option<u64>,
    pub elapsed_ms: u64,
    /// `ok`, `attention` (quarantined or rejected records) or `aborted`.
    pub outcome: String,
    pub error: Option<String>,
}

impl RunSummary {
    pub fn needs_attention(&self) -> bool {
        self.quarantined > 0
            || self.rejected > 0
            || self.older_copies > 0
            || self.platform_unreachable.is_some()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Remote(#[from] GiveUp),
    #[error("cannot start the HTTP client: {0}")]
    Client(String),
    /// The platform's receipts, sent again, still gave no usable result for some records (they stay in the outbox).
    #[error("{0}")]
    Unanswered(String),
}

/// Facts of a mapped record that reports need, with the party's ID number masked, also where the name holds one
/// (`id_in_text`: reconcile printed it whole, and the quarantine keeps these facts).
pub fn record_meta(kind: Kind, src: &SourceRecord, rec: &PlatformRecord) -> RecordMeta {
    let party = src.party.as_ref();
    let id = party
        .and_then(|p| p.id_no.as_deref().or(p.credit_code.as_deref()))
        .map(mask_id)
        .unwrap_or_default();
    let display_until = match kind {
        Kind::Penalty => rec
            .get("CF_GSJZQ")
            .and_then(crate::validate::parse_date)
            .map(|d| d.to_string()),
        Kind::Permit => None,
    };
    RecordMeta {
        // The first non-empty of the two, as XK_WSH takes it (an empty `doc_no` left the column empty while the
        // record went out under its permit number).
        doc_no: [src.doc_no.as_deref(), src.permit_no.as_deref()]
            .into_iter()
            .flatten()
            .map(crate::model::trim)
            .find(|s| !s.is_empty())
            .unwrap_or_default()
            .to_string(),
        party_name: crate::ids::mask_ids_in_owned(
            party.and_then(|p| p.name.clone()).unwrap_or_default(),
        ),
        party_id_masked: id,
        decided_on: src
            .decided_on
            .as_deref()
            .and_then(crate::mapping::parse_source_date)
            .map(|d| d.to_string()),
        display_until,
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now()
        .with_timezone(&china_offset())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
}

/// How many times one run offers freed document numbers to the records quarantined for them (each round's
/// sends may free more: a chain of renumbered records).
const RECHECK_ROUNDS: usize = 16;

/// How far past this machine's clock a feed time may be before a run warns of it.
const FUTURE_TOLERANCE: chrono::Duration = chrono::Duration::minutes(5);

/// The fingerprint of this run's settings that validate records, and how many records in quarantine were judged
/// under other settings (`None`: none, the settings did not change, or the store never noted any).
fn settings_check(cfg: &Config, mappings: &MappingSet, store: &Store) -> (String, Option<u64>) {
    let now = cfg.validation_fingerprint(mappings);
    let changed = match store.validated_with() {
        Ok(Some(before)) => before != now && !store.quarantine_is_empty(),
        _ => false,
    };
    let n = changed.then(|| store.quarantine_len() as u64);
    (now, n)
}

/// The overlap start: `since` moved back by the window, in the source's format: with the offset the feed wrote
/// (`Z` kept as `Z`). Until 2026-11-30 always in +08:00: a source that compares the text of `since`, or drops its
/// offset, would have skipped eight hours of records stamped in UTC.
fn minus_overlap(since: &str, overlap: chrono::Duration) -> String {
    match chrono::DateTime::parse_from_rfc3339(since) {
        Ok(t) => (t - overlap)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, since.ends_with(['Z', 'z'])),
        Err(_) => since.to_string(),
    }
}

/// Whether source time `a` is later than `b` (both RFC 3339, compared as instants); false when either is not.
fn newer(a: &str, b: &str) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(a),
        chrono::DateTime::parse_from_rfc3339(b),
    ) {
        (Ok(a), Ok(b)) => a > b,
        _ => false,
    }
}

/// Sets `last_pushed` to `made` (the message's `created`: when its records were read) when the platform's state, just
/// acknowledged, follows a version of the source record other than the one it `followed` before (`None`: none
/// acknowledged), so that `last_pushed` stays the time the version it follows was read. Not the receipt's time: a
/// version stamped in the future and acknowledged after its stamp (the message waited in the outbox through an
/// outage) would be trusted, and an edit stamped correctly before that stamp taken for an older copy.
fn acknowledged(e: &mut LedgerEntry, followed: Option<&str>, made: &str) {
    if e.last_pushed.is_none() || followed != Some(e.source_updated_at.as_str()) {
        e.last_pushed = Some(made.to_string());
    }
}

fn cursor_after(a: &Cursor, b: &Cursor) -> bool {
    let ta = chrono::DateTime::parse_from_rfc3339(&a.since).ok();
    let tb = chrono::DateTime::parse_from_rfc3339(&b.since).ok();
    match (ta, tb) {
        (Some(x), Some(y)) if x != y => x > y,
        (Some(_), Some(_)) => a.after_id > b.after_id,
        _ => (a.since.as_str(), a.after_id.as_str()) > (b.since.as_str(), b.after_id.as_str()),
    }
}

/// A feed item's position, `(updated_at, id)`, as the raw JSON gives it (the record read from it when it reads).
/// None when `updated_at` is not an RFC 3339 time: such a position cannot be asked for again (the source refuses
/// `since=garbage`), so it must never become the checkpoint; the item itself is still processed.
fn position(src: Option<&SourceRecord>, raw: &RawValue) -> Option<Cursor> {
    let pos = match src {
        Some(s) => s.updated_at.as_ref().map(|u| Cursor {
            since: u.clone(),
            after_id: s.id.clone(),
        }),
        None => {
            let head = RawHead::of(raw.get());
            Some(Cursor {
                since: head.updated_at_text()?,
                after_id: head.id_text()?,
            })
        }
    }?;
    chrono::DateTime::parse_from_rfc3339(&pos.since).ok()?;
    Some(pos)
}

/// A raw item's name in quarantine (see [`crate::source_schema::record_name`]).
fn raw_id_of(raw: &RawValue) -> String {
    crate::source_schema::record_name(raw.get())
}

/// A raw item as quarantine keeps it (see [`held_copy`]).
fn raw_value(raw: &RawValue) -> serde_json::Value {
    held_copy(raw.get())
}

/// A source record's JSON text as quarantine keeps it: the record as a `serde_json::Value` object; an item that
/// is no object, or that no `Value` can hold (a lone surrogate, a number out of range), as its JSON text in a
/// string, so the entry still shows what the source sent and a retry sends it again as it came.
fn held_copy(text: &str) -> serde_json::Value {
    match serde_json::from_str(text) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::Value::String(text.to_string()),
    }
}

/// The `updated_at` of the copy quarantine holds, in either form.
fn held_updated_at(source: &serde_json::Value) -> Option<String> {
    match source {
        serde_json::Value::String(text) => RawHead::of(text).updated_at_text(),
        v => v.get("updated_at")?.as_str().map(str::to_string),
    }
}

/// The inverse of [`raw_value`]: the copy quarantine holds, as JSON text to read again; `None` for an entry that
/// holds no copy (`null`: made before unreadable records were kept).
pub fn held_raw(source: &serde_json::Value) -> Option<Box<RawValue>> {
    match source {
        serde_json::Value::Null => None,
        serde_json::Value::String(text) => RawValue::from_string(text.clone())
            .ok()
            .or_else(|| serde_json::value::to_raw_value(source).ok()),
        v => serde_json::value::to_raw_value(v).ok(),
    }
}

/// A version of a record to send again (`quarantine retry`, the hourly offer of records given up on): the record's
/// own JSON text, or — for a rejected record whose entry holds no copy of it (a batch resent after a restart has
/// no source text) — only where to look it up in the feed. A distinct variant, not a mark in the text, so that no
/// source record can pass for a look-up (one ending with a field named like the old mark was never sent).
#[derive(Debug, Clone)]
pub enum HeldVersion {
    /// The record's JSON text, as quarantine holds it or as the feed served it.
    Copy(Box<RawValue>),
    /// The record's id and the `updated_at` of the version sent: never mapped or sent itself, only the feed's copy
    /// of that version is.
    LookUp {
        source_id: String,
        updated_at: String,
    },
}

impl HeldVersion {
    /// What a quarantine entry offers to send again: its copy of the source record, else the version to look up
    /// ([`HeldVersion::look_up`]); `None` when it has neither.
    pub fn of_entry(
        source: &serde_json::Value,
        source_id: &str,
        source_updated_at: Option<&str>,
    ) -> Option<HeldVersion> {
        held_raw(source)
            .map(HeldVersion::Copy)
            .or_else(|| HeldVersion::look_up(source_id, source_updated_at?))
    }

    /// The version of `source_id` at `updated_at`, to look up in the feed. The look-up matches the feed's records
    /// by their quarantine name ([`crate::source_schema::record_name`]), so `source_id` must be the name of a
    /// record with that id: the id as a string (a record whose id is a number, or that has none, never reaches the
    /// platform). `None` when there is nothing to look for: an empty id (a withdrawal no source record is known
    /// for), a version without a readable time.
    pub fn look_up(source_id: &str, updated_at: &str) -> Option<HeldVersion> {
        chrono::DateTime::parse_from_rfc3339(updated_at).ok()?;
        let id = serde_json::to_string(source_id).ok()?;
        let at = serde_json::to_string(updated_at).ok()?;
        // A blank id is no id (a record without one is named by hash), and `(id 6 )` is not looked for as 6.
        let named =
            crate::source_schema::record_name(&format!("{{\"id\":{id},\"updated_at\":{at}}}"));
        (named == source_id).then(|| HeldVersion::LookUp {
            source_id: source_id.to_string(),
            updated_at: updated_at.to_string(),
        })
    }

    /// The record's name in quarantine.
    fn name(&self) -> String {
        match self {
            HeldVersion::Copy(raw) => raw_id_of(raw),
            HeldVersion::LookUp { source_id, .. } => source_id.clone(),
        }
    }

    /// The version's `updated_at`, as a time.
    fn time(&self) -> Option<chrono::DateTime<chrono::FixedOffset>> {
        match self {
            HeldVersion::Copy(raw) => raw_time(raw),
            HeldVersion::LookUp { updated_at, .. } => {
                chrono::DateTime::parse_from_rfc3339(updated_at).ok()
            }
        }
    }

    /// The record's id and the version's `updated_at`, as text, when it has them.
    fn id_and_updated_at(&self) -> (Option<String>, Option<String>) {
        match self {
            HeldVersion::Copy(raw) => {
                let head = RawHead::of(raw.get());
                (head.id_text(), head.updated_at_text())
            }
            HeldVersion::LookUp {
                source_id,
                updated_at,
            } => (Some(source_id.clone()), Some(updated_at.clone())),
        }
    }
}

/// Where the next feed request starts: the overlap window before the page's last item, so a record committed
/// late behind it is still found in this run — but never before the page's middle item (or the nearest item
/// before it that has a position), so a page dense with records still makes progress. A page of one item
/// continues exactly after it.
///
/// `asked` is where this page's request started: the answer is always past it, so no request is ever repeated
/// (items without a position in the wrong place used to repeat one for ever). `None`: the page gives no way on.
///
/// Among records that share `asked`'s time the feed orders ids by its own collation (a database's locale may
/// ignore hyphens or case), which need not be ours: an item of the page at that time is taken as past `asked`
/// when the page brought anything the request before it (`seen`) had not — the feed moved on. A tie group of
/// ids in two formats, larger than half a page, used to end every run with exit 3 there.
fn next_position(
    positions: &[Option<Cursor>],
    overlap: chrono::Duration,
    asked: Option<&Cursor>,
    seen: &HashSet<Cursor>,
) -> Option<Cursor> {
    let last = positions.iter().rev().flatten().next()?.clone();
    let moved_on = positions.iter().flatten().any(|p| !seen.contains(p));
    let onward = |c: &Cursor| asked.is_none_or(|a| cursor_after(c, a));
    let item_onward = |c: &Cursor| {
        onward(c) || asked.is_none_or(|a| moved_on && c.after_id != a.after_id && same_time(c, a))
    };
    let n = positions.len();
    if n >= 2 {
        let back = Cursor {
            since: minus_overlap(&last.since, overlap),
            after_id: String::new(),
        };
        let rewind = match positions[..=(n - 1) / 2].iter().rev().flatten().next() {
            Some(mid) if cursor_after(mid, &back) => item_onward(mid).then(|| mid.clone()),
            // `back` is no item of the page: past `asked` only by its time.
            _ => onward(&back).then_some(back),
        };
        if rewind.is_some() {
            return rewind;
        }
    }
    item_onward(&last).then_some(last)
}

/// Whether two feed positions are at the same instant.
fn same_time(a: &Cursor, b: &Cursor) -> bool {
    match (
        chrono::DateTime::parse_from_rfc3339(&a.since),
        chrono::DateTime::parse_from_rfc3339(&b.since),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// A raw item's `updated_at` as a time, however unreadable the rest of it is.
fn raw_time(raw: &RawValue) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    chrono::DateTime::parse_from_rfc3339(&RawHead::of(raw.get()).updated_at_text()?).ok()
}

/// The version of a record the source's change feed serves at the position of a held copy (the record of the
/// same quarantine name at its `updated_at`: the same id, or for a record without one the same content), read
/// from that position until past it; `None` when the feed no longer has the record there (deleted, or changed
/// since: then it is further on). The feed's copy is what is sent, should a source change a record without a
/// new `updated_at`. Times compare to the millisecond (a feed may order records within a millisecond by id). A
/// copy without a readable `updated_at` cannot be looked for and is returned as it is.
async fn current_version(
    source: &SourceClient,
    budget: &Budget,
    kind: Kind,
    held: HeldVersion,
) -> Result<Option<HeldVersion>, SyncError> {
    let Some(at) = held.time() else {
        return Ok(Some(held));
    };
    let name = held.name();
    let at_ms = at.timestamp_millis();
    // The feed serves what comes after (since, after_id), by its own order of ids: a record without a string id
    // (none, a number, an empty one), or one the feed's collation sorts unlike ours, may come before any id at its
    // time. So the look starts a millisecond before the copy's time, with nothing to skip: otherwise such a record
    // would be taken for gone (and leave quarantine) while the feed still serves it.
    let from = at - chrono::Duration::milliseconds(1);
    let (mut since, mut after) = (
        from.with_timezone(&china_offset())
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
        String::new(),
    );
    loop {
        let page = source
            .changes_raw(budget, kind, Some(&since), &after, Some(LOOKUP_PAGE))
            .await?;
        let mut last = None;
        for item in &page.items {
            let Some(t) = raw_time(item) else {
                continue;
            };
            let t_ms = t.timestamp_millis();
            if t_ms > at_ms {
                return Ok(None);
            }
            if t_ms == at_ms && raw_id_of(item) == name {
                return Ok(Some(HeldVersion::Copy(item.clone())));
            }
            if let Some(p) = position(None, item) {
                last = Some(p);
            }
        }
        match last {
            Some(p)
                if page.has_more
                    && cursor_after(
                        &p,
                        &Cursor {
                            since,
                            after_id: after,
                        },
                    ) =>
            {
                since = p.since;
                after = p.after_id;
            }
            // The end of the feed: the record is not there.
            _ if !page.has_more => return Ok(None),
            // A page that gives no way on (records without a readable position, or none at all although the feed
            // says it has more) cannot tell, and a held copy is never dropped on a source fault.
            _ => return Ok(Some(held)),
        }
    }
}

/// Feed items asked for per look at one position (the record looked for is nearly always the first).
const LOOKUP_PAGE: u32 = 16;

/// How many records [`send_again`] looks up and sends as one page.
const RETRY_CHUNK: usize = 1000;

/// How many held versions are looked up in the feed at once.
const LOOKUPS_IN_FLIGHT: usize = 8;

/// [`current_version`] of each held copy, several at once; the answers in the order asked.
async fn current_versions(
    source: Arc<SourceClient>,
    budget: Arc<Budget>,
    held: Vec<(Kind, HeldVersion)>,
) -> Result<Vec<Option<HeldVersion>>, SyncError> {
    let mut out: Vec<Option<HeldVersion>> = vec![None; held.len()];
    let mut tasks = JoinSet::new();
    let mut queue = held.into_iter().enumerate();
    loop {
        while tasks.len() < LOOKUPS_IN_FLIGHT {
            let Some((i, (kind, raw))) = queue.next() else {
                break;
            };
            let (source, budget) = (source.clone(), budget.clone());
            tasks.spawn(async move { (i, current_version(&source, &budget, kind, raw).await) });
        }
        let Some(done) = tasks.join_next().await else {
            return Ok(out);
        };
        let (i, found) =
            done.map_err(|e| SyncError::Client(format!("a feed lookup failed: {e}")))?;
        out[i] = found?;
    }
}

/// A feed item, read and mapped (with its digest and report facts, computed off the engine's thread).
struct Prepared {
    raw: Box<RawValue>,
    pos: Option<Cursor>,
    src: Result<SourceRecord, String>,
    mapped: Option<(Mapped, String, RecordMeta)>,
}

/// Reads a feed item (its record and position), not yet mapped.
fn read_item(raw: Box<RawValue>) -> Prepared {
    let src = crate::source_schema::read_record(raw.get());
    let pos = position(src.as_ref().ok(), &raw);
    Prepared {
        raw,
        pos,
        src,
        mapped: None,
    }
}

/// Maps a read item, with its digest and report facts.
fn map_item(
    mapping: &crate::mapping::Mapping,
    ctx: &crate::mapping::MappingContext,
    mut p: Prepared,
) -> Prepared {
    if let Ok(src) = &p.src {
        let mapped = mapping.map(ctx, src);
        let digest = mapped.record.digest().to_hex();
        let meta = record_meta(mapping.kind, src, &mapped.record);
        p.mapped = Some((mapped, digest, meta));
    }
    p
}

fn prepare(
    mapping: &crate::mapping::Mapping,
    ctx: &crate::mapping::MappingContext,
    raw: Box<RawValue>,
) -> Prepared {
    map_item(mapping, ctx, read_item(raw))
}

/// A batch's outcome as its send task reports it: the receipt is already applied to the store.
struct Sent {
    keys: Vec<String>,
    /// Left in the outbox by an earlier run (sent by `Engine::drain_outbox`).
    earlier: bool,
    /// What the platform answered for the records of the pieces settled, even when a later piece failed.
    applied: Applied,
    result: Result<Vec<Held>, SyncError>,
}

/// Records a batch's receipts still gave no usable result for after [`RESEND_UNANSWERED`] resends in this run, or a
/// message the platform found malformed (HTTP 400) before it answered any record in this run: they stay in the
/// outbox, and the run goes on without them (see `Engine::held_keys`).
struct Held {
    seq: OutboxId,
    /// As sent, with the parts the outbox does not keep (the source text a give-up quarantines).
    batch: OutboxBatch,
    /// Why, for the run's error if the run ends with them still held.
    message: String,
}

/// What an applied receipt adds to the run summary.
#[derive(Debug, Default)]
struct Applied {
    accepted: u64,
    platform_unchanged: u64,
    rejected: u64,
    withdrawn: u64,
    still_unanswered: u64,
}

/// The envelopes (sender, receiver, item) of the messages the platform answered in a run: a message it finds
/// malformed (HTTP 400) is taken for a record's fault, and split down to it, only when the platform answered another
/// message with the same envelope. Before, any answer did: a platform that took a sender's permits and refused its
/// penalties whole (an item that sender may not send) had every penalty split out and quarantined.
#[derive(Clone, Default)]
struct Envelopes(Arc<std::sync::Mutex<HashSet<(String, String, Kind)>>>);

impl Envelopes {
    fn of(batch: &OutboxBatch) -> Option<(String, String, Kind)> {
        xml::read_exchange_envelope(&batch.body)
            .ok()
            .map(|m| (m.sender, m.receiver, m.kind))
    }

    fn note(&self, batch: &OutboxBatch) {
        if let (Some(e), Ok(mut seen)) = (Envelopes::of(batch), self.0.lock()) {
            seen.insert(e);
        }
    }

    fn answered(&self, batch: &OutboxBatch) -> bool {
        match (Envelopes::of(batch), self.0.lock()) {
            (Some(e), Ok(seen)) => seen.contains(&e),
            _ => false,
        }
    }

    fn describe(batch: &OutboxBatch) -> String {
        match Envelopes::of(batch) {
            Some((sender, receiver, kind)) => format!("{sender}, {receiver}, {}", kind.item()),
            None => "unreadable".into(),
        }
    }
}

/// What a page being processed knows of keys (see `Engine::holder`): the source record each key is sent for,
/// the keys records moved away from, and the key each record of the page maps to now (with that copy's
/// `updated_at`).
#[derive(Clone, Copy)]
struct PageKeys<'a> {
    owner: &'a HashMap<String, String>,
    released: &'a HashSet<String>,
    wants: &'a HashMap<String, Wanted>,
}

/// The key a record's copy in a page maps to, the copy's `updated_at`, and its digest when it is valid (see
/// [`PageKeys`]).
type Wanted = (Option<String>, String, Option<String>);

/// A key sent in this run and not yet acknowledged, or held in the outbox for this run (`Engine::held_keys`).
struct Pending {
    op: Op,
    digest: Option<String>,
    source_id: String,
    /// The version of the source record it was sent for.
    source_updated_at: String,
}

struct Engine<'a> {
    cfg: &'a Config,
    mappings: &'a MappingSet,
    store: &'a Store,
    platform: Arc<PlatformClient>,
    budget: Arc<Budget>,
    opts: &'a SyncOptions,
    summary: RunSummary,
    in_flight: JoinSet<Sent>,
    in_flight_keys: HashMap<String, u32>,
    /// Keys sent in this run and not yet acknowledged: what was sent, and for which source record.
    pending: HashMap<String, Pending>,
    progress: Option<indicatif::ProgressBar>,
    /// False for `quarantine retry`, which pushes stored records without moving the feed's cursor.
    move_cursor: bool,
    /// Resend content the platform rejected before (`quarantine retry`).
    force: bool,
    /// Kinds whose feed gave a time in the future this run (warned once each).
    future_warned: HashSet<Kind>,
    /// When the last feed page processed that was asked from a position not past that time was asked for (RFC
    /// 3339): the checkpoint is never past it, whatever the pages held. Not a later page's: a page asked from beyond
    /// the clock (records stamped in the future) does not serve what is entered meanwhile, stamped correctly. `None`
    /// before the first page of a kind.
    feed_read: Option<String>,
    /// Records this run counted as quarantined for a document number another record held: not counted after
    /// all when the run frees the number and sends them.
    counted_waiting: HashSet<(Kind, String)>,
    /// Whether a receipt of this run gave some record a usable result (see [`GIVE_UP_UNANSWERED`]).
    answered: Arc<AtomicBool>,
    /// The envelopes of the messages the platform answered in this run (see [`Envelopes`]).
    envelopes: Envelopes,
    /// Records given up on for want of an answer that this run offers again (see [`NO_RESULT_OFFERED_AFTER`]): sent
    /// although the platform never answered this very content, as `force` sends every record.
    offered_again: HashSet<(Kind, String)>,
    /// Keys of records that stay in the outbox for this run: the platform's receipts gave no usable result for them
    /// ([`Held`]), or their batch waits behind such a record (a later batch with one of their keys is not sent, so
    /// that it cannot overtake the version before it). The run goes on with every other record; at its end the held
    /// batches are sent once more if the platform answered others meanwhile (and are given up on, see
    /// [`GIVE_UP_UNANSWERED`]), else the run ends with exit 3 (`held_error`).
    held_keys: HashSet<String>,
    /// Why the first held batch is held; `held_batches` counts them, `held_fresh` those this run built itself (not
    /// left in the outbox by an earlier run).
    held_error: Option<String>,
    held_batches: usize,
    held_fresh: usize,
    /// Whether the batches dispatched now are those an earlier run left in the outbox (`drain_outbox`).
    draining: bool,
    /// The held batches as they were sent or built, with what the outbox does not keep of them.
    held_copies: HashMap<OutboxId, OutboxBatch>,
    /// The held batches this run sent already (their records counted `pushed`), not those that waited unsent.
    held_sent: HashSet<OutboxId>,
}

/// Runs one sync. The store must already be open (it holds the lock).
pub async fn run(
    cfg: &Config,
    mappings: &MappingSet,
    store: &Store,
    opts: &SyncOptions,
) -> Result<RunSummary, (RunSummary, SyncError)> {
    run_with(cfg, mappings, store, opts, None).await
}

/// Withdraws the given keys (reconcile's repair of expired and orphaned records).
pub async fn withdraw(
    cfg: &Config,
    mappings: &MappingSet,
    store: &Store,
    opts: &SyncOptions,
    keys: Vec<(Kind, String)>,
) -> Result<RunSummary, (RunSummary, SyncError)> {
    run_with(cfg, mappings, store, opts, Some(Mode::Withdraw(keys))).await
}

enum Mode {
    /// Sends these source records again; `Copies::Held`: only as far as the feed still serves them (quarantined
    /// copies may be old; reconcile's repair holds copies it has read).
    Retry {
        items: Box<dyn Iterator<Item = (Kind, HeldVersion)> + Send>,
        copies: Copies,
    },
    Withdraw(Vec<(Kind, String)>),
}

/// Which copies [`send_again`] sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copies {
    /// `quarantine retry`: copies held in quarantine, each sent only if the feed still serves that version (the
    /// feed's copy, looked up at its `updated_at`); the others leave quarantine (`gone_from_source`).
    Held,
    /// `reconcile --repair` and the demo: copies read from the feed, sent as they are; `read`: when that reading
    /// began (the connector's clock), which their messages keep as when their records were read
    /// (`OutboxBatch::created`): a repair pushes them only once both systems are read, long after.
    FromFeed { read: chrono::DateTime<chrono::Utc> },
}

/// Maps source records again (with the current mappings) and pushes the valid ones, including content the platform
/// rejected before; the feed's cursor does not move. What an earlier run left in the outbox goes first.
pub async fn send_again(
    cfg: &Config,
    mappings: &MappingSet,
    store: &Store,
    opts: &SyncOptions,
    items: impl IntoIterator<Item = (Kind, HeldVersion), IntoIter: Send + 'static>,
    copies: Copies,
) -> Result<RunSummary, (RunSummary, SyncError)> {
    let items = Box::new(items.into_iter());
    run_with(
        cfg,
        mappings,
        store,
        opts,
        Some(Mode::Retry { items, copies }),
    )
    .await
}

async fn run_with(
    cfg: &Config,
    mappings: &MappingSet,
    store: &Store,
    opts: &SyncOptions,
    mode: Option<Mode>,
) -> Result<RunSummary, (RunSummary, SyncError)> {
    let started = Instant::now();
    // Records are judged as of the run's day (a decision dated after it is a finding).
    let cfg = &Config {
        mapping_context: crate::mapping::MappingContext {
            today: Some(opts.today),
            ..cfg.mapping_context.clone()
        },
        ..cfg.clone()
    };
    // Before the run: what it quarantines is judged under its own settings. A cron run's question only: a retry or
    // a repair sends chosen records (`quarantine retry` of all notes the settings itself).
    let settings = (!opts.dry_run && mode.is_none()).then(|| settings_check(cfg, mappings, store));
    let budget = opts
        .budget
        .clone()
        .unwrap_or_else(|| Arc::new(Budget::new(cfg.retry_budget, cfg.max_backoff)));
    let command = match &mode {
        None => "sync",
        Some(Mode::Retry {
            copies: Copies::Held,
            ..
        }) => "quarantine retry",
        Some(_) => "reconcile --repair",
    };
    let mut summary = RunSummary {
        command: command.to_string(),
        started_at: now_rfc3339(),
        dry_run: opts.dry_run,
        kinds: opts.kinds.clone(),
        ..RunSummary::default()
    };
    let clients = SourceClient::new(
        &cfg.source_url,
        cfg.source_token.clone(),
        cfg.source_page_size,
        cfg.source_timeout,
    )
    .and_then(|s| {
        PlatformClient::new(
            &cfg.platform_url,
            &cfg.app_key,
            cfg.platform_secret.clone(),
            cfg.platform_timeout,
        )
        .map(|p| (s, p))
    });
    let (source, platform) = match clients {
        Ok((s, p)) => (Arc::new(s), p),
        Err(e) => {
            summary.outcome = "aborted".into();
            return Err((summary, SyncError::Client(e.to_string())));
        }
    };
    let progress = opts.progress.then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        pb
    });
    let mut engine = Engine {
        cfg,
        mappings,
        store,
        platform: Arc::new(platform),
        budget: budget.clone(),
        opts,
        summary,
        in_flight: JoinSet::new(),
        in_flight_keys: HashMap::new(),
        pending: HashMap::new(),
        progress,
        move_cursor: true,
        force: false,
        future_warned: HashSet::new(),
        feed_read: None,
        counted_waiting: HashSet::new(),
        answered: Arc::default(),
        envelopes: Envelopes::default(),
        offered_again: HashSet::new(),
        held_keys: HashSet::new(),
        held_error: None,
        held_batches: 0,
        held_fresh: 0,
        draining: false,
        held_copies: HashMap::new(),
        held_sent: HashSet::new(),
    };
    // What an earlier run left in the outbox goes first, whatever this run is for: sent later, an old batch could
    // undo what a repair or a retry does now (re-publish a record a repair just withdrew).
    let mut no_login = None;
    let drained_first = match (&mode, opts.dry_run) {
        (Some(_), false) => engine.drain_outbox().await,
        // A cron run logs in first: with nothing to send it would never learn that the platform refuses its app
        // key or secret (exit 2), and would report success until the day a record changes.
        (None, false) => match engine.platform.ensure_login().await {
            Ok(problem) => {
                no_login = problem;
                Ok(())
            }
            Err(e) => Err(SyncError::from(e)),
        },
        _ => Ok(()),
    };
    let result = match mode {
        _ if drained_first.is_err() => drained_first,
        None => engine.run_all(source.clone()).await,
        Some(Mode::Withdraw(keys)) => engine.withdraw_keys(keys).await,
        Some(Mode::Retry { items, copies }) => {
            engine.move_cursor = false;
            engine.force = true;
            // A chunk at a time: looked up in the feed, then processed as a page, so what one transaction writes
            // (and what the run holds) stays bounded however many records are sent again (`quarantine retry` of
            // 200,000 records at once peaked at 6.5 GiB).
            let mut r = Ok(());
            let mut items = items.peekable();
            while r.is_ok() && items.peek().is_some() {
                let chunk: Vec<_> = items.by_ref().take(RETRY_CHUNK).collect();
                r = engine.send_again_chunk(&source, chunk, copies).await;
                engine.tick();
            }
            r
        }
    };
    // Whatever happened, wait for what is in flight so its receipts are recorded.
    let drained = engine.wait_all().await;
    // Batches held back for want of an answer: given up on if the platform answered others, else the run's error.
    let drained = match (&result, drained) {
        (Ok(()), Ok(())) if !opts.dry_run => engine.settle_held().await,
        (_, d) => d,
    };
    if let Some(pb) = &engine.progress {
        pb.finish_and_clear();
    }
    // The opening login failed and the platform never answered any request since other than with a server error
    // (a run with something to send would have stopped on it): tried a few times more over a few seconds (a flaky
    // platform's 5xx is no reason to page anyone), then reported.
    let mut unreachable = None;
    if no_login.is_some() && result.is_ok() && drained.is_ok() && !engine.platform.answered() {
        let mut problem = no_login.clone();
        for wait_ms in [250, 500, 1000, 2000] {
            tokio::time::sleep(std::time::Duration::from_millis(wait_ms)).await;
            match engine.platform.ensure_login().await {
                Ok(Some(p)) if !engine.platform.answered() => problem = Some(p),
                _ => {
                    problem = None;
                    break;
                }
            }
        }
        if let Some(problem) = problem {
            tracing::warn!(
                problem = %problem,
                "could not reach the platform (logging in, at the start of the run and four times at its end: no \
                 answer, or only server errors); nothing was due to be sent, so nothing is lost, but check \
                 [platform] url and the network: a run with something to send stops with exit 3 until the \
                 platform answers"
            );
            unreachable = Some(problem);
        }
    }
    let mut summary = engine.summary;
    summary.platform_unreachable = unreachable;
    summary.retries = budget.retries();
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    summary.finished_at = now_rfc3339();
    let result = result.and(drained);
    let flushed = store.flush();
    match result.and(flushed.map_err(SyncError::from)) {
        Ok(()) => {
            if let Some((now, n)) = &settings {
                // Noted once the run has done its work: a run that stops says it again next time.
                let _ = store.set_validated_with(now);
                summary.quarantine_to_recheck = *n;
                if let Some(n) = n {
                    tracing::warn!(
                        records = n,
                        "the settings that validate records ([agency] name, credit_code or domain, or the mapping \
                         files) changed since the last run; the records in quarantine were judged under the old \
                         ones: run `dualpub quarantine retry` to validate them again"
                    );
                }
            }
            summary.outcome = if summary.needs_attention() {
                "attention".into()
            } else {
                "ok".into()
            };
            if !opts.dry_run {
                let _ = store.record_run(&serde_json::to_value(&summary).unwrap_or_default());
                let _ = store.flush();
            }
            Ok(summary)
        }
        Err(e) => {
            summary.outcome = "aborted".into();
            summary.error = Some(e.to_string());
            if !opts.dry_run {
                let _ = store.record_run(&serde_json::to_value(&summary).unwrap_or_default());
                let _ = store.flush();
            }
            Err((summary, e))
        }
    }
}

impl Engine<'_> {
    /// One chunk of [`send_again`]: only versions the enforcement system still serves are sent (`verify`): a
    /// record deleted there since (a duplicate entered by mistake) or changed since (the feed brings the new
    /// version) is not sent, and leaves quarantine.
    async fn send_again_chunk(
        &mut self,
        source: &Arc<SourceClient>,
        items: Vec<(Kind, HeldVersion)>,
        copies: Copies,
    ) -> Result<(), SyncError> {
        let (verify, read) = match copies {
            // Read now, as they are looked up.
            Copies::Held => (true, now_rfc3339()),
            Copies::FromFeed { read } => (
                false,
                read.with_timezone(&china_offset())
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            ),
        };
        let mut by_kind: HashMap<Kind, Vec<Box<RawValue>>> = HashMap::new();
        let mut gone = PageCommit::default();
        let asked: Vec<(Kind, String)> = items.iter().map(|(k, v)| (*k, v.name())).collect();
        if !verify && !self.store.quarantine_is_empty() {
            self.offer_given_up_again(&items)?;
        }
        let found = if verify {
            current_versions(source.clone(), self.budget.clone(), items).await?
        } else {
            items.into_iter().map(|(_, v)| Some(v)).collect()
        };
        for ((k, id), current) in asked.into_iter().zip(found) {
            match current {
                Some(HeldVersion::LookUp { .. }) => {
                    tracing::warn!(
                        kind = k.as_str(),
                        id = %mask_ids_in(&id),
                        "quarantine holds no copy of this rejected record, and the enforcement system's feed did not \
                         say whether it still serves the version sent: not sent, kept in quarantine"
                    );
                }
                Some(HeldVersion::Copy(current)) => by_kind.entry(k).or_default().push(current),
                None => {
                    tracing::warn!(
                        kind = k.as_str(),
                        id = %mask_ids_in(&id),
                        "the enforcement system no longer has this version of a quarantined \
                         record (deleted, or changed since): not sent, removed from quarantine"
                    );
                    self.summary.gone_from_source += 1;
                    gone.quarantine_del.push((k, id));
                }
            }
        }
        if !gone.quarantine_del.is_empty() {
            self.store.commit_page(&gone)?;
        }
        for kind in Kind::ALL {
            let Some(items) = by_kind.remove(&kind) else {
                continue;
            };
            let mapping = self.mappings.get(kind);
            let ctx = &self.cfg.mapping_context;
            let page = items
                .into_iter()
                .map(|raw| prepare(mapping, ctx, raw))
                .collect();
            self.process_page(kind, page, &read, &mut None).await?;
        }
        Ok(())
    }

    /// Of the copies `reconcile --repair` sends (just read from the feed), those of a version given up for want of
    /// an answer ([`NO_RESULT`]): sent as the cron run offers such a version again (`offer_due`), so that the
    /// platform still leaving it out gives it up again after three receipts, quietly (`still_unanswered`). Sent as
    /// any record, alone in its messages, it went back to the head of the outbox and stopped the repair and every
    /// later run with exit 3 until it was given up on again, nine receipts later.
    fn offer_given_up_again(&mut self, items: &[(Kind, HeldVersion)]) -> Result<(), SyncError> {
        for (kind, held) in items {
            let (Some(id), Some(at)) = held.id_and_updated_at() else {
                continue;
            };
            let given_up = self.store.quarantine_get(*kind, &id)?.is_some_and(|q| {
                q.reason == "rejected"
                    && q.findings.iter().any(|f| f.code == NO_RESULT)
                    && q.source_updated_at.as_deref() == Some(at.as_str())
            });
            if given_up {
                self.offered_again.insert((*kind, id));
            }
        }
        Ok(())
    }

    async fn run_all(&mut self, source: Arc<SourceClient>) -> Result<(), SyncError> {
        if !self.opts.dry_run {
            self.drain_outbox().await?;
        }
        let mut result = Ok(());
        for &kind in &self.opts.kinds.clone() {
            result = self.sync_kind(kind, source.clone()).await;
            if result.is_err() {
                break;
            }
        }
        // Display periods that have ended are taken down after the feed was read and its receipts are in: a display
        // period extended at the source as it ended (the expiry index moves with the receipt) was withdrawn first
        // and published again by the same run, a withdrawal the platform passes on. A feed that fails does not
        // hold the takedowns up; a store that fails stops everything.
        if self.opts.kinds.contains(&Kind::Penalty) && !matches!(result, Err(SyncError::Store(_))) {
            let received = self.wait_all().await;
            let expired = match received {
                Ok(()) => self.withdraw_expired().await,
                Err(e) => Err(e),
            };
            result = result.and(expired);
        }
        result
    }

    fn tick(&self) {
        if let Some(pb) = &self.progress {
            let s = &self.summary;
            pb.set_message(format!(
                "read {} · unchanged {} · pushed {} · accepted {} · rejected {} · quarantined {}",
                s.read, s.unchanged, s.pushed, s.accepted, s.rejected, s.quarantined
            ));
        }
    }

    /// Resends what an earlier run left in the outbox, in order, with the same flow ids.
    async fn drain_outbox(&mut self) -> Result<(), SyncError> {
        let batches = self.store.outbox()?;
        if !batches.is_empty() {
            tracing::info!(
                batches = batches.len(),
                "resending batches left in the outbox by an earlier run"
            );
        }
        self.draining = true;
        let mut sent = Ok(());
        for (seq, batch) in batches {
            self.summary.outbox_resent += batch.items.len() as u64;
            let batch = match self.readdressed(&seq, batch) {
                Ok(b) => b,
                Err(e) => {
                    sent = Err(e);
                    break;
                }
            };
            sent = self.dispatch(seq, batch).await;
            if sent.is_err() {
                break;
            }
        }
        self.draining = false;
        sent?;
        self.wait_all().await
    }

    /// A batch left in the outbox addressed to another receiver than `[platform] receiver` says now (the operator
    /// mended a wrong code after the platform refused the messages): addressed anew, same records and flow id, and put
    /// back in its place before it is sent. Sent as it was, the platform would refuse it for good, and every later run
    /// would end with exit 3 however the configuration was mended. (The sender is not changed: it is part of every
    /// record's key.) The flow id stays: a platform that took the flow before answers with its first receipt.
    fn readdressed(&self, seq: &OutboxId, batch: OutboxBatch) -> Result<OutboxBatch, SyncError> {
        let receiver = &self.cfg.receiver;
        match xml::read_exchange_envelope(&batch.body) {
            Ok(head) if head.receiver != *receiver => {}
            // Built for another sender (a code since mended): what the platform once took from that sender proves
            // nothing now; refused, the batch is held, not split down and quarantined.
            Ok(head) if head.sender != self.cfg.agency_credit_code && batch.envelope_proven => {
                let batch = OutboxBatch {
                    envelope_proven: false,
                    ..batch
                };
                self.store
                    .outbox_split(seq, &[(seq.clone(), batch.clone())])?;
                return Ok(batch);
            }
            _ => return Ok(batch),
        }
        let Ok(mut msg) = xml::read_exchange_message(&batch.body) else {
            return Ok(batch);
        };
        tracing::warn!(
            flow = %batch.flow,
            was = %msg.receiver,
            now = %receiver,
            "a batch left in the outbox was addressed to another receiver; sending it to [platform] receiver as \
             configured now"
        );
        msg.receiver = receiver.clone();
        let mut body = Vec::new();
        xml::write_exchange_message(&msg, &mut body);
        // What a message to the old receiver proved of the envelope holds no more.
        let batch = OutboxBatch {
            body: body.into(),
            envelope_proven: false,
            split_unproven: false,
            ..batch
        };
        self.store
            .outbox_split(seq, &[(seq.clone(), batch.clone())])?;
        Ok(batch)
    }

    /// Withdraws exactly these keys, whatever the ledger says (the platform's own listing showed them public).
    async fn withdraw_keys(&mut self, keys: Vec<(Kind, String)>) -> Result<(), SyncError> {
        for kind in Kind::ALL {
            let mut items = Vec::new();
            for (_, key) in keys.iter().filter(|(k, _)| *k == kind) {
                let e = self.store.ledger_get(key)?;
                items.push((
                    OutboxItem::withdraw(
                        key.clone(),
                        e.as_ref().map(|e| e.source_id.clone()).unwrap_or_default(),
                        e.as_ref()
                            .map(|e| e.source_updated_at.clone())
                            .unwrap_or_default(),
                        e.map(|e| e.meta).unwrap_or_default(),
                    ),
                    None,
                ));
                if items.len() >= self.withdraw_chunk() {
                    self.send_withdrawals(kind, std::mem::take(&mut items))
                        .await?;
                }
            }
            self.send_withdrawals(kind, items).await?;
        }
        Ok(())
    }

    /// How many withdrawals are written to the outbox at once: enough batches to keep every connection busy.
    fn withdraw_chunk(&self) -> usize {
        self.cfg.batch_size * self.cfg.concurrency.max(1) * 2
    }

    /// Writes withdrawals to the outbox as batches (one transaction) and sends them. Called a chunk at a time, so
    /// memory stays bounded however many records are withdrawn in one run (measured: 85,754 expiring at once
    /// took 326 MiB when all went into one commit).
    async fn send_withdrawals(
        &mut self,
        kind: Kind,
        items: Vec<(OutboxItem, Option<PlatformRecord>)>,
    ) -> Result<(), SyncError> {
        if items.is_empty() {
            return Ok(());
        }
        if self.opts.dry_run {
            // What would come down, counted as a real run counts it; nothing written or sent.
            self.summary.pushed += items.len() as u64;
            self.summary.withdrawn += items.len() as u64;
            return Ok(());
        }
        let mut commit = PageCommit::default();
        for chunk in items.chunks(self.cfg.batch_size) {
            // Withdrawals of versions the ledger holds: nothing read from the feed.
            let batch = self.build_batch(kind, chunk.to_vec(), &now_rfc3339())?;
            commit.batches.push((self.store.next_seq()?, batch));
        }
        self.store.commit_page(&commit)?;
        for (seq, batch) in commit.batches {
            self.dispatch(OutboxId::new(seq), batch).await?;
        }
        Ok(())
    }

    /// Counts a copy the feed served in a version older than one dualpub has already read (see `older_copies`), and
    /// says so once a run.
    fn older_copy(&mut self, key: &str, served: &str) {
        if self.summary.older_copies == 0 {
            tracing::warn!(
                key = %mask_ids_in(key),
                served,
                "the enforcement system served a record in a version older than one dualpub has already read (the \
                 one the platform holds, with content it acknowledged, or one in quarantine); not sent (check \
                 whether the enforcement system, or the copy dualpub reads, lags behind; if this version is the \
                 current one — an edit stamped earlier, by a clock behind or a transaction that began before the \
                 newer version was saved, that brings back content published before or fails validation — save \
                 the record again there, and the next sync sends it; `dualpub reconcile` lists it meanwhile)"
            );
        }
        self.summary.older_copies += 1;
    }

    /// Whether a copy of source record `id` stamped `served` (one that fails validation, or another record's copy in
    /// the page that [`Engine::holder`] asks about) is older than the version the platform holds for it (under the
    /// key it maps to, or the key it is linked to) or the version in quarantine. Never while a version of this run
    /// is on its way for either key. `digest`: the copy's, when it is valid (see
    /// [`LedgerEntry::holds_later_version_of`]).
    fn copy_is_older(
        &self,
        kind: Kind,
        id: &str,
        key: Option<&str>,
        (served, digest): (&str, Option<&str>),
        quarantine_empty: bool,
    ) -> Result<bool, SyncError> {
        let linked = self.store.by_source_get(kind, id)?;
        let keys: Vec<&str> = key.into_iter().chain(linked.as_deref()).collect();
        if keys.iter().any(|k| self.pending.contains_key(*k)) {
            return Ok(false);
        }
        for k in keys {
            if self
                .store
                .ledger_get(k)?
                .is_some_and(|e| e.holds_later_version_of(id, served, digest))
            {
                return Ok(true);
            }
        }
        Ok(!quarantine_empty
            && self
                .store
                .quarantine_get(kind, id)?
                .is_some_and(|q| q.holds_later_than(served)))
    }

    /// Withdraws public penalties whose CF_GSJZQ is before today.
    async fn withdraw_expired(&mut self) -> Result<(), SyncError> {
        let today = self.opts.today.format("%Y%m%d").to_string();
        let keys = self.store.expired_before(&today)?;
        if keys.is_empty() {
            return Ok(());
        }
        tracing::info!(
            count = keys.len(),
            dry_run = self.opts.dry_run,
            "withdrawing penalties whose display period ended"
        );
        // The keys of the messages still in the outbox once this run's receipts are in: held back (`held_keys`),
        // waiting behind those, or written and not sent because the run stopped first (a message before them failed).
        let queued: HashSet<String> = self
            .store
            .outbox()?
            .into_iter()
            .flat_map(|(_, b)| b.items.into_iter().map(|i| i.key))
            .collect();
        let mut items = Vec::new();
        for key in keys {
            // Not one with a message in the outbox: its version there may move its display period, and a withdrawal
            // queued behind it would take that version down once acknowledged — or, sent while it waits unsent,
            // before it. A later run sends the outbox first; its takedown goes by what the platform acknowledged.
            if self.held_keys.contains(&key) || queued.contains(&key) {
                continue;
            }
            if let Some(e) = self.store.ledger_get(&key)? {
                // Not one whose withdrawal the platform rejected or never answered (see `rejected_withdrawal`).
                if e.state == PlatformState::Public
                    && !withdrawal_was_rejected(&e, &e.source_updated_at)
                {
                    items.push((
                        OutboxItem::withdraw(
                            key.clone(),
                            e.source_id.clone(),
                            e.source_updated_at.clone(),
                            e.meta.clone(),
                        ),
                        None,
                    ));
                    if items.len() >= self.withdraw_chunk() {
                        self.send_withdrawals(Kind::Penalty, std::mem::take(&mut items))
                            .await?;
                    }
                }
            }
        }
        self.send_withdrawals(Kind::Penalty, items).await
    }

    async fn sync_kind(&mut self, kind: Kind, source: Arc<SourceClient>) -> Result<(), SyncError> {
        let stored = self.store.cursor(kind)?;
        self.feed_read = None;
        let start = stored.as_ref().map(|c| Cursor {
            since: minus_overlap(&c.since, self.cfg.overlap),
            after_id: String::new(),
        });
        // Read ahead one page while this one is mapped and pushed.
        // Each page with when it was asked for (see `process_page`), and whether it was asked from a position not
        // past that time (see `Engine::feed_read`).
        let (tx, mut rx) =
            tokio::sync::mpsc::channel::<Result<(Vec<Prepared>, String, bool), GiveUp>>(2);
        let budget = self.budget.clone();
        let overlap = self.cfg.overlap;
        let mappings = Arc::new(self.mappings.clone());
        let ctx = self.cfg.mapping_context.clone();
        let feed = source.clone();
        let reader = tokio::spawn(async move {
            let source = feed;
            let mut pos = start;
            // Positions the previous request delivered: the part of a page that is read again is skipped.
            let mut prev: HashSet<Cursor> = HashSet::new();
            loop {
                let since = pos.as_ref().map(|c| c.since.as_str());
                let after = pos.as_ref().map(|c| c.after_id.as_str()).unwrap_or("");
                let mut asked_at = now_rfc3339();
                let mut page = source.changes_raw(&budget, kind, since, after, None).await;
                // A page cut short before a commit still in progress can hold nothing yet say there is more;
                // asked again, the feed moves on.
                if matches!(&page, Ok(p) if p.items.is_empty() && p.has_more) {
                    asked_at = now_rfc3339();
                    page = source.changes_raw(&budget, kind, since, after, None).await;
                }
                let page = match page {
                    Ok(p) if p.items.is_empty() && p.has_more => {
                        // Ending the kind here would end every run here, with exit 0, and nothing after it read.
                        let _ = tx
                            .send(Err(GiveUp::Fatal {
                                what: format!("reading the {kind} change feed"),
                                message: format!(
                                    "the enforcement system says it has more changes after {} but serves none \
                                     (asked twice), so the feed cannot be read further; its vendor must serve \
                                     a record on every page that has more after it",
                                    pos.as_ref().map_or("the start", |c| c.since.as_str())
                                ),
                            }))
                            .await;
                        break;
                    }
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                };
                let more = page.has_more;
                // Reading and mapping are pure and CPU-bound: done off the engine's thread, while the engine pushes.
                let (m, c) = (mappings.clone(), ctx.clone());
                let seen = std::mem::take(&mut prev);
                let asked = pos.clone();
                // Whether this request could still serve what is being entered now: asked from a position not past
                // the time it was asked (a page of records stamped in the future asks from beyond it).
                let present = pos.as_ref().is_none_or(|c| !newer(&c.since, &asked_at));
                let read = tokio::task::spawn_blocking(move || {
                    let read: Vec<Prepared> = page.items.into_iter().map(read_item).collect();
                    let positions: Vec<Option<Cursor>> =
                        read.iter().map(|p| p.pos.clone()).collect();
                    let disorder = crate::source_client::out_of_order(
                        positions
                            .iter()
                            .map(|p| p.as_ref().map(|c| (c.since.as_str(), c.after_id.as_str()))),
                    );
                    let next = next_position(&positions, overlap, asked.as_ref(), &seen);
                    let this: HashSet<Cursor> = positions.into_iter().flatten().collect();
                    let prepared: Vec<Prepared> = read
                        .into_iter()
                        .filter(|p| p.pos.as_ref().is_none_or(|c| !seen.contains(c)))
                        .map(|p| map_item(m.get(kind), &c, p))
                        .collect();
                    (prepared, next, this, disorder)
                })
                .await;
                let (prepared, next, this, disorder) = match read {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx
                            .send(Err(GiveUp::Fatal {
                                what: format!("mapping a page of {kind} changes"),
                                message: e.to_string(),
                            }))
                            .await;
                        break;
                    }
                };
                if let Some(disorder) = disorder {
                    // Gone on from, such a page skips what it orders after later records: nothing of it is taken.
                    let _ = tx
                        .send(Err(GiveUp::Fatal {
                            what: format!("reading the {kind} change feed"),
                            message: format!(
                                "the enforcement system's change feed is not ordered by `updated_at` (then `id`): \
                                 in the page after {}, {disorder}; read on from such a page, the records it orders \
                                 after later ones would be skipped, so the run stops here, keeping what it read \
                                 before; its vendor must order the feed by `updated_at`, then `id` (DESIGN §2)",
                                pos.as_ref().map_or("the start", |c| c.since.as_str())
                            ),
                        }))
                        .await;
                    break;
                }
                // Whether the page's records had positions at all (then they were all behind the request).
                let placed = !this.is_empty();
                prev = this;
                if tx.send(Ok((prepared, asked_at, present))).await.is_err() || !more {
                    break;
                }
                match next {
                    Some(next) => pos = Some(next),
                    None => {
                        // Asking again from the same place would get the same page for ever.
                        let after = pos.as_ref().map_or("the start", |c| c.since.as_str());
                        let message = if placed {
                            format!(
                                "a page asked for the changes after {after} (`since`, `after_id`) holds only \
                                 records at or before that position, and says it has more, so the feed cannot be \
                                 read further; the enforcement system's change feed must serve the records after \
                                 `since` and `after_id`, ordered by `updated_at` and `id` (does it ignore them?)"
                            )
                        } else {
                            format!(
                                "a page after {after} has no record with a readable `updated_at` and `id` past \
                                 where it was asked from, so the feed cannot be read further; the enforcement \
                                 system's change feed must give every record an RFC 3339 `updated_at` and an `id`"
                            )
                        };
                        let _ = tx
                            .send(Err(GiveUp::Fatal {
                                what: format!("reading the {kind} change feed"),
                                message,
                            }))
                            .await;
                        break;
                    }
                }
            }
        });
        let mut cursor = stored;
        let mut result = Ok(());
        while let Some(page) = rx.recv().await {
            match page {
                Ok((page, read, present)) => {
                    if present {
                        self.feed_read = Some(read.clone());
                    }
                    if let Err(e) = self.process_page(kind, page, &read, &mut cursor).await {
                        result = Err(e);
                        break;
                    }
                }
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
        }
        drop(rx);
        let _ = reader.await;
        if result.is_ok() {
            result = self.recheck_waiting(kind, &source, &mut cursor).await;
        }
        if result.is_ok() {
            result = self.offer_due(kind, &source, &mut cursor).await;
        }
        result
    }

    /// Records quarantined only because their decision date was after the day they were read (`date_out_of_range`)
    /// whose day has come: processed again now from the version quarantine holds, while the source still serves
    /// it. An unchanged record is not read again by the feed, so without this a decision entered the day before
    /// its date would wait for its next change and miss its deadline. Likewise records given up on for want of an
    /// answer ([`NO_RESULT`]) an hour or more ago ([`NO_RESULT_OFFERED_AFTER`]), sent again as the feed serves that
    /// version (their entry may hold no copy).
    async fn offer_due(
        &mut self,
        kind: Kind,
        source: &Arc<SourceClient>,
        cursor: &mut Option<Cursor>,
    ) -> Result<(), SyncError> {
        if self.opts.dry_run || self.store.quarantine_is_empty() {
            return Ok(());
        }
        let mapping = self.mappings.get(kind);
        let mut due: Vec<(String, HeldVersion)> = Vec::new();
        let offer_before = chrono::Utc::now() - NO_RESULT_OFFERED_AFTER;
        let on_their_way = self.on_their_way(kind);
        for e in self.store.quarantine_due(kind)? {
            if on_their_way.contains(&e.source_id) {
                continue;
            }
            if e.reason == "rejected" && e.findings.iter().any(|f| f.code == NO_RESULT) {
                let given_up = chrono::DateTime::parse_from_rfc3339(&e.last_seen).ok();
                if given_up.is_none_or(|t| t > offer_before) {
                    continue;
                }
                let held =
                    HeldVersion::of_entry(&e.source, &e.source_id, e.source_updated_at.as_deref());
                if let Some(held) = held {
                    self.offered_again.insert((kind, e.source_id.clone()));
                    due.push((e.source_id, held));
                }
                continue;
            }
            let only_date = e.findings.iter().all(|f| f.code == "date_out_of_range");
            if e.reason != "invalid" || !only_date {
                continue;
            }
            let Some(raw) = held_raw(&e.source) else {
                continue;
            };
            let p = prepare(mapping, &self.cfg.mapping_context, raw.clone());
            let still = p.mapped.as_ref().is_none_or(|(m, _, _)| {
                m.findings
                    .iter()
                    .any(|f| f.code == crate::findings::FindingCode::DateOutOfRange)
            });
            if !still {
                due.push((e.source_id, HeldVersion::Copy(raw)));
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = due.iter().map(|(id, _)| id.clone()).collect();
        let held = due.into_iter().map(|(_, raw)| (kind, raw)).collect();
        let read = now_rfc3339();
        let found = current_versions(source.clone(), self.budget.clone(), held).await?;
        // Records given up on go as pages of their own: their batches are given up on again after three receipts
        // without a result whatever the platform answers others (`build_batch`), so they never stop a run.
        let (mut free, mut again) = (Vec::new(), Vec::new());
        let mut gone = PageCommit::default();
        for (id, current) in ids.into_iter().zip(found) {
            match current {
                // The feed could not say whether it still serves the version given up on: left for a later run.
                Some(HeldVersion::LookUp { .. }) => {
                    self.offered_again.remove(&(kind, id));
                }
                Some(HeldVersion::Copy(current)) => {
                    let p = prepare(mapping, &self.cfg.mapping_context, current);
                    if self.offered_again.contains(&(kind, id)) {
                        again.push(p);
                    } else {
                        free.push(p);
                    }
                }
                None => {
                    self.offered_again.remove(&(kind, id.clone()));
                    self.summary.gone_from_source += 1;
                    gone.quarantine_del.push((kind, id));
                }
            }
        }
        self.send_held(
            kind,
            free,
            &read,
            gone,
            cursor,
            "records held back for a decision date after their day are sent now that the day has come",
        )
        .await?;
        self.send_held(
            kind,
            again,
            &read,
            PageCommit::default(),
            cursor,
            "records given up on for want of an answer an hour ago or more are sent again",
        )
        .await
    }

    /// The end of a look at held copies: the entries whose version the feed no longer serves (`gone`) leave
    /// quarantine, and the others (`free`, the feed's copies) are processed now, logged as `what`.
    async fn send_held(
        &mut self,
        kind: Kind,
        free: Vec<Prepared>,
        read: &str,
        gone: PageCommit,
        cursor: &mut Option<Cursor>,
        what: &'static str,
    ) -> Result<(), SyncError> {
        if !gone.quarantine_del.is_empty() && !self.opts.dry_run {
            self.store.commit_page(&gone)?;
        }
        if free.is_empty() {
            return Ok(());
        }
        tracing::info!(kind = kind.as_str(), records = free.len(), "{what}");
        // `process_page` counts them as read; the feed did not serve them this run.
        self.summary.read = self.summary.read.saturating_sub(free.len() as u64);
        self.process_page(kind, free, read, cursor).await
    }

    /// Records quarantined because another record held their document number, once a record moved away from
    /// it: processed again now from the version quarantine holds (they would otherwise wait for their next
    /// change, or for `quarantine retry`). The freed numbers are in the store (`released`) from the page that
    /// freed them until they have been offered, so a run stopped in between leaves them to the next run.
    async fn recheck_waiting(
        &mut self,
        kind: Kind,
        source: &Arc<SourceClient>,
        cursor: &mut Option<Cursor>,
    ) -> Result<(), SyncError> {
        if self.opts.dry_run {
            return Ok(());
        }
        // Sending a waiting record can free another number (a chain of renumbered records): offered again,
        // a bounded number of times.
        for _ in 0..RECHECK_ROUNDS {
            let released = self.store.released_keys(kind)?;
            if released.is_empty() {
                return Ok(());
            }
            if !self.store.quarantine_is_empty() {
                self.offer_released(kind, &released, source.clone(), cursor)
                    .await?;
            }
            self.store.released_clear(kind, &released)?;
        }
        Ok(())
    }

    /// One round of [`Engine::recheck_waiting`]: the records quarantined for one of `released` whose key now
    /// has no holder, sent from the version quarantine holds while the source still serves it.
    async fn offer_released(
        &mut self,
        kind: Kind,
        released: &HashSet<String>,
        source: Arc<SourceClient>,
        cursor: &mut Option<Cursor>,
    ) -> Result<(), SyncError> {
        let (no_owner, no_released, no_wants) = (HashMap::new(), HashSet::new(), HashMap::new());
        let mut offered: Vec<(String, HeldVersion)> = Vec::new();
        let mut free = Vec::new();
        let mut uncounted = 0u64;
        let mut gone = PageCommit::default();
        let on_their_way = self.on_their_way(kind);
        for (id, key, entry) in self.store.quarantine_waiting_for(kind, Some(released))? {
            if on_their_way.contains(&id) {
                continue;
            }
            let held = entry.source;
            let ledger = self.store.ledger_get(&key)?;
            let holder = self.holder(
                kind,
                &key,
                &id,
                ledger.as_ref(),
                PageKeys {
                    owner: &no_owner,
                    released: &no_released,
                    wants: &no_wants,
                },
            )?;
            if holder.is_some() {
                continue;
            }
            let Some(raw) = held_raw(&held) else {
                tracing::warn!(id = %mask_ids_in(&id), "a quarantined record cannot be read again");
                continue;
            };
            // Sent after all (and counted again should it be held back again).
            if self.counted_waiting.remove(&(kind, id.clone())) {
                uncounted += 1;
            }
            offered.push((id, HeldVersion::Copy(raw)));
        }
        // A duplicate deleted in the enforcement system since must not be published now.
        let ids: Vec<String> = offered.iter().map(|(id, _)| id.clone()).collect();
        let held: Vec<(Kind, HeldVersion)> =
            offered.into_iter().map(|(_, held)| (kind, held)).collect();
        let read = now_rfc3339();
        let found = current_versions(source, self.budget.clone(), held).await?;
        for (id, current) in ids.into_iter().zip(found) {
            match current {
                // Only copies were looked up, so only copies come back.
                Some(HeldVersion::LookUp { .. }) => {}
                Some(HeldVersion::Copy(current)) => free.push(prepare(
                    self.mappings.get(kind),
                    &self.cfg.mapping_context,
                    current,
                )),
                None => {
                    tracing::warn!(
                        kind = kind.as_str(),
                        id = %mask_ids_in(&id),
                        "a record waiting for its document number is no longer in the enforcement system in \
                         that version (deleted, or changed since): removed from quarantine"
                    );
                    self.summary.gone_from_source += 1;
                    gone.quarantine_del.push((kind, id));
                }
            }
        }
        self.summary.quarantined = self.summary.quarantined.saturating_sub(uncounted);
        self.send_held(
            kind,
            free,
            &read,
            gone,
            cursor,
            "records that waited for a document number this run freed are sent now",
        )
        .await
    }

    /// The checkpoint to keep for the feed's furthest position: never past the connector's clock when the feed was
    /// last read ([`Engine::feed_read`]). One record stamped a day ahead (a writer node's wrong clock) would
    /// otherwise move the checkpoint a day ahead, and every edit stamped correctly before then would be skipped.
    /// Records past the clock are read again by later runs (and cost nothing while unchanged) until their time has
    /// come; beyond [`FUTURE_TOLERANCE`] the run warns. Not the clock when the page is committed: a page read
    /// ahead waits behind the pages before it (a slow platform), and what was committed meanwhile was not read; nor
    /// when a later page of records stamped in the future was read.
    fn checkpoint(&mut self, kind: Kind, furthest: Cursor) -> Cursor {
        let Ok(at) = chrono::DateTime::parse_from_rfc3339(&furthest.since) else {
            return furthest;
        };
        let now = chrono::Utc::now();
        let bound = self
            .feed_read
            .as_deref()
            .and_then(|r| chrono::DateTime::parse_from_rfc3339(r).ok())
            .map(|r| r.with_timezone(&chrono::Utc))
            .filter(|r| *r < now)
            .unwrap_or(now);
        if at.with_timezone(&chrono::Utc) <= bound {
            return furthest;
        }
        // Clamped even a little ahead: a checkpoint minutes ahead with an overlap shorter than that would skip
        // what is stamped correctly meanwhile. Only a clock well ahead is worth a warning.
        if at.with_timezone(&chrono::Utc) > now + FUTURE_TOLERANCE
            && self.future_warned.insert(kind)
        {
            tracing::warn!(
                kind = kind.as_str(),
                updated_at = %furthest.since,
                id = %mask_ids_in(&furthest.after_id),
                "the source feed has a record changed in the future (updated_at {} of record {}, now {}): a \
                 clock in the enforcement system is wrong; the checkpoint stays at this machine's clock, so \
                 nothing stamped correctly is skipped — have the clocks set right",
                furthest.since,
                mask_ids_in(&furthest.after_id),
                now.with_timezone(&china_offset())
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, false)
            );
        }
        Cursor {
            since: bound
                .with_timezone(&china_offset())
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, false),
            after_id: String::new(),
        }
    }

    /// Decides and sends a page of records `read` (the connector's clock when they were asked of the feed, RFC
    /// 3339): their messages' `created` and their quarantine entries' `read_at`, which trust a version as not
    /// stamped in the future by when it was read. Not when the page is processed: the feed is read ahead, and a page
    /// read before an outage waits for the platform to come back; `reconcile --repair` pushes what it read long
    /// before.
    async fn process_page(
        &mut self,
        kind: Kind,
        page: Vec<Prepared>,
        read: &str,
        cursor: &mut Option<Cursor>,
    ) -> Result<(), SyncError> {
        let mut commit = PageCommit::default();
        let mut items: Vec<(OutboxItem, Option<PlatformRecord>)> = Vec::new();
        // Keys this page sends, with the source record each is sent for; and keys a record of this page moved
        // away from (its document number changed). Together with `pending` and the ledger they tell who holds a
        // key before the page is committed.
        let mut page_owner: HashMap<String, String> = HashMap::new();
        let mut page_released: HashSet<String> = HashSet::new();
        let now = now_rfc3339();
        // Looked at once per page: what a receipt applied meanwhile puts there concerns keys still pending, which
        // the page leaves to their receipts.
        let quarantine_empty = self.store.quarantine_is_empty();
        // The key each source record of the page maps to now (its last version in the page): a record that
        // holds a key on the platform but comes later in this page with another document number gives the key up
        // (two records that swap numbers would otherwise each wait for the other for ever).
        let page_wants: HashMap<String, Wanted> = page
            .iter()
            .filter_map(|p| match (&p.src, &p.mapped) {
                (Ok(src), Some((m, digest, _))) => Some((
                    src.id.clone(),
                    (
                        m.key.as_ref().map(|k| k.to_string()),
                        src.updated_at.clone().unwrap_or_default(),
                        m.is_valid().then(|| digest.clone()),
                    ),
                )),
                _ => None,
            })
            .collect();
        for Prepared {
            raw,
            pos,
            src,
            mapped,
        } in page
        {
            self.summary.read += 1;
            if let Some(p) = pos {
                if cursor.as_ref().is_none_or(|c| cursor_after(&p, c)) {
                    *cursor = Some(p);
                }
            }
            let (src, (mapped, digest, meta)) = match (src, mapped) {
                (Ok(s), Some(m)) => (s, m),
                (src, _) => {
                    let e = src.err().unwrap_or_else(|| "not mapped".into());
                    let id = raw_id_of(&raw);
                    // An older copy the schema cannot read (its `id` and `updated_at` still can be): it must not
                    // replace a later version's entry in quarantine, nor stand for the record while the platform
                    // holds a later version.
                    if let Some(served) = RawHead::of(raw.get()).updated_at_text() {
                        if self.copy_is_older(kind, &id, None, (&served, None), quarantine_empty)? {
                            self.older_copy(&id, &served);
                            continue;
                        }
                    }
                    // A penalty revoked (or superseded) in a version the schema cannot read still comes down,
                    // under the number it was published with: the withdrawal needs no other field.
                    let head = RawHead::of(raw.get());
                    if kind == Kind::Penalty
                        && matches!(head.status_text().as_deref(), Some("revoked" | "changed"))
                    {
                        if let (Some(source_id), Some(updated_at)) =
                            (head.id_text(), head.updated_at_text())
                        {
                            let linked = self.store.by_source_get(kind, &source_id)?;
                            if source_id == id && linked.is_some() {
                                self.take_down(
                                    TakeDown {
                                        commit: &mut commit,
                                        items: &mut items,
                                        page_owner: &mut page_owner,
                                        page_released: &page_released,
                                    },
                                    kind,
                                    (&source_id, &updated_at),
                                    linked.as_ref(),
                                    false,
                                    &RecordMeta::default(),
                                )?;
                            }
                        }
                    }
                    let raw = raw_value(&raw);
                    let f = crate::map_input::schema_finding(&e);
                    self.quarantine(
                        &mut commit,
                        kind,
                        &id,
                        None,
                        "invalid",
                        &[f],
                        raw,
                        &now,
                        read,
                        RecordMeta::default(),
                    )?;
                    continue;
                }
            };
            if !mapped.is_valid() {
                let key = mapped.key.as_ref().map(|k| k.to_string());
                // An older copy (as for a valid one, below) that fails validation: neither its findings over the
                // later version's in quarantine, nor a withdrawal (revoked, on a minor) of what the platform holds
                // of a later version.
                let served = src.updated_at.as_deref().unwrap_or_default();
                if self.copy_is_older(
                    kind,
                    &src.id,
                    key.as_deref(),
                    (served, None),
                    quarantine_empty,
                )? {
                    let shown = key.clone().unwrap_or_else(|| src.id.clone());
                    self.older_copy(&shown, served);
                    continue;
                }
                // Most findings leave the last valid version public until the record is fixed; a penalty on a
                // minor must not be public at all, so one already published (or on its way) is withdrawn. So is a
                // penalty revoked (or superseded) at the source: taking a decision down needs only its key, not
                // its other fields fixed. It keeps its number, as a valid revoked penalty does; a minor's is freed.
                let minor = mapped
                    .findings
                    .iter()
                    .any(|f| f.code == crate::findings::FindingCode::PenaltyMinor);
                let revoked = kind == Kind::Penalty
                    && matches!(
                        src.status(),
                        Some(SourceStatus::Revoked) | Some(SourceStatus::Changed)
                    );
                if minor || revoked {
                    self.take_down(
                        TakeDown {
                            commit: &mut commit,
                            items: &mut items,
                            page_owner: &mut page_owner,
                            page_released: &page_released,
                        },
                        kind,
                        (&src.id, src.updated_at.as_deref().unwrap_or_default()),
                        key.as_ref(),
                        minor,
                        &meta,
                    )?;
                }
                self.quarantine(
                    &mut commit,
                    kind,
                    &src.id,
                    key,
                    "invalid",
                    &mapped.findings,
                    raw_value(&raw),
                    &now,
                    read,
                    meta,
                )?;
                continue;
            }
            let key = mapped
                .key
                .as_ref()
                .expect("a valid mapping has a key")
                .to_string();
            let ledger = self.store.ledger_get(&key)?;
            // A copy older than the version the platform acknowledged for this record (a lagging replica of the
            // enforcement system, read in the overlap window, or a record written back from an old backup): never
            // applied over the newer one. Told from a late edit stamped earlier (a slow transaction that began
            // before the acknowledged version was saved) by its content: an older copy serves content the platform
            // acknowledged (`LedgerEntry::holds_later_version_of`); a late edit is the latest version, sent. Not
            // while a version of this run is on its way for the key. Nor older than the version in quarantine: it
            // would take that version's findings out of quarantine, as if the record had been fixed (stamps alone
            // decide there: quarantine keeps no acknowledged content to compare).
            let served = src.updated_at.as_deref().unwrap_or_default();
            let older_than_held = ledger
                .as_ref()
                .is_some_and(|e| e.holds_later_version_of(&src.id, served, Some(digest.as_str())));
            // Whether the record is in quarantine, once read here (`leaves_quarantine` below needs it too).
            let mut in_quarantine = None;
            let mut older_than_quarantined = || -> Result<bool, SyncError> {
                if quarantine_empty {
                    return Ok(false);
                }
                let q = self.store.quarantine_get(kind, &src.id)?;
                in_quarantine = Some(q.is_some());
                Ok(q.is_some_and(|q| q.holds_later_than(served)))
            };
            if !self.pending.contains_key(&key) && (older_than_held || older_than_quarantined()?) {
                self.older_copy(&key, served);
                continue;
            }
            // A document number another source record already holds, on the platform or on its way there in this
            // run: the later record goes to quarantine, never a silent overwrite.
            if let Some(other) = self.holder(
                kind,
                &key,
                &src.id,
                ledger.as_ref(),
                PageKeys {
                    owner: &page_owner,
                    released: &page_released,
                    wants: &page_wants,
                },
            )? {
                let f = crate::map_input::key_reused(mapped.key.as_ref().expect("valid"), &other);
                self.quarantine(
                    &mut commit,
                    kind,
                    &src.id,
                    Some(key),
                    "invalid",
                    &[f],
                    raw_value(&raw),
                    &now,
                    read,
                    meta,
                )?;
                continue;
            }
            // The document number changed: the old key must come down, whether the platform holds it or this
            // run's batch for it is still on its way.
            let old_key = self.store.by_source_get(kind, &src.id)?;
            // Not when another record has already taken the old number over (in this page, or in a batch of
            // this run still on its way): its upsert must not be followed by our withdrawal.
            let taken_over = |old: &String| {
                page_owner.get(old).is_some_and(|o| *o != src.id)
                    || self.pending.get(old).is_some_and(|p| p.source_id != src.id)
            };
            if let Some(old) = old_key.as_ref().filter(|k| **k != key && !taken_over(k)) {
                commit.released.push((kind, old.clone()));
                page_released.insert(old.clone());
                if page_owner.get(old) == Some(&src.id) {
                    page_owner.remove(old);
                }
                let old_entry = self
                    .store
                    .ledger_get(old)?
                    .filter(|e| e.source_id == src.id);
                let on_its_way = self
                    .pending
                    .get(old)
                    .is_some_and(|p| p.op == Op::Upsert && p.source_id == src.id);
                let public = old_entry
                    .as_ref()
                    .is_some_and(|e| e.state == PlatformState::Public);
                if public || on_its_way {
                    let old_meta = match old_entry {
                        Some(e) => e.meta,
                        None => RecordMeta {
                            doc_no: crate::model::RecordKey::parse(old)
                                .map(|k| k.doc_no().to_string())
                                .unwrap_or_default(),
                            ..meta.clone()
                        },
                    };
                    items.push((
                        OutboxItem::withdraw(
                            old.clone(),
                            src.id.clone(),
                            src.updated_at.clone().unwrap_or_default(),
                            old_meta,
                        ),
                        None,
                    ));
                }
            }
            let relink = old_key.as_deref() != Some(key.as_str());
            // A record that is valid now leaves quarantine (unless the platform rejected this very content). While
            // its key is in flight, that batch's receipt decides instead (it is being applied concurrently). When
            // it is sent now, its own receipt does (below): the entry, with the source record a retry needs, stays
            // until the platform has answered, so a run stopped in between loses nothing.
            let rejected_same = !self.forced(kind, &src.id)
                && ledger
                    .as_ref()
                    .is_some_and(|e| e.rejected_digest.as_deref() == Some(digest.as_str()));
            let op = self.desired_op(kind, &src, &mapped);
            // A withdrawal of this very version the platform rejected or never answered: not sent again (see
            // `rejected_withdrawal`); the record stays in quarantine.
            let withdrawal_rejected = !self.forced(kind, &src.id)
                && op == Op::Withdraw
                && ledger.as_ref().is_some_and(|e| {
                    withdrawal_was_rejected(e, src.updated_at.as_deref().unwrap_or_default())
                });
            let leaves_quarantine = !rejected_same
                && !withdrawal_rejected
                && !quarantine_empty
                && !self.pending.contains_key(&key)
                && match in_quarantine {
                    Some(known) => known,
                    None => self.store.quarantine_contains(kind, &src.id)?,
                };
            let public_now = match self.pending.get(&key).map(|p| p.op) {
                Some(Op::Upsert) => true,
                Some(Op::Withdraw) => false,
                None => ledger
                    .as_ref()
                    .is_some_and(|e| e.state == PlatformState::Public),
            };
            let current_digest = match self.pending.get(&key) {
                Some(p) if p.op == Op::Upsert => p.digest.clone(),
                _ => ledger
                    .as_ref()
                    .filter(|e| e.state == PlatformState::Public)
                    .and_then(|e| e.digest.clone()),
            };
            let item = OutboxItem {
                key: key.clone(),
                op,
                digest: (op == Op::Upsert).then(|| digest.clone()),
                source_id: src.id.clone(),
                source_updated_at: src.updated_at.clone().unwrap_or_default(),
                meta,
                source: (op == Op::Upsert).then(|| raw.into()),
                ledger: (!self.pending.contains_key(&key)).then(|| ledger.clone()),
            };
            let sent = match op {
                Op::Upsert
                    if !self.force
                        && public_now
                        && current_digest.as_deref() == Some(digest.as_str()) =>
                {
                    self.summary.unchanged += 1;
                    false
                }
                Op::Upsert if rejected_same => {
                    self.summary.unchanged += 1;
                    false
                }
                Op::Withdraw if !public_now => {
                    self.summary.not_public += 1;
                    false
                }
                Op::Withdraw if withdrawal_rejected => {
                    self.summary.unchanged += 1;
                    false
                }
                Op::Upsert => {
                    if page_owner.insert(key.clone(), src.id.clone()).is_some()
                        || page_released.contains(&key)
                    {
                        // the same record twice in one page (another record's would have been quarantined above),
                        // or a key another record of the page moved away from: the later item wins
                        items.retain(|(i, _)| i.key != key);
                    }
                    items.push((item, Some(mapped.record)));
                    true
                }
                Op::Withdraw => {
                    if page_owner.insert(key.clone(), src.id.clone()).is_some()
                        || page_released.contains(&key)
                    {
                        items.retain(|(i, _)| i.key != key);
                    }
                    items.push((item, None));
                    true
                }
            };
            // Sent, the record leaves quarantine with its answer (`apply_receipt`): an upsert, or a withdrawal offered
            // again after it was given up (whose entry, given up again, is then known for what it was).
            let answer_decides =
                sent && (op == Op::Upsert || self.offered_again.contains(&(kind, src.id.clone())));
            if leaves_quarantine && !answer_decides {
                commit.quarantine_del.push((kind, src.id.clone()));
            }
            // The source record → key link, when it changes. Not for a record that was never linked, is not sent and
            // whose key the store knows nothing of (a penalty already past its display period, never published):
            // storing "this record maps to a key the platform never held" changes nothing later, and a backfill
            // would write one for every such record.
            let known =
                sent || old_key.is_some() || ledger.is_some() || self.pending.contains_key(&key);
            if relink && known {
                commit.by_source.push((kind, src.id.clone(), key));
            }
        }
        // Cut the page's pushes into messages: at most batch_size records and MAX_MESSAGE_BYTES each.
        let mut chunk: Vec<(OutboxItem, Option<PlatformRecord>)> = Vec::new();
        let mut bytes = 0usize;
        for it in items {
            let size =
                it.1.as_ref()
                    .map(|r| {
                        r.fields()
                            .map(|(k, v)| 2 * k.len() + xml::escaped_text_len(v) + 8)
                            .sum::<usize>()
                            + 64
                    })
                    .unwrap_or(64);
            if !chunk.is_empty()
                && (chunk.len() >= self.cfg.batch_size || bytes + size > MAX_MESSAGE_BYTES)
            {
                let b = self.build_batch(kind, std::mem::take(&mut chunk), read)?;
                commit.batches.push((self.store.next_seq()?, b));
                bytes = 0;
            }
            bytes += size;
            chunk.push(it);
        }
        if !chunk.is_empty() {
            let b = self.build_batch(kind, chunk, read)?;
            commit.batches.push((self.store.next_seq()?, b));
        }
        if self.opts.dry_run {
            let items = commit.batches.iter().flat_map(|(_, b)| &b.items);
            self.summary.pushed += items.clone().count() as u64;
            self.summary.withdrawn += items.filter(|i| i.op == Op::Withdraw).count() as u64;
            self.tick();
            return Ok(());
        }
        if self.move_cursor {
            commit.cursor = cursor.clone().map(|c| (kind, self.checkpoint(kind, c)));
        }
        self.store.commit_page(&commit)?;
        for (seq, batch) in commit.batches {
            self.dispatch(OutboxId::new(seq), batch).await?;
        }
        self.tick();
        Ok(())
    }

    /// The other source record that holds `key`, if any: the one this page sends it for, else the one a batch
    /// still in flight was sent for, else the ledger's; the last two only while that record still maps to the
    /// key (its document number has not changed since). A key a record of this page moved away from is free.
    ///
    /// Nor does a record hold a key when its latest version, later in this page (`page_wants`) or held in
    /// quarantine, maps to another key: it has given the number up, even if the platform still shows it there.
    fn holder(
        &self,
        kind: Kind,
        key: &str,
        id: &str,
        ledger: Option<&LedgerEntry>,
        page: PageKeys<'_>,
    ) -> Result<Option<String>, SyncError> {
        let PageKeys {
            owner: page_owner,
            released: page_released,
            wants: page_wants,
        } = page;
        if let Some(owner) = page_owner.get(key) {
            return Ok((owner != id).then(|| owner.clone()));
        }
        if page_released.contains(key) {
            return Ok(None);
        }
        let candidate = match (self.pending.get(key), ledger) {
            (Some(p), _) => &p.source_id,
            (None, Some(e)) => &e.source_id,
            (None, None) => return Ok(None),
        };
        if candidate == id {
            return Ok(None);
        }
        let quarantine_empty = self.store.quarantine_is_empty();
        if let Some((wants, served, digest)) = page_wants.get(candidate) {
            // Not a copy older than what the platform holds or quarantine keeps (a lagging replica's copy of a
            // renumbered record): it is not sent, so the record keeps its number.
            if wants.as_deref() != Some(key)
                && !self.copy_is_older(
                    kind,
                    candidate,
                    wants.as_deref(),
                    (served, digest.as_deref()),
                    quarantine_empty,
                )?
            {
                return Ok(None);
            }
        }
        if !quarantine_empty {
            if let Some(q) = self.store.quarantine_get(kind, candidate)? {
                // A penalty on a minor never holds a number: it must not be public (it is being withdrawn).
                if q.findings.iter().any(|f| f.code == "penalty_minor") {
                    return Ok(None);
                }
                if !self.pending.contains_key(key) && q.key.as_deref().is_some_and(|k| k != key) {
                    return Ok(None);
                }
            }
        }
        let still_there = self.store.by_source_get(kind, candidate)?.as_deref() == Some(key);
        Ok(still_there.then(|| candidate.clone()))
    }

    /// What the platform should hold for a valid record (DESIGN §4).
    /// Whether the record is sent even as content (or a withdrawal) the platform rejected or never answered:
    /// every record in `quarantine retry` and `reconcile --repair`, records offered again (`offered_again`).
    /// Queues the withdrawal of what the platform holds (or what this run is sending) for source record `id`, in
    /// its version `updated_at`, that must not be public: a penalty on a minor, or revoked (or superseded) at the
    /// source, whatever else is wrong with that version. Both the key it maps to now (`key`, kept by a revoked
    /// penalty; a minor's is freed) and the one it was linked to before (the same edit may change the document
    /// number): neither may stay public, nor be sent from this page.
    fn take_down(
        &self,
        page: TakeDown<'_>,
        kind: Kind,
        (id, updated_at): (&str, &str),
        key: Option<&String>,
        minor: bool,
        meta: &RecordMeta,
    ) -> Result<(), SyncError> {
        let TakeDown {
            commit,
            items,
            page_owner,
            page_released,
        } = page;
        let mut keys: Vec<String> = key.into_iter().cloned().collect();
        if let Some(old) = self.store.by_source_get(kind, id)? {
            if !keys.contains(&old) {
                keys.push(old);
            }
        }
        keys.retain(|k| {
            !page_released.contains(k)
                && page_owner.get(k).is_none_or(|o| o == id)
                && self.pending.get(k).is_none_or(|p| p.source_id == id)
        });
        for k in keys {
            if minor || key != Some(&k) {
                commit.released.push((kind, k.clone()));
                page_owner.remove(&k);
            }
            items.retain(|(i, _)| i.key != k || i.source_id != id);
            let entry = self.store.ledger_get(&k)?.filter(|e| e.source_id == id);
            let on_its_way = self
                .pending
                .get(&k)
                .is_some_and(|p| p.op == Op::Upsert && p.source_id == id);
            // Not a withdrawal of this version the platform rejected or never answered.
            let given_up = !self.forced(kind, id)
                && entry
                    .as_ref()
                    .is_some_and(|e| withdrawal_was_rejected(e, updated_at));
            // Nor one of this very version already on its way, or held in the outbox (`held_keys`): read again in
            // the overlap window, it would be sent again after it was given up. A later version's withdrawal is
            // queued (behind it, if held).
            let withdrawing = self
                .pending
                .get(&k)
                .is_some_and(|p| p.op == Op::Withdraw && p.source_updated_at == updated_at);
            if !withdrawing
                && (on_its_way
                    || entry
                        .as_ref()
                        .is_some_and(|e| e.state == PlatformState::Public && !given_up))
            {
                items.push((
                    OutboxItem::withdraw(
                        k,
                        id.to_string(),
                        updated_at.to_string(),
                        entry.map(|e| e.meta).unwrap_or_else(|| meta.clone()),
                    ),
                    None,
                ));
            }
        }
        Ok(())
    }

    fn forced(&self, kind: Kind, id: &str) -> bool {
        self.force
            || (!self.offered_again.is_empty()
                && self.offered_again.contains(&(kind, id.to_string())))
    }

    /// The source records of `kind` with a message on its way (or held) in this run: the receipt of that message
    /// decides what becomes of their quarantine entries, which it may be changing now (an acknowledgement removes
    /// the entry, a rejection puts its own). A look at held versions leaves them alone: an entry it removed as gone
    /// from the source, after a receipt had just put a rejection there, took that rejection away with it.
    fn on_their_way(&self, kind: Kind) -> HashSet<String> {
        let item = kind.item();
        self.pending
            .iter()
            .filter(|(key, _)| key.strip_prefix(item).is_some_and(|k| k.starts_with(':')))
            .map(|(_, p)| p.source_id.clone())
            .collect()
    }

    fn desired_op(&self, kind: Kind, src: &SourceRecord, mapped: &Mapped) -> Op {
        match kind {
            // A revoked permit stays public with XK_ZT = 2 (the mapping's status table says so).
            Kind::Permit => Op::Upsert,
            Kind::Penalty => match src.status() {
                Some(SourceStatus::Revoked) | Some(SourceStatus::Changed) => Op::Withdraw,
                _ => {
                    let until = mapped
                        .record
                        .get("CF_GSJZQ")
                        .and_then(crate::validate::parse_date);
                    match until {
                        Some(d) if d < self.opts.today => Op::Withdraw,
                        _ => Op::Upsert,
                    }
                }
            },
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn quarantine(
        &mut self,
        commit: &mut PageCommit,
        kind: Kind,
        id: &str,
        key: Option<String>,
        reason: &str,
        findings: &[Finding],
        source: serde_json::Value,
        now: &str,
        read: &str,
        meta: RecordMeta,
    ) -> Result<(), SyncError> {
        let findings: Vec<StoredFinding> = findings.iter().map(StoredFinding::from).collect();
        let existing = self.store.quarantine_get(kind, id)?;
        let first_seen = existing
            .as_ref()
            .map(|e| e.first_seen.clone())
            .unwrap_or_else(|| now.to_string());
        let is_new = existing
            .as_ref()
            .is_none_or(|e| e.findings != findings || e.source != source);
        if is_new {
            self.summary.quarantined += 1;
            if findings.iter().any(|f| f.code == "key_reused") {
                self.counted_waiting.insert((kind, id.to_string()));
            }
            let what = if self.opts.dry_run {
                "record would be quarantined (dry run: nothing written)"
            } else {
                "record quarantined"
            };
            tracing::warn!(kind = %kind, id = %mask_ids_in(id), findings = findings.len(), codes = %findings.iter().map(|f| f.code.as_str()).collect::<Vec<_>>().join(","), "{what}");
        }
        commit.quarantine_put.push(QuarantineEntry {
            kind,
            source_id: id.to_string(),
            key,
            reason: reason.to_string(),
            findings,
            source,
            first_seen,
            last_seen: now.to_string(),
            meta,
            source_updated_at: None,
            read_at: Some(read.to_string()),
        });
        Ok(())
    }

    /// A message of `items`, `created` when its records were read (see [`OutboxBatch::created`]).
    fn build_batch(
        &self,
        kind: Kind,
        items: Vec<(OutboxItem, Option<PlatformRecord>)>,
        created: &str,
    ) -> Result<OutboxBatch, SyncError> {
        let flow = uuid::Uuid::new_v4().to_string();
        let mut records = Vec::with_capacity(items.len());
        let mut outbox_items = Vec::with_capacity(items.len());
        for (it, rec) in items {
            records.push(MessageRecord {
                key: it.key.clone(),
                op: match (it.op, rec) {
                    (Op::Upsert, Some(r)) => MessageOp::Upsert(r),
                    _ => MessageOp::Withdraw,
                },
            });
            outbox_items.push(it);
        }
        let msg = ExchangeMessage {
            sender: self.cfg.agency_credit_code.clone(),
            receiver: self.cfg.receiver.clone(),
            flow: flow.clone(),
            kind,
            send_time: now_rfc3339(),
            records,
        };
        let mut body = Vec::new();
        xml::write_exchange_message(&msg, &mut body);
        Ok(OutboxBatch {
            flow,
            kind,
            created: created.to_string(),
            // A record offered again after it was given up for want of an answer goes back to quarantine after three
            // receipts without one, whatever the platform answers others: it never stops a run with exit 3.
            others_answered: !outbox_items.is_empty()
                && !self.offered_again.is_empty()
                && outbox_items
                    .iter()
                    .all(|i| self.offered_again.contains(&(kind, i.source_id.clone()))),
            body: body.into(),
            items: outbox_items,
            unanswered: 0,
            envelope_proven: false,
            split_unproven: false,
        })
    }

    /// Sends a batch once no batch in flight holds any of its keys; keeps at most `concurrency` in flight.
    async fn dispatch(&mut self, seq: OutboxId, batch: OutboxBatch) -> Result<(), SyncError> {
        self.dispatch_counted(seq, batch, true).await
    }

    /// [`Engine::dispatch`]; `count`: whether its records are counted `pushed` (not when this run sent them already).
    async fn dispatch_counted(
        &mut self,
        seq: OutboxId,
        batch: OutboxBatch,
        count: bool,
    ) -> Result<(), SyncError> {
        while batch
            .items
            .iter()
            .any(|i| self.in_flight_keys.contains_key(&i.key))
        {
            self.wait_one().await?;
        }
        while self.in_flight.len() >= self.cfg.concurrency {
            self.wait_one().await?;
        }
        if batch.items.iter().any(|i| self.held_keys.contains(&i.key)) {
            // Already in the outbox: it waits there, behind the version the platform gave no result for, and its
            // other records wait with it.
            tracing::warn!(
                records = batch.items.len(),
                "a batch waits in the outbox behind a record the platform's receipts gave no result for"
            );
            for i in &batch.items {
                self.held_keys.insert(i.key.clone());
                let (key, p) = pending_of(i);
                self.pending.insert(key, p);
            }
            self.held_copies.insert(seq, batch);
            return Ok(());
        }
        for i in &batch.items {
            *self.in_flight_keys.entry(i.key.clone()).or_insert(0) += 1;
            let (key, p) = pending_of(i);
            self.pending.insert(key, p);
        }
        if count {
            self.summary.pushed += batch.items.len() as u64;
        }
        let platform = self.platform.clone();
        let budget = self.budget.clone();
        let store = self.store.clone();
        let answered = self.answered.clone();
        let envelopes = self.envelopes.clone();
        let earlier = self.draining;
        // The receipt is applied by the send task itself, off the engine's thread; the batch's keys stay pending
        // (and in flight) until the engine hears it is done, so nothing reads them half-applied.
        self.in_flight.spawn(async move {
            let keys = batch.items.iter().map(|i| i.key.clone()).collect();
            let (applied, result) = send_batch(
                &platform, &budget, &store, &answered, &envelopes, seq, batch,
            )
            .await;
            Sent {
                keys,
                earlier,
                applied,
                result,
            }
        });
        Ok(())
    }

    async fn wait_one(&mut self) -> Result<(), SyncError> {
        match self.in_flight.join_next().await {
            // Nothing in flight while keys are marked so: a send task ended without its note (it panicked, and
            // its error was reported once). Waiting again would spin for ever holding the store's lock; its batch
            // is still in the outbox, so the run stops and the next one sends it first, in order.
            None if !self.in_flight_keys.is_empty() => Err(SyncError::Client(format!(
                "{} record(s) are still marked as being sent though no send is in flight (a send task failed); \
                 their messages stay in the outbox and the next run sends them first",
                self.in_flight_keys.len()
            ))),
            None => Ok(()),
            Some(Ok(sent)) => self.apply(sent),
            Some(Err(e)) => Err(SyncError::Client(format!("a send task failed: {e}"))),
        }
    }

    async fn wait_all(&mut self) -> Result<(), SyncError> {
        let mut first_err = Ok(());
        while !self.in_flight.is_empty() {
            if let Err(e) = self.wait_one().await {
                if first_err.is_ok() {
                    first_err = Err(e);
                }
            }
        }
        first_err
    }

    /// Takes note of a finished batch: its keys are no longer in flight, its counts join the summary.
    fn apply(&mut self, sent: Sent) -> Result<(), SyncError> {
        for k in &sent.keys {
            if let Some(n) = self.in_flight_keys.get_mut(k) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight_keys.remove(k);
                }
            }
            self.pending.remove(k);
        }
        let a = &sent.applied;
        self.summary.accepted += a.accepted;
        self.summary.platform_unchanged += a.platform_unchanged;
        self.summary.rejected += a.rejected;
        self.summary.withdrawn += a.withdrawn;
        self.summary.still_unanswered += a.still_unanswered;
        self.tick();
        let held = sent.result?;
        for h in held {
            // Still what the platform is to hold for these keys, as far as the feed read by this run can tell: a
            // record read again (the overlap window) is not put in the outbox a second time.
            for i in &h.batch.items {
                self.held_keys.insert(i.key.clone());
                let (key, p) = pending_of(i);
                self.pending.insert(key, p);
            }
            self.held_sent.insert(h.seq.clone());
            // Built for another sender than `[agency] credit_code` says now: the operator mended a wrong code, and
            // these messages cannot be addressed anew (the sender is part of every record's key). Said plainly, in
            // place of advice to check a configuration that is right now.
            let sender = Envelopes::of(&h.batch).map(|(sender, _, _)| sender);
            let message = match sender {
                Some(old) if old != self.cfg.agency_credit_code => {
                    let message = format!(
                        "the outbox holds messages built for sender {old} (the [agency] credit_code of the run \
                         that wrote them), and the platform refuses them; [agency] credit_code is {} now. The \
                         sender is part of every record's key, so they cannot be addressed anew: if {} is right, \
                         move the store aside and run `dualpub sync` to rebuild it from the source (nothing is \
                         pushed twice), then `dualpub reconcile` to see what the platform holds",
                        self.cfg.agency_credit_code, self.cfg.agency_credit_code
                    );
                    self.held_error = None;
                    message
                }
                _ => h.message,
            };
            self.held_copies.insert(h.seq, h.batch);
            self.held_error.get_or_insert(message);
            self.held_batches += 1;
            if !sent.earlier {
                self.held_fresh += 1;
            }
        }
        // A second batch left out while no receipt of this run answered any record: the platform seems to answer
        // nothing at all, and every batch sent on would only join the outbox. The run stops as it is (exit 3) — but
        // not on batches an earlier run left in the outbox alone: held there already, they tell nothing new, and two
        // of them (two records the platform refuses, each changed alone) stopped every later run before it read the
        // feed, so that no other record moved and the platform was never seen answering, for good.
        if self.held_batches >= 2 && self.held_fresh >= 1 && !self.answered.load(Ordering::Relaxed)
        {
            if let Some(e) = &self.held_error {
                return Err(SyncError::Unanswered(e.clone()));
            }
        }
        // Many messages held while the platform answers others: it refuses or leaves out a whole class of records
        // (an item it does not take from this sender, say). Each is held with its records in memory, so the run
        // stops here (exit 3) instead of holding the rest of the feed: the next run goes on from where this one
        // stopped, a bounded step at a time.
        if self.held_fresh > MAX_HELD_MESSAGES {
            if let Some(e) = &self.held_error {
                return Err(SyncError::Unanswered(format!(
                    "{} messages held in this run; stopped so that no more are: {e}",
                    self.held_batches
                )));
            }
        }
        Ok(())
    }

    /// At the end of a run that held batches back ([`Engine::held_keys`]): if the platform answered other records
    /// meanwhile, the outbox is sent once more in order — the held batches are given up on now (the fault is with
    /// their records), and the batches that waited behind them go out. Else (or still held) the run's error.
    async fn settle_held(&mut self) -> Result<(), SyncError> {
        let Some(first) = self.held_error.take() else {
            return Ok(());
        };
        if !self.answered.load(Ordering::Relaxed) {
            return Err(SyncError::Unanswered(first));
        }
        tracing::info!(
            records = self.held_keys.len(),
            "sending once more the records the platform's receipts gave no result for, and those that waited behind \
             them, now that it answered others"
        );
        self.held_keys.clear();
        self.held_batches = 0;
        self.held_fresh = 0;
        let mut copies = std::mem::take(&mut self.held_copies);
        let sent = std::mem::take(&mut self.held_sent);
        for (seq, batch) in self.store.outbox()? {
            let batch = copies.remove(&seq).unwrap_or(batch);
            // A held batch was counted when it was sent; one that waited behind it was not.
            let count = !sent.contains(&seq);
            self.dispatch_counted(seq, batch, count).await?;
        }
        self.wait_all().await?;
        match self.held_error.take() {
            Some(e) => Err(SyncError::Unanswered(e)),
            None => Ok(()),
        }
    }
}

/// What a page has decided so far that [`Engine::take_down`] adds to: the page's commit, its outbox items, the keys
/// its records send (with the record each is sent for) and the keys they moved away from.
struct TakeDown<'a> {
    commit: &'a mut PageCommit,
    items: &'a mut Vec<(OutboxItem, Option<PlatformRecord>)>,
    page_owner: &'a mut HashMap<String, String>,
    page_released: &'a HashSet<String>,
}

fn pending_of(i: &OutboxItem) -> (String, Pending) {
    (
        i.key.clone(),
        Pending {
            op: i.op,
            digest: i.digest.clone(),
            source_id: i.source_id.clone(),
            source_updated_at: i.source_updated_at.clone(),
        },
    )
}

/// Sends outbox batch `seq` and records its receipt. A message the platform refuses whole as too large for it
/// (HTTP 413: a platform with a smaller limit than ours) would be refused again as it is, and would keep every later
/// run on exit 3: it is
/// split in two, each half with a flow id of its own and put in the outbox in its place (one transaction, so a
/// crash leaves the batch or both halves), and the halves are sent in order, down to messages of one record. A
/// record the platform refuses alone is rejected like any other, with the platform's words: it goes to quarantine
/// and leaves the outbox. A message found malformed (HTTP 400) is split the same way once its envelope is proven
/// (the platform took a message with the same sender, receiver and item); before that it is split once, and what is
/// still refused is held ([`Held`]), since the fault may be the envelope. Any other failure leaves the batch in the
/// outbox; the next run resends it with the same flow id.
///
/// What the platform answered for the pieces settled comes back even when a later piece fails: those are in the
/// ledger and out of the outbox, and the run's summary counts them.
async fn send_batch(
    platform: &PlatformClient,
    budget: &Budget,
    store: &Store,
    answered: &Arc<AtomicBool>,
    envelopes: &Envelopes,
    seq: OutboxId,
    batch: OutboxBatch,
) -> (Applied, Result<Vec<Held>, SyncError>) {
    let mut total = Applied::default();
    let held = send_pieces(
        &mut total, platform, budget, store, answered, envelopes, seq, batch,
    )
    .await;
    (total, held)
}

/// [`send_batch`]'s work, adding what the platform answered to `total` piece by piece.
#[allow(clippy::too_many_arguments)]
async fn send_pieces(
    total: &mut Applied,
    platform: &PlatformClient,
    budget: &Budget,
    store: &Store,
    answered: &Arc<AtomicBool>,
    envelopes: &Envelopes,
    seq: OutboxId,
    batch: OutboxBatch,
) -> Result<Vec<Held>, SyncError> {
    let mut held = Vec::new();
    // A stack: the first half is sent first. With each batch, how many times its records were sent again for want of
    // a usable result.
    let mut todo = vec![(seq, batch, 0)];
    while let Some((seq, batch, resent)) = todo.pop() {
        // Whether the receipt is the platform's (not one made up for a record it refused alone).
        let mut from_platform = false;
        let receipt = match platform
            .exchange(budget, &batch.flow, batch.body.clone())
            .await
        {
            Ok(receipt) => {
                from_platform = true;
                receipt
            }
            // Found malformed. Once the platform took a message with this one's envelope (sender, receiver, item)
            // — in this run, or before a piece of this batch was split — the fault is with a record: split down to
            // the record refused alone, which is rejected. Messages of another item prove nothing: a platform may
            // take a sender's permits and refuse its penalties whole.
            Err(GiveUp::Malformed { message, .. })
                if batch.envelope_proven || envelopes.answered(&batch) =>
            {
                if batch.items.len() == 1 {
                    refused_alone(&batch, &message)
                } else {
                    tracing::warn!(
                        records = batch.items.len(),
                        "the platform refused a message as malformed ({message}) and took others with its \
                         envelope; sending its records in two halves to find the one it refuses"
                    );
                    let parts = split_in_place(store, &seq, batch, |b| {
                        b.envelope_proven = true;
                        b.split_unproven = false;
                    })?;
                    let [(s1, first), (s2, second)] = parts;
                    todo.push((s2, second, resent));
                    todo.push((s1, first, resent));
                    continue;
                }
            }
            // Not proven yet: perhaps the envelope (every such message would be refused alike, and no record may pay
            // for that), perhaps a record. Split once, unproven: if a half is taken, that proves the envelope and the
            // other half is split on; if both are refused, both are held.
            Err(GiveUp::Malformed { message, .. })
                if batch.items.len() > 1 && !batch.split_unproven =>
            {
                tracing::warn!(
                    records = batch.items.len(),
                    "the platform refused a message as malformed ({message}); sending its records in two halves to \
                     tell a record's fault from the envelope's"
                );
                let parts = split_in_place(store, &seq, batch, |b| b.split_unproven = true)?;
                let [(s1, first), (s2, second)] = parts;
                todo.push((s2, second, resent));
                todo.push((s1, first, resent));
                continue;
            }
            // Held: the run goes on, and the answers to the other messages tell (`Engine::settle_held`).
            Err(GiveUp::Malformed { message, .. }) => {
                held.push(Held {
                    message: format!(
                        "{message}. The message stays in the outbox (flow {}) and the next run sends it first. The \
                         platform accepted no other message with its envelope (sender, receiver and item: {}) in \
                         this run: if it refuses every such message, check [agency] credit_code (the sender) and \
                         [platform] receiver, and whether the platform takes this item from this sender; once it \
                         accepts others, this one is sent in smaller messages until the record it refuses is found \
                         and rejected ({})",
                        batch.flow,
                        Envelopes::describe(&batch),
                        "MESSAGE_REFUSED"
                    ),
                    seq,
                    batch,
                });
                continue;
            }
            // Refused whole as too large: its records are sent in smaller messages, and the one refused alone is
            // rejected.
            Err(GiveUp::Refused { message, .. }) if batch.items.len() > 1 => {
                tracing::warn!(
                    records = batch.items.len(),
                    "the platform refused a message whole ({message}); sending its records in two halves"
                );
                let [(s1, first), (s2, second)] = split_in_place(store, &seq, batch, |_| {})?;
                todo.push((s2, second, resent));
                todo.push((s1, first, resent));
                continue;
            }
            Err(GiveUp::Refused { message, .. }) => refused_alone(&batch, &message),
            Err(e) => return Err(SyncError::from(e)),
        };
        // A receipt of the platform's own that answers a record of this message proves its envelope. The other
        // pieces of this message, still to be sent or held, share it: the proof is kept with them in the outbox
        // before the receipt is applied, so that a run that ends before they are settled (killed at any instant, or
        // the platform gone) leaves no piece waiting for a proof this run had.
        let proves = from_platform && {
            let keys: HashSet<&str> = batch.items.iter().map(|i| i.key.as_str()).collect();
            receipt
                .results
                .iter()
                .any(|r| keys.contains(r.key.as_str()))
        };
        if proves {
            envelopes.note(&batch);
            let pieces = todo
                .iter_mut()
                .map(|(s, b, _)| (&*s, b))
                .chain(held.iter_mut().map(|h| (&h.seq, &mut h.batch)));
            prove_pieces(store, &batch, pieces)?;
        }
        let (shared, answered_any) = (store.clone(), answered.clone());
        let (a, unanswered) = tokio::task::spawn_blocking(move || {
            apply_receipt(&shared, &answered_any, seq, &batch, &receipt)
        })
        .await
        .unwrap_or_else(|e| Err(SyncError::Client(format!("applying a receipt failed: {e}"))))?;
        total.accepted += a.accepted;
        total.platform_unchanged += a.platform_unchanged;
        total.rejected += a.rejected;
        total.withdrawn += a.withdrawn;
        total.still_unanswered += a.still_unanswered;
        if let Some(u) = unanswered {
            let records = u.batch.items.len();
            if resent >= RESEND_UNANSWERED {
                let message = format!(
                    "the platform's receipts gave no usable result for {records} record(s) {} times in a row (the \
                     last, of flow {}: {}): they stay in the outbox (flow {}) and the next run sends them first; \
                     after {GIVE_UP_UNANSWERED_UNSEEN} such receipts in all they go to quarantine (code \
                     {NO_RESULT}) so that other records can move; the platform answered no record here, so ask its \
                     operators why its receipts answer nothing",
                    u.batch.unanswered, u.sent_flow, u.why, u.batch.flow,
                );
                held.push(Held {
                    seq: u.seq,
                    batch: u.batch,
                    message,
                });
                continue;
            }
            tracing::warn!(
                records,
                flow = %u.sent_flow,
                why = %u.why,
                "the platform's receipt gave no usable result for some records; sending them again in a message of \
                 their own"
            );
            todo.push((u.seq, u.batch, resent + 1));
        }
    }
    Ok(held)
}

/// How many messages a run holds back ([`Held`]) before it stops: each is kept in memory with its records until the
/// end of the run (a platform refusing every penalty of a 1M-record backfill would otherwise hold them all).
const MAX_HELD_MESSAGES: usize = 16;

/// How many times the records a receipt gave no usable result for are sent again, each time under a new flow id,
/// before the run holds them back (kept in the outbox; see `Engine::held_keys`) — unless they have been given up on
/// by then (see [`GIVE_UP_UNANSWERED`]).
const RESEND_UNANSWERED: u32 = 2;

/// After how many receipts in a row without a usable result for them records are given up on: rejected with code
/// [`NO_RESULT`], into quarantine with the source text, the ledger's `rejected_digest` set, and out of the outbox.
/// The platform may hold them or not (reconcile tells); what matters is that they no longer head the outbox, where
/// they stopped every later run, and every other record with it, on exit 3. This many when the platform was seen
/// answering other records (in one of those receipts, or in this run): the fault is with these records, and three
/// sends in one run settle it.
pub const GIVE_UP_UNANSWERED: u32 = 3;

/// The same when the platform was not seen answering any record: its receipts may leave out everything (a fault of
/// its own that the next runs may not meet), so the records wait three runs before they go to quarantine.
pub const GIVE_UP_UNANSWERED_UNSEEN: u32 = 9;

/// The code of a record given up on for want of a usable result (see [`GIVE_UP_UNANSWERED`]).
pub const NO_RESULT: &str = crate::store::NO_RESULT;

/// How long after it was given up on (its entry's `last_seen`) a cron run offers a record given up for want of an
/// answer ([`NO_RESULT`]) again, from the version the feed serves: when the platform answered nothing at all (a fault
/// of its own), its records went to quarantine after three runs and would otherwise wait for an operator's `quarantine
/// retry` long after the platform was mended. Given up again (the platform still leaves it out), it is not counted as
/// a new rejection (`still_unanswered`): the operator was told the first time.
const NO_RESULT_OFFERED_AFTER: chrono::Duration = chrono::Duration::hours(1);

/// What a ledger entry's `rejected_digest` holds once the platform rejected, or never answered, a withdrawal of its
/// key (a withdrawal has no digest): the version of the record it was sent for. A sync does not send that withdrawal
/// again — a revoked penalty read again in the overlap window, a penalty past its display period that every run's
/// expiry pass finds — as it does not send rejected content again: it sent it at every run, and when the platform
/// answered nothing (a message of that one withdrawal) every run stopped with exit 3 for good. A new version of the
/// record, `quarantine retry` and `reconcile --repair` send it.
fn rejected_withdrawal(source_updated_at: &str) -> String {
    format!("{REJECTED_WITHDRAWAL}{source_updated_at}")
}

/// How [`rejected_withdrawal`] begins (a digest is lowercase hex).
const REJECTED_WITHDRAWAL: &str = "withdrawal ";

/// Whether the platform rejected, or never answered, the withdrawal of `e`'s key for the version `updated_at`.
fn withdrawal_was_rejected(e: &LedgerEntry, updated_at: &str) -> bool {
    e.rejected_digest.as_deref() == Some(rejected_withdrawal(updated_at).as_str())
}

/// A withdrawal done: a rejected one is forgotten.
fn forget_rejected_withdrawal(e: &mut LedgerEntry) {
    if e.rejected_digest
        .as_deref()
        .is_some_and(|d| d.starts_with(REJECTED_WITHDRAWAL))
    {
        e.rejected_digest = None;
    }
}

/// The records of a batch its receipt gave no usable result for: no result, two results that disagree, or a result
/// that does not answer what was asked (`withdrawn` to an upsert). The platform may not have applied them; a resend
/// with the same flow id would get the same receipt back, so they are put in the outbox under a flow id of their
/// own, in the batch's place.
struct Unanswered {
    seq: OutboxId,
    batch: OutboxBatch,
    /// The flow whose receipt left them out.
    sent_flow: String,
    /// Why, for one of them (its key masked).
    why: String,
}

/// Marks these outbox batches `envelope_proven`, in memory and in the outbox, when their envelope is `taken`'s (a
/// message of that envelope the platform just answered).
fn prove_pieces<'b>(
    store: &Store,
    taken: &OutboxBatch,
    pieces: impl Iterator<Item = (&'b OutboxId, &'b mut OutboxBatch)>,
) -> Result<(), SyncError> {
    let Some(envelope) = Envelopes::of(taken) else {
        return Ok(());
    };
    for (seq, b) in pieces {
        if b.envelope_proven || Envelopes::of(b).as_ref() != Some(&envelope) {
            continue;
        }
        b.envelope_proven = true;
        b.split_unproven = false;
        store.outbox_split(seq, &[(seq.clone(), b.clone())])?;
    }
    Ok(())
}

/// Splits batch `seq` in two halves (`split_batch`), each marked by `mark`, and puts them in the outbox in its place,
/// not at the end of it: a batch written since may hold a later version of one of their records. The first half is
/// to be sent first.
fn split_in_place(
    store: &Store,
    seq: &OutboxId,
    batch: OutboxBatch,
    mark: impl Fn(&mut OutboxBatch),
) -> Result<[(OutboxId, OutboxBatch); 2], SyncError> {
    let (mut first, mut second) = split_batch(batch)?;
    mark(&mut first);
    mark(&mut second);
    let parts = [(seq.piece(1), first), (seq.piece(2), second)];
    store.outbox_split(seq, &parts)?;
    Ok(parts)
}

/// Splits a batch into two halves, each a message of its own with a new flow id; the in-memory parts of its items
/// (the source text a rejection quarantines, the ledger entry read) go along.
fn split_batch(batch: OutboxBatch) -> Result<(OutboxBatch, OutboxBatch), SyncError> {
    let msg = message_of(&batch)?;
    let mid = batch.items.len() / 2;
    let mut items = batch.items.clone();
    let second_items = items.split_off(mid);
    let mut records = msg.records.clone();
    let second_records = records.split_off(mid);
    Ok((
        part_of(&batch, &msg, items, records),
        part_of(&batch, &msg, second_items, second_records),
    ))
}

/// The message of an outbox batch, read back, whose records are the batch's items in order.
fn message_of(batch: &OutboxBatch) -> Result<ExchangeMessage, SyncError> {
    let msg = xml::read_exchange_message(&batch.body).map_err(|e| {
        SyncError::Client(format!("cannot read back outbox batch {}: {e}", batch.flow))
    })?;
    let same_keys = msg.records.len() == batch.items.len()
        && msg
            .records
            .iter()
            .zip(&batch.items)
            .all(|(r, i)| r.key == i.key);
    if !same_keys {
        return Err(SyncError::Client(format!(
            "cannot read back outbox batch {}: its message and its items disagree",
            batch.flow
        )));
    }
    Ok(msg)
}

/// A batch of some of `batch`'s items and their records (of `msg`, its message), a message of its own with a new
/// flow id; the in-memory parts of the items (the source text a rejection quarantines, the ledger entry read) go along.
fn part_of(
    batch: &OutboxBatch,
    msg: &ExchangeMessage,
    items: Vec<OutboxItem>,
    records: Vec<MessageRecord>,
) -> OutboxBatch {
    let flow = uuid::Uuid::new_v4().to_string();
    let mut body = Vec::new();
    xml::write_exchange_message(
        &ExchangeMessage {
            sender: msg.sender.clone(),
            receiver: msg.receiver.clone(),
            flow: flow.clone(),
            kind: msg.kind,
            send_time: now_rfc3339(),
            records,
        },
        &mut body,
    );
    OutboxBatch {
        flow,
        kind: batch.kind,
        // When its records were read: the message they were first put in was made then.
        created: batch.created.clone(),
        body: body.into(),
        items,
        unanswered: batch.unanswered,
        others_answered: batch.others_answered,
        envelope_proven: batch.envelope_proven,
        split_unproven: batch.split_unproven,
    }
}

/// The receipt for a message of one record that the platform refused whole: that record rejected, with the
/// platform's words.
fn refused_alone(batch: &OutboxBatch, message: &str) -> Receipt {
    Receipt {
        flow: batch.flow.clone(),
        accepted: 0,
        unchanged: 0,
        rejected: batch.items.len() as u32,
        withdrawn: 0,
        results: batch
            .items
            .iter()
            .map(|i| xml::RecordResult {
                key: i.key.clone(),
                status: ResultStatus::Rejected,
                code: "MESSAGE_REFUSED".into(),
                message: format!(
                    "the platform refused a message holding only this record: {message}; fix the record in the \
                     source system (or ask the platform about its limits), then `dualpub quarantine retry`"
                ),
            })
            .collect(),
    }
}

/// How much of a rejection's code and message the platform gives is kept (characters).
const PLATFORM_CODE_CHARS: usize = 64;
const PLATFORM_MESSAGE_CHARS: usize = 2000;

/// Whether a result's status answers the operation sent.
fn answers(op: Op, status: ResultStatus) -> bool {
    match op {
        Op::Upsert => matches!(
            status,
            ResultStatus::Accepted | ResultStatus::Unchanged | ResultStatus::Rejected
        ),
        Op::Withdraw => matches!(
            status,
            ResultStatus::Withdrawn | ResultStatus::Unchanged | ResultStatus::Rejected
        ),
    }
}

/// Quarantine entry `(kind, id)` as [`apply_receipt`] reads it to decide on it, noted in `commit` so that the decision
/// is applied only if the entry is still this one when the receipt is committed (the engine may quarantine a newer
/// version of the record meanwhile: a page is committed while receipts are applied).
fn seen_entry(
    store: &Store,
    commit: &mut ReceiptCommit,
    kind: Kind,
    id: &str,
) -> Result<Option<QuarantineEntry>, SyncError> {
    let entry = store.quarantine_get(kind, id)?;
    commit
        .quarantine_seen
        .entry((kind, id.to_string()))
        .or_insert_with(|| entry.clone());
    Ok(entry)
}

/// Records a receipt in one transaction: ledger, quarantine for rejections, the expiry index, and the outbox
/// removal — with, in the batch's place, the records the receipt gave no usable result for ([`Unanswered`]), whose
/// ledger entries stay as they were. Runs in the batch's send task; no other batch in flight holds any of its keys.
fn apply_receipt(
    store: &Store,
    answered: &AtomicBool,
    seq: OutboxId,
    batch: &OutboxBatch,
    receipt: &Receipt,
) -> Result<(Applied, Option<Unanswered>), SyncError> {
    let mut applied = Applied::default();
    let now = now_rfc3339();
    let quarantine_empty = store.quarantine_is_empty();
    // A key answered twice in different words has no usable result (`None`).
    let mut results: HashMap<&str, Option<&xml::RecordResult>> = HashMap::new();
    for r in &receipt.results {
        results
            .entry(r.key.as_str())
            .and_modify(|seen| {
                if seen.is_some_and(|s| s.status != r.status || s.code != r.code) {
                    *seen = None;
                }
            })
            .or_insert(Some(r));
    }
    // A set, not a scan of the items per result: 500 × 500 key comparisons a receipt cost ~0.8 s of a 1M backfill.
    let sent: HashSet<&str> = batch.items.iter().map(|i| i.key.as_str()).collect();
    let foreign = results.keys().filter(|k| !sent.contains(**k)).count();
    if foreign > 0 {
        tracing::warn!(
            flow = %batch.flow,
            keys = foreign,
            "the platform's receipt has results for keys the message did not hold; they are ignored"
        );
    }
    let mut commit = ReceiptCommit {
        outbox_seq: Some(seq.clone()),
        ..ReceiptCommit::default()
    };
    let usable = |item: &OutboxItem| match results.get(item.key.as_str()) {
        Some(Some(res)) if answers(item.op, res.status) => Ok(*res),
        found => Err(match found {
            None => "no result".to_string(),
            Some(None) => "two different results".to_string(),
            Some(Some(res)) => format!(
                "`{}` to {}",
                res.status.as_str(),
                match item.op {
                    Op::Upsert => "an upsert",
                    Op::Withdraw => "a withdrawal",
                }
            ),
        }),
    };
    let answered_here = batch.items.iter().any(|i| usable(i).is_ok());
    if answered_here {
        answered.store(true, Ordering::Relaxed);
    }
    // Records left out by this receipt too: sent again, or given up on (see `GIVE_UP_UNANSWERED`).
    let times = batch.unanswered + 1;
    let others_answered = batch.others_answered || answered_here;
    let give_up = times
        >= if others_answered || answered.load(Ordering::Relaxed) {
            GIVE_UP_UNANSWERED
        } else {
            GIVE_UP_UNANSWERED_UNSEEN
        };
    // The items without a usable result, with the index of each in the batch, and why for the first.
    let mut unanswered: Vec<usize> = Vec::new();
    let mut why = String::new();
    for (index, item) in batch.items.iter().enumerate() {
        let given_up;
        // For a record given up on, the finding's English words (the platform's own words are Chinese only).
        let mut en = None;
        let res = match usable(item) {
            Ok(res) => res,
            Err(what) if give_up => {
                given_up = xml::RecordResult {
                    key: item.key.clone(),
                    status: ResultStatus::Rejected,
                    code: NO_RESULT.into(),
                    message: format!(
                        "信用平台连续 {times} 次回执都没有这条记录的可用结果，已转入隔离区；请向信用平台核实其是否已收到，\
                         之后执行 dualpub quarantine retry"
                    ),
                };
                en = Some(format!(
                    "the platform's receipts gave no usable result for this record {times} times in a row (the \
                     last: {what}); given up on so that other records can move: ask the platform's operators \
                     whether they hold it, then `dualpub quarantine retry`"
                ));
                &given_up
            }
            Err(what) => {
                if unanswered.is_empty() {
                    why = format!("{what} for {}", mask_ids_in(&item.key));
                }
                unanswered.push(index);
                continue;
            }
        };
        let prev = match &item.ledger {
            Some(known) => known.clone(),
            None => store.ledger_get(&item.key)?,
        };
        let old_until = prev.as_ref().and_then(|p| p.meta.display_until.clone());
        let mut e = prev.unwrap_or_else(|| LedgerEntry {
            kind: batch.kind,
            source_id: item.source_id.clone(),
            source_updated_at: item.source_updated_at.clone(),
            digest: None,
            rejected_digest: None,
            state: PlatformState::Pending,
            first_published: None,
            last_pushed: None,
            attempts: 0,
            last_error: None,
            meta: item.meta.clone(),
            earlier: Some(Vec::new()),
        });
        e.attempts += 1;
        // The time the platform acknowledged the version its state follows, kept while it follows the same one: a
        // rejected or unanswered attempt, or the same version acknowledged again later, says nothing of when that
        // version was known, and moved past a future stamp it made the version trusted
        // (`LedgerEntry::follows_later_than`), so that a later edit stamped before it was skipped as older.
        let followed = matches!(e.state, PlatformState::Public | PlatformState::Withdrawn)
            .then(|| e.source_updated_at.clone());
        match (item.op, res.status) {
            (Op::Upsert, ResultStatus::Accepted) | (Op::Upsert, ResultStatus::Unchanged) => {
                if res.status == ResultStatus::Accepted {
                    applied.accepted += 1;
                } else {
                    applied.platform_unchanged += 1;
                }
                e.state = PlatformState::Public;
                if e.source_id != item.source_id {
                    // Another record's versions say nothing of this one's copies.
                    e.digest = None;
                    e.earlier = Some(Vec::new());
                }
                // The content acknowledged before goes to `earlier`: a copy serving it again is an older copy.
                e.acknowledge_content(item.digest.clone(), &item.source_updated_at);
                e.rejected_digest = None;
                e.last_error = None;
                e.source_id = item.source_id.clone();
                acknowledged(&mut e, followed.as_deref(), &batch.created);
                e.meta = item.meta.clone();
                if e.first_published.is_none() {
                    e.first_published = Some(now.clone());
                }
                if batch.kind == Kind::Penalty {
                    if let Some(old) = old_until
                        .as_ref()
                        .filter(|o| Some(*o) != item.meta.display_until.as_ref())
                    {
                        commit
                            .expiry
                            .push((old.replace('-', ""), item.key.clone(), false));
                    }
                    if let Some(u) = &item.meta.display_until {
                        commit
                            .expiry
                            .push((u.replace('-', ""), item.key.clone(), true));
                    }
                }
                if !quarantine_empty {
                    // Not when a newer version of the record went to quarantine while this one was on its way.
                    if let Some(q) = seen_entry(store, &mut commit, batch.kind, &item.source_id)? {
                        let held = held_updated_at(&q.source).unwrap_or_default();
                        if !newer(&held, &item.source_updated_at) {
                            commit
                                .quarantine_del
                                .push((batch.kind, item.source_id.clone()));
                        }
                    }
                }
            }
            (Op::Withdraw, ResultStatus::Withdrawn) | (Op::Withdraw, ResultStatus::Unchanged) => {
                // Not public already (`unchanged`): nothing taken down, the platform was as asked.
                if res.status == ResultStatus::Withdrawn {
                    applied.withdrawn += 1;
                } else {
                    applied.platform_unchanged += 1;
                }
                e.state = PlatformState::Withdrawn;
                e.last_error = None;
                forget_rejected_withdrawal(&mut e);
                // The source version the platform's state now follows (a revocation, a renumbering): reconcile's
                // repair does not publish again, on the word of an older copy of the record, what it took down.
                if e.source_id == item.source_id
                    && newer(&item.source_updated_at, &e.source_updated_at)
                {
                    e.source_updated_at = item.source_updated_at.clone();
                }
                acknowledged(&mut e, followed.as_deref(), &batch.created);
                if let Some(old) = &old_until {
                    commit
                        .expiry
                        .push((old.replace('-', ""), item.key.clone(), false));
                }
                // A withdrawal offered again after it was given up kept its entry until this answer.
                if !quarantine_empty {
                    if let Some(q) = seen_entry(store, &mut commit, batch.kind, &item.source_id)? {
                        let held = held_updated_at(&q.source)
                            .or(q.source_updated_at)
                            .unwrap_or_default();
                        if q.reason == "rejected" && !newer(&held, &item.source_updated_at) {
                            commit
                                .quarantine_del
                                .push((batch.kind, item.source_id.clone()));
                        }
                    }
                }
            }
            (Op::Withdraw, ResultStatus::Rejected) if res.code == "unknown_key" => {
                // Nothing to take down: the platform never held it. Not a rejection a person must look at; counted
                // as already held (the platform was as asked), so that the summary adds up to what was pushed.
                tracing::debug!(key = %mask_ids_in(&item.key), "the platform does not know a key to withdraw");
                applied.platform_unchanged += 1;
                e.state = PlatformState::Withdrawn;
                e.last_error = None;
                forget_rejected_withdrawal(&mut e);
                acknowledged(&mut e, followed.as_deref(), &batch.created);
                if let Some(old) = &old_until {
                    commit
                        .expiry
                        .push((old.replace('-', ""), item.key.clone(), false));
                }
            }
            (_, ResultStatus::Rejected) => {
                if e.state != PlatformState::Public {
                    e.state = PlatformState::Rejected;
                }
                e.rejected_digest = match item.op {
                    Op::Upsert => item.digest.clone(),
                    Op::Withdraw => Some(rejected_withdrawal(&item.source_updated_at)),
                };
                // The platform's words may quote a value, an ID number among them, and hold anything: line breaks
                // that would forge log lines or rows, text longer than a spreadsheet cell takes. Kept masked, on one
                // line, and cut.
                let code = crate::redact::quote_at_most(&res.code, &[], PLATFORM_CODE_CHARS);
                let message =
                    crate::redact::quote_at_most(&res.message, &[], PLATFORM_MESSAGE_CHARS);
                e.last_error = Some(format!("{code} {message}"));
                match &en {
                    Some(en) => tracing::warn!(key = %mask_ids_in(&item.key), "{en}"),
                    None => {
                        tracing::warn!(key = %mask_ids_in(&item.key), code = %code, "the platform rejected a record")
                    }
                }
                // A withdrawal of a key no source record of ours is known for (reconcile's repair of an orphan):
                // no record to hold or retry (an entry under the empty id, shared by every such key, could never
                // be retried, nor leave quarantine). Reconcile lists it as `orphan` again.
                if item.source_id.is_empty() {
                    applied.rejected += 1;
                    commit.ledger.push((item.key.clone(), e));
                    continue;
                }
                let existing = seen_entry(store, &mut commit, batch.kind, &item.source_id)?;
                // Not over the entry of a newer version: one that failed validation while this one was on its
                // way, or the version after the public one whose withdrawal (display period over) this was. The
                // rejection is in the ledger; replaced, that version's findings were gone, and a retry of this
                // version found it changed at the source and removed the entry, newer version and all.
                let newer_held = existing.as_ref().is_some_and(|q| {
                    held_updated_at(&q.source)
                        .or_else(|| q.source_updated_at.clone())
                        .is_some_and(|held| newer(&held, &item.source_updated_at))
                });
                if newer_held {
                    applied.rejected += 1;
                    commit.ledger.push((item.key.clone(), e));
                    continue;
                }
                // Given up on again, this same version (offered again an hour later, the platform still leaving it
                // out): not a new rejection for the operator, who was told the first time.
                let again = en.is_some()
                    && existing.as_ref().is_some_and(|q| {
                        q.reason == "rejected"
                            && q.findings.iter().any(|f| f.code == NO_RESULT)
                            && q.source_updated_at.as_deref()
                                == Some(item.source_updated_at.as_str())
                    });
                if again {
                    applied.still_unanswered += 1;
                } else {
                    applied.rejected += 1;
                }
                let first_seen = existing
                    .as_ref()
                    .map_or_else(|| now.clone(), |q| q.first_seen.clone());
                commit.quarantine_put.push(QuarantineEntry {
                    kind: batch.kind,
                    source_id: item.source_id.clone(),
                    key: Some(item.key.clone()),
                    reason: "rejected".into(),
                    findings: vec![StoredFinding {
                        en: en.unwrap_or_else(|| {
                            format!("the platform rejected the record: {code} {message}")
                        }),
                        code,
                        field: "(platform)".into(),
                        zh: message,
                    }],
                    // A batch resent after a crash has no source text: keep the held one if it is this version
                    // (a `quarantine retry` of it, say); an older one would be retried in place of what was sent.
                    source: match &item.source {
                        Some(raw) => held_copy(raw),
                        None => existing
                            .map(|q| q.source)
                            .filter(|s| {
                                held_updated_at(s).as_deref()
                                    == Some(item.source_updated_at.as_str())
                            })
                            .unwrap_or(serde_json::Value::Null),
                    },
                    first_seen,
                    last_seen: now.clone(),
                    meta: item.meta.clone(),
                    source_updated_at: Some(item.source_updated_at.clone()),
                    // Not `now`: a version stamped in the future when it was read, answered after that time has
                    // come (the platform down meanwhile), would be trusted as a later version, and an edit stamped
                    // correctly before it taken for an older copy (`QuarantineEntry::holds_later_than`).
                    read_at: Some(batch.created.clone()),
                });
            }
            // Not reached: `answers` let through only the pairs above.
            (Op::Upsert, ResultStatus::Withdrawn) | (Op::Withdraw, ResultStatus::Accepted) => {}
        }
        commit.ledger.push((item.key.clone(), e));
    }
    let unanswered = if unanswered.is_empty() {
        None
    } else {
        let msg = message_of(batch)?;
        let items = unanswered.iter().map(|&i| batch.items[i].clone()).collect();
        let records = unanswered.iter().map(|&i| msg.records[i].clone()).collect();
        let rest = OutboxBatch {
            unanswered: times,
            others_answered,
            ..part_of(batch, &msg, items, records)
        };
        // The batch's own key, replaced in the same transaction: a key of its own one byte longer (`seq.piece(1)`)
        // grew by a byte at every resend, three bytes a run for as long as the platform left the records out.
        let rest_seq = seq.clone();
        commit.outbox_put.push((rest_seq.clone(), rest.clone()));
        Some(Unanswered {
            seq: rest_seq,
            batch: rest,
            sent_flow: batch.flow.clone(),
            why,
        })
    };
    store.commit_receipt(&commit)?;
    Ok((applied, unanswered))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_overlap_start_keeps_the_offset_the_feed_wrote() {
        let ten = chrono::Duration::minutes(10);
        assert_eq!(
            minus_overlap("2026-11-27T02:00:00.123Z", ten),
            "2026-11-27T01:50:00.123Z"
        );
        assert_eq!(
            minus_overlap("2026-11-27T10:00:00.123+08:00", ten),
            "2026-11-27T09:50:00.123+08:00"
        );
        assert_eq!(
            minus_overlap("2026-11-27T02:00:00+00:00", ten),
            "2026-11-27T01:50:00.000+00:00"
        );
        assert_eq!(minus_overlap("not a time", ten), "not a time");
    }

    use super::*;

    fn at(since: &str, id: &str) -> Option<Cursor> {
        Some(Cursor {
            since: since.into(),
            after_id: id.into(),
        })
    }

    #[test]
    fn the_next_request_looks_back_yet_always_moves_on() {
        let overlap = chrono::Duration::minutes(10);
        let asked = at("2026-11-29T10:00:00.000+08:00", "");
        let none = HashSet::new();
        // A page dense in time: back to its middle item.
        let page = [
            at("2026-11-29T10:01:00.000+08:00", "A"),
            at("2026-11-29T10:02:00.000+08:00", "B"),
            at("2026-11-29T10:03:00.000+08:00", "C"),
        ];
        assert_eq!(
            next_position(&page, overlap, asked.as_ref(), &none),
            at("2026-11-29T10:02:00.000+08:00", "B")
        );
        // The middle item has no position (no readable updated_at): the nearest one before it. Looking back the
        // overlap from the last item would ask the same request again, for ever.
        let holed = [page[0].clone(), None, page[2].clone()];
        assert_eq!(
            next_position(&holed, overlap, asked.as_ref(), &none),
            at("2026-11-29T10:01:00.000+08:00", "A")
        );
        // No position before the middle: exactly after the last one.
        let late_only = [None, None, page[2].clone()];
        assert_eq!(
            next_position(&late_only, overlap, asked.as_ref(), &none),
            page[2].clone()
        );
        // A page spread over more than the overlap: the overlap before its last item.
        let spread = [
            at("2026-11-29T10:01:00.000+08:00", "A"),
            at("2026-11-29T10:30:00.000+08:00", "B"),
            at("2026-11-29T11:00:00.000+08:00", "C"),
        ];
        assert_eq!(
            next_position(&spread, overlap, asked.as_ref(), &none),
            at("2026-11-29T10:50:00.000+08:00", "")
        );
        // Nothing past where the page was asked from: no way on.
        assert_eq!(
            next_position(&[None, None], overlap, asked.as_ref(), &none),
            None
        );
        let behind = [at("2026-11-29T09:00:00.000+08:00", "Z"), None];
        assert_eq!(next_position(&behind, overlap, asked.as_ref(), &none), None);
    }

    #[test]
    fn a_tie_group_the_feed_collates_unlike_bytes_is_read_on() {
        // One UPDATE stamped these alike; the feed's locale ignores hyphens, so "XK-2024-…" comes after
        // "XK2019…" although its bytes sort before.
        let overlap = chrono::Duration::minutes(10);
        let t = "2026-11-29T09:00:00.000+08:00";
        let asked = at(t, "XK201900598");
        let page = [
            at(t, "XK-2024-000001"),
            at(t, "XK-2024-000003"),
            at(t, "XK-2024-000005"),
        ];
        let before: HashSet<Cursor> = [at(t, "XK201900596"), at(t, "XK201900598")]
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(
            next_position(&page, overlap, asked.as_ref(), &before),
            at(t, "XK-2024-000003")
        );
        // A feed that ignores `after_id` serves the same page again: that is no way on, not a loop.
        let again: HashSet<Cursor> = page.iter().flatten().cloned().collect();
        assert_eq!(
            next_position(&page, overlap, at(t, "XK-2024-000003").as_ref(), &again),
            at(t, "XK-2024-000005")
        );
        assert_eq!(
            next_position(&page, overlap, at(t, "XK-2024-000005").as_ref(), &again),
            None
        );
        // An earlier time is never onward, whatever the page brought.
        let behind = [at("2026-11-29T08:00:00.000+08:00", "Z"), None];
        assert_eq!(
            next_position(&behind, overlap, asked.as_ref(), &before),
            None
        );
    }

    #[test]
    fn a_look_up_bears_the_entry_s_own_name_or_is_none() {
        let at = "2026-11-29T10:00:00.123+08:00";
        for id in [
            "XK-1",
            "(id 6)",
            "(id 6 )",
            "(id -6)",
            "(id 6",
            " 6",
            "XK-\"引号\"\\反斜杠-①\u{3000}\u{1b}",
            r"\ud800",
            // a string id that looks like the name of a record without one is its own name
            "(no id) 0123456789ab",
        ] {
            let held = HeldVersion::look_up(id, at).unwrap_or_else(|| panic!("{id}"));
            assert_eq!(held.name(), id);
            assert_eq!(
                held.id_and_updated_at(),
                (Some(id.to_string()), Some(at.to_string()))
            );
            assert!(held.time().is_some());
        }
        // nothing to look for
        for (id, at) in [("", at), ("  ", at), ("XK-1", ""), ("XK-1", "昨天")] {
            assert!(HeldVersion::look_up(id, at).is_none(), "{id:?} {at:?}");
        }
    }

    #[test]
    fn a_time_that_is_not_rfc_3339_is_no_position() {
        let raw = |json: &str| RawValue::from_string(json.to_string()).unwrap();
        let good = raw(r#"{"id":"A","updated_at":"2026-11-29T10:00:00+08:00"}"#);
        assert_eq!(position(None, &good), at("2026-11-29T10:00:00+08:00", "A"));
        for bad in [
            r#"{"id":"A","updated_at":"yesterday"}"#,
            r#"{"id":"A","updated_at":null}"#,
            r#"{"id":7,"updated_at":"2026-11-29T10:00:00+08:00"}"#,
        ] {
            assert_eq!(position(None, &raw(bad)), None, "{bad}");
        }
    }
}
