//! The reverse proxy: `<service>.<project>.localhost` (and configured names) to the
//! service's port on 127.0.0.1, over HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with a plain
//! HTTP listener that redirects to it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::ca::LocalCa;

/// Where a host name goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The service listens on this address.
    Up(SocketAddr),
    /// The service is starting; its last log lines.
    Starting {
        /// The last lines the service wrote.
        logs: Vec<String>,
    },
    /// The service exited; its last log lines.
    Crashed {
        /// The last lines the service wrote.
        logs: Vec<String>,
    },
}

/// Host name → route, shared by the proxy and whoever knows the services (the daemon).
/// Replacing the table takes effect for the next request; open connections stay open.
#[derive(Debug, Clone, Default)]
pub struct RouteTable(Arc<RwLock<HashMap<String, Route>>>);

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces all routes at once.
    pub fn replace(&self, routes: HashMap<String, Route>) {
        let routes = routes
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        *self.0.write().expect("route table") = routes;
    }

    /// Sets one route.
    pub fn set(&self, host: &str, route: Route) {
        self.0
            .write()
            .expect("route table")
            .insert(host.to_ascii_lowercase(), route);
    }

    /// Removes one route.
    pub fn remove(&self, host: &str) {
        self.0
            .write()
            .expect("route table")
            .remove(&host.to_ascii_lowercase());
    }

    /// The route for `host` (a port suffix is ignored).
    pub fn get(&self, host: &str) -> Option<Route> {
        let host = host_without_port(host).to_ascii_lowercase();
        self.0.read().expect("route table").get(&host).cloned()
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .read()
            .expect("route table")
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host;
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

type Body = BoxBody<Bytes, hyper::Error>;

/// A client gets this long to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|never| match never {}).boxed()
}

