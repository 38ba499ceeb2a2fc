//! The routes of the daemon API, one per [`Runtime`] method (see
//! [`locald::remote::protocol`] for the table).

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{rejection::QueryRejection, FromRequest, Path, Query, Request, State},
    http::{header, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use locald::remote::protocol::{
    ErrorBody, Frame, FrameKind, ImageRequest, ImportRequest, KillRequest, ListQuery, LoadRequest,
    LogoutRequest, Outcome, PullLine, PullRequest, RemoveQuery, StopRequest, WireError,
    HEADER_CONTAINER_ID, HEADER_CONTAINER_NAME, HEADER_PID, HEADER_STREAMS, MAX_REQUEST_BYTES,
    UPGRADE_PROTOCOL,
};
use locald::{Command, ContainerSpec, LogOptions, Process, RegistryLogin, Stdin, Stdio};
use serde::{de::DeserializeOwned, Deserialize};
use subtle::ConstantTimeEq;

use crate::daemon::server::Shared;

/// An error answer: the status and Docker's `{"message"}` body with the typed error.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: Option<StatusCode>,
    error: WireError,
}

impl ApiError {
    pub(crate) fn request(reason: impl Into<String>) -> Self {
        ApiError {
            status: None,
            error: WireError::request(reason),
        }
    }

    fn with_status(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError {
            status: Some(status),
            error: WireError::request(reason),
        }
    }
}

impl From<locald::Error> for ApiError {
    fn from(err: locald::Error) -> Self {
        ApiError {
            status: None,
            error: WireError::from_error(&err),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status.unwrap_or_else(|| {
            StatusCode::from_u16(self.error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        });
        error_response(status, self.error)
    }
}

pub(crate) fn error_response(status: StatusCode, error: WireError) -> Response {
    (status, Json(ErrorBody::new(error))).into_response()
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// A JSON request body: `application/json`, at most [`MAX_REQUEST_BYTES`], parsed
/// with errors that say what was wrong.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        parse_body(req).await.map(JsonBody)
    }
}

async fn parse_body<T: DeserializeOwned>(req: Request) -> ApiResult<T> {
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::with_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the request body must be JSON (Content-Type: application/json)",
        ));
    }
    let bytes = axum::body::to_bytes(req.into_body(), MAX_REQUEST_BYTES)
        .await
        .map_err(|_| {
            ApiError::with_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than the limit of {MAX_REQUEST_BYTES} bytes"),
            )
        })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::request(format!("malformed request body: {e}")))
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::request(format!("malformed query: {}", e.body_text())))
}

/// The routes under `/locald/v1`, plus the Docker Engine API (see
/// [`docker`](crate::daemon::docker)) at its bare paths and under `/vX.Y`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let v1 = Router::new()
        .route("/info", get(info))
        .route("/commands/run", post(run_command))
        .route("/processes", post(spawn))
        .route("/containers", post(run_container).get(list_containers))
        .route(
            "/containers/{id}",
            get(inspect_container).delete(remove_container),
        )
        .route("/containers/{id}/wait", post(wait_container))
        .route("/containers/{id}/stop", post(stop_container))
        .route("/containers/{id}/kill", post(kill_container))
        .route("/containers/{id}/logs", get(container_logs))
        .route("/containers/{id}/exec", post(exec))
        .route("/images", get(list_images))
        .route("/images/pull", post(pull_image))
        .route("/images/remove", post(remove_image))
        .route("/images/prune", post(prune_images))
        .route("/images/load", post(load_image))
        .route("/images/import", post(import_image))
        .route("/images/login", post(login))
        .route("/images/logout", post(logout))
        .merge(crate::daemon::project_routes::routes());
    Router::new()
        .nest(locald::remote::protocol::PREFIX, v1)
        .merge(crate::daemon::docker::routes())
        .merge(crate::daemon::docker::versioned())
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(shared)
}

async fn unknown_route(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        WireError::request(format!("unknown route {method} {}", uri.path())),
    )
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        WireError::request(format!("{} does not take {method}", uri.path())),
    )
}

async fn info(State(s): State<Arc<Shared>>) -> Response {
    Json(&s.info).into_response()
}

/// `Inherit` would reach the daemon's own stdio, which a client cannot see (and in
/// `--stdio` mode is the connection itself): clients send pipes instead.
fn check_command(command: &Command) -> ApiResult<()> {
    if matches!(command.get_stdin(), Stdin::Inherit)
        || command.get_stdout() == Stdio::Inherit
        || command.get_stderr() == Stdio::Inherit
    {
        return Err(ApiError::from(locald::Error::invalid(
            "command",
            command.get_program(),
            "inherited stdio is not available through the daemon; pipe the stream and copy it",
        )));
    }
    Ok(())
}

async fn run_command(
    State(s): State<Arc<Shared>>,
    JsonBody(command): JsonBody<Command>,
) -> ApiResult<Response> {
    check_command(&command)?;
    let output = s.runtime.run_command(command).await?;
    Ok(Json(output).into_response())
}

