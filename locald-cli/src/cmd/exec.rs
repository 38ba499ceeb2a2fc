//! `locald exec`: run a command on the host (`locald exec -- CMD`) or in a running
//! container (`locald exec CONTAINER CMD`), streaming its output.
//!
//! The split: when the first word after the options names a container and no `--`
//! comes before it, the command runs in that container; otherwise on the host.

use std::{process::ExitCode, time::Duration};

use anyhow::{bail, Context};
use locald::{Command, ExitStatus, Process, Signal, Stdin, Stdio};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    task::JoinHandle,
};

/// Arguments of `locald exec`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exit status: the command's own, 128+N when signal N killed it, 124 after --timeout, \
127 when the program does not exist, 126 when it cannot be executed, 125 when locald \
itself failed.

Examples:
  locald exec -- uname -a
  locald exec --env GREETING=hi -- sh -c 'echo $GREETING'
  locald exec --timeout 5s -- make test
  locald exec web cat /etc/hostname      (in the running container \"web\")
  locald exec -it web sh                 (a shell on a terminal in \"web\")")]
pub(crate) struct Args {
    /// Set an environment variable (KEY=VALUE), or pass one through from here (KEY).
    #[arg(short, long = "env", value_name = "KEY[=VALUE]")]
    env: Vec<String>,

    /// Run in this directory.
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<std::path::PathBuf>,

    /// Kill the command and everything it started after this long (5, 1.5s, 500ms, 2m).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,

    /// Forward this process's stdin to the command.
    #[arg(short, long)]
    interactive: bool,

    /// Allocate a terminal (commands in containers only), sized as this one and
    /// resized with it.
    #[arg(short, long)]
    tty: bool,

    /// The program and its arguments.
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// Parses a duration: a number of seconds (`5`, `1.5`, as docker's `-t`) or what
/// humantime reads (`500ms`, `2m`, `1h 30m`).
pub(crate) fn parse_duration(input: &str) -> Result<Duration, String> {
    let s = input.trim();
    let duration = match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() && secs < 1e9 => Duration::from_secs_f64(secs),
        Ok(_) => return Err(format!("{input:?} must be more than zero")),
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("{input:?} is not a duration such as 5s, 500ms or 2m ({e})"))?,
    };
    if duration.is_zero() {
        return Err(format!("{input:?} must be more than zero"));
    }
    Ok(duration)
}

fn build_command(args: &Args) -> anyhow::Result<Command> {
    let (program, rest) = args.command.split_first().context("no command given")?;
    let mut cmd = Command::new(program.as_str()).args(rest.iter().cloned());
    for entry in &args.env {
        match entry.split_once('=') {
            Some((key, value)) => cmd = cmd.env(key, value),
            None => match std::env::var(entry) {
                Ok(value) => cmd = cmd.env(entry.as_str(), value),
                // Like docker: naming an unset variable passes nothing.
                Err(_) => cmd = cmd.env_remove(entry.as_str()),
            },
        }
    }
    if let Some(dir) = &args.workdir {
        cmd = cmd.current_dir(dir);
    }
    if let Some(timeout) = args.timeout {
        cmd = cmd.timeout(timeout);
    }
    if args.tty {
        cmd = match terminal_size() {
            Some(size) => cmd.terminal_size(size),
            None => cmd.tty(true),
        };
    }
    cmd = cmd
        .stdin(if args.interactive {
            Stdin::Piped
        } else {
            Stdin::Null
        })
        .stdout(Stdio::Piped)
        .stderr(Stdio::Piped);
    cmd.validate()?;
    Ok(cmd)
}

pub(crate) async fn pump(
    from: Option<impl AsyncRead + Unpin>,
    mut to: impl AsyncWrite + Unpin,
) -> std::io::Result<()> {
    if let Some(mut from) = from {
        match tokio::io::copy(&mut from, &mut to).await {
            Ok(_) => {}
            // Our reader went away (`locald exec ... | head`): stop copying quietly.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e),
        }
        to.flush().await?;
    }
    Ok(())
}

/// True when `--` came before the command on the command line: a host command.
fn dashdash_given() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let Some(at) = args.iter().position(|a| a == "exec") else {
        return false;
    };
    args[at + 1..]
        .iter()
        .find(|a| !a.starts_with('-') || *a == "--")
        .is_some_and(|a| a == "--")
}

