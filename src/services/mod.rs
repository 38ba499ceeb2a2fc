//! Projects of services described in a `locald.toml`: what `locald up` runs.
//!
//! A project names its services — host commands, containers, a managed PostgreSQL —
//! with their environment, dependencies, health checks and restart policies:
//!
//! ```toml
//! name = "shop"
//!
//! [services.db]
//! postgres = "15"
//!
//! [services.web]
//! command = "python3 -m http.server $PORT"
//! env = { DATABASE_URL = "${services.db.url}" }
//! depends_on = { db = "healthy" }
//! restart = "on-failure"
//! health = { http = "/", interval = "1s" }
//!
//! [services.worker]
//! image = "localhost/locald/busybox"
//! command = ["sh", "-c", "while true; do wget -qO- $WEB_URL; sleep 5; done"]
//! env = { WEB_URL = "${services.web.url}" }
//! depends_on = ["web"]
//! ```
//!
//! [`Project::load`] reads and checks the whole file at once. Every mistake — a key
//! locald does not know, a value of the wrong shape, a dependency on a service that
//! does not exist, a dependency cycle, a reference to a missing service, a bad
//! duration — is a [`ConfigError`] that names the file, the line and the column:
//!
//! ```
//! use locald::services::Project;
//!
//! let err = Project::parse(
//!     "name = \"shop\"\n[services.web]\ncommand = \"true\"\ndepends_on = [\"db\"]\n",
//!     "locald.toml".as_ref(),
//! )
//! .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "locald.toml:4:15: service `web` depends on `db`, which is not defined (services: web)"
//! );
//! ```
//!
//! [`Project::up`] then runs the services on any [`Runtime`](crate::Runtime): in
//! dependency order, each waiting for the conditions of its `depends_on`, with
//! health checks, restarts with exponential backoff up to a limit, each service's
//! output in its own log, and [`Supervisor::down`] stopping them in reverse order.

mod config;
pub mod logfile;
#[cfg(unix)]
mod postgres;
mod supervisor;

pub use config::{
    Condition, ConfigError, HealthCheck, PortSetting, Probe, Project, Restart, RestartPolicy, Run,
    Service,
};
#[cfg(unix)]
pub use postgres::{Connection as PostgresConnection, Installation as PostgresInstallation};
pub use supervisor::{LogLine, ServiceState, ServiceStatus, Supervisor, UpOptions};
