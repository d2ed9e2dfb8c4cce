//! camcast: a LAN network camera. Frames flow camera → source → hub → transports → viewers.
//!
//! Module map:
//! - [`config`]: command-line flags and the optional TOML file, merged and validated once.
//! - [`frame`]: the captured frame shared by every viewer, and JPEG sanity checks.
//! - [`jpeg`]: JPEG structure checks and repair (missing Huffman tables, padding) for MJPEG passthrough.
//! - [`source`]: where frames come from: V4L2 cameras, Pi camera modules through libcamera
//!   (feature `libcamera`), the test pattern, a scripted fake, and a fault-injecting wrapper.
//! - [`devices`]: what `camcast devices` lists: V4L2 nodes, their formats, sizes, rates and controls.
//! - [`hub`]: one capture loop per camera, newest-frame fan-out, viewer registry and limits.
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
//! - [`client`]: the client side of both APIs, shared by `camcast-view`, tests and benchmarks.
//! - [`discovery`]: mDNS/DNS-SD: the server's advertisement, and finding cameras on the LAN.
//! - [`view`]: `camcast-view`'s desktop window, reconnecting feed and Matroska recording.

pub mod admission;
pub mod auth;
pub mod client;
pub mod config;
pub mod devices;
pub mod discovery;
pub mod frame;
pub mod grpc;
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
pub mod view;

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
