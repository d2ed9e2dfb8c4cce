//! Configuration: command-line flags and an optional TOML file, merged once at start into one
//! validated [`Config`]. Flags win over the file; the file wins over defaults. Nothing else in
//! camcast reads the environment or files for settings.
//!
//! Each setting is declared once, as a field of its TOML section's struct ([`ServerSection`],
//! [`CameraSection`], [`TlsSection`], [`AuthSection`], [`HttpSection`]). The field's name is
//! its key; its `#[arg]` makes the flag, spelled like the key with dashes (`[tls]` and `[http]`
//! keys carry their section as a prefix, `--tls-cert`, `--http-listen`; a setting that is on by
//! default is switched off with `--no-KEY`); its doc comment is the flag's help. Flags and the
//! file fill the same structs, which [`Config::resolve`] merges (flag over file) and turns into
//! validated values, with the defaults. So adding a setting touches three places: its field in
//! a section, its field in [`Config`], its line (with its default) in `resolve`; a test then
//! asks for its flag and its entry in deploy/camcast.toml. Older spellings of flags and keys
//! stay accepted as aliases.
//!
//! Cameras: the file's `camera` key is either today's one `[camera]` table or a list of
//! `[[camera]]` tables, each with a unique [`CameraName`] ("default" when unnamed); the camera
//! flags set the first camera, which is the default one. [`Config::cameras`] has them in order.
//!
//! Value types validate themselves both as flags (`FromStr`) and as TOML values (`TryFrom`), so
//! a bad value in the file is reported by the TOML parser with its line and column.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use serde::{Deserialize, Deserializer};

use crate::admission::ConnLimits;
use crate::hub::HubConfig;
use crate::led::LedSpec;
use crate::source::v4l2::{parse_control, FormatChoice};
use crate::source::{chaos::ChaosConfig, CameraRequest, CaptureSettings, SourceSpec};
use crate::tls::ServerTlsFiles;

/// The wire limits live in [`crate::wire`], where the client takes them too.
pub use crate::wire::{MAX_FRAME_BYTES, MAX_REQUEST_BYTES};

#[derive(Debug, Parser)]
#[command(
    name = "camcast",
    version,
    about = "Serve a camera to the LAN over gRPC.",
    long_about = "Serve a camera to the LAN over gRPC.\n\n\
        camcast captures frames once and streams the newest one to every viewer. It speaks the \
        tutorial API (the original tutorial's `WebcamStreaming` service: any stock grpcio client \
        works) and the richer `camcast.v1.Camera` API, plus gRPC health and reflection (try `grpcurl -plaintext \
        HOST:1234 list`).\n\n\
        With no camera it serves a moving test pattern, so `camcast` alone is a working server.",
    after_help = "Settings come from flags, then the --config file, then defaults. Each flag is \
        its TOML key with dashes ([tls] and [http] keys prefixed with their section; \
        `--no-KEY` for `KEY = false`).\n\
        Logging: --log takes a tracing filter (e.g. `debug`, `camcast=debug,h2=info`); RUST_LOG works too.\n\
        Watch it: camcast-view 127.0.0.1:1234 --stats"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// TOML file with the same settings (see deploy/camcast.toml for every key).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// List cameras (V4L2, and libcamera in builds with that feature) with their formats,
    /// frame sizes, frame rates and controls, then exit.
    Devices {
        /// Print one `[[camera]]` table per camera instead, to paste into the config file.
        #[arg(long)]
        toml: bool,
    },
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

/// Combining two layers of settings: `self` over `lower` (flags over the file).
trait Merge {
    fn over(self, lower: Self) -> Self;
}

impl<T> Merge for Option<T> {
    fn over(self, lower: Self) -> Self {
        self.or(lower)
    }
}

impl Merge for Vec<(String, i64)> {
    /// Camera controls add up: the file's, then the flags'. A flag replaces the file's value
    /// for the same control name.
    fn over(self, lower: Self) -> Self {
        let mut merged = lower;
        for (name, value) in self {
            merged.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
            merged.push((name, value));
        }
        merged
    }
}

/// Declares settings a TOML table and the flags share: the struct derives clap's `Args` and
/// serde's `Deserialize` (unknown keys are errors: a typo must not be silently ignored), gets
/// [`Merge`] field by field, and lists its keys in `KEYS`. A field's name is its key: give old
/// spellings as `#[serde(alias)]`, never `#[serde(rename)]`.
macro_rules! settings {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, Clone, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $name {
            /// The keys of this table, as the TOML file spells them.
            pub const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        impl Merge for $name {
            fn over(self, lower: Self) -> Self {
                $name { $( $field: self.$field.over(lower.$field), )* }
            }
        }
    };
}

settings! {
    /// Every setting, as the flags or the file give it (each one optional).
    pub struct Settings {
        #[command(flatten, next_help_heading = "Server ([server])")]
        #[serde(default)]
        pub server: ServerSection,
        /// The camera flags. They set the default camera (the first); the file's `[camera]`
        /// or `[[camera]]` tables arrive in `cameras`.
        #[command(flatten, next_help_heading = "Camera ([camera])")]
        #[serde(skip)]
        pub camera: CameraSection,
        /// The file's `[camera]` table or `[[camera]]` list (one TOML key, two shapes).
        #[arg(skip)]
        #[serde(rename = "camera")]
        pub cameras: Option<CameraTables>,
        #[command(flatten, next_help_heading = "HTTP ([http])")]
        #[serde(default)]
        pub http: HttpSection,
        #[command(flatten, next_help_heading = "TLS ([tls])")]
        #[serde(default)]
        pub tls: TlsSection,
        #[command(flatten, next_help_heading = "Viewer tokens ([auth])")]
        #[serde(default)]
        pub auth: AuthSection,
    }
}

