//! Pulling, storing and unpacking images against a real registry on loopback.
//!
//! These tests need root (overlayfs whiteouts are device nodes, layers keep their
//! owners) and the tools `docker-registry`, `skopeo`, `umoci`, `openssl`, `htpasswd`.
//! Elsewhere they say SKIPPED loudly; in CI they must run.
#![cfg(target_os = "linux")]

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::{FileTypeExt, MetadataExt},
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc},
};

use locald_core::{Error, ImageRef, PullOptions, PullProgress};
use locald_runtime::image::{AuthSources, ImageStore, RegistryConfig, Snapshot, SnapshotMode};
use locald_test_support::{
    self as support, Compression, Layer, Layout, Proxy, Registry, RegistryOptions,
};

const TOOLS: &[&str] = &["docker-registry", "skopeo"];

/// The shared busybox fixture as an image layer.
fn busybox_layer() -> Layer {
    let rootfs = locald_runtime::testing::shared_busybox_rootfs().expect("busybox rootfs");
    Layer::from_dir(&rootfs).expect("the busybox rootfs as a layer")
}

struct Env {
    home: tempfile::TempDir,
    store: ImageStore,
}

fn env_with(attempts: u32) -> Env {
    let home = tempfile::tempdir().unwrap();
    let store = ImageStore::with_config(
        home.path().join("images"),
        RegistryConfig {
            certs_dir: home.path().join("certs.d"),
            auth: AuthSources::new(home.path().join("auth.json"), vec![]),
            max_attempts: attempts,
        },
    )
    .unwrap();
    Env { home, store }
}

fn env() -> Env {
    env_with(5)
}

fn insecure() -> PullOptions {
    PullOptions::default().insecure(true)
}

fn r(s: &str) -> ImageRef {
    s.parse().unwrap()
}

/// Builds a layout with one image named `name` from `layers` and pushes it.
fn publish(
    registry_addr: &str,
    repo: &str,
    layers: &[(Layer, Compression)],
    extra: &[&str],
) -> (tempfile::TempDir, support::ImageInfo) {
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(dir.path().join("oci"));
    let image = layout.image(
        "amd64",
        layers,
        serde_json::json!({"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]}),
    );
    layout.name_image("img", &image);
    support::push(
        &layout.dir,
        "img",
        &format!("{registry_addr}/{repo}"),
        extra,
    );
    (dir, image)
}

/// Type, mode, owner, content (or link target, or device) of every path in a tree.
fn tree(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let ft = m.file_type();
            let what = if ft.is_dir() {
                "dir".to_owned()
            } else if ft.is_symlink() {
                format!(
                    "link->{} mtime={}",
                    fs::read_link(&p).unwrap().display(),
                    m.mtime()
                )
            } else if ft.is_file() {
                format!(
                    "file {} mtime={}",
                    support::digest(&fs::read(&p).unwrap()),
                    m.mtime()
                )
            } else if ft.is_char_device() {
                format!("chr {}", m.rdev())
            } else {
                "other".to_owned()
            };
            let mode = if ft.is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            out.insert(
                rel,
                format!("{what} mode={mode:o} uid={} gid={}", m.uid(), m.gid()),
            );
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[tokio::test]
async fn pull_anonymous_and_run_from_a_snapshot() {
    if !support::require("pull_anonymous_and_run_from_a_snapshot", true, TOOLS) {
        return;
    }
    let registry = Registry::start();
    let (_d, image) = publish(
        &registry.addr,
        "tools/busybox:latest",
        &[(busybox_layer(), Compression::Gzip)],
        &[],
    );
    let e = env();
    let reference = r(&format!("{}/tools/busybox:latest", registry.addr));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let summary = e
        .store
        .pull(&reference, insecure().progress(tx))
        .await
        .unwrap();
    assert_eq!(summary.digest, image.manifest_digest);
    assert_eq!(summary.id, image.config_digest);
    assert_eq!(summary.platform, "linux/amd64");
    let mut events = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        events.push(ev);
    }
    assert!(
        matches!(
            events.first(),
            Some(PullProgress::Resolved { layers: 1, .. })
        ),
        "{events:?}"
    );
    assert!(events
        .iter()
        .any(|e| matches!(e, PullProgress::LayerDone { .. })));

    let listed = e.store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].reference, reference);

    let resolved = e.store.resolve(&reference).unwrap();
    assert_eq!(resolved.config.cmd(), &Some(vec!["/bin/sh".to_owned()]));
    let snap = Snapshot::create(
        &resolved.layers,
        &e.home.path().join("snap"),
        SnapshotMode::Overlay,
    )
    .unwrap();
    assert!(snap.is_overlay());
    let out = std::process::Command::new(snap.rootfs().join("bin/busybox"))
        .arg("echo")
        .arg("from the image")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"from the image\n");
    // Writes land in the snapshot, never in the shared layer.
    fs::write(snap.rootfs().join("tmp/scratch"), "x").unwrap();
    assert!(!resolved.layers[0].path.join("tmp/scratch").exists());
    let dir = e.home.path().join("snap");
    snap.remove().unwrap();
    assert!(!dir.exists());

    // A second pull finds everything stored.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    e.store
        .pull(&reference, insecure().progress(tx))
        .await
        .unwrap();
    let mut cached = false;
    while let Ok(ev) = rx.try_recv() {
        cached |= matches!(ev, PullProgress::LayerCached { .. });
        assert!(
            !matches!(ev, PullProgress::LayerDone { .. }),
            "downloaded again"
        );
    }
    assert!(cached);
}

