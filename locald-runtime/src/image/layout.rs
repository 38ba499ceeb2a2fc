//! Images from disk: OCI image layouts (`locald load`) and root filesystems
//! (`locald import`).

use std::{
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use bytes::Bytes;
use locald_core::{Error, ImageRef, ImageSummary, ProgressSender, Result};
use tokio::sync::mpsc;

use super::{
    digest::{Digest, HashingReader},
    manifest::{ConfigDocument, Descriptor, Document, WantedPlatform},
    pull::{ensure_layer, layer_records, record_image, LayerSource},
    store::{LayerRecord, Store},
    unpack::{self, UnpackOptions, WhiteoutFormat},
};

/// Reads a layer blob from a file.
pub(crate) struct FileSource {
    pub(crate) path: PathBuf,
}

impl LayerSource for FileSource {
    async fn stream(
        &self,
        _layer: &LayerRecord,
        tx: mpsc::Sender<io::Result<Bytes>>,
        _progress: Option<ProgressSender>,
    ) -> Result<()> {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| Error::io(format!("opening {}", self.path.display()), e))?;
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match file.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string()))).await;
                    return Err(Error::io(format!("reading {}", self.path.display()), e));
                }
            };
            if tx
                .send(Ok(Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
    }
}

fn layout_blob(root: &Path, digest: &Digest) -> PathBuf {
    root.join("blobs/sha256").join(digest.hex())
}

