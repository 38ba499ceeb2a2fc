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
        .rfind(|code| code.starts_with("Wsl/") || code.starts_with("0x"))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str) -> Vec<u8> {
        text.encode_utf16().flat_map(u16::to_le_bytes).collect()
    }

    const LIST: &str = "  NAME            STATE           VERSION\r\n* Ubuntu-22.04    Running         2\r\n  locald          Stopped         2\r\n  Legacy          Stopped         1\r\n";

    #[test]
    fn list_in_every_encoding_and_line_end() {
        let forms = [
            LIST.as_bytes().to_vec(),
            utf16(LIST),
            [vec![0xFF, 0xFE], utf16(LIST)].concat(),
            utf16(&LIST.replace("\r\n", "\r\r\n")),
            LIST.replace("\r\n", "\n").into_bytes(),
        ];
        for bytes in forms {
            let distros = parse_list(&decode(&bytes)).unwrap();
            assert_eq!(distros.len(), 3, "{bytes:?}");
            assert_eq!(distros[0].name, "Ubuntu-22.04");
            assert!(distros[0].default);
            assert_eq!(distros[0].state, State::Running);
            assert_eq!(distros[1].name, "locald");
            assert!(!distros[1].default);
            assert_eq!(distros[1].state, State::Stopped);
            assert_eq!(distros[2].version, 1);
        }
    }

    #[test]
    fn list_with_localized_header_and_state() {
        let text = "  NAME      ZUSTAND           VERSION\r\n* locald    Wird ausgeführt   2\r\n";
        let distros = parse_list(&decode(&utf16(text))).unwrap();
        assert_eq!(distros[0].state, State::Other("Wird ausgeführt".into()));
        assert_eq!(distros[0].version, 2);
        let err = parse_list("NAME STATE VERSION\r\n* locald Running two\r\n").unwrap_err();
        assert!(err.to_string().contains("not a number"), "{err}");
    }

    #[test]
    fn status_english_and_localized() {
        let s = parse_status("Default Distribution: locald\r\nDefault Version: 2\r\n");
        assert_eq!(s.default_distro.as_deref(), Some("locald"));
        assert_eq!(s.default_version, Some(2));
        let s = parse_status("Standarddistribution: Ubuntu\r\nStandardversion: 2\r\n");
        assert_eq!(s.default_distro.as_deref(), Some("Ubuntu"));
        assert_eq!(s.default_version, Some(2));
        let s = parse_status("Default Version: 2\r\n");
        assert_eq!(s.default_distro, None);
    }

    #[test]
    fn version_and_its_absence() {
        let v = parse_version("WSL-Version: 2.3.26.0\r\nKernelversion: 5.15.167.4-1\r\nWSLg-Version: 1.0.65\r\nMSRDC-Version: 1.2.5620\r\nDirect3D-Version: 1.611.1\r\nDXCore-Version: 10.0.26100.1\r\nWindows-Version: 10.0.22631.4460\r\n");
        assert_eq!(v.wsl.as_deref(), Some("2.3.26.0"));
        assert_eq!(v.kernel.as_deref(), Some("5.15.167.4-1"));
        assert_eq!(v.windows.as_deref(), Some("10.0.22631.4460"));
        let v = parse_version("Invalid command line argument: --version\r\n");
        assert_eq!(v.wsl, None);
    }

    fn failed(text: &str) -> RawOutput {
        RawOutput {
            code: -1,
            stdout: utf16(text),
            stderr: Vec::new(),
        }
    }

    #[test]
    fn errors_are_typed_with_their_fix() {
        let e = classify("--list --verbose", None, &failed("This application requires the Windows Subsystem for Linux Optional Component.\r\nError code: Wsl/WSL_E_WSL_OPTIONAL_COMPONENT_REQUIRED\r\n"));
        assert!(matches!(e, Error::NotInstalled { .. }), "{e}");
        assert!(e
            .to_string()
            .contains("wsl.exe --install --no-distribution"));
        // The inbox stub of older Windows, without an error code.
        let e = classify("--status", None, &failed("Windows Subsystem for Linux is not installed. You can install by running 'wsl.exe --install'.\r\n"));
        assert!(matches!(e, Error::NotInstalled { .. }), "{e}");
        let e = classify("-d locald", Some("locald"), &failed("WSL2 is unable to start since virtualization is not enabled on this machine.\r\nError code: Wsl/Service/CreateInstance/CreateVm/HCS/HCS_E_HYPERV_NOT_INSTALLED\r\n"));
        assert!(matches!(e, Error::VirtualizationDisabled { .. }), "{e}");
        let e = classify(
            "--import",
            Some("locald"),
            &failed("WslRegisterDistribution failed with error: 0x80370102\r\n"),
        );
        assert!(matches!(e, Error::VirtualizationDisabled { .. }), "{e}");
        let e = classify("--terminate locald", Some("locald"), &failed("There is no distribution with the supplied name.\r\nError code: Wsl/Service/WSL_E_DISTRO_NOT_FOUND\r\n"));
        assert!(
            matches!(&e, Error::DistroNotFound { distro } if distro == "locald"),
            "{e}"
        );
        assert!(e.to_string().contains("locald wsl install"));
        let e = classify(
            "--import x",
            None,
            &failed("Something else.\r\nError code: Wsl/Service/E_FAIL\r\n"),
        );
        assert_eq!(
            e.to_string(),
            "`wsl.exe --import x` failed: Something else.; Error code: Wsl/Service/E_FAIL"
        );
        let silent = RawOutput {
            code: -1,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        assert!(classify("--status", None, &silent)
            .to_string()
            .contains("said nothing"));
    }
}
