//! Unpacking one layer tar into its own directory, safely.
//!
//! Every entry's path is confined to the target: absolute paths are made relative,
//! `..` is rejected, and no entry is ever written through a symlink (a parent that is a
//! symlink is an error, and existing final components are removed, never opened). The
//! target directory is private to the unpacker until it is complete, so these checks
//! cannot race with anyone.
//!
//! Whiteouts are stored in the form overlayfs reads: a `.wh.NAME` entry becomes a 0:0
//! character device `NAME` (the kernel lets any user make those), and `.wh..wh..opq`
//! sets the opaque attribute on its directory: `trusted.overlay.opaque` for root, and
//! for a user who is not root (no `trusted.*` attributes) `user.overlay.opaque`, which
//! overlayfs reads when mounted with `userxattr` (rootless containers mount it so).
//! Where user attributes cannot be set, the markers are kept as empty files, which only
//! the copying snapshot understands.
//!
//! A user who is not root but has subordinate ids unpacks inside a user namespace
//! mapped from them ([`unpack_in_userns`], through the container helper), as root
//! there: files keep the image's owners, seen from the host as the user's subordinate
//! ids, as podman's rootless store keeps them.

use std::{
    collections::{HashMap, HashSet},
    fs::{self, OpenOptions},
    io::{self, Read, Write},
    os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
    path::{Component, Path, PathBuf},
};

use filetime::FileTime;
use locald_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// The prefix of a whiteout entry's name.
pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
/// The name of an opaque-directory marker.
pub(crate) const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The attribute overlayfs reads to hide a lower directory's contents.
pub(crate) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same, for overlayfs mounted with `userxattr` (by a user who is not root).
pub(crate) const USER_OPAQUE_XATTR: &str = "user.overlay.opaque";

/// How whiteouts are stored in an unpacked layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WhiteoutFormat {
    /// overlayfs' own: 0:0 character devices and `trusted.overlay.opaque` (root).
    Overlay,
    /// 0:0 character devices and `user.overlay.opaque`: what overlayfs reads when
    /// mounted with `userxattr`, as rootless containers mount it.
    UserOverlay,
    /// The OCI tar markers kept as empty files (only the copying snapshot reads them).
    Marker,
}

impl WhiteoutFormat {
    /// True when overlayfs can mount layers in this form.
    pub fn is_overlay(self) -> bool {
        matches!(self, WhiteoutFormat::Overlay | WhiteoutFormat::UserOverlay)
    }

    /// The attribute that marks an opaque directory, for the overlay forms.
    pub(crate) fn opaque_xattr(self) -> Option<&'static str> {
        match self {
            WhiteoutFormat::Overlay => Some(OPAQUE_XATTR),
            WhiteoutFormat::UserOverlay => Some(USER_OPAQUE_XATTR),
            WhiteoutFormat::Marker => None,
        }
    }
}

/// How to unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UnpackOptions {
    pub(crate) whiteouts: WhiteoutFormat,
    /// Apply owners from the tar (root, or root in a user namespace mapping them), and
    /// `security.*` attributes (file capabilities).
    pub(crate) owners: bool,
    /// Create device nodes and `trusted.*` attributes (root on the host only).
    pub(crate) privileged: bool,
}

impl UnpackOptions {
    /// The richest unpacking the current user can do in this process: root applies
    /// everything; another user keeps whiteouts in the form overlayfs reads with
    /// `userxattr` where the store's filesystem takes user attributes (`store_tmp`
    /// tells), and every file belongs to the user.
    pub(crate) fn for_current_user(store_tmp: &Path) -> Self {
        let root = nix::unistd::geteuid().is_root();
        UnpackOptions {
            whiteouts: if root {
                WhiteoutFormat::Overlay
            } else if user_xattrs_work(store_tmp) {
                WhiteoutFormat::UserOverlay
            } else {
                WhiteoutFormat::Marker
            },
            owners: root,
            privileged: root,
        }
    }
}

/// True when a user attribute can be set on a directory made in `dir` (tmpfs before
/// Linux 6.6 cannot).
fn user_xattrs_work(dir: &Path) -> bool {
    let Ok(probe) = tempfile::Builder::new().prefix("xattr-").tempdir_in(dir) else {
        return false;
    };
    xattr::set(probe.path(), USER_OPAQUE_XATTR, b"y").is_ok()
}

