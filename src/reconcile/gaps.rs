//! [`Gaps`]: the rows of a report, held compactly. A backfill can put every record of the agency in a category
//! (a million `late` rows is a real situation), so a row is not kept as a struct of owned strings but encoded into
//! a chunked byte arena, about 110 bytes a row instead of ~500:
//!
//! - fixed part: category, kind, the three dates as day numbers;
//! - the key as a shared prefix (`{item}:{sender}:`, interned) plus its document number;
//! - the document number only when it is not the key's own;
//! - the party's name and masked ID;
//! - the detail as text, or as a tag when it is one of the engine's fixed sentences or a sentence made from the
//!   row's own dates (e.g. late's "{p} 公示，期限 {dl} / …"). A detail is only tagged after checking that
//!   rebuilding it gives exactly the same text, so decoding always returns what was pushed.
//!
//! Rows are pushed as [`GapRow`]s and read back as [`GapRow`]s; the order is the push order until
//! [`Gaps::sort`], which only reorders an index of offsets.

use super::report::{Category, GapRow};
use crate::model::Kind;
use chrono::{Datelike, NaiveDate};
use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

/// Bytes per arena chunk; a row never spans two chunks (a larger row gets a chunk of its own).
const CHUNK: usize = 1 << 20;
/// Bits of an offset that address a byte inside a chunk.
const CHUNK_BITS: u32 = 32;
/// No date.
const NO_DATE: i32 = i32::MIN;
/// Prefixes beyond this many are not interned; such keys are stored whole.
const MAX_PREFIXES: usize = 255;

/// Fixed detail sentences of the engine, stored as a tag.
pub(crate) const MISSING_DETAIL: &str = "平台上没有公示这条记录 / the platform does not show it";
pub(crate) const ORPHAN_DETAIL: &str = "源系统中没有这条记录 / the source has no such record";
pub(crate) const INVALID_OVERDUE_DETAIL: &str = "校验未通过，尚未公示";
pub(crate) const REVOKED_DETAIL: &str =
    "源系统已撤销，平台仍在公示 / revoked at the source, still public on the platform";
pub(crate) const MINOR_DETAIL: &str =
    "处罚对象为未成年人，不得公示，平台仍在公示 / a penalty on a minor, which must not be public, still public on the platform";
const FIXED_DETAILS: [&str; 6] = [
    "",
    MISSING_DETAIL,
    ORPHAN_DETAIL,
    INVALID_OVERDUE_DETAIL,
    REVOKED_DETAIL,
    MINOR_DETAIL,
];

/// A [`GapRow`] whose text is borrowed.
#[derive(Debug, Clone, Copy)]
pub struct GapRef<'a> {
    pub category: Category,
    pub key: &'a str,
    pub kind: Kind,
    pub doc_no: &'a str,
    pub party_name: &'a str,
    pub party_id_masked: &'a str,
    pub decided_on: Option<NaiveDate>,
    pub deadline: Option<NaiveDate>,
    pub first_published: Option<NaiveDate>,
    pub detail: &'a str,
}

impl GapRef<'_> {
    pub fn to_row(&self) -> GapRow {
        GapRow {
            category: self.category,
            key: self.key.to_string(),
            kind: self.kind,
            doc_no: self.doc_no.to_string(),
            party_name: self.party_name.to_string(),
            party_id_masked: self.party_id_masked.to_string(),
            decided_on: self.decided_on,
            deadline: self.deadline,
            first_published: self.first_published,
            detail: self.detail.to_string(),
        }
    }
}

/// The detail of a `late` row: first published `p`, due `dl`.
pub(crate) fn late_detail(p: NaiveDate, dl: NaiveDate) -> String {
    // Built by hand: a backfill makes a million of these (and `push` builds one again to recognise it).
    let mut s = String::with_capacity(64);
    push_date(&mut s, p);
    s.push_str(" 公示，期限 ");
    push_date(&mut s, dl);
    s.push_str(" / published ");
    push_date(&mut s, p);
    s.push_str(", due ");
    push_date(&mut s, dl);
    s
}

/// Appends `d` as its `Display` does (`2024-03-01`), without the formatting machinery for four-digit years
/// (those are the mapping's `YYYY-MM-DD`; `Display` differs only outside them, e.g. `+10000-01-01`).
pub(crate) fn push_date(out: &mut String, d: NaiveDate) {
    if (0..=9999).contains(&d.year()) {
        crate::mapping::DateFormat::Dash.format_into(d, out);
    } else {
        use std::fmt::Write as _;
        let _ = write!(out, "{d}");
    }
}

/// `d` as its `Display` gives it.
pub(crate) fn date_string(d: NaiveDate) -> String {
    let mut s = String::with_capacity(10);
    push_date(&mut s, d);
    s
}

