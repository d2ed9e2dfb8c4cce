//! Configuration: command-line flags and an optional TOML file, merged once at start into one
//! validated [`Config`]. Flags win over the file; the file wins over defaults. Nothing else in
//! camcast reads the environment or files for settings.
//!
//! Value types validate themselves both as flags (`FromStr`) and as TOML values (`TryFrom`), so
//! a bad value in the file is reported by the TOML parser with its line and column.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::admission::ConnLimits;
use crate::hub::HubConfig;
use crate::led::LedSpec;
use crate::source::v4l2::{parse_control, FormatChoice};
use crate::source::{chaos::ChaosConfig, pattern::PatternConfig, CameraRequest, SourceSpec};
use crate::tls::ServerTlsFiles;

/// Largest message either side accepts: a 4K MJPEG frame can exceed tonic's 4 MiB default.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Default for the largest request the server decodes: requests carry a name and a number.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

#[derive(Debug, Parser)]
#[command(
    name = "camcast",
    version,
    about = "Serve a camera to the LAN over gRPC.",
    long_about = "Serve a camera to the LAN over gRPC.\n\n\
        camcast captures frames once and streams the newest one to every viewer. It speaks the \
        original tutorial's `WebcamStreaming` contract (any stock grpcio client works) and the \
        richer `camcast.v1.Camera` API, plus gRPC health and reflection (try `grpcurl -plaintext \
        HOST:1234 list`).\n\n\
        With no camera it serves a moving test pattern, so `camcast` alone is a working server.",
    after_help = "Settings come from flags, then the --config file, then defaults.\n\
        Logging: --log takes a tracing filter (e.g. `debug`, `camcast=debug,h2=info`); RUST_LOG works too.\n\
        Watch it: camcast-view 127.0.0.1:1234 --stats"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML file with the same settings (see deploy/camcast.toml for every key).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address and port to listen on [default: [::]:1234].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Also serve the browser page, /stream.mjpg, /snapshot.jpg and /healthz over HTTP on
    /// this address and port, e.g. [::]:8080 [default: off].
    #[arg(long, value_name = "ADDR:PORT")]
    pub http: Option<SocketAddr>,

    /// Frame source: `auto` (--device, else the first camera, else the test pattern),
    /// `test-pattern`, `v4l2`, `v4l2:/dev/videoN`, a device path, or `libcamera[:N]` for a Pi
    /// camera module (builds with the `libcamera` feature) [default: auto].
    #[arg(long, value_name = "SOURCE")]
    pub source: Option<SourceSpec>,

    /// V4L2 camera device; a stable /dev/v4l/by-id/... link survives replugging. If it is
    /// absent, camcast waits for it [default: the first camera found].
    #[arg(long, value_name = "PATH")]
    pub device: Option<PathBuf>,

    /// Pixel format to ask the camera for: `auto` (MJPEG passed through if offered at the
    /// size and rate, else YUYV, else NV12, encoded here), `mjpeg`, `yuyv` or `nv12` [default: auto].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<FormatChoice>,

    /// Camera control to set, NAME=VALUE (repeatable), e.g. "Power Line Frequency=1".
    /// `camcast devices` lists each camera's controls.
    #[arg(long = "control", value_name = "NAME=VALUE", value_parser = parse_control)]
    pub controls: Vec<(String, i64)>,

    /// Frame size, WIDTHxHEIGHT, both even [default: 640x480].
    #[arg(long, value_name = "WxH")]
    pub size: Option<Size>,

    /// Frames per second to capture [default: 30].
    #[arg(long)]
    pub fps: Option<Fps>,

    /// JPEG quality (1-100) for frames camcast encodes [default: 80].
    #[arg(long)]
    pub quality: Option<Quality>,

    /// Viewers admitted at once, across gRPC and HTTP; more get RESOURCE_EXHAUSTED (gRPC) or
    /// 503 (HTTP) [default: 64].
    #[arg(long, value_name = "N")]
    pub max_viewers: Option<Count>,

    /// Of those, viewers one host may have (a remote IPv6 site counts as one host per /64);
    /// more are refused with the limit. Raise it for a relay or proxy [default: 8].
    #[arg(long, value_name = "N")]
    pub max_viewers_per_addr: Option<Count>,

    /// Seconds capture keeps running after the last viewer leaves [default: 2].
    #[arg(long, value_name = "SECS")]
    pub linger: Option<Seconds>,

    /// Capture continuously, even with nobody watching.
    #[arg(long)]
    pub always_on: bool,

    /// Longest viewer name accepted, in bytes [default: 64].
    #[arg(long, value_name = "BYTES")]
    pub max_name_len: Option<Count>,

    /// Seconds between HTTP/2 keepalive pings to viewers [default: 10].
    #[arg(long, value_name = "SECS")]
    pub keepalive: Option<Seconds>,

    /// Seconds without a ping reply before a viewer is dropped as vanished [default: 20].
    #[arg(long, value_name = "SECS")]
    pub keepalive_timeout: Option<Seconds>,

    /// Connections one IP address may hold at once; more are closed at accept [default: 16].
    #[arg(long, value_name = "N")]
    pub max_conns_per_addr: Option<Count>,

    /// HTTP/2 streams (calls) one connection may have open at once [default: 32].
    #[arg(long, value_name = "N")]
    pub max_streams_per_conn: Option<Count>,

    /// Largest gRPC request message decoded, in bytes [default: 16384].
    #[arg(long, value_name = "BYTES")]
    pub max_request_bytes: Option<ByteCount>,

    /// Largest HTTP/2 header block (metadata) accepted, in bytes [default: 16384].
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<ByteCount>,

    /// Seconds a new connection has to start its first request (TLS handshake included) [default: 10].
    #[arg(long, value_name = "SECS")]
    pub handshake_timeout: Option<Seconds>,

    /// Seconds a connection may stay open with no request in flight [default: 120].
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<Seconds>,

    /// Do not serve the tutorial's `WebcamStreaming` contract (it predates tokens; stock
    /// clients can still send one as metadata).
    #[arg(long)]
    pub no_seed: bool,

    /// TLS certificate chain (PEM); with --tls-key, serves TLS only. `camcast gen-cert` makes one.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: viewers must present a certificate chaining to one in this PEM bundle.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Viewer tokens, one per line: every gRPC call and HTTP request (health excepted) must
    /// carry `authorization: Bearer TOKEN` (HTTP also `?token=`). `camcast gen-token` makes one.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Log filter, e.g. `info` or `camcast=debug` [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,

    /// Status LED: `sysfs:NAME` (Linux LED class, e.g. the Pi's onboard `ACT`),
    /// `gpio:PIN[:active-low]` (BCM pin number) or `none` [default: sysfs:ACT].
    #[arg(long, value_name = "LED")]
    pub led: Option<LedSpec>,

    /// Do not advertise on the LAN over mDNS/DNS-SD (`_camcast._tcp`), which is on by default.
    #[arg(long)]
    pub no_mdns: bool,

    /// Fault injection for `--source chaos:SOURCE` (testing only): probabilities per frame,
    /// `error=P,stall=P,corrupt=P,seed=N` [default: error=0.01,stall=0.002,corrupt=0.02].
    #[arg(long, value_name = "RATES", hide_short_help = true)]
    pub chaos: Option<ChaosConfig>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List V4L2 cameras with their formats, frame sizes, frame rates and controls, then exit.
    Devices,
    /// Write a self-signed TLS certificate and key (cert.pem, key.pem) for this camera, or with
    /// --client one for a viewer (mutual TLS), and print its SHA-256 fingerprint.
    GenCert {
        /// Directory to write cert.pem and key.pem into.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// Name or IP address the certificate is for (repeatable) [default: this host's
        /// name, NAME.local, localhost, 127.0.0.1, ::1; for --client: "viewer"].
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// Make a viewer certificate for mutual TLS instead of a server one.
        #[arg(long)]
        client: bool,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Print a new random viewer token (64 hex digits) for the --token-file.
    GenToken,
}

