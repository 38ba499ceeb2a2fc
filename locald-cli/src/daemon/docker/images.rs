//! `/images/...`: list, pull (`create`), inspect, remove, prune.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    body::Body,
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use futures_util::StreamExt;
use locald::{ImageRef, ImageSummary, PullOptions, PullProgress};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{is_loopback_host, DockerError, DockerResult, NameParam};
use crate::daemon::server::Shared;

fn created_secs(i: &ImageSummary) -> u64 {
    i.created
        .as_deref()
        .and_then(|c| {
            humantime::parse_rfc3339_weak(c.trim_end_matches('Z').split('.').next()?).ok()
        })
        .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn repo_of(r: &ImageRef) -> String {
    let f = r.familiar();
    let f = f.split('@').next().unwrap_or(&f).to_owned();
    match r.tag() {
        Some(tag) => f
            .strip_suffix(&format!(":{tag}"))
            .map(str::to_owned)
            .unwrap_or(f),
        None => f,
    }
}

/// Docker's `RepoTags` entry: `busybox:latest`.
fn repo_tag(r: &ImageRef) -> String {
    format!("{}:{}", repo_of(r), r.tag().unwrap_or("latest"))
}

/// The images grouped by id, as docker lists them (one entry, many tags).
fn grouped(images: Vec<ImageSummary>) -> Vec<(String, Vec<ImageSummary>)> {
    let mut by_id: BTreeMap<String, Vec<ImageSummary>> = BTreeMap::new();
    for i in images {
        by_id.entry(i.id.clone()).or_default().push(i);
    }
    by_id.into_iter().collect()
}

fn summary_json(id: &str, images: &[ImageSummary]) -> Value {
    let first = &images[0];
    json!({
        "Id": id,
        "ParentId": "",
        "RepoTags": images.iter().map(|i| repo_tag(&i.reference)).collect::<Vec<_>>(),
        "RepoDigests": images.iter().map(|i| format!("{}@{}", repo_of(&i.reference), i.digest)).collect::<Vec<_>>(),
        "Created": created_secs(first),
        "Size": first.size,
        "VirtualSize": first.size,
        "SharedSize": -1,
        "Labels": {},
        "Containers": -1,
    })
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListQuery {
    filters: Option<String>,
}

/// Docker's `reference` filter: `*` matches any run of characters; a pattern without a
/// tag matches every tag.
fn matches_reference(pattern: &str, repo: &str, tag: &str) -> bool {
    fn glob(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
        }
    }
    let full = format!("{repo}:{tag}");
    glob(pattern.as_bytes(), full.as_bytes()) || glob(pattern.as_bytes(), repo.as_bytes())
}

pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    Query(q): Query<ListQuery>,
) -> DockerResult<Response> {
    let filters = super::inspect::parse_filters(q.filters.as_deref())?;
    let mut images = s.runtime.list_images().await?;
    for (key, values) in &filters {
        match key.as_str() {
            "reference" => images.retain(|i| {
                let (repo, tag) = (repo_of(&i.reference), i.reference.reference().to_owned());
                values.iter().any(|p| matches_reference(p, &repo, &tag))
            }),
            // Every stored image has a name: none dangles.
            "dangling" if values.iter().any(|v| v == "true" || v == "1") => images.clear(),
            "dangling" => {}
            // The Runtime trait reports no image labels.
            "label" if !values.is_empty() => images.clear(),
            "label" => {}
            other => {
                return Err(DockerError::bad_request(format!(
                    "invalid filter '{other}'"
                )))
            }
        }
    }
    let mut out: Vec<Value> = grouped(images)
        .iter()
        .map(|(id, imgs)| summary_json(id, imgs))
        .collect();
    out.sort_by_key(|v| std::cmp::Reverse(v["Created"].as_u64().unwrap_or(0)));
    Ok(Json(out).into_response())
}

fn same(a: &ImageRef, b: &ImageRef) -> bool {
    a.registry() == b.registry()
        && a.repository() == b.repository()
        && a.reference() == b.reference()
}

