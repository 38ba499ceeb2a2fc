//! A recording fake of `wsl.exe` that replays WSL's output formats.
//!
//! `wsl.exe` cannot run on Linux, so the backend is tested against this fake. What it
//! prints is shaped as WSL prints it, from WSL's sources (`WslClient.cpp` for the
//! `--list --verbose` table, `Resources.resw` for the messages): UTF-16LE without a
//! byte order mark by default (what a `wsl.exe` that ignores `WSL_UTF8` prints), or
//! UTF-8 ([`FakeWsl::utf8`]); `\r\n` line ends, or `\r\r\n` ([`FakeWsl::double_cr`]);
//! errors on stdout as a message and an `Error code: Wsl/…` line, with exit status -1.
//!
//! `--exec` is real: the program runs on this machine (a name can be mapped to a path
//! with [`FakeWsl::program`], e.g. `locald` to the freshly built binary), in `--cd`'s
//! directory, so a daemon bridge through the fake is a real daemon. `--import` checks
//! its arguments and records the distribution but unpacks nothing; no Linux kernel
//! boots.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;

use crate::{output::RawOutput, wsl::Wsl, Result};

/// A failure the fake can play, as `wsl.exe` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// The WSL optional component is missing.
    NotInstalled,
    /// The Virtual Machine Platform is off.
    VirtualizationDisabled,
    /// Any other message and error code (`WSL_E_…`).
    Other {
        /// The message.
        message: String,
        /// The code, after `Wsl/Service/`.
        code: String,
    },
}

impl Failure {
    fn text(&self) -> String {
        match self {
            Failure::NotInstalled => "This application requires the Windows Subsystem for Linux Optional Component.\nInstall it by running: wsl.exe --install --no-distribution\nThe system may need to be restarted so the changes can take effect.\nError code: Wsl/WSL_E_WSL_OPTIONAL_COMPONENT_REQUIRED\n".into(),
            Failure::VirtualizationDisabled => "WSL2 is unable to start since virtualization is not enabled on this machine.\nPlease ensure the \"Virtual Machine Platform\" optional component is enabled and virtualization is turned on in your computer's firmware settings.\n\nEnable \"Virtual Machine Platform\" by running: wsl.exe --install --no-distribution\n\nFor information please visit https://aka.ms/enablevirtualization\nError code: Wsl/Service/CreateInstance/CreateVm/HCS/HCS_E_HYPERV_NOT_INSTALLED\n".into(),
            Failure::Other { message, code } => format!("{message}\nError code: Wsl/Service/{code}\n"),
        }
    }
}

const DISTRO_NOT_FOUND: &str =
    "There is no distribution with the supplied name.\nError code: Wsl/Service/WSL_E_DISTRO_NOT_FOUND\n";
const NO_DISTROS: &str = "Windows Subsystem for Linux has no installed distributions.\nYou can resolve this by installing a distribution with the instructions below:\n\nUse 'wsl.exe --list --online' to list available distributions\nand 'wsl.exe --install <Distro>' to install.\nError code: Wsl/WSL_E_DEFAULT_DISTRO_NOT_FOUND\n";

/// The fake `wsl.exe`. Clones share their state.
#[derive(Debug, Clone, Default)]
pub struct FakeWsl {
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    distros: BTreeMap<String, FakeDistro>,
    default: Option<String>,
    calls: Vec<Vec<String>>,
    failures: HashMap<String, Failure>,
    always: Option<Failure>,
    programs: HashMap<String, PathBuf>,
    env: Vec<(String, String)>,
    utf8: bool,
    double_cr: bool,
    no_version: bool,
}

#[derive(Debug, Clone)]
struct FakeDistro {
    running: bool,
    version: u8,
}

impl FakeWsl {
    /// WSL 2 with no distribution.
    pub fn new() -> FakeWsl {
        FakeWsl::default()
    }

    /// Adds a registered, stopped distribution of WSL `version`; the first one added
    /// is the default.
    pub fn with_distro(self, name: &str, version: u8) -> FakeWsl {
        {
            let mut state = self.state.lock().unwrap();
            state.distros.insert(
                name.to_owned(),
                FakeDistro {
                    running: false,
                    version,
                },
            );
            state.default.get_or_insert_with(|| name.to_owned());
        }
        self
    }

    /// Prints UTF-8 (a `wsl.exe` that honours `WSL_UTF8=1`) instead of UTF-16LE.
    pub fn utf8(self) -> FakeWsl {
        self.state.lock().unwrap().utf8 = true;
        self
    }

