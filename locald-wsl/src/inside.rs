//! Inside WSL: what differs from plain Linux, read from a root directory that tests
//! replace with a fixture tree.
//!
//! Inside WSL2 locald *is* the Linux backend; nothing here changes how it runs. This
//! module tells a user (`locald info`, `locald wsl status` inside the distribution)
//! what WSL2 does differently and whether it is set up the way locald needs:
//!
//! - **cgroups**: WSL2 mounts cgroup v2 at `/sys/fs/cgroup` (recent builds) or a v1
//!   hybrid (older ones, and with `kernelCommandLine = cgroup_no_v1=…` unset); the
//!   native runtime handles both.
//! - **Windows drives**: `/mnt/<drive>` is drvfs over 9p. Such a path works as a bind
//!   mount source (a plain bind of a directory), but not as an image store or an
//!   overlay layer: keep `LOCALD_HOME` on the distribution's ext4. Without the
//!   `metadata` mount option, files there have fixed owners and modes.
//! - **Published ports**: in the default NAT networking, Windows reaches a port the
//!   distribution listens on through `localhost` forwarding of IPv4 (`127.0.0.1`,
//!   `0.0.0.0`) listeners; a container's port published on IPv4 is reachable from a
//!   Windows browser as `localhost:PORT`. `localhostForwarding=false` in
//!   `.wslconfig` turns that off; mirrored networking shares the host's interfaces.
//! - **WSL1** has no namespaces or cgroups: commands run, containers do not, and the
//!   error says to convert the distribution
//!   (`wsl --set-version <distro> 2`, see [`locald_core::Error::Unsupported`]).

use std::{fs, path::PathBuf};

use serde::Serialize;

use crate::paths::{automount_root, ini_value};

/// How cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Cgroups {
    /// cgroup v2 only, at `/sys/fs/cgroup`.
    Unified,
    /// v1 controllers with a v2 hierarchy beside them (`/sys/fs/cgroup/unified`).
    Hybrid,
    /// v1 only.
    Legacy,
    /// None mounted.
    None,
}

/// A Windows drive mounted in the distribution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DriveMount {
    /// Where (`/mnt/c`).
    pub path: String,
    /// `9p` (WSL2) or `drvfs` (WSL1).
    pub fstype: String,
    /// True with the `metadata` option: Linux owners and modes are kept.
    pub metadata: bool,
}

/// What a WSL distribution looks like from inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WslFacts {
    /// The cgroup layout.
    pub cgroups: Cgroups,
    /// Where Windows drives are mounted (`[automount] root`, default `/mnt/`).
    pub automount_root: String,
    /// The Windows drives that are mounted.
    pub drives: Vec<DriveMount>,
}

impl WslFacts {
    /// Reads `/proc/self/mountinfo` and `/etc/wsl.conf` under `root`.
    pub fn probe(root: impl Into<PathBuf>) -> WslFacts {
        let root = root.into();
        let mountinfo = fs::read_to_string(root.join("proc/self/mountinfo")).unwrap_or_default();
        let wsl_conf = fs::read_to_string(root.join("etc/wsl.conf")).unwrap_or_default();
        let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
        let at = |path: &str, fs: &str| mounts.iter().any(|m| m.point == path && m.fstype == fs);
        let cgroups = if at("/sys/fs/cgroup", "cgroup2") {
            Cgroups::Unified
        } else if mounts.iter().any(|m| m.fstype == "cgroup") {
            if mounts.iter().any(|m| m.fstype == "cgroup2") {
                Cgroups::Hybrid
            } else {
                Cgroups::Legacy
            }
        } else {
            Cgroups::None
        };
        let mut automount = automount_root(&wsl_conf).unwrap_or_else(|| "/mnt/".into());
        if !automount.ends_with('/') {
            automount.push('/');
        }
        let drives = mounts
            .iter()
            .filter(|m| {
                let drvfs = m.fstype == "drvfs"
                    || (m.fstype == "9p" && m.options.split(',').any(|o| o.contains("drvfs")));
                let letter = m.point.strip_prefix(automount.as_str()).unwrap_or("");
                drvfs && letter.len() == 1 && letter.as_bytes()[0].is_ascii_alphabetic()
            })
            .map(|m| DriveMount {
                path: m.point.clone(),
                fstype: m.fstype.clone(),
                metadata: m.options.split([',', ';']).any(|o| o == "metadata"),
            })
            .collect();
        WslFacts {
            cgroups,
            automount_root: automount,
            drives,
        }
    }

