//! The proxy over real sockets: a real backend on loopback, the proxy with leaves from a
//! fresh local CA, and clients that trust only that CA's root.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use locald_proxy::{LocalCa, Proxy, Route, RouteTable};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "web.test.localhost";

type Body = BoxBody<Bytes, hyper::Error>;

fn text(s: String) -> Body {
    Full::new(Bytes::from(s)).map_err(|n| match n {}).boxed()
}

/// A backend named `name`: `/headers` lists what the proxy forwarded, `POST /echo`
/// streams the request body back, and an `Upgrade` request gets 101 and an echo.
async fn backend(name: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |mut req: Request<Incoming>| async move {
                        if req.headers().contains_key(hyper::header::UPGRADE) {
                            let up = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let mut io = TokioIo::new(up.await.unwrap());
                                let mut buf = [0u8; 1024];
                                loop {
                                    let n = io.read(&mut buf).await.unwrap_or(0);
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            });
                            let r = Response::builder()
                                .status(StatusCode::SWITCHING_PROTOCOLS)
                                .header("connection", "upgrade")
                                .header("upgrade", "websocket")
                                .body(text(String::new()))
                                .unwrap();
                            return Ok::<_, Infallible>(r);
                        }
                        if req.uri().path() == "/echo" {
                            return Ok(Response::new(req.into_body().boxed()));
                        }
                        let mut out = format!("backend={name}\npath={}\n", req.uri());
                        for h in [
                            "host",
                            "x-forwarded-for",
                            "x-forwarded-proto",
                            "x-forwarded-host",
                            "x-secret",
                        ] {
                            let v = req.headers().get(h).map(|v| v.to_str().unwrap().to_owned());
                            out.push_str(&format!("{h}={}\n", v.unwrap_or_default()));
                        }
                        Ok(Response::new(text(out)))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

struct Setup {
    _dir: tempfile::TempDir,
    ca: Arc<LocalCa>,
    routes: RouteTable,
    https: SocketAddr,
    http: SocketAddr,
}

async fn setup() -> Setup {
    setup_with(locald_proxy::HEADER_TIMEOUT).await
}

async fn setup_with(header_timeout: Duration) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LocalCa::open(&dir.path().join("ca"), &[]).unwrap());
    let routes = RouteTable::new();
    let proxy = Proxy::new(routes.clone()).header_timeout(header_timeout);
    let https_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let https = https_l.local_addr().unwrap();
    let http = http_l.local_addr().unwrap();
    // The daemon's way: a runtime per core, connections handed out in turn.
    proxy
        .serve_on_threads(https_l, ca.clone(), Some((http_l, Some(https.port()))))
        .unwrap();
    Setup {
        _dir: dir,
        ca,
        routes,
        https,
        http,
    }
}

