//! A real camcast server on an ephemeral loopback port, for integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod core_client;

use std::net::SocketAddr;
use std::time::Duration;

use camcast::client;
use camcast::client::Conn as Channel;
use camcast::config::Config;
use camcast::hub::{Hub, HubConfig};
use camcast::led::LedSpec;
use camcast::protection::Protection;
use camcast::server::{Listeners, Server, ServerError};
use camcast::source::pattern::TestPattern;
use camcast::source::{CaptureSettings, FrameSource, Selected};
use camcast::status::StatusCell;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod mjpeg_reader;

/// A real server (`camcast::server`) on ephemeral loopback ports.
pub struct TestServer {
    /// The gRPC port.
    pub addr: SocketAddr,
    /// The HTTP port, when the config asked for one.
    pub http: Option<SocketAddr>,
    pub hub: Hub,
    pub status: StatusCell,
    shutdown_begun: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

pub fn pattern(width: u32, height: u32, fps: f64) -> Box<dyn FrameSource> {
    Box::new(TestPattern::new(CaptureSettings {
        width,
        height,
        fps,
        quality: 80,
    }))
}

/// The defaults, on loopback port 0, with no LED and no mDNS advertisement.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        led: LedSpec::None,
        mdns: false,
        ..Config::default()
    }
}

/// [`config`] with HTTP on loopback port 0 as well.
pub fn config_with_http() -> Config {
    Config {
        http: Some("127.0.0.1:0".parse().unwrap()),
        ..config()
    }
}

impl TestServer {
    /// A server with the default settings and this hub configuration.
    pub async fn start(source: Box<dyn FrameSource>, hub: HubConfig) -> TestServer {
        Self::launch(Config { hub, ..config() }, source).await
    }

    /// A server with these settings; TLS files and token file are loaded as `camcast` does.
    pub async fn launch(config: Config, source: Box<dyn FrameSource>) -> TestServer {
        let protection = Protection::load(&config).expect("TLS and token files load");
        Self::launch_with(config, protection, source).await
    }

    /// A server with these settings and protections (e.g. tokens made in the test).
    pub async fn launch_with(
        config: Config,
        protection: Protection,
        source: Box<dyn FrameSource>,
    ) -> TestServer {
        let listeners = Listeners::bind(&config).await.unwrap();
        let addrs = listeners.local_addrs().unwrap();
        let selected = Selected {
            source,
            reason: "integration test".into(),
        };
        let server = Server::new(config, protection, selected);
        let (hub, status) = (server.hub().clone(), server.status().clone());
        let shutdown_begun = CancellationToken::new();
        let task = tokio::spawn(server.run(listeners, shutdown_begun.clone()));
        TestServer {
            addr: addrs.grpc,
            http: addrs.http,
            hub,
            status,
            shutdown_begun,
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

    /// The HTTP port; panics if the server has none.
    pub fn http_addr(&self) -> SocketAddr {
        self.http.expect("a server started with HTTP")
    }

    /// Waits until no viewer is registered: every stream that ended has given back its slot.
    pub async fn viewers_gone(&self) {
        eventually("no viewer slot is left", || async {
            self.hub.viewer_count() == 0
        })
        .await;
    }

    /// Begins shutdown and waits for every part of the server to finish.
    pub async fn stop(self) -> Result<(), ServerError> {
        self.shutdown_begun.cancel();
        self.finished().await
    }

    /// Waits for the server to end by itself (a part stopped) or after [`Self::stop`].
    pub async fn finished(self) -> Result<(), ServerError> {
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the server finished in time")
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

/// Polls `cond` until it holds; panics with `what` after 60 s. The limit is a hang guard, not
/// a timing check: under qemu-user (CI's aarch64 suite) or a loaded machine, cameras and
/// servers run many times slower than natively.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
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

/// A spawned process that cannot outlive its test: dropping the guard (a passing test's end,
/// or the unwinding of a failed assertion) kills and reaps it. Without it a failing test left
/// a `camcast` running, advertising over mDNS and holding the test's stdout open.
pub struct ChildGuard(Option<std::process::Child>);

impl ChildGuard {
    pub fn new(child: std::process::Child) -> ChildGuard {
        ChildGuard(Some(child))
    }

    /// SIGTERM, then waits for the exit status (the normal way to stop a server).
    pub fn terminate(mut self) -> std::io::Result<std::process::ExitStatus> {
        let mut child = self.0.take().expect("child present until dropped");
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait()
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("child present until dropped")
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.as_mut().expect("child present until dropped")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
