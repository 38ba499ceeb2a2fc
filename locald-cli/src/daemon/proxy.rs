//! The daemon's HTTPS proxy: `https://<service>.<project>.localhost` to the port each
//! service was given, from the projects' status (refreshed twice a second, so a
//! service that starts, crashes or moves is followed without dropping connections).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use locald::services::{ServiceState, ServiceStatus};
use locald_proxy::{Route, RouteTable};

use crate::daemon::projects::{ProjectStatus, Projects};

/// How many log lines the starting and crashed pages show.
const LOG_LINES: usize = 20;

/// The host name of `service` in `project`, when both are DNS labels.
pub fn host_name(project: &str, service: &str) -> Option<String> {
    let name = format!("{service}.{project}.localhost").to_ascii_lowercase();
    (locald_proxy::ca::is_host_name(&name) && !service.contains('.') && !project.contains('.'))
        .then_some(name)
}

/// The route of one service: its port while it runs, a page while it starts or after
/// it failed (with its last log lines from `logs`), none when it was stopped or has
/// no port.
pub fn route(s: &ServiceStatus, logs: impl FnOnce() -> Vec<String>) -> Option<Route> {
    let port = s.port?;
    Some(match &s.state {
        ServiceState::Running | ServiceState::Healthy | ServiceState::Unhealthy => {
            Route::Up(SocketAddr::from(([127, 0, 0, 1], port)))
        }
        ServiceState::Waiting | ServiceState::Restarting => Route::Starting { logs: logs() },
        ServiceState::Exited | ServiceState::Failed(_) => Route::Crashed { logs: logs() },
        _ => return None,
    })
}

/// The routes of every service of `projects`: `<service>.<project>.localhost` and the
/// names its `hosts` set (a name two projects set goes to the first).
pub fn routes(
    projects: &[ProjectStatus],
    mut logs: impl FnMut(&str, &str) -> Vec<String>,
) -> HashMap<String, Route> {
    let mut out = HashMap::new();
    for p in projects {
        for s in &p.services {
            let extra = p.hosts.get(&s.name).into_iter().flatten().cloned();
            let names: Vec<String> = host_name(&p.name, &s.name)
                .into_iter()
                .chain(extra)
                .collect();
            if names.is_empty() {
                continue;
            }
            if let Some(r) = route(s, || logs(&p.name, &s.name)) {
                for name in names {
                    out.entry(name).or_insert_with(|| r.clone());
                }
            }
        }
    }
    out
}

/// The dashboard's name behind the proxy.
pub const DASHBOARD_HOST: &str = "locald.localhost";

/// Keeps `table` in step with `projects` (and `locald.localhost` on the dashboard
/// at `dashboard`, when it is served) until the task is dropped. With `hosts`
/// (the setuid helper), the names also go into the locald block of /etc/hosts
/// whenever they change, for programs whose resolver does not map `*.localhost` to
/// loopback by itself.
pub async fn follow(
    projects: Arc<Projects>,
    table: RouteTable,
    hosts: Option<std::path::PathBuf>,
    dashboard: Option<SocketAddr>,
) {
    let mut synced: Option<Vec<String>> = None;
    loop {
        let list = projects.list();
        let mut logs: HashMap<(String, String), Vec<String>> = HashMap::new();
        for p in &list {
            for s in &p.services {
                if route(s, Vec::new).is_some_and(|r| !matches!(r, Route::Up(_))) {
                    let mut lines = Vec::new();
                    if let Ok(mut rx) =
                        projects.logs(&p.name, Some(&s.name), Some(LOG_LINES), false)
                    {
                        while let Some(l) = rx.recv().await {
                            lines.push(l.line);
                        }
                    }
                    logs.insert((p.name.clone(), s.name.clone()), lines);
                }
            }
        }
        let mut now = routes(&list, |p, s| {
            logs.remove(&(p.to_owned(), s.to_owned()))
                .unwrap_or_default()
        });
        if let Some(addr) = dashboard {
            now.insert(DASHBOARD_HOST.to_owned(), Route::Up(addr));
        }
        if let Some(helper) = &hosts {
            let mut names: Vec<String> = now.keys().cloned().collect();
            names.sort();
            if synced.as_ref() != Some(&names) {
                let helper = helper.clone();
                let list = names.clone();
                match tokio::task::spawn_blocking(move || {
                    locald_proxy::privhelper::hosts_sync(&helper, &list)
                })
                .await
                {
                    Ok(Ok(())) => synced = Some(names),
                    Ok(Err(e)) => tracing::warn!(%e, "cannot update /etc/hosts"),
                    Err(e) => tracing::warn!(%e, "cannot update /etc/hosts"),
                }
            }
        }
        table.replace(now);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(json: serde_json::Value) -> Vec<ProjectStatus> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn routes_follow_the_services_states() {
        let svc = |name: &str, state: serde_json::Value, port: Option<u16>| {
            serde_json::json!({"name": name, "state": state, "pid": null, "restarts": 0,
                               "port": port, "last_exit": null})
        };
        let list = status(serde_json::json!([{
            "name": "shop", "file": "/p/locald.toml", "services": [
                svc("web", serde_json::json!({"state": "healthy"}), Some(4100)),
                svc("api", serde_json::json!({"state": "restarting"}), Some(4101)),
                svc("worker", serde_json::json!({"state": "failed", "detail": "too many restarts"}), Some(4102)),
                svc("db", serde_json::json!({"state": "stopped"}), Some(4103)),
                svc("cron", serde_json::json!({"state": "running"}), None),
                svc("bad_name", serde_json::json!({"state": "running"}), Some(4104)),
            ]
        }]));
        let r = routes(&list, |p, s| vec![format!("{p}/{s} log")]);
        assert_eq!(
            r.get("web.shop.localhost"),
            Some(&Route::Up(SocketAddr::from(([127, 0, 0, 1], 4100))))
        );
        assert_eq!(
            r.get("api.shop.localhost"),
            Some(&Route::Starting {
                logs: vec!["shop/api log".into()]
            })
        );
        assert_eq!(
            r.get("worker.shop.localhost"),
            Some(&Route::Crashed {
                logs: vec!["shop/worker log".into()]
            })
        );
        assert_eq!(r.len(), 3, "{r:?}");
    }

    #[test]
    fn host_names_from_locald_toml_route_to_their_service() {
        let svc = |name: &str, port: u16| {
            serde_json::json!({"name": name, "state": {"state": "running"}, "pid": null,
                               "restarts": 0, "port": port, "last_exit": null})
        };
        let list = status(serde_json::json!([
            {"name": "shop", "file": "/p/locald.toml",
             "services": [svc("web", 4100), svc("bad_name", 4101)],
             "hosts": {"web": ["shop.localhost", "www.shop.localhost"],
                       "bad_name": ["admin.shop.localhost"]}},
            {"name": "other", "file": "/o/locald.toml",
             "services": [svc("web", 4200)],
             "hosts": {"web": ["shop.localhost"]}},
        ]));
        let r = routes(&list, |_, _| Vec::new());
        let up = |port: u16| Some(Route::Up(SocketAddr::from(([127, 0, 0, 1], port))));
        assert_eq!(r.get("web.shop.localhost").cloned(), up(4100));
        assert_eq!(r.get("www.shop.localhost").cloned(), up(4100));
        assert_eq!(r.get("admin.shop.localhost").cloned(), up(4101));
        // A name two projects claim stays with the first.
        assert_eq!(r.get("shop.localhost").cloned(), up(4100));
        assert_eq!(r.get("web.other.localhost").cloned(), up(4200));
        assert_eq!(r.len(), 5, "{r:?}");
    }
}
