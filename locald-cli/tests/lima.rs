//! `LimaRuntime` on Linux: its life cycle through the `Limactl` fake (which replays
//! Lima's output formats: see `locald_lima::fake`), and its transport through a real
//! daemon serving the forwarded socket where Lima would put it. The conformance suite
//! runs through it; `locald vm status --json` runs against a script standing in for
//! `limactl`.

use std::{path::Path, process::Command as Std, sync::Arc, time::Duration};

use locald::lima::{fake::FakeLimactl, LimaRuntime, Status, VmOptions};
use locald::{Command, Paths, Runtime};
use locald_cli::daemon::{bind_unix, Listener, Server};
use locald_conformance::Subject;
use locald_runtime::ProcessRuntime;

struct Vm {
    home: tempfile::TempDir,
    fake: FakeLimactl,
    runtime: LimaRuntime,
}

/// A VM whose `limactl start` brings up a real daemon on the forwarded socket.
fn vm(mounts: Vec<std::path::PathBuf>) -> Vm {
    let home = tempfile::tempdir().unwrap();
    let lima_home = home.path().join("lima");
    let handle = tokio::runtime::Handle::current();
    let fake = FakeLimactl::new(&lima_home, locald::lima::release::PINNED.version).on_start(
        Arc::new(move |dir: &Path| {
            let socket = dir.join("sock/locald.sock");
            let listener = Listener::Unix(bind_unix(&socket).unwrap());
            handle.spawn(async move {
                Server::new(Arc::new(ProcessRuntime::new()))
                    .serve(
                        vec![listener],
                        std::future::pending(),
                        Duration::from_secs(1),
                    )
                    .await
                    .unwrap();
            });
            Ok(())
        }),
    );
    let paths = Paths::from_env(|k| (k == "LOCALD_HOME").then(|| home.path().into()));
    let mut options = VmOptions::new(home.path(), &paths.tools_dir());
    // The guest installs its locald from a shared folder.
    options.guest_binary = mounts[0].join("locald-linux-x86_64");
    options.mounts = mounts;
    let runtime = LimaRuntime::builder()
        .paths(paths)
        .vm_options(options)
        .limactl(Arc::new(fake.clone()))
        .connect_timeout(Duration::from_secs(10))
        .build();
    Vm {
        home,
        fake,
        runtime,
    }
}

async fn fake_vm() -> Subject {
    let vm = vm(vec!["/".into()]);
    vm.runtime.ensure_running().await.unwrap();
    Subject::with_guard(Arc::new(vm.runtime.clone()), vm.home)
}

