//! `locald.toml`: the raw shape serde reads (with spans), and the checked model.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use locald_core::{ImageRef, Mount, PortMapping, Signal};
use serde::Deserialize;
use toml::Spanned;

/// A `locald.toml` that cannot be used, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
#[non_exhaustive]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The line (from 1).
    pub line: usize,
    /// The column (from 1).
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// A checked project: its services, each valid and every reference resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Project {
    /// The project's name (`name`, default: the directory's name).
    pub name: String,
    /// The `locald.toml` it was read from.
    pub file: PathBuf,
    /// The directory relative paths are resolved against (the file's).
    pub dir: PathBuf,
    /// The services by name.
    pub services: BTreeMap<String, Service>,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Service {
    /// Its name in `[services.NAME]`.
    pub name: String,
    /// What runs.
    pub run: Run,
    /// Environment set for it; values may hold `${services.NAME.port}`,
    /// `${services.NAME.host}` and `${services.NAME.url}` (`$$` is a `$`).
    pub env: BTreeMap<String, String>,
    /// Services that must reach a condition before this one starts.
    pub depends_on: BTreeMap<String, Condition>,
    /// How locald tells that it is ready.
    pub health: Option<HealthCheck>,
    /// What happens when it exits.
    pub restart: Restart,
    /// The signal `stop` sends first (default `TERM`; `INT`, a fast shutdown, for
    /// PostgreSQL).
    pub stop_signal: Signal,
    /// How long a stop waits before `KILL` (default 10 s).
    pub stop_grace: Duration,
    /// The working directory of a command (default: the project's directory).
    pub workdir: PathBuf,
    /// The port it listens on, given to it as `PORT`.
    pub port: PortSetting,
    /// Host names under `.localhost` that the daemon's HTTPS proxy also routes to its
    /// port (beside `<service>.<project>.localhost`), lowercase.
    pub hosts: Vec<String>,
}

/// What a service runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Run {
    /// A host command (a string runs through `sh -c`).
    Command(Vec<String>),
    /// A container from an image.
    Image {
        /// The image.
        image: ImageRef,
        /// Replaces the image's command.
        command: Option<Vec<String>>,
        /// Published ports (`8080:80`).
        ports: Vec<PortMapping>,
        /// Mounts (`/host:/ctr[:ro]`, `name:/ctr`).
        volumes: Vec<Mount>,
        /// The user to run as.
        user: Option<String>,
    },
    /// A managed PostgreSQL of this major version.
    Postgres {
        /// The major version (`15`).
        version: String,
    },
}

/// The port a service gets in `PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortSetting {
    /// locald picks a free port when the service starts (the default for commands;
    /// a managed PostgreSQL keeps the port it had last time while it is free).
    Auto,
    /// This port.
    Fixed(u16),
    /// None (the default for containers, which publish ports instead).
    None,
}

/// When a dependency counts as ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Condition {
    /// Its process runs.
    Started,
    /// Its health check passed.
    Healthy,
    /// It exited with status 0 (a migration, a build step).
    Completed,
}

/// A health check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// What is probed.
    pub probe: Probe,
    /// Time between probes (default 2 s).
    pub interval: Duration,
    /// How long one probe may take (default 1 s).
    pub timeout: Duration,
    /// Failures in a row that make it unhealthy (default 3).
    pub retries: u32,
    /// Failures during this time after a start do not count (default 0).
    pub start_period: Duration,
    /// Time between probes during the start period until the first success
    /// (default: `interval`), so a service that starts slowly can still be seen
    /// healthy soon after it is.
    pub start_interval: Duration,
}

/// What a health check probes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Probe {
    /// A command in the service's environment that exits 0 when healthy.
    Exec(Vec<String>),
    /// An HTTP GET of this path on the service's port answering 2xx or 3xx.
    Http(String),
    /// A TCP connection to the service's port.
    Tcp,
}