fn client(s: &Setup, http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(s.ca.root_pem().as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .resolve(HOST, s.https)
        .resolve("other.test.localhost", s.https)
        .redirect(reqwest::redirect::Policy::none());
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// A TLS connection to the proxy that trusts only its CA and offers HTTP/1.1 by ALPN.
async fn tls_http1(s: &Setup) -> tokio_rustls::client::TlsStream<TcpStream> {
    tls_speaking(s, b"http/1.1").await
}

/// A TLS connection to the proxy that chose `alpn` (`http/1.1` or `h2`).
async fn tls_speaking(s: &Setup, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(s.ca.root_pem().as_bytes()).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(s.https).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// Sends `request`, checks that it was answered 200 over `version`, returns the body.
async fn ok_body(request: reqwest::RequestBuilder, version: reqwest::Version) -> String {
    let r = request.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), version);
    r.text().await.unwrap()
}

fn url(s: &Setup, path: &str) -> String {
    format!("https://{HOST}:{}{path}", s.https.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_h2_and_h1_reach_the_service_with_forwarded_headers() {
    let s = setup().await;
    let be = backend("one").await;
    s.routes.set(HOST, Route::Up(be));
    for (http1, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let body = ok_body(client(&s, http1).get(url(&s, "/headers?x=1")), version).await;
        assert!(body.contains("backend=one\npath=/headers?x=1\n"), "{body}");
        assert!(body.contains(&format!("host={HOST}")), "{body}");
        assert!(body.contains("x-forwarded-for=127.0.0.1\n"), "{body}");
        assert!(body.contains("x-forwarded-proto=https\n"), "{body}");
        assert!(body.contains(&format!("x-forwarded-host={HOST}")), "{body}");
    }
}

/// Plain HTTP proxied (no redirect to HTTPS): HTTP/1.1, and HTTP/2 with prior
/// knowledge, told apart by the first bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_proxies_http1_and_http2_with_prior_knowledge() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Arc::new(LocalCa::open(&dir.path().join("ca"), &[]).unwrap());
    let routes = RouteTable::new();
    routes.set(HOST, Route::Up(backend("one").await));
    let https_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = http_l.local_addr().unwrap();
    Proxy::new(routes)
        .serve_on_threads(https_l, ca, Some((http_l, None)))
        .unwrap();
    for (prior_knowledge, version) in [
        (false, reqwest::Version::HTTP_11),
        (true, reqwest::Version::HTTP_2),
    ] {
        let mut b = reqwest::Client::builder().resolve(HOST, http);
        b = if prior_knowledge {
            b.http2_prior_knowledge()
        } else {
            b.http1_only()
        };
        let url = format!("http://{HOST}:{}/p?q=1", http.port());
        let body = ok_body(b.build().unwrap().get(url), version).await;
        assert!(body.contains("backend=one\npath=/p?q=1\n"), "{body}");
        assert!(body.contains("x-forwarded-proto=http\n"), "{body}");
    }

    // A header the client's Connection names is the client's hop's only; an
    // X-Forwarded-For from an earlier proxy gets this hop's address appended.
    let mut tcp = TcpStream::connect(http).await.unwrap();
    tcp.write_all(
        format!(
            "GET /h HTTP/1.1\r\nHost: {HOST}\r\nConnection: close, X-Secret\r\n\
             X-Secret: 1\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = String::new();
    tcp.read_to_string(&mut got).await.unwrap();
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("x-secret=\n"), "{got}");
    assert!(
        got.contains("x-forwarded-for=10.1.2.3, 127.0.0.1\n"),
        "{got}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_body_survives_a_route_reload_and_new_requests_follow_it() {
    let s = setup().await;
    let one = backend("one").await;
    let two = backend("two").await;
    s.routes.set(HOST, Route::Up(one));
    let c = client(&s, false);
    // A request body sent in chunks over a second, while the table is replaced.
    let chunks = futures_util::stream::unfold(0u32, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((
            Ok::<_, std::io::Error>(Bytes::from(format!("chunk{i};"))),
            i + 1,
        ))
    });
    let slow = tokio::spawn({
        let c = c.clone();
        let u = url(&s, "/echo");
        async move {
            c.post(u)
                .body(reqwest::Body::wrap_stream(chunks))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.routes
        .replace(HashMap::from([(HOST.to_owned(), Route::Up(two))]));
    let body = c
        .get(url(&s, "/headers"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("backend=two"), "{body}");
    let echoed = slow.await.unwrap();
    let want: String = (0..10).map(|i| format!("chunk{i};")).collect();
    assert_eq!(echoed, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_for_starting_crashed_unknown_and_nothing_listening() {
    let s = setup().await;
    let c = client(&s, false);
    s.routes.set(
        HOST,
        Route::Starting {
            logs: vec!["<b>compiling</b> web".into()],
        },
    );
    let r = c.get(url(&s, "/")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("web.test.localhost is starting"), "{body}");
    assert!(body.contains("&lt;b&gt;compiling&lt;/b&gt; web"), "{body}");
    assert!(body.contains("http-equiv=\"refresh\""), "{body}");

    s.routes.set(
        HOST,
        Route::Crashed {
            logs: vec!["panicked at main.rs:3".into()],
        },
    );
    let r = c.get(url(&s, "/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("has crashed") && body.contains("panicked at main.rs:3"),
        "{body}"
    );

    // A port nothing listens on: bound, then closed.
    let free = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    s.routes.set(HOST, Route::Up(free));
    let r = c.get(url(&s, "/")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap().to_lowercase();
    assert!(
        body.contains(&format!("nothing answers on {free}")),
        "{body}"
    );
    assert!(body.contains("connection refused"), "{body}");

    let r = c
        .get(format!("https://other.test.localhost:{}/", s.https.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body = r.text().await.unwrap();
    assert!(
        body.contains("no service is named other.test.localhost"),
        "{body}"
    );
    assert!(body.contains("Known names: web.test.localhost"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_redirects_to_https_and_foreign_names_get_no_certificate() {
    let s = setup().await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(HOST, s.http)
        .build()
        .unwrap();
    let r = c
        .get(format!("http://{HOST}:{}/a/b?c=d", s.http.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://{HOST}:{}/a/b?c=d", s.https.port()).as_str()
    );

    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(s.ca.root_pem().as_bytes()).unwrap())
        .resolve("example.com", s.https)
        .build()
        .unwrap();
    let e = c
        .get(format!("https://example.com:{}/", s.https.port()))
        .send()
        .await
        .unwrap_err();
    assert!(e.is_connect(), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_relayed_both_ways() {
    let s = setup().await;
    s.routes.set(HOST, Route::Up(backend("ws").await));
    let mut tls = tls_http1(&s).await;
    tls.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tls.read(&mut b).await.unwrap(), 1, "closed after {head:?}");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_lowercase().contains("upgrade: websocket"), "{head}");
    for msg in ["hello", "again"] {
        tls.write_all(msg.as_bytes()).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tls.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg.as_bytes());
    }
}

/// Reads what `conn` sends until the proxy closes it, for at most 5 s: what it sent,
/// and how long after `since` it closed (None: still open after 5 s).
async fn until_closed(
    conn: &mut (impl tokio::io::AsyncRead + Unpin),
    since: Instant,
) -> (String, Option<Duration>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    Some(since.elapsed()),
                )
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), None),
        }
    }
}

/// A slowloris and idle connections cannot hold the proxy's connections: a client that
/// sends nothing, or only part of a request head, or stays idle after a request, is
/// disconnected once the header timeout has passed, over plain HTTP and over TLS; a
/// head sent in pieces within the timeout is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_and_idle_clients_are_disconnected_after_the_header_timeout() {
    let timeout = Duration::from_millis(800);
    let s = setup_with(timeout).await;
    s.routes.set(HOST, Route::Up(backend("one").await));
    let closed_in_time = |what: &str, closed: Option<Duration>| {
        let closed = closed.unwrap_or_else(|| panic!("{what}: still open after 5 s"));
        assert!(
            closed >= timeout.mul_f32(0.9),
            "{what}: closed after {closed:?}, before the timeout"
        );
    };

    // Plain HTTP: nothing at all.
    let mut c = TcpStream::connect(s.http).await.unwrap();
    let (got, closed) = until_closed(&mut c, Instant::now()).await;
    closed_in_time("nothing sent", closed);
    assert_eq!(got, "", "an answer to nothing");

    // Plain HTTP: part of a head.
    let mut c = TcpStream::connect(s.http).await.unwrap();
    let since = Instant::now();
    c.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nUser-Ag").as_bytes())
        .await
        .unwrap();
    let (got, closed) = until_closed(&mut c, since).await;
    closed_in_time("part of a head", closed);
    assert!(!got.contains("308"), "a half head was answered: {got}");

    // Plain HTTP: a head in three pieces within the timeout is answered (the redirect),
    // then the idle keep-alive connection is closed after the timeout.
    let mut c = TcpStream::connect(s.http).await.unwrap();
    let pieces = [
        "GET /a HTTP/1.1\r\n".to_owned(),
        format!("Host: {HOST}\r\n"),
        "\r\n".to_owned(),
    ];
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(timeout / 4).await;
        }
        c.write_all(piece.as_bytes()).await.unwrap();
    }
    let answered = Instant::now();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 308");
    let (_, closed) = until_closed(&mut c, answered).await;
    closed_in_time("idle after a request", closed);

    // TLS: a finished handshake, then nothing.
    let mut tls = tls_http1(&s).await;
    let (got, closed) = until_closed(&mut tls, Instant::now()).await;
    closed_in_time("nothing sent over TLS", closed);
    assert_eq!(got, "");

    // HTTP/2 by ALPN: nothing after the handshake, then only the client's preface and
    // settings, without a request.
    let mut tls = tls_speaking(&s, b"h2").await;
    let (_, closed) = until_closed(&mut tls, Instant::now()).await;
    closed_in_time("nothing sent over HTTP/2", closed);
    let mut tls = tls_speaking(&s, b"h2").await;
    let since = Instant::now();
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (_, closed) = until_closed(&mut tls, since).await;
    closed_in_time("an HTTP/2 preface without a request", closed);

    // TLS: a request still reaches the service after all that.
    let mut tls = tls_http1(&s).await;
    tls.write_all(
        format!("GET /x HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let (got, _) = until_closed(&mut tls, Instant::now()).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("backend=one"), "{got}");
}