settings! {
    /// `[server]`: the gRPC port, the limits on what a peer can take, the appliance around it.
    pub struct ServerSection {
        /// Address and port to listen on [default: [::]:1234].
        #[arg(long, value_name = "ADDR:PORT")]
        pub listen: Option<SocketAddr>,

        /// Viewers admitted at once, across gRPC and HTTP; more get RESOURCE_EXHAUSTED (gRPC)
        /// or 503 (HTTP) [default: 64].
        #[arg(long, value_name = "N")]
        pub max_viewers: Option<Count>,

        /// Of those, viewers one host may have (a remote IPv6 site counts as one host per
        /// /64); more are refused with the limit. At most max_connections_per_address. Raise it
        /// for a relay or proxy [default: 8].
        #[arg(long, alias = "max-viewers-per-addr", value_name = "N")]
        pub max_viewers_per_address: Option<Count>,

        /// Longest viewer name accepted, in bytes [default: 64].
        #[arg(long, value_name = "BYTES")]
        pub max_name_len: Option<Count>,

        /// Seconds between HTTP/2 keepalive pings to viewers [default: 10].
        #[arg(long, alias = "keepalive", value_name = "SECS")]
        pub keepalive_secs: Option<Seconds>,

        /// Seconds without a ping reply before a viewer is dropped as vanished [default: 20].
        #[arg(long, alias = "keepalive-timeout", value_name = "SECS")]
        pub keepalive_timeout_secs: Option<Seconds>,

        /// Connections one IP address may hold at once; more are closed at accept [default: 16].
        #[arg(long, alias = "max-conns-per-addr", value_name = "N")]
        pub max_connections_per_address: Option<Count>,

        /// HTTP/2 streams (calls) one connection may have open at once; at least the viewer cap
        /// + 16, so viewers beyond the cap are refused by name instead of queued [default: 32].
        #[arg(long, alias = "max-streams-per-conn", value_name = "N")]
        pub max_streams_per_connection: Option<Count>,

        /// Largest gRPC request message decoded, in bytes [default: 16384].
        #[arg(long, value_name = "BYTES")]
        pub max_request_bytes: Option<ByteCount>,

        /// Largest HTTP/2 header block (metadata) accepted, in bytes [default: 16384].
        #[arg(long, alias = "max-header-bytes", value_name = "BYTES")]
        pub max_header_list_bytes: Option<ByteCount>,

        /// Seconds a new connection has to start its first request (TLS handshake included)
        /// [default: 10].
        #[arg(long, alias = "handshake-timeout", value_name = "SECS")]
        pub handshake_timeout_secs: Option<Seconds>,

        /// Seconds a connection may stay open with no request in flight [default: 120].
        #[arg(long, alias = "idle-timeout", value_name = "SECS")]
        pub idle_timeout_secs: Option<Seconds>,

        /// Do not serve the tutorial API, `WebcamStreaming` (it predates tokens; stock clients
        /// can still send one as metadata). Key: `tutorial_api = false`; old spellings
        /// `seed_contract`, `--no-seed`.
        #[arg(long = "no-tutorial-api", alias = "no-seed", num_args = 0, default_missing_value = "false")]
        #[serde(alias = "seed_contract")]
        pub tutorial_api: Option<bool>,

        /// Log filter, e.g. `info` or `camcast=debug` [default: info].
        #[arg(long, value_name = "FILTER")]
        pub log: Option<String>,

        /// Status LED: `sysfs:NAME` (Linux LED class, e.g. the Pi's onboard `ACT`),
        /// `gpio:PIN[:active-low]` (BCM pin number) or `none` [default: sysfs:ACT].
        #[arg(long, value_name = "LED")]
        pub led: Option<LedSpec>,

        /// Do not advertise on the LAN over mDNS/DNS-SD (`_camcast._tcp`), which is on by
        /// default. Key: `mdns = false`.
        #[arg(long = "no-mdns", num_args = 0, default_missing_value = "false")]
        pub mdns: Option<bool>,
    }
}

