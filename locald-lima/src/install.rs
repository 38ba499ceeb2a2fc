//! Installing a pinned Lima release into locald's tools directory.
//!
//! The archive is downloaded (or read from a local mirror), hashed while it streams,
//! compared with the pinned sha256, and only then unpacked — whole, since `limactl`
//! finds `share/lima` relative to itself — into a temporary directory that is renamed
//! into place. A lock file makes concurrent installers install once. An archive whose
//! digest does not match is never unpacked, let alone run.

use std::{
    io,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use locald_core::{ProgressSender, PullProgress};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::{
    release::{Asset, Release},
    Error, Result,
};

/// The environment variable naming a mirror: a base URL the archive's file name is
/// appended to, a full URL of a `.tar.gz`, or a local file or directory.
pub const MIRROR_ENV: &str = "LOCALD_LIMA_URL";

/// The name of the file recording a finished install, inside the install directory.
const MARKER: &str = ".locald-install.json";

/// Where archives come from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Lima's GitHub releases.
    GitHub,
    /// A base URL (`https://mirror.example/lima/`, the file name is appended) or the
    /// full URL of the archive (ends in `.tar.gz`).
    Url(String),
    /// A local archive, or a directory holding archives under their release names.
    Path(PathBuf),
}

impl Source {
    /// `LOCALD_LIMA_URL` when set, else GitHub.
    pub fn from_env() -> Source {
        match std::env::var(MIRROR_ENV) {
            Ok(value) if !value.trim().is_empty() => Source::parse(value.trim()),
            _ => Source::GitHub,
        }
    }

    /// Reads a `LOCALD_LIMA_URL` value: `http(s)://…` is a URL, `file://…` and
    /// anything else a local path.
    pub fn parse(value: &str) -> Source {
        if value.starts_with("http://") || value.starts_with("https://") {
            Source::Url(value.to_owned())
        } else {
            Source::Path(PathBuf::from(
                value.strip_prefix("file://").unwrap_or(value),
            ))
        }
    }

    fn locate(&self, release: &Release, asset: &Asset) -> Location {
        let name = release.file_name(asset);
        match self {
            Source::GitHub => Location::Url(release.url(asset)),
            Source::Url(url) if url.ends_with(".tar.gz") => Location::Url(url.clone()),
            Source::Url(base) => Location::Url(format!("{}/{name}", base.trim_end_matches('/'))),
            Source::Path(path) if path.is_dir() => Location::File(path.join(name)),
            Source::Path(path) => Location::File(path.clone()),
        }
    }
}

enum Location {
    Url(String),
    File(PathBuf),
}

/// A Lima release installed in the tools directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Installed {
    /// The Lima version.
    pub version: String,
    /// `tools/lima-<version>`.
    pub dir: PathBuf,
    /// The archive's sha256 (hex), as verified when it was installed.
    pub sha256: String,
}

impl Installed {
    /// `bin/limactl` in the install directory.
    pub fn limactl(&self) -> PathBuf {
        self.dir.join("bin/limactl")
    }
}

/// Installs pinned Lima releases into a tools directory.
///
/// ```no_run
/// use locald_lima::{install::Installer, release::PINNED};
///
/// # async fn demo() -> locald_lima::Result<()> {
/// let installed = Installer::new("/Users/ada/.local/share/locald/tools")
///     .install(&PINNED)
///     .await?;
/// println!("limactl is {}", installed.limactl().display());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Installer {
    tools_dir: PathBuf,
    source: Source,
    progress: Option<ProgressSender>,
    attempts: usize,
    first_delay: Duration,
}

impl Installer {
    /// Installs into `tools_dir` (created when missing), from [`Source::from_env`].
    pub fn new(tools_dir: impl Into<PathBuf>) -> Installer {
        Installer {
            tools_dir: tools_dir.into(),
            source: Source::from_env(),
            progress: None,
            attempts: 4,
            first_delay: Duration::from_millis(500),
        }
    }

    /// Where archives come from (default: [`Source::from_env`]).
    pub fn source(mut self, source: Source) -> Installer {
        self.source = source;
        self
    }

    /// Reports download progress as image pulls do: `LayerProgress`, `LayerRetry`
    /// and `LayerDone`, with the archive's digest (`sha256:…`) as the layer's (default:
    /// none).
    pub fn progress(mut self, sender: ProgressSender) -> Installer {
        self.progress = Some(sender);
        self
    }

