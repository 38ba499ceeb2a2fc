//! The errors of the WSL backend.

use std::io;

/// A `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong driving `wsl.exe` and the managed distribution.
///
/// The first three variants are the failures a user can fix, and their messages say
/// how; everything else `wsl.exe` says arrives as [`Error::Wsl`] with its own words.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// WSL itself (the optional component or the Store package) is missing.
    #[error("WSL is not installed: run `wsl.exe --install --no-distribution` (as administrator), restart Windows, then try again")]
    NotInstalled {
        /// What `wsl.exe` said, or why it could not be run.
        detail: String,
    },

    /// WSL 2 cannot start its VM: the Virtual Machine Platform is off or
    /// virtualization is disabled in the firmware.
    #[error("WSL 2 cannot start: enable the \"Virtual Machine Platform\" Windows feature (`wsl.exe --install --no-distribution`) and turn on virtualization in the firmware settings (https://aka.ms/enablevirtualization)")]
    VirtualizationDisabled {
        /// What `wsl.exe` said.
        detail: String,
    },

    /// The distribution is not registered.
    #[error("there is no WSL distribution named {distro:?}: install it with `locald wsl install`")]
    DistroNotFound {
        /// The name asked for.
        distro: String,
    },

    /// The distribution runs on WSL 1, which has no namespaces or cgroups.
    #[error("the WSL distribution {distro:?} runs on WSL 1: convert it with `wsl --set-version {distro} 2`")]
    Wsl1 {
        /// The distribution.
        distro: String,
    },

    /// `wsl.exe` failed, or printed something locald cannot read.
    #[error("`wsl.exe {command}` failed: {message}")]
    Wsl {
        /// The arguments.
        command: String,
        /// What it said (its error code line included), or what was wrong with it.
        message: String,
    },

    /// The root filesystem archive is not the one locald pins; nothing was imported.
    #[error(
        "{what} does not match its pinned digest: expected sha256:{expected}, got sha256:{actual}"
    )]
    DigestMismatch {
        /// The archive.
        what: String,
        /// The pinned digest.
        expected: String,
        /// The archive's digest.
        actual: String,
    },

    /// A setting or argument was rejected.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// What kind of input.
        what: &'static str,
        /// The input.
        value: String,
        /// Why.
        reason: String,
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

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<Error> for locald_core::Error {
    fn from(err: Error) -> locald_core::Error {
        match err {
            Error::Invalid {
                what,
                value,
                reason,
            } => locald_core::Error::invalid(what, value, reason),
            Error::Io { context, source } => locald_core::Error::io(context, source),
            // The cause (with its fix) follows in the chain.
            other => locald_core::Error::io(
                "cannot use the locald WSL distribution",
                io::Error::other(other),
            ),
        }
    }
}
