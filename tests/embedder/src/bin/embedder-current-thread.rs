//! `#[tokio::main(flavor = "current_thread")]`, calling `run_if_requested()` inside
//! the runtime, as the facade's documentation once suggested: harmless now.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    locald::native::run_if_requested();
    locald_embedder::run().await
}
