//! The locald daemon: serves any [`Runtime`](locald::Runtime) over the daemon
//! API (see `locald::remote::protocol`) so that clients elsewhere (a macOS host, a
//! Windows host, another program on the same machine) use it through
//! `locald::remote::RemoteRuntime` exactly as they would in process.
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use locald_cli::daemon::{bind_unix, Listener, Server, StateDir};
//!
//! # async fn demo(runtime: Arc<dyn locald::Runtime>) -> locald_cli::daemon::Result<()> {
//! let state = StateDir::open("/home/ada/.local/share/locald/daemon")?;
//! let server = Server::with_state(runtime, state);
//! server.recover().await;
//! let socket = bind_unix("/run/user/1000/locald/locald.sock".as_ref())?;
//! let stop = async { let _ = tokio::signal::ctrl_c().await; };
//! server.serve(vec![Listener::Unix(socket)], stop, Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
//!
//! # Security
//!
//! - The Unix socket has mode 0600 in a 0700 directory, and every connection's peer
//!   credentials (`SO_PEERCRED`) must name the daemon's own user; any other peer gets
//!   `403` on every request.
//! - TCP listens on loopback addresses only, and every request must carry the token
//!   (`Authorization: Bearer ...`), compared in constant time; else `401`.
//! - Request bodies over 16 MiB get `413`, malformed JSON `400`, a wrong content type
//!   `415`, unknown routes `404`, wrong methods `405`, each with a reason; stream
//!   frames over 1 MiB end that stream. Slow clients get 30 s to send their headers.
//!
//! # State
//!
//! See [`StateDir`]: the daemon records the commands clients spawn and the
//! auto-remove containers it starts, and [`Server::recover`] cleans up after a crash.

mod api;
pub mod dashboard;
mod docker;
mod error;
mod project_routes;
pub mod projects;
#[cfg(target_os = "linux")]
pub mod proxy;
mod server;
mod session;
mod state;

pub use error::{Error, Result};
#[cfg(unix)]
pub use server::bind_unix;
pub use server::{bind_tcp, default_socket, default_state_dir, Listener, Server, Token};
pub use state::{Recovery, StateDir};
