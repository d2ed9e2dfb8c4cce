//! A real camcast server on an ephemeral loopback port, for integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod core_client;

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

    /// A connection with the smallest HTTP/2 windows, like a congested phone on Wi-Fi: a viewer
    /// on it that stops reading stalls after about 64 KiB.
    pub async fn small_window_channel(&self) -> Channel {
        let channel = tonic::transport::Endpoint::from_shared(client::endpoint_uri(&self.target()))
            .unwrap()
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await
            .unwrap();
        client::untokened(channel)
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

/// A command for one of camcast's binaries. Under CAMCAST_EXEC_WRAPPER (e.g. qemu-aarch64-static
/// when the suite itself runs under qemu-user) the binary is started through that wrapper.
pub fn bin_command(path: &str) -> std::process::Command {
    match std::env::var("CAMCAST_EXEC_WRAPPER") {
        Ok(wrapper) if !wrapper.is_empty() => {
            let mut c = std::process::Command::new(wrapper);
            c.arg(path);
            c
        }
        _ => std::process::Command::new(path),
    }
}

/// Starts the server binary on an ephemeral port and returns it with the address it logged.
/// The caller waits for the child; on a panic here the test fails and the harness reaps it.
#[allow(clippy::zombie_processes)]
pub fn spawn_server(
    extra: &[&str],
) -> (
    std::process::Child,
    String,
    std::io::BufReader<std::process::ChildStderr>,
) {
    let mut child = bin_command(env!("CARGO_BIN_EXE_camcast"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--source",
            "test-pattern",
            "--size",
            "320x240",
            "--led",
            "none",
            "--log",
            "info",
        ])
        .args(extra)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn camcast");
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if std::io::BufRead::read_line(&mut stderr, &mut line).unwrap() == 0 {
            let _ = child.kill();
            let status = child.wait();
            panic!("server exited before listening: {status:?}");
        }
        if let Some(rest) = line.split("addr=").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            return (child, addr, stderr);
        }
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
