//! A container's root filesystem made from an image's unpacked layers: an overlayfs
//! mount (no copying), or a copy of the layers applied in order where overlayfs cannot
//! be used. Both give the same tree.

use std::{
    collections::HashMap,
    fs, io,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

use filetime::FileTime;
use locald_core::{Error, Result};

use super::unpack::{
    is_overlay_whiteout, make_writable, remove_existing, WhiteoutFormat, OPAQUE_MARKER,
    WHITEOUT_PREFIX,
};

/// How to build a snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SnapshotMode {
    /// overlayfs where it works, else a copy.
    #[default]
    Auto,
    /// overlayfs only.
    Overlay,
    /// A full copy of the layers applied in order.
    Copy,
}

impl SnapshotMode {
    /// The mode's name: `auto`, `overlay` or `copy`.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Auto => "auto",
            SnapshotMode::Overlay => "overlay",
            SnapshotMode::Copy => "copy",
        }
    }
}

impl std::fmt::Display for SnapshotMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SnapshotMode {
    type Err = Error;

    /// Parses `auto`, `overlay` or `copy`.
    fn from_str(s: &str) -> Result<SnapshotMode> {
        match s {
            "auto" => Ok(SnapshotMode::Auto),
            "overlay" => Ok(SnapshotMode::Overlay),
            "copy" => Ok(SnapshotMode::Copy),
            _ => Err(Error::invalid(
                "snapshot mode",
                s,
                "expected auto, overlay or copy",
            )),
        }
    }
}

/// One layer of a snapshot: its unpacked directory and how its whiteouts are stored.
#[derive(Debug, Clone)]
pub struct LayerDir {
    /// The unpacked layer.
    pub path: PathBuf,
    /// How whiteouts are stored in it.
    pub whiteouts: WhiteoutFormat,
}

/// A writable root filesystem over an image's layers.
#[derive(Debug)]
pub struct Snapshot {
    dir: PathBuf,
    rootfs: PathBuf,
    overlay: bool,
}

impl Snapshot {
    /// Builds a snapshot of `layers` (bottom first) in the empty or missing directory
    /// `dir`. On failure nothing is left mounted and `dir` is removed.
    pub fn create(layers: &[LayerDir], dir: &Path, mode: SnapshotMode) -> Result<Snapshot> {
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let result = Self::create_in(layers, dir, mode);
        if result.is_err() {
            let _ = remove_existing(dir);
        }
        result
    }

    /// Builds a snapshot of `layers` (bottom first) as `rootfs/`, `upper/` and `work/`
    /// inside the existing directory `dir`, which may hold other files (a container's
    /// state directory). On failure nothing is left mounted and only those three are
    /// removed; [`Snapshot::remove_in`] undoes a success.
    pub(crate) fn create_in_place(
        layers: &[LayerDir],
        dir: &Path,
        mode: SnapshotMode,
    ) -> Result<Snapshot> {
        let result = Self::create_in(layers, dir, mode);
        if result.is_err() {
            let _ = Self::remove_in(dir);
        }
        result
    }

    /// Unmounts the snapshot made in `dir` by [`Snapshot::create_in_place`] and removes
    /// its `rootfs/`, `upper/` and `work/`, leaving the rest of `dir` alone. Nothing is
    /// deleted through a mount that could not be undone.
    pub(crate) fn remove_in(dir: &Path) -> Result<()> {
        unmount(&dir.join("rootfs"))?;
        for sub in ["rootfs", "upper", "work"] {
            let path = dir.join(sub);
            remove_existing(&path)
                .map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
        }
        Ok(())
    }

    fn create_in(layers: &[LayerDir], dir: &Path, mode: SnapshotMode) -> Result<Snapshot> {
        let rootfs = dir.join("rootfs");
        let overlay_ok = layers.iter().all(|l| l.whiteouts.is_overlay()) && !layers.is_empty();
        if mode != SnapshotMode::Copy {
            if !overlay_ok && mode == SnapshotMode::Overlay {
                return Err(Error::io(
                    "mounting overlayfs",
                    io::Error::other("the layers were unpacked without root, in marker form"),
                ));
            }
            if overlay_ok {
                match mount_overlay(layers, dir, &rootfs) {
                    Ok(()) => {
                        return Ok(Snapshot {
                            dir: dir.to_owned(),
                            rootfs,
                            overlay: true,
                        })
                    }
                    Err(e) if mode == SnapshotMode::Overlay => return Err(e),
                    Err(e) => {
                        tracing::info!(error = %e, "overlayfs unavailable, copying layers");
                        for sub in ["upper", "work"] {
                            let _ = remove_existing(&dir.join(sub));
                        }
                        let _ = remove_existing(&rootfs);
                    }
                }
            }
        }
        fs::create_dir(&rootfs)
            .map_err(|e| Error::io(format!("creating {}", rootfs.display()), e))?;
        for layer in layers {
            apply_layer(&layer.path, &rootfs, layer.whiteouts)?;
        }
        Ok(Snapshot {
            dir: dir.to_owned(),
            rootfs,
            overlay: false,
        })
    }

