//! The daemon API's project routes (under `/locald/v1`), served by [`Projects`]:
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /projects` | every project that is up |
//! | `POST /projects/up` ([`UpRequest`]) | the project's status |
//! | `GET /projects/{name}` | its status |
//! | `POST /projects/{name}/down` | its last status |
//! | `POST /projects/{name}/services/{service}/{restart\|stop\|start}` | its status |
//! | `GET /projects/{name}/logs?service=&tail=&follow=` | JSON lines of [`LogEntry`] |
//! | `POST /dashboard/login` | `{"url"}`: a one-time link to the dashboard |

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{rejection::QueryRejection, Path, Query, State},
    http::header,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde::Deserialize;

use crate::daemon::{
    api::{query, ApiError, ApiResult, JsonBody},
    projects::{LogEntry, UpRequest},
    server::Shared,
};

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/projects", get(list))
        .route("/projects/up", post(up))
        .route("/projects/{name}", get(status))
        .route("/projects/{name}/down", post(down))
        .route("/projects/{name}/logs", get(logs))
        .route("/projects/{name}/services/{service}/{verb}", post(act))
        .route("/dashboard/login", post(dashboard_login))
}

async fn list(State(s): State<Arc<Shared>>) -> Response {
    Json(s.projects.list()).into_response()
}

async fn up(
    State(s): State<Arc<Shared>>,
    JsonBody(body): JsonBody<UpRequest>,
) -> ApiResult<Response> {
    Ok(Json(s.projects.up(body).await?).into_response())
}

async fn status(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(s.projects.status(&name)?).into_response())
}

async fn down(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> ApiResult<Response> {
    Ok(Json(s.projects.down(&name).await?).into_response())
}

async fn act(
    State(s): State<Arc<Shared>>,
    Path((name, service, verb)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    Ok(Json(s.projects.act(&name, &service, &verb).await?).into_response())
}

#[derive(Deserialize)]
struct LogQuery {
    service: Option<String>,
    tail: Option<usize>,
    #[serde(default)]
    follow: bool,
}

async fn logs(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    q: Result<Query<LogQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let rx = s
        .projects
        .logs(&name, q.service.as_deref(), q.tail, q.follow)?;
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let entry: LogEntry = rx.recv().await?;
        let mut line = serde_json::to_vec(&entry).expect("a log entry serializes");
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

async fn dashboard_login(State(s): State<Arc<Shared>>) -> ApiResult<Response> {
    let Some(dashboard) = s.dashboard.get() else {
        return Err(ApiError::request(
            "this daemon serves no dashboard (start it with --dashboard 127.0.0.1:PORT)",
        ));
    };
    let url = dashboard
        .login_url()
        .map_err(|e| locald::Error::io("making a dashboard link", e))?;
    Ok(Json(serde_json::json!({ "url": url })).into_response())
}
