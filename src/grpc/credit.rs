//! How far behind is a viewer? The peer's HTTP/2 credits, read off the wire, and the pacing
//! rule built on them (see docs/flow-control.md).
//!
//! - [`CreditTap`] sits between the socket (or TLS) and h2 and reads the 9-byte headers of the
//!   frames the peer sends. It records every stream's WINDOW_UPDATE credits and the peer's
//!   SETTINGS in the connection's [`CreditBook`]; bytes pass through untouched, and h2 still
//!   checks everything.
//! - [`Pacer`] is one stream's view: U = message bytes we handed to h2 minus credit returned.
//!   It says when the next frame may go.
//!
//! What U means depends on the client, and the pacer learns which kind it has:
//! - **Pull-signalling clients** (gRPC's C core: Python grpcio and friends) credit what the
//!   application has read, and when the application waits for a message with nothing
//!   buffered they credit the bytes it needs on top (5 for the next message header), so U
//!   goes *below zero*. Such a stream gets a frame only while U < 0: exactly when the reader
//!   is waiting, so the frame is never older than the wait for our PING to flush the credit
//!   plus the capture interval. The C core is known from its first SETTINGS (gRPC's own
//!   0xfe03), so this holds from the first frame; a client without it that shows U < 0 or a
//!   5-byte credit is treated the same. The C core holds credits until its next write, so
//!   the connection PINGs while such a stream waits; and its messages go with their last
//!   byte in a DATA frame of its own (see `message::split_last_byte`), or its credit could
//!   run ahead of a busy reader.
//! - **Batch creditors** (h2/hyper/tonic: WINDOW_UPDATE once a third of the window is read;
//!   grpc-java at half, grpc-go at a quarter) never go below zero and say nothing until a
//!   batch is read, so the server cannot tell a fast reader from a slow one before then.
//!   Every other stream starts strict (one frame in flight); when credit stalls for [`STALL`]
//!   the pacer takes the client for a batch creditor and lets U grow to half its window:
//!   enough for each of those rules to credit (a fast reader keeps the camera's rate), half
//!   the backlog a slow one had before. Every rule we know credits by then (grpc-java and
//!   OkHttp at half the window consumed, h2 at a third, grpc-go at a quarter); one that
//!   waited for more would stall. camcast's own viewer asks for each frame instead
//!   (`PullFrames`).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::message::GRPC_HEADER;

/// HTTP/2's initial stream window until the peer's SETTINGS say otherwise (RFC 9113 6.5.2).
const DEFAULT_WINDOW: u32 = 65_535;
/// Credit that has not moved for this long marks a batch creditor.
pub const STALL: Duration = Duration::from_millis(250);
/// A stream that has not shown pull signalling by then is taken for a batch creditor, and
/// the connection stops pinging fast on its behalf.
const PULL_PROBE: Duration = Duration::from_secs(1);
/// Streams tracked per connection at most (claimed or awaiting dispatch); h2's own stream
/// limit keeps real peers far below this.
const MAX_TRACKED: usize = 4096;

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_WINDOW_UPDATE: u8 = 0x8;
const FLAG_ACK: u8 = 0x1;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// gRPC's own setting "allow true binary metadata", which only gRPC's C core announces: the
/// fingerprint of a client that credits ahead of its reads (see the module docs).
const SETTINGS_GRPC_TRUE_BINARY: u16 = 0xfe03;

/// Credit returned on one stream so far.
#[derive(Debug, Default)]
pub struct StreamCredit {
    credited: AtomicU64,
    /// A credit of exactly a gRPC message header came: only a pull-signalling client (a
    /// reader waiting for the next header) credits that little; batch creditors credit kBs.
    header_credit: AtomicBool,
    changed: Notify,
}

#[derive(Debug, Default)]
struct Tracked {
    /// Stream id → its credit, from the stream's HEADERS on. `claimed` marks the streams a
    /// handler holds; others are waiting for h2 to hand them out.
    streams: HashMap<u32, (Arc<StreamCredit>, bool)>,
    /// Highest stream id a handler has claimed. h2 hands streams out in id order, so an
    /// unclaimed stream below it was refused or reset and will never be claimed.
    last_claimed: u32,
}

