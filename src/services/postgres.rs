//! Managed PostgreSQL services (`postgres = "15"`): a cluster per service under the
//! project's data directory, created once and kept across runs, run in the
//! foreground as the service's process so the supervisor owns the postmaster
//! (restarts, stop signal, logs) like any other service.
//!
//! The server comes from an installation on the host: `$LOCALD_POSTGRES_BIN`, else
//! Debian's `/usr/lib/postgresql/<major>/bin` (package `postgresql-<major>`), else
//! the PGDG layout `/usr/pgsql-<major>/bin`. PostgreSQL refuses to run as root, so
//! when locald is root the server runs as the `postgres` user (or `nobody`) inside a
//! private mount namespace where the cluster is bind-mounted at a path that user can
//! reach (the data directory usually sits under root's home, which it cannot).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use locald_core::{Command, Error, Result, Runtime, Stdin, Stdio};
use serde::{Deserialize, Serialize};

/// Where the cluster is mounted inside the server's mount namespace when locald runs
/// as root.
const ROOT_MOUNT: &str = "/run/locald/postgres";

/// A PostgreSQL installation: the directory of `initdb`, `postgres`, `pg_isready`
/// and `psql`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installation {
    bin: PathBuf,
}

impl Installation {
    /// Finds the server of major `version` (see the module's docs for where).
    pub fn find(version: &str) -> Result<Self> {
        let mut tried = Vec::new();
        let mut candidates = Vec::new();
        if let Some(dir) = std::env::var_os("LOCALD_POSTGRES_BIN").filter(|d| !d.is_empty()) {
            candidates.push(PathBuf::from(dir));
        }
        candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{version}/bin")));
        candidates.push(PathBuf::from(format!("/usr/pgsql-{version}/bin")));
        for bin in candidates {
            if bin.join("postgres").is_file() && bin.join("initdb").is_file() {
                return Ok(Installation { bin });
            }
            tried.push(bin.display().to_string());
        }
        Err(Error::invalid(
            "postgres",
            version,
            format!(
                "PostgreSQL {version} is not installed (looked in {}); on Debian or Ubuntu \
                 install it with `apt-get install postgresql-{version}`, or set \
                 LOCALD_POSTGRES_BIN to the directory of its `postgres` and `initdb`",
                tried.join(", ")
            ),
        ))
    }

    /// The path of one of its programs (`psql`, `pg_isready`, …).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

/// How a project's clients reach one managed PostgreSQL: kept in
/// `<cluster>/connection.toml` (mode 0600), read by `locald psql`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Connection {
    /// The major version the cluster was created with.
    pub version: String,
    /// The role created for the project (its superuser).
    pub user: String,
    /// Its password.
    pub password: String,
    /// The database created for the project.
    pub database: String,
    /// The TCP port on 127.0.0.1 it listens on.
    pub port: u16,
}

impl Connection {
    /// `postgres://user:password@127.0.0.1:port/database`, what dependents get as
    /// `DATABASE_URL`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            self.user, self.password, self.port, self.database
        )
    }

    /// Reads the connection of the cluster in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let file = dir.join("connection.toml");
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Error::io(format!("reading {}", file.display()), e))?;
        toml::from_str(&text).map_err(|e| {
            Error::invalid(
                "file",
                file.display().to_string(),
                format!("not a locald PostgreSQL connection file: {e}"),
            )
        })
    }
}

/// One managed cluster: its directory (`data/` inside), installation and connection.
#[derive(Debug, Clone)]
pub(super) struct Cluster {
    dir: PathBuf,
    install: Installation,
    pub(super) connection: Connection,
    /// The user the server runs as when locald is root.
    run_as: Option<(u32, u32)>,
}

