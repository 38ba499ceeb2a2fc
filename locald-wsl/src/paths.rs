//! Windows paths as a WSL distribution sees them, by `wslpath -u`'s rules.

use std::path::{Path, PathBuf};

use locald_core::remote::PathMap;

/// Translates this machine's (Windows) paths into the distribution's, as `wslpath -u`
/// does: a drive path lands under the automount root, a path into the distribution's
/// own `\\wsl$` share is its own path, and everything else is refused with the reason.
///
/// | Windows | in the distribution |
/// |---|---|
/// | `C:\Foo\` | `/mnt/c/Foo/` |
/// | `C:/x`, `c:\x` | `/mnt/c/x` |
/// | `\\?\C:\x` | `/mnt/c/x` |
/// | `\\wsl$\locald\home\ada`, `\\wsl.localhost\locald\home\ada` | `/home/ada` |
/// | `\\wsl$\Ubuntu\home` | error: another distribution's files |
/// | `C:foo` | error: drive-relative |
/// | `\\server\share\x` | error: network shares are not mounted |
///
/// ```
/// use locald_wsl::WslPaths;
///
/// let paths = WslPaths::new("locald");
/// assert_eq!(paths.translate(r"C:\Users\ada\src")?, "/mnt/c/Users/ada/src");
/// assert_eq!(paths.translate(r"\\wsl$\locald\root")?, "/root");
/// let custom = WslPaths::new("locald").automount_root("/");
/// assert_eq!(custom.translate(r"D:\data")?, "/d/data");
/// assert!(paths.translate(r"relative\dir").is_err());
/// # Ok::<(), locald_wsl::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct WslPaths {
    distro: String,
    root: String,
}

impl WslPaths {
    /// Paths as the distribution `distro` sees them, drives under `/mnt/` (WSL's
    /// default `[automount] root`).
    pub fn new(distro: impl Into<String>) -> WslPaths {
        WslPaths {
            distro: distro.into(),
            root: "/mnt/".into(),
        }
    }

    /// The distribution's `[automount] root` from its `/etc/wsl.conf` (default
    /// `/mnt/`).
    pub fn automount_root(mut self, root: impl Into<String>) -> WslPaths {
        let mut root = root.into();
        if !root.ends_with('/') {
            root.push('/');
        }
        self.root = root;
        self
    }

    /// The distribution's name for the Windows path `windows`.
    pub fn translate(&self, windows: &str) -> crate::Result<String> {
        let reject = |reason: String| crate::Error::Invalid {
            what: "windows path",
            value: windows.to_owned(),
            reason,
        };
        // `\\?\C:\x` and `\\?\UNC\server\share` are the long-path spellings.
        let path = match windows.strip_prefix(r"\\?\") {
            Some(rest) => match rest.strip_prefix(r"UNC\") {
                Some(unc) => format!(r"\\{unc}"),
                None => rest.to_owned(),
            },
            None => windows.to_owned(),
        };
        if let Some(unc) = path.strip_prefix(r"\\").or_else(|| path.strip_prefix("//")) {
            let mut parts = unc.splitn(3, ['\\', '/']);
            let server = parts.next().unwrap_or("");
            let share = parts.next().unwrap_or("");
            let rest = parts.next().unwrap_or("");
            if !server.eq_ignore_ascii_case("wsl$") && !server.eq_ignore_ascii_case("wsl.localhost")
            {
                return Err(reject(format!(
                    "network shares are not mounted in WSL distribution {}; copy the files to a local drive",
                    self.distro
                )));
            }
            if !share.eq_ignore_ascii_case(&self.distro) {
                return Err(reject(format!(
                    "the path is in WSL distribution {share:?}, which locald's distribution {:?} cannot see",
                    self.distro
                )));
            }
            return Ok(format!("/{}", rest.replace('\\', "/")));
        }
        let bytes = path.as_bytes();
        if bytes.len() < 2 || !bytes[0].is_ascii_alphabetic() || bytes[1] != b':' {
            return Err(reject(
                "expected an absolute path with a drive letter, such as C:\\Users".into(),
            ));
        }
        let rest = &path[2..];
        if !rest.is_empty() && !rest.starts_with(['\\', '/']) {
            return Err(reject(
                "a drive-relative path (C:dir) has no fixed location; give C:\\dir".into(),
            ));
        }
        let drive = (bytes[0] as char).to_ascii_lowercase();
        Ok(format!("{}{drive}{}", self.root, rest.replace('\\', "/")))
    }
}

