//! locald's macOS backend: Linux work runs in `locald-vm`, a Lima instance that locald
//! downloads (pinned and verified) into `~/.local/share/locald/tools/` and manages
//! itself; the user never installs Lima.
//!
//! [`LimaRuntime`] is the VM's life cycle plus a transport, not a second runtime: the
//! Linux `locald daemon` runs in the guest, Lima forwards its socket to the host, and
//! every call goes to a [`RemoteRuntime`] over that socket. The first call brings the
//! VM up, once:
//!
//! 1. install the pinned Lima ([`install::Installer`]: sha256-checked, atomic, locked);
//! 2. write `lima.yaml` from typed Rust ([`limayaml::LimaYaml`]) and `limactl create`;
//! 3. `limactl start` ([`vm::Vm`], through the [`Limactl`] trait);
//! 4. connect to the daemon's forwarded socket, with host paths mapped through the
//!    VM's mounts (a path outside every mount is refused before anything is sent).
//!
//! A failure names the step that failed.
//!
//! ```no_run
//! use locald_core::{Command, Runtime};
//! use locald_lima::LimaRuntime;
//!
//! # async fn demo() -> locald_core::Result<()> {
//! let runtime = LimaRuntime::new();
//! // Installs Lima and starts locald-vm on first use (minutes the first time).
//! let out = runtime.run_command(Command::new("uname").arg("-m")).await?;
//! println!("the guest is {}", String::from_utf8_lossy(&out.stdout));
//! # Ok(()) }
//! ```
//!
//! Everything here builds and is tested on Linux: the installer against a loopback
//! HTTP server, `lima.yaml`, the life cycle against [`fake::FakeLimactl`] (which
//! replays Lima's output formats), and `LimaRuntime` against a real QEMU guest running
//! the real daemon. Running the real `limactl` needs a Mac.
//!
//! | environment variable | meaning |
//! |---|---|
//! | `LOCALD_HOME` | locald's data home; Lima goes to `tools/lima-<version>/`, its instances to `lima/` |
//! | `LOCALD_LIMA_URL` | a mirror for the Lima archive: base URL, full URL or local file ([`install::Source`]) |
//! | `LOCALD_LIMACTL` | use this `limactl` instead of installing the pinned one |

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;
use backon::{ConstantBuilder, Retryable};
use locald_core::{
    remote::{Host, PrefixMap, RemoteRuntime},
    Capability, Command, ContainerHandle, ContainerSpec, ContainerSummary, ExitStatus, ImageRef,
    ImageSummary, LogChunks, LogOptions, Output, Paths, Platform, Process, ProgressSender,
    PruneReport, PullOptions, RegistryLogin, Runtime, RuntimeInfo, Signal,
};
use tokio::sync::OnceCell;

mod error;
pub mod fake;
pub mod install;
pub mod limactl;
pub mod limayaml;
pub mod release;
pub mod vm;

pub use error::{Error, Result};
pub use limactl::{Instance, Limactl, LimactlBinary, Status};
pub use limayaml::{VmOptions, VmType};
pub use vm::{Vm, VmStatus};

/// The name of the Lima instance locald manages.
pub const VM_NAME: &str = "locald-vm";

/// The environment variable naming a `limactl` to use instead of the pinned one.
pub const LIMACTL_ENV: &str = "LOCALD_LIMACTL";

/// How the host reaches the daemon in the VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// The socket Lima forwards from the guest (`portForwards` guestSocket →
    /// hostSocket), in the instance directory. The default.
    ForwardedSocket,
    /// A forwarded loopback TCP port and the daemon's token (`locald daemon --tcp`),
    /// for VMs whose forwarder carries TCP only (QEMU user-mode networking).
    Tcp {
        /// The host's end of the forward (loopback).
        addr: SocketAddr,
        /// The daemon's token.
        token: String,
    },
}

/// Runs Linux work in the `locald-vm` Lima instance.
#[derive(Debug, Clone)]
pub struct LimaRuntime {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: String,
    paths: Paths,
    options: Option<VmOptions>,
    limactl: Option<Arc<dyn Limactl>>,
    transport: Transport,
    start_timeout: Duration,
    connect_timeout: Duration,
    download_progress: Option<ProgressSender>,
    start_progress: Option<limactl::ProgressLines>,
    remote: OnceCell<RemoteRuntime>,
}

/// Builds a [`LimaRuntime`]; made by [`LimaRuntime::builder`].
#[derive(Debug)]
pub struct LimaRuntimeBuilder {
    inner: Inner,
}

impl LimaRuntimeBuilder {
    /// locald's directories (default: from the process environment).
    pub fn paths(mut self, paths: Paths) -> Self {
        self.inner.paths = paths;
        self
    }

    /// The VM's size, mounts and guest binary (default: [`VmOptions::new`] with the
    /// user's home and locald's tools directory).
    pub fn vm_options(mut self, options: VmOptions) -> Self {
        self.inner.options = Some(options);
        self
    }