    /// The most tries per download, and the pause before the first retry, doubled
    /// each time (default: 4 tries, 500 ms).
    pub fn retries(mut self, attempts: usize, first_delay: Duration) -> Installer {
        self.attempts = attempts.max(1);
        self.first_delay = first_delay;
        self
    }

    /// The tools directory.
    pub fn tools_dir(&self) -> &Path {
        &self.tools_dir
    }

    /// The install directory of `release`.
    pub fn dir(&self, release: &Release) -> PathBuf {
        self.tools_dir.join(format!("lima-{}", release.version))
    }

    /// The finished install of `release`, when there is one.
    pub fn installed(&self, release: &Release) -> Option<Installed> {
        let dir = self.dir(release);
        let marker = std::fs::read(dir.join(MARKER)).ok()?;
        let installed: Installed = serde_json::from_slice(&marker).ok()?;
        let installed = Installed { dir, ..installed };
        installed.limactl().is_file().then_some(installed)
    }

    /// Installs `release`'s archive for this machine, unless it is installed already.
    pub async fn install(&self, release: &Release) -> Result<Installed> {
        let asset = release.host_asset().ok_or_else(|| Error::NoAsset {
            release: release.to_string(),
            platform: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        })?;
        self.install_asset(release, asset).await
    }

    /// Installs one archive of `release` (for tests and for preparing another
    /// machine's tools), unless this release is installed already.
    pub async fn install_asset(&self, release: &Release, asset: &Asset) -> Result<Installed> {
        if let Some(done) = self.installed(release) {
            return Ok(done);
        }
        let expected = asset.sha256.ok_or_else(|| Error::NoAsset {
            release: release.to_string(),
            platform: format!("{} {}", asset.os, asset.arch),
        })?;
        std::fs::create_dir_all(&self.tools_dir)
            .map_err(|e| Error::io(format!("creating {}", self.tools_dir.display()), e))?;
        let _lock = self.lock(release).await?;
        // Another process may have installed it while this one waited.
        if let Some(done) = self.installed(release) {
            return Ok(done);
        }
        let name = release.file_name(asset);
        let archive = match self.source.locate(release, asset) {
            Location::Url(url) => self.download(&url, &name, expected).await?,
            Location::File(path) => Archive::Local(path),
        };
        let actual = hash_file(archive.path()).await?;
        if actual != expected {
            return Err(Error::DigestMismatch {
                what: name,
                expected: expected.to_owned(),
                actual,
            });
        }
        let installed = Installed {
            version: release.version.to_owned(),
            dir: self.dir(release),
            sha256: actual,
        };
        let tools_dir = self.tools_dir.clone();
        let record = installed.clone();
        let archive_path = archive.path().to_owned();
        tokio::task::spawn_blocking(move || unpack_into_place(&archive_path, &tools_dir, &record))
            .await
            .map_err(|e| Error::io("unpacking Lima", io::Error::other(e)))??;
        drop(archive);
        if let Some(progress) = &self.progress {
            let _ = progress.send(PullProgress::LayerDone {
                digest: format!("sha256:{expected}"),
            });
        }
        tracing::info!(version = release.version, dir = %installed.dir.display(), "installed Lima");
        Ok(installed)
    }

    async fn lock(&self, release: &Release) -> Result<std::fs::File> {
        let path = self
            .tools_dir
            .join(format!(".lima-{}.lock", release.version));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        tokio::task::spawn_blocking(move || {
            fs4::FileExt::lock(&file)
                .map(|()| file)
                .map_err(|e| Error::io(format!("locking {}", path.display()), e))
        })
        .await
        .map_err(|e| Error::io("locking the tools directory", io::Error::other(e)))?
    }

