//! The daemon API, version 1: routes, bodies, errors and the stream framing.
//!
//! # Routes
//!
//! The locald API lives under [`PREFIX`] (`/locald/v1`), so that the root of the same
//! server is free for the Docker Engine API subset the daemon serves beside it
//! (`/_ping`, `/version`, `/containers/json`, `/v1.41/...`; see the README's
//! compatibility table).
//!
//! | method and path | body | answer |
//! |---|---|---|
//! | `GET /locald/v1/info` | | [`DaemonInfo`] |
//! | `POST /locald/v1/commands/run` | [`Command`](crate::Command) | [`Output`](crate::Output) |
//! | `POST /locald/v1/processes` (upgrade) | `Command` | `101`, then a [framed](Frame) stream |
//! | `POST /locald/v1/containers` (upgrade) | [`ContainerSpec`](crate::ContainerSpec) | `101`, then a framed stream of the main process |
//! | `GET /locald/v1/containers?all=true` | | `[ContainerSummary]` |
//! | `GET /locald/v1/containers/{id}` | | `ContainerSummary` |
//! | `DELETE /locald/v1/containers/{id}?force=true` | | `204` |
//! | `POST /locald/v1/containers/{id}/wait` | | [`ExitStatus`](crate::ExitStatus) |
//! | `POST /locald/v1/containers/{id}/stop` | [`StopRequest`] | `204` |
//! | `POST /locald/v1/containers/{id}/kill` | [`KillRequest`] | `204` |
//! | `GET /locald/v1/containers/{id}/logs?follow=true&tail=N` | | a framed body: stdout and stderr frames, then an [`END`](FrameKind::End) frame |
//! | `POST /locald/v1/containers/{id}/exec` (upgrade) | `Command` | `101`, then a framed stream |
//! | `POST /locald/v1/images/pull` | [`PullRequest`] | [`ImageSummary`](crate::ImageSummary); with `?progress=true`, JSON lines of [`PullLine`] |
//! | `GET /locald/v1/images` | | `[ImageSummary]` |
//! | `POST /locald/v1/images/remove` | [`ImageRequest`] | `ImageSummary` |
//! | `POST /locald/v1/images/prune` | | [`PruneReport`](crate::PruneReport) |
//! | `POST /locald/v1/images/load` | [`LoadRequest`] | `[ImageSummary]` |
//! | `POST /locald/v1/images/import` | [`ImportRequest`] | `ImageSummary` |
//! | `POST /locald/v1/images/login` | [`RegistryLogin`](crate::RegistryLogin) | `null` |
//! | `POST /locald/v1/images/logout` | [`LogoutRequest`] | `bool` (there were credentials) |
//!
//! Every error answer has Docker's error body, `{"message": "..."}`, with the typed
//! [`WireError`] beside it under `error`, from which a client rebuilds the very
//! [`crate::Error`] the runtime returned.
//!
//! # Streams
//!
//! A process (a spawned command, an exec, a container's main process) needs both
//! directions at once: stdin, signals and the exit status besides stdout and stderr.
//! Its route answers `101 Switching Protocols` (`Upgrade: locald-stream/1`) and the
//! connection then carries [frames](Frame) both ways: the header Docker's multiplexed
//! attach stream uses (one byte of stream kind, three zero bytes, a big-endian `u32`
//! length) followed by the payload. An upgrade works over every transport the daemon
//! has, a `--stdio` bridge included, needs no extra dependency (unlike WebSocket, whose
//! masking and message framing buy nothing here), and keeps bytes exact (unlike JSON
//! lines, which would have to encode them). Logs flow one way only, so they use the
//! same frames in a plain chunked response body.

use std::{io, path::PathBuf, time::Duration};

use crate::{Capability, Error, ImageRef, Platform, PullOptions, RuntimeInfo, Signal};
use bytes::{Buf, BufMut, BytesMut};
use futures_util::SinkExt;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};
use tokio_util::codec::{Decoder, Encoder, FramedRead, FramedWrite};

