//! Listeners, connections, peer checks and the shutdown policy.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use locald::remote::DaemonInfo;
use locald::Runtime;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::watch,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::daemon::{
    api, dashboard::Dashboard, projects::Projects, state::Recovery, Error, Result, StateDir,
};

/// How long a connection may take to send a request's headers, and how long an idle
/// keep-alive connection stays open.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) state: Option<StateDir>,
    pub(crate) info: DaemonInfo,
    /// Turns true when the daemon stops: process streams send SIGTERM.
    pub(crate) terminate: watch::Sender<bool>,
    pub(crate) sessions: Arc<Tasks>,
    /// The Docker API's containers and execs (created, not yet started; docker ids).
    pub(crate) docker: crate::daemon::docker::Containers,
    /// The `locald.toml` projects it supervises.
    pub(crate) projects: Arc<Projects>,
    /// The dashboard, once [`Server::serve_dashboard`] set it up.
    pub(crate) dashboard: std::sync::OnceLock<Arc<Dashboard>>,
}

/// Tasks being served (connections, process streams), so that a stopping daemon can
/// wait for them and end the ones that outlive the grace period.
#[derive(Debug)]
pub(crate) struct Tasks {
    /// Always closed: `wait` resolves whenever no task is left, and spawning goes on.
    tracker: TaskTracker,
    /// Cancelling it drops every task's future where it waits, as an abort would.
    abort: CancellationToken,
}

impl Default for Tasks {
    fn default() -> Self {
        let tracker = TaskTracker::new();
        tracker.close();
        Tasks {
            tracker,
            abort: CancellationToken::new(),
        }
    }
}

impl Tasks {
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let abort = self.abort.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = abort.cancelled() => {}
                () = task => {}
            }
        });
    }

    fn count(&self) -> usize {
        self.tracker.len()
    }

    async fn wait_idle(&self) {
        self.tracker.wait().await;
    }

    /// Aborts every task and waits (briefly) until each has dropped what it held.
    async fn abort_all(&self) {
        self.abort.cancel();
        if tokio::time::timeout(Duration::from_secs(5), self.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.count(),
                "tasks did not end after being aborted"
            );
        }
    }
}

/// A bearer token that TCP clients must send.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The shortest token accepted.
    pub const MIN_LEN: usize = 16;

    /// Reads the token in `path`, or, when the file does not exist, makes a random
    /// one and writes it there (mode 0600, through a temporary file and a rename).
    pub fn load_or_create(path: &Path) -> Result<Token> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let token = text.trim();
                if token.len() < Self::MIN_LEN {
                    return Err(Error::BadToken {
                        path: path.to_owned(),
                        reason: "it is shorter than 16 characters",
                    });
                }
                if !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(Error::BadToken {
                        path: path.to_owned(),
                        reason: "it may only hold printable ASCII characters",
                    });
                }
                Ok(Token(token.into()))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let token = random_token()
                    .map_err(|e| Error::io("cannot read random bytes for a token", e))?;
                crate::daemon::state::write_atomic(path, token.as_bytes())
                    .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
                Ok(Token(token.into()))
            }
            Err(e) => Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn random_token() -> io::Result<String> {
    locald::native::util::random_id().map_err(|e| e.into_io_error())
}

/// A socket the daemon accepts connections on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A Unix socket: only the daemon's own user may use it.
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
    /// A loopback TCP socket: every request must carry the token.
    Tcp(tokio::net::TcpListener, Token),
    /// The dashboard's loopback TCP socket (made by [`Server::serve_dashboard`]).
    Dashboard(tokio::net::TcpListener),
}

/// Binds the daemon's Unix socket at `path`: its directory is created with mode
/// 0700, the socket gets mode 0600, and a socket left by a daemon that died is
/// replaced. Fails with [`Error::AlreadyRunning`] when a daemon answers there.
#[cfg(unix)]
pub fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(dir)
                .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        }
    }
    if path.exists() {
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::AlreadyRunning {
                    path: path.to_owned(),
                })
            }
            Err(_) => {
                // Nobody answers: a daemon died and left its socket.
                std::fs::remove_file(path).map_err(|e| {
                    Error::io(
                        format!("cannot remove the stale socket {}", path.display()),
                        e,
                    )
                })?;
            }
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| Error::io(format!("cannot listen on {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(format!("cannot set the mode of {}", path.display()), e))?;
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
        .map_err(|e| Error::io(format!("cannot listen on {}", path.display()), e))
}

/// Binds a loopback TCP address; any other address is refused.
pub fn bind_tcp(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() {
        return Err(Error::NotLoopback { addr });
    }
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
    tokio::net::TcpListener::from_std(listener)
        .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))
}