/// What an unpack wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct UnpackStats {
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
    /// Whiteout and opaque-directory entries: a layer without any is the same in
    /// either [`WhiteoutFormat`].
    pub(crate) whiteouts: u64,
}

struct DirMeta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
}

/// Unpacks the tar stream `reader` into the directory `root` (which must exist and be
/// private to the caller). `what` names the layer in errors.
pub(crate) fn unpack(
    reader: impl Read,
    root: &Path,
    what: &str,
    opts: UnpackOptions,
) -> Result<UnpackStats> {
    // Regular files are written by two helper threads: creating and filling files is
    // nearly all kernel time, which one thread cannot spread over two cores.
    const WRITERS: usize = 2;
    let first_error: std::sync::Mutex<Option<Error>> = std::sync::Mutex::new(None);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(256);
    let rx = std::sync::Mutex::new(rx);
    std::thread::scope(|scope| {
        for _ in 0..WRITERS {
            let (rx, first_error) = (&rx, &first_error);
            scope.spawn(move || loop {
                let msg = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                match msg {
                    Ok(Msg::File(job)) => {
                        if let Err(e) = job.write() {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                        }
                    }
                    Ok(Msg::Barrier(b)) => {
                        b.wait();
                    }
                    Err(_) => return,
                }
            });
        }
        let mut pool = Pool {
            tx,
            workers: WRITERS,
            pending: HashSet::new(),
            first_error: &first_error,
        };
        let result = unpack_entries(reader, root, what, opts, &mut pool);
        let flushed = pool.flush();
        drop(pool);
        result.and_then(|stats| flushed.map(|()| stats))
    })
}

/// A regular file for a writer thread.
struct FileJob {
    target: PathBuf,
    data: Vec<u8>,
    mode: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl FileJob {
    fn write(self) -> Result<()> {
        let target = &self.target;
        let io_err = |ctx: &'static str| {
            move |e: io::Error| Error::io(format!("{ctx} {}", target.display()), e)
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(target)
            .map_err(io_err("creating"))?;
        file.write_all(&self.data).map_err(io_err("writing"))?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(|e| owner_error(target, uid as u64, gid as u64, e))?;
        }
        file.set_permissions(fs::Permissions::from_mode(self.mode))
            .map_err(io_err("setting the mode of"))?;
        for (name, value) in &self.xattrs {
            if let Err(e) = xattr::set(target, name, value) {
                tracing::warn!(path = %target.display(), attr = %name, error = %e, "could not set extended attribute");
            }
        }
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(self.mtime.max(0) as u64);
        file.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
            .map_err(io_err("setting the times of"))
    }
}

enum Msg {
    File(FileJob),
    Barrier(std::sync::Arc<std::sync::Barrier>),
}

/// Hands files to the writer threads, and waits for them where order matters.
struct Pool<'a> {
    tx: std::sync::mpsc::SyncSender<Msg>,
    workers: usize,
    /// Paths handed out and perhaps not written yet.
    pending: HashSet<PathBuf>,
    first_error: &'a std::sync::Mutex<Option<Error>>,
}

impl Pool<'_> {
    fn error(&self) -> Result<()> {
        match self
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn submit(&mut self, job: FileJob) -> Result<()> {
        self.error()?;
        self.pending.insert(job.target.clone());
        self.tx.send(Msg::File(job)).map_err(|_| {
            Error::io(
                "unpacking a layer",
                io::Error::other("the file writers stopped"),
            )
        })
    }

    /// Waits until every file handed out is written.
    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(self.workers + 1));
            for _ in 0..self.workers {
                let _ = self.tx.send(Msg::Barrier(barrier.clone()));
            }
            barrier.wait();
            self.pending.clear();
        }
        self.error()
    }

    /// Waits for `path` if it is being written.
    fn settle(&mut self, path: &Path) -> Result<()> {
        if self.pending.contains(path) {
            self.flush()?;
        }
        Ok(())
    }
}

/// Files larger than this are written by the reading thread itself.
const SMALL_FILE: u64 = 4 << 20;

