//! Test fixtures shared by locald's test suites.
//!
//! Everything here is real: [`Registry`] runs Debian's `docker-registry` (the CNCF
//! distribution server) on a loopback port, [`Layout`] writes OCI image layouts byte by
//! byte (so tests control every tar entry, including malicious ones), [`push`] copies
//! them into the registry with `skopeo`, and [`Proxy`] relays TCP to the registry while
//! cutting or slowing connections on demand. A busybox image layer is
//! [`Layer::from_dir`] of `locald_runtime::testing::shared_busybox_rootfs()`, the one
//! busybox fixture every test shares.
#![allow(clippy::print_stderr, missing_docs)]

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use sha2::{Digest as _, Sha256};

/// True when running as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// True when `tool` is on PATH.
pub fn has_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|p| p.join(tool).is_file()))
        .unwrap_or(false)
}

/// Checks the test's requirements; prints a loud SKIP and returns false when one is
/// missing. CI provides them all (scripts/test installs the tools and runs as root), so
/// there every such test really runs; under CI a missing requirement is a failure.
pub fn require(test: &str, root: bool, tools: &[&str]) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| !has_tool(t))
        .map(|t| t.to_string())
        .collect();
    if root && !is_root() {
        missing.push("root".into());
    }
    if missing.is_empty() {
        return true;
    }
    unavailable(test, &format!("needs {}", missing.join(", ")));
    false
}

/// Reports that `test` cannot run here because of `why`: a loud SKIP line, or a
/// failure under CI, which provides everything.
pub fn unavailable(test: &str, why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{test}: cannot run in CI, which must provide everything: {why}");
    }
    eprintln!("\n!!! SKIPPED {test}: {why} !!!\n");
}

/// Whether process `pid` still runs (a zombie has ended; only its parent has not
/// looked yet).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

