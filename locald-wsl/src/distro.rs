//! The managed `locald` distribution: imported from a digest-verified root filesystem
//! archive into a directory locald owns, upgraded by re-import, removed on request.

use std::{
    io::Read,
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    output::{Distro, Version},
    wsl::Wsl,
    Error, Result,
};

/// The name of the distribution locald manages.
pub const DISTRO_NAME: &str = "locald";

/// The file beside the distribution's disk that records which archive it came from.
const MARKER: &str = "locald-rootfs.sha256";

/// A root filesystem archive (a tar, as `wsl --import` takes it) and the digest it
/// must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsArchive {
    /// The archive.
    pub path: PathBuf,
    /// Its pinned sha256, in hex (a `sha256:` prefix is accepted).
    pub sha256: String,
}

impl RootfsArchive {
    /// An archive at `path` that must hash to `sha256`.
    pub fn new(path: impl Into<PathBuf>, sha256: impl Into<String>) -> RootfsArchive {
        let sha256: String = sha256.into();
        RootfsArchive {
            path: path.into(),
            sha256: sha256
                .strip_prefix("sha256:")
                .unwrap_or(&sha256)
                .to_ascii_lowercase(),
        }
    }

    /// Hashes the archive and compares; nothing else happens on a mismatch.
    pub async fn verify(&self) -> Result<()> {
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid {
                what: "sha256 digest",
                value: self.sha256.clone(),
                reason: "expected 64 hex digits".into(),
            });
        }
        let path = self.path.clone();
        let actual = tokio::task::spawn_blocking(move || sha256_file(&path))
            .await
            .map_err(|e| Error::io("hashing the root filesystem", std::io::Error::other(e)))??;
        if actual != self.sha256 {
            return Err(Error::DigestMismatch {
                what: self.path.display().to_string(),
                expected: self.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// The sha256 of a file, in hex (what [`RootfsArchive::new`] pins).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Where locald keeps its WSL distributions: `%LOCALAPPDATA%\locald\wsl`.
pub fn default_install_root() -> Result<PathBuf> {
    match std::env::var_os("LOCALAPPDATA") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir).join("locald").join("wsl")),
        _ => Err(Error::Invalid {
            what: "environment",
            value: "LOCALAPPDATA".into(),
            reason: "not set; locald keeps its WSL distribution under %LOCALAPPDATA%\\locald\\wsl"
                .into(),
        }),
    }
}

/// The managed distribution's state, for `locald wsl status` and `locald info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DistroStatus {
    /// The distribution's name.
    pub name: String,
    /// The `wsl --version` report (`None` from an inbox `wsl.exe`).
    pub wsl: Option<Version>,
    /// The distribution as `wsl --list --verbose` shows it; `None` when not installed.
    pub distro: Option<Distro>,
    /// Where its disk lives.
    pub install_dir: PathBuf,
    /// The sha256 of the archive it was imported from, when locald imported it.
    pub rootfs_sha256: Option<String>,
}

/// What [`ManagedDistro::install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Installed {
    /// Imported for the first time.
    Imported,
    /// Replaced an installation from another archive.
    Upgraded,
    /// Already imported from this archive; nothing done.
    Current,
}

/// The `locald` distribution's life cycle.
#[derive(Debug, Clone)]
pub struct ManagedDistro {
    wsl: Arc<dyn Wsl>,
    name: String,
    root: PathBuf,
}

impl ManagedDistro {
    /// The distribution `name`, its disk under `root/name`.
    pub fn new(wsl: Arc<dyn Wsl>, name: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        ManagedDistro {
            wsl,
            name: name.into(),
            root: root.into(),
        }
    }

    /// The distribution's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory `wsl --import` puts the distribution's disk in.
    pub fn install_dir(&self) -> PathBuf {
        self.root.join(&self.name)
    }

    fn marker(&self) -> PathBuf {
        self.install_dir().join(MARKER)
    }

    /// The distribution as WSL lists it, if registered.
    pub async fn find(&self) -> Result<Option<Distro>> {
        Ok(self
            .wsl
            .list()
            .await?
            .into_iter()
            .find(|d| d.name.eq_ignore_ascii_case(&self.name)))
    }

    /// What WSL and locald know about the distribution.
    pub async fn status(&self) -> Result<DistroStatus> {
        let distro = self.find().await?;
        let wsl = self.wsl.version().await?;
        let rootfs_sha256 = std::fs::read_to_string(self.marker())
            .ok()
            .map(|s| s.trim().to_owned());
        Ok(DistroStatus {
            name: self.name.clone(),
            wsl,
            distro,
            install_dir: self.install_dir(),
            rootfs_sha256,
        })
    }

