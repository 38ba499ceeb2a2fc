//! OCI images on Linux: pull from registries, a content-addressed store, safe layer
//! unpacking, and container root filesystems made from the layers.
//!
//! ```no_run
//! # async fn demo() -> locald_core::Result<()> {
//! use locald_core::{ImageRef, Paths, PullOptions};
//! use locald_runtime::image::ImageStore;
//!
//! let store = ImageStore::open(&Paths::from_process_env())?;
//! let image: ImageRef = "127.0.0.1:5000/busybox:latest".parse()?;
//! let summary = store.pull(&image, PullOptions::default().insecure(true)).await?;
//! let resolved = store.resolve(&image)?;
//! println!("{} has {} layers", summary.reference, resolved.layers.len());
//! # Ok(()) }
//! ```

mod auth;
mod builtin;
mod digest;
mod layout;
mod manifest;
mod pull;
mod registry;
mod snapshot;
mod store;
pub(crate) mod unpack;

use std::path::{Path, PathBuf};

pub use crate::ImageConfig;
pub use auth::{AuthSources, Credentials};
pub use builtin::BUILTIN_IMAGE;
pub use digest::Digest;
use locald_core::{Error, ImageRef, ImageSummary, Paths, PruneReport, PullOptions, Result};
pub use registry::RegistryConfig;
pub use snapshot::{remove_snapshot_dir, LayerDir, Snapshot, SnapshotMode};
pub use store::{ImageRecord, LayerRecord, Store};
pub use unpack::WhiteoutFormat;

/// An image ready to become a container: its config and its unpacked layers.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// What the store says of it.
    pub summary: ImageSummary,
    /// Entrypoint, command, environment and the rest.
    pub config: ImageConfig,
    /// Its layers, bottom first.
    pub layers: Vec<LayerDir>,
}

/// locald's image store and registry client.
#[derive(Debug, Clone)]
pub struct ImageStore {
    store: Store,
    registry: RegistryConfig,
}

impl ImageStore {
    /// The store under `$LOCALD_HOME/images`, with CA certificates from
    /// `$LOCALD_HOME/certs.d/<host:port>/*.crt` and the standard credential files.
    pub fn open(paths: &Paths) -> Result<ImageStore> {
        Self::open_home(paths.data_home())
    }

    /// The store of the locald data home `home` (see [`ImageStore::open`]).
    pub fn open_home(home: &Path) -> Result<ImageStore> {
        Ok(ImageStore {
            store: Store::open(home.join("images"))?,
            registry: RegistryConfig {
                certs_dir: home.join("certs.d"),
                auth: AuthSources::standard(home),
                max_attempts: 5,
            },
        })
    }

    /// A store at `root` with explicit registry settings.
    pub fn with_config(root: impl Into<PathBuf>, registry: RegistryConfig) -> Result<ImageStore> {
        Ok(ImageStore {
            store: Store::open(root)?,
            registry,
        })
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Pulls an image: manifest (picking the platform from an index), config, and every
    /// layer not already stored, verified and unpacked.
    pub async fn pull(&self, reference: &ImageRef, options: PullOptions) -> Result<ImageSummary> {
        if reference.to_string() == BUILTIN_IMAGE {
            return self.ensure_builtin().await;
        }
        let _working = self.work_lock().await?;
        pull::pull(&self.store, reference, &options, &self.registry).await
    }

    async fn work_lock(&self) -> Result<store::Lock> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.work_lock())
            .await
            .map_err(|e| Error::io("waiting for the image store", std::io::Error::other(e)))?
    }

    /// Makes the built-in image ([`BUILTIN_IMAGE`]) from the host's programs if it is not
    /// stored yet; no registry is involved.
    pub async fn ensure_builtin(&self) -> Result<ImageSummary> {
        let reference: ImageRef = BUILTIN_IMAGE.parse().expect("the built-in name parses");
        if let Some(record) = self.store.get(&reference)? {
            return Ok(record.summary(reference));
        }
        let _working = self.work_lock().await?;
        let dir = self.store.temp_dir("builtin-")?;
        let root = dir.path().join("rootfs");
        let what = builtin::make_rootfs(&root)?;
        tracing::info!(
            image = BUILTIN_IMAGE,
            from = what,
            "made the built-in image"
        );
        layout::import_with(
            &self.store,
            &root,
            &reference,
            &None,
            Some(vec!["sh".to_owned()]),
        )
        .await
    }

    /// Every stored image.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        Ok(self
            .store
            .list()?
            .into_iter()
            .map(|(r, rec)| rec.summary(r))
            .collect())
    }

    /// Forgets a reference (see [`ImageStore::prune`]).
    pub fn remove(&self, reference: &ImageRef) -> Result<ImageSummary> {
        Ok(self.store.remove(reference)?.summary(reference.clone()))
    }

    /// Removes what no reference needs.
    pub fn prune(&self) -> Result<PruneReport> {
        self.store.prune()
    }

    /// Loads the named images of an OCI layout directory or tar.
    pub async fn load(&self, path: &Path, options: PullOptions) -> Result<Vec<ImageSummary>> {
        let _working = self.work_lock().await?;
        layout::load(&self.store, path, &options.progress).await
    }

    /// Makes a single-layer image from a root filesystem directory or tar.
    pub async fn import(
        &self,
        rootfs: &Path,
        reference: &ImageRef,
        options: PullOptions,
    ) -> Result<ImageSummary> {
        let _working = self.work_lock().await?;
        layout::import(&self.store, rootfs, reference, &options.progress).await
    }

    /// Checks credentials against a registry and stores them in locald's own file.
    pub async fn login(
        &self,
        registry: &str,
        username: &str,
        password: &str,
        insecure: bool,
    ) -> Result<()> {
        let mut config = self.registry.clone();
        let own =
            tempfile::tempdir().map_err(|e| Error::io("creating a temporary directory", e))?;
        let probe = AuthSources::new(own.path().join("auth.json"), vec![]);
        probe.store(registry, username, password)?;
        config.auth = probe;
        config.max_attempts = 1;
        let endpoint = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let client = registry::Registry::connect(registry, endpoint, "", &config, insecure).await?;
        client.check_login().await?;
        self.registry.auth.store(registry, username, password)
    }

    /// Removes locald's stored credentials for `registry`; true if there were any.
    pub fn logout(&self, registry: &str) -> Result<bool> {
        self.registry.auth.erase(registry)
    }

    /// Looks up a stored image for a container.
    pub fn resolve(&self, reference: &ImageRef) -> Result<ResolvedImage> {
        let record = self.store.get(reference)?.ok_or_else(|| Error::NotFound {
            kind: "image",
            name: reference.familiar(),
        })?;
        let config_bytes = self.store.read_blob(&record.config)?;
        let doc =
            manifest::ConfigDocument::parse(&config_bytes, &format!("config of {reference}"))?;
        let mut layers = Vec::new();
        for layer in &record.layers {
            let meta =
                self.store
                    .layer_meta(&layer.diff_id)
                    .ok_or_else(|| Error::InvalidImage {
                        what: format!("layer {}", layer.blob),
                        reason: format!(
                            "it is missing from the store; pull {} again",
                            reference.familiar()
                        ),
                    })?;
            layers.push(LayerDir {
                path: self.store.layer_path(&layer.diff_id),
                whiteouts: meta.whiteouts,
            });
        }
        Ok(ResolvedImage {
            summary: record.summary(reference.clone()),
            config: doc.image_config(),
            layers,
        })
    }
}
