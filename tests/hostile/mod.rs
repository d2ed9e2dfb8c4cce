//! Hostile request sequences, played against a real camcast server on loopback TCP.
//!
//! The request space of the property test (tests/hostile_sequences.rs, stable, proptest): a
//! [`Sequence`] is decoded from arbitrary bytes with the `arbitrary` crate, so a cargo-fuzz
//! target (issue 12 item 4; not written yet) can decode its libFuzzer inputs the same way and
//! replay a crash found by either.
//!
//! A sequence mixes, on one or two servers (one open, one requiring a token):
//! - HTTP/1.1 exchanges written as raw bytes: odd methods, paths, query parameters (`fps`,
//!   `name`, `token` and unknown ones, with their extremes), headers (`Authorization`,
//!   `User-Agent`, `Range`, `Expect`, `Transfer-Encoding`, floods of them), lying bodies,
//!   pipelining, MJPEG streams read for a few parts and then cut;
//! - gRPC calls over an HTTP/2 client (the `h2` crate): both contracts and every method, any
//!   path, the headers a gRPC server reads (`content-type`, `te`, `grpc-timeout`,
//!   `authorization`, `grpc-encoding`...), well-formed and broken request messages with their
//!   fields' extremes, client settings from tiny to huge windows, streams read, stalled, reset
//!   or dropped;
//! - raw HTTP/2 frames after the client preface (RST_STREAM and SETTINGS and PING floods,
//!   WINDOW_UPDATE overflows, CONTINUATION without end, unknown frame types).
//!
//! Connections are closed at the end of their step, or left open for later steps (and then
//! closed gracefully or with a reset). Every response must be well formed, with a status the
//! server may legitimately give; after the sequence, with every client gone, [`settle`]
//! checks the invariants: no viewer left, capture stopped, no descriptor leaked, the server
//! still serving. Panics are caught by the caller (the property test counts them with
//! camcast's hook).
//!
//! Loopback TCP rather than an in-memory transport: every byte goes through the server's own
//! accept loop, admission, HTTP parsers and handlers as on a LAN, with no test hooks in the
//! server, whichever HTTP/2 stack serves gRPC. It costs about a millisecond per connection.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::{BufMut, Bytes, BytesMut};
use camcast::admission::ConnLimits;
use camcast::auth::Tokens;
use camcast::config::Config;
use camcast::hub::{Hub, HubConfig};
use camcast::led::LedSpec;
use camcast::protection::Protection;
use camcast::source::pattern::TestPattern;
use camcast::source::{CaptureSettings, FrameSource};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The token of the tokened server; the dictionaries hold it, so requests can get in.
pub const TOKEN: &str = "hostile-token-0123456789abcdef";
/// The viewer-name limit the servers run with (the default).
pub const NAME_LIMIT: usize = 64;
/// Steps in one sequence, and connections left open at once.
const MAX_STEPS: usize = 8;
const MAX_HELD: usize = 6;
/// How long a response may take before the server counts as hung. Generous: the machine may be
/// busy, and only a request that must be answered is judged by it.
const ANSWER: Duration = Duration::from_secs(10);
/// How long to wait for what may legitimately never come (a frame on a stalled stream, a reply
/// to raw frames).
const BRIEF: Duration = Duration::from_millis(150);

/// One camcast server the sequences can reach.
#[derive(Clone)]
pub struct Target {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub hub: Hub,
    /// Whether it requires [`TOKEN`].
    pub tokened: bool,
}

/// The settings the sequences are played against: the defaults, except capture stops as soon
/// as the last viewer leaves (so the check after each sequence need not wait for a linger),
/// a small fast test pattern, and a per-address cap above what a sequence holds.
pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        http: Some("127.0.0.1:0".parse().unwrap()),
        led: LedSpec::None,
        mdns: false,
        hub: HubConfig {
            linger: Duration::ZERO,
            ..HubConfig::default()
        },
        conn: ConnLimits {
            per_address: 64,
            handshake_timeout: Duration::from_secs(2),
            ..ConnLimits::default()
        },
        drain_timeout: Duration::from_millis(500),
        ..Config::default()
    }
}

/// A small, fast test pattern: frames come every 5 ms, so no step waits long for one.
pub fn pattern() -> Box<dyn FrameSource> {
    Box::new(TestPattern::new(CaptureSettings {
        width: 64,
        height: 48,
        fps: 200.0,
        quality: 50,
    }))
}

/// The protections of the tokened server.
pub fn tokened(config: &Config) -> Protection {
    Protection {
        tokens: Some(Tokens::parse(TOKEN, "hostile sequences").unwrap()),
        ..Protection::load(config).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// The request space.

/// At most `N` items (arbitrary's own `Vec` takes as many as the input has).
#[derive(Debug, Clone)]
pub struct Few<T, const N: usize>(pub Vec<T>);

impl<'a, T: Arbitrary<'a>, const N: usize> Arbitrary<'a> for Few<T, N> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.int_in_range(0..=N)?;
        (0..n)
            .map(|_| T::arbitrary(u))
            .collect::<Result<_, _>>()
            .map(Few)
    }
}

/// A string of at most `N` bytes (cut at a character boundary).
#[derive(Debug, Clone)]
pub struct Short<const N: usize>(pub String);

impl<'a, const N: usize> Arbitrary<'a> for Short<N> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut s = String::arbitrary(u)?;
        let mut end = s.len().min(N);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        Ok(Short(s))
    }
}

/// Bytes, at most `N`.
#[derive(Debug, Clone)]
pub struct Blob<const N: usize>(pub Vec<u8>);

impl<'a, const N: usize> Arbitrary<'a> for Blob<N> {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n = u.int_in_range(0..=N)?;
        Ok(Blob(u.bytes(n.min(u.len()))?.to_vec()))
    }
}

#[derive(Debug)]
pub struct Sequence {
    pub steps: Vec<Step>,
}

impl<'a> Arbitrary<'a> for Sequence {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mut steps = Vec::new();
        while steps.len() < MAX_STEPS && !u.is_empty() {
            steps.push(Step::arbitrary(u)?);
        }
        Ok(Sequence { steps })
    }
}

#[derive(Debug, Arbitrary)]
pub enum Step {
    Viewer(Viewer),
    Http(HttpExchange),
    Grpc(GrpcConnection),
    RawH2(RawH2),
    /// Ends a connection an earlier step left open.
    Close {
        which: u8,
        how: Close,
    },
}

/// A well-formed request, as a stock client sends it, carrying hostile values: the frame-rate
/// cap, the viewer name and the credential are what get past the parsers to the validators
/// and the hub. Random bytes seldom decode into a request this well formed, so without this
/// step the sequences would almost never register a viewer.
#[derive(Debug, Arbitrary)]
pub struct Viewer {
    pub server: Which,
    pub ask: Ask,
    pub name: Name,
    pub fps_text: FpsText,
    pub fps: FpsFloat,
    /// `None`: the right token (on the tokened server; the open one ignores it).
    pub credential: Option<Credential>,
    /// MJPEG parts or gRPC messages to read before the stream ends as `finish` says.
    pub read: u8,
    pub finish: StreamEnd,
    pub close: Close,
}

/// What a [`Viewer`] asks for, on each transport.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Ask {
    MjpegStream,
    HttpSnapshot,
    HttpInfo,
    Tutorial,
    StreamFrames,
    GrpcSnapshot,
    GetInfo,
}

