//! From a [`ContainerSpec`] and an [`ImageConfig`] to an OCI runtime `config.json`.
//!
//! The document is built with oci-spec's typed builders (`oci_spec::runtime`), the
//! types the runtime library reads it back into.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use locald_core::{ContainerSpec, Error, Isolation, MountSource, NetworkMode, Result, Signal};
use oci_spec::runtime::{
    Arch as SeccompArch, Capabilities, Capability, Linux, LinuxBuilder, LinuxCapabilitiesBuilder,
    LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxIdMappingBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, Process, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use serde::{Deserialize, Serialize};

use super::rootfs;
use crate::ImageConfig;

/// The default `PATH` when neither the image nor the caller sets one (docker's).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set.
pub(crate) const DEFAULT_CAPS: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// System calls Safe Mode refuses with `EPERM`, following docker's default profile:
/// namespaces, mounts, keyrings, tracing, kernel modules, reboot, clocks, BPF and
/// the other calls docker reserves for privileged containers.
const SAFE_BLOCKED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "get_mempolicy",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mbind",
    "mount",
    "move_mount",
    "move_pages",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "set_mempolicy",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "syslog",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vhangup",
    "_sysctl",
];

/// `clone` flags that create namespaces; Safe Mode refuses a `clone` with any of them.
const CLONE_NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// The `RLIMIT_NOFILE` containers get (docker's), unless the caller's hard limit is
/// lower.
const DEFAULT_NOFILE: u64 = 1 << 20;

/// The CFS period for the CPU quota, in microseconds (docker's).
const CPU_PERIOD_US: u64 = 100_000;

/// The size of Safe Mode's `/tmp` tmpfs.
const SAFE_TMP_BYTES: u64 = 64 << 20;

/// The runtime-config annotation that carries the image's `StopSignal` (the OCI image
/// spec's conversion rules).
pub(crate) const STOP_SIGNAL_ANNOTATION: &str = "org.opencontainers.image.stopSignal";

/// The image's stop signal (`SIGUSR1`, `USR1` or `10`), if it names one.
pub(crate) fn image_stop_signal(image: &ImageConfig, what: &str) -> Result<Option<Signal>> {
    match image.stop_signal().as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| Error::InvalidImage {
            what: what.to_owned(),
            reason: format!("its stop signal {s:?} is not a known signal name or number"),
        }),
    }
}

/// The signal that stops the container in `dirs`: the image's stop signal recorded in
/// its `config.json`, else SIGTERM (as docker does).
pub(crate) fn recorded_stop_signal(dirs: &super::state::Dirs) -> Signal {
    super::state::read_json::<oci_spec::runtime::Spec>(&dirs.config_file())
        .ok()
        .and_then(|spec| spec.annotations().clone())
        .and_then(|a| a.get(STOP_SIGNAL_ANNOTATION).and_then(|s| s.parse().ok()))
        .unwrap_or(Signal::TERM)
}

/// The first host uid (and gid) that container root maps to in Safe Mode.
pub(crate) const SAFE_HOST_ID: u32 = 1_000_000;
/// How many ids Safe Mode maps.
pub(crate) const SAFE_ID_COUNT: u32 = 65_536;

/// A user resolved in the container's `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ResolvedUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) additional_gids: Vec<u32>,
    pub(crate) home: String,
}

fn read_db(lowers: &[PathBuf], file: &str) -> Vec<Vec<String>> {
    let Some(path) = rootfs::find_in_layers(lowers, Path::new(file)) else {
        return Vec::new();
    };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect()
}

