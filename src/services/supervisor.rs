//! Running a [`Project`]: services in dependency order, health checks, restarts with
//! backoff, logs per service, and a stop in reverse order.

use std::{
    collections::BTreeMap,
    fmt,
    io::Write,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use locald_core::{
    Command, ContainerSpec, Error, ExitStatus, LogStream, Process, ProcessOutput, Protocol, Result,
    Runtime, Signal, Stdio,
};
use serde::Serialize;
use tokio::{
    io::AsyncReadExt,
    sync::{broadcast, watch},
    task::JoinHandle,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{config::Piece, Condition, PortSetting, Probe, Project, RestartPolicy, Run, Service};

/// Where a service is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(tag = "state", content = "detail", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ServiceState {
    /// Waiting for its dependencies.
    Waiting,
    /// Running; its health check (if any) has not passed yet.
    Running,
    /// Running, and its health check passes.
    Healthy,
    /// Running, and its health check failed `retries` times in a row.
    Unhealthy,
    /// Waiting before a restart.
    Restarting,
    /// Exited with status 0 and is not restarted.
    Completed,
    /// Exited with a failure and is not restarted (policy `no`).
    Exited,
    /// Given up: too many restarts, a dependency failed, or it could not start.
    Failed(String),
    /// Stopped by [`Supervisor::down`].
    Stopped,
}

impl fmt::Display for ServiceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceState::Waiting => f.write_str("waiting"),
            ServiceState::Running => f.write_str("running"),
            ServiceState::Healthy => f.write_str("healthy"),
            ServiceState::Unhealthy => f.write_str("unhealthy"),
            ServiceState::Restarting => f.write_str("restarting"),
            ServiceState::Completed => f.write_str("completed"),
            ServiceState::Exited => f.write_str("exited"),
            ServiceState::Failed(why) => write!(f, "failed: {why}"),
            ServiceState::Stopped => f.write_str("stopped"),
        }
    }
}

/// What `status` shows of one service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ServiceStatus {
    /// The service.
    pub name: String,
    /// Its state.
    pub state: ServiceState,
    /// The process id of its current run.
    pub pid: Option<u32>,
    /// Restarts since it last ran stably.
    pub restarts: u32,
    /// The port it was given as `PORT`.
    pub port: Option<u16>,
    /// How its last run ended.
    pub last_exit: Option<ExitStatus>,
}

/// One line a service wrote, as [`Supervisor::logs`] delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogLine {
    /// The service.
    pub service: String,
    /// Which stream.
    pub stream: LogStream,
    /// The line, without its newline (invalid UTF-8 replaced). A line longer than
    /// [`super::logfile::MAX_LINE`] comes in parts.
    pub line: String,
    /// When it arrived.
    pub time: SystemTime,
}

/// Options of [`Project::up`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UpOptions {
    /// Where each service's output is kept, as `<service>.log` (rotated to
    /// `<service>.log.1` past [`UpOptions::log_limit`]).
    pub log_dir: PathBuf,
    /// The size a log grows to before it is rotated (default 8 MiB).
    pub log_limit: u64,
    /// Where services keep data across runs: a managed PostgreSQL's cluster lives in
    /// `<data_dir>/postgres/<service>/` (default: the parent of `log_dir`).
    pub data_dir: PathBuf,
}

impl UpOptions {
    /// Logs under `log_dir`, data beside it.
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        let log_dir = log_dir.into();
        let data_dir = match log_dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => log_dir.clone(),
        };
        UpOptions {
            log_dir,
            log_limit: 8 << 20,
            data_dir,
        }
    }

    /// Keeps data in `dir` (see [`UpOptions::data_dir`]).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }
}

/// A running project. Dropping it does not stop the services: call [`Supervisor::down`].
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("project", &self.inner.project.name)
            .finish()
    }
}

struct Inner {
    project: Project,
    runtime: Arc<dyn Runtime>,
    options: UpOptions,
    /// Resolved ports and environments, by service.
    ports: BTreeMap<String, Option<u16>>,
    /// The managed PostgreSQL clusters, by service.
    #[cfg(unix)]
    clusters: BTreeMap<String, super::postgres::Cluster>,
    env: BTreeMap<String, BTreeMap<String, String>>,
    status: watch::Sender<BTreeMap<String, ServiceStatus>>,
    /// The running process of each service, for `down`.
    processes: Mutex<BTreeMap<String, Arc<tokio::sync::Mutex<Process>>>>,
    stop: CancellationToken,
    /// Each service's supervision: a token that stops it (a child of `stop`) and
    /// its task, for [`Supervisor::stop_service`] and [`Supervisor::start_service`].
    control: BTreeMap<String, tokio::sync::Mutex<Option<Supervision>>>,
    tasks: TaskTracker,
    lines: broadcast::Sender<LogLine>,
    /// Subscribed before the first service started, for the first `logs` call.
    first_lines: Mutex<Option<broadcast::Receiver<LogLine>>>,
}

