//! Transport security and limits against the real server on loopback: TLS (server-only and
//! mutual), viewer tokens, the tutorial-API switch, and every limit a peer can push against.

mod common;

use std::error::Error;
use std::path::Path;
use std::time::Duration;

use camcast::admission::ConnLimits;
use camcast::auth::Tokens;
use camcast::client::{self, ClientOptions, Conn, FrameStream};
use camcast::config::Config;
use camcast::pb;
use camcast::protection::Protection;
use camcast::tls::{self, CertKind, ClientTlsOptions, ServerTlsFiles};
use common::{decode, eventually, TestServer};
use tonic::Code;

const TOKEN: &str = "viewer-token-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(5);

async fn server(config: Config) -> TestServer {
    TestServer::launch(config, common::pattern(320, 240, 30.0)).await
}

/// The error and all its sources, for matching on the root cause.
fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

async fn dial(server: &TestServer, opts: &ClientOptions) -> Result<Conn, client::ConnectError> {
    client::connect_with(&server.target(), opts, WAIT).await
}

async fn watch_frames(conn: Conn, tutorial_api: bool, n: usize) -> Result<(), tonic::Status> {
    let mut stream = FrameStream::open(conn, tutorial_api, "security-test", 0.0).await?;
    for _ in 0..n {
        let f = stream.next().await?.expect("a frame");
        assert_eq!(decode(&f.jpeg), (320, 240));
    }
    Ok(())
}

fn cert(dir: &Path, kind: CertKind, names: &[&str]) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    tls::generate(dir, kind, &names, false).unwrap();
}

fn tls_settings(server_dir: &Path, client_ca: Option<&Path>) -> Config {
    let files = ServerTlsFiles {
        cert: server_dir.join("cert.pem"),
        key: server_dir.join("key.pem"),
        client_ca: client_ca.map(|d| d.join("cert.pem")),
    };
    Config {
        tls: Some(files),
        ..common::config()
    }
}

fn trusting(dir: &Path) -> ClientTlsOptions {
    ClientTlsOptions {
        ca: Some(dir.join("cert.pem")),
        ..Default::default()
    }
}

