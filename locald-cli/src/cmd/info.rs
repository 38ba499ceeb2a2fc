//! `locald info`: what this machine offers.

use std::{io::Write, process::ExitCode};

use anyhow::Context;
use locald::{native::host::HostFeatures, BackendStatus, Capability, Paths, PlatformProbe};
use serde::Serialize;

/// Arguments of `locald info`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Info {
    version: &'static str,
    platform: locald::Platform,
    os: &'static str,
    arch: &'static str,
    kernel: Option<String>,
    wsl_distro: Option<String>,
    /// From Windows: the managed WSL distribution and the WSL version.
    #[serde(skip_serializing_if = "Option::is_none")]
    wsl: Option<locald::wsl::DistroStatus>,
    container: Option<String>,
    runtime: RuntimeReport,
    backends: Vec<BackendStatus>,
    host: Option<HostFeatures>,
    /// What rootless containers need, for this user (Linux only).
    #[cfg(target_os = "linux")]
    rootless: Vec<locald::native::RootlessCheck>,
    data_home: std::path::PathBuf,
    runtime_dir: std::path::PathBuf,
    /// The macOS VM (Lima); reported everywhere, it only runs on macOS.
    vm: Option<locald::lima::VmStatus>,
}

#[derive(Debug, Serialize)]
struct RuntimeReport {
    name: String,
    capabilities: Vec<Capability>,
}

async fn gather(host: Option<&str>) -> anyhow::Result<Info> {
    let platform = locald::Platform::detect();
    let detection = if cfg!(target_os = "linux") {
        Some(PlatformProbe::host().detect())
    } else {
        None
    };
    let runtime = match host {
        None => locald::runtime().context("no runtime for this platform")?,
        Some(_) => crate::cli::runtime(host).await?,
    };
    let info = runtime.info();
    let paths = Paths::from_process_env();
    Ok(Info {
        version: env!("CARGO_PKG_VERSION"),
        platform,
        os: std::env::consts::OS,
        arch: std::env::consts::ARCH,
        kernel: detection.as_ref().and_then(|d| d.kernel_release.clone()),
        wsl_distro: detection.as_ref().and_then(|d| d.wsl_distro.clone()),
        container: detection.as_ref().and_then(|d| d.container.clone()),
        wsl: if platform == locald::Platform::Windows {
            crate::cmd::wsl::managed_status().await
        } else {
            None
        },
        runtime: RuntimeReport {
            name: info.name,
            capabilities: info.capabilities.into_iter().collect(),
        },
        backends: locald::backends(platform),
        host: platform.is_linux_kernel().then(HostFeatures::probe),
        #[cfg(target_os = "linux")]
        rootless: locald::native::rootless_readiness(),
        data_home: paths.data_home().to_owned(),
        runtime_dir: paths.runtime_dir(),
        vm: locald::lima::LimaRuntime::new().status().await.ok(),
    })
}

#[cfg(target_os = "linux")]
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn render(info: &Info, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "locald {}", info.version)?;
    writeln!(
        out,
        "Platform:      {} ({}/{})",
        info.platform, info.os, info.arch
    )?;
    if let Some(kernel) = &info.kernel {
        writeln!(out, "Kernel:        {kernel}")?;
    }
    if let Some(distro) = &info.wsl_distro {
        writeln!(out, "WSL distro:    {distro}")?;
    }
    if let Some(wsl) = &info.wsl {
        match &wsl.distro {
            Some(d) => writeln!(
                out,
                "WSL distro:    {} (WSL {}, {})",
                d.name, d.version, d.state
            )?,
            None => writeln!(out, "WSL distro:    {} not installed", wsl.name)?,
        }
        if let Some(v) = wsl.wsl.as_ref().and_then(|v| v.wsl.as_deref()) {
            writeln!(out, "WSL version:   {v}")?;
        }
    }
    if let Some(engine) = &info.container {
        writeln!(out, "Inside:        a {engine} container")?;
    }
    let caps: Vec<String> = info
        .runtime
        .capabilities
        .iter()
        .map(|c| c.to_string())
        .collect();
    writeln!(
        out,
        "Runtime:       {} ({})",
        info.runtime.name,
        if caps.is_empty() {
            "nothing yet".to_owned()
        } else {
            caps.join(", ")
        }
    )?;
    writeln!(out, "Backends:")?;
    for b in &info.backends {
        let mark = if b.available {
            "available  "
        } else {
            "unavailable"
        };
        writeln!(out, "  {:<10} {mark}  {}", b.name, b.detail)?;
    }
    if let Some(host) = &info.host {
        let cgroup = match (&host.cgroup, &host.cgroup2_mount) {
            (locald::native::host::CgroupMode::Hybrid, Some(m)) => {
                format!("v1 hybrid (v2 tree at {})", m.display())
            }
            (mode, _) => serde_json::to_value(mode)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
        };
        writeln!(out, "Kernel features:")?;
        writeln!(out, "  cgroups          {cgroup}")?;
        writeln!(out, "  overlayfs        {}", yes_no(host.overlayfs))?;
        writeln!(
            out,
            "  user namespaces  {}{}",
            yes_no(host.user_namespaces),
            if host.user_namespaces && !host.unprivileged_user_namespaces {
                " (root only)"
            } else {
                ""
            }
        )?;
        writeln!(out, "  seccomp          {}", yes_no(host.seccomp))?;
    }
    #[cfg(target_os = "linux")]
    {
        let ready = info.rootless.iter().all(|c| c.ok);
        writeln!(
            out,
            "Rootless:      {}",
            match (ready, is_root()) {
                (true, true) => "ready (for users who are not root)",
                (true, false) => "ready (containers run rootless as this user)",
                (false, true) => "partly ready (for users who are not root):",
                (false, false) => "partly ready (containers run rootless as this user):",
            }
        )?;
        for c in &info.rootless {
            writeln!(
                out,
                "  {:<28} {}  {}",
                c.name,
                if c.ok { "yes" } else { "no " },
                c.detail
            )?;
        }
    }
    writeln!(out, "Data:          {}", info.data_home.display())?;
    writeln!(out, "Sockets:       {}", info.runtime_dir.display())?;
    if let Some(vm) = &info.vm {
        let lima = if vm.lima_installed {
            "installed"
        } else {
            "not installed"
        };
        writeln!(
            out,
            "VM:            {} {} (Lima {}, {lima})",
            vm.name, vm.state, vm.lima_version
        )?;
    }
    Ok(())
}

pub(crate) async fn run(args: Args, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let info = gather(host).await?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &info).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        render(&info, &mut out)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