    /// The `limactl` to drive (default: `LOCALD_LIMACTL`, else the pinned Lima,
    /// installed on first use).
    pub fn limactl(mut self, limactl: Arc<dyn Limactl>) -> Self {
        self.inner.limactl = Some(limactl);
        self
    }

    /// How to reach the daemon (default: [`Transport::ForwardedSocket`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.inner.transport = transport;
        self
    }

    /// How long `limactl start` may take (default 10 minutes).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.inner.start_timeout = timeout;
        self
    }

    /// How long to wait for the daemon to answer once the VM runs (default 60 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.inner.connect_timeout = timeout;
        self
    }

    /// Where the Lima download reports progress (default: nowhere).
    pub fn download_progress(mut self, sender: ProgressSender) -> Self {
        self.inner.download_progress = Some(sender);
        self
    }

    /// Where Lima's start-up lines go (default: the log).
    pub fn start_progress(mut self, lines: limactl::ProgressLines) -> Self {
        self.inner.start_progress = Some(lines);
        self
    }

    /// The runtime. Nothing happens until its first call.
    pub fn build(self) -> LimaRuntime {
        LimaRuntime {
            inner: Arc::new(self.inner),
        }
    }
}

impl Default for LimaRuntime {
    fn default() -> Self {
        LimaRuntime::new()
    }
}

impl LimaRuntime {
    /// A runtime for the `locald-vm` instance, configured from the environment.
    pub fn new() -> Self {
        LimaRuntime::builder().build()
    }

    /// A builder with every default.
    pub fn builder() -> LimaRuntimeBuilder {
        LimaRuntimeBuilder {
            inner: Inner {
                name: VM_NAME.to_owned(),
                paths: Paths::from_process_env(),
                options: None,
                limactl: None,
                transport: Transport::ForwardedSocket,
                start_timeout: Duration::from_secs(600),
                connect_timeout: Duration::from_secs(60),
                download_progress: None,
                start_progress: None,
                remote: OnceCell::new(),
            },
        }
    }

    /// `LIMA_HOME` for this locald.
    pub fn lima_home(&self) -> Result<PathBuf> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        vm::lima_home(
            self.inner.paths.data_home(),
            home.as_deref(),
            vm::MAX_SOCKET_PATH,
        )
    }

    fn options(&self) -> VmOptions {
        self.inner.options.clone().unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| self.inner.paths.data_home().to_owned());
            VmOptions::new(&home, &self.inner.paths.tools_dir())
        })
    }

    fn installer(&self) -> install::Installer {
        let installer = install::Installer::new(self.inner.paths.tools_dir());
        match &self.inner.download_progress {
            Some(p) => installer.progress(p.clone()),
            None => installer,
        }
    }

    /// The `limactl` to drive and its Lima version: the configured one,
    /// `LOCALD_LIMACTL`, or the pinned install (installed now when `install`).
    async fn limactl(&self, install: bool) -> Result<Option<(Arc<dyn Limactl>, String)>> {
        if let Some(limactl) = &self.inner.limactl {
            let version = limactl.version().await?;
            return Ok(Some((limactl.clone(), version)));
        }
        let lima_home = self.lima_home()?;
        if let Some(program) = std::env::var_os(LIMACTL_ENV).filter(|p| !p.is_empty()) {
            let limactl = LimactlBinary::new(program, lima_home);
            let version = limactl.version().await?;
            return Ok(Some((Arc::new(limactl), version)));
        }
        let installer = self.installer();
        let installed = match installer.installed(&release::PINNED) {
            Some(installed) => installed,
            None if install => installer
                .install(&release::PINNED)
                .await
                .map_err(Error::step(
                    &self.inner.name,
                    format!("installing {}", release::PINNED),
                ))?,
            None => return Ok(None),
        };
        Ok(Some((
            Arc::new(LimactlBinary::new(installed.limactl(), lima_home)),
            installed.version,
        )))
    }

    /// The VM's life cycle, or `None` when Lima is not installed and `install` is
    /// false.
    pub async fn vm(&self, install: bool) -> Result<Option<Vm>> {
        let Some((limactl, version)) = self.limactl(install).await? else {
            return Ok(None);
        };
        let config = self.inner.paths.data_home().join("vm/lima.yaml");
        let mut vm = Vm::new(&self.inner.name, limactl, self.options(), config, version)
            .start_timeout(self.inner.start_timeout);
        if let Some(lines) = &self.inner.start_progress {
            vm = vm.progress(lines.clone());
        }
        Ok(Some(vm))
    }

    /// The VM's state, without installing anything.
    pub async fn status(&self) -> Result<VmStatus> {
        match self.vm(false).await? {
            Some(vm) => vm.status(true).await,
            None => {
                let lima_home = self.lima_home()?;
                Ok(VmStatus {
                    name: self.inner.name.clone(),
                    state: "absent".into(),
                    lima_version: release::PINNED.version.into(),
                    lima_installed: false,
                    created_by_lima: None,
                    socket: lima_home
                        .join(&self.inner.name)
                        .join(limayaml::HOST_SOCKET_IN_INSTANCE),
                    lima_home,
                    dir: None,
                    vm_type: None,
                    cpus: None,
                    memory: None,
                    errors: 0,
                })
            }
        }
    }

    /// Brings the VM up (once) and returns the runtime of the daemon inside it.
    pub async fn ensure_running(&self) -> Result<&RemoteRuntime> {
        self.inner.remote.get_or_try_init(|| self.bring_up()).await
    }

    async fn bring_up(&self) -> Result<RemoteRuntime> {
        let name = &self.inner.name;
        let vm = self.vm(true).await?.expect("installed on demand");
        let socket = vm.ensure_running().await?;
        let host = match &self.inner.transport {
            Transport::ForwardedSocket => Host::Unix(socket),
            Transport::Tcp { addr, token } => Host::Tcp {
                addr: *addr,
                token: None,
            }
            .with_token(token.clone()),
        };
        let mut map = PrefixMap::new();
        for mount in &self.options().mounts {
            map = map.share(mount.clone(), mount.clone());
        }
        let tries = (self.inner.connect_timeout.as_millis() / 200).max(1) as usize;
        let connect = || {
            RemoteRuntime::builder(host.clone())
                .path_map(map.clone())
                .connect()
        };
        let remote = connect
            .retry(
                ConstantBuilder::default()
                    .with_delay(Duration::from_millis(200))
                    .with_max_times(tries),
            )
            // Only a daemon that is not up yet is worth waiting for.
            .when(|e| matches!(e, locald_core::Error::Io { .. }))
            .await
            .map_err(|e| {
                Error::step(name, format!("connecting to the locald daemon at {host}"))(
                    Error::Daemon(e),
                )
            })?;
        tracing::info!(vm = %name, daemon = %remote.daemon().runtime.name, "connected to the VM's daemon");
        Ok(remote)
    }

    async fn remote(&self) -> locald_core::Result<&RemoteRuntime> {
        self.ensure_running().await.map_err(Into::into)
    }
}

