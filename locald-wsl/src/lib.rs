//! locald's Windows backend: Linux work runs in `locald`, a WSL2 distribution locald
//! imports and manages, behind the locald daemon.
//!
//! Inside WSL2 locald is a Linux program and uses the native backend unchanged
//! ([`Platform::detect`](locald_core::Platform::detect) tells WSL2 from WSL1, and
//! [`inside`] explains what WSL2 does differently). Run from Windows, [`WslRuntime`]
//! proxies into the distribution as the `docker` CLI proxies into Docker Desktop's
//! engine:
//!
//! - `wsl.exe` sits behind the narrow [`Wsl`] trait: [`WslExe`] runs the real program
//!   (with `WSL_UTF8=1` and no console window), [`fake::FakeWsl`] replays WSL's
//!   output formats for tests. [`output`] reads what it prints.
//! - [`ManagedDistro`] imports the distribution from a digest-verified root
//!   filesystem archive under `%LOCALAPPDATA%\locald\wsl\`, upgrades it by
//!   re-import, and removes it.
//! - [`WslRuntime`] reaches `locald daemon --stdio` in the distribution through
//!   `wsl.exe -d locald -u root --exec locald daemon --stdio` (a [`Dial`] per
//!   connection) and hands every call to a
//!   [`RemoteRuntime`]; Windows paths in requests are translated by `wslpath`'s rules
//!   ([`WslPaths`]).
//!
//! ```no_run
//! use locald_core::{Command, Runtime};
//! use locald_wsl::WslRuntime;
//!
//! # async fn demo() -> locald_core::Result<()> {
//! let runtime = WslRuntime::new();
//! let output = runtime
//!     .run_command(Command::new("uname").arg("-r").current_dir(r"C:\Users\ada"))
//!     .await?;
//! println!("{}", String::from_utf8_lossy(&output.stdout));
//! # Ok(()) }
//! ```
//!
//! Everything but the spawning of `wsl.exe` without a console window builds and is
//! tested on Linux: the fake's `--exec` runs the real `locald daemon --stdio`, so the
//! conformance suite runs through this crate's transport end to end.

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use locald_core::{
    remote::{command_connection, Connection, Dial, PathMap, RemoteRuntime},
    Capability, Command, ContainerHandle, ContainerSpec, ContainerSummary, ExitStatus, ImageRef,
    ImageSummary, LogChunks, LogOptions, Output, Platform, Process, PruneReport, PullOptions,
    RegistryLogin, Runtime, RuntimeInfo, Signal,
};
use tokio::sync::OnceCell;

mod distro;
mod error;
pub mod fake;
pub mod inside;
pub mod output;
mod paths;
mod wsl;

pub use distro::{
    default_install_root, sha256_file, DistroStatus, Installed, ManagedDistro, RootfsArchive,
    DISTRO_NAME,
};
pub use error::{Error, Result};
pub use paths::{automount_root, ini_value, WslPaths};
pub use wsl::{exec_args, Wsl, WslExe};

/// The daemon command run in the distribution.
const DAEMON: [&str; 3] = ["locald", "daemon", "--stdio"];

/// Runs Linux work in the managed WSL2 distribution, from Windows. Cheap to clone;
/// clones share the connection to the daemon.
#[derive(Debug, Clone)]
pub struct WslRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    wsl: Arc<dyn Wsl>,
    distro: ManagedDistro,
    user: String,
    daemon: Vec<String>,
    paths: Option<Arc<dyn PathMap>>,
    rootfs: Option<RootfsArchive>,
    remote: OnceCell<RemoteRuntime>,
}

/// Builds a [`WslRuntime`]; made by [`WslRuntime::builder`].
#[derive(Debug)]
pub struct WslRuntimeBuilder {
    wsl: Arc<dyn Wsl>,
    name: String,
    root: Option<PathBuf>,
    user: String,
    daemon: Vec<String>,
    paths: Option<Arc<dyn PathMap>>,
    rootfs: Option<RootfsArchive>,
}

impl WslRuntimeBuilder {
    /// The `wsl.exe` to drive (default: [`WslExe`], `wsl.exe` on `PATH`).
    pub fn wsl(mut self, wsl: Arc<dyn Wsl>) -> Self {
        self.wsl = wsl;
        self
    }

    /// The distribution (default [`DISTRO_NAME`], `locald`).
    pub fn distro(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Where distributions are imported (default [`default_install_root`],
    /// `%LOCALAPPDATA%\locald\wsl`).
    pub fn install_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.root = Some(root.into());
        self
    }

    /// The Linux user the daemon runs as (default `root`: containers need it).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = user.into();
        self
    }