/// The TOML file's shape. Unknown keys are errors: a typo must not be silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    camera: CameraSection,
    #[serde(default)]
    tls: TlsSection,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default)]
    http: HttpSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    listen: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<SocketAddr>,
    max_viewers: Option<Count>,
    max_viewers_per_address: Option<Count>,
    max_name_len: Option<Count>,
    keepalive_secs: Option<Seconds>,
    keepalive_timeout_secs: Option<Seconds>,
    max_connections_per_address: Option<Count>,
    max_streams_per_connection: Option<Count>,
    max_request_bytes: Option<ByteCount>,
    max_header_list_bytes: Option<ByteCount>,
    handshake_timeout_secs: Option<Seconds>,
    idle_timeout_secs: Option<Seconds>,
    seed_contract: Option<bool>,
    log: Option<String>,
    led: Option<LedSpec>,
    mdns: Option<bool>,
}

/// `[tls]`: cert and key together turn TLS on; client_ca adds mutual TLS.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsSection {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
}

/// `[auth]`: viewer tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CameraSection {
    source: Option<SourceSpec>,
    device: Option<PathBuf>,
    format: Option<FormatChoice>,
    /// `[camera.controls]`: control name = value.
    #[serde(default)]
    controls: std::collections::BTreeMap<String, i64>,
    size: Option<Size>,
    fps: Option<Fps>,
    quality: Option<Quality>,
    always_on: Option<bool>,
    linger_secs: Option<Seconds>,
    chaos: Option<ChaosConfig>,
}

