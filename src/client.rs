//! Client side of both APIs: addressing, connecting, and one frame stream type over either
//! contract. Used by `camcast-view`, the integration tests and the benchmark.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use crate::frame::from_unix_us;
use crate::pb;
use crate::tls::{ClientTlsOptions, TlsError};
use crate::wire::{DEFAULT_PORT, MAX_FRAME_BYTES};

/// The largest HTTP/2 DATA frame this client accepts: 4 MiB, what stock grpcio announces.
pub const MAX_FRAME_SIZE: u32 = 4 * 1024 * 1024;

/// Turns `HOST`, `HOST:PORT`, `[V6]:PORT`, a bare IPv6 address or a full `http://` URI into a
/// URI tonic can dial.
pub fn endpoint_uri(target: &str) -> String {
    let t = target.trim();
    if t.starts_with("http://") || t.starts_with("https://") {
        return t.to_string();
    }
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return format!("http://{sa}");
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return format!("http://{}", SocketAddr::new(ip, DEFAULT_PORT));
    }
    match t.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => format!("http://{t}"),
        _ => format!("http://{t}:{DEFAULT_PORT}"),
    }
}

/// How to reach a server beyond its address: TLS settings and a viewer token.
#[derive(Clone, Default)]
pub struct ClientOptions {
    /// TLS on, checked this way. An `https://` target turns TLS on with the defaults.
    pub tls: Option<ClientTlsOptions>,
    /// Sent as `authorization: Bearer TOKEN` on every call, and only over verified TLS (see
    /// [`check_token_is_safe`]).
    pub token: Option<String>,
    /// Send the token even without verified TLS (`--insecure-send-token`).
    pub insecure_send_token: bool,
}

/// The token never reaches a log, a panic message or `{:?}`.
impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("tls", &self.tls)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .field("insecure_send_token", &self.insecure_send_token)
            .finish()
    }
}

/// A viewer token is a password: it goes only where nobody else can read it and only to the
/// camera it belongs to, so only over TLS whose certificate was checked. Plain text would hand
/// it to anyone on the LAN, and an unchecked certificate (or a camera found over mDNS, which
/// anyone can answer) to whoever pretends to be the camera. `--insecure-send-token` overrides
/// this for a camera that has tokens but no TLS.
pub fn check_token_is_safe(target: &str, opts: &ClientOptions) -> Result<(), ConnectError> {
    if opts.token.is_none() || opts.insecure_send_token {
        return Ok(());
    }
    let verified = match &opts.tls {
        Some(tls) => !tls.insecure_skip_verify,
        None => endpoint_uri(target).starts_with("https://"),
    };
    if verified {
        Ok(())
    } else {
        Err(ConnectError::TokenNeedsVerifiedTls {
            target: target.to_string(),
            why: if opts.tls.is_some() {
                "--insecure-skip-verify does not check who answers"
            } else {
                "without TLS it would travel in clear text"
            },
        })
    }
}

/// The viewer's security flags, shared by every client binary (`#[command(flatten)]`).
#[derive(Clone, Default, clap::Args)]
#[command(next_help_heading = "Security (when the camera has TLS or tokens on)")]
pub struct SecurityArgs {
    /// Use TLS and trust the server certificate(s) in FILE (e.g. the camera's cert.pem).
    /// An https:// address, or any TLS flag, turns TLS on; without --ca the system's CA
    /// bundle is trusted.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Use TLS but accept ANY server certificate: encrypted, yet anyone on the path can
    /// pretend to be the camera. For a first look only.
    #[arg(long)]
    pub insecure_skip_verify: bool,
    /// Check the server certificate against NAME instead of the address dialled (e.g. the
    /// camera's host name when connecting by IP).
    #[arg(long, value_name = "NAME")]
    pub tls_name: Option<String>,
    /// Client certificate (PEM) for mutual TLS; needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// Private key (PEM) for --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// File whose first non-comment line is the viewer token.
    #[arg(long, value_name = "FILE", conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,
    /// Viewer token (visible to other local users in the process list: prefer
    /// --token-file or the environment variable). Sent only over TLS with a checked
    /// certificate (--ca, or an https:// address).
    #[arg(
        long,
        env = "CAMCAST_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Send the token even without TLS, or with --insecure-skip-verify: anyone on the network
    /// can then read it, or pretend to be the camera and collect it.
    #[arg(long)]
    pub insecure_send_token: bool,
}

