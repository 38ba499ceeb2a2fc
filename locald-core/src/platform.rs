//! Which operating system locald runs on, and whether Linux is really WSL.
//!
//! Detection reads files and environment variables only, through a [`PlatformProbe`]
//! whose root directory and environment can be replaced, so every case can be tested
//! against a fixture tree.

use std::{collections::HashMap, ffi::OsString, fmt, fs, path::PathBuf};

use serde::{Deserialize, Serialize};

/// The operating system locald runs on, as far as running Linux work is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Platform {
    /// Linux on its own kernel (including inside a container).
    Linux,
    /// Linux inside a WSL2 distribution: a real Linux kernel in a lightweight VM.
    Wsl2,
    /// Linux binaries on WSL1's syscall translation layer: no namespaces or cgroups.
    Wsl1,
    /// macOS: Linux work runs in the `locald-vm` Lima instance.
    Macos,
    /// Windows: Linux work runs in a WSL2 distribution.
    Windows,
    /// Anything else (the BSDs, ...).
    Other,
}

impl Platform {
    /// Detects the platform of the running process.
    ///
    /// ```
    /// let platform = locald_core::Platform::detect();
    /// println!("running on {platform}");
    /// ```
    pub fn detect() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Macos
        } else if cfg!(windows) {
            Platform::Windows
        } else if cfg!(target_os = "linux") {
            PlatformProbe::host().detect().platform
        } else {
            Platform::Other
        }
    }

    /// True where the kernel is Linux and locald can run Linux work natively.
    pub fn is_linux_kernel(self) -> bool {
        matches!(self, Platform::Linux | Platform::Wsl2)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Platform::Linux => "Linux",
            Platform::Wsl2 => "Linux (WSL2)",
            Platform::Wsl1 => "Linux (WSL1)",
            Platform::Macos => "macOS",
            Platform::Windows => "Windows",
            Platform::Other => "an unsupported operating system",
        })
    }
}

/// What a Linux probe found, beyond the [`Platform`] itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Detection {
    /// The verdict.
    pub platform: Platform,
    /// The kernel release (`/proc/sys/kernel/osrelease`), when readable.
    pub kernel_release: Option<String>,
    /// The WSL distribution name (`WSL_DISTRO_NAME`), when in WSL.
    pub wsl_distro: Option<String>,
    /// The container engine locald itself runs under, if any (`docker`, `podman`).
    pub container: Option<String>,
}

/// Reads the facts that decide the platform of a Linux system from a root directory
/// and an environment, both replaceable for tests.
///
/// ```
/// use locald_core::{Platform, PlatformProbe};
///
/// let root = tempfile::tempdir()?;
/// std::fs::create_dir_all(root.path().join("proc/sys/kernel"))?;
/// std::fs::write(
///     root.path().join("proc/sys/kernel/osrelease"),
///     "5.15.153.1-microsoft-standard-WSL2\n",
/// )?;
/// let found = PlatformProbe::new(root.path()).env("WSL_DISTRO_NAME", "Ubuntu").detect();
/// assert_eq!(found.platform, Platform::Wsl2);
/// assert_eq!(found.wsl_distro.as_deref(), Some("Ubuntu"));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct PlatformProbe {
    root: PathBuf,
    env: HashMap<OsString, OsString>,
}

impl PlatformProbe {
    /// A probe of the running system: root `/` and the process environment.
    pub fn host() -> Self {
        PlatformProbe {
            root: PathBuf::from("/"),
            env: std::env::vars_os().collect(),
        }
    }

