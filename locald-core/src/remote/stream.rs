//! The client side of process streams and log streams.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{Arc, Mutex as SyncMutex},
    task::{Context, Poll},
};

use crate::{
    Error, ExitStatus, LogChunks, LogStream, Process, ProcessControl, ProcessOutput, ProcessStdin,
    Result, Signal,
};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream},
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};

use super::protocol::{
    read_frames, write_frames, Frame, FrameKind, KillRequest, Outcome, WireError,
};
use futures_util::{StreamExt, TryStreamExt};

/// How much of each stream is buffered on this side before the daemon is slowed down.
const BUFFER: usize = 64 << 10;

/// How long `wait` lets output copied to this side's stdio catch up.
const LOCAL_DRAIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Which streams of a process this side copies to and from its own stdio.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Inherit {
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
}

impl Inherit {
    pub(crate) fn any(self) -> bool {
        self.stdin || self.stdout || self.stderr
    }
}

/// Which streams the daemon's process has, from the [`HEADER_STREAMS`] header.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Streams {
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
    pub(crate) tty: bool,
}

impl Streams {
    pub(crate) fn parse(header: Option<&str>) -> Streams {
        let names: Vec<&str> = header.unwrap_or("").split(',').map(str::trim).collect();
        Streams {
            stdin: names.contains(&"stdin"),
            stdout: names.contains(&"stdout"),
            stderr: names.contains(&"stderr"),
            tty: names.contains(&"tty"),
        }
    }
}

type Exit = Option<std::result::Result<ExitStatus, WireError>>;
type PendingKills = Arc<SyncMutex<VecDeque<oneshot::Sender<Result<()>>>>>;

fn lost() -> WireError {
    WireError::Io {
        context: "lost the connection to the locald daemon".into(),
        source: (&std::io::Error::from(std::io::ErrorKind::ConnectionReset)).into(),
    }
}

/// A [`Process`] whose streams, signals and exit status travel over `io`.
pub(crate) fn remote_process<IO>(
    io: IO,
    pid: Option<u32>,
    streams: Streams,
    inherit: Inherit,
) -> Process
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let mut rd = read_frames(rd);
    let (out_tx, out_rx) = mpsc::channel::<Frame>(32);
    let (exit_tx, exit_rx) = watch::channel::<Exit>(None);
    let pending: PendingKills = Arc::default();

    // Frames to the daemon, in order; when every sender is gone, half-close, which
    // tells the daemon that this side dropped the process.
    tokio::spawn(write_frames(wr, out_rx));

    let (stdin, stdin_task) = if streams.stdin {
        let (user, mut drain) = tokio::io::duplex(BUFFER);
        let tx = out_tx.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; BUFFER];
            loop {
                match drain.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(&buf[..n]);
                        if tx.send(Frame::new(FrameKind::Stdin, chunk)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(Frame::new(FrameKind::Stdin, Bytes::new())).await;
        });
        (Some(user), Some(task))
    } else {
        (None, None)
    };

    let (stdout_user, stdout_feed) = pipe(streams.stdout);
    let (stderr_user, stderr_feed) = pipe(streams.stderr);
    let reader_pending = pending.clone();
    tokio::spawn(async move {
        let mut feeds = [stdout_feed, stderr_feed];
        loop {
            let frame = match rd.next().await {
                Some(Ok(frame)) => frame,
                None => break,
                Some(Err(err)) => {
                    tracing::debug!(%err, "process stream from the daemon ended");
                    break;
                }
            };
            match frame.kind {
                FrameKind::Stdout | FrameKind::Stderr => {
                    let feed = &mut feeds[usize::from(frame.kind == FrameKind::Stderr)];
                    if frame.payload.is_empty() {
                        if let Some(mut feed) = feed.take() {
                            let _ = feed.shutdown().await;
                        }
                    } else if let Some(writer) = feed {
                        // A reader that went away loses the rest, as with a closed pipe.
                        if writer.write_all(&frame.payload).await.is_err() {
                            *feed = None;
                        }
                    }
                }
                FrameKind::End => {
                    let exit = frame
                        .parse::<Outcome<ExitStatus>>()
                        .map(|o| match o {
                            Outcome::Ok(status) => Ok(status),
                            Outcome::Err(err) => Err(err),
                        })
                        .unwrap_or_else(|e| Err(WireError::request(e.to_string())));
                    let _ = exit_tx.send(Some(exit));
                }
                FrameKind::Killed => {
                    let result = frame
                        .parse::<Outcome<()>>()
                        .map_err(|e| Error::io("reading the daemon's answer to a kill", e))
                        .and_then(Outcome::into_result);
                    let waiter = reader_pending
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .pop_front();
                    if let Some(waiter) = waiter {
                        let _ = waiter.send(result);
                    }
                }
                FrameKind::Stdin | FrameKind::Kill | FrameKind::Resize => {
                    tracing::debug!(kind = ?frame.kind, "ignoring a frame only clients send");
                }
            }
        }
        for feed in feeds.iter_mut() {
            if let Some(mut feed) = feed.take() {
                let _ = feed.shutdown().await;
            }
        }
        exit_tx.send_if_modified(|exit| {
            if exit.is_none() {
                *exit = Some(Err(lost()));
                true
            } else {
                false
            }
        });
        let waiters: Vec<_> = reader_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for waiter in waiters {
            let _ = waiter.send(Err(lost().to_error()));
        }
    });

    let mut stdin: Option<ProcessStdin> = stdin.map(|s| Box::pin(s) as ProcessStdin);
    let mut stdout: Option<ProcessOutput> = stdout_user.map(|s| Box::pin(s) as ProcessOutput);
    let mut stderr: Option<ProcessOutput> = stderr_user.map(|s| Box::pin(s) as ProcessOutput);
    let mut local = Vec::new();
    if inherit.stdin {
        if let Some(mut to) = stdin.take() {
            local.push(tokio::spawn(async move {
                let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut to).await;
                let _ = to.shutdown().await;
            }));
        }
    }
    if inherit.stdout {
        if let Some(mut from) = stdout.take() {
            local.push(tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from, &mut tokio::io::stdout()).await;
            }));
        }
    }
    if inherit.stderr {
        if let Some(mut from) = stderr.take() {
            local.push(tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from, &mut tokio::io::stderr()).await;
            }));
        }
    }
    let control = RemoteProcess {
        pid,
        tty: streams.tty,
        out: Some(out_tx),
        exit: exit_rx,
        pending,
        stdin_task,
        local,
    };
    Process::new(Box::new(control), stdin, stdout, stderr)
}

