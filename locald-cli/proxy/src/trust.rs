//! Installing the local CA's root into the places programs look for trusted roots, and
//! removing it again: the system store (Debian's `update-ca-certificates` layout or
//! Fedora's `update-ca-trust`), the NSS databases of Chromium and Firefox profiles
//! (through `certutil` from `libnss3-tools`), and on macOS the system keychain.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The nickname of the root in NSS databases.
pub const NSS_NICKNAME: &str = "locald local development CA";

/// What went wrong while trusting or untrusting.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A file of a trust store could not be written or removed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A tool that updates a store failed.
    #[error("`{command}` failed: {detail}")]
    Tool {
        /// The command line.
        command: String,
        /// Its exit status and error output.
        detail: String,
    },
    /// No system store locald knows how to update was found.
    #[error("no known system trust store here (looked for {0})")]
    NoSystemStore(String),
}

/// The system's trust store layouts locald knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemStore {
    /// Debian and Ubuntu: a `.crt` file in `/usr/local/share/ca-certificates`, then
    /// `update-ca-certificates`.
    Debian,
    /// Fedora and RHEL: a file in `/etc/pki/ca-trust/source/anchors`, then
    /// `update-ca-trust extract`.
    Fedora,
    /// macOS: the system keychain through `security`.
    MacOs,
}

const DEBIAN_DIR: &str = "/usr/local/share/ca-certificates";
const FEDORA_DIR: &str = "/etc/pki/ca-trust/source/anchors";

impl SystemStore {
    /// The store of this machine, if locald knows it.
    pub fn detect() -> Option<SystemStore> {
        if cfg!(target_os = "macos") {
            return Some(SystemStore::MacOs);
        }
        if Path::new(DEBIAN_DIR).is_dir() && which("update-ca-certificates").is_some() {
            return Some(SystemStore::Debian);
        }
        if Path::new(FEDORA_DIR).is_dir() && which("update-ca-trust").is_some() {
            return Some(SystemStore::Fedora);
        }
        None
    }

    /// The root's file in this store (none for the keychain).
    pub fn anchor_path(&self) -> Option<PathBuf> {
        match self {
            SystemStore::Debian => Some(Path::new(DEBIAN_DIR).join("locald-root.crt")),
            SystemStore::Fedora => Some(Path::new(FEDORA_DIR).join("locald-root.pem")),
            SystemStore::MacOs => None,
        }
    }

