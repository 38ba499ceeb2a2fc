//! The local certificate authority: a root created once under `$LOCALD_HOME/ca/`, an
//! intermediate made at each start, and leaf certificates signed per server name on
//! demand (cached).
//!
//! Both CA certificates carry name constraints: they can only vouch for names under
//! `localhost` and the suffixes the user configured when the root was created, so a
//! stolen root key cannot impersonate any other site to a browser that trusts it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose, NameConstraints,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::{Duration, OffsetDateTime};

/// The name suffix every locald CA may sign for.
pub const LOCALHOST: &str = "localhost";

const ROOT_CERT: &str = "root.pem";
const ROOT_KEY: &str = "root.key";
const ROOT_NAMES: &str = "names";
const ROOT_CN: &str = "locald local development CA";

/// What went wrong with the local CA.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// Reading or writing a file of the CA failed.
    #[error("local CA file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The CA's key or certificate could not be made or read back.
    #[error("local CA: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls refused a key the CA made.
    #[error("local CA key for TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A name is not a valid DNS name the CA may sign for.
    #[error("{name:?} is not a host name under {allowed} (the local CA signs only for those)")]
    NameNotAllowed {
        /// The name asked for.
        name: String,
        /// The suffixes the CA may sign for, comma-separated.
        allowed: String,
    },
    /// The root was created for fewer names than are configured now.
    #[error(
        "the local CA in {dir} was created for {have}; {missing} is configured now. \
         Run `locald untrust`, remove {dir} and run `locald trust` to make a new one"
    )]
    RootTooNarrow {
        /// The CA directory.
        dir: PathBuf,
        /// The suffixes the root allows.
        have: String,
        /// The configured suffix it does not allow.
        missing: String,
    },
}

/// The local CA: the root on disk and an intermediate in memory that signs leaves.
pub struct LocalCa {
    dir: PathBuf,
    root_pem: String,
    suffixes: Vec<String>,
    intermediate: Issuer<'static, KeyPair>,
    intermediate_der: CertificateDer<'static>,
    leaves: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("dir", &self.dir)
            .field("suffixes", &self.suffixes)
            .finish_non_exhaustive()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Normalises configured suffixes: lowercase, no leading dot, `localhost` always first,
/// no duplicates. A suffix must itself be a valid host name.
fn normalise_suffixes(extra: &[String]) -> Result<Vec<String>, CaError> {
    let mut out = vec![LOCALHOST.to_owned()];
    for s in extra {
        let s = s.trim().trim_start_matches('.').to_ascii_lowercase();
        if !is_host_name(&s) {
            return Err(CaError::NameNotAllowed {
                name: s,
                allowed: "valid DNS names".into(),
            });
        }
        if !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out)
}

/// Whether `name` is a DNS host name: dot-separated RFC 1123 labels (letters, digits,
/// inner hyphens, 1–63 characters), at most 253 characters, no trailing dot.
pub fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Whether `name` is `suffix` or a name under it.
pub fn name_under(name: &str, suffix: &str) -> bool {
    name == suffix
        || (name.len() > suffix.len()
            && name.ends_with(suffix)
            && name.as_bytes()[name.len() - suffix.len() - 1] == b'.')
}

fn ca_params(cn: &str, suffixes: &[String], path_len: u8) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "locald");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.name_constraints = Some(NameConstraints {
        permitted_subtrees: suffixes
            .iter()
            .map(|s| GeneralSubtree::DnsName(s.clone()))
            .collect(),
        excluded_subtrees: vec![],
    });
    Ok(p)
}

