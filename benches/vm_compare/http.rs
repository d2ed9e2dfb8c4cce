//! The HTTP side: one MJPEG reader for both servers' streams (camcast's `/stream.mjpg`, HTTP/1.1
//! chunked, and µStreamer's `/stream`, an HTTP/1.0 body that runs to the close), and µStreamer's
//! `/state`.
//!
//! The reader asks like a browser does (`GET` over HTTP/1.1, one TCP connection, kernel-default
//! socket buffers) and reads through a `BufReader` at tokio's default 8 KiB, one part at a time:
//! nothing is read ahead of what the caller asks for beyond that buffer, so a reader that pauses
//! leaves the rest in the socket, as a script or a browser tab would. Parts are found the way
//! multipart readers find them (blank lines between parts skipped, a boundary line, headers up
//! to an empty line, `Content-Length` bytes of body); the body is skipped without a copy unless
//! asked for.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;

use crate::ViewerStats;

/// Longest line accepted in a response or part head.
const MAX_LINE: usize = 8 * 1024;

/// One part's facts, as read.
#[derive(Debug, Default)]
pub struct Part {
    pub len: usize,
    /// camcast's `X-Sequence`.
    pub seq: Option<u64>,
    /// `X-Timestamp`, Unix seconds. camcast: the frame's capture time. µStreamer: the time it
    /// wrote the part's header (`get_now_real()` in its stream writer), not a capture time.
    pub x_timestamp: Option<f64>,
    /// µStreamer's `X-UStreamer-Grab-Time` (only with `?extra_headers=1`): the V4L2 buffer's
    /// timestamp, CLOCK_MONOTONIC seconds, truncated to the millisecond.
    pub grab_time: Option<f64>,
    /// The body, when asked for.
    pub jpeg: Option<Vec<u8>>,
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A multipart/x-mixed-replace stream, read one part at a time.
pub struct PartReader<R> {
    r: BufReader<R>,
    chunked: bool,
    /// Chunked: body bytes left in the current chunk; a chunk's CRLF is read when it is used up.
    chunk_left: usize,
    /// `--` and the boundary.
    delimiter: String,
}

impl PartReader<TcpStream> {
    /// Connects, sends `GET path` and reads the response head.
    pub async fn connect(addr: SocketAddr, path: &str) -> io::Result<Self> {
        let mut sock = TcpStream::connect(addr).await?;
        sock.set_nodelay(true)?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: vm_compare\r\nAccept: */*\r\n\r\n"
        );
        sock.write_all(request.as_bytes()).await?;
        PartReader::open(sock).await
    }
}

impl<R: AsyncRead + Unpin> PartReader<R> {
    /// Reads the response head from `io`; errors unless it is a 200 multipart stream.
    pub async fn open(io: R) -> io::Result<Self> {
        let mut r = BufReader::new(io);
        let status = raw_line(&mut r).await?;
        if !(status.starts_with("HTTP/1.") && status.split_whitespace().nth(1) == Some("200")) {
            return Err(bad(format!("not a stream: {status:?}")));
        }
        let (mut chunked, mut boundary) = (false, None);
        loop {
            let line = raw_line(&mut r).await?;
            if line.trim_end().is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                "content-type" if value.to_ascii_lowercase().contains("multipart/") => {
                    boundary = value
                        .split_once("boundary=")
                        .map(|(_, b)| b.trim().trim_matches('"').to_owned())
                }
                _ => {}
            }
        }
        let boundary = boundary.ok_or_else(|| bad("not a multipart stream".into()))?;
        Ok(PartReader {
            r,
            chunked,
            chunk_left: 0,
            delimiter: format!("--{boundary}"),
        })
    }

    /// The next part; its body is kept only if `keep`.
    pub async fn next_part(&mut self, keep: bool) -> io::Result<Part> {
        let mut line = self.body_line().await?;
        // Blank lines between parts (the CRLF that ends a body, camcast's pacing probes).
        while line == "\r\n" || line == "\n" {
            line = self.body_line().await?;
        }
        if line.trim_end() != self.delimiter {
            return Err(bad(format!("expected {:?}, got {line:?}", self.delimiter)));
        }
        let mut part = Part::default();
        let mut len = None;
        loop {
            let line = self.body_line().await?;
            if line.trim_end().is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad(format!("bad part header {line:?}")));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = value.parse::<usize>().ok(),
                "x-sequence" => part.seq = value.parse().ok(),
                "x-timestamp" => part.x_timestamp = value.parse().ok(),
                "x-ustreamer-grab-time" => part.grab_time = value.parse().ok(),
                _ => {}
            }
        }
        part.len = len.ok_or_else(|| bad("a part without Content-Length".into()))?;
        let mut left = part.len;
        let mut body = keep.then(|| Vec::with_capacity(part.len));
        while left > 0 {
            let n = {
                let buf = self.body_buf().await?;
                let n = buf.len().min(left);
                if let Some(b) = &mut body {
                    b.extend_from_slice(&buf[..n]);
                }
                n
            };
            self.body_consume(n).await?;
            left -= n;
        }
        part.jpeg = body;
        Ok(part)
    }

    /// Body bytes available now (within the current chunk); an error at the end of the body.
    async fn body_buf(&mut self) -> io::Result<&[u8]> {
        if self.chunked && self.chunk_left == 0 {
            let size = raw_line(&mut self.r).await?;
            let hex = size.trim_end().split(';').next().unwrap_or("");
            self.chunk_left = usize::from_str_radix(hex.trim(), 16)
                .map_err(|_| bad(format!("bad chunk size line {size:?}")))?;
            if self.chunk_left == 0 {
                return Err(bad("the stream ended (last chunk)".into()));
            }
        }
        let limit = if self.chunked {
            self.chunk_left
        } else {
            usize::MAX
        };
        let buf = self.r.fill_buf().await?;
        if buf.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let n = buf.len().min(limit);
        Ok(&buf[..n])
    }

    async fn body_consume(&mut self, n: usize) -> io::Result<()> {
        self.r.consume(n);
        if self.chunked {
            self.chunk_left -= n;
            if self.chunk_left == 0 {
                let mut crlf = [0u8; 2];
                self.r.read_exact(&mut crlf).await?;
                if &crlf != b"\r\n" {
                    return Err(bad("a chunk not followed by CRLF".into()));
                }
            }
        }
        Ok(())
    }

    /// One line of the body, `\n` included.
    async fn body_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        while line.last() != Some(&b'\n') {
            let n = {
                let buf = self.body_buf().await?;
                let n = buf
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(buf.len(), |i| i + 1);
                line.extend_from_slice(&buf[..n]);
                n
            };
            self.body_consume(n).await?;
            if line.len() > MAX_LINE {
                return Err(bad("a line longer than 8 KiB".into()));
            }
        }
        String::from_utf8(line).map_err(|_| bad("a line is not UTF-8".into()))
    }
}

/// One line outside the body (response head, chunk sizes).
async fn raw_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> io::Result<String> {
    let mut line = Vec::new();
    let n = (&mut *r)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if line.last() != Some(&b'\n') {
        return Err(bad("a head line longer than 8 KiB".into()));
    }
    String::from_utf8(line).map_err(|_| bad("a head line is not UTF-8".into()))
}

/// Yields a byte string in pieces of a fixed size (the self-check's socket).
struct Pieces {
    data: Vec<u8>,
    at: usize,
    piece: usize,
}

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self
            .piece
            .min(buf.remaining())
            .min(self.data.len() - self.at);
        let at = self.at;
        buf.put_slice(&self.data[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

/// Checks the reader on both servers' framings, cut into pieces of every size from 1 byte up,
/// so a line, a chunk or a boundary split across reads is covered.
pub fn self_check() {
    let bodies: [&[u8]; 3] = [
        b"\xff\xd8abc\xff\xd9",
        b"\xff\xd8\r\n\r\n--camcastframe\r\n--boundarydonotcross\r\n\xff\xd9",
        b"\xff\xd8\xff\xd9",
    ];
    // µStreamer 4.9: HTTP/1.0, the first delimiter right after the head, each body followed by
    // CRLF and the next delimiter; X-Timestamp is the send time, Grab-Time with extra headers.
    let mut ustreamer = b"HTTP/1.0 200 OK\r\nSet-Cookie: stream_client=0/x; path=/; max-age=30\r\nContent-Type: multipart/x-mixed-replace;boundary=boundarydonotcross\r\n\r\n--boundarydonotcross\r\n".to_vec();
    for b in bodies {
        ustreamer.extend_from_slice(
            format!(
                "Content-Type: image/jpeg\r\nContent-Length: {}\r\nX-Timestamp: 1700000000.250000\r\nX-UStreamer-Online: true\r\nX-UStreamer-Grab-Time: 1234.567000\r\n\r\n",
                b.len()
            )
            .as_bytes(),
        );
        ustreamer.extend_from_slice(b);
        ustreamer.extend_from_slice(b"\r\n--boundarydonotcross\r\n");
    }
    // camcast: HTTP/1.1 chunked, head / JPEG / CRLF as three chunks, pacing probes between parts.
    let mut body = Vec::new();
    for (i, b) in bodies.iter().enumerate() {
        let head = format!(
            "--camcastframe\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nX-Sequence: {i}\r\nX-Timestamp: 1700000000.000123\r\n\r\n",
            b.len()
        );
        for piece in [head.as_bytes(), b, b"\r\n", b"\r\n", b"\r\n"] {
            body.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
        }
    }
    let mut camcast = b"HTTP/1.1 200 OK\r\ncontent-type: multipart/x-mixed-replace; boundary=camcastframe\r\ncache-control: no-store\r\ntransfer-encoding: chunked\r\ndate: x\r\n\r\n".to_vec();
    camcast.extend_from_slice(&body);
    camcast.extend_from_slice(b"0\r\n\r\n");

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    for (name, stream) in [("µStreamer", &ustreamer), ("camcast", &camcast)] {
        for piece in 1..=stream.len() {
            let io = Pieces {
                data: stream.clone(),
                at: 0,
                piece,
            };
            rt.block_on(async {
                let mut r = PartReader::open(io).await.expect("head parses");
                for (i, want) in bodies.iter().enumerate() {
                    let p = r
                        .next_part(i != 1)
                        .await
                        .unwrap_or_else(|e| panic!("{name}, pieces of {piece}: part {i}: {e}"));
                    assert_eq!(p.len, want.len(), "{name}, pieces of {piece}");
                    if i != 1 {
                        assert_eq!(p.jpeg.as_deref(), Some(*want), "{name} {piece}");
                    }
                    if name == "camcast" {
                        assert_eq!(p.seq, Some(i as u64));
                        assert_eq!(p.x_timestamp, Some(1_700_000_000.000123));
                    } else {
                        assert_eq!(p.grab_time, Some(1234.567));
                    }
                }
                if name == "camcast" {
                    assert!(r.next_part(false).await.is_err(), "end of body");
                }
            });
        }
    }
}

/// One counting viewer: reads parts until the task is aborted (the first part's body is kept,
/// to check its size and sampling).
pub async fn viewer(addr: SocketAddr, path: String, stats: Arc<ViewerStats>) {
    let run = async {
        let mut r = PartReader::connect(addr, &path)
            .await
            .context("open the stream")?;
        let mut first = true;
        loop {
            let p = r.next_part(first).await?;
            stats.record(p.len, p.jpeg.as_deref());
            first = false;
        }
    };
    let r: anyhow::Result<()> = run.await;
    if let Err(e) = r {
        stats.fail(format!("{e:#}"));
    }
}

/// GET /state: µStreamer's JSON status.
pub async fn state(addr: SocketAddr) -> anyhow::Result<String> {
    let mut sock = TcpStream::connect(addr).await?;
    sock.write_all(format!("GET /state HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200") => {
            Ok(body.to_string())
        }
        _ => bail!("bad /state answer: {text:.200}"),
    }
}

/// Waits until µStreamer says its source is online (before that it streams a "NO SIGNAL"
/// picture, which must not be counted).
pub async fn wait_online(addr: SocketAddr, limit: Duration) -> anyhow::Result<String> {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = state(addr).await {
            if json_value(&s, "online") == Some("true") {
                return Ok(s);
            }
        }
        if t0.elapsed() > limit {
            bail!("µStreamer's source not online after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The scalar after the first `"key":` in a JSON text (good enough for /state).
pub fn json_value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let at = json.find(&format!("\"{key}\""))? + key.len() + 2;
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
    Some(rest[..end].trim().trim_matches('"'))
}
