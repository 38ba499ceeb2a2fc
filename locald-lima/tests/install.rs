//! The installer against a real HTTP server on loopback serving real tar.gz archives
//! built here: verified installs, refused digests, retried cuts, one install for two
//! installers, and unsafe archives refused with nothing left behind.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{body::Body, extract::State, response::IntoResponse, routing::get, Router};
use locald_core::PullProgress;
use locald_lima::{
    install::{Installer, Source},
    release::{Asset, Release},
    Error,
};
use sha2::{Digest, Sha256};

#[derive(Default)]
struct Served {
    archive: Vec<u8>,
    requests: AtomicUsize,
    /// This many first responses stop halfway and drop the connection.
    cut: AtomicUsize,
    /// Each response waits this long first (to overlap concurrent installers).
    delay_ms: u64,
    /// Answer `Range: bytes=N-` with 206 and the rest (as real servers do).
    ranges: bool,
    /// Bytes of the archive sent, over all responses.
    sent: AtomicUsize,
}

async fn serve_archive(
    State(s): State<Arc<Served>>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    s.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(s.delay_ms)).await;
    let len = s.archive.len();
    let from = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|from| s.ranges && *from < len)
        .unwrap_or(0);
    let rest = &s.archive[from..];
    let cut = s
        .cut
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let body = if cut {
        let half = bytes::Bytes::copy_from_slice(&rest[..rest.len() / 2]);
        s.sent.fetch_add(half.len(), Ordering::SeqCst);
        // The first half goes out (flushed before the cut), then the connection drops.
        use futures_util::StreamExt as _;
        Body::from_stream(
            futures_util::stream::iter([Ok::<_, std::io::Error>(half)]).chain(
                futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err(std::io::Error::other("connection cut"))
                }),
            ),
        )
    } else {
        s.sent.fetch_add(rest.len(), Ordering::SeqCst);
        Body::from(rest.to_vec())
    };
    let status = if from > 0 {
        axum::http::StatusCode::PARTIAL_CONTENT
    } else {
        axum::http::StatusCode::OK
    };
    let mut response_headers = vec![("content-length", rest.len().to_string())];
    if from > 0 {
        response_headers.push(("content-range", format!("bytes {from}-{}/{len}", len - 1)));
    }
    (
        status,
        axum::http::HeaderMap::from_iter(
            response_headers
                .into_iter()
                .map(|(k, v)| (axum::http::HeaderName::from_static(k), v.parse().unwrap())),
        ),
        body,
    )
}

async fn server(served: Arc<Served>) -> SocketAddr {
    let app = Router::new()
        .route("/lima/{name}", get(serve_archive))
        .with_state(served);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A Lima-shaped archive: `./bin/limactl`, `./share/lima/…`, a relative symlink.
fn lima_archive() -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut add = |path: &str, body: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(mode);
        tar.append_data(&mut h, path, body).unwrap();
    };
    add(
        "./bin/limactl",
        b"#!/bin/sh\necho 'limactl version 9.9.9'\n",
        0o755,
    );
    add(
        "./share/lima/lima-guestagent.Linux-aarch64.gz",
        b"agent",
        0o644,
    );
    add("./share/doc/lima/README.md", b"docs", 0o644);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    tar.append_link(
        &mut h,
        "./bin/lima-agent",
        "../share/lima/lima-guestagent.Linux-aarch64.gz",
    )
    .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