impl Project {
    /// Starts every service in dependency order, each waiting for the conditions of
    /// its `depends_on`, and supervises them (health checks, restarts) until
    /// [`Supervisor::down`]. Returns once the supervision runs; see
    /// [`Supervisor::wait_ready`].
    pub async fn up(&self, runtime: Arc<dyn Runtime>, options: UpOptions) -> Result<Supervisor> {
        std::fs::create_dir_all(&options.log_dir)
            .map_err(|e| Error::io(format!("creating {}", options.log_dir.display()), e))?;
        let mut project = self.clone();
        #[cfg(unix)]
        let mut clusters = BTreeMap::new();
        let mut ports = BTreeMap::new();
        let mut urls = BTreeMap::new();
        for (name, service) in &mut project.services {
            if let Run::Postgres { version } = &service.run {
                #[cfg(unix)]
                {
                    let fixed = match service.port {
                        PortSetting::Fixed(port) => Some(port),
                        _ => None,
                    };
                    let dir = options.data_dir.join("postgres").join(name);
                    let cluster = super::postgres::Cluster::open(dir, version, &self.name, fixed)?;
                    if service.health.is_none() {
                        service.health = Some(super::HealthCheck {
                            probe: Probe::Exec(cluster.probe()),
                            interval: Duration::from_millis(500),
                            timeout: Duration::from_secs(2),
                            retries: 3,
                            start_period: Duration::from_secs(60),
                            start_interval: Duration::from_millis(50),
                        });
                    }
                    ports.insert(name.clone(), Some(cluster.connection.port));
                    urls.insert(name.clone(), cluster.connection.url());
                    clusters.insert(name.clone(), cluster);
                    continue;
                }
                #[cfg(not(unix))]
                return Err(Error::invalid(
                    "service",
                    name.clone(),
                    format!(
                        "a managed PostgreSQL {version} runs where locald's daemon runs on Linux"
                    ),
                ));
            }
            let mut port = match service.port {
                PortSetting::Auto => Some(free_port()?),
                PortSetting::Fixed(port) => Some(port),
                PortSetting::None => None,
            };
            // A container's published ports without a host port get a free one now, so
            // the service's port (its first published TCP port) is known to health
            // checks and references before it starts.
            if let Run::Image {
                ports: published, ..
            } = &mut service.run
            {
                for mapping in published.iter_mut() {
                    if mapping.host_port.is_none() && mapping.protocol == Protocol::Tcp {
                        mapping.host_port = Some(free_port()?);
                    }
                }
                if port.is_none() {
                    port = published
                        .iter()
                        .find(|m| m.protocol == Protocol::Tcp)
                        .and_then(|m| m.host_port);
                }
            }
            if let Some(port) = port {
                urls.insert(name.clone(), format!("http://127.0.0.1:{port}"));
            }
            ports.insert(name.clone(), port);
        }
        let mut env = BTreeMap::new();
        for (name, service) in &project.services {
            let mut vars = BTreeMap::new();
            for (key, value) in &service.env {
                vars.insert(key.clone(), expand(value, &ports, &urls));
            }
            // A container's own port is its business: it gets PORT only when its `port`
            // is set, not from what it publishes.
            let published_only =
                matches!(service.run, Run::Image { .. }) && service.port == PortSetting::None;
            if let (Some(Some(port)), false) = (ports.get(name), published_only) {
                vars.entry("PORT".into())
                    .or_insert_with(|| port.to_string());
            }
            // A service that depends on a managed PostgreSQL gets its URL (the first
            // one's, by name, when it depends on several).
            let database = service
                .depends_on
                .keys()
                .find(|dep| matches!(project.services[dep.as_str()].run, Run::Postgres { .. }));
            if let Some(database) = database {
                vars.entry("DATABASE_URL".into())
                    .or_insert_with(|| urls[database].clone());
            }
            env.insert(name.clone(), vars);
        }
        let status = project
            .services
            .keys()
            .map(|name| {
                (
                    name.clone(),
                    ServiceStatus {
                        name: name.clone(),
                        state: ServiceState::Waiting,
                        pid: None,
                        restarts: 0,
                        port: ports[name],
                        last_exit: None,
                    },
                )
            })
            .collect();
        let status_names: Vec<String> = project.services.keys().cloned().collect();
        let (lines, first_lines) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            project,
            runtime,
            options,
            ports,
            #[cfg(unix)]
            clusters,
            env,
            status: watch::Sender::new(status),
            processes: Mutex::default(),
            stop: CancellationToken::new(),
            control: status_names
                .iter()
                .map(|name| (name.clone(), tokio::sync::Mutex::new(None)))
                .collect(),
            tasks: TaskTracker::new(),
            lines,
            first_lines: Mutex::new(Some(first_lines)),
        });
        for name in inner.project.start_order() {
            let supervision = inner.clone().spawn_supervision(name, true);
            *inner.control[name]
                .try_lock()
                .expect("nothing else holds it yet") = Some(supervision);
        }
        inner.tasks.close();
        Ok(Supervisor { inner })
    }
}

