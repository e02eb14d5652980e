//! The source records `reconcile --repair` pushes again (the missing and stale ones). They are spooled to a
//! temporary file as the comparison finds them — each as a kind byte, a `u32` length and the record's raw JSON —
//! and read back a chunk at a time, so a reconcile that finds a million records to push again does not hold a
//! million source records in memory. If no temporary file can be written they are kept in memory instead (as
//! raw JSON, not parsed). The file is removed on drop.

use crate::model::Kind;
use serde_json::value::RawValue;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

/// Records to push again, in the order they were found.
#[derive(Debug, Default)]
pub struct Repush {
    len: usize,
    spool: Option<Spool>,
    /// Records that could not be spooled (no temporary file): kept here.
    mem: Vec<(Kind, Box<RawValue>)>,
    /// A temporary file could not be created or written; everything after that stays in memory.
    spool_failed: bool,
}

#[derive(Debug)]
struct Spool {
    /// Only where the file's name could not be removed at creation (never on Unix).
    path: Option<PathBuf>,
    file: BufWriter<File>,
    records: usize,
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Permit => 0,
        Kind::Penalty => 1,
    }
}

impl Repush {
    pub fn new() -> Repush {
        Repush::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a record (its source JSON as the feed gave it).
    pub fn push(&mut self, kind: Kind, raw: &RawValue) {
        self.len += 1;
        if !self.spool_failed && self.spool_one(kind, raw).is_ok() {
            return;
        }
        self.spool_failed = true;
        self.mem.push((kind, raw.to_owned()));
    }

    fn spool_one(&mut self, kind: Kind, raw: &RawValue) -> std::io::Result<()> {
        let bytes = raw.get().as_bytes();
        let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
        if self.spool.is_none() {
            let (file, path) = super::gaps::unlinked_temp_file("repush")?;
            self.spool = Some(Spool {
                path,
                file: BufWriter::with_capacity(1 << 16, file),
                records: 0,
            });
        }
        let s = self.spool.as_mut().expect("just created");
        s.file.write_all(&[kind_byte(kind)])?;
        s.file.write_all(&len.to_le_bytes())?;
        s.file.write_all(bytes)?;
        s.records += 1;
        Ok(())
    }

    /// The records, `n` at a time, in the order they were pushed (spooled ones first, then any kept in memory,
    /// which are only ever the later ones).
    pub fn chunks(self, n: usize) -> std::io::Result<Chunks> {
        let Repush { spool, mut mem, .. } = self;
        let file = match spool {
            Some(mut s) => {
                s.file.flush()?;
                let mut f = s.file.get_ref().try_clone()?;
                f.seek(SeekFrom::Start(0))?;
                let left = s.records;
                Some((BufReader::with_capacity(1 << 16, f), left, s))
            }
            None => None,
        };
        mem.reverse();
        Ok(Chunks {
            file,
            mem,
            n: n.max(1),
        })
    }
}

/// Chunks of [`Repush`] records, read back from the spool.
pub struct Chunks {
    /// The reader, how many records are left in the file, and the spool (kept so the file goes on drop).
    file: Option<(BufReader<File>, usize, Spool)>,
    /// In-memory records, last first.
    mem: Vec<(Kind, Box<RawValue>)>,
    n: usize,
}

fn read_one(r: &mut BufReader<File>) -> std::io::Result<(Kind, Box<RawValue>)> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head)?;
    let kind = match head[0] {
        0 => Kind::Permit,
        1 => Kind::Penalty,
        b => {
            return Err(std::io::Error::other(format!(
                "the re-push spool is damaged (kind byte {b})"
            )))
        }
    };
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    let text = String::from_utf8(buf).map_err(std::io::Error::other)?;
    let raw = RawValue::from_string(text).map_err(std::io::Error::other)?;
    Ok((kind, raw))
}

impl Iterator for Chunks {
    type Item = std::io::Result<Vec<(Kind, Box<RawValue>)>>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut out = Vec::with_capacity(self.n.min(4096));
        if let Some((r, left, _)) = &mut self.file {
            while out.len() < self.n && *left > 0 {
                match read_one(r) {
                    Ok(item) => {
                        out.push(item);
                        *left -= 1;
                    }
                    Err(e) => {
                        self.file = None;
                        self.mem.clear();
                        return Some(Err(e));
                    }
                }
            }
            if *left == 0 {
                self.file = None;
            }
        }
        while out.len() < self.n {
            match self.mem.pop() {
                Some(item) => out.push(item),
                None => break,
            }
        }
        (!out.is_empty()).then_some(Ok(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(i: usize) -> Box<RawValue> {
        // Pretty-printed on purpose: raw JSON from the feed may hold newlines.
        RawValue::from_string(format!(
            "{{\n  \"id\": \"S{i}\",\n  \"名称\": \"甲\\n乙\"\n}}"
        ))
        .unwrap()
    }

    fn drain(r: Repush, n: usize) -> Vec<Vec<(Kind, String)>> {
        r.chunks(n)
            .unwrap()
            .map(|c| {
                c.unwrap()
                    .into_iter()
                    .map(|(k, v)| (k, v.get().to_string()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn spooled_records_come_back_in_order_in_chunks_and_the_file_goes() {
        let mut r = Repush::new();
        let mut want = Vec::new();
        for i in 0..2503 {
            let kind = if i % 3 == 0 {
                Kind::Penalty
            } else {
                Kind::Permit
            };
            let v = raw(i);
            r.push(kind, &v);
            want.push((kind, v.get().to_string()));
        }
        assert_eq!(r.len(), 2503);
        let spool = r.spool.as_ref().expect("spooled to a file");
        #[cfg(unix)]
        assert!(
            spool.path.is_none(),
            "the spool's name is removed at once (it holds full ID numbers)"
        );
        let path = spool.path.clone();
        assert!(r.mem.is_empty(), "nothing kept in memory");
        let chunks = drain(r, 1000);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [1000, 1000, 503]
        );
        assert_eq!(chunks.concat(), want);
        assert!(path.is_none_or(|p| !p.exists()), "the spool file is gone");
    }

    #[test]
    fn records_kept_in_memory_after_a_spool_failure_follow_the_spooled_ones() {
        let mut r = Repush::new();
        r.push(Kind::Permit, &raw(0));
        r.push(Kind::Permit, &raw(1));
        r.spool_failed = true;
        r.push(Kind::Penalty, &raw(2));
        r.push(Kind::Permit, &raw(3));
        assert_eq!(r.len(), 4);
        let got: Vec<(Kind, String)> = drain(r, 3).concat();
        let want: Vec<(Kind, String)> = [
            (Kind::Permit, 0),
            (Kind::Permit, 1),
            (Kind::Penalty, 2),
            (Kind::Permit, 3),
        ]
        .into_iter()
        .map(|(k, i)| (k, raw(i).get().to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn nothing_pushed_gives_no_chunks_and_no_file() {
        let r = Repush::new();
        assert!(r.is_empty());
        assert!(r.spool.is_none());
        assert_eq!(drain(r, 10).len(), 0);
    }
}
