//! `POST /containers/create`: docker's `Config` and `HostConfig` checked and mapped
//! onto a [`ContainerSpec`], kept in the docker table until `start`.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use axum::{
    extract::{Query, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use locald::{ContainerSpec, ImageRef, Mount, NetworkMode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{table::Entry, DockerError, DockerResult};
use crate::daemon::server::Shared;

/// A string or a list of strings, as docker accepts `Cmd` and `Entrypoint`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StrSlice {
    One(String),
    Many(Vec<String>),
}

impl StrSlice {
    fn into_vec(self) -> Vec<String> {
        match self {
            StrSlice::One(s) => vec![s],
            StrSlice::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    image: Option<String>,
    cmd: Option<StrSlice>,
    entrypoint: Option<StrSlice>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
    hostname: Option<String>,
    tty: Option<bool>,
    open_stdin: Option<bool>,
    labels: Option<BTreeMap<String, String>>,
    exposed_ports: Option<BTreeMap<String, Value>>,
    healthcheck: Option<Value>,
    stop_signal: Option<String>,
    host_config: Option<HostConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct HostConfig {
    binds: Option<Vec<String>>,
    mounts: Option<Vec<MountBody>>,
    port_bindings: Option<BTreeMap<String, Option<Vec<PortBinding>>>>,
    publish_all_ports: Option<bool>,
    memory: Option<i64>,
    nano_cpus: Option<i64>,
    pids_limit: Option<i64>,
    network_mode: Option<String>,
    auto_remove: Option<bool>,
    readonly_rootfs: Option<bool>,
    tmpfs: Option<BTreeMap<String, String>>,
    privileged: Option<bool>,
    restart_policy: Option<RestartPolicy>,
    cap_add: Option<Vec<String>>,
    extra_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct RestartPolicy {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct MountBody {
    #[serde(rename = "Type")]
    kind: Option<String>,
    source: Option<String>,
    target: Option<String>,
    read_only: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct PortBinding {
    host_ip: Option<String>,
    host_port: Option<String>,
}

/// A container port key, `80/tcp`, as `(80, "tcp")`.
fn port_key(key: &str) -> DockerResult<(u16, &str)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let port = port
        .parse()
        .map_err(|_| DockerError::bad_request(format!("invalid port {key:?}")))?;
    Ok((port, proto))
}

/// The spec for a docker `Config` and `HostConfig`, and warnings for what is ignored.
fn build_spec(body: CreateBody, name: &str) -> DockerResult<(ContainerSpec, Vec<String>)> {
    let image = body
        .image
        .filter(|i| !i.is_empty())
        .ok_or_else(|| DockerError::bad_request("config has no image"))?;
    let mut warnings = Vec::new();
    let mut b = ContainerSpec::builder(image.clone()).name(name);
    if let Some(cmd) = body.cmd {
        b = b.cmd(cmd.into_vec());
    }
    if let Some(ep) = body.entrypoint {
        b = b.entrypoint(ep.into_vec().into_iter().filter(|s| !s.is_empty()));
    }
    for var in body.env.unwrap_or_default() {
        match var.split_once('=') {
            Some((k, v)) => b = b.env(k, v),
            // `Env: ["NAME"]` takes the client's value; the client resolves it.
            None => warnings.push(format!("environment variable {var} has no value; ignored")),
        }
    }
    if let Some(dir) = body.working_dir.filter(|d| !d.is_empty()) {
        b = b.workdir(dir);
    }
    if let Some(user) = body.user.filter(|u| !u.is_empty()) {
        b = b.user(user);
    }
    if let Some(host) = body.hostname.filter(|h| !h.is_empty()) {
        b = b.hostname(host);
    }
    b = b
        .tty(body.tty.unwrap_or(false))
        .stdin(body.open_stdin.unwrap_or(false));
    for (k, v) in body.labels.unwrap_or_default() {
        b = b.label(k, v);
    }
    if body.healthcheck.is_some_and(|h| !h.is_null()) {
        warnings.push("locald ignores Healthcheck".to_owned());
    }
    if body.stop_signal.is_some_and(|s| !s.is_empty()) {
        warnings.push("locald ignores StopSignal; the image's stop signal applies".to_owned());
    }
    let host = body.host_config.unwrap_or_default();
    for bind in host.binds.unwrap_or_default() {
        b = b.volume(bind);
    }
    for m in host.mounts.unwrap_or_default() {
        let target = m.target.unwrap_or_default();
        let ro = m.read_only.unwrap_or(false);
        match m.kind.as_deref().unwrap_or("volume") {
            "bind" => b = b.mount(Mount::bind(m.source.unwrap_or_default(), target, ro)),
            "tmpfs" => b = b.mount(Mount::tmpfs(target)),
            other => {
                return Err(DockerError::bad_request(format!(
                    "mount type {other:?} is not supported by locald (bind and tmpfs are)"
                )))
            }
        }
    }
    let mut published: Vec<u16> = Vec::new();
    for (key, bindings) in host.port_bindings.unwrap_or_default() {
        let (port, proto) = port_key(&key)?;
        let bindings = bindings.unwrap_or_default();
        let bindings = if bindings.is_empty() {
            vec![PortBinding::default()]
        } else {
            bindings
        };
        for pb in bindings {
            let ip = pb.host_ip.unwrap_or_default();
            let hp = pb.host_port.unwrap_or_default();
            let spec = match (ip.is_empty() || ip == "0.0.0.0", hp.is_empty()) {
                (true, true) => format!("{port}/{proto}"),
                (true, false) => format!("{hp}:{port}/{proto}"),
                (false, _) if ip.contains(':') => format!("[{ip}]:{hp}:{port}/{proto}"),
                (false, _) => format!("{ip}:{hp}:{port}/{proto}"),
            };
            b = b.publish(spec);
            published.push(port);
        }
    }
    if host.publish_all_ports.unwrap_or(false) {
        for key in body.exposed_ports.unwrap_or_default().keys() {
            let (port, proto) = port_key(key)?;
            if !published.contains(&port) {
                b = b.publish(format!("{port}/{proto}"));
            }
        }
    }
    if let Some(m) = host.memory.filter(|m| *m > 0) {
        b = b.memory(m.to_string());
    }
    if let Some(n) = host.nano_cpus.filter(|n| *n > 0) {
        b = b.cpus(format!("{}", n as f64 / 1e9));
    }
    if let Some(p) = host.pids_limit.filter(|p| *p > 0) {
        b = b.pids_limit(p);
    }
    let network = match host.network_mode.as_deref().unwrap_or("") {
        "" | "default" | "bridge" => NetworkMode::Private,
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => {
            return Err(DockerError::bad_request(format!(
                "network mode {other:?} is not supported by locald (none, host, bridge are)"
            )))
        }
    };
    b = b.network(network);
    b = b
        .read_only(host.readonly_rootfs.unwrap_or(false))
        .auto_remove(host.auto_remove.unwrap_or(false));
    for (dest, opts) in host.tmpfs.unwrap_or_default() {
        b = b.tmpfs(if opts.is_empty() {
            dest
        } else {
            format!("{dest}:{opts}")
        });
    }
    if host.privileged.unwrap_or(false) {
        return Err(DockerError::bad_request(
            "privileged containers are not supported by locald",
        ));
    }
    if host
        .restart_policy
        .and_then(|r| r.name)
        .is_some_and(|n| !n.is_empty() && n != "no")
    {
        warnings.push("locald ignores RestartPolicy".to_owned());
    }
    if host.cap_add.is_some_and(|c| !c.is_empty()) {
        warnings.push("locald ignores CapAdd".to_owned());
    }
    if host.extra_hosts.is_some_and(|c| !c.is_empty()) {
        warnings.push("locald ignores ExtraHosts".to_owned());
    }
    let mut spec = b
        .build()
        .map_err(|e| DockerError::bad_request(e.to_string()))?;
    if let locald::ContainerSource::Image(image) = &spec.source {
        // Like dockerd, registries on loopback are insecure by default.
        if super::is_loopback_host(image.registry()) {
            spec.insecure = true;
        }
    }
    Ok((spec, warnings))
}

/// A docker-style name no container has: `locald_` and 8 hex digits.
fn generate_name() -> DockerResult<String> {
    let id = super::random_id()?;
    Ok(format!("locald_{}", &id[..8]))
}

fn same_image(a: &ImageRef, b: &ImageRef) -> bool {
    a.registry() == b.registry()
        && a.repository() == b.repository()
        && a.reference() == b.reference()
}

/// True when the image is in the store (or is the built-in one locald makes).
async fn image_exists(s: &Shared, image: &ImageRef) -> DockerResult<bool> {
    if image.familiar() == "localhost/locald/busybox:latest"
        || (image.registry() == "localhost" && image.repository() == "locald/busybox")
    {
        return Ok(true);
    }
    Ok(s.runtime
        .list_images()
        .await?
        .iter()
        .any(|i| same_image(&i.reference, image)))
}

#[derive(Debug, Deserialize)]
pub(crate) struct NameQuery {
    name: Option<String>,
}

pub(crate) async fn create(
    State(s): State<Arc<Shared>>,
    Query(q): Query<NameQuery>,
    req: Request,
) -> DockerResult<Response> {
    let bytes = axum::body::to_bytes(req.into_body(), locald::remote::protocol::MAX_REQUEST_BYTES)
        .await
        .map_err(|e| DockerError::bad_request(e.to_string()))?;
    let raw: Value = serde_json::from_slice(&bytes)
        .map_err(|e| DockerError::bad_request(format!("malformed request body: {e}")))?;
    let body: CreateBody = serde_json::from_value(raw.clone())
        .map_err(|e| DockerError::bad_request(format!("malformed request body: {e}")))?;
    let name = match q.name.filter(|n| !n.is_empty()) {
        Some(n) => n.strip_prefix('/').map(str::to_owned).unwrap_or(n),
        None => generate_name()?,
    };
    let taken = s
        .docker
        .name_taken(&name)
        .or(match s.runtime.inspect_container(&name).await {
            Ok(c) if c.name == name => Some(c.id),
            _ => None,
        });
    if let Some(other) = taken {
        return Err(DockerError::conflict(format!(
            "Conflict. The container name \"/{name}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
        )));
    }
    let image = body.image.clone().unwrap_or_default();
    let (spec, warnings) = build_spec(body, &name)?;
    if let locald::ContainerSource::Image(r) = &spec.source {
        if !image_exists(&s, r).await? {
            return Err(DockerError::no_such_image(&r.familiar()));
        }
    }
    let id = super::random_id()?;
    let mut config = raw.clone();
    if let Some(obj) = config.as_object_mut() {
        obj.remove("HostConfig");
        obj.remove("NetworkingConfig");
        obj.insert(
            "Hostname".into(),
            json!(spec.hostname.clone().unwrap_or_else(|| id[..12].to_owned())),
        );
    }
    let host_config = raw.get("HostConfig").cloned().unwrap_or_else(|| json!({}));
    let entry = Arc::new(Entry {
        id: id.clone(),
        name: name.clone(),
        image: image.clone(),
        created: SystemTime::now(),
        config,
        host_config,
        spec,
        live: Default::default(),
        exit: tokio::sync::watch::channel(None).0,
    });
    s.docker.insert(entry);
    s.docker.event("create", &id, &name, &image);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": id, "Warnings": warnings })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use serde_json::{json, Value};

    use super::*;

    fn spec(body: Value) -> DockerResult<(ContainerSpec, Vec<String>)> {
        build_spec(serde_json::from_value(body).unwrap(), "web")
    }

    #[test]
    fn create_bodies_map_onto_the_spec() {
        let (spec, warnings) = spec(json!({
            "Image": "127.0.0.1:5000/app:1",
            "Cmd": ["serve", "--port", "80"],
            "Entrypoint": null,
            "Env": ["A=1", "B=x=y"],
            "WorkingDir": "/srv",
            "Tty": false,
            "OpenStdin": true,
            "Labels": {"k": "v"},
            "ExposedPorts": {"80/tcp": {}, "9000/tcp": {}},
            "HostConfig": {
                "Binds": ["/tmp:/data:ro"],
                "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                "PublishAllPorts": true,
                "Memory": 67108864,
                "NanoCpus": 1500000000,
                "PidsLimit": null,
                "NetworkMode": "bridge",
                "AutoRemove": true,
                "RestartPolicy": {"Name": "always"},
                "Tmpfs": {"/run": "size=1m"}
            }
        }))
        .unwrap();
        assert_eq!(spec.name.as_deref(), Some("web"));
        assert_eq!(
            spec.cmd.as_deref(),
            Some(&["serve".to_owned(), "--port".into(), "80".into()][..])
        );
        assert_eq!(spec.entrypoint, None);
        assert_eq!(spec.env.get("B").map(String::as_str), Some("x=y"));
        assert!(spec.stdin && !spec.tty && spec.auto_remove);
        assert_eq!(spec.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(spec.network, NetworkMode::Private);
        assert!(spec.insecure, "a loopback registry is insecure by default");
        assert_eq!(spec.resources.memory.map(|m| m.bytes()), Some(64 << 20));
        let ports: Vec<String> = spec.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(ports, ["8080:80/tcp", "9000/tcp"]);
        assert_eq!(spec.mounts.len(), 2);
        assert_eq!(warnings, ["locald ignores RestartPolicy"]);
    }

    #[test]
    fn create_refuses_what_locald_cannot_honour() {
        for (body, says) in [
            (json!({}), "config has no image"),
            (
                json!({"Image": "x", "HostConfig": {"NetworkMode": "mynet"}}),
                "network mode",
            ),
            (
                json!({"Image": "x", "HostConfig": {"Privileged": true}}),
                "privileged",
            ),
            (
                json!({"Image": "x", "HostConfig": {"Mounts": [{"Type": "volume", "Source": "v", "Target": "/v"}]}}),
                "mount type \"volume\"",
            ),
            (json!({"Image": "x", "HostConfig": {"Memory": 1}}), "memory"),
        ] {
            let err = spec(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{body}");
            assert!(err.message().contains(says), "{body}: {}", err.message());
        }
        // Entrypoint as a string, and [""] to reset it.
        let (spec, _) = spec(json!({"Image": "x", "Entrypoint": "sh", "Cmd": "true"})).unwrap();
        assert_eq!(spec.entrypoint, Some(vec!["sh".to_owned()]));
        assert_eq!(spec.cmd, Some(vec!["true".to_owned()]));
        let (spec, _) = super::build_spec(
            serde_json::from_value(json!({"Image": "docker.io/library/x", "Entrypoint": [""]}))
                .unwrap(),
            "nn",
        )
        .unwrap();
        assert_eq!(spec.entrypoint, Some(vec![]));
        assert!(!spec.insecure);
    }
}
