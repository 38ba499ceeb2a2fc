//! Pulling: resolve the manifest, fetch the config, then stream every missing layer
//! through download → digest check → decompression → diff-id check → unpack, in one
//! pass, several layers at once.

use std::{
    io::{self, BufWriter, Read, Write},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures_util::{stream, StreamExt, TryStreamExt};
use locald_core::{Error, ImageRef, ImageSummary, PullOptions, PullProgress, Result};
use reqwest::StatusCode;
use tokio::sync::mpsc;

use super::{
    digest::{Digest, HashingReader},
    manifest::{Compression, ConfigDocument, Descriptor, Document, WantedPlatform},
    registry::{error_chain, is_transient_status, Registry, RegistryConfig},
    store::{ImageRecord, LayerMeta, LayerRecord, Store},
    unpack::{self, UnpackOptions},
};

/// Layers fetched at once.
const CONCURRENT_LAYERS: usize = 3;
/// Largest manifest or config accepted.
const MAX_DOCUMENT: u64 = 8 << 20;

fn send(progress: &Option<locald_core::ProgressSender>, event: PullProgress) {
    if let Some(tx) = progress {
        let _ = tx.send(event);
    }
}

/// Pulls `reference` into `store`.
pub(crate) async fn pull(
    store: &Store,
    reference: &ImageRef,
    options: &PullOptions,
    config: &RegistryConfig,
) -> Result<ImageSummary> {
    let wanted = WantedPlatform::parse(options.platform.as_deref())?;
    let registry = Arc::new(
        Registry::connect(
            reference.registry(),
            reference.registry_endpoint(),
            reference.repository(),
            config,
            options.insecure,
        )
        .await?,
    );
    let (mut bytes, mut digest) =
        fetch_manifest(&registry, reference, reference.reference()).await?;
    if let Some(pinned) = reference.digest() {
        check_digest(&digest, pinned, &format!("manifest of {reference}"))?;
    }
    let mut doc = Document::parse(&bytes, &format!("manifest of {reference}"))?;
    if doc.is_index() {
        let entries = doc.manifests.clone().unwrap_or_default();
        let chosen = wanted.select(&entries, &reference.familiar())?;
        let (b, d) = fetch_manifest(&registry, reference, &chosen.digest).await?;
        check_digest(
            &d,
            &chosen.digest,
            &format!("manifest of {reference} for {}", wanted.name()),
        )?;
        bytes = b;
        digest = d;
        doc = Document::parse(&bytes, &format!("manifest of {reference}"))?;
        if doc.is_index() {
            return Err(Error::InvalidImage {
                what: format!("manifest of {reference}"),
                reason: "an index inside an index is not supported".into(),
            });
        }
    }
    let (config_desc, layers) = match (doc.config.clone(), doc.layers.clone()) {
        (Some(c), Some(l)) => (c, l),
        _ => {
            return Err(Error::InvalidImage {
                what: format!("manifest of {reference}"),
                reason: "it has no config or no layers".into(),
            })
        }
    };
    send(
        &options.progress,
        PullProgress::Resolved {
            digest: digest.to_string(),
            layers: layers.len(),
        },
    );
    let config_digest = Digest::parse(&config_desc.digest)?;
    let config_bytes = if store.has_blob(&config_digest) {
        store.read_blob(&config_digest)?
    } else {
        let b = fetch_small_blob(&registry, &config_desc, "image config").await?;
        store.put_blob(&config_digest, &b, &format!("config of {reference}"))?;
        b
    };
    let cfg = ConfigDocument::parse(&config_bytes, &format!("config of {reference}"))?;
    let records = layer_records(&layers, &cfg, reference)?;
    stream::iter(records.clone())
        .map(|layer| {
            let registry = registry.clone();
            let progress = options.progress.clone();
            async move {
                let source = RegistrySource { registry };
                ensure_layer(store, &layer, &source, &progress).await
            }
        })
        .buffer_unordered(CONCURRENT_LAYERS)
        .try_collect::<Vec<()>>()
        .await?;
    record_image(
        store,
        reference,
        (digest, &bytes),
        config_digest,
        records,
        &cfg,
    )
}

/// Pairs a manifest's layers with its config's diff ids, checking both.
pub(crate) fn layer_records(
    layers: &[Descriptor],
    cfg: &ConfigDocument,
    reference: &ImageRef,
) -> Result<Vec<LayerRecord>> {
    if cfg.rootfs.diff_ids.len() != layers.len() {
        return Err(Error::InvalidImage {
            what: format!("manifest of {reference}"),
            reason: format!(
                "it lists {} layers but its config {} diff ids",
                layers.len(),
                cfg.rootfs.diff_ids.len()
            ),
        });
    }
    layers
        .iter()
        .zip(&cfg.rootfs.diff_ids)
        .map(|(layer, diff_id)| {
            Compression::of_media_type(&layer.media_type, &format!("layer {}", layer.digest))?;
            Ok(LayerRecord {
                blob: Digest::parse(&layer.digest)?,
                diff_id: Digest::parse(diff_id)?,
                size: layer.size,
                media_type: layer.media_type.clone(),
            })
        })
        .collect()
}

/// Stores the manifest and names the image: the last step, once every layer is in.
pub(crate) fn record_image(
    store: &Store,
    reference: &ImageRef,
    (manifest, bytes): (Digest, &[u8]),
    config: Digest,
    layers: Vec<LayerRecord>,
    cfg: &ConfigDocument,
) -> Result<ImageSummary> {
    store.put_blob(&manifest, bytes, &format!("manifest of {reference}"))?;
    let record = ImageRecord {
        manifest,
        config,
        layers,
        platform: cfg.platform(),
        created: cfg.created.clone(),
    };
    store.tag(reference, record.clone())?;
    Ok(record.summary(reference.clone()))
}

fn check_digest(actual: &Digest, expected: &str, what: &str) -> Result<()> {
    if actual.to_string() != expected {
        return Err(Error::DigestMismatch {
            what: what.to_owned(),
            expected: expected.to_owned(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

async fn read_limited(mut resp: reqwest::Response, what: &str, host: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| Error::Network {
        context: format!("reading the {what} from {host}"),
        source: Box::new(e),
    })? {
        out.extend_from_slice(&chunk);
        if out.len() as u64 > MAX_DOCUMENT {
            return Err(Error::Registry {
                registry: host.to_owned(),
                message: format!("the {what} is larger than {MAX_DOCUMENT} bytes"),
            });
        }
    }
    Ok(out)
}

async fn fetch_manifest(
    registry: &Registry,
    image: &ImageRef,
    reference: &str,
) -> Result<(Vec<u8>, Digest)> {
    let mut attempt = 1;
    loop {
        let result = async {
            let resp = registry.manifest(reference).await?;
            match resp.status() {
                s if s.is_success() => {
                    let bytes = read_limited(resp, "manifest", registry.host()).await?;
                    let digest = Digest::of(&bytes);
                    Ok(Some((bytes, digest)))
                }
                StatusCode::NOT_FOUND => Err(Error::NotFound {
                    kind: "image",
                    name: format!(
                        "{} (the registry has no manifest {reference})",
                        image.familiar()
                    ),
                }),
                s if is_transient_status(s) => Ok(None),
                _ => Err(registry
                    .status_error(resp, &format!("fetching manifest {reference}"))
                    .await),
            }
        }
        .await;
        match result {
            Ok(Some(found)) => return Ok(found),
            Err(e @ Error::Network { .. }) if attempt < registry.max_attempts => {
                tracing::info!(error = %e, attempt, "retrying manifest");
            }
            Ok(None) if attempt < registry.max_attempts => {}
            Ok(None) => {
                return Err(Error::Registry {
                    registry: registry.host().to_owned(),
                    message: format!(
                        "fetching manifest {reference} kept failing after {attempt} tries"
                    ),
                })
            }
            Err(e) => return Err(e),
        }
        attempt += 1;
        tokio::time::sleep(backoff(attempt)).await;
    }
}

async fn fetch_small_blob(registry: &Registry, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    if desc.size > MAX_DOCUMENT {
        return Err(Error::InvalidImage {
            what: what.to_owned(),
            reason: format!("{} bytes is too large for an {what}", desc.size),
        });
    }
    let mut attempt = 1;
    loop {
        let resp = registry.blob(&desc.digest, 0).await;
        let retry = match resp {
            Ok(resp) if resp.status().is_success() => {
                match read_limited(resp, what, registry.host()).await {
                    Ok(b) => return Ok(b),
                    Err(e @ Error::Network { .. }) => e.to_string(),
                    Err(e) => return Err(e),
                }
            }
            Ok(resp) if is_transient_status(resp.status()) => resp.status().to_string(),
            Ok(resp) => {
                return Err(registry
                    .status_error(resp, &format!("fetching {what} {}", desc.digest))
                    .await)
            }
            Err(e @ Error::Network { .. }) => e.to_string(),
            Err(e) => return Err(e),
        };
        if attempt >= registry.max_attempts {
            return Err(Error::Registry {
                registry: registry.host().to_owned(),
                message: format!(
                    "fetching {what} {} failed after {attempt} tries: {retry}",
                    desc.digest
                ),
            });
        }
        attempt += 1;
        tokio::time::sleep(backoff(attempt)).await;
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100 * (1 << attempt.min(6)))
}

/// Where a layer's compressed bytes come from.
pub(crate) trait LayerSource: Send + Sync {
    /// Streams the blob's bytes into `tx` (retrying as it sees fit); errors are sent
    /// down `tx` as well as returned.
    fn stream(
        &self,
        layer: &LayerRecord,
        tx: mpsc::Sender<io::Result<Bytes>>,
        progress: Option<locald_core::ProgressSender>,
    ) -> impl std::future::Future<Output = Result<()>> + Send;
}

pub(crate) struct RegistrySource {
    pub(crate) registry: Arc<Registry>,
}

impl LayerSource for RegistrySource {
    async fn stream(
        &self,
        layer: &LayerRecord,
        tx: mpsc::Sender<io::Result<Bytes>>,
        progress: Option<locald_core::ProgressSender>,
    ) -> Result<()> {
        let result = download(&self.registry, layer, &tx, &progress).await;
        if let Err(e) = &result {
            let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
        }
        result
    }
}

/// Streams a blob into `tx`, resuming with `Range` after a failure where the registry
/// allows (and skipping what was already sent where it does not).
async fn download(
    registry: &Registry,
    layer: &LayerRecord,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    progress: &Option<locald_core::ProgressSender>,
) -> Result<()> {
    let digest = layer.blob.to_string();
    let mut sent: u64 = 0;
    let mut attempt = 1;
    let mut last_report = 0u64;
    loop {
        let failure: String = match registry.blob(&digest, sent).await {
            Err(e @ Error::Network { .. }) => error_chain(&e),
            Err(e) => return Err(e),
            Ok(resp) if resp.status() == StatusCode::NOT_FOUND => {
                return Err(Error::Registry {
                    registry: registry.host().to_owned(),
                    message: format!("layer {digest} is missing from the registry"),
                })
            }
            Ok(resp) if is_transient_status(resp.status()) => {
                format!("the registry answered {}", resp.status())
            }
            Ok(resp) if !resp.status().is_success() => {
                return Err(registry
                    .status_error(resp, &format!("fetching layer {digest}"))
                    .await)
            }
            Ok(resp) => {
                // 206: the registry resumed where we asked. 200: it sent everything
                // again; skip what the unpacker already has.
                let mut skip = if resp.status() == StatusCode::PARTIAL_CONTENT {
                    0
                } else {
                    sent
                };
                let mut body = resp.bytes_stream();
                let mut failure = None;
                while let Some(chunk) = body.next().await {
                    match chunk {
                        Ok(mut chunk) => {
                            if skip > 0 {
                                let n = skip.min(chunk.len() as u64);
                                chunk = chunk.slice(n as usize..);
                                skip -= n;
                            }
                            if chunk.is_empty() {
                                continue;
                            }
                            sent += chunk.len() as u64;
                            if sent > layer.size {
                                return Err(Error::DigestMismatch {
                                    what: format!("layer {digest}"),
                                    expected: format!("{} bytes", layer.size),
                                    actual: format!("more than {} bytes", layer.size),
                                });
                            }
                            if tx.send(Ok(chunk)).await.is_err() {
                                // The unpacker stopped; it has its own error to tell.
                                return Ok(());
                            }
                            if sent - last_report >= 256 << 10 || sent == layer.size {
                                last_report = sent;
                                send(
                                    progress,
                                    PullProgress::LayerProgress {
                                        digest: digest.clone(),
                                        done: sent,
                                        size: layer.size,
                                    },
                                );
                            }
                        }
                        Err(e) => {
                            failure = Some(error_chain(&e));
                            break;
                        }
                    }
                }
                match failure {
                    None if sent == layer.size => return Ok(()),
                    None => format!("the connection closed after {sent} of {} bytes", layer.size),
                    Some(f) => f,
                }
            }
        };
        if attempt >= registry.max_attempts {
            return Err(Error::Registry {
                registry: registry.host().to_owned(),
                message: format!(
                    "fetching layer {digest} failed after {attempt} tries, {sent} of {} bytes received: {failure}",
                    layer.size
                ),
            });
        }
        attempt += 1;
        tracing::info!(layer = %digest, attempt, sent, %failure, "retrying layer download");
        send(
            progress,
            PullProgress::LayerRetry {
                digest: digest.clone(),
                attempt,
                error: failure,
            },
        );
        tokio::time::sleep(backoff(attempt)).await;
    }
}

/// Makes sure layer `layer` is unpacked in the store, fetching it from `source` if not.
/// Concurrent callers (in this process or another) for the same layer wait for the
/// first and then find it done.
pub(crate) async fn ensure_layer(
    store: &Store,
    layer: &LayerRecord,
    source: &impl LayerSource,
    progress: &Option<locald_core::ProgressSender>,
) -> Result<()> {
    let digest = layer.blob.to_string();
    if store.layer_meta(&layer.diff_id).is_some() && store.has_blob(&layer.blob) {
        send(progress, PullProgress::LayerCached { digest });
        return Ok(());
    }
    let lock_store = store.clone();
    let lock_name = format!("layer-{}", layer.diff_id.hex());
    let _lock = tokio::task::spawn_blocking(move || lock_store.lock(&lock_name))
        .await
        .map_err(|e| Error::io("waiting for a layer lock", io::Error::other(e)))??;
    if store.layer_meta(&layer.diff_id).is_some() && store.has_blob(&layer.blob) {
        send(progress, PullProgress::LayerCached { digest });
        return Ok(());
    }
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(64);
    let dir = store.temp_dir("layer-")?;
    let blob = store.temp_file()?;
    let job = UnpackJob {
        layer: layer.clone(),
        opts: UnpackOptions::for_current_user(),
    };
    let unpacker = tokio::task::spawn_blocking(move || {
        let result = job.run(ChannelReader::new(rx), &blob, dir.path());
        (result, blob, dir)
    });
    let fetched = source.stream(layer, tx, progress.clone()).await;
    let (unpacked, blob, dir) = unpacker
        .await
        .map_err(|e| Error::io("unpacking a layer", io::Error::other(e)))?;
    fetched?;
    let meta = unpacked?;
    store.commit_blob(blob, &layer.blob)?;
    store.commit_layer(dir, &meta)?;
    send(progress, PullProgress::LayerDone { digest });
    Ok(())
}

/// The blocking half of a layer fetch.
pub(crate) struct UnpackJob {
    pub(crate) layer: LayerRecord,
    pub(crate) opts: UnpackOptions,
}

impl UnpackJob {
    /// Reads the compressed blob from `reader`, copying it to `blob`, and unpacks it into
    /// `dir`, checking both digests. A digest mismatch is reported as such even when
    /// the damage also broke decompression or the tar stream.
    pub(crate) fn run(
        &self,
        reader: impl Read + Send,
        blob: &tempfile::NamedTempFile,
        dir: &std::path::Path,
    ) -> Result<LayerMeta> {
        let what = format!("layer {}", self.layer.blob);
        let compression = Compression::of_media_type(&self.layer.media_type, &what)?;
        // Two threads: this one hashes the tar and writes files (mostly system time),
        // the other receives, hashes, stores and decompresses (mostly user time), so the
        // two overlap on a machine with two cores.
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(32);
        let (unpacked, (digest, count, drained, tee_flushed)) = std::thread::scope(|scope| {
            let producer = scope.spawn(move || {
                let mut tee = BufWriter::with_capacity(256 << 10, blob.as_file());
                let mut raw = HashingReader::with_tee(reader, &mut tee);
                {
                    let decoder: io::Result<Box<dyn Read + '_>> = match compression {
                        Compression::Gzip => {
                            Ok(Box::new(flate2::read::MultiGzDecoder::new(&mut raw)))
                        }
                        Compression::Zstd => zstd::stream::read::Decoder::new(&mut raw)
                            .map(|d| Box::new(d) as Box<dyn Read + '_>),
                        Compression::None => Ok(Box::new(&mut raw)),
                    };
                    match decoder {
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                        Ok(mut decoder) => loop {
                            let mut buf = vec![0u8; 256 << 10];
                            match decoder.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    buf.truncate(n);
                                    if tx.send(Ok(buf)).is_err() {
                                        break; // the unpacker stopped; it has its error
                                    }
                                }
                                Err(e) => {
                                    let _ = tx.send(Err(e));
                                    break;
                                }
                            }
                        },
                    }
                }
                drop(tx);
                // Whatever happened, read the rest so the digest covers the whole blob.
                let drained = raw.drain();
                let (digest, count, _) = raw.finish();
                let flushed = tee.flush();
                (digest, count, drained, flushed)
            });
            let unpacked = (|| -> Result<(unpack::UnpackStats, Digest)> {
                let mut plain = HashingReader::new(SyncChannelReader {
                    rx: &rx,
                    current: Vec::new(),
                    at: 0,
                });
                let stats = unpack::unpack(&mut plain, dir, &what, self.opts)?;
                plain.drain().map_err(|e| Error::InvalidImage {
                    what: what.clone(),
                    reason: format!("corrupt data after the tar stream: {e}"),
                })?;
                let (diff_id, _, _) = plain.finish();
                Ok((stats, diff_id))
            })();
            drop(rx);
            let raw = producer.join().expect("the layer reader does not panic");
            (unpacked, raw)
        });
        tee_flushed.map_err(|e| Error::io("writing a layer blob", e))?;
        if let Err(e) = drained {
            // The source failed (it already retried): that is the error to tell.
            return Err(Error::io(format!("receiving {what}"), e));
        }
        if count != self.layer.size || digest != self.layer.blob {
            return Err(Error::DigestMismatch {
                what,
                expected: format!("{} ({} bytes)", self.layer.blob, self.layer.size),
                actual: format!("{digest} ({count} bytes)"),
            });
        }
        let (stats, diff_id) = unpacked?;
        if diff_id != self.layer.diff_id {
            return Err(Error::DigestMismatch {
                what: format!("uncompressed {what}"),
                expected: self.layer.diff_id.to_string(),
                actual: diff_id.to_string(),
            });
        }
        blob.as_file()
            .sync_data()
            .map_err(|e| Error::io("writing a layer blob", e))?;
        Ok(LayerMeta {
            diff_id,
            whiteouts: self.opts.whiteouts,
            entries: stats.entries,
            bytes: stats.bytes,
        })
    }
}

/// A blocking reader over chunks sent from another thread.
struct SyncChannelReader<'a> {
    rx: &'a std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for SyncChannelReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.recv() {
                Err(_) => return Ok(0),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(chunk)) => {
                    self.current = chunk;
                    self.at = 0;
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// A blocking reader over chunks sent from async code.
pub(crate) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                None => return Ok(0),
                Some(Err(e)) => return Err(e),
                Some(Ok(chunk)) => self.current = chunk,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
