//! Host processes on Unix: each command in its own process group, so a timeout, a
//! kill or dropping the handle reaches everything it started.

use std::{
    io,
    process::Stdio as StdStdio,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use locald_core::{
    Command, Error, ExitStatus, Output, Process, ProcessControl, Result, Signal, Stdin, Stdio,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::Child,
};

use crate::sys;

/// How long, after a timeout killed the process group, to keep draining output pipes
/// that something outside the group still holds open.
const DRAIN_AFTER_KILL: Duration = Duration::from_secs(1);

fn to_std_stdio(stdio: Stdio) -> StdStdio {
    match stdio {
        Stdio::Inherit => StdStdio::inherit(),
        Stdio::Null => StdStdio::null(),
        _ => StdStdio::piped(),
    }
}

/// Starts `command` as the leader of a new process group.
pub(crate) fn spawn_child(command: &Command) -> Result<Child> {
    command.validate()?;
    if command.get_tty() {
        return Err(Error::invalid(
            "command",
            command.get_program(),
            "a terminal is made for commands run in containers (exec) only",
        ));
    }
    if let Some(dir) = command.get_current_dir() {
        // Checked first: a missing working directory makes spawn fail with ENOENT,
        // which would otherwise be reported as a missing program.
        if !dir.is_dir() {
            return Err(Error::WorkingDirNotFound {
                path: dir.to_owned(),
            });
        }
    }
    let mut cmd = tokio::process::Command::new(command.get_program());
    cmd.args(command.get_args());
    let env = command.get_env();
    if !env.inherit {
        cmd.env_clear();
    }
    for (key, value) in &env.vars {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        cmd.current_dir(dir);
    }
    cmd.stdin(match command.get_stdin() {
        Stdin::Inherit => StdStdio::inherit(),
        Stdin::Bytes(_) | Stdin::Piped => StdStdio::piped(),
        _ => StdStdio::null(),
    });
    cmd.stdout(to_std_stdio(command.get_stdout()));
    cmd.stderr(to_std_stdio(command.get_stderr()));
    cmd.process_group(0);
    // tokio reaps a dropped child in the background; LocalProcess kills its group first.
    cmd.kill_on_drop(true);
    let program = command.get_program().to_owned();
    let mut child = cmd.spawn().map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::ProgramNotFound { program },
        io::ErrorKind::PermissionDenied => Error::PermissionDenied { program },
        _ => Error::Spawn { program, source },
    })?;
    if let Stdin::Bytes(bytes) = command.get_stdin() {
        if let Some(mut stdin) = child.stdin.take() {
            let bytes = bytes.clone();
            tokio::spawn(async move {
                // A command that exits without reading all of its input closes the
                // pipe: that is its business, not an error.
                let _ = stdin.write_all(&bytes).await;
            });
        }
    }
    Ok(child)
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Exited(code),
        (None, Some(sig)) => ExitStatus::Signaled(sys::signal_from_os(sig)),
        (None, None) => ExitStatus::Exited(-1),
    }
}

async fn read_to_end(stream: Option<impl AsyncRead + Unpin>) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut stream) = stream {
        stream.read_to_end(&mut buf).await?;
    }
    Ok(buf)
}