fn unpack_entries(
    reader: impl Read,
    root: &Path,
    what: &str,
    opts: UnpackOptions,
    pool: &mut Pool<'_>,
) -> Result<UnpackStats> {
    let mut archive = tar::Archive::new(reader);
    let mut dirs: HashMap<PathBuf, DirMeta> = HashMap::new();
    // Directories already known to be real directories: saves walking every parent of
    // every entry. Anything removed is forgotten with everything below it.
    let mut known: HashSet<PathBuf> = HashSet::new();
    let mut buf = vec![0u8; 128 << 10];
    let mut stats = UnpackStats::default();
    let io_err = |ctx: String| move |e: io::Error| Error::io(ctx, e);
    for entry in archive
        .entries()
        .map_err(|e| invalid(what, format!("not a tar archive: {e}")))?
    {
        let mut entry = entry.map_err(|e| invalid(what, format!("corrupt tar stream: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| invalid(what, format!("bad entry name: {e}")))?
            .into_owned();
        let Some(rel) = confine(&raw_path).map_err(|reason| invalid(what, reason))? else {
            continue; // the root directory itself
        };
        stats.entries += 1;
        let name = rel
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let parent_rel = rel.parent().unwrap_or(Path::new(""));
        let parent = ensure_parents(root, parent_rel, what, &mut known)?;

        if name == OPAQUE_MARKER {
            stats.whiteouts += 1;
            match opts.whiteouts.opaque_xattr() {
                Some(attr) => xattr::set(&parent, attr, b"y")
                    .map_err(io_err(format!("marking {} opaque", parent.display())))?,
                None => create_empty(&parent.join(OPAQUE_MARKER))
                    .map_err(io_err(format!("writing whiteout in {}", parent.display())))?,
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            stats.whiteouts += 1;
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(invalid(what, format!("bad whiteout entry {:?}", raw_path)));
            }
            match opts.whiteouts {
                WhiteoutFormat::Overlay | WhiteoutFormat::UserOverlay => {
                    let target = parent.join(hidden);
                    pool.settle(&target)?;
                    forget(&mut known, &target);
                    remove_existing(&target)
                        .map_err(io_err(format!("replacing {}", target.display())))?;
                    nix::sys::stat::mknod(
                        &target,
                        nix::sys::stat::SFlag::S_IFCHR,
                        nix::sys::stat::Mode::empty(),
                        0,
                    )
                    .map_err(|e| {
                        Error::io(format!("creating whiteout {}", target.display()), e.into())
                    })?;
                }
                WhiteoutFormat::Marker => create_empty(&parent.join(&name))
                    .map_err(io_err(format!("writing whiteout {name}")))?,
            }
            continue;
        }

        let target = root.join(&rel);
        pool.settle(&target)?;
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0) as i64;
        let existing = fs::symlink_metadata(&target).ok();
        if kind.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    remove_existing(&target)
                        .map_err(io_err(format!("replacing {}", target.display())))?;
                    create_dir(&target)
                        .map_err(io_err(format!("creating {}", target.display())))?;
                }
                None => {
                    create_dir(&target).map_err(io_err(format!("creating {}", target.display())))?
                }
            }
            dirs.insert(
                target.clone(),
                DirMeta {
                    mode,
                    uid,
                    gid,
                    mtime,
                },
            );
            apply_xattrs(&mut entry, &target, opts, what)?;
            continue;
        }
        if existing.is_some() {
            forget(&mut known, &target);
            remove_existing(&target).map_err(io_err(format!("replacing {}", target.display())))?;
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse
                if entry.size() <= SMALL_FILE =>
            {
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| invalid(what, format!("reading {}: {e}", rel.display())))?;
                stats.bytes += data.len() as u64;
                pool.submit(FileJob {
                    target: target.clone(),
                    data,
                    mode,
                    owner: opts.owners.then_some((uid as u32, gid as u32)),
                    mtime,
                    xattrs: collect_xattrs(&mut entry, opts),
                })?;
                continue;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&target)
                    .map_err(io_err(format!("creating {}", target.display())))?;
                loop {
                    let n = entry
                        .read(&mut buf)
                        .map_err(|e| invalid(what, format!("reading {}: {e}", rel.display())))?;
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n])
                        .map_err(io_err(format!("writing {}", target.display())))?;
                    stats.bytes += n as u64;
                }
                // Metadata through the open file: no more path lookups for the
                // commonest entry. Owner before mode (chown clears set-id bits).
                if opts.owners {
                    std::os::unix::fs::fchown(&file, Some(uid as u32), Some(gid as u32))
                        .map_err(|e| owner_error(&target, uid, gid, e))?;
                }
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err(format!("setting the mode of {}", target.display())))?;
                apply_xattrs(&mut entry, &target, opts, what)?;
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64);
                file.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
                    .map_err(io_err(format!("setting the times of {}", target.display())))?;
                continue;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(|e| invalid(what, format!("bad symlink {}: {e}", rel.display())))?
                    .ok_or_else(|| {
                        invalid(what, format!("symlink {} has no target", rel.display()))
                    })?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(io_err(format!("creating symlink {}", target.display())))?;
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(|e| invalid(what, format!("bad hard link {}: {e}", rel.display())))?
                    .ok_or_else(|| {
                        invalid(what, format!("hard link {} has no target", rel.display()))
                    })?
                    .into_owned();
                let source_rel = confine(&link)
                    .map_err(|reason| {
                        invalid(what, format!("hard link {}: {reason}", rel.display()))
                    })?
                    .ok_or_else(|| {
                        invalid(what, format!("hard link {} to the root", rel.display()))
                    })?;
                let source_parent =
                    check_parents(root, source_rel.parent().unwrap_or(Path::new(""))).map_err(
                        |reason| invalid(what, format!("hard link {}: {reason}", rel.display())),
                    )?;
                let source = source_parent.join(source_rel.file_name().unwrap_or_default());
                pool.settle(&source)?;
                match fs::symlink_metadata(&source) {
                    Ok(m) if !m.is_dir() => {}
                    _ => {
                        return Err(invalid(
                            what,
                            format!(
                                "hard link {} points to {}, which is not a file unpacked before it",
                                rel.display(),
                                source_rel.display()
                            ),
                        ))
                    }
                }
                fs::hard_link(&source, &target)
                    .map_err(io_err(format!("linking {}", target.display())))?;
                // A hard link shares its source's metadata: nothing more to apply.
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (sflag, dev) = match kind {
                    tar::EntryType::Char => (nix::sys::stat::SFlag::S_IFCHR, true),
                    tar::EntryType::Block => (nix::sys::stat::SFlag::S_IFBLK, true),
                    _ => (nix::sys::stat::SFlag::S_IFIFO, false),
                };
                if dev && !opts.privileged {
                    tracing::debug!(path = %rel.display(), "skipping device node: needs root");
                    continue;
                }
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                nix::sys::stat::mknod(
                    &target,
                    sflag,
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                    nix::sys::stat::makedev(major.into(), minor.into()),
                )
                .map_err(|e| Error::io(format!("creating {}", target.display()), e.into()))?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => continue,
            other => {
                tracing::debug!(path = %rel.display(), kind = ?other, "skipping unsupported tar entry");
                continue;
            }
        }
        if opts.owners {
            std::os::unix::fs::lchown(&target, Some(uid as u32), Some(gid as u32))
                .map_err(|e| owner_error(&target, uid, gid, e))?;
        }
        if kind != tar::EntryType::Symlink {
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                .map_err(io_err(format!("setting the mode of {}", target.display())))?;
        }
        apply_xattrs(&mut entry, &target, opts, what)?;
        let t = FileTime::from_unix_time(mtime, 0);
        filetime::set_symlink_file_times(&target, t, t)
            .map_err(io_err(format!("setting the times of {}", target.display())))?;
    }
    // Directories last, deepest first: their modes may forbid writing into them and
    // writing into them changes their times.
    let mut dirs: Vec<_> = dirs.into_iter().collect();
    dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
    for (path, meta) in dirs {
        if opts.owners {
            std::os::unix::fs::lchown(&path, Some(meta.uid as u32), Some(meta.gid as u32))
                .map_err(|e| owner_error(&path, meta.uid, meta.gid, e))?;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(meta.mode))
            .map_err(io_err(format!("setting the mode of {}", path.display())))?;
        let t = FileTime::from_unix_time(meta.mtime, 0);
        filetime::set_symlink_file_times(&path, t, t)
            .map_err(io_err(format!("setting the times of {}", path.display())))?;
    }
    Ok(stats)
}

