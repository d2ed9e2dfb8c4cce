//! `/metrics` on a real server: the series arrive in valid exposition text, move with the
//! traffic, agree with GetInfo, count refusals by reason, and a scrape during shutdown gets the
//! final values.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use camcast::admission::ConnLimits;
use camcast::admission::Refusals;
use camcast::client;
use camcast::config::Config;
use camcast::http::HttpSettings;
use camcast::hub::{Hub, HubConfig};
use camcast::metrics::{Camera, Metrics, DEFAULT_CAMERA};
use camcast::pb;
use camcast::source::fake::{FakeSource, Step};
use camcast::status::StatusCell;
use common::{eventually, TestServer};
use http_body_util::{BodyExt, Empty};
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// GET `path` on a fresh connection; the whole body.
async fn get(addr: SocketAddr, path: &str) -> (StatusCode, header::HeaderMap, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let request = Request::get(path)
        .header(header::HOST, "camcast.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut response = sender.send_request(request).await.unwrap();
    let body = response.body_mut().collect().await.unwrap().to_bytes();
    conn.abort();
    (response.status(), response.headers().clone(), body)
}

/// The exposition parsed independently of the server's code: `name{labels}` → value, with a
/// check that each family has one HELP and one TYPE line, before its samples.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = HashMap::new();
        let mut typed = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(typed.insert(name.to_owned()), "two TYPE lines for {name}");
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "sample before its TYPE: {line}");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "duplicate series {series}"
            );
        }
        Scrape(samples)
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .0
            .get(series)
            .unwrap_or_else(|| panic!("no series {series}"))
    }

    /// A per-camera series of the default camera, with more labels after `camera`.
    fn cam(&self, name: &str, more: &str) -> f64 {
        let sep = if more.is_empty() { "" } else { "," };
        self.get(&format!("{name}{{camera=\"{DEFAULT_CAMERA}\"{sep}{more}}}"))
    }
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, headers, body) = get(addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    Scrape::parse(std::str::from_utf8(&body).unwrap())
}

/// A server with `config` and HTTP on a loopback port.
async fn with_http(config: Config, source: Box<dyn camcast::source::FrameSource>) -> TestServer {
    let http = common::config_with_http().http;
    TestServer::launch(Config { http, ..config }, source).await
}

/// Reads MJPEG bytes from `/stream.mjpg` until `parts` part headers have gone by; returns the
/// connection (still open) and the bytes read.
async fn mjpeg_viewer(addr: SocketAddr, parts: usize) -> (TcpStream, usize) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = "GET /stream.mjpg?name=metrics-test HTTP/1.1\r\nHost: t\r\n\r\n";
    tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while count(&seen, b"--camcastframe\r\n") < parts + 1 {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "stream ended");
        seen.extend_from_slice(&buf[..n]);
    }
    (s, seen.len())
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| w == &needle)
        .count()
}

