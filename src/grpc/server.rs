//! The gRPC port's connections, on h2 directly (rather than through tonic's server) so the
//! live-frame streams can see each viewer's HTTP/2 credits:
//!
//! ```text
//!  admission (per-address cap, handshake and idle timeouts)
//!   └ TLS (tokio-rustls, ALPN h2)            optional
//!      └ CreditTap (reads the peer's WINDOW_UPDATE / SETTINGS headers)
//!         └ h2::server::Connection
//!            ├ live-frame streams ──── streaming::serve (paced by the credits)
//!            ├ everything else ─────── bridge::serve → tonic routes behind the gate
//!            └ PINGs ───────────────── keepalive, and the credit flush for paced streams
//! ```

use std::sync::Arc;
use std::time::Duration;

use h2::server::SendResponse;
use h2::{Ping, PingPong, RecvStream};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::bridge::{self, TonicService};
use super::credit::{CreditBook, CreditTap};
use super::message::Chunk;
use super::streaming::{self, Contract, Streams};
use crate::admission::{Admitted, Transport};

/// While a paced stream waits for credit that a PING would flush, PINGs go this often at
/// first, backing off to [`FLUSH_PING_MAX`] while the viewer keeps not reading. What a slow
/// viewer's frame may lose to the wait is the interval in force when it reads.
const FLUSH_PING_MIN: Duration = Duration::from_millis(10);
const FLUSH_PING_MAX: Duration = Duration::from_millis(40);

/// Everything a connection needs from its server.
pub struct Shared<S> {
    pub streams: Arc<Streams>,
    pub tonic: S,
    pub tls: Option<TlsAcceptor>,
    /// Cancelled when shutdown begins: connections send GOAWAY and drain.
    pub draining: CancellationToken,
    /// Cancelled when the drain time is over: connections close where they are.
    pub abandon: CancellationToken,
}

/// Accepts connections until `stop` is cancelled; returns the tracker of their tasks.
pub async fn accept<S: TonicService + Sync>(
    listener: TcpListener,
    shared: Arc<Shared<S>>,
    stop: CancellationToken,
) -> TaskTracker {
    let tracker = TaskTracker::new();
    let admission = shared.streams.protection.admission.clone();
    loop {
        let conn = tokio::select! {
            () = stop.cancelled() => break,
            conn = admission.accept(&listener) => conn,
        };
        // The peer's address on every log line of the connection and its streams.
        let span = tracing::debug_span!("grpc", peer = %conn.info().remote);
        tracker.spawn(connection(conn, shared.clone()).instrument(span));
    }
    tracker.close();
    tracker
}

async fn connection<S: TonicService + Sync>(conn: Admitted, shared: Arc<Shared<S>>) {
    let Some(acceptor) = shared.tls.clone() else {
        return serve_h2(conn, shared).await;
    };
    let peer = conn.info().remote;
    let handshake = shared
        .streams
        .protection
        .admission
        .limits()
        .handshake_timeout;
    tokio::select! {
        accepted = tokio::time::timeout(handshake, acceptor.accept(conn)) => match accepted {
            Ok(Ok(tls)) => serve_h2(tls, shared).await,
            Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
        },
        () = shared.abandon.cancelled() => {}
    }
}