fn read_verified(root: &Path, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let digest = Digest::parse(&desc.digest)?;
    let path = layout_blob(root, &digest);
    let bytes = fs::read(&path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let actual = Digest::of(&bytes);
    if actual != digest {
        return Err(Error::DigestMismatch {
            what: what.to_owned(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(bytes)
}

/// The name an index entry gives its image, if any. A bare tag (`latest`, as skopeo and
/// umoci write `oci:DIR:TAG`) is named `localhost/<layout name>:<tag>`, as podman names
/// images that come without a registry.
fn entry_name(desc: &Descriptor, layout_name: &str) -> Option<Result<ImageRef>> {
    let name = desc
        .annotations
        .get("io.containerd.image.name")
        .or_else(|| desc.annotations.get("org.opencontainers.image.ref.name"))?;
    if !name.contains(['/', ':']) {
        return Some(ImageRef::parse(&format!("localhost/{layout_name}:{name}")));
    }
    Some(ImageRef::parse(name))
}

/// A repository name made from a layout's file name: lowercase, with anything a
/// repository cannot hold turned into `-`.
fn layout_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("image")
        .to_ascii_lowercase();
    let cleaned: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        "image".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Loads every named image of the OCI layout at `path` (a directory, or a tar of one).
pub(crate) async fn load(
    store: &Store,
    path: &Path,
    progress: &Option<ProgressSender>,
) -> Result<Vec<ImageSummary>> {
    let meta =
        fs::metadata(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let _extracted;
    let root = if meta.is_dir() {
        path.to_owned()
    } else {
        let dir = store.temp_dir("load-")?;
        let file = fs::File::open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let what = format!("archive {}", path.display());
        let target = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            unpack::unpack(
                io::BufReader::new(file),
                &target,
                &what,
                UnpackOptions {
                    whiteouts: WhiteoutFormat::Marker,
                    owners: false,
                    privileged: false,
                },
            )
        })
        .await
        .map_err(|e| Error::io("extracting an archive", io::Error::other(e)))??;
        let root = dir.path().to_owned();
        _extracted = dir;
        root
    };
    let not_layout = |reason: &str| Error::InvalidImage {
        what: format!("layout {}", path.display()),
        reason: reason.to_owned(),
    };
    let marker = fs::read(root.join("oci-layout"))
        .map_err(|_| not_layout("no oci-layout file: not an OCI image layout"))?;
    let version: serde_json::Value =
        serde_json::from_slice(&marker).map_err(|_| not_layout("oci-layout is not JSON"))?;
    if version["imageLayoutVersion"] != "1.0.0" {
        return Err(not_layout("unsupported imageLayoutVersion"));
    }
    let index_bytes = fs::read(root.join("index.json")).map_err(|_| not_layout("no index.json"))?;
    let index = Document::parse(&index_bytes, &format!("index of {}", path.display()))?;
    let wanted = WantedPlatform::parse(None)?;
    let mut loaded = Vec::new();
    for entry in index.manifests.clone().unwrap_or_default() {
        let Some(name) = entry_name(&entry, &layout_name(path)) else {
            tracing::warn!(digest = %entry.digest, "skipping an unnamed image in the layout");
            continue;
        };
        let reference = name?;
        let mut desc = entry.clone();
        let mut bytes = read_verified(&root, &desc, &format!("manifest of {reference}"))?;
        let mut doc = Document::parse(&bytes, &format!("manifest of {reference}"))?;
        if doc.is_index() {
            let entries = doc.manifests.clone().unwrap_or_default();
            desc = wanted.select(&entries, &reference.familiar())?.clone();
            bytes = read_verified(&root, &desc, &format!("manifest of {reference}"))?;
            doc = Document::parse(&bytes, &format!("manifest of {reference}"))?;
        }
        let summary = ingest(store, &root, &reference, &desc, &bytes, &doc, progress).await?;
        loaded.push(summary);
    }
    if loaded.is_empty() {
        return Err(not_layout(
            "it names no images (org.opencontainers.image.ref.name)",
        ));
    }
    Ok(loaded)
}

async fn ingest(
    store: &Store,
    root: &Path,
    reference: &ImageRef,
    desc: &Descriptor,
    bytes: &[u8],
    doc: &Document,
    progress: &Option<ProgressSender>,
) -> Result<ImageSummary> {
    let (Some(config_desc), Some(layers)) = (&doc.config, &doc.layers) else {
        return Err(Error::InvalidImage {
            what: format!("manifest of {reference}"),
            reason: "it has no config or no layers".into(),
        });
    };
    let config_bytes = read_verified(root, config_desc, &format!("config of {reference}"))?;
    let config_digest = Digest::parse(&config_desc.digest)?;
    let cfg = ConfigDocument::parse(&config_bytes, &format!("config of {reference}"))?;
    let records = layer_records(layers, &cfg, reference)?;
    for record in &records {
        let source = FileSource {
            path: layout_blob(root, &record.blob),
        };
        ensure_layer(store, record, &source, progress).await?;
    }
    store.put_blob(
        &config_digest,
        &config_bytes,
        &format!("config of {reference}"),
    )?;
    let manifest = Digest::parse(&desc.digest)?;
    record_image(
        store,
        reference,
        (manifest, bytes),
        config_digest,
        records,
        &cfg,
    )
}

/// Makes a single-layer image from a root filesystem directory or tar.
pub(crate) async fn import(
    store: &Store,
    rootfs: &Path,
    reference: &ImageRef,
    progress: &Option<ProgressSender>,
) -> Result<ImageSummary> {
    import_with(store, rootfs, reference, progress, None).await
}

/// Appends the tree at `dir` as `name` (recursively, entries in name order, symlinks
/// as links), as `append_dir_all` does, with `own` (the caller's uid and gid) recorded
/// as root.
fn append_tree<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
    own: (u64, u64),
) -> io::Result<()> {
    let meta = fs::symlink_metadata(dir)?;
    let header = |meta: &fs::Metadata| {
        let mut h = tar::Header::new_gnu();
        h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
        if h.uid().ok() == Some(own.0) {
            h.set_uid(0);
        }
        if h.gid().ok() == Some(own.1) {
            h.set_gid(0);
        }
        h
    };
    builder.append_data(&mut header(&meta), name, io::empty())?;
    let mut entries = fs::read_dir(dir)?.collect::<io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = name.join(entry.file_name());
        let meta = fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            append_tree(builder, &path, &rel, own)?;
        } else if ft.is_symlink() {
            let mut h = header(&meta);
            h.set_size(0);
            builder.append_link(&mut h, &rel, fs::read_link(&path)?)?;
        } else if ft.is_file() {
            builder.append_data(&mut header(&meta), &rel, fs::File::open(&path)?)?;
        } else {
            // Devices, fifos and sockets: their header says all.
            let mut h = header(&meta);
            h.set_size(0);
            builder.append_data(&mut h, &rel, io::empty())?;
        }
    }
    Ok(())
}

/// [`import`], with a default command.
pub(crate) async fn import_with(
    store: &Store,
    rootfs: &Path,
    reference: &ImageRef,
    progress: &Option<ProgressSender>,
    cmd: Option<Vec<String>>,
) -> Result<ImageSummary> {
    let meta =
        fs::metadata(rootfs).map_err(|e| Error::io(format!("reading {}", rootfs.display()), e))?;
    let layer_file = store.temp_file()?;
    let src = rootfs.to_owned();
    let out = layer_file
        .reopen()
        .map_err(|e| Error::io("writing a layer", e))?;
    let (blob, size, diff_id, media_type) = tokio::task::spawn_blocking(move || -> Result<_> {
        if meta.is_dir() {
            // A gzip-compressed tar of the directory, hashing both forms as it goes.
            let mut counter = HashingWriter::new(out);
            let gz = flate2::write::GzEncoder::new(&mut counter, flate2::Compression::fast());
            let mut plain = HashingWriter::new(gz);
            {
                let mut builder = tar::Builder::new(&mut plain);
                builder.follow_symlinks(false);
                builder.mode(tar::HeaderMode::Complete);
                // What a user who is not root owns is root's in that user's containers
                // (its own ids are root in its user namespace).
                let euid = nix::unistd::geteuid();
                if euid.is_root() {
                    builder.append_dir_all(".", &src)
                } else {
                    let own = (euid.as_raw() as u64, nix::unistd::getegid().as_raw() as u64);
                    append_tree(&mut builder, &src, Path::new("."), own)
                }
                .map_err(|e| Error::io(format!("archiving {}", src.display()), e))?;
                builder
                    .finish()
                    .map_err(|e| Error::io("writing a layer", e))?;
            }
            let (diff_id, _, gz) = plain.finish();
            gz.finish().map_err(|e| Error::io("writing a layer", e))?;
            let (blob, size, _) = counter.finish();
            Ok((
                blob,
                size,
                diff_id,
                "application/vnd.oci.image.layer.v1.tar+gzip",
            ))
        } else {
            let mut input = fs::File::open(&src)
                .map_err(|e| Error::io(format!("opening {}", src.display()), e))?;
            let mut magic = [0u8; 2];
            let gz = input.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
            drop(input);
            let input = fs::File::open(&src)
                .map_err(|e| Error::io(format!("opening {}", src.display()), e))?;
            let mut raw = HashingReader::with_tee(input, out);
            let diff_id = if gz {
                let mut plain = HashingReader::new(flate2::read::MultiGzDecoder::new(&mut raw));
                plain.drain().map_err(|e| {
                    Error::invalid(
                        "root filesystem archive",
                        src.display().to_string(),
                        format!("not a gzip file: {e}"),
                    )
                })?;
                plain.finish().0
            } else {
                raw.drain()
                    .map_err(|e| Error::io(format!("reading {}", src.display()), e))?;
                Digest::parse(&format!("sha256:{}", "0".repeat(64)))?
            };
            let (blob, size, _) = raw.finish();
            let diff_id = if gz { diff_id } else { blob.clone() };
            let mt = if gz {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            Ok((blob, size, diff_id, mt))
        }
    })
    .await
    .map_err(|e| Error::io("archiving a root filesystem", io::Error::other(e)))??;
    let record = LayerRecord {
        blob,
        diff_id,
        size,
        media_type: media_type.to_owned(),
    };
    let source = FileSource {
        path: layer_file.path().to_owned(),
    };
    ensure_layer(store, &record, &source, progress).await?;
    drop(layer_file);
    let now = humantime_now();
    let config = serde_json::json!({
        "created": now,
        "architecture": WantedPlatform::parse(None)?.arch,
        "os": "linux",
        "config": { "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": cmd },
        "rootfs": { "type": "layers", "diff_ids": [record.diff_id.to_string()] },
        "history": [{ "created": now, "created_by": "locald import" }],
    });
    let config_bytes = serde_json::to_vec(&config).expect("config serializes");
    let config_digest = Digest::of(&config_bytes);
    store.put_blob(&config_digest, &config_bytes, "image config")?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config_bytes.len() },
        "layers": [{ "mediaType": record.media_type, "digest": record.blob.to_string(), "size": record.size }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serializes");
    let manifest_digest = Digest::of(&manifest_bytes);
    let cfg = ConfigDocument::parse(&config_bytes, "image config")?;
    record_image(
        store,
        reference,
        (manifest_digest, &manifest_bytes),
        config_digest,
        vec![record],
        &cfg,
    )
}

/// Now, as RFC 3339 UTC.
fn humantime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Hashes and counts what is written through it.
struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        use sha2::Digest as _;
        HashingWriter {
            inner,
            hasher: sha2::Sha256::new(),
            count: 0,
        }
    }

    fn finish(self) -> (Digest, u64, W) {
        use sha2::Digest as _;
        let hex = hex::encode(self.hasher.finalize());
        (
            Digest::parse(&format!("sha256:{hex}")).expect("a sha256 is a digest"),
            self.count,
            self.inner,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use sha2::Digest as _;
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn layout_names() {
        use std::path::Path;
        assert_eq!(super::layout_name(Path::new("/x/My Image.tar")), "my-image");
        assert_eq!(super::layout_name(Path::new("/x/oci")), "oci");
        assert_eq!(super::layout_name(Path::new("/x/__")), "image");
    }

    #[test]
    fn rfc3339_now_has_the_right_shape() {
        let now = super::humantime_now();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.starts_with("20") && now.ends_with('Z'));
    }
}
