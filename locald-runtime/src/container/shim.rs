//! The container shim: a small, single-threaded process that drives the runtime library
//! for one container and then supervises it, like containerd's shims or conmon.
//!
//! Why a separate process: the runtime library changes the working directory of the
//! whole process, clones with raw `clone3` and runs Rust code in the child, marks its
//! caller non-dumpable and applies the container's OOM score to it, and its forked
//! init inherits whatever logging the caller set up. None of that is safe inside a
//! multi-threaded embedder. The shim is the embedder's own executable re-run with a
//! marker argument ([`run_if_requested`]), or the `locald-shim`/`locald` binary.
//!
//! Who reaps: the shim leads its own session (so a Ctrl-C at the caller's terminal
//! does not reach it) and outlives its caller; while the caller lives, the shim is its
//! child and the caller's async runtime reaps it, afterwards the system does. The shim
//! is a child subreaper; the container's init is its child. It waits for the init, records the exit status (and whether the OOM
//! killer ended it) in `state.json`, removes the cgroup and unmounts the root, keeps
//! copying output into `container.log` until the last writer closes, and holds the
//! container's `lock` until all of that is done, so any process can wait for it.

#![allow(unsafe_code)]

pub(crate) mod protocol;

use std::{
    cell::RefCell,
    fs::File,
    io,
    io::Write,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    path::{Path, PathBuf},
    rc::Rc,
    time::Duration,
};