    /// A probe of the tree under `root`, with an empty environment.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        PlatformProbe {
            root: root.into(),
            env: HashMap::new(),
        }
    }

    /// Sets one environment variable the probe sees.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    fn var(&self, key: &str) -> Option<String> {
        self.env
            .get(&OsString::from(key))
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| !v.is_empty())
    }

    /// Decides whether this Linux system is plain Linux, WSL2 or WSL1.
    ///
    /// The rules, in order:
    /// 1. Inside a container (`/.dockerenv`, `/run/.containerenv`) it is plain Linux:
    ///    Docker Desktop's and Podman machine's containers run on a WSL kernel but have
    ///    no WSL interop, and must be treated as the Linux they are.
    /// 2. A kernel release ending in `-Microsoft` (`4.4.0-19041-Microsoft`) is WSL1.
    /// 3. A kernel release containing `microsoft` (`5.15.90.1-microsoft-standard-WSL2`,
    ///    `4.19.104-microsoft-standard`) is WSL2.
    /// 4. With a custom kernel, WSL2 is still recognized by `WSL_DISTRO_NAME`, `/run/WSL`
    ///    or a `WSLInterop*` entry in `/proc/sys/fs/binfmt_misc`.
    pub fn detect(&self) -> Detection {
        let kernel_release = fs::read_to_string(self.path("proc/sys/kernel/osrelease"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        let container = if self.exists("/.dockerenv") {
            Some("docker".to_owned())
        } else if self.exists("/run/.containerenv") {
            Some("podman".to_owned())
        } else {
            None
        };
        let wsl_distro = self.var("WSL_DISTRO_NAME");
        let mut detection = Detection {
            platform: Platform::Linux,
            kernel_release,
            wsl_distro: None,
            container,
        };
        if detection.container.is_some() {
            return detection;
        }
        let release = detection.kernel_release.as_deref().unwrap_or("");
        let wsl_kernel = release.to_ascii_lowercase().contains("microsoft");
        let platform = if release.ends_with("-Microsoft") {
            Platform::Wsl1
        } else if wsl_kernel
            || wsl_distro.is_some()
            || self.exists("/run/WSL")
            || self.has_wsl_interop()
        {
            Platform::Wsl2
        } else {
            Platform::Linux
        };
        detection.platform = platform;
        if platform != Platform::Linux {
            detection.wsl_distro = wsl_distro;
        }
        detection
    }

    fn has_wsl_interop(&self) -> bool {
        fs::read_dir(self.path("proc/sys/fs/binfmt_misc"))
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("WSLInterop"))
            })
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tree(files: &[(&str, &str)], dirs: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = root.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        for d in dirs {
            fs::create_dir_all(root.path().join(d)).unwrap();
        }
        root
    }

    fn detect(root: &Path) -> Detection {
        PlatformProbe::new(root).detect()
    }

    const OSRELEASE: &str = "proc/sys/kernel/osrelease";

    #[test]
    fn plain_linux() {
        let root = tree(&[(OSRELEASE, "6.1.0-26-amd64\n")], &[]);
        let d = detect(root.path());
        assert_eq!(d.platform, Platform::Linux);
        assert_eq!(d.kernel_release.as_deref(), Some("6.1.0-26-amd64"));
        assert_eq!(d.wsl_distro, None);
        assert_eq!(d.container, None);
    }

    #[test]
    fn wsl2_stock_kernel() {
        let root = tree(
            &[
                (OSRELEASE, "5.15.153.1-microsoft-standard-WSL2\n"),
                ("proc/sys/fs/binfmt_misc/WSLInterop", "enabled\n"),
            ],
            &["run/WSL"],
        );
        let d = PlatformProbe::new(root.path())
            .env("WSL_DISTRO_NAME", "Debian")
            .detect();
        assert_eq!(d.platform, Platform::Wsl2);
        assert_eq!(d.wsl_distro.as_deref(), Some("Debian"));
    }

    #[test]
    fn wsl2_older_kernel_naming() {
        let root = tree(&[(OSRELEASE, "4.19.104-microsoft-standard\n")], &[]);
        assert_eq!(detect(root.path()).platform, Platform::Wsl2);
    }

    #[test]
    fn wsl2_custom_kernel_by_interop_entry() {
        // Newer WSL registers `WSLInterop-late` instead of `WSLInterop`.
        let root = tree(
            &[
                (OSRELEASE, "6.6.36-custom\n"),
                ("proc/sys/fs/binfmt_misc/WSLInterop-late", "enabled\n"),
            ],
            &[],
        );
        assert_eq!(detect(root.path()).platform, Platform::Wsl2);
    }

    #[test]
    fn wsl2_custom_kernel_by_run_wsl() {
        let root = tree(&[(OSRELEASE, "6.6.36-custom\n")], &["run/WSL"]);
        assert_eq!(detect(root.path()).platform, Platform::Wsl2);
    }

    #[test]
    fn wsl2_custom_kernel_by_distro_env() {
        let root = tree(&[(OSRELEASE, "6.6.36-custom\n")], &[]);
        let d = PlatformProbe::new(root.path())
            .env("WSL_DISTRO_NAME", "Ubuntu-24.04")
            .detect();
        assert_eq!(d.platform, Platform::Wsl2);
        assert_eq!(d.wsl_distro.as_deref(), Some("Ubuntu-24.04"));
    }

    #[test]
    fn wsl1() {
        let root = tree(
            &[
                (OSRELEASE, "4.4.0-19041-Microsoft\n"),
                ("proc/sys/fs/binfmt_misc/WSLInterop", "enabled\n"),
            ],
            &[],
        );
        let d = PlatformProbe::new(root.path())
            .env("WSL_DISTRO_NAME", "Ubuntu")
            .detect();
        assert_eq!(d.platform, Platform::Wsl1);
        assert_eq!(d.wsl_distro.as_deref(), Some("Ubuntu"));
    }

    #[test]
    fn docker_container_on_wsl_kernel_is_linux() {
        let root = tree(
            &[
                (OSRELEASE, "5.15.153.1-microsoft-standard-WSL2\n"),
                (".dockerenv", ""),
            ],
            &[],
        );
        let d = PlatformProbe::new(root.path())
            .env("WSL_DISTRO_NAME", "docker-desktop")
            .detect();
        assert_eq!(d.platform, Platform::Linux);
        assert_eq!(d.container.as_deref(), Some("docker"));
        assert_eq!(d.wsl_distro, None);
    }

    #[test]
    fn podman_container_on_wsl_kernel_is_linux() {
        let root = tree(
            &[
                (OSRELEASE, "5.15.153.1-microsoft-standard-WSL2\n"),
                ("run/.containerenv", "engine=\"podman-4.3.1\"\n"),
            ],
            &[],
        );
        let d = detect(root.path());
        assert_eq!(d.platform, Platform::Linux);
        assert_eq!(d.container.as_deref(), Some("podman"));
    }

    #[test]
    fn empty_distro_variable_is_ignored() {
        let root = tree(&[(OSRELEASE, "6.1.0-26-amd64\n")], &[]);
        let d = PlatformProbe::new(root.path())
            .env("WSL_DISTRO_NAME", "")
            .detect();
        assert_eq!(d.platform, Platform::Linux);
    }

    #[test]
    fn unreadable_tree_is_linux_without_release() {
        let root = tempfile::tempdir().unwrap();
        let d = detect(root.path());
        assert_eq!(d.platform, Platform::Linux);
        assert_eq!(d.kernel_release, None);
    }

    #[test]
    fn host_detection_matches_this_machine() {
        if cfg!(target_os = "linux") {
            let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
            let d = PlatformProbe::host().detect();
            assert_eq!(d.kernel_release.as_deref(), Some(release.trim()));
            assert_eq!(Platform::detect(), d.platform);
        }
    }
}
