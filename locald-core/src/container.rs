//! Describing a container ([`ContainerSpec`]) and holding a running one
//! ([`ContainerHandle`]).

use std::{
    collections::BTreeMap,
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::{ByteSize, Cpus, Error, ImageRef, Process, ProgressSender, PullOptions, Result};

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

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A container port published on the host, parsed from docker's `-p` syntax:
/// `80`, `8080:80`, `8080:80/udp`, `127.0.0.1:8080:80`, `127.0.0.1::80`, `[::1]:8080:80`.
///
/// ```
/// use locald_core::{PortMapping, Protocol};
///
/// let p: PortMapping = "127.0.0.1:8080:80/tcp".parse()?;
/// assert_eq!(p.host_port, Some(8080));
/// assert_eq!(p.container_port, 80);
/// assert_eq!(p.protocol, Protocol::Tcp);
/// assert_eq!(p.to_string(), "127.0.0.1:8080:80/tcp");
/// # Ok::<(), locald_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PortMapping {
    /// The host address to listen on (default: loopback, `127.0.0.1`).
    pub host_ip: Option<IpAddr>,
    /// The host port; `None` picks a free one.
    pub host_port: Option<u16>,
    /// The port inside the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl PortMapping {
    /// Publishes `container_port` on the same `host_port` over TCP.
    pub fn tcp(host_port: u16, container_port: u16) -> Self {
        PortMapping {
            host_ip: None,
            host_port: Some(host_port),
            container_port,
            protocol: Protocol::Tcp,
        }
    }
}

fn parse_port(input: &str, value: &str, what: &str) -> Result<u16> {
    if value.contains('-') {
        return Err(Error::invalid(
            "port mapping",
            input,
            "port ranges are not supported; publish each port on its own",
        ));
    }
    match value.parse::<u16>() {
        Ok(0) | Err(_) => Err(Error::invalid(
            "port mapping",
            input,
            format!("{what} {value:?} is not a port number from 1 to 65535"),
        )),
        Ok(port) => Ok(port),
    }
}

impl FromStr for PortMapping {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let reject = |reason: &str| Error::invalid("port mapping", input, reason);
        let (rest, protocol) = match input.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Protocol::Tcp),
            Some((rest, "udp")) => (rest, Protocol::Udp),
            Some((_, other)) => {
                return Err(reject(&format!(
                    "unknown protocol {other:?}; use tcp or udp"
                )))
            }
            None => (input, Protocol::Tcp),
        };
        // An IPv6 host address is bracketed: [::1]:8080:80.
        let (host_ip, rest) = if let Some(after) = rest.strip_prefix('[') {
            let (ip, rest) = after
                .split_once("]:")
                .ok_or_else(|| reject("an IPv6 address must be written [addr]:host:container"))?;
            let ip = ip
                .parse::<IpAddr>()
                .map_err(|_| reject(&format!("{ip:?} is not an IP address")))?;
            (Some(ip), rest.to_owned())
        } else {
            let parts: Vec<&str> = rest.split(':').collect();
            if parts.len() == 3 {
                let ip = parts[0]
                    .parse::<IpAddr>()
                    .map_err(|_| reject(&format!("{:?} is not an IP address", parts[0])))?;
                (Some(ip), format!("{}:{}", parts[1], parts[2]))
            } else {
                (None, rest.to_owned())
            }
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (host_port, container_port) = match parts.as_slice() {
            [container] => (None, parse_port(input, container, "container port")?),
            [host, container] => {
                let host = if host.is_empty() {
                    None
                } else {
                    Some(parse_port(input, host, "host port")?)
                };
                (host, parse_port(input, container, "container port")?)
            }
            _ => {
                return Err(reject(
                    "expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]",
                ))
            }
        };
        if host_ip.is_some() && parts.len() == 1 {
            return Err(reject(
                "expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]",
            ));
        }
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        match self.host_port {
            Some(port) => write!(f, "{port}:")?,
            None if self.host_ip.is_some() => write!(f, ":")?,
            None => {}
        }
        write!(f, "{}/{}", self.container_port, self.protocol)
    }
}

/// What a mount attaches at its destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum MountSource {
    /// A host file or directory (must exist).
    Bind(PathBuf),
    /// A named volume kept by the runtime, created on first use.
    Volume(String),
    /// A fresh in-memory filesystem.
    Tmpfs {
        /// Its size limit (default: the kernel's, half of RAM).
        size: Option<ByteSize>,
        /// Its root directory's mode (default `1777`).
        mode: Option<u32>,
    },
}

