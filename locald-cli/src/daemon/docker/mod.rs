//! The Docker Engine API subset, served on the daemon's socket over the same
//! [`Runtime`](locald::Runtime) as the locald API, so that the `docker` CLI, docker-py
//! and testcontainers work with `DOCKER_HOST=unix://…/locald.sock`.
//!
//! Docker creates a container, then attaches, then starts it; the [`Runtime`] trait
//! starts a container in one call ([`run_container`](locald::Runtime::run_container)).
//! So `create` checks and records the spec in [`Containers`] (this daemon's memory)
//! under a docker id, `start` calls `run_container`, and the table maps the docker id
//! to the runtime's id from then on. Containers the daemon did not create (`locald
//! run`) are served under their runtime ids.
//!
//! Every route answers at its bare path and under any `/vX.Y` prefix. Errors are
//! docker's `{"message": …}` with docker's status codes.

mod archive;
mod containers;
mod create;
mod exec;
mod images;
mod inspect;
mod stream;
mod table;

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{FromRequestParts, Path, Request, State},
    http::{header, request::Parts, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use locald::remote::protocol::WireError;
use serde_json::{json, Value};

use crate::daemon::server::Shared;

pub(crate) use table::Containers;

/// The API version this daemon speaks (docker 20.10's).
pub(crate) const API_VERSION: &str = "1.41";
/// The oldest API version it accepts in a path prefix.
const MIN_API_VERSION: &str = "1.24";

/// Docker's routes, without a version prefix; see [`versioned`] for the prefixed ones.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/info", get(info))
        .route("/events", get(events))
        .route("/auth", post(images::auth))
        .route("/networks", get(networks))
        .route("/images/json", get(images::list))
        .route("/images/create", post(images::create))
        .route("/images/prune", post(images::prune))
        .route("/images/{*name}", get(images::get).delete(images::remove))
        .route("/containers/json", get(inspect::list))
        .route("/containers/prune", post(containers::prune))
        .route("/containers/create", post(create::create))
        .route(
            "/containers/{id}",
            axum::routing::delete(containers::remove),
        )
        .route("/containers/{id}/json", get(inspect::inspect))
        .route("/containers/{id}/start", post(containers::start))
        .route("/containers/{id}/attach", post(containers::attach))
        .route("/containers/{id}/wait", post(containers::wait))
        .route("/containers/{id}/logs", get(containers::logs))
        .route("/containers/{id}/stop", post(containers::stop))
        .route("/containers/{id}/kill", post(containers::kill))
        .route("/containers/{id}/restart", post(containers::restart))
        .route("/containers/{id}/resize", post(containers::resize))
        .route("/containers/{id}/exec", post(exec::create))
        .route(
            "/containers/{id}/archive",
            get(archive::get).head(archive::head).put(archive::put),
        )
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/exec/{id}/json", get(exec::inspect))
}

/// The same routes under `/{version}`, for paths like `/v1.41/containers/json`.
pub(crate) fn versioned() -> Router<Arc<Shared>> {
    Router::new().nest(
        "/{version}",
        routes().route_layer(axum::middleware::from_fn(check_version)),
    )
}

/// Answers 404 unless the prefix is an API version (`v1.41`), as docker does; docker
/// refuses versions below its minimum with 400.
async fn check_version(
    Path(params): Path<HashMap<String, String>>,
    req: Request,
    next: Next,
) -> Response {
    let version = params.get("version").map(String::as_str).unwrap_or("");
    let Some(number) = version.strip_prefix('v').and_then(parse_version) else {
        return DockerError::new(StatusCode::NOT_FOUND, "page not found").into_response();
    };
    if number < parse_version(MIN_API_VERSION).unwrap_or_default() {
        return DockerError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "client version {} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version",
                &version[1..]
            ),
        )
        .into_response();
    }
    next.run(req).await
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// A docker error: a status and `{"message": …}`.
#[derive(Debug)]
pub(crate) struct DockerError {
    pub(crate) status: StatusCode,
    message: String,
}

