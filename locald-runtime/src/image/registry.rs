//! A Distribution (registry v2) client: TLS with extra CAs per registry, opt-in plain
//! HTTP, anonymous, bearer-token and basic authentication.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use base64::Engine as _;
use locald_core::{Error, Result};
use reqwest::{header, Response, StatusCode};
use tokio::sync::Mutex;

use super::auth::{AuthSources, Credentials};

/// Manifest media types locald understands, for the `Accept` header. A registry
/// answers 404 for an OCI manifest unless it is asked for by type.
pub(crate) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Where `<host:port>/ca.crt` files with extra trusted CAs live (docker's
    /// `certs.d` convention).
    pub certs_dir: PathBuf,
    /// Where credentials come from.
    pub auth: AuthSources,
    /// Most attempts per request before giving up on transient failures.
    pub max_attempts: u32,
}

#[derive(Debug, Clone)]
struct Challenge {
    scheme: String,
    params: HashMap<String, String>,
}

/// A connection to one registry, for one repository.
#[derive(Debug)]
pub(crate) struct Registry {
    host: String,
    base: String,
    repository: String,
    http: reqwest::Client,
    creds: Option<Credentials>,
    challenge: Option<Challenge>,
    authorization: Mutex<Option<String>>,
    pub(crate) max_attempts: u32,
}

fn net(context: String) -> impl FnOnce(reqwest::Error) -> Error {
    move |e| Error::Network {
        context,
        source: Box::new(e),
    }
}

/// True for failures worth trying again: connection trouble, timeouts, 5xx, 429.
pub(crate) fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

fn build_client(host: &str, config: &RegistryConfig, insecure: bool) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .user_agent(concat!("locald/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(60));
    let dir = config.certs_dir.join(host);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) == Some("crt") {
                let pem = std::fs::read(&path)
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                let certs =
                    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Network {
                        context: format!("reading CA certificates from {}", path.display()),
                        source: Box::new(e),
                    })?;
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
        }
    }
    if insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder
        .build()
        .map_err(net(format!("setting up a client for {host}")))
}

impl Registry {
    /// Connects to the registry of `host` (`endpoint` is the address to contact) for
    /// `repository`, finding out its scheme and how it wants to be authenticated.
    pub(crate) async fn connect(
        host: &str,
        endpoint: &str,
        repository: &str,
        config: &RegistryConfig,
        insecure: bool,
    ) -> Result<Registry> {
        let http = build_client(host, config, insecure)?;
        let creds = config.auth.lookup(host)?;
        let mut registry = Registry {
            host: host.to_owned(),
            base: format!("https://{endpoint}"),
            repository: repository.to_owned(),
            http,
            creds,
            challenge: None,
            authorization: Mutex::new(None),
            max_attempts: config.max_attempts.max(1),
        };
        let ping = match registry.ping().await {
            Ok(resp) => resp,
            Err(https_err) if insecure => {
                tracing::info!(registry = host, error = %https_err, "HTTPS failed; trying plain HTTP as --insecure allows");
                registry.base = format!("http://{endpoint}");
                registry.ping().await.map_err(|http_err| Error::Registry {
                    registry: host.to_owned(),
                    message: format!(
                        "unreachable over HTTPS ({}) and plain HTTP ({})",
                        error_chain(&https_err),
                        error_chain(&http_err)
                    ),
                })?
            }
            Err(e) => {
                return Err(Error::Registry {
                    registry: host.to_owned(),
                    message: format!(
                        "unreachable over HTTPS: {}{}",
                        error_chain(&e),
                        if is_loopback(endpoint) {
                            "; a local registry without TLS needs --insecure"
                        } else {
                            ""
                        }
                    ),
                })
            }
        };
        if ping.status() == StatusCode::UNAUTHORIZED {
            registry.challenge = parse_challenge(ping.headers());
        }
        Ok(registry)
    }

    async fn ping(&self) -> std::result::Result<Response, reqwest::Error> {
        self.http.get(format!("{}/v2/", self.base)).send().await
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// Fetches a manifest by tag or digest.
    pub(crate) async fn manifest(&self, reference: &str) -> Result<Response> {
        let url = format!(
            "{}/v2/{}/manifests/{}",
            self.base, self.repository, reference
        );
        self.get(&url, &[(header::ACCEPT, MANIFEST_TYPES.join(", "))])
            .await
    }

    /// Starts fetching a blob, from byte `from` on.
    pub(crate) async fn blob(&self, digest: &str, from: u64) -> Result<Response> {
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repository, digest);
        let mut headers = vec![];
        if from > 0 {
            headers.push((header::RANGE, format!("bytes={from}-")));
        }
        self.get(&url, &headers).await
    }

    /// Checks that the registry accepts our credentials (for `locald login`).
    pub(crate) async fn check_login(&self) -> Result<()> {
        let url = format!("{}/v2/", self.base);
        self.get(&url, &[]).await.map(drop)
    }

