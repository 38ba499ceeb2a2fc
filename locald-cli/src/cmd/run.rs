//! `locald run`: create and start a container, attach to it, and exit with its code.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use locald::{native::timing, ContainerSpec, NetworkMode};

use super::exec::{attach, terminal_size, RawTerminal, Signals};

/// Arguments of `locald run`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit status: the container's own, 128+N when signal N killed it, 125 when locald \
itself failed, 127 when the command is not in the image.

Examples:
  locald run --rm --rootfs /srv/rootfs sh -c 'echo hi'
  locald run -d --name web -p 8080:80 --rootfs /srv/rootfs httpd -f -p 80
  locald run --rm --safe --memory 64m --pids-limit 32 --rootfs /srv/rootfs sh")]
pub(crate) struct Args {
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the container id.
    #[arg(short, long)]
    detach: bool,
    /// Keep stdin open and forward this process's stdin to the container.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    tty: bool,
    /// Name the container.
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to pass this one through).
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,
    /// Mount a host path or named volume: SRC:DST[:ro].
    #[arg(short, long = "volume", value_name = "SRC:DST[:ro]")]
    volume: Vec<String>,
    /// Mount a tmpfs: DST[:size=..,mode=..].
    #[arg(long, value_name = "DST[:OPTS]")]
    tmpfs: Vec<String>,
    /// Publish a container port on the host's loopback: [IP:]HOST:CONTAINER.
    #[arg(short, long = "publish", value_name = "[IP:]HOST:CONTAINER")]
    publish: Vec<String>,
    /// Memory limit (512m, 1g).
    #[arg(short, long)]
    memory: Option<String>,
    /// CPU limit (0.5, 2).
    #[arg(long)]
    cpus: Option<String>,
    /// Most processes at once (-1: no limit).
    #[arg(long, allow_negative_numbers = true)]
    pids_limit: Option<i64>,
    /// Network: none (loopback only), host, or private (loopback plus published ports).
    #[arg(long, value_name = "none|host|private")]
    network: Option<NetworkMode>,
    /// User: NAME, UID, NAME:GROUP or UID:GID.
    #[arg(short, long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<std::path::PathBuf>,
    /// Replace the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Set the hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Mount the root filesystem read-only.
    #[arg(long)]
    read_only: bool,
    /// Safe Mode: no capabilities, no_new_privs, seccomp, read-only root, private
    /// network, user namespace where possible.
    #[arg(long)]
    safe: bool,
    /// Use this directory as the root filesystem instead of an image (it is not
    /// modified: the container writes to an overlay).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<std::path::PathBuf>,
    /// When the image must be pulled first, allow plain HTTP or an unverified
    /// certificate for its registry.
    #[arg(long)]
    insecure: bool,
    /// The image (unless --rootfs), then the command and its arguments.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [CMD]"
    )]
    args: Vec<String>,
}