async fn serve_h2<S: TonicService + Sync>(io: impl Transport, shared: Arc<Shared<S>>) {
    let info = io.admitted().info().clone();
    let peer = info.remote;
    let settings = &shared.streams.settings;
    let book = Arc::new(CreditBook::default());
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(settings.max_streams_per_connection)
        .max_header_list_size(settings.max_header_list_bytes)
        .handshake::<_, Chunk>(CreditTap::new(io, book.clone()));
    let mut h2 = tokio::select! {
        h2 = handshake => match h2 {
            Ok(h2) => h2,
            Err(e) => return tracing::debug!(%peer, "HTTP/2 handshake failed: {e}"),
        },
        () = shared.abandon.cancelled() => return,
    };
    let conn = Arc::new(streaming::Conn {
        info,
        closed: CancellationToken::new(),
    });
    // However this function ends, the connection's streams and pinger stop with it.
    let _closed = conn.closed.clone().drop_guard();
    let vanished = CancellationToken::new();
    if let Some(pings) = h2.ping_pong() {
        let pinger = ping(
            pings,
            book.clone(),
            (settings.keepalive_interval, settings.keepalive_timeout),
            vanished.clone(),
            conn.closed.clone(),
        );
        tokio::spawn(pinger.in_current_span());
    }
    let mut draining = false;
    loop {
        tokio::select! {
            next = h2.accept() => match next {
                Some(Ok((req, respond))) => dispatch(req, respond, &book, &shared, &conn),
                Some(Err(e)) => {
                    tracing::debug!(%peer, "HTTP/2 connection ended: {e}");
                    break;
                }
                None => break,
            },
            () = shared.draining.cancelled(), if !draining => {
                draining = true;
                h2.graceful_shutdown();
            }
            () = vanished.cancelled() => {
                tracing::info!(%peer, timeout = ?settings.keepalive_timeout,
                    "closing connection: no reply to a keepalive ping");
                break;
            }
            () = shared.abandon.cancelled() => break,
        }
    }
}

/// Starts serving one request. Called in the order h2 hands requests out, which the credit
/// book's claims rely on.
fn dispatch<S: TonicService + Sync>(
    req: http::Request<RecvStream>,
    respond: SendResponse<Chunk>,
    book: &Arc<CreditBook>,
    shared: &Arc<Shared<S>>,
    conn: &Arc<streaming::Conn>,
) {
    let claim = book.claim(respond.stream_id().as_u32());
    let tutorial = shared.streams.settings.tutorial_api;
    match Contract::for_path(req.uri().path(), tutorial) {
        Some(contract) => {
            let (streams, conn) = (shared.streams.clone(), conn.clone());
            let stream = streaming::serve(contract, req, respond, claim, streams, conn);
            tokio::spawn(stream.in_current_span());
        }
        None => {
            drop(claim); // tonic's responses are small: no pacing
            let (service, info) = (shared.tonic.clone(), conn.info.clone());
            let closed = conn.closed.clone();
            let bridged = async move {
                tokio::select! {
                    () = bridge::serve(req, respond, service, info) => {}
                    () = closed.cancelled() => {}
                }
            };
            tokio::spawn(bridged.in_current_span());
        }
    }
}

/// The connection's PINGs. Every `keepalive.0` at least, and a peer that has not answered
/// one after `keepalive.1` is taken for gone. While a paced stream waits for credit, more
/// often (see [`FLUSH_PING_MIN`]): gRPC's C core sends the credits it owes with its next
/// write, and its PING ACK is one.
async fn ping(
    mut pings: PingPong,
    book: Arc<CreditBook>,
    (interval, timeout): (Duration, Duration),
    vanished: CancellationToken,
    closed: CancellationToken,
) {
    let mut flush_every = FLUSH_PING_MIN;
    let mut flush_due = Instant::now() + FLUSH_PING_MIN;
    let mut keepalive_due = Instant::now() + interval;
    loop {
        let due = if book.waiting() > 0 {
            flush_due.min(keepalive_due)
        } else {
            keepalive_due
        };
        tokio::select! {
            () = closed.cancelled() => return,
            () = book.wait_began() => {
                // A frame just went: its reader will want the next one soon.
                flush_every = FLUSH_PING_MIN;
                flush_due = flush_due.min(Instant::now() + FLUSH_PING_MIN);
                continue;
            }
            () = tokio::time::sleep_until(due) => {}
        }
        if book.waiting() == 0 && Instant::now() < keepalive_due {
            continue; // the waiting stream got its credit meanwhile
        }
        match tokio::time::timeout(timeout, pings.ping(Ping::opaque())).await {
            Ok(Ok(_pong)) => {}
            Ok(Err(_)) => return, // the connection is closing
            Err(_) => {
                vanished.cancel();
                return;
            }
        }
        let now = Instant::now();
        keepalive_due = now + interval;
        flush_every = (flush_every * 5 / 4).min(FLUSH_PING_MAX);
        flush_due = now + flush_every;
    }
}
