//! locald's native backend.
//!
//! [`ProcessRuntime`] runs host commands (RFC phase 1): on Linux and macOS alike, each
//! command in its own process group so that a timeout, a kill or dropping its handle
//! reaches everything it started. On Linux, `ContainerRuntime` also runs OCI
//! containers with youki's `libcontainer`, each created and supervised by a small shim
//! process; elsewhere its container calls return
//! [`Error::Unsupported`](locald_core::Error::Unsupported). On Linux the `image` module
//! pulls images from registries, keeps them in a content-addressed store and unpacks
//! their layers safely; `ContainerRuntime` runs containers from them. [`util`] holds
//! the small helpers every locald crate shares (atomic file writes, process start
//! times, random ids).
//!
//! ```
//! use locald_core::{Command, Runtime};
//! use locald_runtime::ProcessRuntime;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let runtime = ProcessRuntime::new();
//! let output = runtime
//!     .run_command(Command::new("sh").args(["-c", "echo hi; exit 7"]))
//!     .await?;
//! assert_eq!(output.stdout, b"hi\n");
//! assert_eq!(output.status.code(), Some(7));
//! # Ok::<(), locald_core::Error>(()) }).unwrap();
//! ```

#[cfg(target_os = "linux")]
mod container;
#[cfg(not(target_os = "linux"))]
mod container_other;
pub mod host;
#[cfg(target_os = "linux")]
pub mod image;
mod process;
#[cfg(unix)]
mod process_unix;
#[cfg(unix)]
mod sys;
#[cfg(target_os = "linux")]
pub mod testing;
pub mod timing;
pub mod util;

#[cfg(target_os = "linux")]
pub use container::{
    prefork_shim_forker, prime_cgroup_attach, rootless_readiness, run_if_requested, shim_main,
    ContainerRuntime, RootlessCheck, SHIM_ARG,
};
#[cfg(not(target_os = "linux"))]
pub use container_other::{
    prefork_shim_forker, prime_cgroup_attach, run_if_requested, shim_main, ContainerRuntime,
    SHIM_ARG,
};
/// The OCI specification types locald uses, re-exported so that callers name the same
/// versions.
pub use oci_spec;
/// What an image says about how to run it: the `config` section of an OCI (or Docker)
/// image config, as oci-spec parses it. The store's resolved images and the container
/// runtime both use this one type.
pub use oci_spec::image::Config as ImageConfig;
pub use process::ProcessRuntime;