/// The detail of a `missing` row still in time: due `dl`, `left` working days after today (0: due today).
pub(crate) fn missing_in_time_detail(dl: NaiveDate, left: u32) -> String {
    // What is left comes first: the table cuts a long detail.
    let mut s = String::with_capacity(128);
    if left == 0 {
        s.push_str("今天到期（");
        push_date(&mut s, dl);
        s.push_str("），平台上尚未公示 / due today (");
        push_date(&mut s, dl);
        s.push_str("), not public on the platform");
    } else {
        s.push_str(&format!("还剩 {left} 个工作日（期限 "));
        push_date(&mut s, dl);
        s.push_str(&format!(
            "），平台上尚未公示 / {left} working day{} left (due ",
            if left == 1 { "" } else { "s" }
        ));
        push_date(&mut s, dl);
        s.push_str("), not public on the platform");
    }
    s
}

/// How the detail of a row `--repair` leaves alone for an older copy starts ([`older_copy_detail`]); the row's action
/// follows from it (`GapRow::is_older_copy`).
pub(crate) const OLDER_COPY_LEAD: &str = "执法系统提供的是旧版本";

/// The detail of a row `--repair` leaves alone because the feed served the record in an older version (stamped
/// `served`) than the one the platform holds and acknowledged (stamped `acknowledged`). What it means comes first:
/// the table cuts a long detail.
pub(crate) fn older_copy_detail(served: &str, acknowledged: &str) -> String {
    format!(
        "{OLDER_COPY_LEAD}（updated_at {served}），平台上是已确认的较新版本（updated_at {acknowledged}），\
         --repair 不会用旧版本覆盖；请检查执法系统（或 dualpub 读取的数据库副本）是否同步滞后 / the enforcement system \
         serves an older version (updated_at {served}) than the one the platform holds and acknowledged (updated_at \
         {acknowledged}), so --repair leaves the platform's as it is: check whether the enforcement system, or the \
         replica dualpub reads, lags behind; if this is a real later edit (a clock running behind, a slow transaction) \
         that brings back content published before, save the record again (the next sync sends it)"
    )
}

/// The detail of an `overdue` row of a valid record, due `dl`.
pub(crate) fn overdue_detail(dl: NaiveDate) -> String {
    let mut s = String::with_capacity(64);
    s.push_str("期限 ");
    push_date(&mut s, dl);
    s.push_str(" 已过，仍未公示 / due ");
    push_date(&mut s, dl);
    s.push_str(", still not public");
    s
}

/// How the detail of an `overdue` row of a penalty whose display period ended before it was ever published starts
/// ([`display_ended_detail`]); the row's action follows from it (`GapRow::is_display_ended`).
pub(crate) const DISPLAY_ENDED_LEAD: &str = "公示期已满，从未公示";

/// The detail of an `overdue` row of a penalty whose display period (CF_GSJZQ) ended on `until` before it was ever
/// published: it can no longer be published (and must not be), and it counts against 及时率. What it means comes
/// first: the table cuts a long detail.
pub(crate) fn display_ended_detail(until: NaiveDate) -> String {
    let mut s = String::with_capacity(256);
    s.push_str(DISPLAY_ENDED_LEAD);
    s.push_str("（公示截止期 ");
    push_date(&mut s, until);
    s.push_str("），已不能也不得补公示，计入及时率（逾期未公示） / display period ended ");
    push_date(&mut s, until);
    s.push_str(
        " before it was ever published: it can no longer be published (and must not be); it counts against \
         及时率 as a missed deadline",
    );
    s
}

/// The display end an [`display_ended_detail`] was made from, if `detail` is exactly one.
fn display_ended_until(detail: &str) -> Option<NaiveDate> {
    let rest = detail
        .strip_prefix(DISPLAY_ENDED_LEAD)?
        .strip_prefix("（公示截止期 ")?;
    let end = rest.find('）')?;
    let until = NaiveDate::parse_from_str(&rest[..end], "%Y-%m-%d").ok()?;
    (display_ended_detail(until) == detail).then_some(until)
}

const DETAIL_TEXT: u8 = 0;
const DETAIL_FIXED: u8 = 1;
const DETAIL_LATE: u8 = 2;
const DETAIL_OVERDUE: u8 = 3;
const DETAIL_DISPLAY_ENDED: u8 = 4;

const DOC_NO_IS_KEYS: u8 = 0;
const DOC_NO_TEXT: u8 = 1;

/// Offset of the key in an encoded row (after category, kind and three dates).
const KEY_AT: usize = 2 + 3 * 4;

/// The gap rows of a report, compactly (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Gaps {
    chunks: Vec<Vec<u8>>,
    /// One offset per row held in `chunks` (chunk << 32 | position), in report order.
    index: Vec<u64>,
    prefixes: Vec<String>,
    counts: [u64; 8],
    total: usize,
    /// With [`Gaps::spill_to_disk`]: sorted runs written out so far.
    spill: Option<Arc<Spill>>,
    spill_wanted: bool,
    /// Bytes of the rows in `chunks`, and the limit before a run is written out (0: [`RUN_BYTES`]).
    mem_bytes: usize,
    run_bytes: usize,
}