#[tokio::test]
async fn plain_http_needs_insecure() {
    if !support::require("plain_http_needs_insecure", false, TOOLS) {
        return;
    }
    let registry = Registry::start();
    publish(
        &registry.addr,
        "x:1",
        &[(Layer::new().file("a", "a"), Compression::Gzip)],
        &[],
    );
    let e = env();
    let err = e
        .store
        .pull(
            &r(&format!("{}/x:1", registry.addr)),
            PullOptions::default(),
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "registry {}: unreachable over HTTPS",
            registry.addr
        )),
        "{msg}"
    );
    assert!(
        msg.ends_with("a local registry without TLS needs --insecure"),
        "{msg}"
    );
}

#[tokio::test]
async fn missing_image_and_tag_are_clear() {
    if !support::require("missing_image_and_tag_are_clear", false, TOOLS) {
        return;
    }
    let registry = Registry::start();
    publish(
        &registry.addr,
        "x:1",
        &[(Layer::new().file("a", "a"), Compression::Gzip)],
        &[],
    );
    let e = env();
    let err = e
        .store
        .pull(&r(&format!("{}/x:2", registry.addr)), insecure())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NotFound { kind: "image", .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "no such image: {}/x:2 (the registry has no manifest 2)",
            registry.addr
        )
    );
    assert!(e.store.list().unwrap().is_empty());
}

#[tokio::test]
async fn multi_platform_index_picks_the_platform() {
    if !support::require("multi_platform_index_picks_the_platform", false, TOOLS) {
        return;
    }
    let registry = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(dir.path().join("oci"));
    let amd = layout.image(
        "amd64",
        &[(Layer::new().file("arch", "amd64"), Compression::Gzip)],
        serde_json::json!({}),
    );
    let arm = layout.image(
        "arm64",
        &[(Layer::new().file("arch", "arm64"), Compression::Zstd)],
        serde_json::json!({}),
    );
    layout.name_index("multi", &[("linux/amd64", &amd), ("linux/arm64/v8", &arm)]);
    support::push(
        &layout.dir,
        "multi",
        &format!("{}/multi:latest", registry.addr),
        &["--all"],
    );
    let reference = r(&format!("{}/multi:latest", registry.addr));

    let e = env();
    let s = e.store.pull(&reference, insecure()).await.unwrap();
    assert_eq!(
        s.digest, amd.manifest_digest,
        "the host's platform by default"
    );
    let arm_env = env();
    let s = arm_env
        .store
        .pull(&reference, insecure().platform("linux/arm64"))
        .await
        .unwrap();
    assert_eq!(s.digest, arm.manifest_digest);
    assert_eq!(s.platform, "linux/arm64");
    let layer = &arm_env.store.resolve(&reference).unwrap().layers[0];
    assert_eq!(
        fs::read_to_string(layer.path.join("arch")).unwrap(),
        "arm64"
    );

    let err = env()
        .store
        .pull(&reference, insecure().platform("linux/s390x"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}/multi:latest has no image for linux/s390x; it has linux/amd64, linux/arm64/v8",
            registry.addr
        )
    );
}