impl PathMap for WslPaths {
    fn to_daemon(&self, path: &Path) -> locald_core::Result<PathBuf> {
        let text = path.to_str().ok_or_else(|| {
            locald_core::Error::invalid(
                "windows path",
                path.display().to_string(),
                "not valid Unicode",
            )
        })?;
        Ok(PathBuf::from(self.translate(text)?))
    }
}

/// Reads `[automount] root` from a `/etc/wsl.conf` text (`None` when unset).
pub fn automount_root(wsl_conf: &str) -> Option<String> {
    ini_value(wsl_conf, "automount", "root")
}

/// One `key` of one `[section]` of a WSL configuration file (`/etc/wsl.conf`,
/// `%USERPROFILE%\.wslconfig`); sections and keys match without case, as WSL's own
/// reader does.
///
/// These files are INI; locald reads three keys of them, so this takes sections, `#`
/// and `;` comments, spaces around `=` and quoted values, and nothing more (an INI
/// crate would bring more than it saves here).
pub fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut inside = false;
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with(['#', ';']) || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim().eq_ignore_ascii_case(section);
            continue;
        }
        if !inside {
            continue;
        }
        if let Some((k, value)) = line.split_once('=') {
            if k.trim().eq_ignore_ascii_case(key) {
                let value = value.split(['#', ';']).next().unwrap_or("").trim();
                let value = value.trim_matches('"').trim();
                // The last one wins, as in WSL.
                found = (!value.is_empty()).then(|| value.to_owned());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wslpath_table() {
        let p = WslPaths::new("locald");
        let ok = [
            (r"C:\Foo\", "/mnt/c/Foo/"),
            (r"C:\Foo", "/mnt/c/Foo"),
            ("C:/x", "/mnt/c/x"),
            (r"c:\x", "/mnt/c/x"),
            (r"E:\a b\c", "/mnt/e/a b/c"),
            ("C:", "/mnt/c"),
            (r"C:\", "/mnt/c/"),
            (r"\\?\C:\x", "/mnt/c/x"),
            (r"\\wsl$\locald\home\ada", "/home/ada"),
            (r"\\wsl.localhost\locald\etc\wsl.conf", "/etc/wsl.conf"),
            (r"\\wsl.localhost\LOCALD\root", "/root"),
            (r"\\?\UNC\wsl.localhost\locald\tmp", "/tmp"),
            (r"\\wsl$\locald", "/"),
        ];
        for (windows, linux) in ok {
            assert_eq!(p.translate(windows).unwrap(), linux, "{windows}");
        }
        let bad = [
            (r"\\wsl$\Ubuntu\home", "WSL distribution \"Ubuntu\""),
            (r"\\wsl.localhost\Debian\etc", "WSL distribution \"Debian\""),
            ("C:foo", "drive-relative"),
            (r"relative\dir", "drive letter"),
            ("/unix", "drive letter"),
            ("", "drive letter"),
            (r"\\server\share\x", "network shares"),
        ];
        for (windows, why) in bad {
            let err = p.translate(windows).unwrap_err().to_string();
            assert!(err.contains(why), "{windows}: {err}");
        }
    }

    #[test]
    fn a_custom_automount_root() {
        for root in ["/", "/windir", "/windir/"] {
            let p = WslPaths::new("locald").automount_root(root);
            let want = format!("{}/c/x", root.trim_end_matches('/'));
            assert_eq!(p.translate(r"C:\x").unwrap(), want);
        }
        let conf = "# wsl.conf\n[boot]\nsystemd=true\n[automount]\nenabled = true\nroot = \"/win/\" # drives\n[network]\nroot=/nope\n";
        assert_eq!(automount_root(conf).as_deref(), Some("/win/"));
        assert_eq!(automount_root("[boot]\nsystemd=true\n"), None);
        assert_eq!(
            automount_root("[Automount]\nRoot=/x\nroot=/y\n").as_deref(),
            Some("/y")
        );
    }

    #[test]
    fn as_a_path_map() {
        let err = WslPaths::new("locald")
            .to_daemon(Path::new("relative"))
            .unwrap_err();
        assert!(
            matches!(err, locald_core::Error::InvalidInput { .. }),
            "{err}"
        );
        assert_eq!(
            WslPaths::new("locald")
                .to_daemon(Path::new("D:/src"))
                .unwrap(),
            Path::new("/mnt/d/src")
        );
    }
}
