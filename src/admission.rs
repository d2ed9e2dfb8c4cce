//! Who gets in, and for how long: connection admission shared by camcast's listeners.
//!
//! - **Per-address cap.** A peer (one IP address) may hold at most `per_address` connections;
//!   more are closed at accept, so one misbehaving host cannot use up sockets or viewer slots.
//! - **Handshake timeout.** A connection must start its first request within
//!   `handshake_timeout` of being accepted (TLS handshake included), or it is closed: silent
//!   sockets do not pile up.
//! - **Idle timeout.** A connection with no request open for `idle_timeout` is closed. A
//!   watching viewer always has one open, so only abandoned connections go.
//!
//! The accept side knows sockets and the request side knows requests; they meet in
//! [`ConnInfo`], which tonic copies into every request's extensions. [`ActivityLayer`] counts a
//! request as open until its response body is dropped, and the connection's read side checks
//! the count when its timer fires.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// The admission limits of one listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    pub per_address: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
    /// TCP keepalive probes, so a peer that vanished without a FIN is noticed by the kernel.
    pub tcp_keepalive: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            per_address: 16,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            tcp_keepalive: Duration::from_secs(10),
        }
    }
}

/// Open-connection counts per peer address, shared by the accept loop and the connections.
#[derive(Debug, Default)]
struct AddressBook {
    open: HashMap<IpAddr, usize>,
    refused: HashMap<IpAddr, u64>,
}

/// A connection's slot in the address book; freed on drop.
struct Slot {
    book: Arc<Mutex<AddressBook>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut book = self.book.lock().unwrap();
        if let Some(n) = book.open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                book.open.remove(&self.ip);
                book.refused.remove(&self.ip);
            }
        }
    }
}

/// Per-connection facts every request can see (through tonic's connect info).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    activity: Arc<Activity>,
    refusals: Arc<Refusals>,
}

impl ConnInfo {
    /// Counts a request refused on this connection (for `/metrics`).
    pub fn count_refusal(&self, why: Refusal) {
        self.refusals.count(why);
    }

    /// Marks a request open until the returned guard is dropped.
    pub fn begin_request(&self) -> RequestGuard {
        self.activity.open.fetch_add(1, Ordering::SeqCst);
        RequestGuard(self.activity.clone())
    }
}

#[derive(Debug)]
struct Activity {
    open: AtomicUsize,
    /// When the connection last went quiet (accept time until a request ends).
    quiet_since: Mutex<Instant>,
    any_request: std::sync::atomic::AtomicBool,
    /// Set when a request ends, so the connection recomputes its deadline at once rather than
    /// at whatever later time its timer was set for.
    rearm: std::sync::atomic::AtomicBool,
    /// The connection's reader, woken when a request ends.
    reader: futures_util::task::AtomicWaker,
}

/// Keeps a request counted as open; dropped when its response ends.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let a = &self.0;
        a.any_request.store(true, Ordering::SeqCst);
        *a.quiet_since.lock().unwrap() = Instant::now();
        a.open.fetch_sub(1, Ordering::SeqCst);
        a.rearm.store(true, Ordering::SeqCst);
        a.reader.wake();
    }
}

enum Deadline {
    Expired(&'static str, Duration),
    At(Instant),
}

impl Activity {
    fn deadline(&self, limits: &ConnLimits) -> Deadline {
        let now = Instant::now();
        if self.open.load(Ordering::SeqCst) > 0 {
            // Busy: look again one idle period from now.
            return Deadline::At(now + limits.idle_timeout);
        }
        let (why, limit) = if self.any_request.load(Ordering::SeqCst) {
            ("idle", limits.idle_timeout)
        } else {
            ("no request", limits.handshake_timeout)
        };
        let at = *self.quiet_since.lock().unwrap() + limit;
        if now >= at {
            Deadline::Expired(why, limit)
        } else {
            Deadline::At(at)
        }
    }
}

/// An admitted connection: the socket, its address-book slot and its inactivity timer.
pub struct Admitted {
    io: TcpStream,
    info: ConnInfo,
    limits: ConnLimits,
    timer: Pin<Box<Sleep>>,
    /// Set once our side is shut: the deadline for the peer to close its side.
    linger: Option<Pin<Box<Sleep>>>,
    /// A handshake timeout is counted once, however often the closed connection is polled.
    timeout_counted: bool,
    _slot: Slot,
}

/// How long a closing connection waits for the peer to close its side (see `poll_shutdown`).
const LINGER: Duration = Duration::from_secs(2);

impl Admitted {
    pub fn info(&self) -> &ConnInfo {
        &self.info
    }