/// Checks that the request asks for the stream upgrade, and takes its upgrade handle.
fn take_upgrade(req: &mut Request) -> ApiResult<hyper::upgrade::OnUpgrade> {
    let asks = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(UPGRADE_PROTOCOL));
    if !asks {
        return Err(ApiError::request(format!(
            "this route streams: send Connection: upgrade and Upgrade: {UPGRADE_PROTOCOL}"
        )));
    }
    Ok(hyper::upgrade::on(req))
}

/// Answers `101` and serves `process` on the upgraded connection.
/// Whether the daemon answers for a streamed process's life: commands clients spawn or
/// exec are recorded (killed after a daemon crash) and sent SIGTERM when the daemon
/// stops; a container's main process belongs to the container, which outlives the
/// daemon, so it is neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Daemon,
    Container,
}

fn stream_process(
    s: &Arc<Shared>,
    upgrade: hyper::upgrade::OnUpgrade,
    mut process: Process,
    extra: &[(&'static str, String)],
    owner: Owner,
    tty: bool,
) -> ApiResult<Response> {
    let pid = process.id();
    let pipes = crate::daemon::session::Pipes {
        stdin: process.take_stdin(),
        stdout: process.take_stdout(),
        stderr: process.take_stderr(),
        tty,
    };
    let mut builder = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, UPGRADE_PROTOCOL)
        .header(HEADER_STREAMS, pipes.names());
    if let Some(pid) = pid {
        builder = builder.header(HEADER_PID, pid);
    }
    for (name, value) in extra {
        builder = builder.header(*name, value.as_str());
    }
    let record = match (&s.state, pid.filter(|_| owner == Owner::Daemon)) {
        (Some(state), Some(pid)) => match state.record_process(pid) {
            Ok(record) => Some(record),
            Err(err) => {
                tracing::warn!(pid, %err, "cannot record a spawned process; a crash would orphan it");
                None
            }
        },
        _ => None,
    };
    let response = builder
        .body(Body::empty())
        .map_err(|e| ApiError::request(format!("cannot answer: {e}")))?;
    let terminate = match owner {
        Owner::Daemon => s.terminate.subscribe(),
        // A sender dropped at once: the session sees "no stop signal will come".
        Owner::Container => tokio::sync::watch::channel(false).1,
    };
    s.sessions.spawn(async move {
        match upgrade.await {
            Ok(upgraded) => {
                crate::daemon::session::serve(TokioIo::new(upgraded), process, pipes, terminate)
                    .await
            }
            Err(err) => tracing::debug!(%err, "client left before the stream started"),
        }
        drop(record);
    });
    Ok(response)
}

async fn spawn(State(s): State<Arc<Shared>>, mut req: Request) -> ApiResult<Response> {
    let upgrade = take_upgrade(&mut req)?;
    let command: Command = parse_body(req).await?;
    check_command(&command)?;
    let tty = command.get_tty();
    let process = s.runtime.spawn(command).await?;
    stream_process(&s, upgrade, process, &[], Owner::Daemon, tty)
}

async fn run_container(State(s): State<Arc<Shared>>, mut req: Request) -> ApiResult<Response> {
    let upgrade = take_upgrade(&mut req)?;
    let spec: ContainerSpec = parse_body(req).await?;
    let auto_remove = spec.auto_remove;
    let tty = spec.tty;
    let handle = s.runtime.run_container(spec).await?;
    let (id, name, process) = handle.into_parts();
    if auto_remove {
        if let Some(state) = &s.state {
            if let Err(err) = state.record_container(&id) {
                tracing::warn!(%id, %err, "cannot record an auto-remove container");
            }
        }
    }
    // Dropping the handle when the client leaves does not stop the container.
    stream_process(
        &s,
        upgrade,
        process,
        &[(HEADER_CONTAINER_ID, id), (HEADER_CONTAINER_NAME, name)],
        Owner::Container,
        tty,
    )
}

async fn list_containers(
    State(s): State<Arc<Shared>>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    Ok(Json(s.runtime.list_containers(q.all).await?).into_response())
}

async fn inspect_container(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.runtime.inspect_container(&id).await?).into_response())
}

async fn wait_container(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    Ok(Json(s.runtime.wait_container(&id).await?).into_response())
}

async fn stop_container(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<StopRequest>,
) -> ApiResult<Response> {
    s.runtime.stop_container(&id, body.grace).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn kill_container(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<KillRequest>,
) -> ApiResult<Response> {
    s.runtime.kill_container(&id, body.signal).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn remove_container(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    q: Result<Query<RemoveQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    s.runtime.remove_container(&id, q.force).await?;
    if let Some(state) = &s.state {
        state.forget_container(&id);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default)]
    follow: bool,
    tail: Option<usize>,
}

async fn container_logs(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let mut options = LogOptions::default();
    options.follow = q.follow;
    options.tail = q.tail;
    let chunks = s.runtime.container_logs(&id, options).await?;
    // Each chunk becomes a frame; the stream ends with an END frame that says whether
    // it ended well.
    let frames = futures_util::stream::unfold(Some(chunks), |chunks| async move {
        let mut chunks = chunks?;
        let frame = match chunks.next().await {
            Some(Ok((stream, data))) => {
                let kind = match stream {
                    locald::LogStream::Stdout => FrameKind::Stdout,
                    locald::LogStream::Stderr => FrameKind::Stderr,
                };
                return Some((
                    Ok::<_, std::convert::Infallible>(Frame::new(kind, data).encode()),
                    Some(chunks),
                ));
            }
            Some(Err(err)) => Frame::json(
                FrameKind::End,
                &Outcome::<()>::Err(WireError::from_error(&err)),
            ),
            None => Frame::json(FrameKind::End, &Outcome::Ok(())),
        };
        Some((Ok(frame.encode()), None))
    });
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            locald::remote::protocol::STREAM_CONTENT_TYPE,
        )
        .body(Body::from_stream(frames))
        .map_err(|e| ApiError::request(format!("cannot answer: {e}")))
}