    /// The combined bundle programs read (`SSL_CERT_FILE`), where there is one.
    pub fn bundle(&self) -> Option<&'static str> {
        match self {
            SystemStore::Debian => Some("/etc/ssl/certs/ca-certificates.crt"),
            SystemStore::Fedora => Some("/etc/pki/tls/certs/ca-bundle.crt"),
            SystemStore::MacOs => None,
        }
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command) -> Result<(), TrustError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| TrustError::Tool {
        command: line.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TrustError::Tool {
            command: line,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// The NSS databases of the user whose home is `home`: Chromium's `~/.pki/nssdb` (made
/// when missing, as Chromium reads it on Linux) and every Firefox profile with a
/// `cert9.db`.
pub fn nss_databases(home: &Path) -> Vec<PathBuf> {
    let mut out = vec![home.join(".pki/nssdb")];
    for base in [
        ".mozilla/firefox",
        "snap/firefox/common/.mozilla/firefox",
        ".var/app/org.mozilla.firefox/.mozilla/firefox",
    ] {
        if let Ok(entries) = std::fs::read_dir(home.join(base)) {
            for e in entries.flatten() {
                if e.path().join("cert9.db").is_file() {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

/// Adds `root_pem` (the file `root_path`) to the system store and the NSS databases
/// under `home`; returns one line per place changed, and hints for tools that read
/// neither.
pub fn trust(root_path: &Path, home: Option<&Path>) -> Result<Vec<String>, TrustError> {
    let mut done = Vec::new();
    let store = SystemStore::detect()
        .ok_or_else(|| TrustError::NoSystemStore(format!("{DEBIAN_DIR}, {FEDORA_DIR}")))?;
    match &store {
        SystemStore::MacOs => {
            run(Command::new("security")
                .args([
                    "add-trusted-cert",
                    "-d",
                    "-r",
                    "trustRoot",
                    "-k",
                    "/Library/Keychains/System.keychain",
                ])
                .arg(root_path))?;
            done.push("added to the macOS system keychain".to_owned());
        }
        SystemStore::Debian | SystemStore::Fedora => {
            let anchor = store.anchor_path().expect("file-based store");
            if is_root() {
                let pem = std::fs::read(root_path).map_err(|source| TrustError::Io {
                    path: root_path.to_owned(),
                    source,
                })?;
                locald_runtime::util::write_atomic_with(
                    &anchor,
                    &pem,
                    &locald_runtime::util::AtomicWrite::new().mode(0o644),
                )
                .map_err(|e| TrustError::Io {
                    path: anchor.clone(),
                    source: std::io::Error::other(e),
                })?;
            } else {
                run(as_root("install")
                    .args(["-m", "0644"])
                    .arg(root_path)
                    .arg(&anchor))?;
            }
            update_system(&store)?;
            done.push(format!("added to the system store ({})", anchor.display()));
        }
    }
    if let (Some(home), Some(certutil)) = (home, which("certutil")) {
        if !cfg!(target_os = "windows") {
            for db in nss_databases(home) {
                let sql = format!("sql:{}", db.display());
                if !db.join("cert9.db").is_file() {
                    std::fs::create_dir_all(&db).map_err(|source| TrustError::Io {
                        path: db.clone(),
                        source,
                    })?;
                    run(Command::new(&certutil).args(["-N", "--empty-password", "-d", &sql]))?;
                }
                run(Command::new(&certutil)
                    .args(["-A", "-t", "C,,", "-n", NSS_NICKNAME, "-d", &sql, "-i"])
                    .arg(root_path))?;
                done.push(format!("added to the NSS database {}", db.display()));
            }
        }
    } else if home.is_some() {
        done.push(
            "certutil not found: Firefox and Chromium profiles were left alone \
             (install libnss3-tools and run this again)"
                .to_owned(),
        );
    }
    done.push(format!(
        "Node.js: export NODE_EXTRA_CA_CERTS={}",
        root_path.display()
    ));
    if let Some(bundle) = store.bundle() {
        done.push(format!(
            "Python, Ruby and other OpenSSL users: export SSL_CERT_FILE={bundle}"
        ));
    }
    Ok(done)
}

/// Removes the root from every place [`trust`] put it; returns one line per place.
pub fn untrust(root_path: &Path, home: Option<&Path>) -> Result<Vec<String>, TrustError> {
    let mut done = Vec::new();
    match SystemStore::detect() {
        Some(SystemStore::MacOs) => {
            run(as_root("security")
                .arg("remove-trusted-cert")
                .arg("-d")
                .arg(root_path))?;
            done.push("removed from the macOS system keychain".to_owned());
        }
        Some(store) => {
            let anchor = store.anchor_path().expect("file-based store");
            let removed = if is_root() {
                std::fs::remove_file(&anchor)
            } else if anchor.exists() {
                run(as_root("rm").arg("-f").arg(&anchor))?;
                Ok(())
            } else {
                Err(std::io::ErrorKind::NotFound.into())
            };
            match removed {
                Ok(()) => {
                    update_system(&store)?;
                    done.push(format!(
                        "removed from the system store ({})",
                        anchor.display()
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(TrustError::Io {
                        path: anchor,
                        source,
                    })
                }
            }
        }
        None => {}
    }
    if let (Some(home), Some(certutil)) = (home, which("certutil")) {
        for db in nss_databases(home) {
            if !db.join("cert9.db").is_file() {
                continue;
            }
            let sql = format!("sql:{}", db.display());
            // Listed under its nickname means present; delete every copy.
            while run(Command::new(&certutil).args(["-L", "-n", NSS_NICKNAME, "-d", &sql])).is_ok()
            {
                run(Command::new(&certutil).args(["-D", "-n", NSS_NICKNAME, "-d", &sql]))?;
                done.push(format!("removed from the NSS database {}", db.display()));
            }
        }
    }
    Ok(done)
}

fn update_system(store: &SystemStore) -> Result<(), TrustError> {
    match store {
        SystemStore::Debian => run(&mut as_root("update-ca-certificates")),
        SystemStore::Fedora => run(as_root("update-ca-trust").arg("extract")),
        SystemStore::MacOs => Ok(()),
    }
}

fn is_root() -> bool {
    #[cfg(unix)]
    {
        nix::unistd::geteuid().is_root()
    }
    #[cfg(not(unix))]
    {
        false
    }
}

/// `program`, through `sudo` unless this already runs as root: only the system
/// store's steps need it; the user's NSS databases and CA stay theirs.
fn as_root(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nss_databases_are_chromiums_and_each_firefox_profile_with_a_cert_db() {
        let home = tempfile::tempdir().unwrap();
        let ff = home.path().join(".mozilla/firefox");
        for (profile, db) in [("a.default", true), ("b.other", true), ("c.empty", false)] {
            std::fs::create_dir_all(ff.join(profile)).unwrap();
            if db {
                std::fs::write(ff.join(profile).join("cert9.db"), b"").unwrap();
            }
        }
        let mut got = nss_databases(home.path());
        got.sort();
        assert_eq!(
            got,
            vec![
                home.path().join(".mozilla/firefox/a.default"),
                home.path().join(".mozilla/firefox/b.other"),
                home.path().join(".pki/nssdb"),
            ]
        );
    }
}
