//! Stale rows waiting for the platform's fields. A stale record's detail names the fields that differ, which
//! needs the platform's version of it; those are fetched after the comparison, page by page, from just the pages
//! that hold stale records. Until then each stale row and our mapped record wait here, encoded back to back (about
//! 1 KiB a record) — in memory up to [`MEM_BYTES`], then in a temporary file — with only their offsets grouped by
//! platform page in memory (8 bytes a record). A mapping change that makes every record stale thus costs disk, not
//! RAM. If no temporary file can be created they stay in memory.

use super::gaps::GapRef;
use super::report::{Category, GapRow};
use crate::model::{Kind, PlatformRecord};
use chrono::{Datelike, NaiveDate};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Bytes of waiting rows held in memory before they move to a temporary file.
const MEM_BYTES: usize = 8 << 20;

#[derive(Default)]
pub struct StaleRows {
    /// Per platform page, where each of its rows starts.
    pages: BTreeMap<u64, Vec<u64>>,
    /// Rows kept in memory (all of them until [`MEM_BYTES`], or for good if no file could be made).
    mem: Vec<u8>,
    file: Option<Spool>,
    /// No temporary file could be created: everything stays in `mem`.
    in_memory_only: bool,
    mem_limit: usize,
    /// Scratch for encoding one row.
    buf: Vec<u8>,
}

struct Spool {
    /// Only where the file's name could not be removed at creation (never on Unix).
    path: Option<PathBuf>,
    w: BufWriter<File>,
    len: u64,
    /// A second handle for reading back (after a flush).
    r: File,
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_date(b: &mut Vec<u8>, d: Option<NaiveDate>) {
    let n = d.map(|d| d.num_days_from_ce()).unwrap_or(i32::MIN);
    b.extend_from_slice(&n.to_le_bytes());
}

struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn date(&mut self) -> Option<Option<NaiveDate>> {
        let n = self.u32()? as i32;
        Some(if n == i32::MIN {
            None
        } else {
            NaiveDate::from_num_days_from_ce_opt(n)
        })
    }
}

fn damaged() -> std::io::Error {
    std::io::Error::other("a stale row read back from the temporary file is damaged")
}