/// Like the derived Debug, without the token's value.
impl std::fmt::Debug for SecurityArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityArgs")
            .field("ca", &self.ca)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("tls_name", &self.tls_name)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("token_file", &self.token_file)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .field("insecure_send_token", &self.insecure_send_token)
            .finish()
    }
}

impl SecurityArgs {
    /// The connection options these flags ask for.
    pub fn options(&self) -> Result<ClientOptions, String> {
        let tls_wanted = self.ca.is_some()
            || self.insecure_skip_verify
            || self.tls_name.is_some()
            || self.cert.is_some();
        let tls = tls_wanted.then(|| ClientTlsOptions {
            ca: self.ca.clone(),
            insecure_skip_verify: self.insecure_skip_verify,
            identity: self.cert.clone().zip(self.key.clone()),
            server_name: self.tls_name.clone(),
        });
        if self.insecure_skip_verify {
            eprintln!("warning: --insecure-skip-verify: the server's certificate is NOT checked");
        }
        if self.insecure_send_token {
            eprintln!(
                "warning: --insecure-send-token: the token may be sent where others can read it"
            );
        }
        let token = match (&self.token_file, &self.token) {
            (Some(path), _) => Some(read_token(path)?),
            (None, t) => t.clone(),
        };
        Ok(ClientOptions {
            tls,
            token,
            insecure_send_token: self.insecure_send_token,
        })
    }
}

fn read_token(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| format!("token file {} holds no token", path.display()))
}

/// A connection: the HTTP/2 channel plus the token every call carries.
pub type Conn = InterceptedService<Channel, BearerToken>;

/// A channel built elsewhere (custom endpoint settings), without a token.
pub fn untokened(channel: Channel) -> Conn {
    InterceptedService::new(channel, BearerToken(None))
}

