//! Image services of a `locald.toml` project on real containers (root; CI runs as
//! root): a busybox `httpd` container published on a port locald picks, healthy by
//! HTTP through that port, a host command that depends on it reaching it through
//! `${services.web.url}` in its env, and `down` leaving no container and no mount.

use std::{sync::Arc, time::Duration};

use locald::native::ContainerRuntime;
use locald::services::{Project, ServiceState, UpOptions};
use locald::Runtime;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_service_is_published_probed_and_removed_by_down() {
    if !locald_test_support::require("image services", true, &[]) {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from a container\n").unwrap();
    let file = dir.path().join("locald.toml");
    std::fs::write(
        &file,
        format!(
            r#"
name = "imgs"

[services.web]
image = "localhost/locald/busybox"
command = ["httpd", "-f", "-p", "80", "-h", "/www"]
ports = ["80"]
volumes = ["{}:/www:ro"]
health = {{ http = "/index.html", interval = "100ms" }}
stop_grace = "1s"                 # httpd as pid 1 ignores TERM

[services.client]
command = "busybox wget -qO- $WEB/index.html > got && exec sleep 60"
env = {{ WEB = "${{services.web.url}}" }}
depends_on = {{ web = "healthy" }}
"#,
            www.display()
        ),
    )
    .unwrap();
    let runtime: Arc<dyn Runtime> = Arc::new(
        ContainerRuntime::with_home(home.path()).shim_program(env!("CARGO_BIN_EXE_locald")),
    );
    let s = Project::load(&file)
        .unwrap()
        .up(runtime.clone(), UpOptions::new(home.path().join("logs")))
        .await
        .unwrap();
    // The checks run in a task so that `down` runs whatever they find: a failed
    // check must not leave a container running.
    let checks = {
        let s = s.clone();
        let runtime = runtime.clone();
        let got = dir.path().join("got");
        tokio::spawn(async move {
            let client = s
                .wait_for("client", Duration::from_secs(60), |st| {
                    st.state == ServiceState::Running || matches!(st.state, ServiceState::Failed(_))
                })
                .await
                .unwrap_or_else(|| panic!("client never ran: {:?}", s.status()));
            assert_eq!(client.state, ServiceState::Running, "{:?}", s.status());
            let web = s.status().into_iter().find(|st| st.name == "web").unwrap();
            assert_eq!(web.state, ServiceState::Healthy);
            let port = web.port.expect("the published port is the service's port");
            // The client got the page through the published port.
            for _ in 0..100 {
                if std::fs::metadata(&got).is_ok_and(|m| m.len() > 0) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_eq!(
                std::fs::read_to_string(&got).unwrap_or_else(|e| panic!(
                    "{e}: {:?} {}",
                    s.status(),
                    std::fs::read_to_string(s.log_file("client")).unwrap_or_default()
                )),
                "hello from a container\n"
            );
            let listed = runtime.list_containers(true).await.unwrap();
            assert_eq!(listed.len(), 1, "{listed:?}");
            assert!(listed[0].name.contains("imgs-web"), "{listed:?}");
            port
        })
        .await
    };
    s.down().await;
    let port = checks.unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
    assert_eq!(runtime.list_containers(true).await.unwrap(), vec![]);
    let mounts = locald_test_support::mounts_under_home(home.path());
    assert!(mounts.is_empty(), "mounts left under the home: {mounts:#?}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still answers after down"
    );
}
