//! `/containers/{id}/archive` (`docker cp`): HEAD stats a path, GET reads it as a tar,
//! PUT extracts a tar into a directory.
//!
//! The [`Runtime`](locald::Runtime) trait has no file transfer, so these run `stat`,
//! `tar -c` and `tar -x` in the container through
//! [`exec`](locald::Runtime::exec), as `kubectl cp` does: the container's image must
//! have `sh`, `stat` and `tar` (busybox has them all), and it must be running.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Query, Request, State},
    http::{header, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use futures_util::TryStreamExt;
use locald::{Command, Stdin, Stdio};
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use super::{DockerError, DockerResult, IdParam};
use crate::daemon::server::Shared;

const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PathQuery {
    path: Option<String>,
}

/// The container's runtime id, if it runs.
async fn running(s: &Shared, key: &str) -> DockerResult<String> {
    let rid = match s.docker.find(key) {
        Some(e) => e.runtime_id(),
        None => Some(
            s.runtime
                .inspect_container(key)
                .await
                .map_err(|_| DockerError::no_such_container(key))?
                .id,
        ),
    };
    let running = match &rid {
        Some(rid) => s
            .runtime
            .inspect_container(rid)
            .await
            .is_ok_and(|c| matches!(c.state, locald::ContainerState::Running)),
        None => false,
    };
    match rid {
        Some(rid) if running => Ok(rid),
        _ => Err(DockerError::conflict(format!(
            "container {key} is not running: locald copies files with tar inside the container"
        ))),
    }
}

fn path_of(q: PathQuery) -> DockerResult<String> {
    q.path
        .filter(|p| !p.is_empty())
        .ok_or_else(|| DockerError::bad_request("path is required"))
}

/// Go's `os.FileMode` bits for a `st_mode`, as docker reports them.
fn go_mode(raw: u32) -> u32 {
    let mut mode = raw & 0o777;
    if raw & 0o4000 != 0 {
        mode |= 1 << 23;
    }
    if raw & 0o2000 != 0 {
        mode |= 1 << 22;
    }
    if raw & 0o1000 != 0 {
        mode |= 1 << 20;
    }
    mode |= match raw & 0o170000 {
        0o040000 => 1 << 31,
        0o120000 => 1 << 27,
        0o010000 => 1 << 25,
        0o140000 => 1 << 24,
        0o020000 => (1 << 26) | (1 << 21),
        0o060000 => 1 << 26,
        _ => 0,
    };
    mode
}

/// A path's stat in the container: docker's JSON, and whether it is a directory.
async fn stat(
    s: &Shared,
    rid: &str,
    key: &str,
    path: &str,
) -> DockerResult<(serde_json::Value, bool)> {
    let command = Command::new("sh")
        .args([
            "-c",
            r#"stat -c '%s:%f:%Y' -- "$1" && readlink -- "$1"; true"#,
            "sh",
            path,
        ])
        .stdout(Stdio::Capture)
        .stderr(Stdio::Capture);
    let out = s.runtime.exec(rid, command).await?.output().await?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let fields: Vec<&str> = first.split(':').collect();
    let [size, raw, mtime] = fields[..] else {
        return Err(DockerError::new(
            StatusCode::NOT_FOUND,
            format!("Could not find the file {path} in container {key}"),
        ));
    };
    let raw = u32::from_str_radix(raw, 16).unwrap_or(0);
    let mtime = mtime
        .parse::<u64>()
        .map(|t| std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
        .unwrap_or(std::time::UNIX_EPOCH);
    let name = std::path::Path::new(path)
        .file_name()
        .map_or_else(|| "/".to_owned(), |n| n.to_string_lossy().into_owned());
    let stat = json!({
        "name": name,
        "size": size.parse::<i64>().unwrap_or(0),
        "mode": go_mode(raw),
        "mtime": humantime::format_rfc3339_seconds(mtime).to_string(),
        "linkTarget": lines.next().unwrap_or(""),
    });
    Ok((stat, raw & 0o170000 == 0o040000))
}

fn stat_header(stat: &serde_json::Value) -> DockerResult<HeaderValue> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(stat.to_string());
    HeaderValue::from_str(&encoded)
        .map_err(|e| DockerError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `HEAD /containers/{id}/archive?path=`: the path's stat in a header.
pub(crate) async fn head(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    Query(q): Query<PathQuery>,
) -> DockerResult<Response> {
    let path = path_of(q)?;
    let rid = running(&s, &key).await?;
    let (stat, _) = stat(&s, &rid, &key, &path).await?;
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(STAT_HEADER, stat_header(&stat)?);
    Ok(response)
}

/// `GET /containers/{id}/archive?path=`: the path as a tar (entries named from its
/// base name), and its stat in a header.
pub(crate) async fn get(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    Query(q): Query<PathQuery>,
) -> DockerResult<Response> {
    let path = path_of(q)?;
    let rid = running(&s, &key).await?;
    let (stat, _) = stat(&s, &rid, &key, &path).await?;
    let p = std::path::Path::new(&path);
    let (dir, base) = match (p.parent(), p.file_name()) {
        (Some(dir), Some(base)) => (
            dir.to_string_lossy().into_owned(),
            base.to_string_lossy().into_owned(),
        ),
        _ => ("/".to_owned(), ".".to_owned()),
    };
    let dir = if dir.is_empty() { "/".to_owned() } else { dir };
    let command = Command::new("tar")
        .args(["-cf", "-", "-C", &dir, "--", &base])
        .stdout(Stdio::Piped)
        .stderr(Stdio::Null);
    let mut process = s.runtime.exec(&rid, command).await?;
    let stdout = process
        .take_stdout()
        .ok_or_else(|| DockerError::new(StatusCode::INTERNAL_SERVER_ERROR, "tar gave no stdout"))?;
    // The process is waited for once its output is read, so that dropping it does not
    // kill tar early.
    tokio::spawn(async move {
        let _ = process.wait().await;
    });
    let mut response = Response::new(Body::from_stream(tokio_util::io::ReaderStream::new(stdout)));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    h.insert(STAT_HEADER, stat_header(&stat)?);
    Ok(response)
}

/// `PUT /containers/{id}/archive?path=`: extracts the tar in the body into `path`, a
/// directory in the container.
pub(crate) async fn put(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
    Query(q): Query<PathQuery>,
    req: Request,
) -> DockerResult<Response> {
    let path = path_of(q)?;
    let rid = running(&s, &key).await?;
    let (_, is_dir) = stat(&s, &rid, &key, &path).await?;
    if !is_dir {
        return Err(DockerError::bad_request(format!(
            "extraction point is not a directory: {path}"
        )));
    }
    let command = Command::new("tar")
        .args(["-xf", "-", "-C", &path])
        .stdin(Stdin::Piped)
        .stdout(Stdio::Null)
        .stderr(Stdio::Capture);
    let mut process = s.runtime.exec(&rid, command).await?;
    let mut stdin = process
        .take_stdin()
        .ok_or_else(|| DockerError::new(StatusCode::INTERNAL_SERVER_ERROR, "tar took no stdin"))?;
    let body = req
        .into_body()
        .into_data_stream()
        .map_err(std::io::Error::other);
    let mut reader = tokio_util::io::StreamReader::new(body);
    let copied = tokio::io::copy(&mut reader, &mut stdin).await;
    let _ = stdin.shutdown().await;
    drop(stdin);
    let out = process.output().await?;
    if let Err(err) = copied {
        return Err(DockerError::bad_request(format!(
            "reading the archive: {err}"
        )));
    }
    if !out.status.success() {
        return Err(DockerError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "extracting the archive in {path}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(StatusCode::OK.into_response())
}

#[cfg(test)]
mod tests {
    use super::go_mode;

    #[test]
    fn modes_are_gos() {
        assert_eq!(go_mode(0o100644), 0o644);
        assert_eq!(go_mode(0o040755), (1 << 31) | 0o755);
        assert_eq!(go_mode(0o120777), (1 << 27) | 0o777);
        assert_eq!(go_mode(0o104755), (1 << 23) | 0o755);
    }
}
