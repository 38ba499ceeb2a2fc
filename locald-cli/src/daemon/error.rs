//! The daemon's errors.

use std::{io, path::PathBuf};

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can keep a daemon from starting or serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another daemon already serves this socket or state directory.
    #[error("a locald daemon already runs at {}", path.display())]
    AlreadyRunning {
        /// Its socket or state directory.
        path: PathBuf,
    },

    /// A TCP listener was asked for on an address other than loopback.
    #[error("refusing to listen on {addr}: the daemon only listens on loopback addresses")]
    NotLoopback {
        /// The address asked for.
        addr: std::net::SocketAddr,
    },

    /// The token file holds something unusable.
    #[error("the token in {} is unusable: {reason}", path.display())]
    BadToken {
        /// The token file.
        path: PathBuf,
        /// Why.
        reason: &'static str,
    },

    /// A file or socket operation failed.
    #[error("{context}")]
    Io {
        /// What the daemon was doing.
        context: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