/// Rows written out in sorted runs: `rows` holds each run's rows in report order, `keys` each run's keys in key
/// order (for counting distinct keys). Records are `u32` length + bytes. The files' names are removed as they are
/// created (runs are read back through the open files), so a killed reconcile leaves nothing behind in `$TMPDIR`
/// (until 2026-11-30 every reconcile killed after its first run stayed there, ~110 bytes a gap row); a path is
/// kept only where a name could not be removed, and removed on drop.
#[derive(Debug)]
struct Spill {
    rows_path: Option<PathBuf>,
    keys_path: Option<PathBuf>,
    rows: Mutex<BufWriter<File>>,
    keys: Mutex<BufWriter<File>>,
    /// (start, count) of each run, in both files.
    runs: Mutex<Vec<Run>>,
}

impl Drop for Spill {
    fn drop(&mut self) {
        for p in [&self.rows_path, &self.keys_path].into_iter().flatten() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A run: where it starts in the rows file and in the keys file, and how many records it has.
type Run = ((u64, u64), usize);

/// Bytes of rows held in memory before a run is sorted and written out (spilling mode only).
const RUN_BYTES: usize = 4 << 20;

/// A new temporary file in `$TMPDIR`, readable and writable by this user only (0600 on Unix).
pub(super) fn temp_file(what: &str) -> std::io::Result<(PathBuf, File)> {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = std::env::temp_dir().join(format!(
        "dualpub-reconcile-{}-{nanos}-{}-{what}.tmp",
        std::process::id(),
        N.fetch_add(1, AtomicOrdering::Relaxed)
    ));
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let f = o.open(&path)?;
    Ok((path, f))
}

/// A temporary file (as [`temp_file`]) whose name is removed at once, for data that holds full ID numbers: the
/// open handle keeps it readable, and nothing is left behind even if the process is killed. Where an open file
/// cannot be removed, its path comes back so the caller removes it when done.
pub(super) fn unlinked_temp_file(what: &str) -> std::io::Result<(File, Option<PathBuf>)> {
    let (path, f) = temp_file(what)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok((f, None)),
        Err(_) => Ok((f, Some(path))),
    }
}

/// Reads a file from a position of its own, without moving the file's offset (which its writer and the readers of
/// other runs share: they hold one open file, whose name is gone).
struct ReadAt {
    file: File,
    pos: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        #[cfg(unix)]
        let n = std::os::unix::fs::FileExt::read_at(&self.file, buf, self.pos)?;
        #[cfg(windows)]
        let n = std::os::windows::fs::FileExt::seek_read(&self.file, buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads the records of one run.
struct RunReader {
    r: BufReader<ReadAt>,
    left: usize,
}

impl RunReader {
    fn open(file: &Mutex<BufWriter<File>>, start: u64, count: usize) -> Option<RunReader> {
        let file = file.lock().ok()?.get_ref().try_clone().ok()?;
        Some(RunReader {
            r: BufReader::with_capacity(64 << 10, ReadAt { file, pos: start }),
            left: count,
        })
    }

    fn next_record(&mut self) -> Option<Vec<u8>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut n = [0u8; 4];
        self.r.read_exact(&mut n).ok()?;
        let mut b = vec![0u8; u32::from_le_bytes(n) as usize];
        self.r.read_exact(&mut b).ok()?;
        Some(b)
    }
}

/// Where a merged run comes from.
enum Source {
    File(Option<RunReader>),
    Mem(std::vec::IntoIter<Vec<u8>>),
}

impl Source {
    fn next_record(&mut self) -> Option<Vec<u8>> {
        match self {
            Source::File(r) => r.as_mut()?.next_record(),
            Source::Mem(it) => it.next(),
        }
    }
}

/// Merges sorted runs: the smallest head first, the earliest run on ties (so the merge is stable). `keys`:
/// the records are keys (compared as keys), else rows (compared in report order).
struct Merge<'a> {
    gaps: &'a Gaps,
    keys: bool,
    heads: Vec<(Option<Vec<u8>>, Source)>,
}

impl Merge<'_> {
    fn order(&self, a: &[u8], b: &[u8]) -> Ordering {
        if self.keys {
            self.gaps.cmp_key_at(a, 0, b, 0)
        } else {
            self.gaps.cmp_rows(a, b)
        }
    }
}

impl Iterator for Merge<'_> {
    type Item = Vec<u8>;
    fn next(&mut self) -> Option<Vec<u8>> {
        let mut best: Option<usize> = None;
        for (i, (h, _)) in self.heads.iter().enumerate() {
            if let Some(h) = h {
                let better = match best.and_then(|b| self.heads[b].0.as_deref()) {
                    None => true,
                    Some(cur) => self.order(h, cur) == Ordering::Less,
                };
                if better {
                    best = Some(i);
                }
            }
        }
        let b = best?;
        let (head, src) = &mut self.heads[b];
        let out = head.take();
        *head = src.next_record();
        out
    }
}

