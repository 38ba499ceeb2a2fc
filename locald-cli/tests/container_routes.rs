//! The daemon's container routes and its restart logic, over a real socket.
//!
//! These tests use `StandIn`, a small in-memory runtime whose "containers" are entries
//! in a map and whose main process is a real `cat`, so they run without root. It exists
//! only to prove that every container method crosses the daemon intact (values, typed
//! errors, streams, log frames) and that a restarted daemon cleans up after
//! auto-remove containers. The conformance suite's `containers` case and the
//! end-to-end tests cover the real container runtime through the daemon.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use locald::remote::{Host, RemoteRuntime};
use locald::{
    Capability, Command, ContainerHandle, ContainerSpec, ContainerState, ContainerSummary, Error,
    ExitStatus, ImageRef, ImageSummary, LogChunks, LogOptions, LogStream, Platform, Process,
    PullOptions, Result, Runtime, RuntimeInfo, Signal, Stdin, Stdio,
};
use locald_cli::daemon::{bind_unix, Listener, Server, StateDir};
use locald_runtime::ProcessRuntime;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::watch,
};

#[derive(Debug)]
struct Entry {
    summary: ContainerSummary,
    exited: watch::Sender<Option<ExitStatus>>,
}

#[derive(Debug, Default)]
struct StandIn {
    processes: ProcessRuntime,
    containers: Mutex<BTreeMap<String, Entry>>,
}

fn summary_json(id: &str, name: &str, labels: &BTreeMap<String, String>) -> ContainerSummary {
    // ContainerSummary is non-exhaustive: build it the way a client receives it.
    serde_json::from_value(serde_json::json!({
        "id": id, "name": name, "image": null, "command": ["cat"],
        "state": {"state": "running"}, "created": 1, "pid": null,
        "labels": labels, "ports": [],
    }))
    .unwrap()
}

impl StandIn {
    fn find(&self, id: &str) -> Result<watch::Receiver<Option<ExitStatus>>> {
        let containers = self.containers.lock().unwrap();
        containers
            .get(id)
            .map(|e| e.exited.subscribe())
            .ok_or_else(|| Error::NotFound {
                kind: "container",
                name: id.to_owned(),
            })
    }

    fn end(&self, id: &str, status: ExitStatus) -> Result<()> {
        let mut containers = self.containers.lock().unwrap();
        let entry = containers.get_mut(id).ok_or_else(|| Error::NotFound {
            kind: "container",
            name: id.to_owned(),
        })?;
        entry.summary.state = ContainerState::Exited(status);
        entry.exited.send_replace(Some(status));
        Ok(())
    }
}

#[async_trait]
impl Runtime for StandIn {
    fn info(&self) -> RuntimeInfo {
        RuntimeInfo::new(
            "stand-in",
            Platform::Linux,
            [
                Capability::Commands,
                Capability::Containers,
                Capability::Exec,
                Capability::Images,
            ],
        )
    }

    async fn spawn(&self, command: Command) -> Result<Process> {
        self.processes.spawn(command).await
    }

    async fn run_container(&self, spec: ContainerSpec) -> Result<ContainerHandle> {
        let name = spec.name.clone().unwrap_or_else(|| "stand-in".into());
        let id = format!("{:0>64}", self.containers.lock().unwrap().len() + 1);
        let process = self
            .processes
            .spawn(Command::new("cat").stdin(Stdin::Piped).stdout(Stdio::Piped))
            .await?;
        self.containers.lock().unwrap().insert(
            id.clone(),
            Entry {
                summary: summary_json(&id, &name, &spec.labels),
                exited: watch::channel(None).0,
            },
        );
        Ok(ContainerHandle::new(id, name, process))
    }

    async fn list_containers(&self, all: bool) -> Result<Vec<ContainerSummary>> {
        Ok(self
            .containers
            .lock()
            .unwrap()
            .values()
            .map(|e| e.summary.clone())
            .filter(|s| all || s.state == ContainerState::Running)
            .collect())
    }

    async fn inspect_container(&self, id: &str) -> Result<ContainerSummary> {
        self.find(id)?;
        Ok(self.containers.lock().unwrap()[id].summary.clone())
    }

    async fn wait_container(&self, id: &str) -> Result<ExitStatus> {
        let mut exited = self.find(id)?;
        let status = exited.wait_for(Option::is_some).await.unwrap();
        Ok(status.expect("waited for"))
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        assert_eq!(
            grace,
            Duration::from_millis(1500),
            "the grace period crosses intact"
        );
        self.end(id, ExitStatus::Signaled(Signal::TERM))
    }

