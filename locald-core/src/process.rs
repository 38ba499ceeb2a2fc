//! A running command, started with [`Runtime::spawn`](crate::Runtime::spawn).

use std::{fmt, pin::Pin};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::{ExitStatus, Output, Result, Signal};

/// A stream a process reads from (its stdin, seen from the caller).
pub type ProcessStdin = Pin<Box<dyn AsyncWrite + Send + Sync>>;
/// A stream a process writes to (its stdout or stderr, seen from the caller).
pub type ProcessOutput = Pin<Box<dyn AsyncRead + Send + Sync>>;

/// What a backend implements to control one running process. Users hold a [`Process`].
#[async_trait]
pub trait ProcessControl: Send + Sync + fmt::Debug {
    /// The process id as seen by the runtime, if it has one.
    fn id(&self) -> Option<u32>;

    /// Waits for the process to end. Must be cancel-safe: dropping the future and
    /// calling again must not lose the status.
    async fn wait(&mut self) -> Result<ExitStatus>;

    /// Sends `signal` to the process and everything it started (its process group).
    /// Sending to a process that already ended is not an error.
    async fn kill(&mut self, signal: Signal) -> Result<()>;

    /// Sets the size of the process's terminal (the program gets `SIGWINCH`). A process
    /// started without a terminal refuses; that is the default.
    async fn resize(&mut self, size: TerminalSize) -> Result<()> {
        let _ = size;
        Err(crate::Error::invalid(
            "terminal",
            "resize",
            "this process has no terminal",
        ))
    }
}

/// The size of a terminal in character cells, as `stty size` prints it (rows first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TerminalSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

impl TerminalSize {
    /// A size of `rows` lines by `cols` columns.
    pub fn new(rows: u16, cols: u16) -> Self {
        TerminalSize { rows, cols }
    }
}

/// A running command. Dropping it kills the command's whole process group with SIGKILL
/// unless it has already been waited for.
///
/// ```no_run
/// # async fn demo(runtime: &dyn locald_core::Runtime) -> locald_core::Result<()> {
/// use locald_core::{Command, Signal, Stdio};
/// use tokio::io::AsyncBufReadExt;
///
/// let mut process = runtime
///     .spawn(Command::new("ping").args(["-c", "3", "127.0.0.1"]).stdout(Stdio::Piped))
///     .await?;
/// let stdout = process.take_stdout().expect("stdout is piped");
/// let mut lines = tokio::io::BufReader::new(stdout).lines();
/// while let Some(line) = lines.next_line().await.map_err(|e| locald_core::Error::io("reading", e))? {
///     println!("{line}");
/// }
/// let status = process.wait().await?;
/// # let _ = (status, Signal::TERM);
/// # Ok(()) }
/// ```
pub struct Process {
    stdin: Option<ProcessStdin>,
    stdout: Option<ProcessOutput>,
    stderr: Option<ProcessOutput>,
    control: Box<dyn ProcessControl>,
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("stdin", &self.stdin.is_some())
            .field("stdout", &self.stdout.is_some())
            .field("stderr", &self.stderr.is_some())
            .field("control", &self.control)
            .finish()
    }
}

impl Process {
    /// Assembles a process from a backend's control and the pipes it opened.
    pub fn new(
        control: Box<dyn ProcessControl>,
        stdin: Option<ProcessStdin>,
        stdout: Option<ProcessOutput>,
        stderr: Option<ProcessOutput>,
    ) -> Self {
        Process {
            stdin,
            stdout,
            stderr,
            control,
        }
    }

    /// The process id as seen by the runtime, if it has one.
    pub fn id(&self) -> Option<u32> {
        self.control.id()
    }

    /// Takes the stdin pipe ([`Stdin::Piped`](crate::Stdin::Piped)). Drop it to send end of file.
    pub fn take_stdin(&mut self) -> Option<ProcessStdin> {
        self.stdin.take()
    }

    /// Takes the stdout pipe ([`Stdio::Piped`](crate::Stdio::Piped) or `Capture`).
    pub fn take_stdout(&mut self) -> Option<ProcessOutput> {
        self.stdout.take()
    }

    /// Takes the stderr pipe ([`Stdio::Piped`](crate::Stdio::Piped) or `Capture`).
    pub fn take_stderr(&mut self) -> Option<ProcessOutput> {
        self.stderr.take()
    }

    /// Waits for the process to end. Cancel-safe: it can sit in a `select!` beside
    /// a signal handler that calls [`Process::kill`].
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        self.stdin = None;
        self.control.wait().await
    }

    /// Sends a signal to the process and its process group.
    pub async fn kill(&mut self, signal: Signal) -> Result<()> {
        self.control.kill(signal).await
    }

    /// Sets the size of the process's terminal ([`Command::tty`](crate::Command::tty),
    /// [`ContainerSpec::tty`](crate::ContainerSpec::tty)); the program gets `SIGWINCH`,
    /// as after a resize of a real terminal. A process without a terminal refuses.
    pub async fn resize(&mut self, size: TerminalSize) -> Result<()> {
        self.control.resize(size).await
    }

    /// Closes stdin, reads the stdout and stderr pipes that were not taken to their
    /// end while waiting, and returns all of it.
    pub async fn output(mut self) -> Result<Output> {
        self.stdin = None;
        let stdout = self.stdout.take();
        let stderr = self.stderr.take();
        let (out, err, status) =
            tokio::join!(read_all(stdout), read_all(stderr), self.control.wait());
        let status = status?;
        Ok(Output::new(status, out?, err?))
    }
}

async fn read_all(stream: Option<ProcessOutput>) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if let Some(mut stream) = stream {
        stream
            .read_to_end(&mut buf)
            .await
            .map_err(|e| crate::Error::io("reading process output", e))?;
    }
    Ok(buf)
}