/// Resolves `user` (`name`, `uid`, `name:group`, `uid:gid`, or empty for root) in the
/// root filesystem's `/etc/passwd` and `/etc/group`, as docker does.
pub(crate) fn resolve_user(lowers: &[PathBuf], user: &str) -> Result<ResolvedUser> {
    let passwd = read_db(lowers, "/etc/passwd");
    let group = read_db(lowers, "/etc/group");
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = passwd.iter().find(|e| {
        e.len() >= 4
            && (e[0] == user_part || (user_part.parse::<u32>().is_ok() && e[2] == user_part))
    });
    let (uid, mut gid, home, name) = match (entry, user_part.parse::<u32>()) {
        (Some(e), _) => (
            e[2].parse::<u32>().unwrap_or(0),
            e[3].parse::<u32>().unwrap_or(0),
            e.get(5).cloned().unwrap_or_else(|| "/".into()),
            Some(e[0].clone()),
        ),
        (None, Ok(uid)) => (uid, 0, "/".to_owned(), None),
        (None, Err(_)) => {
            return Err(Error::invalid(
                "user",
                user,
                format!("no user {user_part:?} in the container's /etc/passwd"),
            ))
        }
    };
    if let Some(g) = group_part {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group
                .iter()
                .find(|e| e.len() >= 3 && e[0] == g)
                .and_then(|e| e[2].parse().ok())
                .ok_or_else(|| {
                    Error::invalid(
                        "user",
                        user,
                        format!("no group {g:?} in the container's /etc/group"),
                    )
                })?,
        };
    }
    let mut additional_gids = Vec::new();
    if let (Some(name), None) = (&name, group_part) {
        for e in &group {
            if e.len() >= 4 && e[3].split(',').any(|m| m == name) {
                if let Ok(g) = e[2].parse::<u32>() {
                    if g != gid && !additional_gids.contains(&g) {
                        additional_gids.push(g);
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// The process a container runs, after docker's override rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessPlan {
    pub(crate) args: Vec<String>,
    pub(crate) env: Vec<String>,
    pub(crate) cwd: String,
    pub(crate) user: ResolvedUser,
    pub(crate) hostname: String,
}

/// Docker's rules: an `--entrypoint` replaces the image's entrypoint and drops its
/// command; a command replaces the image's command; the environment is set over the
/// image's.
pub(crate) fn plan_process(
    spec: &ContainerSpec,
    image: &ImageConfig,
    lowers: &[PathBuf],
    id: &str,
) -> Result<ProcessPlan> {
    let (entrypoint, cmd) = match &spec.entrypoint {
        Some(ep) => (ep.clone(), spec.cmd.clone().unwrap_or_default()),
        None => (
            image.entrypoint().clone().unwrap_or_default(),
            spec.cmd
                .clone()
                .unwrap_or_else(|| image.cmd().clone().unwrap_or_default()),
        ),
    };
    let args: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::invalid(
            "container spec",
            "",
            "no command given and the image has neither an entrypoint nor a command",
        ));
    }
    let user_str = spec
        .user
        .clone()
        .unwrap_or_else(|| image.user().clone().unwrap_or_default());
    let user = resolve_user(lowers, &user_str)?;
    let hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| id.chars().take(12).collect());
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut set = |k: &str, v: &str, env: &mut BTreeMap<String, String>| {
        if env.insert(k.to_owned(), v.to_owned()).is_none() {
            order.push(k.to_owned());
        }
    };
    set("PATH", DEFAULT_PATH, &mut env);
    for kv in image.env().iter().flatten() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v, &mut env);
    }
    set("HOSTNAME", &hostname, &mut env);
    for (k, v) in &spec.env {
        set(k, v, &mut env);
    }
    if !env.contains_key("HOME") {
        let home = user.home.clone();
        set("HOME", &home, &mut env);
    }
    if spec.tty && !env.contains_key("TERM") {
        set("TERM", "xterm", &mut env);
    }
    let env = order
        .iter()
        .map(|k| format!("{k}={}", env[k]))
        .collect::<Vec<_>>();
    let cwd = match (&spec.workdir, image.working_dir().as_deref()) {
        (Some(dir), _) => dir.display().to_string(),
        (None, None | Some("")) => "/".to_owned(),
        (None, Some(dir)) => dir.to_owned(),
    };
    Ok(ProcessPlan {
        args,
        env,
        cwd,
        user,
        hostname,
    })
}

/// Everything [`oci_config`] needs besides the spec.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BundleInputs<'a> {
    pub(crate) id: &'a str,
    pub(crate) process: &'a ProcessPlan,
    pub(crate) rootfs: &'a Path,
    /// The runtime directory, with the `/etc` files bind-mounted from it.
    pub(crate) run_dir: &'a Path,
    pub(crate) volumes_dir: &'a Path,
    pub(crate) nofile_hard: u64,
    pub(crate) user_namespace: bool,
    /// The shim runs the container inside its own user namespace (a caller that is not
    /// root): no user namespace of the container's own, `/sys` bound from the host,
    /// and cgroup limits only when `cgroup_limits` says they can be set.
    pub(crate) rootless: bool,
    /// Limits can be applied (root, or a delegated cgroup v2 subtree when rootless).
    pub(crate) cgroup_limits: bool,
    /// The image's stop signal, recorded as an annotation for `stop`.
    pub(crate) stop_signal: Option<Signal>,
}