impl Supervisor {
    /// Every service's status, in start order.
    pub fn status(&self) -> Vec<ServiceStatus> {
        let status = self.inner.status.borrow();
        self.inner
            .project
            .start_order()
            .into_iter()
            .filter_map(|name| status.get(name).cloned())
            .collect()
    }

    /// Waits until every service has settled (healthy or running without a health
    /// check, completed, or given up), at most `timeout`; returns the statuses.
    pub async fn wait_ready(&self, timeout: Duration) -> Vec<ServiceStatus> {
        let project = &self.inner.project;
        let mut rx = self.inner.status.subscribe();
        let settled = |all: &BTreeMap<String, ServiceStatus>| {
            all.values().all(|s| match &s.state {
                ServiceState::Healthy
                | ServiceState::Completed
                | ServiceState::Exited
                | ServiceState::Failed(_)
                | ServiceState::Stopped => true,
                ServiceState::Running => project.services[&s.name].health.is_none(),
                _ => false,
            })
        };
        let _ = tokio::time::timeout(timeout, rx.wait_for(settled)).await;
        self.status()
    }

    /// Waits until `name` reaches a state `accept` takes, at most `timeout`.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        accept: impl Fn(&ServiceStatus) -> bool,
    ) -> Option<ServiceStatus> {
        let mut rx = self.inner.status.subscribe();
        let found = tokio::time::timeout(
            timeout,
            rx.wait_for(|all| all.get(name).is_some_and(&accept)),
        )
        .await
        .ok()?
        .ok()?;
        found.get(name).cloned()
    }

    /// The lines services write from now on (see [`Supervisor::logs`]).
    pub fn subscribe_logs(&self) -> broadcast::Receiver<LogLine> {
        self.inner.lines.subscribe()
    }

    /// Stops one service (its stop signal, then `KILL` after its grace) and keeps it
    /// stopped, without restarting it, until [`Supervisor::start_service`]. Services
    /// that depend on it keep running.
    pub async fn stop_service(&self, name: &str) -> Result<()> {
        let control = self.inner.control(name)?;
        let mut control = control.lock().await;
        if let Some(supervision) = control.take() {
            supervision.token.cancel();
            self.inner.stop_run(name).await;
            let _ = supervision.task.await;
        }
        self.inner.set(name, |s| {
            s.state = ServiceState::Stopped;
            s.pid = None;
        });
        Ok(())
    }

    /// Starts one service that was stopped or has ended (without waiting for its
    /// dependencies: they were met when the project came up), with a fresh restart
    /// count. A service that is running is left as it is.
    pub async fn start_service(&self, name: &str) -> Result<()> {
        let control = self.inner.control(name)?;
        let mut control = control.lock().await;
        if self.inner.stop.is_cancelled() {
            return Err(Error::invalid(
                "service",
                name,
                format!("project {} is down", self.inner.project.name),
            ));
        }
        if control.as_ref().is_some_and(|s| !s.task.is_finished()) {
            return Ok(());
        }
        self.inner.set(name, |s| {
            s.state = ServiceState::Waiting;
            s.restarts = 0;
        });
        *control = Some(self.inner.clone().spawn_supervision(name, false));
        Ok(())
    }

    /// Stops one service and starts it again (see [`Supervisor::stop_service`] and
    /// [`Supervisor::start_service`]).
    pub async fn restart_service(&self, name: &str) -> Result<()> {
        self.stop_service(name).await?;
        self.start_service(name).await
    }

    /// The lines services write, as they come: the first call gets them from the
    /// start, later calls from now on. A receiver that falls more than 1024 lines
    /// behind skips ahead; the log files keep everything.
    pub fn logs(&self) -> broadcast::Receiver<LogLine> {
        self.inner
            .first_lines
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| self.inner.lines.subscribe())
    }

    /// A receiver that wakes whenever a service's status changes (see
    /// [`Supervisor::status`]); it closes when the supervision has ended.
    pub fn changes(&self) -> watch::Receiver<BTreeMap<String, ServiceStatus>> {
        self.inner.status.subscribe()
    }

    /// Where a service's output is kept.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.inner.options.log_dir.join(format!("{name}.log"))
    }

    /// Stops every service in reverse dependency order (its stop signal, then `KILL`
    /// after its grace) and ends the supervision.
    pub async fn down(&self) {
        self.inner.stop.cancel();
        let mut order = self.inner.project.start_order();
        order.reverse();
        for name in order {
            self.inner.stop_run(name).await;
            self.inner.set(name, |s| {
                if !matches!(s.state, ServiceState::Completed | ServiceState::Failed(_)) {
                    s.state = ServiceState::Stopped;
                }
                s.pid = None;
            });
        }
        self.inner.tasks.wait().await;
    }
}

