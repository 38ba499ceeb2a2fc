//! Container networking without bridges or NAT.
//!
//! A container on the `none` or `private` network gets its own network namespace with
//! loopback, brought up by the shim before the container starts. Ports published
//! on the `private` network are served by the shim: it listens on the host (the
//! listening sockets are bound by the caller, so "port in use" is reported before
//! anything starts) and, for each connection, opens a socket *inside* the container's
//! namespace (`setns` there and back, safe because the shim is single-threaded) and
//! connects it to the container port on the container's loopback, then copies bytes
//! both ways. A published UDP port works the same way per client: each host address
//! and port sending to it gets its own socket in the namespace, connected to the
//! container port, whose replies go back to that client ([`forward_udp`]).
//!
//! Outbound network on `private` comes from `pasta` (Debian's `passt` package, what
//! podman uses for rootless networking), started by the shim for the container's
//! namespace ([`Pasta::start`]): it creates a tap interface there with the host's
//! address and routes (`--config-net`) and turns the container's traffic into
//! ordinary sockets of its own on the host. With the gateway mapped (the default
//! isolation), connections to the gateway's address reach the host's loopback. Its
//! own port forwarding is off (`-t none -u none -T none -U none`): publishing stays on
//! the forwarder above, which keeps the early "port in use" error and reaches servers
//! bound to 127.0.0.1 inside the container. Without `pasta` installed, or while the
//! host has no default route (pasta cannot start without one), `private` is loopback
//! only, as `none`.
//!
//! Why not veth + NAT: that needs a bridge, iptables or nftables rules and address
//! management that outlive crashed processes and differ between hosts; pasta and the
//! userspace forwarder need none of it and leave nothing behind. The forwarder's
//! costs: one copy per byte through the shim, clients appear to come from
//! 127.0.0.1.

#![allow(unsafe_code)]

use std::{
    fs::File,
    io,
    net::{Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::Path,
    process::{Command, Stdio},
    rc::Rc,
};

use nix::sys::socket::{AddressFamily, SockFlag, SockType};

fn setns(fd: &File) -> io::Result<()> {
    // The shim is single-threaded, so no other thread changes namespace under us.
    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET)?;
    Ok(())
}

/// A new close-on-exec IPv4 socket of `kind` in the current network namespace.
fn socket(kind: SockType, flags: SockFlag) -> io::Result<OwnedFd> {
    Ok(nix::sys::socket::socket(
        AddressFamily::Inet,
        kind,
        flags | SockFlag::SOCK_CLOEXEC,
        None,
    )?)
}

/// Runs `f` inside the network namespace `ns`, then returns to the current one.
/// Runs `f` in the network namespace `ns`, on a thread of its own that ends there: a
/// rootless shim may enter the container's namespace but never return to the host's.
fn in_netns<T: Send>(ns: &File, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(ns)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("a network namespace thread panicked")))
    })
}

/// Brings up loopback in the network namespace of process `pid`; returns that
/// namespace for the port forwarders.
pub(crate) fn loopback_up(pid: i32) -> io::Result<File> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))?;
    in_netns(&ns, || {
        let sock = socket(SockType::Datagram, SockFlag::empty())?;
        // SAFETY: ifreq is plain data; zeroed is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        // nix has no wrapper for these two requests.
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass, which
        // outlives the calls.
        unsafe {
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
                return Err(io::Error::last_os_error());
            }
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })?;
    Ok(ns)
}

fn socket_in(ns: &File) -> io::Result<std::net::TcpStream> {
    in_netns(ns, || {
        let fd = socket(SockType::Stream, SockFlag::SOCK_NONBLOCK)?;
        Ok(std::net::TcpStream::from(fd))
    })
}

