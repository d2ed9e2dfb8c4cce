//! The HTTP endpoints on loopback, beside gRPC on the same hub: MJPEG parts, snapshot, health,
//! the page, the shared viewer limit, a stalled reader, bad input, slowloris, shutdown.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use camcast::client::{self, FrameStream};
use camcast::config::Config;
use camcast::hub::HubConfig;
use camcast::pb;
use camcast::source::fake::FakeSource;
use camcast::source::FrameSource;
use common::{decode, eventually, TestServer};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tonic::Code;

/// gRPC and HTTP on one hub, as `camcast --http-listen` runs them.
async fn with_http(source: Box<dyn FrameSource>, hub: HubConfig) -> TestServer {
    TestServer::launch(
        Config {
            hub,
            ..common::config_with_http()
        },
        source,
    )
    .await
}

/// [`with_http`] with the test pattern and default limits.
async fn pattern_with_http(width: u32, height: u32, fps: f64) -> TestServer {
    with_http(common::pattern(width, height, fps), HubConfig::default()).await
}

/// One request on a fresh connection; the connection lives until `conn` is dropped.
struct Exchange {
    response: Response<Incoming>,
    conn: JoinHandle<()>,
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

async fn send(addr: SocketAddr, path: &str) -> Exchange {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::get(path)
        .header(header::HOST, "camcast.test")
        .header(header::USER_AGENT, "http-api-test/1.0")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    Exchange { response, conn }
}

/// GET `path` and read the whole body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    let mut ex = send(addr, path).await;
    let status = ex.response.status();
    let headers = ex.response.headers().clone();
    let body = ex.response.body_mut().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

fn text(body: &Bytes) -> &str {
    std::str::from_utf8(body).unwrap()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
        .to_str()
        .unwrap()
}

/// A `multipart/x-mixed-replace` body, parsed independently of the server's code.
struct Mjpeg {
    ex: Exchange,
    boundary: String,
    buf: BytesMut,
}

struct Part {
    jpeg: Bytes,
    seq: u64,
}

impl Mjpeg {
    async fn open(addr: SocketAddr, path: &str) -> Mjpeg {
        let ex = send(addr, path).await;
        assert_eq!(ex.response.status(), StatusCode::OK);
        let content_type = header_str(ex.response.headers(), "content-type");
        let boundary = content_type
            .strip_prefix("multipart/x-mixed-replace; boundary=")
            .unwrap_or_else(|| panic!("not an MJPEG stream: {content_type}"))
            .to_owned();
        Mjpeg {
            ex,
            boundary,
            buf: BytesMut::new(),
        }
    }

