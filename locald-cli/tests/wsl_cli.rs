//! `locald wsl …` as a user meets it, with a shell script standing in for `wsl.exe`
//! (named by `LOCALD_WSL_EXE`): it prints what WSL prints for `--list --verbose` and
//! `--version` (UTF-8, as with `WSL_UTF8=1`; `\r\n` line ends) and records the other
//! calls, so the real `WslExe` spawning code runs here too. It stands in for a fake
//! because wsl.exe cannot run on Linux.

use std::{path::Path, process::Command};

const LOCALD: &str = env!("CARGO_BIN_EXE_locald");

const FAKE_WSL: &str = r#"#!/bin/sh
echo "$WSL_UTF8 $*" >> "$(dirname "$0")/calls"
case "$1" in
--list)
  if [ -f "$(dirname "$0")/registered" ]; then
    printf '  NAME      STATE           VERSION\r\n* locald    Stopped         2\r\n'
  else
    printf 'Windows Subsystem for Linux has no installed distributions.\r\nError code: Wsl/WSL_E_DEFAULT_DISTRO_NOT_FOUND\r\n'; exit 255
  fi ;;
--version)
  printf 'WSL version: 2.3.26.0\r\nKernel version: 5.15.167.4-1\r\nWSLg version: 1.0.65\r\nMSRDC version: 1.2.5620\r\nDirect3D version: 1.611.1\r\nDXCore version: 10.0.26100.1\r\nWindows version: 10.0.22631.4460\r\n' ;;
--import) touch "$(dirname "$0")/registered"; printf 'The operation completed successfully.\r\n' ;;
--terminate) printf 'The operation completed successfully.\r\n' ;;
--unregister) rm -f "$(dirname "$0")/registered"; printf 'Unregistering.\r\n' ;;
esac
"#;

fn setup(dir: &Path) -> std::path::PathBuf {
    let exe = dir.join("wsl.exe");
    std::fs::write(&exe, FAKE_WSL).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

fn locald(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(LOCALD)
        .args(args)
        .env("LOCALD_WSL_EXE", dir.join("wsl.exe"))
        .env("LOCALD_WSL_ROOT", dir.join("root"))
        .env_remove("LOCALD_WSL_ROOTFS")
        .env_remove("LOCALD_WSL_ROOTFS_SHA256")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn status_install_uninstall() {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let out = locald(dir.path(), &["wsl", "status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("WSL:           2.3.26.0"), "{stdout}");
    assert!(stdout.contains("locald is not installed"), "{stdout}");

    let tar = dir.path().join("rootfs.tar");
    std::fs::write(&tar, b"rootfs").unwrap();
    let sha = locald::wsl::sha256_file(&tar).unwrap();
    let bad = locald(
        dir.path(),
        &[
            "wsl",
            "install",
            "--rootfs",
            tar.to_str().unwrap(),
            "--sha256",
            &"a".repeat(64),
        ],
    );
    assert_eq!(bad.status.code(), Some(125));
    assert!(
        text(&bad.stderr).contains("does not match its pinned digest"),
        "{}",
        text(&bad.stderr)
    );
    let out = locald(
        dir.path(),
        &[
            "wsl",
            "install",
            "--rootfs",
            tar.to_str().unwrap(),
            "--sha256",
            &sha,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("locald: imported"),
        "{}",
        text(&out.stdout)
    );

    let out = locald(dir.path(), &["wsl", "status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["distro"]["name"], "locald");
    assert_eq!(json["distro"]["version"], 2);
    assert_eq!(json["rootfs_sha256"], sha.as_str());

    let out = locald(dir.path(), &["wsl", "uninstall"]);
    assert!(
        text(&out.stdout).contains("locald: removed"),
        "{}",
        text(&out.stdout)
    );
    let calls = std::fs::read_to_string(dir.path().join("calls")).unwrap();
    assert!(
        calls.lines().all(|l| l.starts_with("1 ")),
        "WSL_UTF8=1 on every call: {calls}"
    );
    assert!(
        calls.contains(&format!(
            "--import locald {} {} --version 2",
            dir.path().join("root/locald").display(),
            tar.display()
        )),
        "{calls}"
    );
}
