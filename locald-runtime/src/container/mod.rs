//! OCI containers on Linux with youki's `libcontainer`, in process, without a runc
//! binary.
//!
//! The flow of [`ContainerRuntime::run_container`](locald_core::Runtime::run_container):
//!
//! 1. an image that is not stored is pulled into the runtime's one image store, with
//!    the spec's pull options; the root filesystem source is resolved to read-only
//!    lower directories and the image's config ([`rootfs`], the seam with the store);
//! 2. everything that can be checked is checked in the caller, before anything is
//!    created: the user, the program, bind sources, published ports (bound here, so a
//!    port in use is an error naming it);
//! 3. the state directory is written: `state.json`, the OCI `config.json`, `shim.json`,
//!    `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`;
//! 4. the shim ([`shim`]) is started: it mounts the root (an image
//!    [`Snapshot`](crate::image::Snapshot): overlayfs, or a copy of the layers where
//!    overlayfs cannot be used), creates and starts the
//!    container with the runtime library, reports `ok <pid>` or an error, then
//!    supervises the container until it exits and cleans up.

pub(crate) mod cgroups;
pub(crate) mod config;
pub(crate) mod forker;
pub(crate) mod logs;
pub(crate) mod net;
pub(crate) mod rootfs;
pub(crate) mod rootless;
pub(crate) mod shim;
pub(crate) mod state;
mod sys;