/// A mount into a container, parsed from docker's `-v SRC:DST[:OPTS]` or
/// `--tmpfs DST[:OPTS]` syntax.
///
/// ```
/// use locald_core::{Mount, MountSource};
///
/// let m: Mount = "/srv/data:/data:ro".parse()?;
/// assert_eq!(m.source, MountSource::Bind("/srv/data".into()));
/// assert!(m.read_only);
///
/// let t = Mount::parse_tmpfs("/scratch:size=64m,mode=700")?;
/// assert!(matches!(t.source, MountSource::Tmpfs { .. }));
/// # Ok::<(), locald_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Mount {
    /// What is mounted.
    pub source: MountSource,
    /// Where, inside the container (absolute).
    pub destination: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Mount {
    /// A bind mount of a host path.
    pub fn bind(
        source: impl Into<PathBuf>,
        destination: impl Into<PathBuf>,
        read_only: bool,
    ) -> Self {
        Mount {
            source: MountSource::Bind(source.into()),
            destination: destination.into(),
            read_only,
        }
    }

    /// A tmpfs at `destination` with the kernel's default size.
    pub fn tmpfs(destination: impl Into<PathBuf>) -> Self {
        Mount {
            source: MountSource::Tmpfs {
                size: None,
                mode: None,
            },
            destination: destination.into(),
            read_only: false,
        }
    }

    /// Parses docker's `--tmpfs DST[:size=64m,mode=1777,ro]`.
    pub fn parse_tmpfs(input: &str) -> Result<Mount> {
        let reject = |reason: String| Error::invalid("tmpfs mount", input, reason);
        let (dst, opts) = input.split_once(':').unwrap_or((input, ""));
        let destination = container_path(input, "tmpfs mount", dst)?;
        let mut size = None;
        let mut mode = None;
        let mut read_only = false;
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            match opt.split_once('=') {
                Some(("size", v)) => {
                    size = Some(
                        v.parse::<ByteSize>()
                            .map_err(|_| reject(format!("size {v:?} is not a size such as 64m")))?,
                    )
                }
                Some(("mode", v)) => {
                    mode = Some(
                        u32::from_str_radix(v, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| {
                                reject(format!("mode {v:?} is not an octal mode such as 1777"))
                            })?,
                    )
                }
                None if opt == "ro" => read_only = true,
                None if opt == "rw" => read_only = false,
                _ => {
                    return Err(reject(format!(
                        "unknown option {opt:?}; use size=, mode=, ro or rw"
                    )))
                }
            }
        }
        Ok(Mount {
            source: MountSource::Tmpfs { size, mode },
            destination,
            read_only,
        })
    }
}

fn container_path(input: &str, what: &'static str, path: &str) -> Result<PathBuf> {
    if !path.starts_with('/') {
        return Err(Error::invalid(
            what,
            input,
            format!("the container path {path:?} must be absolute"),
        ));
    }
    if path == "/" {
        return Err(Error::invalid(
            what,
            input,
            "cannot mount over the container's root",
        ));
    }
    if Path::new(path)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(Error::invalid(
            what,
            input,
            format!("the container path {path:?} may not contain '..'"),
        ));
    }
    Ok(PathBuf::from(path))
}

/// True for a name docker accepts for containers and volumes: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl FromStr for Mount {
    type Err = Error;

    /// Parses docker's `-v SRC:DST[:ro|rw]`, where `SRC` is an absolute host path or a
    /// volume name.
    fn from_str(input: &str) -> Result<Mount> {
        let reject = |reason: String| Error::invalid("mount", input, reason);
        let parts: Vec<&str> = input.split(':').collect();
        let (src, dst, opts) = match parts.as_slice() {
            [src, dst] => (*src, *dst, ""),
            [src, dst, opts] => (*src, *dst, *opts),
            [_] => {
                return Err(reject(
                    "expected SOURCE:DESTINATION[:ro]; anonymous volumes are not supported".into(),
                ))
            }
            _ => return Err(reject("expected SOURCE:DESTINATION[:ro]".into())),
        };
        let destination = container_path(input, "mount", dst)?;
        let mut read_only = false;
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            match opt {
                "ro" | "readonly" => read_only = true,
                "rw" => read_only = false,
                other => return Err(reject(format!("unknown option {other:?}; use ro or rw"))),
            }
        }
        let source = if src.starts_with('/') {
            MountSource::Bind(PathBuf::from(src))
        } else if src.starts_with('.') || src.starts_with('~') || src.contains('/') {
            return Err(reject(format!(
                "the host path {src:?} must be absolute (a volume name has no '/')"
            )));
        } else if is_valid_name(src) {
            MountSource::Volume(src.to_owned())
        } else {
            return Err(reject(format!(
                "{src:?} is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
            )));
        };
        Ok(Mount {
            source,
            destination,
            read_only,
        })
    }
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
    pull_progress: ProgressSink,
}

