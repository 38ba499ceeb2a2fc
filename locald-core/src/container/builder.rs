//! [`ContainerSpecBuilder`]: the strings of a `docker run` command line, checked.

use std::{collections::BTreeMap, path::PathBuf};

use super::*;
use crate::{ByteSize, Cpus, Error, ImageRef, ProgressSender, PullOptions, Result};

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
    terminal_size: Option<crate::TerminalSize>,
    stdin: bool,
    read_only: bool,
    isolation: Isolation,
    name: Option<String>,
    labels: Vec<(String, String)>,
    auto_remove: bool,
    /// How a missing image is pulled: platform, insecure, progress.
    pull: PullOptions,
}

impl ContainerSpecBuilder {
    /// When the image must be pulled, picks `platform` (`linux/arm64`, `linux/arm/v7`)
    /// from a multi-platform image (default: `linux/` and the host's architecture).
    /// Only for an image source.
    pub fn platform(mut self, platform: impl Into<String>) -> Self {
        self.pull = self.pull.platform(platform);
        self
    }

    /// When the image must be pulled, allows plain HTTP or unverified TLS for its
    /// registry (default `false`).
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.pull = self.pull.insecure(insecure);
        self
    }

    /// When the image must be pulled, sends progress events to `sender` (default:
    /// none). The channel stays in this process: it is not serialized.
    pub fn pull_progress(mut self, sender: ProgressSender) -> Self {
        self.pull = self.pull.progress(sender);
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

    /// Allocates a terminal of this size from the container's start (implies
    /// [`tty`](Self::tty)); resize it later with [`Process::resize`](crate::Process::resize).
    pub fn terminal_size(mut self, size: crate::TerminalSize) -> Self {
        self.tty = true;
        self.terminal_size = Some(size);
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
        if let Some(platform) = &self.pull.platform {
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
            terminal_size: self.terminal_size.filter(|_| self.tty),
            stdin: self.stdin,
            read_only: self.read_only,
            isolation: self.isolation,
            name: self.name,
            labels,
            auto_remove: self.auto_remove,
            platform: self.pull.platform,
            insecure: self.pull.insecure,
            pull_progress: ProgressSink(self.pull.progress),
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

impl ContainerSpec {
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
}