/// The API version this crate speaks.
pub const API_VERSION: u32 = 1;

/// The path prefix of every route of this API version.
pub const PREFIX: &str = "/locald/v1";

/// The `Upgrade` protocol token of process streams.
pub const UPGRADE_PROTOCOL: &str = "locald-stream/1";

/// Response header: the process id of a spawned process, as the runtime sees it.
pub const HEADER_PID: &str = "locald-pid";
/// Response header: the id of a container started with `POST /containers`.
pub const HEADER_CONTAINER_ID: &str = "locald-container-id";
/// Response header: the name of a container started with `POST /containers`.
pub const HEADER_CONTAINER_NAME: &str = "locald-container-name";

/// Response header: which pipes the process has, of `stdin`, `stdout` and `stderr`,
/// comma-separated, and `tty` when it runs on a terminal (it takes resize frames).
pub const HEADER_STREAMS: &str = "locald-streams";

/// The content type of a framed response body (logs).
pub const STREAM_CONTENT_TYPE: &str = "application/vnd.locald.stream";

/// The largest request body the daemon reads (a command with its stdin bytes, a spec).
pub const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The largest frame payload either side accepts.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// What `GET /locald/v1/info` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DaemonInfo {
    /// The API version the daemon speaks ([`API_VERSION`]).
    pub api_version: u32,
    /// The daemon's locald version.
    pub version: String,
    /// The daemon's process id.
    pub pid: u32,
    /// The runtime it serves.
    pub runtime: RuntimeInfo,
}

impl DaemonInfo {
    /// A description of a daemon serving `runtime`.
    pub fn new(version: impl Into<String>, pid: u32, runtime: RuntimeInfo) -> Self {
        DaemonInfo {
            api_version: API_VERSION,
            version: version.into(),
            pid,
            runtime,
        }
    }
}

/// Body of `POST /containers/{id}/stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// How long to wait after SIGTERM before SIGKILL.
    pub grace: Duration,
}

/// Body of `POST /containers/{id}/kill`, and the payload of a [`FrameKind::Kill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillRequest {
    /// The signal to send.
    pub signal: Signal,
}

/// Body of `POST /images/pull`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    /// The image to pull.
    pub image: ImageRef,
    /// How to pull it.
    #[serde(default)]
    pub options: PullOptions,
}

/// One line of the answer to `POST /images/pull?progress=true`: JSON lines of progress,
/// then the result, as docker's pull streams its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullLine {
    /// A progress event.
    Progress(crate::PullProgress),
    /// The pull finished.
    Done(crate::ImageSummary),
    /// The pull failed.
    Failed(WireError),
}

/// Body of `POST /images/remove`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRequest {
    /// The image.
    pub image: ImageRef,
}

/// Body of `POST /images/load`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadRequest {
    /// The OCI layout (directory or tar), as the daemon sees paths.
    pub path: PathBuf,
}

/// Body of `POST /images/import`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRequest {
    /// The root filesystem (directory or tar), as the daemon sees paths.
    pub rootfs: PathBuf,
    /// The name to give the image.
    pub image: ImageRef,
}

/// Body of `POST /images/logout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogoutRequest {
    /// The registry, `host[:port]`.
    pub registry: String,
}

/// Query of `GET /containers`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Stopped containers too.
    #[serde(default)]
    pub all: bool,
}

/// Query of `DELETE /containers/{id}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveQuery {
    /// Remove it even while it runs.
    #[serde(default)]
    pub force: bool,
}

/// The body of every error answer: Docker's `{"message": ...}` plus the typed error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error as a person reads it.
    pub message: String,
    /// The error as a client rebuilds it.
    pub error: WireError,
}

impl ErrorBody {
    /// The body for an error.
    pub fn new(error: WireError) -> Self {
        ErrorBody {
            message: error.message(),
            error,
        }
    }
}

