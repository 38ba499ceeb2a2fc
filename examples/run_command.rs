//! Embedding locald: pick the runtime for this platform, run a command, print what it
//! said, then stream a second command's output line by line.
//!
//! ```text
//! cargo run --example run_command
//! ```
#![allow(clippy::print_stdout)]

use std::time::Duration;

use locald::{Command, Stdio};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The backend that fits this platform: host processes on Linux and macOS, WSL2 on
    // Windows. Any `Arc<dyn Runtime>` works the same way below.
    let runtime = locald::runtime()?;
    let info = runtime.info();
    println!("runtime: {} on {}", info.name, info.platform);

    // Run to completion and capture the output.
    let output = runtime
        .run_command(
            Command::new("uname")
                .arg("-sr")
                .timeout(Duration::from_secs(10)),
        )
        .await?;
    println!(
        "uname said {:?} ({})",
        String::from_utf8_lossy(&output.stdout).trim(),
        output.status
    );

    // Start a command and read its output as it comes.
    let mut process = runtime
        .spawn(
            Command::new("sh")
                .args(["-c", "for i in 1 2 3; do echo tick $i; sleep 0.1; done"])
                .stdout(Stdio::Piped),
        )
        .await?;
    let mut lines = BufReader::new(process.take_stdout().expect("stdout is piped")).lines();
    while let Some(line) = lines.next_line().await? {
        println!("streamed: {line}");
    }
    println!("finished with {}", process.wait().await?);
    Ok(())
}
