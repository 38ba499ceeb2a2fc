//! The privileged steps, on Linux.

use std::ffi::OsString;
use std::io::{IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::ExitCode;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, SockaddrIn,
    SockaddrLike, SockaddrStorage, UnixAddr,
};
use nix::unistd::{self, Gid, Uid};

use crate::args::{self, Config, Verb};

/// The configuration `locald setup` writes (root-owned, not writable by others).
const CONFIG: &str = "/etc/locald/privhelper.conf";
/// The file `hosts sync` edits.
const HOSTS: &str = "/etc/hosts";
/// Serialises `hosts sync` runs (the hosts file itself is replaced, so it cannot be
/// the lock).
const LOCK: &str = "/etc/locald/hosts.lock";
/// A hosts file larger than this is not one locald will rewrite.
const MAX_HOSTS: u64 = 1 << 20;

#[allow(clippy::print_stderr)]
fn fail(msg: &str) -> ExitCode {
    eprintln!("locald-privhelper: {msg}");
    ExitCode::from(1)
}

pub(crate) fn main() -> ExitCode {
    // A descriptor 0–2 closed by the caller would be reused by the first file this
    // opens, and output meant for the terminal would land in it.
    for fd in 0..3 {
        if fcntl(fd, FcntlArg::F_GETFD).is_err() {
            return ExitCode::from(125);
        }
    }
    // Nothing from the caller's environment is used or passed on.
    let vars: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for k in vars {
        std::env::remove_var(k);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn run() -> Result<(), String> {
    let (ruid, euid, _) = {
        let r = unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
        (r.real, r.effective, r.saved)
    };
    let rgid = unistd::getresgid()
        .map_err(|e| format!("getresgid: {e}"))?
        .real;
    if !euid.is_root() {
        return Err("not installed setuid root (run `locald setup` as root)".into());
    }
    let cfg = read_config()?;
    if ruid.as_raw() != cfg.uid {
        // Give nothing away before refusing.
        drop_privileges(ruid, rgid)?;
        return Err(format!(
            "uid {} may not use this helper (`locald setup` allowed uid {})",
            ruid.as_raw(),
            cfg.uid
        ));
    }
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let verb = match args::parse(&argv, &cfg.suffixes) {
        Ok(v) => v,
        Err(e) => {
            drop_privileges(ruid, rgid)?;
            return Err(e);
        }
    };
    match verb {
        Verb::Bind(port) => {
            // The caller's end must be a unix socket on standard output.
            let out = check_unix_stdout()?;
            let listener = bind(port);
            drop_privileges(ruid, rgid)?;
            let listener = listener?;
            socket::sendmsg::<UnixAddr>(
                out,
                &[IoSlice::new(b"ok")],
                &[ControlMessage::ScmRights(&[listener.as_raw_fd()])],
                MsgFlags::empty(),
                None,
            )
            .map_err(|e| format!("sending the socket: {e}"))?;
            Ok(())
        }
        Verb::HostsSync(names) => {
            let r = sync_hosts(Path::new(HOSTS), &names);
            drop_privileges(ruid, rgid)?;
            let n = r?;
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{HOSTS}: {n} locald names");
            Ok(())
        }
    }
}

fn read_config() -> Result<Config, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nofollow())
        .open(CONFIG)
        .map_err(|e| format!("{CONFIG}: {e} (run `locald setup` as root)"))?;
    let md = f.metadata().map_err(|e| format!("{CONFIG}: {e}"))?;
    if md.uid() != 0 || md.permissions().mode() & 0o022 != 0 || !md.is_file() {
        return Err(format!(
            "{CONFIG} must be a file owned by root and writable only by root"
        ));
    }
    let mut text = String::new();
    f.take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| format!("{CONFIG}: {e}"))?;
    args::parse_config(&text).map_err(|e| format!("{CONFIG}: {e}"))
}