/// The cgroup path of a container, under locald's parent cgroup.
pub(crate) fn cgroup_path(id: &str) -> String {
    format!("/locald/{id}")
}

/// Builds the OCI runtime configuration.
pub(crate) fn oci_config(spec: &ContainerSpec, b: &BundleInputs<'_>) -> Result<Spec> {
    let safe = spec.isolation == Isolation::Safe;
    let mut annotations = HashMap::new();
    if let Some(signal) = b.stop_signal {
        let value = match signal.name() {
            Some(name) => format!("SIG{name}"),
            None => signal.number().to_string(),
        };
        annotations.insert(STOP_SIGNAL_ANNOTATION.to_owned(), value);
    }
    SpecBuilder::default()
        .version("1.0.2")
        .process(process(spec, b)?)
        .root(
            RootBuilder::default()
                .path(b.rootfs)
                .readonly(spec.read_only || safe)
                .build()
                .map_err(invalid_config)?,
        )
        .hostname(b.process.hostname.clone())
        .mounts(mounts(spec, b)?)
        .linux(linux(spec, b)?)
        .annotations(annotations)
        .build()
        .map_err(invalid_config)
}

fn invalid_config(e: oci_spec::OciSpecError) -> Error {
    Error::io(
        "building the container configuration",
        std::io::Error::other(e),
    )
}

/// The container's main process: docker's default capabilities (none in Safe Mode),
/// `RLIMIT_NOFILE` clamped to the caller's hard limit.
fn process(spec: &ContainerSpec, b: &BundleInputs<'_>) -> Result<Process> {
    let safe = spec.isolation == Isolation::Safe;
    let caps: Capabilities = if safe {
        Capabilities::new()
    } else {
        DEFAULT_CAPS.iter().copied().collect()
    };
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(invalid_config)?;
    if !safe {
        // Unset (not empty), as docker leaves them.
        capabilities.set_inheritable(None);
        capabilities.set_ambient(None);
    }
    let nofile = DEFAULT_NOFILE.min(b.nofile_hard);
    let p = b.process;
    ProcessBuilder::default()
        .terminal(spec.tty)
        .user(
            UserBuilder::default()
                .uid(p.user.uid)
                .gid(p.user.gid)
                .additional_gids(p.user.additional_gids.clone())
                .build()
                .map_err(invalid_config)?,
        )
        .args(p.args.clone())
        .env(p.env.clone())
        .cwd(&p.cwd)
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(nofile)
            .soft(nofile)
            .build()
            .map_err(invalid_config)?])
        .no_new_privileges(safe)
        .build()
        .map_err(invalid_config)
}

fn mount(
    destination: impl Into<PathBuf>,
    typ: &str,
    source: impl Into<PathBuf>,
    options: &[&str],
) -> Result<Mount> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(invalid_config)
}

/// `/proc`, `/dev` and friends, `/sys`, the `/etc` files from the state directory,
/// then the spec's mounts in order (and Safe Mode's `/tmp`).
fn mounts(spec: &ContainerSpec, b: &BundleInputs<'_>) -> Result<Vec<Mount>> {
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
    ];
    if b.user_namespace || b.rootless {
        // A sysfs cannot be mounted from a user namespace that does not own the
        // network namespace: bind the host's, read-only.
        mounts.push(mount(
            "/sys",
            "none",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev"],
        )?);
    } else {
        mounts.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?);
        mounts.push(mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?);
    }
    for (file, dest) in [
        ("hosts", "/etc/hosts"),
        ("resolv.conf", "/etc/resolv.conf"),
        ("hostname", "/etc/hostname"),
    ] {
        mounts.push(mount(
            dest,
            "bind",
            b.run_dir.join(file),
            &["rbind", "rprivate"],
        )?);
    }
    let mut has_tmp = false;
    for m in &spec.mounts {
        let ro = if m.read_only { "ro" } else { "rw" };
        if m.destination == Path::new("/tmp") {
            has_tmp = true;
        }
        mounts.push(match &m.source {
            MountSource::Bind(src) => {
                mount(&m.destination, "bind", src, &["rbind", "rprivate", ro])?
            }
            MountSource::Volume(name) => mount(
                &m.destination,
                "bind",
                b.volumes_dir.join(name).join("_data"),
                &["rbind", "rprivate", ro],
            )?,
            MountSource::Tmpfs { size, mode } => {
                let mode = format!("mode={:o}", mode.unwrap_or(0o1777));
                let size = size.map(|s| format!("size={}", s.bytes()));
                let mut opts = vec!["nosuid", "nodev", ro, &mode];
                opts.extend(size.as_deref());
                mount(&m.destination, "tmpfs", "tmpfs", &opts)?
            }
            _ => {
                return Err(Error::invalid(
                    "mount",
                    m.destination.display().to_string(),
                    "this kind of mount is not supported",
                ))
            }
        });
    }
    if spec.isolation == Isolation::Safe && !has_tmp {
        let size = format!("size={SAFE_TMP_BYTES}");
        mounts.push(mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777", &size],
        )?);
    }
    Ok(mounts)
}

