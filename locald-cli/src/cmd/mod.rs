//! One module per subcommand; each parses nothing itself and calls the SDK.

pub(crate) mod daemon;
pub(crate) mod exec;
pub(crate) mod image;
pub(crate) mod info;
pub(crate) mod inspect;
pub(crate) mod kill;
pub(crate) mod login;
pub(crate) mod logs;
pub(crate) mod project;
#[cfg(target_os = "linux")]
pub(crate) mod proxy;
pub(crate) mod ps;
#[cfg(unix)]
pub(crate) mod psql;
pub(crate) mod rm;
pub(crate) mod run;
pub(crate) mod stop;
pub(crate) mod up;
pub(crate) mod vm;
pub(crate) mod wsl;
