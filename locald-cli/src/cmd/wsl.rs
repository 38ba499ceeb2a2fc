//! `locald wsl status|install|uninstall`: the managed WSL2 distribution, from Windows.
//!
//! On Windows these drive `wsl.exe`; elsewhere `LOCALD_WSL_EXE` may name a stand-in
//! program (tests use one), and without it `status` reports what WSL looks like from
//! inside a distribution.

use std::{io::Write, path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use locald::wsl::{
    default_install_root, inside::WslFacts, DistroStatus, Installed, ManagedDistro, RootfsArchive,
    WslExe, DISTRO_NAME,
};

/// `locald wsl …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum WslCommand {
    /// Show WSL's version and the managed distribution's state.
    Status(StatusArgs),
    /// Import (or upgrade) the managed distribution from a root filesystem archive.
    Install(InstallArgs),
    /// Unregister the managed distribution and delete its disk.
    Uninstall(CommonArgs),
}

/// Options every `locald wsl` subcommand takes.
#[derive(Debug, clap::Args)]
pub(crate) struct CommonArgs {
    /// The distribution's name.
    #[arg(long, default_value = DISTRO_NAME)]
    distro: String,
    /// Where distributions are imported (default %LOCALAPPDATA%\locald\wsl).
    #[arg(long, env = "LOCALD_WSL_ROOT", value_name = "DIR")]
    install_root: Option<PathBuf>,
}

/// Arguments of `locald wsl status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Arguments of `locald wsl install`.
#[derive(Debug, clap::Args)]
pub(crate) struct InstallArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The root filesystem archive (a tar).
    #[arg(long, env = "LOCALD_WSL_ROOTFS", value_name = "TAR")]
    rootfs: PathBuf,
    /// Its sha256 (hex, `sha256:` prefix allowed); a different archive is refused.
    #[arg(long, env = "LOCALD_WSL_ROOTFS_SHA256", value_name = "DIGEST")]
    sha256: String,
}

/// The `wsl.exe` to drive: `LOCALD_WSL_EXE` or `wsl.exe` on `PATH`.
fn wsl_exe() -> Option<WslExe> {
    match std::env::var_os("LOCALD_WSL_EXE").filter(|v| !v.is_empty()) {
        Some(program) => Some(WslExe::new(program)),
        None if cfg!(windows) => Some(WslExe::default()),
        None => None,
    }
}

fn managed(common: &CommonArgs) -> anyhow::Result<ManagedDistro> {
    let wsl = wsl_exe().context(
        "`locald wsl` manages a WSL distribution from Windows (set LOCALD_WSL_EXE to drive another wsl.exe)",
    )?;
    let root = match &common.install_root {
        Some(root) => root.clone(),
        None => default_install_root()?,
    };
    Ok(ManagedDistro::new(Arc::new(wsl), &common.distro, root))
}

/// The managed distribution's status when `wsl.exe` can be driven here (for
/// `locald info`).
pub(crate) async fn managed_status() -> Option<DistroStatus> {
    let wsl = wsl_exe()?;
    let root = default_install_root().unwrap_or_else(|_| PathBuf::from("."));
    ManagedDistro::new(Arc::new(wsl), DISTRO_NAME, root)
        .status()
        .await
        .ok()
}

/// Runs `locald wsl …`.
pub(crate) async fn run(command: WslCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        WslCommand::Status(args) => {
            if wsl_exe().is_none() {
                let facts = WslFacts::probe("/");
                if args.json {
                    serde_json::to_writer_pretty(&mut out, &facts)?;
                    writeln!(out)?;
                } else {
                    render_facts(&facts, &mut out)?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let status = managed(&args.common)?.status().await?;
            if args.json {
                serde_json::to_writer_pretty(&mut out, &status)?;
                writeln!(out)?;
            } else {
                render_status(&status, &mut out)?;
            }
        }
        WslCommand::Install(args) => {
            let distro = managed(&args.common)?;
            let archive = RootfsArchive::new(&args.rootfs, &args.sha256);
            let done = distro.install(&archive).await?;
            let what = match done {
                Installed::Imported => "imported",
                Installed::Upgraded => "upgraded",
                Installed::Current => "already current",
                _ => "done",
            };
            writeln!(
                out,
                "{}: {what} ({})",
                distro.name(),
                distro.install_dir().display()
            )?;
        }
        WslCommand::Uninstall(common) => {
            let distro = managed(&common)?;
            if distro.uninstall().await? {
                writeln!(out, "{}: removed", distro.name())?;
            } else {
                writeln!(out, "{}: not installed", distro.name())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn render_status(status: &DistroStatus, out: &mut impl Write) -> std::io::Result<()> {
    match status.wsl.as_ref().and_then(|v| v.wsl.as_deref()) {
        Some(v) => writeln!(out, "WSL:           {v}")?,
        None => writeln!(out, "WSL:           inbox wsl.exe (no --version)")?,
    }
    match &status.distro {
        Some(d) => writeln!(
            out,
            "Distribution:  {} (WSL {}, {}{})",
            d.name,
            d.version,
            d.state,
            if d.default { ", default" } else { "" }
        )?,
        None => writeln!(
            out,
            "Distribution:  {} is not installed (locald wsl install --rootfs TAR --sha256 DIGEST)",
            status.name
        )?,
    }
    writeln!(out, "Directory:     {}", status.install_dir.display())?;
    if let Some(sha) = &status.rootfs_sha256 {
        writeln!(out, "Root fs:       sha256:{sha}")?;
    }
    Ok(())
}

fn render_facts(facts: &WslFacts, out: &mut impl Write) -> std::io::Result<()> {
    let platform = locald::Platform::detect();
    writeln!(out, "Platform:      {platform}")?;
    writeln!(
        out,
        "cgroups:       {}",
        serde_json::to_value(facts.cgroups)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    )?;
    writeln!(out, "Drives under:  {}", facts.automount_root)?;
    for d in &facts.drives {
        writeln!(
            out,
            "  {} ({}{}): bind mounts work; keep images and LOCALD_HOME off it",
            d.path,
            d.fstype,
            if d.metadata { ", metadata" } else { "" }
        )?;
    }
    Ok(())
}