/// An [`io::Error`] on the wire: its kind, its message and, for operating-system
/// errors, the Linux errno.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireIo {
    /// The [`io::ErrorKind`], as its Rust name (`NotFound`).
    pub kind: String,
    /// What the error displays.
    pub message: String,
    /// The errno, for errors from the operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_error: Option<i32>,
}

impl From<&io::Error> for WireIo {
    fn from(err: &io::Error) -> Self {
        WireIo {
            kind: format!("{:?}", err.kind()),
            message: err.to_string(),
            os_error: err.raw_os_error(),
        }
    }
}

impl WireIo {
    /// The `io::Error` again: the very errno where client and daemon share an
    /// operating system, else the same kind and message.
    pub fn to_io(&self) -> io::Error {
        match self.os_error {
            Some(code) if cfg!(target_os = "linux") => io::Error::from_raw_os_error(code),
            _ => io::Error::new(io_kind(&self.kind), self.message.clone()),
        }
    }
}

fn io_kind(name: &str) -> io::ErrorKind {
    use io::ErrorKind::*;
    [
        NotFound,
        PermissionDenied,
        ConnectionRefused,
        ConnectionReset,
        ConnectionAborted,
        NotConnected,
        AddrInUse,
        AddrNotAvailable,
        BrokenPipe,
        AlreadyExists,
        WouldBlock,
        InvalidInput,
        InvalidData,
        TimedOut,
        WriteZero,
        Interrupted,
        Unsupported,
        UnexpectedEof,
        OutOfMemory,
    ]
    .into_iter()
    .find(|k| format!("{k:?}") == name)
    .unwrap_or(Other)
}

