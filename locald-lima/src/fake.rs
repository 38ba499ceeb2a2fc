//! A recording fake of `limactl` that replays Lima's output formats.
//!
//! `limactl` cannot run on Linux, so the life cycle is tested against this fake. What
//! it prints is shaped as Lima prints it: `list --json` writes one JSON object per
//! line with the fields of Lima's `store.Instance` (pkg/store/instance.go: `name`,
//! `hostname`, `status` as `Running`/`Stopped`/`Broken`, `dir`, `vmType`, `arch`,
//! `cpus`, `memory` and `disk` in bytes, `sshLocalPort`, `hostAgentPID`,
//! `driverPID`, `config`, `protected`, `limaVersion`, `errors` as `[{}]`, and the
//! capitalised `HostOS`, `HostArch`, `LimaHome`, `IdentityFile`), and failures and
//! progress are logrus text lines (`time="…" level=fatal msg="…"`), both parsed by the
//! same code as the real binary's output. A start hook lets a test put a real VM
//! behind `start` (the QEMU guest of the end-to-end test).

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;

use crate::{
    limactl::{log_message, parse_list, Instance, Limactl, ProgressLines, Status},
    Error, Result,
};

/// Runs when the fake starts an instance, with its directory; may boot something real.
pub type StartHook = Arc<dyn Fn(&Path) -> Result<()> + Send + Sync>;

/// The fake `limactl`.
#[derive(Clone)]
pub struct FakeLimactl {
    lima_home: PathBuf,
    version: String,
    state: Arc<Mutex<State>>,
    on_start: Option<StartHook>,
}

impl std::fmt::Debug for FakeLimactl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLimactl")
            .field("lima_home", &self.lima_home)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    instances: BTreeMap<String, FakeInstance>,
    calls: Vec<String>,
    failures: HashMap<String, String>,
}

#[derive(Debug, Clone)]
struct FakeInstance {
    status: Status,
    lima_version: Option<String>,
    config: String,
}

fn logrus(level: &str, msg: &str) -> String {
    format!("time=\"2026-12-01T10:00:00Z\" level={level} msg={:?}", msg)
}

impl FakeLimactl {
    /// A Lima `version` with no instances in `lima_home`.
    pub fn new(lima_home: impl Into<PathBuf>, version: impl Into<String>) -> FakeLimactl {
        FakeLimactl {
            lima_home: lima_home.into(),
            version: version.into(),
            state: Arc::default(),
            on_start: None,
        }
    }

    /// Runs `hook` (on a blocking thread) each time an instance starts.
    pub fn on_start(mut self, hook: StartHook) -> FakeLimactl {
        self.on_start = Some(hook);
        self
    }

    /// Adds an existing instance, made by Lima `created_by` (`None`: a Lima before
    /// 1.0, which did not record it).
    pub fn with_instance(
        self,
        name: &str,
        status: Status,
        created_by: Option<&str>,
    ) -> FakeLimactl {
        self.state.lock().unwrap().instances.insert(
            name.to_owned(),
            FakeInstance {
                status,
                lima_version: created_by.map(str::to_owned),
                config: String::new(),
            },
        );
        self
    }

    /// The next call of `subcommand` (`create`, `start`, `list`, …) fails as Lima
    /// fails: exit status 1 and a fatal logrus line with `message`.
    pub fn fail_next(&self, subcommand: &str, message: &str) {
        self.state
            .lock()
            .unwrap()
            .failures
            .insert(subcommand.to_owned(), message.to_owned());
    }

    /// Sets an instance's status (a VM that crashed, say).
    pub fn set_status(&self, name: &str, status: Status) {
        if let Some(i) = self.state.lock().unwrap().instances.get_mut(name) {
            i.status = status;
        }
    }

    /// Every call so far, as `limactl` arguments.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The `lima.yaml` an instance was created from.
    pub fn config(&self, name: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .instances
            .get(name)
            .map(|i| i.config.clone())
    }

    fn call(&self, subcommand: &str, line: String) -> Result<()> {
        let mut state = self.state.lock().unwrap();
        state.calls.push(line.clone());
        match state.failures.remove(subcommand) {
            Some(message) => Err(Error::Limactl {
                command: line,
                message: log_message(&logrus("fatal", &message)),
            }),
            None => Ok(()),
        }
    }

