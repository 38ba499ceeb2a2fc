//! Describing a command to run and what came of it.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A command to run on a [`Runtime`](crate::Runtime): what `std::process::Command` is,
/// but plain data, so it can be sent to a remote runtime unchanged.
///
/// The defaults follow `std::process::Command::output`: the environment is inherited,
/// stdin is empty, and stdout and stderr are captured.
///
/// ```
/// use std::time::Duration;
/// use locald_core::{Command, Stdio};
///
/// let cmd = Command::new("sh")
///     .args(["-c", "echo $GREETING"])
///     .env("GREETING", "hello")
///     .current_dir("/tmp")
///     .stderr(Stdio::Inherit)
///     .timeout(Duration::from_secs(10));
/// assert_eq!(cmd.get_program(), "sh");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Env,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cwd: Option<PathBuf>,
    #[serde(default)]
    stdin: Stdin,
    #[serde(default)]
    stdout: Stdio,
    #[serde(default)]
    stderr: Stdio,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "millis")]
    timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    tty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    terminal_size: Option<crate::TerminalSize>,
}

/// The environment a command starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Env {
    /// Start from the runtime's own environment (default `true`).
    pub inherit: bool,
    /// Variables to set (`Some`) or remove (`None`), applied after inheriting.
    pub vars: BTreeMap<String, Option<String>>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            inherit: true,
            vars: BTreeMap::new(),
        }
    }
}

/// Where a command's stdin comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Stdin {
    /// Empty: reading gives end of file at once (default).
    #[default]
    Null,
    /// These bytes, then end of file.
    Bytes(Vec<u8>),
    /// A pipe the caller writes to ([`Process::take_stdin`](crate::Process::take_stdin)).
    Piped,
    /// The runtime's own stdin (only meaningful for in-process runtimes).
    Inherit,
}

/// Where a command's stdout or stderr goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Stdio {
    /// Collected into [`Output`] (default). When spawning, the stream is piped and
    /// [`Process::output`](crate::Process::output) collects it.
    #[default]
    Capture,
    /// A stream the caller reads ([`Process::take_stdout`](crate::Process::take_stdout));
    /// `run_command` collects it like [`Stdio::Capture`].
    Piped,
    /// The runtime's own stdout or stderr.
    Inherit,
    /// Discarded.
    Null,
}

impl Stdio {
    /// True when the runtime hands this stream to the caller as a pipe.
    pub fn is_piped(self) -> bool {
        matches!(self, Stdio::Capture | Stdio::Piped)
    }
}

impl Command {
    /// A command running `program`, looked up on `PATH` when it has no `/`.
    pub fn new(program: impl Into<String>) -> Self {
        Command {
            program: program.into(),
            args: Vec::new(),
            env: Env::default(),
            cwd: None,
            stdin: Stdin::default(),
            stdout: Stdio::default(),
            stderr: Stdio::default(),
            timeout: None,
            tty: false,
            terminal_size: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.vars.insert(key.into(), Some(value.into()));
        self
    }

    /// Sets environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        for (k, v) in vars {
            self.env.vars.insert(k.into(), Some(v.into()));
        }
        self
    }

    /// Removes an inherited environment variable.
    pub fn env_remove(mut self, key: impl Into<String>) -> Self {
        self.env.vars.insert(key.into(), None);
        self
    }

    /// Starts from an empty environment instead of inheriting (variables set so far stay).
    pub fn env_clear(mut self) -> Self {
        self.env.inherit = false;
        self.env.vars.retain(|_, v| v.is_some());
        self
    }

    /// Sets the working directory (default: the runtime's own).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets where stdin comes from (default [`Stdin::Null`]).
    pub fn stdin(mut self, stdin: Stdin) -> Self {
        self.stdin = stdin;
        self
    }

    /// Sets stdin to these bytes.
    pub fn stdin_bytes(self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin(Stdin::Bytes(bytes.into()))
    }

    /// Sets where stdout goes (default [`Stdio::Capture`]).
    pub fn stdout(mut self, stdout: Stdio) -> Self {
        self.stdout = stdout;
        self
    }

    /// Sets where stderr goes (default [`Stdio::Capture`]).
    pub fn stderr(mut self, stderr: Stdio) -> Self {
        self.stderr = stderr;
        self
    }

    /// Kills the command and its whole process group when it runs longer than this
    /// (default: no timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs the command on a terminal (a pseudo-terminal the runtime makes, as
    /// `docker exec -t` does): stdout carries everything the program writes, stderr
    /// stays empty, and [`Process::resize`](crate::Process::resize) sets its size.
    /// Supported by [`Runtime::exec`](crate::Runtime::exec) of container runtimes.
    pub fn tty(mut self, tty: bool) -> Self {
        self.tty = tty;
        if !tty {
            self.terminal_size = None;
        }
        self
    }

    /// Runs the command on a terminal of this size from its first instruction (implies
    /// [`Command::tty`]).
    pub fn terminal_size(mut self, size: crate::TerminalSize) -> Self {
        self.tty = true;
        self.terminal_size = Some(size);
        self
    }

    /// Whether the command runs on a terminal.
    pub fn get_tty(&self) -> bool {
        self.tty
    }

    /// The terminal's initial size, if one was given.
    pub fn get_terminal_size(&self) -> Option<crate::TerminalSize> {
        self.terminal_size
    }

    /// The program.
    pub fn get_program(&self) -> &str {
        &self.program
    }

    /// The arguments.
    pub fn get_args(&self) -> &[String] {
        &self.args
    }

    /// The environment settings.
    pub fn get_env(&self) -> &Env {
        &self.env
    }

    /// The working directory, if set.
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.cwd.as_deref()
    }

    /// Where stdin comes from.
    pub fn get_stdin(&self) -> &Stdin {
        &self.stdin
    }

    /// Where stdout goes.
    pub fn get_stdout(&self) -> Stdio {
        self.stdout
    }

    /// Where stderr goes.
    pub fn get_stderr(&self) -> Stdio {
        self.stderr
    }

    /// The timeout, if set.
    pub fn get_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Checks the command before anything runs.
    pub fn validate(&self) -> Result<()> {
        if self.program.is_empty() {
            return Err(Error::invalid("command", "", "the program name is empty"));
        }
        if self.program.contains('\0') || self.args.iter().any(|a| a.contains('\0')) {
            return Err(Error::invalid(
                "command",
                &self.program,
                "arguments may not contain NUL bytes",
            ));
        }
        for key in self.env.vars.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(Error::invalid(
                    "environment variable name",
                    key,
                    "must be non-empty and contain neither '=' nor NUL",
                ));
            }
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(Error::invalid("timeout", "0s", "must be greater than zero"));
        }
        Ok(())
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(Signal),
}