#[tokio::test]
async fn docker_v2_schema2_images_pull_too() {
    if !support::require("docker_v2_schema2_images_pull_too", false, TOOLS) {
        return;
    }
    let registry = Registry::start();
    publish(
        &registry.addr,
        "docker-format:1",
        &[(Layer::new().file("hello", "docker"), Compression::Gzip)],
        &["--format", "v2s2"],
    );
    let e = env();
    let reference = r(&format!("{}/docker-format:1", registry.addr));
    e.store.pull(&reference, insecure()).await.unwrap();
    let layer = &e.store.resolve(&reference).unwrap().layers[0];
    assert_eq!(
        fs::read_to_string(layer.path.join("hello")).unwrap(),
        "docker"
    );
}

/// Three layers: files, deletions, an opaque (replaced) directory, hard and symbolic
/// links, modes and owners.
fn layered_image() -> Vec<(Layer, Compression)> {
    let base = Layer::new()
        .dir("etc")
        .file("etc/keep", "keep")
        .file("etc/remove-me", "bye")
        .dir("app")
        .file("app/old1", "old")
        .dir("app/sub")
        .file("app/sub/old2", "old")
        .file_with("bin-tool", "#!/bin/sh\n", 0o755, 1000)
        .hardlink("bin-tool-link", "bin-tool")
        .symlink("etc/alias", "keep")
        .dir("gone-dir")
        .file("gone-dir/x", "x")
        .file("replaced-by-dir", "file");
    let middle = Layer::new()
        .dir("etc")
        .whiteout("etc/remove-me")
        .whiteout("gone-dir")
        .file("etc/added", "added")
        .dir("replaced-by-dir")
        .file("replaced-by-dir/inside", "now a dir")
        .file_with("secret", "s", 0o600, 0);
    let top = Layer::new()
        .dir("app")
        .opaque("app")
        .file("app/new", "new")
        .dir("etc")
        .file("etc/keep", "changed on top")
        .file("etc/remove-me", "back again");
    // (Debian's umoci reads no zstd layers; zstd is covered by the multi-platform test.)
    vec![
        (base, Compression::Gzip),
        (middle, Compression::Gzip),
        (top, Compression::None),
    ]
}

#[tokio::test]
async fn whiteouts_and_opaque_dirs_match_umoci_in_both_snapshot_modes() {
    if !support::require(
        "whiteouts_and_opaque_dirs_match_umoci_in_both_snapshot_modes",
        true,
        &["docker-registry", "skopeo", "umoci"],
    ) {
        return;
    }
    let registry = Registry::start();
    let (dir, _) = publish(&registry.addr, "layered:1", &layered_image(), &[]);
    let e = env();
    let reference = r(&format!("{}/layered:1", registry.addr));
    e.store.pull(&reference, insecure()).await.unwrap();
    let resolved = e.store.resolve(&reference).unwrap();
    assert_eq!(resolved.layers.len(), 3);

    let overlay = Snapshot::create(
        &resolved.layers,
        &e.home.path().join("o"),
        SnapshotMode::Overlay,
    )
    .unwrap();
    let copy = Snapshot::create(
        &resolved.layers,
        &e.home.path().join("c"),
        SnapshotMode::Copy,
    )
    .unwrap();
    assert!(overlay.is_overlay() && !copy.is_overlay());

    let bundle = dir.path().join("bundle");
    let out = std::process::Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:img", dir.path().join("oci").display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = tree(&bundle.join("rootfs"));
    // Spot checks of what the layers mean, then whole-tree equality.
    assert_eq!(
        want.get("etc/remove-me").map(|s| s.starts_with("file")),
        Some(true)
    );
    assert!(!want.contains_key("gone-dir"));
    assert!(!want.contains_key("app/old1") && !want.contains_key("app/sub"));
    assert_eq!(
        fs::read_to_string(overlay.rootfs().join("etc/keep")).unwrap(),
        "changed on top"
    );
    assert_eq!(
        fs::read_to_string(overlay.rootfs().join("replaced-by-dir/inside")).unwrap(),
        "now a dir"
    );
    assert_eq!(
        tree(overlay.rootfs()),
        want,
        "overlay snapshot differs from umoci"
    );
    assert_eq!(
        tree(copy.rootfs()),
        want,
        "copy snapshot differs from umoci"
    );
    let hl = fs::metadata(copy.rootfs().join("bin-tool")).unwrap();
    assert_eq!(
        hl.ino(),
        fs::metadata(copy.rootfs().join("bin-tool-link"))
            .unwrap()
            .ino(),
        "hard link kept"
    );
    assert_eq!(hl.uid(), 1000);
    overlay.remove().unwrap();
    copy.remove().unwrap();
}