/// Adds the viewer token (if any) to each request's metadata.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("the token must be printable ASCII without spaces")]
    BadToken,
    #[error(
        "refusing to send the viewer token to {target}: {why}. Use TLS with the camera's \
         certificate (--ca cert.pem, or an https:// address), or --insecure-send-token to \
         send it anyway"
    )]
    TokenNeedsVerifiedTls { target: String, why: &'static str },
    #[error("cannot connect to {target}: {source}")]
    Transport {
        target: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Connects in plain text with no token (eagerly, so an unreachable server fails here).
pub async fn connect(target: &str, timeout: Duration) -> Result<Conn, ConnectError> {
    connect_with(target, &ClientOptions::default(), timeout).await
}

/// Connects with TLS and/or a token as `opts` say.
pub async fn connect_with(
    target: &str,
    opts: &ClientOptions,
    timeout: Duration,
) -> Result<Conn, ConnectError> {
    check_token_is_safe(target, opts)?;
    let token = match &opts.token {
        Some(t) => Some(
            format!("Bearer {}", t.trim())
                .parse::<MetadataValue<Ascii>>()
                .ok()
                .filter(|_| t.trim().bytes().all(|b| b.is_ascii_graphic()))
                .ok_or(ConnectError::BadToken)?,
        ),
        None => None,
    };
    let uri = endpoint_uri(target);
    let tls = match (&opts.tls, uri.starts_with("https://")) {
        (Some(t), _) => Some(t.clone()),
        (None, true) => Some(ClientTlsOptions::default()),
        (None, false) => None,
    };
    // TLS is done by our own connector (it supports --insecure-skip-verify, which tonic's
    // does not), so tonic always sees a plain http:// endpoint.
    let plain_uri = uri.replacen("https://", "http://", 1);
    let transport = |source| ConnectError::Transport {
        target: target.to_string(),
        source,
    };
    let endpoint = Endpoint::from_shared(plain_uri)
        .map_err(transport)?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        // The largest DATA frame the server may send us. At HTTP/2's default (16 KiB) a 100 KiB
        // JPEG goes out as seven frames, and the server's h2 writes each with its own syscall;
        // stock grpcio announces 4 MiB, and so do we.
        .max_frame_size(MAX_FRAME_SIZE);
    let channel = match tls {
        None => endpoint.connect().await.map_err(transport)?,
        Some(tls) => {
            let connector = tls_connector(&tls, endpoint.uri().host().unwrap_or_default())?;
            endpoint
                .connect_with_connector(connector)
                .await
                .map_err(transport)?
        }
    };
    Ok(InterceptedService::new(channel, BearerToken(token)))
}

type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A connector that dials TCP and runs the TLS handshake before HTTP/2 starts.
fn tls_connector(
    tls: &ClientTlsOptions,
    host: &str,
) -> Result<
    impl tower::Service<
            http::Uri,
            Response = TlsIo,
            Error = std::io::Error,
            Future = impl Send + 'static,
        > + Clone
        + Send
        + 'static,
    TlsError,
> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls.rustls_config()?));
    let name = tls.server_name(host)?;
    Ok(tower::service_fn(move |uri: http::Uri| {
        let (connector, name) = (connector.clone(), name.clone());
        async move {
            let host = uri.host().unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(DEFAULT_PORT);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        }
    }))
}

/// A frame as a viewer receives it. The tutorial API carries only the JPEG.
#[derive(Debug, Clone)]
pub struct Received {
    pub jpeg: Bytes,
    pub seq: Option<u64>,
    pub captured_at: Option<SystemTime>,
    pub size: Option<(u32, u32)>,
    /// Frames skipped before this one (always 0 on the tutorial API, which cannot say).
    pub skipped: u64,
}

impl Received {
    /// Capture→receive latency, if the server sent a capture time. Assumes synchronised clocks
    /// (same host, or NTP on the LAN).
    pub fn latency(&self) -> Option<Duration> {
        SystemTime::now().duration_since(self.captured_at?).ok()
    }
}

impl From<pb::v1::Frame> for Received {
    fn from(f: pb::v1::Frame) -> Self {
        Received {
            seq: Some(f.seq),
            captured_at: Some(from_unix_us(f.capture_time_unix_us)),
            size: Some((f.width, f.height)),
            skipped: f.skipped,
            jpeg: f.jpeg,
        }
    }
}

/// A live stream over either API.
pub enum FrameStream {
    /// camcast.v1 PullFrames: a frame each time [`FrameStream::next`] asks for one.
    Pull(PullStream),
    /// camcast.v1 StreamFrames: frames as the server sends them.
    V1(Streaming<pb::v1::Frame>),
    Tutorial(Streaming<pb::tutorial::CaptureImage>),
}

/// The viewer's side of PullFrames: its requests, and the frames that answer them.
pub struct PullStream {
    requests: tokio::sync::mpsc::Sender<pb::v1::PullRequest>,
    frames: Streaming<pb::v1::Frame>,
    /// A request is out that no frame has answered yet.
    asked: bool,
}

impl FrameStream {
    /// Opens a stream. `tutorial_api` selects the tutorial API (which ignores `max_fps`);
    /// otherwise camcast.v1's PullFrames, or StreamFrames from a server without it.
    pub async fn open(
        channel: Conn,
        tutorial_api: bool,
        name: &str,
        max_fps: f32,
    ) -> Result<FrameStream, Status> {
        if tutorial_api {
            let mut c = pb::tutorial::webcam_streaming_client::WebcamStreamingClient::new(channel)
                .max_decoding_message_size(MAX_FRAME_BYTES);
            let req = pb::tutorial::ClientName {
                client_name: name.into(),
            };
            return Ok(FrameStream::Tutorial(
                c.start_webcam_streaming(req).await?.into_inner(),
            ));
        }
        Self::open_camera(channel, "", name, max_fps).await
    }