async fn stop_process(process: &tokio::sync::Mutex<Process>, signal: Signal, grace: Duration) {
    let mut process = process.lock().await;
    let _ = process.kill(signal).await;
    if tokio::time::timeout(grace, process.wait()).await.is_err() {
        let _ = process.kill(Signal::KILL).await;
        let _ = process.wait().await;
    }
}

/// One service's running supervision.
struct Supervision {
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl Inner {
    fn control(&self, name: &str) -> Result<&tokio::sync::Mutex<Option<Supervision>>> {
        self.control.get(name).ok_or_else(|| {
            let names: Vec<&str> = self.control.keys().map(String::as_str).collect();
            Error::invalid(
                "service",
                name,
                format!(
                    "project {} has no such service (services: {})",
                    self.project.name,
                    names.join(", ")
                ),
            )
        })
    }

    fn spawn_supervision(self: Arc<Self>, name: &str, wait_for_dependencies: bool) -> Supervision {
        let token = self.stop.child_token();
        let name = name.to_owned();
        let stop = token.clone();
        let task = self
            .tasks
            .clone()
            .spawn(async move { self.supervise(&name, &stop, wait_for_dependencies).await });
        Supervision { token, task }
    }

    /// Stops the current run of `name`, if there is one.
    async fn stop_run(&self, name: &str) {
        let process = self.processes.lock().unwrap().remove(name);
        if let Some(process) = process {
            let service = &self.project.services[name];
            stop_process(&process, service.stop_signal, service.stop_grace).await;
        }
    }

    fn set(&self, name: &str, update: impl FnOnce(&mut ServiceStatus)) {
        self.status.send_modify(|all| {
            if let Some(s) = all.get_mut(name) {
                update(s);
            }
        });
    }

    /// Waits until every dependency of `service` meets its condition; an error when
    /// one can no longer meet it.
    async fn dependencies(&self, service: &Service) -> std::result::Result<(), String> {
        let mut rx = self.status.subscribe();
        for (dep, condition) in &service.depends_on {
            let has_health = self.project.services[dep].health.is_some();
            let outcome = rx
                .wait_for(|all| {
                    let state = &all[dep].state;
                    met(*condition, has_health, state).is_some()
                })
                .await
                .map_err(|_| "the supervisor stopped".to_owned())?;
            if let Some(Err(why)) = met(*condition, has_health, &outcome[dep].state) {
                return Err(format!("dependency `{dep}` {why}"));
            }
        }
        Ok(())
    }

    async fn supervise(&self, name: &str, stop: &CancellationToken, wait_for_dependencies: bool) {
        let service = self.project.services[name].clone();
        if wait_for_dependencies {
            tokio::select! {
                () = stop.cancelled() => return,
                waited = self.dependencies(&service) => {
                    if let Err(why) = waited {
                        self.set(name, |s| s.state = ServiceState::Failed(why));
                        return;
                    }
                }
            }
        }
        let mut delay = service.restart.backoff;
        loop {
            let started = Instant::now();
            let (process, copies) = match self.start(&service).await {
                Ok(started) => started,
                Err(err) => {
                    self.set(name, |s| s.state = ServiceState::Failed(err.to_string()));
                    return;
                }
            };
            let pid = process.id();
            let process = Arc::new(tokio::sync::Mutex::new(process));
            self.processes
                .lock()
                .unwrap()
                .insert(name.to_owned(), process.clone());
            if stop.is_cancelled() {
                // `down` ran while this run was starting: it may not have seen it.
                if self.processes.lock().unwrap().remove(name).is_some() {
                    stop_process(&process, service.stop_signal, service.stop_grace).await;
                }
                return;
            }
            self.set(name, |s| {
                s.state = ServiceState::Running;
                s.pid = pid;
            });
            let health = self.probe_loop(&service);
            let exit = tokio::select! {
                () = stop.cancelled() => return,
                () = health => unreachable!("the probe loop runs until the service exits"),
                exit = wait_exit(&process) => exit,
            };
            self.processes.lock().unwrap().remove(name);
            if stop.is_cancelled() {
                return;
            }
            // What it wrote reaches its log before its state changes (briefly: a
            // child it left behind may hold the pipes open).
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                for copy in copies {
                    let _ = copy.await;
                }
            })
            .await;
            let success = exit.as_ref().is_ok_and(|e| e.success());
            self.set(name, |s| {
                s.last_exit = exit.as_ref().ok().copied();
                s.pid = None;
            });
            let restart = match service.restart.policy {
                RestartPolicy::No => false,
                RestartPolicy::OnFailure => !success,
                RestartPolicy::Always => true,
            };
            if !restart {
                self.set(name, |s| {
                    s.state = if success {
                        ServiceState::Completed
                    } else {
                        ServiceState::Exited
                    }
                });
                return;
            }
            if started.elapsed() >= service.restart.reset_after {
                delay = service.restart.backoff;
                self.set(name, |s| s.restarts = 0);
            }
            let restarts = self.status.borrow()[name].restarts;
            if restarts >= service.restart.max_restarts {
                let how = match &exit {
                    Ok(status) => format!("exited with {}", describe(*status)),
                    Err(err) => err.to_string(),
                };
                self.set(name, |s| {
                    s.state = ServiceState::Failed(format!(
                        "gave up after {restarts} restarts; the last run {how}"
                    ))
                });
                return;
            }
            self.set(name, |s| {
                s.state = ServiceState::Restarting;
                s.restarts += 1;
            });
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(service.restart.max_backoff);
        }
    }

    /// Starts one run of `service`, its output copied to its log by the returned tasks.
    async fn start(&self, service: &Service) -> Result<(Process, Vec<JoinHandle<()>>)> {
        let env = &self.env[&service.name];
        let mut process = match &service.run {
            Run::Command(argv) => {
                let (program, args) = argv.split_first().expect("a checked command");
                let command = Command::new(program.clone())
                    .args(args.iter().cloned())
                    .envs(env.iter().map(|(k, v)| (k.clone(), v.clone())))
                    .current_dir(&service.workdir)
                    .stdout(Stdio::Piped)
                    .stderr(Stdio::Piped);
                self.runtime.spawn(command).await?
            }
            Run::Image {
                image,
                command,
                ports,
                volumes,
                user,
            } => {
                let mut spec = ContainerSpec::builder(image.to_string())
                    .name(format!("{}-{}", self.project.name, service.name))
                    .auto_remove(true)
                    .label("dev.locald.project", self.project.name.clone())
                    .label("dev.locald.service", service.name.clone());
                if let Some(command) = command {
                    spec = spec.cmd(command.iter().cloned());
                }
                for (key, value) in env {
                    spec = spec.env(key.clone(), value.clone());
                }
                for port in ports {
                    spec = spec.publish(port.to_string());
                }
                for mount in volumes {
                    spec = spec.mount(mount.clone());
                }
                if let Some(user) = user {
                    spec = spec.user(user.clone());
                }
                self.runtime
                    .run_container(spec.build()?)
                    .await?
                    .into_parts()
                    .2
            }
            #[cfg(unix)]
            Run::Postgres { .. } => {
                let cluster = &self.clusters[&service.name];
                cluster.check_port(&service.name)?;
                cluster.prepare(self.runtime.as_ref()).await?;
                self.runtime
                    .spawn(cluster.server().stdout(Stdio::Piped).stderr(Stdio::Piped))
                    .await?
            }
            #[cfg(not(unix))]
            Run::Postgres { .. } => unreachable!("refused by up"),
        };
        let log = self.options.log_dir.join(format!("{}.log", service.name));
        let limit = self.options.log_limit;
        let copies = [
            (LogStream::Stdout, process.take_stdout()),
            (LogStream::Stderr, process.take_stderr()),
        ]
        .into_iter()
        .filter_map(|(stream, output)| {
            let output = output?;
            let lines = Lines {
                service: service.name.clone(),
                stream,
                pending: Vec::new(),
                sender: self.lines.clone(),
            };
            Some(
                self.tasks
                    .spawn(copy_to_log(output, log.clone(), limit, lines)),
            )
        })
        .collect();
        Ok((process, copies))
    }

    /// Probes `service` every interval while it runs, updating its state. Never ends
    /// by itself.
    async fn probe_loop(&self, service: &Service) {
        let Some(health) = &service.health else {
            return std::future::pending().await;
        };
        let started = Instant::now();
        let mut failures = 0u32;
        let mut succeeded = false;
        loop {
            let ok = tokio::time::timeout(health.timeout, self.probe(service, &health.probe))
                .await
                .unwrap_or(false);
            let name = &service.name;
            if ok {
                failures = 0;
                succeeded = true;
                self.set(name, |s| s.state = ServiceState::Healthy);
            } else if started.elapsed() >= health.start_period {
                failures += 1;
                if failures >= health.retries {
                    self.set(name, |s| s.state = ServiceState::Unhealthy);
                }
            }
            let starting = !succeeded && started.elapsed() < health.start_period;
            tokio::time::sleep(if starting {
                health.start_interval
            } else {
                health.interval
            })
            .await;
        }
    }

    async fn probe(&self, service: &Service, probe: &Probe) -> bool {
        let port = self.ports.get(&service.name).copied().flatten();
        match probe {
            Probe::Tcp => match port {
                Some(port) => tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                    .await
                    .is_ok(),
                None => false,
            },
            Probe::Http(path) => match port {
                Some(port) => http_ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), path).await,
                None => false,
            },
            Probe::Exec(argv) => {
                let (program, args) = argv.split_first().expect("a checked command");
                let command = Command::new(program.clone())
                    .args(args.iter().cloned())
                    .envs(
                        self.env[&service.name]
                            .iter()
                            .map(|(k, v)| (k.clone(), v.clone())),
                    )
                    .current_dir(&service.workdir)
                    .stdout(Stdio::Null)
                    .stderr(Stdio::Null);
                self.runtime
                    .run_command(command)
                    .await
                    .is_ok_and(|o| o.status.success())
            }
        }
    }
}