use std::{
    collections::HashMap,
    io,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use async_trait::async_trait;
use locald_core::{
    Capability, Command, ContainerHandle, ContainerSpec, ContainerState, ContainerSummary, Error,
    ExitStatus, Isolation, LogChunks, LogOptions, LogStream, MountSource, NetworkMode, Paths,
    Platform, Process, ProcessControl, Protocol, Result, Runtime, RuntimeInfo, Signal, Stdin,
    Stdio,
};
use tokio::io::AsyncReadExt;

use crate::timing;
pub use rootless::{rootless_readiness, RootlessCheck};

pub use forker::prefork as prefork_shim_forker;

/// Starts early the kernel's wait before a process's first move into a cgroup, which a
/// container start otherwise pays in full (8-20 ms on some kernels): for a program that
/// knows it is about to start a container before it has done its other work (`locald
/// run`). The runtime does it too, at the start of each container and exec. Cheap, and
/// nothing without the right to move processes between cgroups.
pub fn prime_cgroup_attach() {
    cgroups::prime_attach();
}
pub use shim::{main_with as shim_main, run_if_requested, SHIM_ARG};

use state::{Dirs, Layout, Phase};

/// Runs host commands and OCI containers on this Linux host, as root or, for a caller
/// that is not root, rootless in a user namespace mapped from its subordinate ids.
///
/// Containers are created and supervised by a shim process: this executable run again
/// (see [`run_if_requested`], which no program needs to call any more); their state lives under `$LOCALD_HOME/containers`, so any
/// locald process on the machine can list, inspect, stop, kill, remove or read the
/// logs of any container.
///
/// ```no_run
/// use locald_core::{ContainerSpec, Runtime};
/// use locald_runtime::ContainerRuntime;
///
/// # async fn demo() -> locald_core::Result<()> {
/// let runtime = ContainerRuntime::new();
/// let spec = ContainerSpec::builder_from_rootfs("/srv/rootfs")
///     .cmd(["sh", "-c", "echo hello"])
///     .memory("64m")
///     .build()?;
/// let mut container = runtime.run_container(spec).await?;
/// let status = container.wait().await?;
/// runtime.remove_container(container.id(), false).await?;
/// # let _ = status; Ok(()) }
/// ```
///
/// The handle's stdout and stderr carry the container's output as it comes (the shim
/// also appends it to the container's log): read them, or take and drop them; output
/// nobody reads fills the pipe and eventually blocks the container, as an attached
/// `docker run` does. Dropping the handle leaves the container running.
///
/// # What a container gets
///
/// Namespaces pid, mount, uts, ipc, cgroup and (unless `host`) network; docker's
/// default capability set; docker's masked and read-only `/proc` paths; an overlayfs
/// snapshot of its root (the lower directories are never written; the upper layer is
/// removed with the container, and mounted `volatile` where the kernel allows, so its
/// writes are never synced to disk: a host crash may lose a stopped container's
/// changes); `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`
/// from its state directory; a cgroup `/locald/<id>` with the memory (swap included),
/// CPU quota and pids limits; `RLIMIT_NOFILE` clamped to the caller's hard limit.
///
/// # Networks
///
/// `none` and `private` both give the container its own network namespace with
/// loopback, brought up; `none` has nothing else. On `private`, published ports are
/// bound on the host (default `127.0.0.1`) by the caller and served by the shim, which
/// connects each client to the container port on the container's loopback from inside
/// its namespace; and `pasta` (Debian's `passt` package) gives it outbound network: an
/// interface with the host's address and routes whose traffic pasta carries through
/// sockets of its own on the host, and (except in Safe Mode) the gateway's address
/// reaching the host's loopback. pasta is started by the shim and killed with the
/// container; without it installed, `private` is loopback only (a warning says so).
/// Published UDP ports (`-p 5353:53/udp`) are forwarded the same way, one socket in
/// the namespace per client. No bridge, veth or NAT rules are created, so nothing
/// survives a crash; the price is that servers see published clients as `127.0.0.1`.
/// `host` shares the host's network namespace.
///
/// # Rootless
///
/// A caller that is not root gets rootless containers, with nothing to configure:
/// its uid and gid are root in the container, its subordinate ranges in `/etc/subuid`
/// and `/etc/subgid` (mapped by `newuidmap`/`newgidmap`) are ids 1 and up, and
/// without a range root is the only id (a warning says so; another `--user` is a
/// clear error). The shim creates that user namespace for itself (with a mount and a
/// cgroup namespace) and runs again inside it, then does what it does as root: an
/// overlay root mounted there, the container's own namespaces, loopback, pasta,
/// published ports, Safe Mode (without its extra user namespace: container root is
/// already an unprivileged host id). Volumes from the user's home are writable, and
/// what container root writes there belongs to the user. State and images live in
/// the user's data home, where image layers are unpacked inside a user namespace with
/// the same mappings (through this executable again, as the shim), so their files keep
/// the image's owners, and opaque directories are marked with `user.overlay.opaque`,
/// which overlayfs reads mounted with `userxattr`. What rootless cannot do:
///
/// * resource limits (`memory`, `cpus`, `pids`): they are refused with the reason
///   (cgroup v1; cgroup v2 without a subtree delegated to the user; and, for now, a
///   delegated subtree too, which locald does not place containers in yet), and
///   containers run in the user's own cgroup, so no OOM kill is detected either;
/// * without subordinate ids, image layers keep the owners of the image only for
///   root-owned files (with them, layers are unpacked inside the user's namespace and
///   keep every owner; on the host those files belong to the subordinate ids, and
///   the store removes them from inside that namespace);
/// * a root filesystem directory owned by someone else (`--rootfs`) is copied, not
///   overlaid (its owners are not mapped in the namespace).
///
/// # Safe Mode
///
/// [`Isolation::Safe`] adds, on top of the defaults:
///
/// * every capability dropped (bounding, effective, permitted, inheritable, ambient):
///   `CapEff` is 0 even for container root;
/// * `no_new_privileges`: setuid binaries and file capabilities grant nothing;
/// * a seccomp filter that answers `EPERM` to the calls docker's default profile
///   refuses: `unshare`, `setns`, `clone` with namespace flags (and `clone3` with
///   `ENOSYS`, so libc falls back to the checked `clone`), `mount`, `umount2`,
///   `pivot_root`, the new mount API, `keyctl`/`add_key`/`request_key`, `ptrace`,
///   `process_vm_readv/writev`, `kcmp`, kernel modules, `kexec`, `reboot`, `swapon`,
///   clock and time setting, `bpf`, `perf_event_open`, `userfaultfd`,
///   `open_by_handle_at`, `iopl`/`ioperm`, `quotactl`, `syslog`, `acct` and a few
///   obsolete calls;
/// * a read-only root filesystem with a writable tmpfs `/tmp` (64 MiB);
/// * the private network (the host network is refused), with outbound network through
///   pasta but without its mapping of the gateway address to the host's loopback;
/// * a user namespace mapping container uid/gid 0..65535 to host 1000000..1065535,
///   when the kernel allows user namespaces and the state directory and root
///   filesystem are reachable by that uid (every ancestor directory searchable by
///   others); otherwise container root stays host root, without capabilities. The
///   mount points the root lacks (`/etc/hosts`, ...) are created by the shim, as host
///   root and resolved inside the root, in the container's own snapshot before it
///   starts: the mapped root could not create them there itself.
///
/// What it protects against: a process in the container gaining privileges through
/// capabilities or setuid files, reconfiguring the kernel, loading modules, tracing
/// other processes, escaping through new namespaces or mounts, writing to its image,
/// exhausting host memory or pids when limits are set, and (with the user namespace)
/// acting as host root if it does escape.
///
/// What it does not protect against: kernel bugs reachable through the system calls
/// that stay allowed (a shared kernel is not a VM boundary); reading whatever is
/// bind-mounted in; CPU, memory and pids exhaustion unless limits are given; denial
/// of service through the published ports; side channels; data written to `/tmp` or
/// volumes; files readable by "others" on the host if the user namespace could not be
/// used and something is bind-mounted. There is no AppArmor or SELinux profile, and
/// `/sys` is the host's (read-only bind) inside a user namespace.
#[derive(Debug, Clone)]
pub struct ContainerRuntime {
    layout: Layout,
    shim: Option<PathBuf>,
    platform: Platform,
    images: std::sync::OnceLock<crate::image::ImageStore>,
    snapshot: Option<crate::image::SnapshotMode>,
    /// `None`: find `pasta` on `PATH`; `Some(None)`: no pasta.
    pasta: Option<Option<PathBuf>>,
    /// Forks the shims from this runtime's second container on (clones share it).
    forker: std::sync::Arc<forker::Forker>,
}

impl Default for ContainerRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl ContainerRuntime {
    /// The image store in this runtime's data home, opened on first use.
    pub fn images(&self) -> Result<&crate::image::ImageStore> {
        if let Some(store) = self.images.get() {
            return Ok(store);
        }
        let store = crate::image::ImageStore::open_home(&self.layout.home)?;
        Ok(self.images.get_or_init(|| store))
    }

    /// A runtime keeping its state in locald's data home (`$LOCALD_HOME`, ...).
    pub fn new() -> Self {
        Self::with_home(Paths::from_process_env().data_home())
    }

    /// A runtime keeping its state under `home`.
    pub fn with_home(home: impl Into<PathBuf>) -> Self {
        ContainerRuntime {
            layout: Layout { home: home.into() },
            shim: None,
            platform: Platform::detect(),
            images: std::sync::OnceLock::new(),
            snapshot: None,
            pasta: None,
            forker: Default::default(),
        }
    }

    /// How containers' root filesystems are made (default: `$LOCALD_SNAPSHOT` when set
    /// to `auto`, `overlay` or `copy`, else [`SnapshotMode::Auto`]: an overlayfs
    /// snapshot, or a copy of the layers where overlayfs cannot be mounted).
    /// [`SnapshotMode::Copy`] always copies, which is slow but works on any
    /// filesystem; [`SnapshotMode::Overlay`] fails instead of copying.
    ///
    /// [`SnapshotMode::Auto`]: crate::image::SnapshotMode::Auto
    /// [`SnapshotMode::Copy`]: crate::image::SnapshotMode::Copy
    /// [`SnapshotMode::Overlay`]: crate::image::SnapshotMode::Overlay
    pub fn snapshot_mode(mut self, mode: crate::image::SnapshotMode) -> Self {
        self.snapshot = Some(mode);
        self
    }

    /// Uses `program` as the shim (default: `$LOCALD_SHIM` when set, else this
    /// executable, which is always a shim too: see [`run_if_requested`]). Any program
    /// linking this crate serves, such as the `locald-shim` or `locald` executables.
    pub fn shim_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.shim = Some(program.into());
        self
    }

    /// Uses `program` as `pasta`, the outbound network of `private` containers
    /// (default: `pasta` on `PATH`; when there is none, `private` containers get
    /// loopback only and a warning is logged once, and so they do, with a note in the
    /// log, while the host has no default route, without which pasta cannot start).
    /// A `program` given here is always used: when it fails, the start fails.
    pub fn pasta_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.pasta = Some(Some(program.into()));
        self
    }

    /// Runs `private` containers without `pasta`: loopback and published ports only,
    /// no outbound network.
    pub fn without_pasta(mut self) -> Self {
        self.pasta = Some(None);
        self
    }

    /// The `pasta` for a container on `network`, if it gets one.
    fn pasta_for(&self, network: NetworkMode) -> Option<PathBuf> {
        if network != NetworkMode::Private {
            return None;
        }
        match &self.pasta {
            Some(choice) => choice.clone(),
            None => {
                let found = which::which("pasta").ok();
                if found.is_none() {
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        tracing::warn!(
                            "pasta not found: containers on the private network get \
                             loopback only; outbound network needs the passt package"
                        );
                    });
                    return None;
                }
                // pasta refuses to start without a route out; offline, a private
                // container is loopback only rather than failing.
                if !net::has_default_route(Path::new("/proc")) {
                    tracing::info!("no default route: this private container gets loopback only");
                    return None;
                }
                found
            }
        }
    }

    /// Where this runtime keeps its state.
    pub fn home(&self) -> &Path {
        &self.layout.home
    }

    fn find_shim(&self) -> Result<PathBuf> {
        if let Some(p) = &self.shim {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("LOCALD_SHIM") {
            return Ok(PathBuf::from(p));
        }
        // This executable is always a shim too (a constructor dispatches before main).
        Ok(PathBuf::from("/proc/self/exe"))
    }

    fn dirs(&self, key: &str) -> Result<(String, Dirs)> {
        let id = state::lookup(&self.layout, key)?;
        let dirs = self.layout.dirs(&id);
        Ok((id, dirs))
    }

    /// Starts a container: resolve its source, check what can be checked, prepare its
    /// state directory and bundle, launch the shim, wait until it reports.
    async fn start(&self, spec: ContainerSpec) -> Result<ContainerHandle> {
        cgroups::prime_attach();
        let t = timing::phase("sdk: image lookup + spec -> process plan");
        let resolved = self.resolve(&spec)?;
        t.end();
        // Ports: bound here so that one in use is reported before anything starts.
        let (listeners, ports) = bind_ports(&spec)?;
        let t = timing::phase("sdk: state files + OCI config");
        let prepared = self.prepare(&spec, &resolved, ports)?;
        t.end();
        let t = timing::phase("sdk: shim spawn");
        let launched = self.launch_shim(&spec, prepared, listeners)?;
        t.end();
        let _t = timing::phase("sdk: wait for the shim's start report");
        self.wait_ready(launched).await
    }

    /// Resolves the spec's root filesystem and process, and checks everything that can
    /// be checked before anything is created: the user, the program, the working
    /// directory, the bind sources, the image's stop signal.
    fn resolve(&self, spec: &ContainerSpec) -> Result<Resolved> {
        let source = rootfs::resolve_source(&spec.source, || self.images())?;
        let stop_signal = config::image_stop_signal(
            &source.config,
            &format!(
                "config of {}",
                source
                    .image
                    .as_ref()
                    .map(|i| i.familiar())
                    .unwrap_or_default()
            ),
        )?;
        let id = state::new_id().map_err(|e| Error::io("making a container id", e))?;
        let plan = config::plan_process(spec, &source.config, &source.lowers, &id)?;
        rootfs::check_program(&source.lowers, &plan.args[0], &plan.env, &plan.cwd)?;
        match rootfs::find_in_layers(&source.lowers, Path::new(&plan.cwd)) {
            Some(p) if !p.is_dir() => {
                return Err(Error::invalid(
                    "working directory",
                    plan.cwd.clone(),
                    "not a directory in the container",
                ))
            }
            None if spec.read_only || spec.isolation == Isolation::Safe => {
                return Err(Error::invalid(
                    "working directory",
                    plan.cwd.clone(),
                    "does not exist in the container, whose root is read-only",
                ))
            }
            _ => {}
        }
        for m in &spec.mounts {
            if let MountSource::Bind(src) = &m.source {
                if !src.exists() {
                    return Err(Error::invalid(
                        "mount",
                        src.display().to_string(),
                        "the host path does not exist",
                    ));
                }
            }
        }
        let snapshot = match self.snapshot {
            Some(mode) => mode,
            None => rootfs::snapshot_mode_from_env()?,
        };
        let rootless = rootless_plan(spec)?;
        if let Some(ns) = &rootless {
            let u = &plan.user;
            let mapped = |id: u32, maps: &[rootless::IdMap]| {
                maps.iter()
                    .any(|m| id >= m.container && id - m.container < m.count)
            };
            if let Some(id) = std::iter::once(u.uid)
                .filter(|&id| !mapped(id, &ns.uid))
                .chain(
                    std::iter::once(u.gid)
                        .chain(u.additional_gids.iter().copied())
                        .filter(|&id| !mapped(id, &ns.gid)),
                )
                .next()
            {
                return Err(Error::invalid(
                    "user",
                    spec.user.clone().unwrap_or_else(|| id.to_string()),
                    format!(
                        "id {id} is not mapped in this rootless container (ids 0 to {} are; \
                         `locald info` says how to add subordinate ids)",
                        ns.uid
                            .iter()
                            .map(|m| m.container + m.count)
                            .max()
                            .unwrap_or(1)
                            - 1
                    ),
                ));
            }
        }
        // Rootless, a root filesystem owned by someone else (root) cannot be the lower
        // layer of an overlay that gets mount points: copying it up would need its
        // owner's id, which the user namespace does not map. Copy it instead.
        let snapshot = match &spec.source {
            locald_core::ContainerSource::Rootfs(dir)
                if rootless.is_some()
                    && std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(dir).map_err(
                        |e| Error::io(format!("reading root filesystem {}", dir.display()), e),
                    )?) != nix::unistd::getuid().as_raw() =>
            {
                crate::image::SnapshotMode::Copy
            }
            _ => snapshot,
        };
        Ok(Resolved {
            source,
            stop_signal,
            id,
            plan,
            snapshot,
            rootless,
        })
    }

    /// Claims the name, creates the state directory and named volumes, and writes the
    /// directory. On failure the directory and the name are released.
    fn prepare(
        &self,
        spec: &ContainerSpec,
        resolved: &Resolved,
        ports: Vec<locald_core::PortMapping>,
    ) -> Result<Prepared<'_>> {
        let id = &resolved.id;
        let name = spec
            .name
            .clone()
            .unwrap_or_else(|| format!("c-{}", &id[..12]));
        state::claim_name(&self.layout, &name, id)?;
        let dirs = self.layout.dirs(id);
        let guard = Cleanup {
            layout: &self.layout,
            dirs: dirs.clone(),
            name: name.clone(),
            id: id.clone(),
            armed: true,
        };
        std::fs::create_dir_all(&dirs.data)
            .map_err(|e| Error::io(format!("creating {}", dirs.data.display()), e))?;
        self.layout
            .create_run_dir(&dirs)
            .map_err(|e| Error::io(format!("creating {}", dirs.run.display()), e))?;
        for m in &spec.mounts {
            if let MountSource::Volume(v) = &m.source {
                let data = self.layout.volumes().join(v).join("_data");
                std::fs::create_dir_all(&data)
                    .map_err(|e| Error::io(format!("creating volume {v}"), e))?;
            }
        }
        self.write_state_dir(spec, resolved, &name, &dirs, ports)?;
        Ok(Prepared {
            guard,
            id: id.clone(),
            name,
            dirs,
            snapshot: resolved.snapshot,
            rootless: resolved.rootless.clone(),
        })
    }

    /// Writes the container's directories: the `/etc` files, the OCI bundle's
    /// `config.json`, `shim.json` and `state.json` (last: it makes the container
    /// visible).
    fn write_state_dir(
        &self,
        spec: &ContainerSpec,
        resolved: &Resolved,
        name: &str,
        dirs: &Dirs,
        ports: Vec<locald_core::PortMapping>,
    ) -> Result<()> {
        let Resolved {
            source, id, plan, ..
        } = resolved;
        let dir = &dirs.run;
        let io_err = |what: &str| {
            let what = format!("{what} in {}", dir.display());
            move |e: io::Error| Error::io(what, e)
        };
        let oci = self.bundle_config(spec, resolved, dirs)?;
        std::fs::write(dir.join("hosts"), config::hosts_file(&plan.hostname))
            .map_err(io_err("writing hosts"))?;
        std::fs::write(dir.join("hostname"), format!("{}\n", plan.hostname))
            .map_err(io_err("writing hostname"))?;
        std::fs::write(dir.join("resolv.conf"), config::resolv_conf(spec.network))
            .map_err(io_err("writing resolv.conf"))?;
        state::write_json(&dir.join("config.json"), &oci).map_err(io_err("writing config.json"))?;
        // Container root is an unprivileged host uid: the shim makes the mount points
        // the root lacks (in the container's snapshot), which that uid could not.
        let user_namespace = oci
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| {
                ns.iter()
                    .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
            });
        let shim_cfg = shim::ShimConfig {
            id: id.clone(),
            name: name.to_owned(),
            lowers: source.lowers.clone(),
            image: source.image.is_some(),
            whiteouts: source.whiteouts,
            read_only: spec.read_only || spec.isolation == Isolation::Safe,
            create_mount_points: user_namespace,
            rootless: resolved.rootless.clone(),
            tty: spec.tty,
            terminal_size: spec.terminal_size,
            stdin: spec.stdin,
            attach: true,
            auto_remove: spec.auto_remove,
            network: spec.network,
            pasta: self.pasta_for(spec.network),
            map_host_loopback: spec.isolation != Isolation::Safe,
            ports: ports.iter().map(|p| p.container_port).collect(),
            udp: ports.iter().map(|p| p.protocol == Protocol::Udp).collect(),
            names_dir: self.layout.names(),
            workdir: PathBuf::from(&plan.cwd),
        };
        state::write_json(&dir.join("shim.json"), &shim_cfg)
            .map_err(io_err("writing shim.json"))?;
        // Docker's rule: the image's labels, with the container's own over them.
        let mut recorded = spec.clone();
        for (key, value) in source.config.labels().iter().flatten() {
            recorded
                .labels
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
        let st = state::State::created(
            id.clone(),
            name.to_owned(),
            source.image.clone(),
            plan.args.clone(),
            ports,
            recorded,
        );
        state::write_json(&dirs.state_file(), &st)
            .map_err(|e| Error::io(format!("writing state.json in {}", dirs.data.display()), e))?;
        Ok(())
    }

    /// The OCI runtime configuration for the container in `dirs`.
    fn bundle_config(
        &self,
        spec: &ContainerSpec,
        resolved: &Resolved,
        dirs: &Dirs,
    ) -> Result<oci_spec::runtime::Spec> {
        // Rootless, container root is already an unprivileged host id.
        let user_namespace = spec.isolation == Isolation::Safe
            && resolved.rootless.is_none()
            && sys::user_namespaces_usable(&[&dirs.data, &dirs.run], &resolved.source.lowers);
        config::oci_config(
            spec,
            &config::BundleInputs {
                id: &resolved.id,
                process: &resolved.plan,
                rootfs: &dirs.rootfs(),
                run_dir: &dirs.run,
                volumes_dir: &self.layout.volumes(),
                nofile_hard: sys::nofile_hard_limit(),
                user_namespace,
                rootless: resolved.rootless.is_some(),
                // Rootless containers get no limits (they are refused before this).
                cgroup_limits: resolved.rootless.is_none(),
                stop_signal: resolved.stop_signal,
            },
        )
    }

    /// Starts the shim on the prepared state directory with its pipes and the port
    /// listeners. From here on the shim owns the directory.
    fn launch_shim(
        &self,
        spec: &ContainerSpec,
        mut prepared: Prepared<'_>,
        listeners: Vec<OwnedFd>,
    ) -> Result<Launched> {
        let shim_program = self.find_shim()?;
        let (sync_r, sync_w) = sys::pipe()?;
        let (exit_r, exit_w) = sys::pipe()?;
        let (out_r, out_w) = sys::pipe()?;
        let (err_r, err_w) = sys::pipe()?;
        let mut fds: Vec<(OwnedFd, i32)> = vec![
            (sync_w, shim::fds::SYNC),
            (exit_w, shim::fds::EXIT),
            (out_w, shim::fds::OUT),
            (err_w, shim::fds::ERR),
        ];
        let mut stdin_w = None;
        if spec.stdin {
            let (r, w) = sys::pipe()?;
            fds.push((r, shim::fds::IN));
            stdin_w = Some(w);
        }
        for (i, l) in listeners.into_iter().enumerate() {
            fds.push((l, shim::fds::FIRST_LISTENER + i as i32));
        }
        let child = match self.fork_shim(&shim_program, &prepared, &fds)? {
            Some(forked) => forked,
            None => self.spawn_shim(&shim_program, &prepared, fds)?,
        };
        // From here on the shim owns the state directory: it cleans up after a failed
        // start itself, and a caller that gives up waiting must not pull the directory
        // from under it.
        prepared.guard.armed = false;
        Ok(Launched {
            id: prepared.id,
            name: prepared.name,
            dirs: prepared.dirs,
            program: shim_program,
            child,
            sync: sync_r,
            exit: exit_r,
            out: out_r,
            err: err_r,
            stdin: stdin_w,
        })
    }

    /// Has the forker fork the shim, when it serves this runtime (root): `None` when
    /// the shim is to be spawned instead.
    fn fork_shim(
        &self,
        program: &Path,
        prepared: &Prepared<'_>,
        fds: &[(OwnedFd, i32)],
    ) -> Result<Option<ShimProcess>> {
        if prepared.rootless.is_some() {
            return Ok(None);
        }
        // What the shim says before it detaches, as a spawned shim's stderr.
        let (diag_r, diag_w) = sys::pipe()?;
        let mut all: Vec<(&OwnedFd, i32)> = fds.iter().map(|(fd, n)| (fd, *n)).collect();
        all.push((&diag_w, 2));
        let mut env = vec![(rootfs::SNAPSHOT_ENV, prepared.snapshot.as_str().to_owned())];
        env.extend(timing::spawned_at());
        let Some(pid) = self.forker.fork_shim(program, &prepared.dirs, &all, &env) else {
            return Ok(None);
        };
        drop(diag_w);
        Ok(Some(ShimProcess::Forked {
            pid,
            start: state::process_start_time(pid),
            diag: Some(diag_r),
        }))
    }

    /// Spawns the shim: `program __locald-shim run DATA RUN` with `fds`.
    fn spawn_shim(
        &self,
        shim_program: &Path,
        prepared: &Prepared<'_>,
        fds: Vec<(OwnedFd, i32)>,
    ) -> Result<ShimProcess> {
        let mut cmd = tokio::process::Command::new(shim_program);
        cmd.kill_on_drop(false);
        cmd.arg(SHIM_ARG)
            .arg(if prepared.rootless.is_some() {
                shim::RUN_IN_USERNS
            } else {
                "run"
            })
            .arg(&prepared.dirs.data)
            .arg(&prepared.dirs.run)
            .env(rootfs::SNAPSHOT_ENV, prepared.snapshot.as_str())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            // What the shim says before it detaches (a loader error, a panic) is kept
            // for the error when it ends without reporting.
            .stderr(std::process::Stdio::piped());
        if let Some((key, value)) = timing::spawned_at() {
            cmd.env(key, value);
        }
        let mapped = sys::map_fds(&mut cmd, fds, true)?;
        // Rootless: the shim starts inside its user namespace.
        let mapper = match &prepared.rootless {
            Some(ns) => Some(
                rootless::spawn_into(cmd.as_std_mut(), ns, rootless::Scope::Shim)
                    .map_err(|e| Error::io("preparing the container's user namespace", e))?,
            ),
            None => None,
        };
        let spawned = cmd.spawn();
        let child = match mapper {
            Some(mapper) => mapper.finish(spawned),
            None => spawned.map_err(rootless::SpawnFailure::Exec),
        };
        let child = match child {
            Ok(child) => child,
            Err(rootless::SpawnFailure::Mapping(why)) => {
                return Err(Error::io(
                    "setting up the user namespace of a rootless container",
                    io::Error::other(why),
                ))
            }
            Err(rootless::SpawnFailure::Entering(e)) => {
                return Err(Error::io(
                    "setting up the user namespace of a rootless container (can users \
                     create user namespaces here? `locald info` says)",
                    e,
                ))
            }
            Err(rootless::SpawnFailure::Exec(e)) => {
                return Err(Error::Spawn {
                    program: shim_program.display().to_string(),
                    source: e,
                })
            }
        };
        drop(mapped);
        Ok(ShimProcess::Spawned(child))
    }

    /// Waits for the shim's `ok <pid>` or `err <why>`; on an error, waits for the shim
    /// to have cleaned up, then removes the state directory and releases the name.
    async fn wait_ready(&self, launched: Launched) -> Result<ContainerHandle> {
        let Launched {
            id,
            name,
            dirs,
            program,
            mut child,
            sync,
            exit,
            out,
            err,
            stdin,
        } = launched;
        let mut sync = sys::receiver(sync)?;
        let mut reply = String::new();
        let _ = sync.read_to_string(&mut reply).await;
        let started = shim::protocol::started(&reply, "");
        let diag = child.take_diag();
        let Ok(pid) = started else {
            let mut why = started.unwrap_err();
            // The shim has unmounted and removed what it created; wait until it has
            // ended before removing the state directory.
            let status = child.wait().await;
            if why.is_empty() {
                why = silent_shim_error(&program, status, diag).await;
            }
            wait_shim_gone(&dirs).await;
            if !shim::keep_failed() {
                let _ = dirs.remove();
                state::release_name(&self.layout, &name, &id);
            }
            return Err(Error::io(
                format!("starting container {name}"),
                io::Error::other(why),
            ));
        };
        let control = ContainerControl {
            dirs,
            shim: Some(child),
            pid,
            pid_start: state::process_start_time(pid),
            exit: Some(sys::receiver(exit)?),
            buf: Vec::new(),
            status: None,
        };
        let stdout = sys::receiver(out)?;
        let stderr = sys::receiver(err)?;
        let stdin = match stdin {
            Some(w) => Some(Box::pin(sys::sender(w)?) as locald_core::ProcessStdin),
            None => None,
        };
        let process = Process::new(
            Box::new(control),
            stdin,
            Some(Box::pin(stdout)),
            Some(Box::pin(stderr)),
        );
        Ok(ContainerHandle::new(id, name, process))
    }

    /// Pulls the spec's image into the store when it is not there yet, as `docker run`
    /// does, with the spec's pull options (the built-in image is made, not pulled).
    async fn ensure_image(&self, spec: &ContainerSpec) -> Result<()> {
        let locald_core::ContainerSource::Image(image) = &spec.source else {
            return Ok(());
        };
        let store = self.images()?;
        if store.store().get(image)?.is_some() {
            return Ok(());
        }
        tracing::info!(image = %image, "image not stored; pulling it");
        store.pull(image, spec.pull_options()).await.map(drop)
    }

    async fn wait_id(&self, dirs: &Dirs) -> Result<ExitStatus> {
        wait_shim_gone(dirs).await;
        let st = state::read_state(dirs).map_err(|e| Error::io("reading container state", e))?;
        Ok(st.exit.unwrap_or(ExitStatus::Exited(-1)))
    }

    fn signal(&self, dirs: &Dirs, signal: Signal) -> Result<()> {
        let st = state::read_state(dirs).map_err(|e| Error::io("reading container state", e))?;
        if st.phase != Phase::Running || !state::shim_alive(dirs) {
            return Err(Error::invalid("container", st.name, "is not running"));
        }
        if let (Some(pid), Some(start)) = (st.pid, st.pid_start) {
            if state::process_start_time(pid) == Some(start) {
                sys::kill(pid, signal).map_err(|e| {
                    Error::io(format!("sending {signal} to container {}", st.name), e)
                })?;
            }
        }
        Ok(())
    }
}

