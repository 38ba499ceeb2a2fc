//! The error type shared by every locald backend.

use std::{io, path::PathBuf, time::Duration};

use crate::{Capability, Platform};

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when asking a [`Runtime`](crate::Runtime) for work.
///
/// Messages are lowercase, carry their context, and never repeat their source: walk
/// [`std::error::Error::source`] (or print with `{:#}` through `anyhow`) for the chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backend cannot do this on this platform.
    #[error("{capability} is not supported by the {runtime} runtime on {platform}{}", platform_hint(.platform))]
    Unsupported {
        /// What was asked for.
        capability: Capability,
        /// The backend that was asked.
        runtime: String,
        /// Where it runs.
        platform: Platform,
    },

    /// The program to run does not exist (or is not on `PATH`).
    #[error("program not found: {program}")]
    ProgramNotFound {
        /// The program as given.
        program: String,
    },

    /// The program exists but may not be executed.
    #[error("permission denied executing {program}")]
    PermissionDenied {
        /// The program as given.
        program: String,
    },

    /// The working directory given for a command does not exist or is not a directory.
    #[error("working directory not found: {}", path.display())]
    WorkingDirNotFound {
        /// The directory as given.
        path: PathBuf,
    },

    /// Starting a process failed for another reason.
    #[error("failed to start {program}")]
    Spawn {
        /// The program as given.
        program: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },

    /// A command ran past its timeout and was killed with its whole process group.
    #[error("{program} timed out after {timeout:?} and was killed")]
    Timeout {
        /// The program as given.
        program: String,
        /// The timeout that expired.
        timeout: Duration,
    },

    /// User input (a spec, a flag, a reference) was rejected.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidInput {
        /// What kind of input it was (`memory limit`, `port mapping`, ...).
        what: &'static str,
        /// The input as given.
        value: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A named object (container, image, ...) does not exist.
    #[error("no such {kind}: {name}")]
    NotFound {
        /// The kind of object.
        kind: &'static str,
        /// The name or id that was looked up.
        name: String,
    },

    /// A registry answered with an error.
    #[error("registry {registry}: {message}")]
    Registry {
        /// The registry host.
        registry: String,
        /// What it said, or what went wrong talking to it.
        message: String,
    },

    /// A registry refused the credentials (or their absence).
    #[error("registry {registry} refused access: {detail}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// What was tried, without secrets.
        detail: String,
    },

    /// Content did not match the digest that names it.
    #[error("{what} does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was checked (`layer sha256:…`, `manifest …`).
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },

    /// An image (manifest, config or layer) is malformed or unsafe.
    #[error("invalid image {what}: {reason}")]
    InvalidImage {
        /// Which part (`layer sha256:…`, `manifest`, ...).
        what: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A multi-platform image does not have the platform asked for.
    #[error("{reference} has no image for {wanted}; it has {}", available.join(", "))]
    PlatformNotFound {
        /// The image.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platforms it has.
        available: Vec<String>,
    },

    /// A network transfer failed.
    #[error("{context}")]
    Network {
        /// What locald was doing.
        context: String,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// An operating-system call failed.
    #[error("{context}")]
    Io {
        /// What locald was doing.
        context: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

/// What to do about a platform that lacks something (WSL1 lacks a real kernel).
fn platform_hint(platform: &Platform) -> &'static str {
    match platform {
        Platform::Wsl1 => {
            " (WSL1 has no namespaces or cgroups: convert with `wsl --set-version <distro> 2`)"
        }
        _ => "",
    }
}

impl Error {
    /// An [`Error::InvalidInput`].
    pub fn invalid(
        what: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidInput {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] with a description of what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// True when this error says the backend lacks a capability.
    pub fn is_unsupported(&self) -> bool {
        matches!(self, Error::Unsupported { .. })
    }
}
