//! The comparison behind `dualpub reconcile` (DESIGN §4): the platform's records for the agency (read page by
//! page into a compact index by key), the source's records (streamed from the feed and mapped with today's
//! mappings) and the ledger, joined by record key. Every record is judged against what the platform should hold
//! and against its 7-working-day deadline; the result is a `Report` plus what `--repair` would need.

use super::annual::{AnnualAccumulator, AnnualReport};
use super::gaps::{
    display_ended_detail, late_detail, missing_in_time_detail, older_copy_detail, overdue_detail,
    INVALID_OVERDUE_DETAIL, MINOR_DETAIL, MISSING_DETAIL, ORPHAN_DETAIL, REVOKED_DETAIL,
};
use super::report::{Category, GapRow, MonthOutcome, Rates, Report};
use crate::calendar::{Calendar, CalendarError};
use crate::config::Config;
use crate::findings::FindingCode;
use crate::ids::mask_id;
use crate::mapping::{Mapped, MappingSet};
use crate::model::{china_offset, Digest, Kind, PlatformRecord};
use crate::platform_client::PlatformClient;
use crate::retry::{Budget, GiveUp};
use crate::source_client::SourceClient;
use crate::source_schema::{SourceRecord, SourceStatus};
use crate::store::{LedgerEntry, PlatformState, RecordMeta, Store, StoreError};
use crate::xml::PublicStatus;
use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::str::FromStr;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    pub kinds: Vec<Kind>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
    pub today: NaiveDate,
    pub progress: bool,
    /// Collect what `--repair` needs of records to push again (spooled to a temporary file); without it the
    /// plan's `repush` stays empty and only its keys to withdraw are kept.
    pub repair: bool,
    /// The command's retry budget, when what follows the comparison spends the same one (`--repair`: reading both
    /// systems and the repair's runs share `[platform] retry_budget_secs`); `None`: a budget of its own.
    pub budget: Option<Arc<Budget>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Remote(#[from] GiveUp),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Calendar(#[from] CalendarError),
    #[error("cannot start the HTTP client: {0}")]
    Client(String),
    #[error(
        "cannot write a temporary file in {dir}: {source} (free some space there, or set TMPDIR to a directory with room)"
    )]
    TempFile { dir: String, source: std::io::Error },
    #[error("internal error: {0}")]
    Internal(String),
}

/// What `--repair` needs: source records to push again (only with `ReconcileOptions::repair`), keys to withdraw.
#[derive(Debug, Default)]
pub struct RepairPlan {
    pub repush: super::repush::Repush,
    /// When the source feed began to be read, before any record in `repush` was (the connector's clock): pushed
    /// later, those records are trusted as not stamped in the future by it (`sync::Copies::FromFeed`), not by when
    /// the repair makes their messages.
    pub read_from: chrono::DateTime<chrono::Utc>,
    pub withdraw: Vec<(Kind, String)>,
    pub orphans: Vec<(Kind, String)>,
    /// Withdrawals not planned: a record that should be public, later in the feed, is pushed to the same key (the
    /// record changed while the feed was read, or another record has the same document number).
    pub held_back: u64,
    /// Records neither pushed again nor withdrawn because the feed served an older version of them than the one
    /// the platform holds and acknowledged ([`older_copy`]): a lagging replica must not undo a publication.
    pub older_copies: u64,
}

fn cst_date(ts: &str) -> Option<NaiveDate> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.with_timezone(&china_offset()).date_naive())
}

fn in_window(d: Option<NaiveDate>, from: Option<NaiveDate>, to: Option<NaiveDate>) -> bool {
    match d {
        None => from.is_none() && to.is_none(),
        Some(d) => from.is_none_or(|f| d >= f) && to.is_none_or(|t| d <= t),
    }
}

/// The fields of two versions of a record that differ.
fn differing_fields(a: &PlatformRecord, b: &PlatformRecord) -> Vec<String> {
    let names: BTreeSet<&str> = a.fields().chain(b.fields()).map(|(k, _)| k).collect();
    names
        .into_iter()
        .filter(|n| a.get(n) != b.get(n))
        .map(str::to_string)
        .collect()
}

/// The platform row of the version of source record `id` last published, when that is under another key than
/// `key` (its document number changed since): its entry in `held` and its key. Only when the ledger still links
/// the record to that key and names it as the key's record (so not a number another record has taken over).
fn linked_row(
    store: &Store,
    held: &HeldIndex,
    kind: Kind,
    id: &str,
    key: Option<&str>,
) -> Result<Option<(usize, String)>, StoreError> {
    let Some(old) = store.by_source_get(kind, id)? else {
        return Ok(None);
    };
    if Some(old.as_str()) == key {
        return Ok(None);
    }
    let Some(i) = held.find(&old) else {
        return Ok(None);
    };
    let mine = store.ledger_get(&old)?.is_some_and(|l| l.source_id == id);
    Ok(mine.then_some((i, old)))
}

/// A key's ledger entry, read from the store at most once per source record.
struct LedgerOnce(Option<Option<LedgerEntry>>);

impl LedgerOnce {
    fn get(&mut self, store: &Store, key: &str) -> Result<Option<&LedgerEntry>, StoreError> {
        if self.0.is_none() {
            self.0 = Some(store.ledger_get(key)?);
        }
        Ok(self.0.as_ref().and_then(Option::as_ref))
    }
}

/// The feed's copy of a record, older than the version the platform holds: when it was stamped, and when the
/// version the platform acknowledged was.
#[derive(Debug, PartialEq, Eq)]
struct OlderCopy {
    served: String,
    acknowledged: String,
}

/// Whether the feed served source record `id` (stamped `served_at`) in a version older than the one the ledger
/// says the platform acknowledged for the key, so that `--repair` must not push (or withdraw) on its word: a
/// lagging replica of the enforcement system would undo a correct publication.
///
/// Only when the comparison can be trusted: the ledger's version is this record's, the platform holds exactly the
/// digest the ledger acknowledged and in the state it acknowledged (so nothing else changed the row since), and
/// that version was not stamped in the future when it was read (`source_updated_at` after `last_pushed`, the
/// connector's clock when it made the message that carried it). A future-stamped version says nothing of what came after it: an edit
/// stamped correctly later in real time has an earlier `updated_at`, and sync keeps its checkpoint at its own clock
/// (`Engine::checkpoint`) so that such edits are read — and should one be committed too late for sync, only
/// `--repair` sends it. Were it skipped here, it would stay unpublished for good.
///
/// `digest`: the served copy's, when it is valid. As in sync ([`LedgerEntry::holds_later_version_of`]), a valid copy
/// is older only when its content is one the platform acknowledged for the key (or it is exactly a version
/// acknowledged before): a late edit stamped earlier (a transaction that began before the acknowledged version was
/// saved) with new content is the record's latest version, `stale` (or `missing`), and `--repair` sends it. `None`:
/// a copy that fails validation, with no content the platform could have acknowledged; the stamp alone decides.
fn older_copy(
    entry: Option<&LedgerEntry>,
    id: &str,
    (served_at, digest): (Option<&str>, Option<&Digest>),
    platform: &Held,
) -> Option<OlderCopy> {
    let e = entry?;
    if e.source_id != id {
        return None;
    }
    let acked = Digest::parse(e.digest.as_deref()?)?;
    if platform.digest != Some(acked) || platform.public != (e.state == PlatformState::Public) {
        return None;
    }
    let served_text = served_at?;
    let digest = digest.map(Digest::to_hex);
    e.follows_later_than_copy(served_text, digest.as_deref())
        .then(|| OlderCopy {
            served: served_text.to_string(),
            acknowledged: e.source_updated_at.clone(),
        })
}

/// [`older_copy`] for a source record and the platform row it took, as the detail its gap row gives; `None` when
/// the row is not known to hold a later version (or there is no row). Asked only where `--repair` would act.
fn older_copy_row(
    entry: &mut LedgerOnce,
    store: &Store,
    key: &str,
    (src, digest): (&SourceInfo, &Digest),
    platform: Option<&Held>,
) -> Result<Option<String>, StoreError> {
    let Some(platform) = platform else {
        return Ok(None);
    };
    Ok(older_copy(
        entry.get(store, key)?,
        &src.id,
        (src.updated_at.as_deref(), Some(digest)),
        platform,
    )
    .map(|o| older_copy_detail(&o.served, &o.acknowledged)))
}

fn stale_spool_failed(source: std::io::Error) -> ReconcileError {
    ReconcileError::TempFile {
        dir: std::env::temp_dir().display().to_string(),
        source,
    }
}

/// Runs the comparison. Reads the source and the platform; writes nothing.
pub async fn reconcile(
    cfg: &Config,
    mappings: &MappingSet,
    store: &Store,
    calendar: &Calendar,
    opts: &ReconcileOptions,
) -> Result<(Report, RepairPlan), ReconcileError> {
    compare(cfg, mappings, store, calendar, opts, None).await
}