#[tokio::test]
async fn tampered_blob_is_rejected_and_nothing_is_stored() {
    if !support::require(
        "tampered_blob_is_rejected_and_nothing_is_stored",
        false,
        TOOLS,
    ) {
        return;
    }
    let registry = Registry::start();
    let (_d, image) = publish(
        &registry.addr,
        "tampered:1",
        &[(
            Layer::new().file("data", vec![7u8; 100_000]),
            Compression::Gzip,
        )],
        &[],
    );
    // Flip one byte of the layer in the registry's own storage.
    let data = registry.blob_data(&image.layers[0].digest);
    let mut bytes = fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&data, bytes).unwrap();

    let e = env();
    let err = e
        .store
        .pull(&r(&format!("{}/tampered:1", registry.addr)), insecure())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "layer {} does not match its digest",
            image.layers[0].digest
        )),
        "{err}"
    );
    assert_store_has_no_image(&e);
}

fn assert_store_has_no_image(e: &Env) {
    assert!(e.store.list().unwrap().is_empty(), "an image was recorded");
    let root = e.store.store().root();
    let layers: Vec<_> = fs::read_dir(root.join("layers")).unwrap().collect();
    assert!(layers.is_empty(), "layers left: {layers:?}");
    let tmp: Vec<_> = fs::read_dir(root.join("tmp")).unwrap().collect();
    assert!(tmp.is_empty(), "temp files left: {tmp:?}");
    for blob in fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap();
        let bytes = fs::read(blob.path()).unwrap();
        assert_eq!(
            support::digest(&bytes).trim_start_matches("sha256:"),
            blob.file_name().to_str().unwrap(),
            "a stored blob does not match its name"
        );
    }
}

fn big_layer() -> Layer {
    // Incompressible, so the transfer is long enough to interrupt.
    Layer::new().file("big", support::noise(6 << 20))
}

#[tokio::test]
async fn a_cut_connection_resumes_with_range() {
    if !support::require("a_cut_connection_resumes_with_range", false, TOOLS) {
        return;
    }
    let registry = Registry::start();
    let (_d, image) = publish(
        &registry.addr,
        "big:1",
        &[(big_layer(), Compression::Gzip)],
        &[],
    );
    let proxy = Proxy::start(&registry.addr);
    proxy.faults.cut_after.store(1 << 20, Ordering::SeqCst);
    proxy.faults.cuts.store(2, Ordering::SeqCst);
    let e = env();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reference = r(&format!("{}/big:1", proxy.addr));
    e.store
        .pull(&reference, insecure().progress(tx))
        .await
        .unwrap();
    let mut retries = 0;
    while let Ok(ev) = rx.try_recv() {
        if let PullProgress::LayerRetry { .. } = ev {
            retries += 1;
        }
    }
    assert!(retries >= 1, "the transfer was never cut");
    let layer = &e.store.resolve(&reference).unwrap().layers[0];
    assert_eq!(fs::metadata(layer.path.join("big")).unwrap().len(), 6 << 20);
    // Resumed, not restarted: far less than two whole layers crossed the proxy.
    assert!(proxy.relayed.load(Ordering::SeqCst) < 2 * image.layers[0].blob.len() as u64);
}