    /// Whether `path` lies on a Windows drive (drvfs), where a bind mount works but
    /// an image store or overlay layer does not.
    pub fn on_windows_drive(&self, path: &str) -> bool {
        self.drives
            .iter()
            .any(|d| path == d.path || path.starts_with(&format!("{}/", d.path)))
    }
}

/// One line of `/proc/self/mountinfo`: `ID PARENT MAJ:MIN ROOT POINT OPTS … - FSTYPE
/// SOURCE SUPEROPTS`.
struct Mount {
    point: String,
    fstype: String,
    options: String,
}

impl Mount {
    fn parse(line: &str) -> Option<Mount> {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split(' ').nth(4)?;
        let mut right = right.split(' ');
        let fstype = right.next()?;
        let _source = right.next();
        let super_opts = right.next().unwrap_or("");
        let mount_opts = left.split(' ').nth(5).unwrap_or("");
        Some(Mount {
            point: point.replace("\\040", " "),
            fstype: fstype.to_owned(),
            options: format!("{mount_opts},{super_opts}"),
        })
    }
}

/// How Windows reaches the distribution's listeners, from `%USERPROFILE%\.wslconfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Forwarding {
    /// NAT networking with localhost forwarding (the default): IPv4 listeners are
    /// reachable from Windows as `localhost:PORT`.
    Localhost,
    /// `networkingMode=mirrored`: the distribution shares Windows' interfaces.
    Mirrored,
    /// `localhostForwarding=false`: Windows must use the VM's own address.
    Off,
}

impl Forwarding {
    /// Reads the `[wsl2]` section of a `.wslconfig` text (empty: the defaults).
    pub fn from_wslconfig(text: &str) -> Forwarding {
        let mode = ini_value(text, "wsl2", "networkingMode").unwrap_or_default();
        if mode.eq_ignore_ascii_case("mirrored") {
            return Forwarding::Mirrored;
        }
        match ini_value(text, "wsl2", "localhostForwarding") {
            Some(v) if v.eq_ignore_ascii_case("false") => Forwarding::Off,
            _ => Forwarding::Localhost,
        }
    }

    /// Whether a port published on `host_ip` (a container's `-p HOST_IP:PORT:…`) is
    /// reachable from Windows as `localhost:PORT`.
    pub fn reaches(self, host_ip: std::net::IpAddr) -> bool {
        match self {
            Forwarding::Off => false,
            Forwarding::Mirrored => true,
            // The localhost relay forwards IPv4 listeners on loopback or any address.
            Forwarding::Localhost => match host_ip {
                std::net::IpAddr::V4(ip) => ip.is_loopback() || ip.is_unspecified(),
                std::net::IpAddr::V6(_) => false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use locald_core::{Capability, Error, Platform, PlatformProbe};

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = root.path().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, content).unwrap();
        }
        root
    }

    // Shaped as /proc/self/mountinfo in a WSL2 Ubuntu 24.04 (WSL 2.3).
    const WSL2_MOUNTINFO: &str = "\
60 1 8:48 / / rw,relatime - ext4 /dev/sdd rw,discard,errors=remount-ro,data=ordered
75 60 0:32 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate
83 60 0:60 / /mnt/c rw,noatime - 9p C:\\134 rw,dirsync,aname=drvfs;path=C:\\;uid=1000;gid=1000;symlinkroot=/mnt/,mmap,access=client,msize=65536,trans=fd,rfd=5,wfd=5
84 60 0:61 / /mnt/d rw,noatime - 9p D:\\134 rw,dirsync,aname=drvfs;path=D:\\;metadata;symlinkroot=/mnt/,mmap,access=client,msize=65536,trans=fd,rfd=5,wfd=5
85 60 0:62 / /mnt/wslg rw,relatime - tmpfs none rw
";

