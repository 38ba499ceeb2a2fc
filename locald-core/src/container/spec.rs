//! What a container is made of: [`ContainerSpec`], its source, network, isolation
//! and limits.

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr};

use serde::{Deserialize, Serialize};

use super::*;
use crate::{ByteSize, Cpus, Error, ImageRef, ProgressSender, PullOptions, Result};

/// Where a container's root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ContainerSource {
    /// An OCI image, pulled when it is not in the local store.
    Image(ImageRef),
    /// A root filesystem directory already on disk.
    Rootfs(PathBuf),
}

/// Which network a container gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum NetworkMode {
    /// Its own network namespace; published ports reach it from the host (default, as
    /// docker's bridge).
    #[default]
    Private,
    /// Its own network namespace with only loopback.
    None,
    /// The host's network namespace.
    Host,
}

impl FromStr for NetworkMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "private" | "bridge" => Ok(NetworkMode::Private),
            "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            _ => Err(Error::invalid(
                "network mode",
                s,
                "expected one of none, host, private",
            )),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetworkMode::Private => "private",
            NetworkMode::None => "none",
            NetworkMode::Host => "host",
        })
    }
}

/// How strongly a container is isolated from the host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Isolation {
    /// Docker's defaults: namespaces, cgroups, the default capability set.
    #[default]
    Default,
    /// Safe Mode for untrusted workloads: no capabilities, `no_new_privs`, a default
    /// seccomp profile, a read-only root with a writable `/tmp`, a private network and a
    /// user namespace where the kernel allows it.
    Safe,
}

/// Resource limits, enforced with cgroups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Resources {
    /// Memory limit (default: none).
    pub memory: Option<ByteSize>,
    /// CPU quota (default: none).
    pub cpus: Option<Cpus>,
    /// Most processes and threads at once (default: none).
    pub pids: Option<u64>,
}

/// Everything needed to start a container. Build one with [`ContainerSpec::builder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContainerSpec {
    /// Where the root filesystem comes from.
    pub source: ContainerSource,
    /// Overrides the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Overrides the image's command.
    pub cmd: Option<Vec<String>>,
    /// Environment set over the image's.
    pub env: BTreeMap<String, String>,
    /// Working directory (absolute), over the image's.
    pub workdir: Option<PathBuf>,
    /// User as `name`, `uid`, `name:group` or `uid:gid`, over the image's.
    pub user: Option<String>,
    /// Hostname (default: the first 12 characters of the id).
    pub hostname: Option<String>,
    /// Mounts, in order.
    pub mounts: Vec<Mount>,
    /// Ports published on the host.
    pub ports: Vec<PortMapping>,
    /// cgroup limits.
    pub resources: Resources,
    /// Network.
    pub network: NetworkMode,
    /// Allocate a terminal.
    pub tty: bool,
    /// The terminal's size from the start (with `tty`); `None` leaves it to the
    /// runtime until [`Process::resize`](crate::Process::resize).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_size: Option<crate::TerminalSize>,
    /// Keep stdin open for the caller to write to.
    pub stdin: bool,
    /// Mount the root filesystem read-only.
    pub read_only: bool,
    /// Isolation level.
    pub isolation: Isolation,
    /// Name (default: generated).
    pub name: Option<String>,
    /// Labels for the caller's own bookkeeping.
    pub labels: BTreeMap<String, String>,
    /// Remove the container when it exits.
    pub auto_remove: bool,
    /// The platform to pick, as `os/arch[/variant]`, when the image is not stored and
    /// must be pulled (default: `linux/` and the host's architecture).
    #[serde(default)]
    pub platform: Option<String>,
    /// Allow plain HTTP or unverified TLS for the image's registry when the image must
    /// be pulled (default `false`).
    #[serde(default)]
    pub insecure: bool,
    /// Where pulling a missing image reports progress: a channel, so it neither
    /// crosses the daemon API nor takes part in `==`.
    #[serde(skip)]
    pub(super) pull_progress: ProgressSink,
}

/// A progress channel carried by a spec; all sinks compare equal.
#[derive(Debug, Clone, Default)]
pub(super) struct ProgressSink(pub(super) Option<ProgressSender>);

impl PartialEq for ProgressSink {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ProgressSink {}

impl ContainerSpec {
    /// How [`Runtime::run_container`](crate::Runtime::run_container) pulls the image
    /// when it is not stored yet, as `docker run` does: this spec's platform,
    /// `insecure` and progress channel.
    pub fn pull_options(&self) -> PullOptions {
        let mut options = PullOptions::default().insecure(self.insecure);
        if let Some(platform) = &self.platform {
            options = options.platform(platform.clone());
        }
        if let Some(sender) = &self.pull_progress.0 {
            options = options.progress(sender.clone());
        }
        options
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_modes() {
        assert_eq!("none".parse::<NetworkMode>().unwrap(), NetworkMode::None);
        assert_eq!(
            "bridge".parse::<NetworkMode>().unwrap(),
            NetworkMode::Private
        );
        assert!("overlay".parse::<NetworkMode>().is_err());
    }
}