/// One connection's flow-control facts, shared by its tap, its streams and its pinger.
#[derive(Debug)]
pub struct CreditBook {
    initial_window: AtomicU32,
    /// The peer announced [`SETTINGS_GRPC_TRUE_BINARY`]: it is gRPC's C core.
    c_core: AtomicBool,
    tracked: Mutex<Tracked>,
    /// Streams waiting for a credit that a PING would flush.
    waiting: AtomicUsize,
    /// Wakes the pinger when a stream starts waiting.
    wait_began: Notify,
}

impl Default for CreditBook {
    fn default() -> Self {
        CreditBook {
            initial_window: AtomicU32::new(DEFAULT_WINDOW),
            c_core: AtomicBool::new(false),
            tracked: Mutex::default(),
            waiting: AtomicUsize::new(0),
            wait_began: Notify::new(),
        }
    }
}

impl CreditBook {
    /// The peer's initial stream window (its receive window for each new stream).
    pub fn initial_window(&self) -> u32 {
        self.initial_window.load(Ordering::Relaxed)
    }

    /// True if the peer is gRPC's C core, which signals its reader's waits (U < 0).
    pub fn credits_ahead(&self) -> bool {
        self.c_core.load(Ordering::Relaxed)
    }

    /// Streams now waiting for a credit that the client flushes when it answers a PING.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Resolves when a stream starts waiting for credit (the pinger's cue).
    pub async fn wait_began(&self) {
        self.wait_began.notified().await
    }

    /// Takes stream `id` for its handler; its credit has been counted since its HEADERS.
    /// Called in the order h2 hands streams out (the connection's accept loop), which is
    /// what lets it forget older streams nobody claimed.
    pub fn claim(self: &Arc<Self>, id: u32) -> Claim {
        let mut t = self.tracked.lock().unwrap();
        t.last_claimed = t.last_claimed.max(id);
        let last = t.last_claimed;
        t.streams
            .retain(|&sid, (_, claimed)| *claimed || sid >= last);
        let (credit, claimed) = t.streams.entry(id).or_default();
        *claimed = true;
        Claim {
            book: self.clone(),
            id,
            credit: credit.clone(),
        }
    }

    /// A stream the peer opened (its HEADERS went by).
    fn opened(&self, id: u32) {
        let mut t = self.tracked.lock().unwrap();
        if id > t.last_claimed && t.streams.len() < MAX_TRACKED {
            t.streams.entry(id).or_default();
        }
    }

    fn credit(&self, id: u32, increment: u32) {
        let t = self.tracked.lock().unwrap();
        if let Some((credit, _)) = t.streams.get(&id) {
            credit
                .credited
                .fetch_add(u64::from(increment), Ordering::SeqCst);
            if increment as usize == GRPC_HEADER {
                credit.header_credit.store(true, Ordering::SeqCst);
            }
            credit.changed.notify_one();
        }
    }

    fn set_initial_window(&self, window: u32) {
        self.initial_window.store(window, Ordering::Relaxed);
        for (credit, _) in self.tracked.lock().unwrap().streams.values() {
            credit.changed.notify_one();
        }
    }
}

/// A handler's hold on one stream's credit; the stream is forgotten when it is dropped.
#[derive(Debug)]
pub struct Claim {
    book: Arc<CreditBook>,
    id: u32,
    credit: Arc<StreamCredit>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.book.tracked.lock().unwrap().streams.remove(&self.id);
    }
}

/// Reads the headers of the frames a peer sends; see the module docs.
pub struct CreditTap<T> {
    io: T,
    parser: Parser,
    book: Arc<CreditBook>,
}

