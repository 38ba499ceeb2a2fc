//! What the shim and its caller exchange.
//!
//! * The caller writes `shim.json` ([`ShimConfig`]) in the container's runtime
//!   directory and starts `<shim> __locald-shim run <data dir> <runtime dir>` with the
//!   descriptors of [`fds`] (the two directories: see `state`).
//! * The shim answers on [`fds::SYNC`] with one [`Message`]: [`Message::Started`] or
//!   [`Message::Failed`], and closes it.
//! * When the container has ended and everything is cleaned up, the shim writes
//!   [`Message::Exited`] on [`fds::EXIT`] and exits.
//! * `exec` is `<shim> __locald-shim exec <data dir> <runtime dir> <ExecRequest as JSON>` with the
//!   caller's stdio as 0, 1, 2; on [`fds::SYNC`] it writes [`Message::Started`] (or
//!   [`Message::Failed`]), then [`Message::Exited`].
//!
//! Messages are JSON objects, one per line, tagged by `type`:
//!
//! ```text
//! {"type":"started","pid":4242}
//! {"type":"failed","error":"mounting the root filesystem: ..."}
//! {"type":"exited","status":{"exited":0}}
//! {"type":"exited","status":{"signaled":9}}
//! ```

use std::{collections::HashMap, path::PathBuf};

use locald_core::{ExitStatus, NetworkMode};
use serde::{Deserialize, Serialize};

/// The file descriptors the caller hands the shim.
pub(crate) mod fds {
    /// Start result: one [`Message`](super::Message), `started` or `failed`.
    pub(crate) const SYNC: i32 = 3;
    /// Held open until the shim is done; carries the `exited` message.
    pub(crate) const EXIT: i32 = 4;
    /// The caller's stdout pipe (optional).
    pub(crate) const OUT: i32 = 5;
    /// The caller's stderr pipe (optional).
    pub(crate) const ERR: i32 = 6;
    /// The container's stdin (optional).
    pub(crate) const IN: i32 = 7;
    /// Published-port listeners, in the order of `ShimConfig::ports`.
    pub(crate) const FIRST_LISTENER: i32 = 8;
    /// `exec` with a terminal: lines of `rows cols` that resize it.
    pub(crate) const EXEC_RESIZE: i32 = 4;
}

/// The socket in a state directory through which a container's terminal is resized:
/// each line sent is `rows cols`.
pub(crate) const TTY_SOCKET: &str = "tty.sock";

/// `shim.json`: what the caller decided, for the shim to carry out.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ShimConfig {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) lowers: Vec<PathBuf>,
    /// The lowers are an image's stored layers, shared with other containers: always
    /// under a snapshot, never bind-mounted (even read-only).
    #[serde(default)]
    pub(crate) image: bool,
    /// How the lowers keep whiteouts (marker files are stacked by copying; the
    /// `userxattr` form is mounted with that option).
    #[serde(default = "crate::container::rootfs::overlay_form")]
    pub(crate) whiteouts: crate::image::WhiteoutFormat,
    pub(crate) read_only: bool,
    /// Create the mount points the root lacks before the runtime library starts,
    /// because it runs as an unprivileged mapped root that could not (Safe Mode's user
    /// namespace); only ever in the container's own snapshot (a root that lacks some
    /// gets one, even over a caller's directory).
    #[serde(default)]
    pub(crate) create_mount_points: bool,
    /// The caller is not root: the shim first creates this user namespace for itself
    /// and runs the container inside it ([`super::super::rootless`]).
    #[serde(default)]
    pub(crate) rootless: Option<super::super::rootless::UserNs>,
    pub(crate) tty: bool,
    #[serde(default)]
    pub(crate) terminal_size: Option<locald_core::TerminalSize>,
    pub(crate) stdin: bool,
    pub(crate) attach: bool,
    pub(crate) auto_remove: bool,
    pub(crate) network: NetworkMode,
    /// `pasta` for the outbound network of a `private` container; none: loopback only.
    #[serde(default)]
    pub(crate) pasta: Option<PathBuf>,
    /// pasta maps the gateway address to the host's loopback (not in Safe Mode).
    #[serde(default)]
    pub(crate) map_host_loopback: bool,
    /// Container ports, one per inherited listener.
    pub(crate) ports: Vec<u16>,
    /// Which of `ports` are UDP (the listener is a bound datagram socket); the others,
    /// and all of them when this is empty, are TCP.
    #[serde(default)]
    pub(crate) udp: Vec<bool>,
    pub(crate) names_dir: PathBuf,
    /// The working directory, created in the snapshot when missing (as docker does).
    pub(crate) workdir: PathBuf,
}

