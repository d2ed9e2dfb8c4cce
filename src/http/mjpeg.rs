//! `/stream.mjpg`: `multipart/x-mixed-replace`, one JPEG per part, the format VLC, ffmpeg
//! (`-f mpjpeg`), browsers, Home Assistant, OctoPrint and motionEye read.
//!
//! Each part is written as three buffers (part header, the hub's shared JPEG, CRLF), so the
//! JPEG is never copied into a per-viewer buffer. The next frame is taken from the hub only when
//! the [`Pacer`] says the reader is waiting for it: a reader slower than the camera (or paused)
//! skips frames at the hub and reads a current one, instead of frames queued in socket buffers.
//! Between parts, the pacer's probes are empty lines, which multipart readers skip.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use futures_util::stream;
use serde::Deserialize;

use super::pacing::{Gate, Pacer, Sent, WireWatch, PROBE};
use super::routes::{no_store, viewer_label, HttpError, SelectedCamera};
use super::AppState;
use crate::frame::Frame;
use crate::hub::{Api, Hub, RateCap, Subscription, ViewerInfo};

/// The multipart boundary (without the leading `--`).
pub const BOUNDARY: &str = "camcastframe";

/// `?fps=N` caps this viewer's rate (0 or absent: the camera's rate); `?name=` names it.
/// Unknown parameters, such as a cache-buster, are ignored.
#[derive(Debug, Deserialize)]
pub(super) struct StreamQuery {
    fps: Option<f64>,
    name: Option<String>,
}

pub(super) async fn stream(
    State(app): State<AppState>,
    SelectedCamera(camera): SelectedCamera,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    wire: Option<Extension<Arc<WireWatch>>>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    let Query(query) = query?;
    let max_fps = RateCap::new(query.fps.unwrap_or(0.0))
        .map_err(|e| HttpError::bad_request(format!("fps: {e}")))?;
    let hub = camera.hub;
    let sub = hub.connect(ViewerInfo {
        name: viewer_label(query.name.as_deref(), &headers, app.settings.max_name_len)?,
        addr: Some(addr),
        api: Api::Http,
        max_fps,
    })?;
    let content_type = format!("multipart/x-mixed-replace; boundary={BOUNDARY}");
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_str(&content_type).expect("ASCII header value"),
            ),
            no_store(),
        ],
        Body::from_stream(parts(sub, hub, wire.map(|w| Pacer::new(w.0)))),
    )
        .into_response())
}

/// The body: delivered frames as multipart parts, paced to the reader when the connection's
/// TCP facts are known, ending when the hub shuts down.
fn parts(
    sub: Subscription,
    hub: Hub,
    pacer: Option<Pacer>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    let feed = Feed {
        sub,
        hub,
        pacer,
        pending: VecDeque::with_capacity(3),
        last: None,
    };
    stream::unfold(feed, |mut feed| async move {
        let chunk = feed.next_chunk().await?;
        Some((Ok(chunk), feed))
    })
}

/// One viewer's stream: its hub subscription and its pacer.
struct Feed {
    sub: Subscription,
    hub: Hub,
    pacer: Option<Pacer>,
    /// The rest of the part being handed over.
    pending: VecDeque<Bytes>,
    /// What was handed over last, once complete.
    last: Option<Sent>,
}

impl Feed {
    /// The next buffer for hyper; `None` ends the stream (shutdown).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(chunk) = self.pending.pop_front() {
            return Some(self.hand_over(chunk));
        }
        if let (Some(pacer), Some(last)) = (self.pacer.as_mut(), self.last) {
            // A reader that keeps up is asked once, when the next frame is there.
            let kept_up = match last {
                Sent::Part(len) if pacer.keeping_up() => {
                    if !self.sub.ready().await {
                        return None;
                    }
                    pacer.kept_up(len)
                }
                _ => false,
            };
            if !kept_up {
                let gate = tokio::select! {
                    _ = self.hub.closed() => return None,
                    gate = pacer.next(last) => gate,
                };
                if gate == Gate::Probe {
                    self.last = Some(Sent::Probe);
                    self.sub.count_bytes_sent(PROBE.len());
                    return Some(self.hand_over(PROBE));
                }
            }
        }
        let delivery = self.sub.next().await?;
        if let Some(pacer) = self.pacer.as_mut() {
            pacer.delivered(delivery.frame.seq, delivery.skipped);
        }
        let frame = delivery.frame;
        let head = part_header(&frame);
        let len = head.len() + frame.jpeg.len() + CRLF.len();
        self.sub.count_bytes_sent(len);
        self.last = Some(Sent::Part(len));
        self.pending.extend([frame.jpeg, CRLF]);
        Some(self.hand_over(head))
    }

    fn hand_over(&mut self, chunk: Bytes) -> Bytes {
        if let Some(pacer) = self.pacer.as_mut() {
            pacer.handing_over();
        }
        chunk
    }
}

/// The end of a part's JPEG.
const CRLF: Bytes = Bytes::from_static(b"\r\n");

/// The part's boundary line and headers. `X-Sequence` and `X-Timestamp` (capture time, Unix
/// seconds) let a client count skipped frames and measure latency, as the v1 API does.
fn part_header(frame: &Frame) -> Bytes {
    let us = frame.captured_unix_us();
    Bytes::from(format!(
        "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\
         X-Sequence: {}\r\nX-Timestamp: {}.{:06}\r\n\r\n",
        frame.jpeg.len(),
        frame.seq,
        us.div_euclid(1_000_000),
        us.rem_euclid(1_000_000),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameOrigin;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn part_header_names_type_length_sequence_and_time() {
        let frame = Frame {
            jpeg: Bytes::from_static(&[0xFF, 0xD8, 0xFF, 0xD9]),
            seq: 42,
            captured_at: UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_123),
            width: 2,
            height: 2,
            origin: FrameOrigin::Camera,
        };
        assert_eq!(
            part_header(&frame),
            "--camcastframe\r\nContent-Type: image/jpeg\r\nContent-Length: 4\r\n\
             X-Sequence: 42\r\nX-Timestamp: 1700000000.000123\r\n\r\n"
        );
    }
}
