//! `/containers/...`: create, start, attach, wait, logs, stop, kill, restart, remove,
//! list and inspect.

use std::{
    collections::{BTreeMap, HashMap},
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
use locald::{
    ContainerSpec, ContainerState, ContainerSummary, ExitStatus, ImageRef, LogOptions, Mount,
    NetworkMode, Signal,
};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{flag, stream, table::Entry, DockerError, DockerResult, IdParam};
use crate::daemon::{server::Shared, session::Pipes};

/// Docker's default grace period for `stop`.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A string or a list of strings, as docker accepts `Cmd` and `Entrypoint`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StrSlice {
    One(String),
    Many(Vec<String>),
}

impl StrSlice {
    fn into_vec(self) -> Vec<String> {
        match self {
            StrSlice::One(s) => vec![s],
            StrSlice::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    image: Option<String>,
    cmd: Option<StrSlice>,
    entrypoint: Option<StrSlice>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    hostname: Option<String>,
    tty: Option<bool>,
    open_stdin: Option<bool>,
    labels: Option<BTreeMap<String, String>>,
    exposed_ports: Option<BTreeMap<String, Value>>,
    healthcheck: Option<Value>,
    stop_signal: Option<String>,
    host_config: Option<HostConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct HostConfig {
    binds: Option<Vec<String>>,
    mounts: Option<Vec<MountBody>>,
    port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    publish_all_ports: Option<bool>,
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    pids_limit: Option<i64>,
    network_mode: Option<String>,
    auto_remove: Option<bool>,
    readonly_rootfs: Option<bool>,
    tmpfs: Option<BTreeMap<String, String>>,
    privileged: Option<bool>,
    restart_policy: Option<RestartPolicy>,
    cap_add: Option<Vec<String>>,
    extra_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RestartPolicy {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct MountBody {
    #[serde(rename = "Type")]
    kind: Option<String>,
    source: Option<String>,
    target: Option<String>,
    read_only: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortBinding {
    host_ip: Option<String>,
    host_port: Option<String>,
}

/// A container port key, `80/tcp`, as `(80, "tcp")`.
fn port_key(key: &str) -> DockerResult<(u16, &str)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let port = port
        .parse()
        .map_err(|_| DockerError::bad_request(format!("invalid port {key:?}")))?;
    Ok((port, proto))
}

/// The spec for a docker `Config` and `HostConfig`, and warnings for what is ignored.
fn build_spec(body: CreateBody, name: &str) -> DockerResult<(ContainerSpec, Vec<String>)> {
    let image = body
        .image
        .filter(|i| !i.is_empty())
        .ok_or_else(|| DockerError::bad_request("config has no image"))?;
    let mut warnings = Vec::new();
    let mut b = ContainerSpec::builder(image.clone()).name(name);
    if let Some(cmd) = body.cmd {
        b = b.cmd(cmd.into_vec());
    }
    if let Some(ep) = body.entrypoint {
        b = b.entrypoint(ep.into_vec().into_iter().filter(|s| !s.is_empty()));
    }
    for var in body.env.unwrap_or_default() {
        match var.split_once('=') {
            Some((k, v)) => b = b.env(k, v),
            // `Env: ["NAME"]` takes the client's value; the client resolves it.
            None => warnings.push(format!("environment variable {var} has no value; ignored")),
        }
    }
    if let Some(dir) = body.working_dir.filter(|d| !d.is_empty()) {
        b = b.workdir(dir);
    }
    if let Some(user) = body.user.filter(|u| !u.is_empty()) {
        b = b.user(user);
    }
    if let Some(host) = body.hostname.filter(|h| !h.is_empty()) {
        b = b.hostname(host);
    }
    b = b
        .tty(body.tty.unwrap_or(false))
        .stdin(body.open_stdin.unwrap_or(false));
    for (k, v) in body.labels.unwrap_or_default() {
        b = b.label(k, v);
    }
    if body.healthcheck.is_some_and(|h| !h.is_null()) {
        warnings.push("locald ignores Healthcheck".to_owned());
    }
    if body.stop_signal.is_some_and(|s| !s.is_empty()) {
        warnings.push("locald ignores StopSignal; the image's stop signal applies".to_owned());
    }
    let host = body.host_config.unwrap_or_default();
    for bind in host.binds.unwrap_or_default() {
        b = b.volume(bind);
    }
    for m in host.mounts.unwrap_or_default() {
        let target = m.target.unwrap_or_default();
        let ro = m.read_only.unwrap_or(false);
        match m.kind.as_deref().unwrap_or("volume") {
            "bind" => b = b.mount(Mount::bind(m.source.unwrap_or_default(), target, ro)),
            "tmpfs" => b = b.mount(Mount::tmpfs(target)),
            other => {
                return Err(DockerError::bad_request(format!(
                    "mount type {other:?} is not supported by locald (bind and tmpfs are)"
                )))
            }
        }
    }
    let mut published: Vec<u16> = Vec::new();
    for (key, bindings) in host.port_bindings.unwrap_or_default() {
        let (port, proto) = port_key(&key)?;
        let bindings = bindings.unwrap_or_default();
        let bindings = if bindings.is_empty() {
            vec![PortBinding::default()]
        } else {
            bindings
        };
        for pb in bindings {
            let ip = pb.host_ip.unwrap_or_default();
            let hp = pb.host_port.unwrap_or_default();
            let spec = match (ip.is_empty() || ip == "0.0.0.0", hp.is_empty()) {
                (true, true) => format!("{port}/{proto}"),
                (true, false) => format!("{hp}:{port}/{proto}"),
                (false, _) if ip.contains(':') => format!("[{ip}]:{hp}:{port}/{proto}"),
                (false, _) => format!("{ip}:{hp}:{port}/{proto}"),
            };
            b = b.publish(spec);
            published.push(port);
        }
    }
    if host.publish_all_ports.unwrap_or(false) {
        for key in body.exposed_ports.unwrap_or_default().keys() {
            let (port, proto) = port_key(key)?;
            if !published.contains(&port) {
                b = b.publish(format!("{port}/{proto}"));
            }
        }
    }
    if let Some(m) = host.memory.filter(|m| *m > 0) {
        b = b.memory(m.to_string());
    }
    if let Some(n) = host.nano_cpus.filter(|n| *n > 0) {
        b = b.cpus(format!("{}", n as f64 / 1e9));
    }
    if let Some(p) = host.pids_limit.filter(|p| *p > 0) {
        b = b.pids_limit(p);
    }
    let network = match host.network_mode.as_deref().unwrap_or("") {
        "" | "default" | "bridge" => NetworkMode::Private,
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => {
            return Err(DockerError::bad_request(format!(
                "network mode {other:?} is not supported by locald (none, host, bridge are)"
            )))
        }
    };
    b = b.network(network);
    b = b
        .read_only(host.readonly_rootfs.unwrap_or(false))
        .auto_remove(host.auto_remove.unwrap_or(false));
    for (dest, opts) in host.tmpfs.unwrap_or_default() {
        b = b.tmpfs(if opts.is_empty() {
            dest
        } else {
            format!("{dest}:{opts}")
        });
    }
    if host.privileged.unwrap_or(false) {
        return Err(DockerError::bad_request(
            "privileged containers are not supported by locald",
        ));
    }
    if host
        .restart_policy
        .and_then(|r| r.name)
        .is_some_and(|n| !n.is_empty() && n != "no")
    {
        warnings.push("locald ignores RestartPolicy".to_owned());
    }
    if host.cap_add.is_some_and(|c| !c.is_empty()) {
        warnings.push("locald ignores CapAdd".to_owned());
    }
    if host.extra_hosts.is_some_and(|c| !c.is_empty()) {
        warnings.push("locald ignores ExtraHosts".to_owned());
    }
    let mut spec = b
        .build()
        .map_err(|e| DockerError::bad_request(e.to_string()))?;
    if let locald::ContainerSource::Image(image) = &spec.source {
        // Like dockerd, registries on loopback are insecure by default.
        if super::is_loopback_host(image.registry()) {
            spec.insecure = true;
        }
    }
    Ok((spec, warnings))
}

/// A docker-style name no container has: `locald_` and 8 hex digits.
fn generate_name() -> DockerResult<String> {
    let id = super::random_id()?;
    Ok(format!("locald_{}", &id[..8]))
}

fn same_image(a: &ImageRef, b: &ImageRef) -> bool {
    a.registry() == b.registry()
        && a.repository() == b.repository()
        && a.reference() == b.reference()
}

/// True when the image is in the store (or is the built-in one locald makes).
async fn image_exists(s: &Shared, image: &ImageRef) -> DockerResult<bool> {
    if image.familiar() == "localhost/locald/busybox:latest"
        || (image.registry() == "localhost" && image.repository() == "locald/busybox")
    {
        return Ok(true);
    }
    Ok(s.runtime
        .list_images()
        .await?
        .iter()
        .any(|i| same_image(&i.reference, image)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct NameQuery {
    name: Option<String>,
}

pub(crate) async fn create(
    State(s): State<Arc<Shared>>,
    Query(q): Query<NameQuery>,
    req: Request,
) -> DockerResult<Response> {
    let bytes = axum::body::to_bytes(req.into_body(), locald::remote::protocol::MAX_REQUEST_BYTES)
        .await
        .map_err(|e| DockerError::bad_request(e.to_string()))?;
    let raw: Value = serde_json::from_slice(&bytes)
        .map_err(|e| DockerError::bad_request(format!("malformed request body: {e}")))?;
    let body: CreateBody = serde_json::from_value(raw.clone())
        .map_err(|e| DockerError::bad_request(format!("malformed request body: {e}")))?;
    let name = match q.name.filter(|n| !n.is_empty()) {
        Some(n) => n.strip_prefix('/').map(str::to_owned).unwrap_or(n),
        None => generate_name()?,
    };
    let taken = s
        .docker
        .name_taken(&name)
        .or(match s.runtime.inspect_container(&name).await {
            Ok(c) if c.name == name => Some(c.id),
            _ => None,
        });
    if let Some(other) = taken {
        return Err(DockerError::conflict(format!(
            "Conflict. The container name \"/{name}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
        )));
    }
    let image = body.image.clone().unwrap_or_default();
    let (spec, warnings) = build_spec(body, &name)?;
    if let locald::ContainerSource::Image(r) = &spec.source {
        if !image_exists(&s, r).await? {
            return Err(DockerError::no_such_image(&r.familiar()));
        }
    }
    let id = super::random_id()?;
    let mut config = raw.clone();
    if let Some(obj) = config.as_object_mut() {
        obj.remove("HostConfig");
        obj.remove("NetworkingConfig");
        obj.insert(
            "Hostname".into(),
            json!(spec.hostname.clone().unwrap_or_else(|| id[..12].to_owned())),
        );
    }
    let host_config = raw.get("HostConfig").cloned().unwrap_or_else(|| json!({}));
    let entry = Arc::new(Entry {
        id: id.clone(),
        name: name.clone(),
        image: image.clone(),
        created: SystemTime::now(),
        config,
        host_config,
        spec,
        live: Default::default(),
        exit: tokio::sync::watch::channel(None).0,
    });
    s.docker.insert(entry);
    s.docker.event("create", &id, &name, &image);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": id, "Warnings": warnings })),
    )
        .into_response())
}

/// What a docker key names.
enum Target {
    /// A container created here.
    Docker(Arc<Entry>),
    /// A container the runtime knows and this table does not (`locald run`, or from
    /// before a daemon restart), by runtime id.
    Runtime(Box<ContainerSummary>),
}

async fn resolve(s: &Shared, key: &str) -> DockerResult<Target> {
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
    let started = s.runtime.run_container(entry.spec.clone()).await;
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
        let status = process.wait().await.unwrap_or(ExitStatus::Exited(-1));
        entry.live().finished_at = Some(SystemTime::now());
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
    }
    if entry.spec.auto_remove {
        s.docker.forget(&entry.id);
    }
    entry.exit.send_replace(Some(ExitStatus::Exited(code)));
    let err = DockerError::from(err);
    DockerError::new(err.status, format!("{}{hint}", err.message()))
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
    let _ = flag(q.logs.as_ref());
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
            options.follow = true;
            options.tail = Some(0);
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
    since: Option<String>,
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
    let _ = q.since;
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
    v: Option<String>,
}

pub(crate) async fn remove(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    Query(q): Query<RemoveQuery>,
) -> DockerResult<Response> {
    let target = resolve(&s, &key).await?;
    let force = flag(q.force.as_ref());
    let _ = q.v;
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

/// A container as `list` and `inspect` see it: the runtime's summary (when started)
/// and the docker entry (when created here).
struct View {
    id: String,
    name: String,
    image: String,
    command: Vec<String>,
    created: u64,
    state: ContainerState,
    pid: u32,
    labels: BTreeMap<String, String>,
    ports: Vec<locald::PortMapping>,
    oom_killed: bool,
    entry: Option<Arc<Entry>>,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn view(entry: Option<Arc<Entry>>, summary: Option<ContainerSummary>) -> View {
    match (entry, summary) {
        (entry, Some(c)) => View {
            id: entry
                .as_ref()
                .map_or_else(|| c.id.clone(), |e| e.id.clone()),
            name: c.name.clone(),
            image: entry.as_ref().map_or_else(
                || c.image.as_ref().map(|i| i.familiar()).unwrap_or_default(),
                |e| e.image.clone(),
            ),
            command: c.command.clone(),
            created: entry.as_ref().map_or(c.created, |e| secs(e.created)),
            state: c.state,
            pid: c.pid.unwrap_or(0),
            labels: c.labels.clone(),
            ports: c.ports.clone(),
            oom_killed: c.oom_killed,
            entry,
        },
        (Some(e), None) => {
            // Created only, or gone from the runtime (auto-removed, exited).
            let state = match *e.exit.borrow() {
                Some(status) => ContainerState::Exited(status),
                None => ContainerState::Created,
            };
            let mut command = e.spec.entrypoint.clone().unwrap_or_default();
            command.extend(e.spec.cmd.clone().unwrap_or_default());
            View {
                id: e.id.clone(),
                name: e.name.clone(),
                image: e.image.clone(),
                command,
                created: secs(e.created),
                state,
                pid: 0,
                labels: e.spec.labels.clone(),
                ports: e.spec.ports.clone(),
                oom_killed: false,
                entry: Some(e),
            }
        }
        (None, None) => unreachable!("a view of nothing"),
    }
}

async fn views(s: &Shared, all: bool) -> DockerResult<Vec<View>> {
    let summaries = s.runtime.list_containers(true).await?;
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for c in summaries {
        let entry = s.docker.by_runtime_id(&c.id);
        if let Some(e) = &entry {
            seen.push(e.id.clone());
        }
        out.push(view(entry, Some(c)));
    }
    for e in s.docker.all() {
        if !seen.contains(&e.id) && e.runtime_id().is_none() {
            out.push(view(Some(e), None));
        }
    }
    if !all {
        out.retain(|v| matches!(v.state, ContainerState::Running | ContainerState::Paused));
    }
    out.sort_by_key(|v| std::cmp::Reverse(v.created));
    Ok(out)
}

fn state_name(state: &ContainerState) -> &'static str {
    match state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Paused => "paused",
        ContainerState::Exited(_) => "exited",
        _ => "dead",
    }
}

fn exit_code(state: &ContainerState) -> i32 {
    match state {
        ContainerState::Exited(s) => s.shell_code(),
        _ => 0,
    }
}

/// Docker's `Up 5 minutes`, `Exited (0) 2 seconds ago`.
fn ago(secs: u64) -> String {
    match secs {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".to_owned(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".to_owned(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

fn status_text(v: &View) -> String {
    let now = secs(SystemTime::now());
    let live = v.entry.as_ref().map(|e| {
        let l = e.live();
        (l.started_at.map(secs), l.finished_at.map(secs))
    });
    match v.state {
        ContainerState::Created => "Created".to_owned(),
        ContainerState::Running => {
            let since = live.and_then(|l| l.0).unwrap_or(v.created);
            format!("Up {}", ago(now.saturating_sub(since)))
        }
        ContainerState::Paused => "Up (Paused)".to_owned(),
        ContainerState::Exited(s) => match live.and_then(|l| l.1) {
            Some(at) => format!(
                "Exited ({}) {} ago",
                s.shell_code(),
                ago(now.saturating_sub(at))
            ),
            None => format!("Exited ({})", s.shell_code()),
        },
        _ => "Dead".to_owned(),
    }
}

fn port_list(ports: &[locald::PortMapping]) -> Vec<Value> {
    ports
        .iter()
        .map(|p| {
            let mut v = json!({ "PrivatePort": p.container_port, "Type": p.protocol.to_string() });
            if let Some(hp) = p.host_port {
                v["PublicPort"] = json!(hp);
                v["IP"] = json!(p
                    .host_ip
                    .map_or_else(|| "127.0.0.1".to_owned(), |i| i.to_string()));
            }
            v
        })
        .collect()
}

/// Docker's `filters` query: `{"label":{"a=b":true}}` or `{"label":["a=b"]}`.
fn parse_filters(raw: Option<&str>) -> DockerResult<HashMap<String, Vec<String>>> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(HashMap::new());
    };
    let value: HashMap<String, Value> = serde_json::from_str(raw)
        .map_err(|e| DockerError::bad_request(format!("invalid filters: {e}")))?;
    let mut out = HashMap::new();
    for (k, v) in value {
        let vals = match v {
            Value::Object(m) => m
                .into_iter()
                .filter(|(_, b)| b == &json!(true))
                .map(|(k, _)| k)
                .collect(),
            Value::Array(a) => a
                .into_iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => return Err(DockerError::bad_request(format!("invalid filter {k:?}"))),
        };
        out.insert(k, vals);
    }
    Ok(out)
}

fn matches_filters(v: &View, filters: &HashMap<String, Vec<String>>) -> DockerResult<bool> {
    for (key, values) in filters {
        if values.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "label" => values.iter().all(|want| match want.split_once('=') {
                Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
                None => v.labels.contains_key(want),
            }),
            "status" => values.iter().any(|s| s == state_name(&v.state)),
            "name" => values
                .iter()
                .any(|n| v.name.contains(n.strip_prefix('/').unwrap_or(n))),
            "id" => values.iter().any(|i| v.id.starts_with(i.as_str())),
            "exited" => values.iter().any(|c| {
                matches!(v.state, ContainerState::Exited(_))
                    && c == &exit_code(&v.state).to_string()
            }),
            "ancestor" => values.contains(&v.image),
            other => {
                return Err(DockerError::bad_request(format!(
                    "invalid filter '{other}'"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    all: Option<String>,
    filters: Option<String>,
    limit: Option<i64>,
}

pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> DockerResult<Response> {
    let filters = parse_filters(q.filters.as_deref())?;
    // A status filter other than running reaches stopped containers, as docker's does.
    let all =
        flag(q.all.as_ref()) || filters.contains_key("status") || filters.contains_key("exited");
    let mut out = Vec::new();
    for v in views(&s, all).await? {
        if !matches_filters(&v, &filters)? {
            continue;
        }
        let mode = v
            .entry
            .as_ref()
            .and_then(|e| {
                e.host_config
                    .get("NetworkMode")?
                    .as_str()
                    .map(str::to_owned)
            })
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        out.push(json!({
            "Id": v.id,
            "Names": [format!("/{}", v.name)],
            "Image": v.image,
            "ImageID": "",
            "Command": shell_join(&v.command),
            "Created": v.created,
            "Ports": port_list(&v.ports),
            "Labels": v.labels,
            "State": state_name(&v.state),
            "Status": status_text(&v),
            "HostConfig": { "NetworkMode": mode },
            "NetworkSettings": { "Networks": networks(&mode) },
            "Mounts": [],
        }));
    }
    if let Some(limit) = q.limit.filter(|l| *l > 0) {
        out.truncate(limit as usize);
    }
    Ok(Json(out).into_response())
}

fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `NetworkSettings.Networks`: the one network a container has. On the private
/// network (docker's bridge) published ports are bound on the host's loopback, so the
/// gateway a client reaches them through (testcontainers inside a container) is
/// `127.0.0.1`; there is no container address.
fn networks(mode: &str) -> Value {
    let name = match mode {
        "" | "default" => "bridge",
        other => other,
    };
    let gateway = if name == "bridge" { "127.0.0.1" } else { "" };
    json!({ name: {
        "NetworkID": name,
        "EndpointID": "",
        "Gateway": gateway,
        "IPAddress": "",
        "IPPrefixLen": 0,
        "MacAddress": "",
    }})
}

fn rfc3339(t: Option<SystemTime>) -> String {
    t.map_or_else(
        || "0001-01-01T00:00:00Z".to_owned(),
        |t| humantime::format_rfc3339_nanos(t).to_string(),
    )
}

pub(crate) async fn inspect(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
) -> DockerResult<Response> {
    let target = resolve(&s, &key).await?;
    let v = match target {
        Target::Docker(e) => {
            let summary = match e.runtime_id() {
                Some(rid) => s.runtime.inspect_container(&rid).await.ok(),
                None => None,
            };
            view(Some(e), summary)
        }
        Target::Runtime(c) => view(None, Some(*c)),
    };
    let (started, finished) = v.entry.as_ref().map_or((None, None), |e| {
        let l = e.live();
        (l.started_at, l.finished_at)
    });
    let mut ports = serde_json::Map::new();
    for p in &v.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        let binding = p.host_port.map(|hp| {
            json!({
                "HostIp": p.host_ip.map_or_else(|| "127.0.0.1".to_owned(), |i| i.to_string()),
                "HostPort": hp.to_string(),
            })
        });
        let slot = ports.entry(key).or_insert_with(|| json!([]));
        if let (Some(b), Some(list)) = (binding, slot.as_array_mut()) {
            list.push(b);
        }
    }
    let (config, host_config, tty) = match &v.entry {
        Some(e) => (e.config.clone(), e.host_config.clone(), e.tty()),
        None => (
            json!({ "Image": v.image, "Cmd": v.command, "Labels": v.labels, "Tty": false, "Env": [] }),
            json!({}),
            false,
        ),
    };
    let mut host_config = host_config;
    if let Some(obj) = host_config.as_object_mut() {
        // The log is locald's own, read with `logs`: clients (docker-py) read logs only
        // from the drivers they know keep them.
        obj.insert(
            "LogConfig".into(),
            json!({ "Type": "json-file", "Config": {} }),
        );
        let mode = obj.get("NetworkMode").and_then(Value::as_str).unwrap_or("");
        if mode.is_empty() {
            obj.insert("NetworkMode".into(), json!("default"));
        }
        obj.entry("AutoRemove").or_insert_with(|| json!(false));
    }
    let network_mode = host_config
        .get("NetworkMode")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    let mut config = config;
    if let Some(obj) = config.as_object_mut() {
        obj.insert("Tty".into(), json!(tty));
        obj.entry("Labels").or_insert_with(|| json!(v.labels));
        if obj.get("Labels").is_some_and(Value::is_null) {
            obj.insert("Labels".into(), json!({}));
        }
    }
    let running = matches!(v.state, ContainerState::Running | ContainerState::Paused);
    let created_at = v
        .entry
        .as_ref()
        .map(|e| e.created)
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(v.created));
    Ok(Json(json!({
        "Id": v.id,
        "Created": rfc3339(Some(created_at)),
        "Path": v.command.first().cloned().unwrap_or_default(),
        "Args": v.command.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": state_name(&v.state),
            "Running": running,
            "Paused": matches!(v.state, ContainerState::Paused),
            "Restarting": false,
            "OOMKilled": v.oom_killed,
            "Dead": false,
            "Pid": v.pid,
            "ExitCode": exit_code(&v.state),
            "Error": "",
            "StartedAt": rfc3339(started),
            "FinishedAt": rfc3339(finished),
        },
        "Image": v.image,
        "Name": format!("/{}", v.name),
        "RestartCount": 0,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": host_config,
        "Config": config,
        "Mounts": [],
        "NetworkSettings": {
            "Ports": ports,
            "IPAddress": "",
            "Gateway": "",
            "Networks": networks(&network_mode),
        },
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(body: Value) -> DockerResult<(ContainerSpec, Vec<String>)> {
        build_spec(serde_json::from_value(body).unwrap(), "web")
    }

    #[test]
    fn create_bodies_map_onto_the_spec() {
        let (spec, warnings) = spec(json!({
            "Image": "127.0.0.1:5000/app:1",
            "Cmd": ["serve", "--port", "80"],
            "Entrypoint": null,
            "Env": ["A=1", "B=x=y"],
            "WorkingDir": "/srv",
            "Tty": false,
            "OpenStdin": true,
            "Labels": {"k": "v"},
            "ExposedPorts": {"80/tcp": {}, "9000/tcp": {}},
            "HostConfig": {
                "Binds": ["/tmp:/data:ro"],
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                "PublishAllPorts": true,
                "Memory": 67108864,
                "NanoCpus": 1500000000,
                "PidsLimit": null,
                "NetworkMode": "bridge",
                "AutoRemove": true,
                "RestartPolicy": {"Name": "always"},
                "Tmpfs": {"/run": "size=1m"}
            }
        }))
        .unwrap();
        assert_eq!(spec.name.as_deref(), Some("web"));
        assert_eq!(
            spec.cmd.as_deref(),
            Some(&["serve".to_owned(), "--port".into(), "80".into()][..])
        );
        assert_eq!(spec.entrypoint, None);
        assert_eq!(spec.env.get("B").map(String::as_str), Some("x=y"));
        assert!(spec.stdin && !spec.tty && spec.auto_remove);
        assert_eq!(spec.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(spec.network, NetworkMode::Private);
        assert!(spec.insecure, "a loopback registry is insecure by default");
        assert_eq!(spec.resources.memory.map(|m| m.bytes()), Some(64 << 20));
        let ports: Vec<String> = spec.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(ports, ["8080:80/tcp", "9000/tcp"]);
        assert_eq!(spec.mounts.len(), 2);
        assert_eq!(warnings, ["locald ignores RestartPolicy"]);
    }

    #[test]
    fn create_refuses_what_locald_cannot_honour() {
        for (body, says) in [
            (json!({}), "config has no image"),
            (
                json!({"Image": "x", "HostConfig": {"NetworkMode": "mynet"}}),
                "network mode",
            ),
            (
                json!({"Image": "x", "HostConfig": {"Privileged": true}}),
                "privileged",
            ),
            (
                json!({"Image": "x", "HostConfig": {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v"}]}}),
                "mount type \"volume\"",
            ),
            (json!({"Image": "x", "HostConfig": {"Memory": 1}}), "memory"),
        ] {
            let err = spec(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(err.message().contains(says), "{body}: {}", err.message());
        }
        // Entrypoint as a string, and [""] to reset it.
        let (spec, _) = spec(json!({"Image": "x", "Entrypoint": "sh", "Cmd": "true"})).unwrap();
        assert_eq!(spec.entrypoint, Some(vec!["sh".to_owned()]));
        assert_eq!(spec.cmd, Some(vec!["true".to_owned()]));
        let (spec, _) = super::build_spec(
            serde_json::from_value(json!({"Image": "docker.io/library/x", "Entrypoint": [""]}))
                .unwrap(),
            "nn",
        )
        .unwrap();
        assert_eq!(spec.entrypoint, Some(vec![]));
        assert!(!spec.insecure);
    }

    #[test]
    fn filters_take_both_of_dockers_forms() {
        let a = parse_filters(Some(r#"{"label":{"a=b":true},"status":["running"]}"#)).unwrap();
        assert_eq!(a["label"], ["a=b"]);
        assert_eq!(a["status"], ["running"]);
        assert!(parse_filters(Some("{nope")).is_err());
        assert!(parse_filters(None).unwrap().is_empty());
        let mut summary = ContainerSummary::new("abc", "web-1", ContainerState::Running);
        summary.labels.insert("a".into(), "b".into());
        let v = view(None, Some(summary));
        assert!(matches_filters(&v, &a).unwrap());
        let other = parse_filters(Some(r#"{"label":["a=c"]}"#)).unwrap();
        assert!(!matches_filters(&v, &other).unwrap());
        let name = parse_filters(Some(r#"{"name":["/web"],"id":["ab"]}"#)).unwrap();
        assert!(matches_filters(&v, &name).unwrap());
        let bad = parse_filters(Some(r#"{"volume":["x"]}"#)).unwrap();
        assert!(matches_filters(&v, &bad).is_err());
    }

    #[test]
    fn durations_read_as_dockers() {
        assert_eq!(ago(0), "Less than a second");
        assert_eq!(ago(5), "5 seconds");
        assert_eq!(ago(90), "About a minute");
        assert_eq!(ago(600), "10 minutes");
        assert_eq!(ago(3 * 3600), "3 hours");
        assert_eq!(
            shell_join(&["sh".into(), "-c".into(), "echo hi".into()]),
            "sh -c \"echo hi\""
        );
    }
}
