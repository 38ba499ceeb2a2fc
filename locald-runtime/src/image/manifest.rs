//! The manifest, index and config documents, in their OCI and Docker v2 forms.

use std::collections::BTreeMap;

use locald_core::{Error, Result};
use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use crate::ImageConfig;

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub(crate) media_type: String,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) platform: Option<PlatformSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
}

/// An index entry's platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlatformSpec {
    pub(crate) os: String,
    pub(crate) architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) variant: Option<String>,
}

impl PlatformSpec {
    pub(crate) fn name(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.architecture, v),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// An image manifest or an index (Docker: manifest list), told apart by content.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Document {
    #[serde(rename = "schemaVersion")]
    pub(crate) schema_version: u32,
    #[serde(rename = "mediaType", default)]
    pub(crate) media_type: Option<String>,
    #[serde(default)]
    pub(crate) config: Option<Descriptor>,
    #[serde(default)]
    pub(crate) layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    pub(crate) manifests: Option<Vec<Descriptor>>,
}

impl Document {
    pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<Document> {
        let doc: Document = serde_json::from_slice(bytes).map_err(|e| Error::InvalidImage {
            what: what.to_owned(),
            reason: format!("not a manifest: {e}"),
        })?;
        if doc.schema_version != 2 {
            return Err(Error::InvalidImage {
                what: what.to_owned(),
                reason: format!(
                    "schema version {} is not supported (Docker schema 1 images must be converted)",
                    doc.schema_version
                ),
            });
        }
        Ok(doc)
    }

    pub(crate) fn is_index(&self) -> bool {
        self.manifests.is_some()
            || self
                .media_type
                .as_deref()
                .is_some_and(|m| m.contains("index") || m.contains("manifest.list"))
    }
}

/// The platform `os/arch[/variant]` to pull, defaulting to this host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WantedPlatform {
    pub(crate) os: String,
    pub(crate) arch: String,
    pub(crate) variant: Option<String>,
}

impl WantedPlatform {
    pub(crate) fn parse(s: Option<&str>) -> Result<WantedPlatform> {
        let Some(s) = s else {
            let (arch, variant) = match std::env::consts::ARCH {
                "x86_64" => ("amd64", None),
                "aarch64" => ("arm64", None),
                "arm" => ("arm", Some("v7")),
                "x86" => ("386", None),
                "powerpc64" => ("ppc64le", None),
                other => (other, None),
            };
            return Ok(WantedPlatform {
                os: "linux".into(),
                arch: arch.into(),
                variant: variant.map(Into::into),
            });
        };
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(WantedPlatform {
                os: os.to_string(),
                arch: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(WantedPlatform {
                    os: os.to_string(),
                    arch: arch.to_string(),
                    variant: Some(variant.to_string()),
                })
            }
            _ => Err(Error::invalid(
                "platform",
                s,
                "expected os/arch or os/arch/variant, such as linux/arm64",
            )),
        }
    }

    pub(crate) fn name(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.arch, v),
            None => format!("{}/{}", self.os, self.arch),
        }
    }

    /// arm64 images are `v8` whether or not they say so.
    pub(crate) fn matches(&self, p: &PlatformSpec) -> bool {
        let norm = |arch: &str, v: Option<&str>| match (arch, v) {
            ("arm64", None) => Some("v8".to_owned()),
            (_, v) => v.map(str::to_owned),
        };
        p.os == self.os
            && p.architecture == self.arch
            && (self.variant.is_none()
                || norm(&self.arch, self.variant.as_deref())
                    == norm(&p.architecture, p.variant.as_deref()))
    }

    /// Picks the entry of an index for this platform.
    pub(crate) fn select<'a>(
        &self,
        entries: &'a [Descriptor],
        reference: &str,
    ) -> Result<&'a Descriptor> {
        entries
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| self.matches(p)))
            .ok_or_else(|| Error::PlatformNotFound {
                reference: reference.to_owned(),
                wanted: self.name(),
                available: entries
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .filter(|p| p.os != "unknown")
                    .map(PlatformSpec::name)
                    .collect(),
            })
    }
}

