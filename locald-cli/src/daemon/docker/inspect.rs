//! `GET /containers/json` and `GET /containers/{id}/json`: containers as docker lists
//! and inspects them, from the runtime's summaries and the docker table.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    extract::{Query, State},
    response::{IntoResponse, Response},
    Json,
};
use locald::{ContainerState, ContainerSummary};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    containers::{resolve, Target},
    flag,
    table::Entry,
    DockerError, DockerResult, IdParam,
};
use crate::daemon::server::Shared;

/// A container as `list` and `inspect` see it: the runtime's summary (when started)
/// and the docker entry (when created here).
pub(super) struct View {
    pub(super) id: String,
    name: String,
    image: String,
    command: Vec<String>,
    created: u64,
    pub(super) state: ContainerState,
    pid: u32,
    labels: BTreeMap<String, String>,
    ports: Vec<locald::PortMapping>,
    oom_killed: bool,
    pub(super) entry: Option<Arc<Entry>>,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn view(entry: Option<Arc<Entry>>, summary: Option<ContainerSummary>) -> View {
    match (entry, summary) {
        (entry, Some(c)) => View {
            id: entry
                .as_ref()
                .map_or_else(|| c.id.clone(), |e| e.id.clone()),
            name: c.name.clone(),
            image: entry.as_ref().map_or_else(
                || c.image.as_ref().map(|i| i.familiar()).unwrap_or_default(),
                |e| e.image.clone(),
            ),
            command: c.command.clone(),
            created: entry.as_ref().map_or(c.created, |e| secs(e.created)),
            state: c.state,
            pid: c.pid.unwrap_or(0),
            labels: c.labels.clone(),
            ports: c.ports.clone(),
            oom_killed: c.oom_killed,
            entry,
        },
        (Some(e), None) => {
            // Created only, or gone from the runtime (auto-removed, exited).
            let state = match *e.exit.borrow() {
                Some(status) => ContainerState::Exited(status),
                None => ContainerState::Created,
            };
            let mut command = e.spec.entrypoint.clone().unwrap_or_default();
            command.extend(e.spec.cmd.clone().unwrap_or_default());
            View {
                id: e.id.clone(),
                name: e.name.clone(),
                image: e.image.clone(),
                command,
                created: secs(e.created),
                state,
                pid: 0,
                labels: e.spec.labels.clone(),
                ports: e.spec.ports.clone(),
                oom_killed: false,
                entry: Some(e),
            }
        }
        (None, None) => unreachable!("a view of nothing"),
    }
}

pub(super) async fn views(s: &Shared, all: bool) -> DockerResult<Vec<View>> {
    let summaries = s.runtime.list_containers(true).await?;
    let mut out = Vec::new();
    let mut seen = Vec::new();
    for c in summaries {
        let entry = s.docker.by_runtime_id(&c.id);
        if let Some(e) = &entry {
            seen.push(e.id.clone());
        }
        out.push(view(entry, Some(c)));
    }
    for e in s.docker.all() {
        if !seen.contains(&e.id) && e.runtime_id().is_none() {
            out.push(view(Some(e), None));
        }
    }
    if !all {
        out.retain(|v| matches!(v.state, ContainerState::Running | ContainerState::Paused));
    }
    out.sort_by_key(|v| std::cmp::Reverse(v.created));
    Ok(out)
}

fn state_name(state: &ContainerState) -> &'static str {
    match state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Paused => "paused",
        ContainerState::Exited(_) => "exited",
        _ => "dead",
    }
}

fn exit_code(state: &ContainerState) -> i32 {
    match state {
        ContainerState::Exited(s) => s.shell_code(),
        _ => 0,
    }
}