fn days(d: Option<NaiveDate>) -> i32 {
    d.map(|d| d.num_days_from_ce()).unwrap_or(NO_DATE)
}

fn date(n: i32) -> Option<NaiveDate> {
    if n == NO_DATE {
        None
    } else {
        NaiveDate::from_num_days_from_ce_opt(n)
    }
}

fn put_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_len(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// A reader over one encoded row.
struct Cur<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cur<'a> {
    fn u8(&mut self) -> u8 {
        let v = self.b.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        v
    }
    fn i32(&mut self) -> i32 {
        let mut a = [0u8; 4];
        if let Some(s) = self.b.get(self.at..self.at + 4) {
            a.copy_from_slice(s);
        }
        self.at += 4;
        i32::from_le_bytes(a)
    }
    fn len(&mut self) -> usize {
        let mut n = 0usize;
        let mut shift = 0;
        loop {
            let b = self.u8();
            n |= ((b & 0x7f) as usize) << shift;
            if b & 0x80 == 0 || shift > 56 {
                return n;
            }
            shift += 7;
        }
    }
    fn bytes(&mut self) -> &'a [u8] {
        let n = self.len();
        let end = (self.at + n).min(self.b.len());
        let s = &self.b[self.at.min(end)..end];
        self.at = end;
        s
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Where the interned prefix of a key ends: after its second ':' (`{item}:{sender}:`).
fn prefix_len(key: &str) -> Option<usize> {
    let first = key.find(':')?;
    let second = key[first + 1..].find(':')?;
    Some(first + 1 + second + 1)
}

impl PartialEq for Gaps {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Gaps {
    pub fn new() -> Gaps {
        Gaps::default()
    }

    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// From now on, write rows out in sorted runs to temporary files once they take [`RUN_BYTES`], and always
    /// read them back in report order (as after [`Gaps::sort`]); memory then stays bounded whatever the number of
    /// rows. If a temporary file cannot be written, rows simply stay in memory.
    pub fn spill_to_disk(&mut self) {
        self.spill_wanted = true;
    }

    /// Rows per category, in `Category::ALL` order.
    pub(crate) fn category_counts(&self) -> [u64; 8] {
        self.counts
    }

    fn prefix_id(&mut self, prefix: &str) -> u8 {
        if let Some(i) = self.prefixes.iter().rposition(|p| p == prefix) {
            return (i + 1) as u8;
        }
        if self.prefixes.len() >= MAX_PREFIXES {
            return 0;
        }
        self.prefixes.push(prefix.to_string());
        self.prefixes.len() as u8
    }

    /// Adds a row at the end.
    pub fn push(&mut self, g: GapRow) {
        self.push_ref(GapRef {
            category: g.category,
            key: &g.key,
            kind: g.kind,
            doc_no: &g.doc_no,
            party_name: &g.party_name,
            party_id_masked: &g.party_id_masked,
            decided_on: g.decided_on,
            deadline: g.deadline,
            first_published: g.first_published,
            detail: &g.detail,
        });
    }

    /// [`Gaps::push`] from borrowed parts: the row is encoded straight from them, no strings copied first.
    pub fn push_ref(&mut self, g: GapRef<'_>) {
        let mut row: Vec<u8> = Vec::with_capacity(96);
        let cat = Category::ALL
            .iter()
            .position(|&c| c == g.category)
            .unwrap_or(0);
        row.push(cat as u8);
        row.push(match g.kind {
            Kind::Permit => 0,
            Kind::Penalty => 1,
        });
        for d in [g.decided_on, g.deadline, g.first_published] {
            row.extend_from_slice(&days(d).to_le_bytes());
        }
        // The key: an interned prefix and the rest.
        let (pid, rest) = match prefix_len(g.key) {
            Some(n) => match self.prefix_id(&g.key[..n]) {
                0 => (0, g.key),
                id => (id, &g.key[n..]),
            },
            None => (0, g.key),
        };
        row.push(pid);
        put_str(&mut row, rest);
        if pid != 0 && g.doc_no == rest {
            row.push(DOC_NO_IS_KEYS);
        } else {
            row.push(DOC_NO_TEXT);
            put_str(&mut row, g.doc_no);
        }
        put_str(&mut row, g.party_name);
        put_str(&mut row, g.party_id_masked);
        let late = match (g.category, g.deadline, g.detail.get(..10)) {
            (Category::Late, Some(dl), Some(p)) => {
                crate::validate::parse_date(p).filter(|&p| late_detail(p, dl) == g.detail)
            }
            _ => None,
        };
        if let Some(fixed) = FIXED_DETAILS.iter().position(|&f| f == g.detail) {
            row.push(DETAIL_FIXED);
            row.push(fixed as u8);
        } else if let Some(p) = late {
            row.push(DETAIL_LATE);
            row.extend_from_slice(&days(Some(p)).to_le_bytes());
        } else if g.deadline.is_some_and(|dl| overdue_detail(dl) == g.detail) {
            row.push(DETAIL_OVERDUE);
        } else if let Some(until) = display_ended_until(g.detail) {
            row.push(DETAIL_DISPLAY_ENDED);
            row.extend_from_slice(&days(Some(until)).to_le_bytes());
        } else {
            row.push(DETAIL_TEXT);
            put_str(&mut row, g.detail);
        }

        let fits = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= row.len());
        if !fits {
            self.chunks.push(Vec::with_capacity(CHUNK.max(row.len())));
        }
        let ci = self.chunks.len() - 1;
        let chunk = &mut self.chunks[ci];
        let off = ((ci as u64) << CHUNK_BITS) | chunk.len() as u64;
        chunk.extend_from_slice(&row);
        self.index.push(off);
        self.counts[cat] += 1;
        self.total += 1;
        self.mem_bytes += row.len();
        let limit = if self.run_bytes == 0 {
            RUN_BYTES
        } else {
            self.run_bytes
        };
        if self.spill_wanted && self.mem_bytes >= limit {
            // Failing to write is not fatal: the rows stay in memory.
            if self.write_run().is_err() {
                self.spill_wanted = false;
            }
        }
    }

    /// Sorts the rows held in memory and writes them out as one run.
    fn write_run(&mut self) -> std::io::Result<()> {
        if self.spill.is_none() {
            let (rows, rows_path) = unlinked_temp_file("rows")?;
            let (keys, keys_path) = unlinked_temp_file("keys")?;
            self.spill = Some(Arc::new(Spill {
                rows_path,
                keys_path,
                rows: Mutex::new(BufWriter::with_capacity(256 << 10, rows)),
                keys: Mutex::new(BufWriter::with_capacity(256 << 10, keys)),
                runs: Mutex::new(Vec::new()),
            }));
        }
        let spill = self.spill.clone().expect("just set");
        fn lock_err<T>(_: T) -> std::io::Error {
            std::io::Error::other("a reconcile spill file lock is poisoned")
        }
        let mut rows = spill.rows.lock().map_err(lock_err)?;
        let mut keys = spill.keys.lock().map_err(lock_err)?;
        rows.flush()?;
        keys.flush()?;
        let start = (
            rows.get_ref().metadata()?.len(),
            keys.get_ref().metadata()?.len(),
        );
        let mut idx = self.index.clone();
        idx.sort_by(|&a, &b| self.cmp_rows(self.row(a), self.row(b)));
        for &off in &idx {
            let b = self.row_bytes(off);
            rows.write_all(&(b.len() as u32).to_le_bytes())?;
            rows.write_all(b)?;
        }
        idx.sort_by(|&a, &b| self.cmp_key_at(self.row(a), KEY_AT, self.row(b), KEY_AT));
        for &off in &idx {
            let b = self.row(off);
            let mut c = Cur { b, at: KEY_AT };
            c.u8();
            c.bytes();
            let k = &b[KEY_AT..c.at.min(b.len())];
            keys.write_all(&(k.len() as u32).to_le_bytes())?;
            keys.write_all(k)?;
        }
        rows.flush()?;
        keys.flush()?;
        spill
            .runs
            .lock()
            .map_err(lock_err)?
            .push((start, self.index.len()));
        self.index.clear();
        self.chunks.clear();
        self.mem_bytes = 0;
        Ok(())
    }

    /// The exact bytes of the row at `off`.
    fn row_bytes(&self, off: u64) -> &[u8] {
        let b = self.row(off);
        let mut c = Cur { b, at: KEY_AT };
        c.u8();
        c.bytes();
        if c.u8() != DOC_NO_IS_KEYS {
            c.bytes();
        }
        c.bytes();
        c.bytes();
        match c.u8() {
            DETAIL_FIXED => {
                c.u8();
            }
            DETAIL_LATE | DETAIL_DISPLAY_ENDED => {
                c.i32();
            }
            DETAIL_OVERDUE => {}
            _ => {
                c.bytes();
            }
        }
        &b[..c.at.min(b.len())]
    }

    /// The runs written out, if any.
    fn runs(&self) -> Option<(Arc<Spill>, Vec<Run>)> {
        let spill = self.spill.clone()?;
        {
            let mut r = spill.rows.lock().ok()?;
            r.flush().ok()?;
            let mut k = spill.keys.lock().ok()?;
            k.flush().ok()?;
        }
        let runs = spill.runs.lock().ok()?.clone();
        Some((spill, runs))
    }

    fn row(&self, off: u64) -> &[u8] {
        let chunk = &self.chunks[(off >> CHUNK_BITS) as usize];
        &chunk[(off & ((1 << CHUNK_BITS) - 1)) as usize..]
    }

    /// The key of an encoded key at `at` of `b` as (interned prefix, rest).
    fn key_at<'b>(&'b self, b: &'b [u8], at: usize) -> (&'b [u8], &'b [u8]) {
        let mut c = Cur { b, at };
        let pid = c.u8() as usize;
        let rest = c.bytes();
        let prefix = match pid {
            0 => &[][..],
            i => self
                .prefixes
                .get(i - 1)
                .map(|p| p.as_bytes())
                .unwrap_or(&[]),
        };
        (prefix, rest)
    }

    fn cmp_key_at(&self, a: &[u8], at_a: usize, b: &[u8], at_b: usize) -> Ordering {
        let (pa, ra) = self.key_at(a, at_a);
        let (pb, rb) = self.key_at(b, at_b);
        if pa == pb {
            ra.cmp(rb)
        } else {
            pa.iter().chain(ra).cmp(pb.iter().chain(rb))
        }
    }

    /// Report order: category, then decision date (undated last), then key.
    fn cmp_rows(&self, a: &[u8], b: &[u8]) -> Ordering {
        let da = Cur { b: a, at: 2 }.i32();
        let db = Cur { b, at: 2 }.i32();
        let (ca, cb) = (a.first().copied(), b.first().copied());
        ca.cmp(&cb)
            .then_with(|| match (da == NO_DATE, db == NO_DATE) {
                (false, false) => da.cmp(&db),
                (false, true) => Ordering::Less,
                (true, false) => Ordering::Greater,
                (true, true) => Ordering::Equal,
            })
            .then_with(|| self.cmp_key_at(a, KEY_AT, b, KEY_AT))
    }

    fn decode(&self, b: &[u8]) -> GapRow {
        let mut c = Cur { b, at: 0 };
        let category = Category::ALL
            .get(c.u8() as usize)
            .copied()
            .unwrap_or(Category::Missing);
        let kind = if c.u8() == 0 {
            Kind::Permit
        } else {
            Kind::Penalty
        };
        let decided_on = date(c.i32());
        let deadline = date(c.i32());
        let first_published = date(c.i32());
        let pid = c.u8() as usize;
        let rest = c.bytes();
        let prefix = match pid {
            0 => "",
            i => self.prefixes.get(i - 1).map(String::as_str).unwrap_or(""),
        };
        let rest = text(rest);
        let key = format!("{prefix}{rest}");
        let doc_no = match c.u8() {
            DOC_NO_IS_KEYS => rest,
            _ => text(c.bytes()),
        };
        let party_name = text(c.bytes());
        let party_id_masked = text(c.bytes());
        let detail = match c.u8() {
            DETAIL_FIXED => FIXED_DETAILS
                .get(c.u8() as usize)
                .copied()
                .unwrap_or("")
                .to_string(),
            DETAIL_LATE => match (date(c.i32()), deadline) {
                (Some(p), Some(dl)) => late_detail(p, dl),
                _ => String::new(),
            },
            DETAIL_OVERDUE => deadline.map(overdue_detail).unwrap_or_default(),
            DETAIL_DISPLAY_ENDED => date(c.i32()).map(display_ended_detail).unwrap_or_default(),
            _ => text(c.bytes()),
        };
        GapRow {
            category,
            key,
            kind,
            doc_no,
            party_name,
            party_id_masked,
            decided_on,
            deadline,
            first_published,
            detail,
        }
    }

    /// With runs written out: every row's bytes in report order, the runs merged with the rows still in memory.
    fn merged(&self) -> Option<Merge<'_>> {
        let (spill, runs) = self.runs()?;
        let mut heads = Vec::new();
        for ((start, _), count) in runs {
            let mut src = Source::File(RunReader::open(&spill.rows, start, count));
            heads.push((src.next_record(), src));
        }
        let mut idx = self.index.clone();
        idx.sort_by(|&a, &b| self.cmp_rows(self.row(a), self.row(b)));
        let mem: Vec<Vec<u8>> = idx.iter().map(|&o| self.row_bytes(o).to_vec()).collect();
        let mut src = Source::Mem(mem.into_iter());
        heads.push((src.next_record(), src));
        Some(Merge {
            gaps: self,
            keys: false,
            heads,
        })
    }

    /// Every row, in report order, decoded one at a time.
    pub fn iter(&self) -> Box<dyn Iterator<Item = GapRow> + '_> {
        match self.merged() {
            Some(m) => Box::new(m.map(|b| self.decode(&b))),
            None => Box::new(self.index.iter().map(|&off| self.decode(self.row(off)))),
        }
    }

    /// The rows of one category, in report order.
    pub fn iter_in(&self, category: Category) -> Box<dyn Iterator<Item = GapRow> + '_> {
        let cat = Category::ALL
            .iter()
            .position(|&c| c == category)
            .unwrap_or(0) as u8;
        match self.merged() {
            // Merged rows come by category: stop after this one.
            Some(m) => Box::new(
                m.skip_while(move |b| b.first().copied().unwrap_or(0) < cat)
                    .take_while(move |b| b.first().copied() == Some(cat))
                    .map(|b| self.decode(&b)),
            ),
            None => Box::new(
                self.index
                    .iter()
                    .filter(move |&&off| self.row(off).first().copied() == Some(cat))
                    .map(|&off| self.decode(self.row(off))),
            ),
        }
    }

    /// The number of distinct keys among the rows.
    pub fn distinct_keys(&self) -> usize {
        let mut idx = self.index.clone();
        idx.sort_by(|&a, &b| self.cmp_key_at(self.row(a), KEY_AT, self.row(b), KEY_AT));
        let Some((spill, runs)) = self.runs() else {
            idx.dedup_by(|a, b| {
                self.cmp_key_at(self.row(*a), KEY_AT, self.row(*b), KEY_AT) == Ordering::Equal
            });
            return idx.len();
        };
        let mut heads = Vec::new();
        for ((_, start), count) in runs {
            let mut src = Source::File(RunReader::open(&spill.keys, start, count));
            heads.push((src.next_record(), src));
        }
        let mem: Vec<Vec<u8>> = idx
            .iter()
            .map(|&o| {
                let b = self.row(o);
                let mut c = Cur { b, at: KEY_AT };
                c.u8();
                c.bytes();
                b[KEY_AT..c.at.min(b.len())].to_vec()
            })
            .collect();
        let mut src = Source::Mem(mem.into_iter());
        heads.push((src.next_record(), src));
        let merge = Merge {
            gaps: self,
            keys: true,
            heads,
        };
        let mut n = 0;
        let mut last: Option<Vec<u8>> = None;
        for k in merge {
            if last
                .as_deref()
                .is_none_or(|l| self.cmp_key_at(l, 0, &k, 0) != Ordering::Equal)
            {
                n += 1;
            }
            last = Some(k);
        }
        n
    }

    /// Sorts by category, then decision date (undated last), then key; stable. (Rows written out to disk are
    /// always read back in this order.)
    pub fn sort(&mut self) {
        let mut idx = std::mem::take(&mut self.index);
        idx.sort_by(|&a, &b| self.cmp_rows(self.row(a), self.row(b)));
        self.index = idx;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-built date and late detail equal their `format!` definitions, over a wide span of dates.
    #[test]
    fn dates_and_late_detail_as_display_gives_them() {
        let start = NaiveDate::from_ymd_opt(1, 1, 1).unwrap();
        let mut d = start;
        while d.year() < 9999 {
            assert_eq!(date_string(d), d.to_string());
            d += chrono::Duration::days(37);
        }
        for d in [
            NaiveDate::from_ymd_opt(-5, 3, 1).unwrap(),
            NaiveDate::from_ymd_opt(10_000, 12, 31).unwrap(),
            NaiveDate::from_ymd_opt(9999, 12, 31).unwrap(),
            NaiveDate::from_ymd_opt(0, 1, 1).unwrap(),
        ] {
            assert_eq!(date_string(d), d.to_string());
        }
        let (p, dl) = (
            NaiveDate::from_ymd_opt(2024, 3, 9).unwrap(),
            NaiveDate::from_ymd_opt(2024, 3, 12).unwrap(),
        );
        assert_eq!(
            late_detail(p, dl),
            format!("{p} 公示，期限 {dl} / published {p}, due {dl}")
        );
        assert_eq!(
            overdue_detail(dl),
            format!("期限 {dl} 已过，仍未公示 / due {dl}, still not public")
        );
    }

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
    }

    fn row(category: Category, key: &str, detail: String) -> GapRow {
        GapRow {
            category,
            key: key.to_string(),
            kind: Kind::Penalty,
            doc_no: key.splitn(3, ':').nth(2).unwrap_or("").to_string(),
            party_name: "河南大地石料有限公司".into(),
            party_id_masked: "410105********1234".into(),
            decided_on: Some(d("2024-03-01")),
            deadline: Some(d("2024-03-12")),
            first_published: None,
            detail,
        }
    }

    #[test]
    fn rows_come_back_exactly() {
        let mut g = Gaps::new();
        let mut rows = vec![
            row(
                Category::Late,
                "XZCF:114100:（豫）应急罚〔2024〕1号",
                late_detail(d("2024-05-01"), d("2024-03-12")),
            ),
            row(
                Category::Overdue,
                "XZCF:114100:a:b",
                overdue_detail(d("2024-03-12")),
            ),
            row(Category::Missing, "XZCF:114100:x", MISSING_DETAIL.into()),
            row(
                Category::Stale,
                "no-colon-key",
                "字段不一致, \"x\"\n".into(),
            ),
            row(Category::Late, "XZCF:114100:y", "2024-05-01 odd".into()),
            row(Category::Quarantined, "(penalty CF-1)", String::new()),
            row(
                Category::Overdue,
                "XZCF:114100:z",
                display_ended_detail(d("2025-03-01")),
            ),
            row(
                Category::Overdue,
                "XZCF:114100:w",
                format!("{DISPLAY_ENDED_LEAD}（公示截止期 2025-03-01） odd"),
            ),
        ];
        rows[1].doc_no = "other".into();
        rows[2].decided_on = None;
        rows[2].first_published = Some(d("2026-01-01"));
        rows[3].kind = Kind::Permit;
        for r in &rows {
            g.push(r.clone());
        }
        assert_eq!(g.len(), rows.len());
        assert_eq!(g.iter().collect::<Vec<_>>(), rows);
        assert_eq!(g.iter_in(Category::Late).count(), 2);
        assert_eq!(g.category_counts()[4], 2);
        assert_eq!(g.distinct_keys(), 8);
        g.push(rows[0].clone());
        assert_eq!(g.distinct_keys(), 8);
        assert_eq!(
            display_ended_until(&rows[6].detail),
            Some(d("2025-03-01")),
            "stored as a tag"
        );
        assert_eq!(display_ended_until(&rows[7].detail), None);
    }

    #[cfg(unix)]
    #[test]
    fn temporary_files_are_private_and_unlinked_ones_leave_no_name() {
        use std::os::unix::fs::PermissionsExt;
        let (path, f) = temp_file("modetest").unwrap();
        let mode = f.metadata().unwrap().permissions().mode() & 0o777;
        std::fs::remove_file(&path).unwrap();
        assert_eq!(mode, 0o600);
        let (f, path) = unlinked_temp_file("modetest").unwrap();
        assert!(path.is_none());
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn spilled_rows_come_back_in_report_order() {
        let mut mem = Gaps::new();
        let mut disk = Gaps::new();
        disk.spill_to_disk();
        disk.run_bytes = 700;
        let cats = [
            Category::Late,
            Category::Missing,
            Category::Orphan,
            Category::Stale,
        ];
        for i in 0..500u32 {
            let j = (i * 7919) % 500;
            let mut r = row(
                cats[(j % 4) as usize],
                &format!("XZCF:114100:doc{}", j % 97),
                format!("detail {j}"),
            );
            r.decided_on = NaiveDate::from_ymd_opt(2024, 1 + j % 12, 1 + j % 28);
            if j % 50 == 0 {
                r.decided_on = None;
            }
            mem.push(r.clone());
            disk.push(r);
        }
        assert!(disk.spill.is_some(), "runs were written");
        mem.sort();
        disk.sort();
        assert_eq!(disk.len(), 500);
        assert_eq!(
            disk.iter().collect::<Vec<_>>(),
            mem.iter().collect::<Vec<_>>()
        );
        for c in cats {
            assert_eq!(
                disk.iter_in(c).collect::<Vec<_>>(),
                mem.iter_in(c).collect::<Vec<_>>()
            );
        }
        assert_eq!(disk.distinct_keys(), 97);
        assert_eq!(mem.distinct_keys(), 97);
        assert!(disk.spill.is_some(), "spilled");
        // The spill files this process holds under a name: what a reconcile killed now (SIGKILL, no destructor)
        // would leave in $TMPDIR.
        let named = || -> Vec<String> {
            let ours = format!("dualpub-reconcile-{}-", std::process::id());
            std::fs::read_dir(std::env::temp_dir())
                .unwrap()
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| {
                    n.starts_with(&ours) && (n.ends_with("-rows.tmp") || n.ends_with("-keys.tmp"))
                })
                .collect()
        };
        #[cfg(unix)]
        assert_eq!(
            named(),
            Vec::<String>::new(),
            "the spill files' names are removed at once"
        );
        drop(disk);
        assert_eq!(named(), Vec::<String>::new(), "temporary files are removed");
    }

    #[test]
    fn sorts_like_the_report() {
        let mut g = Gaps::new();
        let mut a = row(Category::Late, "XZCF:1:b", String::new());
        let mut b = row(Category::Late, "XZCF:1:a", String::new());
        let mut c = row(Category::Missing, "XZXK:1:z", String::new());
        let mut e = row(Category::Late, "XZCF:1:0", String::new());
        e.decided_on = None;
        a.decided_on = Some(d("2024-01-01"));
        b.decided_on = Some(d("2024-01-01"));
        c.decided_on = Some(d("2025-01-01"));
        for r in [e.clone(), a.clone(), b.clone(), c.clone()] {
            g.push(r);
        }
        g.sort();
        let keys: Vec<String> = g.iter().map(|r| r.key).collect();
        assert_eq!(keys, ["XZXK:1:z", "XZCF:1:a", "XZCF:1:b", "XZCF:1:0"]);
    }
}