settings! {
    /// `[camera]` (one camera) or each `[[camera]]` (several): what to capture, and when.
    pub struct CameraSection {
        /// The camera's name in URLs, API requests and the mDNS record (file only: on the
        /// command line there is one camera). See [`CameraName`] [default: "default"].
        #[arg(skip)]
        pub name: Option<CameraName>,

        /// Frame source: `auto` (--device, else the first camera, else the test pattern),
        /// `test-pattern`, `v4l2`, `v4l2:/dev/videoN`, a device path, or `libcamera[:N]` for a
        /// Pi camera module (builds with the `libcamera` feature) [default: auto].
        #[arg(long, value_name = "SOURCE")]
        pub source: Option<SourceSpec>,

        /// V4L2 camera device; a stable /dev/v4l/by-id/... link survives replugging. If it is
        /// absent, camcast waits for it [default: the first camera found].
        #[arg(long, value_name = "PATH")]
        pub device: Option<PathBuf>,

        /// Pixel format to ask the camera for: `auto` (MJPEG passed through if offered at the
        /// size and rate, else YUYV, else NV12, encoded here), `mjpeg`, `yuyv` or `nv12`
        /// [default: auto].
        #[arg(long, value_name = "FORMAT")]
        pub format: Option<FormatChoice>,

        /// Camera control to set, NAME=VALUE (repeatable), e.g. "Power Line Frequency=1";
        /// in the file, a `[camera.controls]` table. `camcast devices` lists each camera's
        /// controls.
        #[arg(long, visible_alias = "control", value_name = "NAME=VALUE", value_parser = parse_control)]
        #[serde(default, deserialize_with = "controls_table")]
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

        /// Capture continuously, even with nobody watching.
        #[arg(long, num_args = 0, default_missing_value = "true")]
        pub always_on: Option<bool>,

        /// Seconds capture keeps running after the last viewer leaves [default: 2].
        #[arg(long, alias = "linger", value_name = "SECS")]
        pub linger_secs: Option<Seconds>,

        /// Fault injection for `--source chaos:SOURCE` (testing only): probabilities per frame,
        /// `error=P,stall=P,corrupt=P,seed=N` [default: error=0.01,stall=0.002,corrupt=0.02].
        #[arg(long, value_name = "RATES", hide_short_help = true)]
        pub chaos: Option<ChaosConfig>,
    }
}

settings! {
    /// `[http]`: the browser page and MJPEG port.
    pub struct HttpSection {
        /// Also serve the browser page, /stream.mjpg, /snapshot.jpg and /healthz over HTTP on
        /// this address and port, e.g. [::]:8080 [default: off].
        #[arg(id = "http_listen", long = "http-listen", alias = "http", value_name = "ADDR:PORT")]
        pub listen: Option<SocketAddr>,
    }
}

settings! {
    /// `[tls]`: cert and key together turn TLS on; client_ca adds mutual TLS.
    pub struct TlsSection {
        /// TLS certificate chain (PEM); with --tls-key, serves TLS only. `camcast gen-cert`
        /// makes one.
        #[arg(id = "tls_cert", long = "tls-cert", value_name = "FILE", requires = "tls_key")]
        pub cert: Option<PathBuf>,

        /// TLS private key (PEM) for --tls-cert.
        #[arg(id = "tls_key", long = "tls-key", value_name = "FILE", requires = "tls_cert")]
        pub key: Option<PathBuf>,

        /// Mutual TLS: viewers must present a certificate chaining to one in this PEM bundle.
        #[arg(id = "tls_client_ca", long = "tls-client-ca", value_name = "FILE", requires = "tls_cert")]
        pub client_ca: Option<PathBuf>,
    }
}

settings! {
    /// `[auth]`: viewer tokens.
    pub struct AuthSection {
        /// Viewer tokens, one per line: every gRPC call and HTTP request (health excepted) must
        /// carry `authorization: Bearer TOKEN` (HTTP also `?token=`). `camcast gen-token` makes
        /// one.
        #[arg(long, value_name = "FILE")]
        pub token_file: Option<PathBuf>,
    }
}

/// `[camera.controls]`, a table of control name = value, in the file's (sorted) order.
fn controls_table<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, i64)>, D::Error> {
    Ok(BTreeMap::<String, i64>::deserialize(d)?
        .into_iter()
        .collect())
}

/// The file's `camera` key: one `[camera]` table (today's files) or a `[[camera]]` list.
#[derive(Debug, Clone)]
pub enum CameraTables {
    One(CameraSection),
    Many(Vec<CameraSection>),
}

impl Merge for CameraTables {
    /// Only the file has cameras: there is nothing below it.
    fn over(self, _lower: Self) -> Self {
        self
    }
}

impl<'de> Deserialize<'de> for CameraTables {
    /// A table or an array of tables, each read by `CameraSection`'s own deserializer (not an
    /// untagged enum, which would hide its errors and their line numbers behind "did not
    /// match any variant").
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
        struct Tables;
        impl<'de> serde::de::Visitor<'de> for Tables {
            type Value = CameraTables;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a [camera] table or [[camera]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<CameraTables, A::Error> {
                CameraSection::deserialize(MapAccessDeserializer::new(map)).map(CameraTables::One)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<CameraTables, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(CameraTables::Many)
            }
        }
        d.deserialize_any(Tables)
    }
}

/// A camera's name: 1-32 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`.
/// It appears in URL paths (`/cam/NAME/`), in gRPC requests, in Prometheus labels and in the
/// mDNS TXT record, so it is kept to what is safe in all of them unescaped (a DNS label's
/// characters, lower case only so that two names never differ by case alone).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct CameraName(String);

impl CameraName {
    /// The name of a camera that was given none (the only camera, as before names).
    pub const DEFAULT: &'static str = "default";

