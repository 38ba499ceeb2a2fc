//! The daemon side of a process stream: stdin in, stdout and stderr out, signals in,
//! the exit status out.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use locald::remote::protocol::{read_frames, write_frames, Frame, FrameKind, KillRequest, Outcome};
use locald::{Process, ProcessOutput, ProcessStdin, Signal};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore},
};

/// Bytes read from a process pipe at once.
const CHUNK: usize = 32 << 10;

/// Bytes of stdin queued for a process that does not read them yet.
const STDIN_BUDGET: usize = 8 << 20;

/// What the frame reader passes on.
enum Control {
    /// A kill frame (or why it could not be read).
    Kill(locald::Result<Signal>),
    /// A resize frame.
    Resize(locald::TerminalSize),
    /// The client closed its side.
    Closed,
}

/// How long, once the process ended, the exit frame waits for its output to drain,
/// so that a client usually sees the output's end before the exit status.
const DRAIN_BEFORE_EXIT: Duration = Duration::from_millis(100);

/// The pipes taken from a process before its stream starts.
pub(crate) struct Pipes {
    pub(crate) stdin: Option<ProcessStdin>,
    pub(crate) stdout: Option<ProcessOutput>,
    pub(crate) stderr: Option<ProcessOutput>,
    /// The process runs on a terminal (resize frames reach it).
    pub(crate) tty: bool,
}

impl Pipes {
    /// The `locald-streams` header value.
    pub(crate) fn names(&self) -> String {
        [
            ("stdin", self.stdin.is_some()),
            ("stdout", self.stdout.is_some()),
            ("stderr", self.stderr.is_some()),
            ("tty", self.tty),
        ]
        .iter()
        .filter(|(_, has)| *has)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(",")
    }
}

/// Serves one process over `io` until the process ended and its output is sent, or
/// the client went away.
///
/// When the client closes its side (it dropped the process), a process that still
/// runs is dropped, which kills it as an in-process drop would; output already
/// produced still goes out. When `terminate` turns true (the daemon is stopping), the
/// process gets SIGTERM.
pub(crate) async fn serve<IO>(
    io: IO,
    process: Process,
    pipes: Pipes,
    mut terminate: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let mut rd = read_frames(rd);
    let (out_tx, out_rx) = mpsc::channel::<Frame>(32);
    let writer = tokio::spawn(write_frames(wr, out_rx));
    let mut pumps = [
        Some(tokio::spawn(pump(
            pipes.stdout,
            FrameKind::Stdout,
            out_tx.clone(),
        ))),
        Some(tokio::spawn(pump(
            pipes.stderr,
            FrameKind::Stderr,
            out_tx.clone(),
        ))),
    ];
    // Stdin: frames are queued for the process up to a byte budget, so that a process
    // that does not read its input slows the client down without holding up its kill
    // frames until that much is pending.
    let budget = Arc::new(Semaphore::new(STDIN_BUDGET));
    let stdin_tx = pipes.stdin.map(|mut stdin| {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Bytes, OwnedSemaphorePermit)>();
        tokio::spawn(async move {
            while let Some((chunk, permit)) = rx.recv().await {
                if stdin.write_all(&chunk).await.is_err() {
                    break;
                }
                drop(permit);
                // Interactive programs answer each line: let it through now.
                if rx.is_empty() && stdin.flush().await.is_err() {
                    break;
                }
            }
            let _ = stdin.shutdown().await;
        });
        tx
    });
    // Frames from the client are read by a task of their own: reading one is not
    // cancel-safe, so it must not sit in the `select!` below.
    let (control_tx, mut control) = mpsc::channel::<Control>(8);
    let reader = tokio::spawn(async move {
        let mut stdin_tx = stdin_tx;
        loop {
            let frame = match rd.next().await {
                Some(Ok(frame)) => frame,
                None => break,
                Some(Err(err)) => {
                    tracing::debug!(%err, "ending a process stream");
                    break;
                }
            };
            match frame.kind {
                FrameKind::Stdin if frame.payload.is_empty() => stdin_tx = None,
                FrameKind::Stdin => {
                    let Some(tx) = &stdin_tx else { continue };
                    let n = u32::try_from(frame.payload.len()).unwrap_or(u32::MAX);
                    let Ok(permit) = budget.clone().acquire_many_owned(n).await else {
                        break;
                    };
                    if tx.send((frame.payload, permit)).is_err() {
                        stdin_tx = None;
                    }
                }
                FrameKind::Kill => {
                    let request = frame.parse::<KillRequest>().map(|k| k.signal).map_err(|e| {
                        locald::Error::invalid(
                            "kill request",
                            String::from_utf8_lossy(&frame.payload),
                            e.to_string(),
                        )
                    });
                    if control_tx.send(Control::Kill(request)).await.is_err() {
                        return;
                    }
                }
                FrameKind::Resize => match frame.parse::<locald::TerminalSize>() {
                    Ok(size) => {
                        if control_tx.send(Control::Resize(size)).await.is_err() {
                            return;
                        }
                    }
                    Err(err) => tracing::debug!(%err, "ignoring a bad resize frame"),
                },
                other => tracing::debug!(kind = ?other, "ignoring a frame only the daemon sends"),
            }
        }
        let _ = control_tx.send(Control::Closed).await;
    });
    let mut ended = false;
    let mut terminated = false;
    let mut process = Some(process);
    loop {
        tokio::select! {
            status = async { process.as_mut().expect("kept until the client leaves").wait().await }, if !ended => {
                ended = true;
                let _ = tokio::time::timeout(DRAIN_BEFORE_EXIT, async {
                    for pump in pumps.iter_mut() {
                        if let Some(handle) = pump.as_mut() {
                            let _ = handle.await;
                            *pump = None;
                        }
                    }
                })
                .await;
                let _ = out_tx.send(Frame::json(FrameKind::End, &Outcome::from_result(&status))).await;
            }
            control = control.recv() => match control {
                Some(Control::Kill(request)) => {
                    let result = match request {
                        Ok(signal) => process.as_mut().expect("kept until the client leaves").kill(signal).await,
                        Err(err) => Err(err),
                    };
                    let _ = out_tx.send(Frame::json(FrameKind::Killed, &Outcome::from_result(&result))).await;
                }
                Some(Control::Resize(size)) => {
                    if let Err(err) = process.as_mut().expect("kept until the client leaves").resize(size).await {
                        tracing::debug!(%err, "resizing a terminal");
                    }
                }
                // The client dropped the process or went away. Dropping a process that
                // was not waited for kills it.
                Some(Control::Closed) | None => break,
            },
            changed = terminate.changed(), if !terminated => {
                terminated = true;
                if changed.is_ok() && *terminate.borrow() && !ended {
                    if let Some(p) = process.as_mut() {
                        let _ = p.kill(Signal::TERM).await;
                    }
                }
            }
        }
    }
    reader.abort();
    drop(process);
    drop(out_tx);
    for pump in pumps.into_iter().flatten() {
        let _ = pump.await;
    }
    let _ = writer.await;
}

/// Sends what a process writes on one stream as frames of `kind`, then an empty frame
/// at its end (the locald stream's end-of-file; the Docker stream skips it). Returns
/// early when nobody receives any more.
pub(crate) async fn pump(from: Option<ProcessOutput>, kind: FrameKind, to: mpsc::Sender<Frame>) {
    let Some(mut from) = from else { return };
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to
                    .send(Frame::new(kind, Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = to.send(Frame::new(kind, Bytes::new())).await;
}
