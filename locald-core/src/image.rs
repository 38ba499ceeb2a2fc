//! Image references, parsed and normalized the way `docker pull` does.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A normalized image reference: `registry/repository[:tag][@digest]`.
///
/// Short names are completed as docker does: `busybox` is
/// `docker.io/library/busybox:latest`, `me/app` is `docker.io/me/app:latest`; a first
/// component with a `.` or `:`, or `localhost`, names the registry.
///
/// ```
/// use locald_core::ImageRef;
///
/// let r: ImageRef = "busybox".parse()?;
/// assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
///
/// let r: ImageRef = "127.0.0.1:5000/tools/busybox:1.36".parse()?;
/// assert_eq!(r.registry(), "127.0.0.1:5000");
/// assert_eq!(r.repository(), "tools/busybox");
/// assert_eq!(r.tag(), Some("1.36"));
///
/// assert!("Busybox".parse::<ImageRef>().is_err());
/// # Ok::<(), locald_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalizes a reference, as docker's `ParseNormalizedNamed` does.
    ///
    /// The grammar is the distribution project's reference grammar, checked by hand
    /// in one pass: no regular expression is compiled, so the first parse in a process
    /// costs microseconds (a command-line tool parses one reference per run).
    pub fn parse(input: &str) -> Result<ImageRef> {
        let reject = |reason: &str| Error::invalid("image reference", input, reason);
        if input.trim() != input {
            return Err(reject("must not have surrounding whitespace"));
        }
        if input.len() == 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(reject(
                "a 64-character hex string is an image id, not a reference; use NAME@sha256:ID",
            ));
        }
        grammar::parse(input).map_err(|e| reject(e.message()))
    }

    /// The registry host (and port): `docker.io`, `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host to contact for this registry: `docker.io` is served by
    /// `registry-1.docker.io`.
    pub fn registry_endpoint(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// The repository path: `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` is filled in when neither tag nor digest is given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:…`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// What to ask the registry for: the digest when there is one, else the tag.
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The short form docker prints: `busybox:latest`, `me/app:1`, `host:5000/x:y`.
    pub fn familiar(&self) -> String {
        let name = if self.registry == "docker.io" {
            self.repository
                .strip_prefix("library/")
                .unwrap_or(&self.repository)
                .to_owned()
        } else {
            format!("{}/{}", self.registry, self.repository)
        };
        let mut out = name;
        if let Some(tag) = &self.tag {
            out.push(':');
            out.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            out.push('@');
            out.push_str(digest);
        }
        out
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ImageRef({self})")
    }
}

impl FromStr for ImageRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<ImageRef> {
        ImageRef::parse(s)
    }
}

impl Serialize for ImageRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ImageRef::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The reference grammar of the distribution project
/// (`distribution/reference/reference.go`), and docker's normalization
/// (`normalize.go`):
///
/// ```text
/// reference        := name [ ":" tag ] [ "@" digest ]
/// name             := [domain '/'] path-component ['/' path-component]*
/// domain           := host [':' port-number]
/// host             := domain-name | IPv4address | '[' IPv6address ']'
/// domain-name      := domain-component ['.' domain-component]*
/// domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
/// port-number      := /[0-9]+/
/// path-component   := alpha-numeric [separator alpha-numeric]*
/// alpha-numeric    := /[a-z0-9]+/
/// separator        := /[_.]|__|[-]*/
/// tag              := /[\w][\w.-]{0,127}/
/// digest           := algorithm ":" hex   (algorithm components /[A-Za-z][A-Za-z0-9]*/
///                                          joined by [+._-]; hex /[0-9a-fA-F]{32,}/)
/// ```
mod grammar {
    use super::ImageRef;

