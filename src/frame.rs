//! The unit that flows from a source through the hub to every viewer.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Where a frame's JPEG bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOrigin {
    /// The camera's own JPEG, passed through (MJPEG cameras).
    Camera,
    /// Raw pixels JPEG-encoded by camcast (raw cameras, test pattern).
    Encoded,
}

/// A frame as a source produces it; the hub adds the sequence number.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    pub jpeg: Bytes,
    pub captured_at: SystemTime,
    pub width: u32,
    pub height: u32,
    pub origin: FrameOrigin,
    /// How long camcast took to JPEG-encode it (`None` for a camera's own JPEG).
    pub encode_time: Option<std::time::Duration>,
}

/// A published frame. Cloning is cheap: `jpeg` is a reference-counted buffer, so fan-out to any
/// number of viewers copies no pixels.
#[derive(Debug, Clone)]
pub struct Frame {
    pub jpeg: Bytes,
    /// The hub's capture count: 1 for the first frame since the server started, then +1 per
    /// captured frame. It does not restart when capture stops and starts again, so a viewer
    /// can compare numbers across a camera outage.
    pub seq: u64,
    pub captured_at: SystemTime,
    pub width: u32,
    pub height: u32,
    pub origin: FrameOrigin,
}

impl Frame {
    pub fn new(captured: CapturedFrame, seq: u64) -> Self {
        Frame {
            jpeg: captured.jpeg,
            seq,
            captured_at: captured.captured_at,
            width: captured.width,
            height: captured.height,
            origin: captured.origin,
        }
    }

    /// Capture time as microseconds since the Unix epoch (what goes on the wire).
    pub fn captured_unix_us(&self) -> i64 {
        unix_us(self.captured_at)
    }
}

/// Microseconds since the Unix epoch, negative for times before it.
pub fn unix_us(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// Inverse of [`unix_us`].
pub fn from_unix_us(us: i64) -> SystemTime {
    let magnitude = std::time::Duration::from_micros(us.unsigned_abs());
    if us >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// Cheap structural check: starts with SOI and ends with EOI. Full validation and Huffman-table
/// repair for camera JPEGs belong to the V4L2 passthrough path.
pub fn looks_like_jpeg(data: &[u8]) -> bool {
    data.len() >= 4 && data.starts_with(&[0xFF, 0xD8]) && data.ends_with(&[0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_us_round_trips() {
        for us in [0, 1, 1_700_000_000_123_456, -5_000_000] {
            assert_eq!(unix_us(from_unix_us(us)), us);
        }
    }

    #[test]
    fn jpeg_shape_check() {
        assert!(looks_like_jpeg(&[0xFF, 0xD8, 0x00, 0xFF, 0xD9]));
        assert!(!looks_like_jpeg(&[0xFF, 0xD8, 0x00, 0x00]));
        assert!(!looks_like_jpeg(b"GIF89a"));
        assert!(!looks_like_jpeg(&[]));
    }
}
