//! The Windows backend end to end, with a fake `wsl.exe`: `wsl.exe` cannot run here,
//! so [`FakeWsl`] stands in for it, replaying WSL's output formats (from WSL's sources,
//! see `locald_wsl::fake`) and running `--exec` for real. Its `--exec locald daemon
//! --stdio` is the real `locald` binary, so [`WslRuntime`] — distribution check,
//! bridge transport, `RemoteRuntime` — passes the conformance suite (process cases,
//! and container cases as root with `LOCALD_CONFORMANCE_ROOTFS`) through the same
//! code path it takes on Windows. What only Windows can show: `wsl.exe` itself, the
//! console-window flag, and the Linux side being a real WSL2 VM.

use std::{path::Path, sync::Arc};

use locald::remote::SamePaths;
use locald::wsl::{fake::FakeWsl, Error as WslError, RootfsArchive, WslRuntime};
use locald::{Command, Runtime};
use locald_conformance::Subject;

const LOCALD: &str = env!("CARGO_BIN_EXE_locald");

/// A fake WSL with the `locald` distribution registered on WSL 2, whose `--exec
/// locald` runs this build's binary with its own `LOCALD_HOME`.
fn fake(home: &Path) -> FakeWsl {
    FakeWsl::new()
        .program("locald", LOCALD)
        .exec_env("LOCALD_HOME", home.to_str().unwrap())
        .exec_env("RUST_LOG", "error")
}

fn runtime(wsl: &FakeWsl, home: &Path) -> WslRuntime {
    WslRuntime::builder()
        .wsl(Arc::new(wsl.clone()))
        .install_root(home.join("wsl"))
        // The "Windows" side of this test is Linux: its paths are the daemon's.
        .path_map(SamePaths)
        .build()
}

async fn through_fake_wsl() -> Subject {
    let home = tempfile::tempdir().unwrap();
    let wsl = fake(home.path()).with_distro("locald", 2);
    let runtime = runtime(&wsl, home.path());
    runtime.connect().await.unwrap();
    let calls = wsl.calls();
    assert_eq!(calls[0], ["--list", "--verbose"]);
    assert!(
        calls.iter().any(|c| c.ends_with(&[
            "--exec".into(),
            "locald".into(),
            "daemon".into(),
            "--stdio".into()
        ]) && c.starts_with(&[
            "-d".into(),
            "locald".into(),
            "-u".into(),
            "root".into()
        ])),
        "{calls:?}"
    );
    Subject::with_guard(Arc::new(runtime), home)
}

mod conformance_wsl_bridge {
    locald_conformance::conformance_suite!(super::through_fake_wsl);
}

#[tokio::test]
async fn first_use_imports_the_verified_rootfs_then_connects() {
    let home = tempfile::tempdir().unwrap();
    let tarball = home.path().join("rootfs.tar");
    std::fs::write(&tarball, b"not really a tar; the fake does not unpack it").unwrap();
    let sha = locald::wsl::sha256_file(&tarball).unwrap();
    let wsl = fake(home.path());
    let runtime = WslRuntime::builder()
        .wsl(Arc::new(wsl.clone()))
        .install_root(home.path().join("wsl"))
        .path_map(SamePaths)
        .rootfs(RootfsArchive::new(&tarball, format!("sha256:{sha}")))
        .build();
    let out = runtime
        .run_command(Command::new("echo").arg("hello from the distro"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"hello from the distro\n");
    let imported = home.path().join("wsl/locald");
    assert!(wsl.calls().contains(&vec![
        "--import".to_owned(),
        "locald".to_owned(),
        imported.to_str().unwrap().to_owned(),
        tarball.to_str().unwrap().to_owned(),
        "--version".to_owned(),
        "2".to_owned(),
    ]));
    assert_eq!(
        std::fs::read_to_string(imported.join("locald-rootfs.sha256")).unwrap(),
        format!("{sha}\n")
    );
    assert_eq!(wsl.distro("locald"), Some(true), "running after the exec");
}

#[tokio::test]
async fn a_wrong_rootfs_changes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let tarball = home.path().join("rootfs.tar");
    std::fs::write(&tarball, b"tampered").unwrap();
    let wsl = fake(home.path());
    let runtime = WslRuntime::builder()
        .wsl(Arc::new(wsl.clone()))
        .install_root(home.path().join("wsl"))
        .rootfs(RootfsArchive::new(&tarball, "0".repeat(64)))
        .build();
    let err = runtime.run_command(Command::new("true")).await.unwrap_err();
    let chain = chain(&err);
    assert!(
        chain.contains("does not match its pinned digest"),
        "{chain}"
    );
    assert!(!wsl.calls().iter().any(|c| c[0] == "--import"));
    assert!(!home.path().join("wsl").exists());
}