    pub fn default_name() -> CameraName {
        CameraName(Self::DEFAULT.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A valid name made from any label (a camera's product name), not among `taken`:
    /// lower-cased, runs of other characters turned into one '-', cut to fit, numbered
    /// ("-2", "-3") when taken; "camera" when nothing usable is left.
    pub fn from_label(label: &str, taken: &[CameraName]) -> CameraName {
        let mut base = String::new();
        for c in label.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                base.push(c);
            } else if !base.is_empty() && !base.ends_with('-') {
                base.push('-');
            }
        }
        base.truncate(24);
        let base = base.trim_end_matches('-');
        let base = if base.is_empty() { "camera" } else { base };
        (1..)
            .map(|n| match n {
                1 => base.to_string(),
                n => format!("{base}-{n}"),
            })
            .map(CameraName)
            .find(|name| !taken.contains(name))
            .expect("some number is free")
    }
}

/// `camcast devices --toml`: one `[[camera]]` table per camera found, ready to paste into the
/// config file, named from its product name and using its stable device path.
pub fn camera_tables(found: &crate::source::listing::Cameras) -> String {
    let quoted = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut names: Vec<CameraName> = Vec::new();
    let mut out = String::new();
    let mut table = |label: &str, comment: String, key: &str, value: String| {
        let name = CameraName::from_label(label, &names);
        out += &format!(
            "# {comment}\n[[camera]]\nname = {}\n{key} = {}\n\n",
            quoted(name.as_str()),
            quoted(&value)
        );
        names.push(name);
    };
    for report in found.v4l2.iter().filter(|r| r.is_camera()) {
        let comment = format!("{} ({}, {})", report.card, report.driver, report.bus);
        let device = report.preferred_path().display().to_string();
        table(&report.card, comment, "device", device);
    }
    #[cfg(feature = "libcamera")]
    for camera in found.libcamera.iter().flatten() {
        let source = format!("libcamera:{}", camera.index);
        table(&camera.model, camera.id.clone(), "source", source);
    }
    if out.is_empty() {
        out = "# no cameras found: with none configured, camcast serves its test pattern\n".into();
    }
    out
}

impl FromStr for CameraName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if (1..=32).contains(&s.len())
            && s.chars().all(allowed)
            && !s.starts_with('-')
            && !s.ends_with('-')
        {
            Ok(CameraName(s.into()))
        } else {
            Err(format!(
                "camera name {s:?} must be 1-32 characters of a-z, 0-9 and '-' (not first or \
                 last), e.g. \"door\" or \"printer-2\""
            ))
        }
    }
}

impl TryFrom<String> for CameraName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for CameraName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One camera, validated: its name, what to capture, and its own capture timing.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraConfig {
    pub name: CameraName,
    pub source: SourceSpec,
    /// What to capture: size, rate, quality, device, format, controls.
    pub request: CameraRequest,
    /// This camera's linger and always-on, when its table sets them; otherwise `Config::hub`'s.
    pub linger: Option<Duration>,
    pub always_on: Option<bool>,
}

impl CameraConfig {
    /// A camera with every capture setting at its default.
    pub fn named(name: CameraName) -> CameraConfig {
        let c = camera_config(CameraSection::default()).expect("the defaults are valid");
        CameraConfig { name, ..c }
    }

    /// This camera's hub settings: the shared caps, with its own linger and always-on.
    pub fn hub(&self, shared: &HubConfig) -> HubConfig {
        HubConfig {
            linger: self.linger.unwrap_or(shared.linger),
            always_on: self.always_on.unwrap_or(shared.always_on),
            ..shared.clone()
        }
    }
}

/// The cameras, and the default camera's linger and always-on (which go to `Config::hub`, so
/// that a one-camera config reads as it always has).
struct Cameras {
    list: Vec<CameraConfig>,
    default_linger: Option<Duration>,
    default_always_on: Option<bool>,
}

/// The camera flags over the file's first camera; every table validated; names unique.
fn camera_configs(flags: CameraSection, file: Option<CameraTables>) -> Result<Cameras, String> {
    let mut tables = match file {
        None => vec![CameraSection::default()],
        Some(CameraTables::One(table)) => vec![table],
        Some(CameraTables::Many(tables)) => tables,
    };
    let Some(first) = tables.first_mut() else {
        return Err("the config file's camera list is empty".into());
    };
    *first = flags.over(std::mem::take(first));
    let (default_linger, default_always_on) = (first.linger_secs.map(|s| s.0), first.always_on);
    first.linger_secs = None;
    first.always_on = None;
    let mut list: Vec<CameraConfig> = Vec::with_capacity(tables.len());
    for (i, table) in tables.into_iter().enumerate() {
        let camera = camera_config(table)?;
        if list.iter().any(|c| c.name == camera.name) {
            let hint = if camera.name.as_str() == CameraName::DEFAULT {
                " (a camera without a name is called \"default\": give each [[camera]] a name)"
            } else {
                ""
            };
            return Err(format!(
                "camera {} ([[camera]] number {}) has the same name as an earlier one; \
                 names must be unique{hint}",
                camera.name,
                i + 1
            ));
        }
        list.push(camera);
    }
    Ok(Cameras {
        list,
        default_linger,
        default_always_on,
    })
}

/// One camera table (already merged with any flags) with its defaults.
fn camera_config(c: CameraSection) -> Result<CameraConfig, String> {
    let size = c.size.unwrap_or(Size {
        width: 640,
        height: 480,
    });
    Ok(CameraConfig {
        name: c.name.unwrap_or_else(CameraName::default_name),
        source: c.source.unwrap_or(SourceSpec::Auto),
        request: CameraRequest {
            capture: CaptureSettings {
                width: size.width,
                height: size.height,
                fps: c.fps.map_or(30.0, |f| f.0),
                quality: c.quality.map_or(80, |q| q.0),
            },
            device: c.device,
            format: c.format.unwrap_or(FormatChoice::Auto),
            controls: c.controls,
            chaos: c.chaos.unwrap_or_default(),
        },
        linger: c.linger_secs.map(|s| s.0),
        always_on: c.always_on,
    })
}