/// What `exec` asks of the shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ExecRequest {
    pub(crate) id: String,
    pub(crate) args: Vec<String>,
    pub(crate) env: HashMap<String, String>,
    pub(crate) cwd: Option<PathBuf>,
    /// A rootless container: join the user namespace of this process (the container's
    /// init) first, where the container's shim runs it.
    #[serde(default)]
    pub(crate) join_user_namespace_of: Option<u32>,
    /// Run on a terminal.
    #[serde(default)]
    pub(crate) tty: bool,
    /// The terminal's size, when known.
    #[serde(default)]
    pub(crate) terminal_size: Option<locald_core::TerminalSize>,
}

/// `rows cols`, as resize lines carry a size.
pub(crate) fn parse_size(line: &str) -> Option<locald_core::TerminalSize> {
    let mut it = line.split_whitespace();
    let rows = it.next()?.parse().ok()?;
    let cols = it.next()?.parse().ok()?;
    it.next()
        .is_none()
        .then_some(locald_core::TerminalSize { rows, cols })
}

/// One status message from the shim to its caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub(crate) enum Message {
    /// The container's init (or the exec'd process) runs with this host pid.
    Started {
        /// Its pid in the host's pid namespace.
        pid: u32,
    },
    /// Starting failed; everything the shim created is removed.
    Failed {
        /// Why, with its causes, on one line.
        error: String,
    },
    /// It ended.
    Exited {
        /// How.
        status: ExitStatus,
    },
}

impl Message {
    /// The message as one line of JSON, newline included.
    pub(crate) fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self).expect("shim messages serialize");
        line.push('\n');
        line
    }

    /// Every well-formed message in `text`, in order; anything else (a line cut off
    /// by a crash) is skipped.
    pub(crate) fn parse_all(text: &str) -> impl Iterator<Item = Message> + '_ {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
    }
}

/// The pid in the first message of `text` when it is [`Message::Started`]; otherwise
/// the shim's error, or `silent` when it reported nothing.
pub(crate) fn started(text: &str, silent: &str) -> Result<u32, String> {
    match Message::parse_all(text).next() {
        Some(Message::Started { pid }) => Ok(pid),
        Some(Message::Failed { error }) => Err(error),
        _ => Err(silent.to_owned()),
    }
}

/// The exit status in the last [`Message::Exited`] of `text`, if there is one.
pub(crate) fn exit_status(text: &str) -> Option<ExitStatus> {
    Message::parse_all(text)
        .filter_map(|m| match m {
            Message::Exited { status } => Some(status),
            _ => None,
        })
        .last()
}

#[cfg(test)]
mod tests {
    use locald_core::Signal;

    use super::*;

    #[test]
    fn resize_lines_are_rows_then_columns() {
        let size = parse_size("50 132").unwrap();
        assert_eq!((size.rows, size.cols), (50, 132));
        for bad in ["", "50", "50 132 1", "-1 80", "50 x", "70000 80"] {
            assert_eq!(parse_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_wire_format_is_json_lines() {
        assert_eq!(
            Message::Started { pid: 42 }.to_line(),
            "{\"type\":\"started\",\"pid\":42}\n"
        );
        assert_eq!(
            Message::Exited {
                status: ExitStatus::Signaled(Signal::KILL)
            }
            .to_line(),
            "{\"type\":\"exited\",\"status\":{\"signaled\":9}}\n"
        );
        let failed = Message::Failed {
            error: "two\nlines".into(),
        }
        .to_line();
        assert_eq!(failed.lines().count(), 1);
    }

    #[test]
    fn started_and_exit_status_parse_what_the_shim_writes() {
        let text = format!(
            "{}{}",
            Message::Started { pid: 7 }.to_line(),
            Message::Exited {
                status: ExitStatus::Exited(3)
            }
            .to_line()
        );
        assert_eq!(started(&text, "silent"), Ok(7));
        assert_eq!(exit_status(&text), Some(ExitStatus::Exited(3)));
        let failed = Message::Failed {
            error: "no such file".into(),
        }
        .to_line();
        assert_eq!(started(&failed, "silent"), Err("no such file".into()));
        assert_eq!(exit_status(&failed), None);
        assert_eq!(started("", "silent"), Err("silent".into()));
        // A line cut off by a crash is not a status.
        assert_eq!(exit_status("{\"type\":\"exited\",\"sta"), None);
        assert_eq!(started("ok 12\n", "silent"), Err("silent".into()));
    }
}