/// Namespaces, the cgroup and its limits, docker's masked and read-only paths, and
/// in Safe Mode the user namespace's id maps and the seccomp filter.
fn linux(spec: &ContainerSpec, b: &BundleInputs<'_>) -> Result<Linux> {
    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ];
    if spec.network != NetworkMode::Host {
        namespaces.push(LinuxNamespaceType::Network);
    }
    if b.user_namespace {
        namespaces.push(LinuxNamespaceType::User);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(invalid_config)?;
    let mut linux = LinuxBuilder::default().cgroups_path(cgroup_path(b.id));
    if b.cgroup_limits {
        linux = linux.resources(resources(spec)?);
    }
    let mut linux = linux
        .namespaces(namespaces)
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        );
    if b.user_namespace {
        let map = LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(SAFE_HOST_ID)
            .size(SAFE_ID_COUNT)
            .build()
            .map_err(invalid_config)?;
        linux = linux.uid_mappings(vec![map]).gid_mappings(vec![map]);
    }
    if spec.isolation == Isolation::Safe {
        linux = linux.seccomp(safe_seccomp()?);
    }
    linux.build().map_err(invalid_config)
}

/// No device access; memory (swap included in the limit, so no swap at all, which is
/// what people expect from a limit), CPU quota and pids limits.
fn resources(spec: &ContainerSpec) -> Result<LinuxResources> {
    let mut resources =
        LinuxResourcesBuilder::default().devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(invalid_config)?]);
    if let Some(mem) = spec.resources.memory {
        let bytes = mem.bytes() as i64;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                .swap(bytes)
                .build()
                .map_err(invalid_config)?,
        );
    }
    if let Some(cpus) = spec.resources.cpus {
        let quota = (cpus.nano() as u128 * CPU_PERIOD_US as u128 / 1_000_000_000) as i64;
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(invalid_config)?,
        );
    }
    if let Some(pids) = spec.resources.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(pids as i64)
                .build()
                .map_err(invalid_config)?,
        );
    }
    resources.build().map_err(invalid_config)
}