/// A restart policy with its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Restart {
    /// When to restart.
    pub policy: RestartPolicy,
    /// Restarts in a row before giving up (default 5).
    pub max_restarts: u32,
    /// The first wait before a restart, doubled each time (default 500 ms).
    pub backoff: Duration,
    /// The longest wait (default 30 s).
    pub max_backoff: Duration,
    /// Running this long resets the count and the wait (default 60 s).
    pub reset_after: Duration,
}

/// When a service is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RestartPolicy {
    /// Never.
    No,
    /// When it exits with a failure (default).
    OnFailure,
    /// Whenever it exits.
    Always,
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            policy: RestartPolicy::OnFailure,
            max_restarts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
        }
    }
}

// ---- the raw shape, as serde reads it -------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    name: Option<Spanned<String>>,
    #[serde(default)]
    services: BTreeMap<Spanned<String>, Spanned<RawService>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    command: Option<Spanned<StringOrList>>,
    image: Option<Spanned<String>>,
    postgres: Option<Spanned<StringOrNumber>>,
    #[serde(default)]
    env: BTreeMap<String, Spanned<String>>,
    depends_on: Option<RawDepends>,
    health: Option<Spanned<RawHealth>>,
    restart: Option<RawRestart>,
    stop_signal: Option<Spanned<String>>,
    stop_grace: Option<Spanned<String>>,
    workdir: Option<String>,
    port: Option<Spanned<RawPort>>,
    #[serde(default)]
    ports: Vec<Spanned<String>>,
    #[serde(default)]
    volumes: Vec<Spanned<String>>,
    user: Option<String>,
    #[serde(default)]
    hosts: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    String(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    String(String),
    Number(i64),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPort {
    Number(i64),
    Word(String),
}

/// `["db"]` or `{ db = "healthy" }`. (Not `#[serde(untagged)]`: buffering the value
/// for an untagged enum loses the spans.)
enum RawDepends {
    List(Vec<Spanned<String>>),
    Map(BTreeMap<Spanned<String>, Condition>),
}

impl<'de> Deserialize<'de> for RawDepends {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawDepends;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of services, or a table of service = \"started\" | \"healthy\" | \"completed\"")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<RawDepends, A::Error> {
                let mut list = Vec::new();
                while let Some(name) = seq.next_element()? {
                    list.push(name);
                }
                Ok(RawDepends::List(list))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<RawDepends, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((name, condition)) = map.next_entry()? {
                    out.insert(name, condition);
                }
                Ok(RawDepends::Map(out))
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    exec: Option<StringOrList>,
    http: Option<String>,
    tcp: Option<bool>,
    interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    retries: Option<u32>,
    start_period: Option<Spanned<String>>,
    start_interval: Option<Spanned<String>>,
}

/// `"always"` or a table. (Not `#[serde(untagged)]`, which would lose the spans.)
enum RawRestart {
    Policy(RestartPolicy),
    Table(RawRestartTable),
}

impl<'de> Deserialize<'de> for RawRestart {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::IntoDeserializer;
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawRestart;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"no\", \"on-failure\", \"always\", or a table with `policy`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<RawRestart, E> {
                RestartPolicy::deserialize(v.into_deserializer()).map(RawRestart::Policy)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<RawRestart, A::Error> {
                RawRestartTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(RawRestart::Table)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestartTable {
    policy: Option<RestartPolicy>,
    max_restarts: Option<u32>,
    backoff: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
    reset_after: Option<Spanned<String>>,
}

// ---- checking -----------------------------------------------------------------

/// Turns byte spans into errors with a line and a column.
struct Source<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Source<'_> {
    fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    fn duration(&self, value: &Option<Spanned<String>>, default: Duration) -> Result<Duration> {
        match value {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v.get_ref()).map_err(|e| {
                self.error(
                    v.span(),
                    format!(
                        "{:?} is not a duration such as 500ms, 2s or 1m ({e})",
                        v.get_ref()
                    ),
                )
            }),
        }
    }
}

type Result<T> = std::result::Result<T, ConfigError>;

impl Project {
    /// Reads and checks a `locald.toml`.
    pub fn load(path: impl AsRef<Path>) -> Result<Project> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read it: {e}"),
        })?;
        // Errors name the file as it was given; relative paths inside it are resolved
        // against its absolute directory.
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Project::parse(&text, &absolute).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            ..e
        })
    }

    /// Checks the text of a `locald.toml` that lives at `file` (relative paths in it
    /// are resolved against `file`'s directory).
    pub fn parse(text: &str, file: &Path) -> Result<Project> {
        let src = Source { text, file };
        let raw: RawProject = toml::from_str(text)
            .map_err(|e| src.error(e.span().unwrap_or(0..0), e.message().trim_end().to_owned()))?;
        let dir = file
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let name = match raw.name {
            Some(name) => {
                if !valid_name(name.get_ref()) {
                    return Err(src.error(
                        name.span(),
                        format!(
                            "project name {:?} must be lowercase letters, digits, '-' and '_'",
                            name.get_ref()
                        ),
                    ));
                }
                name.into_inner()
            }
            None => dir
                .file_name()
                .map(|n| n.to_string_lossy().to_lowercase())
                .unwrap_or_else(|| "project".into()),
        };
        let names: BTreeSet<&str> = raw.services.keys().map(|k| k.get_ref().as_str()).collect();
        let listed = names.iter().copied().collect::<Vec<_>>().join(", ");
        let mut services = BTreeMap::new();
        let mut hosts: BTreeMap<String, String> = BTreeMap::new();
        for (key, spanned) in &raw.services {
            let service = check_service(&src, key, spanned, &dir, &names, &listed)?;
            for (host, raw_host) in service.hosts.iter().zip(&spanned.get_ref().hosts) {
                if let Some(other) = hosts.insert(host.clone(), service.name.clone()) {
                    return Err(src.error(
                        raw_host.span(),
                        format!("host name {host} is already service `{other}`'s"),
                    ));
                }
            }
            services.insert(key.get_ref().clone(), service);
        }
        let project = Project {
            name,
            file: file.to_path_buf(),
            dir,
            services,
        };
        if let Some(cycle) = project.cycle() {
            let first = raw
                .services
                .keys()
                .find(|k| k.get_ref() == &cycle[0])
                .expect("a service of the cycle");
            return Err(src.error(
                first.span(),
                format!("dependency cycle: {}", cycle.join(" → ")),
            ));
        }
        Ok(project)
    }

    /// The project with only `names` and what they depend on (transitively), as
    /// `locald up web` runs; an unknown name is an error that lists the services.
    pub fn select<S: AsRef<str>>(&self, names: &[S]) -> locald_core::Result<Project> {
        let mut keep = BTreeSet::new();
        let mut todo: Vec<&str> = Vec::new();
        for name in names {
            let name = name.as_ref();
            if !self.services.contains_key(name) {
                let all: Vec<&str> = self.services.keys().map(String::as_str).collect();
                return Err(locald_core::Error::invalid(
                    "service",
                    name,
                    format!(
                        "project {} has no such service (services: {})",
                        self.name,
                        all.join(", ")
                    ),
                ));
            }
            todo.push(name);
        }
        while let Some(name) = todo.pop() {
            if keep.insert(name.to_owned()) {
                todo.extend(self.services[name].depends_on.keys().map(String::as_str));
            }
        }
        let mut selected = self.clone();
        selected.services.retain(|name, _| keep.contains(name));
        Ok(selected)
    }

    /// The services in an order that starts every dependency before its dependents
    /// (ties by name); stopping goes the other way.
    pub fn start_order(&self) -> Vec<&str> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in self.services.keys() {
            self.visit(name, &mut done, &mut order);
        }
        order
    }

    fn visit<'a>(&'a self, name: &'a str, done: &mut BTreeSet<&'a str>, order: &mut Vec<&'a str>) {
        if !done.insert(name) {
            return;
        }
        if let Some(service) = self.services.get(name) {
            for dep in service.depends_on.keys() {
                self.visit(dep, done, order);
            }
        }
        order.push(name);
    }

    /// A dependency cycle, as the names around it (the first repeated at the end).
    fn cycle(&self) -> Option<Vec<String>> {
        fn walk<'a>(
            p: &'a Project,
            name: &'a str,
            path: &mut Vec<&'a str>,
            finished: &mut BTreeSet<&'a str>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|n| *n == name) {
                let mut cycle: Vec<String> = path[at..].iter().map(|s| s.to_string()).collect();
                cycle.push(name.to_owned());
                return Some(cycle);
            }
            if finished.contains(name) {
                return None;
            }
            path.push(name);
            for dep in p
                .services
                .get(name)
                .into_iter()
                .flat_map(|s| s.depends_on.keys())
            {
                if let Some(cycle) = walk(p, dep, path, finished) {
                    return Some(cycle);
                }
            }
            path.pop();
            finished.insert(name);
            None
        }
        let mut finished = BTreeSet::new();
        for name in self.services.keys() {
            if let Some(cycle) = walk(self, name, &mut Vec::new(), &mut finished) {
                return Some(cycle);
            }
        }
        None
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn argv(value: &StringOrList) -> Vec<String> {
    match value {
        StringOrList::String(s) => vec!["sh".into(), "-c".into(), s.clone()],
        StringOrList::List(list) => list.clone(),
    }
}

