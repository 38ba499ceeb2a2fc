//! `locald-vm`'s life cycle: create, start, stop, delete and status, through a
//! [`Limactl`].

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Serialize;

use crate::{
    limactl::{Instance, Limactl, ProgressLines, Status},
    limayaml::{LimaYaml, VmOptions, HOST_SOCKET_IN_INSTANCE},
    release::{compare_versions, PINNED},
    Error, Result, VM_NAME,
};

/// The longest Unix socket path, with its terminating NUL: `sun_path` is 104 bytes on
/// macOS and the BSDs, 108 on Linux.
pub const MAX_SOCKET_PATH: usize = if cfg!(target_os = "linux") { 108 } else { 104 };

/// The longest socket Lima and locald put in an instance directory, relative to
/// `LIMA_HOME`: Lima's own (`ssh.sock`, `ha.sock`) are shorter than the forwarded
/// daemon socket.
fn longest_socket(lima_home: &Path, name: &str) -> PathBuf {
    lima_home.join(name).join(HOST_SOCKET_IN_INSTANCE)
}

/// Fails when a socket path does not fit in `max` bytes (NUL included).
pub fn check_socket_path(path: &Path, max: usize) -> Result<()> {
    let len = path.as_os_str().len();
    if len + 1 > max {
        return Err(Error::SocketPathTooLong {
            path: path.to_owned(),
            len,
            max,
        });
    }
    Ok(())
}

/// Picks `LIMA_HOME`: `<data home>/lima` when the instance's sockets fit there, else
/// `~/.locald-lima`, else an error that says which path is too long.
pub fn lima_home(data_home: &Path, home: Option<&Path>, max: usize) -> Result<PathBuf> {
    let preferred = data_home.join("lima");
    let first = check_socket_path(&longest_socket(&preferred, VM_NAME), max);
    if first.is_ok() {
        return Ok(preferred);
    }
    if let Some(home) = home {
        let short = home.join(".locald-lima");
        if check_socket_path(&longest_socket(&short, VM_NAME), max).is_ok() {
            return Ok(short);
        }
    }
    first.map(|()| preferred)
}

/// The VM's state as `locald vm status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VmStatus {
    /// The instance name.
    pub name: String,
    /// `absent`, `running`, `stopped`, `broken` or `unknown`.
    pub state: String,
    /// The Lima version locald drives.
    pub lima_version: String,
    /// Whether that Lima is installed yet.
    pub lima_installed: bool,
    /// The Lima version that created the instance, when it says.
    pub created_by_lima: Option<String>,
    /// `LIMA_HOME`.
    pub lima_home: PathBuf,
    /// The instance directory.
    pub dir: Option<PathBuf>,
    /// Where the daemon's socket appears on the host.
    pub socket: PathBuf,
    /// `vz` or `qemu`.
    pub vm_type: Option<String>,
    /// Virtual CPUs.
    pub cpus: Option<u32>,
    /// Memory in bytes.
    pub memory: Option<u64>,
    /// How many problems Lima reported.
    pub errors: usize,
}

/// Drives one Lima instance.
#[derive(Debug, Clone)]
pub struct Vm {
    name: String,
    limactl: Arc<dyn Limactl>,
    options: VmOptions,
    config_path: PathBuf,
    lima_version: String,
    start_timeout: Duration,
    progress: Option<ProgressLines>,
}

impl Vm {
    /// The instance `name`, configured by `options`; locald writes its `lima.yaml` to
    /// `config_path` before creating it. `lima_version` is the version of the Lima
    /// behind `limactl`.
    pub fn new(
        name: impl Into<String>,
        limactl: Arc<dyn Limactl>,
        options: VmOptions,
        config_path: impl Into<PathBuf>,
        lima_version: impl Into<String>,
    ) -> Vm {
        Vm {
            name: name.into(),
            limactl,
            options,
            config_path: config_path.into(),
            lima_version: lima_version.into(),
            start_timeout: Duration::from_secs(600),
            progress: None,
        }
    }

    /// How long `limactl start` may take (default 10 minutes: the first start
    /// downloads the guest image).
    pub fn start_timeout(mut self, timeout: Duration) -> Vm {
        self.start_timeout = timeout;
        self
    }