/// Serves one published port until aborted.
pub(crate) async fn forward(listener: OwnedFd, port: u16, ns: Rc<File>) {
    let std_listener = std::net::TcpListener::from(listener);
    if std_listener.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
        return;
    };
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        let Ok(sock) = socket_in(&ns) else {
            continue;
        };
        tokio::task::spawn_local(async move {
            let socket = tokio::net::TcpSocket::from_std_stream(sock);
            if let Ok(mut outbound) = socket.connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

fn udp_socket_in(ns: &File, target: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let socket = in_netns(ns, || {
        let fd = socket(SockType::Datagram, SockFlag::SOCK_NONBLOCK)?;
        let socket = std::net::UdpSocket::from(fd);
        socket.connect(target)?;
        Ok(socket)
    })?;
    tokio::net::UdpSocket::from_std(socket)
}

/// How many clients a published UDP port serves at once; more are dropped until one
/// goes quiet.
const UDP_MAX_CLIENTS: usize = 256;

/// A UDP client's mapping ends after this long without a datagram from the container.
const UDP_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Serves one published UDP port until aborted: each client (host address and port)
/// gets its own socket in the container's namespace, connected to the container port
/// on its loopback; the container's replies on that socket go back to that client.
pub(crate) async fn forward_udp(bound: OwnedFd, port: u16, ns: Rc<File>) {
    use std::{cell::RefCell, collections::HashMap};

    let std_socket = std::net::UdpSocket::from(bound);
    if std_socket.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(host) = tokio::net::UdpSocket::from_std(std_socket) else {
        return;
    };
    let host = Rc::new(host);
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let clients: Rc<RefCell<HashMap<SocketAddr, Rc<tokio::net::UdpSocket>>>> = Rc::default();
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, client)) = host.recv_from(&mut buf).await else {
            continue;
        };
        let known = clients.borrow().get(&client).cloned();
        let inner = match known {
            Some(inner) => inner,
            None => {
                if clients.borrow().len() >= UDP_MAX_CLIENTS {
                    continue;
                }
                let Ok(inner) = udp_socket_in(&ns, target) else {
                    continue;
                };
                let inner = Rc::new(inner);
                clients.borrow_mut().insert(client, inner.clone());
                let (host, clients, replies) = (host.clone(), clients.clone(), inner.clone());
                tokio::task::spawn_local(async move {
                    let mut buf = vec![0u8; 65536];
                    // Ends when the container is quiet for UDP_IDLE, or its port is
                    // closed (ECONNREFUSED on a connected socket).
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(UDP_IDLE, replies.recv(&mut buf)).await
                    {
                        let _ = host.send_to(&buf[..n], client).await;
                    }
                    clients.borrow_mut().remove(&client);
                });
                inner
            }
        };
        let _ = inner.send(&buf[..n]).await;
    }
}

/// A `pasta` process serving a container's network namespace; killed and waited for
/// (and reaped) when dropped.
#[derive(Debug)]
pub(crate) struct Pasta {
    pid: i32,
    /// Refers to the process even after it ended, so the kill can never reach a
    /// process that reused its pid.
    pidfd: OwnedFd,
}

/// The file names `pasta` gets in the state directory, for the moment of its start.
const NETNS_FILE: &str = "netns";
const PID_FILE: &str = "pasta.pid";

impl Pasta {
    /// Starts `program` (pasta) for the network namespace of process `init`, with the
    /// state directory `dir` for its transient files. `map_gw`: connections to the
    /// gateway address reach the host's loopback.
    ///
    /// pasta runs as root (`--runas 0`) with only the capabilities it keeps for
    /// itself (`CAP_NET_ADMIN`, `CAP_SYS_ADMIN`, `CAP_NET_BIND_SERVICE`): as `nobody`
    /// it could not join a namespace owned by root. It cannot open `/proc/<pid>/ns/net`
    /// of a process with more capabilities than it has, so the namespace is
    /// bind-mounted on a file in `dir` for the start and unmounted right after (pasta
    /// holds the namespace open; `--no-netns-quit` keeps it from quitting when that
    /// file goes). It daemonizes once the interface is configured, so its exit status
    /// says whether it worked; the daemon is reparented to the shim (a subreaper).
    pub(crate) fn start(program: &Path, init: i32, dir: &Path, map_gw: bool) -> io::Result<Pasta> {
        let netns = dir.join(NETNS_FILE);
        let pid_file = dir.join(PID_FILE);
        let _ = std::fs::remove_file(&pid_file);
        File::create(&netns)?;
        let bound = nix::mount::mount(
            Some(Path::new(&format!("/proc/{init}/ns/net"))),
            &netns,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        );
        let result = bound.map_err(io::Error::from).and_then(|()| {
            let mut cmd = Command::new(program);
            cmd.args(["--runas", "0", "--quiet", "--config-net"])
                .args(["-t", "none", "-u", "none", "-T", "none", "-U", "none"])
                .arg("--no-netns-quit")
                .arg("-P")
                .arg(&pid_file)
                .arg("--netns")
                .arg(&netns);
            if !map_gw {
                cmd.arg("--no-map-gw");
            }
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
        });
        let _ = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_file(&netns);
        let output = result?;
        if !output.status.success() {
            let _ = std::fs::remove_file(&pid_file);
            return Err(io::Error::other(format!(
                "pasta {}: {}",
                output.status,
                pasta_message(&String::from_utf8_lossy(&output.stderr))
            )));
        }
        let pid = std::fs::read_to_string(&pid_file)
            .and_then(|s| s.trim().parse::<i32>().map_err(io::Error::other))
            .map_err(|e| io::Error::other(format!("reading pasta's pid file: {e}")));
        let _ = std::fs::remove_file(&pid_file);
        let pid = pid?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::other(format!(
                "pasta (pid {pid}) ended right after its start: {}",
                io::Error::last_os_error()
            )));
        }
        // SAFETY: pidfd_open just returned this descriptor; nothing else owns it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let _ = nix::fcntl::fcntl(
            pidfd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        Ok(Pasta { pid, pidfd })
    }

    /// Tells pasta to end (SIGKILL: it keeps no state worth a clean exit, and it takes
    /// seconds to act on SIGTERM) without waiting for it. Its end takes the kernel
    /// tens of milliseconds (closing its tap device waits for an RCU barrier), which
    /// the caller can spend on other work; dropping it waits.
    pub(crate) fn kill(&self) {
        // SAFETY: pidfd_send_signal reads only its arguments; a null siginfo is allowed.
        let _ = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        self.kill();
        // The descriptor becomes readable when the process has ended.
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&self.pidfd),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(5000u16));
        // It is the shim's child (reparented); the shim may have reaped it already.
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(self.pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
    }
}

