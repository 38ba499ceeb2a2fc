//! Containers for a caller that is not root, as podman runs them rootless.
//!
//! The caller decides the id mappings ([`UserNs::for_caller`]): the caller's own uid
//! and gid become root in the container, and the caller's subordinate ranges from
//! `/etc/subuid` and `/etc/subgid` become ids 1 and up; with no range, root is the only
//! id (a warning says what that cannot do). The shim starts in a user namespace (and a
//! mount and cgroup namespace) with those mappings ([`spawn_into`]): its process
//! unshares them between fork and exec, while `newuidmap`/`newgidmap` (Debian's
//! `uidmap`), run by the caller, write the maps. From there on the shim is root in its
//! namespace and does what it does as root: it mounts the overlay root (kernels since
//! 5.11 allow it there), and the runtime library creates the container's own
//! namespaces inside. The container's mounts live in the shim's mount namespace, so
//! they go away with it, whatever happens.
//!
//! The image store of such a user is written in a user namespace with the same maps
//! ([`unpack_layer`], [`remove_tree`]), by this executable run again as a helper,
//! started into the namespace the same way ([`spawn_into`] with [`Scope::Store`]).
//!
//! cgroups: on a cgroup v2 host the runtime library tries the container's cgroup and
//! carries on without one where it may not write (no limits). On a cgroup v1 host an
//! unprivileged user can neither create nor join cgroups: the shim mounts its own
//! cgroup namespace's cgroup2 over `/sys/fs/cgroup` in its mount namespace, so the
//! library sees a cgroup v2 host it cannot write to, and runs without limits. Limits
//! are refused before anything starts ([`limits_refused`]), also with a delegated
//! cgroup v2 subtree, which locald does not place containers in yet.

#![allow(unsafe_code)]

use std::{
    io::{self, Read, Write},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// One line of a `uid_map`/`gid_map`: `count` ids from `host` appear as `container`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IdMap {
    pub(crate) container: u32,
    pub(crate) host: u32,
    pub(crate) count: u32,
}

/// The user namespace the shim creates for a caller that is not root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserNs {
    pub(crate) uid: Vec<IdMap>,
    pub(crate) gid: Vec<IdMap>,
}

impl UserNs {
    /// The mappings for this process's user: its uid and gid as root, its subordinate
    /// ranges (`etc`/subuid, `etc`/subgid) from id 1 on.
    pub(crate) fn for_caller(etc: &Path) -> UserNs {
        let uid = nix::unistd::getuid().as_raw();
        let gid = nix::unistd::getgid().as_raw();
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name);
        let range = |file: &str| {
            std::fs::read_to_string(etc.join(file))
                .ok()
                .and_then(|text| subordinate_range(&text, name.as_deref(), uid))
        };
        UserNs {
            uid: maps(uid, range("subuid")),
            gid: maps(gid, range("subgid")),
        }
    }

    /// True when only the caller's own ids are mapped (no subordinate ranges).
    pub(crate) fn single_id(&self) -> bool {
        self.uid.len() == 1 || self.gid.len() == 1
    }
}

fn maps(own: u32, range: Option<(u32, u32)>) -> Vec<IdMap> {
    let mut maps = vec![IdMap {
        container: 0,
        host: own,
        count: 1,
    }];
    if let Some((start, count)) = range {
        maps.push(IdMap {
            container: 1,
            host: start,
            count,
        });
    }
    maps
}

/// The first range of `/etc/subuid` (or `subgid`) text that belongs to the user named
/// `name` or numbered `id`: `(first host id, count)`.
pub(crate) fn subordinate_range(text: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next()?;
        let start = fields.next()?.trim().parse().ok()?;
        let count: u32 = fields.next()?.trim().parse().ok()?;
        let ours = Some(owner) == name || owner.parse::<u32>().ok() == Some(id);
        (ours && count > 0).then_some((start, count))
    })
}

