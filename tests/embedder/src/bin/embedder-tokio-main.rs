//! `#[tokio::main]` (multi-thread) and nothing else: no call before the runtime starts.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    locald_embedder::run().await
}
