//! The files reports are written to (`--out`): they hold party names and other personal data of the agency's
//! decisions, so each is readable and writable by the running user only (0600 on Unix), whatever the umask and
//! whatever the mode of a file it replaces. It is written as a temporary file beside its destination, created so,
//! and renamed over the destination once complete: an earlier report there (with its mode) is replaced whole, and
//! a report cut short leaves the earlier one as it was.
//!
//! The temporary file is named `.NAME.PID-N.tmp` (`NAME` the destination's, `PID` the writing process's). A process
//! killed mid-write (or a machine that lost power) leaves it behind, with the personal data it held, so
//! [`ReportFile::create`] first removes such leftovers for the same destination whose process is gone. On Linux a
//! process is gone when `/proc/PID` is not there (and `/proc/self` is: without a mounted `/proc` nothing is judged
//! gone); a temporary file of a live process, such as a concurrent reconcile writing the same report, is never
//! touched, nor is one of a process whose id has since been reused (it stays until that process ends). Elsewhere
//! nothing is removed. Only the processes this one can see are judged: a folder shared with other machines (a
//! network share) or containers can hold a temporary file of a live process there, which would be taken for a
//! leftover; write reports from one place to such a folder.
//!
//! A destination that is no regular file — a device such as `/dev/null` or `/dev/stdout`'s target, a named pipe —
//! is written into, not replaced: the report is made in a temporary file in the temporary folder (`$TMPDIR`; the
//! xlsx writer needs to seek) and copied into it when complete. Until 2026-11-30 such a destination was replaced by
//! a regular file, which for root meant `/dev/null` itself. A symbolic link to a regular file replaces that file
//! and stays a link.

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
    /// `dest` is no regular file (see the module documentation): copied into, not replaced.
    through: bool,
    done: bool,
}

/// How a report reaches its destination (see the module documentation).
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A regular file, or nothing yet: replaced by a temporary file beside it. A symbolic link is followed.
    Replace(PathBuf),
    /// A device, named pipe or socket, or an open file of this process (`/dev/stdout`, `/proc/self/fd/N`): written
    /// into (appended to), never replaced.
    Through,
}

/// Whether `dest` is, or links (in any step) to, a file descriptor of a process (`/proc/…/fd/N`, `/dev/fd/N`, as
/// `/dev/stdout` does): the shell's redirection (`>> app.log`), not a file to replace. Until 2026-11-30 `--out
/// /dev/stdout` with stdout sent to a file replaced that file (its earlier content and mode lost).
fn an_open_descriptor(dest: &Path) -> bool {
    let is_fd = |p: &Path| p.starts_with("/proc") || p.starts_with("/dev/fd");
    let mut p = dest.to_path_buf();
    for _ in 0..40 {
        if is_fd(&p) {
            return true;
        }
        match std::fs::read_link(&p) {
            Ok(next) => {
                p = match p.parent() {
                    Some(dir) if next.is_relative() => dir.join(next),
                    _ => next,
                }
            }
            Err(_) => return false,
        }
    }
    false
}

impl Target {
    pub fn of(dest: &Path) -> Target {
        match std::fs::metadata(dest) {
            Ok(m) if !m.is_file() && !m.is_dir() => Target::Through,
            Ok(m) if m.is_file() && an_open_descriptor(dest) => Target::Through,
            Ok(m)
                if m.is_file()
                    && std::fs::symlink_metadata(dest)
                        .is_ok_and(|l| l.file_type().is_symlink()) =>
            {
                Target::Replace(std::fs::canonicalize(dest).unwrap_or_else(|_| dest.to_path_buf()))
            }
            _ => Target::Replace(dest.to_path_buf()),
        }
    }

    /// The folder the temporary file goes to.
    pub fn folder(&self) -> PathBuf {
        match self {
            Target::Replace(dest) => dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .to_path_buf(),
            Target::Through => std::env::temp_dir(),
        }
    }
}

