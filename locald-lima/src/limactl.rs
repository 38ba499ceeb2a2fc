//! `limactl`, behind a narrow trait: the real binary, and (in [`crate::fake`]) a
//! recording fake that replays Lima's output formats.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::{Error, Result};

/// An instance's state, as `limactl list` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Status {
    /// The host agent and the VM run.
    Running,
    /// Neither runs.
    Stopped,
    /// One runs without the other, or the instance cannot be read.
    Broken,
    /// A status this locald does not know (or Lima's empty "unknown").
    #[serde(other)]
    Unknown,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Broken => "broken",
            Status::Unknown => "unknown",
        })
    }
}

/// One line of `limactl list --json`: the fields of Lima's `store.Instance` locald
/// reads. Lima prints many more (`hostname`, `sshLocalPort`, `config`, `HostOS`, …);
/// they are ignored, as are fields later Lima versions add.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Instance {
    /// The instance name.
    pub name: String,
    /// Its state.
    #[serde(default = "unknown", deserialize_with = "status_or_unknown")]
    pub status: Status,
    /// The instance directory (`$LIMA_HOME/<name>`).
    #[serde(default)]
    pub dir: PathBuf,
    /// `vz` or `qemu`.
    #[serde(default)]
    pub vm_type: Option<String>,
    /// The guest architecture.
    #[serde(default)]
    pub arch: Option<String>,
    /// Virtual CPUs.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Memory in bytes.
    #[serde(default)]
    pub memory: Option<u64>,
    /// Disk in bytes.
    #[serde(default)]
    pub disk: Option<u64>,
    /// The Lima version that created the instance (Lima 1.0 and later).
    #[serde(default)]
    pub lima_version: Option<String>,
    /// Problems Lima found (Go errors marshal as `{}`, so only their count tells).
    #[serde(default)]
    pub errors: Vec<serde_json::Value>,
}

fn unknown() -> Status {
    Status::Unknown
}

fn status_or_unknown<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Status, D::Error> {
    let text = String::deserialize(d)?;
    Ok(match text.as_str() {
        "Running" => Status::Running,
        "Stopped" => Status::Stopped,
        "Broken" => Status::Broken,
        _ => Status::Unknown,
    })
}

/// Reads `limactl list --json`: one JSON object per line (not an array).
pub fn parse_list(stdout: &str) -> Result<Vec<Instance>> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            serde_json::from_str(line).map_err(|e| Error::Limactl {
                command: "list --json".into(),
                message: format!("unreadable line {line:?}: {e}"),
            })
        })
        .collect()
}

/// Where `limactl start` progress lines go.
pub type ProgressLines = tokio::sync::mpsc::UnboundedSender<String>;

/// What locald asks of `limactl`. Every method names one `limactl` subcommand.
#[async_trait]
pub trait Limactl: Send + Sync + fmt::Debug {
    /// `limactl --version`: the Lima version (`2.2.0`).
    async fn version(&self) -> Result<String>;

    /// `limactl list --json`: every instance.
    async fn list(&self) -> Result<Vec<Instance>>;

    /// `limactl --tty=false create --name NAME CONFIG`.
    async fn create(&self, name: &str, config: &Path) -> Result<()>;

    /// `limactl --tty=false start --timeout T NAME`; Lima's log lines go to
    /// `progress` as they come.
    async fn start(
        &self,
        name: &str,
        timeout: Duration,
        progress: Option<ProgressLines>,
    ) -> Result<()>;

    /// `limactl stop [--force] NAME`.
    async fn stop(&self, name: &str, force: bool) -> Result<()>;

    /// `limactl delete --force NAME`.
    async fn delete(&self, name: &str) -> Result<()>;

    /// The program and arguments of `limactl shell NAME ARGS…`, for a terminal.
    fn shell(&self, name: &str, args: &[String]) -> std::process::Command;

    /// `LIMA_HOME`.
    fn lima_home(&self) -> &Path;
}

/// The real `limactl`, with its own `LIMA_HOME`.
#[derive(Debug, Clone)]
pub struct LimactlBinary {
    program: PathBuf,
    lima_home: PathBuf,
}

