//! Signals for the process runtime, through nix's safe wrappers; only real-time
//! signals (which nix does not name) take the raw call.
#![allow(unsafe_code)]

use std::{io, str::FromStr};

use locald_core::Signal;

/// The host's number for a signal: named signals by name (the numbers differ between
/// Linux and macOS), real-time ones by number.
pub(crate) fn signal_to_os(signal: Signal) -> i32 {
    signal
        .name()
        .and_then(|name| nix::sys::signal::Signal::from_str(&format!("SIG{name}")).ok())
        .map(|s| s as i32)
        .unwrap_or(signal.number())
}

/// The locald signal for a host signal number.
pub(crate) fn signal_from_os(number: i32) -> Signal {
    nix::sys::signal::Signal::try_from(number)
        .ok()
        .and_then(|s| s.as_str().parse().ok())
        .or_else(|| Signal::from_number(number).ok())
        .unwrap_or(Signal::KILL)
}

/// Sends `signal` to `target` (a pid, or minus a process group id).
fn send(target: i32, signal: Signal) -> nix::Result<()> {
    let number = signal_to_os(signal);
    match nix::sys::signal::Signal::try_from(number) {
        Ok(sig) => nix::sys::signal::kill(nix::unistd::Pid::from_raw(target), sig),
        // Real-time signals have no name in nix: only the raw call takes them.
        Err(_) => {
            // SAFETY: kill(2) takes two integers and touches no memory of this process.
            let rc = unsafe { libc::kill(target, number) };
            nix::errno::Errno::result(rc).map(drop)
        }
    }
}

/// Sends `signal` to process `pid`; a process that no longer exists is not an error.
/// Refuses pids 0 and 1 (and anything that is not a pid), which would reach far more.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // containers only, so far
pub(crate) fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = i32::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pid <= 1 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    match send(pid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sends `signal` to every process in the group `pgid`. A group that no longer exists
/// is not an error.
pub(crate) fn send_group_signal(pgid: u32, signal: Signal) -> io::Result<()> {
    let pgid = i32::try_from(pgid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pgid <= 1 {
        // kill(-1) and kill(0) would signal far more than one group.
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    match send(-pgid, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Like [`send_group_signal`], logging instead of failing: for cleanup paths.
pub(crate) fn kill_group(pgid: u32, signal: Signal) {
    if let Err(err) = send_group_signal(pgid, signal) {
        tracing::warn!(pgid, %signal, %err, "could not signal process group");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_numbers_round_trip() {
        for sig in [
            Signal::HUP,
            Signal::INT,
            Signal::KILL,
            Signal::TERM,
            Signal::USR1,
        ] {
            assert_eq!(signal_from_os(signal_to_os(sig)), sig);
        }
        assert_eq!(signal_to_os(Signal::TERM), libc::SIGTERM);
        assert_eq!(signal_to_os(Signal::USR1), libc::SIGUSR1);
    }

    #[test]
    fn refuses_to_signal_everything() {
        assert!(send_group_signal(0, Signal::TERM).is_err());
        assert!(send_group_signal(1, Signal::TERM).is_err());
        assert!(send_signal(0, Signal::TERM).is_err());
        assert!(send_signal(1, Signal::TERM).is_err());
        assert!(send_signal(u32::MAX, Signal::TERM).is_err());
    }

    #[test]
    fn named_and_real_time_signals_arrive() {
        use std::os::unix::process::ExitStatusExt;
        let rt = Signal::from_number(libc::SIGRTMIN() + 2).unwrap();
        for sig in [Signal::TERM, rt] {
            let mut child = std::process::Command::new("sleep")
                .arg("5")
                .spawn()
                .unwrap();
            send_signal(child.id(), sig).unwrap();
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), Some(signal_to_os(sig)), "{sig}");
            // Gone and reaped: not an error.
            send_signal(child.id(), sig).unwrap();
        }
    }
}
