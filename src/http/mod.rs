//! HTTP transport for browsers and the tools people already have (VLC, ffmpeg, Home Assistant,
//! OctoPrint, motionEye): a small page, `/stream.mjpg`, `/snapshot.jpg`, `/info.json` and
//! `/healthz`, served with axum on hyper's HTTP/1.1. Those paths serve the default camera;
//! `/cam/NAME/` and the same names under it serve camera NAME.
//!
//! It is another view of the same hubs as gRPC: frames are never encoded twice, HTTP viewers
//! count towards the same `max_viewers`, show up in `GetInfo` as api "http", and obey the same
//! slow-viewer rule (a viewer gets the newest frame when it is ready for one and skips the rest;
//! see `pacing.rs` for how the server tells when an MJPEG reader is ready).

mod auth;
mod mjpeg;
mod pacing;
pub use pacing::{tcp_info_usable, TcpInfoGap};
mod routes;

use std::future::Future;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::admission::{Tracked, Transport};
use crate::auth::Tokens;
use crate::cameras::Cameras;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::protection::Protection;
use crate::tls::ServerTls;

pub use mjpeg::BOUNDARY;

/// Request headers beyond this many bytes are answered 431 (a real request is well under 2 KiB).
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Header lines accepted per request.
const MAX_HEADERS: usize = 64;
/// hyper's per-connection buffer: bounds what a viewer's connection holds in user space, so a
/// stalled viewer keeps at most about one frame here and the rest of its frames are skipped.
const MAX_BUF_BYTES: usize = 64 * 1024;

/// Kernel send buffer per HTTP connection (Linux doubles it). An MJPEG stream is paced to its
/// reader (see [`pacing`]) and never has more than a part in flight; this bounds what a
/// connection can queue where pacing cannot see (no TCP facts). Left to autotuning, a loopback
/// or fast-LAN socket grows to megabytes. Ample for LAN round-trip times (1080p at 30 fps
/// needs about 1.6 MB/s).
const SEND_BUFFER_BYTES: usize = 128 * 1024;

/// HTTP settings. What guards the port (admission, TLS, tokens) is the server's shared
/// [`Protection`].
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Longest viewer name (`?name=`) accepted, in bytes.
    pub max_name_len: usize,
    /// How long `/snapshot.jpg` waits for a frame (camera start-up included).
    pub snapshot_timeout: Duration,
    /// A client must send its request headers within this time (slowloris guard).
    pub header_timeout: Duration,
    /// Unacknowledged data older than this drops the connection (TCP_USER_TIMEOUT): a viewer
    /// that vanished from the network frees its slot instead of holding it for many minutes.
    pub vanish_timeout: Duration,
    /// At shutdown, how long connections get to finish their last response. A viewer that
    /// stopped reading would otherwise hold the process until the shutdown watchdog.
    pub drain_timeout: Duration,
}

impl Default for HttpSettings {
    /// The settings of a default config.
    fn default() -> Self {
        HttpSettings::new(&Config::default())
    }
}

impl HttpSettings {
    /// The settings from a validated config.
    pub fn new(c: &Config) -> Self {
        HttpSettings {
            max_name_len: c.max_name_len,
            snapshot_timeout: c.snapshot_timeout,
            // The same patience gRPC has for a peer that stopped answering its pings.
            vanish_timeout: c.keepalive_timeout,
            header_timeout: c.conn.handshake_timeout,
            // Both ports drain for the same time at shutdown.
            drain_timeout: c.drain_timeout,
        }
    }
}

/// The camera's TLS identity for HTTPS: HTTP/1.1 only, since a browser offered h2 would speak a
/// protocol this port does not serve.
fn http1_tls(tls: &ServerTls) -> Arc<rustls::ServerConfig> {
    let mut config = (*tls.rustls).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// What every handler sees.
#[derive(Clone)]
struct AppState {
    cameras: Cameras,
    settings: Arc<HttpSettings>,
    metrics: Arc<Metrics>,
}

/// Every HTTP route, in one place: layers that apply to all of them (authentication, limits,
/// tracing) go here. With `tokens`, every route but `/healthz` needs one (header or `?token=`).
pub fn router(
    cameras: Cameras,
    settings: HttpSettings,
    tokens: Option<Tokens>,
    metrics: Arc<Metrics>,
) -> Router {
    let tokens = tokens.map(Arc::new);
    let state = AppState {
        cameras,
        settings: Arc::new(settings),
        metrics,
    };
    let viewer_routes = Router::new()
        .route("/", get(routes::page))
        .route("/info.json", get(routes::info))
        .route("/snapshot.jpg", get(routes::snapshot))
        .route("/stream.mjpg", get(mjpeg::stream))
        .route("/metrics", get(routes::metrics))
        // One camera by name: the same page and files (the page's URLs are relative). The
        // page needs the trailing slash for them; without it, it is sent there.
        .route("/cam/{camera}", get(routes::to_camera_page))
        .route("/cam/{camera}/", get(routes::page))
        .route("/cam/{camera}/info.json", get(routes::info))
        .route("/cam/{camera}/snapshot.jpg", get(routes::snapshot))
        .route("/cam/{camera}/stream.mjpg", get(mjpeg::stream))
        .fallback(routes::not_found)
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::require_token,
        ));
    // Health stays open, as on gRPC: monitoring should not need a viewer's secret.
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/cam/{camera}/healthz", get(routes::camera_healthz))
        .merge(viewer_routes)
        .with_state(state)
}