#[tokio::test]
async fn series_move_with_viewers_and_agree_with_get_info() {
    let config = Config {
        hub: HubConfig {
            linger: Duration::from_millis(100),
            ..HubConfig::default()
        },
        ..common::config()
    };
    let server = with_http(config, common::pattern(320, 240, 30.0)).await;
    let http = server.http_addr();

    let idle = scrape(http).await;
    assert_eq!(idle.cam("camcast_frames_captured_total", ""), 0.0);
    assert_eq!(idle.cam("camcast_camera_state", "state=\"ready\""), 1.0);
    assert_eq!(idle.cam("camcast_camera_state", "state=\"streaming\""), 0.0);
    assert_eq!(idle.get("camcast_shutting_down"), 0.0);
    assert_eq!(idle.get("camcast_panics_total"), 0.0);

    // One HTTP viewer and one v1 viewer, both watching.
    let (http_viewer, http_bytes) = mjpeg_viewer(http, 5).await;
    let mut v1 = client::camera_client(server.channel().await)
        .stream_frames(pb::v1::StreamRequest {
            viewer_name: "metrics-v1".into(),
            max_fps: 0.0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut v1_bytes = 0;
    for _ in 0..5 {
        let f = v1.message().await.unwrap().unwrap();
        v1_bytes += prost::Message::encoded_len(&f);
    }
    let watching = scrape(http).await;
    for (api, n) in [("http", 1.0), ("v1", 1.0), ("seed", 0.0), ("snapshot", 0.0)] {
        let series = format!("api=\"{api}\"");
        assert_eq!(watching.cam("camcast_viewers", &series), n, "{api}");
    }
    assert_eq!(
        watching.cam("camcast_camera_state", "state=\"streaming\""),
        1.0
    );
    assert_eq!(watching.cam("camcast_camera_capturing", ""), 1.0);
    assert!(watching.cam("camcast_frames_sent_total", "api=\"http\"") >= 5.0);
    assert!(watching.cam("camcast_frames_sent_total", "api=\"v1\"") >= 5.0);
    // Everything the viewers received was counted (and perhaps a little more in flight).
    assert!(watching.cam("camcast_bytes_sent_total", "api=\"http\"") >= http_bytes as f64);
    assert!(watching.cam("camcast_bytes_sent_total", "api=\"v1\"") >= v1_bytes as f64);
    let later = scrape(http).await;
    assert!(
        later.cam("camcast_frames_captured_total", "")
            > idle.cam("camcast_frames_captured_total", ""),
        "frames captured move"
    );

    // A snapshot, then everyone leaves and capture stops: every counter is still.
    let (status, _, jpeg) = get(http, "/snapshot.jpg").await;
    assert_eq!(status, StatusCode::OK);
    drop((http_viewer, v1));
    let hub = server.hub.clone();
    eventually("capture stopped", || {
        let hub = hub.clone();
        async move { !hub.capturing() && hub.viewer_count() == 0 }
    })
    .await;
    let info = client::camera_client(server.channel().await)
        .get_info(pb::v1::GetInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let c = info.counters.unwrap();
    let m = scrape(http).await;
    let captured = m.cam("camcast_frames_captured_total", "");
    assert_eq!(captured, c.frames_captured as f64);
    assert_eq!(
        m.cam("camcast_frames_dropped_total", "reason=\"bad_frame\"")
            + m.cam("camcast_frames_dropped_total", "reason=\"not_jpeg\""),
        c.frames_dropped as f64
    );
    assert_eq!(
        m.cam("camcast_capture_starts_total", ""),
        c.capture_starts as f64
    );
    assert_eq!(
        m.cam("camcast_capture_errors_total", ""),
        c.capture_errors as f64
    );
    assert_eq!(
        m.cam("camcast_viewers_admitted_total", ""),
        c.viewers_total as f64
    );
    assert_eq!(c.viewers_total, 3, "http, v1, snapshot");
    assert_eq!(
        m.cam("camcast_viewers_refused_total", "reason=\"viewer_cap\""),
        c.viewers_rejected as f64
    );
    assert_eq!(m.get("camcast_panics_total"), c.panics as f64);
    // The test pattern encodes every frame, each one timed.
    assert_eq!(m.cam("camcast_frames_encoded_total", ""), captured);
    assert_eq!(m.cam("camcast_frames_passed_through_total", ""), 0.0);
    assert_eq!(m.cam("camcast_encode_seconds_count", ""), captured);
    assert!(m.cam("camcast_encode_seconds_sum", "") > 0.0);
    assert_eq!(
        m.cam("camcast_encode_seconds_bucket", "le=\"+Inf\""),
        captured
    );
    assert_eq!(
        m.cam("camcast_bytes_sent_total", "api=\"snapshot\""),
        jpeg.len() as f64
    );
    assert_eq!(m.cam("camcast_frames_sent_total", "api=\"snapshot\""), 1.0);
    for api in ["http", "v1", "seed", "snapshot"] {
        let series = format!("api=\"{api}\"");
        assert_eq!(m.cam("camcast_viewers", &series), 0.0, "{api} left");
    }
    // Sent and skipped together never exceed what was captured, per viewer; here one viewer
    // per API.
    for api in ["http", "v1"] {
        let series = format!("api=\"{api}\"");
        let sent = m.cam("camcast_frames_sent_total", &series);
        let skipped = m.cam("camcast_frames_skipped_total", &series);
        assert!(sent + skipped <= captured, "{api}: {sent} + {skipped}");
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn dropped_frames_and_viewer_cap_are_counted_by_reason() {
    let (source, fake) = FakeSource::new(64, 48, Duration::from_millis(5));
    // Two bad frames, one good one, then a pause so the viewer sees it.
    fake.push([
        Step::BadFrame,
        Step::BadFrame,
        Step::Frame,
        Step::Stall(Duration::from_secs(2)),
    ]);
    let config = Config {
        hub: HubConfig {
            max_viewers: 1,
            ..HubConfig::default()
        },
        ..common::config()
    };
    let server = with_http(config, Box::new(source)).await;
    let http = server.http_addr();
    let (viewer, _) = mjpeg_viewer(http, 1).await;
    let (status, _, _) = get(http, "/stream.mjpg").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "over the cap");
    let m = scrape(http).await;
    assert_eq!(
        m.cam("camcast_frames_dropped_total", "reason=\"bad_frame\""),
        2.0
    );
    assert_eq!(
        m.cam("camcast_frames_dropped_total", "reason=\"not_jpeg\""),
        0.0
    );
    // The fake camera's frames are its own JPEGs: passed through, never encoded or timed.
    assert!(m.cam("camcast_frames_passed_through_total", "") >= 1.0);
    assert_eq!(m.cam("camcast_frames_encoded_total", ""), 0.0);
    assert_eq!(m.cam("camcast_encode_seconds_count", ""), 0.0);
    assert_eq!(
        m.cam("camcast_viewers_refused_total", "reason=\"viewer_cap\""),
        1.0
    );
    let r = server.hub.report().counters;
    assert_eq!((r.frames_dropped, r.viewers_rejected), (2, 1));
    drop(viewer);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn connection_refusals_are_counted_by_reason() {
    let config = Config {
        conn: ConnLimits {
            per_address: 2,
            // Longer than the two silent connections below are held, however slow the CPU:
            // each one timed out would count once more.
            handshake_timeout: Duration::from_secs(2),
            ..ConnLimits::default()
        },
        ..common::config()
    };
    let server = with_http(config, common::pattern(160, 120, 10.0)).await;
    let http = server.http_addr();

    // A connection that never sends a request is closed after the handshake timeout.
    let mut silent = TcpStream::connect(http).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    drop(silent);

    // Two connections held open; the third from the same address is refused at accept.
    let _a = TcpStream::connect(http).await.unwrap();
    let _b = TcpStream::connect(http).await.unwrap();
    eventually("both held connections admitted", || async {
        let mut c = TcpStream::connect(http).await.unwrap();
        // Refused: closed at once, without reading our request.
        matches!(
            tokio::time::timeout(Duration::from_secs(2), c.read(&mut [0u8; 8])).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    })
    .await;
    drop((_a, _b));
    // The scrape itself needs a slot; wait for the held ones to be freed.
    let mut m = None;
    for _ in 0..100 {
        let (status, _, body) =
            match tokio::time::timeout(Duration::from_secs(2), try_get(http, "/metrics")).await {
                Ok(Some(r)) => r,
                _ => continue,
            };
        if status == StatusCode::OK {
            m = Some(Scrape::parse(std::str::from_utf8(&body).unwrap()));
            break;
        }
    }
    let m = m.expect("a scrape once the held connections closed");
    assert_eq!(
        m.get("camcast_admission_refusals_total{reason=\"handshake_timeout\"}"),
        1.0
    );
    assert!(m.get("camcast_admission_refusals_total{reason=\"per_address_cap\"}") >= 1.0);
    assert_eq!(
        m.get("camcast_admission_refusals_total{reason=\"token\"}"),
        0.0
    );
    server.stop().await.unwrap();
}

/// [`get`] that answers `None` when the server closes the connection instead of answering.
async fn try_get(addr: SocketAddr, path: &str) -> Option<(StatusCode, header::HeaderMap, Bytes)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    let conn = tokio::spawn(conn);
    let request = Request::get(path)
        .header(header::HOST, "camcast.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut response = sender.send_request(request).await.ok()?;
    let body = response.body_mut().collect().await.ok()?.to_bytes();
    conn.abort();
    Some((response.status(), response.headers().clone(), body))
}

#[tokio::test]
async fn a_scrape_during_shutdown_gets_200_and_the_final_values() {
    let status = StatusCell::new();
    let hub = Hub::new(
        common::pattern(160, 120, 30.0),
        "test",
        HubConfig::default(),
        status.clone(),
    );
    let cameras = vec![Camera {
        name: DEFAULT_CAMERA.into(),
        hub: hub.clone(),
    }];
    let metrics = Arc::new(Metrics::new(cameras, Arc::new(Refusals::default())));
    let cameras = camcast::cameras::Cameras::single(hub.clone(), status);
    let app = camcast::http::router(cameras, HttpSettings::default(), None, metrics);
    let mut sub = hub
        .connect(camcast::hub::ViewerInfo {
            name: "v".into(),
            addr: None,
            api: camcast::hub::Api::V1,
            max_fps: camcast::hub::RateCap::NONE,
        })
        .unwrap();
    for _ in 0..3 {
        sub.next().await.unwrap();
    }
    hub.shutdown().await;
    assert!(sub.next().await.is_none(), "streams ended");
    let response = tower::ServiceExt::oneshot(
        app,
        Request::get("/metrics")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let m = Scrape::parse(std::str::from_utf8(&body).unwrap());
    assert_eq!(m.get("camcast_shutting_down"), 1.0);
    let final_count = hub.counters().frames_captured;
    assert!(final_count >= 3);
    assert_eq!(
        m.cam("camcast_frames_captured_total", ""),
        final_count as f64
    );
    assert_eq!(m.cam("camcast_frames_sent_total", "api=\"v1\""), 3.0);
    assert_eq!(m.cam("camcast_viewers", "api=\"v1\""), 1.0, "still held");
    drop(sub);
    assert_eq!(hub.stats().viewers(camcast::hub::Api::V1), 0);
}
