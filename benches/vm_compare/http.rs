//! µStreamer's side: a minimal HTTP/1.0 client for its `/stream` (multipart/x-mixed-replace)
//! and `/state` endpoints. A viewer reads the stream like a browser would, but only counts:
//! every part carries a `Content-Length`, so the body is skipped by length without scanning
//! for boundaries (only the first frame's bytes are kept, to check its size and sampling).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ViewerStats;

/// Incremental parser of an HTTP response whose body is a multipart stream of JPEG parts.
#[derive(Default)]
pub struct Multipart {
    /// The header block being read (the response head first, then each part's head).
    head: Vec<u8>,
    response_seen: bool,
    /// Body bytes of the current part still to come.
    remaining: usize,
    body_len: usize,
    /// The current part's body, kept only for the first part.
    keep: Option<Vec<u8>>,
    kept_first: bool,
}

impl Multipart {
    /// Feeds received bytes; calls `on_frame(len, body)` for every complete part (`body` only
    /// for the first one).
    pub fn feed(
        &mut self,
        mut data: &[u8],
        mut on_frame: impl FnMut(usize, Option<Vec<u8>>),
    ) -> Result<(), String> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let k = self.remaining.min(data.len());
                if let Some(body) = &mut self.keep {
                    body.extend_from_slice(&data[..k]);
                }
                self.remaining -= k;
                data = &data[k..];
                if self.remaining == 0 {
                    on_frame(self.body_len, self.keep.take());
                }
                continue;
            }
            // Header blocks are ~100 bytes per part: byte by byte is cheap enough.
            self.head.push(data[0]);
            data = &data[1..];
            if self.head.len() > 64 * 1024 {
                return Err("header block longer than 64 KiB".into());
            }
            if !self.head.ends_with(b"\r\n\r\n") {
                continue;
            }
            let head = String::from_utf8_lossy(&std::mem::take(&mut self.head)).into_owned();
            if !self.response_seen {
                let status = head.lines().next().unwrap_or("");
                if !status.starts_with("HTTP/1.") || !status.contains(" 200") {
                    return Err(format!("unexpected response: {status:?}"));
                }
                if !head
                    .to_ascii_lowercase()
                    .contains("multipart/x-mixed-replace")
                {
                    return Err("response is not multipart/x-mixed-replace".into());
                }
                self.response_seen = true;
                continue;
            }
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| format!("part without Content-Length: {head:?}"))?;
            if !self.kept_first {
                self.kept_first = true;
                self.keep = Some(Vec::with_capacity(len));
            }
            self.body_len = len;
            self.remaining = len;
            if len == 0 {
                on_frame(0, self.keep.take());
            }
        }
        Ok(())
    }
}

/// Checks the parser on a synthetic µStreamer-style stream, cut into pieces of every size
/// from 1 byte up, so a boundary or header split across reads is covered.
pub fn self_check() {
    let mut stream = b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=boundarydonotcross\r\n\r\n--boundarydonotcross\r\n".to_vec();
    let bodies: [&[u8]; 3] = [
        b"\xff\xd8abc\xff\xd9",
        b"",
        b"\xff\xd8\r\n\r\n--boundarydonotcross\r\n\xff\xd9",
    ];
    for b in bodies {
        stream.extend_from_slice(
            format!(
                "Content-Type: image/jpeg\r\nContent-Length: {}\r\nX-Timestamp: 1.0\r\n\r\n",
                b.len()
            )
            .as_bytes(),
        );
        stream.extend_from_slice(b);
        stream.extend_from_slice(b"\r\n--boundarydonotcross\r\n");
    }
    for piece in 1..=stream.len() {
        let mut p = Multipart::default();
        let mut got = Vec::new();
        for chunk in stream.chunks(piece) {
            p.feed(chunk, |len, body| got.push((len, body)))
                .expect("parses");
        }
        let lens: Vec<usize> = got.iter().map(|g| g.0).collect();
        let want: Vec<usize> = bodies.iter().map(|b| b.len()).collect();
        assert_eq!(lens, want, "piece size {piece}");
        assert_eq!(got[0].1.as_deref(), Some(bodies[0]), "piece size {piece}");
    }
}

/// One µStreamer viewer: GET /stream, count every part until the task is aborted.
pub async fn viewer(addr: SocketAddr, stats: Arc<ViewerStats>) {
    if let Err(e) = stream(addr, &stats).await {
        stats.fail(format!("{e:#}"));
    }
}

async fn stream(addr: SocketAddr, stats: &ViewerStats) -> anyhow::Result<()> {
    let mut sock = TcpStream::connect(addr).await.context("connect")?;
    sock.set_nodelay(true)?;
    sock.write_all(
        format!("GET /stream HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: vm_compare\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut parser = Multipart::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            bail!("µStreamer closed the stream");
        }
        parser
            .feed(&buf[..n], |len, body| stats.record(len, body.as_deref()))
            .map_err(anyhow::Error::msg)?;
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
