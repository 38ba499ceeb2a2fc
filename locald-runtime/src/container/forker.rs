//! A resident process that forks container shims, so that a runtime starting many
//! containers (an embedding program, the daemon) does not pay the shim's `exec` and
//! dynamic loading for each: about 2 ms of a container's start here.
//!
//! The forker is this executable again (`__locald-shim forker`), started by the
//! runtime at its second container and kept while the runtime lives. It is
//! single-threaded and does nothing but wait on its socket: each request carries the
//! container's two directories, the caller's environment and the descriptors the shim
//! gets (as [`super::shim::fds`] numbers them); it forks, and the child becomes the
//! shim exactly as an `exec`-ed one does (a session of its own, the same `run`). It
//! answers with the shim's pid. Each container still has its own shim: a container
//! that crashes takes nothing else down, and a forker that dies leaves its shims
//! running (they are the system's then, as after the caller's own exit); the runtime
//! then goes back to starting shims itself and makes a new forker.
//!
//! A program that starts a container soon after its own start (`locald run`) can
//! instead fork the forker from itself first thing in `main`, while it is still
//! single-threaded ([`prefork`]): the forker then needs no `exec` either, and serves
//! the program's first container.
//!
//! Its children are reaped by the kernel (`SIGCHLD` ignored); the forker ends when the
//! runtime's end of the socket closes.
//!
//! A request is one `SOCK_SEQPACKET` message: `data\0run\0targets\0` then `KEY=VALUE\0`
//! for each environment variable, with the descriptors attached in the order of
//! `targets` (comma-separated numbers). The answer is the pid, 4 bytes little-endian,
//! or 0 when the fork failed.

#![allow(unsafe_code)]

use std::{
    ffi::OsString,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::ffi::{OsStrExt, OsStringExt},
    },
    path::{Path, PathBuf},
    sync::Mutex,
};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use super::state::Dirs;

/// The shim verb that makes this executable a forker.
pub(crate) const VERB: &str = "forker";

/// The forker's end of its socket.
const SOCKET_FD: RawFd = 3;

/// The most descriptors one request carries (the shim's pipes and published ports).
const MAX_FDS: usize = 64;

/// The largest request (the environment included).
const MAX_REQUEST: usize = 256 * 1024;

/// The forker, as a runtime holds it: started at the runtime's second container.
#[derive(Debug, Default)]
pub(crate) struct Forker {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    launches: u32,
    conn: Option<Conn>,
}

#[derive(Debug)]
struct Conn {
    socket: Option<OwnedFd>,
    process: Process,
}

#[derive(Debug)]
enum Process {
    /// Executed by the runtime.
    Spawned(std::process::Child),
    /// Forked by [`prefork`].
    Forked(nix::unistd::Pid),
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The forker's shims are in sessions of their own and live on.
        drop(self.socket.take());
        match &mut self.process {
            Process::Spawned(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Process::Forked(pid) => {
                let _ = nix::sys::signal::kill(*pid, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(*pid, None);
            }
        }
    }
}

/// The forker [`prefork`] made, until a runtime takes it.
static PREFORKED: Mutex<Option<Conn>> = Mutex::new(None);

/// Forks a shim forker from this process, for the runtime that starts this process's
/// first container to use: to be called first thing in `main`, so that the forker is a
/// small copy of the program made before anything else runs. Does nothing unless this
/// process is single-threaded (forking a process with other threads is not safe) and
/// root (a rootless container's shim starts in its user namespace, which the forker
/// cannot do).
pub fn prefork() {
    if !nix::unistd::geteuid().is_root() || !single_threaded() {
        return;
    }
    let mut slot = PREFORKED.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return;
    }
    let Ok((ours, theirs)) = socket_pair() else {
        return;
    };
    // SAFETY: this process has one thread (checked above), so the child may do
    // anything the parent could.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(theirs);
            *slot = Some(Conn {
                socket: Some(ours),
                process: Process::Forked(child),
            });
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(ours);
            let code = match nix::unistd::setsid()
                .map_err(io::Error::from)
                .and_then(|_| super::shim::stdio_to_null())
            {
                Ok(()) => serve_on(theirs),
                Err(_) => 2,
            };
            // Not `exit`: nothing of the program's own (atexit handlers, buffered
            // output) belongs to the forker.
            // SAFETY: ends this process at once, which is all the forker has left to do.
            unsafe { nix::libc::_exit(code) }
        }
        Err(_) => {}
    }
}