/// Docker's `Up 5 minutes`, `Exited (0) 2 seconds ago`.
fn ago(secs: u64) -> String {
    match secs {
        0 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".to_owned(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".to_owned(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s => format!("{} days", s / 86400),
    }
}

fn status_text(v: &View) -> String {
    let now = secs(SystemTime::now());
    let live = v.entry.as_ref().map(|e| {
        let l = e.live();
        (l.started_at.map(secs), l.finished_at.map(secs))
    });
    match v.state {
        ContainerState::Created => "Created".to_owned(),
        ContainerState::Running => {
            let since = live.and_then(|l| l.0).unwrap_or(v.created);
            format!("Up {}", ago(now.saturating_sub(since)))
        }
        ContainerState::Paused => "Up (Paused)".to_owned(),
        ContainerState::Exited(s) => match live.and_then(|l| l.1) {
            Some(at) => format!(
                "Exited ({}) {} ago",
                s.shell_code(),
                ago(now.saturating_sub(at))
            ),
            None => format!("Exited ({})", s.shell_code()),
        },
        _ => "Dead".to_owned(),
    }
}

fn port_list(ports: &[locald::PortMapping]) -> Vec<Value> {
    ports
        .iter()
        .map(|p| {
            let mut v = json!({ "PrivatePort": p.container_port, "Type": p.protocol.to_string() });
            if let Some(hp) = p.host_port {
                v["PublicPort"] = json!(hp);
                v["IP"] = json!(p
                    .host_ip
                    .map_or_else(|| "127.0.0.1".to_owned(), |i| i.to_string()));
            }
            v
        })
        .collect()
}

/// Docker's `filters` query: `{"label":{"a=b":true}}` or `{"label":["a=b"]}`.
pub(super) fn parse_filters(raw: Option<&str>) -> DockerResult<HashMap<String, Vec<String>>> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(HashMap::new());
    };
    let value: HashMap<String, Value> = serde_json::from_str(raw)
        .map_err(|e| DockerError::bad_request(format!("invalid filters: {e}")))?;
    let mut out = HashMap::new();
    for (k, v) in value {
        let vals = match v {
            Value::Object(m) => m
                .into_iter()
                .filter(|(_, b)| b == &json!(true))
                .map(|(k, _)| k)
                .collect(),
            Value::Array(a) => a
                .into_iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
            _ => return Err(DockerError::bad_request(format!("invalid filter {k:?}"))),
        };
        out.insert(k, vals);
    }
    Ok(out)
}

