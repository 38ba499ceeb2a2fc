//! Image references, parsed and normalized the way `docker pull` does.

use std::{fmt, str::FromStr};

use oci_spec::distribution::{ParseError, Reference};
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
    /// Parses and normalizes a reference.
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
        let parsed = Reference::try_from(input).map_err(|e| {
            // The grammar only fails on case in the repository path (tags and hosts
            // may be mixed case), so a reference that parses once lowercased had an
            // uppercase repository: say so instead of "invalid reference format".
            if e == ParseError::ReferenceInvalidFormat
                && Reference::try_from(input.to_ascii_lowercase().as_str()).is_ok()
            {
                reject("repository name must be lowercase")
            } else {
                reject(&e.to_string())
            }
        })?;
        Ok(ImageRef {
            registry: parsed.registry().to_owned(),
            repository: parsed.repository().to_owned(),
            tag: parsed.tag().map(str::to_owned),
            digest: parsed.digest().map(str::to_owned),
        })
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
