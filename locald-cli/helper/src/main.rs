//! `locald-privhelper`: the only part of locald that runs with root privileges, and
//! only for two things a normal user cannot do:
//!
//! - `bind 80|443`: binds 127.0.0.1 on that port and returns the listening socket
//!   over the unix socket the caller gave as standard output (`SCM_RIGHTS`);
//! - `hosts sync NAME...`: makes the `# BEGIN locald` … `# END locald` block of
//!   `/etc/hosts` list exactly these names (RFC 1123, under `.localhost` or a suffix
//!   configured at setup), atomically, under a lock, never following symlinks.
//!
//! `locald setup` (as root) installs it setuid root with the one allowed uid in
//! `/etc/locald/privhelper.conf` (root-owned). The helper refuses any other caller,
//! clears its environment, insists that descriptors 0–2 are open, and drops to the
//! caller's ids as soon as the privileged step is done, checking that they stuck.

// Used by the Linux code only; compiled everywhere so its tests run everywhere.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
mod args;
#[cfg(target_os = "linux")]
mod linux;

fn main() -> std::process::ExitCode {
    #[cfg(target_os = "linux")]
    {
        linux::main()
    }
    #[cfg(not(target_os = "linux"))]
    {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("locald-privhelper: only for Linux");
        }
        std::process::ExitCode::from(2)
    }
}
