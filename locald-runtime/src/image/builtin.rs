//! The built-in image, `localhost/locald/busybox:latest`, which locald makes itself so
//! that containers run on a machine with no registry access.
//!
//! Its root filesystem is the host's static busybox (Debian's `busybox-static`) with a
//! link per applet, or, where there is none, a few of the host's own programs (`sh`,
//! `echo`, `cat`, `ls`, ...) with the shared libraries `ldd` says they need.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use locald_core::{Error, Result};

/// The name of the built-in image.
pub const BUILTIN_IMAGE: &str = "localhost/locald/busybox:latest";

const HOST_TOOLS: &[&str] = &[
    "sh", "echo", "cat", "ls", "env", "true", "false", "sleep", "id", "hostname", "uname", "mkdir",
    "rm", "touch", "head", "tail", "wc", "grep", "pwd", "test", "printf", "date",
];

fn find_program(name: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// `Some(libraries)` for a dynamic executable, `None` for a static one.
fn shared_libraries(program: &Path) -> Result<Option<Vec<PathBuf>>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|e| Error::io("running ldd to find a program's libraries", e))?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(None);
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(Some(libs))
}

fn copy_into(root: &Path, host: &Path, at: &Path) -> Result<()> {
    let dest = root.join(at.strip_prefix("/").unwrap_or(at));
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    }
    fs::copy(host, &dest).map_err(|e| Error::io(format!("copying {}", host.display()), e))?;
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io(format!("setting the mode of {}", dest.display()), e))
}

/// Writes the built-in image's root filesystem into the empty directory `root`, and
/// says what it is made of.
pub(crate) fn make_rootfs(root: &Path) -> Result<&'static str> {
    for dir in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
        fs::create_dir_all(root.join(dir))
            .map_err(|e| Error::io("creating the built-in image", e))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))
        .map_err(|e| Error::io("creating the built-in image", e))?;
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )
    .and_then(|_| fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n"))
    .map_err(|e| Error::io("creating the built-in image", e))?;

    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if let Some(busybox) = busybox {
        if shared_libraries(&busybox)?.is_none() {
            copy_into(root, &busybox, Path::new("/bin/busybox"))?;
            let list = Command::new(&busybox)
                .arg("--list")
                .output()
                .map_err(|e| Error::io("listing busybox applets", e))?;
            for applet in String::from_utf8_lossy(&list.stdout).lines() {
                if !applet.is_empty() && applet != "busybox" {
                    let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
                }
            }
            return Ok("the host's static busybox");
        }
    }
    let mut copied = 0;
    for tool in HOST_TOOLS {
        let Some(program) = find_program(tool) else {
            continue;
        };
        let real = fs::canonicalize(&program)
            .map_err(|e| Error::io(format!("resolving {}", program.display()), e))?;
        copy_into(root, &real, &Path::new("/bin").join(tool))?;
        for lib in shared_libraries(&real)?.unwrap_or_default() {
            let real_lib = fs::canonicalize(&lib).unwrap_or(lib.clone());
            if !root.join(lib.strip_prefix("/").unwrap_or(&lib)).exists() {
                copy_into(root, &real_lib, &lib)?;
            }
        }
        copied += 1;
    }
    if copied == 0 || !root.join("bin/sh").exists() {
        return Err(Error::io(
            "making the built-in image",
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "neither a static busybox nor a shell was found on this host",
            ),
        ));
    }
    Ok("programs copied from the host with their libraries")
}
