//! Set-up shared by the tests of `locald::services` (included with `#[path]`).

use std::{path::Path, sync::Arc, time::Duration};

use locald::native::ProcessRuntime;
use locald::services::{Project, ServiceState, ServiceStatus, Supervisor, UpOptions};

/// How long a service may take to get where a test wants it.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// Writes `toml` as `dir/locald.toml` and loads it.
pub(crate) fn project(dir: &Path, toml: &str) -> Project {
    let file = dir.join("locald.toml");
    std::fs::write(&file, toml).unwrap();
    Project::load(&file).unwrap()
}

/// Brings the project in `toml` up on host processes, with logs in `dir/logs` and
/// data in `dir`.
pub(crate) async fn up(dir: &Path, toml: &str) -> Supervisor {
    project(dir, toml)
        .up(
            Arc::new(ProcessRuntime::new()),
            UpOptions::new(dir.join("logs")),
        )
        .await
        .unwrap()
}

/// Waits until `name`'s state is one `want` takes; panics with the statuses and the
/// service's log when it does not get there.
pub(crate) async fn settled(
    s: &Supervisor,
    name: &str,
    want: impl Fn(&ServiceState) -> bool,
) -> ServiceStatus {
    s.wait_for(name, WAIT, |st| want(&st.state))
        .await
        .unwrap_or_else(|| {
            let log = std::fs::read_to_string(s.log_file(name)).unwrap_or_default();
            panic!("{name} did not get there: {:?}\n{log}", s.status())
        })
}