/// Serves [`router`] on `listener`, under `protection`, until `shutdown` resolves. Then, like the
/// gRPC server, it stops accepting, lets responses in progress complete (MJPEG streams end
/// cleanly when the hub shuts down, which is the caller's job: see [`crate::server`]) and
/// returns once every connection has closed, or after `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    cameras: Cameras,
    settings: HttpSettings,
    protection: Protection,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving HTTP: the page at /, /stream.mjpg, /snapshot.jpg, /info.json, /metrics, /healthz, each camera under /cam/NAME/");
        if let Err(e) = tcp_info_usable() {
            tracing::warn!(
                "/stream.mjpg is not paced to its readers: {e}; \
                 a reader slower than the camera will read frames up to a send buffer behind"
            );
        }
    }
    let app = router(
        cameras,
        settings.clone(),
        protection.tokens.clone(),
        metrics,
    );
    let mut conn_builder = http1::Builder::new();
    conn_builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_BUF_BYTES);
    let graceful = GracefulShutdown::new();
    let tls = protection
        .tls
        .as_ref()
        .map(|t| TlsAcceptor::from(http1_tls(t)));
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            _ = &mut shutdown => break,
            conn = protection.admission.accept(&listener) => conn,
        };
        tune_socket(conn.tcp(), settings.vanish_timeout);
        let watcher = graceful.watcher();
        let (builder, app) = (conn_builder.clone(), app.clone());
        match tls.clone() {
            None => serve_connection(conn, builder, app, watcher),
            Some(acceptor) => {
                let handshake = protection.admission.limits().handshake_timeout;
                tokio::spawn(async move {
                    let peer = conn.info().remote;
                    match tokio::time::timeout(handshake, acceptor.accept(conn)).await {
                        Ok(Ok(tls_conn)) => serve_connection(tls_conn, builder, app, watcher),
                        Ok(Err(e)) => tracing::info!(%peer, "HTTPS handshake failed: {e}"),
                        Err(_) => tracing::info!(%peer, "HTTPS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    tracing::info!("HTTP: no longer accepting");
    if tokio::time::timeout(settings.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        // Their tasks end with the runtime; what matters is that the process can exit.
        tracing::warn!(
            "HTTP connections still not drained after {:?} (viewers not reading); leaving them",
            settings.drain_timeout
        );
    }
}

/// Serves one connection with the router. Each request counts as open on its connection until
/// its response body ends, which is what the idle timeout looks at. The transport is
/// [`Watched`](pacing::Watched), so an MJPEG body can pace itself to the reader.
fn serve_connection(
    io: impl Transport,
    builder: http1::Builder,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let info = io.admitted().info().clone();
    let peer = info.remote;
    let fd = io.admitted().tcp().as_raw_fd();
    let io = pacing::Watched::new(io, fd);
    let wire = io.watch();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        // The admission facts, as gRPC requests have them (the token check counts refusals).
        req.extensions_mut().insert(info.clone());
        req.extensions_mut().insert(wire.clone());
        let guard = info.begin_request();
        let call = tower_service::Service::call(&mut app.clone(), req);
        async move {
            let resp = call.await?;
            Ok::<_, std::convert::Infallible>(
                resp.map(|body| axum::body::Body::new(Tracked::new(body, guard))),
            )
        }
    });
    let conn = watcher.watch(builder.serve_connection(TokioIo::new(io), service));
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
    });
}

/// The kernel holds only a few frames for a slow viewer, and a peer that stops acknowledging is
/// dropped after `vanish_timeout`. (Admission already turned Nagle off, as for gRPC.)
fn tune_socket(stream: &TcpStream, vanish_timeout: Duration) {
    let sock = socket2::SockRef::from(stream);
    let tuned = sock
        .set_send_buffer_size(SEND_BUFFER_BYTES)
        .and_then(|()| sock.set_tcp_user_timeout(Some(vanish_timeout)));
    if let Err(e) = tuned {
        tracing::debug!(error = %e, "cannot tune an HTTP socket");
    }
}
