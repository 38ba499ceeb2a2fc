//! Run host commands and OCI containers from Rust on Linux, macOS and Windows, without
//! Docker Desktop.
//!
//! This crate re-exports the [`locald_core`] API and picks the backend that fits the
//! platform it runs on:
//!
//! | platform | backend | where Linux work runs |
//! |---|---|---|
//! | Linux, WSL2 | [`native::ContainerRuntime`] (host commands and containers) | the host kernel |
//! | macOS | [`lima::LimaRuntime`] (commands and containers; [`native::ProcessRuntime`] for host commands) | the `locald-vm` Lima VM, started on first use |
//! | Windows | [`wsl`] | a WSL2 distribution |
//!
//! ```
//! use locald::{Command, Runtime};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let runtime = locald::runtime()?;
//! let output = runtime.run_command(Command::new("echo").arg("hello")).await?;
//! assert_eq!(output.stdout, b"hello\n");
//! # Ok::<(), locald::Error>(()) }).unwrap();
//! ```
//!
//! # Crates
//!
//! | crate | what it holds |
//! |---|---|
//! | `locald-core` | the [`Runtime`] trait and its types; no platform code; [`remote`]: the daemon API and [`remote::RemoteRuntime`] |
//! | `locald-runtime` | the native backend ([`native`]) |
//! | `locald-lima` | the macOS backend ([`lima`]) |
//! | `locald-wsl` | the Windows backend ([`wsl`]) |

use std::sync::Arc;

pub use locald_core::*;
/// The macOS backend.
pub use locald_lima as lima;
/// The native backend: host processes, and on Linux containers.
pub use locald_runtime as native;
/// The Windows backend.
pub use locald_wsl as wsl;

use serde::Serialize;

pub mod services;

/// The runtime for the platform this program runs on.
///
/// On Linux and WSL2 this is the container runtime (host commands and OCI containers,
/// rootless for a user who is not root; nothing to call in `main`: every program that
/// links locald is its own container helper); on macOS the Lima runtime (the VM starts on its
/// first call); on WSL1 the host-process runtime; on Windows, the WSL2 runtime.
pub fn runtime() -> Result<Arc<dyn Runtime>> {
    runtime_for(Platform::detect())
}

/// The runtime locald would pick on `platform`.
pub fn runtime_for(platform: Platform) -> Result<Arc<dyn Runtime>> {
    match platform {
        Platform::Windows => Ok(Arc::new(wsl::WslRuntime::new())),
        Platform::Macos => Ok(Arc::new(lima::LimaRuntime::new())),
        Platform::Other => Err(Error::Unsupported {
            capability: Capability::Commands,
            runtime: "locald".into(),
            platform,
        }),
        #[cfg(target_os = "linux")]
        Platform::Linux | Platform::Wsl2 => Ok(Arc::new(native::ContainerRuntime::new())),
        _ => Ok(Arc::new(native::ProcessRuntime::new())),
    }
}

/// Whether one backend can be used here, and why not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BackendStatus {
    /// The backend's name.
    pub name: &'static str,
    /// True when it can serve work on this machine.
    pub available: bool,
    /// What it does here, or why it cannot.
    pub detail: String,
}

/// Every backend locald has, and whether it can run on `platform`.
pub fn backends(platform: Platform) -> Vec<BackendStatus> {
    let process = match platform {
        Platform::Linux | Platform::Wsl2 | Platform::Wsl1 | Platform::Macos => BackendStatus {
            name: "process",
            available: true,
            detail: "host commands in their own process groups".into(),
        },
        _ => BackendStatus {
            name: "process",
            available: false,
            detail: format!("host commands are not supported on {platform}"),
        },
    };
    let container = BackendStatus {
        name: "container",
        available: cfg!(target_os = "linux")
            && matches!(platform, Platform::Linux | Platform::Wsl2),
        detail: match platform {
            Platform::Linux | Platform::Wsl2 => {
                "OCI containers on libcontainer, in a per-container shim (rootless for users who are not root)".into()
            }
            Platform::Wsl1 => {
                "WSL1 has no namespaces or cgroups; convert the distribution to WSL2".into()
            }
            _ => "needs a Linux kernel".into(),
        },
    };
    let lima = BackendStatus {
        name: "lima",
        available: platform == Platform::Macos,
        detail: if platform == Platform::Macos {
            format!(
                "Linux commands and containers in locald-vm (Lima {}, installed and started on first use)",
                lima::release::PINNED.version
            )
        } else {
            "macOS only".into()
        },
    };
    let wsl = BackendStatus {
        name: "wsl",
        available: platform == Platform::Windows,
        detail: match platform {
            Platform::Windows => format!(
                "the `{}` WSL2 distribution's daemon, through wsl.exe --exec locald daemon --stdio",
                wsl::DISTRO_NAME
            ),
            Platform::Wsl2 => "inside WSL2 locald runs as on Linux".into(),
            Platform::Wsl1 => {
                "WSL1: host commands only; convert with `wsl --set-version <distro> 2`".into()
            }
            _ => "Windows only (inside WSL2 locald runs as on Linux)".into(),
        },
    };
    vec![process, container, lima, wsl]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_a_backend_per_platform() {
        let native = if cfg!(target_os = "linux") {
            "container"
        } else {
            "process"
        };
        assert_eq!(runtime_for(Platform::Linux).unwrap().info().name, native);
        assert_eq!(runtime_for(Platform::Wsl2).unwrap().info().name, native);
        assert_eq!(runtime_for(Platform::Macos).unwrap().info().name, "lima");
        assert_eq!(runtime_for(Platform::Windows).unwrap().info().name, "wsl");
        assert!(runtime_for(Platform::Other).unwrap_err().is_unsupported());
    }

    #[test]
    fn lists_every_backend() {
        let names: Vec<_> = backends(Platform::Linux).iter().map(|b| b.name).collect();
        assert_eq!(names, ["process", "container", "lima", "wsl"]);
        assert!(backends(Platform::Linux)[0].available);
        assert!(!backends(Platform::Windows)[0].available);
        assert!(backends(Platform::Windows)[3].available, "wsl");
        assert!(!backends(Platform::Wsl2)[3].available);
        assert!(backends(Platform::Wsl1)[3].detail.contains("--set-version"));
        assert_eq!(runtime_for(Platform::Wsl1).unwrap().info().name, "process");
    }
}