/// A progress channel carried by a spec; all sinks compare equal.
#[derive(Debug, Clone, Default)]
struct ProgressSink(Option<ProgressSender>);

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

    /// A builder for a container of `image` (a reference such as `busybox` or
    /// `127.0.0.1:5000/app:1`), validated by [`ContainerSpecBuilder::build`].
    ///
    /// ```
    /// use locald_core::{ContainerSpec, NetworkMode};
    ///
    /// let spec = ContainerSpec::builder("busybox")
    ///     .cmd(["httpd", "-f", "-p", "80"])
    ///     .env("MODE", "dev")
    ///     .publish("8080:80")
    ///     .volume("/srv/www:/www:ro")
    ///     .memory("256m")
    ///     .cpus("0.5")
    ///     .build()?;
    /// assert_eq!(spec.network, NetworkMode::Private);
    /// assert_eq!(spec.resources.memory.unwrap().bytes(), 256 << 20);
    ///
    /// let err = ContainerSpec::builder("busybox").memory("lots").build().unwrap_err();
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid memory limit \"lots\": expected a number such as 512m or 2g"
    /// );
    /// # Ok::<(), locald_core::Error>(())
    /// ```
    pub fn builder(image: impl Into<String>) -> ContainerSpecBuilder {
        ContainerSpecBuilder {
            image: Some(image.into()),
            ..ContainerSpecBuilder::default()
        }
    }

    /// A builder for a container whose root filesystem is the directory `rootfs`.
    pub fn builder_from_rootfs(rootfs: impl Into<PathBuf>) -> ContainerSpecBuilder {
        ContainerSpecBuilder {
            rootfs: Some(rootfs.into()),
            ..ContainerSpecBuilder::default()
        }
    }
}

/// Builds a [`ContainerSpec`]. Setters that take the strings people type (`"512m"`,
/// `"8080:80"`, `"/a:/b:ro"`) keep them as given; [`build`](Self::build) parses and
/// checks everything and names the first bad input.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpecBuilder {
    image: Option<String>,
    rootfs: Option<PathBuf>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<(String, String)>,
    workdir: Option<PathBuf>,
    user: Option<String>,
    hostname: Option<String>,
    volumes: Vec<String>,
    tmpfs: Vec<String>,
    mounts: Vec<Mount>,
    publish: Vec<String>,
    memory: Option<String>,
    cpus: Option<String>,
    pids: Option<i64>,
    network: Option<NetworkMode>,
    tty: bool,
    stdin: bool,
    read_only: bool,
    isolation: Isolation,
    name: Option<String>,
    labels: Vec<(String, String)>,
    auto_remove: bool,
    platform: Option<String>,
    insecure: bool,
    pull_progress: Option<ProgressSender>,
}

impl ContainerSpecBuilder {
    /// When the image must be pulled, picks `platform` (`linux/arm64`, `linux/arm/v7`)
    /// from a multi-platform image (default: `linux/` and the host's architecture).
    /// Only for an image source.
    pub fn platform(mut self, platform: impl Into<String>) -> Self {
        self.platform = Some(platform.into());
        self
    }

    /// When the image must be pulled, allows plain HTTP or unverified TLS for its
    /// registry (default `false`).
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// When the image must be pulled, sends progress events to `sender` (default:
    /// none). The channel stays in this process: it is not serialized.
    pub fn pull_progress(mut self, sender: ProgressSender) -> Self {
        self.pull_progress = Some(sender);
        self
    }

