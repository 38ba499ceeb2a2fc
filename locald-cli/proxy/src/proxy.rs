//! The reverse proxy: `<service>.<project>.localhost` (and configured names) to the
//! service's port on 127.0.0.1, over HTTPS (HTTP/2 or HTTP/1.1 by ALPN) with a plain
//! HTTP listener that redirects to it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
///
/// A change publishes a new snapshot and bumps a generation number; each proxy thread
/// reads through its own [`RouteCache`], which takes the lock only when the generation
/// moved. A request so writes nothing that the other threads read (a shared lock's
/// reader count would bounce between the cores on every request).
#[derive(Debug, Clone, Default)]
pub struct RouteTable(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    routes: RwLock<Arc<HashMap<String, Route>>>,
    generation: AtomicU64,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn update(&self, change: impl FnOnce(&mut HashMap<String, Route>)) {
        let mut routes = self.0.routes.write().expect("route table");
        change(Arc::make_mut(&mut routes));
        self.0.generation.fetch_add(1, Ordering::Release);
    }

    /// Replaces all routes at once.
    pub fn replace(&self, routes: HashMap<String, Route>) {
        let routes = routes
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        self.update(|table| *table = routes);
    }

    /// Sets one route.
    pub fn set(&self, host: &str, route: Route) {
        self.update(|table| {
            table.insert(host.to_ascii_lowercase(), route);
        });
    }

    /// Removes one route.
    pub fn remove(&self, host: &str) {
        self.update(|table| {
            table.remove(&host.to_ascii_lowercase());
        });
    }

    /// The route for `host` (a port suffix is ignored).
    pub fn get(&self, host: &str) -> Option<Route> {
        self.snapshot()
            .1
            .get(&*lowercase(host_without_port(host)))
            .cloned()
    }

    /// The generation and the table of that generation.
    fn snapshot(&self) -> (u64, Arc<HashMap<String, Route>>) {
        let routes = self.0.routes.read().expect("route table");
        (self.0.generation.load(Ordering::Acquire), routes.clone())
    }

    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.snapshot().1.keys().cloned().collect();
        v.sort();
        v
    }
}

/// One proxy thread's view of a [`RouteTable`]: the snapshot it last read, refreshed
/// when the table's generation moves.
#[derive(Debug)]
struct RouteCache {
    table: RouteTable,
    seen: std::sync::Mutex<(u64, Arc<HashMap<String, Route>>)>,
}

impl RouteCache {
    fn new(table: RouteTable) -> Self {
        let seen = std::sync::Mutex::new(table.snapshot());
        RouteCache { table, seen }
    }

    /// The route for a lowercase `host` without a port.
    fn get(&self, host: &str) -> Option<Route> {
        let mut seen = self.seen.lock().expect("route cache");
        if seen.0 != self.table.0.generation.load(Ordering::Acquire) {
            *seen = self.table.snapshot();
        }
        seen.1.get(host).cloned()
    }
}

