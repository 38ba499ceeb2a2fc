//! The [`Runtime`] trait every backend implements.

use std::{collections::BTreeSet, fmt, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    Command, ContainerHandle, ContainerSpec, ContainerSummary, Error, ExitStatus, ImageRef,
    LogOptions, Output, Platform, Process, Result, Signal,
};

/// Something a runtime may or may not be able to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Capability {
    /// Running host commands ([`Runtime::run_command`], [`Runtime::spawn`]).
    Commands,
    /// Running OCI containers and managing their life cycle.
    Containers,
    /// Pulling images from registries.
    Images,
    /// Running commands inside running containers ([`Runtime::exec`]).
    Exec,
    /// Safe Mode for untrusted workloads.
    SafeMode,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Capability::Commands => "running commands",
            Capability::Containers => "running containers",
            Capability::Images => "pulling images",
            Capability::Exec => "exec into containers",
            Capability::SafeMode => "safe mode",
        })
    }
}

/// What a runtime says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RuntimeInfo {
    /// A short backend name: `process`, `container`, `lima`, `wsl`, `remote`.
    pub name: String,
    /// The platform the work runs on.
    pub platform: Platform,
    /// What it can do.
    pub capabilities: BTreeSet<Capability>,
}

impl RuntimeInfo {
    /// A description of a runtime.
    pub fn new(
        name: impl Into<String>,
        platform: Platform,
        capabilities: impl IntoIterator<Item = Capability>,
    ) -> Self {
        RuntimeInfo {
            name: name.into(),
            platform,
            capabilities: capabilities.into_iter().collect(),
        }
    }

    /// True when the runtime has `capability`.
    pub fn supports(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    /// The error to return for a missing capability.
    pub fn unsupported(&self, capability: Capability) -> Error {
        Error::Unsupported {
            capability,
            runtime: self.name.clone(),
            platform: self.platform,
        }
    }
}

/// Options for [`Runtime::pull_image`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PullOptions {
    /// The platform to pick from a multi-platform image, as `os/arch[/variant]`
    /// (default: `linux/` and the host's architecture).
    pub platform: Option<String>,
    /// Allow plain HTTP or unverified TLS for this registry.
    pub insecure: bool,
    /// Where to send progress events, if anywhere.
    #[serde(skip)]
    pub progress: Option<ProgressSender>,
}

impl PullOptions {
    /// Picks `platform` (`linux/arm64`, `linux/arm/v7`) from multi-platform images.
    pub fn platform(mut self, platform: impl Into<String>) -> Self {
        self.platform = Some(platform.into());
        self
    }

    /// Allows plain HTTP or unverified TLS for the image's registry.
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// Sends progress events to `sender`.
    pub fn progress(mut self, sender: ProgressSender) -> Self {
        self.progress = Some(sender);
        self
    }
}

/// Credentials to check against a registry and keep for later pulls
/// ([`Runtime::login`]). The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RegistryLogin {
    /// The registry, `host[:port]` (`docker.io` for Docker Hub).
    pub registry: String,
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
    /// Allow plain HTTP or unverified TLS for this registry while checking.
    pub insecure: bool,
}

impl RegistryLogin {
    /// Credentials of `username` for `registry`.
    pub fn new(
        registry: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        RegistryLogin {
            registry: registry.into(),
            username: username.into(),
            password: password.into(),
            insecure: false,
        }
    }

    /// Allows plain HTTP or unverified TLS while checking the credentials.
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }
}

impl fmt::Debug for RegistryLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryLogin")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// Where a pull reports its progress.
pub type ProgressSender = tokio::sync::mpsc::UnboundedSender<PullProgress>;

/// What a pull is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "event")]
#[non_exhaustive]
pub enum PullProgress {
    /// The reference resolved to a manifest with this many layers.
    Resolved {
        /// The manifest digest.
        digest: String,
        /// How many layers the image has.
        layers: usize,
    },
    /// A layer is already in the store.
    LayerCached {
        /// The layer's blob digest.
        digest: String,
    },
    /// Bytes of a layer have arrived.
    LayerProgress {
        /// The layer's blob digest.
        digest: String,
        /// Bytes received so far.
        done: u64,
        /// The layer's size.
        size: u64,
    },
    /// A transfer failed and is being retried.
    LayerRetry {
        /// The layer's blob digest.
        digest: String,
        /// Which try comes next (2 for the first retry).
        attempt: u32,
        /// What went wrong.
        error: String,
    },
    /// A layer is downloaded, verified and unpacked.
    LayerDone {
        /// The layer's blob digest.
        digest: String,
    },
}

/// What a pulled or stored image is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageSummary {
    /// The reference it was pulled or tagged as.
    pub reference: ImageRef,
    /// The manifest digest.
    pub digest: String,
    /// The image id: the digest of its configuration.
    pub id: String,
    /// The total size of its layers in bytes, as stored (compressed).
    pub size: u64,
    /// When the image was built (RFC 3339), if its configuration says.
    pub created: Option<String>,
    /// `os/arch[/variant]`.
    pub platform: String,
}

