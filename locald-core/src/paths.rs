//! Where locald keeps its data, following the XDG base directory conventions.

use std::{ffi::OsString, path::PathBuf};

/// Finds locald's directories from an environment, replaceable for tests.
///
/// ```
/// use locald_core::Paths;
///
/// let paths = Paths::from_env(|key| match key {
///     "HOME" => Some("/home/ada".into()),
///     _ => None,
/// });
/// assert_eq!(paths.data_home(), std::path::Path::new("/home/ada/.local/share/locald"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    data_home: PathBuf,
    runtime_dir: Option<PathBuf>,
}

impl Paths {
    /// The directories for the running process's environment.
    pub fn from_process_env() -> Paths {
        Paths::from_env(|key| std::env::var_os(key))
    }

    /// The directories for an environment given as a lookup function.
    ///
    /// The data home is `$LOCALD_HOME`, else `$XDG_DATA_HOME/locald`, else
    /// `$HOME/.local/share/locald` (on Windows `%LOCALAPPDATA%\locald`). Relative values
    /// are ignored, as the XDG specification asks.
    pub fn from_env(var: impl Fn(&str) -> Option<OsString>) -> Paths {
        let abs = |key: &str| {
            var(key)
                .map(PathBuf::from)
                .filter(|p| p.is_absolute() || (cfg!(windows) && !p.as_os_str().is_empty()))
        };
        let data_home = abs("LOCALD_HOME")
            .or_else(|| abs("XDG_DATA_HOME").map(|d| d.join("locald")))
            .or_else(|| {
                abs("LOCALAPPDATA")
                    .filter(|_| cfg!(windows))
                    .map(|d| d.join("locald"))
            })
            .or_else(|| abs("HOME").map(|h| h.join(".local/share/locald")))
            .unwrap_or_else(|| PathBuf::from("/var/lib/locald"));
        let runtime_dir = abs("XDG_RUNTIME_DIR").map(|d| d.join("locald"));
        Paths {
            data_home,
            runtime_dir,
        }
    }

    /// Where locald keeps images, containers, volumes and tools.
    pub fn data_home(&self) -> &std::path::Path {
        &self.data_home
    }

    /// Downloaded helper tools (the pinned `limactl`, ...).
    pub fn tools_dir(&self) -> PathBuf {
        self.data_home.join("tools")
    }

    /// Where sockets and pid files live: `$XDG_RUNTIME_DIR/locald`, else
    /// `$LOCALD_HOME/run`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.runtime_dir
            .clone()
            .unwrap_or_else(|| self.data_home.join("run"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn paths(vars: &[(&str, &str)]) -> Paths {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        Paths::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn precedence() {
        let all = [
            ("LOCALD_HOME", "/opt/locald"),
            ("XDG_DATA_HOME", "/xdg"),
            ("HOME", "/home/u"),
        ];
        assert_eq!(paths(&all).data_home(), PathBuf::from("/opt/locald"));
        assert_eq!(paths(&all[1..]).data_home(), PathBuf::from("/xdg/locald"));
        assert_eq!(
            paths(&all[2..]).data_home(),
            PathBuf::from("/home/u/.local/share/locald")
        );
        assert_eq!(
            paths(&all[2..]).tools_dir(),
            PathBuf::from("/home/u/.local/share/locald/tools")
        );
    }

    #[test]
    fn relative_values_are_ignored() {
        let p = paths(&[
            ("LOCALD_HOME", "rel"),
            ("XDG_DATA_HOME", ""),
            ("HOME", "/h"),
        ]);
        assert_eq!(p.data_home(), PathBuf::from("/h/.local/share/locald"));
    }

    #[test]
    fn runtime_dir() {
        let p = paths(&[("HOME", "/h"), ("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(p.runtime_dir(), PathBuf::from("/run/user/1000/locald"));
        let p = paths(&[("HOME", "/h")]);
        assert_eq!(p.runtime_dir(), PathBuf::from("/h/.local/share/locald/run"));
    }
}
