//! A server-streaming gRPC client on raw HTTP/2 that returns flow-control credit the way
//! gRPC's C core does (Python grpcio, C++, Ruby...): a small model of chttp2's stream flow
//! control (`StreamFlowControl` in src/core/ext/transport/chttp2/transport/flow_control.cc
//! and `grpc_chttp2_maybe_complete_recv_message`), checked against traces of grpcio 1.85:
//!
//! - it announces grpcio's SETTINGS: a 4 MiB stream window and frame size, and gRPC's own
//!   "true binary metadata" setting (0xfe03);
//! - a DATA frame counts as received when its 9-byte header is parsed (the window delta
//!   drops by the frame's length, and so does the "min progress size");
//! - a read the application posts, and each piece of DATA parsed while one is posted, sets
//!   the min progress size to what the next message still needs (5 for a header when nothing
//!   is buffered); a message that completes is handed over, and the buffered rest is noted
//!   as pending;
//! - the credit is worked out when the client next writes (its ACK of a server PING or
//!   SETTINGS), from the state at that moment: up to the min progress size if one is set,
//!   else everything but the pending bytes;
//! - it reads its socket at most 8 KiB at a time (grpc's first read size), so a message of
//!   more than that arrives in pieces, and writes only after handling a whole read.
//!
//! Tokio's h2 client credits differently (a third of its window at a time), so it cannot
//! stand in. The real grpcio is checked by .ci/grpcio-freshness.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::Notify;

const WINDOW: u32 = 4 << 20;
const STREAM: u32 = 1;
const READ_SIZE: usize = 8192;
const GRPC_HEADER: usize = 5;

/// grpcio 1.85's first SETTINGS, as traced: push off, no server streams, 4 MiB window and
/// frame size, 16 KiB header list, true binary metadata.
const SETTINGS: [(u16, u32); 6] = [
    (2, 0),
    (3, 0),
    (4, WINDOW),
    (5, WINDOW),
    (6, 16384),
    (0xfe03, 1),
];

/// chttp2's view of the one stream.
#[derive(Default)]
struct Flow {
    /// The announced window minus the initial window: credit sent minus DATA received.
    announced_delta: i64,
    min_progress: i64,
    pending: Option<i64>,
    /// Parsed DATA payload not yet handed to the application.
    storage: BytesMut,
    read_posted: bool,
    delivered: VecDeque<Bytes>,
    ended: bool,
    /// DATA bytes received and connection credit sent, for the connection window.
    received: u64,
    conn_credited: u64,
}

impl Flow {
    /// A DATA frame's header was parsed.
    fn recv_data(&mut self, len: usize) {
        let len = len as i64;
        self.announced_delta -= len;
        self.min_progress -= self.min_progress.min(len);
        self.received += len as u64;
    }

    /// Part of a DATA frame's payload was parsed.
    fn recv_payload(&mut self, bytes: &[u8]) {
        self.storage.extend_from_slice(bytes);
        self.maybe_complete();
    }

    /// The application asks for the next message.
    fn post_read(&mut self) {
        self.read_posted = true;
        self.maybe_complete();
    }

    /// `grpc_chttp2_maybe_complete_recv_message`.
    fn maybe_complete(&mut self) {
        if !self.read_posted {
            return;
        }
        match self.need() {
            Some(need) => self.min_progress = need as i64,
            None => {
                let len = u32::from_be_bytes(self.storage[1..5].try_into().unwrap()) as usize;
                self.storage.advance(GRPC_HEADER);
                let message = self.storage.split_to(len).freeze();
                self.delivered.push_back(message);
                self.read_posted = false;
            }
        }
        self.pending = Some(self.storage.len() as i64);
    }

    /// Bytes the next message still needs, or `None` if it is complete.
    fn need(&self) -> Option<usize> {
        if self.storage.len() < GRPC_HEADER {
            return Some(GRPC_HEADER - self.storage.len());
        }
        let len = u32::from_be_bytes(self.storage[1..5].try_into().unwrap()) as usize;
        let have = self.storage.len() - GRPC_HEADER;
        (have < len).then(|| len - have)
    }

    /// `StreamFlowControl::DesiredAnnounceSize`.
    fn desired(&self) -> i64 {
        let target = if self.min_progress == 0 {
            match self.pending {
                Some(p) if self.announced_delta < -p => -p,
                _ => self.announced_delta,
            }
        } else {
            self.min_progress
        };
        (target - self.announced_delta).max(0)
    }
}

/// One server-streaming call.
pub struct CoreStream {
    flow: Arc<Mutex<Flow>>,
    changed: Arc<Notify>,
    _reader: tokio::task::JoinHandle<()>,
}

/// Dropping the stream closes its connection, as a client that goes away does (a dropped
/// JoinHandle would leave the reader task, and the connection, running).
impl Drop for CoreStream {
    fn drop(&mut self) {
        self._reader.abort();
    }
}

