//! Small helpers that every locald crate shares, so that each concept has one
//! implementation: writing a file atomically, telling a process from a later one that
//! reuses its pid, and making random ids.
//!
//! ```
//! use locald_runtime::util;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("state.json");
//! util::write_atomic(&path, b"{}")?;
//! assert_eq!(std::fs::read(&path)?, b"{}");
//!
//! let id = util::random_id()?;
//! assert_eq!(id.len(), 64);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Everything here builds on every platform; [`process_start_time`] knows the answer
//! only on Linux and says `None` elsewhere.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
};

/// What can go wrong in this module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Writing a file (its temporary copy, or the rename into place) failed; nothing
    /// was left at the temporary path.
    #[error("writing {}", path.display())]
    Write {
        /// The file that was to be written.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The system's random number source failed.
    #[error("reading random bytes from the system")]
    Random {
        /// Why it failed.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The underlying I/O error.
    pub fn io_error(&self) -> &io::Error {
        match self {
            Error::Write { source, .. } | Error::Random { source } => source,
        }
    }

    /// Turns this error into the underlying I/O error, for callers that add their own
    /// context.
    pub fn into_io_error(self) -> io::Error {
        match self {
            Error::Write { source, .. } | Error::Random { source } => source,
        }
    }
}

impl From<Error> for locald_core::Error {
    fn from(e: Error) -> Self {
        let context = e.to_string();
        match e {
            Error::Write { source, .. } | Error::Random { source } => {
                locald_core::Error::io(context, source)
            }
        }
    }
}

/// This module's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// How [`write_atomic_with`] writes. The default: the temporary file beside the
/// target, synced to disk before the rename, mode `0600` on Unix.
#[derive(Debug, Clone)]
pub struct AtomicWrite {
    temp_dir: Option<PathBuf>,
    durable: bool,
    mode: Option<u32>,
}

impl Default for AtomicWrite {
    fn default() -> Self {
        AtomicWrite {
            temp_dir: None,
            durable: true,
            mode: None,
        }
    }
}

impl AtomicWrite {
    /// The default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates the temporary file in `dir` (default: the target's directory). It must
    /// be on the same filesystem as the target.
    pub fn temp_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.temp_dir = Some(dir.into());
        self
    }

    /// Whether to sync the data to disk before the rename (default: true). Without
    /// it, a power loss may leave an empty file; a crash of the program still leaves
    /// the old file or the new one.
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// The new file's permission bits on Unix (default `0o600`); ignored elsewhere.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = Some(mode);
        self
    }
}

/// Writes `bytes` to `path` with the default [`AtomicWrite`] options: a reader sees
/// the old content or the new, never a mix, and a crash leaves no partial file.
///
/// A symbolic link at `path` is replaced, not followed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, &AtomicWrite::default())
}

/// Writes `bytes` to `path` through a temporary file and a rename
/// ([`tempfile::NamedTempFile::persist`]); the temporary file is removed on failure.
pub fn write_atomic_with(path: &Path, bytes: &[u8], options: &AtomicWrite) -> Result<()> {
    let err = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match &options.temp_dir {
        Some(d) => d.as_path(),
        None => match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        },
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .map_err(err)?;
    #[cfg(unix)]
    if let Some(mode) = options.mode {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(err)?;
    }
    tmp.write_all(bytes).map_err(err)?;
    if options.durable {
        tmp.as_file().sync_data().map_err(err)?;
    }
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// The start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` when there is no such process (or not on Linux).
///
/// A pid with the same start time is the same process: record both when you start
/// something, and compare before you signal it.
pub fn process_start_time(pid: u32) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let pid = i32::try_from(pid).ok()?;
        procfs::process::Process::new(pid)
            .and_then(|p| p.stat())
            .ok()
            .map(|s| s.starttime)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// A fresh random id: 64 lowercase hexadecimal characters (256 bits from the
/// system's random source), as container ids and tokens use.
pub fn random_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::Random { source: e.into() })?;
    Ok(hex::encode(bytes))
}

/// An error and its causes on one line, `outer: inner: innermost`, leaving out a
/// cause whose text the message already contains (as some libraries repeat it).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn atomic_write_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn atomic_write_mode_and_temp_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let path = dir.path().join("f");
        let options = AtomicWrite::new().temp_dir(&tmp).mode(0o644).durable(false);
        write_atomic_with(&path, b"x", &options).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
        assert!(std::fs::read_dir(&tmp).unwrap().next().is_none());
        write_atomic(&path, b"y").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn atomic_write_failure_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("f");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(err.to_string(), format!("writing {}", path.display()));
        assert_eq!(err.io_error().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn chains_print_each_cause_once() {
        let inner = io::Error::new(io::ErrorKind::NotFound, "no such file");
        let err = Error::Write {
            path: "/x/y".into(),
            source: inner,
        };
        assert_eq!(error_chain(&err), "writing /x/y: no such file");
        let repeated = Error::Random {
            source: io::Error::other("reading random bytes from the system"),
        };
        assert_eq!(
            error_chain(&repeated),
            "reading random bytes from the system"
        );
    }

    #[test]
    fn ids_are_hex_and_differ() {
        let a = random_id().unwrap();
        let b = random_id().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn start_time_tells_processes_apart() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id();
        let mine = process_start_time(std::process::id()).unwrap();
        let theirs = process_start_time(pid).unwrap();
        assert!(theirs >= mine);
        // The same value as field 22 of /proc/<pid>/stat, read by hand.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let field: u64 = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(theirs, field);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(process_start_time(pid), None);
    }
}