/// The stored images `name` refers to: by reference, or by (a prefix of) id.
async fn lookup(s: &Shared, name: &str) -> DockerResult<Vec<ImageSummary>> {
    let images = s.runtime.list_images().await?;
    if let Ok(r) = ImageRef::parse(name) {
        let found: Vec<_> = images
            .iter()
            .filter(|i| same(&i.reference, &r))
            .cloned()
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
    let hex = name.strip_prefix("sha256:").unwrap_or(name);
    if hex.len() >= 4 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let found: Vec<_> = images
            .into_iter()
            .filter(|i| {
                i.id.strip_prefix("sha256:")
                    .unwrap_or(&i.id)
                    .starts_with(hex)
            })
            .collect();
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Err(DockerError::no_such_image(name))
}

/// `GET /images/{name}/json` (the name may hold slashes).
pub(crate) async fn get(
    State(s): State<Arc<Shared>>,
    NameParam { 0: path }: NameParam,
) -> DockerResult<Response> {
    let Some(name) = path.strip_suffix("/json") else {
        return Err(DockerError::new(
            StatusCode::NOT_FOUND,
            format!("page not found: /images/{path}"),
        ));
    };
    let found = lookup(&s, name).await?;
    let first = &found[0];
    let (os, arch) = first
        .platform
        .split_once('/')
        .unwrap_or(("linux", &first.platform));
    let arch = arch.split('/').next().unwrap_or(arch);
    let mut v = summary_json(&first.id, &found);
    let obj = v.as_object_mut().expect("an object");
    obj.insert(
        "Created".into(),
        json!(first.created.clone().unwrap_or_default()),
    );
    obj.insert("Parent".into(), json!(""));
    obj.insert("Comment".into(), json!(""));
    obj.insert("Os".into(), json!(os));
    obj.insert("Architecture".into(), json!(arch));
    // The Runtime trait reports no image configuration (Cmd, Env, ExposedPorts).
    obj.insert("Config".into(), json!({}));
    obj.insert("RootFS".into(), json!({ "Type": "layers", "Layers": [] }));
    obj.insert(
        "Metadata".into(),
        json!({ "LastTagTime": "0001-01-01T00:00:00Z" }),
    );
    Ok(Json(v).into_response())
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RemoveQuery {
    force: Option<String>,
}

pub(crate) async fn remove(
    State(s): State<Arc<Shared>>,
    NameParam { 0: name }: NameParam,
    Query(q): Query<RemoveQuery>,
) -> DockerResult<Response> {
    let found = lookup(&s, &name).await?;
    let by_ref = ImageRef::parse(&name)
        .ok()
        .is_some_and(|r| found.iter().any(|i| same(&i.reference, &r)));
    if !by_ref && found.len() > 1 && !super::flag(q.force.as_ref()) {
        return Err(DockerError::conflict(format!(
            "conflict: unable to delete {name} (must be forced) - image is referenced in multiple repositories"
        )));
    }
    let mut out = Vec::new();
    for i in &found {
        s.runtime.remove_image(&i.reference).await?;
        out.push(json!({ "Untagged": repo_tag(&i.reference) }));
    }
    Ok(Json(out).into_response())
}

pub(crate) async fn prune(State(s): State<Arc<Shared>>) -> DockerResult<Response> {
    let report = s.runtime.prune_images().await?;
    Ok(Json(json!({ "ImagesDeleted": [], "SpaceReclaimed": report.bytes })).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuthBody {
    username: String,
    password: String,
    serveraddress: String,
}

/// `POST /auth` (`docker login`): checks the credentials against the registry and keeps
/// them where the runtime's pulls find them ([`Runtime::login`](locald::Runtime::login)).
pub(crate) async fn auth(
    State(s): State<Arc<Shared>>,
    axum::extract::Json(body): axum::extract::Json<AuthBody>,
) -> DockerResult<Response> {
    let registry = match body.serveraddress.as_str() {
        "" | "https://index.docker.io/v1/" => "docker.io".to_owned(),
        other => other
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
    };
    let login = locald::RegistryLogin::new(&registry, body.username, body.password)
        .insecure(is_loopback_host(&registry));
    match s.runtime.login(login).await {
        Ok(()) => {
            Ok(Json(json!({ "Status": "Login Succeeded", "IdentityToken": "" })).into_response())
        }
        Err(err @ locald::Error::Unauthorized { .. }) => Err(DockerError::new(
            StatusCode::UNAUTHORIZED,
            DockerError::from(err).message().to_owned(),
        )),
        Err(err) => Err(err.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateQuery {
    from_image: Option<String>,
    tag: Option<String>,
    platform: Option<String>,
    from_src: Option<String>,
}

/// The 12-digit short form docker shows for a layer.
fn short(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

fn progress_bar(done: u64, size: u64) -> String {
    const WIDTH: u64 = 50;
    let filled = (done.min(size) * WIDTH).checked_div(size).unwrap_or(WIDTH);
    let mut bar = "=".repeat(filled as usize);
    if filled < WIDTH {
        bar.push('>');
        bar.push_str(&" ".repeat((WIDTH - filled - 1) as usize));
    }
    format!("[{bar}] {}/{}", done, size)
}

/// One line of docker's pull progress for a locald progress event.
fn progress_line(event: &PullProgress, downloaded: &mut bool) -> Value {
    match event {
        PullProgress::Resolved { layers, .. } => {
            json!({ "status": format!("Resolved to {layers} layer(s)") })
        }
        PullProgress::LayerCached { digest } => {
            json!({ "status": "Already exists", "progressDetail": {}, "id": short(digest) })
        }
        PullProgress::LayerProgress { digest, done, size } => {
            *downloaded = true;
            json!({
                "status": "Downloading",
                "progressDetail": { "current": done, "total": size },
                "progress": progress_bar(*done, *size),
                "id": short(digest),
            })
        }
        PullProgress::LayerRetry {
            digest,
            attempt,
            error,
        } => json!({
            "status": format!("Retrying (attempt {attempt}): {error}"),
            "progressDetail": {},
            "id": short(digest),
        }),
        PullProgress::LayerDone { digest } => {
            *downloaded = true;
            json!({ "status": "Pull complete", "progressDetail": {}, "id": short(digest) })
        }
        _ => json!({ "status": "Working" }),
    }
}

fn line(v: &Value) -> Result<bytes::Bytes, std::convert::Infallible> {
    let mut b = serde_json::to_vec(v).expect("json values serialize");
    b.push(b'\n');
    Ok(bytes::Bytes::from(b))
}

/// `POST /images/create?fromImage=&tag=`: a pull, its progress streamed as docker's
/// JSON lines. Registries on loopback are insecure by default, as with dockerd.
pub(crate) async fn create(
    State(s): State<Arc<Shared>>,
    Query(q): Query<CreateQuery>,
) -> DockerResult<Response> {
    if q.from_src.is_some() {
        return Err(DockerError::new(
            StatusCode::NOT_IMPLEMENTED,
            "importing with fromSrc is not supported by locald; use `locald import`",
        ));
    }
    let from = q
        .from_image
        .filter(|f| !f.is_empty())
        .ok_or_else(|| DockerError::bad_request("fromImage is required"))?;
    let name = match q.tag.as_deref().filter(|t| !t.is_empty()) {
        Some(t) if t.contains(':') => format!("{from}@{t}"),
        Some(t) => format!("{from}:{t}"),
        None => from.clone(),
    };
    let image = ImageRef::parse(&name).map_err(|e| DockerError::bad_request(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut options = PullOptions::default().progress(tx);
    if let Some(p) = q.platform.filter(|p| !p.is_empty()) {
        options = options.platform(p);
    }
    let host = image.registry();
    let host_only = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if host_only == "localhost"
        || host_only
            .parse::<std::net::IpAddr>()
            .is_ok_and(|i| i.is_loopback())
    {
        options = options.insecure(true);
    }
    let runtime = s.runtime.clone();
    let pulled = image.clone();
    let pulling = tokio::spawn(async move { runtime.pull_image(&pulled, options).await });
    let head = json!({
        "status": format!("Pulling from {}", repo_of(&image)),
        "id": image.reference(),
    });
    let familiar = image.familiar();
    let state = (Some(rx), Some(pulling), false, Some(head));
    let lines = futures_util::stream::unfold(state, move |(rx, pulling, mut downloaded, head)| {
        let familiar = familiar.clone();
        async move {
            if let Some(head) = head {
                return Some((vec![line(&head)], (rx, pulling, downloaded, None)));
            }
            if let Some(mut rx) = rx {
                if let Some(event) = rx.recv().await {
                    let v = progress_line(&event, &mut downloaded);
                    return Some((vec![line(&v)], (Some(rx), pulling, downloaded, None)));
                }
            }
            let out = match pulling?.await {
                Ok(Ok(summary)) => vec![
                    line(&json!({ "status": format!("Digest: {}", summary.digest) })),
                    line(&json!({
                        "status": if downloaded {
                            format!("Status: Downloaded newer image for {familiar}")
                        } else {
                            format!("Status: Image is up to date for {familiar}")
                        }
                    })),
                ],
                Ok(Err(err)) => {
                    let message = super::DockerError::from(err).message().to_owned();
                    vec![line(
                        &json!({ "errorDetail": { "message": message }, "error": message }),
                    )]
                }
                Err(join) => {
                    let message = format!("the pull failed: {join}");
                    vec![line(
                        &json!({ "errorDetail": { "message": message }, "error": message }),
                    )]
                }
            };
            Some((out, (None, None, downloaded, None)))
        }
    })
    .flat_map(futures_util::stream::iter);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(lines))
        .map_err(|e| DockerError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_as_dockers() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(repo_tag(&r), "busybox:latest");
        let r = ImageRef::parse("127.0.0.1:5000/team/app:1.2").unwrap();
        assert_eq!(
            (repo_of(&r), repo_tag(&r)),
            (
                "127.0.0.1:5000/team/app".to_owned(),
                "127.0.0.1:5000/team/app:1.2".to_owned()
            )
        );
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
    }

    #[test]
    fn loopback_registries_are_recognised() {
        for host in [
            "127.0.0.1:5000",
            "localhost",
            "localhost:80",
            "[::1]:5000",
            "http://127.0.0.2/",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "docker.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "ghcr.io",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn reference_filters_glob() {
        assert!(matches_reference("busybox", "busybox", "latest"));
        assert!(matches_reference("busybox:latest", "busybox", "latest"));
        assert!(!matches_reference("busybox:1", "busybox", "latest"));
        assert!(matches_reference(
            "127.0.0.1:*/busy*",
            "127.0.0.1:5000/busybox",
            "1"
        ));
        assert!(!matches_reference("alpine*", "busybox", "latest"));
    }

    #[test]
    fn progress_bars_fill_up() {
        assert!(progress_bar(0, 100).starts_with("[>"));
        assert!(progress_bar(50, 100).starts_with(&format!("[{}>", "=".repeat(25))));
        assert_eq!(
            progress_bar(100, 100),
            format!("[{}] 100/100", "=".repeat(50))
        );
        assert_eq!(progress_bar(0, 0), format!("[{}] 0/0", "=".repeat(50)));
    }
}