    /// Replaces the image's entrypoint (default: the image's).
    pub fn entrypoint<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.entrypoint = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Replaces the image's command (default: the image's).
    pub fn cmd<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.cmd = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sets an environment variable over the image's (default: the image's environment).
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the working directory, an absolute path (default: the image's, else `/`).
    pub fn workdir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Runs as `name`, `uid`, `name:group` or `uid:gid` (default: the image's user, else root).
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// Sets the hostname (default: the short container id).
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    /// Adds a mount in docker's `-v SRC:DST[:ro]` syntax.
    pub fn volume(mut self, spec: impl Into<String>) -> Self {
        self.volumes.push(spec.into());
        self
    }

    /// Adds a tmpfs in docker's `--tmpfs DST[:size=..,mode=..]` syntax.
    pub fn tmpfs(mut self, spec: impl Into<String>) -> Self {
        self.tmpfs.push(spec.into());
        self
    }

    /// Adds an already-built mount.
    pub fn mount(mut self, mount: Mount) -> Self {
        self.mounts.push(mount);
        self
    }

    /// Publishes a port in docker's `-p` syntax (default: none).
    pub fn publish(mut self, spec: impl Into<String>) -> Self {
        self.publish.push(spec.into());
        self
    }

    /// Limits memory: `512m`, `2g` (default: no limit; at least `6m`).
    pub fn memory(mut self, limit: impl Into<String>) -> Self {
        self.memory = Some(limit.into());
        self
    }

    /// Limits CPU time: `0.5`, `2` (default: no limit).
    pub fn cpus(mut self, cpus: impl Into<String>) -> Self {
        self.cpus = Some(cpus.into());
        self
    }

    /// Limits the number of processes; `-1` means unlimited (default: no limit).
    pub fn pids_limit(mut self, limit: i64) -> Self {
        self.pids = Some(limit);
        self
    }

    /// Chooses the network (default [`NetworkMode::Private`]).
    pub fn network(mut self, mode: NetworkMode) -> Self {
        self.network = Some(mode);
        self
    }

    /// Allocates a terminal (default `false`).
    pub fn tty(mut self, tty: bool) -> Self {
        self.tty = tty;
        self
    }

    /// Keeps stdin open (default `false`).
    pub fn stdin(mut self, open: bool) -> Self {
        self.stdin = open;
        self
    }

    /// Mounts the root filesystem read-only (default `false`).
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Turns on Safe Mode (default [`Isolation::Default`]).
    pub fn safe(mut self, safe: bool) -> Self {
        self.isolation = if safe {
            Isolation::Safe
        } else {
            Isolation::Default
        };
        self
    }

    /// Names the container (default: a generated name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// Removes the container when it exits (default `false`).
    pub fn auto_remove(mut self, remove: bool) -> Self {
        self.auto_remove = remove;
        self
    }

    /// Parses and checks everything, naming the first bad input.
    pub fn build(self) -> Result<ContainerSpec> {
        let source = match (self.image, self.rootfs) {
            (Some(image), None) => ContainerSource::Image(ImageRef::parse(&image)?),
            (None, Some(rootfs)) => {
                if !rootfs.is_absolute() {
                    return Err(Error::invalid(
                        "root filesystem",
                        rootfs.display().to_string(),
                        "must be an absolute path",
                    ));
                }
                ContainerSource::Rootfs(rootfs)
            }
            _ => {
                return Err(Error::invalid(
                    "container spec",
                    "",
                    "exactly one of an image or a root filesystem is required",
                ))
            }
        };
        let mut env = BTreeMap::new();
        for (key, value) in self.env {
            if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
                return Err(Error::invalid(
                    "environment variable",
                    format!("{key}={value}"),
                    "the name must be non-empty without '=', and neither part may contain NUL",
                ));
            }
            env.insert(key, value);
        }
        if let Some(dir) = &self.workdir {
            if !dir.is_absolute() {
                return Err(Error::invalid(
                    "working directory",
                    dir.display().to_string(),
                    "must be an absolute path inside the container",
                ));
            }
        }
        if let Some(user) = &self.user {
            validate_user(user)?;
        }
        if let Some(hostname) = &self.hostname {
            validate_hostname(hostname)?;
        }
        if let Some(name) = &self.name {
            if !is_valid_name(name) {
                return Err(Error::invalid(
                    "container name",
                    name,
                    "must match [a-zA-Z0-9][a-zA-Z0-9_.-]+",
                ));
            }
        }
        let mut mounts = self.mounts;
        for v in &self.volumes {
            mounts.push(v.parse()?);
        }
        for t in &self.tmpfs {
            mounts.push(Mount::parse_tmpfs(t)?);
        }
        for (i, m) in mounts.iter().enumerate() {
            if !m.destination.is_absolute() {
                return Err(Error::invalid(
                    "mount",
                    m.destination.display().to_string(),
                    "the container path must be absolute",
                ));
            }
            if mounts[..i].iter().any(|o| o.destination == m.destination) {
                return Err(Error::invalid(
                    "mount",
                    m.destination.display().to_string(),
                    "two mounts have the same destination",
                ));
            }
            if let MountSource::Bind(src) = &m.source {
                if !src.is_absolute() {
                    return Err(Error::invalid(
                        "mount",
                        src.display().to_string(),
                        "the host path must be absolute",
                    ));
                }
            }
        }
        let mut ports: Vec<PortMapping> = Vec::new();
        for p in &self.publish {
            let port: PortMapping = p.parse()?;
            if port.host_port.is_some()
                && ports.iter().any(|o| {
                    o.host_port == port.host_port
                        && o.protocol == port.protocol
                        && o.host_ip == port.host_ip
                })
            {
                return Err(Error::invalid(
                    "port mapping",
                    p,
                    "the host port is published twice",
                ));
            }
            ports.push(port);
        }
        let network = match (self.network, self.isolation) {
            (Some(NetworkMode::Host), Isolation::Safe) => {
                return Err(Error::invalid(
                    "network mode",
                    "host",
                    "safe mode does not allow the host network",
                ))
            }
            (Some(mode), _) => mode,
            (None, _) => NetworkMode::Private,
        };
        if !ports.is_empty() && network != NetworkMode::Private {
            return Err(Error::invalid(
                "port mapping",
                ports[0].to_string(),
                format!("published ports need the private network, not {network}"),
            ));
        }
        let memory = match &self.memory {
            None => None,
            Some(m) => {
                let size = m.parse::<ByteSize>().map_err(|e| match e {
                    Error::InvalidInput { reason, .. } => Error::invalid("memory limit", m, reason),
                    other => other,
                })?;
                if size.bytes() < 6 << 20 {
                    return Err(Error::invalid(
                        "memory limit",
                        m,
                        "the minimum memory limit is 6m",
                    ));
                }
                Some(size)
            }
        };
        let cpus = self.cpus.as_deref().map(str::parse::<Cpus>).transpose()?;
        let pids = match self.pids {
            None | Some(-1) => None,
            Some(n) if n > 0 => Some(n as u64),
            Some(n) => {
                return Err(Error::invalid(
                    "pids limit",
                    n.to_string(),
                    "must be a positive number, or -1 for no limit",
                ))
            }
        };
        if let Some(platform) = &self.platform {
            if !matches!(source, ContainerSource::Image(_)) {
                return Err(Error::invalid(
                    "platform",
                    platform,
                    "a platform is picked only when pulling an image, not for a root filesystem",
                ));
            }
            validate_platform(platform)?;
        }
        let mut labels = BTreeMap::new();
        for (key, value) in self.labels {
            if key.is_empty() {
                return Err(Error::invalid(
                    "label",
                    format!("={value}"),
                    "the key is empty",
                ));
            }
            labels.insert(key, value);
        }
        Ok(ContainerSpec {
            source,
            entrypoint: self.entrypoint,
            cmd: self.cmd,
            env,
            workdir: self.workdir,
            user: self.user,
            hostname: self.hostname,
            mounts,
            ports,
            resources: Resources { memory, cpus, pids },
            network,
            tty: self.tty,
            stdin: self.stdin,
            read_only: self.read_only,
            isolation: self.isolation,
            name: self.name,
            labels,
            auto_remove: self.auto_remove,
            platform: self.platform,
            insecure: self.insecure,
            pull_progress: ProgressSink(self.pull_progress),
        })
    }
}

