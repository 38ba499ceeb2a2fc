//! The dashboard: a web page the daemon serves on a loopback TCP port
//! (`http://locald.localhost:PORT/`) that shows what `locald status` and `locald
//! logs` show, live, with restart/stop/start buttons, the containers and images of
//! the same runtime, and the daemon's version and platform.
//!
//! # Who may use it
//!
//! - A browser gets a session only through a one-time link that the daemon's owner
//!   asks for over the daemon's own socket (`locald dashboard`): `GET /login?token=`
//!   consumes the token (valid for two minutes) and sets an `HttpOnly`,
//!   `SameSite=Strict` session cookie. Every other route needs that cookie.
//! - The `Host` header must name this dashboard (`locald.localhost`, `localhost`,
//!   `127.0.0.1` or `[::1]`, with its port or none): a page on another name that
//!   resolves to 127.0.0.1 (DNS rebinding) gets `421`.
//! - A request with an `Origin` must come from this dashboard's origin, and a
//!   request that changes something (`POST`) must carry one: another site cannot
//!   drive it from a user's browser (`403`).
//! - Pages are sent with a content security policy that allows only this origin's
//!   scripts and no framing.
//!
//! The assets are embedded in the binary (`assets/`, no framework, no CDN).

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Redirect, Response,
    },
    routing::{get, post},
    Json, Router,
};
use futures_util::Stream;
use locald::services::{LogLine, ServiceStatus, Supervisor};
use locald::Runtime;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

/// The size of the embedded assets, in bytes.
pub const ASSET_BYTES: usize = INDEX_HTML.len() + APP_JS.len() + STYLE_CSS.len();

/// How long a one-time login link stays valid.
const LOGIN_TTL: Duration = Duration::from_secs(120);
/// How long a session lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
const COOKIE: &str = "locald_session";
/// How many earlier lines of a service's log the log view starts with.
const HISTORY_LINES: usize = 200;

/// The projects the dashboard shows and acts on.
pub trait Projects: Send + Sync + std::fmt::Debug {
    /// The projects that are up: name, project file, supervisor.
    fn projects(&self) -> Vec<ProjectEntry>;
}

/// One project as [`Projects`] lists it.
#[derive(Debug, Clone)]
pub struct ProjectEntry {
    /// Its name.
    pub name: String,
    /// Its `locald.toml`, as given.
    pub file: String,
    /// Its running supervision.
    pub supervisor: Supervisor,
}

/// The dashboard's state: where it listens, its one-time links and its sessions.
#[derive(Debug)]
pub struct Dashboard {
    addr: SocketAddr,
    runtime: Arc<dyn Runtime>,
    projects: Arc<dyn Projects>,
    info: locald::remote::DaemonInfo,
    logins: Mutex<HashMap<String, Instant>>,
    sessions: Mutex<HashMap<String, Instant>>,
    /// Where browsers reach it when not directly (the HTTPS proxy's address).
    public: std::sync::OnceLock<String>,
}

impl Dashboard {
    /// A dashboard served at `addr` (the address its listener is bound to).
    pub fn new(
        addr: SocketAddr,
        runtime: Arc<dyn Runtime>,
        projects: Arc<dyn Projects>,
        info: locald::remote::DaemonInfo,
    ) -> Arc<Self> {
        Arc::new(Dashboard {
            addr,
            runtime,
            projects,
            info,
            logins: Mutex::default(),
            sessions: Mutex::default(),
            public: std::sync::OnceLock::new(),
        })
    }

    /// The address it is served at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes links point at `base` (such as `https://locald.localhost`, the HTTPS
    /// proxy in front of it) instead of its own address.
    pub fn set_public_base(&self, base: impl Into<String>) {
        let _ = self.public.set(base.into());
    }

    /// A new one-time login link: `http://locald.localhost:PORT/login?token=…` (or
    /// under the base set by [`Dashboard::set_public_base`]).
    pub fn login_url(&self) -> std::io::Result<String> {
        let token = locald::native::util::random_id().map_err(|e| e.into_io_error())?;
        let mut logins = self.logins.lock().unwrap();
        logins.retain(|_, made| made.elapsed() < LOGIN_TTL);
        logins.insert(token.clone(), Instant::now());
        Ok(match self.public.get() {
            Some(base) => format!("{base}/login?token={token}"),
            None => format!(
                "http://locald.localhost:{}/login?token={token}",
                self.addr.port()
            ),
        })
    }

    fn take_login(&self, token: &str) -> bool {
        let mut logins = self.logins.lock().unwrap();
        logins.retain(|_, made| made.elapsed() < LOGIN_TTL);
        let found = logins
            .keys()
            .find(|known| bool::from(known.as_bytes().ct_eq(token.as_bytes())))
            .cloned();
        found.is_some_and(|known| logins.remove(&known).is_some())
    }