/// True when this process has one thread.
fn single_threaded() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .any(|l| l.strip_prefix("Threads:").map(str::trim) == Some("1"))
    })
}

/// The runtime's end and the forker's end of a new forker's socket. A forker that
/// never answers (a program that is not one) must not hold a container's start for
/// ever: the runtime's end gives up waiting for an answer after 5 s.
fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )?;
    nix::sys::socket::setsockopt(
        &ours,
        nix::sys::socket::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(5, 0),
    )?;
    Ok((ours, theirs))
}

impl Forker {
    /// Forks a shim for `dirs` through the forker, with `fds` as the shim's descriptors
    /// (`(descriptor, number in the shim)`) and the caller's environment plus `env`.
    /// `None` when this runtime has not started enough containers to keep a forker,
    /// or when the forker cannot serve (it is dropped, to be made again next time):
    /// the caller then starts the shim itself.
    pub(crate) fn fork_shim(
        &self,
        program: &Path,
        dirs: &Dirs,
        fds: &[(&OwnedFd, i32)],
        env: &[(&str, String)],
    ) -> Option<u32> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.launches = state.launches.saturating_add(1);
        if state.conn.is_none() {
            // The one this process forked at its start, else, from the second
            // container on, a new one.
            let preforked = PREFORKED.lock().unwrap_or_else(|e| e.into_inner()).take();
            state.conn = match preforked {
                Some(conn) => Some(conn),
                None if state.launches < 2 => return None,
                None => start(program)
                    .inspect_err(|e| tracing::debug!(error = %e, "no shim forker"))
                    .ok(),
            };
        }
        let socket = state.conn.as_ref()?.socket.as_ref()?;
        match request(socket, dirs, fds, env) {
            Ok(pid) => Some(pid),
            Err(e) => {
                tracing::debug!(error = %e, "the shim forker failed; starting shims directly");
                state.conn = None;
                None
            }
        }
    }
}

/// Starts the forker: `program __locald-shim forker` with its socket as fd 3, in a
/// session of its own, its stdio on `/dev/null`.
fn start(program: &Path) -> io::Result<Conn> {
    use std::os::unix::process::CommandExt;
    let (ours, theirs) = socket_pair()?;
    let theirs_raw = theirs.as_raw_fd();
    let mut cmd = std::process::Command::new(program);
    cmd.arg(super::shim::SHIM_ARG)
        .arg(VERB)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: runs in the forked child before exec: setsid and dup2 only, both
    // async-signal-safe; dup2 clears close-on-exec on the copy.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            nix::unistd::dup2(theirs_raw, SOCKET_FD)?;
            Ok(())
        });
    }
    let process = cmd.spawn()?;
    drop(theirs);
    Ok(Conn {
        socket: Some(ours),
        process: Process::Spawned(process),
    })
}