/// The year's numbers for `report annual`, from the same comparison (the window is the year), with its notes and
/// the year's own: source records whose decision date cannot be read are in no year, and amounts a sum of the
/// year could not take.
pub async fn annual(
    cfg: &Config,
    mappings: &MappingSet,
    store: &Store,
    calendar: &Calendar,
    opts: &ReconcileOptions,
    mut acc: AnnualAccumulator,
) -> Result<AnnualReport, ReconcileError> {
    let (report, _) = compare(cfg, mappings, store, calendar, opts, Some(&mut acc)).await?;
    let mut annual = acc.finish();
    // the comparison's notes first, then the year's own (amounts its sums could not take)
    annual.notes.splice(0..0, report.notes);
    Ok(annual)
}

/// How many of the ids of records without a decision date a note names.
const UNDATED_NAMED: usize = 10;

/// Counts a decision for `report annual`, with the judgement that 及时率 made of it (the same records are due).
/// Its category as mapped, [`super::annual::UNMAPPED`] when the mapping gave none; its status decides whether it
/// is revoked (counted) or superseded (not counted).
fn add_to_annual(
    acc: &mut AnnualAccumulator,
    kind: Kind,
    r: &PlatformRecord,
    status: Option<SourceStatus>,
    decided: NaiveDate,
    judged: Option<MonthOutcome>,
) {
    match kind {
        Kind::Permit => acc.add_permit(r.get("XK_XKLB"), status, decided, judged),
        Kind::Penalty => {
            let cats: Vec<&str> = r
                .get("CF_CFLB")
                .map(|c| c.split(';').collect())
                .unwrap_or_default();
            let amount = |f: &str| r.get(f).and_then(|v| Decimal::from_str(v).ok());
            acc.add_penalty(
                &cats,
                status,
                amount("CF_NR_FK"),
                amount("CF_NR_WFFF"),
                decided,
                judged,
            );
        }
    }
}

/// A platform record as the comparison needs it.
struct Held {
    digest: Option<Digest>,
    public: bool,
    published: Option<NaiveDate>,
    page: u64,
}

const HELD_PUBLIC: u8 = 1;
const HELD_DIGEST: u8 = 2;
const HELD_TAKEN: u8 = 4;
/// The key does not start with the index's prefix and is stored whole.
const HELD_WHOLE_KEY: u8 = 8;
/// A source record that should be public maps to the key and is to be pushed (`missing` or `stale`): the row is
/// not an orphan (two records with one document number, say, that sync's holder check settles when it is pushed).
const HELD_WANTED: u8 = 16;
const NO_DAY: i32 = i32::MIN;
const KEY_CHUNK: usize = 1 << 20;

/// One entry of [`HeldIndex`]: 56 bytes, plus the key's document number in the arena.
#[derive(Clone, Copy)]
struct HeldEntry {
    chunk: u32,
    at: u32,
    len: u32,
    page: u32,
    published: i32,
    flags: u8,
    /// `LEDGER_*` bits: what the ledger says of the key.
    ledger: u8,
    digest: [u8; 32],
}

const LEDGER_PRESENT: u8 = 1;
const LEDGER_SUBMITTED: u8 = 2;
const LEDGER_ACCEPTED: u8 = 4;
const LEDGER_REJECTED: u8 = 8;
const LEDGER_EXTRA: u8 = 16;

/// What the comparison needs of a ledger entry.
struct LedgerView {
    /// Sent at least once.
    submitted: bool,
    /// Acknowledged by the platform at some point.
    accepted: bool,
    /// Its state is `rejected`.
    rejected_state: bool,
    rejected_digest: Option<String>,
    last_error: Option<String>,
}

impl From<LedgerEntry> for LedgerView {
    fn from(l: LedgerEntry) -> LedgerView {
        LedgerView {
            submitted: l.attempts > 0,
            accepted: l.state == PlatformState::Public
                || l.state == PlatformState::Withdrawn
                || l.digest.is_some(),
            rejected_state: l.state == PlatformState::Rejected,
            rejected_digest: l.rejected_digest,
            last_error: l.last_error,
        }
    }
}

/// Marks a [`LedgerSide`] key stored whole (it does not start with the listing's `{item}:{sender}:` prefix).
const LEDGER_WHOLE_KEY: u8 = 128;

/// One kind's ledger, read on a thread of its own while the platform is listed: keys back to back (without the
/// prefix the platform listing's keys share), per entry where its key ends and its `LEDGER_*` bits, and the rare
/// rejected digest and last error by row.
#[derive(Default)]
struct LedgerSide {
    keys: Vec<u8>,
    /// Where each entry's key ends in `keys` (u32: a kind's keys stay far below 4 GiB; 5 bytes an entry with
    /// `bits`, not the 16 of a `(usize, u8)`: this side is read while the previous kind's index is still held).
    ends: Vec<u32>,
    bits: Vec<u8>,
    extra: HashMap<usize, (Option<String>, Option<String>)>,
}

impl LedgerSide {
    /// Reads the ledger entries of `kind` in the store's order (key order but where keys of different lengths
    /// meet); `prefix` is the listing's shared key prefix.
    fn read(store: &Store, kind: Kind, prefix: &str) -> Result<LedgerSide, StoreError> {
        let mut side = LedgerSide::default();
        for r in store.ledger_iter_prefix(&format!("{}:", kind.item())) {
            let (key, l) = r?;
            let (stored, mut bits) = match key.strip_prefix(prefix) {
                Some(rest) => (rest, LEDGER_PRESENT),
                None => (key.as_str(), LEDGER_PRESENT | LEDGER_WHOLE_KEY),
            };
            let v = LedgerView::from(l);
            if v.submitted {
                bits |= LEDGER_SUBMITTED;
            }
            if v.accepted {
                bits |= LEDGER_ACCEPTED;
            }
            if v.rejected_state {
                bits |= LEDGER_REJECTED;
            }
            if v.rejected_state || v.rejected_digest.is_some() {
                bits |= LEDGER_EXTRA;
                side.extra
                    .insert(side.bits.len(), (v.rejected_digest, v.last_error));
            }
            side.keys.extend_from_slice(stored.as_bytes());
            let end = u32::try_from(side.keys.len()).map_err(|_| StoreError::Damaged {
                path: store.path().to_string(),
                detail: format!("the ledger's {} keys exceed 4 GiB", kind.item()),
            })?;
            side.ends.push(end);
            side.bits.push(bits);
        }
        Ok(side)
    }
}

/// The platform's records of one kind, compactly: entries sorted by key (the platform lists in key order, so
/// this is usually free), each key stored without the `{item}:{sender}:` prefix every key of the listing
/// shares, in a chunked arena; the digest as bytes, the first publication as a day number. A million records
/// take about 100 MB instead of the ~250 MB of a `HashMap<String, _>`.
struct HeldIndex {
    prefix: String,
    arena: Vec<Vec<u8>>,
    entries: Vec<HeldEntry>,
    sorted: bool,
    /// Rejected digest and last error of the entries whose ledger entry has them (`LEDGER_EXTRA`).
    ledger_extra: HashMap<usize, (Option<String>, Option<String>)>,
}

impl HeldIndex {
    fn new(prefix: String) -> HeldIndex {
        HeldIndex {
            prefix,
            arena: Vec::new(),
            entries: Vec::new(),
            sorted: true,
            ledger_extra: HashMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    /// The key of an entry as (prefix, rest).
    fn key(&self, e: &HeldEntry) -> (&[u8], &[u8]) {
        let rest = self
            .arena
            .get(e.chunk as usize)
            .and_then(|c| c.get(e.at as usize..(e.at + e.len) as usize))
            .unwrap_or(&[]);
        if e.flags & HELD_WHOLE_KEY != 0 {
            (&[], rest)
        } else {
            (self.prefix.as_bytes(), rest)
        }
    }

    fn cmp_entry(&self, e: &HeldEntry, prefix: &[u8], rest: &[u8]) -> std::cmp::Ordering {
        let (p, r) = self.key(e);
        if p == prefix {
            r.cmp(rest)
        } else {
            p.iter().chain(r).cmp(prefix.iter().chain(rest))
        }
    }

    fn split<'k>(&self, key: &'k str) -> (&[u8], &'k [u8]) {
        match key.strip_prefix(self.prefix.as_str()) {
            Some(rest) => (self.prefix.as_bytes(), rest.as_bytes()),
            None => (&[], key.as_bytes()),
        }
    }

    fn push(&mut self, r: &crate::xml::PageRecord, page: u64) {
        let (prefix, rest) = self.split(&r.key);
        let mut flags = if prefix.is_empty() { HELD_WHOLE_KEY } else { 0 };
        if self.sorted {
            if let Some(last) = self.entries.last() {
                if self.cmp_entry(last, prefix, rest) != std::cmp::Ordering::Less {
                    self.sorted = false;
                }
            }
        }
        let fits = self
            .arena
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= rest.len());
        if !fits {
            self.arena
                .push(Vec::with_capacity(KEY_CHUNK.max(rest.len())));
        }
        let chunk = self.arena.len() - 1;
        let c = &mut self.arena[chunk];
        let at = c.len();
        c.extend_from_slice(rest);
        let digest = Digest::parse(&r.digest);
        if digest.is_some() {
            flags |= HELD_DIGEST;
        }
        if r.status == PublicStatus::Public {
            flags |= HELD_PUBLIC;
        }
        self.entries.push(HeldEntry {
            chunk: chunk as u32,
            at: at as u32,
            len: rest.len() as u32,
            page: u32::try_from(page).unwrap_or(u32::MAX),
            published: cst_date(&r.published_at)
                .map(|d| d.num_days_from_ce())
                .unwrap_or(NO_DAY),
            flags,
            ledger: 0,
            digest: digest.map(|d| d.0).unwrap_or([0; 32]),
        });
    }

