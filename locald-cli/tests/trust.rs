//! `locald trust` and `locald untrust` for real: the system store and a Chromium NSS
//! database change, and `curl` without `-k` and headless Chromium load a page through
//! `locald proxy` only while the root is trusted.
//!
//! Needs root (it changes the system trust store), curl, chromium, certutil and
//! update-ca-certificates. The store is restored when the test ends, also on failure.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ANCHOR: &str = "/usr/local/share/ca-certificates/locald-root.crt";
const PAGE: &str = "<html><body><p id=\"m\">hello from web</p></body></html>";

fn locald() -> &'static str {
    env!("CARGO_BIN_EXE_locald")
}

/// Runs `locald` with the test's own LOCALD_HOME and HOME.
fn cmd(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(locald())
        .args(args)
        .env("LOCALD_HOME", home.join("locald"))
        .env("HOME", home)
        .output()
        .unwrap()
}

/// Restores the system store and stops the proxy, whatever the test's outcome.
struct Restore {
    home: PathBuf,
    proxy: Option<Child>,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(mut p) = self.proxy.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = cmd(&self.home, &["untrust"]);
        if Path::new(ANCHOR).exists() {
            let _ = std::fs::remove_file(ANCHOR);
            let _ = Command::new("update-ca-certificates").output();
        }
    }
}

/// A backend that answers every request with [`PAGE`].
fn backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                PAGE.len()
            );
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// curl without -k: Ok(body) or Err(curl's error).
fn curl(url: &str) -> Result<String, String> {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", url])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Headless Chromium's DOM of `url`, with `home` as its HOME (its NSS database).
fn chromium(home: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--timeout=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .env("HOME", home)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn trust_makes_curl_and_chromium_accept_the_proxy_and_untrust_undoes_it() {
    if !locald_test_support::require(
        "trust",
        true,
        &["curl", "chromium", "certutil", "update-ca-certificates"],
    ) {
        return;
    }
    assert!(
        !Path::new(ANCHOR).exists(),
        "{ANCHOR} exists: a locald root is trusted on this machine already; the test would replace it"
    );
    let home = tempfile::tempdir().unwrap();
    let mut restore = Restore {
        home: home.path().to_owned(),
        proxy: None,
    };
    let be = backend();
    let port = free_port();
    let child = Command::new(locald())
        .args(["proxy", "--https", &format!("127.0.0.1:{port}")])
        .args(["--route", &format!("web.test.localhost={be}")])
        .env("LOCALD_HOME", home.path().join("locald"))
        .spawn()
        .unwrap();
    restore.proxy = Some(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "locald proxy did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let url = format!("https://web.test.localhost:{port}/");

    // Not trusted yet: both refuse the certificate.
    let e = curl(&url).unwrap_err();
    assert!(e.contains("certificate"), "{e}");
    assert!(!chromium(home.path(), &url).contains("hello from web"));

    let out = cmd(home.path(), &["trust"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("added to the system store"), "{stdout}");
    assert!(stdout.contains(".pki/nssdb"), "{stdout}");
    assert!(stdout.contains("NODE_EXTRA_CA_CERTS="), "{stdout}");
    assert!(Path::new(ANCHOR).is_file());

    assert_eq!(curl(&url).unwrap(), PAGE);
    let dom = chromium(home.path(), &url);
    assert!(dom.contains("hello from web"), "{dom}");

    let out = cmd(home.path(), &["untrust"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("removed from the system store"), "{stdout}");
    assert!(stdout.contains("removed from the NSS database"), "{stdout}");
    assert!(!Path::new(ANCHOR).exists());

    let e = curl(&url).unwrap_err();
    assert!(e.contains("certificate"), "{e}");
    assert!(!chromium(home.path(), &url).contains("hello from web"));
}