/// `os/arch` or `os/arch/variant`, each part non-empty.
fn validate_platform(platform: &str) -> Result<()> {
    let parts: Vec<&str> = platform.split('/').collect();
    if (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty()) {
        Ok(())
    } else {
        Err(Error::invalid(
            "platform",
            platform,
            "expected os/arch or os/arch/variant, such as linux/arm64",
        ))
    }
}

fn validate_user(user: &str) -> Result<()> {
    let ok_part = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'))
    };
    let valid = match user.split_once(':') {
        Some((u, g)) => ok_part(u) && ok_part(g),
        None => ok_part(user),
    };
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(
            "user",
            user,
            "expected NAME, UID, NAME:GROUP or UID:GID",
        ))
    }
}

fn validate_hostname(hostname: &str) -> Result<()> {
    let reject = |reason: &str| Error::invalid("hostname", hostname, reason);
    if hostname.is_empty() || hostname.len() > 63 {
        return Err(reject("must be 1 to 63 characters"));
    }
    for label in hostname.split('.') {
        let ok = !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(reject(
                "each dot-separated part must be letters, digits and inner hyphens",
            ));
        }
    }
    Ok(())
}

/// The state of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state", content = "status")]
#[non_exhaustive]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Its main process runs.
    Running,
    /// Its main process is frozen.
    Paused,
    /// Its main process ended like this.
    Exited(crate::ExitStatus),
}