/// The validated, merged configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where to serve HTTP (page, MJPEG, snapshot, health); `None` = no HTTP.
    pub http: Option<SocketAddr>,
    pub source: SourceSpec,
    /// What to capture: size, rate, quality, device, format, controls.
    pub camera: CameraRequest,
    pub hub: HubConfig,
    pub max_name_len: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Per-address connection cap and the handshake/idle timeouts.
    pub conn: ConnLimits,
    pub max_streams_per_connection: u32,
    pub max_request_bytes: usize,
    pub max_header_list_bytes: u32,
    /// Serve the seed `WebcamStreaming` contract.
    pub seed_contract: bool,
    /// TLS on, with these files.
    pub tls: Option<ServerTlsFiles>,
    /// Viewer tokens required, from this file.
    pub token_file: Option<PathBuf>,
    /// How long a snapshot waits for a frame (camera start-up included).
    pub snapshot_timeout: Duration,
    pub log: String,
    pub led: LedSpec,
    /// Advertise `_camcast._tcp` over mDNS.
    pub mdns: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "[::]:1234".parse().expect("valid default address"),
            http: None,
            source: SourceSpec::Auto,
            camera: CameraRequest {
                pattern: PatternConfig {
                    width: 640,
                    height: 480,
                    fps: 30.0,
                    quality: 80,
                },
                device: None,
                format: FormatChoice::Auto,
                controls: Vec::new(),
                chaos: ChaosConfig::default(),
            },
            hub: HubConfig::default(),
            max_name_len: 64,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            conn: ConnLimits::default(),
            max_streams_per_connection: 32,
            max_request_bytes: MAX_REQUEST_BYTES,
            max_header_list_bytes: 16 * 1024,
            seed_contract: true,
            tls: None,
            token_file: None,
            snapshot_timeout: Duration::from_secs(5),
            log: "info".into(),
            led: LedSpec::default(),
            mdns: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Merges flags over the file (if any) over defaults.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(cli, file).map_err(ConfigError::Invalid)
    }

    /// Parses TOML text as a config file would be (for tests and tools).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Self::merge(&Cli::parse_from(["camcast"]), file)
    }

    fn merge(cli: &Cli, file: FileConfig) -> Result<Config, String> {
        let d = Config::default();
        let (s, c) = (file.server, file.camera);
        let tls = merge_tls(cli, file.tls)?;
        let keepalive_interval =
            pick(cli.keepalive, s.keepalive_secs).map_or(d.keepalive_interval, |s| s.0);
        let dp = d.camera.pattern;
        let size = cli.size.or(c.size).unwrap_or(Size {
            width: dp.width,
            height: dp.height,
        });
        // File controls first, then flags; a flag overrides the file's value for that name.
        let mut controls: Vec<(String, i64)> = c.controls.into_iter().collect();
        for (name, value) in &cli.controls {
            controls.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            controls.push((name.clone(), *value));
        }
        let conns_per_address = pick(cli.max_conns_per_addr, s.max_connections_per_address)
            .map_or(d.conn.per_address, |n| n.0);
        // An HTTP viewer holds a connection: past the connection cap it would be closed
        // unanswered instead of refused with a reason. So the viewer cap stays within it.
        let viewers_per_address = match pick(cli.max_viewers_per_addr, s.max_viewers_per_address) {
            Some(n) if n.0 > conns_per_address => {
                return Err(format!(
                    "max_viewers_per_address ({}) is above max_connections_per_address \
                     ({conns_per_address}); raise both",
                    n.0
                ))
            }
            Some(n) => n.0,
            None => d.hub.max_viewers_per_address.min(conns_per_address),
        };
        Ok(Config {
            listen: cli.listen.or(s.listen).unwrap_or(d.listen),
            http: cli.http.or(file.http.listen),
            source: cli.source.clone().or(c.source).unwrap_or(d.source),
            camera: CameraRequest {
                pattern: PatternConfig {
                    width: size.width,
                    height: size.height,
                    fps: cli.fps.or(c.fps).map_or(dp.fps, |f| f.0),
                    quality: cli.quality.or(c.quality).map_or(dp.quality, |q| q.0),
                },
                device: cli.device.clone().or(c.device),
                format: cli.format.or(c.format).unwrap_or(d.camera.format),
                controls,
                chaos: pick(cli.chaos, c.chaos).unwrap_or(d.camera.chaos),
            },
            hub: HubConfig {
                max_viewers: pick(cli.max_viewers, s.max_viewers)
                    .map_or(d.hub.max_viewers, |n| n.0),
                max_viewers_per_address: viewers_per_address,
                linger: pick(cli.linger, c.linger_secs).map_or(d.hub.linger, |s| s.0),
                always_on: cli.always_on || c.always_on.unwrap_or(false),
                ..d.hub
            },
            max_name_len: pick(cli.max_name_len, s.max_name_len).map_or(d.max_name_len, |n| n.0),
            keepalive_interval,
            keepalive_timeout: pick(cli.keepalive_timeout, s.keepalive_timeout_secs)
                .map_or(d.keepalive_timeout, |s| s.0),
            conn: ConnLimits {
                per_address: conns_per_address,
                handshake_timeout: pick(cli.handshake_timeout, s.handshake_timeout_secs)
                    .map_or(d.conn.handshake_timeout, |s| s.0),
                idle_timeout: pick(cli.idle_timeout, s.idle_timeout_secs)
                    .map_or(d.conn.idle_timeout, |s| s.0),
                tcp_keepalive: keepalive_interval,
            },
            max_streams_per_connection: pick(
                cli.max_streams_per_conn,
                s.max_streams_per_connection,
            )
            .map_or(d.max_streams_per_connection, |n| n.0 as u32),
            max_request_bytes: pick(cli.max_request_bytes, s.max_request_bytes)
                .map_or(d.max_request_bytes, |n| n.0),
            max_header_list_bytes: pick(cli.max_header_bytes, s.max_header_list_bytes)
                .map_or(d.max_header_list_bytes, |n| n.0 as u32),
            seed_contract: !cli.no_seed && s.seed_contract.unwrap_or(d.seed_contract),
            tls,
            token_file: cli.token_file.clone().or(file.auth.token_file),
            snapshot_timeout: d.snapshot_timeout,
            log: cli.log.clone().or(s.log).unwrap_or(d.log),
            led: cli.led.clone().or(s.led).unwrap_or(d.led),
            mdns: !cli.no_mdns && s.mdns.unwrap_or(d.mdns),
        })
    }
}