fn libc_nofollow() -> i32 {
    (OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits()
}

fn check_unix_stdout() -> Result<RawFd, String> {
    let fd: RawFd = 1;
    let addr: SockaddrStorage = socket::getsockname(fd)
        .map_err(|_| "bind: standard output must be a unix socket to receive the listener")?;
    if addr.family() != Some(AddressFamily::Unix) {
        return Err("bind: standard output must be a unix socket to receive the listener".into());
    }
    Ok(fd)
}

fn bind(port: u16) -> Result<OwnedFd, String> {
    let fd = socket::socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    let addr = SockaddrIn::new(127, 0, 0, 1, port);
    socket::bind(fd.as_raw_fd(), &addr).map_err(|e| format!("bind 127.0.0.1:{port}: {e}"))?;
    socket::listen(&fd, socket::Backlog::new(1024).expect("backlog"))
        .map_err(|e| format!("listen on 127.0.0.1:{port}: {e}"))?;
    Ok(fd)
}

/// Becomes the caller for good: no supplementary groups, real = effective = saved
/// ids, and checks that root cannot be regained.
fn drop_privileges(uid: Uid, gid: Gid) -> Result<(), String> {
    if unistd::geteuid().is_root() && !uid.is_root() {
        unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    }
    unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    let u = unistd::getresuid().map_err(|e| format!("getresuid: {e}"))?;
    let g = unistd::getresgid().map_err(|e| format!("getresgid: {e}"))?;
    if [u.real, u.effective, u.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return Err("dropping privileges did not stick".into());
    }
    if !uid.is_root() && unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("root could be regained after dropping privileges".into());
    }
    Ok(())
}

/// Replaces the locald block of the hosts file; returns the number of names.
fn sync_hosts(path: &Path, names: &[String]) -> Result<usize, String> {
    let err = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", path.display());
    let dir = path.parent().ok_or("hosts path has no directory")?;
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc_nofollow())
        .open(LOCK)
        .map_err(|e| format!("{LOCK}: {e}"))?;
    nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("{LOCK}: lock: {e}"))
        .and_then(|guard| {
            let md = std::fs::symlink_metadata(path).map_err(|e| err("stat", e))?;
            if !md.file_type().is_file() {
                return Err(format!(
                    "{} is not a regular file (a symlink?); refusing to touch it",
                    path.display()
                ));
            }
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc_nofollow())
                .open(path)
                .map_err(|e| err("open", e))?;
            let fmd = f.metadata().map_err(|e| err("stat", e))?;
            if fmd.ino() != md.ino() || fmd.dev() != md.dev() {
                return Err(format!("{} changed while it was opened", path.display()));
            }
            if fmd.len() > MAX_HOSTS {
                return Err(format!("{} is larger than 1 MiB", path.display()));
            }
            let mut old = String::new();
            f.read_to_string(&mut old).map_err(|e| err("read", e))?;
            let new = args::replace_block(&old, &args::hosts_block(names))?;
            if new != old {
                write_hosts(path, dir, &mut f, &fmd, new.as_bytes())?;
            }
            drop(guard);
            Ok(names.len())
        })
}

fn write_hosts(
    path: &Path,
    dir: &Path,
    f: &mut std::fs::File,
    md: &std::fs::Metadata,
    bytes: &[u8],
) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let err = |what: &str, e: std::io::Error| format!("{}: {what}: {e}", path.display());
    // A temporary file beside it, replaced into place by a rename.
    let tmp = dir.join(format!(".hosts.locald-{}", std::process::id()));
    let made = (|| -> std::io::Result<()> {
        let mut t = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(md.permissions().mode() & 0o7777)
            .custom_flags(libc_nofollow())
            .open(&tmp)?;
        t.write_all(bytes)?;
        unistd::fchown(
            t.as_raw_fd(),
            Some(Uid::from_raw(md.uid())),
            Some(Gid::from_raw(md.gid())),
        )?;
        t.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    match made {
        Ok(()) => Ok(()),
        // A bind-mounted /etc/hosts (containers) cannot be replaced: rewrite it in
        // place through the descriptor already checked.
        Err(e)
            if e.raw_os_error() == Some(nix::libc::EBUSY)
                || e.raw_os_error() == Some(nix::libc::EXDEV) =>
        {
            let _ = std::fs::remove_file(&tmp);
            f.write_all_at(bytes, 0).map_err(|e| err("write", e))?;
            f.set_len(bytes.len() as u64)
                .map_err(|e| err("truncate", e))?;
            f.sync_all().map_err(|e| err("sync", e))
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(err("replace", e))
        }
    }
}
