//! The floor of `scripts/bench-proxy`: hyper's HTTP/1 server and client forwarding
//! every request as it came to one backend, with nothing of locald's proxy around
//! them (no routing, no header rewriting, no timeouts, no pages). It keeps the
//! proxy's shape: one thread per core with a single-threaded runtime, and each client
//! connection with a backend connection of its own. Over HTTPS it uses the proxy's own
//! TLS set-up (rustls with ring, leaves from a [`LocalCa`]), offering HTTP/1.1 only.
//! What this costs per request is what any proxy built on hyper pays before it does
//! anything.
//!
//! `hyper_floor HTTP_ADDR HTTPS_ADDR BACKEND_ADDR CA_DIR`, for example
//! `hyper_floor 127.0.0.1:29082 127.0.0.1:29444 127.0.0.1:28080 /tmp/floor-ca`.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use locald_proxy::LocalCa;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage =
        || std::io::Error::other("usage: hyper_floor HTTP_ADDR HTTPS_ADDR BACKEND_ADDR CA_DIR");
    let [http, https, backend, ca_dir] = args.as_slice() else {
        return Err(usage());
    };
    let parse = |s: &str| {
        s.parse::<SocketAddr>()
            .map_err(|e| std::io::Error::other(format!("{s}: {e}")))
    };
    let backend = parse(backend)?;
    let ca = LocalCa::open(ca_dir.as_ref(), &[]).map_err(std::io::Error::other)?;
    let mut tls = Arc::new(ca).server_config();
    // It serves HTTP/1.1 only, so it offers only that by ALPN.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = TlsAcceptor::from(Arc::new(tls));
    let listen = |s: &str| -> std::io::Result<std::net::TcpListener> {
        let l = std::net::TcpListener::bind(parse(s)?)?;
        l.set_nonblocking(true)?;
        Ok(l)
    };
    let (http, https) = (listen(http)?, listen(https)?);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut joins = Vec::new();
    for _ in 0..threads {
        let (http, https, tls) = (http.try_clone()?, https.try_clone()?, tls.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        joins.push(std::thread::spawn(move || {
            runtime.block_on(async move {
                let http = tokio::net::TcpListener::from_std(http)?;
                let https = tokio::net::TcpListener::from_std(https)?;
                loop {
                    let (tcp, tls) = tokio::select! {
                        Ok((tcp, _)) = http.accept() => (tcp, None),
                        Ok((tcp, _)) = https.accept() => (tcp, Some(tls.clone())),
                    };
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(async move {
                        match tls {
                            None => forward(tcp, backend).await,
                            Some(tls) => {
                                if let Ok(tls) = tls.accept(tcp).await {
                                    forward(tls, backend).await;
                                }
                            }
                        }
                    });
                }
                #[allow(unreachable_code)]
                Ok::<(), std::io::Error>(())
            })
        }));
    }
    for j in joins {
        j.join().expect("server thread")?;
    }
    Ok(())
}

/// Serves one client connection's requests, each sent on as it came over the
/// connection's own backend connection.
async fn forward<I>(io: I, backend: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let sender: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let sender = sender.clone();
        async move {
            let mut slot = sender.lock().await;
            if slot.is_none() {
                let tcp = tokio::net::TcpStream::connect(backend).await?;
                let _ = tcp.set_nodelay(true);
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::spawn(conn);
                *slot = Some(s);
            }
            let s = slot.as_mut().expect("connected above");
            s.send_request(req).await.map_err(std::io::Error::other)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}
