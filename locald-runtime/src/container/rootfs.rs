//! Where a container's root filesystem comes from, and the overlayfs snapshot each
//! container gets over it.
//!
//! The seam with the image store is [`resolve_source`]: it turns a
//! [`ContainerSource`] into read-only lower directories (topmost first) and the
//! image's [`ImageConfig`]. The lower directories are never written: every container
//! writes into its own overlay upper directory under its state directory, removed
//! with it.

use std::{
    io,
    path::{Component, Path, PathBuf},
};

use locald_core::{ContainerSource, Error, ImageRef, Result};
use oci_spec::runtime::Mount;
use serde::{Deserialize, Serialize};

use crate::image::{ImageStore, LayerDir, Snapshot, SnapshotMode, WhiteoutFormat};
use crate::ImageConfig;

/// A resolved root filesystem: the directories to stack, topmost first, and how to
/// run the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RootfsSource {
    /// Read-only lower directories, topmost first.
    pub(crate) lowers: Vec<PathBuf>,
    /// The image's run configuration (empty for a plain directory).
    pub(crate) config: ImageConfig,
    /// The image it came from, if any.
    pub(crate) image: Option<ImageRef>,
    /// How the layers keep whiteouts: marker files (only the copying snapshot can stack
    /// them), overlayfs' root form, or its `userxattr` form (unpacked by a user who is
    /// not root). A store's layers share one form (layers without whiteouts fit all).
    #[serde(default = "overlay_form")]
    pub(crate) whiteouts: WhiteoutFormat,
}

/// The form of a plain directory's whiteouts (it has none) and of a root's layers.
pub(crate) fn overlay_form() -> WhiteoutFormat {
    WhiteoutFormat::Overlay
}

/// Turns a container source into lower directories and an image config; `images`
/// hands out the runtime's image store (only an image source asks for it).
pub(crate) fn resolve_source<'a>(
    source: &ContainerSource,
    images: impl FnOnce() -> Result<&'a ImageStore>,
) -> Result<RootfsSource> {
    match source {
        ContainerSource::Rootfs(dir) => {
            let meta = std::fs::metadata(dir).map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    Error::NotFound {
                        kind: "root filesystem",
                        name: dir.display().to_string(),
                    }
                } else {
                    Error::io(format!("reading root filesystem {}", dir.display()), e)
                }
            })?;
            if !meta.is_dir() {
                return Err(Error::invalid(
                    "root filesystem",
                    dir.display().to_string(),
                    "not a directory",
                ));
            }
            Ok(RootfsSource {
                lowers: vec![dir.clone()],
                config: ImageConfig::default(),
                image: None,
                whiteouts: WhiteoutFormat::Overlay,
            })
        }
        ContainerSource::Image(image) => image_layers(images()?, image),
        _ => Err(Error::invalid(
            "container source",
            format!("{source:?}"),
            "not supported by this runtime",
        )),
    }
}

/// The unpacked layers (topmost first) and run configuration of a stored image.
///
/// The image is looked up in `store`; its layers must hold overlayfs-form whiteouts
/// (0/0 character devices and `trusted.overlay.opaque`), as a pull by root makes them.
pub(crate) fn image_layers(store: &ImageStore, image: &ImageRef) -> Result<RootfsSource> {
    let resolved = store.resolve(image)?;
    // The layers' common form: marker files win (only a copy stacks them), then the
    // `userxattr` form; layers without whiteouts are recorded in root's form.
    let form = |f: WhiteoutFormat| resolved.layers.iter().find(|l| l.whiteouts == f);
    let marker = form(WhiteoutFormat::Marker);
    let whiteouts = if marker.is_some() {
        WhiteoutFormat::Marker
    } else if form(WhiteoutFormat::UserOverlay).is_some() {
        WhiteoutFormat::UserOverlay
    } else {
        WhiteoutFormat::Overlay
    };
    // A user who is not root may stack marker layers by copying; root needs overlayfs.
    if let Some(layer) = marker.filter(|_| nix::unistd::geteuid().is_root()) {
        return Err(Error::InvalidImage {
            what: format!("layer {}", layer.path.display()),
            reason: format!(
                "it was unpacked without root, so overlayfs cannot use it; run `locald rmi {0}`, `locald image prune` and pull {0} again as root",
                image.familiar()
            ),
        });
    }
    Ok(RootfsSource {
        lowers: resolved.layers.into_iter().rev().map(|l| l.path).collect(),
        config: resolved.config,
        image: Some(image.clone()),
        whiteouts,
    })
}