/// A failed chown. In a user namespace `EINVAL` means the owner is not mapped there:
/// the image uses an id beyond the user's subordinate range.
fn owner_error(path: &Path, uid: u64, gid: u64, e: io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EINVAL) {
        return Error::io(
            format!("setting the owner of {} to {uid}:{gid}", path.display()),
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "that id is beyond your subordinate ids (widen your ranges in /etc/subuid \
                 and /etc/subgid, e.g. usermod --add-subuids 100000-165535 \
                 --add-subgids 100000-165535 USER)",
            ),
        );
    }
    Error::io(format!("setting the owner of {}", path.display()), e)
}

fn invalid(what: &str, reason: String) -> Error {
    Error::InvalidImage {
        what: what.to_owned(),
        reason,
    }
}

/// Turns an entry name into a path relative to the root, or says why it cannot be.
/// `None` is the root itself.
pub(crate) fn confine(path: &Path) -> std::result::Result<Option<PathBuf>, String> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                return Err(format!(
                    "entry {:?} has a '..' component and could escape the root filesystem",
                    path
                ))
            }
            Component::Prefix(_) => return Err(format!("entry {:?} is not a Unix path", path)),
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Checks that every existing component of `rel` under `root` is a real directory.
fn check_parents(root: &Path, rel: &Path) -> std::result::Result<PathBuf, String> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!(
                    "{} is a symlink and will not be written through",
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                ))
            }
            Ok(m) if !m.is_dir() => {
                return Err(format!(
                    "{} is not a directory",
                    cur.strip_prefix(root).unwrap_or(&cur).display()
                ))
            }
            _ => {}
        }
    }
    Ok(cur)
}

