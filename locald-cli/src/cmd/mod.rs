//! One module per subcommand; each parses nothing itself and calls the SDK.

pub(crate) mod daemon;
pub(crate) mod exec;
pub(crate) mod image;
pub(crate) mod info;
pub(crate) mod login;