/// The topmost layer's entry for `rel`, or `None` when absent or whited out (an
/// overlayfs whiteout is a 0/0 character device; opaque directories are not
/// interpreted).
fn lookup_layers(lowers: &[PathBuf], rel: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for lower in lowers {
        let p = lower.join(rel);
        if let Ok(meta) = std::fs::symlink_metadata(&p) {
            if meta.file_type().is_char_device() && meta.rdev() == 0 {
                return None;
            }
            return Some(p);
        }
    }
    None
}

/// Finds `path` (absolute, inside the container) in a stack of layers, following
/// symlinks inside the stack.
pub(crate) fn find_in_layers(lowers: &[PathBuf], path: &Path) -> Option<PathBuf> {
    let mut current = PathBuf::from("/");
    let mut pending: Vec<PathBuf> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == Path::new("..") {
            current.pop();
            continue;
        }
        let next = current.join(&part);
        let rel = next.strip_prefix("/").unwrap_or(&next);
        let host = lookup_layers(lowers, rel)?;
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            for c in target.components().rev() {
                match c {
                    Component::Normal(n) => pending.push(PathBuf::from(n)),
                    Component::ParentDir => pending.push(PathBuf::from("..")),
                    _ => {}
                }
            }
        } else {
            current = next;
        }
    }
    let rel = current.strip_prefix("/").unwrap_or(&current).to_owned();
    lookup_layers(lowers, &rel)
}

/// Checks that the container's program exists in its root filesystem, searching
/// `PATH` (from the container's environment) for a bare name, as `execvp` would.
pub(crate) fn check_program(
    lowers: &[PathBuf],
    program: &str,
    env: &[String],
    cwd: &str,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    let found = if program.contains('/') {
        let path = Path::new(cwd).join(program);
        find_in_layers(lowers, &path)
            .filter(|p| is_exec(p))
            .is_some()
    } else {
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(super::config::DEFAULT_PATH);
        path.split(':').filter(|d| d.starts_with('/')).any(|dir| {
            find_in_layers(lowers, &Path::new(dir).join(program))
                .filter(|p| is_exec(p))
                .is_some()
        })
    };
    if found {
        Ok(())
    } else {
        Err(Error::ProgramNotFound {
            program: program.to_owned(),
        })
    }
}

/// The environment variable that carries the snapshot mode to the shim (and lets a
/// CLI user force one): `auto` (default), `overlay` or `copy`.
pub(crate) const SNAPSHOT_ENV: &str = "LOCALD_SNAPSHOT";

/// The snapshot mode named by [`SNAPSHOT_ENV`], or `auto` when unset.
pub(crate) fn snapshot_mode_from_env() -> Result<SnapshotMode> {
    match std::env::var(SNAPSHOT_ENV) {
        Err(_) => Ok(SnapshotMode::Auto),
        Ok(v) => v
            .parse()
            .map_err(|_| Error::invalid(SNAPSHOT_ENV, v, "expected auto, overlay or copy")),
    }
}

/// What [`mount_rootfs`] put on `state_dir/rootfs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MountedRoot {
    /// A read-only bind mount of the caller's own directory, which already holds every
    /// mount point: nothing is ever written to it.
    Bind,
    /// The container's own snapshot (overlay upper or copy, in the state directory):
    /// what is created in it stays with the container.
    Snapshot,
}