    /// Imports the distribution from `archive` (verified first: a wrong archive
    /// changes nothing). An installation from another archive is replaced; one from
    /// this archive is left alone.
    ///
    /// Replacing discards what was inside the old distribution's disk.
    pub async fn install(&self, archive: &RootfsArchive) -> Result<Installed> {
        archive.verify().await?;
        let existing = self.find().await?;
        let recorded = std::fs::read_to_string(self.marker())
            .ok()
            .map(|s| s.trim().to_owned());
        let outcome = match (&existing, recorded) {
            (Some(_), Some(digest)) if digest == archive.sha256 => return Ok(Installed::Current),
            (Some(_), _) => {
                self.wsl.terminate(&self.name).await?;
                self.wsl.unregister(&self.name).await?;
                Installed::Upgraded
            }
            (None, _) => Installed::Imported,
        };
        let dir = self.install_dir();
        let created = !dir.exists();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let _ = std::fs::remove_file(self.marker());
        if let Err(err) = self.wsl.import(&self.name, &dir, &archive.path).await {
            if created {
                let _ = std::fs::remove_dir_all(&dir);
            }
            return Err(err);
        }
        // Written whole or not at all: a temporary file renamed into place.
        let tmp = dir.join(format!("{MARKER}.tmp"));
        std::fs::write(&tmp, format!("{}\n", archive.sha256))
            .and_then(|()| std::fs::rename(&tmp, self.marker()))
            .map_err(|e| Error::io(format!("recording the archive in {}", dir.display()), e))?;
        Ok(outcome)
    }

    /// Stops and unregisters the distribution (its disk goes with it) and removes its
    /// directory. False when it was not installed.
    pub async fn uninstall(&self) -> Result<bool> {
        let existed = self.find().await?.is_some();
        if existed {
            self.wsl.terminate(&self.name).await?;
            self.wsl.unregister(&self.name).await?;
        }
        let dir = self.install_dir();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::io(format!("removing {}", dir.display()), e))?;
        }
        Ok(existed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{fake::FakeWsl, output::State};

    fn archive(dir: &Path, content: &[u8]) -> RootfsArchive {
        let path = dir.join(format!("rootfs-{}.tar", content.len()));
        std::fs::write(&path, content).unwrap();
        let sha = sha256_file(&path).unwrap();
        RootfsArchive::new(path, sha)
    }

    #[tokio::test]
    async fn install_upgrade_and_uninstall_through_every_output_form() {
        for wsl in [
            FakeWsl::new(),
            FakeWsl::new().utf8(),
            FakeWsl::new().double_cr(),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let wsl = wsl.with_distro("Ubuntu", 2);
            let distro = ManagedDistro::new(Arc::new(wsl.clone()), "locald", dir.path());
            assert_eq!(distro.status().await.unwrap().distro, None);
            let v1 = archive(dir.path(), b"one");
            assert_eq!(distro.install(&v1).await.unwrap(), Installed::Imported);
            assert_eq!(distro.install(&v1).await.unwrap(), Installed::Current);
            let status = distro.status().await.unwrap();
            let found = status.distro.unwrap();
            assert_eq!((found.version, found.state), (2, State::Stopped));
            assert_eq!(status.rootfs_sha256.as_deref(), Some(v1.sha256.as_str()));
            assert_eq!(status.wsl.unwrap().wsl.as_deref(), Some("2.3.26.0"));
            let v2 = archive(dir.path(), b"two!");
            assert_eq!(distro.install(&v2).await.unwrap(), Installed::Upgraded);
            let calls: Vec<String> = wsl.calls().iter().map(|c| c[0].clone()).collect();
            assert!(
                calls.ends_with(&[
                    "--list".into(),
                    "--terminate".into(),
                    "--unregister".into(),
                    "--import".into()
                ]),
                "{calls:?}"
            );
            assert!(distro.uninstall().await.unwrap());
            assert!(!distro.install_dir().exists());
            assert!(!distro.uninstall().await.unwrap());
            assert_eq!(wsl.distro("Ubuntu"), Some(false), "others untouched");
        }
    }

    #[tokio::test]
    async fn a_failed_import_leaves_no_directory() {
        let dir = tempfile::tempdir().unwrap();
        let wsl = FakeWsl::new();
        wsl.fail_next("--import", crate::fake::Failure::VirtualizationDisabled);
        let distro = ManagedDistro::new(Arc::new(wsl), "locald", dir.path().join("wsl"));
        let err = distro
            .install(&archive(dir.path(), b"x"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::VirtualizationDisabled { .. }), "{err}");
        assert!(!distro.install_dir().exists());
    }

    #[tokio::test]
    async fn an_inbox_wsl_without_version() {
        let dir = tempfile::tempdir().unwrap();
        let wsl = FakeWsl::new().without_version();
        let distro = ManagedDistro::new(Arc::new(wsl), "locald", dir.path());
        assert_eq!(distro.status().await.unwrap().wsl, None);
    }

    #[tokio::test]
    async fn bad_digests_are_refused_before_anything_runs() {
        let dir = tempfile::tempdir().unwrap();
        let wsl = FakeWsl::new();
        let distro = ManagedDistro::new(Arc::new(wsl.clone()), "locald", dir.path());
        let mut a = archive(dir.path(), b"x");
        a.sha256 = "xyz".into();
        assert!(matches!(
            distro.install(&a).await,
            Err(Error::Invalid { .. })
        ));
        assert!(wsl.calls().is_empty());
    }
}