impl LimactlBinary {
    /// `program` run with `LIMA_HOME=lima_home`.
    pub fn new(program: impl Into<PathBuf>, lima_home: impl Into<PathBuf>) -> LimactlBinary {
        LimactlBinary {
            program: program.into(),
            lima_home: lima_home.into(),
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.env("LIMA_HOME", &self.lima_home)
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Result<String> {
        let shown = args.join(" ");
        let out = self
            .command(args)
            .output()
            .await
            .map_err(|e| Error::io(format!("running {}", self.program.display()), e))?;
        if !out.status.success() {
            return Err(Error::Limactl {
                command: shown,
                message: tail(&String::from_utf8_lossy(&out.stderr), out.status),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// The last lines of stderr, with `msg="…"` pulled out of Lima's logrus lines.
fn tail(stderr: &str, status: std::process::ExitStatus) -> String {
    let lines: Vec<String> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(log_message)
        .collect();
    let start = lines.len().saturating_sub(3);
    if lines.is_empty() {
        format!("it exited with {status} and said nothing")
    } else {
        lines[start..].join("; ")
    }
}

/// The `msg` of a logrus text line (`time=… level=fatal msg="…"`), else the line.
pub fn log_message(line: &str) -> String {
    let Some(at) = line.find("msg=") else {
        return line.trim().to_owned();
    };
    let rest = &line[at + 4..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.extend(chars.next()),
                '"' => break,
                c => out.push(c),
            }
        }
        out
    } else {
        rest.split_whitespace().next().unwrap_or("").to_owned()
    }
}

#[async_trait]
impl Limactl for LimactlBinary {
    async fn version(&self) -> Result<String> {
        let out = self.run(&["--version"]).await?;
        // `limactl version 2.2.0`
        out.split_whitespace()
            .last()
            .map(|v| v.trim_start_matches('v').to_owned())
            .ok_or_else(|| Error::Limactl {
                command: "--version".into(),
                message: format!("unexpected output {out:?}"),
            })
    }

    async fn list(&self) -> Result<Vec<Instance>> {
        parse_list(&self.run(&["list", "--json"]).await?)
    }

    async fn create(&self, name: &str, config: &Path) -> Result<()> {
        let config = config.to_string_lossy();
        self.run(&["--tty=false", "create", "--name", name, &config])
            .await
            .map(drop)
    }

    async fn start(
        &self,
        name: &str,
        timeout: Duration,
        progress: Option<ProgressLines>,
    ) -> Result<()> {
        let limit = format!("{}s", timeout.as_secs().max(1));
        let args = ["--tty=false", "start", "--timeout", &limit, name];
        let mut child = self
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::io(format!("running {}", self.program.display()), e))?;
        let mut stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink).await;
        });
        let run = async {
            let mut lines = BufReader::new(stderr).lines();
            let mut seen = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(progress) = &progress {
                    let _ = progress.send(log_message(&line));
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            let status = child.wait().await;
            (status, seen)
        };
        // Lima enforces --timeout itself; this bounds a limactl that hangs.
        let (status, seen) = tokio::time::timeout(timeout + Duration::from_secs(30), run)
            .await
            .map_err(|_| Error::Timeout {
                what: format!("`limactl start {name}`"),
                after: timeout,
            })?;
        drain.abort();
        let status = status.map_err(|e| Error::io("waiting for limactl", e))?;
        if !status.success() {
            return Err(Error::Limactl {
                command: args.join(" "),
                message: tail(&seen, status),
            });
        }
        Ok(())
    }

    async fn stop(&self, name: &str, force: bool) -> Result<()> {
        let mut args = vec!["--tty=false", "stop"];
        if force {
            args.push("--force");
        }
        args.push(name);
        self.run(&args).await.map(drop)
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.run(&["--tty=false", "delete", "--force", name])
            .await
            .map(drop)
    }

    fn shell(&self, name: &str, args: &[String]) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.env("LIMA_HOME", &self.lima_home)
            .arg("shell")
            .arg(name)
            .args(args);
        cmd
    }

    fn lima_home(&self) -> &Path {
        &self.lima_home
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as Lima 2.x prints them (fields of `store.Instance` in
    /// pkg/store/instance.go, plus the capitalised FormatData fields), including
    /// ones locald does not read and one a future Lima might add.
    const LIST: &str = r#"{"name":"locald-vm","hostname":"lima-locald-vm","status":"Running","dir":"/Users/ada/.local/share/locald/lima/locald-vm","vmType":"vz","arch":"aarch64","cpuType":"","cpus":2,"memory":4294967296,"disk":64424509440,"network":[{"vzNAT":true,"macAddress":"52:55:55:12:34:56","interface":"lima0"}],"sshLocalPort":60022,"sshConfigFile":"/Users/ada/.local/share/locald/lima/locald-vm/ssh.config","hostAgentPID":4242,"driverPID":4242,"config":{"vmType":"vz","cpus":2},"sshAddress":"127.0.0.1","protected":false,"limaVersion":"2.1.4","HostOS":"darwin","HostArch":"aarch64","LimaHome":"/Users/ada/.local/share/locald/lima","IdentityFile":"/Users/ada/.lima/_config/user","someFutureField":{"x":1}}
{"name":"old","status":"Broken","dir":"/l/old","arch":"x86_64","errors":[{},{}]}

{"name":"odd","status":"","dir":"/l/odd"}
"#;

    #[test]
    fn reads_lima_list_json() {
        let list = parse_list(LIST).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[0].status, Status::Running);
        assert_eq!(list[0].lima_version.as_deref(), Some("2.1.4"));
        assert_eq!(list[0].vm_type.as_deref(), Some("vz"));
        assert_eq!(list[0].memory, Some(4 << 30));
        assert_eq!(list[1].status, Status::Broken);
        assert_eq!(list[1].errors.len(), 2);
        assert_eq!(
            list[1].lima_version, None,
            "Lima before 1.0 had no limaVersion"
        );
        assert_eq!(list[2].status, Status::Unknown);
        assert!(parse_list("").unwrap().is_empty());
        let err = parse_list("[{\"name\":1}]").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("`limactl list --json` failed: unreadable line"),
            "{err}"
        );
    }

    #[test]
    fn pulls_messages_out_of_logrus_lines() {
        assert_eq!(
            log_message(
                r#"time="2026-12-01T10:00:00+01:00" level=fatal msg="instance \"locald-vm\" already exists""#
            ),
            r#"instance "locald-vm" already exists"#
        );
        assert_eq!(log_message("level=info msg=READY"), "READY");
        assert_eq!(log_message("plain text"), "plain text");
    }
}