    async fn kill_container(&self, id: &str, signal: Signal) -> Result<()> {
        self.end(id, ExitStatus::Signaled(signal))
    }

    async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        let running = self.inspect_container(id).await?.state == ContainerState::Running;
        if running && !force {
            return Err(Error::invalid(
                "container",
                id,
                "it is running; stop it or force",
            ));
        }
        self.containers.lock().unwrap().remove(id);
        Ok(())
    }

    async fn container_logs(&self, id: &str, options: LogOptions) -> Result<LogChunks> {
        let mut exited = self.find(id)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let _ = tx.send(Ok((LogStream::Stdout, b"hello\n".to_vec()))).await;
            let _ = tx.send(Ok((LogStream::Stderr, vec![0, 255, 10]))).await;
            if options.follow {
                let _ = exited.wait_for(Option::is_some).await;
                let _ = tx.send(Ok((LogStream::Stdout, b"bye\n".to_vec()))).await;
            }
            if options.tail == Some(0) {
                let _ = tx
                    .send(Err(Error::io(
                        "reading the log file",
                        std::io::Error::other("disk on fire"),
                    )))
                    .await;
            }
        });
        Ok(Box::pin(Chunks(rx)))
    }

    async fn exec(&self, id: &str, command: Command) -> Result<Process> {
        self.find(id)?;
        self.processes.spawn(command).await
    }

    async fn pull_image(&self, image: &ImageRef, _options: PullOptions) -> Result<ImageSummary> {
        Ok(ImageSummary::new(
            image.clone(),
            "sha256:abc".into(),
            "sha256:def".into(),
            42,
            None,
            "linux/amd64".into(),
        ))
    }
}

struct Chunks(tokio::sync::mpsc::Receiver<Result<(LogStream, Vec<u8>)>>);

impl futures_core::Stream for Chunks {
    type Item = Result<(LogStream, Vec<u8>)>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

async fn collect(mut logs: LogChunks) -> Vec<Result<(LogStream, Vec<u8>)>> {
    let mut out = Vec::new();
    while let Some(chunk) = std::future::poll_fn(|cx| logs.as_mut().poll_next(cx)).await {
        out.push(chunk);
    }
    out
}

struct Running {
    remote: RemoteRuntime,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

async fn serve(server: Server, socket: &std::path::Path) -> Running {
    let listener = bind_unix(socket).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(async move {
        server
            .serve(
                vec![Listener::Unix(listener)],
                async {
                    let _ = stopped.await;
                },
                Duration::from_secs(1),
            )
            .await
            .unwrap();
    });
    let remote = RemoteRuntime::connect(Host::Unix(socket.to_owned()))
        .await
        .unwrap();
    Running {
        remote,
        stop,
        served,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_container_method_crosses_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let standin = Arc::new(StandIn::default());
    let running = serve(Server::new(standin.clone()), &dir.path().join("s.sock")).await;
    let rt = &running.remote;
    assert_eq!(rt.info(), standin.info());

    let spec = ContainerSpec::builder("busybox")
        .name("web")
        .label("tier", "front")
        .build()
        .unwrap();
    let mut handle = rt.run_container(spec).await.unwrap();
    assert_eq!(handle.name(), "web");
    assert_eq!(handle.id().len(), 64);
    let id = handle.id().to_owned();
    // The main process streams like any other.
    let mut stdin = handle.process().take_stdin().unwrap();
    let mut stdout = handle.process().take_stdout().unwrap();
    stdin.write_all(b"attached\n").await.unwrap();
    drop(stdin);
    let mut echoed = String::new();
    stdout.read_to_string(&mut echoed).await.unwrap();
    assert_eq!(echoed, "attached\n");
    assert!(handle.wait().await.unwrap().success());

    let listed = rt.list_containers(false).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].labels["tier"], "front");
    assert_eq!(
        rt.inspect_container("web-does-not-exist")
            .await
            .unwrap_err()
            .to_string(),
        "no such container: web-does-not-exist"
    );
    assert!(matches!(
        rt.inspect_container("../../etc").await.unwrap_err(),
        Error::NotFound {
            kind: "container",
            ..
        }
    ));