    /// The socket, for per-transport tuning.
    pub fn tcp(&self) -> &TcpStream {
        &self.io
    }

    /// Checks the inactivity deadline; `true` once the connection should be closed.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.info.activity.reader.register(cx.waker());
        if self.info.activity.rearm.swap(false, Ordering::SeqCst) {
            if let Deadline::At(at) = self.info.activity.deadline(&self.limits) {
                self.timer.as_mut().reset(at);
            }
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            match self.info.activity.deadline(&self.limits) {
                Deadline::At(at) => self.timer.as_mut().reset(at),
                Deadline::Expired(why, after) => {
                    let handshake = !self.info.activity.any_request.load(Ordering::SeqCst);
                    if handshake && !std::mem::replace(&mut self.timeout_counted, true) {
                        self.info.count_refusal(Refusal::HandshakeTimeout);
                    }
                    tracing::info!(addr = %self.info.remote, "closing connection: {why} for {after:?}");
                    return true;
                }
            }
        }
        false
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            // End of stream: the HTTP/2 server treats it as the peer leaving and cleans up.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// A lingering close: send our FIN, then read until the peer closes too (or `LINGER`
    /// passes). Closing a socket with unread input makes the kernel send a reset, and a reset
    /// discards data the peer has not read yet, such as a stream's final OK status.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.linger.is_none() {
            std::task::ready!(Pin::new(&mut self.io).poll_shutdown(cx))?;
            self.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 1024];
        loop {
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(_)) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let linger = self.linger.as_mut().expect("set above");
                    return linger.as_mut().poll(cx).map(Ok);
                }
            }
        }
    }
}

impl tonic::transport::server::Connected for Admitted {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

/// The connection facts of a request, over plain TCP or TLS.
pub fn conn_info<B>(req: &http::Request<B>) -> Option<&ConnInfo> {
    conn_info_in(req.extensions())
}

/// The peer address of a gRPC request, whichever listener it came through.
pub fn peer_addr<T>(req: &tonic::Request<T>) -> Option<SocketAddr> {
    conn_info_in(req.extensions())
        .map(|c| c.remote)
        .or_else(|| req.remote_addr())
}

/// tonic stores our connect info as is on plain TCP, and wrapped on TLS.
fn conn_info_in(ext: &http::Extensions) -> Option<&ConnInfo> {
    ext.get::<ConnInfo>().or_else(|| {
        ext.get::<tonic::transport::server::TlsConnectInfo<ConnInfo>>()
            .map(|t| t.get_ref())
    })
}

/// The admission state shared by every listener of one server, so a peer's connections
/// count against one cap whichever port (gRPC, HTTP) they use.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    limits: ConnLimits,
    book: Arc<Mutex<AddressBook>>,
    refusals: Arc<Refusals>,
}

impl Admission {
    pub fn new(limits: ConnLimits) -> Self {
        Admission {
            limits,
            book: Arc::default(),
            refusals: Arc::default(),
        }
    }

    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    /// What this admission (and the token checks on its connections) refused so far.
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    /// Waits for the next connection this admission lets in. Accept errors (e.g. out of
    /// descriptors) are logged and retried after a pause, never fatal.
    pub async fn accept(&self, listener: &TcpListener) -> Admitted {
        loop {
            let (io, remote) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("accept failed: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if let Some(conn) = admit(io, remote, &self.limits, &self.book, &self.refusals) {
                return conn;
            }
        }
    }