    /// Opens a camcast.v1 stream of the camera named `camera` ("": the server's default
    /// camera): PullFrames, or StreamFrames from a server without it. A server without that
    /// camera answers NOT_FOUND, naming the cameras it has.
    pub async fn open_camera(
        channel: Conn,
        camera: &str,
        name: &str,
        max_fps: f32,
    ) -> Result<FrameStream, Status> {
        match Self::pull_camera(channel.clone(), camera, name, max_fps).await {
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                tracing::debug!("the server has no PullFrames: streaming instead");
                Self::stream_camera(channel, camera, name, max_fps).await
            }
            pulled => pulled,
        }
    }

    /// Opens camcast.v1's PullFrames of the default camera; see [`FrameStream::pull_camera`].
    pub async fn pull(channel: Conn, name: &str, max_fps: f32) -> Result<FrameStream, Status> {
        Self::pull_camera(channel, "", name, max_fps).await
    }

    /// Opens camcast.v1's PullFrames of `camera` ("": the default); its first request asks
    /// for the first frame.
    pub async fn pull_camera(
        channel: Conn,
        camera: &str,
        name: &str,
        max_fps: f32,
    ) -> Result<FrameStream, Status> {
        let (requests, queue) = tokio::sync::mpsc::channel(1);
        let first = pb::v1::PullRequest {
            viewer_name: name.into(),
            max_fps,
            camera: camera.into(),
        };
        requests
            .try_send(first)
            .expect("a new channel has room for one request");
        let frames = camera_client(channel)
            .pull_frames(tokio_stream::wrappers::ReceiverStream::new(queue))
            .await?
            .into_inner();
        Ok(FrameStream::Pull(PullStream {
            requests,
            frames,
            asked: true,
        }))
    }

    /// Opens camcast.v1's StreamFrames of the default camera.
    pub async fn stream(channel: Conn, name: &str, max_fps: f32) -> Result<FrameStream, Status> {
        Self::stream_camera(channel, "", name, max_fps).await
    }

    /// Opens camcast.v1's StreamFrames of `camera` ("": the default).
    pub async fn stream_camera(
        channel: Conn,
        camera: &str,
        name: &str,
        max_fps: f32,
    ) -> Result<FrameStream, Status> {
        let req = pb::v1::StreamRequest {
            viewer_name: name.into(),
            max_fps,
            camera: camera.into(),
        };
        let frames = camera_client(channel).stream_frames(req).await?;
        Ok(FrameStream::V1(frames.into_inner()))
    }

    /// The next frame; `Ok(None)` when the server ended the stream cleanly. On PullFrames
    /// this is when the frame is asked for, so it is as fresh as the moment of the call.
    pub async fn next(&mut self) -> Result<Option<Received>, Status> {
        Ok(match self {
            FrameStream::Pull(p) => {
                if !p.asked {
                    // The call's request side is gone only if the call is: its status follows.
                    let _ = p.requests.send(pb::v1::PullRequest::default()).await;
                    p.asked = true;
                }
                let frame = p.frames.message().await?;
                p.asked = false;
                frame.map(Received::from)
            }
            FrameStream::V1(s) => s.message().await?.map(Received::from),
            FrameStream::Tutorial(s) => s.message().await?.map(|m| Received {
                jpeg: m.image_bytes,
                seq: None,
                captured_at: None,
                size: None,
                skipped: 0,
            }),
        })
    }
}