    /// Downloads `url` into a temporary file in the tools directory, with retries.
    async fn download(&self, url: &str, name: &str, expected: &str) -> Result<Archive> {
        // rustls, or the system's TLS on macOS (see Cargo.toml).
        let http = reqwest::Client::builder()
            .user_agent(concat!("locald/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Download {
                url: url.to_owned(),
                source: Box::new(e),
            })?;
        let digest = format!("sha256:{expected}");
        // One file for every attempt: a retry resumes where the last one stopped.
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .tempfile_in(&self.tools_dir)
            .map_err(|e| {
                Error::io(
                    format!("creating a file in {}", self.tools_dir.display()),
                    e,
                )
            })?;
        let mut attempt = 1u32;
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.first_delay)
            .with_max_times(self.attempts - 1);
        let fetch = || self.fetch_once(&http, url, &temp, &digest);
        fetch
            .retry(backoff)
            .when(|e: &Fetch| e.transient)
            .notify(|e: &Fetch, delay| {
                attempt += 1;
                tracing::warn!(url, attempt, ?delay, error = %error_chain(&e.error), "retrying the Lima download");
                if let Some(progress) = &self.progress {
                    let _ = progress.send(PullProgress::LayerRetry {
                        digest: digest.clone(),
                        attempt,
                        error: error_chain(&e.error),
                    });
                }
            })
            .await
            .map_err(|e| e.error)?;
        Ok(Archive::Downloaded(temp))
    }

    /// One attempt: asks for the bytes `temp` does not hold yet (`Range`) and
    /// appends them; a server that answers with the whole file (200) starts it over.
    async fn fetch_once(
        &self,
        http: &reqwest::Client,
        url: &str,
        temp: &tempfile::NamedTempFile,
        digest: &str,
    ) -> std::result::Result<(), Fetch> {
        let fail = |transient: bool, source: Box<dyn std::error::Error + Send + Sync>| Fetch {
            transient,
            error: Error::Download {
                url: url.to_owned(),
                source,
            },
        };
        let local = |context: String, e: io::Error| Fetch {
            transient: false,
            error: Error::io(context, e),
        };
        let have = temp
            .as_file()
            .metadata()
            .map_err(|e| local("reading the download file".into(), e))?
            .len();
        let mut request = http.get(url);
        if have > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let response = request.send().await.map_err(|e| fail(true, Box::new(e)))?;
        let status = response.status();
        if !status.is_success() {
            let transient = status.is_server_error() || status.as_u16() == 429;
            return Err(fail(
                transient,
                format!("the server answered {status}").into(),
            ));
        }
        let resumed = have > 0 && status == reqwest::StatusCode::PARTIAL_CONTENT;
        let start = if resumed { have } else { 0 };
        let size = response.content_length().map_or(0, |len| start + len);
        let std_file = temp
            .as_file()
            .try_clone()
            .map_err(|e| local("opening the download file".into(), e))?;
        if !resumed {
            std_file
                .set_len(0)
                .map_err(|e| local("restarting the download file".into(), e))?;
        }
        let mut file = tokio::fs::File::from_std(std_file);
        file.seek(io::SeekFrom::Start(start))
            .await
            .map_err(|e| local("restarting the download file".into(), e))?;
        let mut body = response.bytes_stream();
        let mut done = start;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    // Keep what arrived for the next attempt to resume from.
                    let _ = file.flush().await;
                    return Err(fail(true, Box::new(e)));
                }
            };
            file.write_all(&chunk)
                .await
                .map_err(|e| local(format!("writing {}", temp.path().display()), e))?;
            done += chunk.len() as u64;
            if let Some(progress) = &self.progress {
                let _ = progress.send(PullProgress::LayerProgress {
                    digest: digest.to_owned(),
                    done,
                    size,
                });
            }
        }
        file.flush()
            .await
            .map_err(|e| local("writing the download".into(), e))?;
        if size != 0 && done != size {
            return Err(fail(
                true,
                format!("the connection closed after {done} of {size} bytes").into(),
            ));
        }
        Ok(())
    }
}

struct Fetch {
    transient: bool,
    error: Error,
}

enum Archive {
    /// Removed when dropped.
    Downloaded(tempfile::NamedTempFile),
    Local(PathBuf),
}

impl Archive {
    fn path(&self) -> &Path {
        match self {
            Archive::Downloaded(file) => file.path(),
            Archive::Local(path) => path,
        }
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The sha256 (hex) of a file, read in chunks.
async fn hash_file(path: &Path) -> Result<String> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Unpacks a verified archive into a temporary directory beside the install
/// directory, records the install, and renames it into place.
fn unpack_into_place(archive: &Path, tools_dir: &Path, record: &Installed) -> Result<()> {
    let temp = tempfile::Builder::new()
        .prefix(&format!(".lima-{}.", record.version))
        .tempdir_in(tools_dir)
        .map_err(|e| {
            Error::io(
                format!("creating a directory in {}", tools_dir.display()),
                e,
            )
        })?;
    unpack(archive, temp.path())?;
    if !temp.path().join("bin/limactl").is_file() {
        return Err(Error::UnsafeArchive {
            entry: "bin/limactl".into(),
            reason: "missing: this is not a Lima release archive".into(),
        });
    }
    let marker = serde_json::to_vec_pretty(record).expect("the record serializes");
    std::fs::write(temp.path().join(MARKER), marker)
        .map_err(|e| Error::io("recording the install", e))?;
    let dir = temp.keep();
    std::fs::rename(&dir, &record.dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&dir);
        Error::io(format!("moving Lima into {}", record.dir.display()), e)
    })
}