/// Creates the missing parent directories of an entry, refusing to pass through
/// anything but real directories.
fn ensure_parents(
    root: &Path,
    rel: &Path,
    what: &str,
    known: &mut HashSet<PathBuf>,
) -> Result<PathBuf> {
    let mut cur = root.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        if known.contains(&cur) {
            continue;
        }
        known.insert(cur.clone());
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                known.remove(&cur);
                return Err(invalid(
                    what,
                    format!(
                        "an entry would be written through the symlink {}",
                        cur.strip_prefix(root).unwrap_or(&cur).display()
                    ),
                ));
            }
            Ok(_) => {
                known.remove(&cur);
                return Err(invalid(
                    what,
                    format!(
                        "an entry needs {} to be a directory, but it is a file",
                        cur.strip_prefix(root).unwrap_or(&cur).display()
                    ),
                ));
            }
            Err(_) => {
                create_dir(&cur).map_err(|e| Error::io(format!("creating {}", cur.display()), e))?
            }
        }
    }
    Ok(cur)
}

/// Forgets `path` and everything below it as known directories.
fn forget(known: &mut HashSet<PathBuf>, path: &Path) {
    if !known.is_empty() {
        known.retain(|p| !p.starts_with(path));
    }
}

fn create_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().mode(0o755).create(path)
}

fn create_empty(path: &Path) -> io::Result<()> {
    remove_existing(path)?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o644)
        .open(path)
        .map(drop)
}

/// Removes whatever is at `path` (never following a symlink there).
pub(crate) fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => {
            make_writable(path)?;
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
    }
}

/// Gives the owner write permission on a directory tree so it can be removed even
/// where an image made directories read-only (only matters without root).
pub(crate) fn make_writable(path: &Path) -> io::Result<()> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let meta = fs::symlink_metadata(path)?;
    if meta.is_dir() {
        if meta.mode() & 0o700 != 0o700 {
            fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() | 0o700))?;
        }
        for entry in fs::read_dir(path)? {
            make_writable(&entry?.path())?;
        }
    }
    Ok(())
}

/// True when an image's attribute `name` may be set: never overlayfs' own (an image
/// must not hide or redirect files through them), `trusted.*` only by root, and
/// `security.*` (file capabilities) only where owners are applied (root, or root in a
/// user namespace, where the kernel records them for that namespace).
fn xattr_allowed(name: &str, opts: UnpackOptions) -> bool {
    if name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.") {
        return false;
    }
    if name.starts_with("trusted.") {
        return opts.privileged;
    }
    if name.starts_with("security.") {
        return opts.owners;
    }
    true
}