    /// `limactl list --json` as Lima 2.x prints it.
    pub fn list_json(&self) -> String {
        let state = self.state.lock().unwrap();
        let mut out = String::new();
        for (name, i) in &state.instances {
            let dir = self.lima_home.join(name);
            let status = match i.status {
                Status::Running => "Running",
                Status::Stopped => "Stopped",
                Status::Broken => "Broken",
                Status::Unknown => "",
            };
            let running = i.status == Status::Running;
            let mut line = serde_json::json!({
                "name": name,
                "hostname": format!("lima-{name}"),
                "status": status,
                "dir": dir,
                "vmType": if i.config.contains("vmType: vz") { "vz" } else { "qemu" },
                "arch": "x86_64",
                "cpuType": "",
                "cpus": 2,
                "memory": 4_294_967_296u64,
                "disk": 64_424_509_440u64,
                "sshLocalPort": 60022,
                "sshConfigFile": dir.join("ssh.config"),
                "config": {"vmType": "qemu", "containerd": {"system": false, "user": false}},
                "sshAddress": "127.0.0.1",
                "protected": false,
                "HostOS": "darwin",
                "HostArch": "aarch64",
                "LimaHome": self.lima_home,
                "IdentityFile": self.lima_home.join("_config/user"),
            });
            let obj = line.as_object_mut().expect("an object");
            if running {
                obj.insert("hostAgentPID".into(), 4242.into());
                obj.insert("driverPID".into(), 4243.into());
            }
            if let Some(v) = &i.lima_version {
                obj.insert("limaVersion".into(), v.clone().into());
            }
            if i.status == Status::Broken {
                obj.insert("errors".into(), serde_json::json!([{}]));
            }
            out.push_str(&serde_json::to_string(&line).expect("serializes"));
            out.push('\n');
        }
        out
    }
}

#[async_trait]
impl Limactl for FakeLimactl {
    async fn version(&self) -> Result<String> {
        self.call("--version", "--version".into())?;
        Ok(self.version.clone())
    }

    async fn list(&self) -> Result<Vec<Instance>> {
        self.call("list", "list --json".into())?;
        parse_list(&self.list_json())
    }

    async fn create(&self, name: &str, config: &Path) -> Result<()> {
        self.call(
            "create",
            format!("--tty=false create --name {name} {}", config.display()),
        )?;
        let config = std::fs::read_to_string(config)
            .map_err(|e| Error::io(format!("reading {}", config.display()), e))?;
        let mut state = self.state.lock().unwrap();
        if state.instances.contains_key(name) {
            return Err(Error::Limactl {
                command: format!("create --name {name}"),
                message: format!("instance \"{name}\" already exists"),
            });
        }
        std::fs::create_dir_all(self.lima_home.join(name).join("sock"))
            .map_err(|e| Error::io("creating the instance directory", e))?;
        state.instances.insert(
            name.to_owned(),
            FakeInstance {
                status: Status::Stopped,
                lima_version: Some(self.version.clone()),
                config,
            },
        );
        Ok(())
    }

    async fn start(
        &self,
        name: &str,
        timeout: Duration,
        progress: Option<ProgressLines>,
    ) -> Result<()> {
        self.call(
            "start",
            format!("--tty=false start --timeout {}s {name}", timeout.as_secs()),
        )?;
        let say = |msg: &str| {
            if let Some(p) = &progress {
                let _ = p.send(log_message(&logrus("info", msg)));
            }
        };
        say(&format!(
            "Starting the instance \"{name}\" with internal VM driver \"qemu\""
        ));
        say("[hostagent] Waiting for the essential requirement 1 of 2: \"ssh\"");
        if let Some(hook) = self.on_start.clone() {
            let dir = self.lima_home.join(name);
            let booted =
                tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || hook(&dir)))
                    .await
                    .map_err(|_| Error::Timeout {
                        what: format!("`limactl start {name}`"),
                        after: timeout,
                    })?
                    .map_err(|e| Error::io("the start hook", std::io::Error::other(e)))?;
            booted?;
        }
        say(&format!(
            "READY. Run `limactl shell {name}` to open the shell."
        ));
        self.set_status(name, Status::Running);
        Ok(())
    }

    async fn stop(&self, name: &str, force: bool) -> Result<()> {
        let flag = if force { " --force" } else { "" };
        self.call("stop", format!("--tty=false stop{flag} {name}"))?;
        self.set_status(name, Status::Stopped);
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        self.call("delete", format!("--tty=false delete --force {name}"))?;
        self.state.lock().unwrap().instances.remove(name);
        Ok(())
    }

    fn shell(&self, name: &str, args: &[String]) -> std::process::Command {
        let mut cmd = std::process::Command::new("limactl");
        cmd.arg("shell").arg(name).args(args);
        cmd
    }

    fn lima_home(&self) -> &Path {
        &self.lima_home
    }
}
