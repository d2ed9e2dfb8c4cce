//! A real camcast server on an ephemeral loopback port, for integration tests.
#![allow(dead_code)] // each test binary uses a different subset

pub mod core_client;
pub mod invariants;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use camcast::cameras::Cameras;
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
use invariants::Session;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub mod mjpeg_reader;

/// A real server (`camcast::server`) on ephemeral loopback ports.
///
/// A test ends it with [`TestServer::stop`], which checks the invariants every server test
/// must keep (see [`invariants`]): its clients gone, no viewer left, capture stopped after the
/// linger, descriptors back to where they were, no panic. Dropping it unstopped fails the test.
pub struct TestServer {
    /// The gRPC port.
    pub addr: SocketAddr,
    /// The HTTP port, when the config asked for one.
    pub http: Option<SocketAddr>,
    /// The default camera's hub.
    pub hub: Hub,
    /// The default camera's state.
    pub status: StatusCell,
    /// Every camera, the default first.
    pub cameras: Cameras,
    /// Each camera's hub settings, in the order of `cameras`.
    hub_configs: Vec<HubConfig>,
    shutdown_begun: CancellationToken,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    session: Option<Arc<Session>>,
}

pub fn pattern(width: u32, height: u32, fps: f64) -> Box<dyn FrameSource> {
    Box::new(TestPattern::new(CaptureSettings {
        width,
        height,
        fps,
        quality: 80,
    }))
}

/// The hub's defaults with a short linger, so that a test's final check, capture stopping
/// once the linger is over, takes a moment rather than two seconds. Tests about the linger
/// set their own.
pub fn hub_config() -> HubConfig {
    HubConfig {
        linger: Duration::from_millis(200),
        ..HubConfig::default()
    }
}

/// The defaults, on loopback port 0, with no LED and no mDNS advertisement, and
/// [`hub_config`]'s short linger.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        led: LedSpec::None,
        mdns: false,
        hub: hub_config(),
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
        let session = Arc::new(Session::begin().await);
        Self::serve(session, config, protection, vec![source]).await
    }

    /// A server with several cameras: `config.cameras` names them, `sources` gives each its
    /// source, in the same order.
    pub async fn launch_cameras(config: Config, sources: Vec<Box<dyn FrameSource>>) -> TestServer {
        let protection = Protection::load(&config).expect("TLS and token files load");
        let session = Arc::new(Session::begin().await);
        Self::serve(session, config, protection, sources).await
    }

    /// A second server running beside `first` in the same test (e.g. one with tokens, one
    /// without). They share `first`'s baseline: the descriptor check runs when the last of
    /// them stops.
    pub async fn launch_beside(
        first: &TestServer,
        config: Config,
        protection: Protection,
        source: Box<dyn FrameSource>,
    ) -> TestServer {
        let session = first.session.clone().expect("a running server");
        Self::serve(session, config, protection, vec![source]).await
    }

    /// A new server in the same test after `stopped` (a camera restarting), checked against
    /// the first one's baseline when it stops. The first one's outcome must have been Ok.
    pub async fn relaunch(
        mut stopped: Stopped,
        config: Config,
        source: Box<dyn FrameSource>,
    ) -> TestServer {
        stopped
            .outcome
            .take()
            .unwrap()
            .expect("the first server stopped cleanly");
        let session = stopped.session.take().unwrap();
        let protection = Protection::load(&config).expect("TLS and token files load");
        Self::serve(session, config, protection, vec![source]).await
    }

    async fn serve(
        session: Arc<Session>,
        config: Config,
        protection: Protection,
        sources: Vec<Box<dyn FrameSource>>,
    ) -> TestServer {
        let listeners = Listeners::bind(&config).await.unwrap();
        let addrs = listeners.local_addrs().unwrap();
        let sources = sources
            .into_iter()
            .map(|source| Selected {
                source,
                reason: "integration test".into(),
            })
            .collect();
        let hub_configs = config.cameras.iter().map(|c| c.hub(&config.hub)).collect();
        let server = Server::new(config, protection, sources);
        let cameras = server.cameras().clone();
        let default = cameras.default_camera();
        let (hub, status) = (default.hub.clone(), default.status.clone());
        let shutdown_begun = CancellationToken::new();
        let task = tokio::spawn(server.run(listeners, shutdown_begun.clone()));
        TestServer {
            addr: addrs.grpc,
            http: addrs.http,
            hub,
            status,
            cameras,
            hub_configs,
            shutdown_begun,
            task: Some(task),
            session: Some(session),
        }
    }

    /// A test-pattern server at `width`x`height`@`fps` with [`hub_config`]'s limits.
    pub async fn pattern(width: u32, height: u32, fps: f64) -> TestServer {
        Self::start(pattern(width, height, fps), hub_config()).await
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
        invariants::no_viewer_left(&self.hub).await;
    }

    /// The end of every test that has let its clients go: checks that no viewer is left and
    /// capture stops once the linger is over (unless `always_on`), shuts the server down,
    /// waits for every part of it, then checks that the process's descriptors are back to
    /// where they were before the server started and that nothing panicked.
    pub async fn stop(self) -> Result<(), ServerError> {
        self.check_idle().await;
        self.stop_with_viewers().await.check().await
    }

    /// Shuts down while viewers may still be connected (tests of shutdown itself). The
    /// invariants are checked by [`Stopped::check`], once the test has let its clients go.
    pub async fn stop_with_viewers(self) -> Stopped {
        self.shutdown_begun.cancel();
        self.finished().await
    }

    /// Waits for the server to end by itself (a part stopped) or after shutdown began.
    pub async fn finished(mut self) -> Stopped {
        let task = self.task.take().unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server finished in time")
            .expect("server task did not panic");
        Stopped {
            outcome: Some(outcome),
            session: self.session.take(),
            cameras: self.cameras.clone(),
        }
    }

    /// Viewers gone, capture stopped after the linger, no panic: what a server left by its
    /// clients must show before anything is shut down.
    async fn check_idle(&self) {
        for (camera, cfg) in self.cameras.iter().zip(&self.hub_configs) {
            let hub = &camera.hub;
            invariants::no_viewer_left(hub).await;
            if !cfg.always_on {
                let bound = cfg.linger + invariants::SETTLE;
                invariants::within(bound, "capture stops after the linger", || async {
                    !hub.capturing()
                })
                .await;
            }
        }
        let session = self.session.as_ref().unwrap();
        invariants::no_panic_since(session.panics_before());
    }
}