    /// The daemon command in the distribution (default `locald daemon --stdio`).
    pub fn daemon_command<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.daemon = argv.into_iter().map(Into::into).collect();
        self
    }

    /// How this machine's paths are named in the distribution (default: [`WslPaths`]
    /// for the distribution, with its `[automount] root` read from its
    /// `/etc/wsl.conf` on first use).
    pub fn path_map(mut self, paths: impl PathMap + 'static) -> Self {
        self.paths = Some(Arc::new(paths));
        self
    }

    /// Imports the distribution from `archive` on first use when it is not
    /// registered (default: no archive; a missing distribution is an error that says
    /// to run `locald wsl install`).
    pub fn rootfs(mut self, archive: RootfsArchive) -> Self {
        self.rootfs = Some(archive);
        self
    }

    /// The runtime; nothing runs until the first call.
    pub fn build(self) -> WslRuntime {
        let root = self
            .root
            .or_else(|| default_install_root().ok())
            .unwrap_or_else(|| PathBuf::from("locald-wsl"));
        WslRuntime {
            inner: Arc::new(Inner {
                distro: ManagedDistro::new(self.wsl.clone(), self.name, root),
                wsl: self.wsl,
                user: self.user,
                daemon: self.daemon,
                paths: self.paths,
                rootfs: self.rootfs,
                remote: OnceCell::new(),
            }),
        }
    }
}

impl Default for WslRuntime {
    fn default() -> Self {
        WslRuntime::new()
    }
}

impl WslRuntime {
    /// The managed `locald` distribution through the real `wsl.exe`; the rootfs
    /// archive to import on first use is taken from `LOCALD_WSL_ROOTFS` and
    /// `LOCALD_WSL_ROOTFS_SHA256` when both are set.
    pub fn new() -> Self {
        let mut builder = WslRuntime::builder();
        if let (Some(path), Ok(sha)) = (
            std::env::var_os("LOCALD_WSL_ROOTFS"),
            std::env::var("LOCALD_WSL_ROOTFS_SHA256"),
        ) {
            builder = builder.rootfs(RootfsArchive::new(path, sha));
        }
        builder.build()
    }

    /// A builder with every default.
    pub fn builder() -> WslRuntimeBuilder {
        WslRuntimeBuilder {
            wsl: Arc::new(WslExe::default()),
            name: DISTRO_NAME.to_owned(),
            root: None,
            user: "root".to_owned(),
            daemon: DAEMON.iter().map(|s| (*s).to_owned()).collect(),
            paths: None,
            rootfs: None,
        }
    }

    /// The managed distribution (status, install, uninstall).
    pub fn distro(&self) -> &ManagedDistro {
        &self.inner.distro
    }

    /// Makes sure the distribution is registered and on WSL 2 (importing it when an
    /// archive was given), then connects to its daemon. Later calls reuse the
    /// connection.
    pub async fn connect(&self) -> locald_core::Result<&RemoteRuntime> {
        self.inner
            .remote
            .get_or_try_init(|| self.inner.start())
            .await
    }
}

impl Inner {
    async fn start(&self) -> locald_core::Result<RemoteRuntime> {
        let name = self.distro.name().to_owned();
        let found = match self.distro.find().await? {
            Some(found) => found,
            None => match &self.rootfs {
                Some(archive) => {
                    self.distro.install(archive).await?;
                    self.distro
                        .find()
                        .await?
                        .ok_or_else(|| Error::DistroNotFound {
                            distro: name.clone(),
                        })?
                }
                None => return Err(Error::DistroNotFound { distro: name }.into()),
            },
        };
        if found.version == 1 {
            return Err(Error::Wsl1 { distro: name }.into());
        }
        let bridge = WslBridge {
            wsl: self.wsl.clone(),
            distro: name.clone(),
            user: self.user.clone(),
            argv: self.daemon.clone(),
        };
        let builder = RemoteRuntime::builder(bridge);
        let builder = match &self.paths {
            Some(paths) => builder.path_map(SharedMap(paths.clone())),
            None => {
                let mut paths = WslPaths::new(&name);
                if let Some(root) = self.automount_root().await {
                    paths = paths.automount_root(root);
                }
                builder.path_map(paths)
            }
        };
        builder.connect().await
    }

    /// The distribution's `[automount] root`, if its `/etc/wsl.conf` sets one.
    async fn automount_root(&self) -> Option<String> {
        let argv = ["cat".to_owned(), "/etc/wsl.conf".to_owned()];
        let out = self
            .wsl
            .exec(self.distro.name(), &self.user, None, &argv)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .ok()?;
        out.status
            .success()
            .then(|| automount_root(&String::from_utf8_lossy(&out.stdout)))
            .flatten()
    }
}

