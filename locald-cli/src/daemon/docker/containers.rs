//! `/containers/{id}/...`: start, attach, wait, logs, stop, kill, restart, remove,
//! prune (create is in `create`, list and inspect in `inspect`).

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    body::Body,
    extract::{Query, Request, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use futures_util::StreamExt;
use locald::{ContainerState, ContainerSummary, ExitStatus, LogOptions, Signal};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    flag,
    inspect::{matches_filters, parse_filters, views, ListQuery},
    stream,
    table::Entry,
    DockerError, DockerResult, IdParam,
};
use crate::daemon::{server::Shared, session::Pipes};

/// Docker's default grace period for `stop`.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What a docker key names.
pub(super) enum Target {
    /// A container created here.
    Docker(Arc<Entry>),
    /// A container the runtime knows and this table does not (`locald run`, or from
    /// before a daemon restart), by runtime id.
    Runtime(Box<ContainerSummary>),
}

pub(super) async fn resolve(s: &Shared, key: &str) -> DockerResult<Target> {
    if let Some(entry) = s.docker.find(key) {
        // Started by a previous daemon: gone if the runtime no longer has it
        // (auto-removed, or removed with `locald rm`).
        let unwatched = {
            let live = entry.live();
            live.runtime_id.clone().filter(|_| !live.monitored)
        };
        match unwatched {
            Some(rid) => match s.runtime.inspect_container(&rid).await {
                Err(locald::Error::NotFound { .. }) => s.docker.forget(&entry.id),
                _ => return Ok(Target::Docker(entry)),
            },
            None => return Ok(Target::Docker(entry)),
        }
    }
    match s
        .runtime
        .inspect_container(key.strip_prefix('/').unwrap_or(key))
        .await
    {
        Ok(summary) => Ok(match s.docker.by_runtime_id(&summary.id) {
            Some(entry) => Target::Docker(entry),
            None => Target::Runtime(Box::new(summary)),
        }),
        Err(locald::Error::NotFound { .. }) => Err(DockerError::no_such_container(key)),
        Err(err) => Err(err.into()),
    }
}

/// The runtime id of a started container, or `None` for one only created.
fn runtime_id(target: &Target) -> Option<String> {
    match target {
        Target::Docker(e) => e.runtime_id(),
        Target::Runtime(c) => Some(c.id.clone()),
    }
}

async fn start_entry(s: &Arc<Shared>, entry: &Arc<Entry>) -> DockerResult<bool> {
    {
        let mut live = entry.live();
        let running = live.runtime_id.is_some() && entry.exit.borrow().is_none();
        if live.starting || running {
            return Ok(false);
        }
        live.starting = true;
    }
    // A restart of an exited container: the old one goes first (its name is taken).
    if let Some(old) = entry.runtime_id() {
        let _ = s.runtime.remove_container(&old, true).await;
    }
    // Sizes asked for from here on queue up for the main process; one asked for before
    // is its initial size.
    let (resize_tx, mut resizes) = tokio::sync::mpsc::unbounded_channel();
    let mut spec = entry.spec.clone();
    {
        let mut live = entry.live();
        if spec.tty {
            live.resize = Some(resize_tx);
            spec.terminal_size = live.size.take().or(spec.terminal_size);
        }
    }
    let started = s.runtime.run_container(spec).await;
    let handle = match started {
        Ok(h) => h,
        Err(err) => return Err(start_failed(s, entry, err)),
    };
    let (rid, _, mut process) = handle.into_parts();
    let auto_remove = entry.spec.auto_remove;
    if auto_remove {
        if let Some(state) = &s.state {
            if let Err(err) = state.record_container(&rid) {
                tracing::warn!(%rid, %err, "cannot record an auto-remove container");
            }
        }
    }
    let mut pipes = Pipes {
        stdin: process.take_stdin(),
        stdout: process.take_stdout(),
        stderr: process.take_stderr(),
        tty: false,
    };
    entry.exit.send_replace(None);
    {
        let mut live = entry.live();
        live.runtime_id = Some(rid.clone());
        live.monitored = true;
        live.starting = false;
        live.started_at = Some(SystemTime::now());
        live.finished_at = None;
        for attacher in std::mem::take(&mut live.attachers) {
            match attacher.send(pipes) {
                Ok(()) => {
                    pipes = Pipes {
                        stdin: None,
                        stdout: None,
                        stderr: None,
                        tty: false,
                    };
                    break;
                }
                Err(back) => pipes = back,
            }
        }
    }
    stream::drain(pipes);
    s.docker.save(entry);
    s.docker
        .event("start", &entry.id, &entry.name, &entry.image);
    let shared = s.clone();
    let entry = entry.clone();
    tokio::spawn(async move {
        let status = loop {
            tokio::select! {
                status = process.wait() => break status.unwrap_or(ExitStatus::Exited(-1)),
                Some(size) = resizes.recv() => {
                    if let Err(err) = process.resize(size).await {
                        tracing::debug!(%err, "resizing a container's terminal");
                    }
                }
            }
        };
        {
            let mut live = entry.live();
            live.finished_at = Some(SystemTime::now());
            live.resize = None;
        }
        shared
            .docker
            .event("die", &entry.id, &entry.name, &entry.image);
        if auto_remove {
            // The shim removed the container before reporting the exit.
            if let Some(state) = &shared.state {
                state.forget_container(&rid);
            }
            shared.docker.forget(&entry.id);
            shared
                .docker
                .event("destroy", &entry.id, &entry.name, &entry.image);
        }
        entry.exit.send_replace(Some(status));
    });
    Ok(true)
}

