//! `locald login` and `locald logout`.

use std::{io::Read, io::Write, process::ExitCode};

use anyhow::{bail, Context};
use locald::RegistryLogin;

use crate::cli::runtime;

/// Arguments of `locald login`.
#[derive(Debug, clap::Args)]
pub(crate) struct LoginArgs {
    /// The registry (`host[:port]`; `docker.io` for Docker Hub).
    registry: String,
    /// The user name.
    #[arg(short, long)]
    username: String,
    /// Read the password from stdin (the only way: passwords on command lines leak).
    #[arg(long, required = true)]
    password_stdin: bool,
    /// Allow plain HTTP or an unverified certificate for this registry.
    #[arg(long)]
    insecure: bool,
}

pub(crate) async fn login(args: LoginArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("no password on stdin");
    }
    let login =
        RegistryLogin::new(&args.registry, &args.username, password).insecure(args.insecure);
    runtime(host).await?.login(login).await?;
    writeln!(std::io::stdout().lock(), "Login Succeeded")?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `locald logout`.
#[derive(Debug, clap::Args)]
pub(crate) struct LogoutArgs {
    /// The registry.
    registry: String,
}

pub(crate) async fn logout(args: LogoutArgs, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let removed = runtime(host).await?.logout(&args.registry).await?;
    let mut out = std::io::stdout().lock();
    if removed {
        writeln!(out, "Removed login credentials for {}", args.registry)?;
    } else {
        writeln!(out, "Not logged in to {}", args.registry)?;
    }
    Ok(ExitCode::SUCCESS)
}
