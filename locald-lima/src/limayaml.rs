//! `locald-vm`'s `lima.yaml`, generated from typed Rust.
//!
//! Field names and meanings follow Lima's `templates/default.yaml`; only what locald
//! sets is modelled, so everything else keeps Lima's defaults.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where the daemon listens inside the guest (root's socket).
pub const GUEST_DAEMON_SOCKET: &str = "/run/locald/locald.sock";
/// The socket Lima forwards: a proxy, owned by the guest user, to the daemon's socket.
/// Lima's forwarder connects as that user; the daemon only admits its own uid (root),
/// and `systemd-socket-proxyd`, running as root, bridges the two.
pub const GUEST_USER_SOCKET: &str = "/run/locald/user.sock";
/// Where the forwarded socket appears on the host, relative to the instance directory.
pub const HOST_SOCKET_IN_INSTANCE: &str = "sock/locald.sock";

/// The Lima YAML document (the subset locald writes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LimaYaml {
    /// The oldest Lima that may run this file.
    pub minimum_lima_version: String,
    /// `vz` (Virtualization.framework, macOS 13+) or `qemu`.
    pub vm_type: VmType,
    /// Guest images, one per architecture, each pinned by digest.
    pub images: Vec<Image>,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory, in Lima's units (`4GiB`).
    pub memory: String,
    /// Disk size (`60GiB`).
    pub disk: String,
    /// Host directories shared with the guest.
    pub mounts: Vec<Mount>,
    /// How they are shared (`virtiofs` with vz; `reverse-sshfs` with qemu, since the
    /// Debian image has no 9p).
    pub mount_type: String,
    /// Lima's bundled containerd, off: locald brings its own runtime.
    pub containerd: Containerd,
    /// Scripts run at boot.
    pub provision: Vec<Provision>,
    /// Host sockets forwarded from guest sockets.
    pub port_forwards: Vec<PortForward>,
}

/// The virtualization driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmType {
    /// Apple's Virtualization.framework (macOS 13 and later).
    Vz,
    /// QEMU (older macOS, Linux hosts).
    Qemu,
}

/// A guest image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Image {
    /// Its URL.
    pub location: String,
    /// `x86_64` or `aarch64`.
    pub arch: String,
    /// `sha512:…`: Lima refuses an image that does not match.
    pub digest: String,
}

/// A shared directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Mount {
    /// The host directory.
    pub location: PathBuf,
    /// Where the guest sees it.
    pub mount_point: PathBuf,
    /// Whether the guest may write.
    pub writable: bool,
}

/// Lima's containerd switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Containerd {
    /// The rootful containerd.
    pub system: bool,
    /// The rootless containerd.
    pub user: bool,
}

/// A provisioning script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Provision {
    /// `system` (as root) or `user`.
    pub mode: String,
    /// The script.
    pub script: String,
}

/// A forwarded socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct PortForward {
    /// The socket in the guest.
    pub guest_socket: String,
    /// The socket on the host (`{{.Dir}}` is the instance directory).
    pub host_socket: String,
}

/// Debian 12 genericcloud images, pinned as Lima's own `templates/_images/debian-12.yaml`
/// pins them (release 20250428-2096).
pub const IMAGES: &[(&str, &str, &str)] = &[
    (
        "x86_64",
        "https://cloud.debian.org/images/cloud/bookworm/20250428-2096/debian-12-genericcloud-amd64-20250428-2096.qcow2",
        "sha512:f2a87069aad71019ee0c8215f36bcf1e30248494af41da105f461876ea23d7997782d7a04b68b8cd39b19d4bd1779ae0dfcd6a91d1a2ac719555d673515b4d93",
    ),
    (
        "aarch64",
        "https://cloud.debian.org/images/cloud/bookworm/20250428-2096/debian-12-genericcloud-arm64-20250428-2096.qcow2",
        "sha512:a669b9b82fc3afc8c9ef84c7e9a38ffdec060b51b47fe33a66f2b65d0da9a742f9645a4fa24b5c8cb4e5a37123a0ae4ad810410c4160a6f6825c7189c296f5ec",
    ),
];

