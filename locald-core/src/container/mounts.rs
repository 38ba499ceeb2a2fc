//! Mounts: [`Mount`], parsed from docker's `-v` and `--tmpfs` syntax.

use std::{
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use crate::{ByteSize, Error, Result};

/// What a mount attaches at its destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum MountSource {
    /// A host file or directory (must exist).
    Bind(PathBuf),
    /// A named volume kept by the runtime, created on first use.
    Volume(String),
    /// A fresh in-memory filesystem.
    Tmpfs {
        /// Its size limit (default: the kernel's, half of RAM).
        size: Option<ByteSize>,
        /// Its root directory's mode (default `1777`).
        mode: Option<u32>,
    },
}

/// A mount into a container, parsed from docker's `-v SRC:DST[:OPTS]` or
/// `--tmpfs DST[:OPTS]` syntax.
///
/// ```
/// use locald_core::{Mount, MountSource};
///
/// let m: Mount = "/srv/data:/data:ro".parse()?;
/// assert_eq!(m.source, MountSource::Bind("/srv/data".into()));
/// assert!(m.read_only);
///
/// let t = Mount::parse_tmpfs("/scratch:size=64m,mode=700")?;
/// assert!(matches!(t.source, MountSource::Tmpfs { .. }));
/// # Ok::<(), locald_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Mount {
    /// What is mounted.
    pub source: MountSource,
    /// Where, inside the container (absolute).
    pub destination: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

impl Mount {
    /// A bind mount of a host path.
    pub fn bind(
        source: impl Into<PathBuf>,
        destination: impl Into<PathBuf>,
        read_only: bool,
    ) -> Self {
        Mount {
            source: MountSource::Bind(source.into()),
            destination: destination.into(),
            read_only,
        }
    }

    /// A tmpfs at `destination` with the kernel's default size.
    pub fn tmpfs(destination: impl Into<PathBuf>) -> Self {
        Mount {
            source: MountSource::Tmpfs {
                size: None,
                mode: None,
            },
            destination: destination.into(),
            read_only: false,
        }
    }

    /// Parses docker's `--tmpfs DST[:size=64m,mode=1777,ro]`.
    pub fn parse_tmpfs(input: &str) -> Result<Mount> {
        let reject = |reason: String| Error::invalid("tmpfs mount", input, reason);
        let (dst, opts) = input.split_once(':').unwrap_or((input, ""));
        let destination = container_path(input, "tmpfs mount", dst)?;
        let mut size = None;
        let mut mode = None;
        let mut read_only = false;
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            match opt.split_once('=') {
                Some(("size", v)) => {
                    size = Some(
                        v.parse::<ByteSize>()
                            .map_err(|_| reject(format!("size {v:?} is not a size such as 64m")))?,
                    )
                }
                Some(("mode", v)) => {
                    mode = Some(
                        u32::from_str_radix(v, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| {
                                reject(format!("mode {v:?} is not an octal mode such as 1777"))
                            })?,
                    )
                }
                None if opt == "ro" => read_only = true,
                None if opt == "rw" => read_only = false,
                _ => {
                    return Err(reject(format!(
                        "unknown option {opt:?}; use size=, mode=, ro or rw"
                    )))
                }
            }
        }
        Ok(Mount {
            source: MountSource::Tmpfs { size, mode },
            destination,
            read_only,
        })
    }
}

pub(super) fn container_path(input: &str, what: &'static str, path: &str) -> Result<PathBuf> {
    if !path.starts_with('/') {
        return Err(Error::invalid(
            what,
            input,
            format!("the container path {path:?} must be absolute"),
        ));
    }
    if path == "/" {
        return Err(Error::invalid(
            what,
            input,
            "cannot mount over the container's root",
        ));
    }
    if Path::new(path)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(Error::invalid(
            what,
            input,
            format!("the container path {path:?} may not contain '..'"),
        ));
    }
    Ok(PathBuf::from(path))
}

/// True for a name docker accepts for containers and volumes: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub(super) fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl FromStr for Mount {
    type Err = Error;

    /// Parses docker's `-v SRC:DST[:ro|rw]`, where `SRC` is an absolute host path or a
    /// volume name.
    fn from_str(input: &str) -> Result<Mount> {
        let reject = |reason: String| Error::invalid("mount", input, reason);
        let parts: Vec<&str> = input.split(':').collect();
        let (src, dst, opts) = match parts.as_slice() {
            [src, dst] => (*src, *dst, ""),
            [src, dst, opts] => (*src, *dst, *opts),
            [_] => {
                return Err(reject(
                    "expected SOURCE:DESTINATION[:ro]; anonymous volumes are not supported".into(),
                ))
            }
            _ => return Err(reject("expected SOURCE:DESTINATION[:ro]".into())),
        };
        let destination = container_path(input, "mount", dst)?;
        let mut read_only = false;
        for opt in opts.split(',').filter(|o| !o.is_empty()) {
            match opt {
                "ro" | "readonly" => read_only = true,
                "rw" => read_only = false,
                other => return Err(reject(format!("unknown option {other:?}; use ro or rw"))),
            }
        }
        let source = if src.starts_with('/') {
            MountSource::Bind(PathBuf::from(src))
        } else if src.starts_with('.') || src.starts_with('~') || src.contains('/') {
            return Err(reject(format!(
                "the host path {src:?} must be absolute (a volume name has no '/')"
            )));
        } else if is_valid_name(src) {
            MountSource::Volume(src.to_owned())
        } else {
            return Err(reject(format!(
                "{src:?} is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
            )));
        };
        Ok(Mount {
            source,
            destination,
            read_only,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts() {
        let m: Mount = "/a:/b".parse().unwrap();
        assert_eq!(m, Mount::bind("/a", "/b", false));
        let m: Mount = "vol_1:/data:rw".parse().unwrap();
        assert_eq!(m.source, MountSource::Volume("vol_1".into()));
        for bad in [
            "/a",
            "/a:/",
            "/a:/b/../c",
            "./x:/y",
            "~/x:/y",
            "a:/b:ro:extra",
            "v:/b:bogus",
            "!:/x",
        ] {
            let e = bad.parse::<Mount>().unwrap_err().to_string();
            assert!(e.starts_with("invalid mount"), "{bad}: {e}");
        }
        let t = Mount::parse_tmpfs("/t:mode=1777,size=1g,ro").unwrap();
        assert_eq!(
            t.source,
            MountSource::Tmpfs {
                size: Some(ByteSize::new(1 << 30)),
                mode: Some(0o1777)
            }
        );
        assert!(t.read_only);
        for bad in ["t", "/t:size=big", "/t:mode=999", "/t:uid=0"] {
            let e = Mount::parse_tmpfs(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid tmpfs mount"), "{bad}: {e}");
        }
    }
}