/// Why a shim that never reported ended: its exit status and what it printed before
/// it detached (a loader error, a panic).
async fn silent_shim_error(
    program: &Path,
    status: Option<io::Result<std::process::ExitStatus>>,
    diag: Option<Diag>,
) -> String {
    let mut said = Vec::new();
    if let Some(mut d) = diag {
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            (&mut d).take(16 * 1024).read_to_end(&mut said),
        )
        .await;
    }
    let said = String::from_utf8_lossy(&said);
    let said = said.trim();
    let status = match status {
        Some(Ok(s)) => s.to_string(),
        Some(Err(e)) => format!("an unknown status ({e})"),
        None => "its status is known to the forker only".to_owned(),
    };
    let mut why = format!(
        "the container helper {} ended ({status}) without reporting",
        program.display()
    );
    if !said.is_empty() {
        why.push_str(": ");
        why.push_str(&said.replace('\n', " "));
    }
    why
}

/// Waits until no shim holds the container's lock.
async fn wait_shim_gone(dirs: &Dirs) {
    poll_until(|| !state::shim_alive(dirs)).await;
}

/// Waits until `done` says so, looking again after 1 ms, then twice as long each
/// time, up to every 25 ms.
async fn poll_until(mut done: impl FnMut() -> bool) {
    let mut delay = Duration::from_millis(1);
    while !done() {
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(25));
    }
}

