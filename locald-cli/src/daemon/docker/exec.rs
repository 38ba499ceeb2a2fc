//! `/containers/{id}/exec` and `/exec/{id}/...`: a command in a running container
//! through [`Runtime::exec`](locald::Runtime::exec).

use std::sync::{Arc, Mutex};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use locald::{Command, Stdin, Stdio};
use serde::Deserialize;
use serde_json::json;

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
    }
    let mut process = match s.runtime.exec(&exec.runtime_id, exec.command.clone()).await {
        Ok(p) => p,
        Err(err) => {
            let mut st = lock(&exec);
            st.running = false;
            st.exit_code = Some(126);
            return Err(err.into());
        }
    };
    lock(&exec).pid = process.id();
    let pipes = Pipes {
        stdin: process.take_stdin(),
        stdout: process.take_stdout(),
        stderr: process.take_stderr(),
    };
    let finish = move |exec: Arc<Exec>, status: locald::Result<locald::ExitStatus>| {
        let mut st = lock(&exec);
        st.running = false;
        st.exit_code = Some(status.map_or(-1, |s| s.shell_code()));
    };
    if start.detach.unwrap_or(false) {
        super::stream::drain(pipes);
        tokio::spawn(async move {
            let status = process.wait().await;
            finish(exec, status);
        });
        return Ok(StatusCode::OK.into_response());
    }
    req = Request::from_parts(parts, axum::body::Body::empty());
    if let Some(on) = on_upgrade {
        req.extensions_mut().insert(on);
    }
    let (response, conn) = super::stream::hijack(&mut req, exec.tty)?;
    let tty = exec.tty;
    s.sessions.spawn(async move {
        let opened = conn.open().await;
        let Some((input, output)) = opened else {
            // The client left: the command ends with it, as the process is dropped.
            finish(exec, Err(locald::Error::invalid("exec", "", "client left")));
            return;
        };
        let input = if exec.attach_stdin { input } else { None };
        let mut output = super::stream::pump(pipes, input, output, tty).await;
        let status = process.wait().await;
        finish(exec, status);
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut output).await;
    });
    Ok(response)
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