fn pipe(wanted: bool) -> (Option<DuplexStream>, Option<DuplexStream>) {
    if wanted {
        let (user, feed) = tokio::io::duplex(BUFFER);
        (Some(user), Some(feed))
    } else {
        (None, None)
    }
}

#[derive(Debug)]
struct RemoteProcess {
    pid: Option<u32>,
    tty: bool,
    out: Option<mpsc::Sender<Frame>>,
    exit: watch::Receiver<Exit>,
    pending: PendingKills,
    stdin_task: Option<JoinHandle<()>>,
    local: Vec<JoinHandle<()>>,
}

#[async_trait]
impl ProcessControl for RemoteProcess {
    fn id(&self) -> Option<u32> {
        self.pid
    }

    async fn wait(&mut self) -> Result<ExitStatus> {
        let exit = self
            .exit
            .wait_for(Option::is_some)
            .await
            .map(|exit| exit.clone())
            .unwrap_or_else(|_| Some(Err(lost())))
            .unwrap_or_else(|| Err(lost()));
        let status = exit.map_err(|e| e.to_error())?;
        // Output copied to this side's own stdio is complete once the process ended
        // and its streams closed, as with an inherited descriptor.
        // A descendant may hold them open longer: wait a moment, not for ever.
        let local: Vec<_> = self.local.drain(..).collect();
        let _ = tokio::time::timeout(LOCAL_DRAIN, async {
            for task in local {
                let _ = task.await;
            }
        })
        .await;
        Ok(status)
    }

    async fn kill(&mut self, signal: Signal) -> Result<()> {
        let Some(out) = &self.out else {
            return Err(lost().to_error());
        };
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(tx);
        if out
            .send(Frame::json(FrameKind::Kill, &KillRequest { signal }))
            .await
            .is_err()
        {
            return Err(lost().to_error());
        }
        rx.await.unwrap_or_else(|_| Err(lost().to_error()))
    }

    async fn resize(&mut self, size: crate::TerminalSize) -> Result<()> {
        if !self.tty {
            return Err(Error::invalid(
                "terminal",
                "resize",
                "this process has no terminal",
            ));
        }
        let Some(out) = &self.out else {
            return Err(lost().to_error());
        };
        out.send(Frame::json(FrameKind::Resize, &size))
            .await
            .map_err(|_| lost().to_error())
    }
}

impl Drop for RemoteProcess {
    fn drop(&mut self) {
        // Closing this side's half of the stream tells the daemon to kill the process
        // unless it already ended; output already on its way still arrives.
        if let Some(task) = self.stdin_task.take() {
            task.abort();
        }
        self.out = None;
    }
}

/// Log chunks read from a framed response body.
pub(crate) fn log_chunks(body: hyper::body::Incoming) -> LogChunks {
    let bytes = body.into_data_stream().map_err(std::io::Error::other);
    let mut frames = read_frames(tokio_util::io::StreamReader::new(bytes));
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let item = match frames.next().await {
                Some(Ok(frame)) => match frame.kind {
                    FrameKind::Stdout => Ok((LogStream::Stdout, frame.payload.to_vec())),
                    FrameKind::Stderr => Ok((LogStream::Stderr, frame.payload.to_vec())),
                    FrameKind::End => {
                        if let Ok(Outcome::Err(err)) = frame.parse::<Outcome<()>>() {
                            let _ = tx.send(Err(err.to_error())).await;
                        }
                        break;
                    }
                    _ => continue,
                },
                None | Some(Err(_)) => Err(lost().to_error()),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                break;
            }
        }
    });
    Box::pin(Chunks(rx))
}

struct Chunks(mpsc::Receiver<Result<(LogStream, Vec<u8>)>>);

impl futures_core::Stream for Chunks {
    type Item = Result<(LogStream, Vec<u8>)>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