/// Where the daemon's socket lives by default: `$XDG_RUNTIME_DIR/locald/locald.sock`,
/// else `$LOCALD_HOME/run/locald.sock`.
pub fn default_socket(paths: &locald::Paths) -> PathBuf {
    paths.runtime_dir().join("locald.sock")
}

/// Where the daemon keeps its state by default: `$LOCALD_HOME/daemon`.
pub fn default_state_dir(paths: &locald::Paths) -> PathBuf {
    paths.data_home().join("daemon")
}

/// Serves a [`Runtime`] over the daemon API.
///
/// Stopping (when the `shutdown` future given to [`serve`](Server::serve) resolves):
/// the daemon stops accepting connections; requests in flight get `grace` to finish;
/// commands clients spawned get SIGTERM, then SIGKILL when they outlive `grace`.
/// Containers keep running: their state is on disk and the next daemon finds them.
#[derive(Debug, Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl Server {
    /// A server for `runtime`, keeping no state on disk (tests, `--stdio`).
    pub fn new(runtime: Arc<dyn Runtime>) -> Server {
        Self::build(runtime, None)
    }

    /// A server for `runtime` that records what it starts in `state`, so that
    /// [`recover`](Server::recover) can clean up after a crash.
    pub fn with_state(runtime: Arc<dyn Runtime>, state: StateDir) -> Server {
        Self::build(runtime, Some(state))
    }

    fn build(runtime: Arc<dyn Runtime>, state: Option<StateDir>) -> Server {
        let info = DaemonInfo::new(
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            runtime.info(),
        );
        let docker = crate::daemon::docker::Containers::open(
            state.as_ref().map(|s| s.root().join("docker")),
        );
        let projects = Projects::new(
            runtime.clone(),
            locald::Paths::from_process_env()
                .data_home()
                .join("projects"),
        );
        Server {
            shared: Arc::new(Shared {
                runtime,
                state,
                info,
                terminate: watch::channel(false).0,
                sessions: Arc::default(),
                docker,
                projects,
                dashboard: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Where the dashboard is served, once [`Server::serve_dashboard`] set it up.
    pub fn dashboard_addr(&self) -> Option<SocketAddr> {
        self.shared.dashboard.get().map(|d| d.addr())
    }

    /// Makes the dashboard's links point at `base` (the HTTPS proxy in front of it).
    pub fn set_dashboard_base(&self, base: impl Into<String>) {
        if let Some(d) = self.shared.dashboard.get() {
            d.set_public_base(base);
        }
    }

    /// The `locald.toml` projects this daemon supervises.
    pub fn projects(&self) -> &Arc<Projects> {
        &self.shared.projects
    }

    /// Serves the dashboard (see [`dashboard`](crate::daemon::dashboard)) on
    /// `listener`, a loopback TCP socket, when [`Server::serve`] runs; its one-time
    /// links come from `POST /locald/v1/dashboard/login`.
    pub fn serve_dashboard(&self, listener: tokio::net::TcpListener) -> Result<Listener> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("cannot read the dashboard's address", e))?;
        let dashboard = Dashboard::new(
            addr,
            self.shared.runtime.clone(),
            self.shared.projects.clone(),
            self.shared.info.clone(),
        );
        let _ = self.shared.dashboard.set(dashboard);
        Ok(Listener::Dashboard(listener))
    }

    /// What the daemon says about itself.
    pub fn info(&self) -> &DaemonInfo {
        &self.shared.info
    }

    /// Cleans up after a previous daemon on the same state that died (see
    /// [`StateDir::recover`]), and watches the running auto-remove containers it
    /// left, to remove each once it exits. Does nothing without a state directory.
    pub async fn recover(&self) -> Recovery {
        let Some(state) = &self.shared.state else {
            return Recovery::default();
        };
        let recovery = state.recover(&self.shared.runtime).await;
        let projects = self.shared.projects.recover().await;
        if !projects.is_empty() {
            tracing::info!(?projects, "projects brought up again");
        }
        for id in &recovery.watch_containers {
            let shared = self.shared.clone();
            let id = id.clone();
            tokio::spawn(async move {
                if shared.runtime.wait_container(&id).await.is_ok() {
                    match shared.runtime.remove_container(&id, false).await {
                        Ok(()) => {
                            if let Some(state) = &shared.state {
                                state.forget_container(&id);
                            }
                        }
                        Err(err) => {
                            tracing::warn!(%id, %err, "cannot remove an auto-remove container")
                        }
                    }
                }
            });
        }
        recovery
    }

    fn http(&self) -> http1::Builder {
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        builder
    }

    /// Serves `listeners` until `shutdown` resolves, then stops as described on
    /// [`Server`].
    pub async fn serve(
        &self,
        listeners: Vec<Listener>,
        shutdown: impl Future<Output = ()> + Send,
        grace: Duration,
    ) -> Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let connections = Arc::new(Tasks::default());
        let mut loops = Vec::new();
        for listener in listeners {
            loops.push(tokio::spawn(accept_loop(
                self.clone(),
                listener,
                stop_rx.clone(),
                connections.clone(),
            )));
        }
        shutdown.await;
        tracing::info!("stopping: no new connections");
        let _ = stop_tx.send(true);
        for task in loops {
            let _ = task.await;
        }
        self.stop(grace, &connections).await;
        Ok(())
    }

    /// Serves one connection (`locald daemon --stdio`) until the client closes it and
    /// every process it started ended, or until `shutdown` resolves.
    pub async fn serve_connection<IO>(
        &self,
        io: IO,
        shutdown: impl Future<Output = ()> + Send,
        grace: Duration,
    ) -> Result<()>
    where
        IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (stop_tx, stop_rx) = watch::channel(false);
        let connections = Arc::new(Tasks::default());
        connections.spawn(serve_one(
            self.clone(),
            Box::new(io),
            api::router(self.shared.clone()),
            stop_rx,
        ));
        tokio::pin!(shutdown);
        let stopping = tokio::select! {
            () = async {
                connections.wait_idle().await;
                self.shared.sessions.wait_idle().await;
            } => false,
            () = &mut shutdown => true,
        };
        if stopping {
            let _ = stop_tx.send(true);
            self.stop(grace, &connections).await;
        }
        Ok(())
    }

    async fn stop(&self, grace: Duration, connections: &Tasks) {
        let _ = self.shared.terminate.send(true);
        self.shared.projects.shutdown().await;
        let sessions = &self.shared.sessions;
        let drained = tokio::time::timeout(grace, async {
            tokio::join!(connections.wait_idle(), sessions.wait_idle());
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = connections.count(),
                sessions = sessions.count(),
                "grace period over: ending what still runs"
            );
        }
        // Dropping a session's process kills its process group.
        connections.abort_all().await;
        sessions.abort_all().await;
    }
}

