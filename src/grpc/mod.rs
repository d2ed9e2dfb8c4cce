//! gRPC transport: the seed contract and camcast.v1 as two views of the same hub, plus the
//! standard health and reflection services.
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
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic_health::ServingStatus;
use tower::Layer;

use crate::admission::Admission;
use crate::auth::Tokens;
use crate::config::{Config, MAX_FRAME_BYTES};
use crate::hub::{Hub, HubError};
use crate::pb;
use crate::status::{State, StatusCell};
use crate::tls::ServerTls;

pub use v1::CameraService;

/// Fully qualified gRPC service names, as health checks and reflection know them.
pub const SEED_SERVICE: &str = "WebcamStreaming";
pub const V1_SERVICE: &str = "camcast.v1.Camera";

/// Shutdown waits this long for connections, well inside the process's 10 s grace.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 streams a connection may open beyond the viewer cap: unary calls, health, reflection.
const STREAMS_BEYOND_VIEWERS: u32 = 16;

/// Transport settings and limits. Every limit a peer could push against is here, with its
/// config key named in `deploy/camcast.toml`.
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
    pub seed_contract: bool,
    pub tls: Option<ServerTls>,
    pub tokens: Option<Tokens>,
    /// At shutdown, how long connections get to take their streams' final status.
    pub drain_timeout: Duration,
    /// Per-address connections, handshake and idle timeouts; shared with the server's other
    /// listeners so a peer has one cap across ports.
    pub admission: Admission,
}

impl Default for GrpcSettings {
    /// The settings of a default config, without TLS or tokens.
    fn default() -> Self {
        GrpcSettings::new(&Config::default(), None, None)
    }
}

impl GrpcSettings {
    /// The settings from a validated config plus the loaded TLS identity and tokens.
    pub fn new(c: &Config, tls: Option<ServerTls>, tokens: Option<Tokens>) -> Self {
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
            drain_timeout: DRAIN_TIMEOUT,
            admission: Admission::new(c.conn.clone()),
            max_streams_per_connection: streams,
            max_request_bytes: c.max_request_bytes,
            max_header_list_bytes: c.max_header_list_bytes,
            seed_contract: c.seed_contract,
            tls,
            tokens,
        }
    }
}

type FrameStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Serves every gRPC service on `listener` until `shutdown` resolves; then ends all viewer
/// streams with an OK status, waits for connections to finish (at most `drain_timeout`) and
/// stops the capture thread.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    status: StatusCell,
    settings: GrpcSettings,
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
    // The live-frame methods never reach tonic (see `streaming`); the seed service has no
    // other method, so tonic does not serve it at all.
    let v1 =
        pb::v1::camera_server::CameraServer::new(CameraService::new(hub.clone(), settings.clone()))
            .max_encoding_message_size(MAX_FRAME_BYTES)
            .max_decoding_message_size(settings.max_request_bytes);
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(v1)
        .prepare();
    let tonic = gate::GateLayer::new(settings.tokens.clone()).layer(routes);

    let tls = settings.tls.as_ref().map(|t| {
        // HTTP/2 only on this port, as tonic's server offered.
        let mut config = (*t.rustls).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let drain = settings.drain_timeout;
    let shared = Arc::new(server::Shared {
        streams: Arc::new(streaming::Streams {
            hub: hub.clone(),
            settings,
        }),
        tonic,
        tls,
        draining: CancellationToken::new(),
        abandon: CancellationToken::new(),
    });
    let stop = CancellationToken::new();
    let accepting = tokio::spawn(server::accept(listener, shared.clone(), stop.clone()));
    shutdown.await;
    tracing::info!("shutting down: ending viewer streams");
    stop.cancel();
    hub.shutdown().await;
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
    Ok(())
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
        for name in [SEED_SERVICE, V1_SERVICE] {
            health.set_service_status(name, serving).await;
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { break },
            _ = hub.closed() => break,
        }
    }
    for name in ["", SEED_SERVICE, V1_SERVICE] {
        health
            .set_service_status(name, ServingStatus::NotServing)
            .await;
    }
}

impl From<HubError> for Status {
    fn from(e: HubError) -> Status {
        match e {
            HubError::Full { .. } => Status::resource_exhausted(e.to_string()),
            HubError::ShuttingDown | HubError::NoFrame(..) => Status::unavailable(e.to_string()),
        }
    }
}