impl Viewer {
    /// The request as an HTTP/1.1 exchange (`Ok`) or a gRPC connection with one call (`Err`).
    fn exchange(&self) -> Result<HttpExchange, GrpcConnection> {
        let credential = self.credential.clone().unwrap_or(Credential::Right);
        let http = |path: Path, query: Vec<Param>| HttpExchange {
            server: self.server,
            method: Method::Get,
            path,
            query: Few(query),
            headers: Few(vec![Header::Authorization(credential.clone())]),
            flood: 0,
            version: Version::Http11,
            body: Body::None,
            copies: 0,
            parts: self.read,
            close: self.close,
        };
        let param = |key: Key, value: Value| Param {
            key,
            value,
            raw: false,
        };
        let named = || param(Key::Name, Value::Name(self.name.clone()));
        let request = match self.ask {
            Ask::MjpegStream => {
                let fps = param(Key::Fps, Value::Fps(self.fps_text.clone()));
                return Ok(http(Path::Stream, vec![fps, named()]));
            }
            Ask::HttpSnapshot => return Ok(http(Path::Snapshot, vec![named()])),
            Ask::HttpInfo => return Ok(http(Path::Info, vec![])),
            Ask::Tutorial => (RpcPath::Tutorial, Request::ClientName(self.name.clone())),
            Ask::StreamFrames => (
                RpcPath::StreamFrames,
                Request::Stream(self.name.clone(), self.fps.clone()),
            ),
            Ask::GrpcSnapshot => (RpcPath::Snapshot, Request::Snapshot(self.name.clone())),
            Ask::GetInfo => (RpcPath::GetInfo, Request::GetInfo),
        };
        Err(GrpcConnection {
            server: self.server,
            settings: ClientSettings {
                stream_window: None,
                connection_window: None,
                max_frame_size: None,
                max_header_list_size: None,
                header_table_size: None,
            },
            calls: Few(vec![GrpcCall {
                path: request.0,
                verb: Verb::Post,
                headers: Few(vec![GrpcHeader::Authorization(credential)]),
                body: GrpcBody::Message(request.1),
                end_stream: true,
                read: self.read,
                release: true,
                finish: self.finish.clone(),
            }]),
            close: self.close,
        })
    }
}

/// Which server a step talks to: the open one, or the one that requires [`TOKEN`].
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Which {
    Open,
    Tokened,
}

/// What happens to a connection after its step.
#[derive(Debug, Clone, Copy, Arbitrary)]
pub enum Close {
    /// Left open for later steps (closed at the end of the sequence at the latest).
    Keep,
    /// FIN.
    Graceful,
    /// RST: the peer vanishes mid-whatever (SO_LINGER 0).
    Abortive,
}

// --- Values a request can carry, with each field's extremes.

/// A frame-rate cap as text (`?fps=`).
#[derive(Debug, Clone, Arbitrary)]
pub enum FpsText {
    Zero,
    NegZero,
    Tiny,
    Subnormal,
    JustBelowFloor,
    Floor,
    Ceiling,
    JustAboveCeiling,
    Huge,
    Nan,
    Inf,
    NegInf,
    Negative,
    Empty,
    Garbage,
    Hex,
    Spaces,
    Float(f32),
    Exp(f32),
    Raw(Short<24>),
}

impl FpsText {
    fn text(&self) -> String {
        match self {
            FpsText::Zero => "0".into(),
            FpsText::NegZero => "-0".into(),
            FpsText::Tiny => "1e-30".into(),
            FpsText::Subnormal => "1e-45".into(),
            FpsText::JustBelowFloor => "0.009".into(),
            FpsText::Floor => "0.01".into(),
            FpsText::Ceiling => "1000".into(),
            FpsText::JustAboveCeiling => "1000.0001".into(),
            FpsText::Huge => "1e39".into(),
            FpsText::Nan => "NaN".into(),
            FpsText::Inf => "inf".into(),
            FpsText::NegInf => "-infinity".into(),
            FpsText::Negative => "-1".into(),
            FpsText::Empty => String::new(),
            FpsText::Garbage => "abc".into(),
            FpsText::Hex => "0x10".into(),
            FpsText::Spaces => " 5 ".into(),
            FpsText::Float(f) => f.to_string(),
            FpsText::Exp(f) => format!("{f:e}"),
            FpsText::Raw(s) => s.0.clone(),
        }
    }
}

/// A frame-rate cap as a protobuf float (`max_fps`).
#[derive(Debug, Clone, Arbitrary)]
pub enum FpsFloat {
    Zero,
    NegZero,
    Tiny,
    Subnormal,
    MinPositive,
    JustBelowFloor,
    Floor,
    Typical,
    Ceiling,
    JustAboveCeiling,
    Max,
    Nan,
    Inf,
    NegInf,
    Negative,
    Bits(u32),
}

impl FpsFloat {
    fn value(&self) -> f32 {
        match self {
            FpsFloat::Zero => 0.0,
            FpsFloat::NegZero => -0.0,
            FpsFloat::Tiny => 1e-30,
            FpsFloat::Subnormal => f32::from_bits(1),
            FpsFloat::MinPositive => f32::MIN_POSITIVE,
            FpsFloat::JustBelowFloor => 0.009_999,
            FpsFloat::Floor => 0.01,
            FpsFloat::Typical => 5.0,
            FpsFloat::Ceiling => 1000.0,
            FpsFloat::JustAboveCeiling => 1_000.000_1,
            FpsFloat::Max => f32::MAX,
            FpsFloat::Nan => f32::NAN,
            FpsFloat::Inf => f32::INFINITY,
            FpsFloat::NegInf => f32::NEG_INFINITY,
            FpsFloat::Negative => -1.0,
            FpsFloat::Bits(b) => f32::from_bits(*b),
        }
    }
}

/// A viewer name, around the limit in one-, two-, three- and four-byte characters, with
/// control characters, or anything.
#[derive(Debug, Clone, Arbitrary)]
pub enum Name {
    Empty,
    Blank,
    Plain,
    AtLimit,
    OverLimit,
    TwoByteAtLimit,
    TwoByteOverLimit,
    ThreeByteStraddling,
    FourByteAtLimit,
    FourByteOverLimit,
    Control,
    TerminalEscape,
    Nul,
    Huge,
    Any(Short<80>),
}

impl Name {
    pub fn text(&self) -> String {
        match self {
            Name::Empty => String::new(),
            Name::Blank => " \t ".into(),
            Name::Plain => "kitchen".into(),
            Name::AtLimit => "n".repeat(NAME_LIMIT),
            Name::OverLimit => "n".repeat(NAME_LIMIT + 1),
            Name::TwoByteAtLimit => "é".repeat(NAME_LIMIT / 2),
            Name::TwoByteOverLimit => "é".repeat(NAME_LIMIT / 2 + 1),
            // 21 three-byte characters are 63 bytes; one more crosses the limit mid-character.
            Name::ThreeByteStraddling => "€".repeat(22),
            Name::FourByteAtLimit => "😀".repeat(NAME_LIMIT / 4),
            Name::FourByteOverLimit => "😀".repeat(NAME_LIMIT / 4 + 1),
            Name::Control => "a\nFAKE LOG LINE\r\u{7}".into(),
            Name::TerminalEscape => "\u{1b}[2J\u{1b}]0;owned\u{7}".into(),
            Name::Nul => "a\0b".into(),
            Name::Huge => "x".repeat(70_000),
            Name::Any(s) => s.0.clone(),
        }
    }
}

