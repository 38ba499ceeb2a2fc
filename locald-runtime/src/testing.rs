//! Fixtures for tests and benchmarks that run real containers: a busybox root
//! filesystem made from the host's statically linked busybox (Debian's
//! `busybox-static`), so no image or network is needed.

use std::{
    io,
    path::{Path, PathBuf},
};

/// Where the host's static busybox is looked for, in order.
const BUSYBOX: &[&str] = &["/bin/busybox", "/usr/bin/busybox"];

/// `/etc/passwd` of the fixture: root, `app` (1000) and `nobody`.
pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app:/home/app:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

/// `/etc/group` of the fixture: `app` is also in `staff` (50).
pub const GROUP: &str = "root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n";

/// Builds a busybox root filesystem in `dest` (which must not exist): every applet
/// as a relative symlink in `/bin`, `/etc/passwd`, `/etc/group`, an empty `/tmp`,
/// `/root` and `/home/app`.
pub fn build_busybox_rootfs(dest: &Path) -> io::Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let busybox = BUSYBOX
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "no static busybox on this host (install busybox-static)",
            )
        })?;
    for d in [
        "bin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev",
    ] {
        std::fs::create_dir_all(dest.join(d))?;
    }
    std::fs::copy(busybox, dest.join("bin/busybox"))?;
    let list = std::process::Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            symlink("busybox", dest.join("bin").join(applet))?;
        }
    }
    std::fs::write(dest.join("etc/passwd"), PASSWD)?;
    std::fs::write(dest.join("etc/group"), GROUP)?;
    std::fs::set_permissions(dest.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// A shared busybox root filesystem for this user, built once (atomically: in a
/// temporary directory, then renamed) and reused by later test runs.
pub fn shared_busybox_rootfs() -> io::Result<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    let dir = std::env::temp_dir().join(format!("locald-busybox-rootfs-{uid}"));
    if dir.join("bin/sh").exists() {
        return Ok(dir);
    }
    let tmp = std::env::temp_dir().join(format!(
        "locald-busybox-rootfs-{uid}.tmp{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    build_busybox_rootfs(&tmp)?;
    match std::fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        // Another process built it first.
        Err(_) if dir.join("bin/sh").exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => Err(e),
    }
}

/// True when this process runs as root (containers need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