/// A v1 client with the frame-size limit raised to match the server's.
pub fn camera_client(channel: Conn) -> pb::v1::camera_client::CameraClient<Conn> {
    pb::v1::camera_client::CameraClient::new(channel).max_decoding_message_size(MAX_FRAME_BYTES)
}

#[cfg(test)]
mod tests {
    use super::{endpoint_uri, SecurityArgs};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        security: SecurityArgs,
    }

    fn options(args: &[&str]) -> Result<super::ClientOptions, String> {
        let cli = Cli::try_parse_from(std::iter::once("view").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.security.options()
    }

    #[test]
    fn security_flags_become_client_options() {
        let none = options(&[]).unwrap();
        assert!(none.tls.is_none() && none.token.is_none());
        let tls = options(&["--ca", "/c.pem", "--tls-name", "cam.local"]).unwrap();
        let t = tls.tls.unwrap();
        assert_eq!(t.ca.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(t.server_name.as_deref(), Some("cam.local"));
        assert!(options(&["--insecure-skip-verify"]).unwrap().tls.is_some());
        assert!(
            options(&["--cert", "/c.pem"]).is_err(),
            "--cert needs --key"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "# mine\n\n  s3cret-token-value \n").unwrap();
        let t = options(&["--token-file", f.to_str().unwrap()]).unwrap();
        assert_eq!(t.token.as_deref(), Some("s3cret-token-value"));
        let e = options(&["--token-file", "/nonexistent"]).unwrap_err();
        assert!(e.contains("cannot read token file /nonexistent"), "{e}");
    }

    #[test]
    fn debug_output_hides_the_token() {
        let secret = "s3cret-token-value-0123456789";
        let opts = options(&["--token", secret, "--ca", "/c.pem"]).unwrap();
        let shown = format!("{opts:?} {opts:#?}");
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("token: Some(\"(hidden)\")"), "{shown}");
        assert!(shown.contains("/c.pem"), "the rest is still shown: {shown}");
        let cli = Cli::try_parse_from(["view", "--token", secret]).unwrap();
        let args = format!("{:?}", cli.security);
        assert!(!args.contains(secret), "{args}");
    }

    #[test]
    fn a_token_needs_verified_tls_unless_the_user_opts_out() {
        let safe = |target: &str, args: &[&str]| {
            let opts = options(args).unwrap();
            super::check_token_is_safe(target, &opts).is_ok()
        };
        let t = ["--token", "t0ken"];
        assert!(safe("cam:1", &[]), "no token, nothing to protect");
        assert!(!safe("cam:1", &t), "clear text");
        assert!(!safe("http://cam:1", &t));
        assert!(safe("https://cam:1", &t), "system CAs");
        assert!(safe("cam:1", &[&t[..], &["--ca", "/c.pem"]].concat()));
        assert!(safe("cam:1", &[&t[..], &["--tls-name", "cam"]].concat()));
        let skip = [&t[..], &["--insecure-skip-verify"]].concat();
        assert!(!safe("cam:1", &skip), "anyone can pretend to be the camera");
        assert!(!safe("https://cam:1", &skip));
        assert!(safe(
            "cam:1",
            &[&t[..], &["--insecure-send-token"]].concat()
        ));
        let opts = options(&t).unwrap();
        let msg = super::check_token_is_safe("cam:1", &opts)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("clear text") && msg.contains("--ca"), "{msg}");
    }

    #[test]
    fn targets_become_uris() {
        assert_eq!(endpoint_uri("cam.local"), "http://cam.local:1234");
        assert_eq!(endpoint_uri("cam.local:99"), "http://cam.local:99");
        assert_eq!(endpoint_uri("10.0.0.7"), "http://10.0.0.7:1234");
        assert_eq!(endpoint_uri("::1"), "http://[::1]:1234");
        assert_eq!(endpoint_uri("[::1]:5"), "http://[::1]:5");
        assert_eq!(endpoint_uri("http://x:1"), "http://x:1");
    }
}
