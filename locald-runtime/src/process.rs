//! The host runtime: processes, and on Linux the image store.

use std::{path::Path, sync::OnceLock};

use async_trait::async_trait;
use locald_core::{
    Capability, Command, ImageRef, ImageSummary, Output, Paths, Platform, Process, PruneReport,
    PullOptions, Result, Runtime, RuntimeInfo,
};

/// Runs commands directly on the host, and on Linux keeps images in
/// `$LOCALD_HOME/images`.
///
/// Each command leads a new process group. A [`timeout`](Command::timeout) kills the
/// whole group with SIGKILL; so does dropping a spawned [`Process`] that was not waited
/// for.
#[derive(Debug)]
pub struct ProcessRuntime {
    platform: Platform,
    paths: Paths,
    #[cfg(target_os = "linux")]
    images: OnceLock<crate::image::ImageStore>,
}

impl Default for ProcessRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessRuntime {
    /// A runtime for this host, keeping its data where [`Paths::from_process_env`] says.
    pub fn new() -> Self {
        Self::with_paths(Paths::from_process_env())
    }

    /// A runtime keeping its data under `paths`.
    pub fn with_paths(paths: Paths) -> Self {
        ProcessRuntime {
            platform: Platform::detect(),
            paths,
            #[cfg(target_os = "linux")]
            images: OnceLock::new(),
        }
    }

    /// The image store, opened on first use.
    #[cfg(target_os = "linux")]
    pub fn images(&self) -> Result<&crate::image::ImageStore> {
        if let Some(store) = self.images.get() {
            return Ok(store);
        }
        let store = crate::image::ImageStore::open(&self.paths)?;
        Ok(self.images.get_or_init(|| store))
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn info(&self) -> RuntimeInfo {
        let mut caps = vec![];
        if cfg!(unix) {
            caps.push(Capability::Commands);
        }
        if cfg!(target_os = "linux") {
            caps.push(Capability::Images);
        }
        RuntimeInfo::new("process", self.platform, caps)
    }

    async fn spawn(&self, command: Command) -> Result<Process> {
        #[cfg(unix)]
        {
            crate::process_unix::spawn(command)
        }
        #[cfg(not(unix))]
        {
            let _ = command;
            Err(self.info().unsupported(Capability::Commands))
        }
    }

    async fn run_command(&self, command: Command) -> Result<Output> {
        #[cfg(unix)]
        {
            crate::process_unix::run(command).await
        }
        #[cfg(not(unix))]
        {
            let _ = command;
            Err(self.info().unsupported(Capability::Commands))
        }
    }

    #[cfg(target_os = "linux")]
    async fn pull_image(&self, image: &ImageRef, options: PullOptions) -> Result<ImageSummary> {
        self.images()?.pull(image, options).await
    }

    #[cfg(target_os = "linux")]
    async fn list_images(&self) -> Result<Vec<ImageSummary>> {
        self.images()?.list()
    }

    #[cfg(target_os = "linux")]
    async fn remove_image(&self, image: &ImageRef) -> Result<ImageSummary> {
        self.images()?.remove(image)
    }

    #[cfg(target_os = "linux")]
    async fn prune_images(&self) -> Result<PruneReport> {
        let store = self.images()?.clone();
        tokio::task::spawn_blocking(move || store.prune())
            .await
            .map_err(|e| locald_core::Error::io("pruning images", std::io::Error::other(e)))?
    }

    #[cfg(target_os = "linux")]
    async fn load_image(&self, path: &Path) -> Result<Vec<ImageSummary>> {
        self.images()?.load(path, PullOptions::default()).await
    }

    #[cfg(target_os = "linux")]
    async fn import_image(&self, rootfs: &Path, image: &ImageRef) -> Result<ImageSummary> {
        self.images()?
            .import(rootfs, image, PullOptions::default())
            .await
    }
}