/// What the VM is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VmOptions {
    /// Virtual CPUs (default 2).
    pub cpus: u32,
    /// Memory in MiB (default 4096).
    pub memory_mib: u64,
    /// Disk in GiB (default 60).
    pub disk_gib: u64,
    /// Host directories shared writable at the same path (default: the user's home).
    pub mounts: Vec<PathBuf>,
    /// The Linux `locald` binary the guest installs, a host path inside a mount
    /// (default: `<tools>/locald-linux-<arch>`).
    pub guest_binary: PathBuf,
    /// `vz` or `qemu` (default: [`default_vm_type`] for this host).
    pub vm_type: VmType,
}

impl VmOptions {
    /// The defaults for a user whose home is `home`, with locald's tools in `tools`.
    pub fn new(home: &Path, tools: &Path) -> VmOptions {
        VmOptions {
            cpus: 2,
            memory_mib: 4096,
            disk_gib: 60,
            mounts: vec![home.to_path_buf()],
            guest_binary: tools.join(format!("locald-linux-{}", std::env::consts::ARCH)),
            vm_type: default_vm_type(macos_major()),
        }
    }
}

/// `vz` from macOS 13 (Virtualization.framework with virtiofs), `qemu` before and on
/// other hosts.
pub fn default_vm_type(macos_major: Option<u32>) -> VmType {
    match macos_major {
        Some(major) if major >= 13 => VmType::Vz,
        _ => VmType::Qemu,
    }
}

