//! Running a container from an image: pull it (printing progress as it comes), run a
//! command in it, print what it said and exit with its code.
//!
//! The default image is locald's built-in `localhost/locald/busybox`, made from the
//! host's own busybox, so no registry is needed; the first argument names another
//! image and the rest the command. Containers run as root or, as a normal user, rootless:
//!
//! ```text
//! cargo build --example run_container
//! target/debug/examples/run_container                      # built-in image
//! target/debug/examples/run_container alpine:3 cat /etc/os-release
//! ```
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{collections::HashMap, process::ExitCode};

use locald::{ContainerSpec, ImageRef, PullOptions, PullProgress};
use tokio::io::AsyncReadExt;

fn main() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let image = args
        .next()
        .unwrap_or_else(|| "localhost/locald/busybox".into());
    let mut cmd: Vec<String> = args.collect();
    if cmd.is_empty() {
        // Exits with 3 to show that the code comes through.
        cmd = ["sh", "-c", "echo hello from $(hostname); exit 3"]
            .map(String::from)
            .into();
    }
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio.block_on(run(&image, cmd))
}

async fn run(image: &str, cmd: Vec<String>) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let runtime = locald::runtime()?;
    let reference: ImageRef = image.parse()?;

    // Progress arrives on a channel while the pull runs (the built-in image, made
    // locally, sends none); the channel closes when the pull ends.
    let (progress, mut events) = tokio::sync::mpsc::unbounded_channel();
    let printer = tokio::spawn(async move {
        let mut tenths = HashMap::new(); // per layer, to print every 10%
        while let Some(event) = events.recv().await {
            match event {
                PullProgress::Resolved { digest, layers } => {
                    println!("resolved {digest}: {layers} layer(s)")
                }
                PullProgress::LayerProgress { digest, done, size } => {
                    let tenth = done * 10 / size.max(1);
                    if tenths.insert(digest.clone(), tenth) != Some(tenth) {
                        println!("  {digest}: {done} of {size} bytes");
                    }
                }
                PullProgress::LayerDone { digest } => println!("  {digest}: done"),
                other => println!("  {other:?}"),
            }
        }
    });
    let options = PullOptions::default().progress(progress);
    let pulled = runtime.pull_image(&reference, options).await?;
    printer.await?;
    println!("pulled {} ({})", pulled.reference, pulled.digest);

    let spec = ContainerSpec::builder(image)
        .cmd(cmd)
        .auto_remove(true)
        .build()?;
    let mut container = runtime.run_container(spec).await?;
    let mut stdout = container.process().take_stdout().expect("stdout is piped");
    let mut stderr = container.process().take_stderr().expect("stderr is piped");
    let (mut out, mut err) = (String::new(), String::new());
    let (o, e, status) = tokio::join!(
        stdout.read_to_string(&mut out),
        stderr.read_to_string(&mut err),
        container.wait()
    );
    o?;
    e?;
    let status = status?;
    print!("{out}");
    eprint!("{err}");
    println!("container {} ended with {status}", container.name());
    Ok(ExitCode::from(status.shell_code() as u8))
}
