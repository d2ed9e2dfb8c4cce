//! gRPC transport: the tutorial API and camcast.v1 as two views of the same hubs, plus the
//! standard health and reflection services. camcast.v1 requests name their camera (empty: the
//! default one); the tutorial API, which cannot, serves the default camera.
//!
//! Connections are served on h2 directly ([`server`]): the two live-frame streams by
//! [`streaming`], paced by each viewer's HTTP/2 credits ([`credit`]) so a slow viewer skips
//! frames instead of queueing them; everything else by tonic's services through [`bridge`].
//! docs/flow-control.md explains the design and its measurements.

mod bridge;
mod credit;
mod gate;
mod message;
pub mod request;
mod server;
mod streaming;
mod v1;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic_health::ServingStatus;
use tower::Layer;

use crate::cameras::{Cameras, UnknownCamera};
use crate::config::{Config, MAX_FRAME_BYTES};
use crate::hub::HubError;
use crate::pb;
use crate::protection::Protection;
use crate::status::{State, StatusCell};

pub use v1::CameraService;

/// Fully qualified gRPC service names, as health checks and reflection know them.
pub const TUTORIAL_SERVICE: &str = "WebcamStreaming";
pub const V1_SERVICE: &str = "camcast.v1.Camera";

/// HTTP/2 streams a connection may open beyond the viewer cap: unary calls, health, reflection.
const STREAMS_BEYOND_VIEWERS: u32 = 16;

/// Transport settings and limits. Every limit a peer could push against is here or in the
/// shared [`Protection`], with its config key named in `deploy/camcast.toml`.
#[derive(Debug, Clone)]
pub struct GrpcSettings {
    pub max_name_len: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub snapshot_timeout: Duration,
    /// HTTP/2 streams one connection may have open. Streams beyond it wait silently in the
    /// client, so it only bounds abusive peers: [`GrpcSettings::new`] keeps it above the viewer
    /// cap, whose refusals name the limit.
    pub max_streams_per_connection: u32,
    pub max_request_bytes: usize,
    pub max_header_list_bytes: u32,
    /// Serve the tutorial's `WebcamStreaming` service.
    pub tutorial_api: bool,
    /// At shutdown, how long connections get to take their streams' final status.
    pub drain_timeout: Duration,
}

impl Default for GrpcSettings {
    /// The settings of a default config.
    fn default() -> Self {
        GrpcSettings::new(&Config::default())
    }
}

impl GrpcSettings {
    /// The settings from a validated config.
    pub fn new(c: &Config) -> Self {
        // grpcio opens every channel to one target on one connection: 50 viewers in one
        // program are 50 streams. Any of them beyond the viewer cap must hear so from the
        // hub (RESOURCE_EXHAUSTED, naming the limit), not wait behind the stream limit.
        let viewers = u32::try_from(c.hub.max_viewers).unwrap_or(u32::MAX);
        let streams = c
            .max_streams_per_connection
            .max(viewers.saturating_add(STREAMS_BEYOND_VIEWERS));
        GrpcSettings {
            max_name_len: c.max_name_len,
            keepalive_interval: c.keepalive_interval,
            keepalive_timeout: c.keepalive_timeout,
            snapshot_timeout: c.snapshot_timeout,
            drain_timeout: c.drain_timeout,
            max_streams_per_connection: streams,
            max_request_bytes: c.max_request_bytes,
            max_header_list_bytes: c.max_header_list_bytes,
            tutorial_api: c.tutorial_api,
        }
    }
}

/// Serves every gRPC service on `listener`, under `protection`, until `shutdown` resolves; then
/// stops accepting and waits for connections to finish (viewer streams end with an OK status
/// when the hub shuts down, which is the caller's job: see [`crate::server`]).
pub async fn serve(
    listener: TcpListener,
    cameras: Cameras,
    status: StatusCell,
    settings: GrpcSettings,
    protection: Protection,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (health, health_service) = tonic_health::server::health_reporter();
    // The tutorial API serves the default camera only: its health is that camera's. camcast.v1
    // and the server as a whole ("") follow the appliance (the worst camera).
    let default = cameras.default_camera();
    let hub = &default.hub;
    tokio::spawn(track_health(
        health.clone(),
        &[TUTORIAL_SERVICE],
        default.status.clone(),
        hub.clone(),
    ));
    tokio::spawn(track_health(health, &["", V1_SERVICE], status, hub.clone()));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("descriptor set compiled by build.rs is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("descriptor set compiled by build.rs is valid");
    // The live-frame methods never reach tonic (see `streaming`); the tutorial service has no
    // other method, so tonic does not serve it at all.
    let v1 = pb::v1::camera_server::CameraServer::new(CameraService::new(
        cameras.clone(),
        settings.clone(),
    ))
    .max_encoding_message_size(MAX_FRAME_BYTES)
    .max_decoding_message_size(settings.max_request_bytes);
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(v1)
        .prepare();
    let tonic = gate::GateLayer::new(protection.tokens.clone()).layer(routes);

    let tls = protection.tls.as_ref().map(|t| {
        // HTTP/2 only on this port, as tonic's server offered.
        let mut config = (*t.rustls).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let drain = settings.drain_timeout;
    let shared = Arc::new(server::Shared {
        streams: Arc::new(streaming::Streams {
            cameras,
            settings,
            protection,
        }),
        tonic,
        tls,
        draining: CancellationToken::new(),
        abandon: CancellationToken::new(),
    });
    let stop = CancellationToken::new();
    let accepting = tokio::spawn(server::accept(listener, shared.clone(), stop.clone()));
    shutdown.await;
    stop.cancel();
    shared.draining.cancel();
    let connections = accepting.await.expect("the accept loop does not panic");
    // A connection whose viewer stopped reading cannot take its final status (HTTP/2 flow
    // control), and a health Watch never ends: give them `drain_timeout`, then close them
    // and return so the process can exit.
    if tokio::time::timeout(drain, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("gRPC connections still open {drain:?} after shutdown (viewers not reading); closing them");
        shared.abandon.cancel();
    }
}

/// Mirrors a state into the gRPC health of `services`: NOT_SERVING while the camera is
/// missing or faulty and after shutdown begins (when `hub`, whose shutdown all cameras share,
/// closes). The server as a whole ("") stays SERVING while it runs.
async fn track_health(
    health: tonic_health::server::HealthReporter,
    services: &'static [&'static str],
    status: StatusCell,
    hub: crate::hub::Hub,
) {
    let mut rx = status.subscribe();
    loop {
        let serving = match rx.borrow_and_update().state {
            State::WaitingForCamera | State::Fault => ServingStatus::NotServing,
            _ => ServingStatus::Serving,
        };
        for name in services.iter().filter(|n| !n.is_empty()) {
            health.set_service_status(name, serving).await;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = hub.closed() => break,
        }
    }
    for name in services {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
}

/// NOT_FOUND, naming the cameras there are.
impl From<UnknownCamera> for Status {
    fn from(e: UnknownCamera) -> Status {
        Status::not_found(e.to_string())
    }
}

impl From<HubError> for Status {
    fn from(e: HubError) -> Status {
        match e {
            HubError::Full { .. } | HubError::AddressFull { .. } => {
                Status::resource_exhausted(e.to_string())
            }
            HubError::ShuttingDown | HubError::NoFrame(..) => Status::unavailable(e.to_string()),
        }
    }
}
