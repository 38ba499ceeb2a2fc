//! The Lima releases locald knows, pinned by version and sha256.

use std::fmt;

/// One downloadable archive of a Lima release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Asset {
    /// The operating system as Lima names it in asset names (`Darwin`, `Linux`).
    pub os: &'static str,
    /// The architecture as Lima names it (`arm64`, `x86_64`, `aarch64`).
    pub arch: &'static str,
    /// The sha256 of the archive, lowercase hex; `None` when locald has no verified
    /// digest for it (such an archive is never installed).
    pub sha256: Option<&'static str>,
}

impl Asset {
    /// An archive for `os` and `arch` (Lima's spellings), pinned to `sha256`.
    pub const fn new(os: &'static str, arch: &'static str, sha256: Option<&'static str>) -> Asset {
        Asset { os, arch, sha256 }
    }
}

/// A Lima release: its version and the archives locald may install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Release {
    /// The version without a `v` (`2.2.0`).
    pub version: &'static str,
    /// Its archives, one per OS and architecture.
    pub assets: &'static [Asset],
}

impl Release {
    /// A release (for mirrors and tests; locald itself installs [`PINNED`]).
    pub const fn new(version: &'static str, assets: &'static [Asset]) -> Release {
        Release { version, assets }
    }
}

/// The releases locald knows, oldest first; the last one is [`PINNED`].
///
/// The digests are those of the release's `SHA256SUMS` file as recorded by
/// cashapp/hermit-packages' `lima.hcl` (read 2026-12; the 1.2.1 Darwin-arm64 digest
/// agrees with a second, independent record). Lima publishes no `Linux-aarch64` digest
/// there, so that archive has none here and is refused: check it against the
/// release's `SHA256SUMS` before adding it.
pub const RELEASES: &[Release] = &[
    Release {
        version: "2.1.4",
        assets: &[
            Asset {
                os: "Darwin",
                arch: "arm64",
                sha256: Some("14c5b283f1c5eb4078e5a300b8d241f69197a3e41326dfc685a69c9455917acf"),
            },
            Asset {
                os: "Darwin",
                arch: "x86_64",
                sha256: Some("57f319f2d2b3e781cdceaaf58efc0cae92e31ccc774fee988df438c3a22feb45"),
            },
            Asset {
                os: "Linux",
                arch: "x86_64",
                sha256: Some("78da175634c38beab62a6618d16b9c7aeeabdbb5d99ed5c9a03bac212c786bfa"),
            },
            Asset {
                os: "Linux",
                arch: "aarch64",
                sha256: None,
            },
        ],
    },
    Release {
        version: "2.2.0",
        assets: &[
            Asset {
                os: "Darwin",
                arch: "arm64",
                sha256: Some("bbdef91774885a0d05f7b048c4eb89ae2bcf3a0c252ae7ca7934e63df76d93c3"),
            },
            Asset {
                os: "Darwin",
                arch: "x86_64",
                sha256: Some("0d6f99c19f6e4bc3c92730c4c29d929e6927f0cb0a0ba1a84383367135a8ff31"),
            },
            Asset {
                os: "Linux",
                arch: "x86_64",
                sha256: Some("a0ea1ccf6b7335a900adb5f8d2b8384457965fecb1ba72f09b4e3e46d12f424a"),
            },
            Asset {
                os: "Linux",
                arch: "aarch64",
                sha256: None,
            },
        ],
    },
];

/// The Lima release locald installs and drives.
pub const PINNED: Release = RELEASES[RELEASES.len() - 1];

/// Lima's name for an operating system (`std::env::consts::OS` spelling in).
pub fn lima_os(os: &str) -> Option<&'static str> {
    match os {
        "macos" => Some("Darwin"),
        "linux" => Some("Linux"),
        _ => None,
    }
}

