//! The conformance suite against the process runtime in process, and through a real
//! daemon over a Unix socket and over loopback TCP with a token.

use std::{sync::Arc, time::Duration};

use locald::remote::{Host, RemoteRuntime};
use locald::Runtime;
use locald_cli::daemon::{bind_tcp, bind_unix, Listener, Server, Token};
use locald_conformance::Subject;
use locald_runtime::ProcessRuntime;

/// A daemon serving a fresh process runtime in this test process, stopped when the
/// subject is dropped.
struct Daemon {
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn start(listener: Listener) -> (tokio::sync::oneshot::Sender<()>, Server) {
    let server = Server::new(Arc::new(ProcessRuntime::new()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let s = server.clone();
    tokio::spawn(async move {
        s.serve(
            vec![listener],
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    });
    (stop, server)
}

async fn in_process() -> Subject {
    Subject::new(Arc::new(ProcessRuntime::new()))
}

async fn unix() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/locald.sock");
    let (stop, _) = start(Listener::Unix(bind_unix(&socket).unwrap()));
    let remote = RemoteRuntime::connect(Host::Unix(socket)).await.unwrap();
    let runtime: Arc<dyn Runtime> = Arc::new(remote);
    Subject::with_guard(
        runtime,
        Daemon {
            _dir: dir,
            _stop: stop,
        },
    )
}

async fn tcp() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let token = Token::load_or_create(&dir.path().join("token")).unwrap();
    let listener = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, _) = start(Listener::Tcp(listener, token.clone()));
    let host = format!("tcp://{addr}")
        .parse::<Host>()
        .unwrap()
        .with_token(token.as_str());
    let remote = RemoteRuntime::connect(host).await.unwrap();
    let runtime: Arc<dyn Runtime> = Arc::new(remote);
    Subject::with_guard(
        runtime,
        Daemon {
            _dir: dir,
            _stop: stop,
        },
    )
}

mod process {
    locald_conformance::conformance_suite!(super::in_process);
}

mod daemon_unix {
    locald_conformance::conformance_suite!(super::unix);
}

mod daemon_tcp {
    locald_conformance::conformance_suite!(super::tcp);
}

#[tokio::test]
async fn the_remote_runtime_describes_the_runtime_it_serves() {
    let subject = unix().await;
    assert_eq!(subject.runtime.info(), ProcessRuntime::new().info());
}
