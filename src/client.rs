//! Client side of both APIs: addressing, connecting, and one frame stream type over either
//! contract. Used by `camcast-view`, the integration tests and the benchmark.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

use crate::config::MAX_FRAME_BYTES;
use crate::frame::from_unix_us;
use crate::pb;

/// The port camcast (and the tutorial) listen on.
pub const DEFAULT_PORT: u16 = 1234;

/// Turns `HOST`, `HOST:PORT`, `[V6]:PORT`, a bare IPv6 address or a full `http://` URI into a
/// URI tonic can dial.
pub fn endpoint_uri(target: &str) -> String {
    let t = target.trim();
    if t.starts_with("http://") || t.starts_with("https://") {
        return t.to_string();
    }
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return format!("http://{sa}");
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return format!("http://{}", SocketAddr::new(ip, DEFAULT_PORT));
    }
    match t.rsplit_once(':') {
        Some((_, port)) if port.parse::<u16>().is_ok() => format!("http://{t}"),
        _ => format!("http://{t}:{DEFAULT_PORT}"),
    }
}

/// Connects (eagerly, so an unreachable server fails here with a clear error).
pub async fn connect(target: &str, timeout: Duration) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(endpoint_uri(target))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .connect()
        .await
}

/// A frame as a viewer receives it. The seed contract carries only the JPEG.
#[derive(Debug, Clone)]
pub struct Received {
    pub jpeg: Bytes,
    pub seq: Option<u64>,
    pub captured_at: Option<SystemTime>,
    pub size: Option<(u32, u32)>,
    /// Frames skipped before this one (always 0 on the seed contract, which cannot say).
    pub skipped: u64,
}

impl Received {
    /// Capture→receive latency, if the server sent a capture time. Assumes synchronised clocks
    /// (same host, or NTP on the LAN).
    pub fn latency(&self) -> Option<Duration> {
        SystemTime::now().duration_since(self.captured_at?).ok()
    }
}

impl From<pb::v1::Frame> for Received {
    fn from(f: pb::v1::Frame) -> Self {
        Received {
            seq: Some(f.seq),
            captured_at: Some(from_unix_us(f.capture_time_unix_us)),
            size: Some((f.width, f.height)),
            skipped: f.skipped,
            jpeg: f.jpeg,
        }
    }
}

/// A live stream over either contract.
pub enum FrameStream {
    V1(Streaming<pb::v1::Frame>),
    Seed(Streaming<pb::seed::CaptureImage>),
}

impl FrameStream {
    /// Opens a stream. `legacy` selects the seed contract (which ignores `max_fps`).
    pub async fn open(
        channel: Channel,
        legacy: bool,
        name: &str,
        max_fps: f32,
    ) -> Result<FrameStream, Status> {
        if legacy {
            let mut c = pb::seed::webcam_streaming_client::WebcamStreamingClient::new(channel)
                .max_decoding_message_size(MAX_FRAME_BYTES);
            let req = pb::seed::ClientName {
                client_name: name.into(),
            };
            Ok(FrameStream::Seed(
                c.start_webcam_streaming(req).await?.into_inner(),
            ))
        } else {
            let req = pb::v1::StreamRequest {
                viewer_name: name.into(),
                max_fps,
            };
            Ok(FrameStream::V1(
                camera_client(channel)
                    .stream_frames(req)
                    .await?
                    .into_inner(),
            ))
        }
    }

    /// The next frame; `Ok(None)` when the server ended the stream cleanly.
    pub async fn next(&mut self) -> Result<Option<Received>, Status> {
        Ok(match self {
            FrameStream::V1(s) => s.message().await?.map(Received::from),
            FrameStream::Seed(s) => s.message().await?.map(|m| Received {
                jpeg: m.image_bytes,
                seq: None,
                captured_at: None,
                size: None,
                skipped: 0,
            }),
        })
    }
}

/// A v1 client with the frame-size limit raised to match the server's.
pub fn camera_client(channel: Channel) -> pb::v1::camera_client::CameraClient<Channel> {
    pb::v1::camera_client::CameraClient::new(channel).max_decoding_message_size(MAX_FRAME_BYTES)
}

#[cfg(test)]
mod tests {
    use super::endpoint_uri;

    #[test]
    fn targets_become_uris() {
        assert_eq!(endpoint_uri("cam.local"), "http://cam.local:1234");
        assert_eq!(endpoint_uri("cam.local:99"), "http://cam.local:99");
        assert_eq!(endpoint_uri("10.0.0.7"), "http://10.0.0.7:1234");
        assert_eq!(endpoint_uri("::1"), "http://[::1]:1234");
        assert_eq!(endpoint_uri("[::1]:5"), "http://[::1]:5");
        assert_eq!(endpoint_uri("http://x:1"), "http://x:1");
    }
}
