//! The two seams a remote backend plugs into: how to reach the daemon ([`Dial`]) and
//! how a path on this machine is named where the daemon runs ([`PathMap`]).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Error, Result};

/// A byte stream to a daemon, as [`Dial::dial`] opens it.
///
/// Anything that reads and writes bytes is one: a Unix or TCP socket, a forwarded
/// socket, the stdin and stdout of a bridge command. Shutting down the write side must
/// read as end of file on the daemon's side (a socket's half-close).
pub trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

/// How to open a connection to a daemon: the transport of a remote backend.
///
/// [`Host`](super::Host) is the implementation for the addresses `LOCALD_HOST` names
/// (a Unix socket, loopback TCP with a token, a bridge command). A backend whose
/// daemon sits behind something else — a VM's forwarded socket that appears only once
/// the VM runs, a `wsl.exe --exec` bridge — implements this trait and hands it to
/// [`RemoteRuntime::builder`](super::RemoteRuntime::builder). The client opens a few
/// connections and keeps them, and opens one per streamed process; each call must
/// return a fresh connection.
///
/// ```
/// use async_trait::async_trait;
/// use locald_core::remote::{Connection, Dial, Host};
///
/// /// Dials the daemon's socket, wherever the VM put it this time.
/// #[derive(Debug)]
/// struct VmSocket(std::path::PathBuf);
///
/// impl std::fmt::Display for VmSocket {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "the VM's socket {}", self.0.display())
///     }
/// }
///
/// #[async_trait]
/// impl Dial for VmSocket {
///     async fn dial(&self) -> locald_core::Result<Box<dyn Connection>> {
///         Host::Unix(self.0.clone()).dial().await
///     }
/// }
/// ```
#[async_trait]
pub trait Dial: Send + Sync + fmt::Debug + fmt::Display {
    /// Opens one new connection to the daemon. Errors name where it tried.
    async fn dial(&self) -> Result<Box<dyn Connection>>;

    /// The bearer token the daemon requires on this transport (default: none; only a
    /// daemon's TCP listener asks for one).
    fn token(&self) -> Option<&str> {
        None
    }
}

/// How a path on this machine is named where the daemon runs.
///
/// Paths in requests are the client's: a bind mount's source, a root filesystem
/// directory, a host command's working directory, the archive given to `load_image` or
/// the directory given to `import_image`. A daemon in a VM or a WSL2 distribution sees
/// the client's files under other names (`/Users/ada` shared into a Lima guest,
/// `C:\src` as `/mnt/c/src`); the map turns each path into the daemon's before the
/// request leaves. Paths inside a container (a mount's destination, a container's
/// working directory, an `exec`'s working directory) are never mapped.
///
/// A path the daemon cannot see is an error that says so, before anything is sent.
pub trait PathMap: Send + Sync + fmt::Debug {
    /// The daemon's name for `path`, an absolute path on this machine.
    fn to_daemon(&self, path: &Path) -> Result<PathBuf>;
}

/// The daemon sees this machine's files under the same names: a daemon on the same
/// host. Relative paths are made absolute against this process's working directory,
/// since the daemon's is not the client's.
#[derive(Debug, Clone, Copy, Default)]
pub struct SamePaths;

impl PathMap for SamePaths {
    fn to_daemon(&self, path: &Path) -> Result<PathBuf> {
        Ok(path.to_path_buf())
    }
}

/// A prefix map: paths under each host prefix appear under the matching daemon prefix
/// (the longest host prefix wins); other paths are refused, since the daemon cannot
/// see them. This is the shape of a VM's shared folders.
///
/// ```
/// use std::path::Path;
/// use locald_core::remote::{PathMap, PrefixMap};
///
/// let map = PrefixMap::new()
///     .share("/Users/ada", "/Users/ada")
///     .share("/Volumes/work", "/mnt/work");
/// assert_eq!(map.to_daemon(Path::new("/Volumes/work/app"))?, Path::new("/mnt/work/app"));
/// let err = map.to_daemon(Path::new("/etc/hosts")).unwrap_err();
/// assert!(err.to_string().contains("not shared with the daemon"), "{err}");
/// # Ok::<(), locald_core::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct PrefixMap {
    shares: Vec<(PathBuf, PathBuf)>,
}

impl PrefixMap {
    /// A map that shares nothing yet.
    pub fn new() -> PrefixMap {
        PrefixMap::default()
    }

    /// Paths under `host` appear under `daemon`.
    pub fn share(mut self, host: impl Into<PathBuf>, daemon: impl Into<PathBuf>) -> PrefixMap {
        self.shares.push((host.into(), daemon.into()));
        // Longest host prefix first, so nested shares win.
        self.shares
            .sort_by_key(|(host, _)| std::cmp::Reverse(host.components().count()));
        self
    }
}

impl PathMap for PrefixMap {
    fn to_daemon(&self, path: &Path) -> Result<PathBuf> {
        for (host, daemon) in &self.shares {
            if let Ok(rest) = path.strip_prefix(host) {
                return Ok(if rest.as_os_str().is_empty() {
                    daemon.clone()
                } else {
                    daemon.join(rest)
                });
            }
        }
        let shared: Vec<String> = self
            .shares
            .iter()
            .map(|(host, _)| host.display().to_string())
            .collect();
        Err(Error::invalid(
            "path",
            path.display().to_string(),
            if shared.is_empty() {
                "no folder of this machine is shared with the daemon".to_string()
            } else {
                format!("not shared with the daemon (shared: {})", shared.join(", "))
            },
        ))
    }
}

/// Makes `path` absolute against this process's working directory, then maps it.
pub(crate) fn map_path(map: &dyn PathMap, path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path)
        .map_err(|e| Error::io(format!("resolving {}", path.display()), e))?;
    map.to_daemon(&absolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_paths_are_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            map_path(&SamePaths, Path::new("x/y")).unwrap(),
            cwd.join("x/y")
        );
        assert_eq!(
            map_path(&SamePaths, Path::new("/a")).unwrap(),
            Path::new("/a")
        );
    }

    #[test]
    fn prefix_map_prefers_the_longest_share_and_refuses_others() {
        let map = PrefixMap::new()
            .share("/home", "/mnt/home")
            .share("/home/ada/src", "/src");
        assert_eq!(
            map.to_daemon(Path::new("/home/ada/src/app")).unwrap(),
            Path::new("/src/app")
        );
        assert_eq!(
            map.to_daemon(Path::new("/home/bob")).unwrap(),
            Path::new("/mnt/home/bob")
        );
        assert_eq!(
            map.to_daemon(Path::new("/home")).unwrap(),
            Path::new("/mnt/home")
        );
        // A sibling with a common string prefix is not under the share.
        assert!(map.to_daemon(Path::new("/homework")).is_err());
        let err = PrefixMap::new().to_daemon(Path::new("/x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid path \"/x\": no folder of this machine is shared with the daemon"
        );
    }
}