/// A [`crate::Error`] on the wire, variant by variant, so that a client returns
/// exactly what the runtime behind the daemon returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum WireError {
    /// [`Error::Unsupported`].
    Unsupported {
        /// What was asked for.
        capability: Capability,
        /// The backend that was asked.
        runtime: String,
        /// Where it runs.
        platform: Platform,
    },
    /// [`Error::ProgramNotFound`].
    ProgramNotFound {
        /// The program as given.
        program: String,
    },
    /// [`Error::PermissionDenied`].
    PermissionDenied {
        /// The program as given.
        program: String,
    },
    /// [`Error::WorkingDirNotFound`].
    WorkingDirNotFound {
        /// The directory as given.
        path: PathBuf,
    },
    /// [`Error::Spawn`].
    Spawn {
        /// The program as given.
        program: String,
        /// What the operating system said.
        source: WireIo,
    },
    /// [`Error::Timeout`].
    Timeout {
        /// The program as given.
        program: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// [`Error::InvalidInput`].
    InvalidInput {
        /// What kind of input it was.
        what: String,
        /// The input as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// [`Error::NotFound`].
    NotFound {
        /// The kind of object.
        object: String,
        /// The name or id that was looked up.
        name: String,
    },
    /// [`Error::Io`].
    Io {
        /// What the runtime was doing.
        context: String,
        /// What the operating system said.
        source: WireIo,
    },
    /// [`Error::Registry`].
    Registry {
        /// The registry host.
        registry: String,
        /// What it said.
        message: String,
    },
    /// [`Error::Unauthorized`].
    Unauthorized {
        /// The registry host.
        registry: String,
        /// What was tried.
        detail: String,
    },
    /// [`Error::DigestMismatch`].
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// [`Error::InvalidImage`].
    InvalidImage {
        /// Which part.
        what: String,
        /// Why it was rejected.
        reason: String,
    },
    /// [`Error::PlatformNotFound`].
    PlatformNotFound {
        /// The image.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms it has.
        available: Vec<String>,
    },
    /// [`Error::Network`].
    Network {
        /// What the runtime was doing.
        context: String,
        /// The failure's chain, outermost first.
        #[serde(default)]
        causes: Vec<String>,
    },
    /// The request itself was refused: malformed, too large, unknown, unauthorized.
    Request {
        /// Why.
        reason: String,
    },
    /// An error this API version has no variant for: its message and its causes.
    Other {
        /// What it displays.
        message: String,
        /// Its sources, outermost first.
        #[serde(default)]
        causes: Vec<String>,
    },
}

impl WireError {
    /// A refused request.
    pub fn request(reason: impl Into<String>) -> Self {
        WireError::Request {
            reason: reason.into(),
        }
    }

    /// What the error displays.
    pub fn message(&self) -> String {
        match self {
            WireError::Request { reason } => reason.clone(),
            WireError::Other { message, .. } => message.clone(),
            other => other.to_error().to_string(),
        }
    }

    /// The [`crate::Error`] this stands for.
    pub fn to_error(&self) -> Error {
        match self.clone() {
            WireError::Unsupported {
                capability,
                runtime,
                platform,
            } => Error::Unsupported {
                capability,
                runtime,
                platform,
            },
            WireError::ProgramNotFound { program } => Error::ProgramNotFound { program },
            WireError::PermissionDenied { program } => Error::PermissionDenied { program },
            WireError::WorkingDirNotFound { path } => Error::WorkingDirNotFound { path },
            WireError::Spawn { program, source } => Error::Spawn {
                program,
                source: source.to_io(),
            },
            WireError::Timeout { program, timeout } => Error::Timeout { program, timeout },
            WireError::InvalidInput {
                what,
                value,
                reason,
            } => Error::InvalidInput {
                what: intern(&what),
                value,
                reason,
            },
            WireError::NotFound { object, name } => Error::NotFound {
                kind: intern(&object),
                name,
            },
            WireError::Io { context, source } => Error::Io {
                context,
                source: source.to_io(),
            },
            WireError::Registry { registry, message } => Error::Registry { registry, message },
            WireError::Unauthorized { registry, detail } => {
                Error::Unauthorized { registry, detail }
            }
            WireError::DigestMismatch {
                what,
                expected,
                actual,
            } => Error::DigestMismatch {
                what,
                expected,
                actual,
            },
            WireError::InvalidImage { what, reason } => Error::InvalidImage { what, reason },
            WireError::PlatformNotFound {
                reference,
                wanted,
                available,
            } => Error::PlatformNotFound {
                reference,
                wanted,
                available,
            },
            WireError::Network { context, causes } => Error::Network {
                context,
                source: Box::new(io::Error::other(causes.join(": "))),
            },
            WireError::Request { reason } => Error::Io {
                context: "the locald daemon refused the request".into(),
                source: io::Error::new(io::ErrorKind::InvalidInput, reason),
            },
            WireError::Other { message, causes } => Error::Io {
                context: message,
                source: io::Error::other(if causes.is_empty() {
                    "no further detail".to_owned()
                } else {
                    causes.join(": ")
                }),
            },
        }
    }

    /// The wire form of an error.
    pub fn from_error(err: &Error) -> Self {
        match err {
            Error::Unsupported {
                capability,
                runtime,
                platform,
            } => WireError::Unsupported {
                capability: *capability,
                runtime: runtime.clone(),
                platform: *platform,
            },
            Error::ProgramNotFound { program } => WireError::ProgramNotFound {
                program: program.clone(),
            },
            Error::PermissionDenied { program } => WireError::PermissionDenied {
                program: program.clone(),
            },
            Error::WorkingDirNotFound { path } => {
                WireError::WorkingDirNotFound { path: path.clone() }
            }
            Error::Spawn { program, source } => WireError::Spawn {
                program: program.clone(),
                source: source.into(),
            },
            Error::Timeout { program, timeout } => WireError::Timeout {
                program: program.clone(),
                timeout: *timeout,
            },
            Error::InvalidInput {
                what,
                value,
                reason,
            } => WireError::InvalidInput {
                what: (*what).to_owned(),
                value: value.clone(),
                reason: reason.clone(),
            },
            Error::NotFound { kind, name } => WireError::NotFound {
                object: (*kind).to_owned(),
                name: name.clone(),
            },
            Error::Io { context, source } => WireError::Io {
                context: context.clone(),
                source: source.into(),
            },
            Error::Registry { registry, message } => WireError::Registry {
                registry: registry.clone(),
                message: message.clone(),
            },
            Error::Unauthorized { registry, detail } => WireError::Unauthorized {
                registry: registry.clone(),
                detail: detail.clone(),
            },
            Error::DigestMismatch {
                what,
                expected,
                actual,
            } => WireError::DigestMismatch {
                what: what.clone(),
                expected: expected.clone(),
                actual: actual.clone(),
            },
            Error::InvalidImage { what, reason } => WireError::InvalidImage {
                what: what.clone(),
                reason: reason.clone(),
            },
            Error::PlatformNotFound {
                reference,
                wanted,
                available,
            } => WireError::PlatformNotFound {
                reference: reference.clone(),
                wanted: wanted.clone(),
                available: available.clone(),
            },
            Error::Network { context, source } => {
                let mut causes = vec![source.to_string()];
                let mut next = source.source();
                while let Some(cause) = next {
                    causes.push(cause.to_string());
                    next = cause.source();
                }
                WireError::Network {
                    context: context.clone(),
                    causes,
                }
            }
        }
    }

    /// The HTTP status an error answer carries.
    pub fn status(&self) -> u16 {
        match self {
            WireError::InvalidInput { .. } | WireError::Request { .. } => 400,
            WireError::PermissionDenied { .. } => 403,
            WireError::ProgramNotFound { .. }
            | WireError::WorkingDirNotFound { .. }
            | WireError::NotFound { .. } => 404,
            WireError::Unsupported { .. } => 501,
            WireError::Unauthorized { .. } => 403,
            WireError::PlatformNotFound { .. } => 404,
            WireError::Registry { .. } | WireError::Network { .. } => 502,
            WireError::Timeout { .. } => 504,
            _ => 500,
        }
    }
}

/// `&'static str` fields of [`Error`] (`what`, `kind`) for names that came over the
/// wire: the names a runtime uses are few, so each distinct one is leaked once. Past
/// a bound (a daemon sending endless new names), a generic name stands in.
fn intern(name: &str) -> &'static str {
    use std::{collections::HashSet, sync::Mutex};
    const MAX_NAMES: usize = 256;
    static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut guard = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    let names = guard.get_or_insert_with(HashSet::new);
    if let Some(known) = names.get(name) {
        return known;
    }
    if names.len() >= MAX_NAMES {
        return "input";
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// How something that ends (a process, a kill, a log stream) ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome<T> {
    /// It worked.
    Ok(T),
    /// It failed.
    Err(WireError),
}

impl<T> Outcome<T> {
    /// The outcome of a runtime call.
    pub fn from_result(result: &crate::Result<T>) -> Self
    where
        T: Clone,
    {
        match result {
            Ok(v) => Outcome::Ok(v.clone()),
            Err(e) => Outcome::Err(WireError::from_error(e)),
        }
    }

    /// The result again.
    pub fn into_result(self) -> crate::Result<T> {
        match self {
            Outcome::Ok(v) => Ok(v),
            Outcome::Err(e) => Err(e.to_error()),
        }
    }
}

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameKind {
    /// Client to daemon: bytes for the process's stdin; empty means end of file.
    Stdin,
    /// Daemon to client: bytes the process wrote to stdout; empty means end of file.
    Stdout,
    /// Daemon to client: bytes the process wrote to stderr; empty means end of file.
    Stderr,
    /// Daemon to client: the process ended (or the log stream did); the payload is a
    /// JSON [`Outcome`] of the [`ExitStatus`](crate::ExitStatus) (`()` for logs).
    End,
    /// Client to daemon: send a signal; the payload is a JSON [`KillRequest`].
    Kill,
    /// Daemon to client: how the last kill went; the payload is a JSON `Outcome<()>`.
    Killed,
    /// Client to daemon: set the size of the process's terminal; the payload is a JSON
    /// [`TerminalSize`](crate::TerminalSize). No answer: a process without a terminal
    /// ignores it.
    Resize,
}

impl FrameKind {
    fn byte(self) -> u8 {
        match self {
            FrameKind::Stdin => 0,
            FrameKind::Stdout => 1,
            FrameKind::Stderr => 2,
            FrameKind::End => 3,
            FrameKind::Kill => 4,
            FrameKind::Killed => 5,
            FrameKind::Resize => 6,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => FrameKind::Stdin,
            1 => FrameKind::Stdout,
            2 => FrameKind::Stderr,
            3 => FrameKind::End,
            4 => FrameKind::Kill,
            5 => FrameKind::Killed,
            6 => FrameKind::Resize,
            _ => return None,
        })
    }
}