    let logs = collect(rt.container_logs(&id, LogOptions::default()).await.unwrap()).await;
    let logs: Vec<_> = logs.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        logs,
        [
            (LogStream::Stdout, b"hello\n".to_vec()),
            (LogStream::Stderr, vec![0, 255, 10])
        ]
    );
    let mut options = LogOptions::default();
    options.tail = Some(0);
    let logs = collect(rt.container_logs(&id, options).await.unwrap()).await;
    let err = logs.last().unwrap().as_ref().unwrap_err();
    assert_eq!(err.to_string(), "reading the log file");
    assert!(matches!(err, Error::Io { .. }));

    // A follower sees the end when the container ends.
    let mut follow = LogOptions::default();
    follow.follow = true;
    let follower = tokio::spawn({
        let rt = rt.clone();
        let id = id.clone();
        async move { collect(rt.container_logs(&id, follow).await.unwrap()).await }
    });
    let waiter = tokio::spawn({
        let rt = rt.clone();
        let id = id.clone();
        async move { rt.wait_container(&id).await }
    });
    let out = rt
        .exec(&id, Command::new("echo").arg("inside"))
        .await
        .unwrap()
        .output()
        .await
        .unwrap();
    assert_eq!(out.stdout, b"inside\n");
    let err = rt.remove_container(&id, false).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("invalid container \"{id}\": it is running; stop it or force")
    );
    rt.kill_container(&id, Signal::USR1).await.unwrap();
    assert_eq!(
        waiter.await.unwrap().unwrap(),
        ExitStatus::Signaled(Signal::USR1)
    );
    let followed = follower.await.unwrap();
    assert_eq!(followed.len(), 3);
    assert_eq!(followed[2].as_ref().unwrap().1, b"bye\n");
    rt.stop_container(&id, Duration::from_millis(1500))
        .await
        .unwrap();
    rt.remove_container(&id, false).await.unwrap();
    assert!(rt.list_containers(true).await.unwrap().is_empty());

    let image: ImageRef = "busybox".parse().unwrap();
    let pulled = rt.pull_image(&image, PullOptions::default()).await.unwrap();
    assert_eq!(pulled.reference, image);
    assert_eq!(pulled.size, 42);
    running.stop.send(()).unwrap();
    running.served.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_removes_auto_remove_containers_that_ended() {
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("daemon");
    let socket = dir.path().join("s.sock");
    let standin = Arc::new(StandIn::default());

    let first = Server::with_state(standin.clone(), StateDir::open(&state_path).unwrap());
    let running = serve(first, &socket).await;
    let spec = |name: &str| {
        ContainerSpec::builder("busybox")
            .name(name)
            .auto_remove(true)
            .build()
            .unwrap()
    };
    let ended = running
        .remote
        .run_container(spec("ended"))
        .await
        .unwrap()
        .id()
        .to_owned();
    let still = running
        .remote
        .run_container(spec("still"))
        .await
        .unwrap()
        .id()
        .to_owned();
    let kept = running
        .remote
        .run_container(
            ContainerSpec::builder("busybox")
                .name("kept")
                .build()
                .unwrap(),
        )
        .await
        .unwrap()
        .id()
        .to_owned();
    assert!(state_path.join(format!("containers/{ended}.json")).exists());
    assert!(!state_path.join(format!("containers/{kept}.json")).exists());
    // The daemon goes away; while it is gone, one container ends.
    running.stop.send(()).unwrap();
    running.served.await.unwrap();
    drop(running.remote);
    standin.end(&ended, ExitStatus::Exited(0)).unwrap();
    standin.end(&kept, ExitStatus::Exited(1)).unwrap();

    let second = Server::with_state(standin.clone(), StateDir::open(&state_path).unwrap());
    let recovery = second.recover().await;
    assert_eq!(recovery.removed_containers, vec![ended.clone()]);
    assert_eq!(recovery.watch_containers, vec![still.clone()]);
    assert_eq!(recovery.running_containers, vec![still.clone()]);
    assert_eq!(recovery.exited_containers.len(), 2);
    assert!(standin.inspect_container(&ended).await.is_err(), "removed");
    assert!(
        standin.inspect_container(&kept).await.is_ok(),
        "not auto-remove: kept"
    );
    // The running one is removed once it exits.
    standin.end(&still, ExitStatus::Exited(0)).unwrap();
    for _ in 0..200 {
        if standin.inspect_container(&still).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        standin.inspect_container(&still).await.is_err(),
        "removed after it exited"
    );
    assert!(!state_path.join(format!("containers/{still}.json")).exists());
}