/// Sends one request and reads the answer.
fn request(
    socket: &OwnedFd,
    dirs: &Dirs,
    fds: &[(&OwnedFd, i32)],
    env: &[(&str, String)],
) -> io::Result<u32> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other("too many descriptors for the forker"));
    }
    let mut msg = Vec::with_capacity(4096);
    msg.extend_from_slice(dirs.data.as_os_str().as_bytes());
    msg.push(0);
    msg.extend_from_slice(dirs.run.as_os_str().as_bytes());
    msg.push(0);
    let targets: Vec<String> = fds.iter().map(|(_, t)| t.to_string()).collect();
    msg.extend_from_slice(targets.join(",").as_bytes());
    msg.push(0);
    let overridden = |k: &OsString| env.iter().any(|(key, _)| k.as_bytes() == key.as_bytes());
    let inherited = std::env::vars_os().filter(|(k, _)| !overridden(k));
    let added = env
        .iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
    for (k, v) in inherited.chain(added) {
        msg.extend_from_slice(k.as_bytes());
        msg.push(b'=');
        msg.extend_from_slice(v.as_bytes());
        msg.push(0);
    }
    if msg.len() > MAX_REQUEST {
        return Err(io::Error::other("the request is too large for the forker"));
    }
    let raw: Vec<RawFd> = fds.iter().map(|(fd, _)| fd.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let iov = [io::IoSlice::new(&msg)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    let mut answer = [0u8; 4];
    let n = nix::sys::socket::recv(socket.as_raw_fd(), &mut answer, MsgFlags::empty())?;
    let pid = u32::from_le_bytes(answer);
    if n != 4 || pid == 0 {
        return Err(io::Error::other("the forker could not fork"));
    }
    Ok(pid)
}

/// The forker's loop (`__locald-shim forker`): returns its exit code when the runtime's
/// end of the socket closes.
pub(crate) fn serve() -> i32 {
    if nix::fcntl::fcntl(SOCKET_FD, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return 2;
    }
    // SAFETY: fd 3 is open (checked above) and was set up by the runtime for this
    // process alone.
    serve_on(unsafe { OwnedFd::from_raw_fd(SOCKET_FD) })
}

fn serve_on(socket: OwnedFd) -> i32 {
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
    let ignored = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        )
    };
    if ignored.is_err() {
        return 2;
    }
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let (len, fds) = {
            let mut iov = [io::IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
            let msg = match recvmsg::<()>(
                socket.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return 1,
            };
            let mut fds = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for cmsg in cmsgs {
                    if let ControlMessageOwned::ScmRights(received) = cmsg {
                        // SAFETY: SCM_RIGHTS just installed these in our table.
                        fds.extend(
                            received
                                .into_iter()
                                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                        );
                    }
                }
            }
            (msg.bytes, fds)
        };
        if len == 0 {
            return 0;
        }
        let pid = match parse(&buf[..len]) {
            Some(req) if req.targets.len() == fds.len() => fork_one(&socket, req, fds),
            _ => 0,
        };
        if nix::sys::socket::send(
            socket.as_raw_fd(),
            &pid.to_le_bytes(),
            MsgFlags::MSG_NOSIGNAL,
        )
        .is_err()
        {
            return 1;
        }
    }
}

struct Request {
    dirs: Dirs,
    targets: Vec<RawFd>,
    env: Vec<(OsString, OsString)>,
}

fn parse(msg: &[u8]) -> Option<Request> {
    let mut fields = msg.split(|&b| b == 0);
    let data = PathBuf::from(OsString::from_vec(fields.next()?.to_vec()));
    let run = PathBuf::from(OsString::from_vec(fields.next()?.to_vec()));
    let targets = std::str::from_utf8(fields.next()?).ok()?;
    let targets = if targets.is_empty() {
        Vec::new()
    } else {
        targets
            .split(',')
            .map(|t| t.parse().ok())
            .collect::<Option<Vec<RawFd>>>()?
    };
    let env = fields
        .filter(|f| !f.is_empty())
        .filter_map(|f| {
            let eq = f.iter().position(|&b| b == b'=')?;
            Some((
                OsString::from_vec(f[..eq].to_vec()),
                OsString::from_vec(f[eq + 1..].to_vec()),
            ))
        })
        .collect();
    Some(Request {
        dirs: Dirs { data, run },
        targets,
        env,
    })
}

/// Forks the shim for `req`; returns its pid, or 0.
fn fork_one(socket: &OwnedFd, req: Request, fds: Vec<OwnedFd>) -> u32 {
    // SAFETY: the forker is single-threaded, so the child may do anything the parent
    // could.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { child }) => u32::try_from(child.as_raw()).unwrap_or(0),
        Ok(nix::unistd::ForkResult::Child) => {
            let code = become_shim(socket, req, fds);
            std::process::exit(code);
        }
        Err(_) => 0,
    }
}

/// In the forked child: the shim's session, descriptors and environment, then the
/// shim's own `run`.
fn become_shim(socket: &OwnedFd, req: Request, fds: Vec<OwnedFd>) -> i32 {
    // SIGCHLD, ignored here, goes back to its default with every other inherited
    // ignored signal when the shim detaches (before it forks anything).
    let _ = nix::unistd::close(socket.as_raw_fd());
    if nix::unistd::setsid().is_err() {
        return 1;
    }
    let Ok(high) = fds
        .iter()
        .map(|fd| super::sys::copy_above(fd.as_raw_fd(), 100))
        .collect::<io::Result<Vec<_>>>()
    else {
        return 1;
    };
    drop(fds);
    for (from, &to) in high.iter().zip(&req.targets) {
        if nix::unistd::dup2(from.as_raw_fd(), to).is_err() {
            return 1;
        }
    }
    drop(high);
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    for (k, v) in &req.env {
        std::env::set_var(k, v);
    }
    super::shim::run_shim(&req.dirs)
}