/// True when the cgroup hierarchy at `cgroup_root` is cgroup v2 (unified).
pub(crate) fn unified_cgroups(cgroup_root: &Path) -> bool {
    cgroup_root.join("cgroup.controllers").exists()
}

/// Why `--memory`, `--cpus` and `--pids-limit` cannot be honoured for this caller:
/// a cgroup v1 host, a cgroup v2 host where the caller's cgroup is not delegated to it
/// (not writable, or without the controllers), or, with a delegated subtree, that
/// locald does not place containers in it yet. Always `Some` for now.
pub(crate) fn limits_refused(proc_root: &Path, cgroup_root: &Path) -> Option<String> {
    Some(match delegated_cgroup(proc_root, cgroup_root) {
        Err(why) => why,
        Ok(dir) => format!(
            "the cgroup {} is delegated to this user, but locald does not place rootless \
             containers in it yet",
            dir.display()
        ),
    })
}

/// The caller's cgroup v2 directory when it is delegated to the caller (writable, with
/// the memory, cpu and pids controllers), else why not.
pub(crate) fn delegated_cgroup(proc_root: &Path, cgroup_root: &Path) -> Result<PathBuf, String> {
    if !unified_cgroups(cgroup_root) {
        return Err(
            "this host uses cgroup v1, where a user who is not root cannot set resource \
             limits (run as root, or boot with cgroup v2 and a delegated subtree)"
                .into(),
        );
    }
    let own = std::fs::read_to_string(proc_root.join("self/cgroup"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(|p| p.trim().to_owned()))
        });
    let Some(own) = own else {
        return Err("this process's cgroup v2 path is unknown".into());
    };
    let dir = cgroup_root.join(own.trim_start_matches('/'));
    let writable = nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_ok();
    let controllers = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
    if !(writable && has("memory") && has("pids") && has("cpu")) {
        return Err(format!(
            "the cgroup {} is not delegated to this user with the memory, cpu and pids \
             controllers (systemd: `Delegate=yes` for user@.service)",
            dir.display()
        ));
    }
    Ok(dir)
}

/// A shim being started straight into its user namespace ([`spawn_into`]): the thread
/// that maps the namespace's ids, and the caller's ends of the pipes it syncs on, to be
/// dropped once the spawn returned.
pub(crate) struct Mapper {
    /// `Ok(false)`: the child never got as far as its namespace (the spawn's own
    /// error says why).
    thread: std::thread::JoinHandle<Result<bool, String>>,
    parent_ends: [std::os::fd::OwnedFd; 2],
}

/// Why a process started through [`spawn_into`] did not start.
#[derive(Debug)]
pub(crate) enum SpawnFailure {
    /// Mapping its ids failed (what `newuidmap`/`newgidmap` said): the child gave up.
    Mapping(String),
    /// One of the child's own steps into the namespace (unshare, becoming root, its
    /// mounts) failed, with a plain errno.
    Entering(io::Error),
    /// The program could not be executed.
    Exec(io::Error),
}

impl Mapper {
    /// Waits for the mapping to end and tells why `spawned` (the spawn's result, once
    /// it returned, whatever it returned) failed, if it failed.
    pub(crate) fn finish<C>(self, spawned: io::Result<C>) -> Result<C, SpawnFailure> {
        drop(self.parent_ends);
        let mapped = self
            .thread
            .join()
            .unwrap_or_else(|_| Err("the id mapper panicked".into()));
        match (spawned, mapped) {
            (Ok(child), _) => Ok(child),
            (Err(_), Err(why)) => Err(SpawnFailure::Mapping(why)),
            (Err(e), Ok(_)) if e.kind() != io::ErrorKind::NotFound => {
                Err(SpawnFailure::Entering(e))
            }
            (Err(e), Ok(_)) => Err(SpawnFailure::Exec(e)),
        }
    }
}