impl Cluster {
    /// Opens (or prepares to create) the cluster of `service` in `dir`: the project's
    /// role and database are named after `project`; the port is `fixed`, else the one
    /// used last time if it is free, else a free one.
    pub(super) fn open(
        dir: PathBuf,
        version: &str,
        project: &str,
        fixed: Option<u16>,
    ) -> Result<Self> {
        let install = Installation::find(version)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let previous = Connection::load(&dir).ok();
        if let Some(previous) = &previous {
            if previous.version != version && dir.join("data/PG_VERSION").exists() {
                return Err(Error::invalid(
                    "postgres",
                    version,
                    format!(
                        "the cluster in {} was created by PostgreSQL {}; upgrading it is not \
                         supported: dump it with `locald psql`/pg_dump, remove the directory \
                         and start again",
                        dir.display(),
                        previous.version
                    ),
                ));
            }
        }
        let port = match (fixed, &previous) {
            (Some(port), _) => port,
            (None, Some(previous)) if port_free(previous.port) => previous.port,
            (None, _) => super::supervisor::free_port()?,
        };
        let connection = match previous {
            Some(previous) => Connection {
                port,
                version: version.to_owned(),
                ..previous
            },
            None => Connection {
                version: version.to_owned(),
                user: project.to_owned(),
                password: locald_runtime::util::random_id()?[..32].to_owned(),
                database: project.to_owned(),
                port,
            },
        };
        let text = toml::to_string(&connection).expect("a connection serializes");
        locald_runtime::util::write_atomic(&dir.join("connection.toml"), text.as_bytes())?;
        Ok(Cluster {
            dir,
            install,
            connection,
            run_as: server_user()?,
        })
    }

    /// The directory the server sees its cluster in.
    fn inside(&self) -> PathBuf {
        match self.run_as {
            Some(_) => PathBuf::from(ROOT_MOUNT),
            None => self.dir.clone(),
        }
    }

    /// `argv` as a command that runs as the server's user, with the cluster at
    /// [`Cluster::inside`].
    fn command(&self, argv: Vec<String>) -> Command {
        let command = match self.run_as {
            None => Command::new(argv[0].clone()).args(argv[1..].iter().cloned()),
            Some((uid, gid)) => Command::new("unshare")
                .args(
                    [
                        "--mount".to_owned(),
                        "--propagation".into(),
                        "private".into(),
                        "--".into(),
                        "sh".into(),
                        "-c".into(),
                        "mount --bind -- \"$1\" \"$2\" && cd \"$2\" && shift 2 && \
                     exec setpriv --reuid=\"$UID_\" --regid=\"$GID_\" --clear-groups -- \"$@\""
                            .into(),
                        "sh".into(),
                        self.dir.display().to_string(),
                        ROOT_MOUNT.into(),
                    ]
                    .into_iter()
                    .chain(argv),
                )
                .env("UID_", uid.to_string())
                .env("GID_", gid.to_string()),
        };
        command.current_dir(&self.dir).env("LC_ALL", "C")
    }