/// The macOS major version, on macOS.
pub fn macos_major() -> Option<u32> {
    if !cfg!(target_os = "macos") {
        return None;
    }
    let out = std::process::Command::new("sw_vers")
        .arg("-productVersion")
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The guest's name for a host path: the same path, when it lies in a mount.
pub fn guest_path(mounts: &[PathBuf], path: &Path) -> Option<PathBuf> {
    mounts
        .iter()
        .any(|m| path.starts_with(m))
        .then(|| path.to_path_buf())
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl LimaYaml {
    /// The configuration of `locald-vm` for `options`.
    pub fn generate(options: &VmOptions) -> Result<LimaYaml> {
        if options.cpus == 0 || options.memory_mib < 512 || options.disk_gib < 4 {
            return Err(Error::Invalid {
                what: "VM size",
                reason: "needs at least 1 CPU, 512 MiB of memory and a 4 GiB disk".into(),
            });
        }
        for mount in &options.mounts {
            if !mount.is_absolute() {
                return Err(Error::Invalid {
                    what: "mount",
                    reason: format!("{} is not an absolute path", mount.display()),
                });
            }
        }
        let binary =
            guest_path(&options.mounts, &options.guest_binary).ok_or_else(|| Error::Invalid {
                what: "guest binary",
                reason: format!(
                    "{} is outside every folder shared with the VM",
                    options.guest_binary.display()
                ),
            })?;
        let binary = quote(&binary.to_string_lossy());
        let script = format!(
            r#"#!/bin/sh
# Installs the Linux locald from the host (through the shared folder) and runs its
# daemon as root; a root-owned proxy gives the guest user, through whom Lima forwards
# sockets, a socket of its own.
set -eu
install -m 0755 {binary} /usr/local/bin/locald
user="${{LIMA_CIDATA_USER:?}}"
cat >/etc/systemd/system/locald.service <<UNIT
[Unit]
Description=locald daemon
[Service]
ExecStart=/usr/local/bin/locald daemon --socket {daemon}
Restart=on-failure
[Install]
WantedBy=multi-user.target
UNIT
cat >/etc/systemd/system/locald-user.socket <<UNIT
[Socket]
ListenStream={user_socket}
SocketUser=$user
SocketMode=0600
[Install]
WantedBy=sockets.target
UNIT
cat >/etc/systemd/system/locald-user.service <<UNIT
[Unit]
Requires=locald.service
After=locald.service
[Service]
ExecStart=/lib/systemd/systemd-socket-proxyd {daemon}
UNIT
systemctl daemon-reload
systemctl enable --now locald.service locald-user.socket
systemctl restart locald.service
"#,
            daemon = GUEST_DAEMON_SOCKET,
            user_socket = GUEST_USER_SOCKET,
        );
        Ok(LimaYaml {
            minimum_lima_version: "2.0.0".into(),
            vm_type: options.vm_type,
            images: IMAGES
                .iter()
                .map(|(arch, location, digest)| Image {
                    location: (*location).into(),
                    arch: (*arch).into(),
                    digest: (*digest).into(),
                })
                .collect(),
            cpus: options.cpus,
            memory: format!("{}MiB", options.memory_mib),
            disk: format!("{}GiB", options.disk_gib),
            mounts: options
                .mounts
                .iter()
                .map(|m| Mount {
                    location: m.clone(),
                    mount_point: m.clone(),
                    writable: true,
                })
                .collect(),
            mount_type: match options.vm_type {
                VmType::Vz => "virtiofs",
                VmType::Qemu => "reverse-sshfs",
            }
            .into(),
            containerd: Containerd {
                system: false,
                user: false,
            },
            provision: vec![Provision {
                mode: "system".into(),
                script,
            }],
            port_forwards: vec![PortForward {
                guest_socket: GUEST_USER_SOCKET.into(),
                host_socket: format!("{{{{.Dir}}}}/{HOST_SOCKET_IN_INSTANCE}"),
            }],
        })
    }

    /// The YAML text.
    pub fn to_yaml(&self) -> String {
        let body = serde_yaml_ng::to_string(self).expect("lima.yaml serializes");
        format!(
            "# Generated by locald {}; locald rewrites this file.\n{body}",
            env!("CARGO_PKG_VERSION")
        )
    }

    /// Reads a `lima.yaml` locald wrote.
    pub fn from_yaml(text: &str) -> Result<LimaYaml> {
        serde_yaml_ng::from_str(text).map_err(|e| Error::Invalid {
            what: "lima.yaml",
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> VmOptions {
        let mut o = VmOptions::new(
            Path::new("/Users/ada"),
            Path::new("/Users/ada/.local/share/locald/tools"),
        );
        o.vm_type = VmType::Vz;
        o
    }

    #[test]
    fn generates_what_lima_reads() {
        let yaml = LimaYaml::generate(&options()).unwrap();
        let text = yaml.to_yaml();
        // Lima's field names, as in templates/default.yaml.
        for needle in [
            "vmType: vz",
            "mountType: virtiofs",
            "minimumLimaVersion: 2.0.0",
            "containerd:\n  system: false\n  user: false",
            "mountPoint: /Users/ada",
            "writable: true",
            "guestSocket: /run/locald/user.sock",
            "hostSocket: '{{.Dir}}/sock/locald.sock'",
            "memory: 4096MiB",
            "disk: 60GiB",
            "mode: system",
            "arch: aarch64",
            "arch: x86_64",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from\n{text}");
        }
        for image in &yaml.images {
            assert!(image.digest.starts_with("sha512:") && image.digest.len() == 7 + 128);
        }
        let script = &yaml.provision[0].script;
        assert!(
            script.contains("install -m 0755 '/Users/ada/.local/share/locald/tools/locald-linux-")
        );
        assert!(script
            .contains("ExecStart=/usr/local/bin/locald daemon --socket /run/locald/locald.sock"));
        // It reads back as the same document.
        assert_eq!(LimaYaml::from_yaml(&text).unwrap(), yaml);
    }

    #[test]
    fn qemu_uses_a_mount_type_debian_supports() {
        let mut o = options();
        o.vm_type = VmType::Qemu;
        let text = LimaYaml::generate(&o).unwrap().to_yaml();
        assert!(text.contains("vmType: qemu") && text.contains("mountType: reverse-sshfs"));
        assert_eq!(default_vm_type(Some(12)), VmType::Qemu);
        assert_eq!(default_vm_type(Some(13)), VmType::Vz);
        assert_eq!(default_vm_type(None), VmType::Qemu);
    }

    #[test]
    fn refuses_what_cannot_work() {
        let mut o = options();
        o.guest_binary = "/opt/locald".into();
        let err = LimaYaml::generate(&o).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid guest binary: /opt/locald is outside every folder shared with the VM"
        );
        let mut o = options();
        o.cpus = 0;
        assert!(LimaYaml::generate(&o).is_err());
    }
}