/// Unpacks a gzip-compressed tar into `dest`, refusing any entry that would land
/// outside it (absolute paths, `..`, links pointing out) and any entry other than a
/// file, a directory or a link.
///
/// The tar crate's `unpack_in` also confines entries, but skips offending ones
/// silently; an install must rather fail, loudly.
pub(crate) fn unpack(archive: &Path, dest: &Path) -> Result<()> {
    let file = std::fs::File::open(archive)
        .map_err(|e| Error::io(format!("opening {}", archive.display()), e))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    tar.set_preserve_permissions(true);
    tar.set_overwrite(true);
    let read_err = |e| Error::io(format!("reading {}", archive.display()), e);
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let path = entry.path().map_err(read_err)?.into_owned();
        let shown = path.display().to_string();
        let refuse = |reason: &str| Error::UnsafeArchive {
            entry: shown.clone(),
            reason: reason.to_owned(),
        };
        let depth =
            confined_depth(&path).ok_or_else(|| refuse("it leaves the install directory"))?;
        use tar::EntryType as T;
        match entry.header().entry_type() {
            T::Regular | T::Directory | T::GNUSparse | T::Continuous => {}
            T::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(read_err)?
                    .ok_or_else(|| refuse("a link without a target"))?;
                // Relative to the link's own directory.
                if !link_stays_inside(&target, depth.saturating_sub(1)) {
                    return Err(refuse(&format!(
                        "its link target {} leaves the install directory",
                        target.display()
                    )));
                }
            }
            T::Link => {
                let target = entry
                    .link_name()
                    .map_err(read_err)?
                    .ok_or_else(|| refuse("a link without a target"))?;
                if confined_depth(&target).is_none() {
                    return Err(refuse(&format!(
                        "its link target {} leaves the install directory",
                        target.display()
                    )));
                }
            }
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
            other => {
                return Err(refuse(&format!(
                    "a {other:?} entry has no place in a tool install"
                )))
            }
        }
        entry
            .unpack_in(dest)
            .map_err(|e| Error::io(format!("unpacking {shown}"), e))?;
    }
    Ok(())
}

/// How many directories deep a relative path goes, or `None` when it is absolute or
/// climbs out with `..`.
fn confined_depth(path: &Path) -> Option<usize> {
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(depth)
}

/// Whether a symlink target, resolved from a directory `depth` levels inside the
/// install directory, stays inside it.
fn link_stays_inside(target: &Path, depth: usize) -> bool {
    let mut depth = depth as isize;
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_confined() {
        assert_eq!(confined_depth(Path::new("./bin/limactl")), Some(2));
        assert_eq!(confined_depth(Path::new("../x")), None);
        assert_eq!(confined_depth(Path::new("a/../../x")), None);
        assert_eq!(confined_depth(Path::new("/etc/passwd")), None);
        assert!(link_stays_inside(Path::new("../share/lima"), 1));
        assert!(!link_stays_inside(Path::new("../../etc"), 1));
        assert!(!link_stays_inside(Path::new("/etc"), 3));
    }

    #[test]
    fn mirrors_are_urls_or_paths() {
        assert_eq!(
            Source::parse("https://mirror.corp/lima"),
            Source::Url("https://mirror.corp/lima".into())
        );
        assert_eq!(
            Source::parse("file:///srv/lima.tar.gz"),
            Source::Path("/srv/lima.tar.gz".into())
        );
        let release = crate::release::PINNED;
        let asset = release.asset("macos", "aarch64").unwrap();
        let Location::Url(url) = Source::Url("https://m/lima/".into()).locate(&release, asset)
        else {
            panic!()
        };
        assert_eq!(url, format!("https://m/lima/{}", release.file_name(asset)));
    }
}
