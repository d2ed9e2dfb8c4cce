//! camcast: a LAN network camera. Frames flow camera → source → hub → transports → viewers.
//!
//! Module map:
//! - [`config`]: command-line flags and the optional TOML file, merged and validated once.
//! - [`frame`]: the captured frame shared by every viewer, and JPEG sanity checks.
//! - [`frame_pool`]: recycled frame buffers, so a steady stream allocates nothing per frame.
//! - [`jpeg`]: JPEG structure checks and repair (missing Huffman tables, padding) for MJPEG passthrough.
//! - [`source`]: where frames come from (V4L2, libcamera, the test pattern; fakes for tests), the
//!   one YUV→JPEG encoder and capture clock they share, and what `camcast devices` lists.
//! - [`hub`]: one capture loop per camera, newest-frame fan-out, viewer registry and limits.
//! - [`cameras`]: the server's cameras by name, one hub each, and their worst state.
//! - [`status`]: the appliance state (starting, waiting, ready, streaming, fault).
//! - [`led`]: the status LED (GPIO, sysfs LED class, none) blinking the appliance state.
//! - [`metrics`]: per-camera and server counters, and `/metrics` for Prometheus.
//! - [`panics`]: the panic hook: every panic logged once with context, and counted.
//! - [`systemd`]: sd_notify for the service: ready, status, watchdog pings, stopping.
//! - [`grpc`]: the tutorial API (`WebcamStreaming`) and the `camcast.v1` API over tonic.
//! - [`admission`]: connection admission: per-address caps, handshake and idle timeouts.
//! - [`protection`]: what guards every port (admission, TLS, tokens), built once per server.
//! - [`auth`]: viewer tokens, stored hashed and compared in constant time.
//! - [`tls`]: TLS identities for the server, `gen-cert`, and the viewer's trust settings.
//! - [`http`]: the browser page, `/stream.mjpg`, `/snapshot.jpg` and `/healthz` over axum.
//! - [`server`]: the whole server wired in one place and shut down as one, for the binary and
//!   the tests alike.
//! - [`wire`]: what server and client agree on: the default port and message size limits.
//! - [`host`]: this machine's host name (TLS names, mDNS names, `/info.json`).
//! - [`client`]: the client side of both APIs, shared by `camcast-view`, tests and benchmarks.
//! - [`discovery`]: mDNS/DNS-SD: the server's advertisement, and (viewer) finding cameras.
//! - `view` (the `viewer` feature): `camcast-view`'s desktop window, reconnecting feed,
//!   Matroska recording and choice among the cameras found on the LAN.
//!
//! The `viewer` cargo feature (on by default) builds `camcast-view` and the viewer-only code
//! (window, recording, LAN browsing); the server `camcast` needs none of it:
//! `cargo build --release --bin camcast --no-default-features`.

pub mod admission;
pub mod auth;
pub mod cameras;
pub mod client;
pub mod config;
pub mod discovery;
pub mod frame;
pub mod frame_pool;
pub mod grpc;
pub mod host;
pub mod http;
pub mod hub;
pub mod jpeg;
pub mod led;
pub mod metrics;
pub mod panics;
pub mod protection;
pub mod server;
pub mod source;
pub mod status;
pub mod systemd;
pub mod tls;
#[cfg(feature = "viewer")]
pub mod view;
pub mod wire;

/// Generated protobuf/gRPC code.
pub mod pb {
    /// The tutorial API, `WebcamStreaming` (no proto package).
    pub mod tutorial {
        tonic::include_proto!("_");
    }
    /// The versioned API.
    pub mod v1 {
        tonic::include_proto!("camcast.v1");
    }
    /// Encoded descriptors of both protos, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/camcast_descriptor.bin"));
}
