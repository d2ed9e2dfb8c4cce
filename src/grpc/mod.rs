//! gRPC transport: the tutorial API and camcast.v1 as two views of the same hub, plus the
//! standard health and reflection services.

mod gate;
pub mod request;
mod tutorial;
mod v1;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tokio::net::TcpListener;
use tonic::Status;
use tonic_health::ServingStatus;

use crate::config::{Config, MAX_FRAME_BYTES};
use crate::hub::{Hub, HubError};
use crate::pb;
use crate::protection::Protection;
use crate::status::{State, StatusCell};

pub use tutorial::TutorialService;
pub use v1::CameraService;

/// Fully qualified gRPC service names, as health checks and reflection know them.
pub const TUTORIAL_SERVICE: &str = "WebcamStreaming";
pub const V1_SERVICE: &str = "camcast.v1.Camera";

/// Transport settings and limits. Every limit a peer could push against is here or in the
/// shared [`Protection`], with its config key named in `deploy/camcast.toml`.
#[derive(Debug, Clone)]
pub struct GrpcSettings {
    pub max_name_len: usize,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub snapshot_timeout: Duration,
    /// HTTP/2 streams one connection may have open: a viewer needs one or two.
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
        GrpcSettings {
            max_name_len: c.max_name_len,
            keepalive_interval: c.keepalive_interval,
            keepalive_timeout: c.keepalive_timeout,
            snapshot_timeout: c.snapshot_timeout,
            drain_timeout: c.drain_timeout,
            max_streams_per_connection: c.max_streams_per_connection,
            max_request_bytes: c.max_request_bytes,
            max_header_list_bytes: c.max_header_list_bytes,
            tutorial_api: c.tutorial_api,
        }
    }
}

type FrameStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Serves every gRPC service on `listener`, under `protection`, until `shutdown` resolves; then
/// stops accepting and waits for connections to finish (viewer streams end with an OK status
/// when the hub shuts down, which is the caller's job: see [`crate::server`]).
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    status: StatusCell,
    settings: GrpcSettings,
    protection: Protection,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    tokio::spawn(track_health(health, status, hub.clone()));

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

    let tutorial = settings.tutorial_api.then(|| {
        pb::tutorial::webcam_streaming_server::WebcamStreamingServer::new(TutorialService::new(
            hub.clone(),
            settings.clone(),
        ))
        .max_encoding_message_size(MAX_FRAME_BYTES)
        .max_decoding_message_size(settings.max_request_bytes)
    });
    let v1 =
        pb::v1::camera_server::CameraServer::new(CameraService::new(hub.clone(), settings.clone()))
            .max_encoding_message_size(MAX_FRAME_BYTES)
            .max_decoding_message_size(settings.max_request_bytes);

    let incoming = protection.admission.incoming(listener);
    let stopping = tokio_util::sync::CancellationToken::new();
    let stopped = stopping.clone();
    let signal = async move {
        shutdown.await;
        stopped.cancel();
    };
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &protection.tls {
        let config = tls
            .tonic_config()
            .timeout(protection.admission.limits().handshake_timeout);
        server = server.tls_config(config)?;
    }
    let served = server
        .http2_keepalive_interval(Some(settings.keepalive_interval))
        .http2_keepalive_timeout(Some(settings.keepalive_timeout))
        .max_concurrent_streams(settings.max_streams_per_connection)
        .http2_max_header_list_size(settings.max_header_list_bytes)
        .layer(gate::GateLayer::new(protection.tokens.clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_optional_service(tutorial)
        .add_service(v1)
        .serve_with_incoming_shutdown(incoming, signal);
    // tonic waits for every connection to close. One whose viewer stopped reading cannot take
    // its final status (HTTP/2 flow control), and a health Watch never ends: give them
    // `drain_timeout`, then return and let the process exit.
    let drain = settings.drain_timeout;
    tokio::select! {
        served = served => served,
        () = async { stopping.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!("gRPC connections still open {drain:?} after shutdown (viewers not reading); leaving them");
            Ok(())
        }
    }
}

/// Mirrors the appliance state into gRPC health: the camera services are NOT_SERVING while the
/// camera is missing or faulty and after shutdown begins; the server as a whole ("") stays
/// SERVING while it runs.
async fn track_health(health: tonic_health::server::HealthReporter, status: StatusCell, hub: Hub) {
    let mut rx = status.subscribe();
    loop {
        let serving = match rx.borrow_and_update().state {
            State::WaitingForCamera | State::Fault => ServingStatus::NotServing,
            _ => ServingStatus::Serving,
        };
        for name in [TUTORIAL_SERVICE, V1_SERVICE] {
            health.set_service_status(name, serving).await;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = hub.closed() => break,
        }
    }
    for name in ["", TUTORIAL_SERVICE, V1_SERVICE] {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
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