use libcontainer::{
    container::builder::ContainerBuilder, error::LibcontainerError, syscall::syscall::SyscallType,
};
use locald_core::{ExitStatus, NetworkMode};
use nix::{
    fcntl::{fcntl, FcntlArg, FdFlag, Flock, FlockArg},
    sys::wait::{waitpid, WaitPidFlag, WaitStatus},
    unistd::Pid,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub(crate) use protocol::{fds, ExecRequest, Message, ShimConfig};

use super::{logs, rootfs, state, state::Dirs};
use crate::timing;

/// Why the shim could not start a container or an exec. Its display, with its causes
/// ([`crate::util::error_chain`]), is what the caller reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ShimError {
    /// `shim.json` is missing or unreadable.
    #[error("reading shim.json")]
    ReadConfig(#[source] io::Error),
    /// Leaving the caller's session, stdio or working directory failed.
    #[error("could not start the container shim")]
    Detach(#[source] io::Error),
    /// The container's lock file could not be created.
    #[error("could not create the lock")]
    Lock(#[source] io::Error),
    /// The overlay (or copy) of the root filesystem failed.
    #[error("mounting the root filesystem")]
    MountRootfs(#[source] locald_core::Error),
    /// The mount points the root lacks could not be created in its snapshot.
    #[error("preparing the root filesystem for a user namespace")]
    MountPoints(#[source] locald_core::Error),
    /// The working directory could not be created in the snapshot.
    #[error("creating the working directory")]
    Workdir(#[source] io::Error),
    /// A directory the shim needs could not be created.
    #[error("creating {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket that receives the container's terminal could not be created.
    #[error("creating the console socket")]
    ConsoleSocket(#[source] io::Error),
    /// A pipe for the container's output could not be created.
    #[error("creating a pipe")]
    Pipe(#[source] nix::Error),
    /// `/dev/null` could not be opened for the container's stdin.
    #[error("opening /dev/null")]
    DevNull(#[source] io::Error),
    /// The runtime library refused the container (or exec) or failed creating it.
    #[error(transparent)]
    Create(LibcontainerError),
    /// The process description of an exec on a terminal could not be written.
    #[error("writing the exec's process description")]
    ExecProcess(#[source] io::Error),
    /// The container's terminal never arrived.
    #[error("receiving the container's terminal")]
    Terminal(#[source] io::Error),
    /// The container's loopback interface could not be brought up.
    #[error("bringing up the container's loopback")]
    Loopback(#[source] io::Error),
    /// pasta, the container's outbound network, could not be started.
    #[error("starting pasta for the container's network (the passt package)")]
    Pasta(#[source] io::Error),
    /// The created container could not be started.
    #[error("starting the container")]
    Start(#[source] LibcontainerError),
    /// The user namespace of a rootless container could not be set up or joined.
    #[error("setting up the user namespace of a rootless container")]
    UserNamespace(#[source] io::Error),
    /// The exec request is not what the caller sends.
    #[error("bad exec request")]
    ExecRequest(#[source] serde_json::Error),
}

impl ShimError {
    /// The message for the caller: the error and its causes on one line.
    fn report(&self) -> String {
        crate::util::error_chain(self).replace('\n', " ")
    }
}

/// The argument (`argv[1]`) that turns an executable into the shim.
pub const SHIM_ARG: &str = "__locald-shim";

// Every program that links this crate is its own container shim, whatever its `main`
// looks like: this function runs before `main` (from `.init_array`, as the C runtime
// runs constructors) and, when `argv[1]` is [`SHIM_ARG`], runs the shim and exits
// before any of the program's own code (an async runtime, threads, logging) exists.
// So the runtime can always start the shim as `/proc/self/exe __locald-shim ...`.
#[used]
#[link_section = ".init_array"]
static DISPATCH_BEFORE_MAIN: extern "C" fn() = dispatch_before_main;

extern "C" fn dispatch_before_main() {
    if !started_as_shim() {
        return;
    }
    let args: Vec<String> = cmdline()
        .into_iter()
        .skip(2)
        .map(|a| String::from_utf8_lossy(&a).into_owned())
        .collect();
    // A panic must not unwind out of this C-ABI function; the shim reports its own
    // failures, and a panic ends it with status 101 like a panicking `main`.
    let code = std::panic::catch_unwind(|| main_with(&args)).unwrap_or(101);
    std::process::exit(code);
}

/// The process's arguments, read from `/proc/self/cmdline` (before `main`, the
/// standard library's argument list may not be set up yet).
fn cmdline() -> Vec<Vec<u8>> {
    std::fs::read("/proc/self/cmdline")
        .map(|all| {
            all.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        })
        .unwrap_or_default()
}

/// True when `argv[1]` is [`SHIM_ARG`]. Cheap for every other program: one short read
/// of `/proc/self/cmdline`, only when the command line could hold the marker.
fn started_as_shim() -> bool {
    let Ok(mut f) = File::open("/proc/self/cmdline") else {
        return false;
    };
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        match io::Read::read(&mut f, &mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    let mut args = buf[..len].split(|&b| b == 0);
    let _ = args.next();
    args.next() == Some(SHIM_ARG.as_bytes())
}

/// Kept for programs written against earlier versions, which call it first in `main`:
/// it does nothing any more. Every program that links locald is its own container
/// shim without any call: a constructor that runs before `main` starts the shim when
/// the runtime re-runs the executable with [`SHIM_ARG`], so `#[tokio::main]`, a
/// hand-built async runtime or threads started early are all fine.
///
/// ```no_run
/// // Harmless, and not needed:
/// locald_runtime::run_if_requested();
/// ```
pub fn run_if_requested() {
    // Programs whose constructors were not run (an unusual loader) still dispatch
    // here, as before.
    let mut args = std::env::args_os();
    let _ = args.next();
    if args.next().as_deref() == Some(std::ffi::OsStr::new(SHIM_ARG)) {
        let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
        std::process::exit(main_with(&rest));
    }
}

/// The shim's entry point for `locald-shim` and `locald __locald-shim`: `args` are the
/// arguments after the marker. Returns the process exit code.
pub fn main_with(args: &[String]) -> i32 {
    // The image store's helpers for a user who is not root: no container state.
    if let Some(verb) = args.first() {
        if verb == super::rootless::UNPACK_VERB || verb == super::rootless::REMOVE_VERB {
            return super::rootless::serve(args);
        }
        if verb == super::forker::VERB && args.len() == 1 {
            return super::forker::serve();
        }
    }
    if let Some(dir) = args.get(1) {
        let _ = STATE_DIR.set(PathBuf::from(dir));
    }
    // A panic is said on stderr (which the caller reads until the shim detaches) and
    // kept in the container's `shim.log`.
    #[allow(clippy::print_stderr)] // the caller reads it when the shim fails to report
    std::panic::set_hook(Box::new(|info| {
        eprintln!("locald container helper: {info}");
        if let Some(dir) = STATE_DIR.get() {
            shim_log_in(dir, &format!("panic: {info}"));
        }
    }));
    let dirs = |data: &String, run: &String| Dirs {
        data: PathBuf::from(data),
        run: PathBuf::from(run),
    };
    match args {
        [cmd, data, run_dir] if cmd == "run" => run(&dirs(data, run_dir), false),
        [cmd, data, run_dir] if cmd == RUN_IN_USERNS => run(&dirs(data, run_dir), true),
        [cmd, data, run_dir, request] if cmd == "exec" => exec(&dirs(data, run_dir), request),
        _ => 2,
    }
}

/// The data directory of the container this shim serves (its first argument), where
/// `shim.log` goes.
static STATE_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn shim_log(msg: &str) {
    if let Some(dir) = STATE_DIR.get() {
        shim_log_in(dir, msg);
    }
}

fn shim_log_in(dir: &Path, msg: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("shim.log"))
    {
        let _ = writeln!(f, "{} {msg}", state::now());
    }
}

fn take_fd(fd: RawFd) -> Option<OwnedFd> {
    // Is it open at all?
    fcntl(fd, FcntlArg::F_GETFD).ok()?;
    // SAFETY: the caller handed this descriptor over to the shim; nothing else in this
    // process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Keep it out of the container.
    let _ = fcntl(owned.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    Some(owned)
}

/// Sends one protocol message; a caller that is gone is not the shim's problem.
fn send(fd: &OwnedFd, msg: &Message) {
    let _ = nix::unistd::write(fd, msg.to_line().as_bytes());
}

/// Survives SIGPIPE: a caller that stops reading must not kill the shim (its write
/// fails with `EPIPE` instead). With a handler that does nothing, not by ignoring the
/// signal: an ignored signal stays ignored across `exec`, so the container's processes
/// (forked from the shim) would start with SIGPIPE ignored, and `yes | head -n 1`
/// would say "Broken pipe" instead of ending quietly; a handled one is reset to the
/// default by `exec`, as in crun's and docker's containers. Every other signal the
/// shim inherited as ignored is set back to its default, for the same reason.
fn reset_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    extern "C" fn nothing(_: nix::libc::c_int) {}
    // What the caller ignored (`nohup`'s SIGHUP, its runtime's SIGPIPE, anything its
    // own caller left) is not the container's to inherit either: back to the default.
    for signo in 1..=nix::libc::SIGRTMAX() {
        if signo == nix::libc::SIGKILL || signo == nix::libc::SIGSTOP {
            continue;
        }
        // SAFETY: reads the current disposition and, when it is SIG_IGN, sets SIG_DFL;
        // neither runs code in this process.
        unsafe {
            let mut old: nix::libc::sigaction = std::mem::zeroed();
            if nix::libc::sigaction(signo, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == nix::libc::SIG_IGN
            {
                let mut dfl: nix::libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = nix::libc::SIG_DFL;
                let _ = nix::libc::sigaction(signo, &dfl, std::ptr::null_mut());
            }
        }
    }
    let action = SigAction::new(
        SigHandler::Handler(nothing),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing, which is async-signal-safe.
    let _ = unsafe { sigaction(Signal::SIGPIPE, &action) };
}

/// Reaps every child that has ended; returns the init's status if it was among them.
fn reap(init: i32) -> Option<ExitStatus> {
    let mut init_status = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid.as_raw() == init => {
                init_status = Some(ExitStatus::Exited(code))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid.as_raw() == init => {
                init_status = Some(ExitStatus::Signaled(crate::sys::signal_from_os(sig as i32)))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return init_status,
            Ok(_) => {}
        }
    }
}

/// Reaps whatever a failed start left behind (the runtime library's intermediate
/// process), waiting briefly for it to end.
fn reap_leftovers() {
    for _ in 0..100 {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            _ => {}
        }
    }
}

fn detach() -> io::Result<()> {
    // The caller started the shim in a session of its own; it is the caller's child
    // until the caller exits, and then the system's.
    let _ = nix::sys::prctl::set_child_subreaper(true);
    reset_signals();
    // The shim's own stdio goes nowhere: nothing it or the library prints may reach a
    // terminal or the container.
    stdio_to_null()
}

/// Points descriptors 0, 1 and 2 at `/dev/null`.
pub(crate) fn stdio_to_null() -> io::Result<()> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        nix::unistd::dup2(null.as_raw_fd(), fd)?;
    }
    Ok(())
}

struct Started {
    init: i32,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    pty: Option<OwnedFd>,
    tty_input: Option<OwnedFd>,
    netns: Option<File>,
    pasta: Option<super::net::Pasta>,
}

/// The shim's `run` in a process the forker made (see [`super::forker`]), with its
/// descriptors and environment in place.
pub(crate) fn run_shim(dirs: &Dirs) -> i32 {
    let _ = STATE_DIR.set(dirs.data.clone());
    run(dirs, false)
}

/// `run` again, by the shim itself once it is in its user namespace.
pub(crate) const RUN_IN_USERNS: &str = "run-in-userns";

fn run(dirs: &Dirs, in_userns: bool) -> i32 {
    crate::timing::since_spawn("shim: exec until main");
    // Take every inherited descriptor before opening anything: a descriptor number the
    // caller did not pass would otherwise be reused by the next file opened here.
    let cfg: std::io::Result<ShimConfig> = state::read_json(&dirs.run.join("shim.json"));
    // Rootless: the caller starts the shim inside the container's user namespace
    // (`RUN_IN_USERNS`, see `rootless::spawn_into`), so that the shim and every
    // process it forks belong to it (the kernel ties a process's memory to the user
    // namespace it ran `exec` in; the shim needs that to reach the container's
    // namespaces).
    let misplaced = matches!(
        (&cfg, in_userns),
        (
            Ok(ShimConfig {
                rootless: Some(_),
                ..
            }),
            false
        )
    );
    let sync = take_fd(fds::SYNC);
    let exit_fd = take_fd(fds::EXIT);
    let client_out = take_fd(fds::OUT);
    let client_err = take_fd(fds::ERR);
    let stdin = take_fd(fds::IN);
    let listeners: Vec<OwnedFd> = match &cfg {
        Ok(cfg) => (0..cfg.ports.len() as i32)
            .filter_map(|i| take_fd(fds::FIRST_LISTENER + i))
            .collect(),
        Err(_) => Vec::new(),
    };
    let fail = |e: ShimError| {
        if let Some(s) = &sync {
            send(s, &Message::Failed { error: e.report() });
        }
        1
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => return fail(ShimError::ReadConfig(e)),
    };
    if misplaced {
        return fail(ShimError::UserNamespace(io::Error::other(
            "a rootless container's shim must be started in its user namespace",
        )));
    }
    // The working directory is the runtime directory: sockets are bound there by
    // relative names, which a socket address's length limit cannot refuse.
    if let Err(e) = detach().and_then(|()| std::env::set_current_dir(&dirs.run)) {
        return fail(ShimError::Detach(e));
    }
    let lock = match lock(&dirs.run) {
        Ok(l) => l,
        Err(e) => return fail(e),
    };
    let t = timing::phase("shim: mount + create + start (total)");
    let started = start(dirs, &cfg, stdin);
    t.end();
    // The runtime library changes the working directory: come back.
    let _ = std::env::set_current_dir(&dirs.run);
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            let msg = e.report();
            shim_log(&format!("start failed: {msg}"));
            if keep_failed() {
                keep_failed_config(dirs);
            }
            cleanup(dirs, &cfg);
            let mut st = state::read_state(dirs).ok();
            if let Some(st) = st.as_mut() {
                st.phase = state::Phase::Exited;
                st.error = Some(msg.clone());
                let _ = state::write_json(&dirs.state_file(), st);
            }
            if let Some(s) = &sync {
                send(s, &Message::Failed { error: msg });
            }
            return 1;
        }
    };
    let t = timing::phase("shim: start record (started.json)");
    let _ = state::write_started(
        dirs,
        state::Started {
            pid: started.init as u32,
            pid_start: state::process_start_time(started.init as u32),
        },
    );
    t.end();
    if let Some(s) = sync {
        send(
            &s,
            &Message::Started {
                // The library always knows the init's pid; 0 if it ever did not.
                pid: u32::try_from(started.init).unwrap_or(0),
            },
        );
    }
    let t = timing::phase("shim: container runs (wait)");
    let (status, pasta) = supervise(
        &cfg,
        &dirs.log_file(),
        started,
        client_out,
        client_err,
        listeners,
    );
    t.end();
    // The container's processes are gone (its init was the last of its PID namespace):
    // its root filesystem comes down beside the rest of the clean-up.
    let unmounting = unmount_in_background(dirs);
    let t = timing::phase("shim: oom check + state.json exited");
    // Found once, for the OOM check and the removal.
    let cgroups = super::cgroups::found(&cfg.id);
    let oom = super::cgroups::oom_kills(&cgroups) > 0;
    if let Ok(mut st) = state::read_state(dirs) {
        st.phase = state::Phase::Exited;
        st.exit = Some(status);
        st.oom_killed = oom && status == ExitStatus::Signaled(locald_core::Signal::KILL);
        st.finished = Some(state::now());
        let _ = state::write_json(&dirs.state_file(), &st);
    }
    t.end();
    release_ended(dirs, &cfg, &cgroups, unmounting);
    let t = timing::phase("shim: state removal (--rm)");
    if cfg.auto_remove {
        let layout = state::Layout {
            home: cfg
                .names_dir
                .parent()
                .map(Path::to_owned)
                .unwrap_or_default(),
        };
        state::release_name(&layout, &cfg.name, &cfg.id);
        let _ = std::env::set_current_dir("/");
        let _ = dirs.remove();
    }
    t.end();
    // Let go of the container before telling the caller, so that a removal right after
    // the exit finds it free.
    drop(lock);
    if let Some(fd) = exit_fd {
        send(&fd, &Message::Exited { status });
    }
    // pasta, killed when the container ended, takes the kernel 20-30 ms more to end
    // (its tap device's removal waits for an RCU barrier): the caller need not wait
    // for that, the shim does before it exits.
    let t = timing::phase("shim: pasta's end (after the exit report)");
    drop(pasta);
    t.end();
    // The runtime directory serves no one once the container has ended (its data
    // directory stays for inspect, logs and removal).
    if !cfg.auto_remove {
        let _ = std::env::set_current_dir("/");
        let _ = std::fs::remove_dir_all(&dirs.run);
    }
    0
}

/// Creates the container's lock and takes it, for as long as the shim supervises.
fn lock(dir: &Path) -> Result<Flock<File>, ShimError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .map_err(ShimError::Lock)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| ShimError::Lock(e.into()))
}

/// Set (to anything) in the environment of the caller, which the shim inherits, to
/// keep a container whose start failed: its state directory stays, with a copy of the
/// runtime configuration as `failed-config.json`, until the container is removed.
pub(crate) const KEEP_FAILED_ENV: &str = "LOCALD_SHIM_KEEP_FAILED";

/// True when [`KEEP_FAILED_ENV`] asks to keep failed containers.
pub(crate) fn keep_failed() -> bool {
    std::env::var_os(KEEP_FAILED_ENV).is_some()
}

/// Copies `config.json` to `failed-config.json` in the data directory, for debugging.
/// Only ever inside the container's directories (the user's own, not writable by
/// others), and through a new file renamed into place, so no link planted there could
/// redirect the write.
fn keep_failed_config(dirs: &Dirs) {
    let result = std::fs::read(dirs.config_file())
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            crate::util::write_atomic(&dirs.data.join("failed-config.json"), &bytes)
                .map_err(|e| format!("{e}: {}", e.io_error()))
        });
    if let Err(e) = result {
        shim_log(&format!("keeping the failed configuration: {e}"));
    }
}

/// Unmounts and removes the container's root filesystem on a thread of its own, so
/// that it overlaps the runtime library's clean-up (each waits on the kernel more than
/// it computes); `None` if no thread could be made.
fn unmount_in_background(dirs: &Dirs) -> Option<std::thread::JoinHandle<()>> {
    let data = dirs.data.clone();
    std::thread::Builder::new()
        .name("unmount".into())
        .spawn(move || unmount_root(&data))
        .ok()
}

/// Unmounts and removes the root filesystem of the container whose data directory is
/// `data`.
fn unmount_root(data: &Path) {
    let _t = timing::phase("shim: unmount");
    rootfs::unmount_rootfs(data);
}

/// Removes the runtime library's container (its cgroup), unmounts the root.
fn cleanup(dirs: &Dirs, cfg: &ShimConfig) {
    let lc = dirs.lc_root().join(&cfg.id);
    let t = timing::phase("shim: libcontainer delete");
    if lc.exists() {
        match libcontainer::container::Container::load(lc.clone()) {
            Ok(mut c) => {
                if let Err(e) = c.delete(true) {
                    shim_log(&format!("delete failed: {e}"));
                }
            }
            Err(e) => shim_log(&format!("loading the container state failed: {e}")),
        }
        let _ = std::fs::remove_dir_all(&lc);
    }
    t.end();
    let t = timing::phase("shim: cgroup removal");
    super::cgroups::remove(&cfg.id);
    t.end();
    unmount_root(&dirs.data);
}

/// The clean-up of a container whose init has been reaped: its `cgroups` (killing any
/// process left in them) and the runtime library's state, then the root filesystem
/// (unmounting already under way on `unmounting`). The library's own `delete` is for
/// a container in any state; for an ended one it does no more than this, and spends
/// most of its time finding the cgroups (see `cgroups::remove_ended`).
fn release_ended(
    dirs: &Dirs,
    cfg: &ShimConfig,
    cgroups: &[(PathBuf, bool)],
    unmounting: Option<std::thread::JoinHandle<()>>,
) {
    let t = timing::phase("shim: cgroups + runtime state removal");
    if let Err(e) = super::cgroups::remove_ended(cgroups) {
        shim_log(&format!("removing the container's cgroups: {e}"));
    }
    let _ = std::fs::remove_dir_all(dirs.lc_root().join(&cfg.id));
    t.end();
    match unmounting.map(std::thread::JoinHandle::join) {
        Some(Ok(())) => {}
        // No thread, or it panicked: unmount here (unmounting again is harmless).
        _ => unmount_root(&dirs.data),
    }
}

fn start(dirs: &Dirs, cfg: &ShimConfig, stdin: Option<OwnedFd>) -> Result<Started, ShimError> {
    let t = timing::phase("shim: read config.json");
    let spec = oci_spec::runtime::Spec::load(dirs.config_file()).map_err(|e| {
        ShimError::MountRootfs(locald_core::Error::io(
            "reading config.json",
            io::Error::other(e),
        ))
    })?;
    t.end();
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let t = timing::phase("shim: overlay mount");
    let mounted = rootfs::mount_rootfs(
        &cfg.lowers,
        &dirs.data,
        &dirs.rootfs(),
        cfg.read_only,
        cfg.image,
        cfg.whiteouts,
        mounts,
    )
    .map_err(ShimError::MountRootfs)?;
    t.end();
    // Only ever in the container's own snapshot, never in a caller's directory.
    if cfg.create_mount_points && mounted == rootfs::MountedRoot::Snapshot {
        rootfs::create_mount_points(&dirs.rootfs(), mounts).map_err(ShimError::MountPoints)?;
    }
    if !cfg.read_only {
        let cwd = dirs
            .rootfs()
            .join(cfg.workdir.strip_prefix("/").unwrap_or(&cfg.workdir));
        if !cwd.exists() {
            std::fs::create_dir_all(&cwd).map_err(ShimError::Workdir)?;
        }
    }
    let lc_root = dirs.lc_root();
    std::fs::create_dir_all(&lc_root).map_err(|source| ShimError::CreateDir {
        path: lc_root.clone(),
        source,
    })?;
    let mut builder = ContainerBuilder::new(cfg.id.clone(), SyscallType::default())
        .with_root_path(&lc_root)
        .map_err(ShimError::Create)?;
    let mut out = None;
    let mut err = None;
    let mut tty_input = None;
    let console = if cfg.tty {
        let path = dirs.run.join("console.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind("console.sock")
            .map_err(ShimError::ConsoleSocket)?;
        builder = builder.with_console_socket(Some(path));
        // The terminal's input comes from the caller: keep the pipe for the relay.
        tty_input = stdin;
        Some(listener)
    } else {
        let (out_r, out_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ShimError::Pipe)?;
        let (err_r, err_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(ShimError::Pipe)?;
        let stdin: OwnedFd = match stdin {
            Some(fd) => fd,
            None => File::open("/dev/null").map_err(ShimError::DevNull)?.into(),
        };
        builder = builder
            .with_stdin(stdin)
            .with_stdout(out_w)
            .with_stderr(err_w);
        out = Some(out_r);
        err = Some(err_r);
        None
    };
    let t = timing::phase("shim: libcontainer build (create)");
    let built = builder
        .as_init(&dirs.run)
        .with_systemd(false)
        .with_detach(true)
        .build();
    t.end();
    let mut container = match built {
        Ok(c) => c,
        Err(e) => {
            reap_leftovers();
            return Err(ShimError::Create(e));
        }
    };
    let init = container.pid().map(|p| p.as_raw()).unwrap_or(-1);
    let pty = match console {
        Some(listener) => match receive_pty(&listener) {
            Ok(fd) => {
                if let Some(size) = cfg.terminal_size {
                    let _ = set_terminal_size(&fd, size);
                }
                Some(fd)
            }
            Err(e) => {
                abandon(&mut container, init);
                return Err(ShimError::Terminal(e));
            }
        },
        None => None,
    };
    let t = timing::phase("shim: loopback + pasta");
    let netns = if cfg.network != NetworkMode::Host {
        match super::net::loopback_up(init) {
            Ok(ns) => Some(ns),
            Err(e) => {
                abandon(&mut container, init);
                return Err(ShimError::Loopback(e));
            }
        }
    } else {
        None
    };
    let pasta = match (&cfg.pasta, cfg.network) {
        (Some(program), NetworkMode::Private) => {
            match super::net::Pasta::start(program, init, &dirs.run, cfg.map_host_loopback) {
                Ok(p) => Some(p),
                Err(e) => {
                    abandon(&mut container, init);
                    return Err(ShimError::Pasta(e));
                }
            }
        }
        _ => None,
    };
    t.end();
    let t = timing::phase("shim: libcontainer start");
    let start_result = container.start();
    t.end();
    if let Err(e) = start_result {
        drop(pasta);
        abandon(&mut container, init);
        return Err(ShimError::Start(e));
    }
    Ok(Started {
        init,
        out,
        err,
        pty,
        tty_input,
        netns,
        pasta,
    })
}

/// Ends a container whose start failed: its init first (a rootless container's cgroup
/// cannot be used to kill it), then the runtime library's record of it.
fn abandon(container: &mut libcontainer::container::Container, init: i32) {
    if init > 0 {
        let _ = nix::sys::signal::kill(Pid::from_raw(init), nix::sys::signal::Signal::SIGKILL);
    }
    let _ = container.delete(true);
    reap_leftovers();
}

fn receive_pty(listener: &std::os::unix::net::UnixListener) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let (conn, _) = listener.accept()?;
    let mut buf = [0u8; 4096];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: SCM_RIGHTS just installed this descriptor in our table.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(io::Error::other("no terminal was sent"))
}

type SharedLog = Rc<RefCell<File>>;

async fn relay(
    from: OwnedFd,
    stream: u8,
    log: SharedLog,
    mut client: Option<tokio::net::unix::pipe::Sender>,
) {
    let Ok(mut from) = pipe_receiver(from) else {
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            // EIO: a pty whose last slave closed.
            Err(_) => break,
        };
        let _ = logs::write_frame(&mut *log.borrow_mut(), stream, &buf[..n]);
        if let Some(c) = client.as_mut() {
            if c.write_all(&buf[..n]).await.is_err() {
                client = None;
            }
        }
    }
}

fn pipe_receiver(fd: OwnedFd) -> io::Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::Receiver::from_owned_fd_unchecked(fd)
}

fn pipe_sender(fd: OwnedFd) -> io::Result<tokio::net::unix::pipe::Sender> {
    tokio::net::unix::pipe::Sender::from_owned_fd_unchecked(fd)
}

fn supervise(
    cfg: &ShimConfig,
    log_file: &Path,
    started: Started,
    client_out: Option<OwnedFd>,
    client_err: Option<OwnedFd>,
    listeners: Vec<OwnedFd>,
) -> (ExitStatus, Option<super::net::Pasta>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            shim_log(&format!("no async runtime: {e}"));
            return (wait_blocking(started.init), started.pasta);
        }
    };
    let local = tokio::task::LocalSet::new();
    let init = started.init;
    let pasta = started.pasta;
    local.block_on(&rt, async move {
        let log: SharedLog = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_file)
        {
            Ok(f) => Rc::new(RefCell::new(f)),
            Err(_) => Rc::new(RefCell::new(File::create("/dev/null").expect("/dev/null"))),
        };
        let mut sigchld =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
        let client_out = client_out.and_then(|fd| pipe_sender(fd).ok());
        let client_err = client_err.and_then(|fd| pipe_sender(fd).ok());
        let mut relays = Vec::new();
        if let Some(pty) = started.pty {
            let _ = std::fs::remove_file(protocol::TTY_SOCKET);
            match (
                pty.try_clone(),
                tokio::net::UnixListener::bind(protocol::TTY_SOCKET),
            ) {
                (Ok(control), Ok(listener)) => {
                    tokio::task::spawn_local(resize_server(listener, control));
                }
                (_, Err(e)) | (Err(e), _) => shim_log(&format!("no terminal resizing: {e}")),
            }
            // The terminal carries both output streams; the caller's input goes in.
            if let (Some(stdin), Ok(writer)) = (started.tty_input, pty.try_clone()) {
                tokio::task::spawn_local(async move {
                    if let (Ok(mut input), Ok(mut to)) = (pipe_receiver(stdin), pipe_sender(writer))
                    {
                        let _ = tokio::io::copy(&mut input, &mut to).await;
                    }
                });
            }
            relays.push(tokio::task::spawn_local(relay(
                pty,
                logs::STDOUT,
                log.clone(),
                client_out,
            )));
        } else {
            if let Some(out) = started.out {
                relays.push(tokio::task::spawn_local(relay(
                    out,
                    logs::STDOUT,
                    log.clone(),
                    client_out,
                )));
            }
            if let Some(err) = started.err {
                relays.push(tokio::task::spawn_local(relay(
                    err,
                    logs::STDERR,
                    log.clone(),
                    client_err,
                )));
            }
        }
        let mut forwarders = Vec::new();
        if let Some(ns) = started.netns {
            let ns = Rc::new(ns);
            for (i, (fd, port)) in listeners
                .into_iter()
                .zip(cfg.ports.iter().copied())
                .enumerate()
            {
                let task = if cfg.udp.get(i).copied().unwrap_or(false) {
                    tokio::task::spawn_local(super::net::forward_udp(fd, port, ns.clone()))
                } else {
                    tokio::task::spawn_local(super::net::forward(fd, port, ns.clone()))
                };
                forwarders.push(task);
            }
        }
        let status = loop {
            if let Some(status) = reap(init) {
                break status;
            }
            match sigchld.as_mut() {
                Some(s) => {
                    let _ = tokio::time::timeout(Duration::from_millis(500), s.recv()).await;
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        for f in forwarders {
            f.abort();
        }
        let _ = std::fs::remove_file(protocol::TTY_SOCKET);
        // The namespace's last process is gone: its network goes with it.
        if let Some(pasta) = &pasta {
            pasta.kill();
        }
        // The init's end kills everything else in its pid namespace; the pipes close
        // when the last of them is gone.
        let drain = async {
            for r in relays {
                let _ = r.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
        reap(-1);
        (status, pasta)
    })
}

fn wait_blocking(init: i32) -> ExitStatus {
    loop {
        match waitpid(Pid::from_raw(init), None) {
            Ok(WaitStatus::Exited(_, code)) => return ExitStatus::Exited(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return ExitStatus::Signaled(crate::sys::signal_from_os(sig as i32))
            }
            Ok(_) => {}
            Err(_) => return ExitStatus::Exited(-1),
        }
    }
}

/// Runs one command in a running container: stdio are the caller's (inherited as
/// 0, 1, 2); fd 3 gets [`Message::Started`] then [`Message::Exited`], or
/// [`Message::Failed`].
fn exec(dirs: &Dirs, request: &str) -> i32 {
    let Some(status_fd) = take_fd(fds::SYNC) else {
        return 2;
    };
    reset_signals();
    let (pid, pty) = match exec_start(&dirs.run, request) {
        Ok(started) => started,
        Err(e) => {
            send(&status_fd, &Message::Failed { error: e.report() });
            return 1;
        }
    };
    send(&status_fd, &Message::Started { pid: pid as u32 });
    let output_done = pty.map(exec_terminal);
    let status = wait_blocking(pid);
    if let Some(done) = output_done {
        // What the command wrote before it ended; a descendant that keeps the terminal
        // open does not hold the exit up for long.
        let _ = done.recv_timeout(Duration::from_secs(1));
    }
    reap_leftovers();
    send(&status_fd, &Message::Exited { status });
    0
}

/// Starts the process `request` asks for in the container; returns its pid and, with a
/// terminal, the terminal's controlling side.
fn exec_start(dir: &Path, request: &str) -> Result<(i32, Option<OwnedFd>), ShimError> {
    let req: ExecRequest = serde_json::from_str(request).map_err(ShimError::ExecRequest)?;
    if let Some(pid) = req.join_user_namespace_of {
        join_user_namespace(pid).map_err(ShimError::UserNamespace)?;
    }
    let mut builder = ContainerBuilder::new(req.id.clone(), SyscallType::default())
        .with_root_path(dir.join("lc"))
        .map_err(ShimError::Create)?;
    let mut terminal = None;
    let mut process_file = None;
    if req.tty {
        let size = req.terminal_size;
        // The runtime library takes a terminal only from a whole process description.
        let path = dir.join(format!("exec-{}.json", std::process::id()));
        write_exec_process(dir, &req, &path).map_err(ShimError::ExecProcess)?;
        process_file = Some(path);
        std::env::set_current_dir(dir).map_err(ShimError::ConsoleSocket)?;
        let name = format!("exec-{}.sock", std::process::id());
        let _ = std::fs::remove_file(&name);
        let listener =
            std::os::unix::net::UnixListener::bind(&name).map_err(ShimError::ConsoleSocket)?;
        builder = builder.with_console_socket(Some(dir.join(&name)));
        // Received and sized as soon as it is sent; the process waits for the size
        // before it becomes the command (`SizedTerminal`).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let received = receive_pty(&listener).inspect(|pty| {
                if let Some(size) = size {
                    let _ = set_terminal_size(pty, size);
                }
            });
            let _ = std::fs::remove_file(&name);
            let _ = tx.send(received);
        });
        terminal = Some(rx);
    }
    if req.tty && req.terminal_size.is_some() {
        builder = builder.with_executor(SizedTerminal);
    }
    let built = builder
        .as_tenant()
        .with_container_args(req.args)
        .with_env(req.env)
        .with_cwd(req.cwd)
        .with_process(process_file.as_ref())
        .with_detach(true)
        .build();
    if let Some(path) = &process_file {
        let _ = std::fs::remove_file(path);
    }
    let pid = match built {
        Ok(pid) => pid.as_raw(),
        Err(e) => {
            reap_leftovers();
            return Err(ShimError::Create(e));
        }
    };
    let pty = match terminal {
        Some(rx) => {
            let received = rx
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| Err(io::Error::other("no terminal was sent")));
            match received {
                Ok(pty) => Some(pty),
                Err(e) => {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
                    let _ = waitpid(Pid::from_raw(pid), None);
                    return Err(ShimError::Terminal(e));
                }
            }
        }
        None => None,
    };
    Ok((pid, pty))
}

/// The process description of a command run on a terminal: the container's own (its
/// capabilities, limits, no-new-privileges), with the command's arguments, environment
/// and working directory, as root, as an exec without a terminal runs.
fn write_exec_process(dir: &Path, req: &ExecRequest, path: &Path) -> io::Result<()> {
    let spec = oci_spec::runtime::Spec::load(dir.join("config.json")).map_err(io::Error::other)?;
    let mut process = spec.process().clone().unwrap_or_default();
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    for (key, value) in &req.env {
        env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key.as_str()));
        env.push(format!("{key}={value}"));
    }
    if !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    process
        .set_args(Some(req.args.clone()))
        .set_env(Some(env))
        .set_cwd(req.cwd.clone().unwrap_or_else(|| PathBuf::from("/")))
        .set_terminal(Some(true))
        .set_console_size(None)
        .set_user(oci_spec::runtime::User::default());
    let json = serde_json::to_vec(&process).map_err(io::Error::other)?;
    std::fs::write(path, json)
}

/// Relays a command's terminal: the shim's stdin to it, its output to the shim's
/// stdout, and resize lines from [`fds::EXEC_RESIZE`]. The receiver hears when the
/// output has ended.
fn exec_terminal(pty: OwnedFd) -> std::sync::mpsc::Receiver<()> {
    use std::io::{BufRead, Read};
    if let Some(resize) = take_fd(fds::EXEC_RESIZE) {
        if let Ok(pty) = pty.try_clone() {
            std::thread::spawn(move || {
                for line in io::BufReader::new(File::from(resize)).lines() {
                    let Ok(line) = line else { break };
                    if let Some(size) = protocol::parse_size(&line) {
                        let _ = set_terminal_size(&pty, size);
                    }
                }
            });
        }
    }
    if let Ok(pty) = pty.try_clone() {
        std::thread::spawn(move || {
            let mut to = File::from(pty);
            let _ = io::copy(&mut io::stdin().lock(), &mut to);
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut from = File::from(pty);
        let mut out = io::stdout().lock();
        let mut buf = [0u8; 16 * 1024];
        // Ends at EIO once the last holder of the terminal's other side is gone.
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                break;
            }
        }
        let _ = tx.send(());
    });
    rx
}

nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, libc::winsize);
nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, libc::winsize);