    /// Ends lines with `\r\r\n`, as some builds do.
    pub fn double_cr(self) -> FakeWsl {
        self.state.lock().unwrap().double_cr = true;
        self
    }

    /// An inbox `wsl.exe` without `--version` (it prints its usage and fails).
    pub fn without_version(self) -> FakeWsl {
        self.state.lock().unwrap().no_version = true;
        self
    }

    /// `--exec NAME` runs `path`.
    pub fn program(self, name: &str, path: impl Into<PathBuf>) -> FakeWsl {
        self.state
            .lock()
            .unwrap()
            .programs
            .insert(name.to_owned(), path.into());
        self
    }

    /// `--exec`'d programs get `key=value` in their environment.
    pub fn exec_env(self, key: &str, value: &str) -> FakeWsl {
        self.state
            .lock()
            .unwrap()
            .env
            .push((key.to_owned(), value.to_owned()));
        self
    }

    /// Every call fails with `failure` (WSL not installed, say).
    pub fn always_fail(self, failure: Failure) -> FakeWsl {
        self.state.lock().unwrap().always = Some(failure);
        self
    }

    /// The next call whose first argument is `first` (`--import`, `--list`, …) fails.
    pub fn fail_next(&self, first: &str, failure: Failure) {
        self.state
            .lock()
            .unwrap()
            .failures
            .insert(first.to_owned(), failure);
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Whether `name` is registered, and running.
    pub fn distro(&self, name: &str) -> Option<bool> {
        self.state
            .lock()
            .unwrap()
            .distros
            .get(name)
            .map(|d| d.running)
    }
}

impl State {
    fn encode(&self, text: &str) -> Vec<u8> {
        let end = if self.double_cr { "\r\r\n" } else { "\r\n" };
        let text = text.replace('\n', end);
        if self.utf8 {
            text.into_bytes()
        } else {
            text.encode_utf16().flat_map(u16::to_le_bytes).collect()
        }
    }

    fn ok(&self, text: &str) -> RawOutput {
        RawOutput {
            code: 0,
            stdout: self.encode(text),
            stderr: Vec::new(),
        }
    }

    fn fail(&self, text: &str) -> RawOutput {
        RawOutput {
            code: -1,
            stdout: self.encode(text),
            stderr: Vec::new(),
        }
    }

    fn list(&self) -> RawOutput {
        if self.distros.is_empty() {
            return self.fail(NO_DISTROS);
        }
        // As WslClient.cpp: default first, NAME padded to the longest name + 4,
        // STATE to 16.
        let width = self
            .distros
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(4)
            + 4;
        let mut text = format!("  {:<width$}{:<16}{}\n", "NAME", "STATE", "VERSION");
        let mut names: Vec<&String> = self.distros.keys().collect();
        names.sort_by_key(|n| Some(*n) != self.default.as_ref());
        for name in names {
            let d = &self.distros[name];
            let mark = if Some(name) == self.default.as_ref() {
                "*"
            } else {
                " "
            };
            let state = if d.running { "Running" } else { "Stopped" };
            text.push_str(&format!("{mark} {name:<width$}{state:<16}{}\n", d.version));
        }
        self.ok(&text)
    }

