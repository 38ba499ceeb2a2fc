//! `/containers/{id}/exec` and `/exec/{id}/...`: a command in a running container
//! through [`Runtime::exec`](locald::Runtime::exec).

use std::sync::{Arc, Mutex};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use locald::remote::protocol::{Frame, FrameKind};
use locald::{Command, Stdin, Stdio};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{DockerError, DockerResult, IdParam};
use crate::daemon::{server::Shared, session::Pipes};

/// An exec instance: created, then started once.
#[derive(Debug)]
pub(crate) struct Exec {
    pub(crate) id: String,
    container: String,
    runtime_id: String,
    command: Command,
    tty: bool,
    attach_stdin: bool,
    state: Mutex<ExecState>,
}

#[derive(Debug, Default)]
struct ExecState {
    started: bool,
    running: bool,
    pid: Option<u32>,
    exit_code: Option<i32>,
    /// While a command on a terminal runs: where `/exec/{id}/resize` sends sizes.
    resize: Option<tokio::sync::mpsc::UnboundedSender<locald::TerminalSize>>,
    /// A size asked for before the command started (the docker CLI sends one at once).
    size: Option<locald::TerminalSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct ExecBody {
    attach_stdin: Option<bool>,
    tty: Option<bool>,
    cmd: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    privileged: Option<bool>,
}

pub(crate) async fn create(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    axum::extract::Json(body): axum::extract::Json<ExecBody>,
) -> DockerResult<Response> {
    let entry = s.docker.find(&key);
    let runtime_id = match &entry {
        Some(e) => e.runtime_id(),
        None => s.runtime.inspect_container(&key).await.ok().map(|c| c.id),
    };
    let Some(runtime_id) = runtime_id else {
        return match entry {
            Some(e) => Err(DockerError::conflict(format!(
                "Container {} is not running",
                e.id
            ))),
            None => Err(DockerError::no_such_container(&key)),
        };
    };
    let running = s
        .runtime
        .inspect_container(&runtime_id)
        .await
        .is_ok_and(|c| matches!(c.state, locald::ContainerState::Running));
    if !running {
        return Err(DockerError::conflict(format!(
            "Container {key} is not running"
        )));
    }
    let mut args = body.cmd.unwrap_or_default().into_iter();
    let program = args
        .next()
        .ok_or_else(|| DockerError::bad_request("No exec command specified"))?;
    let attach_stdin = body.attach_stdin.unwrap_or(false);
    let mut command = Command::new(program)
        .args(args)
        .stdin(if attach_stdin {
            Stdin::Piped
        } else {
            Stdin::Null
        })
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped);
    for var in body.env.unwrap_or_default() {
        if let Some((k, v)) = var.split_once('=') {
            command = command.env(k, v);
        }
    }
    if let Some(dir) = body.working_dir.filter(|d| !d.is_empty()) {
        command = command.current_dir(dir);
    }
    if body.user.is_some_and(|u| !u.is_empty()) {
        tracing::warn!("docker exec --user: locald runs exec as the container's user");
    }
    if body.privileged.unwrap_or(false) {
        return Err(DockerError::bad_request(
            "privileged exec is not supported by locald",
        ));
    }
    if body.tty.unwrap_or(false) {
        command = command.tty(true);
    }
    let id = super::random_id()?;
    s.docker.add_exec(Arc::new(Exec {
        id: id.clone(),
        container: entry.map_or_else(|| runtime_id.clone(), |e| e.id.clone()),
        runtime_id,
        command,
        tty: body.tty.unwrap_or(false),
        attach_stdin,
        state: Mutex::default(),
    }));
    Ok((StatusCode::CREATED, Json(json!({ "Id": id }))).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: Option<bool>,
    /// `[height, width]` of the client's terminal (API 1.42+).
    console_size: Option<[u16; 2]>,
}

/// `POST /exec/{id}/resize?h=&w=`: the size of the exec's terminal.
pub(crate) async fn resize(
    State(s): State<Arc<Shared>>,
    IdParam { 0: id }: IdParam,
    axum::extract::Query(q): axum::extract::Query<super::ResizeQuery>,
) -> DockerResult<StatusCode> {
    let exec = find(&s, &id)?;
    let mut st = lock(&exec);
    let st = &mut *st;
    q.deliver(&st.resize, &mut st.size);
    Ok(StatusCode::OK)
}

fn find(s: &Shared, id: &str) -> DockerResult<Arc<Exec>> {
    s.docker.exec(id).ok_or_else(|| {
        DockerError::new(
            StatusCode::NOT_FOUND,
            format!("No such exec instance: {id}"),
        )
    })
}

fn lock(exec: &Exec) -> std::sync::MutexGuard<'_, ExecState> {
    exec.state.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) async fn start(
    State(s): State<Arc<Shared>>,
    IdParam { 0: id }: IdParam,
    mut req: Request,
) -> DockerResult<Response> {
    let exec = find(&s, &id)?;
    let (mut parts, body) = req.into_parts();
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|e| DockerError::bad_request(e.to_string()))?;
    let start: StartBody = if bytes.is_empty() {
        StartBody::default()
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| DockerError::bad_request(format!("malformed request body: {e}")))?
    };
    {
        let mut st = lock(&exec);
        if st.started {
            return Err(DockerError::conflict(format!("exec {id} has already run")));
        }
        st.started = true;
        st.running = true;
        if let Some([h, w]) = start.console_size.filter(|[h, w]| *h > 0 && *w > 0) {
            st.size = Some(locald::TerminalSize::new(h, w));
        }
    }
    if start.detach.unwrap_or(false) {
        let size = lock(&exec).size.take();
        let (mut process, pipes) = spawn(&s, &exec, size).await.map_err(|(_, e)| e)?;
        super::stream::drain(pipes);
        tokio::spawn(async move {
            let status = process.wait().await;
            finish(&exec, status.map_or(-1, |s| s.shell_code()));
        });
        return Ok(StatusCode::OK.into_response());
    }
    req = Request::from_parts(parts, axum::body::Body::empty());
    if let Some(on) = on_upgrade {
        req.extensions_mut().insert(on);
    }
    let (response, conn) = super::stream::hijack(&mut req, exec.tty)?;
    let tty = exec.tty;
    let shared = s.clone();
    s.sessions.spawn(async move {
        let Some((input, mut output)) = conn.open().await else {
            finish(&exec, -1);
            return;
        };
        // The command starts once the client holds the stream, as with dockerd: a
        // client reading the socket under its HTTP library's buffer (docker-py) would
        // lose output that came with the response's headers.
        // Sizes asked for from here on queue up for the command; one asked for before
        // is its initial size.
        let (resize_tx, mut resizes) = tokio::sync::mpsc::unbounded_channel();
        let size = {
            let mut st = lock(&exec);
            if tty {
                st.resize = Some(resize_tx);
            }
            st.size.take()
        };
        match spawn(&shared, &exec, size).await {
            Ok((mut process, pipes)) => {
                let input = if exec.attach_stdin { input } else { None };
                let pumping = super::stream::pump(pipes, input, output, tty);
                tokio::pin!(pumping);
                output = loop {
                    tokio::select! {
                        output = &mut pumping => break output,
                        Some(size) = resizes.recv() => {
                            if let Err(err) = process.resize(size).await {
                                tracing::debug!(%err, "resizing an exec's terminal");
                            }
                        }
                    }
                };
                let status = process.wait().await;
                finish(&exec, status.map_or(-1, |s| s.shell_code()));
            }
            Err((_, err)) => {
                lock(&exec).resize = None;
                let line = format!("{}\r\n", err.message());
                let bytes = if tty {
                    bytes::Bytes::from(line)
                } else {
                    Frame::new(FrameKind::Stderr, line).encode()
                };
                let _ = output.write_all(&bytes).await;
            }
        }
        let _ = output.shutdown().await;
    });
    Ok(response)
}

