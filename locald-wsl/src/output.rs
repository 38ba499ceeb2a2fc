//! Reading what `wsl.exe` prints.
//!
//! The formats come from WSL's sources (`src/windows/common/WslClient.cpp` and
//! `localization/strings/en-US/Resources.resw` in microsoft/WSL):
//!
//! - Output is UTF-16LE without a byte order mark, unless `WSL_UTF8=1` is set and the
//!   `wsl.exe` is new enough to honour it (older inbox builds ignore it); both are read.
//! - Lines end in `\r\n`; some builds print `\r\r\n`.
//! - `--list --verbose` prints a header (`  NAME  STATE  VERSION`, localized on older
//!   builds) and one row per distribution, `*` in the first column marking the default:
//!   `* Ubuntu    Running         2`. With no distribution it fails with
//!   `WSL_E_DEFAULT_DISTRO_NOT_FOUND`.
//! - Errors go to stdout, as a message then `Error code: Wsl/Service/WSL_E_…`, and the
//!   exit status is -1 (0xFFFFFFFF).

use std::fmt;

use serde::Serialize;

use crate::{Error, Result};

/// What one run of `wsl.exe` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOutput {
    /// The exit code (`-1` is how WSL's 0xFFFFFFFF reads as an `i32`).
    pub code: i32,
    /// Stdout, undecoded.
    pub stdout: Vec<u8>,
    /// Stderr, undecoded.
    pub stderr: Vec<u8>,
}

impl RawOutput {
    /// True when `wsl.exe` exited with 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Stdout as text.
    pub fn stdout_text(&self) -> String {
        decode(&self.stdout)
    }

    /// Stdout and stderr as one text, for error messages.
    pub fn all_text(&self) -> String {
        let mut text = decode(&self.stdout);
        let err = decode(&self.stderr);
        if !err.trim().is_empty() {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&err);
        }
        text
    }
}

/// Decodes `wsl.exe` output: UTF-16LE (with or without a byte order mark) or UTF-8.
///
/// ```
/// let utf16: Vec<u8> = "NAME\r\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
/// assert_eq!(locald_wsl::output::decode(&utf16), "NAME\r\n");
/// assert_eq!(locald_wsl::output::decode(b"NAME\r\n"), "NAME\r\n");
/// ```
pub fn decode(bytes: &[u8]) -> String {
    let (body, utf16) = match bytes {
        [0xFF, 0xFE, rest @ ..] => (rest, true),
        [0xEF, 0xBB, 0xBF, rest @ ..] => (rest, false),
        _ => (bytes, looks_utf16le(bytes)),
    };
    if utf16 {
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        String::from_utf8_lossy(body).into_owned()
    }
}

/// UTF-16LE text of Latin script has a zero in most odd positions; UTF-8 has none.
fn looks_utf16le(bytes: &[u8]) -> bool {
    if bytes.len() < 2 || bytes.len() % 2 != 0 {
        return false;
    }
    let pairs = bytes.len() / 2;
    let zeros = bytes.iter().skip(1).step_by(2).filter(|&&b| b == 0).count();
    zeros * 2 >= pairs
}

/// The lines of decoded output, without their `\r\n` or `\r\r\n` ends.
pub fn lines(text: &str) -> impl DoubleEndedIterator<Item = &str> {
    text.split('\n').map(|l| l.trim_end_matches('\r'))
}

/// A distribution's state, as `--list --verbose` names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum State {
    /// Running.
    Running,
    /// Stopped.
    Stopped,
    /// Being imported or installed.
    Installing,
    /// Being converted between WSL 1 and 2.
    Converting,
    /// Being unregistered.
    Uninstalling,
    /// Being exported.
    Exporting,
    /// A state this locald does not know (a localized one, say), as printed.
    Other(String),
}

impl State {
    fn parse(text: &str) -> State {
        match text {
            "Running" => State::Running,
            "Stopped" => State::Stopped,
            "Installing" => State::Installing,
            "Converting" => State::Converting,
            "Uninstalling" => State::Uninstalling,
            "Exporting" => State::Exporting,
            other => State::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Running => "running",
            State::Stopped => "stopped",
            State::Installing => "installing",
            State::Converting => "converting",
            State::Uninstalling => "uninstalling",
            State::Exporting => "exporting",
            State::Other(s) => s,
        })
    }
}

/// One row of `wsl --list --verbose`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Distro {
    /// The distribution's name.
    pub name: String,
    /// Its state.
    pub state: State,
    /// 1 or 2.
    pub version: u8,
    /// True for the default distribution (`*`).
    pub default: bool,
}

/// Reads `wsl --list --verbose`.
///
/// The first non-empty line is the header, whatever its language. Each row is
/// `[*] NAME STATE VERSION`; distribution names have no spaces, and the state is
/// whatever stands between the name and the version (a localized state may have
/// spaces).
///
/// ```
/// let out = "  NAME      STATE           VERSION\r\n* Ubuntu    Running         2\r\n  locald    Stopped         2\r\n";
/// let distros = locald_wsl::output::parse_list(out)?;
/// assert_eq!(distros.len(), 2);
/// assert!(distros[0].default);
/// assert_eq!(distros[1].name, "locald");
/// # Ok::<(), locald_wsl::Error>(())
/// ```
pub fn parse_list(text: &str) -> Result<Vec<Distro>> {
    let bad = |line: &str, why: &str| Error::Wsl {
        command: "--list --verbose".into(),
        message: format!("unreadable line {line:?}: {why}"),
    };
    let mut rows = lines(text).filter(|l| !l.trim().is_empty());
    let _header = rows.next();
    rows.map(|line| {
        let trimmed = line.trim_start();
        let (default, rest) = match trimmed.strip_prefix('*') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.len() < 3 {
            return Err(bad(line, "expected NAME STATE VERSION"));
        }
        let version = words[words.len() - 1]
            .parse()
            .map_err(|_| bad(line, "the version is not a number"))?;
        Ok(Distro {
            name: words[0].to_owned(),
            state: State::parse(&words[1..words.len() - 1].join(" ")),
            version,
            default,
        })
    })
    .collect()
}