    /// Why a reference was refused, with docker's wording.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Invalid {
        Format,
        Empty,
        Uppercase,
        TooLong,
        DigestAlgorithm,
        DigestLength,
        DigestFormat,
    }

    impl Invalid {
        pub(super) fn message(self) -> &'static str {
            match self {
                Invalid::Format => "invalid reference format",
                Invalid::Empty => "repository name must have at least one component",
                Invalid::Uppercase => "repository name must be lowercase",
                Invalid::TooLong => "repository name must not be more than 255 characters",
                Invalid::DigestAlgorithm => "unsupported digest algorithm",
                Invalid::DigestLength => "invalid checksum digest length",
                Invalid::DigestFormat => "invalid checksum digest format",
            }
        }
    }

    const DEFAULT_DOMAIN: &str = "docker.io";
    const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
    const OFFICIAL_PREFIX: &str = "library/";
    const NAME_TOTAL_LENGTH_MAX: usize = 255;

    pub(super) fn parse(input: &str) -> Result<ImageRef, Invalid> {
        if input.is_empty() {
            return Err(Invalid::Empty);
        }
        // The name never holds '@': the digest is what follows the first one.
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a port.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].find(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(Invalid::Format);
        }
        // docker's splitDockerDomain: a first component is a registry when it has a
        // '.' or a ':', is `localhost`, or has an uppercase letter.
        let (domain, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (first, path)
            }
            _ => (DEFAULT_DOMAIN, name),
        };
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Invalid::Uppercase);
        }
        if !valid_domain(domain) || !valid_path(path) {
            return Err(Invalid::Format);
        }
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(Invalid::Format);
            }
        }
        if let Some(digest) = digest {
            validate_digest(digest)?;
        }
        let domain = if domain == LEGACY_DEFAULT_DOMAIN {
            DEFAULT_DOMAIN
        } else {
            domain
        };
        let repository = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path.to_owned()
        };
        if domain.len() + 1 + repository.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(Invalid::TooLong);
        }
        Ok(ImageRef {
            registry: domain.to_owned(),
            repository,
            // `latest` when neither a tag nor a digest is given, as `docker pull`.
            tag: match (tag, digest) {
                (Some(tag), _) => Some(tag.to_owned()),
                (None, None) => Some("latest".to_owned()),
                (None, Some(_)) => None,
            },
            digest: digest.map(str::to_owned),
        })
    }

    fn valid_domain(domain: &str) -> bool {
        let (host, port) = if let Some(bracketed) = domain.strip_prefix('[') {
            let Some((ip, after)) = bracketed.split_once(']') else {
                return false;
            };
            if ip.parse::<std::net::Ipv6Addr>().is_err() {
                return false;
            }
            match after {
                "" => ("", None),
                _ => match after.strip_prefix(':') {
                    Some(port) => ("", Some(port)),
                    None => return false,
                },
            }
        } else {
            match domain.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (domain, None),
            }
        };
        let host_ok = host.is_empty() && domain.starts_with('[')
            || (!host.is_empty() && host.split('.').all(valid_domain_component));
        let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        host_ok && port_ok
    }

    fn valid_domain_component(c: &str) -> bool {
        let b = c.as_bytes();
        !b.is_empty()
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-'
    }

    fn valid_path(path: &str) -> bool {
        path.split('/').all(valid_path_component)
    }

    /// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
    fn valid_path_component(c: &str) -> bool {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
            if !ok {
                return false;
            }
        }
        true
    }

    fn valid_tag(tag: &str) -> bool {
        let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let b = tag.as_bytes();
        !b.is_empty()
            && b.len() <= 128
            && word(b[0])
            && b[1..].iter().all(|&x| word(x) || x == b'.' || x == b'-')
    }

    fn validate_digest(digest: &str) -> Result<(), Invalid> {
        let (algorithm, hex) = digest.split_once(':').ok_or(Invalid::Format)?;
        let algorithm_ok = !algorithm.is_empty()
            && algorithm.split(['+', '.', '_', '-']).all(|c| {
                let b = c.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphabetic()
                    && b.iter().all(u8::is_ascii_alphanumeric)
            });
        if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Invalid::Format);
        }
        // What the grammar allows, docker's digest package then checks per algorithm.
        let length = match algorithm {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(Invalid::DigestAlgorithm),
        };
        if hex.len() != length {
            return Err(Invalid::DigestLength);
        }
        if hex.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(Invalid::DigestFormat);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("me/app"), "docker.io/me/app:latest");
        assert_eq!(norm("index.docker.io/me/app"), "docker.io/me/app:latest");
        assert_eq!(norm("ghcr.io/org/team/app:v2"), "ghcr.io/org/team/app:v2");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(
            norm("127.0.0.1:5000/ns/repo:tag"),
            "127.0.0.1:5000/ns/repo:tag"
        );
        // A port-like tag on a short name is a tag, as in docker.
        assert_eq!(norm("test.com:5000"), "docker.io/library/test.com:5000");
    }

    #[test]
    fn digests() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("busybox@{digest}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(digest.as_str()));
        assert_eq!(r.reference(), digest);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{digest}"));

        let r = ImageRef::parse(&format!("host:5000/x:1@{digest}")).unwrap();
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.reference(), digest, "the digest wins over the tag");
    }

    #[test]
    fn rejects_bad_references_with_a_reason() {
        let cases = [
            ("", "repository name must have at least one component"),
            ("Busybox", "repository name must be lowercase"),
            ("me/App", "repository name must be lowercase"),
            ("busybox:", "invalid reference format"),
            ("bad name", "invalid reference format"),
            ("busybox@sha256:abc", "invalid reference format"),
            (" busybox", "must not have surrounding whitespace"),
        ];
        for (input, reason) in cases {
            let err = ImageRef::parse(input).unwrap_err().to_string();
            assert!(
                err.ends_with(reason),
                "{input:?}: expected {reason:?}, got {err:?}"
            );
            assert!(err.starts_with("invalid image reference"), "{err}");
        }
        let hex = "f".repeat(64);
        let err = ImageRef::parse(&hex).unwrap_err().to_string();
        assert!(err.contains("image id"), "{err}");
        let md5ish = format!("busybox@md5:{}", "a".repeat(32));
        let err = ImageRef::parse(&md5ish).unwrap_err().to_string();
        assert!(err.ends_with("unsupported digest algorithm"), "{err}");
    }

    /// The cases of the distribution project's `reference_test.go` (TestReferenceParse)
    /// and docker's `normalize_test.go`, through docker's normalization: the input,
    /// then the normalized name or the error it must give.
    #[test]
    fn docker_reference_test_cases() {
        let f64 = "f".repeat(64);
        let f128 = "f".repeat(128);
        let ok = |input: &str, want: &str| {
            let got = ImageRef::parse(input).map(|r| r.to_string());
            assert_eq!(got.as_deref().ok(), Some(want), "{input:?}: {got:?}");
        };
        let bad = |input: &str, reason: &str| {
            let err = ImageRef::parse(input).unwrap_err().to_string();
            assert!(
                err.ends_with(reason),
                "{input:?}: want {reason:?}, got {err:?}"
            );
        };
        ok("test_com", "docker.io/library/test_com:latest");
        ok("test.com:tag", "docker.io/library/test.com:tag");
        ok("test.com:5000", "docker.io/library/test.com:5000");
        ok("test.com/repo:tag", "test.com/repo:tag");
        ok("test:5000/repo", "test:5000/repo:latest");
        ok("test:5000/repo:tag", "test:5000/repo:tag");
        ok(
            &format!("test:5000/repo@sha256:{f64}"),
            &format!("test:5000/repo@sha256:{f64}"),
        );
        ok(
            &format!("test:5000/repo:tag@sha256:{f64}"),
            &format!("test:5000/repo:tag@sha256:{f64}"),
        );
        ok(
            &format!("repo@sha256:{f64}"),
            &format!("docker.io/library/repo@sha256:{f64}"),
        );
        bad("", "repository name must have at least one component");
        bad(":justtag", "invalid reference format");
        bad(&format!("@sha256:{f64}"), "invalid reference format");
        bad(
            &format!("validname@invaliddigest:{f64}"),
            "unsupported digest algorithm",
        );
        bad(
            &format!("repo@sha256:{}", "f".repeat(63)),
            "invalid checksum digest length",
        );
        bad(
            &format!("repo@sha256:{}", "F".repeat(64)),
            "invalid checksum digest format",
        );
        bad("Uppercase:tag", "repository name must be lowercase");
        bad(
            "test:5000/Uppercase/lowercase:tag",
            "repository name must be lowercase",
        );
        ok(
            "lowercase:Uppercase",
            "docker.io/library/lowercase:Uppercase",
        );
        bad(
            &format!("{}a:tag", "a/".repeat(128)),
            "must not be more than 255 characters",
        );
        ok(
            &format!("{}a:tag-puts-this-over-max", "a/".repeat(122)),
            &format!("docker.io/{}a:tag-puts-this-over-max", "a/".repeat(122)),
        );
        bad("aa/asdf$$^/aa", "invalid reference format");
        ok(
            "sub-dom1.foo.com/bar/baz/quux",
            "sub-dom1.foo.com/bar/baz/quux:latest",
        );
        ok(
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
        );
        ok(
            "b.gcr.io/test.example.com/my-app:test.example.com",
            "b.gcr.io/test.example.com/my-app:test.example.com",
        );
        ok(
            "xn--n3h.com/myimage:xn--n3h.com",
            "xn--n3h.com/myimage:xn--n3h.com",
        );
        ok(
            &format!("xn--7o8h.com/myimage:xn--7o8h.com@sha512:{f128}"),
            &format!("xn--7o8h.com/myimage:xn--7o8h.com@sha512:{f128}"),
        );
        ok("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080");
        ok("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080");
        ok("192.168.1.1", "docker.io/library/192.168.1.1:latest");
        ok("192.168.1.1:tag", "docker.io/library/192.168.1.1:tag");
        ok("192.168.1.1:5000", "docker.io/library/192.168.1.1:5000");
        ok("192.168.1.1/repo", "192.168.1.1/repo:latest");
        ok("192.168.1.1:5000/repo", "192.168.1.1:5000/repo:latest");
        ok("192.168.1.1:5000/repo:5050", "192.168.1.1:5000/repo:5050");
        bad("[2001:db8::1]", "invalid reference format");
        bad("[2001:db8::1]:5000", "invalid reference format");
        bad("[2001:db8::1]:tag", "invalid reference format");
        ok("[2001:db8::1]/repo", "[2001:db8::1]/repo:latest");
        ok(
            "[2001:db8:1:2:3:4:5:6]/repo:tag",
            "[2001:db8:1:2:3:4:5:6]/repo:tag",
        );
        ok("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000/repo:latest");
        ok("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000/repo:tag");
        ok("[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo:latest");
        ok("[::1]:5000/repo", "[::1]:5000/repo:latest");
        bad("[fe80::1%eth0]:5000/repo", "invalid reference format");
        bad(
            "[fe80::1%@invalidzone]:5000/repo",
            "invalid reference format",
        );
        // Separators inside a path component: '.', '_', '__', any run of '-'.
        ok("a/b__c/d---e/f.g", "docker.io/a/b__c/d---e/f.g:latest");
        bad("a/b___c", "invalid reference format");
        bad("a/b..c", "invalid reference format");
        bad("a/-b", "invalid reference format");
        bad("a//b", "invalid reference format");
        bad("host:/repo", "invalid reference format");
        bad("-host.com/repo", "invalid reference format");
        bad(
            &format!("repo:{}", "t".repeat(129)),
            "invalid reference format",
        );
        ok(
            &format!("repo:{}", "t".repeat(128)),
            &format!("docker.io/library/repo:{}", "t".repeat(128)),
        );
        bad("repo:.tag", "invalid reference format");
    }

    #[test]
    fn familiar_names() {
        assert_eq!(
            ImageRef::parse("busybox").unwrap().familiar(),
            "busybox:latest"
        );
        assert_eq!(ImageRef::parse("me/app:1").unwrap().familiar(), "me/app:1");
        assert_eq!(
            ImageRef::parse("127.0.0.1:5000/x").unwrap().familiar(),
            "127.0.0.1:5000/x:latest"
        );
    }

    #[test]
    fn endpoint_of_docker_hub() {
        assert_eq!(
            ImageRef::parse("busybox").unwrap().registry_endpoint(),
            "registry-1.docker.io"
        );
        assert_eq!(
            ImageRef::parse("quay.io/x/y").unwrap().registry_endpoint(),
            "quay.io"
        );
    }

    #[test]
    fn serde_as_string() {
        let r = ImageRef::parse("busybox").unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, "\"docker.io/library/busybox:latest\"");
        let back: ImageRef = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert!(serde_json::from_str::<ImageRef>("\"Bad\"").is_err());
    }
}
