//! The daemon side of a process stream: stdin in, stdout and stderr out, signals in,
//! the exit status out.

use std::time::Duration;

use bytes::Bytes;
use locald_core::{Process, ProcessOutput, ProcessStdin, Signal};
use locald_remote::protocol::{Frame, FrameKind, KillRequest, Outcome};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, watch},
};

/// Bytes read from a process pipe at once.
const CHUNK: usize = 32 << 10;

/// Stdin frames queued for a process that does not read them yet.
const STDIN_QUEUE: usize = 64;

/// How long, once the process ended, the exit frame waits for its output to drain,
/// so that a client usually sees the output's end before the exit status.
const DRAIN_BEFORE_EXIT: Duration = Duration::from_millis(100);

/// The pipes taken from a process before its stream starts.
pub(crate) struct Pipes {
    pub(crate) stdin: Option<ProcessStdin>,
    pub(crate) stdout: Option<ProcessOutput>,
    pub(crate) stderr: Option<ProcessOutput>,
}

impl Pipes {
    /// The `locald-streams` header value.
    pub(crate) fn names(&self) -> String {
        [
            ("stdin", self.stdin.is_some()),
            ("stdout", self.stdout.is_some()),
            ("stderr", self.stderr.is_some()),
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
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(32);
    let writer = tokio::spawn(async move {
        while let Some(frame) = out_rx.recv().await {
            if frame.write(&mut wr).await.is_err() {
                return;
            }
            if out_rx.is_empty() && wr.flush().await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    });
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
    let stdin_tx = pipes.stdin.map(|mut stdin| {
        let (tx, mut rx) = mpsc::channel::<Bytes>(STDIN_QUEUE);
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if chunk.is_empty() || stdin.write_all(&chunk).await.is_err() {
                    break;
                }
                // Interactive programs answer each line: let it through now.
                if rx.is_empty() && stdin.flush().await.is_err() {
                    break;
                }
            }
            let _ = stdin.shutdown().await;
        });
        tx
    });
    let mut stdin_tx = stdin_tx;
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
            frame = Frame::read(&mut rd) => match frame {
                Ok(Some(frame)) => match frame.kind {
                    FrameKind::Stdin => {
                        let eof = frame.payload.is_empty();
                        if let Some(tx) = &stdin_tx {
                            if tx.send(frame.payload).await.is_err() || eof {
                                stdin_tx = None;
                            }
                        }
                    }
                    FrameKind::Kill => {
                        let result = match frame.parse::<KillRequest>() {
                            Ok(KillRequest { signal }) => {
                                process.as_mut().expect("kept until the client leaves").kill(signal).await
                            }
                            Err(e) => Err(locald_core::Error::invalid("kill request", String::from_utf8_lossy(&frame.payload), e.to_string())),
                        };
                        let _ = out_tx.send(Frame::json(FrameKind::Killed, &Outcome::from_result(&result))).await;
                    }
                    other => {
                        tracing::debug!(kind = ?other, "ignoring a frame only the daemon sends");
                    }
                },
                Ok(None) | Err(_) => {
                    // The client dropped the process or went away. Dropping a process
                    // that was not waited for kills it.
                    break;
                }
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
    drop(process);
    drop(stdin_tx);
    drop(out_tx);
    for pump in pumps.into_iter().flatten() {
        let _ = pump.await;
    }
    let _ = writer.await;
}

async fn pump(from: Option<ProcessOutput>, kind: FrameKind, to: mpsc::Sender<Frame>) {
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
