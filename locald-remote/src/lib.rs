//! The locald daemon API, and [`RemoteRuntime`]: a [`Runtime`](locald_core::Runtime)
//! that does its work through a locald daemon.
//!
//! macOS and Windows reach the Linux runtime through a daemon running in a Lima VM or
//! a WSL2 distribution; on Linux the same daemon lets containers outlive the program
//! that started them. This crate holds the protocol (routes, bodies, errors, stream
//! framing, see [`protocol`]) and the client. It has no platform-specific code and
//! builds everywhere, so `locald-lima` and `locald-wsl` can use it; the server is in
//! `locald-daemon`.
//!
//! A daemon can be reached three ways ([`Host`]): its Unix socket, a loopback TCP port
//! with a token (for forwarded transports), or the stdin and stdout of a command such
//! as `limactl shell locald-vm locald daemon --stdio` or
//! `wsl.exe --exec locald daemon --stdio`.
//!
//! ```no_run
//! use locald_core::{Command, Runtime};
//! use locald_remote::{Host, RemoteRuntime};
//!
//! # async fn demo() -> locald_core::Result<()> {
//! let host: Host = "unix:///run/user/1000/locald/locald.sock".parse()?;
//! let runtime = RemoteRuntime::connect(host).await?;
//! let output = runtime.run_command(Command::new("uname").arg("-a")).await?;
//! println!("{}", String::from_utf8_lossy(&output.stdout));
//! # Ok(()) }
//! ```
//!
//! A `RemoteRuntime` behaves as the runtime behind the daemon does: [`info`](
//! locald_core::Runtime::info) is that runtime's, every error comes back as the same
//! [`Error`](locald_core::Error) variant with the same message, and a spawned
//! [`Process`](locald_core::Process) streams stdin, stdout and stderr, forwards
//! signals, reports timeouts, and kills the remote command when it is dropped.

mod client;
mod host;
pub mod protocol;
mod stream;

pub use client::RemoteRuntime;
pub use host::Host;
pub use protocol::DaemonInfo;
