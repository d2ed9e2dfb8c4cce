//! A real camcast server on an ephemeral loopback port, for integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use camcast::client;
use camcast::client::Conn as Channel;
use camcast::grpc::{self, GrpcSettings};
use camcast::hub::{Hub, HubConfig};
use camcast::source::pattern::{PatternConfig, TestPattern};
use camcast::source::FrameSource;
use camcast::status::StatusCell;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

pub fn pattern(width: u32, height: u32, fps: f64) -> Box<dyn FrameSource> {
    Box::new(TestPattern::new(PatternConfig {
        width,
        height,
        fps,
        quality: 80,
    }))
}

pub fn settings() -> GrpcSettings {
    GrpcSettings::default()
}

impl TestServer {
    pub async fn start(source: Box<dyn FrameSource>, hub_cfg: HubConfig) -> TestServer {
        Self::start_with(source, hub_cfg, settings()).await
    }

    /// A server with non-default transport settings (limits, TLS, tokens).
    pub async fn start_with(
        source: Box<dyn FrameSource>,
        hub_cfg: HubConfig,
        settings: GrpcSettings,
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = StatusCell::new();
        let hub = Hub::new(source, "integration test", hub_cfg, status.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(grpc::serve(
            listener,
            hub.clone(),
            status,
            settings,
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr,
            hub,
            stop: Some(stop),
            task,
        }
    }

    /// A test-pattern server at `width`x`height`@`fps` with default limits.
    pub async fn pattern(width: u32, height: u32, fps: f64) -> TestServer {
        Self::start(pattern(width, height, fps), HubConfig::default()).await
    }

    pub fn target(&self) -> String {
        self.addr.to_string()
    }

    /// A fresh connection (each viewer its own TCP connection, as on a LAN).
    pub async fn channel(&self) -> Channel {
        client::connect(&self.target(), Duration::from_secs(5))
            .await
            .expect("connect to test server")
    }

    /// Triggers graceful shutdown and waits for the server to finish.
    pub async fn stop(mut self) -> Result<(), tonic::transport::Error> {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("graceful shutdown finished in time")
            .expect("server task did not panic")
    }
}

/// Decodes a JPEG fully (not just its header) and returns its size.
pub fn decode(jpeg: &[u8]) -> (usize, usize) {
    let img = turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).expect("decodable JPEG");
    assert_eq!(img.pixels.len(), img.width * img.height * 3);
    (img.width, img.height)
}

/// Polls `cond` until it holds; panics with `what` after 10 s.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Removes every DHT segment before the scan, as UVC cameras send their frames.
pub fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut pos = 2;
    while jpeg[pos + 1] != 0xDA {
        let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
        if jpeg[pos + 1] != 0xC4 {
            out.extend_from_slice(&jpeg[pos..pos + 2 + len]);
        }
        pos += 2 + len;
    }
    out.extend_from_slice(&jpeg[pos..]);
    out
}