/// The user namespace the shim makes for a caller that is not root (`None` for root),
/// after checking that the spec asks nothing a rootless container cannot do here.
fn rootless_plan(spec: &ContainerSpec) -> Result<Option<rootless::UserNs>> {
    if nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    if spec.resources != Default::default() {
        if let Some(why) = rootless::limits_refused(Path::new("/proc"), Path::new("/sys/fs/cgroup"))
        {
            return Err(Error::invalid(
                "resource limits",
                "--memory, --cpus, --pids-limit",
                format!("not available to a rootless container: {why}"),
            ));
        }
    }
    let mut ns = rootless::UserNs::for_caller(Path::new("/etc"));
    if !ns.single_id() && (which::which("newuidmap").is_err() || which::which("newgidmap").is_err())
    {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "newuidmap/newgidmap not found (the uidmap package): rootless containers \
                 map only your own ids"
            );
        });
        ns.uid.truncate(1);
        ns.gid.truncate(1);
    }
    if ns.single_id() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            tracing::warn!(
                "no subordinate id range for this user in /etc/subuid and /etc/subgid: \
                 rootless containers see only root, so images whose files belong to other \
                 users cannot be set up faithfully (add a range: usermod --add-subuids \
                 100000-165535 --add-subgids 100000-165535 USER)"
            );
        });
    }
    Ok(Some(ns))
}