/// The validated, merged configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where to serve HTTP (page, MJPEG, snapshot, health); `None` = no HTTP.
    pub http: Option<SocketAddr>,
    /// The cameras, at least one, names unique; the first is the default camera (the one
    /// the tutorial API, today's HTTP paths and an empty `camera` field serve).
    pub cameras: Vec<CameraConfig>,
    /// The viewer caps (shared by every camera) and, for cameras that set none of their
    /// own, the linger and always-on: the default camera's.
    pub hub: HubConfig,
    pub max_name_len: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Per-address connection cap and the handshake/idle timeouts.
    pub conn: ConnLimits,
    pub max_streams_per_connection: u32,
    pub max_request_bytes: usize,
    pub max_header_list_bytes: u32,
    /// Serve the tutorial API, `WebcamStreaming`.
    pub tutorial_api: bool,
    /// TLS on, with these files.
    pub tls: Option<ServerTlsFiles>,
    /// Viewer tokens required, from this file.
    pub token_file: Option<PathBuf>,
    pub log: String,
    pub led: LedSpec,
    /// Advertise `_camcast._tcp` over mDNS.
    pub mdns: bool,
    // Fixed, not settings (tests change them):
    /// How long a snapshot waits for a frame (camera start-up included).
    pub snapshot_timeout: Duration,
    /// At shutdown, how long each port's connections get to finish (well inside the process's
    /// 10 s grace).
    pub drain_timeout: Duration,
}

impl Config {
    /// The default camera: the first.
    pub fn default_camera(&self) -> &CameraConfig {
        &self.cameras[0]
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::resolve(Settings::default(), Settings::default()).expect("the defaults are valid")
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
            None => Settings::default(),
        };
        Self::resolve(cli.settings.clone(), file).map_err(ConfigError::Invalid)
    }

    /// Parses TOML text as a config file would be (for tests and tools).
    pub fn from_toml(text: &str) -> Result<Config, String> {
        let file: Settings = toml::from_str(text).map_err(|e| e.to_string())?;
        Self::resolve(Settings::default(), file)
    }

    /// `flags` over `file` over the defaults. Every setting's default is on its line below
    /// (a few are the defaults of the module that owns the value: connection limits, hub).
    fn resolve(flags: Settings, file: Settings) -> Result<Config, String> {
        // TLS flags count as a set: --tls-cert (which needs --tls-key) replaces the file's [tls].
        let tls_flags = flags.tls.cert.is_some().then(|| flags.tls.clone());
        let Settings {
            server: s,
            camera: camera_flags,
            cameras,
            http,
            tls,
            auth,
        } = flags.over(file);
        let cameras = camera_configs(camera_flags, cameras)?;
        let tls = tls_files(tls_flags.unwrap_or(tls))?;
        let (conn, hub) = (ConnLimits::default(), HubConfig::default());
        let keepalive_interval = s.keepalive_secs.map_or(Duration::from_secs(10), |s| s.0);
        let conns_per_address = s
            .max_connections_per_address
            .map_or(conn.per_address, |n| n.0);
        // An HTTP viewer holds a connection: past the connection cap it would be closed
        // unanswered instead of refused with a reason. So the viewer cap stays within it.
        let viewers_per_address = match s.max_viewers_per_address {
            Some(n) if n.0 > conns_per_address => {
                return Err(format!(
                    "max_viewers_per_address ({}) is above max_connections_per_address \
                     ({conns_per_address}); raise both",
                    n.0
                ))
            }
            Some(n) => n.0,
            None => hub.max_viewers_per_address.min(conns_per_address),
        };
        Ok(Config {
            listen: s.listen.unwrap_or((Ipv6Addr::UNSPECIFIED, 1234).into()),
            http: http.listen,
            hub: HubConfig {
                max_viewers: s.max_viewers.map_or(hub.max_viewers, |n| n.0),
                max_viewers_per_address: viewers_per_address,
                linger: cameras.default_linger.unwrap_or(hub.linger),
                always_on: cameras.default_always_on.unwrap_or(false),
                ..hub
            },
            cameras: cameras.list,
            max_name_len: s.max_name_len.map_or(64, |n| n.0),
            keepalive_interval,
            keepalive_timeout: s
                .keepalive_timeout_secs
                .map_or(Duration::from_secs(20), |s| s.0),
            conn: ConnLimits {
                per_address: conns_per_address,
                handshake_timeout: s
                    .handshake_timeout_secs
                    .map_or(conn.handshake_timeout, |s| s.0),
                idle_timeout: s.idle_timeout_secs.map_or(conn.idle_timeout, |s| s.0),
                tcp_keepalive: keepalive_interval,
            },
            max_streams_per_connection: s.max_streams_per_connection.map_or(32, |n| n.0 as u32),
            max_request_bytes: s.max_request_bytes.map_or(MAX_REQUEST_BYTES, |n| n.0),
            max_header_list_bytes: s.max_header_list_bytes.map_or(16 * 1024, |n| n.0 as u32),
            tutorial_api: s.tutorial_api.unwrap_or(true),
            tls,
            token_file: auth.token_file,
            log: s.log.unwrap_or_else(|| "info".into()),
            led: s.led.unwrap_or_default(),
            mdns: s.mdns.unwrap_or(true),
            snapshot_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(5),
        })
    }
}

