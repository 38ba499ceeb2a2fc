//! `locald vm`: the `locald-vm` Lima instance that runs Linux work on macOS.

use std::{io::Write, process::ExitCode};

use anyhow::Context;
use locald::lima::{LimaRuntime, VmStatus};

/// Arguments of `locald vm`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
On macOS, locald runs Linux commands and containers in locald-vm, a Lima VM it \
installs (a pinned, sha256-verified Lima in $LOCALD_HOME/tools) and manages; the first \
command that needs it starts it. LOCALD_LIMA_URL names a mirror for the Lima download \
(a base URL, or a local file); LOCALD_LIMACTL a limactl to use instead.

Examples:
  locald vm start
  locald vm status --json
  locald vm shell -- uname -a")]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Install Lima if needed, create the VM if needed, and start it.
    Start,
    /// Stop the VM.
    Stop {
        /// Stop it even if it does not answer (kills it).
        #[arg(long)]
        force: bool,
    },
    /// Show the VM's state and Lima's version.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete the VM and its disk.
    Delete,
    /// Open a shell in the VM, or run a command there.
    Shell {
        /// The command and its arguments (default: a login shell).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

pub(crate) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let lima = LimaRuntime::new();
    match args.action {
        Action::Start => {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
            let lima = LimaRuntime::builder().start_progress(tx).build();
            let printer = tokio::spawn(async move {
                while let Some(line) = rx.recv().await {
                    let _ = writeln!(std::io::stderr(), "{line}");
                }
            });
            let version = lima
                .ensure_running()
                .await
                .map(|remote| remote.daemon().version.clone());
            // The sender lives in the runtime: dropping it ends the printer.
            drop(lima);
            let _ = printer.await;
            let version = version?;
            writeln!(
                std::io::stdout(),
                "{} is running (locald {} in the guest)",
                locald::lima::VM_NAME,
                version
            )?;
        }
        Action::Stop { force } => {
            if let Some(vm) = lima.vm(false).await? {
                vm.stop(force).await?;
            }
        }
        Action::Status { json } => {
            let status = lima.status().await?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer(&mut out, &status)?;
                writeln!(out)?;
            } else {
                render(&status, &mut out)?;
            }
            return Ok(if status.state == "running" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Action::Delete => {
            if let Some(vm) = lima.vm(false).await? {
                vm.delete().await?;
            }
        }
        Action::Shell { command } => {
            let vm = lima
                .vm(false)
                .await?
                .context("Lima is not installed yet: run `locald vm start` first")?;
            let status = vm
                .limactl()
                .shell(vm.name(), &command)
                .status()
                .context("cannot run limactl shell")?;
            return Ok(ExitCode::from(
                status.code().unwrap_or(1).clamp(0, 255) as u8
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per fact, as `locald vm status` prints them.
pub(crate) fn render(status: &VmStatus, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "VM:            {} ({})", status.name, status.state)?;
    let installed = if status.lima_installed {
        "installed"
    } else {
        "not installed yet"
    };
    writeln!(out, "Lima:          {} ({installed})", status.lima_version)?;
    if let Some(created) = &status.created_by_lima {
        writeln!(out, "Created by:    Lima {created}")?;
    }
    writeln!(out, "LIMA_HOME:     {}", status.lima_home.display())?;
    writeln!(out, "Socket:        {}", status.socket.display())?;
    if let Some(vm_type) = &status.vm_type {
        writeln!(out, "VM type:       {vm_type}")?;
    }
    if status.errors > 0 {
        writeln!(out, "Problems:      {} reported by limactl", status.errors)?;
    }
    Ok(())
}