/// Binds the spec's published ports (default host address `127.0.0.1`), so that a
/// port in use is an error naming it; returns the listeners for the shim and the
/// mappings with the host ports actually bound.
fn bind_ports(spec: &ContainerSpec) -> Result<(Vec<OwnedFd>, Vec<locald_core::PortMapping>)> {
    let mut listeners = Vec::new();
    let mut ports = Vec::new();
    for p in &spec.ports {
        let ip = p.host_ip.unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let addr = std::net::SocketAddr::new(ip, p.host_port.unwrap_or(0));
        let bind = || -> io::Result<(OwnedFd, std::net::SocketAddr)> {
            if p.protocol == Protocol::Udp {
                let socket = std::net::UdpSocket::bind(addr)?;
                let bound = socket.local_addr()?;
                Ok((OwnedFd::from(socket), bound))
            } else {
                let listener = std::net::TcpListener::bind(addr)?;
                let bound = listener.local_addr()?;
                Ok((OwnedFd::from(listener), bound))
            }
        };
        let (listener, bound) = bind().map_err(|e| {
            if e.kind() == io::ErrorKind::AddrInUse {
                Error::invalid(
                    "port mapping",
                    p.to_string(),
                    format!("host port {} is already in use", addr.port()),
                )
            } else {
                Error::io(format!("listening on {addr} for port mapping {p}"), e)
            }
        })?;
        let mut mapped = *p;
        mapped.host_ip = Some(ip);
        mapped.host_port = Some(bound.port());
        ports.push(mapped);
        listeners.push(listener);
    }
    Ok((listeners, ports))
}

