//! [`RemoteRuntime`]: HTTP/1.1 requests to a daemon over a small pool of connections.

use std::{fmt, sync::Arc, time::Duration};

use crate::RegistryLogin;
use crate::{
    Command, ContainerHandle, ContainerSource, ContainerSpec, ContainerSummary, Error, ExitStatus,
    ImageRef, ImageSummary, LogChunks, LogOptions, MountSource, Output, Process, PruneReport,
    PullOptions, Result, Runtime, RuntimeInfo, Signal, Stdin, Stdio,
};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming,
    client::conn::http1::{self, SendRequest},
    header, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde::{de::DeserializeOwned, Serialize};
use tokio::{io::AsyncWriteExt, sync::Mutex};

use super::{
    protocol::{
        segment, DaemonInfo, ErrorBody, ImageRequest, ImportRequest, KillRequest, LoadRequest,
        LogoutRequest, PullLine, PullRequest, StopRequest, WireError, HEADER_CONTAINER_ID,
        HEADER_CONTAINER_NAME, HEADER_PID, HEADER_STREAMS, MAX_REQUEST_BYTES, PREFIX,
        UPGRADE_PROTOCOL,
    },
    seams::map_path,
    stream, Dial, Host, PathMap, SamePaths,
};

/// Idle connections kept for the next request.
const MAX_IDLE: usize = 8;

/// How long an idle connection is reused; the daemon closes idle connections after
/// 30 s, and a request must not race that.
const IDLE_REUSE: Duration = Duration::from_secs(20);

/// A [`Runtime`] served by a locald daemon. Cheap to clone; clones share connections.
///
/// [`RemoteRuntime::connect`] asks the daemon for its [`DaemonInfo`] once; after that
/// [`info`](Runtime::info) answers with the served runtime's own description.
#[derive(Clone)]
pub struct RemoteRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    host: Arc<dyn Dial>,
    paths: Arc<dyn PathMap>,
    daemon: DaemonInfo,
    idle: Mutex<Vec<(std::time::Instant, SendRequest<Full<Bytes>>)>>,
}

impl fmt::Debug for RemoteRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteRuntime")
            .field("host", &self.inner.host.to_string())
            .field("paths", &self.inner.paths)
            .field("runtime", &self.inner.daemon.runtime.name)
            .finish()
    }
}

enum Body {
    Empty,
    Json(Vec<u8>),
}

impl Body {
    fn json(value: &impl Serialize) -> Body {
        Body::Json(serde_json::to_vec(value).expect("protocol values serialize"))
    }
}

/// Builds a [`RemoteRuntime`] over any transport ([`Dial`]) with a path map
/// ([`PathMap`]); made by [`RemoteRuntime::builder`].
#[derive(Debug)]
pub struct RemoteRuntimeBuilder {
    dial: Arc<dyn Dial>,
    paths: Arc<dyn PathMap>,
}

impl RemoteRuntimeBuilder {
    /// How this machine's paths are named where the daemon runs (default:
    /// [`SamePaths`], a daemon on this host).
    pub fn path_map(mut self, paths: impl PathMap + 'static) -> Self {
        self.paths = Arc::new(paths);
        self
    }

    /// Connects and asks the daemon what it serves.
    pub async fn connect(self) -> Result<RemoteRuntime> {
        let probe = Inner {
            host: self.dial,
            paths: self.paths,
            daemon: DaemonInfo::new(
                "",
                0,
                RuntimeInfo::new("remote", crate::Platform::Other, []),
            ),
            idle: Mutex::new(Vec::new()),
        };
        let daemon: DaemonInfo = probe.call(Method::GET, "/info", Body::Empty).await?;
        Ok(RemoteRuntime {
            inner: Arc::new(Inner { daemon, ..probe }),
        })
    }
}