mod lima_through_fake_limactl {
    locald_conformance::conformance_suite!(super::fake_vm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_call_brings_the_vm_up_once() {
    let vm = vm(vec!["/".into()]);
    assert!(
        vm.fake.calls().is_empty(),
        "nothing happens before the first call"
    );
    assert_eq!(vm.runtime.info().name, "lima");
    let out = vm
        .runtime
        .run_command(Command::new("echo").arg("hi"))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"hi\n");
    vm.runtime.run_command(Command::new("true")).await.unwrap();
    let calls = vm.fake.calls();
    let config = vm.home.path().join("vm/lima.yaml");
    assert_eq!(
        calls,
        [
            "--version".to_owned(),
            "list --json".into(),
            format!("--tty=false create --name locald-vm {}", config.display()),
            "list --json".into(),
            "--tty=false start --timeout 600s locald-vm".into(),
        ]
    );
    // The VM was created from the generated lima.yaml.
    let yaml = vm.fake.config("locald-vm").unwrap();
    assert!(
        yaml.contains("guestSocket: /run/locald/user.sock"),
        "{yaml}"
    );
    // After connecting, the runtime describes the guest's.
    assert_eq!(vm.runtime.info().name, "process");
    let status = vm.runtime.status().await.unwrap();
    assert_eq!(status.state, "running");
    assert_eq!(
        status.created_by_lima.as_deref(),
        Some(locald::lima::release::PINNED.version)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_is_named() {
    let vm = vm(vec!["/".into()]);
    vm.fake.fail_next(
        "start",
        "exiting, status={Running:false Degraded:false Exiting:true Errors:[] SSHLocalPort:0}",
    );
    let err = vm
        .runtime
        .run_command(Command::new("true"))
        .await
        .unwrap_err();
    let chain = format!("{:#}", anyhow::Error::new(err));
    assert_eq!(
        chain,
        format!(
            "cannot bring up locald-vm: starting the VM (Lima {}) failed: `limactl --tty=false start --timeout 600s locald-vm` failed: exiting, status={{Running:false Degraded:false Exiting:true Errors:[] SSHLocalPort:0}}",
            locald::lima::release::PINNED.version
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_of_other_lima_versions_and_broken_ones() {
    // Made by an older Lima: the pinned one starts it.
    let old = vm(vec!["/".into()]);
    let fake = old
        .fake
        .clone()
        .with_instance("locald-vm", Status::Stopped, Some("1.2.1"));
    drop(fake);
    old.runtime.run_command(Command::new("true")).await.unwrap();
    assert!(old.fake.calls().iter().any(|c| c.contains("start")));
    assert!(!old.fake.calls().iter().any(|c| c.contains("create")));

    // Made by a newer Lima than locald's: left alone, with advice.
    let newer = vm(vec!["/".into()]);
    let _ = newer
        .fake
        .clone()
        .with_instance("locald-vm", Status::Stopped, Some("99.0.0"));
    let err = newer
        .runtime
        .run_command(Command::new("true"))
        .await
        .unwrap_err();
    let chain = format!("{:#}", anyhow::Error::new(err));
    assert!(chain.contains("checking the VM's Lima version failed: locald-vm was created by Lima 99.0.0, newer than this locald's Lima"), "{chain}");
    assert!(!newer.fake.calls().iter().any(|c| c.contains("start")));

    // Broken: not touched, and the error says what to do.
    let broken = vm(vec!["/".into()]);
    let _ = broken
        .fake
        .clone()
        .with_instance("locald-vm", Status::Broken, Some("2.2.0"));
    let err = broken
        .runtime
        .run_command(Command::new("true"))
        .await
        .unwrap_err();
    let chain = format!("{:#}", anyhow::Error::new(err));
    assert!(
        chain.contains(
            "locald-vm is broken (1 problem(s) reported by limactl); run `locald vm stop --force`"
        ),
        "{chain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_mounts_are_refused() {
    let shared = tempfile::tempdir().unwrap();
    let vm = vm(vec![shared.path().to_owned()]);
    let out = vm
        .runtime
        .run_command(Command::new("pwd").current_dir(shared.path()))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        shared.path().to_str().unwrap()
    );
    let err = vm
        .runtime
        .run_command(Command::new("true").current_dir("/etc"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid path \"/etc\": not shared with the daemon (shared: {})",
            shared.path().display()
        )
    );
}

/// A stand-in for `limactl` printing what Lima 2.x prints for `--version` and
/// `list --json` (one object per line, fields of pkg/store/instance.go).
fn limactl_script(dir: &Path, status: &str) -> std::path::PathBuf {
    let script = dir.join("limactl");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
case "$1" in
--version) echo "limactl version 2.2.0" ;;
list) echo '{{"name":"locald-vm","hostname":"lima-locald-vm","status":"{status}","dir":"'"$LIMA_HOME"'/locald-vm","vmType":"vz","arch":"aarch64","cpuType":"","cpus":2,"memory":4294967296,"disk":64424509440,"sshLocalPort":60022,"hostAgentPID":4242,"driverPID":4242,"config":{{}},"sshAddress":"127.0.0.1","protected":false,"limaVersion":"2.1.4","HostOS":"darwin","HostArch":"aarch64","LimaHome":"'"$LIMA_HOME"'","IdentityFile":"/x"}}' ;;
*) echo 'time="2026-12-01T10:00:00Z" level=fatal msg="unexpected"' >&2; exit 1 ;;
esac
"#
        ),
    )
    .unwrap();
    Std::new("chmod").arg("755").arg(&script).status().unwrap();
    script
}

#[test]
fn vm_status_json() {
    let home = tempfile::tempdir().unwrap();
    let locald = env!("CARGO_BIN_EXE_locald");
    // Nothing installed: absent, and nothing downloaded.
    let out = Std::new(locald)
        .args(["vm", "status", "--json"])
        .env("LOCALD_HOME", home.path())
        .env_remove("LOCALD_LIMACTL")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["name"], "locald-vm");
    assert_eq!(status["state"], "absent");
    assert_eq!(status["lima_installed"], false);
    assert_eq!(
        status["lima_version"],
        locald::lima::release::PINNED.version
    );
    assert_eq!(
        status["lima_home"],
        home.path().join("lima").to_str().unwrap()
    );
    assert!(!home.path().join("tools").exists());

    // Through a limactl: its list --json is read.
    let script = limactl_script(home.path(), "Running");
    let out = Std::new(locald)
        .args(["vm", "status", "--json"])
        .env("LOCALD_HOME", home.path())
        .env("LOCALD_LIMACTL", &script)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["created_by_lima"], "2.1.4");
    assert_eq!(status["lima_version"], "2.2.0");
    assert_eq!(status["vm_type"], "vz");
    assert_eq!(
        status["dir"],
        home.path().join("lima/locald-vm").to_str().unwrap()
    );

    // Text, and `locald info` carries it too.
    let out = Std::new(locald)
        .args(["vm", "status"])
        .env("LOCALD_HOME", home.path())
        .env("LOCALD_LIMACTL", &script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("VM:            locald-vm (running)\nLima:          2.2.0 (installed)\nCreated by:    Lima 2.1.4\n"), "{text}");
    let out = Std::new(locald)
        .args(["info", "--json"])
        .env("LOCALD_HOME", home.path())
        .env("LOCALD_LIMACTL", &script)
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["vm"]["state"], "running");
}
