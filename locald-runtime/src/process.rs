//! The host-process runtime.

use async_trait::async_trait;
use locald_core::{Capability, Command, Output, Platform, Process, Result, Runtime, RuntimeInfo};

/// Runs commands directly on the host.
///
/// Each command leads a new process group. A [`timeout`](Command::timeout) kills the
/// whole group with SIGKILL; so does dropping a spawned [`Process`] that was not waited
/// for.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    platform: Platform,
}

impl Default for ProcessRuntime {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessRuntime {
    /// A runtime for this host.
    pub fn new() -> Self {
        ProcessRuntime {
            platform: Platform::detect(),
        }
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn info(&self) -> RuntimeInfo {
        let mut caps = vec![];
        if cfg!(unix) {
            caps.push(Capability::Commands);
        }
        RuntimeInfo::new("process", self.platform, caps)
    }

    async fn spawn(&self, command: Command) -> Result<Process> {
        #[cfg(unix)]
        {
            crate::process_unix::spawn(command)
        }
        #[cfg(not(unix))]
        {
            let _ = command;
            Err(self.info().unsupported(Capability::Commands))
        }
    }

    async fn run_command(&self, command: Command) -> Result<Output> {
        #[cfg(unix)]
        {
            crate::process_unix::run(command).await
        }
        #[cfg(not(unix))]
        {
            let _ = command;
            Err(self.info().unsupported(Capability::Commands))
        }
    }
}