/// The extended attributes an entry carries that may be set here.
fn collect_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    opts: UnpackOptions,
) -> Vec<(String, Vec<u8>)> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ext in exts.flatten() {
        let Ok(key) = ext.key() else { continue };
        let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
            continue;
        };
        if !xattr_allowed(name, opts) {
            continue;
        }
        out.push((name.to_owned(), ext.value_bytes().to_vec()));
    }
    out
}

fn apply_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    target: &Path,
    opts: UnpackOptions,
    what: &str,
) -> Result<()> {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return Ok(());
    };
    for ext in exts {
        let Ok(ext) = ext else { continue };
        let Ok(key) = ext.key() else { continue };
        let Some(name) = key.strip_prefix("SCHILY.xattr.") else {
            continue;
        };
        if !xattr_allowed(name, opts) {
            continue;
        }
        if let Err(e) = xattr::set(target, name, ext.value_bytes()) {
            // Filesystems without xattr support, or attributes the kernel refuses: the
            // file is still usable; say so rather than failing the whole image.
            tracing::warn!(what, path = %target.display(), attr = name, error = %e, "could not set extended attribute");
        }
    }
    Ok(())
}

/// True when `meta` is an overlayfs whiteout (a 0:0 character device).
pub(crate) fn is_overlay_whiteout(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_char_device() && meta.rdev() == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use locald_test_support::Layer;

    #[test]
    fn confine_paths() {
        let c = |s: &str| confine(Path::new(s));
        assert_eq!(c("a/b").unwrap(), Some(PathBuf::from("a/b")));
        assert_eq!(c("/etc/passwd").unwrap(), Some(PathBuf::from("etc/passwd")));
        assert_eq!(c("./x/./y").unwrap(), Some(PathBuf::from("x/y")));
        assert_eq!(c("./").unwrap(), None);
        assert!(c("../x").is_err());
        assert!(c("a/../../x").is_err());
        assert!(c("a/..").is_err());
    }

    #[test]
    fn marker_format_keeps_whiteouts_as_files_and_applies_them_when_copying() {
        // Runs without root: marker-form layers and a copied snapshot.
        let opts = UnpackOptions {
            whiteouts: WhiteoutFormat::Marker,
            owners: false,
            privileged: false,
        };
        let dir = tempfile::tempdir().unwrap();
        let (l1, l2, out) = (
            dir.path().join("l1"),
            dir.path().join("l2"),
            dir.path().join("out"),
        );
        for d in [&l1, &l2, &out] {
            fs::create_dir(d).unwrap();
        }
        let lower = Layer::new()
            .dir("d")
            .file("d/a", "a")
            .file("d/b", "b")
            .file("gone", "x")
            .dir("o")
            .file("o/old", "o");
        let upper = Layer::new()
            .whiteout("gone")
            .whiteout("d/a")
            .opaque("o")
            .file("o/new", "n");
        unpack(&lower.tar()[..], &l1, "l1", opts).unwrap();
        unpack(&upper.tar()[..], &l2, "l2", opts).unwrap();
        assert!(l2.join(".wh.gone").is_file());
        assert!(l2.join("o/.wh..wh..opq").is_file());
        crate::image::snapshot::apply_layer(&l1, &out, WhiteoutFormat::Marker).unwrap();
        crate::image::snapshot::apply_layer(&l2, &out, WhiteoutFormat::Marker).unwrap();
        let mut names: Vec<String> = Vec::new();
        for e in walk(&out) {
            names.push(e.strip_prefix(&out).unwrap().display().to_string());
        }
        names.sort();
        assert_eq!(names, ["d", "d/b", "o", "o/new"]);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.clone());
            if p.is_dir() {
                out.extend(walk(&p));
            }
        }
        out
    }

    #[test]
    fn a_file_replacing_a_symlink_does_not_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        fs::write(&victim, "safe").unwrap();
        let layer = Layer::new()
            .symlink("link", victim.to_str().unwrap())
            .file("link", "replaced");
        let opts = UnpackOptions {
            whiteouts: WhiteoutFormat::Marker,
            owners: false,
            privileged: false,
        };
        unpack(&layer.tar()[..], dir.path(), "l", opts).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "safe");
        assert_eq!(
            fs::read_to_string(dir.path().join("link")).unwrap(),
            "replaced"
        );
        assert!(!fs::symlink_metadata(dir.path().join("link"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
