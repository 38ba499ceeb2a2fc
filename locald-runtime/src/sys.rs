//! The few raw system calls the process runtime makes.
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

/// Sends `signal` to every process in the group `pgid`. A group that no longer exists
/// is not an error.
pub(crate) fn send_group_signal(pgid: u32, signal: Signal) -> io::Result<()> {
    let pgid = i32::try_from(pgid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    if pgid <= 1 {
        // kill(-1) and kill(0) would signal far more than one group.
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: kill(2) takes two integers and touches no memory of this process.
    let rc = unsafe { libc::kill(-pgid, signal_to_os(signal)) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
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
    }
}