#[tokio::test]
async fn registry_killed_mid_pull_gives_a_clear_error_and_a_clean_store() {
    if !support::require(
        "registry_killed_mid_pull_gives_a_clear_error_and_a_clean_store",
        false,
        TOOLS,
    ) {
        return;
    }
    let mut registry = Registry::start();
    publish(
        &registry.addr,
        "big:1",
        &[(big_layer(), Compression::Gzip)],
        &[],
    );
    let proxy = Proxy::start(&registry.addr);
    proxy.faults.delay_us.store(20_000, Ordering::SeqCst);
    let e = env_with(3);
    let reference = r(&format!("{}/big:1", proxy.addr));
    let relayed = proxy.relayed.clone();
    let pid = registry.pid();
    let killer = std::thread::spawn(move || {
        while relayed.load(Ordering::SeqCst) < 2 << 20 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
    });
    let err = e.store.pull(&reference, insecure()).await.unwrap_err();
    killer.join().unwrap();
    registry.kill();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("registry {}: fetching layer sha256:", proxy.addr)),
        "{msg}"
    );
    assert!(msg.contains("failed after 3 tries"), "{msg}");
    assert_store_has_no_image(&e);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pulls_of_one_image_fetch_each_layer_once() {
    if !support::require(
        "concurrent_pulls_of_one_image_fetch_each_layer_once",
        false,
        TOOLS,
    ) {
        return;
    }
    let registry = Registry::start();
    let layers = vec![
        (big_layer(), Compression::Gzip),
        (Layer::new().file("small", "s"), Compression::Gzip),
    ];
    publish(&registry.addr, "shared:1", &layers, &[]);
    let proxy = Proxy::start(&registry.addr);
    let home = tempfile::tempdir().unwrap();
    let make = || {
        ImageStore::with_config(
            home.path().join("images"),
            RegistryConfig {
                certs_dir: home.path().join("certs.d"),
                auth: AuthSources::new(home.path().join("auth.json"), vec![]),
                max_attempts: 3,
            },
        )
        .unwrap()
    };
    let reference = r(&format!("{}/shared:1", proxy.addr));
    let (a, b) = (Arc::new(make()), Arc::new(make()));
    let (ra, rb) = (reference.clone(), reference.clone());
    let ta = tokio::spawn(async move { a.pull(&ra, insecure()).await });
    let tb = tokio::spawn(async move { b.pull(&rb, insecure()).await });
    let (sa, sb) = (ta.await.unwrap().unwrap(), tb.await.unwrap().unwrap());
    assert_eq!(sa.digest, sb.digest);
    // The config blob may be fetched by both; each layer blob only once.
    let blob_gets = proxy.blob_requests.load(Ordering::SeqCst);
    assert!(
        blob_gets <= 4,
        "{blob_gets} blob requests for 2 layers + 1 config"
    );
    let store = make();
    assert_eq!(store.list().unwrap().len(), 1);
    let resolved = store.resolve(&reference).unwrap();
    assert_eq!(
        fs::metadata(resolved.layers[0].path.join("big"))
            .unwrap()
            .len(),
        6 << 20
    );
}

/// A directory beside the store that no layer may touch.
struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new() -> Outside {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("victim"), "untouched").unwrap();
        Outside { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn assert_untouched(&self) {
        let names: Vec<String> = fs::read_dir(self.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            names,
            vec!["victim".to_owned()],
            "something was created outside"
        );
        assert_eq!(
            fs::read_to_string(self.path().join("victim")).unwrap(),
            "untouched"
        );
    }
}

async fn pull_layers(
    registry: &Registry,
    repo: &str,
    layers: Vec<(Layer, Compression)>,
) -> (Env, Result<(), Error>) {
    publish(&registry.addr, repo, &layers, &[]);
    let e = env();
    let result = e
        .store
        .pull(&r(&format!("{}/{repo}", registry.addr)), insecure())
        .await
        .map(drop);
    (e, result)
}