impl<T> CreditTap<T> {
    pub fn new(io: T, book: Arc<CreditBook>) -> Self {
        CreditTap {
            io,
            parser: Parser::default(),
            book,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for CreditTap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        let this = &mut *self;
        this.parser.feed(&buf.filled()[before..], &this.book);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for CreditTap<T> {
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Where the parser is in the peer's byte stream.
#[derive(Debug)]
enum Parser {
    /// Inside the client connection preface, this many bytes in.
    Preface(usize),
    /// Collecting a 9-byte frame header.
    Head { head: [u8; 9], have: usize },
    /// Inside a frame's payload.
    Payload {
        kind: Payload,
        stream: u32,
        left: usize,
        field: [u8; 6],
        have: usize,
    },
    /// Not HTTP/2 (h2 rejects the connection); nothing more is tracked.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Payload {
    WindowUpdate,
    Settings,
    Skip,
}

impl Default for Parser {
    fn default() -> Self {
        Parser::Preface(0)
    }
}

impl Parser {
    fn feed(&mut self, mut bytes: &[u8], book: &CreditBook) {
        while !bytes.is_empty() {
            match self {
                Parser::Off => return,
                Parser::Preface(seen) => {
                    let n = bytes.len().min(PREFACE.len() - *seen);
                    if bytes[..n] != PREFACE[*seen..*seen + n] {
                        *self = Parser::Off;
                        return;
                    }
                    *seen += n;
                    bytes = &bytes[n..];
                    if *seen == PREFACE.len() {
                        *self = Parser::Head {
                            head: [0; 9],
                            have: 0,
                        };
                    }
                }
                Parser::Head { head, have } => {
                    let n = bytes.len().min(9 - *have);
                    head[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have == 9 {
                        *self = Parser::after_head(head, book);
                    }
                }
                Parser::Payload {
                    kind,
                    stream,
                    left,
                    field,
                    have,
                } => {
                    let n = bytes.len().min(*left);
                    if *kind != Payload::Skip {
                        let width = if *kind == Payload::WindowUpdate { 4 } else { 6 };
                        for &b in &bytes[..n] {
                            field[*have] = b;
                            *have += 1;
                            if *have == width {
                                *have = 0;
                                apply(*kind, *stream, &field[..width], book);
                            }
                        }
                    }
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        *self = Parser::Head {
                            head: [0; 9],
                            have: 0,
                        };
                    }
                }
            }
        }
    }

    fn after_head(head: &[u8; 9], book: &CreditBook) -> Parser {
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        const HEADERS: u8 = 0x1;
        const PING: u8 = 0x6;
        if kind == HEADERS && stream != 0 {
            book.opened(stream);
        }
        if kind == PING {
            // Which of the peer's writes carried its credits (docs/flow-control.md).
            tracing::trace!(ack = flags & FLAG_ACK != 0, "peer ping");
        }
        let payload = match kind {
            FRAME_WINDOW_UPDATE if len == 4 && stream != 0 => Payload::WindowUpdate,
            FRAME_SETTINGS if flags & FLAG_ACK == 0 && len % 6 == 0 => Payload::Settings,
            _ => Payload::Skip,
        };
        if len == 0 {
            return Parser::Head {
                head: [0; 9],
                have: 0,
            };
        }
        Parser::Payload {
            kind: payload,
            stream,
            left: len,
            field: [0; 6],
            have: 0,
        }
    }
}

fn apply(kind: Payload, stream: u32, field: &[u8], book: &CreditBook) {
    match kind {
        Payload::WindowUpdate => {
            let inc = u32::from_be_bytes([field[0], field[1], field[2], field[3]]) & 0x7fff_ffff;
            book.credit(stream, inc);
        }
        Payload::Settings => {
            let id = u16::from_be_bytes([field[0], field[1]]);
            let value = u32::from_be_bytes([field[2], field[3], field[4], field[5]]);
            // Larger than 2^31-1 is a protocol error h2 answers; never let it reach a budget.
            if id == SETTINGS_INITIAL_WINDOW_SIZE && value <= 0x7fff_ffff {
                book.set_initial_window(value);
            }
            if id == SETTINGS_GRPC_TRUE_BINARY {
                book.c_core.store(true, Ordering::Relaxed);
            }
        }
        Payload::Skip => {}
    }
}

/// Which kind of client a stream has, as far as the pacer has learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalling {
    /// Nothing seen yet.
    Unknown,
    /// U went below zero: the client credits reads ahead (see the module docs).
    Pull,
}

/// One stream's pacing: when may the next frame go?
#[derive(Debug)]
pub struct Pacer {
    claim: Claim,
    sent: u64,
    signalling: Signalling,
    /// Uncredited bytes allowed before the next frame goes, once the stream is taken for a
    /// batch creditor (none until then: one frame in flight).
    widened: Option<u64>,
    last_len: u64,
    /// Credit total when last looked at, and since when it has not moved.
    seen_credit: u64,
    quiet_since: Instant,
    started: Instant,
}

impl Pacer {
    /// Paces the claimed stream.
    pub fn new(claim: Claim) -> Pacer {
        let now = Instant::now();
        Pacer {
            claim,
            sent: 0,
            signalling: Signalling::Unknown,
            widened: None,
            last_len: 0,
            seen_credit: 0,
            quiet_since: now,
            started: now,
        }
    }

    /// U: message bytes handed to h2 minus the credit the peer returned.
    pub fn uncredited(&self) -> i64 {
        self.sent as i64 - self.claim.credit.credited.load(Ordering::SeqCst) as i64
    }

    pub fn signalling(&self) -> Signalling {
        self.signalling
    }

    /// Records a message of `len` bytes handed to h2.
    pub fn sent(&mut self, len: usize) {
        tracing::trace!(stream = self.claim.id, len, u = self.uncredited(), "send");
        self.sent += len as u64;
        self.last_len = len as u64;
        self.quiet_since = self.quiet_since.max(Instant::now());
    }

    /// True if the next frame may go now.
    fn open(&mut self) -> bool {
        let u = self.uncredited();
        let credited = self.claim.credit.credited.load(Ordering::SeqCst);
        if credited != self.seen_credit {
            tracing::trace!(
                stream = self.claim.id,
                inc = credited - self.seen_credit,
                u,
                sent = self.sent,
                "credit"
            );
            self.seen_credit = credited;
            self.quiet_since = Instant::now();
        }
        if u < 0
            || self.claim.credit.header_credit.load(Ordering::SeqCst)
            || self.claim.book.credits_ahead()
        {
            // Even after a stall took it for a batch creditor: its backlog is what went since.
            self.signalling = Signalling::Pull;
        }
        match self.signalling {
            // A reader waiting for the next message with nothing buffered credits its 5-byte
            // header: U = -5. grpc core also credits ahead at times (U a few kB below zero
            // while the reader is busy), so now and then one frame goes before it is asked
            // for and waits for the next read (docs/flow-control.md has the figures).
            Signalling::Pull => u < 0,
            Signalling::Unknown => u <= self.budget() as i64,
        }
    }

    /// Uncredited bytes allowed before the next frame goes.
    fn budget(&self) -> u64 {
        self.widened.unwrap_or(0)
    }

    /// Credit has stalled with a frame in flight: a batch creditor, which may have half its
    /// window uncredited (or one frame, if frames are larger; h2 sends it as credit comes).
    fn widen(&mut self) {
        let window = u64::from(self.claim.book.initial_window());
        self.widened = Some((window / 2).max(self.last_len).min(window));
    }

    /// Whether a PING from us would bring this stream's next credit.
    fn wants_pings(&self) -> bool {
        self.signalling == Signalling::Pull || self.started.elapsed() < PULL_PROBE
    }

    /// Waits until the next frame may go.
    pub async fn ready(&mut self) {
        if self.open() {
            return;
        }
        let _waiting = self
            .wants_pings()
            .then(|| WaitingGuard::new(self.claim.book.clone()));
        let credit = self.claim.credit.clone();
        loop {
            let changed = credit.changed.notified();
            if self.open() {
                return;
            }
            if self.signalling == Signalling::Pull || self.widened.is_some() {
                changed.await;
                continue;
            }
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep_until(self.quiet_since + STALL) => {
                    self.widen();
                    tracing::debug!(stream = self.claim.id, budget = self.budget(),
                        "credit stalled: taken for a batch creditor");
                }
            }
        }
    }
}

/// Counts a stream as waiting for a PING-flushed credit while it lives.
struct WaitingGuard(Arc<CreditBook>);

impl WaitingGuard {
    fn new(book: Arc<CreditBook>) -> Self {
        book.waiting.fetch_add(1, Ordering::SeqCst);
        book.wait_began.notify_one();
        WaitingGuard(book)
    }
}

impl Drop for WaitingGuard {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn window_update(stream: u32, inc: u32) -> Vec<u8> {
        frame(FRAME_WINDOW_UPDATE, 0, stream, &inc.to_be_bytes())
    }

    fn headers(stream: u32) -> Vec<u8> {
        frame(0x1, 0x4, stream, &[0x82, 0x87])
    }

    fn credited(book: &CreditBook, id: u32) -> u64 {
        let t = book.tracked.lock().unwrap();
        t.streams[&id].0.credited.load(Ordering::SeqCst)
    }

    /// A client's opening bytes and credits, fed in every possible split.
    #[test]
    fn credits_and_settings_are_read_across_any_split() {
        let mut wire = PREFACE.to_vec();
        let mut settings = Vec::new();
        settings.extend_from_slice(&[0, 4]);
        settings.extend_from_slice(&4_194_304u32.to_be_bytes());
        settings.extend_from_slice(&[0, 5]);
        settings.extend_from_slice(&4_194_304u32.to_be_bytes());
        settings.extend_from_slice(&[0xfe, 0x03, 0, 0, 0, 1]);
        wire.extend(frame(FRAME_SETTINGS, 0, 0, &settings));
        wire.extend(frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]));
        wire.extend(headers(1));
        wire.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 2, 10, 0]));
        wire.extend(window_update(0, 1000)); // connection-level: not a stream's credit
        wire.extend(window_update(1, 5));
        wire.extend(frame(0x6, 0, 0, b"12345678")); // PING
        wire.extend(headers(3));
        wire.extend(window_update(1, 12_750));
        wire.extend(window_update(3, 0x8000_0007)); // reserved bit set: ignored
        for split in 0..wire.len() {
            let book = CreditBook::default();
            let mut parser = Parser::default();
            parser.feed(&wire[..split], &book);
            parser.feed(&wire[split..], &book);
            assert_eq!(book.initial_window(), 4_194_304, "split at {split}");
            assert!(book.credits_ahead(), "split at {split}");
            assert_eq!(credited(&book, 1), 12_755, "split at {split}");
            assert_eq!(credited(&book, 3), 7, "split at {split}");
        }
        // Byte by byte.
        let book = CreditBook::default();
        let mut parser = Parser::default();
        for b in &wire {
            parser.feed(std::slice::from_ref(b), &book);
        }
        assert_eq!(credited(&book, 1), 12_755);
    }

    #[test]
    fn not_http2_stops_tracking_and_hostile_values_are_bounded() {
        let book = CreditBook::default();
        let mut parser = Parser::default();
        parser.feed(b"GET / HTTP/1.1\r\n\r\n", &book);
        assert!(matches!(parser, Parser::Off));

        let book = CreditBook::default();
        let mut parser = Parser::default();
        let mut wire = PREFACE.to_vec();
        let mut bad = vec![0, 4];
        bad.extend_from_slice(&u32::MAX.to_be_bytes());
        wire.extend(frame(FRAME_SETTINGS, 0, 0, &bad));
        // A window update of the wrong length is skipped whole, not misread.
        wire.extend(headers(1));
        wire.extend(frame(FRAME_WINDOW_UPDATE, 0, 1, &[0, 0, 0, 9, 0]));
        wire.extend(window_update(1, 3));
        parser.feed(&wire, &book);
        assert_eq!(book.initial_window(), DEFAULT_WINDOW);
        assert!(!book.credits_ahead(), "no gRPC setting, no C core");
        assert_eq!(credited(&book, 1), 3);
    }

    #[test]
    fn streams_never_claimed_are_forgotten() {
        let book = Arc::new(CreditBook::default());
        let mut parser = Parser::default();
        let mut wire = PREFACE.to_vec();
        for id in (1..=9).step_by(2) {
            wire.extend(headers(id));
        }
        parser.feed(&wire, &book);
        assert_eq!(book.tracked.lock().unwrap().streams.len(), 5);
        parser.feed(&window_update(9, 5), &book);
        // h2 refused 1..7 (say): claiming 9 drops them, and keeps what 9 was credited.
        let claim = book.claim(9);
        assert_eq!(book.tracked.lock().unwrap().streams.len(), 1);
        assert_eq!(claim.credit.credited.load(Ordering::SeqCst), 5);
        // Late credit for a stream that is gone creates nothing.
        parser.feed(&window_update(3, 10), &book);
        parser.feed(&headers(5), &book);
        assert_eq!(book.tracked.lock().unwrap().streams.len(), 1);
        drop(claim);
        assert!(book.tracked.lock().unwrap().streams.is_empty());
    }

    fn pacer() -> (Arc<CreditBook>, Pacer) {
        let book = Arc::new(CreditBook::default());
        book.opened(1);
        let pacer = Pacer::new(book.claim(1));
        (book, pacer)
    }

    #[tokio::test(start_paused = true)]
    async fn a_pull_signalling_client_gets_a_frame_only_while_it_waits() {
        let (book, mut p) = pacer();
        p.ready().await; // the first frame may go at once
        book.credit(1, 5); // grpcio at the start: the reader waits for a message header
        assert!(p.open());
        assert_eq!(p.signalling(), Signalling::Pull);
        p.sent(15_000);
        assert!(!p.open());
        book.credit(1, 14_995); // the reader has read the message
        assert!(!p.open(), "U = 0: read, but not yet waiting for the next");
        book.credit(1, 5); // it waits for the next message's 5-byte header
        assert!(p.open(), "U < 0: the reader is waiting");
        p.sent(15_000);
        // A reader that stops reading gets nothing more, however long it takes.
        let waited = tokio::time::timeout(Duration::from_secs(60), p.ready()).await;
        assert!(waited.is_err(), "no frame for a reader that is not reading");
        assert_eq!(book.waiting(), 0, "the waiting guard went with the wait");
    }

    /// gRPC's C core, known by its SETTINGS, gets a frame only while its reader waits, from
    /// the first frame on, and is never taken for a batch creditor however slowly it reads.
    #[tokio::test(start_paused = true)]
    async fn a_c_core_peer_gets_frames_only_while_its_reader_waits() {
        let book = Arc::new(CreditBook::default());
        let mut parser = Parser::default();
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(FRAME_SETTINGS, 0, 0, &[0xfe, 0x03, 0, 0, 0, 1]));
        wire.extend(headers(1));
        parser.feed(&wire, &book);
        let mut p = Pacer::new(book.claim(1));
        let early = tokio::time::timeout(Duration::from_secs(60), p.ready()).await;
        assert!(early.is_err(), "no frame before the reader asks");
        book.credit(1, 5);
        p.ready().await;
        assert_eq!(p.signalling(), Signalling::Pull);
        p.sent(15_000);
        book.credit(1, 14_995); // read, and busy for a minute
        let busy = tokio::time::timeout(Duration::from_secs(60), p.ready()).await;
        assert!(busy.is_err(), "nothing while the reader is busy");
        assert_eq!(p.budget(), 0, "never widened");
        book.credit(1, 5);
        p.ready().await;
    }

    /// Sends 15 kB frames while the gate lets them go (10 s of waiting at most each).
    async fn fill(p: &mut Pacer) -> u64 {
        let mut frames = 0;
        while tokio::time::timeout(Duration::from_secs(10), p.ready())
            .await
            .is_ok()
        {
            p.sent(15_000);
            frames += 1;
        }
        frames
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_creditor_gets_half_its_window() {
        let (book, mut p) = pacer();
        book.set_initial_window(4 << 20);
        p.ready().await;
        p.sent(15_000);
        // One frame in flight until credit stalls.
        assert!(!p.open());
        let start = Instant::now();
        p.ready().await;
        assert_eq!(Instant::now() - start, STALL);
        p.sent(15_000);
        book.credit(1, 30_000); // it credits, if only in batches
        let frames = fill(&mut p).await;
        assert_eq!(p.signalling(), Signalling::Unknown);
        assert_eq!(
            frames,
            (2 << 20) / 15_000 + 1,
            "half the window, then nothing"
        );
        // Its batch credit lets frames flow at once.
        book.credit(1, 1_000_000);
        tokio::time::timeout(Duration::from_millis(1), p.ready())
            .await
            .expect("credit opens the gate");
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_header_credit_still_marks_a_pull_signalling_client() {
        let (book, mut p) = pacer();
        book.set_initial_window(4 << 20);
        p.ready().await;
        p.sent(15_000);
        p.ready().await; // a stall: taken for a batch creditor
        assert_eq!(p.budget(), 2 << 20);
        p.sent(15_000);
        book.credit(1, 5); // the grpcio read posted at the call's start, late
        assert!(!p.open());
        assert_eq!(p.signalling(), Signalling::Pull);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_credits_gets_half_its_window_and_no_more() {
        let (book, mut p) = pacer();
        book.set_initial_window(4 << 20);
        let frames = fill(&mut p).await;
        assert_eq!(frames, (2 << 20) / 15_000 + 1);
        assert!(p.uncredited() <= (2 << 20) + 15_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_larger_than_the_window_still_goes_and_then_the_budget_holds() {
        let (book, mut p) = pacer();
        p.ready().await;
        p.sent(100_000); // larger than the whole 64 KiB window: h2 sends it as credit comes
        book.credit(1, 90_000);
        // 10 000 bytes stay uncredited (below h2's threshold): a stall, then half the window.
        tokio::time::timeout(STALL * 2, p.ready())
            .await
            .expect("a credit residue below half the window does not hold frames back");
        p.sent(100_000);
        let stuck = tokio::time::timeout(Duration::from_secs(60), p.ready()).await;
        assert!(
            stuck.is_err(),
            "a viewer that stopped reading gets nothing more"
        );
        assert_eq!(p.budget(), 100_000.min(u64::from(DEFAULT_WINDOW)));
        assert_eq!(book.initial_window(), DEFAULT_WINDOW);
    }
}