/// An image config document (OCI or Docker, which agree on the fields locald reads),
/// parsed with oci-spec's [`ImageConfiguration`].
#[derive(Debug, Clone)]
pub(crate) struct ConfigDocument {
    /// When the image was built, if the config says.
    pub(crate) created: Option<String>,
    /// The layers' uncompressed digests, bottom first.
    pub(crate) rootfs: RootFs,
    doc: ImageConfiguration,
}

/// The `rootfs` section of an image config.
#[derive(Debug, Clone)]
pub(crate) struct RootFs {
    pub(crate) diff_ids: Vec<String>,
}

impl ConfigDocument {
    pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<ConfigDocument> {
        let doc: ImageConfiguration =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidImage {
                what: what.to_owned(),
                reason: format!("not an image config: {e}"),
            })?;
        if doc.rootfs().typ() != "layers" {
            return Err(Error::InvalidImage {
                what: what.to_owned(),
                reason: format!("rootfs type {:?} is not \"layers\"", doc.rootfs().typ()),
            });
        }
        Ok(ConfigDocument {
            created: doc.created().clone(),
            rootfs: RootFs {
                diff_ids: doc.rootfs().diff_ids().clone(),
            },
            doc,
        })
    }

    pub(crate) fn platform(&self) -> String {
        let (os, arch) = (self.doc.os(), self.doc.architecture());
        match self.doc.variant() {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        }
    }

    /// How to run the image; empty when the config has no `config` section.
    pub(crate) fn image_config(&self) -> ImageConfig {
        self.doc.config().clone().unwrap_or_default()
    }
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub(crate) fn of_media_type(media_type: &str, what: &str) -> Result<Compression> {
        if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
            Ok(Compression::Gzip)
        } else if media_type.ends_with("+zstd") {
            Ok(Compression::Zstd)
        } else if media_type.ends_with(".tar") || media_type.ends_with("layer.v1.tar") {
            Ok(Compression::None)
        } else {
            Err(Error::InvalidImage {
                what: what.to_owned(),
                reason: format!("unsupported layer media type {media_type:?}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn desc(os: &str, arch: &str, variant: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 1,
            platform: Some(PlatformSpec {
                os: os.into(),
                architecture: arch.into(),
                variant: variant.map(Into::into),
            }),
            annotations: BTreeMap::new(),
        }
    }

    #[test]
    fn platform_selection() {
        let entries = vec![
            desc("linux", "amd64", None),
            desc("linux", "arm", Some("v7")),
            desc("linux", "arm64", Some("v8")),
            desc("unknown", "unknown", None),
        ];
        let pick = |s: &str| {
            WantedPlatform::parse(Some(s))
                .unwrap()
                .select(&entries, "x")
                .map(|d| d.platform.clone().unwrap().name())
        };
        assert_eq!(pick("linux/amd64").unwrap(), "linux/amd64");
        assert_eq!(pick("linux/arm64").unwrap(), "linux/arm64/v8");
        assert_eq!(pick("linux/arm64/v8").unwrap(), "linux/arm64/v8");
        assert_eq!(pick("linux/arm/v7").unwrap(), "linux/arm/v7");
        let err = pick("linux/s390x").unwrap_err().to_string();
        assert_eq!(
            err,
            "x has no image for linux/s390x; it has linux/amd64, linux/arm/v7, linux/arm64/v8"
        );
        assert!(WantedPlatform::parse(Some("linux")).is_err());
        assert!(WantedPlatform::parse(None).unwrap().os == "linux");
    }

    #[test]
    fn compression_by_media_type() {
        use Compression::*;
        for (mt, want) in [
            ("application/vnd.oci.image.layer.v1.tar+gzip", Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Zstd),
            ("application/vnd.oci.image.layer.v1.tar", None),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Gzip),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Gzip,
            ),
        ] {
            assert_eq!(Compression::of_media_type(mt, "l").unwrap(), want, "{mt}");
        }
        assert!(Compression::of_media_type("text/plain", "l").is_err());
    }
}
