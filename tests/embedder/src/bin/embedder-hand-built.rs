//! A hand-built multi-thread runtime whose threads exist before locald is used.

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(locald_embedder::run())
}
