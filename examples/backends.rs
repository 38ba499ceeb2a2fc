//! Choosing a backend: what `locald::runtime()` picks on this machine, and every
//! backend locald has with what it can do here, or why it cannot.
//!
//! ```text
//! cargo run --example backends
//! ```
#![allow(clippy::print_stdout)]

use locald::{Capability, Platform};

fn main() {
    let platform = Platform::detect();
    println!("platform: {platform}");

    // Every backend, whether it can serve here, and why (not).
    for backend in locald::backends(platform) {
        let mark = if backend.available { "yes" } else { "no " };
        println!("  {mark} {:<10} {}", backend.name, backend.detail);
    }

    // The one `locald::runtime()` picks, and what it says it can do. Asking costs
    // nothing: nothing starts until the runtime is used.
    match locald::runtime() {
        Ok(runtime) => {
            let info = runtime.info();
            println!(
                "locald::runtime() picks: {} on {}",
                info.name, info.platform
            );
            for capability in [
                Capability::Commands,
                Capability::Containers,
                Capability::Images,
                Capability::Exec,
                Capability::SafeMode,
            ] {
                let can = if info.supports(capability) {
                    "yes"
                } else {
                    "no "
                };
                println!("  {can} {capability}");
            }
        }
        Err(err) => println!("no runtime for this platform: {err}"),
    }
}
