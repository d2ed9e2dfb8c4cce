//! Frame sources: the seam between camera hardware and the rest of camcast.
//!
//! A source is driven from the hub's dedicated capture thread, so its methods may block.
//! The hub knows nothing of V4L2 or libcamera; it only sees this trait.

pub mod fake;
pub mod pacer;
pub mod pattern;

use std::fmt;

use crate::frame::CapturedFrame;

/// The mode a source negotiated with its device.
#[derive(Debug, Clone, PartialEq)]
pub struct Mode {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// e.g. "MJPG", "YUYV", "I420 (test pattern)".
    pub pixel_format: String,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}x{}@{} {}",
            self.width, self.height, self.fps, self.pixel_format
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// One bad frame (truncated, corrupt, failed to encode). Counted and skipped; capture goes on.
    #[error("bad frame: {0}")]
    BadFrame(String),
    /// The device is absent or vanished. The hub waits for it with backoff.
    #[error("camera unavailable: {0}")]
    Unavailable(String),
    /// Anything else. The hub reports a fault and retries with backoff.
    #[error("source failed: {0}")]
    Failed(String),
}

/// A camera or camera stand-in. Lifecycle: `start` → `next_frame`* → `stop`, repeatable.
pub trait FrameSource: Send {
    /// Short identifier for logs and the info call, e.g. "test-pattern" or "v4l2:/dev/video0".
    fn name(&self) -> String;
    /// Opens the device and starts streaming; returns what was negotiated.
    fn start(&mut self) -> Result<Mode, SourceError>;
    /// Blocks until the next frame is ready. Must return (with an error if need be) within a
    /// few seconds so the capture loop can notice that it should stop.
    fn next_frame(&mut self) -> Result<CapturedFrame, SourceError>;
    /// Stops streaming and releases the device. Must be safe to call after a failed `start`.
    fn stop(&mut self);
}

/// Which source the user asked for (`--source`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// The first camera found, else the test pattern.
    Auto,
    TestPattern,
}

impl std::str::FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(SourceSpec::Auto),
            "test-pattern" | "pattern" => Ok(SourceSpec::TestPattern),
            other => Err(format!(
                "unknown source {other:?}: expected \"auto\" or \"test-pattern\""
            )),
        }
    }
}

/// A chosen source and the reason it was chosen (logged and shown in the info call).
pub struct Selected {
    pub source: Box<dyn FrameSource>,
    pub reason: String,
}

/// Resolves `--source` into a concrete source.
pub fn select(spec: &SourceSpec, pattern: pattern::PatternConfig) -> Selected {
    match spec {
        SourceSpec::Auto => Selected {
            source: Box::new(pattern::TestPattern::new(pattern)),
            reason: "auto: no camera support in this build, serving the test pattern".into(),
        },
        SourceSpec::TestPattern => Selected {
            source: Box::new(pattern::TestPattern::new(pattern)),
            reason: "test-pattern requested".into(),
        },
    }
}
