//! `ProcessRuntime::run_command("true")` against a bare `tokio::process::Command`
//! doing the same work (stdin null, stdout and stderr captured), in the same run.
//!
//! `scripts/bench process` runs this and prints the ratio of the medians.

use criterion::{criterion_group, criterion_main, Criterion};
use locald::{native::ProcessRuntime, Command, Runtime};

fn run_true(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let locald = ProcessRuntime::new();
    let mut group = c.benchmark_group("run_true");
    group.bench_function("tokio", |b| {
        b.to_async(&rt).iter(|| async {
            let out = tokio::process::Command::new("true")
                .output()
                .await
                .expect("true runs");
            assert!(out.status.success());
        })
    });
    group.bench_function("locald", |b| {
        b.to_async(&rt).iter(|| async {
            let out = locald
                .run_command(Command::new("true"))
                .await
                .expect("true runs");
            assert!(out.status.success());
        })
    });
    group.finish();
}

criterion_group!(benches, run_true);
criterion_main!(benches);