    fn new_session(&self) -> std::io::Result<String> {
        let id = locald::native::util::random_id().map_err(|e| e.into_io_error())?;
        let mut sessions = self.sessions.lock().unwrap();
        sessions.retain(|_, made| made.elapsed() < SESSION_TTL);
        sessions.insert(id.clone(), Instant::now());
        Ok(id)
    }

    fn has_session(&self, headers: &HeaderMap) -> bool {
        let Some(given) = cookie(headers, COOKIE) else {
            return false;
        };
        let sessions = self.sessions.lock().unwrap();
        sessions.iter().any(|(id, made)| {
            made.elapsed() < SESSION_TTL && bool::from(id.as_bytes().ct_eq(given.as_bytes()))
        })
    }

    /// Whether `host` (a `Host` header or an origin's authority) names this
    /// dashboard.
    fn is_own_host(&self, host: &str) -> bool {
        let port = self.addr.port().to_string();
        let (name, given_port) = match host.rsplit_once(':') {
            Some((name, p)) if !name.ends_with(':') && !p.contains(']') => (name, Some(p)),
            _ => (host, None),
        };
        let known = ["locald.localhost", "localhost", "127.0.0.1", "[::1]"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n));
        known && given_port.is_none_or(|p| p == port)
    }
}

/// The value of cookie `name` in `headers`.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The dashboard's routes, behind its Host, Origin and session checks.
pub fn router(dashboard: Arc<Dashboard>) -> Router {
    let api = Router::new()
        .route("/api/state", get(state))
        .route("/api/projects/{project}/services/{service}/logs", get(logs))
        .route(
            "/api/projects/{project}/services/{service}/{verb}",
            post(act),
        )
        .route("/", get(index))
        .route("/assets/app.js", get(|| asset(APP_JS, "text/javascript")))
        .route("/assets/style.css", get(|| asset(STYLE_CSS, "text/css")))
        .layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            require_session,
        ));
    Router::new()
        .route("/login", get(login))
        .merge(api)
        .layer(axum::middleware::from_fn_with_state(
            dashboard.clone(),
            check_request,
        ))
        .with_state(dashboard)
}

fn refuse(status: StatusCode, reason: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{reason}\n"),
    )
        .into_response()
}

/// The Host and Origin checks, and the security headers on every answer.
async fn check_request(State(d): State<Arc<Dashboard>>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !d.is_own_host(host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "this is the locald dashboard: open it at http://locald.localhost (see `locald dashboard`)",
        );
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok());
    let own_origin = origin.map(|o| {
        o.strip_prefix("http://")
            .or_else(|| o.strip_prefix("https://"))
            .is_some_and(|authority| d.is_own_host(authority))
    });
    match (
        req.method() == Method::GET || req.method() == Method::HEAD,
        own_origin,
    ) {
        (_, Some(false)) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "requests from other sites are refused",
            )
        }
        (false, None) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "a request that changes something must come from the dashboard's page",
            )
        }
        _ => {}
    }
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn require_session(State(d): State<Arc<Dashboard>>, req: Request, next: Next) -> Response {
    if d.has_session(req.headers()) {
        return next.run(req).await;
    }
    refuse(
        StatusCode::UNAUTHORIZED,
        "no dashboard session: run `locald dashboard` and open the link it prints",
    )
}

#[derive(Deserialize)]
struct LoginQuery {
    token: String,
}

async fn login(State(d): State<Arc<Dashboard>>, Query(q): Query<LoginQuery>) -> Response {
    if !d.take_login(&q.token) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "this link is used up or expired: run `locald dashboard` for a new one",
        );
    }
    let Ok(session) = d.new_session() else {
        return refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot make a session");
    };
    let cookie = format!("{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/");
    let mut response = Redirect::to("/").into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8").await
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

#[derive(Serialize)]
struct DaemonView {
    version: String,
    pid: u32,
    platform: String,
    runtime: String,
}

#[derive(Serialize)]
struct ProjectView {
    name: String,
    file: String,
    services: Vec<ServiceStatus>,
}

#[derive(Serialize)]
struct ContainerView {
    id: String,
    name: String,
    image: String,
    state: String,
    command: String,
}

#[derive(Serialize)]
struct ImageView {
    id: String,
    reference: String,
    size: u64,
}

#[derive(Serialize)]
struct StateView {
    daemon: DaemonView,
    projects: Vec<ProjectView>,
    containers: Vec<ContainerView>,
    images: Vec<ImageView>,
}

