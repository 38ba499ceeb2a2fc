//! The on-disk image store under `$LOCALD_HOME/images`:
//!
//! ```text
//! blobs/sha256/<hex>     manifests, configs and compressed layers, by digest
//! layers/<hex>/          each layer unpacked once, by its uncompressed digest (diff id)
//! layers/<hex>.json      how that layer was unpacked
//! index.json             reference -> image record
//! tmp/                   work in progress; never read as content
//! locks/                 one lock file per blob or layer being fetched, and the index's
//! ```
//!
//! Every write is a temp file or directory renamed into place, so a crash leaves no
//! half-written blob, layer or record visible.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs::{self, File},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use locald_core::{Error, ImageRef, ImageSummary, PruneReport, Result};
use serde::{Deserialize, Serialize};

use super::{digest::Digest, unpack::WhiteoutFormat};

/// One layer of a stored image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The compressed blob's digest.
    pub blob: Digest,
    /// The uncompressed tar's digest (the config's diff id).
    pub diff_id: Digest,
    /// The blob's size.
    pub size: u64,
    /// The blob's media type.
    pub media_type: String,
}

/// What the store knows of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The manifest digest.
    pub manifest: Digest,
    /// The config digest (the image id).
    pub config: Digest,
    /// Layers, bottom first.
    pub layers: Vec<LayerRecord>,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// When the image was built, if the config says.
    pub created: Option<String>,
}

impl ImageRecord {
    pub(crate) fn summary(&self, reference: ImageRef) -> ImageSummary {
        ImageSummary::new(
            reference,
            self.manifest.to_string(),
            self.config.to_string(),
            self.layers.iter().map(|l| l.size).sum(),
            self.created.clone(),
            self.platform.clone(),
        )
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    version: u32,
    images: BTreeMap<String, ImageRecord>,
}

/// Metadata kept beside an unpacked layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LayerMeta {
    pub(crate) diff_id: Digest,
    pub(crate) whiteouts: WhiteoutFormat,
    pub(crate) entries: u64,
    pub(crate) bytes: u64,
}

/// The image store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An exclusive lock on a file, released on drop.
#[derive(Debug)]
pub(crate) struct Lock {
    _file: nix::fcntl::Flock<File>,
}

impl Store {
    /// The store under `root` (usually `$LOCALD_HOME/images`), created if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store { root: root.into() };
        for dir in ["blobs/sha256", "layers", "tmp", "locks"] {
            let path = store.root.join(dir);
            fs::create_dir_all(&path)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub(crate) fn layer_path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join("layers").join(diff_id.hex())
    }

    fn layer_meta_path(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("layers")
            .join(format!("{}.json", diff_id.hex()))
    }

    pub(crate) fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    pub(crate) fn layer_meta(&self, diff_id: &Digest) -> Option<LayerMeta> {
        let bytes = fs::read(self.layer_meta_path(diff_id)).ok()?;
        let meta: LayerMeta = serde_json::from_slice(&bytes).ok()?;
        self.layer_path(diff_id).is_dir().then_some(meta)
    }