    /// Creates the cluster, its role and its database if that has not been done; a
    /// cluster whose creation was cut short is made again.
    pub(super) async fn prepare(&self, runtime: &dyn Runtime) -> Result<()> {
        let ready = self.dir.join("ready");
        if ready.exists() {
            return Ok(());
        }
        let data = self.dir.join("data");
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .map_err(|e| Error::io(format!("removing {}", data.display()), e))?;
        }
        if let Some((uid, gid)) = self.run_as {
            std::fs::create_dir_all(ROOT_MOUNT)
                .map_err(|e| Error::io(format!("creating {ROOT_MOUNT}"), e))?;
            std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid)).map_err(|e| {
                Error::io(
                    format!("giving {} to the server's user", self.dir.display()),
                    e,
                )
            })?;
        }
        let pwfile = self.dir.join("pwfile");
        locald_runtime::util::write_atomic(&pwfile, self.connection.password.as_bytes())?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).map_err(|e| {
                Error::io(
                    format!("giving {} to the server's user", pwfile.display()),
                    e,
                )
            })?;
        }
        let inside = self.inside();
        let initdb = self.install.program("initdb").display().to_string();
        let created = self
            .run(
                runtime,
                vec![
                    initdb,
                    "-D".into(),
                    inside.join("data").display().to_string(),
                    "-U".into(),
                    self.connection.user.clone(),
                    "--pwfile".into(),
                    inside.join("pwfile").display().to_string(),
                    "--auth".into(),
                    "scram-sha-256".into(),
                    "-E".into(),
                    "UTF8".into(),
                    "--locale".into(),
                    "C".into(),
                ],
                None,
                "initdb",
            )
            .await;
        let _ = std::fs::remove_file(&pwfile);
        created?;
        // The project's database, made in single-user mode (no server, no network).
        let postgres = self.install.program("postgres").display().to_string();
        let sql = format!(
            "CREATE DATABASE \"{}\" OWNER \"{}\";\n",
            self.connection.database, self.connection.user
        );
        self.run(
            runtime,
            vec![
                postgres,
                "--single".into(),
                "-D".into(),
                inside.join("data").display().to_string(),
                "template1".into(),
            ],
            Some(sql),
            "creating the project's database",
        )
        .await?;
        std::fs::write(&ready, b"")
            .map_err(|e| Error::io(format!("writing {}", ready.display()), e))?;
        Ok(())
    }

    async fn run(
        &self,
        runtime: &dyn Runtime,
        argv: Vec<String>,
        stdin: Option<String>,
        step: &str,
    ) -> Result<()> {
        let mut command = self.command(argv).stdout(Stdio::Piped).stderr(Stdio::Piped);
        if let Some(input) = stdin {
            command = command.stdin(Stdin::Bytes(input.into_bytes()));
        }
        let output = runtime.run_command(command).await?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // Single-user mode reports a failed statement on its output, not its status.
        if !output.status.success() || text.contains("ERROR:") {
            let _ = std::fs::remove_dir_all(self.dir.join("data"));
            return Err(Error::invalid(
                "postgres",
                self.dir.display().to_string(),
                format!("{step} failed: {}", text.trim()),
            ));
        }
        Ok(())
    }

    /// The server in the foreground, on 127.0.0.1 only, without a Unix socket.
    pub(super) fn server(&self) -> Command {
        let postgres = self.install.program("postgres").display().to_string();
        self.command(vec![
            postgres,
            "-D".into(),
            self.inside().join("data").display().to_string(),
            "-p".into(),
            self.connection.port.to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "unix_socket_directories=".into(),
        ])
    }

    /// A readiness probe: `pg_isready` against the server.
    pub(super) fn probe(&self) -> Vec<String> {
        vec![
            self.install.program("pg_isready").display().to_string(),
            "-q".into(),
            "-h".into(),
            Ipv4Addr::LOCALHOST.to_string(),
            "-p".into(),
            self.connection.port.to_string(),
            "-d".into(),
            self.connection.database.clone(),
            "-U".into(),
            self.connection.user.clone(),
        ]
    }

    /// An error when something else listens on the server's port.
    pub(super) fn check_port(&self, service: &str) -> Result<()> {
        let port = self.connection.port;
        if port_free(port) {
            return Ok(());
        }
        Err(Error::io(
            format!(
                "PostgreSQL of service `{service}` cannot listen on 127.0.0.1:{port}: another \
                 program uses that port (choose another `port`, or stop that program)"
            ),
            std::io::ErrorKind::AddrInUse.into(),
        ))
    }
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// The user the server runs as: none (locald's own) unless locald is root, then
/// `postgres` if that user exists, else `nobody`.
fn server_user() -> Result<Option<(u32, u32)>> {
    use nix::unistd::{Uid, User};
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Ok(Some(user)) = User::from_name(name) {
            return Ok(Some((user.uid.as_raw(), user.gid.as_raw())));
        }
    }
    Err(Error::invalid(
        "user",
        "postgres",
        "PostgreSQL does not run as root and neither a `postgres` nor a `nobody` user exists",
    ))
}