/// What `list` and `inspect` report about a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ContainerSummary {
    /// The full id (64 hex characters).
    pub id: String,
    /// Its name.
    pub name: String,
    /// The image it was made from, if any.
    pub image: Option<ImageRef>,
    /// The command line its main process runs.
    pub command: Vec<String>,
    /// Its state.
    pub state: ContainerState,
    /// When it was created, in seconds since the Unix epoch.
    pub created: u64,
    /// The main process id on the host, while it runs.
    pub pid: Option<u32>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its published ports, with the host ports actually bound.
    pub ports: Vec<PortMapping>,
    /// True when the kernel's out-of-memory killer ended it (its memory limit was hit).
    #[serde(default)]
    pub oom_killed: bool,
}

impl ContainerSummary {
    /// A summary with the given id, name and state; every other field empty. Backends
    /// fill in the rest field by field.
    pub fn new(id: impl Into<String>, name: impl Into<String>, state: ContainerState) -> Self {
        ContainerSummary {
            id: id.into(),
            name: name.into(),
            image: None,
            command: Vec::new(),
            state,
            created: 0,
            pid: None,
            labels: BTreeMap::new(),
            ports: Vec::new(),
            oom_killed: false,
        }
    }
}

/// A started container: its id and name, and its main process (stdio pipes, wait,
/// kill). Dropping the handle does not stop the container; use
/// [`Runtime::stop_container`](crate::Runtime::stop_container) or
/// [`ContainerSpec::auto_remove`].
#[derive(Debug)]
pub struct ContainerHandle {
    id: String,
    name: String,
    process: Process,
}

impl ContainerHandle {
    /// Assembles a handle from a backend's parts.
    pub fn new(id: impl Into<String>, name: impl Into<String>, process: Process) -> Self {
        ContainerHandle {
            id: id.into(),
            name: name.into(),
            process,
        }
    }

    /// The full container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The main process: take its stdio, wait for it, signal it.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Waits for the main process to end.
    pub async fn wait(&mut self) -> Result<crate::ExitStatus> {
        self.process.wait().await
    }

    /// Signals the main process.
    pub async fn kill(&mut self, signal: crate::Signal) -> Result<()> {
        self.process.kill(signal).await
    }

    /// Gives up the handle, returning the id, the name and the main process.
    pub fn into_parts(self) -> (String, String, Process) {
        (self.id, self.name, self.process)
    }
}

/// Which logs to read and how.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogOptions {
    /// Keep streaming new output until the container exits.
    pub follow: bool,
    /// Only the last this many lines.
    pub tail: Option<usize>,
}