fn finish(exec: &Exec, code: i32) {
    let mut st = lock(exec);
    st.running = false;
    st.resize = None;
    st.exit_code = Some(code);
}

/// Starts the exec's command; a failure ends the exec with docker's code (127 no such
/// program, 126 else) and an error in the words the docker CLI shows.
async fn spawn(
    s: &Shared,
    exec: &Arc<Exec>,
    size: Option<locald::TerminalSize>,
) -> Result<(locald::Process, Pipes), (i32, DockerError)> {
    let mut command = exec.command.clone();
    if let Some(size) = size.filter(|_| exec.tty) {
        command = command.terminal_size(size);
    }
    match s.runtime.exec(&exec.runtime_id, command).await {
        Ok(mut process) => {
            lock(exec).pid = process.id();
            let pipes = Pipes {
                stdin: process.take_stdin(),
                stdout: process.take_stdout(),
                stderr: process.take_stderr(),
                tty: exec.tty,
            };
            Ok((process, pipes))
        }
        Err(err) => {
            let (code, hint) = match &err {
                locald::Error::ProgramNotFound { program } => (
                    127,
                    format!(": exec: \"{program}\": executable file not found in $PATH"),
                ),
                _ => (126, String::new()),
            };
            finish(exec, code);
            let err = DockerError::from(err);
            Err((
                code,
                DockerError::new(err.status, format!("{}{hint}", err.message())),
            ))
        }
    }
}

pub(crate) async fn inspect(
    State(s): State<Arc<Shared>>,
    IdParam { 0: id }: IdParam,
) -> DockerResult<Response> {
    let exec = find(&s, &id)?;
    let st = lock(&exec);
    Ok(Json(json!({
        "ID": exec.id,
        "ContainerID": exec.container,
        "Running": st.running,
        "ExitCode": st.exit_code,
        "Pid": st.pid.unwrap_or(0),
        "OpenStdin": exec.attach_stdin,
        "ProcessConfig": {
            "tty": exec.tty,
            "entrypoint": exec.command.get_program(),
            "arguments": exec.command.get_args(),
            "privileged": false,
        },
    }))
    .into_response())
}
