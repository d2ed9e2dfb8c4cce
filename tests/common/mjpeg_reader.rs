//! An MJPEG reader written the plain way, for tests and the fan-out benchmark: the request by
//! hand, a `BufReader` at tokio's default 8 KiB over a socket at the kernel's default buffers,
//! HTTP/1.1 chunked framing and multipart parts decoded by hand, and bytes read only when a part
//! is asked for. Nothing about it is tuned, which is the point: it reads like a script would.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// One part, as read.
#[derive(Debug, Clone)]
pub struct Part {
    pub seq: u64,
    /// Capture time, from `X-Timestamp`.
    pub captured_at: SystemTime,
    pub jpeg: Vec<u8>,
}

pub struct PlainReader<IO> {
    r: BufReader<IO>,
    /// Bytes left in the current HTTP/1.1 chunk.
    chunk_left: usize,
    boundary: String,
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> PlainReader<IO> {
    /// Sends `GET path` and reads the response head; errors unless it is a 200 multipart stream.
    pub async fn open(mut io: IO, path: &str) -> io::Result<Self> {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: camcast.test\r\nUser-Agent: plain-reader/1\r\n\r\n"
        );
        io.write_all(request.as_bytes()).await?;
        let mut r = BufReader::new(io);
        let mut line = String::new();
        r.read_line(&mut line).await?;
        if !line.starts_with("HTTP/1.1 200") {
            return Err(bad(format!("not a stream: {line:?}")));
        }
        let (mut chunked, mut boundary) = (false, None);
        loop {
            line.clear();
            if r.read_line(&mut line).await? == 0 {
                return Err(bad("response head cut short".into()));
            }
            if line == "\r\n" {
                break;
            }
            let (name, value) = line.split_once(':').unwrap_or((&line, ""));
            match name.to_ascii_lowercase().as_str() {
                "transfer-encoding" => chunked = value.trim().eq_ignore_ascii_case("chunked"),
                "content-type" => {
                    boundary = value
                        .split_once("boundary=")
                        .map(|(_, b)| b.trim().to_owned())
                }
                _ => {}
            }
        }
        match (chunked, boundary) {
            (true, Some(boundary)) => Ok(PlainReader {
                r,
                chunk_left: 0,
                boundary,
            }),
            _ => Err(bad("expected a chunked multipart stream".into())),
        }
    }

    /// Makes sure the current chunk has bytes left; false at the end of the body.
    async fn in_chunk(&mut self) -> io::Result<bool> {
        if self.chunk_left > 0 {
            return Ok(true);
        }
        let mut size = String::new();
        self.r.read_line(&mut size).await?;
        self.chunk_left = usize::from_str_radix(size.trim_end(), 16)
            .map_err(|_| bad(format!("bad chunk size line {size:?}")))?;
        Ok(self.chunk_left > 0)
    }

    /// Accounts for `n` body bytes consumed; reads the CRLF that ends a chunk.
    async fn consumed(&mut self, n: usize) -> io::Result<()> {
        self.chunk_left -= n;
        if self.chunk_left == 0 {
            let mut crlf = [0u8; 2];
            self.r.read_exact(&mut crlf).await?;
            if &crlf != b"\r\n" {
                return Err(bad("chunk not followed by CRLF".into()));
            }
        }
        Ok(())
    }

    /// Fills `buf` with body bytes.
    async fn body(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            if !self.in_chunk().await? {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let n = (buf.len() - filled).min(self.chunk_left);
            self.r.read_exact(&mut buf[filled..filled + n]).await?;
            filled += n;
            self.consumed(n).await?;
        }
        Ok(())
    }

    /// One body line, `\n` included; empty at the end of the body.
    async fn body_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        while line.last() != Some(&b'\n') {
            if !self.in_chunk().await? {
                break;
            }
            let available = self.r.fill_buf().await?;
            if available.is_empty() {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let take = available.len().min(self.chunk_left);
            let n = available[..take]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(take, |i| i + 1);
            line.extend_from_slice(&available[..n]);
            self.r.consume(n);
            self.consumed(n).await?;
        }
        String::from_utf8(line).map_err(|_| bad("a line is not UTF-8".into()))
    }

    /// Reads the next part whole; `None` when the stream ended cleanly. Empty lines between
    /// parts are skipped, as multipart readers do.
    pub async fn next_part(&mut self) -> io::Result<Option<Part>> {
        let mut line = self.body_line().await?;
        while line == "\r\n" {
            line = self.body_line().await?;
        }
        if line.is_empty() {
            return Ok(None);
        }
        if line.trim_end() != format!("--{}", self.boundary) {
            return Err(bad(format!("expected a boundary, got {line:?}")));
        }
        let (mut len, mut seq, mut captured_at) = (None, None, None);
        loop {
            let line = self.body_line().await?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad(format!("bad header {line:?}")))?;
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => len = value.parse::<usize>().ok(),
                "x-sequence" => seq = value.parse::<u64>().ok(),
                "x-timestamp" => {
                    captured_at = value
                        .parse::<f64>()
                        .ok()
                        .map(|s| UNIX_EPOCH + Duration::from_secs_f64(s))
                }
                _ => {}
            }
        }
        let (Some(len), Some(seq), Some(captured_at)) = (len, seq, captured_at) else {
            return Err(bad(
                "a part without Content-Length, X-Sequence or X-Timestamp".into(),
            ));
        };
        let mut jpeg = vec![0u8; len];
        self.body(&mut jpeg).await?;
        if !(jpeg.starts_with(&[0xFF, 0xD8]) && jpeg.ends_with(&[0xFF, 0xD9])) {
            return Err(bad(format!("part {seq} is not a JPEG")));
        }
        Ok(Some(Part {
            seq,
            captured_at,
            jpeg,
        }))
    }
}