    /// The root filesystem.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }

    /// True when the root filesystem is an overlayfs mount.
    pub fn is_overlay(&self) -> bool {
        self.overlay
    }

    /// Unmounts and deletes the snapshot.
    pub fn remove(self) -> Result<()> {
        remove_snapshot_dir(&self.dir)
    }
}

/// Unmounts (if mounted) and deletes a snapshot directory made by [`Snapshot::create`],
/// for cleanups that only know the path.
pub fn remove_snapshot_dir(dir: &Path) -> Result<()> {
    unmount(&dir.join("rootfs"))?;
    remove_existing(dir).map_err(|e| Error::io(format!("removing {}", dir.display()), e))
}

/// Unmounts whatever is mounted on `rootfs` (stacked mounts included). A bind mount
/// from the same filesystem has the same device number as its parent, so the kernel is
/// asked instead: `EINVAL` means nothing (more) is mounted there.
fn unmount(rootfs: &Path) -> Result<()> {
    use nix::{errno::Errno, mount::MntFlags};
    loop {
        match nix::mount::umount2(rootfs, MntFlags::empty()) {
            Ok(()) => continue,
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) => {
                tracing::debug!(path = %rootfs.display(), "umount busy, detaching");
                nix::mount::umount2(rootfs, MntFlags::MNT_DETACH)
                    .map_err(|e| Error::io(format!("unmounting {}", rootfs.display()), e.into()))?;
            }
            Err(e) => {
                return Err(Error::io(
                    format!("unmounting {}", rootfs.display()),
                    e.into(),
                ))
            }
        }
    }
}

fn mount_overlay(layers: &[LayerDir], dir: &Path, rootfs: &Path) -> Result<()> {
    let upper = dir.join("upper");
    let work = dir.join("work");
    for d in [&upper, &work, &rootfs.to_path_buf()] {
        fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
    }
    // overlayfs lists the top layer first; `:` and `,` in a path are escaped.
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| {
            l.path
                .display()
                .to_string()
                .replace(':', "\\:")
                .replace(',', "\\,")
        })
        .collect();
    let mut options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    // Layers are shared between containers; the inode index would tie each lower
    // directory to the first upper directory that used it.
    if Path::new("/sys/module/overlay/parameters/index").exists() {
        options.push_str(",index=off");
    }
    // Layers a user who is not root unpacked mark opaque directories with
    // `user.overlay.opaque`, which overlayfs reads (and writes in the upper layer)
    // with `userxattr` (Linux 5.11+, the same kernels that mount it in a user
    // namespace).
    if layers
        .iter()
        .any(|l| l.whiteouts == WhiteoutFormat::UserOverlay)
    {
        options.push_str(",userxattr");
    }
    if options.len() >= 4000 {
        return Err(Error::io(
            "mounting overlayfs",
            io::Error::other(format!(
                "{} layers make the mount options too long",
                layers.len()
            )),
        ));
    }
    let mount = |options: &str| {
        nix::mount::mount(
            Some("overlay"),
            rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options),
        )
    };
    // `volatile` (Linux 5.10+): the upper layer is never synced to disk. A snapshot's
    // writes are scratch data; syncing them made every container exit wait for the
    // host's whole writeback queue. Older kernels refuse the option.
    mount(&format!("{options},volatile"))
        .or_else(|_| mount(&options))
        .map_err(|e| {
            Error::io(
                format!("mounting overlayfs at {}", rootfs.display()),
                e.into(),
            )
        })
}

/// Applies one unpacked layer onto `target` the way overlayfs would show it.
pub(crate) fn apply_layer(layer: &Path, target: &Path, format: WhiteoutFormat) -> Result<()> {
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    apply_dir(layer, target, format, &mut links, &mut dirs)?;
    // Directory metadata last, deepest first.
    dirs.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.components().count()));
    for (path, from, meta) in dirs {
        copy_metadata(&from, &path, &meta)?;
    }
    Ok(())
}

