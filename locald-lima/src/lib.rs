//! locald's macOS backend: Linux work runs in `locald-vm`, a Lima instance that locald
//! downloads (pinned and verified) into `~/.local/share/locald/tools/` and manages
//! itself.
//!
//! Status: the VM life cycle and command proxying are not built yet. [`LimaRuntime`]
//! exists so the `locald` facade and embedders can name it today; every call returns
//! [`Error::Unsupported`](locald_core::Error::Unsupported) until then.

use async_trait::async_trait;
use locald_core::{Capability, Command, Platform, Process, Result, Runtime, RuntimeInfo};

/// The name of the Lima instance locald manages.
pub const VM_NAME: &str = "locald-vm";

/// Runs Linux work in the `locald-vm` Lima instance.
#[derive(Debug, Clone, Default)]
pub struct LimaRuntime {
    _private: (),
}

impl LimaRuntime {
    /// A runtime for the `locald-vm` instance.
    pub fn new() -> Self {
        LimaRuntime::default()
    }
}

#[async_trait]
impl Runtime for LimaRuntime {
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo::new("lima", Platform::Macos, [])
    }

    async fn spawn(&self, command: Command) -> Result<Process> {
        let _ = command;
        Err(self.info().unsupported(Capability::Commands))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn says_what_it_cannot_do_yet() {
        let rt = LimaRuntime::new();
        let err = rt.run_command(Command::new("true")).await.unwrap_err();
        assert!(err.is_unsupported());
        assert_eq!(
            err.to_string(),
            "running commands is not supported by the lima runtime on macOS"
        );
    }
}