async fn exec(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    mut req: Request,
) -> ApiResult<Response> {
    let upgrade = take_upgrade(&mut req)?;
    let command: Command = parse_body(req).await?;
    check_command(&command)?;
    let tty = command.get_tty();
    let process = s.runtime.exec(&id, command).await?;
    stream_process(&s, upgrade, process, &[], Owner::Daemon, tty)
}

#[derive(Debug, Deserialize)]
struct PullQuery {
    #[serde(default)]
    progress: bool,
}

async fn pull_image(
    State(s): State<Arc<Shared>>,
    q: Result<Query<PullQuery>, QueryRejection>,
    JsonBody(body): JsonBody<PullRequest>,
) -> ApiResult<Response> {
    let q = query(q)?;
    if !q.progress {
        return Ok(Json(s.runtime.pull_image(&body.image, body.options).await?).into_response());
    }
    // JSON lines: every progress event as it happens, then the result.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut options = body.options;
    options.progress = Some(tx);
    let runtime = s.runtime.clone();
    let image = body.image;
    let pulling = tokio::spawn(async move { runtime.pull_image(&image, options).await });
    let lines =
        futures_util::stream::unfold((Some(rx), Some(pulling)), |(rx, pulling)| async move {
            let line = |value: &PullLine| {
                let mut bytes = serde_json::to_vec(value).expect("protocol values serialize");
                bytes.push(b'\n');
                Ok::<_, std::convert::Infallible>(bytes::Bytes::from(bytes))
            };
            if let Some(mut rx) = rx {
                if let Some(event) = rx.recv().await {
                    return Some((line(&PullLine::Progress(event)), (Some(rx), pulling)));
                }
            }
            // The sender went with the pull: it is over.
            let result = match pulling?.await {
                Ok(Ok(summary)) => PullLine::Done(summary),
                Ok(Err(err)) => PullLine::Failed(WireError::from_error(&err)),
                Err(join) => {
                    PullLine::Failed(WireError::request(format!("the pull failed: {join}")))
                }
            };
            Some((line(&result), (None, None)))
        });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(lines))
        .map_err(|e| ApiError::request(format!("cannot answer: {e}")))
}

async fn list_images(State(s): State<Arc<Shared>>) -> ApiResult<Response> {
    Ok(Json(s.runtime.list_images().await?).into_response())
}

async fn remove_image(
    State(s): State<Arc<Shared>>,
    JsonBody(body): JsonBody<ImageRequest>,
) -> ApiResult<Response> {
    Ok(Json(s.runtime.remove_image(&body.image).await?).into_response())
}

async fn prune_images(State(s): State<Arc<Shared>>) -> ApiResult<Response> {
    Ok(Json(s.runtime.prune_images().await?).into_response())
}

async fn load_image(
    State(s): State<Arc<Shared>>,
    JsonBody(body): JsonBody<LoadRequest>,
) -> ApiResult<Response> {
    Ok(Json(s.runtime.load_image(&body.path).await?).into_response())
}

async fn import_image(
    State(s): State<Arc<Shared>>,
    JsonBody(body): JsonBody<ImportRequest>,
) -> ApiResult<Response> {
    Ok(Json(s.runtime.import_image(&body.rootfs, &body.image).await?).into_response())
}

async fn login(
    State(s): State<Arc<Shared>>,
    JsonBody(body): JsonBody<RegistryLogin>,
) -> ApiResult<Response> {
    s.runtime.login(body).await?;
    Ok(Json(()).into_response())
}

async fn logout(
    State(s): State<Arc<Shared>>,
    JsonBody(body): JsonBody<LogoutRequest>,
) -> ApiResult<Response> {
    Ok(Json(s.runtime.logout(&body.registry).await?).into_response())
}

/// Refuses every request of a connection whose peer is not the daemon's owner.
pub(crate) fn forbidden(reason: String) -> Router {
    Router::new().fallback(move || {
        let reason = reason.clone();
        async move { error_response(StatusCode::FORBIDDEN, WireError::request(reason)) }
    })
}

/// Checks the bearer token of a TCP request.
pub(crate) async fn require_token(
    State(token): State<Arc<str>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        next.run(req).await
    } else {
        error_response(
            StatusCode::UNAUTHORIZED,
            WireError::request("a valid token is required (Authorization: Bearer TOKEN)"),
        )
    }
}
