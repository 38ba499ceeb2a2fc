//! `locald daemon`: serve the runtime to clients elsewhere; `locald daemon status`.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use crate::daemon::{Listener, Server, StateDir, Token};
use anyhow::Context;
use locald::remote::{Host, RemoteRuntime};
use locald::{Paths, Runtime};

use crate::cmd::exec::parse_duration;

/// Arguments of `locald daemon`.
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Clients reach the daemon with --host or LOCALD_HOST (unix:///path or \
tcp://127.0.0.1:PORT; a TCP client also needs LOCALD_TOKEN or LOCALD_TOKEN_FILE).

Only the daemon's own user may use its socket (mode 0600, peer credentials checked). \
On SIGTERM or SIGINT it stops accepting, gives requests in flight and commands clients \
spawned --grace to end (commands get SIGTERM), then kills what is left; containers keep \
running and the next daemon finds them. After a crash, the next daemon kills the \
commands the dead one had spawned.

Examples:
  locald daemon
  locald daemon --tcp 127.0.0.1:7077 --token-file ~/.locald-token
  locald daemon --docker-socket $XDG_RUNTIME_DIR/locald/docker.sock
  locald daemon status
  limactl shell locald-vm locald daemon --stdio"
)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Option<Action>,

    /// The Unix socket to listen on [default: $XDG_RUNTIME_DIR/locald/locald.sock, else
    /// $LOCALD_HOME/run/locald.sock].
    #[arg(long, value_name = "PATH", conflicts_with = "stdio")]
    socket: Option<PathBuf>,

    /// Also listen on this Unix socket, for docker clients
    /// (`DOCKER_HOST=unix://PATH`; e.g. $XDG_RUNTIME_DIR/locald/docker.sock). Every
    /// socket serves the same API, the Docker Engine API subset included, with the
    /// same owner-only access.
    #[arg(long, value_name = "PATH", conflicts_with = "stdio")]
    docker_socket: Option<PathBuf>,

    /// Also listen on this loopback TCP address (for forwarded transports).
    #[arg(long, value_name = "127.0.0.1:PORT", conflicts_with = "stdio")]
    tcp: Option<std::net::SocketAddr>,

    /// The token TCP clients must send; made (random, mode 0600) when the file does
    /// not exist [default: $LOCALD_HOME/daemon/token].
    #[arg(long, value_name = "FILE", requires = "tcp")]
    token_file: Option<PathBuf>,

    /// Serve one client over stdin and stdout instead of a socket (for bridges such as
    /// `limactl shell` and `wsl.exe --exec`).
    #[arg(long)]
    stdio: bool,

    /// Serve the dashboard on this loopback address (`none`: no dashboard)
    /// [default: $LOCALD_DASHBOARD, else 127.0.0.1:7179]; when the port is taken the
    /// daemon runs without it and says so.
    #[arg(long, value_name = "127.0.0.1:PORT", conflicts_with = "stdio")]
    dashboard: Option<String>,

    /// Serve HTTPS for `<service>.<project>.localhost` on this loopback address, and
    /// with 127.0.0.1:443 plain HTTP on port 80 redirecting to it (`none`: no proxy)
    /// [default: $LOCALD_PROXY, else 127.0.0.1:443 once `locald setup` installed the
    /// helper that binds it, else none].
    #[arg(long, value_name = "127.0.0.1:PORT", conflicts_with = "stdio")]
    proxy: Option<String>,

    /// How long requests in flight and spawned commands get to end when stopping.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    grace: Duration,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Tell whether a daemon runs (exit 0) or not (exit 1).
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// The daemon a client means: `--host`/`LOCALD_HOST`, with the token from
/// `LOCALD_TOKEN` or `LOCALD_TOKEN_FILE` for TCP.
pub(crate) fn parse_host(host: &str) -> anyhow::Result<Host> {
    let mut parsed: Host = host.parse()?;
    if matches!(parsed, Host::Tcp { .. }) {
        if let Ok(token) = std::env::var("LOCALD_TOKEN") {
            parsed = parsed.with_token(token.trim());
        } else if let Some(file) = std::env::var_os("LOCALD_TOKEN_FILE") {
            let token = std::fs::read_to_string(&file).with_context(|| {
                format!("cannot read the token file {}", Path::new(&file).display())
            })?;
            parsed = parsed.with_token(token.trim());
        }
    }
    Ok(parsed)
}

