//! Pulling: resolve the manifest, fetch the config, then stream every missing layer
//! through download → digest check → decompression → diff-id check → unpack, in one
//! pass, several layers at once.

use std::{
    io::{self, BufWriter, Read, Write},
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use backon::{ExponentialBuilder, Retryable};
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
    unpack::{self, UnpackOptions, WhiteoutFormat},
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
    let once = || async {
        let resp = registry.manifest(reference).await.map_err(Failure::from)?;
        match resp.status() {
            s if s.is_success() => {
                let bytes = read_limited(resp, "manifest", registry.host())
                    .await
                    .map_err(Failure::from)?;
                let digest = Digest::of(&bytes);
                Ok((bytes, digest))
            }
            StatusCode::NOT_FOUND => Err(Failure::Fatal(Error::NotFound {
                kind: "image",
                name: format!(
                    "{} (the registry has no manifest {reference})",
                    image.familiar()
                ),
            })),
            s if is_transient_status(s) => {
                Err(Failure::again(format!("the registry answered {s}")))
            }
            _ => Err(Failure::Fatal(
                registry
                    .status_error(resp, &format!("fetching manifest {reference}"))
                    .await,
            )),
        }
    };
    let on_retry = |attempt: u32, why: &str| {
        tracing::info!(error = %why, attempt, "retrying manifest");
    };
    match with_retries(registry.max_attempts, once, on_retry).await {
        Ok(found) => Ok(found),
        Err(Exhausted::Fatal(e)) | Err(Exhausted::Tries { error: Some(e), .. }) => Err(e),
        Err(Exhausted::Tries { tries, .. }) => Err(Error::Registry {
            registry: registry.host().to_owned(),
            message: format!("fetching manifest {reference} kept failing after {tries} tries"),
        }),
    }
}

async fn fetch_small_blob(registry: &Registry, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    if desc.size > MAX_DOCUMENT {
        return Err(Error::InvalidImage {
            what: what.to_owned(),
            reason: format!("{} bytes is too large for an {what}", desc.size),
        });
    }
    let once = || async {
        let resp = registry
            .blob(&desc.digest, 0)
            .await
            .map_err(Failure::from)?;
        if resp.status().is_success() {
            read_limited(resp, what, registry.host())
                .await
                .map_err(Failure::from)
        } else if is_transient_status(resp.status()) {
            Err(Failure::again(resp.status().to_string()))
        } else {
            Err(Failure::Fatal(
                registry
                    .status_error(resp, &format!("fetching {what} {}", desc.digest))
                    .await,
            ))
        }
    };
    let on_retry = |attempt: u32, why: &str| {
        tracing::info!(error = %why, attempt, "retrying {what}");
    };
    match with_retries(registry.max_attempts, once, on_retry).await {
        Ok(bytes) => Ok(bytes),
        Err(Exhausted::Fatal(e)) => Err(e),
        Err(Exhausted::Tries { tries, why, .. }) => Err(Error::Registry {
            registry: registry.host().to_owned(),
            message: format!(
                "fetching {what} {} failed after {tries} tries: {why}",
                desc.digest
            ),
        }),
    }
}

/// Why one try of a request failed.
enum Failure {
    /// Worth another try: connection trouble, a cut transfer, 5xx, 429. `error` is
    /// the error itself when there is one, for callers that report it as is.
    Again { why: String, error: Option<Error> },
    /// Not worth another try.
    Fatal(Error),
}

impl Failure {
    fn again(why: String) -> Failure {
        Failure::Again { why, error: None }
    }
}

impl From<Error> for Failure {
    /// Network errors are worth another try; anything else is not.
    fn from(e: Error) -> Failure {
        match e {
            e @ Error::Network { .. } => Failure::Again {
                why: e.to_string(),
                error: Some(e),
            },
            e => Failure::Fatal(e),
        }
    }
}

/// How [`with_retries`] gave up.
enum Exhausted {
    /// A failure not worth another try.
    Fatal(Error),
    /// Every try failed; the last one for this reason.
    Tries {
        tries: u32,
        why: String,
        error: Option<Error>,
    },
}

