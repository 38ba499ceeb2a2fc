//! What the embedder programs share: run one container from the built-in image and
//! print what it said, as a user's tool would.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::ExitCode;

use locald::ContainerSpec;
use tokio::io::AsyncReadExt;

/// Runs `sh -c SCRIPT` (the program's first argument) in a container from the
/// built-in image with whatever runtime `locald::runtime()` picks, prints its stdout
/// and stderr and exits with its code; prints the error and exits with 125 when
/// locald fails.
pub async fn run() -> ExitCode {
    let script = std::env::args().nth(1).unwrap_or_else(|| "echo hi".into());
    match run_script(&script).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::from(125)
        }
    }
}

async fn run_script(script: &str) -> Result<ExitCode, locald::Error> {
    let runtime = locald::runtime()?;
    let spec = ContainerSpec::builder("localhost/locald/busybox")
        .cmd(["sh", "-c", script])
        .auto_remove(true)
        .build()?;
    let mut container = runtime.run_container(spec).await?;
    let mut stdout = container.process().take_stdout().expect("stdout is piped");
    let mut stderr = container.process().take_stderr().expect("stderr is piped");
    let (mut out, mut err) = (String::new(), String::new());
    let (_, _, status) = tokio::join!(
        stdout.read_to_string(&mut out),
        stderr.read_to_string(&mut err),
        container.wait()
    );
    let status = status?;
    print!("{out}");
    eprint!("{err}");
    Ok(ExitCode::from(status.shell_code() as u8))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