/// The parent of process `pid` (0 when it is gone).
pub fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// The command line of process `pid`, its arguments joined by spaces (empty when it
/// is gone).
pub fn cmdline_of(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// The command lines (arguments joined by spaces) of the processes whose command line
/// mentions `needle`, as a leak check looks for what a test left running.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
                .map(cmdline_of)
                .filter(|c| !c.is_empty() && c.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

/// The container directories a locald home still has: the entries of its
/// `containers/` (data directories) and of its `container-run/` (runtime directories, on a tmpfs
/// through that link), as a leak check counts what removed containers left.
pub fn container_dirs_left(home: &Path) -> Vec<String> {
    ["containers", "container-run"]
        .iter()
        .flat_map(|sub| {
            std::fs::read_dir(home.join(sub))
                .map(|d| {
                    d.flatten()
                        .map(|e| format!("{sub}/{}", e.file_name().to_string_lossy()))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .collect()
}

/// The lines of this process's mount table under a locald home: below the home itself
/// or below the tmpfs directory its `container-run` link points to.
pub fn mounts_under_home(home: &Path) -> Vec<String> {
    let mut places = vec![home.to_string_lossy().into_owned()];
    if let Ok(run) = std::fs::canonicalize(home.join("container-run")) {
        places.push(run.to_string_lossy().into_owned());
    }
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| places.iter().any(|p| l.contains(p.as_str())))
        .map(str::to_owned)
        .collect()
}

/// Calls `probe` until `done` accepts its answer or `within` has passed, and returns
/// the last answer: for what ends shortly after the call that ended it (a helper
/// process that finishes its own cleanup, a zombie the runtime reaps).
pub fn settle<T>(
    within: std::time::Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = std::time::Instant::now() + within;
    loop {
        let answer = probe();
        if done(&answer) || std::time::Instant::now() >= deadline {
            return answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_for_port(addr: &str, child: &mut Child) {
    let give_up = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the registry exited at start: {status}");
        }
        assert!(Instant::now() < give_up, "nothing listens on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// How to run a registry.
#[derive(Debug, Default, Clone)]
pub struct RegistryOptions {
    /// Serve HTTPS with a certificate from a fresh test CA.
    pub tls: bool,
    /// Require this user and password (HTTP basic, htpasswd).
    pub basic_auth: Option<(String, String)>,
}

/// A `docker-registry` process on loopback with its own storage.
#[derive(Debug)]
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its storage and config.
    pub dir: tempfile::TempDir,
    /// The test CA's certificate, when serving TLS.
    pub ca_cert: Option<PathBuf>,
    child: Child,
}

impl Registry {
    /// A plain HTTP registry without authentication.
    pub fn start() -> Registry {
        Self::start_with(RegistryOptions::default())
    }

    /// A registry as `opts` say.
    pub fn start_with(opts: RegistryOptions) -> Registry {
        let dir = tempfile::tempdir().expect("a registry directory");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        let mut ca_cert = None;
        if opts.tls {
            let (ca, cert, key) = make_certs(dir.path());
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
            ca_cert = Some(ca);
        }
        if let Some((user, pass)) = &opts.basic_auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd runs (apache2-utils)");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: locald-test\n    path: {}\n",
                file.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        wait_for_port(&addr, &mut child);
        Registry {
            addr,
            dir,
            ca_cert,
            child,
        }
    }

    /// The storage path of a blob's data, for tampering.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Kills the registry process.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The process id, to kill it from another thread.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

fn make_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = dir.join("ca.key");
    let ca = dir.join("ca.crt");
    let key = dir.join("server.key");
    let csr = dir.join("server.csr");
    let cert = dir.join("server.crt");
    let ext = dir.join("san.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |p: &Path| p.to_str().unwrap().to_owned();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=locald test CA",
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca),
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p(&ext),
        "-out",
        &p(&cert),
    ]);
    (ca, cert, key)
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// One tar entry of a test layer.
#[derive(Debug, Clone)]
enum Entry {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
        uid: u64,
    },
    Dir {
        path: String,
        mode: u32,
        /// Owner uid and gid.
        owner: u64,
    },
    Symlink {
        path: String,
        target: String,
    },
    Hardlink {
        path: String,
        target: String,
    },
}

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A layer built entry by entry. Names are written into the tar headers as given,
/// `..` and absolute paths included.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    entries: Vec<Entry>,
}

/// A built layer blob.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    pub blob: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
    pub media_type: &'static str,
}

impl Layer {
    pub fn new() -> Layer {
        Layer::default()
    }

    pub fn file(mut self, path: &str, data: impl Into<Vec<u8>>) -> Layer {
        self.entries.push(Entry::File {
            path: path.into(),
            data: data.into(),
            mode: 0o644,
            uid: 0,
        });
        self
    }

    pub fn file_with(mut self, path: &str, data: impl Into<Vec<u8>>, mode: u32, uid: u64) -> Layer {
        self.entries.push(Entry::File {
            path: path.into(),
            data: data.into(),
            mode,
            uid,
        });
        self
    }

    pub fn dir(mut self, path: &str) -> Layer {
        self.entries.push(Entry::Dir {
            path: path.into(),
            mode: 0o755,
            owner: 0,
        });
        self
    }

    pub fn dir_mode(mut self, path: &str, mode: u32) -> Layer {
        self.entries.push(Entry::Dir {
            path: path.into(),
            mode,
            owner: 0,
        });
        self
    }

    /// A directory owned by `owner` (as uid and gid).
    pub fn dir_owned(mut self, path: &str, mode: u32, owner: u64) -> Layer {
        self.entries.push(Entry::Dir {
            path: path.into(),
            mode,
            owner,
        });
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Layer {
        self.entries.push(Entry::Symlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Layer {
        self.entries.push(Entry::Hardlink {
            path: path.into(),
            target: target.into(),
        });
        self
    }

    /// Every directory, regular file and symlink under `root`, with their modes (owned
    /// by root), in name order. `Layer::from_dir(&shared_busybox_rootfs()?)` is the
    /// busybox fixture of `locald_runtime::testing` as a layer.
    #[cfg(unix)]
    pub fn from_dir(root: &Path) -> std::io::Result<Layer> {
        use std::os::unix::fs::PermissionsExt;
        fn walk(root: &Path, dir: &Path, mut layer: Layer) -> std::io::Result<Layer> {
            let mut entries = std::fs::read_dir(dir)?.collect::<std::io::Result<Vec<_>>>()?;
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let path = entry.path();
                let name = path
                    .strip_prefix(root)
                    .expect("under root")
                    .to_string_lossy();
                let meta = entry.metadata()?; // of the entry itself, not a link's target
                let mode = meta.permissions().mode() & 0o7777;
                layer = if meta.is_dir() {
                    walk(root, &path, layer.dir_mode(&name, mode))?
                } else if meta.file_type().is_symlink() {
                    let target = std::fs::read_link(&path)?;
                    layer.symlink(&name, &target.to_string_lossy())
                } else {
                    layer.file_with(&name, std::fs::read(&path)?, mode, 0)
                };
            }
            Ok(layer)
        }
        walk(root, root, Layer::new())
    }

    /// A whiteout: hides `path` of lower layers.
    pub fn whiteout(self, path: &str) -> Layer {
        let (dir, name) = path
            .rsplit_once('/')
            .map(|(d, n)| (format!("{d}/"), n))
            .unwrap_or((String::new(), path));
        self.file(&format!("{dir}.wh.{name}"), Vec::new())
    }

    /// Marks `dir` opaque: its lower contents are hidden.
    pub fn opaque(self, dir: &str) -> Layer {
        self.file(&format!("{dir}/.wh..wh..opq"), Vec::new())
    }

    /// The uncompressed tar.
    pub fn tar(&self) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut b = tar::Builder::new(&mut out);
            for e in &self.entries {
                let mut h = tar::Header::new_gnu();
                h.set_mtime(1_700_000_000);
                h.set_uid(0);
                h.set_gid(0);
                let (path, data): (&str, &[u8]) = match e {
                    Entry::File {
                        path,
                        data,
                        mode,
                        uid,
                    } => {
                        h.set_entry_type(tar::EntryType::Regular);
                        h.set_mode(*mode);
                        h.set_uid(*uid);
                        h.set_size(data.len() as u64);
                        (path, data)
                    }
                    Entry::Dir { path, mode, owner } => {
                        h.set_entry_type(tar::EntryType::Directory);
                        h.set_mode(*mode);
                        h.set_uid(*owner);
                        h.set_gid(*owner);
                        h.set_size(0);
                        (path, &[])
                    }
                    Entry::Symlink { path, target } | Entry::Hardlink { path, target } => {
                        h.set_entry_type(if matches!(e, Entry::Symlink { .. }) {
                            tar::EntryType::Symlink
                        } else {
                            tar::EntryType::Link
                        });
                        h.set_mode(0o777);
                        h.set_size(0);
                        set_raw(&mut h.as_old_mut().linkname, target);
                        (path, &[])
                    }
                };
                // Raw names: the builder's own setters refuse '..', which the tests need.
                set_raw(&mut h.as_old_mut().name, path);
                h.set_cksum();
                b.append(&h, data).unwrap();
            }
            b.finish().unwrap();
        }
        out
    }

    /// The blob, compressed as asked.
    pub fn build(&self, compression: Compression) -> LayerBlob {
        let tar = self.tar();
        let diff_id = digest(&tar);
        let (blob, media_type) = match compression {
            Compression::None => (tar, "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                let mut gz =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(&tar).unwrap();
                (
                    gz.finish().unwrap(),
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                )
            }
            Compression::Zstd => (
                zstd::encode_all(&tar[..], 3).unwrap(),
                "application/vnd.oci.image.layer.v1.tar+zstd",
            ),
        };
        LayerBlob {
            digest: digest(&blob),
            blob,
            diff_id,
            media_type,
        }
    }
}

fn set_raw(field: &mut [u8], value: &str) {
    assert!(
        value.len() < field.len(),
        "test names must fit a plain tar header: {value}"
    );
    field.fill(0);
    field[..value.len()].copy_from_slice(value.as_bytes());
}

/// What [`Layout::add_image`] wrote.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub layers: Vec<LayerBlob>,
}

/// An OCI image layout directory, written by hand.
#[derive(Debug)]
pub struct Layout {
    pub dir: PathBuf,
    index: Vec<serde_json::Value>,
}

impl Layout {
    pub fn new(dir: impl Into<PathBuf>) -> Layout {
        let dir = dir.into();
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layout = Layout {
            dir,
            index: Vec::new(),
        };
        layout.write_index();
        layout
    }

    pub fn put_blob(&self, bytes: &[u8]) -> String {
        let d = digest(bytes);
        std::fs::write(
            self.dir
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            bytes,
        )
        .unwrap();
        d
    }

    fn write_index(&self) {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": self.index,
        });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index).unwrap(),
        )
        .unwrap();
    }

    /// Writes an image (not yet named in the index).
    pub fn image(
        &self,
        arch: &str,
        layers: &[(Layer, Compression)],
        config: serde_json::Value,
    ) -> ImageInfo {
        let blobs: Vec<LayerBlob> = layers.iter().map(|(l, c)| l.build(*c)).collect();
        for b in &blobs {
            self.put_blob(&b.blob);
        }
        let config = serde_json::json!({
            "created": "2024-01-02T03:04:05Z",
            "architecture": arch,
            "os": "linux",
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": blobs.iter().map(|b| b.diff_id.clone()).collect::<Vec<_>>() },
        });
        let config_bytes = serde_json::to_vec(&config).unwrap();
        let config_digest = self.put_blob(&config_bytes);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_bytes.len() },
            "layers": blobs.iter().map(|b| serde_json::json!({"mediaType": b.media_type, "digest": b.digest, "size": b.blob.len()})).collect::<Vec<_>>(),
        });
        let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
        let manifest_digest = self.put_blob(&manifest_bytes);
        ImageInfo {
            manifest_digest,
            manifest_size: manifest_bytes.len() as u64,
            config_digest,
            layers: blobs,
        }
    }

    /// Names a single-platform image in the index.
    pub fn name_image(&mut self, name: &str, image: &ImageInfo) {
        let mut annotations = BTreeMap::new();
        annotations.insert("org.opencontainers.image.ref.name", name.to_owned());
        self.index.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": image.manifest_digest,
            "size": image.manifest_size,
            "annotations": annotations,
        }));
        self.write_index();
    }

    /// Names a multi-platform index of `images` (`(os/arch[/variant], image)`).
    pub fn name_index(&mut self, name: &str, images: &[(&str, &ImageInfo)]) -> String {
        let manifests: Vec<_> = images
            .iter()
            .map(|(platform, img)| {
                let parts: Vec<&str> = platform.split('/').collect();
                let mut p = serde_json::json!({"os": parts[0], "architecture": parts[1]});
                if let Some(v) = parts.get(2) {
                    p["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": img.manifest_digest,
                    "size": img.manifest_size,
                    "platform": p,
                })
            })
            .collect();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let bytes = serde_json::to_vec(&index).unwrap();
        let d = self.put_blob(&bytes);
        self.index.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": d,
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": name},
        }));
        self.write_index();
        d
    }
}