/// A start that failed: the container ends with docker's code for the reason (127 no
/// such program, 126 not executable, 125 else), waiters and attachers are released,
/// and an auto-remove container goes; the error names the reason in the words the
/// docker CLI looks for to pick its exit code.
fn start_failed(s: &Shared, entry: &Arc<Entry>, err: locald::Error) -> DockerError {
    let (code, hint) = match &err {
        locald::Error::ProgramNotFound { program } => (
            127,
            format!(": exec: \"{program}\": executable file not found in $PATH"),
        ),
        locald::Error::PermissionDenied { .. } => (126, ": permission denied".to_owned()),
        _ => (125, String::new()),
    };
    {
        let mut live = entry.live();
        live.starting = false;
        live.attachers.clear();
        live.finished_at = Some(SystemTime::now());
        live.resize = None;
    }
    if entry.spec.auto_remove {
        s.docker.forget(&entry.id);
    }
    entry.exit.send_replace(Some(ExitStatus::Exited(code)));
    let err = DockerError::from(err);
    DockerError::new(err.status, format!("{}{hint}", err.message()))
}

/// `POST /containers/{id}/resize?h=&w=`: the size of the container's terminal (kept
/// for its start when it has not started yet).
pub(crate) async fn resize(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    axum::extract::Query(q): axum::extract::Query<super::ResizeQuery>,
) -> DockerResult<StatusCode> {
    if let Target::Docker(entry) = resolve(&s, &key).await? {
        let mut live = entry.live();
        let live = &mut *live;
        q.deliver(&live.resize, &mut live.size);
    }
    Ok(StatusCode::OK)
}

pub(crate) async fn start(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
) -> DockerResult<Response> {
    match resolve(&s, &key).await? {
        Target::Docker(entry) => {
            if start_entry(&s, &entry).await? {
                Ok(StatusCode::NO_CONTENT.into_response())
            } else {
                Ok(StatusCode::NOT_MODIFIED.into_response())
            }
        }
        Target::Runtime(c) => match c.state {
            ContainerState::Running => Ok(StatusCode::NOT_MODIFIED.into_response()),
            _ => Err(DockerError::bad_request(format!(
                "container {} was not created through the Docker API and cannot be started again",
                c.name
            ))),
        },
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct AttachQuery {
    stdin: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    logs: Option<String>,
    stream: Option<String>,
}

pub(crate) async fn attach(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    Query(q): Query<AttachQuery>,
    mut req: Request,
) -> DockerResult<Response> {
    let target = resolve(&s, &key).await?;
    let want_stdin = flag(q.stdin.as_ref());
    let want_stdout = flag(q.stdout.as_ref());
    let want_stderr = flag(q.stderr.as_ref());
    match target {
        Target::Docker(entry) if entry.runtime_id().is_none() => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let tty = entry.tty();
            let (response, conn) = stream::hijack(&mut req, tty)?;
            entry.live().attachers.push(tx);
            s.sessions.spawn(async move {
                let Some((input, output)) = conn.open().await else {
                    return;
                };
                let Ok(mut pipes) = rx.await else { return };
                if !want_stdin {
                    pipes.stdin = None;
                }
                if !want_stdout {
                    pipes.stdout = None;
                }
                if !want_stderr {
                    pipes.stderr = None;
                }
                let mut output = stream::pump(pipes, input, output, tty).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut output).await;
            });
            Ok(response)
        }
        target => {
            // Started: its pipes are taken; follow its log from now on (no stdin).
            let tty = match &target {
                Target::Docker(e) => e.tty(),
                Target::Runtime(_) => false,
            };
            let rid = runtime_id(&target).expect("started");
            let mut options = LogOptions::default();
            // `logs`: what it wrote so far first; `stream`: what it writes from now on.
            options.follow = q.stream.is_none() || flag(q.stream.as_ref());
            options.tail = if flag(q.logs.as_ref()) { None } else { Some(0) };
            let chunks = s.runtime.container_logs(&rid, options).await?;
            let (response, conn) = stream::hijack(&mut req, tty)?;
            s.sessions.spawn(async move {
                let Some((_, mut output)) = conn.open().await else {
                    return;
                };
                write_chunks(chunks, &mut output, tty, want_stdout, want_stderr).await;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut output).await;
            });
            Ok(response)
        }
    }
}

