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
    if let Some(layer) = resolved
        .layers
        .iter()
        .find(|l| l.whiteouts != crate::image::WhiteoutFormat::Overlay)
    {
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

/// Mounts the container's root on `state_dir/rootfs`: an [`image::Snapshot`] of
/// `lowers` (topmost first) with its upper and work directories in the state
/// directory, in the mode [`SNAPSHOT_ENV`] names. A read-only container over a single
/// directory gets a read-only bind mount instead (nothing can be written, so nothing
/// needs an upper layer). On failure nothing is left mounted.
///
/// [`image::Snapshot`]: crate::image::Snapshot
pub(crate) fn mount_rootfs(
    lowers: &[PathBuf],
    state_dir: &Path,
    target: &Path,
    read_only: bool,
) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    debug_assert_eq!(target, state_dir.join("rootfs"));
    if read_only && lowers.len() == 1 {
        std::fs::create_dir_all(target)
            .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
        return mount(
            Some(&lowers[0]),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| Error::io(format!("bind-mounting {}", lowers[0].display()), e.into()));
    }
    let mode = snapshot_mode_from_env()?;
    // The lowers come from `resolve_source`: a plain directory, or image layers that
    // were checked to hold overlayfs-form whiteouts.
    let layers: Vec<LayerDir> = lowers
        .iter()
        .rev()
        .map(|path| LayerDir {
            path: path.clone(),
            whiteouts: WhiteoutFormat::Overlay,
        })
        .collect();
    Snapshot::create_in_place(&layers, state_dir, mode).map(drop)
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