/// Copies the image `name` of the layout at `layout` to `dest` (`HOST:PORT/repo:tag`)
/// with skopeo. `extra` adds flags (`--all`, `--format v2s2`, `--dest-creds u:p`).
pub fn push(layout: &Path, name: &str, dest: &str, extra: &[&str]) {
    let mut cmd = Command::new("skopeo");
    cmd.arg("copy").arg("--quiet");
    if !extra.iter().any(|a| a.starts_with("--dest-cert-dir")) {
        cmd.arg("--dest-tls-verify=false");
    }
    cmd.args(extra)
        .arg(format!("oci:{}:{name}", layout.display()))
        .arg(format!("docker://{dest}"));
    let out = cmd.output().expect("skopeo runs");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a [`Proxy`] does to the traffic it relays.
#[derive(Debug, Default)]
pub struct Faults {
    /// Cut the next this-many connections whose response passes `cut_after` bytes.
    pub cuts: AtomicUsize,
    /// How many response bytes a cut connection relays first.
    pub cut_after: AtomicU64,
    /// Pause this many microseconds after every 64 KiB relayed to the client.
    pub delay_us: AtomicU64,
}

/// A TCP relay in front of a registry that can cut or slow connections.
#[derive(Debug)]
pub struct Proxy {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// What to do to the traffic.
    pub faults: Arc<Faults>,
    /// Response bytes relayed so far, over all connections.
    pub relayed: Arc<AtomicU64>,
    /// Requests for blobs seen so far.
    pub blob_requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Relays to `upstream`.
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let faults = Arc::new(Faults::default());
        let relayed = Arc::new(AtomicU64::new(0));
        let blob_requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_owned();
        {
            let (faults, relayed, blob_requests, stop) = (
                faults.clone(),
                relayed.clone(),
                blob_requests.clone(),
                stop.clone(),
            );
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = conn else { continue };
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        drop(client);
                        continue;
                    };
                    let (faults, relayed, blob_requests) =
                        (faults.clone(), relayed.clone(), blob_requests.clone());
                    thread::spawn(move || relay(client, server, faults, relayed, blob_requests));
                }
            });
        }
        Proxy {
            addr,
            faults,
            relayed,
            blob_requests,
            stop,
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn relay(
    client: TcpStream,
    server: TcpStream,
    faults: Arc<Faults>,
    relayed: Arc<AtomicU64>,
    blob_requests: Arc<AtomicUsize>,
) {
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        loop {
            let n = match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            blob_requests.fetch_add(text.matches("/blobs/sha256:").count(), Ordering::SeqCst);
            if s_write.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = s_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let mut buf = [0u8; 64 << 10];
    let mut sent: u64 = 0;
    let mut cutting = false;
    loop {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let cut_after = faults.cut_after.load(Ordering::SeqCst);
        if !cutting && sent + n as u64 > cut_after && cut_after > 0 {
            cutting = faults
                .cuts
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
                .is_ok();
        }
        let n = if cutting {
            (cut_after.saturating_sub(sent)) as usize
        } else {
            n
        };
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        relayed.fetch_add(n as u64, Ordering::SeqCst);
        if cutting {
            break;
        }
        let delay = faults.delay_us.load(Ordering::SeqCst);
        if delay > 0 {
            thread::sleep(Duration::from_micros(delay));
        }
    }
    let _ = c_write.shutdown(std::net::Shutdown::Both);
    let _ = s_read.shutdown(std::net::Shutdown::Both);
}

/// `n` incompressible bytes (a fixed xorshift sequence), for layers big enough to
/// interrupt mid-transfer.
pub fn noise(n: usize) -> Vec<u8> {
    let mut data = vec![0u8; n];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    data
}