/// Whether `state` of a dependency meets `condition`: `None` while it may still,
/// `Some(Err(why))` when it can no longer.
fn met(
    condition: Condition,
    has_health: bool,
    state: &ServiceState,
) -> Option<std::result::Result<(), String>> {
    use ServiceState as S;
    match (condition, state) {
        (_, S::Failed(why)) => Some(Err(format!("failed: {why}"))),
        (_, S::Stopped) => Some(Err("was stopped".into())),
        (Condition::Completed, S::Completed) => Some(Ok(())),
        (Condition::Completed, S::Exited) => Some(Err("exited with a failure".into())),
        (Condition::Completed, _) => None,
        (Condition::Healthy, S::Healthy) => Some(Ok(())),
        (Condition::Healthy, S::Running) if !has_health => Some(Ok(())),
        (Condition::Healthy, S::Completed | S::Exited) => {
            Some(Err("exited before it was healthy".into()))
        }
        (Condition::Healthy, _) => None,
        (Condition::Started, S::Running | S::Healthy | S::Unhealthy | S::Completed) => Some(Ok(())),
        (Condition::Started, S::Exited) => Some(Err("exited with a failure".into())),
        (Condition::Started, _) => None,
    }
}

async fn wait_exit(process: &tokio::sync::Mutex<Process>) -> Result<ExitStatus> {
    process.lock().await.wait().await
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("code {code}"),
        (None, Some(signal)) => format!("signal {}", signal.name().unwrap_or("?")),
        _ => format!("{status:?}"),
    }
}