/// `s` in lowercase, borrowed when it already is (as browsers and tools send hosts).
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(s.to_ascii_lowercase())
    } else {
        Cow::Borrowed(s)
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
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2's connection preface, which a plain-HTTP client with prior knowledge sends.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits, for at most `within`, until `tcp` holds enough bytes to tell HTTP/1 from
/// HTTP/2 (the whole preface, or a byte that differs from it), and says which it is.
/// None when the client sent too little in time, or closed.
async fn first_bytes(tcp: &tokio::net::TcpStream, within: Duration) -> Option<Speaks> {
    let tell = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            let n = match tcp.peek(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            if buf[..n] != H2_PREFACE[..n] {
                return Some(Speaks::Http1);
            }
            if n == buf.len() {
                return Some(Speaks::Http2);
            }
            // A prefix of the preface: wait for more than these bytes.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(within, tell).await.ok().flatten()
}

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

/// The proxy: a route table and a pooled client to the services. Clones share both
/// (one reference count), so a request's handler holds the proxy for one increment.
#[derive(Debug, Clone)]
pub struct Proxy(Arc<ProxyInner>);

#[derive(Debug)]
struct ProxyInner {
    routes: RouteCache,
    client: Client<HttpConnector, Incoming>,
    /// How long a client may take to send a request's head, and how long an idle
    /// HTTP/1.1 connection stays open between requests.
    header_timeout: Duration,
}

/// [`Proxy::header_timeout`]'s default, as nginx's `client_header_timeout` is of the
/// same order (60 s) and its idle `keepalive_timeout` (75 s).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Which HTTP a connection speaks: chosen by ALPN during a TLS handshake, or told by
/// a plain connection's first bytes (HTTP/2 with prior knowledge sends its preface).
#[derive(Clone, Copy)]
enum Speaks {
    Http1,
    Http2,
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

fn is_hop_by_hop(n: &HeaderName) -> bool {
    HOP_BY_HOP.contains(n) || n == "keep-alive" || n == "proxy-connection"
}

/// Removes the hop-by-hop headers: the fixed ones and those that `Connection` names
/// (in any of its fields). One pass over the names finds them, so a message that has
/// none (most requests) costs no lookups.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let mut gone: Vec<HeaderName> = h.keys().filter(|n| is_hop_by_hop(n)).cloned().collect();
    if gone.is_empty() {
        return;
    }
    for v in h.get_all(header::CONNECTION) {
        if let Ok(v) = v.to_str() {
            gone.extend(
                v.split(',')
                    .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok()),
            );
        }
    }
    for n in gone {
        h.remove(n);
    }
}

impl Proxy {
    /// A proxy routing by `routes`.
    pub fn new(routes: RouteTable) -> Self {
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(256)
            .build(conn);
        Proxy(Arc::new(ProxyInner {
            routes: RouteCache::new(routes),
            client,
            header_timeout: HEADER_TIMEOUT,
        }))
    }

    /// The proxy with another header timeout (default [`HEADER_TIMEOUT`]): a client
    /// that opens a connection and sends nothing, or a request head slowly (a
    /// slowloris), or leaves an HTTP/1.1 connection idle between requests, is
    /// disconnected after it, so it cannot hold connections open for ever; an HTTP/2
    /// connection is closed (with a GOAWAY once it has been set up) if no request has
    /// come in that time.
    pub fn header_timeout(self, timeout: Duration) -> Self {
        Proxy(Arc::new(ProxyInner {
            routes: RouteCache::new(self.routes().clone()),
            client: self.0.client.clone(),
            header_timeout: timeout,
        }))
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.0.routes.table
    }

    /// Serves HTTPS (with leaves from `ca`) on `https` and, when given, plain HTTP on
    /// `http` (see [`Proxy::serve_http`]) from one thread per core, each with a
    /// single-threaded async runtime of its own, until the process ends: nginx's
    /// worker model. A task of the caller's runtime accepts and hands the connections
    /// to the threads in turn (so they share the load evenly); a connection stays on
    /// its thread, so no request wakes another thread, which on a small machine costs
    /// more than the request itself.
    pub fn serve_on_threads(
        &self,
        https: TcpListener,
        ca: Arc<LocalCa>,
        http: Option<(TcpListener, Option<u16>)>,
    ) -> std::io::Result<()> {
        type Conns = tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr, bool)>;
        let loops = std::thread::available_parallelism().map_or(1, |n| n.get());
        let https_port = http.as_ref().and_then(|(_, redirect)| *redirect);
        // One TLS configuration for every thread: a client resumes its session
        // whichever thread its next connection is handed to.
        let acceptor = TlsAcceptor::from(Arc::new(ca.server_config()));
        let mut workers: Vec<Conns> = Vec::new();
        for i in 0..loops {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            // Each thread's own pool: its connections belong to its runtime.
            let proxy = Proxy::new(self.routes().clone()).header_timeout(self.0.header_timeout);
            let acceptor = acceptor.clone();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            std::thread::Builder::new()
                .name(format!("proxy-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        while let Some((tcp, peer, tls)) = rx.recv().await {
                            let Ok(tcp) = tokio::net::TcpStream::from_std(tcp) else {
                                continue;
                            };
                            let proxy = proxy.clone();
                            if tls {
                                tokio::spawn(proxy.https_conn(acceptor.clone(), tcp, peer));
                            } else {
                                tokio::spawn(proxy.http_conn(tcp, peer, https_port));
                            }
                        }
                    })
                })?;
            workers.push(tx);
        }
        let hand_out = |listener: TcpListener, tls: bool, workers: Vec<Conns>| async move {
            for next in (0..workers.len()).cycle() {
                let (tcp, peer) = accept(&listener).await;
                if let Ok(tcp) = tcp.into_std() {
                    let _ = workers[next].send((tcp, peer, tls));
                }
            }
        };
        if let Some((http, _)) = http {
            tokio::spawn(hand_out(http, false, workers.clone()));
        }
        tokio::spawn(hand_out(https, true, workers));
        Ok(())
    }

    /// Serves HTTPS on `listener` with leaves from `ca`, until the task is dropped.
    pub async fn serve_https(self, listener: TcpListener, ca: Arc<LocalCa>) {
        let acceptor = TlsAcceptor::from(Arc::new(ca.server_config()));
        loop {
            let (tcp, peer) = accept(&listener).await;
            tokio::spawn(self.clone().https_conn(acceptor.clone(), tcp, peer));
        }
    }

    /// Serves plain HTTP on `listener`: redirects to HTTPS on `https_port` when given
    /// (443 gives URLs without a port), otherwise proxies as over HTTPS.
    pub async fn serve_http(self, listener: TcpListener, https_port: Option<u16>) {
        loop {
            let (tcp, peer) = accept(&listener).await;
            tokio::spawn(self.clone().http_conn(tcp, peer, https_port));
        }
    }

    /// One HTTPS connection: the TLS handshake (bounded in time), then its requests.
    async fn https_conn(self, acceptor: TlsAcceptor, tcp: tokio::net::TcpStream, peer: SocketAddr) {
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
        let speaks = match tls.get_ref().1.alpn_protocol() {
            Some(b"h2") => Speaks::Http2,
            _ => Speaks::Http1,
        };
        self.serve_conn(TokioIo::new(tls), peer, "https", speaks)
            .await;
    }

    /// One plain HTTP connection: redirected to HTTPS on `https_port`, or proxied.
    async fn http_conn(
        self,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        https_port: Option<u16>,
    ) {
        // hyper tells HTTP/2 from HTTP/1 by the first bytes, with no time limit of its
        // own: a client that connects and sends nothing is bounded here.
        let Some(speaks) = first_bytes(&tcp, self.0.header_timeout).await else {
            tracing::debug!("connection from {peer}: nothing sent in time");
            return;
        };
        let io = TokioIo::new(tcp);
        match https_port {
            Some(port) => {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(redirect(&req, port))
                });
                let _ = self.conn_builder().serve_connection(io, svc).await;
            }
            None => self.serve_conn(io, peer, "http", speaks).await,
        }
    }

    /// A connection builder with the proxy's timeouts. HTTP/1's header timeout also
    /// ends idle keep-alive connections: it runs whenever the connection waits for a
    /// request's head.
    fn conn_builder(&self) -> auto::Builder<TokioExecutor> {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.0.header_timeout);
        b
    }

    async fn serve_conn<I>(
        self,
        io: TokioIo<I>,
        peer: SocketAddr,
        proto: &'static str,
        speaks: Speaks,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let client = Arc::new(ClientConn {
            // Formatted once: every request's X-Forwarded-For gets it.
            peer_ip: HeaderValue::from_str(&peer.ip().to_string())
                .expect("an IP address is a valid header value"),
            proto,
            backend: tokio::sync::Mutex::new(None),
        });
        let timeout = self.0.header_timeout;
        // Whether a request came in: an HTTP/2 connection without one is bounded below.
        let requested = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = requested.clone();
        let svc = hyper::service::service_fn(move |req| {
            seen.store(true, std::sync::atomic::Ordering::Relaxed);
            let this = self.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(this.handle(req, &client).await) }
        });
        // Each protocol goes to its own builder, as `first_bytes` or ALPN told it:
        // hyper-util's `auto` builder would sniff the version again (even when told
        // which one, with upgrades on).
        let served: Result<(), Box<dyn std::error::Error + Send + Sync>> = match speaks {
            Speaks::Http1 => hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .serve_connection(io, svc)
                .with_upgrades()
                .await
                .map_err(Into::into),
            Speaks::Http2 => {
                // hyper's HTTP/2 server waits for the client's preface and first request
                // without a time limit of its own.
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(io, svc);
                tokio::pin!(conn);
                tokio::select! {
                    served = conn.as_mut() => served.map_err(Into::into),
                    () = tokio::time::sleep(timeout) => {
                        if !requested.load(std::sync::atomic::Ordering::Relaxed) {
                            tracing::debug!("connection from {peer}: no HTTP/2 request in time");
                            conn.as_mut().graceful_shutdown();
                            // A client that never finished its preface gets no GOAWAY:
                            // the connection just closes.
                            let _ = tokio::time::timeout(Duration::from_secs(1), conn.as_mut()).await;
                            return;
                        }
                        conn.await.map_err(Into::into)
                    }
                }
            }
        };
        if let Err(e) = served {
            tracing::debug!("connection from {peer}: {e}");
        }
    }

    /// Sends `req` to the service at `addr`: over the client connection's own backend
    /// connection when it is free (HTTP/1.1 clients send one request at a time), else
    /// (an HTTP/2 client's concurrent streams, an upgrade) through the shared pool.
    async fn send(
        &self,
        mut req: Request<Incoming>,
        addr: SocketAddr,
        backend: &Backend,
    ) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
        let upgrade = req.headers().contains_key(header::UPGRADE);
        let mut slot = match backend.try_lock() {
            Ok(slot) if !upgrade => slot,
            _ => {
                *req.uri_mut() = format!("http://{addr}{}", origin_form(req.uri())).parse()?;
                return Ok(self.0.client.request(req).await?);
            }
        };
        if req.uri().authority().is_some() {
            // An HTTP/2 request names the scheme and authority; the service gets the
            // origin form an HTTP/1.1 client sends.
            let path = req.uri().path_and_query().cloned();
            *req.uri_mut() = path.map_or_else(|| Uri::from_static("/"), Uri::from);
        }
        if let Some((a, sender)) = slot.as_mut() {
            if *a == addr && sender.is_ready() {
                match sender.try_send_request(req).await {
                    Ok(resp) => return Ok(resp),
                    // The service closed the idle connection as the request left: the
                    // request was not sent, so it goes again on a new connection.
                    Err(mut e) => match e.take_message() {
                        Some(unsent) => req = unsent,
                        None => return Err(e.into_error().into()),
                    },
                }
            }
        }
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let resp = sender.send_request(req).await;
        *slot = Some((addr, sender));
        Ok(resp?)
    }

    async fn handle(&self, mut req: Request<Incoming>, client: &ClientConn) -> Response<Body> {
        let ClientConn {
            peer_ip,
            proto,
            backend,
        } = client;
        let host = req
            .uri()
            .host()
            .or_else(|| {
                req.headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(host_without_port)
            })
            .unwrap_or_default();
        let host = lowercase(host).into_owned();
        let addr = match self.0.routes.get(&host) {
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
                let names = self.routes().names();
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
        let upgrade = req.headers().get(header::UPGRADE).cloned();
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
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
            h.insert(X_FORWARDED_HOST, oh.clone());
        }
        let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => {
                HeaderValue::from_bytes(&[prev.as_bytes(), b", ", peer_ip.as_bytes()].concat()).ok()
            }
            None => Some(peer_ip.clone()),
        };
        if let Some(v) = xff {
            h.insert(X_FORWARDED_FOR, v);
        }
        h.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if *proto == "https" { "https" } else { "http" }),
        );
        let out = Request::from_parts(parts, body);
        let mut resp = match self.send(out, addr, backend).await {
            Ok(r) => r,
            Err(e) => {
                let cause = locald_runtime::util::error_chain(&*e);
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

/// What the requests of one client connection share.
struct ClientConn {
    /// The peer's address as X-Forwarded-For gives it.
    peer_ip: HeaderValue,
    /// "http" or "https".
    proto: &'static str,
    /// The client connection's own connection to its service, as nginx keeps an
    /// upstream connection busy for one client request at a time.
    backend: Backend,
}

/// A client connection's connection to its service, and where it goes.
type Backend = tokio::sync::Mutex<
    Option<(
        SocketAddr,
        hyper::client::conn::http1::SendRequest<Incoming>,
    )>,
>;

/// The path and query of `uri`, as an origin server reads it.
fn origin_form(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut v: Vec<&str> = h.keys().map(|n| n.as_str()).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_stripped() {
        // A message without any is left as it was.
        let mut h = headers(&[("host", "a.localhost"), ("accept", "*/*")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["accept", "host"]);

        // The fixed ones go, and every name listed in every Connection field.
        let mut h = headers(&[
            ("host", "a.localhost"),
            ("connection", "keep-alive, X-Secret"),
            ("connection", " x-other ,"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "2"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("x-kept", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["host", "x-kept"]);

        // A name listed in Connection goes even when no fixed hop-by-hop header but
        // Connection itself is there.
        let mut h = headers(&[("connection", "x-secret"), ("x-secret", "1"), ("a", "b")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(names(&h), ["a"]);
    }
}
