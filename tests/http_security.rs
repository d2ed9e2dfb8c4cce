//! The HTTP port under the same protections as gRPC: tokens (header or query), HTTPS with the
//! camera's certificate, and one per-address cap shared by both ports.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use camcast::admission::ConnLimits;
use camcast::auth::Tokens;
use camcast::config::Config;
use camcast::protection::Protection;
use camcast::server::ServerError;
use camcast::tls::{self, CertKind, ClientTlsOptions, ServerTlsFiles};
use common::{decode, TestServer};
use http_body_util::{BodyExt, Empty};
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "http-viewer-token-0123456789";

/// gRPC and HTTP on one hub with these settings and protections; the HTTP port's address.
async fn servers(config: Config, protection: Protection) -> (TestServer, SocketAddr) {
    let server = TestServer::launch_with(config, protection, common::pattern(320, 240, 30.0)).await;
    let addr = server.http_addr();
    (server, addr)
}

/// One GET over `io`; the status, headers and (for non-streams) the body.
async fn get_over<IO>(
    io: IO,
    path: &str,
    auth: Option<&str>,
) -> Result<(StatusCode, header::HeaderMap, Bytes), hyper::Error>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let mut req = Request::get(path).header(header::HOST, "camcast.test");
    if let Some(a) = auth {
        req = req.header(header::AUTHORIZATION, a);
    }
    let mut resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await?;
    let (status, headers) = (resp.status(), resp.headers().clone());
    // A stream never ends: its first chunk is enough to know it started.
    let body = if path.starts_with("/stream.mjpg") && status == StatusCode::OK {
        resp.body_mut().frame().await.unwrap()?.into_data().unwrap()
    } else {
        resp.body_mut().collect().await?.to_bytes()
    };
    Ok((status, headers, body))
}

async fn get(
    addr: SocketAddr,
    path: &str,
    auth: Option<&str>,
) -> (StatusCode, header::HeaderMap, Bytes) {
    let io = TcpStream::connect(addr).await.unwrap();
    get_over(io, path, auth).await.unwrap()
}

#[tokio::test]
async fn tokens_guard_every_route_but_health() {
    let config = common::config_with_http();
    let protection = Protection {
        tokens: Some(Tokens::parse(TOKEN, "test").unwrap()),
        ..Protection::load(&config).unwrap()
    };
    let (server, addr) = servers(config, protection).await;

    for path in [
        "/",
        "/info.json",
        "/snapshot.jpg",
        "/stream.mjpg",
        "/metrics",
    ] {
        let (status, headers, body) = get(addr, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        assert!(
            String::from_utf8_lossy(&body).contains("?token="),
            "says how"
        );
        let wrong = get(addr, &format!("{path}?token=nope-nope-nope-nope"), None).await;
        assert_eq!(wrong.0, StatusCode::UNAUTHORIZED, "{path}");
        let bearer = format!("Bearer {TOKEN}");
        assert_eq!(
            get(addr, path, Some(&bearer)).await.0,
            StatusCode::OK,
            "{path}"
        );
        let sep = if path.contains('?') { '&' } else { '?' };
        let with_query = format!("{path}{sep}name=tv&token={TOKEN}");
        assert_eq!(
            get(addr, &with_query, None).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    let (status, _, jpeg) = get(addr, &format!("/snapshot.jpg?token={TOKEN}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(decode(&jpeg), (320, 240));
    assert_eq!(get(addr, "/healthz", None).await.0, StatusCode::OK);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn https_serves_with_the_camera_certificate() {
    let dir = tempfile::tempdir().unwrap();
    tls::generate(dir.path(), CertKind::Server, &["127.0.0.1".into()], false).unwrap();
    let files = ServerTlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        client_ca: None,
    };
    let config = Config {
        tls: Some(files.clone()),
        ..common::config_with_http()
    };
    let protection = Protection::load(&config).unwrap();
    let (server, addr) = servers(config, protection).await;

    let trusting = ClientTlsOptions {
        ca: Some(files.cert.clone()),
        ..Default::default()
    };
    let mut config = trusting.rustls_config().unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = trusting.server_name("127.0.0.1").unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let (status, _, jpeg) = get_over(tls, "/snapshot.jpg", None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(decode(&jpeg), (320, 240));

    // Plain HTTP to the HTTPS port gets no page.
    let plain = TcpStream::connect(addr).await.unwrap();
    assert!(get_over(plain, "/", None).await.is_err());
    server.stop().await.unwrap();
}

#[tokio::test]
async fn one_per_address_cap_spans_grpc_and_http() {
    let config = Config {
        conn: ConnLimits {
            per_address: 2,
            ..ConnLimits::default()
        },
        ..common::config_with_http()
    };
    let protection = Protection::load(&config).unwrap();
    let (server, addr) = servers(config, protection).await;

    // One gRPC viewer and one HTTP viewer fill this host's two slots...
    let mut grpc_viewer =
        camcast::client::FrameStream::open(server.channel().await, false, "grpc", 0.0)
            .await
            .unwrap();
    grpc_viewer.next().await.unwrap().expect("frame");
    let mut http_viewer = TcpStream::connect(addr).await.unwrap();
    http_viewer
        .write_all(b"GET /stream.mjpg HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    http_viewer.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    // ...so a third connection on either port is closed unanswered.
    let third = TcpStream::connect(addr).await.unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(10), get_over(third, "/healthz", None))
        .await
        .expect("refused promptly");
    assert!(refused.is_err(), "third connection must be refused");
    drop((grpc_viewer, http_viewer));
    server.stop().await.unwrap();
}

/// No half-alive server: when the gRPC server cannot run (here tonic rejects a key that the
/// HTTPS side never looks at again), HTTP stops with it, the hub is shut down, and the error
/// names the part that failed.
#[tokio::test]
async fn a_transport_that_fails_stops_the_whole_server() {
    let dir = tempfile::tempdir().unwrap();
    tls::generate(dir.path(), CertKind::Server, &["127.0.0.1".into()], false).unwrap();
    let config = Config {
        tls: Some(ServerTlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
            client_ca: None,
        }),
        ..common::config_with_http()
    };
    let mut protection = Protection::load(&config).unwrap();
    protection.tls.as_mut().unwrap().key_pem = b"not a PEM key".to_vec();
    let (server, http) = servers(config, protection).await;
    let hub = server.hub.clone();

    let err = server.finished().await.check().await.unwrap_err();
    assert!(
        matches!(
            err,
            ServerError::Failed {
                part: "gRPC server",
                ..
            }
        ),
        "{err}"
    );
    assert!(hub.is_closed(), "the hub was shut down");
    assert!(
        TcpStream::connect(http).await.is_err(),
        "the HTTP port is closed"
    );
}
