//! `/stream.mjpg`: `multipart/x-mixed-replace`, one JPEG per part, the format VLC, ffmpeg
//! (`-f mpjpeg`), browsers, Home Assistant, OctoPrint and motionEye read.
//!
//! Each part is written as three buffers (part header, the hub's shared JPEG, CRLF), so the
//! JPEG is never copied into a per-viewer buffer. The body pulls the next frame from the
//! subscription only when hyper polls it, i.e. once the previous frame has (nearly) left the
//! connection's buffer: a viewer that stops reading skips frames instead of queueing them.

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{stream, StreamExt};
use serde::Deserialize;

use super::routes::{no_store, viewer_label, HttpError};
use super::AppState;
use crate::frame::Frame;
use crate::hub::{Api, RateCap, Subscription, ViewerInfo};

/// The multipart boundary (without the leading `--`).
pub const BOUNDARY: &str = "camcastframe";

/// `?fps=N` caps this viewer's rate (0 or absent: the camera's rate); `?name=` names it.
/// Unknown parameters, such as a cache-buster, are ignored.
#[derive(Debug, Deserialize)]
pub(super) struct StreamQuery {
    fps: Option<f32>,
    name: Option<String>,
}

pub(super) async fn stream(
    State(app): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<StreamQuery>, QueryRejection>,
) -> Result<Response, HttpError> {
    let Query(query) = query?;
    let max_fps = RateCap::new(query.fps.unwrap_or(0.0))
        .map_err(|e| HttpError::bad_request(format!("fps: {e}")))?;
    let sub = app.hub.connect(ViewerInfo {
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
        Body::from_stream(parts(sub)),
    )
        .into_response())
}

/// The body: every delivered frame as one multipart part, ending when the hub shuts down.
fn parts(sub: Subscription) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    let frames = stream::unfold(sub, |mut sub| async move {
        let delivery = sub.next().await?;
        let head = part_header(&delivery.frame);
        sub.count_bytes_sent(head.len() + delivery.frame.jpeg.len() + 2);
        Some(((head, delivery.frame), sub))
    });
    frames.flat_map(|(head, frame)| {
        stream::iter([head, frame.jpeg, Bytes::from_static(b"\r\n")].map(Ok))
    })
}

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
