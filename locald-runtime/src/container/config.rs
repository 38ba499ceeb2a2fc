//! From a [`ContainerSpec`] and an [`ImageConfig`] to an OCI runtime `config.json`.
//!
//! The document is assembled as JSON and then parsed into `oci_spec::runtime::Spec`, so
//! a field of the wrong shape is caught here and not inside the runtime.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use locald_core::{ContainerSpec, Error, Isolation, MountSource, NetworkMode, Result, Signal};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::rootfs;
use crate::ImageConfig;

/// The default `PATH` when neither the image nor the caller sets one (docker's).
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set.
pub(crate) const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
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
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

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

/// The signal that stops the container whose bundle is `state_dir`: the image's stop
/// signal recorded in its `config.json`, else SIGTERM (as docker does).
pub(crate) fn recorded_stop_signal(state_dir: &Path) -> Signal {
    super::state::read_json::<oci_spec::runtime::Spec>(&state_dir.join("config.json"))
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
#[derive(Debug)]
pub(crate) struct BundleInputs<'a> {
    pub(crate) id: &'a str,
    pub(crate) process: &'a ProcessPlan,
    pub(crate) rootfs: &'a Path,
    pub(crate) state_dir: &'a Path,
    pub(crate) volumes_dir: &'a Path,
    pub(crate) nofile_hard: u64,
    pub(crate) user_namespace: bool,
    /// The image's stop signal, recorded as an annotation for `stop`.
    pub(crate) stop_signal: Option<Signal>,
}

/// The cgroup path of a container, under locald's parent cgroup.
pub(crate) fn cgroup_path(id: &str) -> String {
    format!("/locald/{id}")
}