/// A path map shared between the builder and the connection.
#[derive(Debug)]
struct SharedMap(Arc<dyn PathMap>);

impl PathMap for SharedMap {
    fn to_daemon(&self, path: &std::path::Path) -> locald_core::Result<PathBuf> {
        self.0.to_daemon(path)
    }
}

/// The transport: each connection is one `wsl.exe -d DISTRO -u USER --cd / --exec
/// locald daemon --stdio`, its stdin and stdout carrying HTTP.
#[derive(Debug)]
pub struct WslBridge {
    wsl: Arc<dyn Wsl>,
    distro: String,
    user: String,
    argv: Vec<String>,
}

impl fmt::Display for WslBridge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wsl.exe {}",
            exec_args(&self.distro, &self.user, Some("/"), &self.argv).join(" ")
        )
    }
}

#[async_trait]
impl Dial for WslBridge {
    async fn dial(&self) -> locald_core::Result<Box<dyn Connection>> {
        let command = self
            .wsl
            .exec(&self.distro, &self.user, Some("/"), &self.argv);
        command_connection(command).map_err(|e| {
            locald_core::Error::io(
                format!("cannot connect to the locald daemon through {self}"),
                e,
            )
        })
    }
}

#[async_trait]
impl Runtime for WslRuntime {
    fn info(&self) -> RuntimeInfo {
        match self.inner.remote.get() {
            Some(remote) => remote.info(),
            // What the distribution's Linux runtime offers, until it says so itself.
            None => RuntimeInfo::new(
                "wsl",
                Platform::Windows,
                [
                    Capability::Commands,
                    Capability::Containers,
                    Capability::Images,
                    Capability::Exec,
                ],
            ),
        }
    }

    async fn spawn(&self, command: Command) -> locald_core::Result<Process> {
        self.connect().await?.spawn(command).await
    }

    async fn run_command(&self, command: Command) -> locald_core::Result<Output> {
        self.connect().await?.run_command(command).await
    }

    async fn run_container(&self, spec: ContainerSpec) -> locald_core::Result<ContainerHandle> {
        self.connect().await?.run_container(spec).await
    }

    async fn list_containers(&self, all: bool) -> locald_core::Result<Vec<ContainerSummary>> {
        self.connect().await?.list_containers(all).await
    }

    async fn inspect_container(&self, id: &str) -> locald_core::Result<ContainerSummary> {
        self.connect().await?.inspect_container(id).await
    }

    async fn wait_container(&self, id: &str) -> locald_core::Result<ExitStatus> {
        self.connect().await?.wait_container(id).await
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> locald_core::Result<()> {
        self.connect().await?.stop_container(id, grace).await
    }

    async fn kill_container(&self, id: &str, signal: Signal) -> locald_core::Result<()> {
        self.connect().await?.kill_container(id, signal).await
    }

    async fn remove_container(&self, id: &str, force: bool) -> locald_core::Result<()> {
        self.connect().await?.remove_container(id, force).await
    }

    async fn container_logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> locald_core::Result<LogChunks> {
        self.connect().await?.container_logs(id, options).await
    }

    async fn exec(&self, id: &str, command: Command) -> locald_core::Result<Process> {
        self.connect().await?.exec(id, command).await
    }

    async fn pull_image(
        &self,
        image: &ImageRef,
        options: PullOptions,
    ) -> locald_core::Result<ImageSummary> {
        self.connect().await?.pull_image(image, options).await
    }

    async fn list_images(&self) -> locald_core::Result<Vec<ImageSummary>> {
        self.connect().await?.list_images().await
    }

    async fn remove_image(&self, image: &ImageRef) -> locald_core::Result<ImageSummary> {
        self.connect().await?.remove_image(image).await
    }

    async fn prune_images(&self) -> locald_core::Result<PruneReport> {
        self.connect().await?.prune_images().await
    }

    async fn load_image(&self, path: &std::path::Path) -> locald_core::Result<Vec<ImageSummary>> {
        self.connect().await?.load_image(path).await
    }

    async fn import_image(
        &self,
        rootfs: &std::path::Path,
        image: &ImageRef,
    ) -> locald_core::Result<ImageSummary> {
        self.connect().await?.import_image(rootfs, image).await
    }

    async fn login(&self, login: RegistryLogin) -> locald_core::Result<()> {
        self.connect().await?.login(login).await
    }

    async fn logout(&self, registry: &str) -> locald_core::Result<bool> {
        self.connect().await?.logout(registry).await
    }
}