#[async_trait]
impl Runtime for LimaRuntime {
    fn info(&self) -> RuntimeInfo {
        match self.inner.remote.get() {
            Some(remote) => remote.info(),
            // What the guest's Linux runtime offers, until it says so itself.
            None => RuntimeInfo::new(
                "lima",
                Platform::Macos,
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
        self.remote().await?.spawn(command).await
    }

    async fn run_command(&self, command: Command) -> locald_core::Result<Output> {
        self.remote().await?.run_command(command).await
    }

    async fn run_container(&self, spec: ContainerSpec) -> locald_core::Result<ContainerHandle> {
        self.remote().await?.run_container(spec).await
    }

    async fn list_containers(&self, all: bool) -> locald_core::Result<Vec<ContainerSummary>> {
        self.remote().await?.list_containers(all).await
    }

    async fn inspect_container(&self, id: &str) -> locald_core::Result<ContainerSummary> {
        self.remote().await?.inspect_container(id).await
    }

    async fn wait_container(&self, id: &str) -> locald_core::Result<ExitStatus> {
        self.remote().await?.wait_container(id).await
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> locald_core::Result<()> {
        self.remote().await?.stop_container(id, grace).await
    }

    async fn kill_container(&self, id: &str, signal: Signal) -> locald_core::Result<()> {
        self.remote().await?.kill_container(id, signal).await
    }

    async fn remove_container(&self, id: &str, force: bool) -> locald_core::Result<()> {
        self.remote().await?.remove_container(id, force).await
    }

    async fn container_logs(
        &self,
        id: &str,
        options: LogOptions,
    ) -> locald_core::Result<LogChunks> {
        self.remote().await?.container_logs(id, options).await
    }

    async fn exec(&self, id: &str, command: Command) -> locald_core::Result<Process> {
        self.remote().await?.exec(id, command).await
    }

    async fn pull_image(
        &self,
        image: &ImageRef,
        options: PullOptions,
    ) -> locald_core::Result<ImageSummary> {
        self.remote().await?.pull_image(image, options).await
    }

    async fn list_images(&self) -> locald_core::Result<Vec<ImageSummary>> {
        self.remote().await?.list_images().await
    }

    async fn remove_image(&self, image: &ImageRef) -> locald_core::Result<ImageSummary> {
        self.remote().await?.remove_image(image).await
    }

    async fn prune_images(&self) -> locald_core::Result<PruneReport> {
        self.remote().await?.prune_images().await
    }

    async fn load_image(&self, path: &std::path::Path) -> locald_core::Result<Vec<ImageSummary>> {
        self.remote().await?.load_image(path).await
    }

    async fn import_image(
        &self,
        rootfs: &std::path::Path,
        image: &ImageRef,
    ) -> locald_core::Result<ImageSummary> {
        self.remote().await?.import_image(rootfs, image).await
    }

    async fn login(&self, login: RegistryLogin) -> locald_core::Result<()> {
        self.remote().await?.login(login).await
    }

    async fn logout(&self, registry: &str) -> locald_core::Result<bool> {
        self.remote().await?.logout(registry).await
    }
}