/// Splits a stream's output into lines, for the log file (as records, see
/// [`super::logfile`]) and for [`Supervisor::logs`].
struct Lines {
    service: String,
    stream: LogStream,
    pending: Vec<u8>,
    sender: broadcast::Sender<LogLine>,
}

impl Lines {
    /// Takes `chunk`'s complete lines as records into `out`, and a line longer than
    /// [`super::logfile::MAX_LINE`] (ended or not) in parts of that size.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        const MAX: usize = super::logfile::MAX_LINE;
        self.pending.extend_from_slice(chunk);
        let time = SystemTime::now();
        let mut from = 0;
        loop {
            let rest = &self.pending[from..];
            match rest.iter().take(MAX + 1).position(|b| *b == b'\n') {
                Some(end) => {
                    self.record(time, &rest[..end], false, out);
                    from += end + 1;
                }
                None if rest.len() >= MAX => {
                    // The next part of a line too long for one record.
                    let cut = utf8_boundary(rest, MAX);
                    self.record(time, &rest[..cut], true, out);
                    from += cut;
                }
                None => break,
            }
        }
        self.pending.drain(..from);
    }

    /// The rest, a last line without a newline, into `out`.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            self.record(SystemTime::now(), &self.pending, false, out);
            self.pending.clear();
        }
    }

    /// One line, or one part of a long line (`partial`): its record into `out`, and
    /// the line to the live listeners (nobody listening is fine: the file keeps it).
    fn record(&self, time: SystemTime, line: &[u8], partial: bool, out: &mut Vec<u8>) {
        let text = String::from_utf8_lossy(line);
        super::logfile::write_record(out, time, self.stream, &text, partial);
        let _ = self.sender.send(LogLine {
            service: self.service.clone(),
            stream: self.stream,
            line: text.into_owned(),
            time,
        });
    }
}