    /// GET with authentication: on 401, answers the challenge once and retries.
    async fn get(&self, url: &str, headers: &[(header::HeaderName, String)]) -> Result<Response> {
        let mut tried_auth = false;
        loop {
            let mut req = self.http.get(url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            if let Some(auth) = self.authorization.lock().await.clone() {
                req = req.header(header::AUTHORIZATION, auth);
            }
            let resp = req
                .send()
                .await
                .map_err(net(format!("requesting {url} from {}", self.host)))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !tried_auth {
                tried_auth = true;
                let challenge = parse_challenge(resp.headers()).or_else(|| self.challenge.clone());
                self.authenticate(challenge).await?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(Error::Unauthorized {
                    registry: self.host.clone(),
                    detail: format!("{} for {}; {}", status, self.repository, self.tried()),
                });
            }
            return Ok(resp);
        }
    }

    fn tried(&self) -> String {
        match &self.creds {
            None => "tried anonymous access (no credentials found; use `locald login`)".to_owned(),
            Some(c) => format!(
                "tried the credentials for user {:?} from {}",
                c.username,
                c.source.display()
            ),
        }
    }

    async fn authenticate(&self, challenge: Option<Challenge>) -> Result<()> {
        let Some(challenge) = challenge else {
            return Err(Error::Unauthorized {
                registry: self.host.clone(),
                detail: format!("401 without an authentication challenge; {}", self.tried()),
            });
        };
        let basic = self.creds.as_ref().map(|c| {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.password));
            format!("Basic {token}")
        });
        match challenge.scheme.as_str() {
            "basic" => {
                let Some(basic) = basic else {
                    return Err(Error::Unauthorized {
                        registry: self.host.clone(),
                        detail: format!(
                            "the registry wants a user name and password; {}",
                            self.tried()
                        ),
                    });
                };
                *self.authorization.lock().await = Some(basic);
                Ok(())
            }
            "bearer" => {
                let realm = challenge
                    .params
                    .get("realm")
                    .ok_or_else(|| Error::Registry {
                        registry: self.host.clone(),
                        message: "bearer challenge without a realm".into(),
                    })?;
                let mut req = self.http.get(realm);
                let mut query = vec![(
                    "scope",
                    challenge
                        .params
                        .get("scope")
                        .cloned()
                        .unwrap_or_else(|| format!("repository:{}:pull", self.repository)),
                )];
                if let Some(service) = challenge.params.get("service") {
                    query.push(("service", service.clone()));
                }
                req = req.query(&query);
                if let Some(basic) = basic {
                    req = req.header(header::AUTHORIZATION, basic);
                }
                let resp = req
                    .send()
                    .await
                    .map_err(net(format!("requesting a token from {realm}")))?;
                if !resp.status().is_success() {
                    return Err(Error::Unauthorized {
                        registry: self.host.clone(),
                        detail: format!(
                            "the token service answered {}; {}",
                            resp.status(),
                            self.tried()
                        ),
                    });
                }
                #[derive(serde::Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let token: Token = resp
                    .json()
                    .await
                    .map_err(net(format!("reading the token from {realm}")))?;
                let token = token
                    .token
                    .or(token.access_token)
                    .ok_or_else(|| Error::Registry {
                        registry: self.host.clone(),
                        message: "the token service answered without a token".into(),
                    })?;
                *self.authorization.lock().await = Some(format!("Bearer {token}"));
                Ok(())
            }
            other => Err(Error::Registry {
                registry: self.host.clone(),
                message: format!("unsupported authentication scheme {other:?}"),
            }),
        }
    }

    /// Turns an unexpected status into an error naming the registry.
    pub(crate) async fn status_error(&self, resp: Response, what: &str) -> Error {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["errors"][0]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.chars().take(200).collect());
        Error::Registry {
            registry: self.host.clone(),
            message: format!(
                "{what}: {status}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({detail})")
                }
            ),
        }
    }
}

fn is_loopback(endpoint: &str) -> bool {
    let host = endpoint
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(endpoint);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

pub(crate) use crate::util::error_chain;

/// Parses `Bearer realm="...",service="...",scope="..."` (values may hold commas).
fn parse_challenge(headers: &header::HeaderMap) -> Option<Challenge> {
    let value = headers.get(header::WWW_AUTHENTICATE)?.to_str().ok()?;
    parse_challenge_str(value)
}

fn parse_challenge_str(value: &str) -> Option<Challenge> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            val.push(n);
                        }
                    }
                    '"' => break,
                    c => val.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek() {
                if *c == ',' {
                    break;
                }
                val.push(*c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), val);
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge_str(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:a/b:pull,push");
        let c = parse_challenge_str(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], "Registry Realm");
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost:5000"));
        assert!(!is_loopback("quay.io"));
    }
}