    #[test]
    fn wsl2_cgroup2_and_drives() {
        let root = tree(&[("proc/self/mountinfo", WSL2_MOUNTINFO)]);
        let facts = WslFacts::probe(root.path());
        assert_eq!(facts.cgroups, Cgroups::Unified);
        assert_eq!(facts.automount_root, "/mnt/");
        let paths: Vec<&str> = facts.drives.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["/mnt/c", "/mnt/d"]);
        assert_eq!(facts.drives[0].fstype, "9p");
        assert!(!facts.drives[0].metadata);
        assert!(facts.drives[1].metadata);
        assert!(facts.on_windows_drive("/mnt/c/Users/ada/src"));
        assert!(!facts.on_windows_drive("/mnt/wslg/x"));
        assert!(!facts.on_windows_drive("/mnt/cc"));
    }

    #[test]
    fn older_wsl2_hybrid_cgroups_and_a_custom_automount_root() {
        let mountinfo = "\
60 1 8:48 / / rw - ext4 /dev/sdc rw
70 60 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw
71 70 0:31 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
72 70 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
80 60 0:50 / /win/c rw - 9p drvfs rw,aname=drvfs;path=C:\\
";
        let root = tree(&[
            ("proc/self/mountinfo", mountinfo),
            ("etc/wsl.conf", "[automount]\nroot = /win\n"),
        ]);
        let facts = WslFacts::probe(root.path());
        assert_eq!(facts.cgroups, Cgroups::Hybrid);
        assert_eq!(facts.automount_root, "/win/");
        assert_eq!(facts.drives.len(), 1);
        assert!(facts.on_windows_drive("/win/c/src"));
    }

    #[test]
    fn wsl1_drvfs() {
        let mountinfo = "1 0 0:1 / / rw - lxfs rootfs rw\n5 1 0:5 / /mnt/c rw - drvfs C: rw\n";
        let root = tree(&[("proc/self/mountinfo", mountinfo)]);
        let facts = WslFacts::probe(root.path());
        assert_eq!(facts.cgroups, Cgroups::None);
        assert_eq!(facts.drives[0].fstype, "drvfs");
    }

    #[test]
    fn published_ports_from_windows() {
        let v4 = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let nat = Forwarding::from_wslconfig("");
        assert_eq!(nat, Forwarding::Localhost);
        assert!(nat.reaches(v4("0.0.0.0")));
        assert!(nat.reaches(v4("127.0.0.1")));
        assert!(!nat.reaches(v4("::")), "the relay forwards IPv4");
        assert!(!nat.reaches(v4("172.20.1.5")));
        let off = Forwarding::from_wslconfig("[wsl2]\nlocalhostForwarding=false\n");
        assert_eq!(off, Forwarding::Off);
        assert!(!off.reaches(v4("0.0.0.0")));
        let mirrored = Forwarding::from_wslconfig("[wsl2]\nnetworkingMode=mirrored\n");
        assert_eq!(mirrored, Forwarding::Mirrored);
        assert!(mirrored.reaches(v4("::")));
    }

    #[test]
    fn wsl1_containers_say_how_to_convert() {
        let root = tree(&[("proc/sys/kernel/osrelease", "4.4.0-19041-Microsoft\n")]);
        let platform = PlatformProbe::new(root.path()).detect().platform;
        assert_eq!(platform, Platform::Wsl1);
        let err = Error::Unsupported {
            capability: Capability::Containers,
            runtime: "process".into(),
            platform,
        };
        assert_eq!(
            err.to_string(),
            "running containers is not supported by the process runtime on Linux (WSL1) (WSL1 has no namespaces or cgroups: convert with `wsl --set-version <distro> 2`)"
        );
    }
}
