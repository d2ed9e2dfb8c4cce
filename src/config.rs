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

use crate::hub::HubConfig;
use crate::led::LedSpec;
use crate::source::v4l2::{parse_control, FormatChoice};
use crate::source::{chaos::ChaosConfig, pattern::PatternConfig, CameraRequest, SourceSpec};

/// Largest message either side accepts: a 4K MJPEG frame can exceed tonic's 4 MiB default.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Largest request the server decodes: requests carry a name and a number.
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

    /// Viewers admitted at once, across both APIs; more get RESOURCE_EXHAUSTED [default: 64].
    #[arg(long, value_name = "N")]
    pub max_viewers: Option<Count>,

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

    /// Log filter, e.g. `info` or `camcast=debug` [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,

    /// Status LED: `sysfs:NAME` (Linux LED class, e.g. the Pi's onboard `ACT`),
    /// `gpio:PIN[:active-low]` (BCM pin number) or `none` [default: sysfs:ACT].
    #[arg(long, value_name = "LED")]
    pub led: Option<LedSpec>,

    /// Fault injection for `--source chaos:SOURCE` (testing only): probabilities per frame,
    /// `error=P,stall=P,corrupt=P,seed=N` [default: error=0.01,stall=0.002,corrupt=0.02].
    #[arg(long, value_name = "RATES", hide_short_help = true)]
    pub chaos: Option<ChaosConfig>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List V4L2 cameras with their formats, frame sizes, frame rates and controls, then exit.
    Devices,
}

/// The TOML file's shape. Unknown keys are errors: a typo must not be silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    camera: CameraSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    listen: Option<SocketAddr>,
    max_viewers: Option<Count>,
    max_name_len: Option<Count>,
    keepalive_secs: Option<Seconds>,
    keepalive_timeout_secs: Option<Seconds>,
    log: Option<String>,
    led: Option<LedSpec>,
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
    pub source: SourceSpec,
    /// What to capture: size, rate, quality, device, format, controls.
    pub camera: CameraRequest,
    pub hub: HubConfig,
    pub max_name_len: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// How long a snapshot waits for a frame (camera start-up included).
    pub snapshot_timeout: Duration,
    pub log: String,
    pub led: LedSpec,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "[::]:1234".parse().expect("valid default address"),
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
            snapshot_timeout: Duration::from_secs(5),
            log: "info".into(),
            led: LedSpec::default(),
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
}

impl Config {
    /// Merges flags over the file (if any) over defaults.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Ok(Self::merge(cli, file))
    }

    /// Parses TOML text as a config file would be (for tests and tools).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Ok(Self::merge(&Cli::parse_from(["camcast"]), file))
    }

    fn merge(cli: &Cli, file: FileConfig) -> Config {
        let d = Config::default();
        let (s, c) = (file.server, file.camera);
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
        Config {
            listen: cli.listen.or(s.listen).unwrap_or(d.listen),
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
                linger: pick(cli.linger, c.linger_secs).map_or(d.hub.linger, |s| s.0),
                always_on: cli.always_on || c.always_on.unwrap_or(false),
                ..d.hub
            },
            max_name_len: pick(cli.max_name_len, s.max_name_len).map_or(d.max_name_len, |n| n.0),
            keepalive_interval: pick(cli.keepalive, s.keepalive_secs)
                .map_or(d.keepalive_interval, |s| s.0),
            keepalive_timeout: pick(cli.keepalive_timeout, s.keepalive_timeout_secs)
                .map_or(d.keepalive_timeout, |s| s.0),
            snapshot_timeout: d.snapshot_timeout,
            log: cli.log.clone().or(s.log).unwrap_or(d.log),
            led: cli.led.clone().or(s.led).unwrap_or(d.led),
        }
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
    }

    #[test]
    fn flags_win_over_file_and_file_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("camcast.toml");
        std::fs::write(
            &path,
            "[server]\nmax_viewers = 5\nlisten = \"127.0.0.1:9000\"\n[camera]\nfps = 15\nsize = \"320x240\"\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["camcast", "--config", path.to_str().unwrap(), "--fps", "10"]);
        let c = Config::load(&cli).unwrap();
        let p = c.camera.pattern;
        assert_eq!(p.fps, 10.0, "flag wins");
        assert_eq!(c.hub.max_viewers, 5, "file wins over default");
        assert_eq!((p.width, p.height), (320, 240));
        assert_eq!(c.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(p.quality, 80, "default");
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
