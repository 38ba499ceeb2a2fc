//! Container networking without bridges or NAT.
//!
//! A container on the `none` or `private` network gets its own network namespace with
//! only loopback, brought up by the shim before the container starts. Ports published
//! on the `private` network are served by the shim: it listens on the host (the
//! listening sockets are bound by the caller, so "port in use" is reported before
//! anything starts) and, for each connection, opens a socket *inside* the container's
//! namespace (`setns` there and back, safe because the shim is single-threaded) and
//! connects it to the container port on the container's loopback, then copies bytes
//! both ways.
//!
//! Why not veth + NAT: that needs a bridge, iptables or nftables rules and address
//! management that outlive crashed processes and differ between hosts; the userspace
//! forwarder needs none of it, leaves nothing behind, works for servers bound to
//! 127.0.0.1 inside the container, and is what rootless engines do. Its costs: one
//! copy per byte through the shim, clients appear to come from 127.0.0.1, no UDP, and
//! the container has no outbound network.

#![allow(unsafe_code)]

use std::{
    fs::File,
    io,
    net::{Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd, OwnedFd},
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
fn in_netns<T>(ns: &File, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let home = File::open("/proc/thread-self/ns/net")?;
    setns(ns)?;
    let result = f();
    setns(&home)?;
    result
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