/// A server the test never stopped (it panicked, or forgot to). Its cameras are let go before
/// the drop returns: the runtime that would run the shutdown is about to go, and a capture
/// thread left running would hold the device (a vivid node in the VM suite) and fail the
/// tests after this one.
impl Drop for TestServer {
    fn drop(&mut self) {
        if self.session.is_some() {
            self.shutdown_begun.cancel();
            for camera in self.cameras.iter() {
                camera.hub.shutdown_blocking();
            }
            if !std::thread::panicking() {
                panic!("TestServer dropped without stop(): its invariants were never checked");
            }
        }
    }
}

/// A server that has stopped, with the invariants still to check once the test's clients are
/// gone. Dropping it unchecked fails the test.
#[must_use = "call check() once the test's clients are gone"]
pub struct Stopped {
    outcome: Option<Result<(), ServerError>>,
    session: Option<Arc<Session>>,
    cameras: Cameras,
}

impl Stopped {
    /// Checks that no viewer is left registered, capture has stopped, the process's
    /// descriptors are back to the baseline and nothing panicked; returns how the server ended.
    pub async fn check(mut self) -> Result<(), ServerError> {
        let session = self.session.take().unwrap();
        for camera in self.cameras.iter() {
            let hub = &camera.hub;
            invariants::no_viewer_left(hub).await;
            invariants::within(invariants::SETTLE, "capture has stopped", || async {
                !hub.capturing()
            })
            .await;
        }
        // Servers launched beside each other share a baseline: the last one checks it.
        let panics_before = session.panics_before();
        match Arc::into_inner(session) {
            Some(session) => session.check_after().await,
            None => invariants::no_panic_since(panics_before),
        }
        self.outcome.take().unwrap()
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.session.is_some() && !std::thread::panicking() {
            panic!("Stopped dropped without check(): its invariants were never checked");
        }
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

/// The `camcast` binary running as a test's server, on an ephemeral loopback port, with the
/// test pattern and a short linger. Its log (stderr) is collected as it comes, so the server
/// never blocks on a full pipe and the test can read it.
///
/// A test ends it with [`ServerProcess::stop`] (the invariants, then SIGTERM and a clean exit)
/// or, when stopping with viewers connected is the point, [`ServerProcess::terminate`]. Both
/// fail on a panic in its log. It is killed if the test fails; dropping it unstopped otherwise
/// fails the test.
pub struct ServerProcess {
    child: Option<ChildGuard>,
    /// The gRPC address it logged (`127.0.0.1:PORT`).
    pub addr: String,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    descriptors: std::collections::BTreeMap<u32, String>,
}

/// How a server process ended: its exit status and its whole log.
#[derive(Debug)]
pub struct Ended {
    pub status: std::process::ExitStatus,
    pub log: String,
}

impl ServerProcess {
    /// Starts `camcast` with the test defaults, then `extra` (later flags win), and waits until
    /// it logs its address. Its descriptor baseline is taken once their count has settled.
    pub fn spawn(extra: &[&str]) -> ServerProcess {
        invariants::install_panic_hook();
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
                "--linger",
                "0.2",
            ])
            .args(extra)
            .env_remove("RUST_LOG")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn camcast");
        let stderr = child.stderr.take().unwrap();
        let child = ChildGuard::new(child);
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                let mut addr_tx = Some(addr_tx);
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Some(rest) = line.split("addr=").nth(1) {
                        if let Some(tx) = addr_tx.take() {
                            let _ = tx.send(rest.split_whitespace().next().unwrap().to_string());
                        }
                    }
                    log.lock().unwrap().push(line);
                }
            })
        };
        let addr = match addr_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                drop(child);
                let _ = reader.join();
                panic!(
                    "server did not start listening; its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        let pid = child.id().to_string();
        let descriptors = settled_descriptors(&pid);
        ServerProcess {
            child: Some(child),
            addr,
            log,
            reader: Some(reader),
            descriptors,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The HTTP address it logged; waits for the line (it follows the gRPC one).
    pub fn http_addr(&self) -> String {
        let deadline = std::time::Instant::now() + invariants::SETTLE;
        loop {
            let found = self.log.lock().unwrap().iter().find_map(|l| {
                let addr = l
                    .split("addr=")
                    .nth(1)
                    .filter(|_| l.contains("serving HTTP"))?;
                Some(addr.split_whitespace().next()?.to_string())
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no HTTP address in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// The invariants of a server its clients have left, asked over gRPC (GetInfo with
    /// `client`'s TLS and token) and read from /proc: no viewer, capture stopped after the
    /// linger, no panic counted or logged, its descriptors back to the baseline.
    pub async fn check_idle(&self, client: &client::ClientOptions) {
        let conn = client::connect_with(&self.addr, client, Duration::from_secs(10))
            .await
            .expect("connect for GetInfo");
        let mut camera = client::camera_client(conn);
        let deadline = tokio::time::Instant::now() + invariants::SETTLE;
        let info = loop {
            let info = camera
                .get_info(camcast::pb::v1::GetInfoRequest::default())
                .await
                .expect("GetInfo")
                .into_inner();
            if info.viewers.is_empty() && !info.capturing {
                break info;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "invariant broken: viewers left or capture still on {:?} after the last \
                 client left: {info:?}",
                invariants::SETTLE
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let panics = info.counters.unwrap().panics;
        assert_eq!(
            panics,
            0,
            "GetInfo counts {panics} panic(s):\n{}",
            self.log()
        );
        drop(camera);
        let pid = self.pid().to_string();
        invariants::descriptors_return_to(&pid, &self.descriptors, "the server process").await;
        assert_no_panic_logged(&self.log());
    }

    /// [`check_idle`](Self::check_idle), then SIGTERM: the process must exit 0 without a
    /// panic in its log.
    pub async fn stop(self, client: &client::ClientOptions) -> Ended {
        self.check_idle(client).await;
        let ended = tokio::task::spawn_blocking(move || self.terminate())
            .await
            .unwrap();
        assert!(
            ended.status.success(),
            "exit status {:?}\n{}",
            ended.status,
            ended.log
        );
        ended
    }

    /// SIGTERM and wait (blocking), then the whole log, which must hold no panic. For tests
    /// of shutdown with viewers connected; others use [`stop`](Self::stop).
    pub fn terminate(mut self) -> Ended {
        let status = self
            .child
            .take()
            .unwrap()
            .terminate()
            .expect("wait for camcast");
        // The pipe closes with the process: the reader has the whole log now.
        let _ = self.reader.take().unwrap().join();
        let log = self.log();
        assert_no_panic_logged(&log);
        Ended { status, log }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // The ChildGuard kills it; the invariants were not checked unless stopped.
        if self.child.is_some() && !std::thread::panicking() {
            panic!("ServerProcess dropped without stop() or terminate()");
        }
    }
}

/// A started process opens some descriptors after it logs its address (the mDNS responder's
/// sockets, on its own thread): the baseline is the count once it stays the same for 300 ms.
fn settled_descriptors(pid: &str) -> std::collections::BTreeMap<u32, String> {
    let mut last = invariants::descriptors(pid);
    let mut same_since = std::time::Instant::now();
    let started = std::time::Instant::now();
    while same_since.elapsed() < Duration::from_millis(300)
        && started.elapsed() < invariants::SETTLE
    {
        std::thread::sleep(Duration::from_millis(20));
        let now = invariants::descriptors(pid);
        if now.len() != last.len() {
            same_since = std::time::Instant::now();
        }
        last = now;
    }
    last
}

/// Fails, quoting it, if a server log holds a panic: the hook's mark, or Rust's default
/// "panicked at" for a panic before the hook was installed.
pub fn assert_no_panic_logged(log: &str) {
    let mark = camcast::panics::LOG_MARK;
    if let Some(at) = log.find(mark).or_else(|| log.find("panicked at")) {
        let from = log[..at].rfind('\n').map_or(0, |i| i + 1);
        let excerpt: String = log[from..].lines().take(20).collect::<Vec<_>>().join("\n");
        panic!("the server panicked (a bug):\n{excerpt}");
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