impl RemoteRuntime {
    /// Connects to the daemon at `host` and asks what it serves.
    pub async fn connect(host: Host) -> Result<RemoteRuntime> {
        if matches!(host, Host::Tcp { token: None, .. }) {
            return Err(Error::invalid(
                "daemon address",
                host.to_string(),
                "a TCP daemon needs its token (LOCALD_TOKEN or LOCALD_TOKEN_FILE)",
            ));
        }
        RemoteRuntime::builder(host).connect().await
    }

    /// A runtime whose daemon is reached through `dial`: the seam a remote backend
    /// (a VM's forwarded socket, a `wsl.exe` bridge) plugs its transport into.
    pub fn builder(dial: impl Dial + 'static) -> RemoteRuntimeBuilder {
        RemoteRuntimeBuilder {
            dial: Arc::new(dial),
            paths: Arc::new(SamePaths),
        }
    }

    /// What the daemon said about itself when this runtime connected.
    pub fn daemon(&self) -> &DaemonInfo {
        &self.inner.daemon
    }

    /// How the daemon is reached (for messages: it displays as its address).
    pub fn dialer(&self) -> &dyn Dial {
        &*self.inner.host
    }

    async fn open_stream(
        &self,
        path: &str,
        body: Body,
        inherit: stream::Inherit,
    ) -> Result<(Process, Response<Incoming>)> {
        // The sender stays alive until the upgrade completes.
        let (mut response, _sender) = self.inner.send(Method::POST, path, body, true).await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(self.inner.error_of(response).await);
        }
        let upgraded = hyper::upgrade::on(&mut response)
            .await
            .map_err(|e| self.inner.lost(e))?;
        let pid = header_str(&response, HEADER_PID).and_then(|p| p.parse().ok());
        let streams = stream::Streams::parse(header_str(&response, HEADER_STREAMS));
        let process = stream::remote_process(TokioIo::new(upgraded), pid, streams, inherit);
        Ok((process, response))
    }
}

impl RemoteRuntime {
    /// `GET path` (under the API's version prefix) on one of the daemon's extension
    /// routes — those a daemon serves beside the [`Runtime`] API, such as `locald
    /// daemon`'s projects — answering JSON. Errors arrive typed, as the runtime's own
    /// calls' do, over the same transport and connections.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.inner.call(Method::GET, path, Body::Empty).await
    }

    /// `POST path` with `body` as JSON on an extension route (see
    /// [`RemoteRuntime::get_json`]), answering JSON.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        self.inner.call(Method::POST, path, Body::json(body)).await
    }

    /// `GET path` on an extension route that answers with JSON lines as they come
    /// (a log that is followed, progress): read them with [`JsonLines::next`]. The
    /// connection is not reused.
    pub async fn get_lines<T: DeserializeOwned>(&self, path: &str) -> Result<JsonLines<T>> {
        let (response, _) = self
            .inner
            .send(Method::GET, path, Body::Empty, false)
            .await?;
        if !response.status().is_success() {
            return Err(self.inner.error_of(response).await);
        }
        Ok(JsonLines::new(response, "reading from the locald daemon"))
    }
}

/// JSON values, one a line, read from a daemon's answer as they arrive (see
/// [`RemoteRuntime::get_lines`]).
pub struct JsonLines<T> {
    body: Incoming,
    pending: Vec<u8>,
    context: &'static str,
    ended: bool,
    _values: std::marker::PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for JsonLines<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonLines")
            .field("context", &self.context)
            .finish()
    }
}

impl<T: DeserializeOwned> JsonLines<T> {
    fn new(response: Response<Incoming>, context: &'static str) -> Self {
        JsonLines {
            body: response.into_body(),
            pending: Vec::new(),
            context,
            ended: false,
            _values: std::marker::PhantomData,
        }
    }

    fn broken(&self, e: &dyn std::fmt::Display) -> Error {
        Error::io(
            self.context,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        )
    }

    /// The next value, or `None` once the daemon has ended the answer. A line that
    /// is not a `T` is an error.
    pub async fn next(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Some(serde_json::from_slice(&line).map_err(|e| self.broken(&e)));
            }
            if self.ended {
                return None;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.pending.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(self.broken(&e)));
                }
                None => {
                    self.ended = true;
                    if !self.pending.is_empty() {
                        self.pending.push(b'\n');
                    }
                }
            }
        }
    }
}