/// TLS is on when a certificate and key are both given (flags as a set, else the file's).
fn merge_tls(cli: &Cli, file: TlsSection) -> Result<Option<ServerTlsFiles>, String> {
    let (cert, key, client_ca) = if cli.tls_cert.is_some() {
        (
            cli.tls_cert.clone(),
            cli.tls_key.clone(),
            cli.tls_client_ca.clone(),
        )
    } else {
        (file.cert, file.key, file.client_ca)
    };
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ServerTlsFiles {
            cert,
            key,
            client_ca,
        })),
        (None, None) if client_ca.is_none() => Ok(None),
        (None, None) => Err("[tls] client_ca needs cert and key as well".into()),
        _ => Err("[tls] needs both cert and key (or neither, for plain gRPC)".into()),
    }
}

fn pick<T>(flag: Option<T>, file: Option<T>) -> Option<T> {
    flag.or(file)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Defines a validated value type usable both as a clap flag and as a TOML value.
macro_rules! validated {
    ($(#[$doc:meta])* $name:ident($inner:ty) from $raw:ty as $raw_name:literal, $parse:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
        #[serde(try_from = $raw_name)]
        pub struct $name(pub $inner);

        impl TryFrom<$raw> for $name {
            type Error = String;
            fn try_from(raw: $raw) -> Result<Self, String> {
                let parse: fn($raw) -> Result<$inner, String> = $parse;
                parse(raw).map($name)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let raw: $raw = s.trim().parse().map_err(|e| format!("{s:?}: {e}"))?;
                Self::try_from(raw)
            }
        }
    };
}

validated!(
    /// Frames per second, 0 < fps ≤ 240.
    Fps(f64) from f64 as "f64", |v| {
        if v.is_finite() && v > 0.0 && v <= 240.0 { Ok(v) } else { Err(format!("fps must be in (0, 240], got {v}")) }
    }
);

validated!(
    /// JPEG quality, 1..=100.
    Quality(u8) from i64 as "i64", |v| {
        u8::try_from(v).ok().filter(|q| (1..=100).contains(q)).ok_or_else(|| format!("quality must be 1-100, got {v}"))
    }
);

validated!(
    /// A positive count, at most 100000.
    Count(usize) from i64 as "i64", |v| {
        usize::try_from(v).ok().filter(|n| (1..=100_000).contains(n)).ok_or_else(|| format!("must be 1-100000, got {v}"))
    }
);

validated!(
    /// A size in bytes, 64 to 64 MiB.
    ByteCount(usize) from i64 as "i64", |v| {
        usize::try_from(v).ok().filter(|n| (64..=64 << 20).contains(n)).ok_or_else(|| format!("bytes must be 64-67108864, got {v}"))
    }
);

validated!(
    /// A duration in seconds, 0 to 86400 (fractions allowed).
    Seconds(Duration) from f64 as "f64", |v| {
        if v.is_finite() && (0.0..=86_400.0).contains(&v) { Ok(Duration::from_secs_f64(v)) } else { Err(format!("seconds must be 0-86400, got {v}")) }
    }
);

/// A frame size, `WIDTHxHEIGHT`. Both even (4:2:0 chroma) and 16..=8192.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("size {s:?} is not WIDTHxHEIGHT, e.g. 1280x720");
        let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let width: u32 = w.trim().parse().map_err(|_| bad())?;
        let height: u32 = h.trim().parse().map_err(|_| bad())?;
        for (what, v) in [("width", width), ("height", height)] {
            if !(16..=8192).contains(&v) || v % 2 != 0 {
                return Err(format!("{what} must be even and 16-8192, got {v}"));
            }
        }
        Ok(Size { width, height })
    }
}

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl<'de> Deserialize<'de> for SourceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_file_or_flags() {
        let c = Config::load(&Cli::parse_from(["camcast"])).unwrap();
        assert_eq!(c.listen, "[::]:1234".parse().unwrap());
        assert_eq!(
            (
                c.camera.pattern.width,
                c.camera.pattern.height,
                c.camera.pattern.fps
            ),
            (640, 480, 30.0)
        );
        assert_eq!(c.hub.max_viewers, 64);
        assert!(!c.hub.always_on);
        assert_eq!(c.http, None, "HTTP is off unless asked for");
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("camcast.toml");
        std::fs::write(
            &path,
            "[server]\nmax_viewers = 5\nlisten = \"127.0.0.1:9000\"\n[camera]\nfps = 15\nsize = \"320x240\"\n[http]\nlisten = \"[::]:8080\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["camcast", "--config", path.to_str().unwrap(), "--fps", "10"]);
        let c = Config::load(&cli).unwrap();
        let p = c.camera.pattern;
        assert_eq!(p.fps, 10.0, "flag wins");
        assert_eq!(c.hub.max_viewers, 5, "file wins over default");
        assert_eq!((p.width, p.height), (320, 240));
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.http, Some("[::]:8080".parse().unwrap()));
        assert_eq!(p.quality, 80, "default");
        let cli = Cli::parse_from([
            "camcast",
            "--config",
            path.to_str().unwrap(),
            "--http",
            "127.0.0.1:8081",
        ]);
        let c = Config::load(&cli).unwrap();
        assert_eq!(c.http, Some("127.0.0.1:8081".parse().unwrap()), "flag wins");
    }

    #[test]
    fn camera_controls_merge_file_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("camcast.toml");
        std::fs::write(
            &path,
            "[camera]\ndevice = \"/dev/video2\"\nformat = \"yuyv\"\n[camera.controls]\nBrightness = 10\n\"Power Line Frequency\" = 1\n",
        )
        .unwrap();
        let cli = Cli::parse_from([
            "camcast",
            "--config",
            path.to_str().unwrap(),
            "--control",
            "brightness=99",
        ]);
        let c = Config::load(&cli).unwrap();
        assert_eq!(c.camera.device, Some(PathBuf::from("/dev/video2")));
        assert_eq!(c.camera.format, FormatChoice::Yuyv);
        assert_eq!(
            c.camera.controls,
            vec![
                ("Power Line Frequency".to_string(), 1),
                ("brightness".to_string(), 99)
            ]
        );
    }

    #[test]
    fn viewers_per_address_has_a_key_a_flag_and_stays_under_the_connection_cap() {
        assert_eq!(Config::default().hub.max_viewers_per_address, 8);
        let c = Config::from_toml(
            "[server]\nmax_viewers_per_address = 20\nmax_connections_per_address = 20\n",
        )
        .unwrap();
        assert_eq!(c.hub.max_viewers_per_address, 20);
        let cli = Cli::parse_from(["camcast", "--max-viewers-per-addr", "3"]);
        assert_eq!(Config::load(&cli).unwrap().hub.max_viewers_per_address, 3);
        let err = Config::from_toml("[server]\nmax_viewers_per_address = 20\n").unwrap_err();
        assert!(err.contains("max_connections_per_address (16)"), "{err}");
        let fewer_conns = Config::from_toml("[server]\nmax_connections_per_address = 3\n");
        assert_eq!(
            fewer_conns.unwrap().hub.max_viewers_per_address,
            3,
            "follows it down"
        );
    }

    #[test]
    fn every_limit_has_a_key_and_a_default() {
        let d = Config::from_toml("").unwrap();
        assert_eq!(d.conn, ConnLimits::default());
        assert_eq!(d.conn.per_address, 16);
        assert_eq!(
            (
                d.max_streams_per_connection,
                d.max_request_bytes,
                d.max_header_list_bytes
            ),
            (32, 16384, 16384)
        );
        assert!(d.seed_contract && d.tls.is_none() && d.token_file.is_none());
        let c = Config::from_toml(
            "[server]\nmax_connections_per_address = 3\nmax_streams_per_connection = 4\n\
             max_request_bytes = 1024\nmax_header_list_bytes = 4096\nhandshake_timeout_secs = 2\n\
             idle_timeout_secs = 30\nkeepalive_secs = 7\nseed_contract = false\n\
             [tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nclient_ca = \"/ca.pem\"\n\
             [auth]\ntoken_file = \"/t\"\n",
        )
        .unwrap();
        assert_eq!(
            c.conn,
            ConnLimits {
                per_address: 3,
                handshake_timeout: Duration::from_secs(2),
                idle_timeout: Duration::from_secs(30),
                tcp_keepalive: Duration::from_secs(7),
            }
        );
        assert_eq!(
            (
                c.max_streams_per_connection,
                c.max_request_bytes,
                c.max_header_list_bytes
            ),
            (4, 1024, 4096)
        );
        assert!(!c.seed_contract);
        let tls = c.tls.unwrap();
        assert_eq!(tls.client_ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.token_file, Some(PathBuf::from("/t")));
    }

    /// The shipped config lists every key at its default, and its commented-out TLS and
    /// token lines are valid once uncommented.
    #[test]
    fn shipped_config_matches_the_defaults() {
        let text = include_str!("../deploy/camcast.toml");
        let (c, d) = (Config::from_toml(text).unwrap(), Config::default());
        assert_eq!(c.conn, d.conn);
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.hub.max_viewers, d.hub.max_viewers);
        assert_eq!(c.max_name_len, d.max_name_len);
        assert_eq!(
            (c.keepalive_interval, c.keepalive_timeout),
            (d.keepalive_interval, d.keepalive_timeout)
        );
        assert_eq!(
            (
                c.max_streams_per_connection,
                c.max_request_bytes,
                c.max_header_list_bytes
            ),
            (
                d.max_streams_per_connection,
                d.max_request_bytes,
                d.max_header_list_bytes
            )
        );
        assert_eq!(c.seed_contract, d.seed_contract);
        let enabled: String = text
            .lines()
            .map(|l| {
                let keys = ["# cert =", "# key =", "# client_ca =", "# token_file ="];
                if keys.iter().any(|k| l.starts_with(k)) {
                    &l[2..]
                } else {
                    l
                }
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let secured = Config::from_toml(&enabled).unwrap();
        assert!(secured.tls.unwrap().client_ca.is_some());
        assert!(secured.token_file.is_some());
    }

    #[test]
    fn tls_needs_cert_and_key_together() {
        let e = Config::from_toml("[tls]\ncert = \"/c.pem\"\n").unwrap_err();
        assert!(e.contains("both cert and key"), "{e}");
        let e = Config::from_toml("[tls]\nclient_ca = \"/ca.pem\"\n").unwrap_err();
        assert!(e.contains("client_ca needs"), "{e}");
        let e = Config::from_toml("[server]\nmax_request_bytes = 10\n").unwrap_err();
        assert!(e.contains("64-67108864"), "{e}");
        assert!(Cli::try_parse_from(["camcast", "--tls-cert", "/c.pem"]).is_err());
    }

    #[test]
    fn mdns_is_on_unless_the_flag_or_the_file_turns_it_off() {
        assert!(Config::from_toml("").unwrap().mdns);
        assert!(!Config::from_toml("[server]\nmdns = false\n").unwrap().mdns);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("camcast.toml");
        std::fs::write(&path, "[server]\nmdns = true\n").unwrap();
        let cli = Cli::parse_from(["camcast", "--config", path.to_str().unwrap(), "--no-mdns"]);
        assert!(!Config::load(&cli).unwrap().mdns, "the flag beats the file");
    }

    #[test]
    fn bad_value_in_file_names_its_line() {
        let err = Config::from_toml("[camera]\nsize = \"640x480\"\nfps = -3\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("fps must be in (0, 240]"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_line() {
        let err = Config::from_toml("[camera]\n\nframerate = 30\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("framerate"), "{err}");
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = Config::from_toml("[server]\nlisten = \n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let cli = Cli::parse_from(["camcast", "--config", "/nonexistent/camcast.toml"]);
        let err = Config::load(&cli).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/camcast.toml"), "{err}");
    }

    #[test]
    fn value_types_reject_nonsense() {
        assert!("641x480".parse::<Size>().is_err(), "odd width");
        assert!("640".parse::<Size>().is_err());
        assert!("8x8".parse::<Size>().is_err());
        assert_eq!("1280X720".parse::<Size>().unwrap().to_string(), "1280x720");
        assert!("0".parse::<Fps>().is_err());
        assert!("NaN".parse::<Fps>().is_err());
        assert!("101".parse::<Quality>().is_err());
        assert!("0".parse::<Count>().is_err());
        assert!("-1".parse::<Seconds>().is_err());
        assert_eq!(
            "0.5".parse::<Seconds>().unwrap().0,
            Duration::from_millis(500)
        );
        assert!(Cli::try_parse_from(["camcast", "--source", "webcam"]).is_err());
    }
}
