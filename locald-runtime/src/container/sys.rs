//! System calls the container runtime makes in the caller's process.

#![allow(unsafe_code)]

use std::{
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::PermissionsExt,
    },
    path::{Path, PathBuf},
};

use locald_core::{Error, Result, Signal};

/// A close-on-exec pipe: (read end, write end).
pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("creating a pipe", io::Error::from(e)))
}

/// An async reader over a pipe's read end.
pub(super) fn receiver(fd: OwnedFd) -> Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::Receiver::from_owned_fd(fd).map_err(|e| Error::io("watching a pipe", e))
}

/// An async writer over a pipe's write end.
pub(super) fn sender(fd: OwnedFd) -> Result<tokio::net::unix::pipe::Sender> {
    tokio::net::unix::pipe::Sender::from_owned_fd(fd).map_err(|e| Error::io("watching a pipe", e))
}

/// A close-on-exec copy of `fd` numbered `floor` or above, out of the way of the
/// descriptors a child gets at fixed low numbers, so that moving those into place
/// overwrites no source still to be moved.
pub(super) fn copy_above(fd: RawFd, floor: RawFd) -> io::Result<OwnedFd> {
    let dup = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(floor))?;
    // SAFETY: `dup` was just returned by fcntl and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

/// Arranges for each `(fd, target)` to be the child's descriptor `target`, and, with
/// `new_session`, for the child to lead a new session (so that a Ctrl-C at the caller's
/// terminal does not reach it). Returns the temporary copies, to keep alive until the
/// child is spawned.
pub(super) fn map_fds(
    cmd: &mut tokio::process::Command,
    fds: Vec<(OwnedFd, i32)>,
    new_session: bool,
) -> Result<Vec<OwnedFd>> {
    let mut high = Vec::new();
    let mut plan = Vec::new();
    for (fd, target) in fds {
        let dup = copy_above(fd.as_raw_fd(), 100)
            .map_err(|e| Error::io("duplicating a descriptor", e))?;
        plan.push((dup.as_raw_fd(), target));
        high.push(dup);
    }
    // SAFETY: the closure runs in the forked child before exec and calls only dup2 and
    // setsid (nix's thin wrappers, no allocation), which are async-signal-safe; dup2
    // clears close-on-exec on the target.
    unsafe {
        cmd.pre_exec(move || {
            if new_session {
                nix::unistd::setsid()?;
            }
            for &(from, to) in &plan {
                nix::unistd::dup2(from, to)?;
            }
            Ok(())
        });
    }
    Ok(high)
}

/// Sends `signal` to `pid`; a process that is gone is not an error.
pub(super) fn kill(pid: u32, signal: Signal) -> io::Result<()> {
    crate::sys::send_signal(pid, signal)
}

/// The hard limit on open files for this process (rlimits above it cannot be set).
pub(super) fn nofile_hard_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(_, hard)| hard)
        .unwrap_or(1024)
}

/// True when Safe Mode can map container root to an unprivileged host uid: the kernel
/// allows user namespaces, and the mapped uid can reach the state directory and the
/// root filesystem (every ancestor searchable by others).
pub(super) fn user_namespaces_usable(dirs: &[&Path], lowers: &[PathBuf]) -> bool {
    let allowed = std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0)
        > 0;
    if !allowed {
        return false;
    }
    let searchable = |p: &Path| {
        p.ancestors().all(|a| {
            std::fs::metadata(a)
                .map(|m| m.permissions().mode() & 0o001 != 0)
                .unwrap_or(false)
        })
    };
    dirs.iter().all(|d| searchable(d)) && lowers.iter().all(|l| searchable(l))
}