pub(crate) async fn run(args: Args, host: Option<&str>) -> anyhow::Result<ExitCode> {
    let runtime = crate::cli::runtime(host).await?;
    let mut target = None;
    if args.command.len() >= 2
        && !dashdash_given()
        && runtime.info().supports(locald::Capability::Exec)
    {
        if let Ok(c) = runtime.inspect_container(&args.command[0]).await {
            target = Some(c.id);
        }
    }
    let mut args = args;
    if target.is_some() {
        args.command.remove(0);
    } else if args.tty {
        bail!("a terminal (-t) is made for commands in containers only: name a running container");
    }
    let command = build_command(&args)?;
    // The command leads its own process group, so a Ctrl-C at the terminal reaches
    // only locald: pass the usual termination signals on. Installed before the command
    // starts so that no signal can arrive in between and kill locald instead.
    let mut signals = Signals::new()?;
    tracing::info!(program = command.get_program(), runtime = %runtime.info().name, "exec");
    let mut process = match &target {
        Some(id) => runtime.exec(id, command).await?,
        None => runtime.spawn(command).await?,
    };

    // With a terminal, keystrokes go to the command as typed (Ctrl-C included).
    let _raw = (args.tty && args.interactive)
        .then(RawTerminal::enable)
        .flatten();
    let (status, [out, err]) = attach(&mut process, &mut signals, args.tty).await?;
    for task in [out, err] {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "copying command output"),
            Err(e) => bail!("output copier failed: {e}"),
        }
    }
    tracing::info!(%status, "command finished");
    Ok(ExitCode::from(status.shell_code().clamp(0, 255) as u8))
}

/// Connects `process` to this terminal until it ends: copies stdin to it (when piped),
/// its output to ours, and passes our termination signals on. Returns how it ended and
/// the output copiers, which may still be draining.
pub(crate) async fn attach(
    process: &mut Process,
    signals: &mut Signals,
    tty: bool,
) -> anyhow::Result<(ExitStatus, [JoinHandle<std::io::Result<()>>; 2])> {
    if let Some(mut stdin) = process.take_stdin() {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut stdin).await;
            let _ = stdin.shutdown().await;
        });
    }
    let out = tokio::spawn(pump(process.take_stdout(), tokio::io::stdout()));
    let err = tokio::spawn(pump(process.take_stderr(), tokio::io::stderr()));
    // This terminal's size changes reach the process's terminal.
    let mut resized = tty.then(Resized::new).and_then(Result::ok);
    let status = loop {
        let forward = tokio::select! {
            status = process.wait() => break status?,
            signal = signals.recv() => signal,
            () = Resized::recv(&mut resized) => {
                if let Some(size) = terminal_size() {
                    if let Err(e) = process.resize(size).await {
                        tracing::debug!(error = %e, "resizing the terminal");
                    }
                }
                continue;
            }
        };
        tracing::info!(signal = %forward, "forwarding signal");
        process.kill(forward).await?;
    };
    Ok((status, [out, err]))
}

/// The size of the terminal locald runs on (its stdout's, else its stdin's).
pub(crate) fn terminal_size() -> Option<locald::TerminalSize> {
    let (terminal_size::Width(cols), terminal_size::Height(rows)) =
        terminal_size::terminal_size_of(std::io::stdout())
            .or_else(|| terminal_size::terminal_size_of(std::io::stdin()))?;
    Some(locald::TerminalSize::new(rows, cols))
}

/// `SIGWINCH`: this terminal was resized.
#[cfg(unix)]
struct Resized(tokio::signal::unix::Signal);

#[cfg(unix)]
impl Resized {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        signal(SignalKind::window_change()).map(Resized)
    }

    /// The next resize; never, without a handler.
    async fn recv(this: &mut Option<Self>) {
        let Some(Resized(signal)) = this else {
            return std::future::pending().await;
        };
        if signal.recv().await.is_none() {
            *this = None;
            std::future::pending::<()>().await
        }
    }
}

#[cfg(not(unix))]
struct Resized;

#[cfg(not(unix))]
impl Resized {
    fn new() -> std::io::Result<Self> {
        Ok(Resized)
    }

    async fn recv(_: &mut Option<Self>) {
        std::future::pending().await
    }
}

/// The caller's terminal in raw mode, restored when dropped.
#[cfg(unix)]
pub(crate) struct RawTerminal(nix::sys::termios::Termios);

#[cfg(unix)]
impl RawTerminal {
    pub(crate) fn enable() -> Option<Self> {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let original = tcgetattr(&stdin).ok()?;
        let mut raw = original.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawTerminal(original))
    }
}

#[cfg(unix)]
impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

#[cfg(not(unix))]
pub(crate) struct RawTerminal;

#[cfg(not(unix))]
impl RawTerminal {
    pub(crate) fn enable() -> Option<Self> {
        None
    }
}

/// The termination signals locald passes on to the command it runs.
#[cfg(unix)]
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    pub(crate) fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    pub(crate) async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.int.recv() => Signal::INT,
            _ = self.term.recv() => Signal::TERM,
            _ = self.hup.recv() => Signal::HUP,
        }
    }
}

#[cfg(not(unix))]
pub(crate) struct Signals;

#[cfg(not(unix))]
impl Signals {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Signals)
    }

    pub(crate) async fn recv(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal::INT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(
            parse_duration("1s 500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