fn check_service(
    src: &Source<'_>,
    key: &Spanned<String>,
    spanned: &Spanned<RawService>,
    dir: &Path,
    names: &BTreeSet<&str>,
    listed: &str,
) -> Result<Service> {
    let name = key.get_ref();
    let raw = spanned.get_ref();
    if !valid_name(name) {
        return Err(src.error(
            key.span(),
            format!("service name {name:?} must be lowercase letters, digits, '-' and '_'"),
        ));
    }
    let run = match (&raw.command, &raw.image, &raw.postgres) {
        (Some(command), None, None) => {
            if let StringOrList::List(list) = command.get_ref() {
                if list.is_empty() {
                    return Err(src.error(command.span(), "an empty command runs nothing"));
                }
            }
            for (what, list) in [("ports", raw.ports.is_empty()), ("volumes", raw.volumes.is_empty())] {
                if !list {
                    return Err(src.error(
                        key.span(),
                        format!("service `{name}`: `{what}` are for containers (`image`); a command uses `port`"),
                    ));
                }
            }
            Run::Command(argv(command.get_ref()))
        }
        (command, Some(image), None) => {
            let parsed: ImageRef = image
                .get_ref()
                .parse()
                .map_err(|e: locald_core::Error| src.error(image.span(), e.to_string()))?;
            let ports = raw
                .ports
                .iter()
                .map(|p| p.get_ref().parse().map_err(|e: locald_core::Error| src.error(p.span(), e.to_string())))
                .collect::<Result<Vec<PortMapping>>>()?;
            let volumes = raw
                .volumes
                .iter()
                .map(|v| v.get_ref().parse().map_err(|e: locald_core::Error| src.error(v.span(), e.to_string())))
                .collect::<Result<Vec<Mount>>>()?;
            Run::Image {
                image: parsed,
                command: command.as_ref().map(|c| argv(c.get_ref())),
                ports,
                volumes,
                user: raw.user.clone(),
            }
        }
        (None, None, Some(version)) => {
            let span = version.span();
            let version = match version.get_ref() {
                StringOrNumber::String(s) => s.clone(),
                StringOrNumber::Number(n) => n.to_string(),
            };
            if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
                return Err(src.error(
                    span,
                    format!("postgres {version:?} must be a major version such as \"15\""),
                ));
            }
            Run::Postgres { version }
        }
        _ => {
            return Err(src.error(
                key.span(),
                format!(
                    "service `{name}` needs exactly one of `command`, `image` (with an optional `command`) or `postgres`"
                ),
            ))
        }
    };

    let missing = |dep: &Spanned<String>| {
        src.error(
            dep.span(),
            format!(
                "service `{name}` depends on `{}`, which is not defined (services: {listed})",
                dep.get_ref()
            ),
        )
    };
    let mut depends_on = BTreeMap::new();
    match &raw.depends_on {
        None => {}
        Some(RawDepends::List(list)) => {
            for dep in list {
                if !names.contains(dep.get_ref().as_str()) {
                    return Err(missing(dep));
                }
                depends_on.insert(dep.get_ref().clone(), Condition::Started);
            }
        }
        Some(RawDepends::Map(map)) => {
            for (dep, condition) in map {
                if !names.contains(dep.get_ref().as_str()) {
                    return Err(missing(dep));
                }
                depends_on.insert(dep.get_ref().clone(), *condition);
            }
        }
    }

    let mut env = BTreeMap::new();
    for (var, value) in &raw.env {
        check_references(src, name, value, names, listed)?;
        env.insert(var.clone(), value.get_ref().clone());
    }

    let health = match &raw.health {
        None => None,
        Some(h) => {
            let health = h.get_ref();
            let probe = match (&health.exec, &health.http, health.tcp) {
                (Some(exec), None, None | Some(false)) => Probe::Exec(argv(exec)),
                (None, Some(path), None | Some(false)) => {
                    if !path.starts_with('/') {
                        return Err(src.error(
                            h.span(),
                            format!("the http health check path {path:?} must start with '/'"),
                        ));
                    }
                    Probe::Http(path.clone())
                }
                (None, None, Some(true)) => Probe::Tcp,
                _ => {
                    return Err(src.error(
                        h.span(),
                        format!("service `{name}`: a health check needs exactly one of `exec`, `http` or `tcp = true`"),
                    ))
                }
            };
            let interval = src.duration(&health.interval, Duration::from_secs(2))?;
            Some(HealthCheck {
                probe,
                interval,
                timeout: src.duration(&health.timeout, Duration::from_secs(1))?,
                retries: health.retries.unwrap_or(3),
                start_period: src.duration(&health.start_period, Duration::ZERO)?,
                start_interval: src.duration(&health.start_interval, interval)?,
            })
        }
    };

    let defaults = Restart::default();
    let restart = match &raw.restart {
        None => defaults,
        Some(RawRestart::Policy(policy)) => Restart {
            policy: *policy,
            ..defaults
        },
        Some(RawRestart::Table(t)) => Restart {
            policy: t.policy.unwrap_or(defaults.policy),
            max_restarts: t.max_restarts.unwrap_or(defaults.max_restarts),
            backoff: src.duration(&t.backoff, defaults.backoff)?,
            max_backoff: src.duration(&t.max_backoff, defaults.max_backoff)?,
            reset_after: src.duration(&t.reset_after, defaults.reset_after)?,
        },
    };

    let stop_signal = match &raw.stop_signal {
        // PostgreSQL's fast shutdown: TERM would wait for every client to leave.
        None if matches!(run, Run::Postgres { .. }) => Signal::INT,
        None => Signal::TERM,
        Some(s) => s
            .get_ref()
            .parse()
            .map_err(|e: locald_core::Error| src.error(s.span(), e.to_string()))?,
    };

    let port = match &raw.port {
        None if matches!(run, Run::Command(_) | Run::Postgres { .. }) => PortSetting::Auto,
        None => PortSetting::None,
        Some(p) => match p.get_ref() {
            RawPort::Word(w) if w == "auto" => PortSetting::Auto,
            RawPort::Number(n) => match u16::try_from(*n) {
                Ok(port) if port > 0 => PortSetting::Fixed(port),
                _ => {
                    return Err(src.error(p.span(), format!("port {n} is not between 1 and 65535")))
                }
            },
            RawPort::Word(w) => {
                return Err(src.error(p.span(), format!("port {w:?} must be a number or \"auto\"")))
            }
        },
    };

    let mut hosts = Vec::new();
    for host in &raw.hosts {
        let lower = host.get_ref().to_ascii_lowercase();
        if !host_name_under_localhost(&lower) {
            return Err(src.error(
                host.span(),
                format!(
                    "host name {:?} must be DNS labels under .localhost (such as shop.localhost): \
                     the local CA signs no other names",
                    host.get_ref()
                ),
            ));
        }
        if port == PortSetting::None && raw.ports.is_empty() {
            return Err(src.error(
                host.span(),
                format!("service `{name}` has no port for its host names to reach (set `port`, or publish one in `ports`)"),
            ));
        }
        if !hosts.contains(&lower) {
            hosts.push(lower);
        }
    }

    Ok(Service {
        name: name.clone(),
        run,
        env,
        depends_on,
        health,
        restart,
        stop_signal,
        stop_grace: src.duration(&raw.stop_grace, Duration::from_secs(10))?,
        workdir: raw
            .workdir
            .as_ref()
            .map_or_else(|| dir.to_path_buf(), |w| dir.join(w)),
        port,
        hosts,
    })
}

