//! Describing a container ([`ContainerSpec`], built with [`ContainerSpecBuilder`] from
//! the strings of a `docker run` command line, with its [`Mount`]s and
//! [`PortMapping`]s) and holding a running one ([`ContainerHandle`]).

mod builder;
mod handle;
mod mounts;
mod ports;
mod spec;

pub use builder::ContainerSpecBuilder;
pub use handle::{ContainerHandle, ContainerState, ContainerSummary, LogOptions, LogStream};
pub use mounts::{Mount, MountSource};
pub use ports::{PortMapping, Protocol};
pub use spec::{ContainerSource, ContainerSpec, Isolation, NetworkMode, Resources};

use mounts::is_valid_name;
use spec::ProgressSink;