/// Runs an exec'd command on a terminal only once the terminal has its size.
///
/// The runtime library makes the terminal in the new process, sends it to this shim,
/// and goes straight on to the command, so the shim's sizing raced with the command's
/// first look at its size (a program saw 0x0, then a resize it never asked for). The
/// process now waits, on its own terminal, until the shim has sized it (microseconds,
/// bounded by [`TERMINAL_SIZE_WAIT`]) and only then becomes the command.
#[derive(Clone)]
struct SizedTerminal;

/// How long an exec'd process waits for its terminal's size before it runs anyway.
const TERMINAL_SIZE_WAIT: Duration = Duration::from_secs(2);

impl libcontainer::workload::Executor for SizedTerminal {
    fn exec(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorError> {
        let deadline = std::time::Instant::now() + TERMINAL_SIZE_WAIT;
        loop {
            let mut ws = libc::winsize {
                ws_row: 0,
                ws_col: 0,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCGWINSZ writes one `winsize` to the pointer, which outlives the call.
            let sized = unsafe { tiocgwinsz(libc::STDIN_FILENO, &mut ws) }.is_ok()
                && (ws.ws_row, ws.ws_col) != (0, 0);
            if sized || std::time::Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        libcontainer::workload::default::DefaultExecutor {}.exec(spec)
    }

    fn validate(
        &self,
        spec: &oci_spec::runtime::Spec,
    ) -> Result<(), libcontainer::workload::ExecutorValidationError> {
        libcontainer::workload::default::DefaultExecutor {}.validate(spec)
    }
}

/// Sets a terminal's size; its foreground process group gets `SIGWINCH`.
fn set_terminal_size(pty: &impl AsRawFd, size: locald_core::TerminalSize) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which outlives the call.
    unsafe { tiocswinsz(pty.as_raw_fd(), &ws) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Serves resize lines for the container's terminal on [`protocol::TTY_SOCKET`].
async fn resize_server(listener: tokio::net::UnixListener, pty: OwnedFd) {
    use tokio::io::AsyncBufReadExt;
    let pty = Rc::new(pty);
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            return;
        };
        let pty = pty.clone();
        tokio::task::spawn_local(async move {
            let mut lines = tokio::io::BufReader::new(conn).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(size) = protocol::parse_size(&line) {
                    let _ = set_terminal_size(&*pty, size);
                }
            }
        });
    }
}

/// Joins the user and mount namespaces of the shim that runs the container whose init
/// is `init` (its parent), as the exec helper is single-threaded before `main`, and
/// becomes root there.
fn join_user_namespace(init: u32) -> io::Result<()> {
    let stat = std::fs::read_to_string(format!("/proc/{init}/stat"))?;
    let shim: u32 = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no parent in /proc/{init}/stat")))?;
    let user = File::open(format!("/proc/{shim}/ns/user"))?;
    let mnt = File::open(format!("/proc/{shim}/ns/mnt"))?;
    let join = |ns: &File, kind, what: &str| {
        nix::sched::setns(ns, kind).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("joining the {what}: {e}"),
            )
        })
    };
    join(
        &user,
        nix::sched::CloneFlags::CLONE_NEWUSER,
        "user namespace",
    )?;
    nix::unistd::setresgid(0.into(), 0.into(), 0.into())?;
    nix::unistd::setresuid(0.into(), 0.into(), 0.into())?;
    join(&mnt, nix::sched::CloneFlags::CLONE_NEWNS, "mount namespace")?;
    Ok(())
}