async fn write_chunks(
    mut chunks: locald::LogChunks,
    output: &mut stream::Writer,
    tty: bool,
    stdout: bool,
    stderr: bool,
) {
    use tokio::io::AsyncWriteExt;
    while let Some(Ok((which, data))) = chunks.next().await {
        let kind = match which {
            locald::LogStream::Stdout if stdout => locald::remote::protocol::FrameKind::Stdout,
            locald::LogStream::Stderr if stderr => locald::remote::protocol::FrameKind::Stderr,
            _ => continue,
        };
        let bytes = if tty {
            bytes::Bytes::from(data)
        } else {
            locald::remote::protocol::Frame::new(kind, data).encode()
        };
        if output.write_all(&bytes).await.is_err() {
            return;
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct WaitQuery {
    condition: Option<String>,
}

fn status_body(status: ExitStatus) -> Value {
    json!({ "StatusCode": status.shell_code(), "Error": null })
}

pub(crate) async fn wait(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    Query(q): Query<WaitQuery>,
) -> DockerResult<Response> {
    let target = resolve(&s, &key).await?;
    let condition = q
        .condition
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "not-running".to_owned());
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(DockerError::bad_request(format!(
            "invalid condition: {condition:?}"
        )));
    }
    // The headers go out now, the status when the container ends, as docker does.
    let body = match target {
        Target::Docker(entry) if !entry.live().monitored && entry.runtime_id().is_some() => {
            // Started by a previous daemon: the runtime knows when it ends.
            let runtime = s.runtime.clone();
            let rid = entry.runtime_id().expect("checked");
            futures_util::stream::once(async move {
                let body = match runtime.wait_container(&rid).await {
                    Ok(status) => status_body(status),
                    Err(err) => {
                        json!({ "StatusCode": -1, "Error": { "Message": err.to_string() } })
                    }
                };
                Ok::<_, std::convert::Infallible>(body.to_string())
            })
            .boxed()
        }
        Target::Docker(entry) => {
            if condition == "not-running" && entry.runtime_id().is_none() && !entry.live().starting
            {
                return Ok(Json(status_body(ExitStatus::Exited(0))).into_response());
            }
            let mut rx = entry.exit.subscribe();
            futures_util::stream::once(async move {
                let status = match rx.wait_for(Option::is_some).await {
                    Ok(v) => v.expect("waited for Some"),
                    Err(_) => ExitStatus::Exited(-1),
                };
                Ok::<_, std::convert::Infallible>(status_body(status).to_string())
            })
            .boxed()
        }
        Target::Runtime(c) => {
            let runtime = s.runtime.clone();
            futures_util::stream::once(async move {
                let body = match runtime.wait_container(&c.id).await {
                    Ok(status) => status_body(status),
                    Err(err) => {
                        json!({ "StatusCode": -1, "Error": { "Message": err.to_string() } })
                    }
                };
                Ok::<_, std::convert::Infallible>(body.to_string())
            })
            .boxed()
        }
    };
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .map_err(|e| DockerError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct LogsQuery {
    follow: Option<String>,
    stdout: Option<String>,
    stderr: Option<String>,
    tail: Option<String>,
    timestamps: Option<String>,
}

pub(crate) async fn logs(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    Query(q): Query<LogsQuery>,
) -> DockerResult<Response> {
    let target = resolve(&s, &key).await?;
    let (stdout, stderr) = (flag(q.stdout.as_ref()), flag(q.stderr.as_ref()));
    if !stdout && !stderr {
        return Err(DockerError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    if flag(q.timestamps.as_ref()) {
        tracing::warn!("docker logs --timestamps: locald's logs carry no timestamps; ignored");
    }
    let tty = match &target {
        Target::Docker(e) => e.tty(),
        Target::Runtime(_) => false,
    };
    let content_type = if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    };
    let Some(rid) = runtime_id(&target) else {
        return Ok(([(header::CONTENT_TYPE, content_type)], "").into_response());
    };
    let mut options = LogOptions::default();
    options.follow = flag(q.follow.as_ref());
    options.tail = match q.tail.as_deref() {
        None | Some("all") | Some("") => None,
        Some(n) => Some(
            n.parse()
                .map_err(|_| DockerError::bad_request(format!("invalid tail {n:?}")))?,
        ),
    };
    let chunks = s.runtime.container_logs(&rid, options).await?;
    let (w, r) = tokio::io::duplex(64 << 10);
    tokio::spawn(async move {
        let mut w: stream::Writer = Box::new(w);
        write_chunks(chunks, &mut w, tty, stdout, stderr).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
    });
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(tokio_util::io::ReaderStream::new(r)))
        .map_err(|e| DockerError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct StopQuery {
    t: Option<i64>,
    signal: Option<String>,
}

fn is_running(s: &ContainerSummary) -> bool {
    matches!(s.state, ContainerState::Running | ContainerState::Paused)
}

async fn current(s: &Shared, target: &Target) -> Option<ContainerSummary> {
    let rid = runtime_id(target)?;
    s.runtime.inspect_container(&rid).await.ok()
}

pub(crate) async fn stop(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    Query(q): Query<StopQuery>,
) -> DockerResult<Response> {
    let target = resolve(&s, &key).await?;
    if q.signal.is_some() {
        tracing::warn!("docker stop --signal: locald uses the image's stop signal");
    }
    match current(&s, &target).await {
        Some(c) if is_running(&c) => {
            let grace = match q.t {
                Some(t) if t >= 0 => Duration::from_secs(t as u64),
                _ => STOP_GRACE,
            };
            s.runtime.stop_container(&c.id, grace).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Ok(StatusCode::NOT_MODIFIED.into_response()),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct KillQuery {
    signal: Option<String>,
}

pub(crate) async fn kill(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    Query(q): Query<KillQuery>,
) -> DockerResult<Response> {
    let target = resolve(&s, &key).await?;
    let signal = match q.signal.as_deref().filter(|s| !s.is_empty()) {
        None => Signal::KILL,
        Some(name) => name
            .parse::<Signal>()
            .map_err(|e| DockerError::bad_request(e.to_string()))?,
    };
    match current(&s, &target).await {
        Some(c) if is_running(&c) => {
            s.runtime.kill_container(&c.id, signal).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(DockerError::conflict(format!(
            "Cannot kill container: {key}: Container is not running"
        ))),
    }
}

pub(crate) async fn restart(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    Query(q): Query<StopQuery>,
) -> DockerResult<Response> {
    let target = resolve(&s, &key).await?;
    let Target::Docker(entry) = &target else {
        return Err(DockerError::bad_request(
            "only containers created through the Docker API can be restarted",
        ));
    };
    if let Some(c) = current(&s, &target).await.filter(is_running) {
        let grace = match q.t {
            Some(t) if t >= 0 => Duration::from_secs(t as u64),
            _ => STOP_GRACE,
        };
        s.runtime.stop_container(&c.id, grace).await?;
        let mut rx = entry.exit.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
    }
    start_entry(&s, entry).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RemoveQuery {
    force: Option<String>,
}

pub(crate) async fn remove(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    Query(q): Query<RemoveQuery>,
) -> DockerResult<Response> {
    let target = resolve(&s, &key).await?;
    let force = flag(q.force.as_ref());
    if let Some(c) = current(&s, &target).await {
        if is_running(&c) && !force {
            return Err(DockerError::conflict(format!(
                "You cannot remove a running container {}. Stop the container before attempting removal or force remove",
                match &target {
                    Target::Docker(e) => e.id.clone(),
                    Target::Runtime(c) => c.id.clone(),
                }
            )));
        }
        match s.runtime.remove_container(&c.id, force).await {
            Ok(()) | Err(locald::Error::NotFound { .. }) => {}
            Err(err) => return Err(err.into()),
        }
        if let Some(state) = &s.state {
            state.forget_container(&c.id);
        }
    }
    if let Target::Docker(entry) = &target {
        s.docker.forget(&entry.id);
        s.docker
            .event("destroy", &entry.id, &entry.name, &entry.image);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /containers/prune`: removes every stopped container (`filters` label).
pub(crate) async fn prune(
    State(s): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> DockerResult<Response> {
    let filters = parse_filters(q.filters.as_deref())?;
    let mut deleted = Vec::new();
    for v in views(&s, true).await? {
        if matches!(v.state, ContainerState::Running | ContainerState::Paused)
            || !matches_filters(&v, &filters)?
        {
            continue;
        }
        let rid = v
            .entry
            .as_ref()
            .map_or(Some(v.id.clone()), |e| e.runtime_id());
        if let Some(rid) = rid {
            match s.runtime.remove_container(&rid, false).await {
                Ok(()) | Err(locald::Error::NotFound { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        if let Some(e) = &v.entry {
            s.docker.forget(&e.id);
        }
        deleted.push(v.id);
    }
    Ok(Json(json!({ "ContainersDeleted": deleted, "SpaceReclaimed": 0 })).into_response())
}