/// One unit of a stream: a kind and a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it carries.
    pub kind: FrameKind,
    /// The bytes.
    pub payload: bytes::Bytes,
}

impl Frame {
    /// A frame.
    pub fn new(kind: FrameKind, payload: impl Into<bytes::Bytes>) -> Self {
        Frame {
            kind,
            payload: payload.into(),
        }
    }

    /// A frame whose payload is `value` as JSON.
    pub fn json(kind: FrameKind, value: &impl Serialize) -> Self {
        let payload = serde_json::to_vec(value).expect("protocol values serialize");
        Frame::new(kind, payload)
    }

    /// The payload parsed as JSON.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> io::Result<T> {
        serde_json::from_slice(&self.payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// The header and payload as they go on the wire.
    pub fn encode(self) -> bytes::Bytes {
        let mut buf = BytesMut::new();
        FrameCodec
            .encode(self, &mut buf)
            .expect("encoding a frame cannot fail");
        buf.freeze()
    }
}

/// The frame format as a [`tokio_util::codec`] codec: an 8-byte header (kind, three
/// zero bytes, the payload's length as a big-endian `u32`, as Docker's attach stream)
/// and the payload. Decoding refuses unknown kinds, a malformed header, payloads over
/// [`MAX_FRAME_BYTES`], and a stream that ends inside a frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Frame>> {
        if src.len() < 8 {
            return Ok(None);
        }
        let kind = FrameKind::from_byte(src[0]).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown frame kind {}", src[0]),
            )
        })?;
        if src[1..4] != [0, 0, 0] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed frame header",
            ));
        }
        let len = u32::from_be_bytes([src[4], src[5], src[6], src[7]]) as usize;
        if len > MAX_FRAME_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes is larger than the limit of {MAX_FRAME_BYTES}"),
            ));
        }
        if src.len() < 8 + len {
            src.reserve(8 + len - src.len());
            return Ok(None);
        }
        src.advance(8);
        Ok(Some(Frame::new(kind, src.split_to(len).freeze())))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> io::Result<()> {
        let len = u32::try_from(frame.payload.len())
            .ok()
            .filter(|len| *len as usize <= MAX_FRAME_BYTES)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "frame of {} bytes is larger than the limit of {MAX_FRAME_BYTES}",
                        frame.payload.len()
                    ),
                )
            })?;
        dst.reserve(8 + frame.payload.len());
        dst.put_u8(frame.kind.byte());
        dst.put_slice(&[0, 0, 0]);
        dst.put_u32(len);
        dst.put_slice(&frame.payload);
        Ok(())
    }
}