/// The largest cut at or below `max` that does not split a UTF-8 character of
/// `bytes` (at `max` when the bytes are not UTF-8 there anyway).
fn utf8_boundary(bytes: &[u8], max: usize) -> usize {
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| i >= bytes.len() || (bytes[i] as i8) >= -0x40)
        .unwrap_or(max)
}

/// Appends a service's output to its log as records, rotating the log to `.1` before
/// it would pass `limit` bytes, and hands its lines to `lines`.
async fn copy_to_log(mut output: ProcessOutput, log: PathBuf, limit: u64, mut lines: Lines) {
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let mut records = Vec::new();
        let done = match output.read(&mut buf).await {
            Ok(0) | Err(_) => {
                lines.finish(&mut records);
                true
            }
            Ok(n) => {
                lines.feed(&buf[..n], &mut records);
                false
            }
        };
        if !records.is_empty() {
            let path = log.clone();
            let written = tokio::task::spawn_blocking(move || append(&path, &records, limit)).await;
            if !matches!(written, Ok(Ok(()))) {
                tracing::warn!(log = %log.display(), "cannot write a service log");
            }
        }
        if done {
            return;
        }
    }
}

/// Appends `records` to `log`, rotating it to `.1` before a record that would take
/// it past `limit` bytes (between records: a rotation never splits one).
fn append(log: &Path, mut records: &[u8], limit: u64) -> std::io::Result<()> {
    let limit = limit.max(1);
    let mut len = std::fs::metadata(log).map_or(0, |m| m.len());
    while !records.is_empty() {
        // As many whole records as fit, at least one.
        let mut take = 0;
        for (i, b) in records.iter().enumerate() {
            if *b == b'\n' {
                if take > 0 && len + i as u64 + 1 > limit {
                    break;
                }
                take = i + 1;
            }
        }
        let take = if take == 0 { records.len() } else { take };
        if len > 0 && len + take as u64 > limit {
            let mut rotated = log.as_os_str().to_owned();
            rotated.push(".1");
            std::fs::rename(log, rotated)?;
            len = 0;
            continue;
        }
        let (now, rest) = records.split_at(take);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?
            .write_all(now)?;
        len += now.len() as u64;
        records = rest;
    }
    Ok(())
}

/// A free port on the loopback interface, chosen by the kernel.
pub(super) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| Error::io("finding a free port", e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port", e))
}