/// What `wsl --status` says. Its lines are localized `Key: value` pairs; the first
/// two are the default distribution and the default version when a distribution is
/// installed (`Default Distribution: Ubuntu`, `Default Version: 2`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Status {
    /// The default distribution, if any.
    pub default_distro: Option<String>,
    /// The version new distributions get (1 or 2).
    pub default_version: Option<u8>,
}

/// Reads `wsl --status`.
///
/// English keys are matched by name; otherwise the lines are taken by position
/// (distribution first, version second, as WSL prints them).
pub fn parse_status(text: &str) -> Status {
    let pairs: Vec<(&str, &str)> = lines(text)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let by_key = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
    let distro = by_key("Default Distribution");
    let version = by_key("Default Version");
    let (distro, version) = match (distro, version) {
        (None, None) => {
            // Localized: the version line is the one whose value is 1 or 2.
            let version = pairs.iter().find(|(_, v)| matches!(*v, "1" | "2"));
            let distro = pairs
                .iter()
                .take_while(|p| Some(*p) != version)
                .last()
                .map(|(_, v)| *v);
            (distro, version.map(|(_, v)| *v))
        }
        found => found,
    };
    Status {
        default_distro: distro.filter(|d| !d.is_empty()).map(str::to_owned),
        default_version: version.and_then(|v| v.parse().ok()),
    }
}

/// What `wsl --version` says (WSL from the Microsoft Store only; the inbox `wsl.exe`
/// of older Windows has no `--version` and prints its usage instead).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Version {
    /// `2.3.26.0`.
    pub wsl: Option<String>,
    /// The kernel, `5.15.167.4-1`.
    pub kernel: Option<String>,
    /// Windows, `10.0.22631.4460`.
    pub windows: Option<String>,
}

/// Reads `wsl --version`: seven localized `Key: value` lines in a fixed order (WSL,
/// kernel, WSLg, MSRDC, Direct3D, DXCore, Windows).
pub fn parse_version(text: &str) -> Version {
    let values: Vec<&str> = lines(text)
        .filter_map(|l| l.split_once(':'))
        .map(|(_, v)| v.trim())
        .collect();
    let at = |i: usize| {
        values
            .get(i)
            .filter(|v| v.starts_with(|c: char| c.is_ascii_digit()))
            .map(|v| (*v).to_owned())
    };
    Version {
        wsl: at(0),
        kernel: at(1),
        windows: at(6),
    }
}

/// The `WSL_E_…` (or `HCS_E_…`) code of an error message's `Error code:` line.
pub fn error_code(text: &str) -> Option<&str> {
    lines(text)
        .filter_map(|l| l.rsplit_once(": "))
        .map(|(_, code)| code.trim())
        .filter(|code| code.starts_with("Wsl/") || code.starts_with("0x"))
        .last()
        .map(|code| code.rsplit('/').next().unwrap_or(code))
}

/// Turns a failed run into the error it means.
///
/// Known failures become typed errors with their fix: WSL missing
/// (`WSL_E_WSL_OPTIONAL_COMPONENT_REQUIRED`, the inbox stub's "not installed" text),
/// virtualization off (`HCS_E_HYPERV_NOT_INSTALLED`,
/// `WSL_E_VIRTUAL_MACHINE_PLATFORM_REQUIRED`, 0x80370102) and an unknown distribution
/// (`WSL_E_DISTRO_NOT_FOUND`, or its English message from builds without codes).
pub fn classify(command: &str, distro: Option<&str>, out: &RawOutput) -> Error {
    let text = out.all_text();
    let code = error_code(&text).unwrap_or("");
    let lower = text.to_ascii_lowercase();
    let detail = text.trim().to_owned();
    if code == "WSL_E_WSL_OPTIONAL_COMPONENT_REQUIRED"
        || code == "WSL_E_NOT_INSTALLED"
        || lower.contains("subsystem for linux is not installed")
        || lower.contains("optional component is not enabled")
    {
        return Error::NotInstalled { detail };
    }
    if code == "HCS_E_HYPERV_NOT_INSTALLED"
        || code == "WSL_E_VIRTUAL_MACHINE_PLATFORM_REQUIRED"
        || lower.contains("0x80370102")
        || lower.contains("virtualization is not enabled")
    {
        return Error::VirtualizationDisabled { detail };
    }
    if code == "WSL_E_DISTRO_NOT_FOUND"
        || lower.contains("there is no distribution with the supplied name")
    {
        return Error::DistroNotFound {
            distro: distro.unwrap_or("").to_owned(),
        };
    }
    let message = if detail.is_empty() {
        format!("it exited with {} and said nothing", out.code)
    } else {
        lines(&detail)
            .filter(|l| !l.trim().is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    };
    Error::Wsl {
        command: command.to_owned(),
        message,
    }
}