/// An archive with one entry whose raw name is `name` (which tar's builder would
/// refuse to write).
fn archive_with_raw_name(name: &[u8]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    tar.append(&h, &b"evil"[..]).unwrap();
    let mut ok = tar::Header::new_gnu();
    ok.set_size(3);
    ok.set_mode(0o755);
    tar.append_data(&mut ok, "bin/limactl", &b"x\n\n"[..])
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn release_for(digest: &str) -> (Release, &'static Asset) {
    let digest: &'static str = Box::leak(digest.to_owned().into_boxed_str());
    let assets: &'static [Asset] =
        Box::leak(vec![Asset::new("Darwin", "arm64", Some(digest))].into_boxed_slice());
    (Release::new("9.9.9", assets), &assets[0])
}

fn installer(tools: &Path, addr: SocketAddr) -> Installer {
    Installer::new(tools)
        .source(Source::Url(format!("http://{addr}/lima/")))
        .retries(4, Duration::from_millis(10))
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn installs_the_whole_tree_verified_and_only_once() {
    let archive = lima_archive();
    let (release, asset) = release_for(&sha256(&archive));
    let served = Arc::new(Served {
        archive,
        ..Served::default()
    });
    let addr = server(served.clone()).await;
    let tools = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let installed = installer(tools.path(), addr)
        .progress(tx)
        .install_asset(&release, asset)
        .await
        .unwrap();
    assert_eq!(installed.dir, tools.path().join("lima-9.9.9"));
    assert_eq!(installed.version, "9.9.9");
    let limactl = installed.limactl();
    let out = std::process::Command::new(&limactl).output().unwrap();
    assert_eq!(
        out.stdout, b"limactl version 9.9.9\n",
        "the binary is executable"
    );
    assert!(installed
        .dir
        .join("share/lima/lima-guestagent.Linux-aarch64.gz")
        .is_file());
    assert_eq!(
        std::fs::read(installed.dir.join("bin/lima-agent")).unwrap(),
        b"agent"
    );
    // Progress arrives as image pulls report it.
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    assert!(
        matches!(events.first(), Some(PullProgress::LayerProgress { .. })),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(PullProgress::LayerDone { .. })),
        "{events:?}"
    );
    // Installed is installed: no second download.
    let again = installer(tools.path(), addr)
        .install_asset(&release, asset)
        .await
        .unwrap();
    assert_eq!(again, installed);
    assert_eq!(served.requests.load(Ordering::SeqCst), 1);
    // Only the install and its lock file remain: no temporary files.
    assert_eq!(entries(tools.path()), [".lima-9.9.9.lock", "lima-9.9.9"]);
}

#[tokio::test]
async fn a_wrong_digest_installs_nothing() {
    let archive = lima_archive();
    let (release, asset) = release_for(&"0".repeat(64));
    let actual = sha256(&archive);
    let addr = server(Arc::new(Served {
        archive,
        ..Served::default()
    }))
    .await;
    let tools = tempfile::tempdir().unwrap();
    let err = installer(tools.path(), addr)
        .install_asset(&release, asset)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "lima-9.9.9-Darwin-arm64.tar.gz does not match its pinned digest: expected sha256:{}, got sha256:{actual}",
            "0".repeat(64)
        )
    );
    assert_eq!(entries(tools.path()), [".lima-9.9.9.lock"]);
}

#[tokio::test]
async fn a_cut_download_is_retried() {
    let archive = lima_archive();
    let (release, asset) = release_for(&sha256(&archive));
    let served = Arc::new(Served {
        archive,
        cut: AtomicUsize::new(2),
        ..Served::default()
    });
    let addr = server(served.clone()).await;
    let tools = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    installer(tools.path(), addr)
        .progress(tx)
        .install_asset(&release, asset)
        .await
        .unwrap();
    assert_eq!(served.requests.load(Ordering::SeqCst), 3);
    let mut retries = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let PullProgress::LayerRetry { attempt, .. } = e {
            retries.push(attempt);
        }
    }
    assert_eq!(retries, [2, 3]);
    assert_eq!(entries(tools.path()), [".lima-9.9.9.lock", "lima-9.9.9"]);

    // Cut every time: the error says where, after the last try.
    let served = Arc::new(Served {
        archive: lima_archive(),
        cut: AtomicUsize::new(100),
        ..Served::default()
    });
    let addr = server(served.clone()).await;
    let tools = tempfile::tempdir().unwrap();
    let (release, asset) = release_for(&sha256(&served.archive));
    let err = installer(tools.path(), addr)
        .install_asset(&release, asset)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("downloading http://{addr}/lima/")),
        "{err}"
    );
    assert_eq!(served.requests.load(Ordering::SeqCst), 4);
    assert_eq!(entries(tools.path()), [".lima-9.9.9.lock"]);
}