/// What a process started by [`spawn_into`] gets besides its user namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A container's shim: a mount namespace with its mounts private and, on a cgroup
    /// v1 host, its own cgroup2 over `/sys/fs/cgroup` (in a cgroup namespace).
    Shim,
    /// An image store helper: the user namespace only.
    Store,
}

/// Makes `cmd` start in a new user namespace mapped as `ns` says, as root there, with
/// what `scope` adds, between fork and exec, so the program is executed once, already
/// inside (the kernel ties a process to the user namespace it ran `exec` in). The
/// child unshares and waits while a thread of the caller maps its ids
/// (`newuidmap`/`newgidmap`, or the caller's own ids written directly). The one way
/// into a user's namespace, for the shim and for the store's helpers alike.
pub(crate) fn spawn_into(
    cmd: &mut std::process::Command,
    ns: &UserNs,
    scope: Scope,
) -> io::Result<Mapper> {
    use nix::{
        mount::{mount, MsFlags},
        sched::{unshare, CloneFlags},
    };
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    // High descriptors, out of the way of the ones the shim gets at fixed numbers
    // (those are moved into place by an earlier pre-exec step).
    let high = |fd: OwnedFd| super::sys::copy_above(fd.as_raw_fd(), 200);
    let (ready_r, ready_w) = nix::unistd::pipe()?;
    let (go_r, go_w) = nix::unistd::pipe()?;
    let (ready_r, ready_w, go_r, go_w) = (high(ready_r)?, high(ready_w)?, high(go_r)?, high(go_w)?);
    let (ready_w_fd, go_r_fd) = (ready_w.as_raw_fd(), go_r.as_raw_fd());
    let (ready_r_fd, go_w_fd) = (ready_r.as_raw_fd(), go_w.as_raw_fd());
    let shim = scope == Scope::Shim;
    let v1 = shim && !unified_cgroups(Path::new("/sys/fs/cgroup"));
    let flags = if shim {
        CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWCGROUP
    } else {
        CloneFlags::CLONE_NEWUSER
    };
    // SAFETY: the closure runs in the forked child before exec and makes only system
    // calls through nix's thin wrappers, on descriptors numbered above, with paths
    // short enough for nix's stack buffers: nothing allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            // The caller's ends: without closing them here, the child would never see
            // the end of the pipe when the mapper gives up.
            let _ = nix::unistd::close(ready_r_fd);
            let _ = nix::unistd::close(go_w_fd);
            unshare(flags)?;
            let pid = nix::unistd::getpid().as_raw().to_ne_bytes();
            let ready = std::os::fd::BorrowedFd::borrow_raw(ready_w_fd);
            if nix::unistd::write(ready, &pid)? != pid.len() {
                return Err(io::Error::from_raw_os_error(libc::EPIPE));
            }
            let _ = nix::unistd::close(ready_w_fd);
            let mut go = [0u8; 1];
            if nix::unistd::read(go_r_fd, &mut go)? != 1 {
                // The mapper failed; it says why.
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            let _ = nix::unistd::close(go_r_fd);
            nix::unistd::setresgid(0.into(), 0.into(), 0.into())?;
            nix::unistd::setresuid(0.into(), 0.into(), 0.into())?;
            if !shim {
                return Ok(());
            }
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            if v1 {
                mount(
                    Some("cgroup2"),
                    "/sys/fs/cgroup",
                    Some("cgroup2"),
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                    None::<&str>,
                )?;
            }
            Ok(())
        });
    }
    let ns = ns.clone();
    let thread = std::thread::spawn(move || {
        let mut pid = [0u8; 4];
        if std::fs::File::from(ready_r).read_exact(&mut pid).is_err() {
            return Ok(false);
        }
        let pid = i32::from_ne_bytes(pid);
        let mapped = if ns.single_id() {
            write_own_maps(pid, &ns)
        } else {
            run_mappers(pid, &ns)
        };
        if mapped.is_ok() {
            let _ = nix::unistd::write(&go_w, b"1");
        }
        mapped.map(|()| true)
    });
    Ok(Mapper {
        thread,
        parent_ends: [ready_w, go_r],
    })
}

