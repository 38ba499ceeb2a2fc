//! locald's Windows backend.
//!
//! Inside a WSL2 distribution locald is a Linux program and uses the native backend;
//! [`Platform::detect`](locald_core::Platform::detect) tells the two apart. Run from
//! Windows, locald proxies into a WSL2 distribution, as the `docker` CLI does.
//!
//! Status: path translation is here; driving `wsl.exe` is not built yet, so
//! [`WslRuntime`] returns [`Error::Unsupported`](locald_core::Error::Unsupported) for
//! every call until then.

use async_trait::async_trait;
use locald_core::{Capability, Command, Error, Platform, Process, Result, Runtime, RuntimeInfo};

/// Runs Linux work in a WSL2 distribution, from Windows.
#[derive(Debug, Clone, Default)]
pub struct WslRuntime {
    _private: (),
}

impl WslRuntime {
    /// A runtime for the default WSL2 distribution.
    pub fn new() -> Self {
        WslRuntime::default()
    }
}

#[async_trait]
impl Runtime for WslRuntime {
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo::new("wsl", Platform::Windows, [])
    }

    async fn spawn(&self, command: Command) -> Result<Process> {
        let _ = command;
        Err(self.info().unsupported(Capability::Commands))
    }
}

/// Translates a Windows path to where WSL mounts it: `C:\Users\ada` is
/// `/mnt/c/Users/ada`, as `wslpath -u` prints with the default automount root.
///
/// ```
/// assert_eq!(locald_wsl::to_wsl_path(r"C:\Users\ada\src")?, "/mnt/c/Users/ada/src");
/// assert_eq!(locald_wsl::to_wsl_path("d:/data")?, "/mnt/d/data");
/// assert!(locald_wsl::to_wsl_path(r"relative\dir").is_err());
/// # Ok::<(), locald_core::Error>(())
/// ```
pub fn to_wsl_path(windows: &str) -> Result<String> {
    let reject = |reason: &str| Error::invalid("windows path", windows, reason);
    if let Some(rest) = windows
        .strip_prefix(r"\\wsl$\")
        .or_else(|| windows.strip_prefix(r"\\wsl.localhost\"))
    {
        // \\wsl$\Distro\home\ada is /home/ada inside Distro.
        let (_distro, path) = rest.split_once('\\').unwrap_or((rest, ""));
        return Ok(format!("/{}", path.replace('\\', "/")));
    }
    let bytes = windows.as_bytes();
    if bytes.len() < 2 || !bytes[0].is_ascii_alphabetic() || bytes[1] != b':' {
        return Err(reject(
            "expected an absolute path with a drive letter, such as C:\\Users",
        ));
    }
    let rest = &windows[2..];
    if !rest.is_empty() && !rest.starts_with(['\\', '/']) {
        return Err(reject(
            "a drive-relative path (C:dir) has no fixed location",
        ));
    }
    let drive = (bytes[0] as char).to_ascii_lowercase();
    let rest = rest.replace('\\', "/");
    let rest = rest.trim_end_matches('/');
    Ok(format!("/mnt/{drive}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(to_wsl_path("C:").unwrap(), "/mnt/c");
        assert_eq!(to_wsl_path(r"C:\").unwrap(), "/mnt/c");
        assert_eq!(to_wsl_path(r"E:\a b\c\").unwrap(), "/mnt/e/a b/c");
        assert_eq!(to_wsl_path(r"\\wsl$\Ubuntu\home\ada").unwrap(), "/home/ada");
        assert_eq!(to_wsl_path(r"\\wsl.localhost\Debian\etc").unwrap(), "/etc");
        assert!(to_wsl_path("C:dir").is_err());
        assert!(to_wsl_path("/unix").is_err());
        assert!(to_wsl_path("").is_err());
    }

    #[tokio::test]
    async fn says_what_it_cannot_do_yet() {
        let err = WslRuntime::new()
            .run_command(Command::new("true"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "running commands is not supported by the wsl runtime on Windows"
        );
    }
}