#[tokio::test]
async fn a_cut_download_resumes_where_it_stopped() {
    // A server that honours Range: each retry asks only for what is missing.
    let archive = lima_archive();
    let (release, asset) = release_for(&sha256(&archive));
    let served = Arc::new(Served {
        archive,
        cut: AtomicUsize::new(3),
        ranges: true,
        ..Served::default()
    });
    let addr = server(served.clone()).await;
    let tools = tempfile::tempdir().unwrap();
    let installed = installer(tools.path(), addr)
        .install_asset(&release, asset)
        .await
        .unwrap();
    assert!(installed.limactl().is_file());
    assert_eq!(served.requests.load(Ordering::SeqCst), 4);
    assert_eq!(
        served.sent.load(Ordering::SeqCst),
        served.archive.len(),
        "every byte crossed once"
    );

    // A server that ignores Range: the download starts over and still verifies.
    let archive = lima_archive();
    let (release, asset) = release_for(&sha256(&archive));
    let served = Arc::new(Served {
        archive,
        cut: AtomicUsize::new(1),
        ..Served::default()
    });
    let addr = server(served.clone()).await;
    let tools = tempfile::tempdir().unwrap();
    installer(tools.path(), addr)
        .install_asset(&release, asset)
        .await
        .unwrap();
    assert_eq!(
        served.sent.load(Ordering::SeqCst),
        served.archive.len() / 2 + served.archive.len()
    );
    assert_eq!(entries(tools.path()), [".lima-9.9.9.lock", "lima-9.9.9"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installers_install_once() {
    let archive = lima_archive();
    let (release, asset) = release_for(&sha256(&archive));
    let served = Arc::new(Served {
        archive,
        delay_ms: 200,
        ..Served::default()
    });
    let addr = server(served.clone()).await;
    let tools = tempfile::tempdir().unwrap();
    let (first, second) = (installer(tools.path(), addr), installer(tools.path(), addr));
    let (a, b) = tokio::join!(
        first.install_asset(&release, asset),
        second.install_asset(&release, asset),
    );
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(served.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn archives_that_escape_are_refused() {
    for name in [&b"../evil"[..], b"/tmp/evil", b"bin/../../evil"] {
        let archive = archive_with_raw_name(name);
        let (release, asset) = release_for(&sha256(&archive));
        let mirror = tempfile::tempdir().unwrap();
        let file = mirror.path().join("lima.tar.gz");
        std::fs::write(&file, &archive).unwrap();
        let tools = tempfile::tempdir().unwrap();
        // A local mirror file, as LOCALD_LIMA_URL=/path/lima.tar.gz names one.
        let err = Installer::new(tools.path())
            .source(Source::parse(file.to_str().unwrap()))
            .install_asset(&release, asset)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnsafeArchive { .. }), "{err:?}");
        assert!(
            err.to_string().contains("leaves the install directory"),
            "{err}"
        );
        assert_eq!(
            entries(tools.path()),
            [".lima-9.9.9.lock"],
            "nothing installed"
        );
        assert!(!Path::new("/tmp/evil").exists() && !tools.path().join("../evil").exists());
    }
}

#[tokio::test]
async fn a_release_without_a_verified_digest_is_never_installed() {
    const ASSETS: &[Asset] = &[Asset::new("Linux", "aarch64", None)];
    let release = Release::new("1.0.0", ASSETS);
    let tools = tempfile::tempdir().unwrap();
    let err = Installer::new(tools.path())
        .source(Source::Url("http://127.0.0.1:9/".into()))
        .install_asset(&release, &release.assets[0])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Lima 1.0.0 has no verified archive for Linux aarch64"
    );
}
