//! The two seams a remote backend plugs into, over a real daemon on a Unix socket:
//! a transport of its own ([`Dial`]) carries the whole conformance suite, and a
//! [`PathMap`] renames every host path a request carries (and only those) before it
//! leaves, refusing paths the daemon cannot see.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_trait::async_trait;
use locald::remote::{Connection, Dial, Host, PrefixMap, RemoteRuntime};
use locald::{
    Capability, Command, ContainerHandle, ContainerSource, ContainerSpec, Error, ImageRef,
    ImageSummary, MountSource, Platform, Process, Result, Runtime, RuntimeInfo,
};
use locald_cli::daemon::{bind_unix, Listener, Server};
use locald_conformance::Subject;
use locald_runtime::ProcessRuntime;

/// A transport of a backend's own: here a Unix socket it counts dials on, standing
/// for a VM's forwarded socket or a `wsl.exe` bridge.
#[derive(Debug)]
struct CountingDial {
    socket: PathBuf,
    dials: Arc<AtomicUsize>,
}

impl fmt::Display for CountingDial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the test transport to {}", self.socket.display())
    }
}

#[async_trait]
impl Dial for CountingDial {
    async fn dial(&self) -> Result<Box<dyn Connection>> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        Host::Unix(self.socket.clone()).dial().await
    }
}

/// Serves `runtime` on a fresh socket until the returned sender is dropped.
fn serve(
    runtime: Arc<dyn Runtime>,
) -> (tempfile::TempDir, PathBuf, tokio::sync::oneshot::Sender<()>) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/locald.sock");
    let listener = Listener::Unix(bind_unix(&socket).unwrap());
    let server = Server::new(runtime);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server
            .serve(
                vec![listener],
                async {
                    let _ = stopped.await;
                },
                Duration::from_secs(1),
            )
            .await
            .unwrap();
    });
    (dir, socket, stop)
}

async fn custom_dial() -> Subject {
    let (dir, socket, stop) = serve(Arc::new(ProcessRuntime::new()));
    let dials = Arc::new(AtomicUsize::new(0));
    let remote = RemoteRuntime::builder(CountingDial {
        socket,
        dials: dials.clone(),
    })
    .connect()
    .await
    .unwrap();
    assert!(
        dials.load(Ordering::SeqCst) >= 1,
        "connect dials through it"
    );
    Subject::with_guard(Arc::new(remote), (dir, stop))
}

mod daemon_custom_dial {
    locald_conformance::conformance_suite!(super::custom_dial);
}

#[tokio::test]
async fn errors_name_the_custom_transport() {
    let dir = tempfile::tempdir().unwrap();
    let err = RemoteRuntime::builder(CountingDial {
        socket: dir.path().join("nobody-listens.sock"),
        dials: Arc::default(),
    })
    .connect()
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cannot connect to the locald daemon at unix://"),
        "{err}"
    );
}

/// What reached the daemon's runtime: specs and image paths, recorded; host commands
/// run for real.
#[derive(Debug, Default)]
struct Recorder {
    processes: ProcessRuntime,
    specs: Mutex<Vec<ContainerSpec>>,
    paths: Mutex<Vec<PathBuf>>,
}

#[async_trait]
impl Runtime for Recorder {
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo::new(
            "recorder",
            Platform::Linux,
            [
                Capability::Commands,
                Capability::Containers,
                Capability::Images,
            ],
        )
    }

    async fn spawn(&self, command: Command) -> Result<Process> {
        self.processes.spawn(command).await
    }

    async fn run_container(&self, spec: ContainerSpec) -> Result<ContainerHandle> {
        self.specs.lock().unwrap().push(spec);
        let process = self.processes.spawn(Command::new("true")).await?;
        Ok(ContainerHandle::new("c1", "recorded", process))
    }

    async fn load_image(&self, path: &Path) -> Result<Vec<ImageSummary>> {
        self.paths.lock().unwrap().push(path.to_path_buf());
        Ok(Vec::new())
    }

    async fn import_image(&self, rootfs: &Path, _image: &ImageRef) -> Result<ImageSummary> {
        self.paths.lock().unwrap().push(rootfs.to_path_buf());
        Err(Error::invalid("image", "recorded", "recorded only"))
    }
}

#[tokio::test]
async fn host_paths_are_mapped_and_container_paths_are_not() {
    let recorder = Arc::new(Recorder::default());
    let (_dir, socket, _stop) = serve(recorder.clone());
    // The daemon sees the client's /client/home as this real directory.
    let shared = tempfile::tempdir().unwrap();
    std::fs::create_dir(shared.path().join("app")).unwrap();
    let remote = RemoteRuntime::builder(Host::Unix(socket))
        .path_map(PrefixMap::new().share("/client/home", shared.path()))
        .connect()
        .await
        .unwrap();

    // A host command's working directory.
    let output = remote
        .run_command(Command::new("pwd").current_dir("/client/home/app"))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim_end(),
        shared.path().join("app").to_str().unwrap()
    );
    let output = remote
        .spawn(Command::new("pwd").current_dir("/client/home/app"))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim_end(),
        shared.path().join("app").to_str().unwrap()
    );

    // A container's root filesystem and bind mount sources; the destinations and the
    // working directory are inside the container and stay as they are.
    let spec = ContainerSpec::builder_from_rootfs("/client/home/rootfs")
        .volume("/client/home/data:/data:ro")
        .volume("cache:/cache")
        .workdir("/client/home")
        .build()
        .unwrap();
    let mut handle = remote.run_container(spec).await.unwrap();
    handle.wait().await.unwrap();
    let seen = recorder.specs.lock().unwrap().pop().unwrap();
    assert_eq!(
        seen.source,
        ContainerSource::Rootfs(shared.path().join("rootfs"))
    );
    assert_eq!(
        seen.mounts[0].source,
        MountSource::Bind(shared.path().join("data"))
    );
    assert_eq!(seen.mounts[0].destination, Path::new("/data"));
    assert_eq!(seen.mounts[1].source, MountSource::Volume("cache".into()));
    assert_eq!(seen.workdir.as_deref(), Some(Path::new("/client/home")));

    // Archives to load and directories to import.
    remote
        .load_image(Path::new("/client/home/image.tar"))
        .await
        .unwrap();
    let image: ImageRef = "localhost/app:1".parse().unwrap();
    let _ = remote
        .import_image(Path::new("/client/home/rootfs"), &image)
        .await;
    assert_eq!(
        *recorder.paths.lock().unwrap(),
        [
            shared.path().join("image.tar"),
            shared.path().join("rootfs")
        ]
    );
}

#[tokio::test]
async fn a_path_the_daemon_cannot_see_is_refused_before_anything_is_sent() {
    let recorder = Arc::new(Recorder::default());
    let (_dir, socket, _stop) = serve(recorder.clone());
    let remote = RemoteRuntime::builder(Host::Unix(socket))
        .path_map(PrefixMap::new().share("/client/home", "/srv"))
        .connect()
        .await
        .unwrap();

    let spec = ContainerSpec::builder_from_rootfs("/client/home/rootfs")
        .volume("/etc:/host-etc")
        .build()
        .unwrap();
    let err = remote.run_container(spec).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid path \"/etc\": not shared with the daemon (shared: /client/home)"
    );
    let err = remote
        .run_command(Command::new("true").current_dir("/tmp"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not shared"), "{err}");
    let err = remote
        .load_image(Path::new("/tmp/image.tar"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not shared"), "{err}");
    assert!(recorder.specs.lock().unwrap().is_empty());
    assert!(recorder.paths.lock().unwrap().is_empty());
}
