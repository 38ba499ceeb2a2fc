//! System calls the container runtime makes in the caller's process.

#![allow(unsafe_code)]

use std::{
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
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

/// Arranges for each `(fd, target)` to be the child's descriptor `target`, and, with
/// `new_session`, for the child to lead a new session (so that a Ctrl-C at the caller's
/// terminal does not reach it). Returns the temporary copies, to keep alive until the
/// child is spawned.
pub(super) fn map_fds(
    cmd: &mut tokio::process::Command,
    fds: Vec<(OwnedFd, i32)>,
    new_session: bool,
) -> Result<Vec<OwnedFd>> {
    // Move every source above the targets first, so that no dup2 overwrites a source
    // that is still to be moved.
    let mut high = Vec::new();
    let mut plan = Vec::new();
    for (fd, target) in fds {
        // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we own.
        let dup = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
        if dup < 0 {
            return Err(Error::io(
                "duplicating a descriptor",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `dup` was just returned by fcntl and nothing else owns it.
        high.push(unsafe { OwnedFd::from_raw_fd(dup) });
        plan.push((dup, target));
    }
    // SAFETY: the closure runs in the forked child before exec and calls only dup2 and
    // setsid, which are async-signal-safe; dup2 clears close-on-exec on the target.
    unsafe {
        cmd.pre_exec(move || {
            if new_session && libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            for &(from, to) in &plan {
                if libc::dup2(from, to) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(high)
}

/// Sends `signal` to `pid`; a process that is gone is not an error.
pub(super) fn kill(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pid <= 1 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) takes two integers.
    let rc = unsafe { libc::kill(pid, crate::sys::signal_to_os(signal)) };
    if rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The hard limit on open files for this process (rlimits above it cannot be set).
pub(super) fn nofile_hard_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        lim.rlim_max
    } else {
        1024
    }
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