impl CoreStream {
    /// Calls `path` with `request` (an encoded protobuf message) over a new connection.
    pub async fn open(addr: SocketAddr, path: &str, request: &[u8]) -> CoreStream {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (mut rd, mut wr) = tcp.into_split();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut settings = Vec::new();
        for (id, value) in SETTINGS {
            settings.extend_from_slice(&id.to_be_bytes());
            settings.extend_from_slice(&value.to_be_bytes());
        }
        out.extend(frame(0x4, 0, 0, &settings));
        // The connection window grows to the stream window at once, as grpcio's does.
        out.extend(frame(0x8, 0, 0, &(WINDOW - 65_535).to_be_bytes()));
        out.extend(frame(
            0x1,
            0x4,
            STREAM,
            &request_headers(path, &addr.to_string()),
        ));
        let mut body = vec![0];
        body.extend_from_slice(&(request.len() as u32).to_be_bytes());
        body.extend_from_slice(request);
        out.extend(frame(0x0, 0x1, STREAM, &body));
        wr.write_all(&out).await.unwrap();

        let flow = Arc::new(Mutex::new(Flow::default()));
        let changed = Arc::new(Notify::new());
        let (f, c) = (flow.clone(), changed.clone());
        let reader = tokio::spawn(async move {
            let _ = read_frames(&mut rd, wr, &f, &c).await;
            f.lock().unwrap().ended = true;
            c.notify_waiters();
        });
        CoreStream {
            flow,
            changed,
            _reader: reader,
        }
    }

    /// The next message, as the application reads it; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Bytes> {
        {
            let mut f = self.flow.lock().unwrap();
            if f.delivered.is_empty() && !f.ended {
                f.post_read();
            }
        }
        loop {
            let wake = self.changed.notified();
            {
                let mut f = self.flow.lock().unwrap();
                if let Some(m) = f.delivered.pop_front() {
                    return Some(m);
                }
                if f.ended {
                    return None;
                }
            }
            wake.await;
        }
    }
}

/// Where the parser is in the server's byte stream.
enum Parse {
    Head(Vec<u8>),
    /// Inside a frame: its type, flags, stream, the payload bytes still to come, and (for
    /// frames other than DATA, which are parsed whole) the payload so far.
    Body {
        kind: u8,
        flags: u8,
        stream: u32,
        left: usize,
        whole: Vec<u8>,
    },
}

async fn read_frames(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    flow: &Mutex<Flow>,
    changed: &Notify,
) -> std::io::Result<()> {
    let mut parse = Parse::Head(Vec::new());
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        let mut acks = Vec::new();
        let mut bytes = &buf[..n];
        let mut ended = false;
        while !bytes.is_empty() {
            match &mut parse {
                Parse::Head(head) => {
                    let take = (9 - head.len()).min(bytes.len());
                    head.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if head.len() < 9 {
                        continue;
                    }
                    let len = (usize::from(head[0]) << 16)
                        | (usize::from(head[1]) << 8)
                        | usize::from(head[2]);
                    let (kind, flags) = (head[3], head[4]);
                    let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
                    if kind == 0x0 && stream == STREAM {
                        flow.lock().unwrap().recv_data(len);
                    }
                    parse = Parse::Body {
                        kind,
                        flags,
                        stream,
                        left: len,
                        whole: Vec::new(),
                    };
                }
                Parse::Body {
                    kind,
                    stream,
                    left,
                    whole,
                    ..
                } => {
                    let take = (*left).min(bytes.len());
                    if *kind == 0x0 && *stream == STREAM {
                        flow.lock().unwrap().recv_payload(&bytes[..take]);
                    } else {
                        whole.extend_from_slice(&bytes[..take]);
                    }
                    *left -= take;
                    bytes = &bytes[take..];
                }
            }
            if let Parse::Body {
                kind,
                flags,
                left: 0,
                whole,
                ..
            } = &parse
            {
                match (*kind, *flags & 0x1 != 0) {
                    (0x0, true) | (0x1, true) | (0x3, _) | (0x7, _) => ended = true,
                    (0x4, false) => acks.extend(frame(0x4, 0x1, 0, &[])),
                    (0x6, false) => acks.extend(frame(0x6, 0x1, 0, whole)),
                    _ => {}
                }
                parse = Parse::Head(Vec::new());
            }
        }
        if ended {
            flow.lock().unwrap().ended = true;
        }
        changed.notify_waiters();
        if !acks.is_empty() {
            write_with_credit(&mut wr, flow, acks).await?;
        }
        if ended {
            return Ok(());
        }
    }
}

/// A write of ours: the credits owed at this moment go with it.
async fn write_with_credit(
    wr: &mut OwnedWriteHalf,
    flow: &Mutex<Flow>,
    mut out: Vec<u8>,
) -> std::io::Result<()> {
    {
        let mut f = flow.lock().unwrap();
        let announce = f.desired();
        if announce > 0 {
            out.extend(frame(0x8, 0, STREAM, &(announce as u32).to_be_bytes()));
            f.announced_delta += announce;
            f.pending = None;
        }
        let conn_owed = f.received - f.conn_credited;
        if conn_owed > 0 {
            out.extend(frame(0x8, 0, 0, &(conn_owed as u32).to_be_bytes()));
            f.conn_credited += conn_owed;
        }
    }
    wr.write_all(&out).await
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK: every field a literal without indexing, names and values as plain strings.
fn request_headers(path: &str, authority: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        block.push(0x00);
        for s in [name, value] {
            assert!(s.len() < 127, "one-byte HPACK length");
            block.push(s.len() as u8);
            block.extend_from_slice(s.as_bytes());
        }
    }
    block
}