    /// Where Lima's progress lines go while it starts (default: the log).
    pub fn progress(mut self, lines: ProgressLines) -> Vm {
        self.progress = Some(lines);
        self
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The `limactl` in use.
    pub fn limactl(&self) -> &Arc<dyn Limactl> {
        &self.limactl
    }

    /// Where the daemon's forwarded socket appears on the host.
    pub fn host_socket(&self) -> PathBuf {
        longest_socket(self.limactl.lima_home(), &self.name)
    }

    /// The instance, when it exists.
    pub async fn instance(&self) -> Result<Option<Instance>> {
        Ok(self
            .limactl
            .list()
            .await?
            .into_iter()
            .find(|i| i.name == self.name))
    }

    /// The instance's state.
    pub async fn status(&self, lima_installed: bool) -> Result<VmStatus> {
        let instance = if lima_installed {
            self.instance().await?
        } else {
            None
        };
        Ok(VmStatus {
            name: self.name.clone(),
            state: instance
                .as_ref()
                .map_or("absent".to_owned(), |i| i.status.to_string()),
            lima_version: self.lima_version.clone(),
            lima_installed,
            created_by_lima: instance.as_ref().and_then(|i| i.lima_version.clone()),
            lima_home: self.limactl.lima_home().to_owned(),
            dir: instance.as_ref().map(|i| i.dir.clone()),
            socket: self.host_socket(),
            vm_type: instance.as_ref().and_then(|i| i.vm_type.clone()),
            cpus: instance.as_ref().and_then(|i| i.cpus),
            memory: instance.as_ref().and_then(|i| i.memory),
            errors: instance.as_ref().map_or(0, |i| i.errors.len()),
        })
    }

    /// Creates and starts the instance as needed; returns the host socket of its
    /// daemon. Each failure names its step.
    pub async fn ensure_running(&self) -> Result<PathBuf> {
        let name = &self.name;
        let socket = self.host_socket();
        check_socket_path(&socket, MAX_SOCKET_PATH)
            .map_err(Error::step(name, "choosing the socket path"))?;
        let instance = self
            .instance()
            .await
            .map_err(Error::step(name, "listing Lima instances"))?;
        let instance = match instance {
            Some(instance) => instance,
            None => {
                self.create()
                    .await
                    .map_err(Error::step(name, "creating the VM"))?;
                self.instance()
                    .await
                    .map_err(Error::step(name, "listing Lima instances"))?
                    .ok_or_else(|| {
                        Error::step(name, "creating the VM")(Error::Instance {
                            vm: name.clone(),
                            reason: "was not listed by limactl after `limactl create`".into(),
                        })
                    })?
            }
        };
        self.check_version(&instance)
            .map_err(Error::step(name, "checking the VM's Lima version"))?;
        match instance.status {
            Status::Running => {}
            Status::Stopped => {
                let start = format!("starting the VM (Lima {})", self.lima_version);
                self.limactl
                    .start(name, self.start_timeout, self.progress.clone())
                    .await
                    .map_err(Error::step(name, start))?;
            }
            Status::Broken => {
                return Err(Error::step(name, "checking the VM's state")(Error::Instance {
                    vm: name.clone(),
                    reason: format!(
                        "is broken ({} problem(s) reported by limactl); run `locald vm stop --force` and try again, or `locald vm delete`",
                        instance.errors.len()
                    ),
                }));
            }
            Status::Unknown => {
                return Err(Error::step(name, "checking the VM's state")(
                    Error::Instance {
                        vm: name.clone(),
                        reason: "is in a state this locald does not know; see `locald vm status`"
                            .into(),
                    },
                ));
            }
        }
        Ok(socket)
    }

    /// An instance made by an older Lima is started by the pinned one (Lima upgrades
    /// its own instances); one made by a newer Lima than locald's is left alone.
    fn check_version(&self, instance: &Instance) -> Result<()> {
        let Some(created) = &instance.lima_version else {
            return Ok(());
        };
        match compare_versions(created, &self.lima_version) {
            std::cmp::Ordering::Greater => Err(Error::Instance {
                vm: self.name.clone(),
                reason: format!(
                    "was created by Lima {created}, newer than this locald's Lima {}; upgrade locald, or delete the VM with `locald vm delete`",
                    self.lima_version
                ),
            }),
            std::cmp::Ordering::Less => {
                tracing::info!(vm = %self.name, created, lima = %self.lima_version, "the VM was created by an older Lima; the pinned Lima runs it");
                Ok(())
            }
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    async fn create(&self) -> Result<()> {
        let yaml = LimaYaml::generate(&self.options)?;
        if let Some(dir) = self.config_path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        let dir = self.config_path.parent().unwrap_or(Path::new("."));
        let mut temp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| Error::io(format!("writing {}", self.config_path.display()), e))?;
        std::io::Write::write_all(&mut temp, yaml.to_yaml().as_bytes())
            .map_err(|e| Error::io(format!("writing {}", self.config_path.display()), e))?;
        temp.persist(&self.config_path)
            .map_err(|e| Error::io(format!("writing {}", self.config_path.display()), e.error))?;
        self.limactl.create(&self.name, &self.config_path).await
    }

    /// Stops the instance (a missing or stopped one is fine).
    pub async fn stop(&self, force: bool) -> Result<()> {
        match self.instance().await? {
            Some(i) if i.status != Status::Stopped || force => {
                self.limactl.stop(&self.name, force).await
            }
            _ => Ok(()),
        }
    }

    /// Deletes the instance and its disk (a missing one is fine).
    pub async fn delete(&self) -> Result<()> {
        match self.instance().await? {
            Some(_) => self.limactl.delete(&self.name).await,
            None => Ok(()),
        }
    }
}

/// The pinned Lima version, for messages.
pub fn pinned_version() -> &'static str {
    PINNED.version
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lima_home_stays_short_enough_for_sockets() {
        let home = Path::new("/Users/ada");
        let data = home.join(".local/share/locald");
        assert_eq!(
            lima_home(&data, Some(home), 104).unwrap(),
            data.join("lima")
        );
        // A data home so deep the socket would not fit falls back to ~/.locald-lima.
        let deep = home.join("a".repeat(60)).join("locald");
        assert_eq!(
            lima_home(&deep, Some(home), 104).unwrap(),
            home.join(".locald-lima")
        );
        let socket = longest_socket(&home.join(".locald-lima"), VM_NAME);
        assert_eq!(
            socket,
            Path::new("/Users/ada/.locald-lima/locald-vm/sock/locald.sock")
        );
        assert!(socket.as_os_str().len() < 104);
        // Nowhere short enough: the error names the path and the limit.
        let long_home = PathBuf::from(format!("/Users/{}", "b".repeat(90)));
        let err = lima_home(&long_home.join("x"), Some(&long_home), 104).unwrap_err();
        assert!(
            err.to_string()
                .contains("longer than the 104 a Unix socket allows"),
            "{err}"
        );
        // Exactly at the limit: 103 bytes and the NUL fit.
        assert!(check_socket_path(Path::new(&"/".repeat(103)), 104).is_ok());
        assert!(check_socket_path(Path::new(&"/".repeat(104)), 104).is_err());
    }
}