/// Safe Mode's seccomp profile: allow by default, refuse the calls docker's default
/// profile refuses with `EPERM` (and `clone3` with `ENOSYS`, so that C libraries fall
/// back to `clone`, whose namespace flags are then checked).
fn safe_seccomp() -> Result<LinuxSeccomp> {
    let refuse = |names: &[&str], errno: i32| {
        LinuxSyscallBuilder::default()
            .names(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(errno as u32)
    };
    let mut syscalls = vec![
        refuse(SAFE_BLOCKED_SYSCALLS, libc::EPERM)
            .build()
            .map_err(invalid_config)?,
        refuse(&["clone3"], libc::ENOSYS)
            .build()
            .map_err(invalid_config)?,
    ];
    for flag in CLONE_NAMESPACE_FLAGS {
        let flag = *flag as u64;
        let arg = LinuxSeccompArgBuilder::default()
            .index(0usize)
            .value(flag)
            .value_two(flag)
            .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
            .build()
            .map_err(invalid_config)?;
        syscalls.push(
            refuse(&["clone"], libc::EPERM)
                .args(vec![arg])
                .build()
                .map_err(invalid_config)?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            SeccompArch::ScmpArchX86_64,
            SeccompArch::ScmpArchX86,
            SeccompArch::ScmpArchX32,
            SeccompArch::ScmpArchAarch64,
            SeccompArch::ScmpArchArm,
        ])
        .syscalls(syscalls)
        .build()
        .map_err(invalid_config)
}

/// `/etc/hosts` for a container.
pub(crate) fn hosts_file(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

/// `/etc/resolv.conf` for a container: the host's, unless it points at a loopback
/// resolver the container cannot reach, in which case public resolvers.
pub(crate) fn resolv_conf(network: NetworkMode) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if network == NetworkMode::Host {
        return host;
    }
    let usable: Vec<&str> = host
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with("nameserver")
                || !(l.contains(" 127.") || l.contains(" ::1"))
        })
        .collect();
    let mut out = usable.join("\n");
    if !out.contains("nameserver") {
        out.push_str("\nnameserver 8.8.8.8\nnameserver 8.8.4.4");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rootfs_with_users() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn users_resolve_like_docker() {
        let dir = rootfs_with_users();
        let lowers = vec![dir.path().to_owned()];
        let app = resolve_user(&lowers, "app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.additional_gids.clone()),
            (1000, 1000, vec![50])
        );
        assert_eq!(app.home, "/home/app");
        assert_eq!(resolve_user(&lowers, "1000").unwrap().gid, 1000);
        assert_eq!(resolve_user(&lowers, "4242").unwrap().uid, 4242);
        assert_eq!(resolve_user(&lowers, "app:staff").unwrap().gid, 50);
        assert_eq!(resolve_user(&lowers, "").unwrap().uid, 0);
        let err = resolve_user(&lowers, "ghost").unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid user \"ghost\": no user \"ghost\" in the container's /etc/passwd"
        );
        assert!(resolve_user(&lowers, "app:nogroup").is_err());
    }

    #[test]
    fn entrypoint_and_cmd_follow_docker() {
        let dir = rootfs_with_users();
        let lowers = vec![dir.path().to_owned()];
        let image = oci_spec::image::ConfigBuilder::default()
            .entrypoint(vec!["/entry".to_owned()])
            .cmd(vec!["default".to_owned()])
            .env(vec!["A=image".to_owned(), "B=image".to_owned()])
            .working_dir("/srv")
            .build()
            .unwrap();
        let spec = ContainerSpec::builder_from_rootfs("/r")
            .env("B", "mine")
            .build()
            .unwrap();
        let p = plan_process(&spec, &image, &lowers, "abcdef0123456789").unwrap();
        assert_eq!(p.args, ["/entry", "default"]);
        assert_eq!(p.cwd, "/srv");
        assert_eq!(p.hostname, "abcdef012345");
        assert!(p.env.contains(&"A=image".to_owned()));
        assert!(p.env.contains(&"B=mine".to_owned()));
        assert!(p.env.contains(&"HOME=/root".to_owned()));
        let spec = ContainerSpec::builder_from_rootfs("/r")
            .cmd(["x"])
            .build()
            .unwrap();
        assert_eq!(
            plan_process(&spec, &image, &lowers, "i").unwrap().args,
            ["/entry", "x"]
        );
        let spec = ContainerSpec::builder_from_rootfs("/r")
            .entrypoint(["/other"])
            .build()
            .unwrap();
        assert_eq!(
            plan_process(&spec, &image, &lowers, "i").unwrap().args,
            ["/other"]
        );
        let spec = ContainerSpec::builder_from_rootfs("/r").build().unwrap();
        let err = plan_process(&spec, &ImageConfig::default(), &lowers, "i").unwrap_err();
        assert!(err.to_string().contains("no command given"));
    }

    #[test]
    fn config_parses_as_an_oci_spec() {
        let dir = rootfs_with_users();
        let lowers = vec![dir.path().to_owned()];
        let spec = ContainerSpec::builder_from_rootfs("/r")
            .cmd(["sh"])
            .memory("64m")
            .cpus("0.5")
            .pids_limit(10)
            .volume("/tmp:/host")
            .tmpfs("/scratch:size=1m")
            .safe(true)
            .build()
            .unwrap();
        let p = plan_process(&spec, &ImageConfig::default(), &lowers, "id1").unwrap();
        let inputs = BundleInputs {
            id: "id1",
            process: &p,
            rootfs: Path::new("/state/rootfs"),
            run_dir: Path::new("/state"),
            volumes_dir: Path::new("/vols"),
            nofile_hard: 20_000,
            user_namespace: true,
            rootless: false,
            cgroup_limits: true,
            stop_signal: Some(Signal::USR1),
        };
        let v = serde_json::to_value(oci_config(&spec, &inputs).unwrap()).unwrap();
        assert_eq!(v["linux"]["cgroupsPath"], "/locald/id1");
        assert_eq!(v["annotations"][STOP_SIGNAL_ANNOTATION], "SIGUSR1");
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(v["process"]["rlimits"][0]["hard"], 20_000);
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["process"]["capabilities"]["effective"], json!([]));
        assert!(v["linux"]["seccomp"]["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .contains(&json!("unshare")));
        let mounts = v["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["destination"] == "/tmp"));
    }
}
