//! `locald trust`, `locald untrust` and `locald proxy`: the local CA in the trust
//! stores, and the HTTPS proxy on its own (the daemon runs the same proxy). Linux only
//! for now (the proxy's TLS uses ring, which the macOS and Windows builds leave out).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use locald::Paths;
use locald_proxy::{LocalCa, Proxy, Route, RouteTable};

/// The local CA's directory: `$LOCALD_HOME/ca`.
pub(crate) fn ca_dir() -> PathBuf {
    Paths::from_process_env().data_home().join("ca")
}

/// Opens (or creates) the local CA.
pub(crate) fn open_ca() -> anyhow::Result<LocalCa> {
    let dir = ca_dir();
    LocalCa::open(&dir, &[])
        .with_context(|| format!("cannot open the local CA in {}", dir.display()))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
}

/// `locald trust`: install the local CA's root.
pub(crate) fn trust() -> anyhow::Result<ExitCode> {
    let ca = open_ca()?;
    let lines = locald_proxy::trust::trust(&ca.root_path(), home().as_deref())
        .context("cannot trust the local CA")?;
    let mut out = std::io::stdout().lock();
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `locald untrust`: remove the local CA's root from where `trust` put it.
pub(crate) fn untrust() -> anyhow::Result<ExitCode> {
    let root = ca_dir().join("root.pem");
    let lines = locald_proxy::trust::untrust(&root, home().as_deref())
        .context("cannot untrust the local CA")?;
    let mut out = std::io::stdout().lock();
    if lines.is_empty() {
        writeln!(out, "the local CA was not trusted anywhere")?;
    }
    for l in lines {
        writeln!(out, "{l}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `locald proxy`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where to serve HTTPS.
    #[arg(long, default_value = "127.0.0.1:8443")]
    https: SocketAddr,
    /// Where to serve plain HTTP, which redirects to HTTPS.
    #[arg(long)]
    http: Option<SocketAddr>,
    /// Proxy plain HTTP on `--http` as well, instead of redirecting it to HTTPS.
    #[arg(long, requires = "http")]
    no_redirect: bool,
    /// A route, HOST=PORT (to 127.0.0.1) or HOST=ADDR:PORT; repeatable.
    #[arg(long = "route", value_name = "HOST=PORT")]
    routes: Vec<String>,
}

fn parse_route(s: &str) -> anyhow::Result<(String, SocketAddr)> {
    let (host, to) = s
        .split_once('=')
        .with_context(|| format!("route {s:?} is not HOST=PORT"))?;
    if !locald_proxy::ca::is_host_name(host) {
        anyhow::bail!("route {s:?}: {host:?} is not a host name");
    }
    let addr = match to.parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => to
            .parse()
            .with_context(|| format!("route {s:?}: {to:?} is neither a port nor ADDR:PORT"))?,
    };
    Ok((host.to_owned(), addr))
}

/// `locald proxy`: serve the given routes until interrupted.
pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let routes = RouteTable::new();
    for r in &args.routes {
        let (host, addr) = parse_route(r)?;
        routes.set(&host, Route::Up(addr));
    }
    let ca = Arc::new(open_ca()?);
    let proxy = Proxy::new(routes);
    let https = listen(args.https).await?;
    let https_port = https.local_addr()?.port();
    let http = match args.http {
        Some(addr) => Some((
            listen(addr).await?,
            (!args.no_redirect).then_some(https_port),
        )),
        None => None,
    };
    proxy.serve_on_threads(https, ca, http)?;
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}

/// Binds `addr`; a refused port 80 or 443 on 127.0.0.1 is asked of the setuid helper
/// `locald setup` installed.
pub(crate) async fn listen(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && addr.ip() == std::net::IpAddr::from([127, 0, 0, 1])
                && matches!(addr.port(), 80 | 443) =>
        {
            let helper = locald_proxy::privhelper::installed().with_context(|| {
                format!("cannot listen on {addr}: {e}; run `sudo locald setup` once to allow it")
            })?;
            let l = locald_proxy::privhelper::bind(&helper, addr.port())
                .with_context(|| format!("cannot listen on {addr}"))?;
            l.set_nonblocking(true)?;
            Ok(tokio::net::TcpListener::from_std(l)?)
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot listen on {addr}"))),
    }
}

/// Arguments of `locald setup`.
#[derive(Debug, clap::Args)]
pub(crate) struct SetupArgs {
    /// The user allowed to use the helper (name or uid; default: the user who ran sudo).
    #[arg(long)]
    user: Option<String>,
    /// The helper binary to install (default: `locald-privhelper` beside `locald`).
    #[arg(long)]
    helper: Option<PathBuf>,
    /// A name suffix besides `localhost` the helper may put in /etc/hosts; repeatable.
    #[arg(long = "suffix")]
    suffixes: Vec<String>,
}

/// `locald setup`: as root, install the setuid helper for ports 80/443 and /etc/hosts.
pub(crate) fn setup(args: SetupArgs) -> anyhow::Result<ExitCode> {
    use locald_proxy::privhelper::{CONFIG, HELPER};
    use std::os::unix::fs::PermissionsExt;
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "locald setup installs a setuid helper and must run as root (sudo locald setup)"
        );
    }
    let user = match args.user.or_else(|| std::env::var("SUDO_UID").ok()) {
        Some(u) => u,
        None => {
            anyhow::bail!("which user may use the helper? Pass --user NAME (or run through sudo)")
        }
    };
    let uid = match user.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => nix::unistd::User::from_name(&user)?
            .with_context(|| format!("no user named {user:?}"))?
            .uid
            .as_raw(),
    };
    for s in &args.suffixes {
        if !locald_proxy::ca::is_host_name(s) || s == "localhost" {
            anyhow::bail!("--suffix {s:?} is not a host name suffix");
        }
    }
    let helper = match args.helper {
        Some(h) => h,
        None => std::env::current_exe()?.with_file_name("locald-privhelper"),
    };
    let bytes = std::fs::read(&helper)
        .with_context(|| format!("cannot read the helper {}", helper.display()))?;
    let dest = std::path::Path::new(HELPER);
    let conf = std::path::Path::new(CONFIG);
    for d in [dest.parent(), conf.parent()].into_iter().flatten() {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // The configuration first: a helper without it refuses everyone.
    let mut text = format!("# written by locald setup\nuid = {uid}\n");
    for s in &args.suffixes {
        text.push_str(&format!("suffix = {s}\n"));
    }
    locald::native::util::write_atomic_with(
        conf,
        text.as_bytes(),
        &locald::native::util::AtomicWrite::new().mode(0o644),
    )?;
    // Written as root (so owned by root), 0755 first, setuid only once complete.
    locald::native::util::write_atomic_with(
        dest,
        &bytes,
        &locald::native::util::AtomicWrite::new().mode(0o755),
    )?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o4755))
        .with_context(|| format!("cannot make {} setuid", dest.display()))?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "installed {} (setuid root) for uid {uid}",
        dest.display()
    )?;
    writeln!(out, "recorded the allowed uid in {}", conf.display())?;
    Ok(ExitCode::SUCCESS)
}