impl StaleRows {
    pub fn new() -> StaleRows {
        StaleRows {
            mem_limit: MEM_BYTES,
            ..StaleRows::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// The platform pages that hold waiting rows, in order.
    pub fn pages(&self) -> Vec<u64> {
        self.pages.keys().copied().collect()
    }

    /// Keeps a stale row (the fields that differ are added to its detail later) and our version of the record, for
    /// `page`.
    pub fn push(
        &mut self,
        page: u64,
        row: &GapRef<'_>,
        ours: &PlatformRecord,
    ) -> std::io::Result<()> {
        let mut b = std::mem::take(&mut self.buf);
        b.clear();
        b.extend_from_slice(&[0; 4]); // the length of what follows, filled in below
        put_str(&mut b, row.key);
        put_str(&mut b, row.doc_no);
        put_str(&mut b, row.party_name);
        put_str(&mut b, row.party_id_masked);
        put_date(&mut b, row.decided_on);
        put_date(&mut b, row.deadline);
        put_date(&mut b, row.first_published);
        put_str(&mut b, row.detail);
        b.push(match row.kind {
            Kind::Permit => 0,
            Kind::Penalty => 1,
        });
        let (text, spans) = ours.parts();
        put_str(&mut b, text);
        b.extend_from_slice(&(spans.len() as u32).to_le_bytes());
        for &(n, v) in spans {
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(&v.to_le_bytes());
        }
        let len = (b.len() - 4) as u32;
        b[..4].copy_from_slice(&len.to_le_bytes());
        let r = self.append(page, &b);
        self.buf = b;
        r
    }

    fn append(&mut self, page: u64, b: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() && !self.in_memory_only && self.mem.len() + b.len() > self.mem_limit
        {
            match super::gaps::unlinked_temp_file("stale") {
                Ok((f, path)) => {
                    let r = f.try_clone()?;
                    let mut w = BufWriter::with_capacity(1 << 16, f);
                    w.write_all(&self.mem)?;
                    let len = self.mem.len() as u64;
                    self.mem = Vec::new();
                    self.file = Some(Spool { path, w, len, r });
                }
                Err(e) => {
                    tracing::warn!("stale rows stay in memory: no temporary file: {e}");
                    self.in_memory_only = true;
                }
            }
        }
        let at = match &mut self.file {
            Some(s) => {
                s.w.write_all(b)?;
                s.len += b.len() as u64;
                s.len - b.len() as u64
            }
            None => {
                self.mem.extend_from_slice(b);
                (self.mem.len() - b.len()) as u64
            }
        };
        self.pages.entry(page).or_default().push(at);
        Ok(())
    }

    /// The waiting rows of `page` (gone from here after), in the order they were pushed.
    pub fn take_page(&mut self, page: u64) -> std::io::Result<Vec<(GapRow, PlatformRecord)>> {
        let Some(offsets) = self.pages.remove(&page) else {
            return Ok(Vec::new());
        };
        if let Some(s) = &mut self.file {
            s.w.flush()?;
        }
        let mut out = Vec::with_capacity(offsets.len());
        let mut rec = Vec::new();
        for at in offsets {
            let bytes: &[u8] = match &mut self.file {
                Some(s) => {
                    let mut head = [0u8; 4];
                    s.r.seek(SeekFrom::Start(at))?;
                    s.r.read_exact(&mut head)?;
                    rec.resize(u32::from_le_bytes(head) as usize, 0);
                    s.r.read_exact(&mut rec)?;
                    &rec
                }
                None => {
                    let at = at as usize;
                    let head = self.mem.get(at..at + 4).ok_or_else(damaged)?;
                    let n = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
                    self.mem.get(at + 4..at + 4 + n).ok_or_else(damaged)?
                }
            };
            out.push(decode(bytes).ok_or_else(damaged)?);
        }
        Ok(out)
    }
}

fn decode(bytes: &[u8]) -> Option<(GapRow, PlatformRecord)> {
    let mut c = Cursor(bytes);
    let key = c.string()?;
    let doc_no = c.string()?;
    let party_name = c.string()?;
    let party_id_masked = c.string()?;
    let decided_on = c.date()?;
    let deadline = c.date()?;
    let first_published = c.date()?;
    let detail = c.string()?;
    let kind = match c.take(1)?[0] {
        0 => Kind::Permit,
        1 => Kind::Penalty,
        _ => return None,
    };
    let text = c.string()?;
    let n = c.u32()? as usize;
    let mut spans = Vec::with_capacity(n.min(c.0.len() / 8));
    let mut start = 0u32;
    for _ in 0..n {
        let (name_end, value_end) = (c.u32()?, c.u32()?);
        // The spans must describe `text` exactly (what `PlatformRecord` assumes); a damaged file must not panic.
        if !(start < name_end
            && name_end < value_end
            && text.is_char_boundary(name_end as usize)
            && text.get(start as usize..value_end as usize).is_some())
        {
            return None;
        }
        start = value_end;
        spans.push((name_end, value_end));
    }
    if start as usize != text.len() || !c.0.is_empty() {
        return None;
    }
    let row = GapRow {
        category: Category::Stale,
        key,
        kind,
        doc_no,
        party_name,
        party_id_masked,
        decided_on,
        deadline,
        first_published,
        detail,
    };
    Some((row, PlatformRecord::from_parts(text, spans)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> PlatformRecord {
        let mut r = PlatformRecord::default();
        r.set("CF_WSH", &format!("豫应急罚〔2024〕{i}号"));
        r.set("CF_XDR_MC", &format!("某某公司{i}"));
        if i % 2 == 0 {
            r.set("CF_FKJE", "0.2");
        }
        r
    }

    /// Most rows wait with no detail; some say already why they are left alone.
    fn detail(i: usize) -> &'static str {
        if i % 5 == 0 {
            "执法系统提供的是旧版本 / an older version"
        } else {
            ""
        }
    }

    fn push(s: &mut StaleRows, i: usize) {
        let key = format!("CF:11410000000012343F:K{i}");
        let name = format!("某某公司{i}");
        let d = NaiveDate::from_ymd_opt(2024, 1, 1 + (i % 28) as u32);
        let row = GapRef {
            category: Category::Stale,
            key: &key,
            kind: Kind::Penalty,
            doc_no: "豫应急罚〔2024〕1号",
            party_name: &name,
            party_id_masked: "4101**********1234",
            decided_on: d,
            deadline: None,
            first_published: d,
            detail: detail(i),
        };
        s.push((i % 7) as u64 + 1, &row, &record(i)).unwrap();
    }

    fn check_all(mut s: StaleRows, n: usize) {
        let mut seen = vec![false; n];
        for page in s.pages() {
            let rows = s.take_page(page).unwrap();
            let mut last = None;
            for (row, rec) in rows {
                let i: usize = row.key.rsplit('K').next().unwrap().parse().unwrap();
                assert_eq!(page, (i % 7) as u64 + 1, "row {i} under its page");
                assert!(last < Some(i), "pushed order within a page");
                last = Some(i);
                assert!(!seen[i]);
                seen[i] = true;
                assert_eq!(row.category, Category::Stale);
                assert_eq!(row.party_name, format!("某某公司{i}"));
                assert_eq!(row.detail, detail(i));
                assert_eq!(row.party_id_masked, "4101**********1234");
                assert_eq!(
                    row.decided_on,
                    NaiveDate::from_ymd_opt(2024, 1, 1 + (i % 28) as u32)
                );
                assert_eq!(row.deadline, None);
                assert_eq!(rec.digest(), record(i).digest());
                assert_eq!(rec.get("CF_XDR_MC"), Some(format!("某某公司{i}").as_str()));
            }
        }
        assert!(seen.iter().all(|&b| b), "every row comes back");
        assert!(s.is_empty());
    }

    #[test]
    fn rows_come_back_by_page_from_memory() {
        let mut s = StaleRows::new();
        for i in 0..300 {
            push(&mut s, i);
        }
        assert!(s.file.is_none());
        check_all(s, 300);
    }

    #[test]
    fn rows_move_to_a_temporary_file_past_the_limit_and_come_back_by_page() {
        let mut s = StaleRows::new();
        s.mem_limit = 4096;
        for i in 0..300 {
            push(&mut s, i);
        }
        let path = s.file.as_ref().expect("moved to a file").path.clone();
        assert!(s.mem.is_empty(), "nothing left in memory");
        #[cfg(unix)]
        assert!(
            path.is_none(),
            "the file's name is removed at once (it holds full ID numbers)"
        );
        check_all(s, 300);
        assert!(path.is_none_or(|p| !p.exists()), "the file is gone");
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let mut s = StaleRows::new();
        push(&mut s, 1);
        let n = s.mem.len();
        // Truncate the record text's spans: the decoder must refuse it.
        for cut in [n - 1, n - 9, 40] {
            let mut t = StaleRows::new();
            push(&mut t, 1);
            let len = (cut - 4) as u32;
            t.mem.truncate(cut);
            t.mem[..4].copy_from_slice(&len.to_le_bytes());
            assert!(t.take_page(2).is_err(), "cut at {cut}");
        }
    }
}