/// A container's source and process, resolved and checked; nothing created yet.
#[derive(Debug)]
struct Resolved {
    source: rootfs::RootfsSource,
    stop_signal: Option<Signal>,
    id: String,
    plan: config::ProcessPlan,
    snapshot: crate::image::SnapshotMode,
    /// The caller is not root: the user namespace the shim makes.
    rootless: Option<rootless::UserNs>,
}

/// A written state directory, removed (and its name released) on drop until the shim
/// takes it over.
struct Prepared<'a> {
    guard: Cleanup<'a>,
    id: String,
    name: String,
    dirs: Dirs,
    snapshot: crate::image::SnapshotMode,
    /// The user namespace the shim starts in (rootless).
    rootless: Option<rootless::UserNs>,
}

/// A shim started on a state directory, and the caller's ends of its pipes.
struct Launched {
    id: String,
    name: String,
    dirs: Dirs,
    program: PathBuf,
    child: ShimProcess,
    sync: OwnedFd,
    exit: OwnedFd,
    out: OwnedFd,
    err: OwnedFd,
    stdin: Option<OwnedFd>,
}

/// Removes a half-made container unless disarmed.
struct Cleanup<'a> {
    layout: &'a Layout,
    dirs: Dirs,
    name: String,
    id: String,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.dirs.remove();
            state::release_name(self.layout, &self.name, &self.id);
        }
    }
}

/// What a shim wrote on stderr before it detached.
type Diag = std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// A container's shim, as the caller knows it.
#[derive(Debug)]
enum ShimProcess {
    /// Spawned by this process: its child.
    Spawned(tokio::process::Child),
    /// Forked by the runtime's forker: not this process's child.
    Forked {
        pid: u32,
        start: Option<u64>,
        diag: Option<OwnedFd>,
    },
}

impl ShimProcess {
    fn take_diag(&mut self) -> Option<Diag> {
        match self {
            ShimProcess::Spawned(child) => child.stderr.take().map(|d| Box::pin(d) as Diag),
            ShimProcess::Forked { diag, .. } => diag
                .take()
                .and_then(|fd| sys::receiver(fd).ok())
                .map(|d| Box::pin(d) as Diag),
        }
    }

    /// Waits until the shim has ended; its exit status when this process is its
    /// parent.
    async fn wait(&mut self) -> Option<io::Result<std::process::ExitStatus>> {
        match self {
            ShimProcess::Spawned(child) => Some(child.wait().await),
            ShimProcess::Forked { pid, start, .. } => {
                let (pid, start) = (*pid, *start);
                poll_until(|| start.is_none() || state::process_start_time(pid) != start).await;
                None
            }
        }
    }
}

/// The main process of a container started by this runtime.
#[derive(Debug)]
struct ContainerControl {
    dirs: Dirs,
    /// The shim: waited for when it ends without an exit report. A spawned one is
    /// otherwise reaped by tokio in the background once dropped (after its report, a
    /// shim may still wait for pasta's end, holding the container's lock); a forked
    /// one, by the kernel for the forker.
    shim: Option<ShimProcess>,
    pid: u32,
    pid_start: Option<u64>,
    exit: Option<tokio::net::unix::pipe::Receiver>,
    buf: Vec<u8>,
    status: Option<ExitStatus>,
}

fn parse_status(text: &str) -> Option<ExitStatus> {
    shim::protocol::exit_status(text)
}

#[async_trait]
impl ProcessControl for ContainerControl {
    fn id(&self) -> Option<u32> {
        Some(self.pid)
    }

    async fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let _t = timing::phase("sdk: wait for the exit report");
        let mut reported = None;
        if let Some(exit) = self.exit.as_mut() {
            let mut chunk = [0u8; 64];
            while reported.is_none() {
                match exit.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        self.buf.extend_from_slice(&chunk[..n]);
                        // The exit report is the shim's last word: what it does after
                        // (waiting for pasta's end) need not keep the caller waiting.
                        if self.buf.ends_with(b"\n") {
                            reported = parse_status(&String::from_utf8_lossy(&self.buf));
                        }
                    }
                }
            }
            self.exit = None;
        }
        if reported.is_none() {
            if let Some(mut shim) = self.shim.take() {
                let _ = shim.wait().await;
            }
            reported = parse_status(&String::from_utf8_lossy(&self.buf));
        }
        let status = match reported {
            Some(s) => s,
            None => match state::read_state(&self.dirs).ok().and_then(|s| s.exit) {
                Some(s) => s,
                None => {
                    return Err(Error::io(
                        "waiting for the container",
                        io::Error::other(format!(
                            "the container helper ended without reporting the exit \
                             status (its log: {})",
                            self.dirs.data.join("shim.log").display()
                        )),
                    ))
                }
            },
        };
        self.status = Some(status);
        Ok(status)
    }

    async fn kill(&mut self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        if self.pid_start.is_some() && state::process_start_time(self.pid) == self.pid_start {
            sys::kill(self.pid, signal)
                .map_err(|e| Error::io(format!("sending {signal} to the container"), e))?;
        }
        Ok(())
    }

    async fn resize(&mut self, size: locald_core::TerminalSize) -> Result<()> {
        resize_container(&self.dirs.run, size).await
    }
}

