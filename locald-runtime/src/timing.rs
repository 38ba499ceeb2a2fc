//! A tiny per-phase timing recorder, for `scripts/bench-containers --phases`.
//!
//! Off unless [`PHASES_ENV`] names a file: then every [`phase`] guard appends one JSON
//! line `{"phase":"…","ms":…,"pid":…}` to it when it ends. The container shim, the
//! CLI and the SDK all record into the same file (the variable is inherited), so one
//! container's start is seen across processes. Each line is one `write` to a file
//! opened for appending, so lines from concurrent processes do not interleave.
//!
//! [`since_spawn`] measures a time that spans two processes (the shim's `exec`): the
//! parent puts the monotonic clock's reading in [`SPAWNED_AT_ENV`] of the child
//! ([`spawned_at`]); the child records the time from then to its call.
//!
//! ```
//! let _guard = locald_runtime::timing::phase("example");
//! // … the work being timed …
//! ```

use std::{io::Write, path::PathBuf, sync::OnceLock, time::Instant};

/// Names the file phases are appended to; unset (the default), nothing is recorded.
pub const PHASES_ENV: &str = "LOCALD_PHASES";

/// The monotonic clock's reading (ns) when a parent spawned this process.
pub const SPAWNED_AT_ENV: &str = "LOCALD_PHASES_SPAWNED_AT";

fn target() -> Option<&'static PathBuf> {
    static TARGET: OnceLock<Option<PathBuf>> = OnceLock::new();
    TARGET
        .get_or_init(|| std::env::var_os(PHASES_ENV).map(PathBuf::from))
        .as_ref()
}

/// True when phases are being recorded.
pub fn enabled() -> bool {
    target().is_some()
}

/// Times the named phase until the returned guard is dropped.
#[must_use = "the phase ends when the guard is dropped"]
pub fn phase(name: &'static str) -> Phase {
    Phase {
        name,
        start: enabled().then(Instant::now),
    }
}

/// A phase being timed (see [`phase`]); recorded when dropped.
#[derive(Debug)]
pub struct Phase {
    name: &'static str,
    start: Option<Instant>,
}

impl Phase {
    /// Ends the phase now (the same as dropping it).
    pub fn end(self) {}
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(start) = self.start {
            record(self.name, start.elapsed().as_secs_f64() * 1000.0);
        }
    }
}

/// Appends one measurement, in milliseconds, when phases are being recorded.
pub fn record(name: &str, ms: f64) {
    let Some(path) = target() else {
        return;
    };
    let line = format!(
        "{{\"phase\":\"{}\",\"ms\":{ms:.4},\"pid\":{}}}\n",
        name.replace(['"', '\\'], "_"),
        std::process::id()
    );
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The monotonic clock in nanoseconds, comparable between processes of one boot.
fn monotonic_ns() -> Option<u64> {
    #[cfg(unix)]
    {
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
        Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The environment entry to give a child when spawning it, so that it can
/// [`since_spawn`]; `None` when phases are not recorded.
pub fn spawned_at() -> Option<(&'static str, String)> {
    if !enabled() {
        return None;
    }
    monotonic_ns().map(|ns| (SPAWNED_AT_ENV, ns.to_string()))
}

/// In a child spawned with [`spawned_at`]: records `name` as the time from the spawn
/// until now.
pub fn since_spawn(name: &str) {
    if !enabled() {
        return;
    }
    let at = std::env::var(SPAWNED_AT_ENV)
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    if let (Some(at), Some(now)) = (at, monotonic_ns()) {
        record(name, now.saturating_sub(at) as f64 / 1e6);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn without_the_variable_nothing_is_timed() {
        // The test process does not set LOCALD_PHASES.
        if std::env::var_os(super::PHASES_ENV).is_none() {
            assert!(super::phase("x").start.is_none());
            assert!(super::spawned_at().is_none());
        }
    }
}
