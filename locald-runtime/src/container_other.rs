//! Containers need a Linux kernel: on other platforms the container runtime runs host
//! commands and answers every container call with a clear "unsupported" error.

use async_trait::async_trait;
use locald_core::{Command, Platform, Process, Result, Runtime, RuntimeInfo};

/// The argument (`argv[1]`) that turns an executable into the container shim.
pub const SHIM_ARG: &str = "__locald-shim";

/// Does nothing: there is no container shim on this platform.
pub fn run_if_requested() {}

/// Does nothing: there is no container shim on this platform.
pub fn prefork_shim_forker() {}

/// Does nothing: there are no cgroups on this platform.
pub fn prime_cgroup_attach() {}

/// The shim's entry point; on this platform it always fails.
pub fn shim_main(_args: &[String]) -> i32 {
    2
}

/// The container runtime; containers are unsupported off Linux.
#[derive(Debug, Clone, Default)]
pub struct ContainerRuntime {
    inner: crate::ProcessRuntime,
}

impl ContainerRuntime {
    /// A runtime for this host.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Runtime for ContainerRuntime {
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo::new(
            "container",
            Platform::detect(),
            self.inner.info().capabilities,
        )
    }

    async fn spawn(&self, command: Command) -> Result<Process> {
        self.inner.spawn(command).await
    }
}