    /// Sorts the entries by key if the listing was not in key order; of a key listed twice the later wins.
    fn finish(&mut self) {
        if self.sorted {
            return;
        }
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_by(|a, b| {
            let (pb, rb) = self.key(b);
            self.cmp_entry(a, pb, rb)
        });
        entries.dedup_by(|later, kept| {
            let (p, r) = self.key(later);
            let same = self.cmp_entry(kept, p, r) == std::cmp::Ordering::Equal;
            if same {
                *kept = *later;
            }
            same
        });
        self.entries = entries;
        self.sorted = true;
    }

    /// Where `key` is.
    fn find(&self, key: &str) -> Option<usize> {
        let (prefix, rest) = self.split(key);
        self.entries
            .binary_search_by(|e| self.cmp_entry(e, prefix, rest))
            .ok()
    }

    /// Attaches what the ledger says of each listed key (read by [`LedgerSide::read`], nearly in key order) to
    /// the key-sorted entries in one merge, so the comparison does not look a million keys up one by one.
    fn attach_ledger(&mut self, side: LedgerSide) {
        let mut i = 0;
        let mut start = 0;
        for (row, (&end, &bits)) in side.ends.iter().zip(&side.bits).enumerate() {
            let end = end as usize;
            let key = &side.keys[start..end];
            start = end;
            let (prefix, rest): (&[u8], &[u8]) = if bits & LEDGER_WHOLE_KEY != 0 {
                (&[], key)
            } else {
                (self.prefix.as_bytes(), key)
            };
            // The ledger comes bucket by bucket (store.rs): in key order except where keys of different lengths
            // meet. A row that sorts before the entry the merge reached is found anew by binary search.
            if i > 0
                && self.cmp_entry(&self.entries[i - 1], prefix, rest) != std::cmp::Ordering::Less
            {
                i = self.entries.partition_point(|e| {
                    self.cmp_entry(e, prefix, rest) == std::cmp::Ordering::Less
                });
            }
            while i < self.entries.len()
                && self.cmp_entry(&self.entries[i], prefix, rest) == std::cmp::Ordering::Less
            {
                i += 1;
            }
            if i == self.entries.len() {
                continue;
            }
            if self.cmp_entry(&self.entries[i], prefix, rest) != std::cmp::Ordering::Equal {
                continue;
            }
            if bits & LEDGER_EXTRA != 0 {
                if let Some(extra) = side.extra.get(&row) {
                    self.ledger_extra.insert(i, extra.clone());
                }
            }
            self.entries[i].ledger = bits & !LEDGER_WHOLE_KEY;
        }
    }

    /// The ledger's view of the entry at `i` (after [`HeldIndex::attach_ledger`]).
    fn ledger_at(&self, i: usize) -> Option<LedgerView> {
        let bits = self.entries.get(i)?.ledger;
        if bits & LEDGER_PRESENT == 0 {
            return None;
        }
        let (rejected_digest, last_error) = if bits & LEDGER_EXTRA != 0 {
            self.ledger_extra.get(&i).cloned().unwrap_or_default()
        } else {
            (None, None)
        };
        Some(LedgerView {
            submitted: bits & LEDGER_SUBMITTED != 0,
            accepted: bits & LEDGER_ACCEPTED != 0,
            rejected_state: bits & LEDGER_REJECTED != 0,
            rejected_digest,
            last_error,
        })
    }

    /// The record at `i`, once: an entry already taken answers `None`, as a removed map entry would.
    fn take_at(&mut self, i: usize) -> Option<Held> {
        let e = &mut self.entries[i];
        if e.flags & HELD_TAKEN != 0 {
            return None;
        }
        e.flags |= HELD_TAKEN;
        Some(self.peek_at(i))
    }

    /// The record at `i`, taken or not.
    fn peek_at(&self, i: usize) -> Held {
        let e = &self.entries[i];
        Held {
            digest: (e.flags & HELD_DIGEST != 0).then_some(Digest(e.digest)),
            public: e.flags & HELD_PUBLIC != 0,
            published: (e.published != NO_DAY)
                .then(|| NaiveDate::from_num_days_from_ce_opt(e.published))
                .flatten(),
            page: u64::from(e.page),
        }
    }

    /// Gives back an entry [`HeldIndex::take_at`] took: the record that took it is not the one it belongs to.
    fn untake(&mut self, i: usize) {
        self.entries[i].flags &= !HELD_TAKEN;
    }

    /// Marks the entry at `i` as wanted ([`HELD_WANTED`]).
    fn want(&mut self, i: usize) {
        self.entries[i].flags |= HELD_WANTED;
    }

    /// Public records nobody took and nobody wants pushed, with their page, in key order.
    fn untaken_public(&self) -> Vec<(String, u64)> {
        self.entries
            .iter()
            .filter(|e| e.flags & (HELD_TAKEN | HELD_WANTED | HELD_PUBLIC) == HELD_PUBLIC)
            .map(|e| {
                let (p, r) = self.key(e);
                let mut k = String::from_utf8_lossy(p).into_owned();
                k.push_str(&String::from_utf8_lossy(r));
                (k, u64::from(e.page))
            })
            .collect()
    }
}

/// One source record, read and mapped off the comparison's thread.
/// What every gap row of one source record shares.
struct RowParts<'m> {
    meta: &'m RecordMeta,
    kind: Kind,
    decided: Option<NaiveDate>,
    deadline: Option<NaiveDate>,
}

impl<'m> RowParts<'m> {
    fn row<'a>(
        &'a self,
        category: Category,
        key: &'a str,
        detail: &'a str,
        published: Option<NaiveDate>,
    ) -> super::gaps::GapRef<'a> {
        super::gaps::GapRef {
            category,
            key,
            kind: self.kind,
            doc_no: &self.meta.doc_no,
            party_name: &self.meta.party_name,
            party_id_masked: &self.meta.party_id_masked,
            decided_on: self.decided,
            deadline: self.deadline,
            first_published: published,
            detail,
        }
    }

    /// Adds a `late` row for `key`: first published on `first`, after `deadline`.
    fn push_late(
        &self,
        gaps: &mut super::gaps::Gaps,
        key: &str,
        (first, deadline): (NaiveDate, NaiveDate),
        published: Option<NaiveDate>,
    ) {
        let detail = late_detail(first, deadline);
        gaps.push_ref(self.row(Category::Late, key, &detail, published));
    }
}

/// The parts of a source record the comparison reads after mapping.
struct SourceInfo {
    id: String,
    status: Option<SourceStatus>,
    updated_at: Option<String>,
}

struct Prepared {
    raw: Box<RawValue>,
    /// What the comparison needs of the source record; `None`: the source schema cannot read it. (The record
    /// itself is dropped on the mapping thread: freeing its ~20 strings here is cheaper than on the caller's.)
    src: Option<SourceInfo>,
    decided: Option<NaiveDate>,
    /// Only for records in the window.
    mapped: Option<Mapped>,
    /// The record key of a record outside the window: its platform row is the source's, not an orphan.
    outside_key: Option<String>,
    meta: RecordMeta,
    digest: Option<Digest>,
    filled_items: u64,
    expected_items: u64,
}

/// The feed position an item stands for (`updated_at`, `id`), as the raw JSON gives it, without reading the
/// rest of the record (which may be unreadable).
fn raw_position(raw: &RawValue) -> Option<(String, String)> {
    let head = crate::source_schema::RawHead::of(raw.get());
    Some((head.updated_at_text()?, head.id_text()?))
}

/// Reads a source record as sync does; `None` when the source schema cannot.
fn read_source(raw: &RawValue) -> Option<SourceRecord> {
    crate::source_schema::read_record(raw.get()).ok()
}