/// True when the network namespace seen through `proc` (normally `/proc`) has an
/// IPv4 or IPv6 default route on an interface other than loopback. pasta copies
/// the host's addresses and routes from that interface and refuses to start without
/// one ("External interface not usable"), so an offline host runs `private`
/// containers with loopback only instead of failing them.
pub(crate) fn has_default_route(proc: &Path) -> bool {
    let v4 = std::fs::read_to_string(proc.join("net/route")).unwrap_or_default();
    let v4 = v4.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 7 && f[0] != "lo" && f[1] == "00000000" && f[7] == "00000000"
    });
    let v6 = std::fs::read_to_string(proc.join("net/ipv6_route")).unwrap_or_default();
    let v6 = v6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        const RTF_REJECT: u32 = 0x0200;
        let reject = f
            .get(8)
            .and_then(|x| u32::from_str_radix(x, 16).ok())
            .is_none_or(|flags| flags & RTF_REJECT != 0);
        f.len() == 10 && f[9] != "lo" && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && !reject
    });
    v4 || v6
}

/// pasta's error output without the noise of a missing system logger, on one line.
fn pasta_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Failed to send") && !l.contains("syslog"))
        .collect();
    if lines.is_empty() {
        "no message".to_owned()
    } else {
        lines.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc_with(route: &str, ipv6_route: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("net")).unwrap();
        std::fs::write(dir.path().join("net/route"), route).unwrap();
        std::fs::write(dir.path().join("net/ipv6_route"), ipv6_route).unwrap();
        dir
    }

    const V4_HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
    // The kernel's own reject route on lo, present in every namespace.
    const V6_LO_REJECT: &str = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n";

    #[test]
    fn default_routes_are_read_from_proc() {
        // A fresh namespace: nothing.
        let empty = proc_with(V4_HEADER, V6_LO_REJECT);
        assert!(!has_default_route(empty.path()));
        // Only a subnet route: no default.
        let subnet = proc_with(
            &format!("{V4_HEADER}eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"),
            V6_LO_REJECT,
        );
        assert!(!has_default_route(subnet.path()));
        let v4 = proc_with(
            &format!("{V4_HEADER}eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"),
            V6_LO_REJECT,
        );
        assert!(has_default_route(v4.path()));
        let v6 = proc_with(
            V4_HEADER,
            &format!("{V6_LO_REJECT}00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n"),
        );
        assert!(has_default_route(v6.path()));
        // No /proc files at all: no route.
        let none = tempfile::tempdir().unwrap();
        assert!(!has_default_route(none.path()));
    }

    #[test]
    fn pasta_messages_drop_the_syslog_noise() {
        let stderr = "Failed to send 51 bytes to syslog\nCouldn't open network namespace /x\n\n";
        assert_eq!(pasta_message(stderr), "Couldn't open network namespace /x");
        assert_eq!(
            pasta_message("Failed to send 7 bytes to syslog\n"),
            "no message"
        );
        assert_eq!(pasta_message("a\nb\n"), "a; b");
    }
}