pub(super) fn matches_filters(
    v: &View,
    filters: &HashMap<String, Vec<String>>,
) -> DockerResult<bool> {
    for (key, values) in filters {
        if values.is_empty() {
            continue;
        }
        let ok = match key.as_str() {
            "label" => values.iter().all(|want| match want.split_once('=') {
                Some((k, val)) => v.labels.get(k).is_some_and(|x| x == val),
                None => v.labels.contains_key(want),
            }),
            "status" => values.iter().any(|s| s == state_name(&v.state)),
            "name" => values
                .iter()
                .any(|n| v.name.contains(n.strip_prefix('/').unwrap_or(n))),
            "id" => values.iter().any(|i| v.id.starts_with(i.as_str())),
            "exited" => values.iter().any(|c| {
                matches!(v.state, ContainerState::Exited(_))
                    && c == &exit_code(&v.state).to_string()
            }),
            "ancestor" => values.contains(&v.image),
            other => {
                return Err(DockerError::bad_request(format!(
                    "invalid filter '{other}'"
                )))
            }
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    all: Option<String>,
    pub(super) filters: Option<String>,
    limit: Option<i64>,
}

pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> DockerResult<Response> {
    let filters = parse_filters(q.filters.as_deref())?;
    // A status filter other than running reaches stopped containers, as docker's does.
    let all =
        flag(q.all.as_ref()) || filters.contains_key("status") || filters.contains_key("exited");
    let mut out = Vec::new();
    for v in views(&s, all).await? {
        if !matches_filters(&v, &filters)? {
            continue;
        }
        let mode = v
            .entry
            .as_ref()
            .and_then(|e| {
                e.host_config
                    .get("NetworkMode")?
                    .as_str()
                    .map(str::to_owned)
            })
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        out.push(json!({
            "Id": v.id,
            "Names": [format!("/{}", v.name)],
            "Image": v.image,
            "ImageID": "",
            "Command": shell_join(&v.command),
            "Created": v.created,
            "Ports": port_list(&v.ports),
            "Labels": v.labels,
            "State": state_name(&v.state),
            "Status": status_text(&v),
            "HostConfig": { "NetworkMode": mode },
            "NetworkSettings": { "Networks": networks(&mode) },
            "Mounts": [],
        }));
    }
    if let Some(limit) = q.limit.filter(|l| *l > 0) {
        out.truncate(limit as usize);
    }
    Ok(Json(out).into_response())
}

fn shell_join(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("{a:?}")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `NetworkSettings.Networks`: the one network a container has. On the private
/// network (docker's bridge) published ports are bound on the host's loopback, so the
/// gateway a client reaches them through (testcontainers inside a container) is
/// `127.0.0.1`; there is no container address.
fn networks(mode: &str) -> Value {
    let name = match mode {
        "" | "default" => "bridge",
        other => other,
    };
    let gateway = if name == "bridge" { "127.0.0.1" } else { "" };
    json!({ name: {
        "NetworkID": name,
        "EndpointID": "",
        "Gateway": gateway,
        "IPAddress": "",
        "IPPrefixLen": 0,
        "MacAddress": "",
    }})
}

fn rfc3339(t: Option<SystemTime>) -> String {
    t.map_or_else(
        || "0001-01-01T00:00:00Z".to_owned(),
        |t| humantime::format_rfc3339_nanos(t).to_string(),
    )
}

pub(crate) async fn inspect(
    State(s): State<Arc<Shared>>,
    IdParam { 0: key }: IdParam,
) -> DockerResult<Response> {
    let target = resolve(&s, &key).await?;
    let v = match target {
        Target::Docker(e) => {
            let summary = match e.runtime_id() {
                Some(rid) => s.runtime.inspect_container(&rid).await.ok(),
                None => None,
            };
            view(Some(e), summary)
        }
        Target::Runtime(c) => view(None, Some(*c)),
    };
    let (started, finished) = v.entry.as_ref().map_or((None, None), |e| {
        let l = e.live();
        (l.started_at, l.finished_at)
    });
    let mut ports = serde_json::Map::new();
    for p in &v.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        let binding = p.host_port.map(|hp| {
            json!({
                "HostIp": p.host_ip.map_or_else(|| "127.0.0.1".to_owned(), |i| i.to_string()),
                "HostPort": hp.to_string(),
            })
        });
        let slot = ports.entry(key).or_insert_with(|| json!([]));
        if let (Some(b), Some(list)) = (binding, slot.as_array_mut()) {
            list.push(b);
        }
    }
    let (config, host_config, tty) = match &v.entry {
        Some(e) => (e.config.clone(), e.host_config.clone(), e.tty()),
        None => (
            json!({ "Image": v.image, "Cmd": v.command, "Labels": v.labels, "Tty": false, "Env": [] }),
            json!({}),
            false,
        ),
    };
    let mut host_config = host_config;
    if let Some(obj) = host_config.as_object_mut() {
        // The log is locald's own, read with `logs`: clients (docker-py) read logs only
        // from the drivers they know keep them.
        obj.insert(
            "LogConfig".into(),
            json!({ "Type": "json-file", "Config": {} }),
        );
        let mode = obj.get("NetworkMode").and_then(Value::as_str).unwrap_or("");
        if mode.is_empty() {
            obj.insert("NetworkMode".into(), json!("default"));
        }
        obj.entry("AutoRemove").or_insert_with(|| json!(false));
    }
    let network_mode = host_config
        .get("NetworkMode")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned();
    let mut config = config;
    if let Some(obj) = config.as_object_mut() {
        obj.insert("Tty".into(), json!(tty));
        obj.entry("Labels").or_insert_with(|| json!(v.labels));
        if obj.get("Labels").is_some_and(Value::is_null) {
            obj.insert("Labels".into(), json!({}));
        }
    }
    let running = matches!(v.state, ContainerState::Running | ContainerState::Paused);
    let created_at = v
        .entry
        .as_ref()
        .map(|e| e.created)
        .unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(v.created));
    Ok(Json(json!({
        "Id": v.id,
        "Created": rfc3339(Some(created_at)),
        "Path": v.command.first().cloned().unwrap_or_default(),
        "Args": v.command.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": state_name(&v.state),
            "Running": running,
            "Paused": matches!(v.state, ContainerState::Paused),
            "Restarting": false,
            "OOMKilled": v.oom_killed,
            "Dead": false,
            "Pid": v.pid,
            "ExitCode": exit_code(&v.state),
            "Error": "",
            "StartedAt": rfc3339(started),
            "FinishedAt": rfc3339(finished),
        },
        "Image": v.image,
        "Name": format!("/{}", v.name),
        "RestartCount": 0,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": host_config,
        "Config": config,
        "Mounts": [],
        "NetworkSettings": {
            "Ports": ports,
            "IPAddress": "",
            "Gateway": "",
            "Networks": networks(&network_mode),
        },
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_both_of_dockers_forms() {
        let a = parse_filters(Some(r#"{"label":{"a=b":true},"status":["running"]}"#)).unwrap();
        assert_eq!(a["label"], ["a=b"]);
        assert_eq!(a["status"], ["running"]);
        assert!(parse_filters(Some("{nope")).is_err());
        assert!(parse_filters(None).unwrap().is_empty());
        let mut summary = ContainerSummary::new("abc", "web-1", ContainerState::Running);
        summary.labels.insert("a".into(), "b".into());
        let v = view(None, Some(summary));
        assert!(matches_filters(&v, &a).unwrap());
        let other = parse_filters(Some(r#"{"label":["a=c"]}"#)).unwrap();
        assert!(!matches_filters(&v, &other).unwrap());
        let name = parse_filters(Some(r#"{"name":["/web"],"id":["ab"]}"#)).unwrap();
        assert!(matches_filters(&v, &name).unwrap());
        let bad = parse_filters(Some(r#"{"volume":["x"]}"#)).unwrap();
        assert!(matches_filters(&v, &bad).is_err());
    }

    #[test]
    fn durations_read_as_dockers() {
        assert_eq!(ago(0), "Less than a second");
        assert_eq!(ago(5), "5 seconds");
        assert_eq!(ago(90), "About a minute");
        assert_eq!(ago(600), "10 minutes");
        assert_eq!(ago(3 * 3600), "3 hours");
        assert_eq!(
            shell_join(&["sh".into(), "-c".into(), "echo hi".into()]),
            "sh -c \"echo hi\""
        );
    }
}