fn io_at(path: &Path, what: &str) -> impl FnOnce(io::Error) -> Error {
    let ctx = format!("{what} {}", path.display());
    move |e| Error::io(ctx, e)
}

fn apply_dir(
    src: &Path,
    dst: &Path,
    format: WhiteoutFormat,
    links: &mut HashMap<(u64, u64), PathBuf>,
    dirs: &mut Vec<(PathBuf, PathBuf, fs::Metadata)>,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(src)
        .map_err(io_at(src, "reading"))?
        .collect::<io::Result<_>>()
        .map_err(io_at(src, "reading"))?;
    entries.sort_by_key(|e| e.file_name());
    let opaque = match format.opaque_xattr() {
        Some(attr) => xattr::get(src, attr)
            .ok()
            .flatten()
            .is_some_and(|v| v == b"y"),
        None => src.join(OPAQUE_MARKER).exists(),
    };
    if opaque {
        // Everything the lower layers put here is hidden.
        for existing in fs::read_dir(dst).map_err(io_at(dst, "reading"))? {
            let existing = existing.map_err(io_at(dst, "reading"))?;
            remove_existing(&existing.path()).map_err(io_at(&existing.path(), "removing"))?;
        }
    }
    for entry in entries {
        let name = entry.file_name();
        let from = entry.path();
        let meta = fs::symlink_metadata(&from).map_err(io_at(&from, "reading"))?;
        let name_str = name.to_string_lossy();
        if format == WhiteoutFormat::Marker {
            if name_str == OPAQUE_MARKER {
                continue;
            }
            if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
                let gone = dst.join(hidden);
                remove_existing(&gone).map_err(io_at(&gone, "removing"))?;
                continue;
            }
        } else if is_overlay_whiteout(&meta) {
            let gone = dst.join(&name);
            remove_existing(&gone).map_err(io_at(&gone, "removing"))?;
            continue;
        }
        let to = dst.join(&name);
        let existing = fs::symlink_metadata(&to).ok();
        if meta.is_dir() {
            match existing {
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    remove_existing(&to).map_err(io_at(&to, "replacing"))?;
                    fs::create_dir(&to).map_err(io_at(&to, "creating"))?;
                }
                None => fs::create_dir(&to).map_err(io_at(&to, "creating"))?,
            }
            make_writable(&to).map_err(io_at(&to, "opening"))?;
            apply_dir(&from, &to, format, links, dirs)?;
            dirs.push((to, from, meta));
            continue;
        }
        if existing.is_some() {
            remove_existing(&to).map_err(io_at(&to, "replacing"))?;
        }
        if meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                fs::hard_link(first, &to).map_err(io_at(&to, "linking"))?;
                continue;
            }
            links.insert((meta.dev(), meta.ino()), to.clone());
        }
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(io_at(&from, "reading"))?;
            std::os::unix::fs::symlink(target, &to).map_err(io_at(&to, "creating"))?;
        } else if ft.is_file() {
            copy_file(&from, &to)?;
        } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() || ft.is_socket() {
            let kind = nix::sys::stat::SFlag::from_bits_truncate(meta.mode() & libc::S_IFMT);
            nix::sys::stat::mknod(
                &to,
                kind,
                nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o7777),
                meta.rdev(),
            )
            .map_err(|e| Error::io(format!("creating {}", to.display()), e.into()))?;
        }
        copy_metadata(&from, &to, &meta)?;
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = fs::File::open(from).map_err(io_at(from, "opening"))?;
    let mut dst = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)
        .map_err(io_at(to, "creating"))?;
    io::copy(&mut src, &mut dst).map_err(io_at(to, "writing"))?;
    Ok(())
}

fn copy_metadata(from: &Path, path: &Path, meta: &fs::Metadata) -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid()))
            .map_err(io_at(path, "setting the owner of"))?;
    }
    if !meta.file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_at(path, "setting the mode of"))?;
    }
    if let Ok(names) = xattr::list(from) {
        for name in names {
            let keep = name
                .to_str()
                .is_some_and(|n| !n.starts_with("trusted.overlay."));
            if keep {
                if let Ok(Some(value)) = xattr::get(from, &name) {
                    if let Err(e) = xattr::set(path, &name, &value) {
                        tracing::warn!(path = %path.display(), attr = ?name, error = %e, "could not copy extended attribute");
                    }
                }
            }
        }
    }
    let mtime = FileTime::from_last_modification_time(meta);
    filetime::set_symlink_file_times(path, mtime, mtime)
        .map_err(io_at(path, "setting the times of"))
}