/// A DNS name of RFC 1123 labels (letters, digits, inner hyphens; 63 bytes each, 253 in
/// all) that ends in `.localhost`.
fn host_name_under_localhost(name: &str) -> bool {
    name.len() <= 253
        && name.strip_suffix(".localhost").is_some_and(|head| {
            head.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        })
}

/// One piece of an `env` value: text, or a `${services.NAME.ATTR}` reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Piece<'a> {
    /// Literal text (`$$` reads as a `$`).
    Text(&'a str),
    /// A reference: the whole `services.NAME.ATTR`, the service and the attribute.
    Ref {
        reference: &'a str,
        service: &'a str,
        attr: &'a str,
    },
}

/// Splits an `env` value into its pieces (the one reader of the syntax: checked by
/// [`Project::parse`], expanded by the supervisor). A `$` not followed by `$` or `{`
/// is text.
pub(super) fn pieces(value: &str) -> std::result::Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push(Piece::Text(&rest[..at]));
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push(Piece::Text("$"));
            rest = tail;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push(Piece::Text("$"));
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(format!("unclosed `${{` in {value:?}"));
        };
        let reference = &body[..end];
        match reference.split('.').collect::<Vec<_>>().as_slice() {
            ["services", service, attr] => out.push(Piece::Ref {
                reference,
                service,
                attr,
            }),
            _ => {
                return Err(format!(
                    "`${{{reference}}}` is not a reference locald knows: use ${{services.NAME.port|host|url}} (`$$` for a literal `$`)"
                ))
            }
        }
        rest = &body[end + 1..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}

