//! A runtime in another process: [`RemoteRuntime`] talks to a `locald daemon` and is a
//! `Runtime` like any other. This is how a macOS or Windows host reaches the daemon in
//! its Linux VM.
//!
//! It connects to the daemon `LOCALD_HOST` names (`unix:///path/locald.sock`,
//! `tcp://127.0.0.1:PORT` with `LOCALD_TOKEN`), else to one on the default socket, else
//! it starts `locald daemon --stdio` as a bridge for each connection (the `locald`
//! program is `LOCALD_BIN`, default `locald` on `PATH`). Then it says what the daemon
//! serves and runs a command through it:
//!
//! ```text
//! cargo build -p locald-cli && LOCALD_BIN=target/debug/locald cargo run --example remote
//! ```
#![allow(clippy::print_stdout)]

use locald::remote::{Host, RemoteRuntime};
use locald::{Command, Paths, Runtime};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let socket = Paths::from_process_env().runtime_dir().join("locald.sock");
    let host = if let Ok(host) = std::env::var("LOCALD_HOST") {
        let host: Host = host.parse()?;
        match std::env::var("LOCALD_TOKEN") {
            Ok(token) => host.with_token(token.trim()),
            Err(_) => host,
        }
    } else if socket.exists() {
        Host::Unix(socket)
    } else {
        let locald = std::env::var("LOCALD_BIN").unwrap_or_else(|_| "locald".into());
        Host::command(locald, ["daemon", "--stdio"])
    };
    println!("connecting to {host}");
    let remote = RemoteRuntime::connect(host).await?;

    // What the daemon said about itself when it answered.
    let daemon = remote.daemon();
    let runtime = &daemon.runtime;
    println!(
        "daemon: locald {} (API {}, pid {})",
        daemon.version, daemon.api_version, daemon.pid
    );
    println!(
        "serves: the {} runtime on {}",
        runtime.name, runtime.platform
    );
    for capability in &runtime.capabilities {
        println!("  can: {capability}");
    }

    // The command runs where the daemon runs.
    let output = remote
        .run_command(Command::new("sh").args(["-c", "echo hello from pid $$"]))
        .await?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    println!("finished with {}", output.status);
    Ok(())
}