/// The wait between tries: exponential from 400 ms, doubling up to 6.4 s, with jitter
/// so that concurrent pulls do not retry in step.
fn backoff(max_attempts: u32) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(400))
        .with_factor(2.0)
        .with_max_delay(Duration::from_millis(6400))
        .with_max_times(max_attempts.saturating_sub(1) as usize)
        .with_jitter()
}

/// Runs `once` until it succeeds, fails for good, or has been tried `max_attempts`
/// times, waiting with [`backoff`] in between; `on_retry(next_attempt, why)` is called
/// before each wait.
async fn with_retries<T, F, Fut>(
    max_attempts: u32,
    mut once: F,
    mut on_retry: impl FnMut(u32, &str),
) -> std::result::Result<T, Exhausted>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
{
    // Atomics only because the future must be Send; nothing runs concurrently.
    let tries = AtomicU32::new(0);
    let result = (|| {
        tries.fetch_add(1, Relaxed);
        once()
    })
    .retry(backoff(max_attempts))
    .when(|e| matches!(e, Failure::Again { .. }))
    .notify(|e, _| {
        if let Failure::Again { why, .. } = e {
            on_retry(tries.load(Relaxed) + 1, why);
        }
    })
    .await;
    result.map_err(|e| match e {
        Failure::Fatal(e) => Exhausted::Fatal(e),
        Failure::Again { why, error } => Exhausted::Tries {
            tries: tries.load(Relaxed),
            why,
            error,
        },
    })
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
    // Bytes handed to the unpacker so far, across tries.
    let sent = AtomicU64::new(0);
    let last_report = AtomicU64::new(0);
    let once = || async {
        let resp = match registry.blob(&digest, sent.load(Relaxed)).await {
            Err(e @ Error::Network { .. }) => return Err(Failure::again(error_chain(&e))),
            Err(e) => return Err(Failure::Fatal(e)),
            Ok(resp) => resp,
        };
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(Failure::Fatal(Error::Registry {
                registry: registry.host().to_owned(),
                message: format!("layer {digest} is missing from the registry"),
            }));
        }
        if is_transient_status(resp.status()) {
            return Err(Failure::again(format!(
                "the registry answered {}",
                resp.status()
            )));
        }
        if !resp.status().is_success() {
            return Err(Failure::Fatal(
                registry
                    .status_error(resp, &format!("fetching layer {digest}"))
                    .await,
            ));
        }
        // 206: the registry resumed where we asked. 200: it sent everything again;
        // skip what the unpacker already has.
        let mut skip = if resp.status() == StatusCode::PARTIAL_CONTENT {
            0
        } else {
            sent.load(Relaxed)
        };
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let mut chunk = chunk.map_err(|e| Failure::again(error_chain(&e)))?;
            if skip > 0 {
                let n = skip.min(chunk.len() as u64);
                chunk = chunk.slice(n as usize..);
                skip -= n;
            }
            if chunk.is_empty() {
                continue;
            }
            let done = sent.fetch_add(chunk.len() as u64, Relaxed) + chunk.len() as u64;
            if done > layer.size {
                return Err(Failure::Fatal(Error::DigestMismatch {
                    what: format!("layer {digest}"),
                    expected: format!("{} bytes", layer.size),
                    actual: format!("more than {} bytes", layer.size),
                }));
            }
            if tx.send(Ok(chunk)).await.is_err() {
                // The unpacker stopped; it has its own error to tell.
                return Ok(());
            }
            if done - last_report.load(Relaxed) >= 256 << 10 || done == layer.size {
                last_report.store(done, Relaxed);
                send(
                    progress,
                    PullProgress::LayerProgress {
                        digest: digest.clone(),
                        done,
                        size: layer.size,
                    },
                );
            }
        }
        if sent.load(Relaxed) == layer.size {
            Ok(())
        } else {
            Err(Failure::again(format!(
                "the connection closed after {} of {} bytes",
                sent.load(Relaxed),
                layer.size
            )))
        }
    };
    let on_retry = |attempt: u32, failure: &str| {
        tracing::info!(layer = %digest, attempt, sent = sent.load(Relaxed), %failure, "retrying layer download");
        send(
            progress,
            PullProgress::LayerRetry {
                digest: digest.clone(),
                attempt,
                error: failure.to_owned(),
            },
        );
    };
    match with_retries(registry.max_attempts, once, on_retry).await {
        Ok(()) => Ok(()),
        Err(Exhausted::Fatal(e)) => Err(e),
        Err(Exhausted::Tries { tries, why, .. }) => Err(Error::Registry {
            registry: registry.host().to_owned(),
            message: format!(
                "fetching layer {digest} failed after {tries} tries, {} of {} bytes received: {why}",
                sent.load(Relaxed),
                layer.size
            ),
        }),
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
    let job = UnpackJob::for_current_user(store, layer.clone());
    let unpacker = tokio::task::spawn_blocking(move || {
        let result = job.run(ChannelReader::new(rx), &blob, dir.path());
        (result, blob, dir)
    });
    let fetched = source.stream(layer, tx, progress.clone()).await;
    let (unpacked, blob, dir) = unpacker
        .await
        .map_err(|e| Error::io("unpacking a layer", io::Error::other(e)))?;
    let meta = match fetched.and(unpacked) {
        Ok(meta) => meta,
        Err(e) => {
            // What a helper unpacked in a user namespace may not be removable otherwise.
            store.discard(dir);
            return Err(e);
        }
    };
    store.commit_blob(blob, &layer.blob)?;
    store.commit_layer(dir, &meta)?;
    send(progress, PullProgress::LayerDone { digest });
    Ok(())
}