/// Lima's name for an architecture on `os` (`std::env::consts::ARCH` spelling in):
/// `arm64` on macOS, `aarch64` on Linux.
pub fn lima_arch(os: &str, arch: &str) -> Option<&'static str> {
    match (os, arch) {
        (_, "x86_64") => Some("x86_64"),
        ("macos", "aarch64") => Some("arm64"),
        ("linux", "aarch64") => Some("aarch64"),
        _ => None,
    }
}

impl Release {
    /// The archive for `os` and `arch` (`std::env::consts` spellings).
    pub fn asset(&self, os: &str, arch: &str) -> Option<&'static Asset> {
        let (os, arch) = (lima_os(os)?, lima_arch(os, arch)?);
        self.assets.iter().find(|a| a.os == os && a.arch == arch)
    }

    /// The archive for the platform this program was built for.
    pub fn host_asset(&self) -> Option<&'static Asset> {
        self.asset(std::env::consts::OS, std::env::consts::ARCH)
    }

    /// The file name of `asset` in this release (`lima-2.2.0-Darwin-arm64.tar.gz`).
    pub fn file_name(&self, asset: &Asset) -> String {
        format!("lima-{}-{}-{}.tar.gz", self.version, asset.os, asset.arch)
    }

    /// Where GitHub serves `asset`.
    pub fn url(&self, asset: &Asset) -> String {
        format!(
            "https://github.com/lima-vm/lima/releases/download/v{}/{}",
            self.version,
            self.file_name(asset)
        )
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lima {}", self.version)
    }
}

/// Compares dotted versions numerically (`2.10.0` > `2.9.1`); a leading `v` and
/// anything after `-` or `+` are ignored; missing parts count as 0.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    fn parts(v: &str) -> Vec<u64> {
        v.trim_start_matches('v')
            .split(['-', '+'])
            .next()
            .unwrap_or("")
            .split('.')
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    }
    let (a, b) = (parts(a), parts(b));
    let len = a.len().max(b.len());
    let at = |v: &Vec<u64>, i: usize| v.get(i).copied().unwrap_or(0);
    (0..len)
        .map(|i| at(&a, i).cmp(&at(&b, i)))
        .find(|o| o.is_ne())
        .unwrap_or(std::cmp::Ordering::Equal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Ordering;

    #[test]
    fn every_platform_lima_ships_has_an_asset_and_names_match_lima() {
        let asset = PINNED.asset("macos", "aarch64").unwrap();
        assert_eq!(
            PINNED.file_name(asset),
            format!("lima-{}-Darwin-arm64.tar.gz", PINNED.version)
        );
        let asset = PINNED.asset("macos", "x86_64").unwrap();
        assert_eq!(
            PINNED.url(asset),
            format!(
                "https://github.com/lima-vm/lima/releases/download/v{0}/lima-{0}-Darwin-x86_64.tar.gz",
                PINNED.version
            )
        );
        assert_eq!(
            PINNED.asset("linux", "aarch64").unwrap().arch,
            "aarch64",
            "Lima names Linux ARM aarch64, not arm64"
        );
        assert!(PINNED.asset("windows", "x86_64").is_none());
        for release in RELEASES {
            for asset in release.assets {
                if let Some(digest) = asset.sha256 {
                    assert_eq!(digest.len(), 64);
                    assert!(digest
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                }
            }
            // The Mac archives, which users run, are always pinned.
            assert!(release.asset("macos", "aarch64").unwrap().sha256.is_some());
            assert!(release.asset("macos", "x86_64").unwrap().sha256.is_some());
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("2.10.0", "2.9.1"), Ordering::Greater);
        assert_eq!(compare_versions("v2.2.0", "2.2"), Ordering::Equal);
        assert_eq!(compare_versions("2.1.4", "2.2.0"), Ordering::Less);
        assert_eq!(compare_versions("2.2.0-rc.1", "2.2.0"), Ordering::Equal);
        let mut sorted: Vec<_> = RELEASES.iter().map(|r| r.version).collect();
        sorted.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            sorted,
            RELEASES.iter().map(|r| r.version).collect::<Vec<_>>()
        );
    }
}
