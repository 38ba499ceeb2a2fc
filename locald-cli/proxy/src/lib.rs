//! locald's HTTPS proxy for local names (`<service>.<project>.localhost`) and the local
//! certificate authority whose leaves it serves.
//!
//! [`ca::LocalCa`] keeps a name-constrained root under `$LOCALD_HOME/ca/` and signs a
//! certificate per server name on demand; [`proxy::Proxy`] routes by host name through a
//! [`proxy::RouteTable`] that whoever knows the services fills and replaces at will.

pub mod ca;
#[cfg(target_os = "linux")]
pub mod privhelper;
pub mod proxy;
pub mod trust;

pub use ca::{CaError, LocalCa};
pub use proxy::{Proxy, Route, RouteTable, HEADER_TIMEOUT};
