//! Containers run from images, through the `Runtime` trait: the snapshot modes, what
//! an image's config says (stop signal, labels), and pulling a missing image. These
//! need root and busybox-static; the pull test also `docker-registry` and `skopeo`.
//! Without them each test says so loudly and skips (CI runs them).
#![cfg(target_os = "linux")]
#![allow(clippy::print_stderr)]

use std::{os::unix::fs::PermissionsExt, time::Duration};

use locald_core::{ContainerSpec, ContainerSpecBuilder, ExitStatus, ImageRef, Runtime};
use locald_runtime::{image::SnapshotMode, ContainerRuntime};
use locald_test_support::{self as support, Compression, Layer, Layout};
use tokio::io::AsyncReadExt;

struct Env {
    home: tempfile::TempDir,
    rt: ContainerRuntime,
    layouts: tempfile::TempDir,
}

fn env(test: &str, tools: &[&str]) -> Option<Env> {
    if !support::require(test, true, tools) || !support::has_tool("busybox") {
        eprintln!("SKIP {test}: needs root and busybox-static");
        return None;
    }
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let rt =
        ContainerRuntime::with_home(home.path()).shim_program(env!("CARGO_BIN_EXE_locald-shim"));
    Some(Env {
        home,
        rt,
        layouts: tempfile::tempdir().unwrap(),
    })
}

impl Env {
    /// Writes an OCI layout with one image of `layers` (over busybox) and `config`.
    fn layout(&self, name: &str, layers: Vec<Layer>, config: serde_json::Value) -> Layout {
        let mut layout = Layout::new(self.layouts.path().join(name));
        let busybox = locald_runtime::testing::shared_busybox_rootfs().expect("busybox rootfs");
        let busybox = Layer::from_dir(&busybox).expect("the busybox rootfs as a layer");
        let mut all = vec![(busybox, Compression::Gzip)];
        all.extend(layers.into_iter().map(|l| (l, Compression::Gzip)));
        let image = layout.image("amd64", &all, config);
        layout.name_image(name, &image);
        layout
    }

    /// Loads an image made by [`Env::layout`] into the runtime's store.
    async fn load(&self, name: &str, layers: Vec<Layer>, config: serde_json::Value) -> ImageRef {
        let layout = self.layout(name, layers, config);
        let loaded = self.rt.load_image(&layout.dir).await.unwrap();
        loaded[0].reference.clone()
    }

    /// Runs to completion on `rt`; returns status and stdout; removes the container.
    async fn run_on(&self, rt: &ContainerRuntime, b: ContainerSpecBuilder) -> (ExitStatus, String) {
        let mut h = rt.run_container(b.build().unwrap()).await.unwrap();
        let id = h.id().to_owned();
        let mut out = h.process().take_stdout().unwrap();
        let mut err = h.process().take_stderr().unwrap();
        let (mut o, mut e) = (String::new(), String::new());
        let (a, b2, status) = tokio::join!(
            out.read_to_string(&mut o),
            err.read_to_string(&mut e),
            h.wait()
        );
        a.unwrap();
        b2.unwrap();
        let status = status.unwrap();
        rt.remove_container(&id, false).await.unwrap();
        assert_eq!(e, "", "stderr");
        (status, o)
    }

    fn left(&self) -> (usize, usize) {
        let containers = locald_test_support::container_dirs_left(self.home.path()).len();
        let mounts = locald_test_support::mounts_under_home(self.home.path()).len();
        (containers, mounts)
    }
}

/// A lower layer's file deleted by a whiteout in an upper layer, and a directory made
/// opaque by the upper layer: the container sees the same tree whether its root is an
/// overlayfs mount or a copy of the layers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_snapshot_applies_whiteouts_and_opaque_dirs() {
    let Some(e) = env("copy_snapshot_applies_whiteouts_and_opaque_dirs", &[]) else {
        return;
    };
    let lower = Layer::new()
        .dir("data")
        .file("data/deleted", "from the lower layer")
        .file("data/kept", "kept")
        .dir("data/replaced")
        .file("data/replaced/old", "from the lower layer");
    let upper = Layer::new()
        .dir("data")
        .whiteout("data/deleted")
        .dir("data/replaced")
        .opaque("data/replaced")
        .file("data/replaced/new", "from the upper layer");
    let image = e
        .load(
            "localhost/layered:1",
            vec![lower, upper],
            serde_json::json!({}),
        )
        .await;
    let script = "cd /data && echo $(ls -A) / $(ls -A replaced); cat replaced/new; echo; \
                  test -e deleted && echo deleted-still-there; \
                  find / -xdev -type c 2>/dev/null | grep -c . ; \
                  grep -c '^overlay / ' /proc/mounts";
    let spec = || ContainerSpec::builder(image.to_string()).cmd(["sh", "-c", script]);
    let copy = e.rt.clone().snapshot_mode(SnapshotMode::Copy);
    let (status, out) = e.run_on(&copy, spec()).await;
    assert_eq!(status, ExitStatus::Exited(1), "{out}");
    // No whiteout device left behind as a file, and the root is not an overlay.
    assert_eq!(
        out, "kept replaced / new\nfrom the upper layer\n0\n0\n",
        "copy mode"
    );
    let overlay = e.rt.clone().snapshot_mode(SnapshotMode::Overlay);
    let (status, out) = e.run_on(&overlay, spec()).await;
    assert_eq!(status, ExitStatus::Exited(0), "{out}");
    assert_eq!(
        out, "kept replaced / new\nfrom the upper layer\n0\n1\n",
        "overlay mode"
    );
    assert_eq!(e.left(), (0, 0), "containers or mounts left");
}