#[tokio::test]
async fn unsafe_layer_entries_never_touch_the_host() {
    if !support::require("unsafe_layer_entries_never_touch_the_host", true, TOOLS) {
        return;
    }
    let registry = Registry::start();
    let outside = Outside::new();
    let out = outside.path().display().to_string();
    let depth = "../".repeat(12);

    // '..' escaping the root: rejected.
    let (e, res) = pull_layers(
        &registry,
        "dotdot:1",
        vec![(
            Layer::new().file(&format!("{depth}{}/pwned", &out[1..]), "x"),
            Compression::Gzip,
        )],
    )
    .await;
    let err = res.unwrap_err();
    assert!(err.to_string().contains("has a '..' component"), "{err}");
    assert_store_has_no_image(&e);
    outside.assert_untouched();

    // An absolute path: confined under the root.
    let (e, res) = pull_layers(
        &registry,
        "abs:1",
        vec![(
            Layer::new().file(&format!("{out}/abs"), "inside"),
            Compression::Gzip,
        )],
    )
    .await;
    res.unwrap();
    let layer = &e
        .store
        .resolve(&r(&format!("{}/abs:1", registry.addr)))
        .unwrap()
        .layers[0];
    assert_eq!(
        fs::read_to_string(layer.path.join(&out[1..]).join("abs")).unwrap(),
        "inside"
    );
    outside.assert_untouched();

    // A symlink to the outside, then a file written through it: rejected.
    let (e, res) = pull_layers(
        &registry,
        "through-symlink:1",
        vec![(
            Layer::new()
                .symlink("escape", &out)
                .file("escape/pwned", "x"),
            Compression::Gzip,
        )],
    )
    .await;
    let err = res.unwrap_err();
    assert!(
        err.to_string()
            .contains("written through the symlink escape"),
        "{err}"
    );
    assert_store_has_no_image(&e);
    outside.assert_untouched();

    // A hard link to a host file: rejected.
    let (e, res) = pull_layers(
        &registry,
        "hardlink:1",
        vec![(
            Layer::new().hardlink("stolen", &format!("{out}/victim")),
            Compression::Gzip,
        )],
    )
    .await;
    assert!(res
        .unwrap_err()
        .to_string()
        .contains("not a file unpacked before it"));
    assert_store_has_no_image(&e);
    let (e, res) = pull_layers(
        &registry,
        "hardlink2:1",
        vec![(
            Layer::new().hardlink("stolen", &format!("{depth}{}/victim", &out[1..])),
            Compression::Gzip,
        )],
    )
    .await;
    assert!(res.unwrap_err().to_string().contains("'..'"));
    assert_store_has_no_image(&e);
    outside.assert_untouched();

    // A whiteout naming something outside: rejected.
    let (e, res) = pull_layers(
        &registry,
        "whiteout:1",
        vec![(
            Layer::new().file(&format!("{depth}{}/.wh.victim", &out[1..]), ""),
            Compression::Gzip,
        )],
    )
    .await;
    assert!(res.unwrap_err().to_string().contains("'..'"));
    assert_store_has_no_image(&e);
    outside.assert_untouched();

    // A symlink planted by a lower layer, then a directory of the same name with a file
    // in an upper layer: both snapshot modes replace the link, never follow it.
    let (e, res) = pull_layers(
        &registry,
        "cross-layer:1",
        vec![
            (Layer::new().symlink("planted", &out), Compression::Gzip),
            (
                Layer::new().dir("planted").file("planted/pwned", "x"),
                Compression::Gzip,
            ),
        ],
    )
    .await;
    res.unwrap();
    let resolved = e
        .store
        .resolve(&r(&format!("{}/cross-layer:1", registry.addr)))
        .unwrap();
    for (mode, name) in [(SnapshotMode::Overlay, "o"), (SnapshotMode::Copy, "c")] {
        let snap = Snapshot::create(&resolved.layers, &e.home.path().join(name), mode).unwrap();
        assert!(
            snap.rootfs().join("planted").is_dir()
                && !fs::symlink_metadata(snap.rootfs().join("planted"))
                    .unwrap()
                    .file_type()
                    .is_symlink()
        );
        assert_eq!(
            fs::read_to_string(snap.rootfs().join("planted/pwned")).unwrap(),
            "x"
        );
        snap.remove().unwrap();
    }
    outside.assert_untouched();
}