fn build_spec(args: &Args) -> anyhow::Result<ContainerSpec> {
    let (mut b, cmd) = match &args.rootfs {
        Some(dir) => {
            let dir = std::path::absolute(dir).context("resolving --rootfs")?;
            (ContainerSpec::builder_from_rootfs(dir), args.args.clone())
        }
        None => {
            let (image, rest) = args
                .args
                .split_first()
                .context("no image given (or use --rootfs DIR)")?;
            (ContainerSpec::builder(image.as_str()), rest.to_vec())
        }
    };
    if !cmd.is_empty() {
        b = b.cmd(cmd);
    }
    if let Some(ep) = &args.entrypoint {
        b = b.entrypoint([ep.as_str()]);
    }
    for e in &args.env {
        match e.split_once('=') {
            Some((k, v)) => b = b.env(k, v),
            None => {
                if let Ok(v) = std::env::var(e) {
                    b = b.env(e.as_str(), v);
                }
            }
        }
    }
    for v in &args.volume {
        let v = match v.split_once(':') {
            // A relative host path is taken from the current directory, as docker does.
            Some((src, rest)) if src.starts_with('.') => {
                format!("{}:{rest}", std::path::absolute(src)?.display())
            }
            _ => v.clone(),
        };
        b = b.volume(v);
    }
    for t in &args.tmpfs {
        b = b.tmpfs(t.as_str());
    }
    for p in &args.publish {
        b = b.publish(p.as_str());
    }
    if let Some(m) = &args.memory {
        b = b.memory(m.as_str());
    }
    if let Some(c) = &args.cpus {
        b = b.cpus(c.as_str());
    }
    if let Some(p) = args.pids_limit {
        b = b.pids_limit(p);
    }
    if let Some(n) = args.network {
        b = b.network(n);
    }
    if let Some(u) = &args.user {
        b = b.user(u.as_str());
    }
    if let Some(w) = &args.workdir {
        b = b.workdir(w.clone());
    }
    if let Some(h) = &args.hostname {
        b = b.hostname(h.as_str());
    }
    if let Some(n) = &args.name {
        b = b.name(n.as_str());
    }
    if args.rootfs.is_none() {
        b = b.insecure(args.insecure);
    }
    if let Some(size) = terminal_size().filter(|_| args.tty) {
        b = b.terminal_size(size);
    }
    b = b
        .read_only(args.read_only)
        .safe(args.safe)
        .tty(args.tty)
        .stdin(args.interactive)
        // Detached containers remove themselves; an attached run removes the container
        // itself after reading how it ended.
        .auto_remove(args.rm && args.detach);
    Ok(b.build()?)
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub(crate) async fn run(args: Args, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let t = timing::phase("cli: spec + runtime + signals");
    let spec = build_spec(&args)?;
    let runtime = crate::cli::runtime(host).await?;
    let mut signals = Signals::new()?;
    t.end();
    // Like docker run, the runtime pulls an image that is not stored; say so first.
    let t = timing::phase("cli: image pre-check (list_images)");
    let missing = match &spec.source {
        locald::ContainerSource::Image(image) => runtime
            .list_images()
            .await
            .ok()
            .filter(|stored| !stored.iter().any(|i| &i.reference == image))
            .map(|_| image.clone()),
        _ => None,
    };
    t.end();
    if let Some(image) = &missing {
        eprintln!("Unable to find image '{}' locally", image.familiar());
    }
    let t = timing::phase("cli: run_container (total)");
    let mut handle = runtime.run_container(spec).await?;
    t.end();
    if let Some(image) = missing {
        let pulled = runtime.list_images().await?;
        if let Some(pulled) = pulled.iter().find(|i| i.reference == image) {
            eprintln!("Digest: {}", pulled.digest);
        }
    }
    let id = handle.id().to_owned();
    if args.detach {
        println!("{id}");
        return Ok(ExitCode::SUCCESS);
    }
    // With a terminal, keystrokes go to the container as typed (Ctrl-C included).
    let _raw = if args.tty {
        RawTerminal::enable()
    } else {
        None
    };
    let t = timing::phase("cli: attach until the exit");
    let (status, [out, err]) = attach(handle.process(), &mut signals, args.tty).await?;
    for task in [out, err] {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    t.end();
    let t = timing::phase("cli: inspect after exit");
    let summary = runtime.inspect_container(&id).await.ok();
    t.end();
    if summary.as_ref().is_some_and(|s| s.oom_killed) {
        eprintln!(
            "locald: container {} was killed by the out-of-memory killer (memory limit reached)",
            &id[..12]
        );
    }
    if args.rm {
        let _t = timing::phase("cli: remove_container (total)");
        runtime
            .remove_container(&id, true)
            .await
            .with_context(|| format!("removing container {}", &id[..12]))?;
    }
    Ok(ExitCode::from(status.shell_code().clamp(0, 255) as u8))
}