    /// A fresh private directory under `tmp/` on the store's filesystem.
    pub(crate) fn temp_dir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(self.root.join("tmp"))
            .map_err(|e| Error::io("creating a temporary directory in the image store", e))
    }

    /// A fresh temp file under `tmp/`.
    pub(crate) fn temp_file(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(self.root.join("tmp"))
            .map_err(|e| Error::io("creating a temporary file in the image store", e))
    }

    /// Takes the lock named `name`, waiting for whoever holds it.
    pub(crate) fn lock(&self, name: &str) -> Result<Lock> {
        self.flock(name, nix::fcntl::FlockArg::LockExclusive)
    }

    /// Marks a pull (or load, or import) in progress until the lock is dropped: many may
    /// run at once, and [`Store::prune`] waits for all of them (and they for it), so it
    /// never removes what one of them has stored but not yet recorded.
    pub(crate) fn work_lock(&self) -> Result<Lock> {
        self.flock("gc", nix::fcntl::FlockArg::LockShared)
    }

    fn flock(&self, name: &str, arg: nix::fcntl::FlockArg) -> Result<Lock> {
        let path = self.root.join("locks").join(format!("{name}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        nix::fcntl::Flock::lock(file, arg)
            .map(|locked| Lock { _file: locked })
            .map_err(|(_, e)| Error::io(format!("locking {}", path.display()), e.into()))
    }

    /// Stores `bytes` as a blob after checking them against `digest`.
    pub(crate) fn put_blob(&self, digest: &Digest, bytes: &[u8], what: &str) -> Result<()> {
        let actual = Digest::of(bytes);
        if &actual != digest {
            return Err(Error::DigestMismatch {
                what: what.to_owned(),
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut tmp = self.temp_file()?;
        tmp.write_all(bytes)
            .and_then(|_| tmp.as_file().sync_data())
            .map_err(|e| Error::io("writing a blob", e))?;
        self.commit_blob(tmp, digest)
    }

    /// Moves a verified temp file into place as `digest`.
    pub(crate) fn commit_blob(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<()> {
        let path = self.blob_path(digest);
        tmp.persist(&path)
            .map_err(|e| Error::io(format!("storing {}", path.display()), e.error))?;
        Ok(())
    }

    /// Moves a fully unpacked temp directory into place as layer `diff_id`.
    pub(crate) fn commit_layer(&self, tmp: tempfile::TempDir, meta: &LayerMeta) -> Result<()> {
        let path = self.layer_path(&meta.diff_id);
        let tmp_path = tmp.keep();
        if path.exists() {
            // Someone else finished first: theirs is identical.
            let _ = self.remove_tree(&tmp_path);
        } else {
            fs::rename(&tmp_path, &path)
                .map_err(|e| Error::io(format!("storing layer {}", path.display()), e))?;
        }
        write_atomic(
            &self.layer_meta_path(&meta.diff_id),
            &serde_json::to_vec_pretty(meta).expect("layer metadata serializes"),
            &self.root.join("tmp"),
        )
    }

    /// Removes the file or tree at `path`. A user who is not root may find files of
    /// its subordinate ids there (layers unpacked in its user namespace): those are
    /// removed from inside that namespace.
    pub(crate) fn remove_tree(&self, path: &Path) -> Result<()> {
        match super::unpack::remove_existing(path) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                match crate::container::rootless::store_userns() {
                    Some(ns) => crate::container::rootless::remove_tree(path, &ns),
                    None => Err(Error::io(format!("removing {}", path.display()), e)),
                }
            }
            other => other.map_err(|e| Error::io(format!("removing {}", path.display()), e)),
        }
    }

    /// Removes a temporary directory of an unpack that failed (errors only logged: a
    /// later prune removes what is left in `tmp/`).
    pub(crate) fn discard(&self, dir: tempfile::TempDir) {
        let path = dir.keep();
        if let Err(e) = self.remove_tree(&path) {
            tracing::warn!(error = %e, "could not remove a failed unpack's files");
        }
    }

    pub(crate) fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
    }

    fn read_index(&self) -> Result<Index> {
        let path = self.root.join("index.json");
        match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index {
                version: 1,
                images: BTreeMap::new(),
            }),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::io(
                    format!("reading {}", path.display()),
                    io::Error::new(io::ErrorKind::InvalidData, e),
                )
            }),
        }
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        write_atomic(
            &self.root.join("index.json"),
            &serde_json::to_vec_pretty(index).expect("the index serializes"),
            &self.root.join("tmp"),
        )
    }

    /// Records `reference` as naming `record`.
    pub(crate) fn tag(&self, reference: &ImageRef, record: ImageRecord) -> Result<()> {
        let _lock = self.lock("index")?;
        let mut index = self.read_index()?;
        index.version = 1;
        index.images.insert(reference.to_string(), record);
        self.write_index(&index)
    }

    /// The record `reference` names, if any.
    pub fn get(&self, reference: &ImageRef) -> Result<Option<ImageRecord>> {
        Ok(self.read_index()?.images.remove(&reference.to_string()))
    }

    /// Every reference and its image.
    pub fn list(&self) -> Result<Vec<(ImageRef, ImageRecord)>> {
        let index = self.read_index()?;
        Ok(index
            .images
            .into_iter()
            .filter_map(|(r, rec)| ImageRef::parse(&r).ok().map(|r| (r, rec)))
            .collect())
    }

    /// Forgets `reference`; its content stays until [`Store::prune`].
    pub fn remove(&self, reference: &ImageRef) -> Result<ImageRecord> {
        let _lock = self.lock("index")?;
        let mut index = self.read_index()?;
        let record =
            index
                .images
                .remove(&reference.to_string())
                .ok_or_else(|| Error::NotFound {
                    kind: "image",
                    name: reference.familiar(),
                })?;
        self.write_index(&index)?;
        Ok(record)
    }

    /// Removes every blob and layer no reference needs, and leftovers of interrupted
    /// pulls. Waits for running pulls to finish first (they hold the store's work lock).
    pub fn prune(&self) -> Result<PruneReport> {
        let _no_pulls = self.flock("gc", nix::fcntl::FlockArg::LockExclusive)?;
        let _lock = self.lock("index")?;
        let index = self.read_index()?;
        let mut keep_blobs = BTreeSet::new();
        let mut keep_layers = BTreeSet::new();
        for rec in index.images.values() {
            keep_blobs.insert(rec.manifest.hex().to_owned());
            keep_blobs.insert(rec.config.hex().to_owned());
            for l in &rec.layers {
                keep_blobs.insert(l.blob.hex().to_owned());
                keep_layers.insert(l.diff_id.hex().to_owned());
            }
        }
        let mut report = PruneReport::default();
        let blobs = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&blobs).map_err(|e| Error::io("reading the blob store", e))? {
            let entry = entry.map_err(|e| Error::io("reading the blob store", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep_blobs.contains(&name) {
                report.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(|e| Error::io("removing a blob", e))?;
                report.blobs += 1;
            }
        }
        let layers = self.root.join("layers");
        for entry in fs::read_dir(&layers).map_err(|e| Error::io("reading the layer store", e))? {
            let entry = entry.map_err(|e| Error::io("reading the layer store", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if keep_layers.contains(name.trim_end_matches(".json")) {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                report.bytes += dir_size(&path);
                self.remove_tree(&path)?;
                report.layers += 1;
            } else {
                let _ = fs::remove_file(&path);
            }
        }
        // No pull runs now: everything in tmp/ was left by one that was killed.
        if let Ok(entries) = fs::read_dir(self.root.join("tmp")) {
            for entry in entries.flatten() {
                report.bytes += dir_size(&entry.path());
                self.remove_tree(&entry.path())?;
            }
        }
        Ok(report)
    }
}

fn dir_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| dir_size(&e.path())).sum())
        .unwrap_or(0)
}

/// Writes `bytes` to `path` through a temp file in `tmp_dir` (so that a killed pull's
/// leftovers are pruned with the rest of `tmp/`) and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], tmp_dir: &Path) -> Result<()> {
    crate::util::write_atomic_with(
        path,
        bytes,
        &crate::util::AtomicWrite::new().temp_dir(tmp_dir),
    )?;
    Ok(())
}