/// Accepts connections until `stop`.
async fn accept_loop(
    server: Server,
    listener: Listener,
    mut stop: watch::Receiver<bool>,
    connections: Arc<Tasks>,
) {
    let open = api::router(server.shared.clone());
    let router = match &listener {
        #[cfg(unix)]
        Listener::Unix(_) => open,
        Listener::Tcp(_, token) => open.layer(axum::middleware::from_fn_with_state(
            Arc::<str>::from(token.as_str()),
            api::require_token,
        )),
        Listener::Dashboard(_) => match server.shared.dashboard.get() {
            Some(dashboard) => crate::daemon::dashboard::router(dashboard.clone()),
            None => api::forbidden("the dashboard is not set up".into()),
        },
    };
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let (io, refusal) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors and the like: wait a little and go on.
                tracing::warn!(%err, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let router: Router = match refusal {
            None => router.clone(),
            Some(reason) => {
                tracing::warn!("{reason}");
                api::forbidden(reason)
            }
        };
        connections.spawn(serve_one(server.clone(), io, router, stop.clone()));
    }
}

/// Serves one connection; when `stop` turns true, it finishes the request in flight
/// and closes.
async fn serve_one(
    server: Server,
    io: Box<dyn Io>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let conn = server
        .http()
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(router))
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = result {
        tracing::debug!(%err, "connection ended");
    }
}

/// A connection, and the reason to refuse it if its peer may not use the daemon.
type Accepted = (Box<dyn Io>, Option<String>);

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        #[cfg(unix)]
        Listener::Unix(l) => {
            let (stream, _) = l.accept().await?;
            let owner = nix::unistd::geteuid().as_raw();
            let refusal = match stream.peer_cred() {
                Ok(cred) if cred.uid() == owner => None,
                Ok(cred) => Some(format!(
                    "connection refused: uid {} is not the daemon's owner (uid {owner})",
                    cred.uid()
                )),
                Err(err) => Some(format!(
                    "connection refused: cannot read the peer's credentials: {err}"
                )),
            };
            Ok((Box::new(stream), refusal))
        }
        Listener::Tcp(l, _) | Listener::Dashboard(l) => {
            let (stream, peer) = l.accept().await?;
            let _ = stream.set_nodelay(true);
            let refusal = (!peer.ip().is_loopback())
                .then(|| format!("connection refused: {peer} is not a loopback address"));
            Ok((Box::new(stream), refusal))
        }
    }
}
