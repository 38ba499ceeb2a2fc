//! Where a daemon is and how to open a connection to it.

use std::{
    fmt,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    str::FromStr,
    task::{Context, Poll},
};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{Connection, Dial};
use crate::{Error, Result};

/// The address of a locald daemon.
///
/// Written as `unix:///path/to/locald.sock` or `tcp://127.0.0.1:PORT` (the `LOCALD_HOST`
/// syntax); a TCP daemon also needs its token ([`Host::with_token`]). A command whose
/// stdin and stdout are the connection is made with [`Host::command`].
///
/// ```
/// use locald_core::remote::Host;
///
/// let host: Host = "unix:///run/locald/locald.sock".parse()?;
/// assert_eq!(host.to_string(), "unix:///run/locald/locald.sock");
/// let host: Host = "tcp://127.0.0.1:7077".parse()?;
/// assert!(matches!(host, Host::Tcp { token: None, .. }));
/// assert!("tcp://10.0.0.1:7077".parse::<Host>().is_err(), "loopback only");
/// assert!("http://x".parse::<Host>().is_err());
/// # Ok::<(), locald_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Host {
    /// A Unix socket.
    Unix(PathBuf),
    /// A loopback TCP address and the token the daemon requires.
    Tcp {
        /// The address (a loopback one).
        addr: SocketAddr,
        /// The bearer token.
        token: Option<String>,
    },
    /// A command whose stdin and stdout carry one connection each time it runs
    /// (`locald daemon --stdio`, possibly through `limactl shell` or `wsl.exe --exec`).
    Command {
        /// The program.
        program: String,
        /// Its arguments.
        args: Vec<String>,
    },
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The token stays out of logs and error messages.
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Unix(path) => write!(f, "unix://{}", path.display()),
            Host::Tcp { addr, .. } => write!(f, "tcp://{addr}"),
            Host::Command { program, args } => {
                write!(f, "{program}")?;
                for arg in args {
                    write!(f, " {arg}")?;
                }
                Ok(())
            }
        }
    }
}

impl FromStr for Host {
    type Err = Error;

    fn from_str(input: &str) -> Result<Host> {
        let reject = |reason: &str| Error::invalid("daemon address", input, reason);
        if let Some(path) = input.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(reject("the socket path must be absolute: unix:///path"));
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = input.strip_prefix("tcp://") {
            let addr: SocketAddr = addr
                .trim_end_matches('/')
                .parse()
                .map_err(|_| reject("expected tcp://IP:PORT"))?;
            if !addr.ip().is_loopback() {
                return Err(reject(
                    "the daemon only listens on loopback; forward the port to 127.0.0.1",
                ));
            }
            return Ok(Host::Tcp { addr, token: None });
        }
        Err(reject("expected unix:///path or tcp://127.0.0.1:PORT"))
    }
}

impl Host {
    /// A daemon reached through the stdin and stdout of `program args...`.
    pub fn command<I, S>(program: impl Into<String>, args: I) -> Host
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Host::Command {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// Sets the token of a TCP address (other addresses need none and ignore it).
    pub fn with_token(self, token: impl Into<String>) -> Host {
        match self {
            Host::Tcp { addr, .. } => Host::Tcp {
                addr,
                token: Some(token.into()),
            },
            other => other,
        }
    }
}

#[async_trait]
impl Dial for Host {
    fn token(&self) -> Option<&str> {
        match self {
            Host::Tcp { token, .. } => token.as_deref(),
            _ => None,
        }
    }

    async fn dial(&self) -> Result<Box<dyn Connection>> {
        let fail = |e| Error::io(format!("cannot connect to the locald daemon at {self}"), e);
        match self {
            #[cfg(unix)]
            Host::Unix(path) => Ok(Box::new(
                tokio::net::UnixStream::connect(path).await.map_err(fail)?,
            )),
            #[cfg(not(unix))]
            Host::Unix(_) => Err(fail(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "unix sockets are not supported on this platform",
            ))),
            Host::Tcp { addr, .. } => {
                let stream = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
            Host::Command { program, args } => {
                let mut command = tokio::process::Command::new(program);
                command.args(args);
                command_connection(command).map_err(fail)
            }
        }
    }
}

/// Runs `command` with its stdin and stdout as one connection (a bridge such as
/// `wsl.exe --exec locald daemon --stdio`): the connection reads the command's stdout
/// and writes its stdin; shutting it down closes the stdin (end of file, as a
/// socket's half-close); dropping it kills the command. What the command prints on
/// stderr goes to the log, never into the caller's output.
pub fn command_connection(
    mut command: tokio::process::Command,
) -> std::io::Result<Box<dyn Connection>> {
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::warn!(target: "locald_core::remote::bridge", "{line}");
            }
        });
    }
    Ok(Box::new(ChildConnection {
        _child: child,
        stdin: Some(stdin),
        stdout,
    }))
}

/// A bridge command's stdout (read) and stdin (write). Shutting it down closes the
/// command's stdin (end of file, as a socket's half-close); dropping it kills the
/// command.
struct ChildConnection {
    _child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    stdout: tokio::process::ChildStdout,
}

fn closed() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::BrokenPipe)
}

impl AsyncRead for ChildConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for ChildConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.stdin {
            Some(stdin) => Pin::new(stdin).poll_write(cx, buf),
            None => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.stdin {
            Some(stdin) => Pin::new(stdin).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(stdin) = &mut self.stdin {
            std::task::ready!(Pin::new(stdin).poll_flush(cx))?;
        }
        self.stdin = None;
        Poll::Ready(Ok(()))
    }
}