/// Checks the `${services.NAME.ATTR}` references in an environment value.
fn check_references(
    src: &Source<'_>,
    service: &str,
    value: &Spanned<String>,
    names: &BTreeSet<&str>,
    listed: &str,
) -> Result<()> {
    let pieces = pieces(value.get_ref()).map_err(|e| src.error(value.span(), e))?;
    for piece in pieces {
        let Piece::Ref {
            reference,
            service: target,
            attr,
        } = piece
        else {
            continue;
        };
        if !names.contains(target) {
            return Err(src.error(
                value.span(),
                format!(
                    "service `{service}` refers to `{target}` in `${{{reference}}}`, which is not defined (services: {listed})"
                ),
            ));
        }
        if !matches!(attr, "port" | "host" | "url") {
            return Err(src.error(
                value.span(),
                format!("`${{{reference}}}`: a service has `port`, `host` and `url`"),
            ));
        }
    }
    Ok(())
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Project> {
        Project::parse(text, Path::new("/srv/shop/locald.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_full_project() {
        let p = parse(
            r#"
name = "shop"

[services.db]
postgres = 15

[services.web]
command = "python3 -m http.server $PORT"
env = { DATABASE_URL = "${services.db.url}", COST = "$$5" }
depends_on = { db = "healthy" }
workdir = "web"
stop_signal = "INT"
stop_grace = "3s"
health = { http = "/healthz", interval = "500ms", retries = 5 }
restart = { policy = "always", max_restarts = 2, backoff = "100ms" }

[services.worker]
image = "localhost/locald/busybox"
command = ["sh", "-c", "sleep 1"]
ports = ["127.0.0.1:8081:80"]
volumes = ["/srv/data:/data:ro"]
depends_on = ["web"]
restart = "no"
"#,
        )
        .unwrap();
        assert_eq!(p.name, "shop");
        assert_eq!(p.dir, Path::new("/srv/shop"));
        assert_eq!(p.start_order(), ["db", "web", "worker"]);
        let web = &p.services["web"];
        assert_eq!(
            web.run,
            Run::Command(vec![
                "sh".into(),
                "-c".into(),
                "python3 -m http.server $PORT".into()
            ])
        );
        assert_eq!(web.depends_on["db"], Condition::Healthy);
        assert_eq!(web.workdir, Path::new("/srv/shop/web"));
        assert_eq!(web.stop_signal, Signal::INT);
        assert_eq!(web.stop_grace, Duration::from_secs(3));
        assert_eq!(web.port, PortSetting::Auto);
        let health = web.health.as_ref().unwrap();
        assert_eq!(health.probe, Probe::Http("/healthz".into()));
        assert_eq!(health.interval, Duration::from_millis(500));
        assert_eq!(health.retries, 5);
        assert_eq!(health.timeout, Duration::from_secs(1));
        assert_eq!(health.start_interval, health.interval);
        assert_eq!(web.restart.policy, RestartPolicy::Always);
        assert_eq!(web.restart.max_restarts, 2);
        assert_eq!(web.restart.backoff, Duration::from_millis(100));
        assert_eq!(web.restart.max_backoff, Duration::from_secs(30));
        let worker = &p.services["worker"];
        assert_eq!(worker.port, PortSetting::None);
        assert_eq!(worker.restart.policy, RestartPolicy::No);
        assert_eq!(worker.depends_on["web"], Condition::Started);
        let Run::Image {
            image,
            ports,
            volumes,
            command,
            ..
        } = &worker.run
        else {
            panic!("{:?}", worker.run)
        };
        assert_eq!(image.to_string(), "localhost/locald/busybox:latest");
        assert_eq!(ports[0].host_port, Some(8081));
        assert_eq!(volumes.len(), 1);
        assert_eq!(command.as_deref().unwrap()[0], "sh");
        assert_eq!(
            p.services["db"].run,
            Run::Postgres {
                version: "15".into()
            }
        );
    }

    #[test]
    fn host_names_are_kept_lowercase_and_once() {
        let p = parse(
            "[services.web]\ncommand = \"true\"\nhosts = [\"Shop.localhost\", \"shop.localhost\", \"a.b-c.localhost\"]\n[services.db]\nimage = \"busybox\"\nports = [\"5432\"]\nhosts = [\"db.localhost\"]\n",
        )
        .unwrap();
        assert_eq!(
            p.services["web"].hosts,
            ["shop.localhost", "a.b-c.localhost"]
        );
        assert_eq!(p.services["db"].hosts, ["db.localhost"]);
        assert!(parse("[services.a]\ncommand = \"true\"\n")
            .unwrap()
            .services["a"]
            .hosts
            .is_empty());
    }

    #[test]
    fn the_name_defaults_to_the_directory() {
        let p = parse("[services.a]\ncommand = \"true\"\n").unwrap();
        assert_eq!(p.name, "shop");
    }

    #[test]
    fn each_mistake_names_its_line() {
        let cases = [
            (
                "[services.web]\ncommand = \"true\"\nbogus = 1\n",
                "/srv/shop/locald.toml:3:1: unknown field `bogus`, expected one of",
            ),
            (
                "[services.web]\ncommand = \"true\"\ndepends_on = [\"db\"]\n",
                "/srv/shop/locald.toml:3:15: service `web` depends on `db`, which is not defined (services: web)",
            ),
            (
                "[services.a]\ncommand = \"true\"\ndepends_on = [\"b\"]\n[services.b]\ncommand = \"true\"\ndepends_on = { a = \"healthy\" }\n",
                "/srv/shop/locald.toml:1:11: dependency cycle: a → b → a",
            ),
            (
                "[services.web]\ncommand = \"true\"\nenv = { X = \"${services.dbx.url}\" }\n",
                "/srv/shop/locald.toml:3:13: service `web` refers to `dbx` in `${services.dbx.url}`, which is not defined (services: web)",
            ),
            (
                "[services.web]\ncommand = \"true\"\nstop_grace = \"soon\"\n",
                "/srv/shop/locald.toml:3:14: \"soon\" is not a duration such as 500ms, 2s or 1m",
            ),
            (
                "[services.web]\ncommand = \"true\"\nimage = \"busybox\"\npostgres = \"15\"\n",
                "/srv/shop/locald.toml:1:11: service `web` needs exactly one of",
            ),
            (
                "[services.db]\npostgres = \"latest\"\n",
                "/srv/shop/locald.toml:2:12: postgres \"latest\" must be a major version such as \"15\"",
            ),
            (
                "[services.web]\nimage = \"Busybox\"\n",
                "/srv/shop/locald.toml:2:9: invalid image reference \"Busybox\": repository name must be lowercase",
            ),
            (
                "[services.web]\nimage = \"busybox\"\nports = [\"80:http\"]\n",
                "/srv/shop/locald.toml:3:10: invalid port mapping \"80:http\"",
            ),
            (
                "[services.web]\ncommand = \"true\"\nhealth = { http = \"/\", tcp = true }\n",
                "/srv/shop/locald.toml:3:10: service `web`: a health check needs exactly one of",
            ),
            (
                "[services.web]\ncommand = \"true\"\nport = 70000\n",
                "/srv/shop/locald.toml:3:8: port 70000 is not between 1 and 65535",
            ),
            (
                "[services.web]\ncommand = \"true\"\nenv = { X = \"${HOME}\" }\n",
                "/srv/shop/locald.toml:3:13: `${HOME}` is not a reference locald knows",
            ),
            (
                "name = \"Shop\"\n",
                "/srv/shop/locald.toml:1:8: project name \"Shop\" must be lowercase",
            ),
            (
                "[services.web]\ncommand = \"true\"\nrestart = \"sometimes\"\n",
                "/srv/shop/locald.toml:3:11:",
            ),
            ("[services.web\n", "/srv/shop/locald.toml:1:"),
            (
                "[services.web]\ncommand = \"true\"\nhosts = [\"shop.example.com\"]\n",
                "/srv/shop/locald.toml:3:10: host name \"shop.example.com\" must be DNS labels under .localhost",
            ),
            (
                "[services.web]\ncommand = \"true\"\nhosts = [\"-x.localhost\"]\n",
                "/srv/shop/locald.toml:3:10: host name \"-x.localhost\" must be DNS labels",
            ),
            (
                "[services.web]\nimage = \"busybox\"\nhosts = [\"shop.localhost\"]\n",
                "/srv/shop/locald.toml:3:10: service `web` has no port for its host names to reach",
            ),
            (
                "[services.a]\ncommand = \"true\"\nhosts = [\"shop.localhost\"]\n[services.b]\ncommand = \"true\"\nhosts = [\"Shop.localhost\"]\n",
                "/srv/shop/locald.toml:6:10: host name shop.localhost is already service `a`'s",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.starts_with(want), "{text:?}\nwant: {want}\n got: {got}");
        }
    }

    #[test]
    fn dependents_start_after_what_they_depend_on() {
        let p = parse(
            "[services.z]\ncommand = \"true\"\ndepends_on = [\"m\", \"a\"]\n[services.m]\ncommand = \"true\"\ndepends_on = [\"a\"]\n[services.a]\ncommand = \"true\"\n[services.b]\ncommand = \"true\"\n",
        )
        .unwrap();
        assert_eq!(p.start_order(), ["a", "b", "m", "z"]);
    }

    #[test]
    fn selecting_services_keeps_what_they_depend_on() {
        let p = parse(
            "[services.db]\ncommand = \"true\"\n[services.web]\ncommand = \"true\"\ndepends_on = [\"db\"]\n[services.docs]\ncommand = \"true\"\n",
        )
        .unwrap();
        assert_eq!(p.select(&["web"]).unwrap().start_order(), ["db", "web"]);
        assert_eq!(p.select(&["docs"]).unwrap().start_order(), ["docs"]);
        let err = p.select(&["api"]).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid service \"api\": project shop has no such service (services: db, docs, web)"
        );
    }

    #[test]
    fn a_missing_file_says_so() {
        let err = Project::load("/nonexistent/locald.toml").unwrap_err();
        assert!(err.message.starts_with("cannot read it:"), "{err}");
    }
}