    /// Reads until `n` bytes are buffered; false if the body ended cleanly first.
    async fn fill(&mut self, n: usize) -> bool {
        while self.buf.len() < n {
            match self.ex.response.body_mut().frame().await {
                Some(frame) => {
                    let frame = frame.expect("body ends cleanly, not with an error");
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                None => return false,
            }
        }
        true
    }

    /// The next part; `None` when the stream ended cleanly between parts. Empty lines before
    /// a part's boundary (the server's pacing probes) are skipped, as multipart readers do.
    async fn next(&mut self) -> Option<Part> {
        let head_end = loop {
            while self.buf.starts_with(b"\r\n") {
                let _ = self.buf.split_to(2);
            }
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if !self.fill(self.buf.len() + 1).await {
                assert!(self.buf.is_empty(), "stream ended inside a part header");
                return None;
            }
        };
        let head = String::from_utf8(self.buf.split_to(head_end + 4).to_vec()).unwrap();
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some(format!("--{}", self.boundary).as_str()));
        let field = |name: &str| {
            head.lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                })
                .unwrap_or_else(|| panic!("part without {name}: {head:?}"))
        };
        assert_eq!(field("Content-Type"), "image/jpeg");
        let len: usize = field("Content-Length").parse().unwrap();
        let seq: u64 = field("X-Sequence").parse().unwrap();
        assert!(self.fill(len + 2).await, "stream ended inside a JPEG");
        let jpeg = self.buf.split_to(len).freeze();
        assert_eq!(&self.buf.split_to(2)[..], b"\r\n", "part ends with CRLF");
        Some(Part { jpeg, seq })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn stream_parts_are_jpegs_of_the_right_size_in_sequence() {
    let server = pattern_with_http(320, 240, 30.0).await;
    let mut stream = Mjpeg::open(server.http_addr(), "/stream.mjpg").await;
    assert_eq!(
        header_str(stream.ex.response.headers(), "cache-control"),
        "no-store"
    );
    let mut last_seq = 0;
    for _ in 0..10 {
        let part = stream.next().await.expect("a part");
        assert!(part.seq > last_seq, "{} after {last_seq}", part.seq);
        last_seq = part.seq;
        assert_eq!(decode(&part.jpeg), (320, 240));
    }
    drop(stream);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn snapshot_is_one_current_uncached_jpeg() {
    let server = pattern_with_http(320, 240, 30.0).await;
    let (status, headers, body) = get(server.http_addr(), "/snapshot.jpg").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_str(&headers, "content-type"), "image/jpeg");
    assert_eq!(header_str(&headers, "cache-control"), "no-store");
    assert_eq!(decode(&body), (320, 240));
    let counters = server.hub.report().counters;
    assert_eq!(counters.viewers_total, 1, "the snapshot was a brief viewer");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn page_and_info_describe_the_camera() {
    let server = pattern_with_http(320, 240, 30.0).await;
    let (status, headers, body) = get(server.http_addr(), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header_str(&headers, "content-type"),
        "text/html; charset=utf-8"
    );
    let page = text(&body);
    assert!(page.contains(r#"name="viewport""#), "phone-friendly page");
    assert!(page.contains("stream.mjpg") && page.contains("info.json"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external assets"
    );

    let mut stream = Mjpeg::open(server.http_addr(), "/stream.mjpg").await;
    stream.next().await.unwrap();
    let (status, headers, body) = get(server.http_addr(), "/info.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header_str(&headers, "content-type"), "application/json");
    let info: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(info["source"], "test-pattern");
    assert_eq!(
        (info["width"].as_u64(), info["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(info["state"], "streaming");
    assert_eq!(info["serving"], true);
    assert_eq!(info["viewers"], 1);
    assert!(!info["name"].as_str().unwrap().is_empty());

    let (status, _, body) = get(server.http_addr(), "/nonexistent").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(text(&body).contains("/stream.mjpg"), "{}", text(&body));
    drop(stream);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn healthz_is_503_while_the_camera_is_missing_and_200_once_back() {
    let (source, camera) = FakeSource::new(160, 120, Duration::from_millis(10));
    camera.fail_next_starts(u64::MAX);
    let cfg = HubConfig {
        always_on: true,
        retry_min: Duration::from_millis(10),
        retry_max: Duration::from_millis(50),
        ..HubConfig::default()
    };
    let server = with_http(Box::new(source), cfg).await;
    let addr = server.http_addr();
    eventually("healthz says 503 waiting for camera", || async move {
        let (status, _, body) = get(addr, "/healthz").await;
        if status != StatusCode::SERVICE_UNAVAILABLE {
            return false;
        }
        let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(health["status"], "unavailable");
        assert_eq!(health["state"], "waiting for camera");
        assert!(
            health["detail"].as_str().unwrap().contains("unplugged"),
            "{health}"
        );
        true
    })
    .await;

    camera.fail_next_starts(0);
    eventually("healthz says 200 once the camera is back", || async move {
        let (status, _, body) = get(addr, "/healthz").await;
        let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
        status == StatusCode::OK && health["status"] == "ok"
    })
    .await;
    server.stop().await.unwrap();
}

/// HTTP viewers and gRPC viewers share one limit, and each side is told clearly.
#[tokio::test]
async fn viewer_limit_is_shared_with_grpc() {
    let cfg = HubConfig {
        max_viewers: 2,
        ..HubConfig::default()
    };
    let server = with_http(common::pattern(160, 120, 30.0), cfg).await;
    let mut grpc = FrameStream::open(server.channel().await, false, "grpc", 0.0)
        .await
        .unwrap();
    grpc.next().await.unwrap().unwrap();
    let mut http = Mjpeg::open(server.http_addr(), "/stream.mjpg?name=http").await;
    http.next().await.unwrap();

    for path in ["/stream.mjpg", "/snapshot.jpg"] {
        let (status, headers, body) = get(server.http_addr(), path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(header_str(&headers, "retry-after"), "2");
        assert!(text(&body).contains("viewer limit"), "{}", text(&body));
    }
    let err = FrameStream::open(server.channel().await, false, "third", 0.0)
        .await
        .err()
        .expect("gRPC refused too");
    assert_eq!(err.code(), Code::ResourceExhausted);

    drop(http);
    let hub = server.hub.clone();
    eventually("the HTTP viewer's slot is freed", || {
        let hub = hub.clone();
        async move { hub.viewer_count() == 1 }
    })
    .await;
    let mut late = FrameStream::open(server.channel().await, true, "late", 0.0)
        .await
        .unwrap();
    late.next().await.unwrap().unwrap();
    assert_eq!(server.hub.report().counters.viewers_rejected, 3);
    drop((grpc, late));
    server.stop().await.unwrap();
}

/// One host's viewers on both transports count against one per-address cap; past it, each
/// side is refused at once, naming the limit and the host.
#[tokio::test]
async fn per_address_viewer_cap_spans_grpc_and_http() {
    let cfg = HubConfig {
        max_viewers_per_address: 2,
        ..HubConfig::default()
    };
    let server = with_http(common::pattern(160, 120, 30.0), cfg).await;
    let mut grpc = FrameStream::open(server.channel().await, false, "grpc", 0.0)
        .await
        .unwrap();
    grpc.next().await.unwrap().unwrap();
    let mut http = Mjpeg::open(server.http_addr(), "/stream.mjpg?name=http").await;
    http.next().await.unwrap();

    let said = "viewer limit per address reached (2 viewers from 127.0.0.1)";
    for path in ["/stream.mjpg", "/snapshot.jpg"] {
        let (status, headers, body) = get(server.http_addr(), path).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(header_str(&headers, "retry-after"), "2");
        assert!(text(&body).contains(said), "{}", text(&body));
    }
    let err = FrameStream::open(server.channel().await, false, "third", 0.0)
        .await
        .err()
        .expect("gRPC refused too");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains(said), "{}", err.message());

    drop(http);
    let hub = server.hub.clone();
    eventually("the HTTP viewer's slot is freed", || {
        let hub = hub.clone();
        async move { hub.viewer_count() == 1 }
    })
    .await;
    let mut late = Mjpeg::open(server.http_addr(), "/stream.mjpg?name=late").await;
    late.next().await.unwrap();
    assert_eq!(server.hub.report().counters.viewers_rejected, 3);
    drop((late, grpc));
    server.stop().await.unwrap();
}

/// HTTP viewers show in GetInfo, and HTTP and gRPC viewers get the very same frames.
#[tokio::test]
async fn http_viewers_share_the_hubs_frames_and_show_in_get_info() {
    let server = pattern_with_http(320, 240, 30.0).await;
    let mut http = Mjpeg::open(server.http_addr(), "/stream.mjpg?name=kitchen&fps=5").await;
    let mut grpc = FrameStream::open(server.channel().await, false, "grpc", 0.0)
        .await
        .unwrap();
    let part = http.next().await.unwrap();
    let same = loop {
        let frame = grpc.next().await.unwrap().unwrap();
        if frame.seq.expect("v1 frames carry seq") >= part.seq {
            break frame;
        }
    };
    if same.seq == Some(part.seq) {
        assert_eq!(
            same.jpeg, part.jpeg,
            "one encode, shared by both transports"
        );
    }

    let info = client::camera_client(server.channel().await)
        .get_info(pb::v1::GetInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let viewer = info
        .viewers
        .iter()
        .find(|v| v.name == "kitchen")
        .expect("HTTP viewer listed");
    assert_eq!(viewer.api, "http");
    assert_eq!(viewer.max_fps, 5.0);
    assert!(
        viewer.address.starts_with("127.0.0.1:"),
        "{}",
        viewer.address
    );
    assert!(viewer.frames_sent >= 1);
    drop((http, grpc));
    server.stop().await.unwrap();
}

/// A viewer that stops reading must not hold back others or make the server queue frames for
/// it: the server hands it only what fits in the socket and hyper's bounded buffer, and counts
/// the rest as skipped.
#[tokio::test]
async fn stalled_reader_neither_slows_others_nor_queues_on_the_server() {
    // The stalled viewer must outlive the test: without pacing (under qemu-user) its zero
    // window would reach the vanish timeout (TCP_USER_TIMEOUT, 20 s) while an emulated camera
    // takes longer than that to deliver 90 frames. Dropping it is tested on its own.
    let config = Config {
        keepalive_timeout: Duration::from_secs(600),
        ..common::config_with_http()
    };
    let server = TestServer::launch(config, common::pattern(1280, 720, 15.0)).await;
    // A small receive buffer, like a congested phone on Wi-Fi; then it never reads again.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.http_addr()).await.unwrap();
    stalled
        .write_all(b"GET /stream.mjpg?name=stalled HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 1024];
    let n = stalled.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &first[..n]);

    let mut fast = Mjpeg::open(server.http_addr(), "/stream.mjpg?name=fast").await;
    let (mut received, mut skipped, mut last) = (0u64, 0u64, None);
    while received < 90 {
        let part = fast.next().await.unwrap();
        if let Some(last) = last {
            skipped += part.seq - last - 1;
        }
        last = Some(part.seq);
        received += 1;
    }
    assert!(
        skipped * 10 <= received,
        "fast viewer kept the camera's rate: {skipped} skipped of {}",
        received + skipped
    );

    let report = server.hub.report();
    let slow = report
        .viewers
        .iter()
        .find(|v| v.info.name == "stalled")
        .expect("stalled viewer still connected");
    println!(
        "stalled viewer: {} frames sent, {} skipped",
        slow.frames_sent, slow.frames_skipped
    );
    // Paced, it gets the frame it asked for and then only probes. Even unpaced, the kernel's
    // capped send buffer (256 KiB), its receive buffer and hyper's 64 KiB hold about 8 of these
    // ~40 KiB frames; a queue would hold all 90.
    assert!(
        slow.frames_sent <= 20,
        "server handed the stalled viewer only what its buffers hold, not a queue: {} sent",
        slow.frames_sent
    );
    assert!(
        slow.frames_skipped >= 50,
        "missed frames are counted: {slow:?}"
    );
    drop(stalled);
    drop(fast);
    server.stop().await.unwrap();
}

/// The words of the one frame-rate check shared by gRPC and HTTP.
const RATE_RULE: &str = "max_fps must be 0 (the camera's rate) or from 0.01 to 1000";

#[tokio::test]
async fn bad_queries_get_400_with_a_clear_message_and_harm_nothing() {
    let server = pattern_with_http(160, 120, 30.0).await;
    let long_name = "n".repeat(65);
    for (path, expected) in [
        ("/stream.mjpg?fps=abc", "fps"),
        ("/stream.mjpg?fps=-1", RATE_RULE),
        ("/stream.mjpg?fps=NaN", RATE_RULE),
        // Once a panic after registration that leaked a viewer slot per request (issue 12).
        ("/stream.mjpg?fps=1e-30", RATE_RULE),
        ("/stream.mjpg?fps=1e-45", RATE_RULE),
        // Rounds to 0 (no cap) as an f32: checked before narrowing (found by .ci/hostile-client).
        ("/stream.mjpg?fps=1e-320", RATE_RULE),
        ("/stream.mjpg?fps=1000.0001", RATE_RULE),
        ("/stream.mjpg?fps=0.009", RATE_RULE),
        ("/stream.mjpg?fps=1e30", RATE_RULE),
        (&format!("/stream.mjpg?name={long_name}"), "at most 64"),
        (&format!("/snapshot.jpg?name={long_name}"), "at most 64"),
    ] {
        let (status, _, body) = get(server.http_addr(), path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
        assert!(text(&body).contains(expected), "{path}: {}", text(&body));
    }
    let (status, _, _) = send_method(server.http_addr(), "POST", "/stream.mjpg").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(server.hub.report().counters.viewers_total, 0);
    assert_eq!(server.hub.viewer_count(), 0, "no slot leaked");

    // A cache-buster is ignored, and a proper viewer is served.
    let mut ok = Mjpeg::open(server.http_addr(), "/stream.mjpg?fps=0&t=123").await;
    assert_eq!(decode(&ok.next().await.unwrap().jpeg), (160, 120));
    drop(ok);
    server.stop().await.unwrap();
}

async fn send_method(addr: SocketAddr, method: &str, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "camcast.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, body)
}

/// Slowloris: a client that never finishes its headers is disconnected; huge headers get 431.
#[tokio::test]
async fn slow_or_huge_request_headers_are_cut_off() {
    // HTTP's header timeout is the handshake timeout of every port.
    let mut config = common::config_with_http();
    // Long enough for the huge request and the final check to be sent on a slow CPU.
    config.conn.handshake_timeout = Duration::from_secs(2);
    let server = TestServer::launch(config, common::pattern(160, 120, 30.0)).await;
    let mut slow = TcpStream::connect(server.http_addr()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "server closed the half-sent request");

    let mut huge = TcpStream::connect(server.http_addr()).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX-Padding: {}\r\n\r\n",
        "x".repeat(100_000)
    );
    // The server may answer and close before reading it all; a write error is fine then.
    let _ = huge.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = huge.read_to_end(&mut answer).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );

    let (status, _, _) = get(server.http_addr(), "/healthz").await;
    assert_eq!(status, StatusCode::OK, "still serving");
    drop((slow, huge));
    server.stop().await.unwrap();
}

/// A viewer that stopped reading cannot keep the server from finishing its shutdown.
#[tokio::test]
async fn shutdown_finishes_despite_a_stalled_reader() {
    let config = Config {
        drain_timeout: Duration::from_millis(200),
        ..common::config_with_http()
    };
    let server = TestServer::launch(config, common::pattern(1280, 720, 30.0)).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.http_addr()).await.unwrap();
    stalled
        .write_all(b"GET /stream.mjpg?name=stalled HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let hub = server.hub.clone();
    // A second of frames missed: every buffer between the hub and the reader is full.
    eventually("the stalled reader is a second behind", || {
        let hub = hub.clone();
        async move { hub.report().viewers.iter().any(|v| v.frames_skipped >= 30) }
    })
    .await;
    let stopped = server.stop_with_viewers().await;
    drop(stalled);
    stopped.check().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_mjpeg_streams_cleanly() {
    let server = pattern_with_http(160, 120, 30.0).await;
    let mut stream = Mjpeg::open(server.http_addr(), "/stream.mjpg").await;
    stream.next().await.unwrap();
    let stopping = tokio::spawn(server.stop_with_viewers());
    // Drain what was in flight; the body must then end with its terminator, not an error.
    while stream.next().await.is_some() {}
    drop(stream);
    stopping.await.unwrap().check().await.unwrap();
}