#[tokio::test]
async fn a_missing_distro_says_how_to_install_it() {
    let home = tempfile::tempdir().unwrap();
    let wsl = fake(home.path()).with_distro("Ubuntu", 2);
    let err = runtime(&wsl, home.path())
        .run_command(Command::new("true"))
        .await
        .unwrap_err();
    let chain = chain(&err);
    assert!(chain.contains("locald wsl install"), "{chain}");
}

#[tokio::test]
async fn a_wsl1_distro_says_how_to_convert_it() {
    let home = tempfile::tempdir().unwrap();
    let wsl = fake(home.path()).with_distro("locald", 1);
    let err = runtime(&wsl, home.path())
        .run_command(Command::new("true"))
        .await
        .unwrap_err();
    let chain = chain(&err);
    assert!(chain.contains("wsl --set-version locald 2"), "{chain}");
    assert!(!wsl.calls().iter().any(|c| c.contains(&"--exec".to_owned())));
}

#[tokio::test]
async fn wsl_not_installed_says_how_to_install_it() {
    let home = tempfile::tempdir().unwrap();
    let wsl = fake(home.path()).always_fail(locald::wsl::fake::Failure::NotInstalled);
    let err = runtime(&wsl, home.path())
        .run_command(Command::new("true"))
        .await
        .unwrap_err();
    let chain = chain(&err);
    assert!(
        chain.contains("wsl.exe --install --no-distribution"),
        "{chain}"
    );
    let source = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .and_then(|io| io.get_ref())
        .and_then(|e| e.downcast_ref::<WslError>());
    assert!(
        matches!(source, Some(WslError::NotInstalled { .. })),
        "{err:?}"
    );
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The transport choice, measured: the stdio bridge this backend uses against the
/// daemon's loopback TCP listener with a token (the alternative the issue names).
/// Prints per-call times; run with `--ignored --nocapture`. Here the bridge is the
/// fake's `--exec`, a plain process spawn; on Windows each new connection also pays
/// for starting `wsl.exe`, which only a Windows run can measure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
#[allow(clippy::print_stderr)]
async fn measure_stdio_bridge_against_tcp() {
    use std::time::Instant;
    const N: u32 = 50;
    async fn time(rt: &dyn Runtime) -> (f64, f64) {
        let start = Instant::now();
        for _ in 0..N {
            rt.run_command(Command::new("true")).await.unwrap();
        }
        let pooled = start.elapsed().as_secs_f64() * 1000.0 / f64::from(N);
        let start = Instant::now();
        for _ in 0..N {
            let mut p = rt.spawn(Command::new("true")).await.unwrap();
            p.wait().await.unwrap();
        }
        let fresh = start.elapsed().as_secs_f64() * 1000.0 / f64::from(N);
        (pooled, fresh)
    }
    let home = tempfile::tempdir().unwrap();
    let wsl = fake(home.path()).with_distro("locald", 2);
    let stdio = runtime(&wsl, home.path());
    stdio.connect().await.unwrap();
    let (p, f) = time(&stdio).await;
    eprintln!("stdio bridge: run_command {p:.2} ms (pooled connection), spawn+wait {f:.2} ms (new connection each)");

    let tcp_home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token = tcp_home.path().join("token");
    let mut daemon = std::process::Command::new(LOCALD)
        .args(["daemon", "--socket"])
        .arg(tcp_home.path().join("d.sock"))
        .args(["--tcp", &format!("127.0.0.1:{port}"), "--token-file"])
        .arg(&token)
        .env("LOCALD_HOME", tcp_home.path())
        .spawn()
        .unwrap();
    let host: locald::remote::Host = format!("tcp://127.0.0.1:{port}").parse().unwrap();
    let mut remote = None;
    for _ in 0..200 {
        if let Ok(secret) = std::fs::read_to_string(&token) {
            if let Ok(r) =
                locald::remote::RemoteRuntime::connect(host.clone().with_token(secret.trim())).await
            {
                remote = Some(r);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (p, f) = time(&remote.expect("the TCP daemon answers")).await;
    eprintln!("loopback TCP:  run_command {p:.2} ms (pooled connection), spawn+wait {f:.2} ms (new connection each)");
    let _ = daemon.kill();
    let _ = daemon.wait();
}
