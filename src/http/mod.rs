//! HTTP transport for browsers and the tools people already have (VLC, ffmpeg, Home Assistant,
//! OctoPrint, motionEye): a small page, `/stream.mjpg`, `/snapshot.jpg`, `/info.json` and
//! `/healthz`, served with axum on hyper's HTTP/1.1.
//!
//! It is another view of the same [`Hub`] as gRPC: frames are never encoded twice, HTTP viewers
//! count towards the same `max_viewers`, show up in `GetInfo` as api "http", and obey the same
//! slow-viewer rule (the next frame is taken from the hub only when hyper asks the body for more,
//! so a stalled viewer skips frames instead of queueing them).

mod mjpeg;
mod routes;

use std::future::Future;
use std::net::SocketAddr;
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

use crate::hub::Hub;

pub use mjpeg::BOUNDARY;

/// Request headers beyond this many bytes are answered 431 (a real request is well under 2 KiB).
const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Header lines accepted per request.
const MAX_HEADERS: usize = 64;
/// hyper's per-connection buffer: bounds what a viewer's connection holds in user space, so a
/// stalled viewer keeps at most about one frame here and the rest of its frames are skipped.
const MAX_BUF_BYTES: usize = 64 * 1024;

/// Kernel send buffer per HTTP connection (Linux doubles it). Left to autotuning, a loopback or
/// fast-LAN socket grows to megabytes: a viewer that stops reading would then have dozens of
/// stale frames queued in the kernel, and see them late. This is ample for LAN round-trip
/// times (1080p at 30 fps needs about 1.6 MB/s); a slower path skips frames instead.
const SEND_BUFFER_BYTES: usize = 128 * 1024;

/// HTTP settings.
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
    fn default() -> Self {
        HttpSettings {
            max_name_len: 64,
            snapshot_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            vanish_timeout: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl From<&crate::config::Config> for HttpSettings {
    fn from(c: &crate::config::Config) -> Self {
        HttpSettings {
            max_name_len: c.max_name_len,
            snapshot_timeout: c.snapshot_timeout,
            // The same patience gRPC has for a peer that stopped answering its pings.
            vanish_timeout: c.keepalive_timeout,
            ..HttpSettings::default()
        }
    }
}

/// What every handler sees.
#[derive(Clone)]
struct AppState {
    hub: Hub,
    settings: Arc<HttpSettings>,
}

/// Every HTTP route, in one place: layers that apply to all of them (authentication, limits,
/// tracing) go here.
pub fn router(hub: Hub, settings: HttpSettings) -> Router {
    let state = AppState {
        hub,
        settings: Arc::new(settings),
    };
    Router::new()
        .route("/", get(routes::page))
        .route("/info.json", get(routes::info))
        .route("/healthz", get(routes::healthz))
        .route("/snapshot.jpg", get(routes::snapshot))
        .route("/stream.mjpg", get(mjpeg::stream))
        .fallback(routes::not_found)
        .with_state(state)
}

/// Binds the HTTP port, with the address in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    use anyhow::Context;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {addr}"))
}

/// Serves [`router`] on `listener` until `shutdown` resolves. Then, like the gRPC server, it ends
/// the hub (so MJPEG streams finish cleanly), lets responses in progress complete and returns
/// once every connection has closed, or after `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    settings: HttpSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving HTTP: the page at /, /stream.mjpg, /snapshot.jpg, /info.json, /healthz");
    }
    let app = router(hub.clone(), settings.clone());
    let mut conn_builder = http1::Builder::new();
    conn_builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_BUF_BYTES);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tune_socket(&stream, settings.vanish_timeout);
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            tower_service::Service::call(&mut app.clone(), req)
        });
        let conn = graceful.watch(conn_builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("HTTP: no longer accepting; ending streams");
    hub.shutdown().await;
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

/// Frames go out as soon as they are written (no Nagle delay), the kernel holds only a few of
/// them for a slow viewer, and a peer that stops acknowledging is dropped after
/// `vanish_timeout`.
fn tune_socket(stream: &TcpStream, vanish_timeout: Duration) {
    let sock = socket2::SockRef::from(stream);
    let tuned = sock
        .set_tcp_nodelay(true)
        .and_then(|()| sock.set_send_buffer_size(SEND_BUFFER_BYTES))
        .and_then(|()| sock.set_tcp_user_timeout(Some(vanish_timeout)));
    if let Err(e) = tuned {
        tracing::debug!(error = %e, "cannot tune an HTTP socket");
    }
}