/// Replaces `${services.NAME.port|host|url}` (checked by [`Project::parse`]) and `$$`.
/// A service's `url` is `http://127.0.0.1:PORT`, or a managed PostgreSQL's
/// `postgres://…` URL.
fn expand(
    value: &str,
    ports: &BTreeMap<String, Option<u16>>,
    urls: &BTreeMap<String, String>,
) -> String {
    let mut out = String::with_capacity(value.len());
    for piece in super::config::pieces(value).unwrap_or_default() {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Ref { service, attr, .. } => {
                let port = ports.get(service).copied().flatten();
                let port = port.map(|p| p.to_string()).unwrap_or_default();
                match attr {
                    "port" => out.push_str(&port),
                    "host" => out.push_str("127.0.0.1"),
                    _ => match urls.get(service) {
                        Some(url) => out.push_str(url),
                        None => out.push_str(&format!("http://127.0.0.1:{port}")),
                    },
                }
            }
        }
    }
    out
}

/// An HTTP/1.1 `GET path` answered with 2xx or 3xx.
async fn http_ok(addr: SocketAddr, path: &str) -> bool {
    use http_body_util::Empty;
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let Ok((mut sender, conn)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return false;
    };
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<bytes::Bytes>::new());
    let ok = match request {
        Ok(request) => sender.send_request(request).await.is_ok_and(|r| {
            let status = r.status();
            status.is_success() || status.is_redirection()
        }),
        Err(_) => false,
    };
    conn.abort();
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand() {
        let ports = BTreeMap::from([
            ("web".to_owned(), Some(8080)),
            ("w".to_owned(), None),
            ("db".to_owned(), Some(5433)),
        ]);
        let urls = BTreeMap::from([
            ("web".to_owned(), "http://127.0.0.1:8080".to_owned()),
            (
                "db".to_owned(),
                "postgres://u:p@127.0.0.1:5433/d".to_owned(),
            ),
        ]);
        assert_eq!(
            expand(
                "${services.web.url}/x ${services.web.host}:${services.web.port} $$5 $HOME",
                &ports,
                &urls
            ),
            "http://127.0.0.1:8080/x 127.0.0.1:8080 $5 $HOME"
        );
        assert_eq!(
            expand("${services.db.url} ${services.db.port}", &ports, &urls),
            "postgres://u:p@127.0.0.1:5433/d 5433"
        );
    }

    #[test]
    fn conditions() {
        use ServiceState as S;
        assert_eq!(met(Condition::Started, false, &S::Waiting), None);
        assert_eq!(met(Condition::Started, false, &S::Running), Some(Ok(())));
        assert_eq!(met(Condition::Healthy, true, &S::Running), None);
        assert_eq!(met(Condition::Healthy, false, &S::Running), Some(Ok(())));
        assert_eq!(
            met(Condition::Completed, false, &S::Completed),
            Some(Ok(()))
        );
        assert!(matches!(
            met(Condition::Completed, false, &S::Exited),
            Some(Err(_))
        ));
        assert!(matches!(
            met(Condition::Healthy, true, &S::Failed("x".into())),
            Some(Err(_))
        ));
    }

    /// However a long line arrives (one read, pipe-sized pieces, pieces that end
    /// with the newline past the limit), it is kept as the same parts.
    #[test]
    fn a_long_line_is_cut_into_the_same_parts_however_it_arrives() {
        let max = super::super::logfile::MAX_LINE;
        let mut line = vec![b'a'; 2 * max + 7232];
        line.push(b'\n');
        line.extend_from_slice(b"short\n");
        for pieces in [line.len(), 4096, 12000, 7, max + 1] {
            let (sender, mut live) = broadcast::channel(64);
            let mut lines = Lines {
                service: "s".into(),
                stream: LogStream::Stdout,
                pending: Vec::new(),
                sender,
            };
            let mut out = Vec::new();
            for chunk in line.chunks(pieces) {
                lines.feed(chunk, &mut out);
            }
            lines.finish(&mut out);
            let text = String::from_utf8(out).unwrap();
            let tags: Vec<&str> = text.lines().map(|l| l.split(' ').nth(2).unwrap()).collect();
            assert_eq!(tags, ["P", "P", "F", "F"], "pieces of {pieces}");
            let lens: Vec<usize> = text
                .lines()
                .map(|l| l.splitn(4, ' ').nth(3).unwrap().len())
                .collect();
            assert_eq!(lens, [max, max, 7232, 5], "pieces of {pieces}");
            let mut parts = 0;
            while let Ok(l) = live.try_recv() {
                parts += 1;
                assert!(l.line.len() <= max);
            }
            assert_eq!(parts, 4);
        }
    }
}