impl ReportFile {
    /// Starts the file that will be `dest`: a new temporary file in `dest`'s folder (see [`Target`]), for this user
    /// only.
    pub fn create(dest: &Path) -> io::Result<ReportFile> {
        static N: AtomicU64 = AtomicU64::new(0);
        let target = Target::of(dest);
        let folder = target.folder();
        let through = target == Target::Through;
        let dest = match target {
            Target::Replace(d) => d,
            Target::Through => dest.to_path_buf(),
        };
        let name = dest
            .file_name()
            .map_or_else(|| "report".into(), |n| n.to_string_lossy().into_owned());
        remove_leftovers(&folder, &name);
        loop {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let temp = folder.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
            let mut o = OpenOptions::new();
            // read too: a report for a destination that is no regular file is copied from it
            o.read(true).write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
            match o.open(&temp) {
                Ok(file) => {
                    return Ok(ReportFile {
                        file,
                        temp,
                        dest,
                        through,
                        done: false,
                    })
                }
                // left by an earlier process of the same id that was killed: another name
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes the file durable and puts it in place of `dest`; or, for a destination that is no regular file, copies
    /// it there (the temporary file is removed when `self` is dropped).
    pub fn finish(mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.through {
            self.file.seek(SeekFrom::Start(0))?;
            // Appended: an open file of this process (`>> app.log`, or `>`, already emptied by the shell) keeps what
            // it holds; a device or pipe does not care.
            let mut out = OpenOptions::new().append(true).open(&self.dest)?;
            io::copy(&mut self.file, &mut out)?;
            return out.flush();
        }
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

/// The id of the process that wrote `file_name`, when it is the name of one of [`ReportFile`]'s temporary files for
/// a destination named `name` (`.NAME.PID-N.tmp`).
fn temp_owner(file_name: &str, name: &str) -> Option<u32> {
    let rest = file_name
        .strip_prefix('.')?
        .strip_prefix(name)?
        .strip_prefix('.')?
        .strip_suffix(".tmp")?;
    let (pid, n) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(pid) || !digits(n) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is known to have ended (see the module documentation): never for this process, and never
/// where that cannot be told.
fn process_gone(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        let proc_fs = Path::new("/proc");
        proc_fs.join("self").exists()
            && matches!(
                std::fs::symlink_metadata(proc_fs.join(pid.to_string())),
                Err(e) if e.kind() == io::ErrorKind::NotFound
            )
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Removes the temporary files for destination `name` in `folder` that a process no longer running left behind.
/// Best effort: what cannot be read or removed stays, and the report is written all the same.
fn remove_leftovers(folder: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|f| temp_owner(f, name)) else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_file()) || !process_gone(pid) {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => tracing::info!(
                path = %path.display(),
                pid,
                "removed a report's temporary file left by a process that is no longer running"
            ),
            Err(e) => tracing::warn!(
                path = %path.display(),
                error = %e,
                "cannot remove a report's temporary file left by a process that is no longer running"
            ),
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

    /// A process killed while writing a report left its temporary file, with the report's personal data, for good.
    /// The next report for that destination removes it; one of a live process (this one, standing for a concurrent
    /// reconcile) stays, as do temporary files of other destinations and names that only look alike.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_temporary_file_a_dead_process_left_is_removed_and_a_live_ones_kept() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("r.xlsx");
        let at = |n: &str| dir.path().join(n);
        let leftover = at(&format!(".r.xlsx.{dead}-0.tmp"));
        let live = at(&format!(".r.xlsx.{}-7.tmp", std::process::id()));
        let others = [
            format!(".other.xlsx.{dead}-0.tmp"),
            format!(".r.xlsx.{dead}-x.tmp"),
            format!(".r.xlsx.bak.{dead}-0.tmp"),
            format!("r.xlsx.{dead}-0.tmp"),
        ];
        for p in [&leftover, &live] {
            std::fs::write(p, "party names").unwrap();
        }
        for n in &others {
            std::fs::write(at(n), "not ours").unwrap();
        }
        let f = ReportFile::create(&dest).unwrap();
        assert!(
            !leftover.exists(),
            "the dead process's temporary file is removed"
        );
        assert!(live.exists(), "a live process's temporary file stays");
        for n in &others {
            assert!(at(n).exists(), "{n} stays");
        }
        drop(f);
        assert!(live.exists());
    }

    /// A report written to a named pipe (as to `/dev/null` or a terminal: no regular file) replaced the pipe with a
    /// regular file — for root, `--out /dev/null` replaced the device. Now it is written into the pipe, which stays.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_report_to_a_named_pipe_is_written_into_it() {
        use std::io::Read;
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opened for reading without waiting for a writer (O_NONBLOCK), so the report's writer does not wait either.
        let mut reader = OpenOptions::new()
            .read(true)
            .custom_flags(0o4000)
            .open(&fifo)
            .unwrap();
        write_report_file(&fifo, |w| w.write_all(b"{\"gaps\":[]}")).unwrap();
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "still the pipe: {kind:?}");
        let mut got = String::new();
        reader.read_to_string(&mut got).unwrap();
        assert_eq!(got, "{\"gaps\":[]}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// `--out /dev/stdout` with standard output sent to a file (`>> app.log`): `/dev/stdout` links to
    /// `/proc/self/fd/1`, which links to the file, so the file was taken for a report to replace — its content and
    /// mode were lost. A link into `/proc/…/fd` is written into, appended. (A link of the test's own to
    /// `/proc/self/fd/N` of a file it opened for appending stands for the shell's redirection.)
    #[cfg(target_os = "linux")]
    #[test]
    fn a_report_to_an_open_file_of_this_process_is_appended_to_it() {
        use std::os::unix::io::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        std::fs::write(&log, "EARLIER\n").unwrap();
        let held = OpenOptions::new().append(true).open(&log).unwrap();
        let link = dir.path().join("mystdout");
        std::os::unix::fs::symlink(format!("/proc/self/fd/{}", held.as_raw_fd()), &link).unwrap();
        write_report_file(&link, |w| w.write_all(b"REPORT\n")).unwrap();
        drop(held);
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "EARLIER\nREPORT\n");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    /// A symbolic link to an earlier report (`latest.json` -> `2026-11.json`) was replaced by a regular file; the
    /// report now replaces the file it points to, and the link stays.
    #[cfg(unix)]
    #[test]
    fn a_report_to_a_link_replaces_the_file_it_points_to() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("2026-11.json");
        let link = dir.path().join("latest.json");
        std::fs::write(&file, "old").unwrap();
        std::os::unix::fs::symlink(&file, &link).unwrap();
        write_report_file(&link, |w| w.write_all(b"new")).unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn only_report_temporary_names_have_an_owner() {
        assert_eq!(temp_owner(".r.json.42-0.tmp", "r.json"), Some(42));
        assert_eq!(temp_owner(".r.json.42-17.tmp", "r.json"), Some(42));
        for other in [
            ".r.json.42-.tmp",
            ".r.json.-0.tmp",
            ".r.json.42-0.tmp.x",
            ".r.json.x.42-0.tmp",
            "r.json.42-0.tmp",
            ".r.jsonx42-0.tmp",
            ".r.json.99999999999-0.tmp",
        ] {
            assert_eq!(temp_owner(other, "r.json"), None, "{other}");
        }
    }
}