pub(crate) type DockerResult<T> = Result<T, DockerError>;

impl DockerError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        DockerError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub(crate) fn no_such_container(key: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("No such container: {key}"))
    }

    pub(crate) fn no_such_image(key: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("No such image: {key}"))
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl From<locald::Error> for DockerError {
    fn from(err: locald::Error) -> Self {
        match &err {
            locald::Error::NotFound { kind, name } => {
                let mut kind = kind.to_string();
                if let Some(first) = kind.get_mut(..1) {
                    first.make_ascii_uppercase();
                }
                Self::new(StatusCode::NOT_FOUND, format!("No such {kind}: {name}"))
            }
            _ => {
                let wire = WireError::from_error(&err);
                let status = match wire.status() {
                    // Docker answers 500 for what went wrong beyond the request.
                    502 | 504 => StatusCode::INTERNAL_SERVER_ERROR,
                    code => StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                };
                Self::new(status, locald::native::util::error_chain(&err))
            }
        }
    }
}

impl IntoResponse for DockerError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "message": self.message }))).into_response()
    }
}

/// A path parameter by name (`id`, `name`), whatever else the path captured (the
/// version prefix).
pub(crate) struct Param<const N: usize>(pub(crate) String);

/// The `{id}` of a route.
pub(crate) type IdParam = Param<0>;
/// The `{*name}` of a route.
pub(crate) type NameParam = Param<1>;

impl<S: Send + Sync, const N: usize> FromRequestParts<S> for Param<N> {
    type Rejection = DockerError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let key = if N == 0 { "id" } else { "name" };
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| DockerError::bad_request(e.body_text()))?;
        params
            .get(key)
            .cloned()
            .map(Param)
            .ok_or_else(|| DockerError::bad_request(format!("the path has no {key}")))
    }
}

/// True for a registry on loopback (`127.0.0.0/8`, `::1`, `localhost`), which docker
/// clients get as insecure (plain HTTP or unverified TLS) by default, as with dockerd.
/// The query of `POST /containers/{id}/resize` and `POST /exec/{id}/resize`.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ResizeQuery {
    h: u16,
    w: u16,
}

impl ResizeQuery {
    /// Sends the size to the running terminal's relay, or keeps it in `kept` for the
    /// start (a client may size a terminal before starting it).
    pub(crate) fn deliver(
        &self,
        relay: &Option<tokio::sync::mpsc::UnboundedSender<locald::TerminalSize>>,
        kept: &mut Option<locald::TerminalSize>,
    ) {
        let size = locald::TerminalSize::new(self.h, self.w);
        match relay {
            Some(tx) => {
                let _ = tx.send(size);
            }
            None => *kept = Some(size),
        }
    }
}

pub(crate) fn is_loopback_host(registry: &str) -> bool {
    let host = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|i| i.is_loopback())
}

