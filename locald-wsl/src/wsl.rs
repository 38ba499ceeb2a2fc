//! `wsl.exe`, behind a narrow trait: the real program ([`WslExe`]) and, in
//! [`crate::fake`], a recording fake that replays WSL's output formats.
//!
//! The trait has two required methods, the two ways locald runs `wsl.exe`: to
//! completion ([`Wsl::run`]) and as a long-lived bridge ([`Wsl::command`]). Every
//! subcommand locald uses is a provided method built on them, so the argument lists
//! and the parsing of what comes back are the same code for the real program and the
//! fake.

use std::{fmt, path::Path, process::Stdio};

use async_trait::async_trait;

use crate::{
    output::{self, Distro, RawOutput, Status, Version},
    Error, Result,
};

/// What locald asks of `wsl.exe`.
#[async_trait]
pub trait Wsl: Send + Sync + fmt::Debug {
    /// Runs `wsl.exe ARGS` to completion, stdin empty.
    async fn run(&self, args: &[String]) -> Result<RawOutput>;

    /// `wsl.exe ARGS`, ready to spawn with pipes of the caller's choosing.
    fn command(&self, args: &[String]) -> tokio::process::Command;

    /// `wsl --list --verbose`: every registered distribution (none when WSL says it
    /// has none).
    async fn list(&self) -> Result<Vec<Distro>> {
        let args = strings(["--list", "--verbose"]);
        let out = self.run(&args).await?;
        if !out.success() {
            let text = out.all_text();
            if output::error_code(&text) == Some("WSL_E_DEFAULT_DISTRO_NOT_FOUND")
                || text.contains("has no installed distributions")
            {
                return Ok(Vec::new());
            }
            return Err(output::classify("--list --verbose", None, &out));
        }
        output::parse_list(&out.stdout_text())
    }

    /// `wsl --status`.
    async fn status(&self) -> Result<Status> {
        let out = self.run(&strings(["--status"])).await?;
        if !out.success() {
            return Err(output::classify("--status", None, &out));
        }
        Ok(output::parse_status(&out.stdout_text()))
    }

    /// `wsl --version` (Store WSL only; `None` from an inbox `wsl.exe` without it).
    async fn version(&self) -> Result<Option<Version>> {
        let out = self.run(&strings(["--version"])).await?;
        let version = output::parse_version(&out.stdout_text());
        Ok(version.wsl.is_some().then_some(version))
    }

    /// `wsl --import NAME DIR TARBALL --version 2`.
    async fn import(&self, name: &str, dir: &Path, tarball: &Path) -> Result<()> {
        let args = vec![
            "--import".to_owned(),
            name.to_owned(),
            path_arg(dir)?,
            path_arg(tarball)?,
            "--version".to_owned(),
            "2".to_owned(),
        ];
        self.checked(&args, Some(name)).await
    }

    /// `wsl --terminate NAME`.
    async fn terminate(&self, name: &str) -> Result<()> {
        self.checked(&strings(["--terminate", name]), Some(name))
            .await
    }

    /// `wsl --unregister NAME`: the distribution and its disk are deleted.
    async fn unregister(&self, name: &str) -> Result<()> {
        self.checked(&strings(["--unregister", name]), Some(name))
            .await
    }

    /// `wsl -d NAME -u USER --cd DIR --exec PROGRAM ARGS…`.
    ///
    /// `--exec` runs the program without a shell, so the arguments arrive as given;
    /// without it `wsl.exe` joins them into a shell command line and quoting does not
    /// round-trip.
    fn exec(
        &self,
        name: &str,
        user: &str,
        cwd: Option<&str>,
        argv: &[String],
    ) -> tokio::process::Command {
        self.command(&exec_args(name, user, cwd, argv))
    }

    /// Runs [`Wsl::run`] and turns a failure into its error.
    async fn checked(&self, args: &[String], distro: Option<&str>) -> Result<()> {
        let out = self.run(args).await?;
        if out.success() {
            Ok(())
        } else {
            Err(output::classify(&args.join(" "), distro, &out))
        }
    }
}

/// The arguments of [`Wsl::exec`].
pub fn exec_args(name: &str, user: &str, cwd: Option<&str>, argv: &[String]) -> Vec<String> {
    let mut args = strings(["-d", name, "-u", user]);
    if let Some(cwd) = cwd {
        args.push("--cd".into());
        args.push(cwd.into());
    }
    args.push("--exec".into());
    args.extend(argv.iter().cloned());
    args
}

fn strings<const N: usize>(args: [&str; N]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

fn path_arg(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Invalid {
            what: "path",
            value: path.display().to_string(),
            reason: "wsl.exe needs a path that is valid Unicode".into(),
        })
}

/// The real `wsl.exe`.
///
/// It runs with `WSL_UTF8=1` (newer builds then print UTF-8; older ones ignore it and
/// print UTF-16LE, which is read too) and, on Windows, without a console window.
#[derive(Debug, Clone)]
pub struct WslExe {
    program: std::path::PathBuf,
}

impl Default for WslExe {
    fn default() -> Self {
        WslExe::new("wsl.exe")
    }
}

impl WslExe {
    /// `program` (default `wsl.exe`, found on `PATH`).
    pub fn new(program: impl Into<std::path::PathBuf>) -> WslExe {
        WslExe {
            program: program.into(),
        }
    }
}

#[async_trait]
impl Wsl for WslExe {
    async fn run(&self, args: &[String]) -> Result<RawOutput> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::NotInstalled {
                    detail: format!("{} was not found", self.program.display()),
                },
                _ => Error::io(format!("running {}", self.program.display()), e),
            })?;
        Ok(RawOutput {
            // Killed by a signal (not on Windows) reads as WSL's own failure code.
            code: out.status.code().unwrap_or(-1),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    fn command(&self, args: &[String]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(args).env("WSL_UTF8", "1").kill_on_drop(true);
        no_console_window(&mut command);
        command
    }
}

#[cfg(windows)]
fn no_console_window(command: &mut tokio::process::Command) {
    /// `CREATE_NO_WINDOW` from the Win32 process creation flags.
    const CREATE_NO_WINDOW: u32 = 0x0800_0000;
    command.creation_flags(CREATE_NO_WINDOW);
}

#[cfg(not(windows))]
fn no_console_window(_command: &mut tokio::process::Command) {}
