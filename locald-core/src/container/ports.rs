//! Published ports: [`PortMapping`], parsed from docker's `-p` syntax.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// A container port published on the host, parsed from docker's `-p` syntax:
/// `80`, `8080:80`, `8080:80/udp`, `127.0.0.1:8080:80`, `127.0.0.1::80`, `[::1]:8080:80`.
///
/// ```
/// use locald_core::{PortMapping, Protocol};
///
/// let p: PortMapping = "127.0.0.1:8080:80/tcp".parse()?;
/// assert_eq!(p.host_port, Some(8080));
/// assert_eq!(p.container_port, 80);
/// assert_eq!(p.protocol, Protocol::Tcp);
/// assert_eq!(p.to_string(), "127.0.0.1:8080:80/tcp");
/// # Ok::<(), locald_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PortMapping {
    /// The host address to listen on (default: loopback, `127.0.0.1`).
    pub host_ip: Option<IpAddr>,
    /// The host port; `None` picks a free one.
    pub host_port: Option<u16>,
    /// The port inside the container.
    pub container_port: u16,
    /// TCP or UDP.
    pub protocol: Protocol,
}

impl PortMapping {
    /// Publishes `container_port` on the same `host_port` over TCP.
    pub fn tcp(host_port: u16, container_port: u16) -> Self {
        PortMapping {
            host_ip: None,
            host_port: Some(host_port),
            container_port,
            protocol: Protocol::Tcp,
        }
    }
}

fn parse_port(input: &str, value: &str, what: &str) -> Result<u16> {
    if value.contains('-') {
        return Err(Error::invalid(
            "port mapping",
            input,
            "port ranges are not supported; publish each port on its own",
        ));
    }
    match value.parse::<u16>() {
        Ok(0) | Err(_) => Err(Error::invalid(
            "port mapping",
            input,
            format!("{what} {value:?} is not a port number from 1 to 65535"),
        )),
        Ok(port) => Ok(port),
    }
}

impl FromStr for PortMapping {
    type Err = Error;

    fn from_str(input: &str) -> Result<Self> {
        let reject = |reason: &str| Error::invalid("port mapping", input, reason);
        let (rest, protocol) = match input.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Protocol::Tcp),
            Some((rest, "udp")) => (rest, Protocol::Udp),
            Some((_, other)) => {
                return Err(reject(&format!(
                    "unknown protocol {other:?}; use tcp or udp"
                )))
            }
            None => (input, Protocol::Tcp),
        };
        // An IPv6 host address is bracketed: [::1]:8080:80.
        let (host_ip, rest) = if let Some(after) = rest.strip_prefix('[') {
            let (ip, rest) = after
                .split_once("]:")
                .ok_or_else(|| reject("an IPv6 address must be written [addr]:host:container"))?;
            let ip = ip
                .parse::<IpAddr>()
                .map_err(|_| reject(&format!("{ip:?} is not an IP address")))?;
            (Some(ip), rest.to_owned())
        } else {
            let parts: Vec<&str> = rest.split(':').collect();
            if parts.len() == 3 {
                let ip = parts[0]
                    .parse::<IpAddr>()
                    .map_err(|_| reject(&format!("{:?} is not an IP address", parts[0])))?;
                (Some(ip), format!("{}:{}", parts[1], parts[2]))
            } else {
                (None, rest.to_owned())
            }
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (host_port, container_port) = match parts.as_slice() {
            [container] => (None, parse_port(input, container, "container port")?),
            [host, container] => {
                let host = if host.is_empty() {
                    None
                } else {
                    Some(parse_port(input, host, "host port")?)
                };
                (host, parse_port(input, container, "container port")?)
            }
            _ => {
                return Err(reject(
                    "expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]",
                ))
            }
        };
        if host_ip.is_some() && parts.len() == 1 {
            return Err(reject(
                "expected [IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]",
            ));
        }
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        match self.host_port {
            Some(port) => write!(f, "{port}:")?,
            None if self.host_ip.is_some() => write!(f, ":")?,
            None => {}
        }
        write!(f, "{}/{}", self.container_port, self.protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_mappings() {
        let p = |s: &str| s.parse::<PortMapping>().unwrap();
        assert_eq!(
            p("80"),
            PortMapping {
                host_ip: None,
                host_port: None,
                container_port: 80,
                protocol: Protocol::Tcp
            }
        );
        assert_eq!(p("8080:80"), PortMapping::tcp(8080, 80));
        assert_eq!(p("8080:80/udp").protocol, Protocol::Udp);
        assert_eq!(
            p("127.0.0.1:8080:80").host_ip,
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(p("[::1]:8080:80").host_ip, Some("::1".parse().unwrap()));
        assert_eq!(p("[::1]:8080:80").to_string(), "[::1]:8080:80/tcp");
        assert_eq!(p("127.0.0.1::80").to_string(), "127.0.0.1::80/tcp");
        assert_eq!(p("80").to_string(), "80/tcp");
        for bad in [
            "",
            "0",
            "abc",
            "80/sctp",
            "8000-8010:80",
            "1.2.3:80:80",
            "1:2:3:4",
            "[::1]80",
            "127.0.0.1:80:",
        ] {
            let e = bad.parse::<PortMapping>().unwrap_err().to_string();
            assert!(e.starts_with("invalid port mapping"), "{bad}: {e}");
        }
        assert!("8000-8010:80"
            .parse::<PortMapping>()
            .unwrap_err()
            .to_string()
            .contains("ranges"));
    }
}