impl ExitStatus {
    /// True for exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The exit code, if it exited.
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(code) => Some(code),
            ExitStatus::Signaled(_) => None,
        }
    }

    /// The signal that killed it, if any.
    pub fn signal(self) -> Option<Signal> {
        match self {
            ExitStatus::Exited(_) => None,
            ExitStatus::Signaled(sig) => Some(sig),
        }
    }

    /// The status a shell would report: the code, or 128 + the signal number.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(sig) => 128 + sig.number(),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled(sig) => write!(f, "killed by {sig}"),
        }
    }
}

/// What a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Output {
    /// How it ended.
    pub status: ExitStatus,
    /// Captured stdout (empty unless [`Stdio::Capture`] or [`Stdio::Piped`]).
    pub stdout: Vec<u8>,
    /// Captured stderr (empty unless [`Stdio::Capture`] or [`Stdio::Piped`]).
    pub stderr: Vec<u8>,
}

impl Output {
    /// An output record.
    pub fn new(status: ExitStatus, stdout: Vec<u8>, stderr: Vec<u8>) -> Self {
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

/// A Unix signal, by its Linux number. Containers are Linux, so the numbers are Linux's
/// on every host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Signal(i32);

const SIGNAL_NAMES: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ILL", 4),
    ("TRAP", 5),
    ("ABRT", 6),
    ("BUS", 7),
    ("FPE", 8),
    ("KILL", 9),
    ("USR1", 10),
    ("SEGV", 11),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("STKFLT", 16),
    ("CHLD", 17),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("TTIN", 21),
    ("TTOU", 22),
    ("URG", 23),
    ("XCPU", 24),
    ("XFSZ", 25),
    ("VTALRM", 26),
    ("PROF", 27),
    ("WINCH", 28),
    ("IO", 29),
    ("PWR", 30),
    ("SYS", 31),
];

impl Signal {
    /// SIGHUP.
    pub const HUP: Signal = Signal(1);
    /// SIGINT.
    pub const INT: Signal = Signal(2);
    /// SIGQUIT.
    pub const QUIT: Signal = Signal(3);
    /// SIGKILL.
    pub const KILL: Signal = Signal(9);
    /// SIGUSR1.
    pub const USR1: Signal = Signal(10);
    /// SIGSEGV.
    pub const SEGV: Signal = Signal(11);
    /// SIGUSR2.
    pub const USR2: Signal = Signal(12);
    /// SIGPIPE.
    pub const PIPE: Signal = Signal(13);
    /// SIGTERM.
    pub const TERM: Signal = Signal(15);

    /// A signal by number (1 to 64, real-time signals included).
    pub fn from_number(number: i32) -> Result<Signal> {
        if (1..=64).contains(&number) {
            Ok(Signal(number))
        } else {
            Err(Error::invalid(
                "signal",
                number.to_string(),
                "signal numbers go from 1 to 64",
            ))
        }
    }

