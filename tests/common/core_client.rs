//! A server-streaming gRPC client on raw HTTP/2 that returns flow-control credit the way
//! gRPC's C core does (Python grpcio, C++, Ruby...), as traced against camcast with
//! tests/python/h2_tap.py:
//!
//! - it announces a 4 MiB stream window and a 4 MiB frame size;
//! - credit is earned by the application reading a message, not by bytes arriving: the
//!   window it wants is 4 MiB minus what is buffered unread, plus, while the application waits
//!   for a message, the bytes that message still needs (5 for a header when nothing is
//!   buffered);
//! - a credit is not sent when earned but with the client's next write of any kind, e.g. its
//!   ACK of a server PING;
//! - the call starts with a read posted: HEADERS, a 5-byte credit, then the request.
//!
//! Tokio's h2 client credits differently (half its window at a time), so it cannot stand in.
//! The real grpcio is checked by .ci/grpcio-freshness.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::Notify;

const WINDOW: u32 = 4 << 20;
const STREAM: u32 = 1;

#[derive(Default)]
struct State {
    /// DATA of the stream not yet read by the application.
    unread: BytesMut,
    received: u64,
    /// Credit sent so far on the stream (above the initial window) and on the connection.
    credited: u64,
    conn_credited: u64,
    /// While the application waits: the bytes its next message still needs.
    waiting_for: Option<u64>,
    ended: bool,
}

impl State {
    /// Stream credit earned but not yet sent.
    fn owed(&self) -> u64 {
        let target = self.received - self.unread.len() as u64 + self.waiting_for.unwrap_or(0);
        target.saturating_sub(self.credited)
    }

    /// The bytes the next message still needs, if it is not complete.
    fn need(&self) -> Option<u64> {
        if self.unread.len() < 5 {
            return Some(5 - self.unread.len() as u64);
        }
        let len = u32::from_be_bytes(self.unread[1..5].try_into().unwrap()) as usize;
        (self.unread.len() < 5 + len).then(|| (5 + len - self.unread.len()) as u64)
    }

    fn take_message(&mut self) -> Option<Bytes> {
        if self.need().is_some() {
            return None;
        }
        let len = u32::from_be_bytes(self.unread[1..5].try_into().unwrap()) as usize;
        self.unread.advance(5);
        Some(self.unread.split_to(len).freeze())
    }
}

/// One server-streaming call.
pub struct CoreStream {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    _reader: tokio::task::JoinHandle<()>,
}

impl CoreStream {
    /// Calls `path` with `request` (an encoded protobuf message) over a new connection.
    pub async fn open(addr: SocketAddr, path: &str, request: &[u8]) -> CoreStream {
        let tcp = TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let (mut rd, mut wr) = tcp.into_split();
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        let mut settings = Vec::new();
        for (id, value) in [(2u16, 0u32), (4, WINDOW), (5, WINDOW)] {
            settings.extend_from_slice(&id.to_be_bytes());
            settings.extend_from_slice(&value.to_be_bytes());
        }
        out.extend(frame(0x4, 0, 0, &settings));
        out.extend(frame(
            0x1,
            0x4,
            STREAM,
            &request_headers(path, &addr.to_string()),
        ));
        out.extend(frame(0x8, 0, STREAM, &5u32.to_be_bytes()));
        let mut body = vec![0];
        body.extend_from_slice(&(request.len() as u32).to_be_bytes());
        body.extend_from_slice(request);
        out.extend(frame(0x0, 0x1, STREAM, &body));
        wr.write_all(&out).await.unwrap();

        let state = Arc::new(Mutex::new(State {
            waiting_for: Some(5),
            credited: 5,
            ..State::default()
        }));
        let changed = Arc::new(Notify::new());
        let (s, c) = (state.clone(), changed.clone());
        let reader = tokio::spawn(async move {
            if read_frames(&mut rd, wr, &s, &c).await.is_err() {
                s.lock().unwrap().ended = true;
                c.notify_waiters();
            }
        });
        CoreStream {
            state,
            changed,
            _reader: reader,
        }
    }

    /// The next message, as the application reads it; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Bytes> {
        loop {
            let wake = self.changed.notified();
            {
                let mut s = self.state.lock().unwrap();
                if let Some(m) = s.take_message() {
                    s.waiting_for = None;
                    return Some(m);
                }
                if s.ended {
                    return None;
                }
                s.waiting_for = s.need();
            }
            wake.await;
        }
    }
}

async fn read_frames(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    mut wr: OwnedWriteHalf,
    state: &Mutex<State>,
    changed: &Notify,
) -> std::io::Result<()> {
    loop {
        let mut head = [0u8; 9];
        rd.read_exact(&mut head).await?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes(head[5..9].try_into().unwrap()) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        rd.read_exact(&mut payload).await?;
        match kind {
            0x0 if stream == STREAM => {
                let mut s = state.lock().unwrap();
                s.unread.extend_from_slice(&payload);
                s.received += len as u64;
                s.ended |= flags & 0x1 != 0;
                drop(s);
                changed.notify_waiters();
            }
            0x1 if flags & 0x1 != 0 => {
                state.lock().unwrap().ended = true;
                changed.notify_waiters();
            }
            0x3 | 0x7 => {
                state.lock().unwrap().ended = true;
                changed.notify_waiters();
                return Ok(());
            }
            // A write of ours: owed credits go with it.
            0x4 if flags & 0x1 == 0 => {
                write_with_credit(&mut wr, state, frame(0x4, 0x1, 0, &[])).await?
            }
            0x6 if flags & 0x1 == 0 => {
                write_with_credit(&mut wr, state, frame(0x6, 0x1, 0, &payload)).await?
            }
            _ => {}
        }
    }
}

async fn write_with_credit(
    wr: &mut OwnedWriteHalf,
    state: &Mutex<State>,
    mut out: Vec<u8>,
) -> std::io::Result<()> {
    {
        let mut s = state.lock().unwrap();
        let owed = s.owed();
        if owed > 0 {
            out.extend(frame(0x8, 0, STREAM, &(owed as u32).to_be_bytes()));
            s.credited += owed;
        }
        let conn_owed = s.received - s.conn_credited;
        if conn_owed > 0 {
            out.extend(frame(0x8, 0, 0, &(conn_owed as u32).to_be_bytes()));
            s.conn_credited += conn_owed;
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