fn prepare(
    kind: Kind,
    mapping: &crate::mapping::Mapping,
    ctx: &crate::mapping::MappingContext,
    window: (Option<NaiveDate>, Option<NaiveDate>),
    raw: Box<RawValue>,
) -> Prepared {
    let src = read_source(&raw);
    let mut p = Prepared {
        raw,
        src: None,
        decided: None,
        mapped: None,
        outside_key: None,
        meta: RecordMeta::default(),
        digest: None,
        filled_items: 0,
        expected_items: 0,
    };
    let Some(src) = src else {
        return p;
    };
    p.decided = src
        .decided_on
        .as_deref()
        .and_then(crate::mapping::parse_source_date);
    if in_window(p.decided, window.0, window.1) {
        let mapped = mapping.map(ctx, &src);
        p.meta = crate::sync::record_meta(kind, &src, &mapped.record);
        // 完整率: filled items among those that apply to the record's category.
        (p.filled_items, p.expected_items) = mapping.completeness(&mapped.record);
        if mapped.is_valid() {
            p.digest = Some(mapped.record.digest());
        }
        p.mapped = Some(mapped);
    } else if window.0.is_some() || window.1.is_some() {
        // Its decision date may have moved out of the window while the platform still shows the old one inside.
        p.outside_key = mapping.map(ctx, &src).key.map(|k| k.to_string());
    }
    p.src = Some(SourceInfo {
        status: src.status(),
        id: src.id,
        updated_at: src.updated_at,
    });
    p
}

/// Pages of the feed in feed order, each mapped in a task of its own.
type Feed =
    tokio::sync::mpsc::Receiver<tokio::task::JoinHandle<Result<Vec<Prepared>, ReconcileError>>>;

