//! `/stream.mjpg` stays current for readers at default settings: kernel-default socket buffers,
//! an 8 KiB read buffer, one part read at a time at the reader's own pace (a script, a recorder,
//! a home-automation poller). A reader slower than the camera reads frames within a few of the
//! newest and skips the rest; after a pause, the next part it reads is current; over HTTPS too.
//! Assertions are on sequence numbers (the hub's newest against the part read), never on time.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use camcast::grpc::GrpcSettings;
use camcast::http::HttpSettings;
use camcast::hub::{Hub, HubConfig};
use camcast::tls::{self, CertKind, ClientTlsOptions, ServerTls, ServerTlsFiles};
use common::TestServer;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A part read this many frames behind the newest is stale. Paced, a reader is 0–2 behind;
/// unpaced, a 10 fps reader of 30 fps 640x480 falls 60–150 behind (its buffers hold 20–50
/// frames, each read a third of the camera's rate).
const MAX_LAG: u64 = 10;
/// The camera's rate and the reader's.
const CAMERA_FPS: f64 = 30.0;
const READER_PERIOD: Duration = Duration::from_millis(100);

/// One camera at a time: each test paces a 30 fps stream, and on a loaded machine four at once
/// would measure the machine rather than the server.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// gRPC and HTTP(S) on one hub, serving a 640x480 test pattern.
struct Camera {
    grpc: TestServer,
    http: SocketAddr,
    /// The certificate's directory, for HTTPS.
    tls: Option<(tempfile::TempDir, ClientTlsOptions)>,
}

impl Camera {
    async fn start(https: bool) -> Camera {
        let (grpc_settings, tls) = if https {
            let dir = tempfile::tempdir().unwrap();
            tls::generate(dir.path(), CertKind::Server, &["127.0.0.1".into()], false).unwrap();
            let files = ServerTlsFiles {
                cert: dir.path().join("cert.pem"),
                key: dir.path().join("key.pem"),
                client_ca: None,
            };
            let settings = GrpcSettings {
                tls: Some(ServerTls::load(&files, &[b"h2", b"http/1.1"]).unwrap()),
                ..common::settings()
            };
            let trusting = ClientTlsOptions {
                ca: Some(files.cert.clone()),
                ..Default::default()
            };
            (settings, Some((dir, trusting)))
        } else {
            (common::settings(), None)
        };
        let http_settings = HttpSettings::new(&camcast::config::Config::default(), &grpc_settings);
        let grpc = TestServer::start_with(
            common::pattern(640, 480, CAMERA_FPS),
            HubConfig::default(),
            grpc_settings,
        )
        .await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = listener.local_addr().unwrap();
        let hub = grpc.hub.clone();
        tokio::spawn(camcast::http::serve(
            listener,
            hub.clone(),
            http_settings,
            async move { hub.closed().await },
        ));
        Camera { grpc, http, tls }
    }

    fn hub(&self) -> &Hub {
        &self.grpc.hub
    }

    /// The newest frame's sequence number (frames are numbered by capture).
    fn newest(&self) -> u64 {
        self.hub().report().counters.frames_captured
    }

    /// A plain reader of `path`, over TLS when the camera serves HTTPS.
    async fn reader(&self, path: &str) -> PlainReader<Box<dyn Io>> {
        let tcp = TcpStream::connect(self.http).await.unwrap();
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((_, trusting)) => {
                let mut config = trusting.rustls_config().unwrap();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
                let name = trusting.server_name("127.0.0.1").unwrap();
                Box::new(connector.connect(name, tcp).await.expect("TLS handshake"))
            }
        };
        PlainReader::open(io, path).await
    }

    async fn stop(self) {
        self.grpc.stop().await.unwrap();
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An MJPEG reader written the plain way: the request by hand, tokio's default 8 KiB read
/// buffer, chunked framing and parts decoded by hand, and bytes read only when a part is asked
/// for. Nothing about it is tuned.
struct PlainReader<IO> {
    r: BufReader<IO>,
    /// Bytes left in the current HTTP/1.1 chunk.
    chunk_left: usize,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> PlainReader<IO> {
    async fn open(mut io: IO, path: &str) -> Self {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: camcast.test\r\nUser-Agent: plain-reader/1\r\n\r\n"
        );
        io.write_all(request.as_bytes()).await.unwrap();
        let mut r = BufReader::new(io);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "{line}");
        let mut chunked = false;
        loop {
            line.clear();
            r.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            chunked |= line.eq_ignore_ascii_case("transfer-encoding: chunked\r\n");
        }
        assert!(chunked, "an HTTP/1.1 stream of unknown length is chunked");
        PlainReader { r, chunk_left: 0 }
    }

    /// Fills `buf` with body bytes, undoing the chunked framing.
    async fn body(&mut self, buf: &mut [u8]) {
        let mut filled = 0;
        while filled < buf.len() {
            if self.chunk_left == 0 {
                let mut size = String::new();
                self.r.read_line(&mut size).await.unwrap();
                self.chunk_left = usize::from_str_radix(size.trim_end(), 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {size:?}"));
                assert!(self.chunk_left > 0, "the stream ended");
            }
            let n = (buf.len() - filled).min(self.chunk_left);
            self.r
                .read_exact(&mut buf[filled..filled + n])
                .await
                .unwrap();
            filled += n;
            self.chunk_left -= n;
            if self.chunk_left == 0 {
                let mut crlf = [0u8; 2];
                self.r.read_exact(&mut crlf).await.unwrap();
                assert_eq!(&crlf, b"\r\n", "chunk ends with CRLF");
            }
        }
    }

    async fn body_line(&mut self) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.last() != Some(&b'\n') {
            self.body(&mut byte).await;
            line.push(byte[0]);
        }
        String::from_utf8(line).unwrap()
    }

    /// Reads the next part whole; returns its X-Sequence. Empty lines between parts are
    /// skipped, as multipart readers do.
    async fn next_part(&mut self) -> u64 {
        let mut line = self.body_line().await;
        while line == "\r\n" {
            line = self.body_line().await;
        }
        assert_eq!(line, format!("--{}\r\n", camcast::http::BOUNDARY));
        let (mut len, mut seq) = (None, None);
        loop {
            let line = self.body_line().await;
            if line == "\r\n" {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            match name.to_ascii_lowercase().as_str() {
                "content-length" => len = value.trim().parse::<usize>().ok(),
                "x-sequence" => seq = value.trim().parse::<u64>().ok(),
                _ => {}
            }
        }
        let mut jpeg = vec![0u8; len.expect("Content-Length")];
        self.body(&mut jpeg).await;
        assert!(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9]));
        seq.expect("X-Sequence")
    }
}