/// The blocking half of a layer fetch.
pub(crate) struct UnpackJob {
    pub(crate) layer: LayerRecord,
    pub(crate) opts: UnpackOptions,
    /// Unpack inside this user namespace, as root there (a user who is not root, with
    /// subordinate ids): the files keep the image's owners.
    pub(crate) userns: Option<crate::container::rootless::UserNs>,
}

impl UnpackJob {
    /// The richest unpacking of `layer` the current user can do into `store`.
    pub(crate) fn for_current_user(store: &Store, layer: LayerRecord) -> UnpackJob {
        let mut opts = UnpackOptions::for_current_user(&store.root().join("tmp"));
        let userns = crate::container::rootless::store_userns();
        if userns.is_some() {
            opts.owners = true;
        }
        UnpackJob {
            layer,
            opts,
            userns,
        }
    }

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
                let stats = match &self.userns {
                    None => unpack::unpack(&mut plain, dir, &what, self.opts)?,
                    Some(ns) => crate::container::rootless::unpack_layer(
                        &mut plain, dir, &what, self.opts, ns,
                    )?,
                };
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
            // Without whiteouts, a layer unpacked without root is in overlay form too.
            whiteouts: if stats.whiteouts == 0 {
                WhiteoutFormat::Overlay
            } else {
                self.opts.whiteouts
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_count_tries_and_stop_at_a_fatal_error() {
        // Transient failures until the tries run out: the last reason and the count.
        let calls = AtomicU32::new(0);
        let mut retries = Vec::new();
        let result: std::result::Result<(), _> = with_retries(
            2,
            || async {
                let n = calls.fetch_add(1, Relaxed) + 1;
                Err(Failure::again(format!("cut {n}")))
            },
            |attempt, why| retries.push((attempt, why.to_owned())),
        )
        .await;
        match result {
            Err(Exhausted::Tries { tries, why, error }) => {
                assert_eq!((tries, why.as_str()), (2, "cut 2"));
                assert!(error.is_none());
            }
            _ => panic!("expected the tries to run out"),
        }
        assert_eq!(retries, [(2, "cut 1".to_owned())]);

        // A fatal error ends at once; a success after a failure is a success.
        let calls = AtomicU32::new(0);
        let result: std::result::Result<(), _> = with_retries(
            5,
            || async {
                calls.fetch_add(1, Relaxed);
                Err(Failure::Fatal(Error::invalid("image", "x", "bad")))
            },
            |_, _| {},
        )
        .await;
        assert!(matches!(result, Err(Exhausted::Fatal(_))));
        assert_eq!(calls.load(Relaxed), 1);
        let calls = AtomicU32::new(0);
        let result = with_retries(
            3,
            || async {
                match calls.fetch_add(1, Relaxed) {
                    0 => Err(Failure::again("cut".into())),
                    n => Ok(n),
                }
            },
            |_, _| {},
        )
        .await;
        assert!(matches!(result, Ok(1)));
    }
}