    /// The admitted connections of `listener` as a stream (what tonic's server takes).
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Admitted>> + Send + 'static {
        futures_util::stream::unfold((self.clone(), listener), |(this, listener)| async move {
            let conn = this.accept(&listener).await;
            Some((Ok(conn), (this, listener)))
        })
    }
}

fn admit(
    io: TcpStream,
    remote: SocketAddr,
    limits: &ConnLimits,
    book: &Arc<Mutex<AddressBook>>,
    refusals: &Arc<Refusals>,
) -> Option<Admitted> {
    let ip = canonical_ip(remote.ip());
    {
        let mut b = book.lock().unwrap();
        let open = b.open.get(&ip).copied().unwrap_or(0);
        if open >= limits.per_address {
            refusals.count(Refusal::PerAddressCap);
            let refused = b.refused.entry(ip).or_insert(0);
            *refused += 1;
            // Logged at 1, 10, 100, ... refusals: visible, but a flood cannot flood the log.
            if is_power_of_ten(*refused) {
                tracing::warn!(addr = %ip, open, refused = *refused,
                    "connection refused: per-address limit reached ([server] max_connections_per_address)");
            }
            return None;
        }
        b.open.insert(ip, open + 1);
    }
    let slot = Slot {
        book: book.clone(),
        ip,
    };
    let _ = io.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(limits.tcp_keepalive);
    let _ = socket2::SockRef::from(&io).set_tcp_keepalive(&keepalive);
    let now = Instant::now();
    Some(Admitted {
        io,
        info: ConnInfo {
            remote,
            activity: Arc::new(Activity {
                open: AtomicUsize::new(0),
                quiet_since: Mutex::new(now),
                any_request: Default::default(),
                rearm: Default::default(),
                reader: Default::default(),
            }),
            refusals: refusals.clone(),
        },
        timer: Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout)),
        linger: None,
        timeout_counted: false,
        limits: limits.clone(),
        _slot: slot,
    })
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// IPv4 peers on a dual-stack socket arrive as `::ffff:a.b.c.d`; count them as the IPv4 host.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whose share of the viewer slots a peer takes: one host, as far as the address says.
///
/// An IPv6 site usually gets a whole /64 and its hosts pick addresses in it at will (privacy
/// addresses), so a remote IPv6 peer is counted by its /64. Peers on one of the camera's own
/// networks share the camera's /64 with every device of the household, so they, and link-local
/// peers, are counted by full address, as IPv4 peers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerGroup {
    Host(IpAddr),
    Ipv6Prefix64(Ipv6Addr),
}

impl PeerGroup {
    /// The group of `ip`, given the camera's own IPv6 addresses.
    pub fn of(ip: IpAddr, own_v6: &[Ipv6Addr]) -> PeerGroup {
        let v6 = match canonical_ip(ip) {
            IpAddr::V6(v6) => v6,
            v4 => return PeerGroup::Host(v4),
        };
        let on_link =
            v6.is_unicast_link_local() || own_v6.iter().any(|own| prefix64(*own) == prefix64(v6));
        if on_link || v6.is_loopback() {
            PeerGroup::Host(IpAddr::V6(v6))
        } else {
            PeerGroup::Ipv6Prefix64(prefix64(v6))
        }
    }

    /// The group of `ip` on this machine (its interfaces' addresses read now: they change).
    pub fn of_peer(ip: IpAddr) -> PeerGroup {
        let own_v6: Vec<Ipv6Addr> = match canonical_ip(ip) {
            IpAddr::V4(_) => Vec::new(),
            IpAddr::V6(_) => if_addrs::get_if_addrs()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|i| match i.ip() {
                    IpAddr::V6(a) => Some(a),
                    IpAddr::V4(_) => None,
                })
                .collect(),
        };
        PeerGroup::of(ip, &own_v6)
    }
}

impl std::fmt::Display for PeerGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerGroup::Host(ip) => write!(f, "{ip}"),
            PeerGroup::Ipv6Prefix64(prefix) => write!(f, "{prefix}/64"),
        }
    }
}

fn prefix64(a: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(a) & !(u128::from(u64::MAX)))
}

