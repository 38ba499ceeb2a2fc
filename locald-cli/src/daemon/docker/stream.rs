//! Docker's attach and exec streams: the hijacked connection (`Upgrade: tcp`), stdin
//! in as raw bytes, stdout and stderr out in the 8-byte-header frames of
//! [`Frame`] (or raw with a TTY).

use axum::{
    body::Body,
    extract::Request,
    http::{header, StatusCode},
    response::Response,
};
use hyper_util::rt::TokioIo;
use locald::remote::protocol::{Frame, FrameKind};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{DockerError, DockerResult};
use crate::daemon::session::{self, Pipes};

/// Bytes read from a pipe at once.
const CHUNK: usize = 32 << 10;

pub(crate) type Reader = Box<dyn AsyncRead + Send + Unpin>;
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Where a stream goes once the response is sent.
pub(crate) enum Conn {
    /// The connection, upgraded: stdin comes back on it.
    Upgrade(hyper::upgrade::OnUpgrade),
    /// A client that did not ask to upgrade: output only, in the response body.
    Body(tokio::io::DuplexStream),
}

impl Conn {
    /// The connection's read and write halves, once the client has it.
    pub(crate) async fn open(self) -> Option<(Option<Reader>, Writer)> {
        match self {
            Conn::Upgrade(on) => match on.await {
                Ok(upgraded) => {
                    let (r, w) = tokio::io::split(TokioIo::new(upgraded));
                    Some((Some(Box::new(r) as Reader), Box::new(w) as Writer))
                }
                Err(err) => {
                    tracing::debug!(%err, "client left before the stream started");
                    None
                }
            },
            Conn::Body(w) => Some((None, Box::new(w) as Writer)),
        }
    }
}

/// The media type of a stream: raw with a TTY, multiplexed frames without.
fn media_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// Answers a stream request: `101` when the client asks to upgrade (as the docker CLI
/// and docker-py do), else `200` with the output as the body.
pub(crate) fn hijack(req: &mut Request, tty: bool) -> DockerResult<(Response, Conn)> {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("tcp"));
    let answer = |status, body| {
        let mut b = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, media_type(tty));
        if status == StatusCode::SWITCHING_PROTOCOLS {
            b = b
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "tcp");
        }
        b.body(body)
            .map_err(|e| DockerError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    };
    if upgrade {
        let on = hyper::upgrade::on(req);
        Ok((
            answer(StatusCode::SWITCHING_PROTOCOLS, Body::empty())?,
            Conn::Upgrade(on),
        ))
    } else {
        let (w, r) = tokio::io::duplex(CHUNK);
        let body = Body::from_stream(tokio_util::io::ReaderStream::new(r));
        Ok((answer(StatusCode::OK, body)?, Conn::Body(w)))
    }
}

/// Copies the client's input to the process's stdin (when both are there) and the
/// process's output to the client until the output ends; returns the writer, still
/// open, so that the caller can finish (an exec records its exit code first).
///
/// A client that goes away does not stop the output from being read (the container
/// would block on a full pipe): it is read and dropped.
pub(crate) async fn pump(
    pipes: Pipes,
    input: Option<Reader>,
    mut output: Writer,
    tty: bool,
) -> Writer {
    let stdin_task = match (input, pipes.stdin) {
        (Some(mut input), Some(mut stdin)) => Some(tokio::spawn(async move {
            let _ = tokio::io::copy(&mut input, &mut stdin).await;
            let _ = stdin.shutdown().await;
        })),
        _ => None,
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Frame>(16);
    for (kind, pipe) in [
        (FrameKind::Stdout, pipes.stdout),
        (FrameKind::Stderr, pipes.stderr),
    ] {
        if pipe.is_some() {
            tokio::spawn(session::pump(pipe, kind, tx.clone()));
        }
    }
    drop(tx);
    let mut gone = false;
    while let Some(frame) = rx.recv().await {
        // Docker's stream has no end-of-file frame: the output just ends.
        if gone || frame.payload.is_empty() {
            continue;
        }
        let bytes = if tty { frame.payload } else { frame.encode() };
        if output.write_all(&bytes).await.is_err() || output.flush().await.is_err() {
            gone = true;
        }
    }
    if let Some(task) = stdin_task {
        task.abort();
    }
    output
}

/// Reads and drops a process's output (a detached container: the shim keeps its log).
pub(crate) fn drain(pipes: Pipes) {
    for pipe in [pipes.stdout, pipes.stderr].into_iter().flatten() {
        tokio::spawn(async move {
            let mut pipe = pipe;
            let _ = tokio::io::copy(&mut pipe, &mut tokio::io::sink()).await;
        });
    }
}
