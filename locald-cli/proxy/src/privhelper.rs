//! Talking to `locald-privhelper`, the setuid helper `locald setup` installs: a
//! listening socket on port 80 or 443, and the locald block of /etc/hosts.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};

/// Where `locald setup` installs the helper.
pub const HELPER: &str = "/usr/local/libexec/locald-privhelper";
/// Where `locald setup` records the allowed user.
pub const CONFIG: &str = "/etc/locald/privhelper.conf";

/// The installed helper, if there is one.
pub fn installed() -> Option<PathBuf> {
    Path::new(HELPER).is_file().then(|| PathBuf::from(HELPER))
}

fn failed(helper: &Path, what: &str, stderr: &[u8]) -> std::io::Error {
    let msg = String::from_utf8_lossy(stderr);
    std::io::Error::other(format!(
        "{} {what}: {}",
        helper.display(),
        msg.trim().trim_start_matches("locald-privhelper: ")
    ))
}

/// Asks `helper` for a socket listening on 127.0.0.1:`port` (80 or 443).
pub fn bind(helper: &Path, port: u16) -> std::io::Result<std::net::TcpListener> {
    let (ours, theirs) = UnixStream::pair()?;
    let child = Command::new(helper)
        .args(["bind", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::from(OwnedFd::from(theirs)))
        .stderr(Stdio::piped())
        .env_clear()
        .spawn()?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(failed(helper, &format!("bind {port}"), &out.stderr));
    }
    let mut buf = [0u8; 2];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(
        ours.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor in this process
                // for the received SCM_RIGHTS message; nothing else owns it.
                #[allow(unsafe_code)]
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                return Ok(std::net::TcpListener::from(owned));
            }
        }
    }
    Err(std::io::Error::other(format!(
        "{} bind {port}: no socket received",
        helper.display()
    )))
}

/// Makes the locald block of /etc/hosts list exactly `names`.
pub fn hosts_sync(helper: &Path, names: &[String]) -> std::io::Result<()> {
    let out = Command::new(helper)
        .args(["hosts", "sync"])
        .args(names)
        .stdin(Stdio::null())
        .env_clear()
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(failed(helper, "hosts sync", &out.stderr))
    }
}