/// Asks the shim of the container whose runtime directory is `dir` to resize its
/// terminal.
async fn resize_container(dir: &Path, size: locald_core::TerminalSize) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let err = |e: io::Error| Error::io("resizing the container's terminal", e);
    // A state directory's path may be longer than a socket address: name the socket
    // through a descriptor of the directory.
    let dir = std::fs::File::open(dir).map_err(err)?;
    let path = format!(
        "/proc/self/fd/{}/{}",
        dir.as_raw_fd(),
        shim::protocol::TTY_SOCKET
    );
    // The shim listens only while the container, started with a terminal, runs.
    let connected = tokio::net::UnixStream::connect(&path).await;
    drop(dir);
    let mut conn = match connected {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(Error::invalid(
                "terminal",
                "resize",
                "the container has no terminal or is not running",
            ))
        }
        Err(e) => return Err(err(e)),
    };
    conn.write_all(format!("{} {}\n", size.rows, size.cols).as_bytes())
        .await
        .map_err(err)?;
    conn.shutdown().await.map_err(err)
}

/// A command started in a container by `exec`.
#[derive(Debug)]
struct ExecControl {
    child: tokio::process::Child,
    /// With a terminal: where resize lines go.
    resize: Option<std::fs::File>,
    status_pipe: tokio::net::unix::pipe::Receiver,
    buf: Vec<u8>,
    pid: u32,
    status: Option<ExitStatus>,
}

#[async_trait]
impl ProcessControl for ExecControl {
    fn id(&self) -> Option<u32> {
        Some(self.pid)
    }

    async fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let mut chunk = [0u8; 64];
        loop {
            match self.status_pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        let _ = self.child.wait().await;
        let status =
            parse_status(&String::from_utf8_lossy(&self.buf)).unwrap_or(ExitStatus::Exited(-1));
        self.status = Some(status);
        Ok(status)
    }

    async fn kill(&mut self, signal: Signal) -> Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        sys::kill(self.pid, signal)
            .map_err(|e| Error::io(format!("sending {signal} to the exec"), e))
    }

    async fn resize(&mut self, size: locald_core::TerminalSize) -> Result<()> {
        use std::io::Write;
        let Some(pipe) = self.resize.as_mut() else {
            return Err(Error::invalid(
                "terminal",
                "resize",
                "this process has no terminal",
            ));
        };
        if self.status.is_some() {
            return Ok(());
        }
        // A line is far below the pipe's atomic size: the write never blocks for long.
        match pipe.write_all(format!("{} {}\n", size.rows, size.cols).as_bytes()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                Err(Error::io("resizing the exec's terminal", e))
            }
            _ => Ok(()),
        }
    }
}

/// Log chunks delivered through a channel.
struct ChannelStream(tokio::sync::mpsc::Receiver<Result<(LogStream, Vec<u8>)>>);

impl futures_core::Stream for ChannelStream {
    type Item = Result<(LogStream, Vec<u8>)>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[async_trait]
impl Runtime for ContainerRuntime {
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo::new(
            "container",
            self.platform,
            [
                Capability::Commands,
                Capability::Containers,
                Capability::Images,
                Capability::Exec,
                Capability::SafeMode,
            ],
        )
    }

    async fn spawn(&self, command: Command) -> Result<Process> {
        crate::process_unix::spawn(command)
    }

    async fn run_command(&self, command: Command) -> Result<locald_core::Output> {
        crate::process_unix::run(command).await
    }

    async fn run_container(&self, spec: ContainerSpec) -> Result<ContainerHandle> {
        let t = timing::phase("sdk: image presence check");
        self.ensure_image(&spec).await?;
        t.end();
        self.start(spec).await
    }

    async fn pull_image(
        &self,
        image: &locald_core::ImageRef,
        options: locald_core::PullOptions,
    ) -> Result<locald_core::ImageSummary> {
        self.images()?.pull(image, options).await
    }

    async fn list_images(&self) -> Result<Vec<locald_core::ImageSummary>> {
        self.images()?.list()
    }

    async fn remove_image(
        &self,
        image: &locald_core::ImageRef,
    ) -> Result<locald_core::ImageSummary> {
        self.images()?.remove(image)
    }

    async fn prune_images(&self) -> Result<locald_core::PruneReport> {
        let store = self.images()?.clone();
        tokio::task::spawn_blocking(move || store.prune())
            .await
            .map_err(|e| Error::io("pruning images", io::Error::other(e)))?
    }

    async fn load_image(&self, path: &Path) -> Result<Vec<locald_core::ImageSummary>> {
        self.images()?
            .load(path, locald_core::PullOptions::default())
            .await
    }

    async fn import_image(
        &self,
        rootfs: &Path,
        image: &locald_core::ImageRef,
    ) -> Result<locald_core::ImageSummary> {
        self.images()?
            .import(rootfs, image, locald_core::PullOptions::default())
            .await
    }

    async fn login(&self, login: locald_core::RegistryLogin) -> Result<()> {
        self.images()?
            .login(
                &login.registry,
                &login.username,
                &login.password,
                login.insecure,
            )
            .await
    }

