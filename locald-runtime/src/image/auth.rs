//! Registry credentials: locald's own file, then the files podman and docker keep.
//!
//! Looked up in order, first match wins:
//! 1. `$LOCALD_HOME/auth.json` (written by `locald login`, mode 0600)
//! 2. `$REGISTRY_AUTH_FILE`
//! 3. `$XDG_RUNTIME_DIR/containers/auth.json`, then `~/.config/containers/auth.json`
//! 4. `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`
//!
//! All use docker's format: `{"auths": {"HOST": {"auth": base64("user:password")}}}`.
//! Credential helpers (`credsStore`, `credHelpers`) are not consulted.

use std::{
    collections::BTreeMap,
    fmt, fs, io,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use locald_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// A user name and password for one registry, and where they were found.
#[derive(Clone)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
    /// The file they came from, for messages.
    pub source: PathBuf,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

/// The files credentials are read from, in order.
#[derive(Debug, Clone)]
pub struct AuthSources {
    files: Vec<PathBuf>,
    own: PathBuf,
}

impl AuthSources {
    /// The standard places for this process's environment, with locald's own file in
    /// `locald_home`.
    pub fn standard(locald_home: &Path) -> AuthSources {
        let env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let own = locald_home.join("auth.json");
        let mut files = vec![own.clone()];
        files.extend(env("REGISTRY_AUTH_FILE"));
        if let Some(run) = env("XDG_RUNTIME_DIR") {
            files.push(run.join("containers/auth.json"));
        }
        let home = env("HOME");
        let config = env("XDG_CONFIG_HOME").or_else(|| home.as_ref().map(|h| h.join(".config")));
        if let Some(config) = config {
            files.push(config.join("containers/auth.json"));
        }
        if let Some(docker) = env("DOCKER_CONFIG") {
            files.push(docker.join("config.json"));
        } else if let Some(home) = &home {
            files.push(home.join(".docker/config.json"));
        }
        AuthSources { files, own }
    }

    /// Only these files, and `own` for `locald login` (for tests).
    pub fn new(own: PathBuf, others: Vec<PathBuf>) -> AuthSources {
        let mut files = vec![own.clone()];
        files.extend(others);
        AuthSources { files, own }
    }

    /// The credentials for `registry` (`host[:port]`), if any file has them.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>> {
        for file in &self.files {
            let parsed = match read_auth_file(file)? {
                Some(parsed) => parsed,
                None => continue,
            };
            for (key, entry) in &parsed.auths {
                if normalize_key(key) != normalize_key(registry) {
                    continue;
                }
                if let Some(creds) = decode(entry, file)? {
                    return Ok(Some(creds));
                }
            }
        }
        Ok(None)
    }

    /// Stores credentials for `registry` in locald's own file (mode 0600, atomically).
    pub fn store(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        let mut file = read_auth_file(&self.own)?.unwrap_or_default();
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        file.auths
            .retain(|k, _| normalize_key(k) != normalize_key(registry));
        file.auths.insert(
            normalize_key(registry),
            AuthEntry {
                auth: Some(token),
                ..AuthEntry::default()
            },
        );
        self.write_own(&file)
    }

    /// Removes the credentials for `registry` from locald's own file; true if it had any.
    pub fn erase(&self, registry: &str) -> Result<bool> {
        let Some(mut file) = read_auth_file(&self.own)? else {
            return Ok(false);
        };
        let before = file.auths.len();
        file.auths
            .retain(|k, _| normalize_key(k) != normalize_key(registry));
        if file.auths.len() == before {
            return Ok(false);
        }
        self.write_own(&file)?;
        Ok(true)
    }

    fn write_own(&self, file: &AuthFile) -> Result<()> {
        use std::{io::Write, os::unix::fs::PermissionsExt};
        let dir = self.own.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| Error::io(format!("writing {}", self.own.display()), e))?;
        // NamedTempFile is created 0600; say so explicitly all the same.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io(format!("writing {}", self.own.display()), e))?;
        let bytes = serde_json::to_vec_pretty(file).expect("auth file serializes");
        tmp.write_all(&bytes)
            .and_then(|_| tmp.as_file().sync_data())
            .map_err(|e| Error::io(format!("writing {}", self.own.display()), e))?;
        tmp.persist(&self.own)
            .map_err(|e| Error::io(format!("writing {}", self.own.display()), e.error))?;
        Ok(())
    }
}

fn read_auth_file(path: &Path) -> Result<Option<AuthFile>> {
    match fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::io(
                format!("reading credentials from {}", path.display()),
                io::Error::new(io::ErrorKind::InvalidData, e),
            )
        }),
    }
}

fn decode(entry: &AuthEntry, file: &Path) -> Result<Option<Credentials>> {
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
            source: file.to_owned(),
        }));
    }
    let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let bad = || {
        Error::io(
            format!("reading credentials from {}", file.display()),
            io::Error::new(
                io::ErrorKind::InvalidData,
                "an \"auth\" value is not base64 of user:password",
            ),
        )
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (u, p) = decoded.split_once(':').ok_or_else(bad)?;
    Ok(Some(Credentials {
        username: u.to_owned(),
        password: p.to_owned(),
        source: file.to_owned(),
    }))
}

/// `https://index.docker.io/v1/`, `registry-1.docker.io` and `docker.io` are one
/// registry; other keys lose their scheme and path.
fn normalize_key(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_credentials_in_order_and_normalizes_hub() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("auth.json");
        let docker = dir.path().join("config.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        fs::write(
            &docker,
            format!(
                r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{}"}}, "reg.example:5000": {{"auth": "{}"}}}}, "credsStore": "desktop"}}"#,
                b64("hubuser:hubpass"),
                b64("u:p:with:colons")
            ),
        )
        .unwrap();
        let sources = AuthSources::new(own.clone(), vec![docker.clone()]);
        let hub = sources.lookup("docker.io").unwrap().unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hubuser", "hubpass")
        );
        let reg = sources.lookup("reg.example:5000").unwrap().unwrap();
        assert_eq!(reg.password, "p:with:colons");
        assert_eq!(reg.source, docker);
        assert!(sources.lookup("other:1").unwrap().is_none());

        // locald's own file wins, and is private.
        sources.store("reg.example:5000", "mine", "secret").unwrap();
        let reg = sources.lookup("reg.example:5000").unwrap().unwrap();
        assert_eq!(reg.username, "mine");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&own).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!format!("{reg:?}").contains("secret"));
        assert!(sources.erase("reg.example:5000").unwrap());
        assert_eq!(
            sources
                .lookup("reg.example:5000")
                .unwrap()
                .unwrap()
                .username,
            "u"
        );
    }

    #[test]
    fn malformed_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("auth.json");
        fs::write(&own, "{not json").unwrap();
        let err = AuthSources::new(own.clone(), vec![])
            .lookup("x")
            .unwrap_err();
        assert!(err.to_string().contains("auth.json"), "{err}");
        fs::write(&own, r#"{"auths": {"x": {"auth": "!!!"}}}"#).unwrap();
        let err = AuthSources::new(own, vec![]).lookup("x").unwrap_err();
        assert!(err.to_string().starts_with("reading credentials"), "{err}");
    }
}
