//! The dashboard in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) driven over WebDriver. A project with real processes is up;
//! the page lists its services, a line a service writes appears in the log view
//! within a second, the restart button restarts a service (its pid changes), and
//! requests without the session, from another origin or for another host are
//! refused. The screenshot is saved as `target/tmp/dashboard.png`.

use std::{
    process::{Child, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt;

use fantoccini::{Client, ClientBuilder, Locator};
use locald::native::ProcessRuntime;
use locald::services::{Project, ServiceState, UpOptions};
use locald::Runtime;
use locald_cli::daemon::dashboard::{Dashboard, ProjectEntry, Projects};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
struct Fixed(Vec<ProjectEntry>);

impl Projects for Fixed {
    fn projects(&self) -> Vec<ProjectEntry> {
        self.0.clone()
    }
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver and the browsers it started share its process group.
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

async fn driver() -> Driver {
    let port = locald_test_support::free_port();
    let child = std::process::Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("chromedriver did not listen on {port}");
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1000"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// A raw HTTP/1.1 request to the dashboard; the status code and body.
async fn request(port: u16, head: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(format!("{head}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, answer)
}

/// Waits until `check` holds, at most `timeout`.
async fn until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::print_stderr)] // where the screenshot is, for whoever runs it
async fn the_dashboard_in_a_real_browser() {
    if !locald_test_support::require("dashboard", false, &["chromium", "chromedriver"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("locald.toml");
    std::fs::write(
        &file,
        r#"
name = "demo"

[services.web]
command = "exec busybox httpd -f -p 127.0.0.1:$PORT -h ."
health = { tcp = true, interval = "200ms" }

[services.echo]
command = "while true; do if [ -f poke ]; then echo \"poked $(cat poke)\"; rm poke; fi; sleep 0.05; done"
"#,
    )
    .unwrap();
    let runtime: Arc<dyn Runtime> = Arc::new(ProcessRuntime::new());
    let supervisor = Project::load(&file)
        .unwrap()
        .up(runtime.clone(), UpOptions::new(dir.path().join("logs")))
        .await
        .unwrap();
    supervisor
        .wait_for("web", Duration::from_secs(20), |s| {
            s.state == ServiceState::Healthy
        })
        .await
        .expect("web is healthy");
    let projects = Arc::new(Fixed(vec![ProjectEntry {
        name: "demo".into(),
        file: file.display().to_string(),
        supervisor: supervisor.clone(),
    }]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let info = locald::remote::DaemonInfo::new("test", std::process::id(), runtime.info());
    let dashboard = Dashboard::new(addr, runtime.clone(), projects, info);
    let router = locald_cli::daemon::dashboard::router(dashboard.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let port = addr.port();
    let base = format!("http://locald.localhost:{port}");

    let driver = driver().await;
    let client = browser(&driver).await;
    let result = async {
        // Without the one-time link there is no session.
        client.goto(&format!("{base}/")).await.unwrap();
        let body = client.source().await.unwrap();
        assert!(body.contains("no dashboard session"), "{body}");

        // The link signs the browser in and lands on the page, which lists the
        // project's services with their state.
        client.goto(&dashboard.login_url().unwrap()).await.unwrap();
        assert_eq!(client.current_url().await.unwrap().path(), "/");
        until(Duration::from_secs(10), "the service rows", || async {
            client
                .find(Locator::Css(
                    "tr[data-service=\"web\"][data-state=\"healthy\"]",
                ))
                .await
                .is_ok()
        })
        .await;
        let text = client
            .find(Locator::Id("projects"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("demo") && text.contains("web") && text.contains("echo"),
            "{text}"
        );
        // A line the service writes shows up in its log view within a second.
        client
            .find(Locator::Css(
                "button[data-verb=\"logs\"][data-service=\"echo\"]",
            ))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(Duration::from_secs(5), "the log view", || async {
            client
                .find(Locator::Id("logs-section"))
                .await
                .unwrap()
                .is_displayed()
                .await
                .unwrap()
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let token = format!("{:x}", Instant::now().elapsed().as_nanos() ^ 0x5eed);
        std::fs::write(dir.path().join("poke"), &token).unwrap();
        let wanted = format!("poked {token}");
        let log = supervisor.log_file("echo");
        until(
            Duration::from_secs(5),
            "the line in the log file",
            || async {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains(&wanted)
            },
        )
        .await;
        let written = Instant::now();
        until(
            Duration::from_secs(1),
            "the line on the page within a second",
            || async {
                client
                    .find(Locator::Id("logs"))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap()
                    .contains(&wanted)
            },
        )
        .await;
        let shown_after = written.elapsed();

        // The restart button restarts the service: it gets a new pid.
        let row = client
            .find(Locator::Css("tr[data-service=\"web\"]"))
            .await
            .unwrap();
        let before = row.attr("data-pid").await.unwrap().unwrap();
        assert!(!before.is_empty());
        client
            .find(Locator::Css(
                "button[data-verb=\"restart\"][data-service=\"web\"]",
            ))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until(Duration::from_secs(10), "a new pid for web", || async {
            match client.find(Locator::Css("tr[data-service=\"web\"]")).await {
                Ok(row) => row
                    .attr("data-pid")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|pid| !pid.is_empty() && pid != before),
                Err(_) => false,
            }
        })
        .await;
        let now = supervisor
            .status()
            .into_iter()
            .find(|s| s.name == "web")
            .unwrap();
        assert_ne!(now.pid.map(|p| p.to_string()), Some(before.clone()));
        assert!(!locald_test_support::process_alive(before.parse().unwrap()));

        // The screenshot, for people to look at.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let png = client.screenshot().await.unwrap();
        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
        std::fs::write(&shot, png).unwrap();
        eprintln!(
            "screenshot: {} (log line shown {shown_after:?} after it was written)",
            shot.display()
        );

        // The session works from the page's origin, and nothing else gets through.
        let cookie = client.get_named_cookie("locald_session").await.unwrap();
        let session = format!("Cookie: locald_session={}", cookie.value());
        let host = format!("Host: locald.localhost:{port}");
        let restart = "POST /api/projects/demo/services/web/restart HTTP/1.1";
        let own = format!("Origin: http://locald.localhost:{port}");
        let (status, _) = request(
            port,
            &format!("GET /api/state HTTP/1.1\r\n{host}\r\n{session}"),
        )
        .await;
        assert_eq!(status, 200);
        let (status, body) = request(port, &format!("GET /api/state HTTP/1.1\r\n{host}")).await;
        assert_eq!(status, 401, "{body}");
        let (status, body) = request(port, &format!("{restart}\r\n{host}\r\n{own}")).await;
        assert_eq!(status, 401, "no session: {body}");
        let (status, body) = request(
            port,
            &format!("{restart}\r\n{host}\r\n{session}\r\nOrigin: http://evil.example"),
        )
        .await;
        assert_eq!(status, 403, "foreign origin: {body}");
        let (status, body) = request(port, &format!("{restart}\r\n{host}\r\n{session}")).await;
        assert_eq!(status, 403, "no origin: {body}");
        let (status, body) = request(
            port,
            &format!(
                "GET /api/state HTTP/1.1\r\n{host}\r\n{session}\r\nOrigin: http://evil.example"
            ),
        )
        .await;
        assert_eq!(status, 403, "foreign origin reading: {body}");
        let (status, body) = request(
            port,
            &format!("GET /api/state HTTP/1.1\r\nHost: rebound.example:{port}\r\n{session}"),
        )
        .await;
        assert_eq!(status, 421, "DNS rebinding: {body}");
        let pid_now = supervisor
            .status()
            .into_iter()
            .find(|s| s.name == "web")
            .unwrap()
            .pid;
        assert_eq!(pid_now, now.pid, "a refused request restarted the service");
        let (status, body) =
            request(port, &format!("{restart}\r\n{host}\r\n{session}\r\n{own}")).await;
        assert_eq!(status, 200, "{body}");
    }
    .await;
    let _ = client.close().await;
    supervisor.down().await;
    result
}
