//! The locald daemon API, and [`RemoteRuntime`]: a [`Runtime`](crate::Runtime)
//! that does its work through a locald daemon.
//!
//! macOS and Windows reach the Linux runtime through a daemon running in a Lima VM or
//! a WSL2 distribution; on Linux the same daemon lets containers outlive the program
//! that started them. This module (the `remote` feature) holds the protocol (routes,
//! bodies, errors, stream framing, see [`protocol`]) and the client. It has no
//! platform-specific code and builds everywhere, so `locald-lima` and `locald-wsl` use
//! it; the server is `locald daemon` (the `locald-cli` crate's `daemon` module).
//!
//! A daemon can be reached three ways ([`Host`]): its Unix socket, a loopback TCP port
//! with a token (for forwarded transports), or the stdin and stdout of a command such
//! as `limactl shell locald-vm locald daemon --stdio` or
//! `wsl.exe --exec locald daemon --stdio`.
//!
//! A remote backend plugs in through two seams only: a [`Dial`] that opens connections
//! to its daemon however it is reached, and a [`PathMap`] that names this machine's
//! paths as the daemon sees them (shared folders of a VM, `/mnt/c` in WSL2):
//!
//! ```no_run
//! use locald_core::remote::{Host, PrefixMap, RemoteRuntime};
//!
//! # async fn demo() -> locald_core::Result<()> {
//! let runtime = RemoteRuntime::builder(Host::command("limactl", ["shell", "locald-vm", "locald", "daemon", "--stdio"]))
//!     .path_map(PrefixMap::new().share("/Users/ada", "/Users/ada"))
//!     .connect()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! ```no_run
//! use locald_core::{Command, Runtime};
//! use locald_core::remote::{Host, RemoteRuntime};
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
//! crate::Runtime::info) is that runtime's, every error comes back as the same
//! [`Error`](crate::Error) variant with the same message, and a spawned
//! [`Process`](crate::Process) streams stdin, stdout and stderr, forwards
//! signals, reports timeouts, and kills the remote command when it is dropped.

mod client;
mod host;
pub mod protocol;
mod seams;
mod stream;

pub use client::{JsonLines, RemoteRuntime, RemoteRuntimeBuilder};
pub use host::{command_connection, Host};
pub use protocol::DaemonInfo;
pub use seams::{Connection, Dial, PathMap, PrefixMap, SamePaths};