impl ImageSummary {
    /// A summary of an image.
    pub fn new(
        reference: ImageRef,
        digest: String,
        id: String,
        size: u64,
        created: Option<String>,
        platform: String,
    ) -> Self {
        ImageSummary {
            reference,
            digest,
            id,
            size,
            created,
            platform,
        }
    }
}

/// What [`Runtime::prune_images`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PruneReport {
    /// Blobs (manifests, configs, compressed layers) removed.
    pub blobs: usize,
    /// Unpacked layer directories removed.
    pub layers: usize,
    /// Bytes freed.
    pub bytes: u64,
}

/// A stream of container log chunks, in the order they were written.
pub type LogChunks =
    std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<(crate::LogStream, Vec<u8>)>> + Send>>;

/// Runs commands and containers somewhere: on this host, in a Lima VM, in WSL2, or
/// through a locald daemon. Object safe: hold it as `Arc<dyn Runtime>`.
///
/// Every method a backend cannot serve returns [`Error::Unsupported`] naming the
/// capability, the backend and the platform; the provided defaults do exactly that.
#[async_trait]
pub trait Runtime: Send + Sync + fmt::Debug {
    /// The backend's name, platform and capabilities.
    fn info(&self) -> RuntimeInfo;

    /// Starts a command and returns at once with a handle to it.
    async fn spawn(&self, command: Command) -> Result<Process>;

    /// Runs a command to completion and returns its exit status and captured output.
    ///
    /// A command that outlives its [`timeout`](Command::timeout) is killed with its
    /// whole process group and this returns [`Error::Timeout`].
    async fn run_command(&self, command: Command) -> Result<Output> {
        self.spawn(command).await?.output().await
    }

    /// Creates and starts a container.
    async fn run_container(&self, spec: ContainerSpec) -> Result<ContainerHandle> {
        let _ = spec;
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Lists containers: running ones, or all with `all`.
    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>> {
        let _ = all;
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Describes one container, by id, unique id prefix or name.
    async fn inspect_container(&self, id: &str) -> Result<ContainerSummary> {
        let _ = id;
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Waits for a container's main process to end.
    async fn wait_container(&self, id: &str) -> Result<ExitStatus> {
        let _ = id;
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Sends SIGTERM, then SIGKILL after `grace` if it is still running.
    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let _ = (id, grace);
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Sends a signal to a container's main process.
    async fn kill_container(&self, id: &str, signal: Signal) -> Result<()> {
        let _ = (id, signal);
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Removes a stopped container (a running one too with `force`).
    async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        let _ = (id, force);
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Reads a container's logs.
    async fn container_logs(&self, id: &str, options: LogOptions) -> Result<LogChunks> {
        let _ = (id, options);
        Err(self.info().unsupported(Capability::Containers))
    }

    /// Runs a command inside a running container.
    async fn exec(&self, id: &str, command: Command) -> Result<Process> {
        let _ = (id, command);
        Err(self.info().unsupported(Capability::Exec))
    }

    /// Pulls an image into the runtime's store.
    async fn pull_image(&self, image: &ImageRef, options: PullOptions) -> Result<ImageSummary> {
        let _ = (image, options);
        Err(self.info().unsupported(Capability::Images))
    }

    /// Lists the images in the runtime's store.
    async fn list_images(&self) -> Result<Vec<ImageSummary>> {
        Err(self.info().unsupported(Capability::Images))
    }

    /// Removes an image reference; its blobs stay until [`Runtime::prune_images`].
    async fn remove_image(&self, image: &ImageRef) -> Result<ImageSummary> {
        let _ = image;
        Err(self.info().unsupported(Capability::Images))
    }

    /// Removes blobs and unpacked layers no image refers to.
    async fn prune_images(&self) -> Result<PruneReport> {
        Err(self.info().unsupported(Capability::Images))
    }

    /// Loads the images of an OCI image layout (a directory or a tar of one), as seen
    /// from where the runtime runs.
    async fn load_image(&self, path: &std::path::Path) -> Result<Vec<ImageSummary>> {
        let _ = path;
        Err(self.info().unsupported(Capability::Images))
    }

    /// Makes a single-layer image named `image` from a root filesystem (a directory or
    /// a tar), as seen from where the runtime runs.
    async fn import_image(
        &self,
        rootfs: &std::path::Path,
        image: &ImageRef,
    ) -> Result<ImageSummary> {
        let _ = (rootfs, image);
        Err(self.info().unsupported(Capability::Images))
    }

    /// Checks credentials against their registry and, when the registry accepts them,
    /// keeps them where the runtime's pulls find them (`docker login`).
    async fn login(&self, login: RegistryLogin) -> Result<()> {
        let _ = login;
        Err(self.info().unsupported(Capability::Images))
    }

    /// Forgets the credentials kept for `registry`; true if there were any
    /// (`docker logout`).
    async fn logout(&self, registry: &str) -> Result<bool> {
        let _ = registry;
        Err(self.info().unsupported(Capability::Images))
    }
}