/// Maps only the caller's own ids in the user namespace of `pid` (which the caller
/// created): no helper needed, but `setgroups` must be denied first.
fn write_own_maps(pid: i32, ns: &UserNs) -> Result<(), String> {
    let line = |m: &[IdMap]| format!("{} {} {}\n", m[0].container, m[0].host, m[0].count);
    std::fs::write(format!("/proc/{pid}/setgroups"), "deny")
        .and_then(|()| std::fs::write(format!("/proc/{pid}/uid_map"), line(&ns.uid)))
        .and_then(|()| std::fs::write(format!("/proc/{pid}/gid_map"), line(&ns.gid)))
        .map_err(|e| format!("writing the user namespace's id maps: {e}"))
}

/// Runs `newuidmap PID ...` and `newgidmap PID ...` side by side (each is a setuid
/// program's start-up; they write different files); the error names the program and
/// carries what it printed.
fn run_mappers(pid: i32, ns: &UserNs) -> Result<(), String> {
    let mut running = Vec::new();
    for (program, maps) in [("newuidmap", &ns.uid), ("newgidmap", &ns.gid)] {
        let mut cmd = std::process::Command::new(program);
        cmd.arg(pid.to_string());
        for m in maps.iter() {
            cmd.args([
                m.container.to_string(),
                m.host.to_string(),
                m.count.to_string(),
            ]);
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let child = cmd.spawn().map_err(|e| {
            format!("running {program} (the uidmap package) to map the user namespace: {e}")
        })?;
        running.push((program, child));
    }
    for (program, child) in running {
        let out = child.wait_with_output().map_err(|e| {
            format!("running {program} (the uidmap package) to map the user namespace: {e}")
        })?;
        if !out.status.success() {
            return Err(format!(
                "{program} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// One thing rootless containers need, and whether this host and user have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RootlessCheck {
    /// What is checked: `user namespaces`, `subordinate ids`, `newuidmap`,
    /// `overlay in a user namespace`, `cgroup delegation`.
    pub name: String,
    /// True when it is there.
    pub ok: bool,
    /// What was found, or what to do about it.
    pub detail: String,
}

/// Whether the current user can run rootless containers here, piece by piece (for a
/// root caller, what a normal user would get). Only user namespaces and `/proc`
/// itself are essential; the rest only narrow what containers can do.
pub fn rootless_readiness() -> Vec<RootlessCheck> {
    let host = crate::host::HostFeatures::probe();
    let check = |name: &str, ok: bool, detail: String| RootlessCheck {
        name: name.into(),
        ok,
        detail,
    };
    let mut checks = vec![check(
        "user namespaces",
        host.unprivileged_user_namespaces,
        if host.unprivileged_user_namespaces {
            "users may create them".into()
        } else {
            "users may not create user namespaces: set user.max_user_namespaces > 0 and \
             kernel.unprivileged_userns_clone=1 (sysctl), and on Ubuntu \
             kernel.apparmor_restrict_unprivileged_userns=0"
                .into()
        },
    )];
    let ns = UserNs::for_caller(Path::new("/etc"));
    checks.push(check(
        "subordinate ids",
        !ns.single_id(),
        match (ns.uid.get(1), ns.gid.get(1)) {
            (Some(u), Some(g)) => format!(
                "uids {}-{} and gids {}-{} appear as 1 and up",
                u.host,
                u.host as u64 + u.count as u64 - 1,
                g.host,
                g.host as u64 + g.count as u64 - 1
            ),
            _ => "no range for this user in /etc/subuid and /etc/subgid: containers see \
                  only root (run: usermod --add-subuids 100000-165535 --add-subgids \
                  100000-165535 USER)"
                .into(),
        },
    ));
    let mappers = ["newuidmap", "newgidmap"].map(|p| which::which(p).ok());
    checks.push(check(
        "newuidmap",
        mappers.iter().all(Option::is_some),
        match &mappers {
            [Some(u), Some(g)] => format!("{} and {}", u.display(), g.display()),
            _ => "newuidmap/newgidmap are missing: install the uidmap package".into(),
        },
    ));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let overlay = host.overlayfs && kernel_at_least(&release, 5, 11);
    checks.push(check(
        "overlay in a user namespace",
        overlay,
        if overlay {
            format!("kernel {} mounts overlayfs there", release.trim())
        } else {
            format!(
                "kernel {} cannot (needs 5.11 and overlayfs): root filesystems are copied",
                release.trim()
            )
        },
    ));
    let delegated = delegated_cgroup(Path::new("/proc"), Path::new("/sys/fs/cgroup"));
    checks.push(check(
        "cgroup delegation",
        delegated.is_ok(),
        match delegated {
            Ok(dir) => format!(
                "{} is delegated; locald does not set limits in it yet, so rootless \
                 containers refuse --memory, --cpus and --pids-limit",
                dir.display()
            ),
            Err(why) => format!("containers run without limits, and refuse them: {why}"),
        },
    ));
    checks
}

/// True when a kernel release such as `6.1.0-18-amd64` is at least `major.minor`.
fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_are_found_by_name_or_uid() {
        let text = "alice:100000:65536\n1001:165536:1000\nbob:0:0\n\nbroken\n";
        assert_eq!(
            subordinate_range(text, Some("alice"), 1000),
            Some((100000, 65536))
        );
        assert_eq!(
            subordinate_range(text, Some("carol"), 1001),
            Some((165536, 1000))
        );
        // An empty range is no range.
        assert_eq!(subordinate_range(text, Some("bob"), 1002), None);
        assert_eq!(subordinate_range(text, None, 7), None);
    }

    #[test]
    fn own_ids_become_root_and_the_range_follows() {
        assert_eq!(
            maps(1000, Some((100000, 65536))),
            vec![
                IdMap {
                    container: 0,
                    host: 1000,
                    count: 1
                },
                IdMap {
                    container: 1,
                    host: 100000,
                    count: 65536
                }
            ]
        );
        assert_eq!(maps(1000, None).len(), 1);
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.1.0-18-amd64", 5, 11));
        assert!(kernel_at_least("5.11.0", 5, 11));
        assert!(!kernel_at_least("5.10.209-1", 5, 11));
        assert!(!kernel_at_least("", 5, 11));
    }

    #[test]
    fn limits_need_a_delegated_cgroup_v2() {
        let root = tempfile::tempdir().unwrap();
        let proc_root = root.path().join("proc");
        let cg = root.path().join("cgroup");
        std::fs::create_dir_all(proc_root.join("self")).unwrap();
        std::fs::create_dir_all(&cg).unwrap();
        // No cgroup.controllers at the root: v1.
        assert!(limits_refused(&proc_root, &cg)
            .unwrap()
            .contains("cgroup v1"));
        std::fs::write(cg.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::write(proc_root.join("self/cgroup"), "0::/user/me\n").unwrap();
        let mine = cg.join("user/me");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join("cgroup.controllers"), "memory pids\n").unwrap();
        assert!(limits_refused(&proc_root, &cg)
            .unwrap()
            .contains("not delegated"));
        std::fs::write(mine.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        assert_eq!(delegated_cgroup(&proc_root, &cg), Ok(mine));
        assert!(limits_refused(&proc_root, &cg)
            .unwrap()
            .contains("does not place rootless containers in it yet"));
    }
}

/// The user namespace in which this user's image store is written: `None` for root,
/// and for a user without subordinate ids (or without `newuidmap`), who unpacks layers
/// as itself (every file then belongs to container root).
pub(crate) fn store_userns() -> Option<UserNs> {
    if nix::unistd::geteuid().is_root() {
        return None;
    }
    let ns = UserNs::for_caller(Path::new("/etc"));
    let mappers = which::which("newuidmap").is_ok() && which::which("newgidmap").is_ok();
    (!ns.single_id() && mappers).then_some(ns)
}

/// The helper verb that unpacks a layer inside a user namespace.
pub(crate) const UNPACK_VERB: &str = "unpack-layer";
/// The helper verb that removes a tree of the store inside a user namespace.
pub(crate) const REMOVE_VERB: &str = "remove-tree";

/// What the unpack helper is asked (its first argument, as JSON).
#[derive(Debug, Serialize, Deserialize)]
struct UnpackRequest {
    what: String,
    opts: crate::image::unpack::UnpackOptions,
}

/// What a store helper answers on its stdout, as JSON.
#[derive(Debug, Serialize, Deserialize)]
enum HelperReply {
    Unpacked {
        entries: u64,
        bytes: u64,
        whiteouts: u64,
    },
    Removed,
    /// The layer is not a valid one (its entries, its tar stream).
    Invalid {
        what: String,
        reason: String,
    },
    /// Anything else: the error and its causes.
    Failed(String),
}

impl HelperReply {
    fn failed(e: &locald_core::Error) -> HelperReply {
        match e {
            locald_core::Error::InvalidImage { what, reason } => HelperReply::Invalid {
                what: what.clone(),
                reason: reason.clone(),
            },
            other => HelperReply::Failed(crate::util::error_chain(other).replace('\n', " ")),
        }
    }
}

/// The program that serves as the helper: `$LOCALD_SHIM`, else this executable (every
/// program linking this crate is one).
fn helper_program() -> PathBuf {
    std::env::var_os("LOCALD_SHIM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"))
}

/// Runs the helper with `args`, feeding `input` to its stdin when given, and returns
/// its reply. A helper that ends without one is an error with its status and stderr.
fn run_helper(
    step: &str,
    ns: &UserNs,
    args: &[&std::ffi::OsStr],
    input: Option<&mut dyn Read>,
) -> locald_core::Result<HelperReply> {
    use locald_core::Error;
    use std::process::Stdio;
    let program = helper_program();
    let mut cmd = std::process::Command::new(&program);
    cmd.arg(super::shim::SHIM_ARG)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mapper = spawn_into(&mut cmd, ns, Scope::Store)
        .map_err(|e| Error::io(format!("{step}: preparing your user namespace"), e))?;
    let mut child = match mapper.finish(cmd.spawn()) {
        Ok(child) => child,
        Err(SpawnFailure::Mapping(why)) => {
            return Err(Error::io(
                format!("{step}: mapping your user namespace's ids"),
                io::Error::other(why),
            ))
        }
        Err(SpawnFailure::Entering(e)) => {
            return Err(Error::io(
                format!("{step}: entering your user namespace"),
                e,
            ))
        }
        Err(SpawnFailure::Exec(e)) => {
            return Err(Error::io(
                format!("{step}: starting the helper {}", program.display()),
                e,
            ))
        }
    };
    let stdin = child.stdin.take();
    // The helper's output is read on a thread of its own while this one feeds it.
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let mut read_failed = None;
    if let (Some(input), Some(mut stdin)) = (input, stdin) {
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    read_failed = Some(e);
                    break;
                }
            };
            // A helper that stopped reading has its answer (an error, or the end of
            // the archive before trailing padding): it tells which.
            if stdin.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    }
    let out = waiter
        .join()
        .map_err(|_| {
            Error::io(
                step.to_owned(),
                io::Error::other("the helper's reader panicked"),
            )
        })?
        .map_err(|e| Error::io(format!("{step}: waiting for the helper"), e))?;
    if let Some(e) = read_failed {
        return Err(Error::io(format!("{step}: reading its input"), e));
    }
    match serde_json::from_slice::<HelperReply>(&out.stdout) {
        Ok(HelperReply::Invalid { what, reason }) => Err(Error::InvalidImage { what, reason }),
        Ok(HelperReply::Failed(message)) => {
            Err(Error::io(step.to_owned(), io::Error::other(message)))
        }
        Ok(reply) => Ok(reply),
        Err(_) => Err(Error::io(
            step.to_owned(),
            io::Error::other(format!(
                "the helper {} ended ({}) without an answer: {}",
                program.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        )),
    }
}

/// Unpacks the layer tar `reader` into the directory `dir` inside the user namespace
/// `ns`, as root there (through the helper, started into the namespace by
/// [`spawn_into`]: this process may have threads, and only a single-threaded process
/// can enter a new user namespace).
pub(crate) fn unpack_layer(
    reader: &mut dyn Read,
    dir: &Path,
    what: &str,
    opts: crate::image::unpack::UnpackOptions,
    ns: &UserNs,
) -> locald_core::Result<crate::image::unpack::UnpackStats> {
    let request = serde_json::to_string(&UnpackRequest {
        what: what.to_owned(),
        opts,
    })
    .expect("an unpack request serializes");
    let step = format!("unpacking {what} in your user namespace");
    match run_helper(
        &step,
        ns,
        &[UNPACK_VERB.as_ref(), request.as_ref(), dir.as_os_str()],
        Some(reader),
    )? {
        HelperReply::Unpacked {
            entries,
            bytes,
            whiteouts,
        } => Ok(crate::image::unpack::UnpackStats {
            entries,
            bytes,
            whiteouts,
        }),
        other => Err(locald_core::Error::io(
            step,
            io::Error::other(format!("unexpected answer {other:?}")),
        )),
    }
}

/// Removes the tree at `path` inside the user namespace `ns`, as root there: what the
/// store's unpacked layers hold may belong to the user's subordinate ids, which the
/// user cannot remove as itself.
pub(crate) fn remove_tree(path: &Path, ns: &UserNs) -> locald_core::Result<()> {
    let step = format!("removing {} in your user namespace", path.display());
    run_helper(&step, ns, &[REMOVE_VERB.as_ref(), path.as_os_str()], None).map(drop)
}

/// The helper's side of [`unpack_layer`] and [`remove_tree`]: `args` are the verb,
/// (to unpack) its JSON request, and the path. Started by [`spawn_into`] as root in
/// the user's namespace.
pub(crate) fn serve(args: &[String]) -> i32 {
    use locald_core::Error;
    let reply = |reply: HelperReply| {
        let mut out = io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, &reply);
        let _ = out.flush();
        match reply {
            HelperReply::Unpacked { .. } | HelperReply::Removed => 0,
            _ => 1,
        }
    };
    let failed = |e: &Error| reply(HelperReply::failed(e));
    if !nix::unistd::geteuid().is_root() {
        return failed(&Error::io(
            "the image store helper",
            io::Error::other("it must be started in the user's namespace, as root there"),
        ));
    }
    match args {
        [verb, request, path] if verb == UNPACK_VERB => {
            let req: UnpackRequest = match serde_json::from_str(request) {
                Ok(r) => r,
                Err(e) => {
                    return failed(&Error::io(
                        "reading the unpack request",
                        io::Error::other(e),
                    ))
                }
            };
            let path = Path::new(path);
            match crate::image::unpack::unpack(io::stdin().lock(), path, &req.what, req.opts) {
                Ok(stats) => reply(HelperReply::Unpacked {
                    entries: stats.entries,
                    bytes: stats.bytes,
                    whiteouts: stats.whiteouts,
                }),
                Err(e) => failed(&e),
            }
        }
        [verb, path] if verb == REMOVE_VERB => {
            let path = Path::new(path);
            match crate::image::unpack::remove_existing(path) {
                Ok(()) => reply(HelperReply::Removed),
                Err(e) => failed(&Error::io(format!("removing {}", path.display()), e)),
            }
        }
        _ => 2,
    }
}