/// `stop` sends the image's `StopSignal`; the image's command traps it and exits with
/// its own code, long before the grace period would end in SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_the_image_stop_signal_and_labels_show() {
    let Some(e) = env("stop_sends_the_image_stop_signal_and_labels_show", &[]) else {
        return;
    };
    let image = e
        .load(
            "localhost/stoppable:1",
            vec![],
            serde_json::json!({
                "StopSignal": "SIGUSR1",
                "Labels": {"org.example.team": "images", "org.example.tier": "image"},
                "Cmd": ["sh", "-c", "trap 'exit 42' USR1; trap '' TERM; echo ready; while :; do sleep 0.05; done"],
            }),
        )
        .await;
    let spec = ContainerSpec::builder(image.to_string())
        .label("org.example.tier", "container")
        .build()
        .unwrap();
    let mut h = e.rt.run_container(spec).await.unwrap();
    let id = h.id().to_owned();
    let mut out = h.process().take_stdout().unwrap();
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).await.unwrap();
    assert_eq!(&ready, b"ready\n");
    let summary = e.rt.inspect_container(&id).await.unwrap();
    assert_eq!(
        summary.labels.get("org.example.team").map(String::as_str),
        Some("images"),
        "an image label"
    );
    assert_eq!(
        summary.labels.get("org.example.tier").map(String::as_str),
        Some("container"),
        "the container's label wins over the image's"
    );
    let started = std::time::Instant::now();
    e.rt.stop_container(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop took {:?}: the stop signal was not delivered",
        started.elapsed()
    );
    assert_eq!(h.wait().await.unwrap(), ExitStatus::Exited(42));
    assert_eq!(
        e.rt.wait_container(&id).await.unwrap(),
        ExitStatus::Exited(42)
    );
    e.rt.remove_container(&id, false).await.unwrap();
    assert_eq!(e.left(), (0, 0), "containers or mounts left");
}

/// `run_container` with an image that is not stored pulls it first, as `docker run`
/// does, with the spec's pull options: `insecure` for a plain-HTTP registry, and the
/// progress channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_container_pulls_a_missing_image() {
    let Some(e) = env(
        "run_container_pulls_a_missing_image",
        &["docker-registry", "skopeo"],
    ) else {
        return;
    };
    let registry = support::Registry::start();
    let layout = e.layout(
        "img",
        vec![Layer::new().dir("etc").file("etc/motd", "pulled by run\n")],
        serde_json::json!({"Cmd": ["cat", "/etc/motd"]}),
    );
    let name = format!("{}/app:1", registry.addr);
    support::push(&layout.dir, "img", &name, &[]);
    assert!(e.rt.list_images().await.unwrap().is_empty());

    // The registry speaks plain HTTP: without `insecure` the pull, and so the run,
    // fails with the pull's own error, and nothing is left behind.
    let err =
        e.rt.run_container(ContainerSpec::builder(name.as_str()).build().unwrap())
            .await
            .unwrap_err();
    assert!(err.to_string().contains(&registry.addr), "{err}");
    assert!(e.rt.list_images().await.unwrap().is_empty());
    assert_eq!(e.left(), (0, 0), "containers or mounts left");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let spec = ContainerSpec::builder(name.as_str())
        .insecure(true)
        .pull_progress(tx);
    let (status, out) = e.run_on(&e.rt, spec).await;
    assert_eq!(
        (status, out.as_str()),
        (ExitStatus::Exited(0), "pulled by run\n")
    );
    let mut events = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        events.push(ev);
    }
    assert!(
        matches!(
            events.first(),
            Some(locald_core::PullProgress::Resolved { layers: 2, .. })
        ),
        "{events:?}"
    );
    let images = e.rt.list_images().await.unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].reference.to_string(), name);

    // Stored now: no pull, so a dead registry does not matter.
    drop(registry);
    let (status, out) = e.run_on(&e.rt, ContainerSpec::builder(name.as_str())).await;
    assert_eq!(
        (status, out.as_str()),
        (ExitStatus::Exited(0), "pulled by run\n")
    );
    assert_eq!(e.left(), (0, 0), "containers or mounts left");
}