    async fn logout(&self, registry: &str) -> Result<bool> {
        self.images()?.logout(registry)
    }

    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>> {
        let mut out = Vec::new();
        for id in state::list_ids(&self.layout) {
            let dirs = self.layout.dirs(&id);
            let Ok(st) = state::read_state(&dirs) else {
                continue;
            };
            let summary = st.summary(state::shim_alive(&dirs));
            if all || matches!(summary.state, ContainerState::Running) {
                out.push(summary);
            }
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerSummary> {
        let (_, dirs) = self.dirs(id)?;
        let st = state::read_state(&dirs).map_err(|e| Error::io("reading container state", e))?;
        Ok(st.summary(state::shim_alive(&dirs)))
    }

    async fn wait_container(&self, id: &str) -> Result<ExitStatus> {
        let (_, dirs) = self.dirs(id)?;
        self.wait_id(&dirs).await
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let (_, dirs) = self.dirs(id)?;
        if !state::shim_alive(&dirs) {
            // No supervisor: if its init outlived it, end that.
            if let Ok(st) = state::read_state(&dirs) {
                if let (Phase::Running, Some(pid), Some(start)) = (st.phase, st.pid, st.pid_start) {
                    if state::process_start_time(pid) == Some(start) {
                        let _ = sys::kill(pid, Signal::KILL);
                    }
                }
            }
            return Ok(());
        }
        // Docker's rule: the image's stop signal (default SIGTERM), then SIGKILL.
        let _ = self.signal(&dirs, config::recorded_stop_signal(&dirs));
        if tokio::time::timeout(grace, wait_shim_gone(&dirs))
            .await
            .is_err()
        {
            let _ = self.signal(&dirs, Signal::KILL);
            wait_shim_gone(&dirs).await;
        }
        Ok(())
    }

    async fn kill_container(&self, id: &str, signal: Signal) -> Result<()> {
        let (_, dirs) = self.dirs(id)?;
        self.signal(&dirs, signal)
    }

    async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        let _t = timing::phase("sdk: remove_container");
        let (id, dirs) = self.dirs(id)?;
        let st = state::read_state(&dirs).map_err(|e| Error::io("reading container state", e))?;
        if state::shim_alive(&dirs) {
            if !force && st.phase != Phase::Exited {
                return Err(Error::invalid(
                    "container",
                    st.name,
                    "is running; stop it first or remove it with force",
                ));
            }
            let _ = self.signal(&dirs, Signal::KILL);
            wait_shim_gone(&dirs).await;
        } else if st.phase == Phase::Running {
            // The shim died without cleaning up: do its part.
            if let (Some(pid), Some(start)) = (st.pid, st.pid_start) {
                if state::process_start_time(pid) == Some(start) {
                    let _ = sys::kill(pid, Signal::KILL);
                }
            }
            rootfs::unmount_rootfs(&dirs.data);
            cgroups::remove(&id);
        }
        dirs.remove()
            .map_err(|e| Error::io(format!("removing {}", dirs.data.display()), e))?;
        state::release_name(&self.layout, &st.name, &id);
        Ok(())
    }

    async fn container_logs(&self, id: &str, options: LogOptions) -> Result<LogChunks> {
        let (_, dirs) = self.dirs(id)?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let path = dirs.log_file();
        // Opened now and read through this descriptor: a container removed while its
        // log is followed (docker-py reads the log after removing the container) still
        // gives everything it wrote.
        let mut file = tokio::fs::File::open(&path).await.ok();
        tokio::spawn(async move {
            let mut offset = 0usize;
            let mut first = true;
            let mut data = Vec::new();
            loop {
                // Sampled before reading: a read made once the shim is gone has
                // everything it wrote.
                let alive = state::shim_alive(&dirs);
                if file.is_none() {
                    file = tokio::fs::File::open(&path).await.ok();
                }
                if let Some(f) = file.as_mut() {
                    let _ = tokio::io::AsyncReadExt::read_to_end(f, &mut data).await;
                }
                let (frames, used) = logs::parse_frames(data.get(offset..).unwrap_or(&[]));
                offset += used;
                let frames = match (first, options.tail) {
                    (true, Some(n)) => logs::tail(frames, n),
                    _ => frames,
                };
                first = false;
                for f in frames {
                    if tx.send(Ok(f)).await.is_err() {
                        return;
                    }
                }
                if !options.follow || !alive {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Ok(Box::pin(ChannelStream(rx)))
    }

    async fn exec(&self, id: &str, command: Command) -> Result<Process> {
        let (id, dirs) = self.dirs(id)?;
        let st = state::read_state(&dirs).map_err(|e| Error::io("reading container state", e))?;
        if st.phase != Phase::Running || !state::shim_alive(&dirs) {
            return Err(Error::invalid("container", st.name, "is not running"));
        }
        command.validate()?;
        // The exec'd process is moved into the container's cgroups as well.
        cgroups::prime_attach();
        let cwd = command
            .get_current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/".into());
        let mut env: HashMap<String, String> = HashMap::new();
        for (k, v) in &command.get_env().vars {
            if let Some(v) = v {
                env.insert(k.clone(), v.clone());
            }
        }
        let spec_env: Vec<String> = st
            .spec
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        // A rootless container's root is mounted in its shim's mount namespace only:
        // look at it through its init's root, when this user may.
        let rootless = !nix::unistd::geteuid().is_root();
        let root = match (rootless, st.pid) {
            (false, _) => Some(dirs.rootfs()),
            (true, Some(pid)) => Some(PathBuf::from(format!("/proc/{pid}/root")))
                .filter(|r| std::fs::read_dir(r).is_ok()),
            (true, None) => None,
        };
        if let Some(root) = root {
            rootfs::check_program(&[root], command.get_program(), &spec_env, &cwd)?;
        }
        let mut args = vec![command.get_program().to_owned()];
        args.extend(command.get_args().iter().cloned());
        let request = shim::ExecRequest {
            id: id.clone(),
            args,
            env,
            cwd: command.get_current_dir().map(Path::to_owned),
            join_user_namespace_of: st.pid.filter(|_| rootless),
            tty: command.get_tty(),
            terminal_size: command.get_terminal_size(),
        };
        let request = serde_json::to_string(&request)
            .map_err(|e| Error::io("encoding the exec request", io::Error::other(e)))?;
        let shim_program = self.find_shim()?;
        let (status_r, status_w) = sys::pipe()?;
        let mut cmd = tokio::process::Command::new(&shim_program);
        cmd.arg(SHIM_ARG)
            .arg("exec")
            .arg(&dirs.data)
            .arg(&dirs.run)
            .arg(request);
        cmd.stdin(match command.get_stdin() {
            Stdin::Inherit => std::process::Stdio::inherit(),
            Stdin::Bytes(_) | Stdin::Piped => std::process::Stdio::piped(),
            _ => std::process::Stdio::null(),
        });
        let out = |s: Stdio| match s {
            Stdio::Inherit => std::process::Stdio::inherit(),
            Stdio::Null => std::process::Stdio::null(),
            _ => std::process::Stdio::piped(),
        };
        cmd.stdout(out(command.get_stdout()));
        cmd.stderr(out(command.get_stderr()));
        cmd.kill_on_drop(false);
        let mut fds = vec![(status_w, shim::fds::SYNC)];
        let mut resize = None;
        if command.get_tty() {
            let (r, w) = sys::pipe()?;
            fds.push((r, shim::fds::EXEC_RESIZE));
            resize = Some(std::fs::File::from(w));
        }
        let mapped = sys::map_fds(&mut cmd, fds, false)?;
        let mut child = cmd.spawn().map_err(|e| Error::Spawn {
            program: shim_program.display().to_string(),
            source: e,
        })?;
        drop(mapped);
        let mut status_pipe = sys::receiver(status_r)?;
        // The first line is the shim's `started` or `failed` message.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 256];
        while !buf.contains(&b'\n') {
            match status_pipe.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let first = text.lines().next().unwrap_or("");
        let started = shim::protocol::started(first, "the exec helper exited without reporting");
        let Ok(pid) = started else {
            let _ = child.wait().await;
            let why = started.unwrap_err();
            return Err(Error::io(
                format!("running {} in container {}", command.get_program(), st.name),
                io::Error::other(why.to_owned()),
            ));
        };
        let rest = buf[first.len() + 1..].to_vec();
        let stdin = child.stdin.take();
        let stdin = match (command.get_stdin(), stdin) {
            (Stdin::Bytes(bytes), Some(mut w)) => {
                let bytes = bytes.clone();
                tokio::spawn(async move {
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut w, &bytes).await;
                });
                None
            }
            (_, s) => s.map(|s| Box::pin(s) as locald_core::ProcessStdin),
        };
        let (stdout, stderr) = crate::process_unix::output_pipes(&mut child);
        let control = ExecControl {
            child,
            resize,
            status_pipe,
            buf: rest,
            pid,
            status: None,
        };
        Ok(Process::new(Box::new(control), stdin, stdout, stderr))
    }
}