/// TLS is on when a certificate and key are both given.
fn tls_files(tls: TlsSection) -> Result<Option<ServerTlsFiles>, String> {
    match (tls.cert, tls.key) {
        (Some(cert), Some(key)) => Ok(Some(ServerTlsFiles {
            cert,
            key,
            client_ca: tls.client_ca,
        })),
        (None, None) if tls.client_ca.is_none() => Ok(None),
        (None, None) => Err("[tls] client_ca needs cert and key as well".into()),
        _ => Err("[tls] needs both cert and key (or neither, for plain gRPC)".into()),
    }
}

fn read_file(path: &Path) -> Result<Settings, ConfigError> {
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
                c.default_camera().request.capture.width,
                c.default_camera().request.capture.height,
                c.default_camera().request.capture.fps
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
        let p = c.default_camera().request.capture;
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
            "--http-listen",
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
            "--controls",
            "brightness=99",
        ]);
        let c = Config::load(&cli).unwrap();
        let camera = &c.default_camera().request;
        assert_eq!(camera.device, Some(PathBuf::from("/dev/video2")));
        assert_eq!(camera.format, FormatChoice::Yuyv);
        assert_eq!(
            camera.controls,
            vec![
                ("Power Line Frequency".to_string(), 1),
                ("brightness".to_string(), 99)
            ]
        );
    }

    #[test]
    fn a_file_without_camera_lists_has_one_default_camera() {
        let c = Config::from_toml("[camera]\nfps = 15\n").unwrap();
        assert_eq!(c.cameras.len(), 1);
        assert_eq!(c.default_camera().name.as_str(), "default");
        assert_eq!(c.default_camera().request.capture.fps, 15.0);
        let named = Config::from_toml("[camera]\nname = \"door\"\n").unwrap();
        assert_eq!(named.default_camera().name.as_str(), "door");
    }

    #[test]
    fn camera_lists_give_each_camera_its_own_settings() {
        let c = Config::from_toml(
            "[[camera]]\nname = \"door\"\ndevice = \"/dev/video0\"\nlinger_secs = 7\n\
             [[camera]]\nname = \"printer-2\"\nsource = \"test-pattern\"\nsize = \"320x240\"\n\
             always_on = true\n[camera.controls]\nBrightness = 3\n",
        )
        .unwrap();
        let names: Vec<&str> = c.cameras.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["door", "printer-2"]);
        let (door, printer) = (&c.cameras[0], &c.cameras[1]);
        assert_eq!(door.request.device, Some(PathBuf::from("/dev/video0")));
        assert_eq!(door.hub(&c.hub).linger, Duration::from_secs(7));
        assert_eq!(c.hub.linger, Duration::from_secs(7), "the default camera's");
        assert_eq!(printer.source, SourceSpec::TestPattern);
        assert_eq!(printer.request.capture.width, 320);
        assert_eq!(printer.request.controls, vec![("Brightness".into(), 3)]);
        assert!(printer.hub(&c.hub).always_on && !door.hub(&c.hub).always_on);
        assert_eq!(door.request.capture.width, 640, "not the other camera's");
    }

    #[test]
    fn camera_flags_set_the_first_camera_of_a_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("camcast.toml");
        std::fs::write(
            &path,
            "[[camera]]\nname = \"a\"\nfps = 5\n[[camera]]\nname = \"b\"\nfps = 6\n",
        )
        .unwrap();
        let cli = Cli::parse_from(["camcast", "--config", path.to_str().unwrap(), "--fps", "10"]);
        let c = Config::load(&cli).unwrap();
        let fps: Vec<f64> = c.cameras.iter().map(|c| c.request.capture.fps).collect();
        assert_eq!(fps, [10.0, 6.0]);
    }

    #[test]
    fn duplicate_and_invalid_camera_names_are_clear_errors() {
        let err =
            Config::from_toml("[[camera]]\nname = \"a\"\n[[camera]]\nname = \"a\"\n").unwrap_err();
        assert!(err.contains("camera a ([[camera]] number 2)"), "{err}");
        assert!(err.contains("unique"), "{err}");
        let err = Config::from_toml("[[camera]]\nfps = 5\n[[camera]]\nfps = 6\n").unwrap_err();
        assert!(err.contains("give each [[camera]] a name"), "{err}");
        for bad in [
            "Door",
            "front door",
            "-a",
            "a-",
            "",
            "caf\u{e9}",
            "a/b",
            &"x".repeat(33),
        ] {
            let err = Config::from_toml(&format!("[[camera]]\nname = {bad:?}\n")).unwrap_err();
            assert!(err.contains("a-z, 0-9 and '-'"), "{bad:?}: {err}");
            assert!(err.contains("line 2"), "{bad:?}: {err}");
        }
        assert!("printer-2".parse::<CameraName>().is_ok());
        assert!("x".repeat(32).parse::<CameraName>().is_ok());
    }

    #[test]
    fn names_made_from_labels_are_valid_and_distinct() {
        let mut taken = Vec::new();
        for (label, expected) in [
            ("HD Pro Webcam C920", "hd-pro-webcam-c920"),
            ("HD Pro Webcam C920", "hd-pro-webcam-c920-2"),
            ("vivid: Vivid-000 ", "vivid-vivid-000"),
            ("Caméra ÜSB", "cam-ra-sb"),
            ("", "camera"),
            ("---", "camera-2"),
            (&"x".repeat(100), &"x".repeat(24)),
        ] {
            let name = CameraName::from_label(label, &taken);
            assert_eq!(name.as_str(), expected);
            assert_eq!(name.as_str().parse::<CameraName>().unwrap(), name);
            taken.push(name);
        }
    }

    /// What `camcast devices --toml` prints parses as the cameras of a config file.
    #[test]
    fn devices_toml_pastes_as_camera_tables() {
        use crate::source::v4l2::devices::list_devices_in;
        let none = crate::source::listing::Cameras {
            v4l2: list_devices_in(Path::new("/nonexistent"), Path::new("/nonexistent")),
            #[cfg(feature = "libcamera")]
            libcamera: Ok(Vec::new()),
        };
        let text = camera_tables(&none);
        assert!(text.starts_with("# no cameras found"), "{text}");
        assert_eq!(Config::from_toml(&text).unwrap().cameras.len(), 1);

        let webcam = |path: &str, link: Option<&str>, fourcc: &[u8; 4]| {
            crate::source::v4l2::devices::DeviceReport {
                path: path.into(),
                stable_path: link.map(PathBuf::from),
                kind: Some(crate::source::v4l2::hw::NodeKind::Capture),
                driver: "uvcvideo".into(),
                card: "HD Pro Webcam C920".into(),
                bus: "usb-1".into(),
                formats: vec![crate::source::v4l2::negotiate::AdvertisedFormat {
                    fourcc: *fourcc,
                    description: String::new(),
                    sizes: Vec::new(),
                    range: None,
                }],
                controls: Vec::new(),
                problems: Vec::new(),
            }
        };
        let found = crate::source::listing::Cameras {
            v4l2: vec![
                webcam(
                    "/dev/video0",
                    Some("/dev/v4l/by-id/usb-\"odd\"-index0"),
                    b"MJPG",
                ),
                webcam("/dev/video1", None, b"H264"), // no format camcast takes: left out
                webcam("/dev/video2", None, b"YUYV"),
            ],
            #[cfg(feature = "libcamera")]
            libcamera: Ok(Vec::new()),
        };
        let text = camera_tables(&found);
        let c = Config::from_toml(&text).unwrap();
        let cameras: Vec<(&str, Option<&Path>)> = c
            .cameras
            .iter()
            .map(|c| (c.name.as_str(), c.request.device.as_deref()))
            .collect();
        assert_eq!(
            cameras,
            [
                (
                    "hd-pro-webcam-c920",
                    Some(Path::new("/dev/v4l/by-id/usb-\"odd\"-index0"))
                ),
                ("hd-pro-webcam-c920-2", Some(Path::new("/dev/video2"))),
            ],
            "{text}"
        );
    }

    #[test]
    fn mixing_a_camera_table_with_camera_lists_is_an_error() {
        let err = Config::from_toml("[camera]\nfps = 5\n[[camera]]\nname = \"b\"\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        let err = Config::from_toml("[[camera]]\nname = \"b\"\nframerate = 5\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("framerate"), "{err}");
        let err = Config::from_toml("camera = 3\n").unwrap_err();
        assert!(err.contains("[[camera]]"), "{err}");
    }

    #[test]
    fn viewers_per_address_has_a_key_a_flag_and_stays_under_the_connection_cap() {
        assert_eq!(Config::default().hub.max_viewers_per_address, 8);
        let c = Config::from_toml(
            "[server]\nmax_viewers_per_address = 20\nmax_connections_per_address = 20\n",
        )
        .unwrap();
        assert_eq!(c.hub.max_viewers_per_address, 20);
        let cli = Cli::parse_from(["camcast", "--max-viewers-per-address", "3"]);
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
        assert!(d.tutorial_api && d.tls.is_none() && d.token_file.is_none());
        let c = Config::from_toml(
            "[server]\nmax_connections_per_address = 3\nmax_streams_per_connection = 4\n\
             max_request_bytes = 1024\nmax_header_list_bytes = 4096\nhandshake_timeout_secs = 2\n\
             idle_timeout_secs = 30\nkeepalive_secs = 7\ntutorial_api = false\n\
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
        assert!(!c.tutorial_api);
        let tls = c.tls.unwrap();
        assert_eq!(tls.client_ca, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.token_file, Some(PathBuf::from("/t")));
    }

    /// The shipped config sets every key to its default (and turns HTTP on), and its
    /// commented-out TLS and token lines are valid once uncommented.
    #[test]
    fn shipped_config_matches_the_defaults() {
        let text = include_str!("../deploy/camcast.toml");
        let shipped = Config::from_toml(text).unwrap();
        let expected = Config {
            http: Some("[::]:8080".parse().unwrap()),
            ..Config::default()
        };
        assert_eq!(shipped, expected);
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

    /// The commented-out `[[camera]]` example in deploy/camcast.toml, uncommented in place of
    /// the `[camera]` table, parses to two named cameras.
    #[test]
    fn shipped_multi_camera_example_parses() {
        let text = include_str!("../deploy/camcast.toml");
        let example = text
            .split_once("Replace the [camera] table above with, for example:\n")
            .expect("the example is there")
            .1;
        let uncommented: String = example
            .lines()
            .map(|l| {
                format!(
                    "{}\n",
                    l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#'))
                )
            })
            .collect();
        let c = Config::from_toml(&uncommented).unwrap();
        let names: Vec<&str> = c.cameras.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["door", "driveway"]);
        assert_eq!(c.cameras[1].request.capture.fps, 15.0);
    }

    /// Each table's keys, and the prefix its flags carry.
    const TABLES: [(&str, &[&str], &str); 5] = [
        ("server", ServerSection::KEYS, ""),
        ("camera", CameraSection::KEYS, ""),
        ("http", HttpSection::KEYS, "http-"),
        ("tls", TlsSection::KEYS, "tls-"),
        ("auth", AuthSection::KEYS, ""),
    ];

    /// Every key has its flag, spelled like the key (`--no-KEY` for a setting on by default),
    /// and every flag but --config has its key.
    #[test]
    fn every_key_has_its_flag_and_every_flag_its_key() {
        use clap::CommandFactory;
        let mut tables: Vec<&str> = TABLES.iter().map(|t| t.0).collect();
        tables.insert(2, "cameras"); // the file's [camera]/[[camera]], no flags of its own
        assert_eq!(tables, Settings::KEYS, "a table is missing from TABLES");
        let mut cli = Cli::command();
        cli.build();
        let flags: std::collections::BTreeSet<&str> =
            cli.get_arguments().filter_map(|a| a.get_long()).collect();
        let mut matched = std::collections::BTreeSet::new();
        for (table, keys, prefix) in TABLES {
            // A camera's name is file-only: on the command line there is one camera.
            for key in keys.iter().filter(|k| (table, **k) != ("camera", "name")) {
                let flag = format!("{prefix}{}", key.replace('_', "-"));
                let found = [flag.clone(), format!("no-{flag}")]
                    .into_iter()
                    .find(|f| flags.contains(f.as_str()));
                let found = found.unwrap_or_else(|| panic!("[{table}] {key} has no --{flag}"));
                matched.insert(found);
            }
        }
        let without_key: Vec<&str> = flags
            .iter()
            .filter(|f| !matched.contains(**f) && !["config", "help", "version"].contains(f))
            .copied()
            .collect();
        assert!(
            without_key.is_empty(),
            "flags without a key: {without_key:?}"
        );
    }

    /// deploy/camcast.toml documents every key, set or commented out, in its table.
    #[test]
    fn shipped_config_lists_every_key() {
        let text = include_str!("../deploy/camcast.toml");
        let mut listed = std::collections::BTreeSet::new();
        let mut table = "";
        for line in text.lines() {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                table = name;
            } else if line == "# [camera.controls]" {
                listed.insert(("camera".to_string(), "controls".to_string()));
            } else if let Some((key, _)) = line.trim_start_matches("# ").split_once(" = ") {
                listed.insert((table.to_string(), key.to_string()));
            }
        }
        for (table, keys, _) in TABLES {
            for key in keys {
                assert!(
                    listed.contains(&(table.to_string(), key.to_string())),
                    "deploy/camcast.toml does not list [{table}] {key}"
                );
            }
        }
    }

    /// Flags and keys renamed to match each other: the old spellings still give the same
    /// configuration as the new ones, and it differs from the default.
    #[test]
    fn old_flag_and_key_spellings_still_work() {
        let renamed_flags: [(&[&str], &[&str]); 12] = [
            (
                &["--max-conns-per-addr", "3"],
                &["--max-connections-per-address", "3"],
            ),
            (
                &["--max-streams-per-conn", "4"],
                &["--max-streams-per-connection", "4"],
            ),
            (
                &["--max-header-bytes", "4096"],
                &["--max-header-list-bytes", "4096"],
            ),
            (&["--keepalive", "7"], &["--keepalive-secs", "7"]),
            (
                &["--keepalive-timeout", "9"],
                &["--keepalive-timeout-secs", "9"],
            ),
            (
                &["--handshake-timeout", "2"],
                &["--handshake-timeout-secs", "2"],
            ),
            (&["--idle-timeout", "30"], &["--idle-timeout-secs", "30"]),
            (&["--linger", "5"], &["--linger-secs", "5"]),
            (
                &["--http", "127.0.0.1:8081"],
                &["--http-listen", "127.0.0.1:8081"],
            ),
            (
                &["--control", "Brightness=3"],
                &["--controls", "Brightness=3"],
            ),
            (&["--no-seed"], &["--no-tutorial-api"]),
            (
                &["--max-viewers-per-addr", "3"],
                &["--max-viewers-per-address", "3"],
            ),
        ];
        let load = |args: &[&str]| {
            let cli = Cli::try_parse_from(std::iter::once("camcast").chain(args.iter().copied()));
            Config::load(&cli.unwrap_or_else(|e| panic!("{args:?}: {e}"))).unwrap()
        };
        for (old, new) in renamed_flags {
            let c = load(old);
            assert_eq!(c, load(new), "{old:?} and {new:?}");
            assert_ne!(c, Config::default(), "{new:?} changed nothing");
        }
        let c = Config::from_toml("[server]\nseed_contract = false\n").unwrap();
        assert_eq!(
            c,
            Config::from_toml("[server]\ntutorial_api = false\n").unwrap()
        );
        assert!(!c.tutorial_api);
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
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
