//! The files reports are written to (`--out`): they hold party names and other personal data of the agency's
//! decisions, so each is readable and writable by the running user only (0600 on Unix), whatever the umask and
//! whatever the mode of a file it replaces. It is written as a temporary file beside its destination, created so,
//! and renamed over the destination once complete: an earlier report there (with its mode) is replaced whole, and
//! a report cut short leaves the earlier one as it was.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A report file being written; [`ReportFile::finish`] puts it in place. Dropped unfinished, it is removed.
#[derive(Debug)]
pub struct ReportFile {
    file: File,
    temp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl ReportFile {
    /// Starts the file that will be `dest`: a new temporary file in `dest`'s folder, for this user only.
    pub fn create(dest: &Path) -> io::Result<ReportFile> {
        static N: AtomicU64 = AtomicU64::new(0);
        let folder = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = dest
            .file_name()
            .map_or_else(|| "report".into(), |n| n.to_string_lossy());
        loop {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let temp = folder.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
            let mut o = OpenOptions::new();
            o.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            match o.open(&temp) {
                Ok(file) => {
                    return Ok(ReportFile {
                        file,
                        temp,
                        dest: dest.to_path_buf(),
                        done: false,
                    })
                }
                // left by an earlier process of the same id that was killed: another name
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes the file durable and puts it in place of `dest`.
    pub fn finish(mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.sync_all()?;
        std::fs::rename(&self.temp, &self.dest)?;
        self.done = true;
        Ok(())
    }
}

impl Write for ReportFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for ReportFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

impl Drop for ReportFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes `dest` as a [`ReportFile`] through a 1 MiB buffer (the writers emit many small pieces).
pub fn write_report_file(
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(1 << 20, ReportFile::create(dest)?);
    write(&mut w)?;
    w.into_inner().map_err(|e| e.into_error())?.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_file_replaces_the_old_one_only_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("r.json");
        std::fs::write(&dest, "old").unwrap();
        let mut f = ReportFile::create(&dest).unwrap();
        f.write_all(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old");
        drop(f);
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old");
        let names = |d: &Path| std::fs::read_dir(d).unwrap().count();
        assert_eq!(names(dir.path()), 1, "an unfinished file leaves nothing");
        write_report_file(&dest, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(names(dir.path()), 1);
    }
}
