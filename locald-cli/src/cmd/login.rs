//! `locald login` and `locald logout`.

use std::{io::Read, io::Write, process::ExitCode};

use anyhow::{bail, Context};
use locald::{native::image::ImageStore, Paths};

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

fn store() -> anyhow::Result<ImageStore> {
    Ok(ImageStore::open(&Paths::from_process_env())?)
}

pub(crate) async fn login(args: LoginArgs) -> anyhow::Result<ExitCode> {
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .context("reading the password from stdin")?;
    let password = password.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("no password on stdin");
    }
    store()?
        .login(&args.registry, &args.username, password, args.insecure)
        .await?;
    writeln!(std::io::stdout().lock(), "Login Succeeded")?;
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `locald logout`.
#[derive(Debug, clap::Args)]
pub(crate) struct LogoutArgs {
    /// The registry.
    registry: String,
}

pub(crate) async fn logout(args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let removed = store()?.logout(&args.registry)?;
    let mut out = std::io::stdout().lock();
    if removed {
        writeln!(out, "Removed login credentials for {}", args.registry)?;
    } else {
        writeln!(out, "Not logged in to {}", args.registry)?;
    }
    Ok(ExitCode::SUCCESS)
}
