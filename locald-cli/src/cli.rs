//! Argument parsing, logging and exit codes shared by every subcommand.

use std::{process::ExitCode, sync::Arc};

use clap::{Parser, Subcommand};
use locald::Runtime;
use tracing_subscriber::EnvFilter;

use crate::cmd;

/// Exit code when locald itself fails (docker's convention).
pub(crate) const EXIT_LOCALD_ERROR: u8 = 125;

/// Run Linux commands and OCI containers on any laptop, without Docker Desktop.
#[derive(Debug, Parser)]
#[command(name = "locald", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    /// Give it before the subcommand: after `run`, `-v` mounts a volume, as in docker.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Work through the locald daemon at this address (unix:///path or
    /// tcp://127.0.0.1:PORT) instead of in this process.
    #[arg(
        short = 'H',
        long,
        global = true,
        env = "LOCALD_HOST",
        value_name = "ADDRESS"
    )]
    host: Option<String>,

    #[command(subcommand)]
    command: Commands,
}

#[derive(Debug, Subcommand)]
enum Commands {
    /// Show the platform, the backends and kernel features available here, and where
    /// locald keeps its data.
    Info(cmd::info::Args),
    /// Run a command on the host (`exec -- CMD`) or in a running container
    /// (`exec CONTAINER CMD`) and exit with its exit code.
    Exec(cmd::exec::Args),
    /// Pull an image from a registry.
    Pull(cmd::image::PullArgs),
    /// List images.
    Images(cmd::image::ImagesArgs),
    /// Untag images (their content goes with `locald image prune`).
    Rmi(cmd::image::RmiArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(cmd::image::ImageCommand),
    /// Load images from an OCI image layout directory or tar.
    Load(cmd::image::LoadArgs),
    /// Make a single-layer image from a root filesystem directory or tar.
    Import(cmd::image::ImportArgs),
    /// Store credentials for a registry.
    Login(cmd::login::LoginArgs),
    /// Remove stored credentials for a registry.
    Logout(cmd::login::LogoutArgs),
    /// Run a container and exit with its exit code (like `docker run`).
    Run(Box<cmd::run::Args>),
    /// List containers.
    Ps(cmd::ps::Args),
    /// Print a container's output.
    Logs(cmd::logs::Args),
    /// Stop containers: SIGTERM, then SIGKILL after a grace period.
    Stop(cmd::stop::Args),
    /// Send a signal to containers.
    Kill(cmd::kill::Args),
    /// Remove containers.
    Rm(cmd::rm::Args),
    /// Show a container's details as JSON.
    Inspect(cmd::inspect::Args),
    /// Run a project's services from its locald.toml, attached (Ctrl-C stops them).
    Up(cmd::up::Args),
    /// Stop a project's services and forget it (the daemon's).
    Down(cmd::project::DownArgs),
    /// Show a project's services (or every project's) in the daemon.
    Status(cmd::project::StatusArgs),
    /// Restart services of a project in the daemon.
    Restart(cmd::project::ServiceArgs),
    /// Start stopped services of a project in the daemon.
    Start(cmd::project::ServiceArgs),
    /// Print (and open) a one-time link to the daemon's dashboard.
    Dashboard(cmd::project::DashboardArgs),
    /// Open psql on a project's managed PostgreSQL (arguments for psql after --).
    #[cfg(unix)]
    Psql(cmd::psql::Args),
    /// As root, once: install the setuid helper that lets your user's locald serve
    /// ports 80 and 443 and keep its names in /etc/hosts.
    #[cfg(target_os = "linux")]
    Setup(cmd::proxy::SetupArgs),
    /// Install the local CA's root in the system store and browser profiles, so
    /// `https://*.localhost` pages served by locald are trusted.
    #[cfg(target_os = "linux")]
    Trust,
    /// Remove the local CA's root from where `locald trust` put it.
    #[cfg(target_os = "linux")]
    Untrust,
    /// Serve HTTPS for `*.localhost` names to local ports (the daemon runs the same proxy).
    #[cfg(target_os = "linux")]
    Proxy(cmd::proxy::Args),
    /// Serve the runtime over the daemon API, or tell whether a daemon runs.
    Daemon(cmd::daemon::Args),
    /// Manage locald-vm, the Lima VM that runs Linux work on macOS.
    Vm(cmd::vm::Args),
    /// Manage the WSL2 distribution locald runs Linux work in (Windows).
    #[command(subcommand)]
    Wsl(cmd::wsl::WslCommand),
}

/// The runtime commands use: in this process, or through the daemon at `host`
/// (`--host`, `LOCALD_HOST`).
pub(crate) async fn runtime(host: Option<&str>) -> anyhow::Result<Arc<dyn Runtime>> {
    match host.filter(|h| !h.is_empty()) {
        None => Ok(locald::runtime()?),
        Some(host) => cmd::daemon::connect(host).await,
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Parses the command line, runs the subcommand and turns its result into an exit code.
pub fn main() -> ExitCode {
    let timing = locald::native::timing::phase("cli: arguments + logging + async runtime");
    locald::native::timing::since_spawn("cli: exec until main");
    // `locald run` starts a container right away: fork the container helpers' forker
    // first, while this process is a single thread and has written little memory
    // (each page written after the fork is copied), so that the helper is forked from
    // it instead of executed. Only for the plain form `locald run ...` without a daemon
    // host; the call does nothing without root.
    let verb = std::env::args_os().nth(1);
    let local = std::env::var_os("LOCALD_HOST").is_none_or(|h| h.is_empty());
    if local && verb.as_deref().is_some_and(|a| a == "run") {
        locald::native::prefork_shim_forker();
    }
    // The kernel's wait before a process's first move into a container's cgroups then
    // passes while this process parses and prepares (`run`, `exec`).
    if local && verb.as_deref().is_some_and(|a| a == "run" || a == "exec") {
        locald::native::prime_cgroup_attach();
    }
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let mut builder = match cli.command {
        // The daemon serves many clients at once: give it every core.
        Commands::Daemon(_) => tokio::runtime::Builder::new_multi_thread(),
        #[cfg(target_os = "linux")]
        Commands::Proxy(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            report(&anyhow::Error::new(err).context("cannot start the async runtime"));
            return ExitCode::from(EXIT_LOCALD_ERROR);
        }
    };
    let host = cli.host.as_deref();
    timing.end();
    let result = runtime.block_on(async {
        match cli.command {
            Commands::Info(args) => cmd::info::run(args, host).await,
            Commands::Exec(args) => cmd::exec::run(args, host).await,
            Commands::Daemon(args) => cmd::daemon::run(args, host).await,
            Commands::Wsl(cmd) => cmd::wsl::run(cmd).await,
            Commands::Pull(args) => cmd::image::pull(args, host).await,
            Commands::Images(args) => cmd::image::images(args, host).await,
            Commands::Rmi(args) => cmd::image::rmi(args, host).await,
            Commands::Image(cmd) => cmd::image::image(cmd, host).await,
            Commands::Load(args) => cmd::image::load(args, host).await,
            Commands::Import(args) => cmd::image::import(args, host).await,
            Commands::Login(args) => cmd::login::login(args, host).await,
            Commands::Logout(args) => cmd::login::logout(args, host).await,
            Commands::Run(args) => cmd::run::run(*args, host).await,
            Commands::Up(args) => cmd::up::run(args, host).await,
            Commands::Down(args) => cmd::project::down(args, host).await,
            Commands::Status(args) => cmd::project::status(args, host).await,
            Commands::Restart(args) => cmd::project::restart(args, host).await,
            Commands::Start(args) => cmd::project::start(args, host).await,
            Commands::Dashboard(args) => cmd::project::dashboard(args, host).await,
            #[cfg(unix)]
            Commands::Psql(args) => cmd::psql::run(args),
            Commands::Ps(args) => cmd::ps::run(args, host).await,
            Commands::Logs(args) => cmd::logs::run(args, host).await,
            Commands::Stop(args) => cmd::stop::run(args, host).await,
            Commands::Kill(args) => cmd::kill::run(args, host).await,
            Commands::Rm(args) => cmd::rm::run(args, host).await,
            Commands::Inspect(args) => cmd::inspect::run(args, host).await,
            Commands::Vm(args) => cmd::vm::run(args).await,
            #[cfg(target_os = "linux")]
            Commands::Setup(args) => cmd::proxy::setup(args),
            #[cfg(target_os = "linux")]
            Commands::Trust => cmd::proxy::trust(),
            #[cfg(target_os = "linux")]
            Commands::Untrust => cmd::proxy::untrust(),
            #[cfg(target_os = "linux")]
            Commands::Proxy(args) => cmd::proxy::run(args).await,
        }
    });
    // A blocking stdin reader may still wait for input nobody will send: do not wait
    // for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        // Whoever read our output stopped (`locald info --json | head`): that is not
        // an error worth a message.
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::from(exit_code_for(&err))
        }
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints an error and its causes on one line, as `locald: what: why`.
#[allow(clippy::print_stderr)]
pub(crate) fn report(err: &anyhow::Error) {
    eprintln!("locald: {err:#}");
}

/// The exit code for a failure, following shells and `docker run`: 127 when the
/// program does not exist, 126 when it cannot be executed, 124 after a timeout (as
/// coreutils' `timeout`), 125 when locald itself failed.
pub(crate) fn exit_code_for(err: &anyhow::Error) -> u8 {
    match err.downcast_ref::<locald::Error>() {
        Some(locald::Error::ProgramNotFound { .. }) => 127,
        Some(locald::Error::PermissionDenied { .. }) => 126,
        Some(locald::Error::Timeout { .. }) => 124,
        _ => EXIT_LOCALD_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }
}