/// The frames arriving on `io`.
pub fn read_frames<R: AsyncRead>(io: R) -> FramedRead<R, FrameCodec> {
    FramedRead::new(io, FrameCodec)
}

/// Writes the frames `queue` yields to `io` in order, flushing whenever the queue is
/// empty (an interactive peer sees each frame at once) and half-closing `io` when
/// every sender is gone, which tells the peer this side is done. Returns early when
/// `io` fails.
pub async fn write_frames<W: AsyncWrite + Unpin>(io: W, mut queue: mpsc::Receiver<Frame>) {
    let mut sink = FramedWrite::new(io, FrameCodec);
    while let Some(frame) = queue.recv().await {
        if sink.feed(frame).await.is_err() {
            return;
        }
        if queue.is_empty() && SinkExt::<Frame>::flush(&mut sink).await.is_err() {
            return;
        }
    }
    let _ = SinkExt::<Frame>::close(&mut sink).await;
}

/// Percent-encodes a name (a container id or name, a project, a service) for a
/// path or query segment of a route: `[a-zA-Z0-9_.-]` stay, anything else is
/// escaped.
pub fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_round_trips_with_its_message() {
        let errors = vec![
            Error::Unsupported {
                capability: Capability::Containers,
                runtime: "process".into(),
                platform: Platform::Linux,
            },
            Error::ProgramNotFound {
                program: "nope".into(),
            },
            Error::PermissionDenied {
                program: "/etc/passwd".into(),
            },
            Error::WorkingDirNotFound {
                path: "/no/such".into(),
            },
            Error::Spawn {
                program: "x".into(),
                source: io::Error::from_raw_os_error(libc_enomem()),
            },
            Error::Timeout {
                program: "sleep".into(),
                timeout: Duration::from_micros(1500),
            },
            Error::invalid("environment variable name", "A=B", "must not contain '='"),
            Error::NotFound {
                kind: "container",
                name: "web".into(),
            },
            Error::io(
                "reading state",
                io::Error::new(io::ErrorKind::InvalidData, "bad json"),
            ),
        ];
        for err in errors {
            let wire = WireError::from_error(&err);
            let json = serde_json::to_string(&ErrorBody::new(wire)).unwrap();
            let body: ErrorBody = serde_json::from_str(&json).unwrap();
            let back = body.error.to_error();
            assert_eq!(back.to_string(), err.to_string());
            assert_eq!(body.message, err.to_string());
            assert_eq!(
                std::mem::discriminant(&back),
                std::mem::discriminant(&err),
                "{err}"
            );
            let chain = |e: &Error| std::error::Error::source(e).map(|s| s.to_string());
            assert_eq!(chain(&back), chain(&err));
        }
    }

    fn libc_enomem() -> i32 {
        12
    }

    #[tokio::test]
    async fn frames_round_trip_and_reject_garbage() {
        let frames = [
            Frame::new(FrameKind::Stdout, b"hello".to_vec()),
            Frame::new(FrameKind::Stderr, Vec::new()),
            Frame::json(FrameKind::Resize, &crate::TerminalSize::new(24, 80)),
            Frame::json(
                FrameKind::Kill,
                &KillRequest {
                    signal: Signal::TERM,
                },
            ),
        ];
        use futures_util::StreamExt;

        // Through a pipe, as on a connection: written by the writer task, read back
        // in order, and the half-close reads as the end.
        let (client, server) = tokio::io::duplex(64);
        let (tx, rx) = mpsc::channel(4);
        let writer = tokio::spawn(write_frames(client, rx));
        for f in &frames {
            tx.send(f.clone()).await.unwrap();
        }
        drop(tx);
        let mut reader = read_frames(server);
        for f in &frames {
            assert_eq!(reader.next().await.unwrap().unwrap(), *f);
        }
        assert!(reader.next().await.is_none());
        writer.await.unwrap();
        assert_eq!(
            &frames[0].clone().encode()[..],
            &[1, 0, 0, 0, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']
        );

        async fn first(bytes: &'static [u8]) -> Option<io::Result<Frame>> {
            read_frames(bytes).next().await
        }
        assert!(first(&[9u8, 0, 0, 0, 0, 0, 0, 0]).await.unwrap().is_err());
        assert!(first(&[1u8, 0, 1, 0, 0, 0, 0, 0]).await.unwrap().is_err());
        let err = first(&[1u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("larger than the limit"), "{err}");
        // A stream that ends inside a frame is an error, not a quiet end.
        assert!(first(&[1u8, 0, 0, 0, 0, 0, 0, 9, b'a'])
            .await
            .unwrap()
            .is_err());
        assert!(first(&[]).await.is_none());
    }
}