/// A response body that keeps its request counted as open (see [`ConnInfo::begin_request`])
/// until the body is finished or dropped: a live stream keeps its connection out of the idle
/// timeout for as long as it runs.
pub struct Tracked<B> {
    body: B,
    _guard: RequestGuard,
}

impl<B> Tracked<B> {
    pub fn new(body: B, guard: RequestGuard) -> Self {
        Tracked {
            body,
            _guard: guard,
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Connections and requests turned away before they reach a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A peer already held `max_connections_per_address` connections.
    PerAddressCap,
    /// No request within the handshake timeout of the connection's accept (TLS included).
    HandshakeTimeout,
    /// Viewer tokens are required and the request had none, or a wrong or malformed one.
    Token,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [
        Refusal::PerAddressCap,
        Refusal::HandshakeTimeout,
        Refusal::Token,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PerAddressCap => "per_address_cap",
            Refusal::HandshakeTimeout => "handshake_timeout",
            Refusal::Token => "token",
        }
    }
}

/// The server's refusal counts, shared by every listener (they live in its admission state).
#[derive(Debug, Default)]
pub struct Refusals([AtomicU64; Refusal::ALL.len()]);

impl Refusals {
    pub fn count(&self, why: Refusal) {
        self.0[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, why: Refusal) -> u64 {
        self.0[why as usize].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_logged_at_powers_of_ten() {
        let logged: Vec<u64> = (0..=1000).filter(|&n| is_power_of_ten(n)).collect();
        assert_eq!(logged, [1, 10, 100, 1000]);
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(canonical_ip(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "fe80::1".parse().unwrap();
        assert_eq!(canonical_ip(v6), v6);
    }

    #[test]
    fn peers_are_grouped_by_host_and_remote_ipv6_by_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let own: Vec<Ipv6Addr> = vec!["2001:db8:1:2::10".parse().unwrap()];
        let group = |s: &str| PeerGroup::of(ip(s), &own);
        assert_eq!(group("10.0.0.7"), PeerGroup::Host(ip("10.0.0.7")));
        assert_eq!(
            group("::ffff:10.0.0.7"),
            group("10.0.0.7"),
            "mapped IPv4 is IPv4"
        );
        // A remote site's addresses are one group, shown as its prefix.
        let remote = group("2001:db8:9:9:aaaa::1");
        assert_eq!(remote, group("2001:db8:9:9:bbbb::2"));
        assert_ne!(remote, group("2001:db8:9:8::1"));
        assert_eq!(remote.to_string(), "2001:db8:9:9::/64");
        // The camera's own network and link-local peers: each device on its own.
        assert_ne!(group("2001:db8:1:2::20"), group("2001:db8:1:2::21"));
        assert_ne!(group("fe80::1"), group("fe80::2"));
        assert_eq!(group("fe80::1").to_string(), "fe80::1");
        assert_eq!(group("::1"), PeerGroup::Host(ip("::1")));
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_requests() {
        let limits = ConnLimits {
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            ..ConnLimits::default()
        };
        let a = Arc::new(Activity {
            open: AtomicUsize::new(0),
            quiet_since: Mutex::new(Instant::now()),
            any_request: Default::default(),
            rearm: Default::default(),
            reader: Default::default(),
        });
        let info = ConnInfo {
            remote: "127.0.0.1:1".parse().unwrap(),
            activity: a.clone(),
            refusals: Arc::default(),
        };
        let start = Instant::now();
        assert!(
            matches!(a.deadline(&limits), Deadline::At(t) if t == start + Duration::from_secs(5))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(matches!(
            a.deadline(&limits),
            Deadline::Expired("no request", _)
        ));

        // A request in flight keeps the connection, however long it runs.
        let guard = info.begin_request();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(matches!(a.deadline(&limits), Deadline::At(_)));
        drop(guard);
        let ended = Instant::now();
        assert!(
            matches!(a.deadline(&limits), Deadline::At(t) if t == ended + Duration::from_secs(60))
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(matches!(a.deadline(&limits), Deadline::Expired("idle", _)));
    }
}