/// Builds the OCI runtime configuration.
pub(crate) fn oci_config(spec: &ContainerSpec, b: &BundleInputs<'_>) -> Result<Value> {
    let safe = spec.isolation == Isolation::Safe;
    let caps: Vec<&str> = if safe {
        Vec::new()
    } else {
        DEFAULT_CAPS.to_vec()
    };
    let nofile = 1_048_576u64.min(b.nofile_hard);
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
    ];
    if b.user_namespace {
        // A sysfs cannot be mounted from a user namespace that does not own the
        // network namespace: bind the host's, read-only.
        mounts.push(json!({"destination": "/sys", "type": "none", "source": "/sys", "options": ["rbind", "nosuid", "noexec", "nodev"]}));
    } else {
        mounts.push(json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}));
        mounts.push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}));
    }
    for (file, dest) in [
        ("hosts", "/etc/hosts"),
        ("resolv.conf", "/etc/resolv.conf"),
        ("hostname", "/etc/hostname"),
    ] {
        mounts.push(json!({"destination": dest, "type": "bind", "source": b.state_dir.join(file), "options": ["rbind", "rprivate"]}));
    }
    let mut has_tmp = false;
    for m in &spec.mounts {
        let ro = if m.read_only { "ro" } else { "rw" };
        if m.destination == Path::new("/tmp") {
            has_tmp = true;
        }
        match &m.source {
            MountSource::Bind(src) => mounts.push(json!({
                "destination": m.destination, "type": "bind", "source": src,
                "options": ["rbind", "rprivate", ro]
            })),
            MountSource::Volume(name) => mounts.push(json!({
                "destination": m.destination, "type": "bind",
                "source": b.volumes_dir.join(name).join("_data"),
                "options": ["rbind", "rprivate", ro]
            })),
            MountSource::Tmpfs { size, mode } => {
                let mut opts = vec![
                    "nosuid".to_owned(),
                    "nodev".to_owned(),
                    ro.to_owned(),
                    format!("mode={:o}", mode.unwrap_or(0o1777)),
                ];
                if let Some(size) = size {
                    opts.push(format!("size={}", size.bytes()));
                }
                mounts.push(json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs", "options": opts}))
            }
            _ => {
                return Err(Error::invalid(
                    "mount",
                    m.destination.display().to_string(),
                    "this kind of mount is not supported",
                ))
            }
        }
    }
    if safe && !has_tmp {
        mounts.push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", "size=67108864"]}));
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    if spec.network != NetworkMode::Host {
        namespaces.push(json!({"type": "network"}));
    }
    if b.user_namespace {
        namespaces.push(json!({"type": "user"}));
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(mem) = spec.resources.memory {
        // Swap included in the limit, as docker does by default (memory-swap = 2x is
        // docker's; no swap at all is what people expect from a limit).
        resources["memory"] = json!({"limit": mem.bytes(), "swap": mem.bytes()});
    }
    if let Some(cpus) = spec.resources.cpus {
        let period: u64 = 100_000;
        let quota = (cpus.nano() as u128 * period as u128 / 1_000_000_000) as i64;
        resources["cpu"] = json!({"quota": quota, "period": period});
    }
    if let Some(pids) = spec.resources.pids {
        resources["pids"] = json!({"limit": pids});
    }
    let p = b.process;
    let mut process = json!({
        "terminal": spec.tty,
        "user": {"uid": p.user.uid, "gid": p.user.gid, "additionalGids": p.user.additional_gids},
        "args": p.args,
        "env": p.env,
        "cwd": p.cwd,
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": safe,
    });
    if safe {
        process["capabilities"]["inheritable"] = json!([]);
        process["capabilities"]["ambient"] = json!([]);
    }
    let mut linux = json!({
        "cgroupsPath": cgroup_path(b.id),
        "resources": resources,
        "namespaces": namespaces,
        "maskedPaths": MASKED_PATHS,
        "readonlyPaths": READONLY_PATHS,
    });
    if b.user_namespace {
        linux["uidMappings"] =
            json!([{"containerID": 0, "hostID": SAFE_HOST_ID, "size": SAFE_ID_COUNT}]);
        linux["gidMappings"] =
            json!([{"containerID": 0, "hostID": SAFE_HOST_ID, "size": SAFE_ID_COUNT}]);
    }
    if safe {
        linux["seccomp"] = safe_seccomp();
    }
    let mut annotations = serde_json::Map::new();
    if let Some(signal) = b.stop_signal {
        let value = match signal.name() {
            Some(name) => format!("SIG{name}"),
            None => signal.number().to_string(),
        };
        annotations.insert(STOP_SIGNAL_ANNOTATION.to_owned(), json!(value));
    }
    let config = json!({
        "ociVersion": "1.0.2",
        "annotations": annotations,
        "process": process,
        "root": {"path": b.rootfs, "readonly": spec.read_only || safe},
        "hostname": p.hostname,
        "mounts": mounts,
        "linux": linux,
    });
    // Parsing into the typed spec catches a malformed document here.
    let typed: oci_spec::runtime::Spec = serde_json::from_value(config).map_err(|e| {
        Error::io(
            "building the container configuration",
            std::io::Error::other(e),
        )
    })?;
    serde_json::to_value(typed).map_err(|e| {
        Error::io(
            "building the container configuration",
            std::io::Error::other(e),
        )
    })
}

/// Safe Mode's seccomp profile: allow by default, refuse the calls docker's default
/// profile refuses with `EPERM` (and `clone3` with `ENOSYS`, so that C libraries fall
/// back to `clone`, whose namespace flags are then checked).
fn safe_seccomp() -> Value {
    let mut syscalls = vec![
        json!({"names": SAFE_BLOCKED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}),
        json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}),
    ];
    for flag in CLONE_NAMESPACE_FLAGS {
        syscalls.push(json!({
            "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
            "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}]
        }));
    }
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "syscalls": syscalls,
    })
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
        let v = oci_config(
            &spec,
            &BundleInputs {
                id: "id1",
                process: &p,
                rootfs: Path::new("/state/rootfs"),
                state_dir: Path::new("/state"),
                volumes_dir: Path::new("/vols"),
                nofile_hard: 20_000,
                user_namespace: true,
                stop_signal: Some(Signal::USR1),
            },
        )
        .unwrap();
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