/// Runs a command to completion, enforcing its timeout over the whole run: a command
/// whose leader exits while something it started keeps the output pipes open is still
/// bounded by the timeout.
pub(crate) async fn run(command: Command) -> Result<Output> {
    let mut child = spawn_child(&command)?;
    let pgid = child.id().expect("a child that was just spawned has a pid");
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut out_task = tokio::spawn(read_to_end(stdout));
    let mut err_task = tokio::spawn(read_to_end(stderr));
    let run = async {
        let status = child.wait().await;
        let out = (&mut out_task).await;
        let err = (&mut err_task).await;
        (status, out, err)
    };
    let (status, out, err) = match command.get_timeout() {
        None => run.await,
        Some(timeout) => match tokio::time::timeout(timeout, run).await {
            Ok(done) => done,
            Err(_) => {
                sys::kill_group(pgid, Signal::KILL);
                let _ = child.wait().await;
                out_task.abort();
                err_task.abort();
                let _ = tokio::time::timeout(DRAIN_AFTER_KILL, async {
                    let _ = (&mut out_task).await;
                    let _ = (&mut err_task).await;
                })
                .await;
                return Err(Error::Timeout {
                    program: command.get_program().to_owned(),
                    timeout,
                });
            }
        },
    };
    let status = status.map_err(|e| Error::io("waiting for the command", e))?;
    let joined = |r: std::result::Result<io::Result<Vec<u8>>, tokio::task::JoinError>| {
        r.map_err(|e| Error::io("reading command output", io::Error::other(e)))?
            .map_err(|e| Error::io("reading command output", e))
    };
    Ok(Output::new(exit_status(status), joined(out)?, joined(err)?))
}

/// Takes a child's stdout and stderr pipes as a [`Process`] hands them out.
pub(crate) fn output_pipes(
    child: &mut Child,
) -> (
    Option<locald_core::ProcessOutput>,
    Option<locald_core::ProcessOutput>,
) {
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::pin(s) as locald_core::ProcessOutput);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::pin(s) as locald_core::ProcessOutput);
    (stdout, stderr)
}

/// A started host process with its own process group.
pub(crate) fn spawn(command: Command) -> Result<Process> {
    let mut child = spawn_child(&command)?;
    let pid = child.id().expect("a child that was just spawned has a pid");
    let stdin = child
        .stdin
        .take()
        .map(|s| Box::pin(s) as locald_core::ProcessStdin);
    let (stdout, stderr) = output_pipes(&mut child);
    let control = LocalProcess {
        child,
        pid,
        program: command.get_program().to_owned(),
        deadline: command.get_timeout().map(|t| (Instant::now() + t, t)),
        status: None,
        timed_out: false,
    };
    Ok(Process::new(Box::new(control), stdin, stdout, stderr))
}

#[derive(Debug)]
struct LocalProcess {
    child: Child,
    pid: u32,
    program: String,
    deadline: Option<(Instant, Duration)>,
    status: Option<ExitStatus>,
    timed_out: bool,
}

impl LocalProcess {
    fn timeout_error(&self) -> Error {
        Error::Timeout {
            program: self.program.clone(),
            timeout: self.deadline.map(|(_, t)| t).unwrap_or_default(),
        }
    }

    fn record(&mut self, status: io::Result<std::process::ExitStatus>) -> Result<ExitStatus> {
        let status = exit_status(status.map_err(|e| Error::io("waiting for the process", e))?);
        self.status = Some(status);
        Ok(status)
    }

    /// True once the leader has been reaped: its pid may then belong to someone else.
    fn reaped(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.status = Some(exit_status(status));
                true
            }
            _ => false,
        }
    }
}

#[async_trait]
impl ProcessControl for LocalProcess {
    fn id(&self) -> Option<u32> {
        Some(self.pid)
    }

    async fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return if self.timed_out {
                Err(self.timeout_error())
            } else {
                Ok(status)
            };
        }
        match self.deadline {
            None => {
                let status = self.child.wait().await;
                self.record(status)
            }
            Some((deadline, _)) => {
                tokio::select! {
                    status = self.child.wait() => self.record(status),
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        sys::kill_group(self.pid, Signal::KILL);
                        let status = self.child.wait().await;
                        self.record(status)?;
                        self.timed_out = true;
                        Err(self.timeout_error())
                    }
                }
            }
        }
    }

    async fn kill(&mut self, signal: Signal) -> Result<()> {
        if self.reaped() {
            return Ok(());
        }
        sys::send_group_signal(self.pid, signal)
            .map_err(|e| Error::io(format!("sending {signal} to process group {}", self.pid), e))
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        if !self.reaped() {
            sys::kill_group(self.pid, Signal::KILL);
        }
    }
}