#[tokio::test]
async fn tls_serves_verified_viewers_and_refuses_the_rest() {
    let (srv, other) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    cert(srv.path(), CertKind::Server, &["localhost", "127.0.0.1"]);
    cert(other.path(), CertKind::Server, &["localhost", "127.0.0.1"]);
    let server = server(tls_settings(srv.path(), None)).await;

    // Trusting the camera's own certificate: frames on both contracts.
    let ok = ClientOptions {
        tls: Some(trusting(srv.path())),
        ..Default::default()
    };
    watch_frames(dial(&server, &ok).await.unwrap(), false, 3)
        .await
        .unwrap();
    watch_frames(dial(&server, &ok).await.unwrap(), true, 3)
        .await
        .unwrap();

    // Plain text to a TLS port gets nothing.
    let plain = dial(&server, &ClientOptions::default()).await;
    let plain_failed = match plain {
        Err(_) => true,
        Ok(conn) => watch_frames(conn, false, 1).await.is_err(),
    };
    assert!(plain_failed, "a plaintext viewer must not get frames");

    // A certificate from elsewhere is rejected, and the error says why.
    let wrong = ClientOptions {
        tls: Some(trusting(other.path())),
        ..Default::default()
    };
    let e = dial(&server, &wrong)
        .await
        .expect_err("untrusted certificate");
    assert!(chain(&e).contains("certificate"), "{}", chain(&e));

    // The name checked is the one dialled, unless overridden.
    let misnamed = ClientOptions {
        tls: Some(ClientTlsOptions {
            server_name: Some("camera.example".into()),
            ..trusting(srv.path())
        }),
        ..Default::default()
    };
    let e = dial(&server, &misnamed)
        .await
        .expect_err("name not in cert");
    assert!(chain(&e).contains("certificate"), "{}", chain(&e));

    // --insecure-skip-verify: encrypted, unauthenticated, works.
    let skip = ClientOptions {
        tls: Some(ClientTlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    watch_frames(dial(&server, &skip).await.unwrap(), false, 2)
        .await
        .unwrap();
    server.stop().await.unwrap();
}

#[tokio::test]
async fn mutual_tls_requires_a_known_viewer_certificate() {
    let (srv, viewer, stranger) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    cert(srv.path(), CertKind::Server, &["127.0.0.1"]);
    cert(viewer.path(), CertKind::Client, &["kitchen-tablet"]);
    cert(stranger.path(), CertKind::Client, &["stranger"]);
    let server = server(tls_settings(srv.path(), Some(viewer.path()))).await;

    let with_identity = |dir: &Path| ClientOptions {
        tls: Some(ClientTlsOptions {
            identity: Some((dir.join("cert.pem"), dir.join("key.pem"))),
            ..trusting(srv.path())
        }),
        ..Default::default()
    };
    watch_frames(
        dial(&server, &with_identity(viewer.path())).await.unwrap(),
        false,
        2,
    )
    .await
    .unwrap();

    for (who, opts) in [
        (
            "no client certificate",
            ClientOptions {
                tls: Some(trusting(srv.path())),
                ..Default::default()
            },
        ),
        ("an unknown certificate", with_identity(stranger.path())),
    ] {
        let refused = match dial(&server, &opts).await {
            Err(_) => true,
            Ok(conn) => watch_frames(conn, false, 1).await.is_err(),
        };
        assert!(refused, "{who} must not get frames");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tokens_gate_every_api_but_health() {
    let config = common::config();
    let protection = Protection {
        tokens: Some(Tokens::parse(TOKEN, "test").unwrap()),
        ..Protection::load(&config).unwrap()
    };
    let server = TestServer::launch_with(config, protection, common::pattern(320, 240, 30.0)).await;
    let opts = |token: Option<&str>| ClientOptions {
        tls: None,
        token: token.map(str::to_string),
        // This camera takes tokens without TLS; the viewer must opt in to sending them.
        insecure_send_token: true,
    };

    for token in [None, Some("viewer-token-0123456789abcdeX")] {
        for tutorial_api in [false, true] {
            let conn = dial(&server, &opts(token)).await.unwrap();
            let e = watch_frames(conn, tutorial_api, 1).await.unwrap_err();
            assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
            assert!(!e.message().contains("0123456789"), "{}", e.message());
        }
        let conn = dial(&server, &opts(token)).await.unwrap();
        let e = client::camera_client(conn)
            .get_info(pb::v1::GetInfoRequest::default())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }

    let good = dial(&server, &opts(Some(TOKEN))).await.unwrap();
    watch_frames(good.clone(), false, 2).await.unwrap();
    watch_frames(good.clone(), true, 2).await.unwrap();
    client::camera_client(good)
        .get_info(pb::v1::GetInfoRequest::default())
        .await
        .unwrap();

    // Monitoring needs no secret.
    let health = tonic_health::pb::health_client::HealthClient::new(
        dial(&server, &opts(None)).await.unwrap(),
    )
    .check(tonic_health::pb::HealthCheckRequest {
        service: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(health.into_inner().status, 1, "SERVING");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn tutorial_api_can_be_switched_off() {
    let config = Config {
        tutorial_api: false,
        ..common::config()
    };
    let server = server(config).await;
    let e = watch_frames(server.channel().await, true, 1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    watch_frames(server.channel().await, false, 1)
        .await
        .unwrap();
    server.stop().await.unwrap();
}

fn limited(limits: ConnLimits) -> Config {
    Config {
        conn: limits,
        ..common::config()
    }
}

/// Opens a v1 stream on `conn` and reads one frame.
async fn one_frame(conn: Conn) -> Result<FrameStream, tonic::Status> {
    let mut s = FrameStream::open(conn, false, "limit-test", 0.0).await?;
    s.next().await?.expect("a frame");
    Ok(s)
}

/// True if a connection from this host gets a frame now.
async fn admitted(server: &TestServer) -> bool {
    match client::connect(&server.target(), WAIT).await {
        Ok(conn) => tokio::time::timeout(WAIT, one_frame(conn))
            .await
            .is_ok_and(|r| r.is_ok()),
        Err(_) => false,
    }
}

#[tokio::test]
async fn connections_per_address_are_capped_and_slots_come_back() {
    let config = limited(ConnLimits {
        per_address: 2,
        ..ConnLimits::default()
    });
    let server = server(config).await;
    let a = one_frame(server.channel().await).await.unwrap();
    let _b = one_frame(server.channel().await).await.unwrap();
    assert!(!admitted(&server).await, "a third connection is refused");
    drop(a);
    eventually("a freed slot admits a new connection", || admitted(&server)).await;
    drop(_b);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let config = limited(ConnLimits {
        // Room for the real viewer below to send its request on a slow (emulated) CPU.
        handshake_timeout: Duration::from_secs(1),
        ..ConnLimits::default()
    });
    let server = server(config).await;
    let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The server speaks first (its HTTP/2 settings), then hangs up on the silent client.
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), raw.read_to_end(&mut seen))
        .await
        .expect("server closed the silent connection")
        .ok();
    assert!(
        seen.len() < 100,
        "only the server's preface: {} bytes",
        seen.len()
    );
    // A real viewer is unaffected: its first request comes at once.
    watch_frames(server.channel().await, false, 2)
        .await
        .unwrap();
    drop(raw);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn idle_connections_are_closed_but_watching_ones_are_not() {
    let config = limited(ConnLimits {
        per_address: 1,
        idle_timeout: Duration::from_millis(500),
        ..ConnLimits::default()
    });
    let server = server(config).await;

    // A watching viewer outlives several idle periods.
    let mut watching = one_frame(server.channel().await).await.unwrap();
    for _ in 0..40 {
        watching.next().await.unwrap().expect("still streaming");
    }
    assert!(!admitted(&server).await, "the watcher still holds the slot");
    drop(watching);

    // A connection that made one call and went quiet is closed, freeing the slot. The
    // watcher's slot comes back once the server has seen its connection close, which a new
    // connection can beat: try until one is admitted.
    let idle = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(conn) = client::connect(&server.target(), WAIT).await {
                let info = client::camera_client(conn.clone())
                    .get_info(pb::v1::GetInfoRequest::default())
                    .await;
                if info.is_ok() {
                    return conn;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the watcher's slot came back");
    eventually("the idle connection is closed", || admitted(&server)).await;
    drop(idle);
    server.stop().await.unwrap();
}

/// A connection's streams are capped at `max_streams_per_connection`, raised to the viewer cap
/// + 16 when lower (so viewers beyond the cap hear the hub's refusal instead of waiting here):
/// with a cap of 1 viewer, 17 streams.
#[tokio::test]
async fn streams_per_connection_are_capped() {
    let mut config = Config {
        max_streams_per_connection: 2,
        ..common::config()
    };
    config.hub.max_viewers = 1;
    let server = server(config).await;
    let conn = server.channel().await;
    let mut first = one_frame(conn.clone()).await.unwrap();
    // 16 more streams that stay open: health watches.
    let watch = |conn: Conn| async move {
        let mut health = tonic_health::pb::health_client::HealthClient::new(conn);
        let req = tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        };
        let mut stream = health.watch(req).await?.into_inner();
        stream.message().await?;
        Ok::<_, tonic::Status>(stream)
    };
    let mut open = Vec::new();
    for _ in 0..16 {
        let opened = tokio::time::timeout(WAIT, watch(conn.clone())).await;
        open.push(opened.expect("a stream within the cap opens").unwrap());
    }
    let third = tokio::spawn(watch(conn.clone()));
    // The 18th call waits for a free stream rather than being served beside the others.
    for _ in 0..15 {
        first.next().await.unwrap().expect("first keeps streaming");
    }
    assert!(!third.is_finished(), "the 18th stream must wait for a slot");
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("the 18th stream starts once a slot frees")
        .unwrap()
        .unwrap();
    drop((open, conn));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn header_and_request_sizes_are_capped() {
    let config = Config {
        max_header_list_bytes: 2048,
        max_request_bytes: 256,
        max_name_len: 1000,
        ..common::config()
    };
    let server = server(config).await;
    let info = |pad: usize| {
        let mut req = tonic::Request::new(pb::v1::GetInfoRequest::default());
        req.metadata_mut()
            .insert("x-pad", "p".repeat(pad).parse().unwrap());
        req
    };
    let mut c = client::camera_client(server.channel().await);
    c.get_info(info(100)).await.expect("small headers pass");
    let e = c.get_info(info(8000)).await.expect_err("8 KB of headers");
    assert_ne!(e.code(), Code::Ok);

    let req = |len: usize| pb::v1::StreamRequest {
        viewer_name: "n".repeat(len),
        max_fps: 0.0,
        ..Default::default()
    };
    let mut c = client::camera_client(server.channel().await);
    c.stream_frames(req(100))
        .await
        .expect("a 100-byte name fits");
    let e = c
        .stream_frames(req(500))
        .await
        .expect_err("request over 256 B");
    assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
    server.stop().await.unwrap();
}

/// A TCP relay the test can freeze: the viewer's host "vanishes" without closing anything.
/// Aborting the returned task closes its sockets.
async fn freezable_proxy(
    target: std::net::SocketAddr,
) -> (
    String,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let freeze = tokio_util::sync::CancellationToken::new();
    let f = freeze.clone();
    let relay = tokio::spawn(async move {
        let (mut down, _) = listener.accept().await.unwrap();
        let mut up = tokio::net::TcpStream::connect(target).await.unwrap();
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
            _ = f.cancelled() => {
                // Keep both sockets open and unread: no FIN, no RST, no ping replies.
                std::future::pending::<()>().await;
            }
        }
    });
    (addr, freeze, relay)
}

#[tokio::test]
async fn a_vanished_viewer_is_dropped_by_keepalive() {
    let config = Config {
        // Long enough for a live client on an emulated CPU to answer in time.
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(2),
        ..common::config()
    };
    let server = server(config).await;
    let (via, freeze, relay) = freezable_proxy(server.addr).await;
    let conn = client::connect(&via, WAIT).await.unwrap();
    let stream = one_frame(conn).await.unwrap();
    assert_eq!(server.hub.viewer_count(), 1);
    freeze.cancel();
    eventually("the server drops the vanished viewer", || async {
        server.hub.viewer_count() == 0
    })
    .await;
    // The vanished host comes back only to close its sockets.
    relay.abort();
    let _ = relay.await;
    drop(stream);
    server.stop().await.unwrap();
}

/// A viewer that stopped reading cannot take its final status; shutdown waits
/// `drain_timeout` for it and then finishes, rather than hanging until the process watchdog.
#[tokio::test]
async fn shutdown_is_not_held_up_by_a_viewer_that_stopped_reading() {
    let config = Config {
        drain_timeout: Duration::from_millis(500),
        ..common::config()
    };
    let server = TestServer::launch(config, common::pattern(1280, 720, 30.0)).await;
    let stalled = server.small_window_channel().await;
    let mut stream = FrameStream::open(stalled, false, "stalled", 0.0)
        .await
        .unwrap();
    stream.next().await.unwrap().expect("first frame");
    // Stop reading: the server fills the window and then can send nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = server.stop_with_viewers().await;
    drop(stream);
    stopped.check().await.expect("shutdown finished");
}

/// The library refuses too, for every client built on it: a token without verified TLS is an
/// error before any connection is made.
#[tokio::test]
async fn connect_with_never_sends_a_token_without_verified_tls() {
    let rogue = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = rogue.local_addr().unwrap().to_string();
    let skip_verify = ClientTlsOptions {
        insecure_skip_verify: true,
        ..Default::default()
    };
    for tls in [None, Some(skip_verify)] {
        let opts = ClientOptions {
            tls,
            token: Some(TOKEN.into()),
            ..Default::default()
        };
        let Err(e) = client::connect_with(&target, &opts, WAIT).await else {
            panic!("connected with a token and no verified TLS");
        };
        assert!(
            matches!(e, client::ConnectError::TokenNeedsVerifiedTls { .. }),
            "{e}"
        );
        assert!(!e.to_string().contains(TOKEN), "{e}");
    }
    let mine = tokio::net::TcpStream::connect(&target).await.unwrap();
    let (_, peer) = rogue.accept().await.unwrap();
    assert_eq!(peer, mine.local_addr().unwrap(), "the client connected");
}