/// What a paced reading session saw.
#[derive(Debug, Default)]
struct Reading {
    /// Frames behind the newest, for each part read.
    lags: Vec<u64>,
    /// Frames skipped between the parts read.
    skipped: u64,
    last_seq: Option<u64>,
}

impl Reading {
    fn record(&mut self, seq: u64, newest: u64) {
        self.lags.push(newest.saturating_sub(seq));
        if let Some(last) = self.last_seq {
            assert!(seq > last, "sequence numbers rise: {seq} after {last}");
            self.skipped += seq - last - 1;
        }
        self.last_seq = Some(seq);
    }
}

/// Reads `parts` parts, one per [`READER_PERIOD`], noting each one's lag behind the newest.
async fn read_slowly<IO: AsyncRead + AsyncWrite + Unpin>(
    camera: &Camera,
    reader: &mut PlainReader<IO>,
    parts: usize,
    reading: &mut Reading,
) {
    for _ in 0..parts {
        let seq = reader.next_part().await;
        reading.record(seq, camera.newest());
        tokio::time::sleep(READER_PERIOD).await;
    }
}

/// Reads 4 s of parts at 10 a second; the parts of the last 2 s must be current.
async fn slow_reader_reads_current_frames(https: bool) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let camera = Camera::start(https).await;
    let mut slow = camera.reader("/stream.mjpg?name=slow").await;
    let mut reading = Reading::default();
    read_slowly(&camera, &mut slow, 40, &mut reading).await;
    println!("lags behind the newest: {:?}", reading.lags);
    let worst = reading.lags[20..].iter().max().unwrap();
    assert!(
        *worst <= MAX_LAG,
        "a 10 fps reader read parts up to {worst} frames behind the newest: {:?}",
        reading.lags
    );
    assert!(
        reading.skipped > 0,
        "a reader slower than the camera skips frames"
    );
    let report = camera.hub().report();
    let viewer = report
        .viewers
        .iter()
        .find(|v| v.info.name == "slow")
        .unwrap();
    assert!(
        viewer.frames_sent <= 40 + MAX_LAG,
        "the server sent what was read, not a backlog: {viewer:?}"
    );
    drop(slow);
    camera.stop().await;
}

#[tokio::test]
async fn a_slow_reader_reads_frames_near_the_newest_and_skips_the_rest() {
    slow_reader_reads_current_frames(false).await;
}

#[tokio::test]
async fn over_https_a_slow_reader_reads_frames_near_the_newest() {
    slow_reader_reads_current_frames(true).await;
}

#[tokio::test]
async fn after_a_pause_the_next_part_is_current() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let camera = Camera::start(false).await;
    let mut reader = camera.reader("/stream.mjpg?name=pausing").await;
    let mut reading = Reading::default();
    read_slowly(&camera, &mut reader, 5, &mut reading).await;
    // Looks away for 90 frames.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = reading.lags.len();
    read_slowly(&camera, &mut reader, 3, &mut reading).await;
    println!("lags behind the newest: {:?}", reading.lags);
    let after_pause = &reading.lags[before..];
    assert!(
        after_pause.iter().all(|&lag| lag <= MAX_LAG),
        "after a 3 s pause the reader read parts {after_pause:?} frames behind the newest"
    );
    assert!(reading.skipped >= 60, "the pause's frames were skipped");
    drop(reader);
    camera.stop().await;
}

/// A reader that keeps up still gets the camera's rate beside a slow one.
#[tokio::test]
async fn a_fast_reader_keeps_the_cameras_rate_beside_a_slow_one() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let camera = Camera::start(false).await;
    let mut slow = camera.reader("/stream.mjpg?name=slow").await;
    let mut fast = camera.reader("/stream.mjpg?name=fast").await;
    let fast_reader = tokio::spawn(async move {
        let mut reading = Reading::default();
        for _ in 0..120 {
            let seq = fast.next_part().await;
            reading.record(seq, seq);
        }
        reading
    });
    let mut slow_reading = Reading::default();
    read_slowly(&camera, &mut slow, 20, &mut slow_reading).await;
    let fast = fast_reader.await.expect("fast reader did not panic");
    assert!(
        fast.skipped * 10 <= 120,
        "the fast reader kept the camera's rate: {} skipped of {}",
        fast.skipped,
        120 + fast.skipped
    );
    drop(slow);
    camera.stop().await;
}