/// Everything the page shows, in one answer.
async fn state(State(d): State<Arc<Dashboard>>) -> Response {
    let projects = d
        .projects
        .projects()
        .into_iter()
        .map(|p| ProjectView {
            services: p.supervisor.status(),
            name: p.name,
            file: p.file,
        })
        .collect();
    // A runtime without containers or images (host commands only) shows none.
    let containers = d
        .runtime
        .list_containers(true)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|c| ContainerView {
            image: c.image.map(|i| i.to_string()).unwrap_or_default(),
            state: serde_json::to_value(c.state)
                .ok()
                .and_then(|v| v.get("state").and_then(|s| s.as_str()).map(str::to_owned))
                .unwrap_or_default(),
            command: c.command.join(" "),
            id: c.id,
            name: c.name,
        })
        .collect();
    let images = d
        .runtime
        .list_images()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|i| ImageView {
            reference: i.reference.to_string(),
            size: i.size,
            id: i.id,
        })
        .collect();
    let runtime = &d.info.runtime;
    Json(StateView {
        daemon: DaemonView {
            version: d.info.version.clone(),
            pid: d.info.pid,
            platform: runtime.platform.to_string(),
            runtime: runtime.name.clone(),
        },
        projects,
        containers,
        images,
    })
    .into_response()
}

/// The supervisor of `project` when it has `service`; else the refusal to send.
fn find(d: &Dashboard, project: &str, service: &str) -> Result<Supervisor, String> {
    let Some(entry) = d
        .projects
        .projects()
        .into_iter()
        .find(|p| p.name == project)
    else {
        return Err(format!("no project {project} is up"));
    };
    if !entry.supervisor.status().iter().any(|s| s.name == service) {
        return Err(format!("project {project} has no service {service}"));
    }
    Ok(entry.supervisor)
}

/// `restart`, `stop` or `start` one service.
async fn act(
    State(d): State<Arc<Dashboard>>,
    Path((project, service, verb)): Path<(String, String, String)>,
) -> Response {
    let supervisor = match find(&d, &project, &service) {
        Ok(s) => s,
        Err(why) => return refuse(StatusCode::NOT_FOUND, &why),
    };
    let done = match verb.as_str() {
        "restart" => supervisor.restart_service(&service).await,
        "stop" => supervisor.stop_service(&service).await,
        "start" => supervisor.start_service(&service).await,
        _ => {
            return refuse(
                StatusCode::NOT_FOUND,
                &format!("{verb:?} is not an action: restart, stop or start"),
            )
        }
    };
    match done {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(err) => refuse(StatusCode::CONFLICT, &err.to_string()),
    }
}

/// One service's log: its last lines from the log file, then live lines, as
/// server-sent `line` events (`{"stream","line"}`).
async fn logs(
    State(d): State<Arc<Dashboard>>,
    Path((project, service)): Path<(String, String)>,
) -> Response {
    let supervisor = match find(&d, &project, &service) {
        Ok(s) => s,
        Err(why) => return refuse(StatusCode::NOT_FOUND, &why),
    };
    // Subscribe before reading the file, so no line falls between the two.
    let live = supervisor.subscribe_logs();
    let history =
        locald::services::logfile::read_tail(&supervisor.log_file(&service), Some(HISTORY_LINES));
    Sse::new(log_events(service, history, live))
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn log_events(
    service: String,
    history: Vec<locald::services::logfile::LogRecord>,
    mut live: tokio::sync::broadcast::Receiver<LogLine>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    fn event(stream: &str, line: &str) -> Event {
        Event::default()
            .event("line")
            .json_data(serde_json::json!({ "stream": stream, "line": line }))
            .unwrap_or_default()
    }
    async_stream(move |tx| async move {
        for record in history {
            let stream = record.stream.map_or("stdout", locald::LogStream::as_str);
            if tx.send(event(stream, &record.line)).await.is_err() {
                return;
            }
        }
        loop {
            match live.recv().await {
                Ok(line) if line.service == service => {
                    if tx
                        .send(event(line.stream.as_str(), &line.line))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

/// A stream fed by a task through a small channel.
fn async_stream<F, Fut>(produce: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(tx));
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let addr: SocketAddr = "127.0.0.1:7070".parse().unwrap();
        let d = Dashboard::new(
            addr,
            Arc::new(locald::native::ProcessRuntime::new()),
            Arc::new(NoProjects),
            locald::remote::DaemonInfo::new("0", 1, locald::native::ProcessRuntime::new().info()),
        );
        for ok in [
            "locald.localhost:7070",
            "locald.localhost",
            "LOCALD.localhost:7070",
            "127.0.0.1:7070",
            "localhost:7070",
            "[::1]:7070",
            "[::1]",
        ] {
            assert!(d.is_own_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:7070",
            "locald.localhost:7071",
            "127.0.0.2:7070",
            "locald.localhost.evil.example",
            "",
        ] {
            assert!(!d.is_own_host(bad), "{bad}");
        }
    }

    #[derive(Debug)]
    struct NoProjects;
    impl Projects for NoProjects {
        fn projects(&self) -> Vec<ProjectEntry> {
            Vec::new()
        }
    }

    #[test]
    fn cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; locald_session=xyz; b=2"),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