/// What an `Authorization` header or `?token=` carries.
#[derive(Debug, Clone, Arbitrary)]
pub enum Credential {
    Right,
    Wrong,
    Empty,
    RightWithoutScheme,
    LowercaseScheme,
    Basic,
    RightTwice,
    Prefix,
    Long,
    NonAscii,
    Any(Short<64>),
}

impl Credential {
    fn token(&self) -> String {
        match self {
            Credential::Right | Credential::RightWithoutScheme | Credential::LowercaseScheme => {
                TOKEN.into()
            }
            Credential::Wrong => "hostile-token-0123456789abcdeX".into(),
            Credential::Empty => String::new(),
            Credential::Basic => "dXNlcjpwYXNz".into(),
            Credential::RightTwice => format!("{TOKEN}{TOKEN}"),
            Credential::Prefix => TOKEN[..TOKEN.len() - 1].into(),
            Credential::Long => "t".repeat(10_000),
            Credential::NonAscii => "tökén".into(),
            Credential::Any(s) => s.0.clone(),
        }
    }

    /// As an `Authorization` header value.
    fn header(&self) -> String {
        match self {
            Credential::RightWithoutScheme => TOKEN.into(),
            Credential::LowercaseScheme => format!("bearer {TOKEN}"),
            Credential::Basic => "Basic dXNlcjpwYXNz".into(),
            other => format!("Bearer {}", other.token()),
        }
    }
}

// --- HTTP/1.1.

#[derive(Debug, Arbitrary)]
pub struct HttpExchange {
    pub server: Which,
    pub method: Method,
    pub path: Path,
    pub query: Few<Param, 5>,
    pub headers: Few<Header, 8>,
    /// Extra headers: 0, or up to a few hundred (the server accepts 64, then answers 431).
    pub flood: u8,
    pub version: Version,
    pub body: Body,
    /// The request sent 1 to 3 times back to back.
    pub copies: u8,
    /// MJPEG parts to read from a stream before the connection is ended.
    pub parts: u8,
    pub close: Close,
}

#[derive(Debug, Arbitrary)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Connect,
    Patch,
    Lowercase,
    Any(Short<12>),
}

#[derive(Debug, Arbitrary)]
pub enum Path {
    Root,
    Stream,
    Snapshot,
    Info,
    Healthz,
    Metrics,
    Favicon,
    DoubleSlash,
    TrailingSlash,
    Uppercase,
    DotDot,
    Encoded,
    Asterisk,
    Absolute,
    Long,
    Any(Short<40>),
}