    fn answer(&mut self, args: &[String]) -> RawOutput {
        let first = args.first().map(String::as_str).unwrap_or("");
        if let Some(failure) = self.always.clone() {
            return self.fail(&failure.text());
        }
        if let Some(failure) = self.failures.remove(first) {
            return self.fail(&failure.text());
        }
        let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
        match first {
            "--list" | "-l" => self.list(),
            "--status" => {
                let text = match &self.default {
                    Some(d) => format!("Default Distribution: {d}\nDefault Version: 2\n"),
                    None => "Default Version: 2\n".to_owned(),
                };
                self.ok(&text)
            }
            "--version" | "-v" if self.no_version => {
                self.fail("Invalid command line argument: --version\nPlease use 'wsl.exe --help' to get a list of supported arguments.\n")
            }
            "--version" | "-v" => self.ok("WSL version: 2.3.26.0\nKernel version: 5.15.167.4-1\nWSLg version: 1.0.65\nMSRDC version: 1.2.5620\nDirect3D version: 1.611.1-81528511\nDXCore version: 10.0.26100.1-240331-1435.ge-release\nWindows version: 10.0.22631.4460\n"),
            "--import" => {
                let (name, dir, tarball) = (arg(1), arg(2), arg(3));
                if self.distros.contains_key(name) {
                    return self.fail(&Failure::Other {
                        message: "A distribution with the supplied name already exists. Use --name to choose a different name.".into(),
                        code: "WSL_E_DISTRO_NAME_ALREADY_EXISTS".into(),
                    }.text());
                }
                if !std::path::Path::new(tarball).is_file() {
                    return self.fail(&Failure::Other {
                        message: "The system cannot find the file specified.".into(),
                        code: "ERROR_FILE_NOT_FOUND".into(),
                    }.text());
                }
                if std::fs::create_dir_all(dir).is_err() {
                    return self.fail(&Failure::Other {
                        message: "The system cannot find the path specified.".into(),
                        code: "ERROR_PATH_NOT_FOUND".into(),
                    }.text());
                }
                let version = if arg(4) == "--version" { arg(5).parse().unwrap_or(2) } else { 2 };
                self.distros.insert(name.to_owned(), FakeDistro { running: false, version });
                self.default.get_or_insert_with(|| name.to_owned());
                self.ok("Import in progress, this may take a few minutes.\nThe operation completed successfully.\n")
            }
            "--terminate" | "-t" => match self.distros.get_mut(arg(1)) {
                Some(d) => {
                    d.running = false;
                    self.ok("The operation completed successfully.\n")
                }
                None => self.fail(DISTRO_NOT_FOUND),
            },
            "--unregister" => match self.distros.remove(arg(1)) {
                Some(_) => {
                    if self.default.as_deref() == Some(arg(1)) {
                        self.default = self.distros.keys().next().cloned();
                    }
                    self.ok("Unregistering.\nThe operation completed successfully.\n")
                }
                None => self.fail(DISTRO_NOT_FOUND),
            },
            _ => self.fail(&format!(
                "Invalid command line argument: {first}\nPlease use 'wsl.exe --help' to get a list of supported arguments.\n"
            )),
        }
    }
}

#[async_trait]
impl Wsl for FakeWsl {
    async fn run(&self, args: &[String]) -> Result<RawOutput> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(args.to_vec());
        Ok(state.answer(args))
    }

    fn command(&self, args: &[String]) -> tokio::process::Command {
        let mut state = self.state.lock().unwrap();
        state.calls.push(args.to_vec());
        let failure = state.always.clone();
        let (mut distro, mut cwd, mut rest) = (None, None, None);
        let mut i = 0;
        while i < args.len() {
            match args[i].as_str() {
                "-d" | "--distribution" => distro = args.get(i + 1).cloned(),
                "--cd" => cwd = args.get(i + 1).cloned(),
                "-u" | "--user" => {}
                "--exec" | "-e" => {
                    rest = Some(args[i + 1..].to_vec());
                    break;
                }
                _ => {
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        let known = distro
            .as_deref()
            .is_some_and(|d| state.distros.contains_key(d));
        let message = match (&failure, known, &rest) {
            (Some(f), _, _) => Some(f.text()),
            (None, false, _) => Some(DISTRO_NOT_FOUND.to_owned()),
            (None, true, None) => Some(
                "Invalid command line argument: (no --exec)\nError code: Wsl/E_INVALIDARG\n"
                    .to_owned(),
            ),
            _ => None,
        };
        if let Some(message) = message {
            // What wsl.exe does: the message on stdout, exit status -1 (255 here).
            return fail_command(&state.encode(&message));
        }
        if let Some(d) = distro.as_deref().and_then(|d| state.distros.get_mut(d)) {
            d.running = true;
        }
        let argv = rest.unwrap_or_default();
        let program = argv.first().cloned().unwrap_or_default();
        let program = state
            .programs
            .get(&program)
            .cloned()
            .unwrap_or_else(|| PathBuf::from(&program));
        let mut command = tokio::process::Command::new(program);
        command.args(argv.iter().skip(1));
        if let Some(cwd) = cwd.filter(|c| c != "~") {
            command.current_dir(cwd);
        }
        for (k, v) in &state.env {
            command.env(k, v);
        }
        command.kill_on_drop(true);
        command
    }
}

/// A command that prints `bytes` on stdout and exits with 255 (-1 as a byte).
fn fail_command(bytes: &[u8]) -> tokio::process::Command {
    let hex: String = bytes.iter().map(|b| format!("\\{b:03o}")).collect();
    let mut command = tokio::process::Command::new("sh");
    command
        .arg("-c")
        .arg("env printf \"$0\"; exit 255")
        .arg(hex)
        .kill_on_drop(true);
    command
}