impl LocalCa {
    /// Opens the CA in `dir` (normally `$LOCALD_HOME/ca`), creating the root the first
    /// time: its key is written with mode 0600 through a temporary file and a rename.
    /// `extra_suffixes` are the names besides `localhost` the user configured.
    pub fn open(dir: &Path, extra_suffixes: &[String]) -> Result<LocalCa, CaError> {
        let suffixes = normalise_suffixes(extra_suffixes)?;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(io_err(dir))?;
        }
        let key_path = dir.join(ROOT_KEY);
        let cert_path = dir.join(ROOT_CERT);
        let names_path = dir.join(ROOT_NAMES);
        let (root_key, root_pem, root_names) = if key_path.exists() && cert_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
            let root_pem = std::fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
            let names = std::fs::read_to_string(&names_path).map_err(io_err(&names_path))?;
            let names: Vec<String> = names.lines().map(str::to_owned).collect();
            (KeyPair::from_pem(&key_pem)?, root_pem, names)
        } else {
            let key = KeyPair::generate()?;
            let mut params = ca_params(ROOT_CN, &suffixes, 1)?;
            let now = OffsetDateTime::now_utc();
            params.not_before = now - Duration::days(1);
            params.not_after = now + Duration::days(3650);
            let cert = params.self_signed(&key)?;
            let write = |path: &Path, bytes: &[u8], mode: u32| {
                locald_runtime::util::write_atomic_with(
                    path,
                    bytes,
                    &locald_runtime::util::AtomicWrite::new().mode(mode),
                )
                .map_err(|e| CaError::Io {
                    path: path.to_owned(),
                    source: std::io::Error::other(e),
                })
            };
            // The names and the key first: a crash before the certificate is written
            // leaves no root, and the next start makes a fresh one.
            write(&names_path, suffixes.join("\n").as_bytes(), 0o644)?;
            write(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write(&cert_path, cert.pem().as_bytes(), 0o644)?;
            (key, cert.pem(), suffixes.clone())
        };
        if let Some(missing) = suffixes.iter().find(|s| !root_names.contains(s)) {
            return Err(CaError::RootTooNarrow {
                dir: dir.to_owned(),
                have: root_names.join(", "),
                missing: missing.clone(),
            });
        }
        // Issuer parameters are rebuilt from the same inputs as the root's: the same
        // subject and the same key, so the key identifiers match.
        let root_issuer = Issuer::new(ca_params(ROOT_CN, &root_names, 1)?, root_key);
        let int_key = KeyPair::generate()?;
        let mut int_params = ca_params("locald intermediate", &suffixes, 0)?;
        let now = OffsetDateTime::now_utc();
        int_params.not_before = now - Duration::days(1);
        int_params.not_after = now + Duration::days(365);
        let int_cert = int_params.signed_by(&int_key, &root_issuer)?;
        Ok(LocalCa {
            dir: dir.to_owned(),
            root_pem,
            suffixes,
            intermediate_der: int_cert.der().clone(),
            intermediate: Issuer::new(int_params, int_key),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The root certificate (PEM), the one users trust.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The root certificate's file.
    pub fn root_path(&self) -> PathBuf {
        self.dir.join(ROOT_CERT)
    }

    /// Whether the CA may sign for `name`.
    pub fn allows(&self, name: &str) -> bool {
        is_host_name(name) && self.suffixes.iter().any(|s| name_under(name, s))
    }

    /// The certificate chain (leaf, intermediate) and key for `name`, made on first use
    /// and cached.
    pub fn leaf(&self, name: &str) -> Result<Arc<CertifiedKey>, CaError> {
        let name = name.to_ascii_lowercase();
        if !self.allows(&name) {
            return Err(CaError::NameNotAllowed {
                name,
                allowed: self.suffixes.join(", "),
            });
        }
        if let Some(k) = self.leaves.lock().expect("leaf cache").get(&name) {
            return Ok(k.clone());
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.clone()])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, &name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(90);
        let cert = params.signed_by(&key, &self.intermediate)?;
        let der_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = rustls::crypto::ring::sign::any_supported_type(&der_key)?;
        let certified = Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), self.intermediate_der.clone()],
            signing,
        ));
        self.leaves
            .lock()
            .expect("leaf cache")
            .insert(name, certified.clone());
        Ok(certified)
    }

    /// A rustls server configuration that answers each server name with its leaf,
    /// offering HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> rustls::ServerConfig {
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver(self.clone())));
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        cfg
    }
}

#[derive(Debug)]
struct Resolver(Arc<LocalCa>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A client that connected by address sends no name: it gets `localhost`'s.
        let name = hello.server_name().unwrap_or(LOCALHOST);
        match self.0.leaf(name) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::debug!("no certificate for {name}: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert!(is_host_name("web.shop.localhost"));
        assert!(is_host_name("a-b.localhost"));
        for bad in [
            "",
            "-a.localhost",
            "a..localhost",
            "a_b.localhost",
            "../x",
            "a.",
            "é.localhost",
        ] {
            assert!(!is_host_name(bad), "{bad}");
        }
        assert!(name_under("web.localhost", "localhost"));
        assert!(!name_under("weblocalhost", "localhost"));
        assert!(!name_under("localhost.evil.com", "localhost"));
    }

    #[test]
    fn root_created_once_with_private_key_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let a = LocalCa::open(&ca_dir, &[]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(ca_dir.join(ROOT_KEY))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = LocalCa::open(&ca_dir, &[]).unwrap();
        assert_eq!(a.root_pem(), b.root_pem());
        assert!(a.leaf("web.shop.localhost").is_ok());
        let err = a.leaf("example.com").unwrap_err().to_string();
        assert!(err.contains("example.com"), "{err}");
        // A suffix configured later than the root was made is refused with a way out.
        let err = LocalCa::open(&ca_dir, &["test".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("locald untrust"), "{err}");
    }
}