impl Path {
    fn text(&self, host: SocketAddr) -> String {
        match self {
            Path::Root => "/".into(),
            Path::Stream => "/stream.mjpg".into(),
            Path::Snapshot => "/snapshot.jpg".into(),
            Path::Info => "/info.json".into(),
            Path::Healthz => "/healthz".into(),
            Path::Metrics => "/metrics".into(),
            Path::Favicon => "/favicon.ico".into(),
            Path::DoubleSlash => "//stream.mjpg".into(),
            Path::TrailingSlash => "/stream.mjpg/".into(),
            Path::Uppercase => "/STREAM.MJPG".into(),
            Path::DotDot => "/x/../info.json".into(),
            Path::Encoded => "/%73tream.mjpg".into(),
            Path::Asterisk => "*".into(),
            Path::Absolute => format!("http://{host}/snapshot.jpg"),
            Path::Long => format!("/{}", "a".repeat(20_000)),
            Path::Any(s) => s.0.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
pub struct Param {
    pub key: Key,
    pub value: Value,
    /// Written as is rather than percent-encoded (spaces and all).
    pub raw: bool,
}

#[derive(Debug, Arbitrary)]
pub enum Key {
    Fps,
    Name,
    Token,
    CacheBuster,
    Empty,
    Any(Short<12>),
}

#[derive(Debug, Arbitrary)]
pub enum Value {
    Fps(FpsText),
    Name(Name),
    Token(Credential),
    /// A key without `=`.
    Bare,
    BadPercent,
}

#[derive(Debug, Arbitrary)]
pub enum Header {
    UserAgent(Name),
    Authorization(Credential),
    Range(RangeValue),
    Expect100,
    ExpectOther,
    ContentLength(Short<24>),
    TransferEncoding(Short<24>),
    Connection(Short<24>),
    UpgradeH2c,
    NoHost,
    SecondHost,
    Accept(Short<40>),
    Cookie(u16),
    /// Any name and value, kept to what HTTP allows in a header line.
    Other(Short<24>, Short<60>),
    /// Any bytes as a header line (CR, LF and NUL included).
    RawLine(Blob<60>),
}

#[derive(Debug, Arbitrary)]
pub enum RangeValue {
    First,
    Suffix,
    Open,
    Many,
    Reversed,
    Huge,
    Garbage,
}

impl RangeValue {
    fn text(&self) -> &'static str {
        match self {
            RangeValue::First => "bytes=0-99",
            RangeValue::Suffix => "bytes=-1",
            RangeValue::Open => "bytes=100-",
            RangeValue::Many => "bytes=0-1,2-3,4-5,6-7,8-9",
            RangeValue::Reversed => "bytes=9-0",
            RangeValue::Huge => "bytes=0-18446744073709551615",
            RangeValue::Garbage => "lines=1-2",
        }
    }
}

#[derive(Debug, Arbitrary)]
pub enum Version {
    Http11,
    Http10,
    Http2,
    Http09,
    Garbage,
}

#[derive(Debug, Arbitrary)]
pub enum Body {
    None,
    Honest(Blob<200>),
    /// A `Content-Length` larger than what is sent: the server must not wait for it to answer.
    Lying {
        claimed: u16,
        sent: Blob<50>,
    },
    Chunked(Few<Blob<40>, 3>),
    BadChunked(Blob<40>),
}

// --- gRPC over HTTP/2.

#[derive(Debug, Arbitrary)]
pub struct GrpcConnection {
    pub server: Which,
    pub settings: ClientSettings,
    pub calls: Few<GrpcCall, 4>,
    pub close: Close,
}

#[derive(Debug, Arbitrary)]
pub struct ClientSettings {
    pub stream_window: Option<Window>,
    pub connection_window: Option<Window>,
    pub max_frame_size: Option<u32>,
    pub max_header_list_size: Option<u32>,
    pub header_table_size: Option<u32>,
}

#[derive(Debug, Arbitrary)]
pub enum Window {
    Zero,
    One,
    Small,
    Default,
    GrpcioLike,
    Max,
    Any(u32),
}

impl Window {
    fn size(&self) -> u32 {
        const MAX: u32 = (1 << 31) - 1;
        match self {
            Window::Zero => 0,
            Window::One => 1,
            Window::Small => 1024,
            Window::Default => 65_535,
            Window::GrpcioLike => 4 << 20,
            Window::Max => MAX,
            Window::Any(n) => n & MAX,
        }
    }
}

#[derive(Debug, Arbitrary)]
pub struct GrpcCall {
    pub path: RpcPath,
    pub verb: Verb,
    pub headers: Few<GrpcHeader, 6>,
    pub body: GrpcBody,
    /// Ends the request stream after the body (a well-behaved client does).
    pub end_stream: bool,
    /// Response messages to read, and whether to give the flow-control credit back.
    pub read: u8,
    pub release: bool,
    pub finish: StreamEnd,
}

#[derive(Debug, Arbitrary)]
pub enum RpcPath {
    Tutorial,
    StreamFrames,
    Snapshot,
    GetInfo,
    PullFrames,
    HealthCheck,
    HealthWatch,
    Reflection,
    UnknownMethod,
    UnknownService,
    Root,
    Any(Short<40>),
}

impl RpcPath {
    fn text(&self) -> String {
        match self {
            RpcPath::Tutorial => "/WebcamStreaming/StartWebcamStreaming".into(),
            RpcPath::StreamFrames => "/camcast.v1.Camera/StreamFrames".into(),
            RpcPath::Snapshot => "/camcast.v1.Camera/Snapshot".into(),
            RpcPath::GetInfo => "/camcast.v1.Camera/GetInfo".into(),
            RpcPath::PullFrames => "/camcast.v1.Camera/PullFrames".into(),
            RpcPath::HealthCheck => "/grpc.health.v1.Health/Check".into(),
            RpcPath::HealthWatch => "/grpc.health.v1.Health/Watch".into(),
            RpcPath::Reflection => {
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo".into()
            }
            RpcPath::UnknownMethod => "/camcast.v1.Camera/Nothing".into(),
            RpcPath::UnknownService => "/nope.Nope/Nope".into(),
            RpcPath::Root => "/".into(),
            RpcPath::Any(s) => s.0.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
pub enum Verb {
    Post,
    Get,
    Put,
}

#[derive(Debug, Arbitrary)]
pub enum GrpcHeader {
    ContentType(ContentType),
    NoTe,
    Te(Short<12>),
    Timeout(Timeout),
    Authorization(Credential),
    Encoding(Encoding),
    AcceptEncoding(Short<20>),
    UserAgent(Name),
    Metadata(Short<16>, Short<40>),
    BinaryMetadata(Short<12>, Blob<40>),
    /// One large header value, up to 64 KiB.
    Large(u16),
}

#[derive(Debug, Arbitrary)]
pub enum ContentType {
    Grpc,
    GrpcProto,
    GrpcJson,
    Json,
    Empty,
    Any(Short<30>),
}

#[derive(Debug, Arbitrary)]
pub enum Timeout {
    Nanos,
    Zero,
    Huge,
    Negative,
    NoUnit,
    TooManyDigits,
    Any(Short<12>),
}

impl Timeout {
    fn text(&self) -> String {
        match self {
            Timeout::Nanos => "1n".into(),
            Timeout::Zero => "0S".into(),
            Timeout::Huge => "99999999H".into(),
            Timeout::Negative => "-1m".into(),
            Timeout::NoUnit => "100".into(),
            Timeout::TooManyDigits => "123456789S".into(),
            Timeout::Any(s) => s.0.clone(),
        }
    }
}

#[derive(Debug, Arbitrary)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Zstd,
    Any(Short<12>),
}

#[derive(Debug, Arbitrary)]
pub enum GrpcBody {
    Empty,
    Message(Request),
    Two(Request, Request),
    /// A gRPC frame with any flag byte and a declared length off by `skew`.
    Framed {
        flag: u8,
        skew: i8,
        payload: Blob<80>,
    },
    Raw(Blob<80>),
}

/// A request message of either contract, with its fields' extremes.
#[derive(Debug, Arbitrary)]
pub enum Request {
    ClientName(Name),
    Stream(Name, FpsFloat),
    Snapshot(Name),
    GetInfo,
    /// Valid protobuf with unknown fields and wrong wire types.
    Unknown(Blob<40>),
}

impl Request {
    fn encode(&self) -> Vec<u8> {
        use camcast::pb;
        use prost::Message;
        match self {
            Request::ClientName(n) => pb::tutorial::ClientName {
                client_name: n.text(),
            }
            .encode_to_vec(),
            Request::Stream(n, fps) => pb::v1::StreamRequest {
                viewer_name: n.text(),
                max_fps: fps.value(),
                ..Default::default()
            }
            .encode_to_vec(),
            Request::Snapshot(n) => pb::v1::SnapshotRequest {
                viewer_name: n.text(),
                ..Default::default()
            }
            .encode_to_vec(),
            Request::GetInfo => pb::v1::GetInfoRequest::default().encode_to_vec(),
            Request::Unknown(b) => b.0.clone(),
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
pub enum StreamEnd {
    /// Read to the end (trailers), or as far as the server goes in a moment.
    Finish,
    /// RST_STREAM with a reason code.
    Reset(u32),
    /// Just drop the stream.
    Drop,
}

// --- Raw HTTP/2 frames.

#[derive(Debug, Arbitrary)]
pub struct RawH2 {
    pub server: Which,
    pub preface: bool,
    pub frames: Few<RawFrame, 12>,
    /// The frames sent this many times again (floods), 0 to 200.
    pub repeat: u8,
    pub close: Close,
}

#[derive(Debug, Arbitrary)]
pub struct RawFrame {
    pub kind: FrameKind,
    pub flags: u8,
    pub stream: StreamId,
}

#[derive(Debug, Arbitrary)]
pub enum StreamId {
    Connection,
    First,
    Third,
    Even,
    Max,
    Any(u32),
}

impl StreamId {
    fn id(&self) -> u32 {
        match self {
            StreamId::Connection => 0,
            StreamId::First => 1,
            StreamId::Third => 3,
            StreamId::Even => 2,
            StreamId::Max => (1 << 31) - 1,
            StreamId::Any(n) => *n,
        }
    }
}

#[derive(Debug, Arbitrary)]
pub enum FrameKind {
    Data(Blob<64>),
    /// A real request's headers (HPACK literals), to open a stream on `path`.
    Headers(RpcPath, bool),
    HeadersRaw(Blob<64>),
    Priority(u32, u8),
    RstStream(u32),
    Settings(Few<(u16, u32), 6>),
    PushPromise(u32),
    Ping([u8; 8]),
    GoAway(u32, u32),
    WindowUpdate(u32),
    Continuation(Blob<64>),
    Unknown(u8, Blob<32>),
}

// ---------------------------------------------------------------------------------------------
// Playing a sequence.

/// A connection an earlier step left open.
enum Held {
    Tcp(TcpStream),
    H2 {
        tcp_linger: Option<std::os::fd::OwnedFd>,
        streams: Vec<h2::RecvStream>,
        sends: Vec<h2::SendStream<Bytes>>,
        client: h2::client::SendRequest<Bytes>,
        driver: tokio::task::JoinHandle<()>,
    },
}

impl Held {
    fn end(self, how: Close) {
        match self {
            Held::Tcp(tcp) => end_tcp(tcp, how),
            Held::H2 {
                tcp_linger,
                driver,
                streams,
                sends,
                client,
            } => {
                if let (Close::Abortive, Some(fd)) = (how, tcp_linger.as_ref()) {
                    let _ = socket2::SockRef::from(fd).set_linger(Some(Duration::ZERO));
                }
                drop((streams, sends, client));
                driver.abort();
            }
        }
    }
}

fn end_tcp(tcp: TcpStream, how: Close) {
    if let Close::Abortive = how {
        let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
    }
    drop(tcp);
}

/// What went wrong, for the property test's failure.
pub type Failure = String;

/// Longest a sequence may take: every wait in it is bounded, so more is a hang.
const SEQUENCE_BOUND: Duration = Duration::from_secs(120);

/// Plays `seq` against the servers; `Err` if a response broke the rules or the sequence hung.
/// Every connection is closed on return.
pub async fn play(seq: &Sequence, open: &Target, tokened: &Target) -> Result<(), Failure> {
    tokio::time::timeout(SEQUENCE_BOUND, play_steps(seq, open, tokened))
        .await
        .unwrap_or_else(|_| Err(format!("the sequence hung for {SEQUENCE_BOUND:?}")))
}

async fn play_steps(seq: &Sequence, open: &Target, tokened: &Target) -> Result<(), Failure> {
    let mut held: Vec<Held> = Vec::new();
    let mut outcome = Ok(());
    for (i, step) in seq.steps.iter().enumerate() {
        let target = |w: Which| match w {
            Which::Open => open,
            Which::Tokened => tokened,
        };
        let result = match step {
            Step::Viewer(v) => match v.exchange() {
                Ok(x) => http_exchange(&x, target(v.server), &mut held).await,
                Err(g) => grpc_connection(&g, target(v.server), &mut held).await,
            },
            Step::Http(x) => http_exchange(x, target(x.server), &mut held).await,
            Step::Grpc(g) => grpc_connection(g, target(g.server), &mut held).await,
            Step::RawH2(r) => raw_h2(r, target(r.server), &mut held).await,
            Step::Close { which, how } => {
                if !held.is_empty() {
                    let i = usize::from(*which) % held.len();
                    held.remove(i).end(*how);
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            outcome = Err(format!("{e}\n  at step {i}: {step:?}"));
            break;
        }
        while held.len() > MAX_HELD {
            held.remove(0).end(Close::Graceful);
        }
    }
    for h in held {
        h.end(Close::Graceful);
    }
    outcome
}

/// Keeps or ends a connection as `how` says.
fn keep_or_end(tcp: TcpStream, how: Close, held: &mut Vec<Held>) {
    match how {
        Close::Keep => held.push(Held::Tcp(tcp)),
        other => end_tcp(tcp, other),
    }
}

// --- HTTP/1.1.

fn percent(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn query(params: &[Param]) -> String {
    let mut q = String::new();
    for (i, p) in params.iter().enumerate() {
        if i > 0 {
            q.push('&');
        }
        let key = match &p.key {
            Key::Fps => "fps".to_string(),
            Key::Name => "name".into(),
            Key::Token => "token".into(),
            Key::CacheBuster => "t".into(),
            Key::Empty => String::new(),
            Key::Any(s) => percent(&s.0),
        };
        q.push_str(&key);
        let value = match &p.value {
            Value::Fps(f) => f.text(),
            Value::Name(n) => n.text(),
            Value::Token(c) => c.token(),
            Value::Bare => continue,
            Value::BadPercent => {
                q.push_str("=%FF%FE%");
                continue;
            }
        };
        q.push('=');
        if p.raw {
            // Raw, but never a CR, LF or space that would end the request line early.
            q.extend(value.chars().filter(|c| !matches!(c, '\r' | '\n' | ' ')));
        } else {
            q.push_str(&percent(&value));
        }
    }
    q
}

/// A header value with what would end the header line removed.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !matches!(c, '\r' | '\n')).collect()
}

/// The request bytes, and whether the server must answer it (a well-framed request with an
/// honest body).
fn http_request(x: &HttpExchange, target: &Target) -> (Vec<u8>, bool) {
    let mut must_answer = true;
    let method = match &x.method {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Patch => "PATCH".into(),
        Method::Lowercase => "get".into(),
        Method::Any(s) => {
            must_answer = false;
            s.0.chars()
                .filter(|c| !matches!(c, '\r' | '\n' | ' '))
                .collect()
        }
    };
    let mut target_text = x.path.text(target.http);
    if let Path::Any(_) = x.path {
        must_answer = false;
        target_text.retain(|c| !matches!(c, '\r' | '\n' | ' '));
    }
    let q = query(&x.query.0);
    if !q.is_empty() {
        target_text.push('?');
        target_text.push_str(&q);
    }
    let version = match x.version {
        Version::Http11 => "HTTP/1.1",
        Version::Http10 => "HTTP/1.0",
        Version::Http2 => "HTTP/2.0",
        Version::Http09 => "HTTP/0.9",
        Version::Garbage => "HTTP/1.1x",
    };
    let mut head = format!("{method} {target_text} {version}\r\n");
    let mut host = true;
    for h in &x.headers.0 {
        match h {
            Header::UserAgent(n) => {
                let _ = write!(head, "User-Agent: {}\r\n", clean(&n.text()));
            }
            Header::Authorization(c) => {
                let _ = write!(head, "Authorization: {}\r\n", clean(&c.header()));
            }
            Header::Range(r) => {
                let _ = write!(head, "Range: {}\r\n", r.text());
            }
            Header::Expect100 => head.push_str("Expect: 100-continue\r\n"),
            Header::ExpectOther => head.push_str("Expect: the-unexpected\r\n"),
            Header::ContentLength(s) => {
                must_answer = false;
                let _ = write!(head, "Content-Length: {}\r\n", clean(&s.0));
            }
            Header::TransferEncoding(s) => {
                must_answer = false;
                let _ = write!(head, "Transfer-Encoding: {}\r\n", clean(&s.0));
            }
            Header::Connection(s) => {
                let _ = write!(head, "Connection: {}\r\n", clean(&s.0));
            }
            Header::UpgradeH2c => {
                head.push_str("Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n");
                head.push_str("HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n");
            }
            Header::NoHost => host = false,
            Header::SecondHost => head.push_str("Host: another.example\r\n"),
            Header::Accept(s) => {
                let _ = write!(head, "Accept: {}\r\n", clean(&s.0));
            }
            Header::Cookie(n) => {
                let _ = write!(head, "Cookie: c={}\r\n", "x".repeat(usize::from(*n)));
            }
            Header::Other(name, value) => {
                let name: String = name.0.chars().filter(char::is_ascii_alphanumeric).collect();
                if !name.is_empty() {
                    let _ = write!(head, "X-{name}: {}\r\n", clean(&value.0));
                }
            }
            Header::RawLine(bytes) => {
                must_answer = false;
                head.push_str(&String::from_utf8_lossy(&bytes.0));
                head.push_str("\r\n");
            }
        }
    }
    for i in 0..usize::from(x.flood) * 3 {
        let _ = write!(head, "X-Flood-{i}: {i}\r\n");
    }
    if host {
        let _ = write!(head, "Host: {}\r\n", target.http);
    }
    let mut body = Vec::new();
    match &x.body {
        Body::None => {}
        Body::Honest(b) => {
            let _ = write!(head, "Content-Length: {}\r\n", b.0.len());
            body.extend_from_slice(&b.0);
        }
        Body::Lying { claimed, sent } => {
            must_answer = false;
            let claimed = usize::from(*claimed).max(sent.0.len() + 1);
            let _ = write!(head, "Content-Length: {claimed}\r\n");
            body.extend_from_slice(&sent.0);
        }
        Body::Chunked(chunks) => {
            head.push_str("Transfer-Encoding: chunked\r\n");
            for c in &chunks.0 {
                body.extend_from_slice(format!("{:x}\r\n", c.0.len()).as_bytes());
                body.extend_from_slice(&c.0);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n\r\n");
        }
        Body::BadChunked(b) => {
            must_answer = false;
            head.push_str("Transfer-Encoding: chunked\r\n");
            body.extend_from_slice(&b.0);
        }
    }
    head.push_str("\r\n");
    if !matches!(x.version, Version::Http11 | Version::Http10) {
        must_answer = false;
    }
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&body);
    (bytes, must_answer)
}

/// Status codes camcast's HTTP port may answer with; anything else (a 500, a 502...) is a
/// bug. 1xx are interim.
const HTTP_STATUSES: &[u16] = &[
    100, 200, 400, 401, 404, 405, 408, 413, 414, 417, 426, 431, 501, 503, 505,
];

struct HttpHead {
    status: u16,
    headers: BTreeMap<String, String>,
    len: usize,
}

/// Parses a response head at the start of `buf`: `Ok(None)` if more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<HttpHead>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let status = response.code.ok_or("no status code")?;
            let headers = response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Some(HttpHead {
                status,
                headers,
                len,
            }))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(format!(
            "malformed response head ({e}): {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        )),
    }
}

/// Reads into `buf` until `enough(buf)`; false on EOF, error or timeout.
async fn read_until(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    wait: Duration,
    enough: impl Fn(&BytesMut) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    while !enough(buf) {
        buf.reserve(16 * 1024);
        match tokio::time::timeout_at(deadline, tcp.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
    true
}

async fn http_exchange(
    x: &HttpExchange,
    target: &Target,
    held: &mut Vec<Held>,
) -> Result<(), Failure> {
    let (request, must_answer) = http_request(x, target);
    let copies = 1 + usize::from(x.copies % 3);
    let mut tcp = TcpStream::connect(target.http)
        .await
        .map_err(|e| format!("cannot connect to the HTTP port: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut all = Vec::with_capacity(request.len() * copies);
    for _ in 0..copies {
        all.extend_from_slice(&request);
    }
    // The server may answer (431, 400) and close before reading everything, or stop reading a
    // request it will never use (a body it does not want).
    let _ = tokio::time::timeout(ANSWER, tcp.write_all(&all)).await;
    let mut buf = BytesMut::new();
    let head_request = matches!(x.method, Method::Head);
    for copy in 0..copies {
        let head = loop {
            let wait = if must_answer && copy == 0 {
                ANSWER
            } else {
                BRIEF
            };
            let got = read_until(&mut tcp, &mut buf, wait, |b| {
                !b.is_empty() && parse_head(b).map_or(true, |h| h.is_some())
            })
            .await;
            if !got {
                if must_answer && copy == 0 {
                    return Err(if buf.is_empty() {
                        "closed or silent without a response".to_string()
                    } else {
                        format!(
                            "response head cut short: {:?}",
                            String::from_utf8_lossy(&buf)
                        )
                    });
                }
                if !buf.is_empty() {
                    // Not owed an answer, but what did come must not be garbage.
                    parse_head(&buf)?;
                }
                keep_or_end(tcp, x.close, held);
                return Ok(());
            }
            let head = parse_head(&buf)?.expect("complete head");
            let _ = buf.split_to(head.len);
            if head.status / 100 == 1 && head.status != 101 {
                continue; // interim (100 Continue)
            }
            break head;
        };
        if !HTTP_STATUSES.contains(&head.status) {
            return Err(format!(
                "HTTP status {} is not one camcast gives: {:?}",
                head.status, head.headers
            ));
        }
        if head.status == 401 && !target.tokened {
            return Err("401 from a server that requires no token".into());
        }
        let content_type = head.headers.get("content-type").cloned();
        if head.status == 200 && content_type.is_none() {
            return Err("200 without a content type".into());
        }
        let streaming = content_type
            .as_deref()
            .is_some_and(|t| t.starts_with("multipart/x-mixed-replace"));
        if streaming && !head_request {
            let parts = usize::from(x.parts % 4);
            let boundary = b"--camcastframe\r\n";
            read_until(&mut tcp, &mut buf, BRIEF * 4, |b| {
                b.windows(boundary.len()).filter(|w| w == boundary).count() >= parts
            })
            .await;
            // A stream has no end; the connection goes as the step says.
            keep_or_end(tcp, x.close, held);
            return Ok(());
        }
        if !head_request && !skip_body(&mut tcp, &mut buf, &head).await? {
            break;
        }
    }
    keep_or_end(tcp, x.close, held);
    Ok(())
}

/// Consumes a response body (by `Content-Length` or chunks); false if the connection ended.
async fn skip_body(
    tcp: &mut TcpStream,
    buf: &mut BytesMut,
    head: &HttpHead,
) -> Result<bool, Failure> {
    if let Some(len) = head.headers.get("content-length") {
        let len: usize = len
            .trim()
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?} in a response"))?;
        if !read_until(tcp, buf, ANSWER, |b| b.len() >= len).await {
            return Err(format!("body cut short: {} of {len} bytes", buf.len()));
        }
        let _ = buf.split_to(len);
        return Ok(true);
    }
    if head
        .headers
        .get("transfer-encoding")
        .is_some_and(|t| t.contains("chunked"))
    {
        loop {
            let got = read_until(tcp, buf, ANSWER, |b| b.windows(2).any(|w| w == b"\r\n")).await;
            if !got {
                return Err("chunked body cut short".into());
            }
            let line_end = buf.windows(2).position(|w| w == b"\r\n").unwrap();
            let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?}"))?;
            let need = line_end + 2 + size + 2;
            if !read_until(tcp, buf, ANSWER, |b| b.len() >= need).await {
                return Err("chunk cut short".into());
            }
            let _ = buf.split_to(need);
            if size == 0 {
                return Ok(true);
            }
        }
    }
    // No length: the body runs to the end of the connection.
    Ok(false)
}

// --- gRPC over HTTP/2.

/// gRPC status codes camcast may answer with: OK, CANCELLED, INVALID_ARGUMENT,
/// DEADLINE_EXCEEDED, NOT_FOUND (health of an unknown service), RESOURCE_EXHAUSTED,
/// OUT_OF_RANGE, UNIMPLEMENTED, INTERNAL (a request that is not valid protobuf), UNAVAILABLE,
/// UNAUTHENTICATED. UNKNOWN (what a handler error or panic becomes) and the rest would be bugs.
const GRPC_CODES: &[i32] = &[0, 1, 3, 4, 5, 8, 11, 12, 13, 14, 16];
/// HTTP statuses of the gRPC port: 200 for gRPC; the others for requests that are not gRPC
/// (wrong content type or method, headers over the limit).
const GRPC_HTTP_STATUSES: &[u16] = &[200, 400, 404, 405, 415, 431];

fn grpc_headers(call: &GrpcCall, target: &Target) -> http::Request<()> {
    let uri = format!("http://{}{}", target.grpc, call.path.text());
    let uri = uri.parse::<http::Uri>().unwrap_or_else(|_| {
        format!("http://{}/unparsable", target.grpc)
            .parse()
            .unwrap()
    });
    let method = match call.verb {
        Verb::Post => http::Method::POST,
        Verb::Get => http::Method::GET,
        Verb::Put => http::Method::PUT,
    };
    let mut req = http::Request::builder().method(method).uri(uri);
    let mut content_type = Some("application/grpc".to_string());
    let mut te = Some("trailers".to_string());
    let mut extra: Vec<(String, Vec<u8>)> = Vec::new();
    for h in &call.headers.0 {
        match h {
            GrpcHeader::ContentType(c) => {
                content_type = match c {
                    ContentType::Grpc => Some("application/grpc".into()),
                    ContentType::GrpcProto => Some("application/grpc+proto".into()),
                    ContentType::GrpcJson => Some("application/grpc+json".into()),
                    ContentType::Json => Some("application/json".into()),
                    ContentType::Empty => None,
                    ContentType::Any(s) => Some(s.0.clone()),
                }
            }
            GrpcHeader::NoTe => te = None,
            GrpcHeader::Te(s) => te = Some(s.0.clone()),
            GrpcHeader::Timeout(t) => extra.push(("grpc-timeout".into(), t.text().into_bytes())),
            GrpcHeader::Authorization(c) => {
                extra.push(("authorization".into(), c.header().into_bytes()))
            }
            GrpcHeader::Encoding(e) => {
                let v = match e {
                    Encoding::Identity => "identity".to_string(),
                    Encoding::Gzip => "gzip".into(),
                    Encoding::Deflate => "deflate".into(),
                    Encoding::Zstd => "zstd".into(),
                    Encoding::Any(s) => s.0.clone(),
                };
                extra.push(("grpc-encoding".into(), v.into_bytes()));
            }
            GrpcHeader::AcceptEncoding(s) => {
                extra.push(("grpc-accept-encoding".into(), s.0.clone().into_bytes()))
            }
            GrpcHeader::UserAgent(n) => extra.push(("user-agent".into(), n.text().into_bytes())),
            GrpcHeader::Metadata(k, v) => extra.push((
                format!("x-{}", k.0.to_ascii_lowercase()),
                v.0.clone().into_bytes(),
            )),
            GrpcHeader::BinaryMetadata(k, v) => {
                extra.push((format!("x-{}-bin", k.0.to_ascii_lowercase()), v.0.clone()))
            }
            GrpcHeader::Large(n) => extra.push(("x-large".into(), vec![b'l'; usize::from(*n)])),
        }
    }
    if let Some(c) = content_type {
        req = req.header("content-type", c);
    }
    if let Some(t) = te {
        req = req.header("te", t);
    }
    let mut req = req.body(()).unwrap_or_else(|_| {
        // An invalid content type or te: the request goes without them.
        http::Request::post(format!("http://{}/", target.grpc))
            .body(())
            .unwrap()
    });
    for (name, value) in extra {
        // Only what HTTP allows in a header: the h2 client refuses the rest.
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_bytes(&value),
        ) {
            req.headers_mut().append(n, v);
        }
    }
    req
}

fn grpc_body(body: &GrpcBody) -> Vec<u8> {
    fn frame(flag: u8, payload: &[u8], skew: i64) -> Vec<u8> {
        let len = (payload.len() as i64 + skew).clamp(0, i64::from(u32::MAX)) as u32;
        let mut out = vec![flag];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
    match body {
        GrpcBody::Empty => Vec::new(),
        GrpcBody::Message(m) => frame(0, &m.encode(), 0),
        GrpcBody::Two(a, b) => [frame(0, &a.encode(), 0), frame(0, &b.encode(), 0)].concat(),
        GrpcBody::Framed {
            flag,
            skew,
            payload,
        } => frame(*flag, &payload.0, i64::from(*skew)),
        GrpcBody::Raw(b) => b.0.clone(),
    }
}

/// Checks a `grpc-status` if the headers carry one; an open server never says UNAUTHENTICATED.
fn check_grpc_status(headers: &http::HeaderMap, target: &Target) -> Result<(), Failure> {
    let Some(status) = headers.get("grpc-status") else {
        return Ok(());
    };
    let code: i32 = status
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("unparsable grpc-status {status:?}"))?;
    if code == 16 && !target.tokened {
        return Err("UNAUTHENTICATED from a server that requires no token".into());
    }
    if !GRPC_CODES.contains(&code) {
        let message = headers
            .get("grpc-message")
            .map(|m| m.to_str().unwrap_or("?"));
        return Err(format!(
            "gRPC status {code} is not one camcast gives (message {message:?})"
        ));
    }
    Ok(())
}

async fn grpc_connection(
    g: &GrpcConnection,
    target: &Target,
    held: &mut Vec<Held>,
) -> Result<(), Failure> {
    let tcp = TcpStream::connect(target.grpc)
        .await
        .map_err(|e| format!("cannot connect to the gRPC port: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let fd = socket2::SockRef::from(&tcp)
        .try_clone()
        .ok()
        .map(std::os::fd::OwnedFd::from);
    let mut builder = h2::client::Builder::new();
    let s = &g.settings;
    if let Some(w) = &s.stream_window {
        builder.initial_window_size(w.size());
    }
    if let Some(w) = &s.connection_window {
        builder.initial_connection_window_size(w.size());
    }
    if let Some(f) = s.max_frame_size {
        builder.max_frame_size(f.clamp(16_384, (1 << 24) - 1));
    }
    if let Some(n) = s.max_header_list_size {
        builder.max_header_list_size(n);
    }
    if let Some(n) = s.header_table_size {
        builder.header_table_size(n);
    }
    let handshake = tokio::time::timeout(ANSWER, builder.handshake::<_, Bytes>(tcp)).await;
    let (mut client, connection) = match handshake {
        Ok(Ok(pair)) => pair,
        // The server may refuse the connection (admission) or the handshake.
        Ok(Err(_)) | Err(_) => return Ok(()),
    };
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut streams = Vec::new();
    let mut sends = Vec::new();
    let mut result = Ok(());
    for call in &g.calls.0 {
        match grpc_call(call, target, &mut client).await {
            Ok(Some((recv, send))) => {
                streams.push(recv);
                sends.push(send);
            }
            Ok(None) => {}
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let conn = Held::H2 {
        tcp_linger: fd,
        streams,
        sends,
        client,
        driver,
    };
    match g.close {
        Close::Keep if result.is_ok() => held.push(conn),
        Close::Keep => conn.end(Close::Graceful),
        how => conn.end(how),
    }
    result
}

/// One call; returns the streams when the call is left open (a viewer that stays).
async fn grpc_call(
    call: &GrpcCall,
    target: &Target,
    client: &mut h2::client::SendRequest<Bytes>,
) -> Result<Option<(h2::RecvStream, h2::SendStream<Bytes>)>, Failure> {
    let Ok(Ok(ready)) = tokio::time::timeout(BRIEF * 4, client.clone().ready()).await else {
        // The server limits concurrent streams or has gone away: not an answer to judge.
        return Ok(None);
    };
    *client = ready;
    let req = grpc_headers(call, target);
    let body = grpc_body(&call.body);
    let end_now = body.is_empty() && call.end_stream;
    let Ok((response, mut send)) = client.send_request(req, end_now) else {
        return Ok(None);
    };
    if !body.is_empty() {
        send.reserve_capacity(body.len());
        let _ = send.send_data(Bytes::from(body), call.end_stream);
    }
    let must_answer = call.end_stream
        && matches!(call.verb, Verb::Post)
        && !call.headers.0.iter().any(|h| {
            matches!(
                h,
                GrpcHeader::Timeout(_) | GrpcHeader::Large(_) | GrpcHeader::Te(_)
            )
        });
    let wait = if must_answer { ANSWER } else { BRIEF * 4 };
    let response = match tokio::time::timeout(wait, response).await {
        Ok(Ok(r)) => r,
        // A reset stream or a GOAWAY: the server defended itself.
        Ok(Err(_)) => return Ok(None),
        Err(_) if must_answer => {
            return Err(format!(
                "no response to {} within {ANSWER:?}",
                call.path.text()
            ))
        }
        Err(_) => return Ok(None),
    };
    let status = response.status().as_u16();
    if !GRPC_HTTP_STATUSES.contains(&status) {
        return Err(format!("HTTP status {status} on the gRPC port"));
    }
    check_grpc_status(response.headers(), target)?;
    let mut recv = response.into_body();
    for _ in 0..call.read % 4 {
        match tokio::time::timeout(BRIEF * 4, recv.data()).await {
            Ok(Some(Ok(data))) => {
                if call.release {
                    let _ = recv.flow_control().release_capacity(data.len());
                }
            }
            _ => break,
        }
    }
    match call.finish {
        StreamEnd::Finish => {
            if recv.is_end_stream() {
                return Ok(None);
            }
            // Drain what comes in a moment, then look at the trailers if the stream ended. A
            // live stream never pauses for long, so the whole drain is bounded, not each read.
            let until = tokio::time::Instant::now() + BRIEF * 4;
            loop {
                match tokio::time::timeout_at(until, recv.data()).await {
                    Ok(Some(Ok(data))) => {
                        let _ = recv.flow_control().release_capacity(data.len());
                    }
                    Ok(Some(Err(_))) => return Ok(None),
                    Ok(None) => break,
                    // Still streaming (a live stream): leave it open for now.
                    Err(_) => return Ok(Some((recv, send))),
                }
            }
            if let Ok(Ok(Some(trailers))) = tokio::time::timeout(BRIEF, recv.trailers()).await {
                check_grpc_status(&trailers, target)?;
            }
            Ok(None)
        }
        StreamEnd::Reset(code) => {
            send.send_reset(h2::Reason::from(code));
            Ok(None)
        }
        StreamEnd::Drop => Ok(None),
    }
}

// --- Raw HTTP/2 frames.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HPACK block of literal fields (no indexing, no Huffman): what any decoder must accept.
fn hpack(fields: &[(&str, &str)]) -> Vec<u8> {
    fn int(out: &mut Vec<u8>, mut n: usize, prefix_bits: u8, first: u8) {
        let max = (1usize << prefix_bits) - 1;
        if n < max {
            out.push(first | n as u8);
            return;
        }
        out.push(first | max as u8);
        n -= max;
        while n >= 128 {
            out.push((n % 128) as u8 | 0x80);
            n /= 128;
        }
        out.push(n as u8);
    }
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        int(&mut out, name.len(), 7, 0);
        out.extend_from_slice(name.as_bytes());
        int(&mut out, value.len(), 7, 0);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn raw_frame(out: &mut BytesMut, f: &RawFrame, target: &Target) {
    let (kind, payload): (u8, Vec<u8>) = match &f.kind {
        FrameKind::Data(b) => (0, b.0.clone()),
        FrameKind::Headers(path, auth) => {
            let authority = target.grpc.to_string();
            let path = path.text();
            let bearer = format!("Bearer {TOKEN}");
            let mut fields = vec![
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", authority.as_str()),
                (":path", path.as_str()),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            ];
            if *auth {
                fields.push(("authorization", bearer.as_str()));
            }
            (1, hpack(&fields))
        }
        FrameKind::HeadersRaw(b) => (1, b.0.clone()),
        FrameKind::Priority(dep, weight) => {
            let mut p = dep.to_be_bytes().to_vec();
            p.push(*weight);
            (2, p)
        }
        FrameKind::RstStream(code) => (3, code.to_be_bytes().to_vec()),
        FrameKind::Settings(pairs) => {
            let mut p = Vec::new();
            for (id, value) in &pairs.0 {
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&value.to_be_bytes());
            }
            (4, p)
        }
        FrameKind::PushPromise(id) => (5, id.to_be_bytes().to_vec()),
        FrameKind::Ping(data) => (6, data.to_vec()),
        FrameKind::GoAway(last, code) => {
            let mut p = last.to_be_bytes().to_vec();
            p.extend_from_slice(&code.to_be_bytes());
            (7, p)
        }
        FrameKind::WindowUpdate(n) => (8, n.to_be_bytes().to_vec()),
        FrameKind::Continuation(b) => (9, b.0.clone()),
        FrameKind::Unknown(kind, b) => ((*kind).max(10), b.0.clone()),
    };
    let len = payload.len() as u32;
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(f.flags);
    out.put_u32(f.stream.id());
    out.put_slice(&payload);
}

async fn raw_h2(r: &RawH2, target: &Target, held: &mut Vec<Held>) -> Result<(), Failure> {
    let mut tcp = TcpStream::connect(target.grpc)
        .await
        .map_err(|e| format!("cannot connect to the gRPC port: {e}"))?;
    let mut out = BytesMut::new();
    if r.preface {
        out.put_slice(PREFACE);
        // The client's SETTINGS must come first; an empty one is valid.
        out.put_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    }
    let mut frames = BytesMut::new();
    for f in &r.frames.0 {
        raw_frame(&mut frames, f, target);
    }
    for _ in 0..=usize::from(r.repeat) {
        out.extend_from_slice(&frames);
    }
    // A server that stops reading (it answered with GOAWAY) may leave a flood unsent.
    let _ = tokio::time::timeout(BRIEF * 4, tcp.write_all(&out)).await;
    // Whatever the server says (SETTINGS, GOAWAY, frames) is its business: read a moment, so
    // that it is not writing into a closed socket, and go.
    let mut sink = BytesMut::new();
    read_until(&mut tcp, &mut sink, BRIEF, |b| b.len() > 1 << 20).await;
    keep_or_end(tcp, r.close, held);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// After a sequence.

/// The process's open descriptors (what a leak would raise), counted as the common invariants
/// count them (runtime descriptors and per-process singletons left out).
pub fn descriptor_count() -> usize {
    crate::common::invariants::descriptors("self").len()
}

/// What each open descriptor is, for a failure message.
fn descriptor_list() -> String {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return "(cannot list /proc/self/fd)".into();
    };
    let mut fds: Vec<String> = dir
        .flatten()
        .map(|e| {
            let target =
                std::fs::read_link(e.path()).map_or("?".into(), |t| t.display().to_string());
            format!("{}→{target}", e.file_name().to_string_lossy())
        })
        .collect();
    fds.sort();
    fds.join(" ")
}

/// Waits up to `bound` for `cond`.
async fn within(bound: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The invariants once a sequence's clients are all gone: on every server no viewer is left
/// and capture has stopped (the linger is zero), the process holds no more descriptors than
/// `descriptors` (its count before the sequences), and each server still answers `/healthz`.
pub async fn settle(targets: &[&Target], descriptors: usize) -> Result<(), Failure> {
    const BOUND: Duration = Duration::from_secs(20);
    for t in targets {
        let hub = t.hub.clone();
        if !within(BOUND, || hub.viewer_count() == 0).await {
            return Err(format!(
                "{} viewer(s) left registered after every client went",
                t.hub.viewer_count()
            ));
        }
        if !within(BOUND, || !hub.capturing()).await {
            return Err("capture still running after every viewer left".into());
        }
    }
    if !within(BOUND, || descriptor_count() <= descriptors).await {
        return Err(format!(
            "{} descriptors open, {descriptors} before the sequence: {}",
            descriptor_count(),
            descriptor_list()
        ));
    }
    for t in targets {
        let mut tcp = TcpStream::connect(t.http)
            .await
            .map_err(|e| format!("server no longer accepts: {e}"))?;
        let req = format!(
            "GET /healthz HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            t.http
        );
        tcp.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("server no longer reads: {e}"))?;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(ANSWER, tcp.read_to_end(&mut answer)).await;
        if !answer.starts_with(b"HTTP/1.1 200") {
            return Err(format!(
                "/healthz after the sequence: {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(200)])
            ));
        }
    }
    // The health check's own connection must be gone too before the next sequence counts.
    within(BOUND, || descriptor_count() <= descriptors).await;
    Ok(())
}
