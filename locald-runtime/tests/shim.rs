//! The shim's debugging aid `LOCALD_SHIM_KEEP_FAILED` writes only inside the
//! container's own state directory: a symlink planted where it used to write (a fixed
//! path in `/tmp`) is left alone. Its own test binary, because it sets an environment
//! variable that the shims it starts inherit. Needs root.
#![cfg(target_os = "linux")]
#![allow(clippy::print_stderr)]

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use locald_core::{ContainerSpec, ContainerState, Runtime};
use locald_runtime::{testing, ContainerRuntime};

/// Where the shim used to copy a failed container's configuration.
const OLD_PATH: &str = "/tmp/failed-config.json";

/// Plants a symlink at [`OLD_PATH`] pointing to `target`; false when something that
/// is not a symlink is already there (then that part of the test cannot run).
fn plant_symlink(target: &Path) -> bool {
    match std::fs::symlink_metadata(OLD_PATH) {
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(OLD_PATH).unwrap(),
        Ok(_) => return false,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(target, OLD_PATH).unwrap();
    true
}

#[test]
fn keep_failed_writes_only_into_the_state_dir() {
    if !testing::is_root() {
        eprintln!("SKIP: container tests need root (CI runs them as root)");
        return;
    }
    // Before any thread exists: every shim started below inherits it.
    std::env::set_var("LOCALD_SHIM_KEEP_FAILED", "1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let runtime =
        ContainerRuntime::with_home(home.path()).shim_program(env!("CARGO_BIN_EXE_locald-shim"));
    let rootfs = testing::shared_busybox_rootfs().unwrap();

    // What a local user could plant: a link from the old fixed path to a file that only
    // root may write.
    let victims = tempfile::tempdir().unwrap();
    let victim = victims.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let planted = plant_symlink(&victim);
    if !planted {
        eprintln!("NOTE: {OLD_PATH} exists and is not a symlink: not planting one there");
    }

    // A start that fails inside the runtime library (the mount target's parent is a
    // file).
    let host = tempfile::tempdir().unwrap();
    let spec = ContainerSpec::builder_from_rootfs(&rootfs)
        .cmd(["true"])
        .volume(format!("{}:/etc/passwd/sub", host.path().display()))
        .build()
        .unwrap();
    let err = runtime.run_container(spec).await.unwrap_err();

    let victim_after = std::fs::read_to_string(&victim).unwrap();
    let link_after = std::fs::read_link(OLD_PATH).ok();
    if planted {
        std::fs::remove_file(OLD_PATH).unwrap();
    }
    assert!(
        err.to_string().starts_with("starting container c-"),
        "{err}"
    );
    assert_eq!(
        victim_after, "precious\n",
        "the planted symlink was followed"
    );
    if planted {
        assert_eq!(
            link_after,
            Some(victim.clone()),
            "the planted link was touched"
        );
    }

    // The container was kept, with the copy in its own state directory.
    let all = runtime.list_containers(true).await.unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        matches!(all[0].state, ContainerState::Exited(_)),
        "{:?}",
        all[0].state
    );
    let dir: PathBuf = home.path().join("containers").join(&all[0].id);
    let copy = dir.join("failed-config.json");
    let meta = std::fs::symlink_metadata(&copy).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(
            home.path()
                .join("container-run")
                .join(&all[0].id)
                .join("config.json")
        )
        .unwrap()
    );

    // Removing it removes everything, the name included.
    runtime.remove_container(&all[0].id, false).await.unwrap();
    assert_eq!(
        locald_test_support::container_dirs_left(home.path()),
        Vec::<String>::new()
    );
    assert!(std::fs::read_dir(home.path().join("container-names"))
        .unwrap()
        .next()
        .is_none());
}