/// Where a piece of log came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The container's stdout.
    Stdout,
    /// The container's stderr.
    Stderr,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(b: ContainerSpecBuilder) -> String {
        b.build().unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        let spec = ContainerSpec::builder("busybox").build().unwrap();
        assert_eq!(
            spec.source,
            ContainerSource::Image("busybox".parse().unwrap())
        );
        assert_eq!(spec.network, NetworkMode::Private);
        assert_eq!(spec.isolation, Isolation::Default);
        assert_eq!(spec.resources, Resources::default());
        assert!(spec.mounts.is_empty() && spec.ports.is_empty());
        assert!(!spec.tty && !spec.stdin && !spec.read_only && !spec.auto_remove);
        assert_eq!(spec.entrypoint, None);
        assert_eq!(spec.cmd, None);
    }

    #[test]
    fn everything_set() {
        let spec = ContainerSpec::builder("127.0.0.1:5000/app:1")
            .entrypoint(["/bin/sh", "-c"])
            .cmd(["echo hi"])
            .env("A", "1")
            .env("A", "2")
            .workdir("/srv")
            .user("1000:1000")
            .hostname("box.local")
            .volume("/tmp:/host-tmp:ro")
            .volume("data:/data")
            .tmpfs("/run:size=16m")
            .publish("8080:80")
            .publish("127.0.0.1::53/udp")
            .memory("1g")
            .cpus("1.5")
            .pids_limit(64)
            .tty(true)
            .stdin(true)
            .read_only(true)
            .name("web-1")
            .label("tier", "web")
            .auto_remove(true)
            .build()
            .unwrap();
        assert_eq!(
            spec.env.get("A").map(String::as_str),
            Some("2"),
            "last wins"
        );
        assert_eq!(spec.mounts.len(), 3);
        assert_eq!(spec.mounts[1].source, MountSource::Volume("data".into()));
        assert_eq!(
            spec.mounts[2].source,
            MountSource::Tmpfs {
                size: Some(ByteSize::new(16 << 20)),
                mode: None
            }
        );
        assert_eq!(spec.ports[1].host_port, None);
        assert_eq!(spec.ports[1].protocol, Protocol::Udp);
        assert_eq!(spec.resources.pids, Some(64));
        assert_eq!(spec.resources.cpus.unwrap().nano(), 1_500_000_000);
        let json = serde_json::to_string(&spec).unwrap();
        let back: ContainerSpec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn pull_options_cross_serde_but_the_progress_channel_does_not() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let spec = ContainerSpec::builder("127.0.0.1:5000/app:1")
            .platform("linux/arm64")
            .insecure(true)
            .pull_progress(tx)
            .build()
            .unwrap();
        let options = spec.pull_options();
        assert_eq!(options.platform.as_deref(), Some("linux/arm64"));
        assert!(options.insecure);
        let sender = options
            .progress
            .expect("the channel reaches the pull options");
        sender
            .send(crate::PullProgress::LayerDone { digest: "d".into() })
            .unwrap();
        assert!(rx.try_recv().is_ok());
        let back: ContainerSpec =
            serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
        assert_eq!(back.platform.as_deref(), Some("linux/arm64"));
        assert!(back.insecure);
        assert!(back.pull_options().progress.is_none());
        // Defaults, also for specs serialized before these fields existed.
        let plain = ContainerSpec::builder("busybox").build().unwrap();
        let mut old = serde_json::to_value(&plain).unwrap();
        let obj = old.as_object_mut().unwrap();
        obj.remove("platform");
        obj.remove("insecure");
        let old: ContainerSpec = serde_json::from_value(old).unwrap();
        assert_eq!((old.platform, old.insecure), (None, false));
        assert_eq!(
            err(ContainerSpec::builder("busybox").platform("linux")),
            "invalid platform \"linux\": expected os/arch or os/arch/variant, such as linux/arm64"
        );
        assert_eq!(
            err(ContainerSpec::builder_from_rootfs("/r").platform("linux/amd64")),
            "invalid platform \"linux/amd64\": a platform is picked only when pulling an image, not for a root filesystem"
        );
    }

    #[test]
    fn bad_inputs_name_themselves() {
        let b = || ContainerSpec::builder("busybox");
        assert_eq!(
            err(b().memory("512x")),
            "invalid memory limit \"512x\": unknown unit; use b, k, m, g, t or p"
        );
        assert_eq!(
            err(b().memory("1m")),
            "invalid memory limit \"1m\": the minimum memory limit is 6m"
        );
        assert_eq!(
            err(b().cpus("0")),
            "invalid cpus \"0\": must be more than 0 and at most 1024"
        );
        assert_eq!(
            err(b().publish("99999:80")),
            "invalid port mapping \"99999:80\": host port \"99999\" is not a port number from 1 to 65535"
        );
        assert_eq!(
            err(b().volume("relative/dir:/x")),
            "invalid mount \"relative/dir:/x\": the host path \"relative/dir\" must be absolute (a volume name has no '/')"
        );
        assert_eq!(
            err(b().volume("/a:b")),
            "invalid mount \"/a:b\": the container path \"b\" must be absolute"
        );
        assert_eq!(
            err(b().volume("/a:/b:rx")),
            "invalid mount \"/a:/b:rx\": unknown option \"rx\"; use ro or rw"
        );
        assert_eq!(
            err(b().volume("/a:/x").volume("/b:/x")),
            "invalid mount \"/x\": two mounts have the same destination"
        );
        assert_eq!(
            err(b().name("-bad")),
            "invalid container name \"-bad\": must match [a-zA-Z0-9][a-zA-Z0-9_.-]+"
        );
        assert_eq!(
            err(b().workdir("srv")),
            "invalid working directory \"srv\": must be an absolute path inside the container"
        );
        assert_eq!(
            err(b().pids_limit(0)),
            "invalid pids limit \"0\": must be a positive number, or -1 for no limit"
        );
        assert!(err(b().hostname("bad_host")).starts_with("invalid hostname"));
        assert!(err(b().user("a:b:c")).starts_with("invalid user"));
        assert!(err(b().env("A=B", "c")).starts_with("invalid environment variable"));
        assert_eq!(
            err(b().publish("8080:80").network(NetworkMode::Host)),
            "invalid port mapping \"8080:80/tcp\": published ports need the private network, not host"
        );
        assert_eq!(
            err(b().safe(true).network(NetworkMode::Host)),
            "invalid network mode \"host\": safe mode does not allow the host network"
        );
        assert_eq!(
            err(b().publish("8080:80").publish("8080:81")),
            "invalid port mapping \"8080:81\": the host port is published twice"
        );
        assert!(err(ContainerSpec::builder("UPPER")).starts_with("invalid image reference"));
        assert!(
            err(ContainerSpec::builder_from_rootfs("rel")).starts_with("invalid root filesystem")
        );
    }

    #[test]
    fn unlimited_pids() {
        let spec = ContainerSpec::builder("busybox")
            .pids_limit(-1)
            .build()
            .unwrap();
        assert_eq!(spec.resources.pids, None);
    }

    #[test]
    fn port_mappings() {
        let p = |s: &str| s.parse::<PortMapping>().unwrap();
        assert_eq!(
            p("80"),
            PortMapping {
                host_ip: None,
                host_port: None,
                container_port: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(p("8080:80"), PortMapping::tcp(8080, 80));
        assert_eq!(p("8080:80/udp").protocol, Protocol::Udp);
        assert_eq!(
            p("127.0.0.1:8080:80").host_ip,
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(p("[::1]:8080:80").host_ip, Some("::1".parse().unwrap()));
        assert_eq!(p("[::1]:8080:80").to_string(), "[::1]:8080:80/tcp");
        assert_eq!(p("127.0.0.1::80").to_string(), "127.0.0.1::80/tcp");
        assert_eq!(p("80").to_string(), "80/tcp");
        for bad in [
            "",
            "0",
            "abc",
            "80/sctp",
            "8000-8010:80",
            "1.2.3:80:80",
            "1:2:3:4",
            "[::1]80",
            "127.0.0.1:80:",
        ] {
            let e = bad.parse::<PortMapping>().unwrap_err().to_string();
            assert!(e.starts_with("invalid port mapping"), "{bad}: {e}");
        }
        assert!("8000-8010:80"
            .parse::<PortMapping>()
            .unwrap_err()
            .to_string()
            .contains("ranges"));
    }

    #[test]
    fn mounts() {
        let m: Mount = "/a:/b".parse().unwrap();
        assert_eq!(m, Mount::bind("/a", "/b", false));
        let m: Mount = "vol_1:/data:rw".parse().unwrap();
        assert_eq!(m.source, MountSource::Volume("vol_1".into()));
        for bad in [
            "/a",
            "/a:/",
            "/a:/b/../c",
            "./x:/y",
            "~/x:/y",
            "a:/b:ro:extra",
            "v:/b:bogus",
            "!:/x",
        ] {
            let e = bad.parse::<Mount>().unwrap_err().to_string();
            assert!(e.starts_with("invalid mount"), "{bad}: {e}");
        }
        let t = Mount::parse_tmpfs("/t:mode=1777,size=1g,ro").unwrap();
        assert_eq!(
            t.source,
            MountSource::Tmpfs {
                size: Some(ByteSize::new(1 << 30)),
                mode: Some(0o1777)
            }
        );
        assert!(t.read_only);
        for bad in ["t", "/t:size=big", "/t:mode=999", "/t:uid=0"] {
            let e = Mount::parse_tmpfs(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid tmpfs mount"), "{bad}: {e}");
        }
    }

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