/// Connects to the daemon at `host`.
pub(crate) async fn connect(host: &str) -> anyhow::Result<Arc<dyn Runtime>> {
    Ok(Arc::new(RemoteRuntime::connect(parse_host(host)?).await?))
}

pub(crate) async fn run(args: Args, host: Option<&str>) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(Action::Status(status)) => return self::status(status, host).await,
        None => {}
    }
    let runtime = locald::runtime()?;
    let stop = stop_signal()?;
    if args.stdio {
        // One client, no socket, no state: the bridge's life is the connection's.
        let server = Server::new(runtime);
        let io = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
        server.serve_connection(io, stop, args.grace).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let paths = Paths::from_process_env();
    let state_dir = crate::daemon::default_state_dir(&paths);
    let state = StateDir::open(&state_dir)?;
    let server = Server::with_state(runtime, state);
    let recovery = server.recover().await;
    if !recovery.killed_processes.is_empty() || !recovery.removed_containers.is_empty() {
        tracing::warn!(
            killed_processes = ?recovery.killed_processes,
            removed_containers = ?recovery.removed_containers,
            "cleaned up after a daemon that did not stop"
        );
    }
    tracing::info!(
        running = recovery.running_containers.len(),
        exited = recovery.exited_containers.len(),
        "containers found"
    );
    let mut listeners = Vec::new();
    if let Some(addr) = args.tcp {
        let token_file = args.token_file.unwrap_or_else(|| state_dir.join("token"));
        let token = Token::load_or_create(&token_file)?;
        listeners.push(Listener::Tcp(crate::daemon::bind_tcp(addr)?, token));
        tracing::info!(%addr, token_file = %token_file.display(), "listening on TCP");
    }
    #[cfg(unix)]
    if let Some(path) = &args.docker_socket {
        listeners.push(Listener::Unix(crate::daemon::bind_unix(path)?));
        tracing::info!(socket = %path.display(), "listening for docker clients");
    }
    #[cfg(not(unix))]
    anyhow::ensure!(
        args.docker_socket.is_none(),
        "Unix sockets are not available here: --docker-socket cannot be served"
    );
    let dashboard = args
        .dashboard
        .or_else(|| std::env::var("LOCALD_DASHBOARD").ok())
        .unwrap_or_else(|| "127.0.0.1:7179".into());
    if dashboard != "none" && !args.stdio {
        let addr: std::net::SocketAddr = dashboard.parse().with_context(|| {
            format!("--dashboard {dashboard}: not an address such as 127.0.0.1:7179")
        })?;
        match crate::daemon::bind_tcp(addr) {
            Ok(listener) => {
                listeners.push(server.serve_dashboard(listener)?);
                tracing::info!(%addr, "dashboard: run `locald dashboard` for a link");
            }
            Err(err) => tracing::warn!(%err, "running without the dashboard"),
        }
    }
    let proxy = args
        .proxy
        .or_else(|| std::env::var("LOCALD_PROXY").ok())
        .unwrap_or_else(|| default_proxy().into());
    #[cfg(not(target_os = "linux"))]
    anyhow::ensure!(
        proxy == "none",
        "--proxy {proxy}: the HTTPS proxy is only available on Linux for now"
    );
    #[cfg(target_os = "linux")]
    if proxy != "none" && !args.stdio {
        let addr: std::net::SocketAddr = proxy
            .parse()
            .with_context(|| format!("--proxy {proxy}: not an address such as 127.0.0.1:443"))?;
        match serve_proxy(&server, addr).await {
            Ok(()) => tracing::info!(%addr, "proxy: https://<service>.<project>.localhost"),
            Err(err) => tracing::warn!(err = format!("{err:#}"), "running without the proxy"),
        }
    }
    // The socket last: once it answers, everything is ready.
    let socket = args
        .socket
        .unwrap_or_else(|| crate::daemon::default_socket(&paths));
    #[cfg(unix)]
    listeners.push(Listener::Unix(crate::daemon::bind_unix(&socket)?));
    #[cfg(not(unix))]
    anyhow::ensure!(
        !listeners.is_empty(),
        "Unix sockets are not available here: serve with --tcp or --stdio"
    );
    tracing::info!(socket = %socket.display(), pid = std::process::id(), "locald daemon ready");
    let result = server.serve(listeners, stop, args.grace).await;
    let _ = std::fs::remove_file(&socket);
    if let Some(path) = &args.docker_socket {
        let _ = std::fs::remove_file(path);
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

async fn status(args: StatusArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let host = match host {
        Some(host) => parse_host(host)?,
        None => Host::Unix(crate::daemon::default_socket(&Paths::from_process_env())),
    };
    let found = RemoteRuntime::connect(host.clone()).await;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let running = found.is_ok();
    if args.json {
        let value = match found {
            Ok(remote) => serde_json::json!({
                "running": true,
                "host": host.to_string(),
                "daemon": remote.daemon(),
            }),
            Err(err) => serde_json::json!({
                "running": false,
                "host": host.to_string(),
                "error": format!("{:#}", anyhow::Error::new(err)),
            }),
        };
        serde_json::to_writer_pretty(&mut out, &value).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        match found {
            Ok(remote) => {
                let d = remote.daemon();
                writeln!(
                    out,
                    "locald daemon {} (pid {}, API v{}) runs at {host}, serving the {} runtime on {}",
                    d.version, d.pid, d.api_version, d.runtime.name, d.runtime.platform
                )?;
            }
            Err(err) => {
                writeln!(
                    out,
                    "no locald daemon runs at {host}: {:#}",
                    anyhow::Error::new(err)
                )?;
            }
        }
    }
    out.flush()?;
    Ok(if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// 127.0.0.1:443 when the setuid helper is installed (it binds that port), else none.
fn default_proxy() -> &'static str {
    #[cfg(target_os = "linux")]
    if locald_proxy::privhelper::installed().is_some() {
        return "127.0.0.1:443";
    }
    "none"
}

/// Starts the HTTPS proxy on `addr` (and HTTP on port 80 redirecting to it when `addr`
/// is port 443) with routes from the daemon's projects.
#[cfg(target_os = "linux")]
async fn serve_proxy(server: &Server, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let ca = std::sync::Arc::new(crate::cmd::proxy::open_ca()?);
    let https = crate::cmd::proxy::listen(addr).await?;
    let table = locald_proxy::RouteTable::new();
    let proxy = locald_proxy::Proxy::new(table.clone());
    let mut http = None;
    if addr.port() == 443 {
        match crate::cmd::proxy::listen(std::net::SocketAddr::new(addr.ip(), 80)).await {
            Ok(listener) => http = Some((listener, Some(443))),
            Err(err) => tracing::warn!(err = format!("{err:#}"), "no HTTP to HTTPS redirect"),
        }
    }
    proxy.serve_on_threads(https, ca, http)?;
    let helper = locald_proxy::privhelper::installed();
    tokio::spawn(crate::daemon::proxy::follow(
        server.projects().clone(),
        table,
        helper,
        server.dashboard_addr(),
    ));
    if addr.port() == 443 {
        server.set_dashboard_base(format!("https://{}", crate::daemon::proxy::DASHBOARD_HOST));
    }
    Ok(())
}
