//! Fuzzes the running server, not a validator: each input is a sequence of requests sent to
//! one in-process camcast (`camcast::server::Server` on loopback, two test-pattern cameras,
//! "default" and "door", HTTP on):
//! HTTP requests built from fuzzed methods, paths, queries and headers, raw bytes on the HTTP
//! port, and gRPC calls of every method with fuzzed message bytes, each read for a while and
//! then dropped or reset. After every input, every camera's viewer slots must come back; a
//! panic in any server task aborts the process (libFuzzer's panic hook), which is the crash
//! libFuzzer reports.
#![no_main]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use camcast::cameras::Cameras;
use camcast::config::{CameraConfig, Config};
use camcast::led::LedSpec;
use camcast::protection::Protection;
use camcast::server::{Listeners, Server};
use camcast::source::pattern::TestPattern;
use camcast::source::{CaptureSettings, Selected};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

/// How long one request is read before it is dropped: long enough for a frame or an answer.
const READ_FOR: Duration = Duration::from_millis(40);
/// Viewer slots must be back within this after the input's connections close (a hang guard:
/// the server notices a closed viewer at its next write, a frame or a probe away).
const SLOTS_BACK_WITHIN: Duration = Duration::from_secs(10);

#[derive(Arbitrary, Debug)]
enum Op {
    /// A request built from parts the server reads, on a new connection.
    Http {
        method: Method,
        path: Path,
        query: Vec<(QueryKey, String)>,
        headers: Vec<(HeaderName, Vec<u8>)>,
        /// Reset (RST) instead of a clean close when done.
        reset: bool,
    },
    /// Arbitrary bytes on a new HTTP connection.
    RawHttp(Vec<u8>),
    /// A gRPC call on this input's HTTP/2 connection.
    Grpc {
        method: GrpcMethod,
        message: Vec<u8>,
        /// Claim a different length in the 5-byte frame header than the message has.
        lie_about_length: Option<u32>,
        authorization: Option<String>,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Method {
    Get,
    Head,
    Post,
    Options,
}

#[derive(Arbitrary, Debug)]
enum Path {
    Page,
    Stream,
    Snapshot,
    Info,
    Health,
    Metrics,
    /// `/cam/{camera}/{rest}`: a named camera's routes, "door" or any name.
    Camera {
        camera: CameraPick,
        rest: String,
    },
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum CameraPick {
    Door,
    Default,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum QueryKey {
    Fps,
    Name,
    Token,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum HeaderName {
    Authorization,
    UserAgent,
    Range,
    Expect,
    ContentLength,
    TransferEncoding,
    Other(String),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum GrpcMethod {
    Tutorial,
    StreamFrames,
    PullFrames,
    Snapshot,
    GetInfo,
    Health,
    Unknown,
}

struct Harness {
    rt: tokio::runtime::Runtime,
    grpc: SocketAddr,
    http: SocketAddr,
    cameras: Cameras,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        // The camcast binary ignores SIGPIPE (Rust's runtime does so before main), so a write
        // to a connection its peer reset fails with EPIPE. A libFuzzer target has no Rust main:
        // without this, the server's writev to a connection an input reset kills the process.
        // SAFETY: setting a signal's disposition to SIG_IGN installs no handler code.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (grpc, http, cameras) = rt.block_on(async {
            let config = Config {
                cameras: ["default", "door"]
                    .iter()
                    .map(|n| CameraConfig::named(n.parse().unwrap()))
                    .collect(),
                listen: "127.0.0.1:0".parse().unwrap(),
                http: Some("127.0.0.1:0".parse().unwrap()),
                led: LedSpec::None,
                mdns: false,
                ..Config::default()
            };
            let protection = Protection::load(&config).unwrap();
            let listeners = Listeners::bind(&config).await.unwrap();
            let addrs = listeners.local_addrs().unwrap();
            let pattern = || Selected {
                source: Box::new(TestPattern::new(CaptureSettings {
                    width: 160,
                    height: 120,
                    fps: 30.0,
                    quality: 80,
                })),
                reason: "fuzzing".into(),
            };
            let server = Server::new(config, protection, vec![pattern(), pattern()]);
            let cameras = server.cameras().clone();
            tokio::spawn(server.run(listeners, CancellationToken::new()));
            (addrs.grpc, addrs.http.unwrap(), cameras)
        });
        Harness {
            rt,
            grpc,
            http,
            cameras,
        }
    })
}

fuzz_target!(|ops: Vec<Op>| {
    let h = harness();
    h.rt.block_on(async {
        let mut grpc = None;
        for op in ops.iter().take(16) {
            match op {
                Op::Http {
                    method,
                    path,
                    query,
                    headers,
                    reset,
                } => {
                    let request = http_request(*method, path, query, headers);
                    exchange(h.http, &request, *reset).await;
                }
                Op::RawHttp(bytes) => exchange(h.http, bytes, false).await,
                Op::Grpc {
                    method,
                    message,
                    lie_about_length,
                    authorization,
                } => {
                    if grpc.is_none() {
                        grpc = h2_connect(h.grpc).await;
                    }
                    if let Some(sender) = grpc.as_mut() {
                        let body = grpc_body(message, *lie_about_length);
                        grpc_call(sender, *method, body, authorization.as_deref()).await;
                    }
                }
            }
        }
        drop(grpc);
        slots_come_back(&h.cameras).await;
    });
});

fn http_request(
    method: Method,
    path: &Path,
    query: &[(QueryKey, String)],
    headers: &[(HeaderName, Vec<u8>)],
) -> Vec<u8> {
    let method = match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Options => "OPTIONS",
    };
    let path = match path {
        Path::Page => "/".to_string(),
        Path::Stream => "/stream.mjpg".to_string(),
        Path::Snapshot => "/snapshot.jpg".to_string(),
        Path::Info => "/info.json".to_string(),
        Path::Health => "/healthz".to_string(),
        Path::Metrics => "/metrics".to_string(),
        Path::Camera { camera, rest } => {
            let camera = match camera {
                CameraPick::Door => "door",
                CameraPick::Default => "default",
                CameraPick::Other(name) => name.as_str(),
            };
            format!("/cam/{camera}/{rest}")
        }
        Path::Other(p) => p.clone(),
    };
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| {
            let k = match k {
                QueryKey::Fps => "fps",
                QueryKey::Name => "name",
                QueryKey::Token => "token",
                QueryKey::Other(k) => k.as_str(),
            };
            format!("{k}={v}")
        })
        .collect();
    let mut out = format!(
        "{method} {path}?{} HTTP/1.1\r\nHost: camcast\r\n",
        query.join("&")
    )
    .into_bytes();
    for (name, value) in headers.iter().take(32) {
        let name = match name {
            HeaderName::Authorization => "Authorization",
            HeaderName::UserAgent => "User-Agent",
            HeaderName::Range => "Range",
            HeaderName::Expect => "Expect",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::TransferEncoding => "Transfer-Encoding",
            HeaderName::Other(n) => n.as_str(),
        };
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Sends `bytes` on a new connection, reads for a moment, then closes or resets it.
async fn exchange(addr: SocketAddr, bytes: &[u8], reset: bool) {
    let Ok(mut conn) = TcpStream::connect(addr).await else {
        return;
    };
    if conn.write_all(bytes).await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let _ = timeout(READ_FOR, async {
        while let Ok(n) = conn.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    if reset {
        let _ = conn.set_zero_linger();
    }
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn h2_connect(addr: SocketAddr) -> Option<Sender> {
    let tcp = TcpStream::connect(addr).await.ok()?;
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// A gRPC request body: the 5-byte frame header (its length possibly a lie), then the message.
fn grpc_body(message: &[u8], claimed: Option<u32>) -> Bytes {
    let mut body = BytesMut::with_capacity(5 + message.len());
    body.put_u8(0);
    body.put_u32(claimed.unwrap_or(message.len() as u32));
    body.put_slice(message);
    body.freeze()
}

async fn grpc_call(sender: &mut Sender, method: GrpcMethod, body: Bytes, auth: Option<&str>) {
    let path = match method {
        GrpcMethod::Tutorial => "/WebcamStreaming/StartWebcamStreaming",
        GrpcMethod::StreamFrames => "/camcast.v1.Camera/StreamFrames",
        GrpcMethod::PullFrames => "/camcast.v1.Camera/PullFrames",
        GrpcMethod::Snapshot => "/camcast.v1.Camera/Snapshot",
        GrpcMethod::GetInfo => "/camcast.v1.Camera/GetInfo",
        GrpcMethod::Health => "/grpc.health.v1.Health/Check",
        GrpcMethod::Unknown => "/camcast.v1.Camera/Nope",
    };
    let mut request = http::Request::post(format!("http://camcast{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(auth) = auth {
        request = request.header("authorization", auth);
    }
    let Ok(request) = request.body(Full::new(body)) else {
        return; // a header value hyper will not send
    };
    if sender.ready().await.is_err() {
        return;
    }
    let _ = timeout(READ_FOR, async {
        let Ok(response) = sender.send_request(request).await else {
            return;
        };
        let mut body = response.into_body();
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// Every viewer slot the input took, on every camera, must come back once its connections
/// are gone.
async fn slots_come_back(cameras: &Cameras) {
    let deadline = tokio::time::Instant::now() + SLOTS_BACK_WITHIN;
    while cameras.viewer_count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} viewer slots still taken after every connection closed",
            cameras.viewer_count()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
