//! The errors of the Lima backend.

use std::{io, path::PathBuf, time::Duration};

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong installing Lima or driving `locald-vm`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A step of bringing the VM up failed; the source says why.
    #[error("cannot bring up {vm}: {step} failed")]
    Step {
        /// The instance.
        vm: String,
        /// The step (`installing Lima 2.2.0`, `starting the VM`, ...).
        step: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },

    /// The pinned release has no verified archive for this machine.
    #[error("{release} has no verified archive for {platform}")]
    NoAsset {
        /// The release (`Lima 2.2.0`).
        release: String,
        /// The OS and architecture.
        platform: String,
    },

    /// A download failed (after its retries, when it was worth retrying).
    #[error("downloading {url}")]
    Download {
        /// What was fetched.
        url: String,
        /// Why it failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// Content did not match its pinned digest; nothing was installed.
    #[error(
        "{what} does not match its pinned digest: expected sha256:{expected}, got sha256:{actual}"
    )]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The pinned digest.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },

    /// An archive entry would land outside the install directory, or is of a kind an
    /// install never needs.
    #[error("refusing archive entry {entry:?}: {reason}")]
    UnsafeArchive {
        /// The entry's path as written in the archive.
        entry: String,
        /// Why it was refused.
        reason: String,
    },

    /// `limactl` failed or said something locald cannot read.
    #[error("`limactl {command}` failed: {message}")]
    Limactl {
        /// The subcommand and its arguments.
        command: String,
        /// What it said (the tail of its stderr) or what was wrong with its output.
        message: String,
    },

    /// A step did not finish in time.
    #[error("{what} did not finish within {after:?}")]
    Timeout {
        /// The step.
        what: String,
        /// How long it was given.
        after: Duration,
    },

    /// The instance is in a state locald will not touch by itself.
    #[error("{vm} {reason}")]
    Instance {
        /// The instance.
        vm: String,
        /// What is wrong and what to do.
        reason: String,
    },

    /// A Unix socket path is too long for the platform.
    #[error("the socket path {} is {len} bytes, longer than the {max} a Unix socket allows here; set LOCALD_HOME to a shorter directory", path.display())]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit, including the terminating NUL.
        max: usize,
    },

    /// A configuration value was rejected.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What it was.
        what: &'static str,
        /// Why.
        reason: String,
    },

    /// A file-system or process call failed.
    #[error("{context}")]
    Io {
        /// What locald was doing.
        context: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// Talking to the daemon in the VM failed.
    #[error("reaching the locald daemon in the VM")]
    Daemon(#[source] locald_core::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn step(vm: &str, step: impl Into<String>) -> impl FnOnce(Error) -> Error {
        let (vm, step) = (vm.to_owned(), step.into());
        move |source| Error::Step {
            vm,
            step,
            source: Box::new(source),
        }
    }
}

impl From<Error> for locald_core::Error {
    /// A [`locald_core::Error::Io`] whose source is this error, so the chain keeps the
    /// step that failed and its cause.
    fn from(err: Error) -> locald_core::Error {
        match err {
            Error::Daemon(inner) => inner,
            Error::Step { vm, step, source } => match *source {
                // The daemon answered: its error is the caller's error.
                Error::Daemon(inner) if !matches!(inner, locald_core::Error::Io { .. }) => inner,
                source => locald_core::Error::io(
                    format!("cannot bring up {vm}: {step} failed"),
                    io::Error::other(source),
                ),
            },
            other => locald_core::Error::io("the Lima backend failed", io::Error::other(other)),
        }
    }
}