/// Reads and maps the source feed of `kind` in a task of its own, one page ahead: fetching, mapping and
/// comparing overlap, and the feed starts while the platform is still being listed. The next page is requested
/// (from the last position of this one) before this one is mapped, so the source serves while we map; each page
/// is mapped in a task of its own, so two pages are mapped at once on two cores.
fn spawn_feed(
    source: Arc<SourceClient>,
    budget: Arc<Budget>,
    kind: Kind,
    mappings: Arc<MappingSet>,
    ctx: crate::mapping::MappingContext,
    window: (Option<NaiveDate>, Option<NaiveDate>),
) -> Feed {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let failed = |e: ReconcileError| tokio::spawn(async move { Err(e) });
    let fetch = move |pos: Option<(String, String)>| {
        let (source, budget) = (source.clone(), budget.clone());
        tokio::spawn(async move {
            source
                .changes_raw(
                    &budget,
                    kind,
                    pos.as_ref().map(|c| c.0.as_str()),
                    pos.as_ref().map(|c| c.1.as_str()).unwrap_or(""),
                    None,
                )
                .await
        })
    };
    tokio::spawn(async move {
        let mut pos: Option<(String, String)> = None;
        let mut next = Some(fetch(None));
        let answer = |this: tokio::task::JoinHandle<Result<_, GiveUp>>| async move {
            match this.await {
                Ok(Ok(p)) => Ok(p),
                Ok(Err(e)) => Err(ReconcileError::from(e)),
                Err(e) => Err(ReconcileError::Internal(format!(
                    "reading the enforcement system failed: {e}"
                ))),
            }
        };
        while let Some(this) = next.take() {
            let after = pos.clone();
            let mut page = answer(this).await;
            // A page cut short before a commit still in progress can hold nothing yet say there is more: asked
            // again, as sync does. Taken for the end of the feed, every record after it was missing from the
            // comparison: each public one an `orphan`, withdrawn by `--repair --repair-orphans`.
            if matches!(&page, Ok(p) if p.items.is_empty() && p.has_more) {
                page = answer(fetch(pos.clone())).await;
            }
            let page = match page {
                Ok(p) if p.items.is_empty() && p.has_more => {
                    let _ = tx
                        .send(failed(ReconcileError::Remote(GiveUp::Fatal {
                            what: format!("reading the {kind} change feed"),
                            message: format!(
                                "the enforcement system says it has more changes after {} but serves none (asked \
                                 twice), so the records after it cannot be compared; its vendor must serve a record \
                                 on every page that has more after it",
                                pos.as_ref().map_or("the start", |c| c.0.as_str())
                            ),
                        })))
                        .await;
                    return;
                }
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(failed(e)).await;
                    return;
                }
            };
            let more = page.has_more;
            if more {
                // The feed continues after the last item that has a position. A page with none (no `updated_at`
                // or `id`), or none past where it was asked from, gives no way on: asked again, it was the same
                // page for ever.
                match page.items.iter().rev().find_map(|raw| raw_position(raw)) {
                    Some(at) if pos.as_ref() != Some(&at) => pos = Some(at),
                    _ => {
                        let _ = tx
                            .send(failed(ReconcileError::Remote(GiveUp::Fatal {
                                what: format!("reading the {kind} change feed"),
                                message: format!(
                                    "a page after {} has no record with an `updated_at` and an `id` past where it \
                                     was asked from, so the feed cannot be read further; the enforcement system's \
                                     change feed must give every record an RFC 3339 `updated_at` and an `id`",
                                    pos.as_ref().map_or("the start", |c| c.0.as_str())
                                ),
                            })))
                            .await;
                        return;
                    }
                }
                next = Some(fetch(pos.clone()));
            }
            // Mapped in a task on a runtime worker (the comparison runs on the caller's thread), so the next page
            // is mapped on the other core meanwhile; the channel keeps pages in feed order. Not a dedicated
            // blocking thread per page: every new thread gets its own allocator cache that keeps freed memory.
            let (mappings, ctx) = (mappings.clone(), ctx.clone());
            let items = tokio::spawn(async move {
                let mapping = mappings.get(kind);
                let prepared: Vec<Prepared> = page
                    .items
                    .into_iter()
                    .map(|raw| prepare(kind, mapping, &ctx, window, raw))
                    .collect();
                // A feed not ordered by `updated_at` skips, read on from a page's last record, what the page orders
                // after later ones: each a `missing` record, and its published copy an `orphan` that
                // `--repair --repair-orphans` would withdraw. Positions as read (the raw text only when the schema
                // could not read the record).
                let positions: Vec<Option<(String, String)>> = prepared
                    .iter()
                    .map(|p| match &p.src {
                        Some(s) => s.updated_at.clone().map(|u| (u, s.id.clone())),
                        None => raw_position(&p.raw),
                    })
                    .collect();
                let disorder = crate::source_client::out_of_order(
                    positions
                        .iter()
                        .map(|p| p.as_ref().map(|(t, id)| (t.as_str(), id.as_str()))),
                );
                if let Some(disorder) = disorder {
                    return Err(ReconcileError::Remote(GiveUp::Fatal {
                        what: format!("reading the {kind} change feed"),
                        message: format!(
                            "the enforcement system's change feed is not ordered by `updated_at` (then `id`): in \
                             the page after {}, {disorder}; read on from such a page, the records it orders after \
                             later ones would be missing from the comparison, so reconcile stops here; its vendor \
                             must order the feed by `updated_at`, then `id` (DESIGN §2)",
                            after.as_ref().map_or("the start", |c| c.0.as_str())
                        ),
                    }));
                }
                Ok(prepared)
            });
            if tx.send(items).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// A kind's platform index with its ledger attached, and how long listing and then the ledger took.
type PlatformSide = (HeldIndex, std::time::Duration, std::time::Duration);

/// The platform side of `kind` in a task of its own: its listing as a compact index (the next page is fetched
/// while this one is indexed) and, read meanwhile on a thread of its own, the kind's ledger attached to it. Also
/// how long the listing and the wait for the ledger took.
fn spawn_platform_side(
    platform: Arc<PlatformClient>,
    budget: Arc<Budget>,
    store: Store,
    kind: Kind,
    sender: String,
    size: u32,
    pb: Option<indicatif::ProgressBar>,
) -> tokio::task::JoinHandle<Result<PlatformSide, ReconcileError>> {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut held = HeldIndex::new(format!("{}:{}:", kind.item(), sender));
        let ledger_side = {
            let prefix = held.prefix.clone();
            tokio::task::spawn_blocking(move || LedgerSide::read(&store, kind, &prefix))
        };
        let fetch = |page: u64| {
            let (platform, budget, sender) = (platform.clone(), budget.clone(), sender.clone());
            tokio::spawn(async move {
                platform
                    .records(&budget, kind, &sender, page, size, false)
                    .await
            })
        };
        let joined = |r: Result<_, tokio::task::JoinError>| {
            r.map_err(|e| ReconcileError::Internal(format!("reading the platform failed: {e}")))
        };
        let mut page = 1u64;
        let mut next = Some(fetch(page));
        while let Some(this) = next.take() {
            let p = joined(this.await)??;
            let n = p.records.len();
            let more = n != 0 && page * u64::from(size) < p.total;
            if more {
                next = Some(fetch(page + 1));
            }
            if held.entries.capacity() == 0 {
                held.entries
                    .reserve(usize::try_from(p.total.min(10_000_000)).unwrap_or(0));
            }
            for r in &p.records {
                held.push(r, page);
            }
            if let Some(pb) = &pb {
                pb.set_message(format!(
                    "{}: {} platform records read",
                    kind.zh(),
                    held.len()
                ));
            }
            page += 1;
        }
        held.finish();
        let listed = started.elapsed();
        let side = ledger_side
            .await
            .map_err(|e| ReconcileError::Internal(format!("reading the ledger failed: {e}")))??;
        held.attach_ledger(side);
        Ok((held, listed, started.elapsed() - listed))
    })
}

async fn compare(
    cfg: &Config,
    mappings: &MappingSet,
    store: &Store,
    calendar: &Calendar,
    opts: &ReconcileOptions,
    mut annual: Option<&mut AnnualAccumulator>,
) -> Result<(Report, RepairPlan), ReconcileError> {
    let budget = opts
        .budget
        .clone()
        .unwrap_or_else(|| Arc::new(Budget::new(cfg.retry_budget, cfg.max_backoff)));
    let source = Arc::new(
        SourceClient::new(
            &cfg.source_url,
            cfg.source_token.clone(),
            cfg.source_page_size,
            cfg.source_timeout,
        )
        .map_err(|e| ReconcileError::Client(e.to_string()))?,
    );
    let platform = Arc::new(
        PlatformClient::new(
            &cfg.platform_url,
            &cfg.app_key,
            cfg.platform_secret.clone(),
            cfg.platform_timeout,
        )
        .map_err(|e| ReconcileError::Client(e.to_string()))?,
    );
    let shared_mappings = Arc::new(mappings.clone());
    let mut report = Report::new(opts.today);
    report.from = opts.from;
    report.to = opts.to;
    report.kinds = opts.kinds.clone();
    // A backfill can put every record in a category: rows beyond a few MB go to disk in sorted runs.
    report.gaps.spill_to_disk();
    let mut plan = RepairPlan {
        read_from: chrono::Utc::now(),
        ..RepairPlan::default()
    };
    let pb = opts.progress.then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.enable_steady_tick(std::time::Duration::from_millis(200));
        pb
    });
    // Records are judged as of the report's day (a decision dated after it is a finding).
    let ctx = &crate::mapping::MappingContext {
        today: Some(opts.today),
        ..cfg.mapping_context.clone()
    };

    let platform_side = |kind: Kind| {
        spawn_platform_side(
            platform.clone(),
            budget.clone(),
            store.clone(),
            kind,
            cfg.agency_credit_code.clone(),
            cfg.platform_page_size,
            pb.clone(),
        )
    };
    let mut next_side = opts.kinds.first().map(|&kind| platform_side(kind));
    // Records whose deadline the calendar cannot give (a decision late in its last year, say): counted, the first
    // date and the calendar's own words kept for the note; the rest of the report goes on.
    let mut uncovered: Option<(u64, NaiveDate, CalendarError)> = None;
    // Penalties whose display period ended before they were ever published.
    let mut never_published = 0u64;
    // For `report annual`: source records with no readable decision date, and the first ids.
    let mut undated: (u64, Vec<String>) = (0, Vec::new());
    let windowed = opts.from.is_some() || opts.to.is_some();
    for (ki, &kind) in opts.kinds.iter().enumerate() {
        let started = std::time::Instant::now();
        let mut rates = Rates::default();
        // The source feed starts now, a page ahead, while the platform is listed.
        let mut feed = spawn_feed(
            source.clone(),
            budget.clone(),
            kind,
            shared_mappings.clone(),
            ctx.clone(),
            (opts.from, opts.to),
        );
        // 1. The platform side with the ledger's view of each key, read while the previous kind was compared;
        // the next kind's is read while this one is.
        let side = next_side.take().ok_or_else(|| {
            ReconcileError::Internal("the platform side of a kind was not started".into())
        })?;
        let (mut held, listed, ledger_read) = side
            .await
            .map_err(|e| ReconcileError::Internal(format!("reading the platform failed: {e}")))??;
        next_side = opts.kinds.get(ki + 1).map(|&next| platform_side(next));
        report.platform_records += held.len() as u64;
        let platform_records = held.len();

        // Records held back because another record already has their document number: valid on their own,
        // they are quarantine's story, not `missing` (and the platform row belongs to the other record).
        let reused: HashMap<String, String> = if store.quarantine_is_empty() {
            HashMap::new()
        } else {
            store
                .quarantine_waiting_for(kind, None)?
                .into_iter()
                .filter_map(|(_, _, q)| {
                    let f = q.findings.iter().find(|f| f.code == "key_reused")?;
                    Some((
                        q.source_id.clone(),
                        format!("{} [{}] {}", f.field, f.code, f.zh),
                    ))
                })
                .collect()
        };

        // 2. The source side, streamed and mapped.
        let mut need_fields = super::stale::StaleRows::new();
        // Keys to withdraw, by their entry in `held`. A later version of the record in the feed that should be public
        // (it changed while the feed was read) takes its withdrawal back (`want`).
        let mut withdraw: BTreeMap<usize, String> = BTreeMap::new();
        let mut want = |held: &mut HeldIndex, withdraw: &mut BTreeMap<usize, String>, i: usize| {
            held.want(i);
            if withdraw.remove(&i).is_some() {
                plan.held_back += 1;
            }
        };
        let mut seen: usize = 0;
        while let Some(page) = feed.recv().await {
            let items = page.await.map_err(|e| {
                ReconcileError::Internal(format!(
                    "mapping the enforcement system's records failed: {e}"
                ))
            })??;
            for item in items {
                let Prepared {
                    raw,
                    src,
                    decided,
                    mapped,
                    outside_key,
                    meta,
                    digest,
                    filled_items,
                    expected_items,
                } = item;
                let Some(src) = src else {
                    // A record the source schema cannot read: only quarantine can tell its story.
                    if annual.is_some() {
                        undated.0 += 1;
                        if undated.1.len() < UNDATED_NAMED {
                            undated.1.push(crate::source_schema::record_name(raw.get()));
                        }
                    }
                    // Sync leaves its last valid version public: that row is the record's, not an orphan (`--repair
                    // --repair-orphans` withdrew it).
                    if let Some(id) = crate::source_schema::RawHead::of(raw.get()).id_text() {
                        if let Some((i, _)) = linked_row(store, &held, kind, &id, None)? {
                            held.take_at(i);
                        }
                    }
                    continue;
                };
                if decided.is_none() && (annual.is_some() || windowed) {
                    // In no year and no window: the numbers may lack it, and the operator must know which to fix.
                    undated.0 += 1;
                    if undated.1.len() < UNDATED_NAMED {
                        undated.1.push(src.id.clone());
                    }
                }
                let Some(mapped) = mapped else {
                    // Outside the window: not compared, but the platform row it maps to is not an orphan (a
                    // repair with --repair-orphans withdrew such rows). Unless another record holds the key.
                    let reused_here = reused.contains_key(&src.id);
                    let at = outside_key
                        .as_deref()
                        .filter(|_| !reused_here)
                        .and_then(|k| held.find(k));
                    if let Some(i) = at {
                        held.take_at(i);
                    }
                    // Nor is the row it was published under, by a document number it no longer has: its last valid
                    // version (invalid now, or waiting for a number another record holds), or a number corrected
                    // in the edit that moved its date out of the window, which the next sync moves it from. (Listed
                    // `orphan`, `--repair --repair-orphans` withdrew the decision until then.) Looked up only when
                    // its own key's row is not on the platform: never published, or published under another number.
                    if at.is_none() {
                        if let Some((i, _)) =
                            linked_row(store, &held, kind, &src.id, outside_key.as_deref())?
                        {
                            held.take_at(i);
                        }
                    }
                    continue;
                };
                report.source_records += 1;
                seen += 1;
                rates.expected_items += expected_items;
                rates.filled_items += filled_items;
                let deadline = match decided.map(|d| (d, calendar.deadline(d))) {
                    None => None,
                    Some((_, Ok(dl))) => Some(dl),
                    Some((d, Err(e @ CalendarError::NotCovered { .. }))) => {
                        match &mut uncovered {
                            Some((n, first, _)) => {
                                *n += 1;
                                *first = (*first).min(d);
                            }
                            None => uncovered = Some((1, d, e)),
                        }
                        None
                    }
                    Some((_, Err(e))) => return Err(e.into()),
                };
                let rows = RowParts {
                    meta: &meta,
                    kind,
                    decided,
                    deadline,
                };
                let row =
                    |category, key, detail, published| rows.row(category, key, detail, published);
                let key_str = mapped.key.as_ref().map(|k| k.to_string());
                let reused_detail = reused.get(&src.id);
                let at = key_str
                    .as_ref()
                    .filter(|_| reused_detail.is_none())
                    .and_then(|k| held.find(k));
                // An invalid record is never checked for a reused number (`key_reused` is a finding of valid records
                // only): the platform row of its key may be another record's, one the ledger says holds that number
                // (a mistaken entry revoked, then the decision entered again under its number). Taken for this
                // record's, it was listed `stale` and `--repair` withdrew the other record's publication.
                let at = match (at, key_str.as_deref()) {
                    (Some(i), Some(k)) if !mapped.is_valid() => {
                        let others = store
                            .ledger_get(k)?
                            .is_some_and(|l| !l.source_id.is_empty() && l.source_id != src.id);
                        (!others).then_some(i)
                    }
                    (at, _) => at,
                };
                let mut h = at.and_then(|i| held.take_at(i));
                // A record whose current version cannot be sent (invalid, or waiting for a number another record
                // holds) keeps its last valid version public, as sync leaves it: under a document number it no longer
                // has, that row is the record's own too. Listed `orphan`, `--repair --repair-orphans` withdrew it.
                let linked = if at.is_none() && (!mapped.is_valid() || reused_detail.is_some()) {
                    linked_row(store, &held, kind, &src.id, key_str.as_deref())?
                        .and_then(|(i, k)| Some((i, k, held.take_at(i)?)))
                } else {
                    None
                };
                // First publication is kept by the platform even after a withdrawal; timeliness is judged on it.
                let mut first_pub = h
                    .as_ref()
                    .or(linked.as_ref().map(|l| &l.2))
                    .and_then(|h| h.published);
                let mut published = h
                    .as_ref()
                    .or(linked.as_ref().map(|l| &l.2))
                    .filter(|h| h.public)
                    .and_then(|h| h.published);
                let display_key = key_str
                    .clone()
                    .unwrap_or_else(|| format!("({} {})", kind.as_str(), src.id));
                // How the record stands against its deadline: one judgement for 及时率, the months and
                // `report annual` (None: not judged at all).
                let judged: Option<MonthOutcome> = 'judged: {
                    if !mapped.is_valid() {
                        let detail = mapped
                            .findings
                            .iter()
                            .map(|f| {
                                let zh = crate::ids::mask_ids_in(&f.zh);
                                format!("{} [{}] {zh}", f.field, f.code)
                            })
                            .collect::<Vec<_>>()
                            .join("；");
                        report.gaps.push_ref(row(
                            Category::Quarantined,
                            &display_key,
                            &detail,
                            published,
                        ));
                        // A penalty on a minor must never be published: not due, no overdue row, not in 及时率.
                        let minor = mapped
                            .findings
                            .iter()
                            .any(|f| f.code == crate::findings::FindingCode::PenaltyMinor);
                        // What the platform shows still follows the source: a penalty revoked, on a minor, or past its
                        // display period, comes down whatever else is wrong with its current version (the end of the
                        // display period only when no finding is about CF_GSJZQ itself), under its current number
                        // and the one it was published under, as sync takes it down. (A penalty on a minor stayed
                        // public after a store rebuilt from the source: its new ledger did not know it was public.)
                        let shown = [
                            at.zip(key_str.as_deref()).zip(h.as_ref()),
                            linked.as_ref().map(|(i, k, h)| ((*i, k.as_str()), h)),
                        ];
                        let public = shown
                            .into_iter()
                            .flatten()
                            .filter(|(_, h)| kind == Kind::Penalty && h.public);
                        let revoked = matches!(
                            src.status,
                            Some(SourceStatus::Revoked) | Some(SourceStatus::Changed)
                        );
                        let until = mapped
                            .record
                            .get("CF_GSJZQ")
                            .and_then(crate::validate::parse_date)
                            .filter(|_| kind == Kind::Penalty)
                            .filter(|_| !mapped.findings.iter().any(|f| f.field == "CF_GSJZQ"));
                        for ((i, k), shown) in public {
                            // Not on the word of a copy older than the version the platform holds (a lagging
                            // replica): its row says so, and `--repair` leaves it, as for a valid copy.
                            let older = older_copy(
                                store.ledger_get(k)?.as_ref(),
                                &src.id,
                                (src.updated_at.as_deref(), None),
                                shown,
                            )
                            .map(|o| older_copy_detail(&o.served, &o.acknowledged));
                            let mut take_down = |detail: &str, category| {
                                report.gaps.push_ref(rows.row(
                                    category,
                                    k,
                                    older.as_deref().unwrap_or(detail),
                                    published,
                                ));
                                if older.is_some() {
                                    plan.older_copies += 1;
                                } else {
                                    withdraw.insert(i, k.to_string());
                                }
                            };
                            if revoked || minor {
                                let detail = if revoked {
                                    REVOKED_DETAIL
                                } else {
                                    MINOR_DETAIL
                                };
                                take_down(detail, Category::Stale);
                            } else if let Some(u) = until.filter(|u| *u < opts.today) {
                                take_down(
                                    &format!(
                                        "公示截止期 {u} 已过，仍在公示 / display ended {u}, still public"
                                    ),
                                    Category::Expired,
                                );
                            }
                        }
                        // Otherwise 及时率 and the months count it as any record: judged on its first publication,
                        // or due and missed once its deadline has passed.
                        break 'judged match (deadline, first_pub) {
                            _ if minor => None,
                            // Revoked before it was ever published: not due, as for a valid copy (a revoked
                            // penalty must never be published; a revoked permit is published with XK_ZT = 2).
                            (_, None) if revoked && kind == Kind::Penalty => None,
                            (Some(dl), Some(p)) if p <= dl => Some(MonthOutcome::OnTime),
                            (Some(dl), Some(p)) => {
                                // Its last valid version still public: `late` as well as `quarantined` (a record
                                // can be in several categories), under the key the platform shows it by.
                                let public_key = match (&h, &linked) {
                                    (Some(h), _) if h.public => key_str.as_deref(),
                                    (_, Some((_, k, l))) if l.public => Some(k.as_str()),
                                    _ => None,
                                };
                                if let Some(k) = public_key {
                                    rows.push_late(&mut report.gaps, k, (p, dl), published);
                                }
                                Some(MonthOutcome::Late)
                            }
                            (Some(dl), None) if opts.today > dl => {
                                // Its display period ended before it was ever published: fixing it will not make it
                                // publishable (sync withdraws, never sends, a penalty past its CF_GSJZQ), and its row
                                // says so instead of "publish it now".
                                let ended = until.filter(|u| *u < opts.today && !revoked);
                                let detail = ended.map(display_ended_detail);
                                if ended.is_some() {
                                    never_published += 1;
                                }
                                report.gaps.push_ref(row(
                                    Category::Overdue,
                                    &display_key,
                                    detail.as_deref().unwrap_or(INVALID_OVERDUE_DETAIL),
                                    None,
                                ));
                                Some(MonthOutcome::Overdue)
                            }
                            (Some(_), None) => Some(MonthOutcome::NotYetDue),
                            _ => None,
                        };
                    }
                    if let Some(detail) = reused_detail {
                        report.gaps.push_ref(row(
                            Category::Quarantined,
                            &display_key,
                            detail,
                            None,
                        ));
                        break 'judged None;
                    }
                    let key = key_str.expect("a valid mapping has a key");
                    let digest = digest.unwrap_or_else(|| mapped.record.digest());
                    let revoked = kind == Kind::Penalty
                        && matches!(
                            src.status,
                            Some(SourceStatus::Revoked) | Some(SourceStatus::Changed)
                        );
                    let until = mapped
                        .record
                        .get("CF_GSJZQ")
                        .and_then(crate::validate::parse_date);
                    let expired = kind == Kind::Penalty && until.is_some_and(|u| u < opts.today);
                    let should_be_public = !revoked && !expired;
                    // Two source records with one document number (a duplicate sync has not met yet, or a penalty
                    // whose display period ended, or that was revoked, before it was ever published, so it never
                    // held the number): the row is the one the ledger gives it to, not whichever comes first in the
                    // feed. Asked only where it matters: the row is taken already, or this record would change it or
                    // take it down. (The first one withdrew the other's publication, listed `expired` or `stale`.)
                    let mut entry = LedgerOnce(None);
                    let foreign = at.is_some()
                        && h.as_ref().is_none_or(|h| {
                            h.public && (h.digest != Some(digest) || !should_be_public)
                        })
                        && entry
                            .get(store, &key)?
                            .is_some_and(|l| !l.source_id.is_empty() && l.source_id != src.id);
                    if foreign {
                        if let (Some(i), Some(_)) = (at, h.take()) {
                            held.untake(i);
                        }
                        (first_pub, published) = (None, None);
                    } else if let (Some(i), None) = (at, &h) {
                        // Taken by an earlier version of this record in the feed (it changed while the feed was
                        // read, and came again): this later version says what the row should be.
                        let row = held.peek_at(i);
                        first_pub = row.published;
                        published = row.published.filter(|_| row.public);
                        h = Some(row);
                    }
                    // Keys the platform lists had their ledger entries attached in one pass; others are looked up.
                    let ledger = match at {
                        _ if foreign => None,
                        Some(i) => held.ledger_at(i),
                        None => store.ledger_get(&key)?.map(LedgerView::from),
                    };
                    if let Some(l) = &ledger {
                        if l.submitted {
                            rates.submitted += 1;
                            if l.accepted {
                                rates.accepted += 1;
                            }
                        }
                    }
                    let public = h.as_ref().is_some_and(|h| h.public);
                    // A record given up for want of an answer (`NO_RESULT`) was not refused: what the platform
                    // lists decides — no gap when it holds this version, else `missing` (or `stale`), which
                    // `--repair` sends. Listed `rejected` ("fix the record") it was never sent by a repair.
                    let rejected = ledger.as_ref().filter(|l| {
                        (l.rejected_state
                            || l.rejected_digest
                                .as_deref()
                                .is_some_and(|r| r == digest.to_hex()))
                            && !l.last_error.as_deref().is_some_and(|m| {
                                m.split(' ').next() == Some(crate::sync::NO_RESULT)
                            })
                    });
                    if let Some(l) = rejected {
                        report.gaps.push_ref(row(
                            Category::Rejected,
                            &key,
                            l.last_error.as_deref().unwrap_or_default(),
                            published,
                        ));
                    }
                    let judged = if should_be_public {
                        // A rejected record is not `missing`: sending it again cannot help until it is fixed.
                        if !public {
                            // The platform holds a later version of it withdrawn (revoked since, say): an older copy
                            // must not publish it again.
                            let older = older_copy_row(
                                &mut entry,
                                store,
                                &key,
                                (&src, &digest),
                                h.as_ref(),
                            )?;
                            if let Some(older) = &older {
                                plan.older_copies += 1;
                                report.gaps.push_ref(rows.row(
                                    Category::Missing,
                                    &key,
                                    older,
                                    None,
                                ));
                            } else if rejected.is_none() {
                                // Still in time: how much is left, so the records at risk stand out.
                                let left = deadline.filter(|dl| opts.today <= *dl).and_then(|dl| {
                                    Some((dl, calendar.working_days_between(opts.today, dl).ok()?))
                                });
                                let detail = left.map(|(dl, n)| missing_in_time_detail(dl, n));
                                report.gaps.push_ref(rows.row(
                                    Category::Missing,
                                    &key,
                                    detail.as_deref().unwrap_or(MISSING_DETAIL),
                                    None,
                                ));
                                if let Some(i) = at {
                                    want(&mut held, &mut withdraw, i);
                                }
                                if opts.repair {
                                    plan.repush.push(kind, &raw);
                                }
                            }
                        } else if h.as_ref().and_then(|h| h.digest) != Some(digest) {
                            // The platform holds a later version than the feed serves: listed, not pushed over it.
                            let older = older_copy_row(
                                &mut entry,
                                store,
                                &key,
                                (&src, &digest),
                                h.as_ref(),
                            )?;
                            // Pushed once the platform's fields are fetched (step 4).
                            need_fields
                                .push(
                                    h.as_ref().map(|h| h.page).unwrap_or(1),
                                    &rows.row(
                                        Category::Stale,
                                        &key,
                                        older.as_deref().unwrap_or_default(),
                                        published,
                                    ),
                                    &mapped.record,
                                )
                                .map_err(stale_spool_failed)?;
                            if older.is_some() {
                                plan.older_copies += 1;
                            }
                            // Not the version the platform rejected (its `rejected` row says so): sent again it is
                            // refused again. As for `missing`: fix it, then `quarantine retry`.
                            if rejected.is_none() && older.is_none() {
                                if let Some(i) = at {
                                    want(&mut held, &mut withdraw, i);
                                }
                                if opts.repair {
                                    plan.repush.push(kind, &raw);
                                }
                            }
                        }
                        match (deadline, first_pub) {
                            (Some(dl), Some(p)) if p <= dl => Some(MonthOutcome::OnTime),
                            (Some(dl), Some(p)) => {
                                rows.push_late(&mut report.gaps, &key, (p, dl), published);
                                Some(MonthOutcome::Late)
                            }
                            (Some(dl), None) if opts.today > dl => {
                                report.gaps.push_ref(row(
                                    Category::Overdue,
                                    &key,
                                    &overdue_detail(dl),
                                    None,
                                ));
                                Some(MonthOutcome::Overdue)
                            }
                            (Some(_), None) => Some(MonthOutcome::NotYetDue),
                            _ => None,
                        }
                    } else {
                        // Not to be public now (display period over, or revoked), but it was due for publication once:
                        // 及时率 counts it as the report for its month does.
                        match (deadline, first_pub) {
                            (Some(dl), Some(p)) if p <= dl => Some(MonthOutcome::OnTime),
                            (Some(dl), Some(p)) => {
                                // Still public (not taken down yet): `late` as well as its `expired` or `stale` row
                                // (a record can be in several categories). Once withdrawn it is no longer public, so
                                // no longer `late`, though 及时率 and its month still count it late.
                                if public {
                                    rows.push_late(&mut report.gaps, &key, (p, dl), published);
                                }
                                Some(MonthOutcome::Late)
                            }
                            // Its display period ended before it was ever published: a duty missed for good. Its
                            // `overdue` row says it can no longer be published (nor must be: `--repair` plans nothing
                            // for it, as neither `missing` nor `stale` nor public).
                            (Some(dl), None) if expired && !revoked && opts.today > dl => {
                                never_published += 1;
                                let detail = until.map(display_ended_detail).unwrap_or_default();
                                report
                                    .gaps
                                    .push_ref(row(Category::Overdue, &key, &detail, None));
                                Some(MonthOutcome::Overdue)
                            }
                            _ => None,
                        }
                    };
                    if !should_be_public && public {
                        // A later version on the platform (its display period extended, say) is not taken down on
                        // the word of an older copy.
                        let older =
                            older_copy_row(&mut entry, store, &key, (&src, &digest), h.as_ref())?;
                        let mut detail = if expired {
                            let u = until.map(|u| u.to_string()).unwrap_or_default();
                            format!(
                                "公示截止期 {u} 已过，仍在公示 / display ended {u}, still public"
                            )
                        } else {
                            REVOKED_DETAIL.to_string()
                        };
                        if let Some(older) = &older {
                            plan.older_copies += 1;
                            detail = format!("{older}；{detail}");
                        }
                        report.gaps.push_ref(rows.row(
                            if expired {
                                Category::Expired
                            } else {
                                Category::Stale
                            },
                            &key,
                            &detail,
                            published,
                        ));
                        if let (Some(i), None) = (at, &older) {
                            withdraw.insert(i, key.clone());
                        }
                    }
                    judged
                };
                if let (Some(outcome), Some(d)) = (judged, decided) {
                    report.record_month(d, outcome);
                    if outcome != MonthOutcome::NotYetDue {
                        rates.due += 1;
                        rates.on_time += u64::from(outcome == MonthOutcome::OnTime);
                    }
                }
                if let (Some(acc), Some(d)) = (annual.as_deref_mut(), decided) {
                    add_to_annual(acc, kind, &mapped.record, src.status, d, judged);
                    if kind == Kind::Penalty {
                        let unreadable = |field: &str| {
                            mapped.findings.iter().any(|f| {
                                f.field == field
                                    && matches!(
                                        f.code,
                                        FindingCode::AmountInvalid
                                            | FindingCode::AmountNegative
                                            | FindingCode::AmountScale
                                    )
                            })
                        };
                        acc.amount_unreadable(
                            src.status,
                            d,
                            unreadable("CF_NR_FK"),
                            unreadable("CF_NR_WFFF"),
                        );
                    }
                }
            }
            if let Some(pb) = &pb {
                pb.set_message(format!("{}: {seen} source records compared", kind.zh()));
            }
        }

        plan.withdraw
            .extend(withdraw.into_values().map(|k| (kind, k)));
        // 3. What is left on the platform is not the source's: orphans (public ones only).
        let orphans = held.untaken_public();
        drop(held);
        let mut orphan_rows: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (k, page) in orphans {
            orphan_rows.entry(page).or_default().push(k);
        }
        // 4. Fields for stale and orphan rows, from just the pages that hold them.
        let pages: BTreeSet<u64> = need_fields
            .pages()
            .into_iter()
            .chain(orphan_rows.keys().copied())
            .collect();
        for page in pages {
            let p = platform
                .records(
                    &budget,
                    kind,
                    &cfg.agency_credit_code,
                    page,
                    cfg.platform_page_size,
                    true,
                )
                .await?;
            let by_key: HashMap<&str, &crate::xml::PageRecord> =
                p.records.iter().map(|r| (r.key.as_str(), r)).collect();
            let waiting = need_fields.take_page(page).map_err(stale_spool_failed)?;
            for (mut stale, ours) in waiting {
                let theirs = by_key
                    .get(stale.key.as_str())
                    .and_then(|r| r.fields.clone())
                    .unwrap_or_default();
                let diff = differing_fields(&ours, &theirs);
                let fields = format!("字段不一致 / fields differ: {}", diff.join(", "));
                // A detail already there says why the row is left as it is (an older copy in the feed).
                stale.detail = if stale.detail.is_empty() {
                    fields
                } else {
                    format!("{}；{fields}", stale.detail)
                };
                report.gaps.push(stale);
            }
            for key in orphan_rows.get(&page).into_iter().flatten() {
                let rec = by_key.get(key.as_str());
                let fields = rec.and_then(|r| r.fields.clone()).unwrap_or_default();
                let (date_field, name_field, id_fields) = match kind {
                    Kind::Permit => ("XK_JDRQ", "XK_XDR_MC", ["XK_XDR_ZJHM", "XK_XDR_SHXYM"]),
                    Kind::Penalty => ("CF_JDRQ", "CF_XDR_MC", ["CF_XDR_ZJHM", "CF_XDR_SHXYM"]),
                };
                let decided = fields.get(date_field).and_then(crate::validate::parse_date);
                if !in_window(decided, opts.from, opts.to)
                    && (opts.from.is_some() || opts.to.is_some())
                {
                    continue;
                }
                report.gaps.push(GapRow {
                    category: Category::Orphan,
                    key: key.clone(),
                    kind,
                    doc_no: crate::model::RecordKey::parse(key)
                        .map(|k| k.doc_no().to_string())
                        .unwrap_or_default(),
                    // a version published before `id_in_text` was checked may hold an ID number in the name
                    party_name: crate::ids::mask_ids_in_owned(
                        fields.get(name_field).unwrap_or("").to_string(),
                    ),
                    party_id_masked: id_fields
                        .iter()
                        .find_map(|f| fields.get(f))
                        .map(mask_id)
                        .unwrap_or_default(),
                    decided_on: decided,
                    deadline: None,
                    first_published: rec.and_then(|r| cst_date(&r.published_at)),
                    detail: ORPHAN_DETAIL.into(),
                });
                plan.orphans.push((kind, key.clone()));
            }
        }
        report.rates.insert(kind, rates);
        tracing::debug!(
            kind = kind.as_str(),
            platform_records,
            source_records = seen,
            platform_listed_ms = listed.as_millis() as u64,
            ledger_read_ms = ledger_read.as_millis() as u64,
            source_compared_ms = started.elapsed().as_millis() as u64,
            "reconcile: one kind compared"
        );
    }
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    report.sort_gaps();
    if never_published > 0 {
        report.notes.push(format!(
            "{never_published} penalty record(s) were never published before their display period ended; they \
             count against 及时率 and can no longer be published, and reconcile lists each as overdue \
             (公示期已过仍未公示，计入及时率，已无法补公示，逐条列为逾期未公示)"
        ));
    }
    if let Some((n, first, e)) = uncovered {
        report.notes.push(format!(
            "{n} record(s) decided from {first} on have no publication deadline, so their timeliness is not \
             judged (其发布期限无法计算，未计入及时率): {e}"
        ));
    }
    if undated.0 > 0 {
        let more = if undated.0 > undated.1.len() as u64 {
            ", …"
        } else {
            ""
        };
        report.notes.push(if annual.is_some() {
            format!(
                "{} source record(s) have no readable decision date, so no year counts them (决定日期无法识别，未计入任何\
                 年度); fix decided_on in the enforcement system: {}{more}",
                undated.0,
                undated.1.join(", ")
            )
        } else {
            format!(
                "{} source record(s) have no readable decision date, so no window of dates holds them (决定日期无法识别，\
                 不在所选日期范围内); a reconcile without --from/--to lists them as quarantined; fix decided_on in the \
                 enforcement system: {}{more}",
                undated.0,
                undated.1.join(", ")
            )
        });
    }
    Ok((report, plan))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACKED: &str = "2026-11-20T10:00:00.000+08:00";

    fn entry() -> LedgerEntry {
        LedgerEntry {
            kind: Kind::Permit,
            source_id: "XK-1".into(),
            source_updated_at: ACKED.into(),
            digest: Some(Digest([7; 32]).to_hex()),
            rejected_digest: None,
            state: PlatformState::Public,
            first_published: Some("2026-11-20T10:05:00+08:00".into()),
            last_pushed: Some("2026-11-20T10:05:00+08:00".into()),
            attempts: 1,
            last_error: None,
            meta: RecordMeta::default(),
            earlier: Some(Vec::new()),
        }
    }

    fn held(digest: [u8; 32], public: bool) -> Held {
        Held {
            digest: Some(Digest(digest)),
            public,
            published: None,
            page: 1,
        }
    }

    fn older(e: &LedgerEntry, served: &str, h: &Held) -> bool {
        older_copy(Some(e), "XK-1", (Some(served), None), h).is_some()
    }

    fn older_valid(e: &LedgerEntry, served: &str, content: [u8; 32], h: &Held) -> bool {
        older_copy(Some(e), "XK-1", (Some(served), Some(&Digest(content))), h).is_some()
    }

    #[test]
    fn a_valid_copy_stamped_earlier_is_older_only_with_content_the_platform_acknowledged() {
        let h = held([7; 32], true);
        let e = LedgerEntry {
            earlier: Some(vec![crate::store::AckedVersion {
                digest: Digest([6; 32]).to_hex(),
                source_updated_at: "2026-11-20T09:30:00.000+08:00".into(),
            }]),
            ..entry()
        };
        let earlier = "2026-11-20T09:00:00.000+08:00";
        // a lagging copy: the content acknowledged now, or before
        assert!(older_valid(&e, earlier, [7; 32], &h));
        assert!(older_valid(&e, earlier, [6; 32], &h));
        // a late edit (a transaction that began before the acknowledged version was saved): new content
        assert!(!older_valid(&e, earlier, [9; 32], &h));
        // exactly a version acknowledged before, even when the followed one (a late edit) is stamped earlier
        let late = LedgerEntry {
            source_updated_at: "2026-11-20T09:10:00.000+08:00".into(),
            ..e.clone()
        };
        assert!(older_valid(&late, "2026-11-20T01:30:00.000Z", [6; 32], &h));
        assert!(!older_valid(
            &late,
            "2026-11-20T09:40:00.000+08:00",
            [6; 32],
            &h
        ));
        // the content acknowledged before, saved again later: a change
        assert!(!older_valid(
            &e,
            "2026-11-20T11:00:00.000+08:00",
            [6; 32],
            &h
        ));
        // an entry written before 2026-11-30 does not know what was acknowledged before: stamps alone decide
        let legacy = LedgerEntry {
            earlier: None,
            ..e.clone()
        };
        assert!(older_valid(&legacy, earlier, [9; 32], &h));
        assert!(!older_valid(
            &legacy,
            "2026-11-20T11:00:00.000+08:00",
            [6; 32],
            &h
        ));
    }

    #[test]
    fn an_older_copy_is_one_the_platform_is_known_to_hold_a_later_version_of() {
        let (e, h) = (entry(), held([7; 32], true));
        let earlier = "2026-11-20T09:00:00.000+08:00";
        assert_eq!(
            older_copy(Some(&e), "XK-1", (Some(earlier), None), &h),
            Some(OlderCopy {
                served: earlier.into(),
                acknowledged: ACKED.into()
            })
        );
        // the same instant in another offset is no older; a later one neither
        assert!(!older(&e, "2026-11-20T02:00:00.000Z", &h));
        assert!(!older(&e, "2026-11-20T11:00:00.000+08:00", &h));
        // another record's entry, another digest on the platform, another state, no time to compare
        assert!(older_copy(Some(&e), "XK-2", (Some(earlier), None), &h).is_none());
        assert!(!older(&e, earlier, &held([8; 32], true)));
        assert!(!older(&e, earlier, &held([7; 32], false)));
        assert!(older_copy(Some(&e), "XK-1", (None, None), &h).is_none());
        assert!(!older(&e, "yesterday", &h));
        assert!(older_copy(None, "XK-1", (Some(earlier), None), &h).is_none());
        // withdrawn for a later version, and the platform shows it withdrawn
        let w = LedgerEntry {
            state: PlatformState::Withdrawn,
            ..entry()
        };
        assert!(older(&w, earlier, &held([7; 32], false)));
    }

    #[test]
    fn a_version_stamped_in_the_future_when_acknowledged_proves_nothing() {
        let e = LedgerEntry {
            last_pushed: Some("2026-11-20T09:30:00+08:00".into()),
            ..entry()
        };
        assert!(!older(
            &e,
            "2026-11-20T09:00:00.000+08:00",
            &held([7; 32], true)
        ));
        let unknown = LedgerEntry {
            last_pushed: None,
            ..entry()
        };
        assert!(!older(
            &unknown,
            "2026-11-20T09:00:00.000+08:00",
            &held([7; 32], true)
        ));
    }
}