fn page(
    status: StatusCode,
    title: &str,
    text: &str,
    logs: &[String],
    refresh: bool,
) -> Response<Body> {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut html = String::from("<!doctype html><html><head><meta charset=\"utf-8\">");
    if refresh {
        html.push_str("<meta http-equiv=\"refresh\" content=\"1\">");
    }
    html.push_str(&format!(
        "<title>{t}</title></head><body style=\"font-family:sans-serif\"><h1>{t}</h1><p>{x}</p>",
        t = esc(title),
        x = esc(text)
    ));
    if !logs.is_empty() {
        html.push_str("<pre style=\"background:#111;color:#eee;padding:1em\">");
        for l in logs {
            html.push_str(&esc(l));
            html.push('\n');
        }
        html.push_str("</pre>");
    }
    html.push_str("</body></html>\n");
    let mut r = Response::new(full(html));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The proxy: a route table and a pooled client to the services.
#[derive(Debug, Clone)]
pub struct Proxy {
    routes: RouteTable,
    client: Client<HttpConnector, Incoming>,
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    if let Some(c) = h.get(header::CONNECTION).and_then(|v| v.to_str().ok()) {
        let named: Vec<HeaderName> = c
            .split(',')
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    h.remove("proxy-connection");
}

impl Proxy {
    /// A proxy routing by `routes`.
    pub fn new(routes: RouteTable) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(conn);
        Proxy { routes, client }
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// Serves HTTPS on `listener` with leaves from `ca`, until the task is dropped.
    pub async fn serve_https(self, listener: TcpListener, ca: Arc<LocalCa>) {
        let acceptor = TlsAcceptor::from(Arc::new(ca.server_config()));
        loop {
            let (tcp, peer) = accept(&listener).await;
            let acceptor = acceptor.clone();
            let this = self.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let tls = match handshake.await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake with {peer}: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake with {peer}: timed out");
                        return;
                    }
                };
                this.serve_conn(TokioIo::new(tls), peer, "https").await;
            });
        }
    }

    /// Serves plain HTTP on `listener`: redirects to HTTPS on `https_port` when given
    /// (443 gives URLs without a port), otherwise proxies as over HTTPS.
    pub async fn serve_http(self, listener: TcpListener, https_port: Option<u16>) {
        loop {
            let (tcp, peer) = accept(&listener).await;
            let this = self.clone();
            tokio::spawn(async move {
                let io = TokioIo::new(tcp);
                match https_port {
                    Some(port) => {
                        let svc =
                            hyper::service::service_fn(move |req: Request<Incoming>| async move {
                                Ok::<_, Infallible>(redirect(&req, port))
                            });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    }
                    None => this.serve_conn(io, peer, "http").await,
                }
            });
        }
    }

    async fn serve_conn<I>(self, io: TokioIo<I>, peer: SocketAddr, proto: &'static str)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let svc = hyper::service::service_fn(move |req| {
            let this = self.clone();
            async move { Ok::<_, Infallible>(this.handle(req, peer, proto).await) }
        });
        if let Err(e) = auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(io, svc)
            .await
        {
            tracing::debug!("connection from {peer}: {e}");
        }
    }

    async fn handle(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        proto: &str,
    ) -> Response<Body> {
        let host = req
            .uri()
            .host()
            .map(str::to_owned)
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(|h| host_without_port(h).to_owned())
            })
            .unwrap_or_default()
            .to_ascii_lowercase();
        let addr = match self.routes.get(&host) {
            Some(Route::Up(addr)) => addr,
            Some(Route::Starting { logs }) => {
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("{host} is starting"),
                    "This page reloads until the service answers.",
                    &logs,
                    true,
                )
            }
            Some(Route::Crashed { logs }) => {
                return page(
                    StatusCode::BAD_GATEWAY,
                    &format!("{host} has crashed"),
                    "The service exited. Its last log lines:",
                    &logs,
                    true,
                )
            }
            None => {
                let names = self.routes.names();
                let known = if names.is_empty() {
                    "No services are routed.".to_owned()
                } else {
                    format!("Known names: {}", names.join(", "))
                };
                return page(
                    StatusCode::NOT_FOUND,
                    &format!("no service is named {host}"),
                    &known,
                    &[],
                    false,
                );
            }
        };
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let Ok(uri) = format!("http://{addr}{path}").parse::<Uri>() else {
            return page(
                StatusCode::BAD_REQUEST,
                "bad request path",
                &path,
                &[],
                false,
            );
        };
        let upgrade = req.headers().get(header::UPGRADE).cloned();
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        parts.uri = uri;
        parts.version = hyper::Version::HTTP_11;
        let h = &mut parts.headers;
        let orig_host = h
            .get(header::HOST)
            .cloned()
            .or_else(|| HeaderValue::from_str(&host).ok());
        strip_hop_by_hop(h);
        if let Some(up) = &upgrade {
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, up.clone());
        }
        if let Some(oh) = &orig_host {
            h.insert(header::HOST, oh.clone());
            h.insert("x-forwarded-host", oh.clone());
        }
        let ip = peer.ip().to_string();
        let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            h.insert("x-forwarded-for", v);
        }
        h.insert(
            "x-forwarded-proto",
            HeaderValue::from_static(if proto == "https" { "https" } else { "http" }),
        );
        let out = Request::from_parts(parts, body);
        let mut resp = match self.client.request(out).await {
            Ok(r) => r,
            Err(e) => {
                let cause = locald_runtime::util::error_chain(&e);
                return page(
                    StatusCode::BAD_GATEWAY,
                    &format!("{host}: nothing answers on {addr}"),
                    &format!("The service is routed to {addr}, but connecting failed: {cause}."),
                    &[],
                    false,
                );
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(client_upgrade) = client_upgrade {
                let backend_upgrade = hyper::upgrade::on(&mut resp);
                tokio::spawn(async move {
                    let (Ok(c), Ok(b)) = tokio::join!(client_upgrade, backend_upgrade) else {
                        return;
                    };
                    let mut c = TokioIo::new(c);
                    let mut b = TokioIo::new(b);
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
                });
            }
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, full(Bytes::new()));
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(parts, body.boxed())
    }
}

fn redirect(req: &Request<Incoming>, https_port: u16) -> Response<Body> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_without_port)
        .or_else(|| req.uri().host())
        .unwrap_or("localhost");
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let port = if https_port == 443 {
        String::new()
    } else {
        format!(":{https_port}")
    };
    let location = format!("https://{host}{port}{path}");
    let mut r = Response::new(full(format!("Moved to {location}\n")));
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The next connection on `listener`, with Nagle off. A failed accept (out of
/// descriptors, most likely) waits a little, to give connections time to close.
async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                return (tcp, peer);
            }
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
