//! Safe Mode for an untrusted command: the same probe runs in a default container and
//! in a Safe Mode one (`ContainerSpec::builder(..).safe(true)`), and prints what each
//! may do. In Safe Mode the command has no capabilities (so it cannot, say, chown a
//! file), cannot gain privileges, and sees a read-only root with a writable `/tmp`.
//!
//! It uses locald's built-in image, so no registry is needed. Containers run as root or, as a normal user, rootless:
//!
//! ```text
//! cargo build --example safe_mode
//! target/debug/examples/safe_mode
//! ```
#![allow(clippy::print_stdout)]

use locald::{ContainerSpec, Runtime};

/// What the untrusted command tries: each line says what it could do.
const PROBE: &str = "\
    echo \"capabilities: $(grep CapEff /proc/self/status | cut -f2)\"; \
    echo \"no new privileges: $(grep NoNewPrivs /proc/self/status | cut -f2)\"; \
    touch /evil 2>/dev/null && echo 'write /: allowed' || echo 'write /: denied'; \
    touch /tmp/f 2>/dev/null && echo 'write /tmp: allowed' || echo 'write /tmp: denied'; \
    chown 1:1 /tmp/f 2>/dev/null && echo 'chown: allowed' || echo 'chown: denied'";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async {
        let runtime = locald::runtime()?;
        for safe in [false, true] {
            println!("{}:", if safe { "safe mode" } else { "default" });
            print!("{}", probe(&*runtime, safe).await?);
        }
        Ok(())
    })
}

/// Runs the probe in a fresh container of the built-in image and returns its output.
async fn probe(runtime: &dyn Runtime, safe: bool) -> Result<String, locald::Error> {
    let spec = ContainerSpec::builder("localhost/locald/busybox")
        .cmd(["sh", "-c", PROBE])
        .safe(safe)
        .auto_remove(true)
        .build()?;
    let (_id, _name, process) = runtime.run_container(spec).await?.into_parts();
    let output = process.output().await?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        println!("  the probe failed with {}: {err}", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| format!("  {line}\n"))
        .collect())
}
