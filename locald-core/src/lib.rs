//! The locald API: one object-safe, async [`Runtime`] trait for running host commands
//! and OCI containers, whatever the platform.
//!
//! This crate holds the types every backend and every embedder shares and nothing
//! platform specific. The backends live elsewhere: `locald-runtime` (Linux processes and
//! containers), `locald-lima` (macOS, through a managed Lima VM) and `locald-wsl`
//! (Windows, through WSL2). Most programs depend on the `locald` crate, which re-exports
//! this one and picks the right backend with `locald::runtime()`.
//!
//! # Running a command
//!
//! A [`Command`] is plain data (it can cross a socket to a daemon unchanged). Hand it to
//! any runtime:
//!
//! ```no_run
//! # async fn demo(runtime: std::sync::Arc<dyn locald_core::Runtime>) -> locald_core::Result<()> {
//! use std::time::Duration;
//! use locald_core::Command;
//!
//! let output = runtime
//!     .run_command(
//!         Command::new("sh")
//!             .args(["-c", "echo hello; exit 3"])
//!             .timeout(Duration::from_secs(5)),
//!     )
//!     .await?;
//! assert_eq!(output.stdout, b"hello\n");
//! assert_eq!(output.status.code(), Some(3));
//! # Ok(()) }
//! ```
//!
//! # Describing a container
//!
//! [`ContainerSpec::builder`] takes the strings people type on a `docker run` command
//! line and checks all of them in [`build`](ContainerSpecBuilder::build):
//!
//! ```
//! use locald_core::{ContainerSpec, ContainerSource, ImageRef};
//!
//! let spec = ContainerSpec::builder("busybox")
//!     .cmd(["echo", "hello"])
//!     .memory("64m")
//!     .pids_limit(32)
//!     .auto_remove(true)
//!     .build()?;
//! let busybox: ImageRef = "docker.io/library/busybox:latest".parse()?;
//! assert_eq!(spec.source, ContainerSource::Image(busybox));
//!
//! let bad = ContainerSpec::builder("busybox").publish("80:http").build();
//! assert!(bad.unwrap_err().to_string().starts_with("invalid port mapping \"80:http\""));
//! # Ok::<(), locald_core::Error>(())
//! ```
//!
//! # Writing a backend
//!
//! Implement [`Runtime::info`] and [`Runtime::spawn`]; every other method has a default
//! that returns [`Error::Unsupported`] naming the capability, so a backend grows one
//! capability at a time without ever panicking or silently doing nothing:
//!
//! ```
//! use async_trait::async_trait;
//! use locald_core::{
//!     Capability, Command, ContainerSpec, Error, Platform, Process, Result, Runtime,
//!     RuntimeInfo,
//! };
//!
//! #[derive(Debug)]
//! struct Nothing;
//!
//! #[async_trait]
//! impl Runtime for Nothing {
//!     fn info(&self) -> RuntimeInfo {
//!         RuntimeInfo::new("nothing", Platform::Other, [])
//!     }
//!     async fn spawn(&self, _command: Command) -> Result<Process> {
//!         Err(self.info().unsupported(Capability::Commands))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let runtime: std::sync::Arc<dyn Runtime> = std::sync::Arc::new(Nothing);
//! let spec = ContainerSpec::builder("busybox").build()?;
//! let err = runtime.run_container(spec).await.unwrap_err();
//! assert!(err.is_unsupported());
//! assert_eq!(
//!     err.to_string(),
//!     "running containers is not supported by the nothing runtime on an unsupported operating system"
//! );
//! # Ok::<(), Error>(()) }).unwrap();
//! ```
//!
//! # Features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `remote` | off | [`remote`]: the daemon API, `RemoteRuntime` (a [`Runtime`] served by a `locald daemon`), and the seams a remote backend plugs into (`Dial`, `PathMap`). Adds hyper's HTTP/1.1 client; no platform-specific code. |
//!
//! Without features this crate depends on little more than serde, tokio's sync and
//! I/O traits, and oci-spec's image reference parser.

mod command;
mod container;
mod error;
mod image;
mod paths;
mod platform;
mod process;
#[cfg(feature = "remote")]
pub mod remote;
mod runtime;
mod units;

pub use command::{Command, Env, ExitStatus, Output, Signal, Stdin, Stdio};
pub use container::{
    ContainerHandle, ContainerSource, ContainerSpec, ContainerSpecBuilder, ContainerState,
    ContainerSummary, Isolation, LogOptions, LogStream, Mount, MountSource, NetworkMode,
    PortMapping, Protocol, Resources,
};
pub use error::{Error, Result};
pub use image::ImageRef;
pub use paths::Paths;
pub use platform::{Detection, Platform, PlatformProbe};
pub use process::{Process, ProcessControl, ProcessOutput, ProcessStdin, TerminalSize};
pub use runtime::{
    Capability, ImageSummary, LogChunks, ProgressSender, PruneReport, PullOptions, PullProgress,
    RegistryLogin, Runtime, RuntimeInfo,
};
pub use units::{ByteSize, Cpus};

#[doc(hidden)]
pub use async_trait::async_trait;