/// A new random 64-hex-digit id (containers, execs).
pub(crate) fn random_id() -> DockerResult<String> {
    locald::native::util::random_id()
        .map_err(|e| DockerError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Query flags as docker clients send them: `1`, `true`, `True`, `0`, `false`.
pub(crate) fn flag(value: Option<&String>) -> bool {
    value.is_some_and(|v| matches!(v.as_str(), "1" | "true" | "True" | "TRUE" | "yes"))
}

async fn ping() -> Response {
    let mut response = "OK".into_response();
    let h = response.headers_mut();
    h.insert("API-Version", HeaderValue::from_static(API_VERSION));
    h.insert("OSType", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn kernel_version() -> String {
    #[cfg(unix)]
    {
        nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    #[cfg(not(unix))]
    String::new()
}

fn hostname() -> String {
    #[cfg(unix)]
    {
        nix::sys::utsname::uname()
            .map(|u| u.nodename().to_string_lossy().into_owned())
            .unwrap_or_default()
    }
    #[cfg(not(unix))]
    std::env::var("COMPUTERNAME").unwrap_or_default()
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

async fn version(State(s): State<Arc<Shared>>) -> Response {
    let version = s.info.version.clone();
    Json(json!({
        "Platform": { "Name": "locald" },
        "Components": [{
            "Name": "Engine",
            "Version": version,
            "Details": {
                "ApiVersion": API_VERSION,
                "MinAPIVersion": MIN_API_VERSION,
                "Os": "linux",
                "Arch": arch(),
                "KernelVersion": kernel_version(),
                "Runtime": s.info.runtime.name,
            }
        }],
        "Version": version,
        "ApiVersion": API_VERSION,
        "MinAPIVersion": MIN_API_VERSION,
        "GitCommit": "",
        "GoVersion": "",
        "Os": "linux",
        "Arch": arch(),
        "KernelVersion": kernel_version(),
        "BuildTime": "",
    }))
    .into_response()
}

async fn info(State(s): State<Arc<Shared>>) -> DockerResult<Response> {
    let containers = s.runtime.list_containers(true).await.unwrap_or_default();
    let running = containers
        .iter()
        .filter(|c| matches!(c.state, locald::ContainerState::Running))
        .count();
    let paused = containers
        .iter()
        .filter(|c| matches!(c.state, locald::ContainerState::Paused))
        .count();
    let created = s.docker.created_count();
    let images = s.runtime.list_images().await.map(|i| i.len()).unwrap_or(0);
    let name = hostname();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cgroup_version = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    };
    let mut body = json!({
        "ID": "",
        "Containers": containers.len() + created,
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": containers.len() - running - paused + created,
        "Images": images,
        "Driver": "overlay",
        "DriverStatus": [],
        "Plugins": { "Volume": [], "Network": ["host", "none", "private"], "Authorization": null, "Log": [] },
        "MemoryLimit": true,
        "SwapLimit": true,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "PidsLimit": true,
        "IPv4Forwarding": false,
        "Debug": false,
        "NFd": 0,
        "NGoroutines": 0,
        "SystemTime": humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string(),
        "LoggingDriver": "locald",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version,
    });
    let more = json!({
        "NEventsListener": 0,
        "KernelVersion": kernel_version(),
        "OperatingSystem": format!("locald {}", s.info.version),
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": ncpu,
        "MemTotal": 0,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "IndexConfigs": {},
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "Mirrors": []
        },
        "Name": name,
        "Labels": [],
        "ServerVersion": s.info.version,
        "Runtimes": { "locald": { "path": "locald" } },
        "DefaultRuntime": "locald",
        "Swarm": { "LocalNodeState": "inactive", "NodeID": "", "NodeAddr": "", "ControlAvailable": false, "Error": "", "RemoteManagers": null },
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "SecurityOptions": [],
        "Warnings": [],
    });
    if let (Some(body), Value::Object(more)) = (body.as_object_mut(), more) {
        body.extend(more);
    }
    Ok(Json(body).into_response())
}

/// `GET /networks`: the three networks a container can have (no user networks).
async fn networks() -> Response {
    let net = |name: &str, driver: &str| {
        json!({
            "Name": name, "Id": name, "Driver": driver, "Scope": "local",
            "Created": "0001-01-01T00:00:00Z", "EnableIPv6": false, "Internal": false,
            "Attachable": false, "Ingress": false, "IPAM": { "Driver": "default", "Config": [] },
            "Containers": {}, "Options": {}, "Labels": {},
        })
    };
    Json(json!([
        net("bridge", "bridge"),
        net("host", "host"),
        net("none", "null"),
    ]))
    .into_response()
}

/// `GET /events`: container start and die events, as JSON lines, from this daemon's
/// docker containers.
async fn events(State(s): State<Arc<Shared>>) -> Response {
    let rx = s.docker.subscribe_events();
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(event) => {
                    let mut bytes = serde_json::to_vec(&event).expect("events serialize");
                    bytes.push(b'\n');
                    return Some((
                        Ok::<_, std::convert::Infallible>(bytes::Bytes::from(bytes)),
                        rx,
                    ));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from_stream(lines))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