fn header_str<'a>(response: &'a Response<Incoming>, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Sends the command with `Inherit` streams replaced by pipes that this side copies
/// to and from its own stdio, as an in-process runtime would have them inherited.
/// (The working directory is the caller's business: a host command's is mapped by
/// [`RemoteRuntime::host_command`], an `exec`'s is inside the container.)
fn wire_command(command: Command) -> (Command, stream::Inherit) {
    let inherit = stream::Inherit {
        stdin: matches!(command.get_stdin(), Stdin::Inherit),
        stdout: command.get_stdout() == Stdio::Inherit,
        stderr: command.get_stderr() == Stdio::Inherit,
    };
    let mut command = command;
    if inherit.stdin {
        command = command.stdin(Stdin::Piped);
    }
    if inherit.stdout {
        command = command.stdout(Stdio::Piped);
    }
    if inherit.stderr {
        command = command.stderr(Stdio::Piped);
    }
    (command, inherit)
}

impl Inner {
    fn lost(&self, err: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::io(
            format!("lost the connection to the locald daemon at {}", self.host),
            std::io::Error::other(err),
        )
    }

    async fn connection(&self) -> Result<SendRequest<Full<Bytes>>> {
        loop {
            let Some((since, mut sender)) = self.idle.lock().await.pop() else {
                break;
            };
            if since.elapsed() < IDLE_REUSE && !sender.is_closed() && sender.ready().await.is_ok() {
                return Ok(sender);
            }
        }
        let io = self.host.dial().await?;
        let (sender, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.lost(e))?;
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(%err, "daemon connection ended");
            }
        });
        Ok(sender)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Body,
        upgrade: bool,
    ) -> Result<(Response<Incoming>, SendRequest<Full<Bytes>>)> {
        let mut sender = self.connection().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{PREFIX}{path}"))
            .header(header::HOST, "locald");
        if let Some(token) = self.host.token() {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if upgrade {
            request = request
                .header(header::CONNECTION, "upgrade")
                .header(header::UPGRADE, UPGRADE_PROTOCOL);
        }
        let body = match body {
            Body::Empty => Full::new(Bytes::new()),
            Body::Json(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json))
            }
        };
        let request = request
            .body(body)
            .map_err(|e| Error::invalid("request", path, e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.lost(e))?;
        Ok((response, sender))
    }

    /// Keeps a connection whose last answer was read to its end for the next request.
    async fn release(&self, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().await;
        if idle.len() < MAX_IDLE {
            idle.push((std::time::Instant::now(), sender));
        }
    }

    async fn error_of(&self, response: Response<Incoming>) -> Error {
        let status = response.status();
        match response.into_body().collect().await {
            Ok(body) => {
                let bytes = body.to_bytes();
                match serde_json::from_slice::<ErrorBody>(&bytes) {
                    Ok(body) => body.error.to_error(),
                    Err(_) => WireError::request(format!(
                        "unexpected answer {status}: {}",
                        String::from_utf8_lossy(&bytes)
                    ))
                    .to_error(),
                }
            }
            Err(e) => self.lost(e),
        }
    }

    async fn call<T: DeserializeOwned>(&self, method: Method, path: &str, body: Body) -> Result<T> {
        let (response, sender) = self.send(method, path, body, false).await?;
        if !response.status().is_success() {
            let err = self.error_of(response).await;
            self.release(sender).await;
            return Err(err);
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.lost(e))?
            .to_bytes();
        self.release(sender).await;
        let bytes: &[u8] = if bytes.is_empty() { b"null" } else { &bytes };
        serde_json::from_slice(bytes).map_err(|e| {
            Error::io(
                format!(
                    "the locald daemon at {} sent an answer this client does not understand",
                    self.host
                ),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }
}

impl RemoteRuntime {
    /// A host command's working directory, named as the daemon sees it.
    fn host_command(&self, command: Command) -> Result<Command> {
        match command.get_current_dir() {
            Some(dir) => {
                let dir = map_path(&*self.inner.paths, dir)?;
                Ok(command.current_dir(dir))
            }
            None => Ok(command),
        }
    }

    /// Spawns a host command whose paths are already the daemon's.
    async fn spawn_mapped(&self, command: Command) -> Result<Process> {
        let (command, inherit) = wire_command(command);
        let (process, _) = self
            .open_stream("/processes", Body::json(&command), inherit)
            .await?;
        Ok(process)
    }

    /// A container's host paths (its root filesystem directory, bind mount sources),
    /// named as the daemon sees them.
    fn container_spec(&self, mut spec: ContainerSpec) -> Result<ContainerSpec> {
        if let ContainerSource::Rootfs(dir) = &spec.source {
            spec.source = ContainerSource::Rootfs(map_path(&*self.inner.paths, dir)?);
        }
        for mount in &mut spec.mounts {
            if let MountSource::Bind(source) = &mount.source {
                mount.source = MountSource::Bind(map_path(&*self.inner.paths, source)?);
            }
        }
        Ok(spec)
    }
}

#[async_trait]
impl Runtime for RemoteRuntime {
    fn info(&self) -> RuntimeInfo {
        self.inner.daemon.runtime.clone()
    }

    async fn spawn(&self, command: Command) -> Result<Process> {
        self.spawn_mapped(self.host_command(command)?).await
    }

    async fn run_command(&self, command: Command) -> Result<Output> {
        let command = self.host_command(command)?;
        let (wire, inherit) = wire_command(command.clone());
        if inherit.any() {
            return self.spawn_mapped(command).await?.output().await;
        }
        let body = Body::json(&wire);
        if let (Body::Json(json), Stdin::Bytes(bytes)) = (&body, command.get_stdin()) {
            if json.len() > MAX_REQUEST_BYTES {
                // Too large for one request: stream the input instead.
                let bytes = bytes.clone();
                let mut process = self.spawn_mapped(command.stdin(Stdin::Piped)).await?;
                if let Some(mut stdin) = process.take_stdin() {
                    tokio::spawn(async move {
                        // A command that exits without reading all of its input closes
                        // the pipe: that is its business, as in process.
                        let _ = stdin.write_all(&bytes).await;
                        let _ = stdin.shutdown().await;
                    });
                }
                return process.output().await;
            }
        }
        self.inner.call(Method::POST, "/commands/run", body).await
    }

    async fn run_container(&self, spec: ContainerSpec) -> Result<ContainerHandle> {
        let (process, response) = self
            .open_stream(
                "/containers",
                Body::json(&self.container_spec(spec)?),
                stream::Inherit::default(),
            )
            .await?;
        let id = header_str(&response, HEADER_CONTAINER_ID).unwrap_or_default();
        let name = header_str(&response, HEADER_CONTAINER_NAME).unwrap_or_default();
        Ok(ContainerHandle::new(id, name, process))
    }

    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>> {
        self.inner
            .call(Method::GET, &format!("/containers?all={all}"), Body::Empty)
            .await
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerSummary> {
        self.inner
            .call(
                Method::GET,
                &format!("/containers/{}", segment(id)),
                Body::Empty,
            )
            .await
    }

    async fn wait_container(&self, id: &str) -> Result<ExitStatus> {
        self.inner
            .call(
                Method::POST,
                &format!("/containers/{}/wait", segment(id)),
                Body::Empty,
            )
            .await
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        self.inner
            .call(
                Method::POST,
                &format!("/containers/{}/stop", segment(id)),
                Body::json(&StopRequest { grace }),
            )
            .await
    }

    async fn kill_container(&self, id: &str, signal: Signal) -> Result<()> {
        self.inner
            .call(
                Method::POST,
                &format!("/containers/{}/kill", segment(id)),
                Body::json(&KillRequest { signal }),
            )
            .await
    }

    async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        self.inner
            .call(
                Method::DELETE,
                &format!("/containers/{}?force={force}", segment(id)),
                Body::Empty,
            )
            .await
    }

    async fn container_logs(&self, id: &str, options: LogOptions) -> Result<LogChunks> {
        let mut path = format!("/containers/{}/logs?follow={}", segment(id), options.follow);
        if let Some(tail) = options.tail {
            path.push_str(&format!("&tail={tail}"));
        }
        // The connection carries the log stream until it ends: it is not pooled.
        let (response, _) = self
            .inner
            .send(Method::GET, &path, Body::Empty, false)
            .await?;
        if !response.status().is_success() {
            return Err(self.inner.error_of(response).await);
        }
        Ok(stream::log_chunks(response.into_body()))
    }

    async fn exec(&self, id: &str, command: Command) -> Result<Process> {
        let (command, inherit) = wire_command(command);
        let (process, _) = self
            .open_stream(
                &format!("/containers/{}/exec", segment(id)),
                Body::json(&command),
                inherit,
            )
            .await?;
        Ok(process)
    }

    async fn pull_image(&self, image: &ImageRef, options: PullOptions) -> Result<ImageSummary> {
        let request = PullRequest {
            image: image.clone(),
            options: options.clone(),
        };
        let Some(progress) = options.progress else {
            return self
                .inner
                .call(Method::POST, "/images/pull", Body::json(&request))
                .await;
        };
        // With a progress channel, the daemon streams JSON lines of events and then
        // the result; the connection is not reused.
        let (response, _) = self
            .inner
            .send(
                Method::POST,
                "/images/pull?progress=true",
                Body::json(&request),
                false,
            )
            .await?;
        if !response.status().is_success() {
            return Err(self.inner.error_of(response).await);
        }
        let mut lines = JsonLines::<PullLine>::new(response, "reading the pull progress");
        while let Some(line) = lines.next().await {
            match line? {
                PullLine::Progress(event) => {
                    let _ = progress.send(event);
                }
                PullLine::Done(summary) => return Ok(summary),
                PullLine::Failed(err) => return Err(err.to_error()),
            }
        }
        Err(lines.broken(&"the daemon closed the stream before the pull ended"))
    }

    async fn list_images(&self) -> Result<Vec<ImageSummary>> {
        self.inner.call(Method::GET, "/images", Body::Empty).await
    }

    async fn remove_image(&self, image: &ImageRef) -> Result<ImageSummary> {
        self.inner
            .call(
                Method::POST,
                "/images/remove",
                Body::json(&ImageRequest {
                    image: image.clone(),
                }),
            )
            .await
    }

    async fn prune_images(&self) -> Result<PruneReport> {
        self.inner
            .call(Method::POST, "/images/prune", Body::Empty)
            .await
    }

    async fn load_image(&self, path: &std::path::Path) -> Result<Vec<ImageSummary>> {
        self.inner
            .call(
                Method::POST,
                "/images/load",
                Body::json(&LoadRequest {
                    path: map_path(&*self.inner.paths, path)?,
                }),
            )
            .await
    }

    async fn import_image(
        &self,
        rootfs: &std::path::Path,
        image: &ImageRef,
    ) -> Result<ImageSummary> {
        self.inner
            .call(
                Method::POST,
                "/images/import",
                Body::json(&ImportRequest {
                    rootfs: map_path(&*self.inner.paths, rootfs)?,
                    image: image.clone(),
                }),
            )
            .await
    }

    async fn login(&self, login: RegistryLogin) -> Result<()> {
        self.inner
            .call(Method::POST, "/images/login", Body::json(&login))
            .await
    }

    async fn logout(&self, registry: &str) -> Result<bool> {
        self.inner
            .call(
                Method::POST,
                "/images/logout",
                Body::json(&LogoutRequest {
                    registry: registry.to_owned(),
                }),
            )
            .await
    }
}