/// Mounts the container's root on `state_dir/rootfs`: an [`image::Snapshot`] of
/// `lowers` (topmost first) with its upper and work directories in the state
/// directory, in the mode [`SNAPSHOT_ENV`] names.
///
/// A read-only container over a single plain directory (not an `image`'s layer) that
/// already holds every mount point of `mounts` gets a read-only bind mount instead
/// (nothing will be written, so nothing needs an upper layer). Anything else gets a
/// snapshot, because mount points that are missing (`/etc/hosts`, ...) are created in
/// the root before the container starts, and they must land neither in the image
/// store (layers are shared between containers) nor in a caller's directory. On
/// failure nothing is left mounted.
///
/// [`image::Snapshot`]: crate::image::Snapshot
pub(crate) fn mount_rootfs(
    lowers: &[PathBuf],
    state_dir: &Path,
    target: &Path,
    read_only: bool,
    image: bool,
    whiteouts: WhiteoutFormat,
    mounts: &[Mount],
) -> Result<MountedRoot> {
    use nix::mount::{mount, MsFlags};
    debug_assert_eq!(target, state_dir.join("rootfs"));
    if let [dir] = lowers {
        if read_only && !image && has_mount_points(dir, mounts) {
            std::fs::create_dir_all(target)
                .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
            return mount(
                Some(dir),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map(|()| MountedRoot::Bind)
            .map_err(|e| Error::io(format!("bind-mounting {}", dir.display()), e.into()));
        }
    }
    let mode = snapshot_mode_from_env()?;
    // The lowers come from `resolve_source`: a plain directory, or image layers that
    // were checked to hold overlayfs-form whiteouts.
    let layers: Vec<LayerDir> = lowers
        .iter()
        .rev()
        .map(|path| LayerDir {
            path: path.clone(),
            whiteouts,
        })
        .collect();
    Snapshot::create_in_place(&layers, state_dir, mode).map(|_| MountedRoot::Snapshot)
}

/// The mount points the root itself must hold: every destination of `mounts` except
/// those below an earlier one (`/dev/pts` under the `/dev` tmpfs), which are made
/// inside that mount, which the container owns.
fn own_mount_points(mounts: &[Mount]) -> impl Iterator<Item = &Mount> {
    mounts.iter().enumerate().filter_map(|(i, m)| {
        let dest = m.destination();
        (!mounts[..i]
            .iter()
            .any(|earlier| dest.starts_with(earlier.destination())))
        .then_some(m)
    })
}

/// True when every mount point of `mounts` resolves inside `dir` (as in the container).
fn has_mount_points(dir: &Path, mounts: &[Mount]) -> bool {
    let Ok(root) = pathrs::Root::open(dir) else {
        return false;
    };
    own_mount_points(mounts).all(|m| root.resolve(m.destination()).is_ok())
}

/// Creates, as the caller, each mount point of `mounts` that the container's root
/// `rootfs` lacks, as the runtime library would: a directory, or an empty file for a
/// bind mount of a file (mode 0755 / 0644, owned by the caller).
///
/// For a container whose root is mapped to an unprivileged host uid (Safe Mode's user
/// namespace): the library makes these from inside the user namespace, where the
/// snapshot's directories (owned by host root) are not writable, and fails with
/// "failed to prepare rootfs". Call it only for a [`MountedRoot::Snapshot`], so that
/// nothing is written but the container's own upper layer (or copy).
///
/// Paths are resolved inside `rootfs` with `pathrs` (`openat2` with
/// `RESOLVE_IN_ROOT`), the resolver the library itself uses: an image's symlinks
/// (`/etc -> /../../x`, or an absolute host path) resolve as they will inside the
/// container, and nothing outside `rootfs` is ever created. A symlink that leads
/// nowhere inside the root is an error, as it is for the library.
pub(crate) fn create_mount_points(rootfs: &Path, mounts: &[Mount]) -> Result<()> {
    use pathrs::flags::OpenFlags;
    use std::os::unix::fs::PermissionsExt;
    let root = pathrs::Root::open(rootfs).map_err(|e| {
        Error::io(
            format!("opening the root filesystem {}", rootfs.display()),
            io::Error::other(e),
        )
    })?;
    let dir_mode = std::fs::Permissions::from_mode(0o755);
    for m in own_mount_points(mounts) {
        let dest = m.destination();
        let err = |e: pathrs::error::Error| {
            Error::io(
                format!(
                    "creating the mount point {} in the container",
                    dest.display()
                ),
                io::Error::other(e),
            )
        };
        // The library's own test, so both agree on what is a bind mount.
        let file = libcontainer::rootfs::utils::is_bind(m)
            && m.source()
                .as_deref()
                .and_then(|s| std::fs::metadata(s).ok())
                .is_some_and(|meta| !meta.is_dir());
        if !file {
            root.mkdir_all(dest, &dir_mode).map_err(err)?;
            continue;
        }
        if let Some(parent) = dest.parent() {
            root.mkdir_all(parent, &dir_mode).map_err(err)?;
        }
        let created = root.create_file(
            dest,
            OpenFlags::O_EXCL | OpenFlags::O_CREAT | OpenFlags::O_NOFOLLOW | OpenFlags::O_CLOEXEC,
            &std::fs::Permissions::from_mode(0o644),
        );
        if let Err(e) = created {
            // Already there (a file, or a symlink to one inside the root): fine.
            root.resolve(dest).map(drop).map_err(|_| err(e))?;
        }
    }
    Ok(())
}

/// Unmounts the container's root (if mounted) and removes the snapshot's directories;
/// nothing is deleted through a mount that could not be undone.
pub(crate) fn unmount_rootfs(state_dir: &Path) {
    if let Err(e) = Snapshot::remove_in(state_dir) {
        tracing::warn!(error = %e, "removing a container's root filesystem");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn finds_through_absolute_symlinks_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/busybox"), b"").unwrap();
        symlink("/bin/busybox", r.join("bin/sh")).unwrap();
        symlink("bin", r.join("usrbin")).unwrap();
        let lowers = vec![r.to_owned()];
        assert_eq!(
            find_in_layers(&lowers, Path::new("/bin/sh")),
            Some(r.join("bin/busybox"))
        );
        assert_eq!(
            find_in_layers(&lowers, Path::new("/usrbin/sh")),
            Some(r.join("bin/busybox"))
        );
        assert_eq!(find_in_layers(&lowers, Path::new("/nope")), None);
        // An upper layer's whiteout hides the lower layer's file (making one needs root).
        if testing_is_root() {
            let upper = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(upper.path().join("bin")).unwrap();
            nix::sys::stat::mknod(
                &upper.path().join("bin/busybox"),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .unwrap();
            let stack = vec![upper.path().to_owned(), r.to_owned()];
            assert_eq!(find_in_layers(&stack, Path::new("/bin/sh")), None);
        }
    }

    fn testing_is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    fn mounts(source_file: &Path) -> Vec<Mount> {
        let m = |dest: &str, typ: &str, source: &Path| {
            oci_spec::runtime::MountBuilder::default()
                .destination(dest)
                .typ(typ)
                .source(source)
                .options(vec!["rbind".to_owned()])
                .build()
                .unwrap()
        };
        vec![
            m("/proc", "proc", Path::new("proc")),
            m("/dev", "tmpfs", Path::new("tmpfs")),
            m("/dev/pts", "devpts", Path::new("devpts")),
            m("/etc/hosts", "bind", source_file),
            m("/data/volume", "bind", source_file.parent().unwrap()),
        ]
    }

    #[test]
    fn mount_points_are_made_inside_the_root_only() {
        let state = tempfile::tempdir().unwrap();
        let hosts = state.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        let mounts = mounts(&hosts);
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert!(!has_mount_points(r, &mounts));
        // /etc leads out of the root, through `..` and as an absolute host path.
        let target = outside.path().to_str().unwrap();
        symlink(format!("../../../../../../..{target}"), r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join(target.trim_start_matches('/'))).unwrap();
        create_mount_points(r, &mounts).unwrap();
        let etc = r.join(target.trim_start_matches('/'));
        assert!(
            etc.join("hosts").is_file(),
            "a file for a file's bind mount"
        );
        assert_eq!(std::fs::metadata(etc.join("hosts")).unwrap().len(), 0);
        assert!(r.join("proc").is_dir() && r.join("dev").is_dir());
        assert!(
            r.join("data/volume").is_dir(),
            "a directory for a directory's"
        );
        // Below the /dev tmpfs: made in that mount by the runtime library.
        assert!(!r.join("dev/pts").exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert!(has_mount_points(r, &mounts));
        // Again: everything is there, nothing changes.
        create_mount_points(r, &mounts).unwrap();

        // A link whose target is missing inside the root: an error, nothing outside.
        let root = tempfile::tempdir().unwrap();
        symlink(target, root.path().join("etc")).unwrap();
        let err = create_mount_points(root.path(), &mounts).unwrap_err();
        assert!(err.to_string().contains("mount point /etc/hosts"), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_image_not_in_the_store_is_not_found() {
        let home = tempfile::tempdir().unwrap();
        let store = ImageStore::open_home(home.path()).unwrap();
        let source = ContainerSource::Image("busybox".parse().unwrap());
        assert_eq!(
            resolve_source(&source, || Ok(&store))
                .unwrap_err()
                .to_string(),
            "no such image: busybox:latest"
        );
    }
}