    /// The signal number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The name without `SIG` (`TERM`), if it has one.
    pub fn name(self) -> Option<&'static str> {
        SIGNAL_NAMES
            .iter()
            .find(|(_, n)| *n == self.0)
            .map(|(name, _)| *name)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "SIG{name}"),
            None => write!(f, "signal {}", self.0),
        }
    }
}

impl FromStr for Signal {
    type Err = Error;

    /// Parses `TERM`, `SIGTERM`, `sigterm` or `15`, as `docker kill -s` does.
    fn from_str(s: &str) -> Result<Signal> {
        let trimmed = s.trim();
        if let Ok(n) = trimmed.parse::<i32>() {
            return Signal::from_number(n);
        }
        let upper = trimmed.to_ascii_uppercase();
        let name = upper.strip_prefix("SIG").unwrap_or(&upper);
        SIGNAL_NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, number)| Signal(*number))
            .ok_or_else(|| Error::invalid("signal", s, "not a known signal name or number"))
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_std_output() {
        let cmd = Command::new("true");
        assert_eq!(cmd.get_stdin(), &Stdin::Null);
        assert_eq!(cmd.get_stdout(), Stdio::Capture);
        assert_eq!(cmd.get_stderr(), Stdio::Capture);
        assert!(cmd.get_env().inherit);
        assert_eq!(cmd.get_timeout(), None);
    }

    #[test]
    fn env_clear_keeps_variables_already_set_and_drops_removals() {
        let cmd = Command::new("env")
            .env("A", "1")
            .env_remove("HOME")
            .env_clear()
            .env("B", "2");
        assert!(!cmd.get_env().inherit);
        let vars: Vec<_> = cmd.get_env().vars.iter().collect();
        assert_eq!(
            vars,
            vec![
                (&"A".to_owned(), &Some("1".to_owned())),
                (&"B".to_owned(), &Some("2".to_owned()))
            ]
        );
    }

    #[test]
    fn validation_rejects_bad_commands() {
        assert!(Command::new("").validate().is_err());
        assert!(Command::new("a\0b").validate().is_err());
        assert!(Command::new("x").env("A=B", "1").validate().is_err());
        assert!(Command::new("x").env("", "1").validate().is_err());
        assert!(Command::new("x")
            .timeout(Duration::ZERO)
            .validate()
            .is_err());
        assert!(Command::new("x").arg("ok").validate().is_ok());
    }

    #[test]
    fn round_trips_through_json() {
        let cmd = Command::new("sh")
            .args(["-c", "cat"])
            .stdin_bytes(b"hi".to_vec())
            .stdout(Stdio::Piped)
            .timeout(Duration::from_millis(1500));
        let json = serde_json::to_string(&cmd).unwrap();
        let back: Command = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cmd);
        // A minimal request only names the program.
        let minimal: Command = serde_json::from_str(r#"{"program":"true"}"#).unwrap();
        assert_eq!(minimal, Command::new("true"));
        // A terminal, with and without a size, survives the trip.
        for cmd in [
            Command::new("sh").tty(true),
            Command::new("sh").terminal_size(crate::TerminalSize::new(24, 80)),
        ] {
            let back: Command =
                serde_json::from_str(&serde_json::to_string(&cmd).unwrap()).unwrap();
            assert!(back.get_tty());
            assert_eq!(back, cmd);
        }
        assert_eq!(
            Command::new("sh")
                .terminal_size(crate::TerminalSize::new(24, 80))
                .tty(false)
                .get_terminal_size(),
            None
        );
    }

    #[test]
    fn signals_parse_like_docker_kill() {
        assert_eq!("TERM".parse::<Signal>().unwrap(), Signal::TERM);
        assert_eq!("SIGKILL".parse::<Signal>().unwrap(), Signal::KILL);
        assert_eq!("sigint".parse::<Signal>().unwrap(), Signal::INT);
        assert_eq!("10".parse::<Signal>().unwrap(), Signal::USR1);
        assert_eq!("40".parse::<Signal>().unwrap().to_string(), "signal 40");
        let err = "SIGNOPE".parse::<Signal>().unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid signal \"SIGNOPE\": not a known signal name or number"
        );
        assert!("0".parse::<Signal>().is_err());
        assert!("65".parse::<Signal>().is_err());
    }

    #[test]
    fn exit_status_shell_codes() {
        assert_eq!(ExitStatus::Exited(7).shell_code(), 7);
        assert_eq!(ExitStatus::Signaled(Signal::KILL).shell_code(), 137);
        assert_eq!(
            ExitStatus::Signaled(Signal::TERM).to_string(),
            "killed by SIGTERM"
        );
        assert!(ExitStatus::Exited(0).success());
        assert!(!ExitStatus::Signaled(Signal::TERM).success());
    }
}