#[tokio::test]
async fn basic_auth_over_tls_with_a_test_ca() {
    if !support::require(
        "basic_auth_over_tls_with_a_test_ca",
        false,
        &["docker-registry", "skopeo", "openssl", "htpasswd"],
    ) {
        return;
    }
    let registry = Registry::start_with(RegistryOptions {
        tls: true,
        basic_auth: Some(("ada".into(), "s3cret-pass".into())),
    });
    let ca = registry.ca_cert.clone().unwrap();
    let certs = tempfile::tempdir().unwrap();
    fs::copy(&ca, certs.path().join("ca.crt")).unwrap();
    publish(
        &registry.addr,
        "private/app:1",
        &[(Layer::new().file("secret-app", "ok"), Compression::Gzip)],
        &[
            "--dest-cert-dir",
            certs.path().to_str().unwrap(),
            "--dest-creds",
            "ada:s3cret-pass",
        ],
    );
    let reference = r(&format!("{}/private/app:1", registry.addr));

    // No CA: the certificate is refused.
    let e = env();
    let err = e
        .store
        .pull(&reference, PullOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unreachable over HTTPS"), "{err}");

    // The CA in certs.d, no credentials: refused, saying what was tried.
    let ca_dir = e.home.path().join("certs.d").join(&registry.addr);
    fs::create_dir_all(&ca_dir).unwrap();
    fs::copy(&ca, ca_dir.join("ca.crt")).unwrap();
    let err = e
        .store
        .pull(&reference, PullOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("tried anonymous access"), "{err}");

    // Wrong password: refused without printing it.
    let wrong = e
        .store
        .login(&registry.addr, "ada", "wrong-pass", false)
        .await
        .unwrap_err();
    assert!(matches!(wrong, Error::Unauthorized { .. }), "{wrong:?}");
    assert!(!wrong.to_string().contains("wrong-pass"));
    assert!(
        !e.home.path().join("auth.json").exists(),
        "a failed login stored nothing"
    );

    // Logged in: works, and the file is private.
    e.store
        .login(&registry.addr, "ada", "s3cret-pass", false)
        .await
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(e.home.path().join("auth.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    e.store
        .pull(&reference, PullOptions::default())
        .await
        .unwrap();

    // --insecure skips verification (here: no CA at all) but still authenticates.
    let e2 = env();
    AuthSources::new(e2.home.path().join("auth.json"), vec![])
        .store(&registry.addr, "ada", "s3cret-pass")
        .unwrap();
    e2.store.pull(&reference, insecure()).await.unwrap();
}

#[tokio::test]
async fn load_a_layout_and_import_a_rootfs() {
    if !support::require("load_a_layout_and_import_a_rootfs", true, &[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(dir.path().join("oci"));
    let image = layout.image(
        "amd64",
        &[(Layer::new().file("hello", "loaded"), Compression::Gzip)],
        serde_json::json!({}),
    );
    layout.name_image("example.com/loaded:1", &image);
    let e = env();
    let loaded = e
        .store
        .load(&layout.dir, PullOptions::default())
        .await
        .unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].reference, r("example.com/loaded:1"));
    // The same layout as a tar.
    let tarball = dir.path().join("oci.tar");
    let status = std::process::Command::new("tar")
        .arg("-C")
        .arg(&layout.dir)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let e2 = env();
    assert_eq!(
        e2.store
            .load(&tarball, PullOptions::default())
            .await
            .unwrap()[0]
            .digest,
        image.manifest_digest
    );
    let err = e2
        .store
        .load(dir.path(), PullOptions::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not an OCI image layout"), "{err}");
    // A layout naming its image by tag only (skopeo's and umoci's oci:DIR:TAG) gets a local name.
    let mut bare = Layout::new(dir.path().join("My Layout"));
    let img = bare.image(
        "amd64",
        &[(Layer::new().file("b", "b"), Compression::Gzip)],
        serde_json::json!({}),
    );
    bare.name_image("v1", &img);
    let loaded = e2
        .store
        .load(&bare.dir, PullOptions::default())
        .await
        .unwrap();
    assert_eq!(loaded[0].reference, r("localhost/my-layout:v1"));

    let rootfs = dir.path().join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::write(rootfs.join("etc/os-release"), "ID=imported\n").unwrap();
    std::os::unix::fs::symlink("os-release", rootfs.join("etc/link")).unwrap();
    let summary = e
        .store
        .import(&rootfs, &r("imported:latest"), PullOptions::default())
        .await
        .unwrap();
    assert_eq!(summary.reference, r("docker.io/library/imported:latest"));
    let resolved = e.store.resolve(&summary.reference).unwrap();
    let snap = Snapshot::create(
        &resolved.layers,
        &e.home.path().join("s"),
        SnapshotMode::Auto,
    )
    .unwrap();
    assert_eq!(
        fs::read_to_string(snap.rootfs().join("etc/link")).unwrap(),
        "ID=imported\n"
    );
    snap.remove().unwrap();
    assert_eq!(e.store.list().unwrap().len(), 2);
}

#[tokio::test]
async fn rmi_then_prune_frees_everything() {
    if !support::require("rmi_then_prune_frees_everything", false, &[]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(dir.path().join("oci"));
    let image = layout.image(
        "amd64",
        &[(Layer::new().file("a", "a"), Compression::Gzip)],
        serde_json::json!({}),
    );
    layout.name_image("example.com/p:1", &image);
    let e = env();
    e.store
        .load(&layout.dir, PullOptions::default())
        .await
        .unwrap();
    let report = e.store.prune().unwrap();
    assert_eq!(
        (report.blobs, report.layers),
        (0, 0),
        "nothing is unreferenced yet"
    );
    let err = e.store.remove(&r("example.com/p:2")).unwrap_err();
    assert_eq!(err.to_string(), "no such image: example.com/p:2");
    e.store.remove(&r("example.com/p:1")).unwrap();
    let report = e.store.prune().unwrap();
    assert_eq!((report.blobs, report.layers), (3, 1));
    let root = e.store.store().root().to_path_buf();
    let left: Vec<PathBuf> = ["blobs/sha256", "layers", "tmp"]
        .iter()
        .flat_map(|d| {
            fs::read_dir(root.join(d))
                .unwrap()
                .map(|e| e.unwrap().path())
        })
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_during_a_pull_waits_and_removes_nothing_it_needs() {
    if !support::require(
        "prune_during_a_pull_waits_and_removes_nothing_it_needs",
        false,
        TOOLS,
    ) {
        return;
    }
    let registry = Registry::start();
    publish(
        &registry.addr,
        "slow:1",
        &[
            (big_layer(), Compression::Gzip),
            (Layer::new().file("s", "s"), Compression::Gzip),
        ],
        &[],
    );
    let proxy = Proxy::start(&registry.addr);
    proxy.faults.delay_us.store(5_000, Ordering::SeqCst);
    let e = Arc::new(env());
    let reference = r(&format!("{}/slow:1", proxy.addr));
    let pulling = {
        let (e, reference) = (e.clone(), reference.clone());
        tokio::spawn(async move { e.store.pull(&reference, insecure()).await })
    };
    while proxy.relayed.load(Ordering::SeqCst) < (1 << 20) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let pruner = {
        let e = e.clone();
        tokio::task::spawn_blocking(move || e.store.prune())
    };
    pulling.await.unwrap().unwrap();
    pruner.await.unwrap().unwrap();
    let resolved = e.store.resolve(&reference).unwrap();
    for layer in &resolved.layers {
        assert!(
            layer.path.is_dir(),
            "prune removed a layer of the image being pulled"
        );
    }
}
