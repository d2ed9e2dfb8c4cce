//! Frame sources: the seam between camera hardware and the rest of camcast.
//!
//! A source is driven from the hub's dedicated capture thread, so its methods may block.
//! The hub knows nothing of V4L2 or libcamera; it only sees this trait.
//!
//! - [`v4l2`], `libcamera` (with the `libcamera` feature), [`pattern`]: the real sources;
//!   [`fake`] and [`chaos`] stand in for them in tests.
//! - [`encode`]: the one YUV→JPEG encoder, and [`clock`]: the one rule for capture time stamps,
//!   both shared by every source that needs them.
//! - [`listing`]: what `camcast devices` prints.

pub mod chaos;
pub mod clock;
pub mod encode;
pub mod fake;
#[cfg(feature = "libcamera")]
pub mod libcamera;
pub mod listing;
pub mod pacer;
pub mod pattern;
pub mod v4l2;

use std::fmt;
use std::path::PathBuf;

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
    /// `--device` if given, else the first V4L2 capture device, else the test pattern.
    Auto,
    TestPattern,
    /// A V4L2 device: the path given here, else `--device`, else /dev/video0.
    V4l2(Option<PathBuf>),
    /// Camera N as libcamera numbers them (Pi CSI camera modules); needs the `libcamera` feature.
    Libcamera(usize),
    /// `chaos:INNER`: INNER with faults injected at the `--chaos` rates (testing only).
    Chaos(Box<SourceSpec>),
}

impl std::str::FromStr for SourceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(SourceSpec::Auto),
            "test-pattern" | "pattern" => Ok(SourceSpec::TestPattern),
            "v4l2" => Ok(SourceSpec::V4l2(None)),
            "libcamera" => Ok(SourceSpec::Libcamera(0)),
            other => {
                if let Some(inner) = other.strip_prefix("chaos:") {
                    return inner.parse().map(|i| SourceSpec::Chaos(Box::new(i)));
                }
                if let Some(n) = other.strip_prefix("libcamera:") {
                    return n.parse().map(SourceSpec::Libcamera).map_err(|_| {
                        format!("libcamera camera number {n:?} is not a whole number")
                    });
                }
                if let Some(path) = other.strip_prefix("v4l2:") {
                    return Ok(SourceSpec::V4l2(Some(path.into())));
                }
                if other.starts_with("/dev/") {
                    return Ok(SourceSpec::V4l2(Some(other.into())));
                }
                Err(format!(
                    "unknown source {other:?}: expected auto, test-pattern, v4l2, v4l2:/dev/videoN, /dev/videoN, libcamera or libcamera:N"
                ))
            }
        }
    }
}

/// The picture asked of every source: size, rate and the quality of JPEGs camcast encodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptureSettings {
    /// Even, validated by config.
    pub width: u32,
    /// Even, validated by config.
    pub height: u32,
    pub fps: f64,
    /// libjpeg-turbo quality, 1..=100.
    pub quality: u8,
}

/// Everything the sources need to know about the requested picture.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraRequest {
    /// Size, rate and JPEG quality, for whichever source is chosen.
    pub capture: CaptureSettings,
    /// `--device`, if given.
    pub device: Option<PathBuf>,
    pub format: v4l2::FormatChoice,
    pub controls: Vec<(String, i64)>,
    /// Fault rates for `--source chaos:...`.
    pub chaos: chaos::ChaosConfig,
}

impl CameraRequest {
    fn v4l2(&self, device: PathBuf) -> Box<dyn FrameSource> {
        let p = &self.capture;
        Box::new(v4l2::V4l2Source::new(v4l2::V4l2Config {
            device,
            width: p.width,
            height: p.height,
            fps: p.fps,
            format: self.format,
            quality: p.quality,
            controls: self.controls.clone(),
        }))
    }
}

/// A chosen source and the reason it was chosen (logged and shown in the info call).
pub struct Selected {
    pub source: Box<dyn FrameSource>,
    pub reason: String,
}

/// Resolves `--source` into a concrete source. A named device that does not exist (yet) is
/// still selected: the hub waits for it, as a service should when the camera is unplugged.
/// Fails only for a source this build cannot provide.
pub fn select(spec: &SourceSpec, req: &CameraRequest) -> Result<Selected, String> {
    let pattern = || Box::new(pattern::TestPattern::new(req.capture)) as Box<dyn FrameSource>;
    Ok(match spec {
        SourceSpec::Libcamera(n) => return libcamera_source(*n, req),
        SourceSpec::Chaos(inner) => {
            let inner = select(inner, req)?;
            Selected {
                source: Box::new(chaos::ChaosSource::new(inner.source, req.chaos)),
                reason: format!("{}, with faults injected ({})", inner.reason, req.chaos),
            }
        }
        SourceSpec::TestPattern => Selected {
            source: pattern(),
            reason: "test-pattern requested".into(),
        },
        SourceSpec::V4l2(path) => {
            let device = path
                .clone()
                .or_else(|| req.device.clone())
                .unwrap_or_else(|| PathBuf::from("/dev/video0"));
            Selected {
                reason: format!("v4l2 requested: {}", device.display()),
                source: req.v4l2(device),
            }
        }
        SourceSpec::Auto => match (&req.device, v4l2::devices::first_capture_device()) {
            (Some(device), _) => Selected {
                reason: format!("auto: --device {}", device.display()),
                source: req.v4l2(device.clone()),
            },
            (None, Some(found)) => Selected {
                reason: format!("auto: first camera found, {}", found.display()),
                source: req.v4l2(found),
            },
            (None, None) => Selected {
                source: pattern(),
                reason: "auto: no V4L2 capture device found, serving the test pattern".into(),
            },
        },
    })
}

#[cfg(feature = "libcamera")]
fn libcamera_source(camera: usize, req: &CameraRequest) -> Result<Selected, String> {
    let p = &req.capture;
    let cfg = libcamera::LibcameraConfig {
        width: p.width,
        height: p.height,
        fps: p.fps,
        quality: p.quality,
        ..libcamera::LibcameraConfig::new(camera)
    };
    Ok(Selected {
        source: Box::new(libcamera::LibcameraSource::new(cfg)),
        reason: format!("libcamera camera {camera} requested"),
    })
}

#[cfg(not(feature = "libcamera"))]
fn libcamera_source(_camera: usize, _req: &CameraRequest) -> Result<Selected, String> {
    Err(
        "this camcast was built without libcamera support; on the Pi, rebuild with \
         `cargo build --release --features libcamera` (see the README's CSI camera section)"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_specs_parse() {
        assert_eq!("auto".parse(), Ok(SourceSpec::Auto));
        assert_eq!("test-pattern".parse(), Ok(SourceSpec::TestPattern));
        assert_eq!("v4l2".parse(), Ok(SourceSpec::V4l2(None)));
        assert_eq!(
            "v4l2:/dev/video2".parse(),
            Ok(SourceSpec::V4l2(Some("/dev/video2".into())))
        );
        assert_eq!(
            "/dev/v4l/by-id/usb-cam-video-index0".parse(),
            Ok(SourceSpec::V4l2(Some(
                "/dev/v4l/by-id/usb-cam-video-index0".into()
            )))
        );
        assert_eq!("libcamera".parse(), Ok(SourceSpec::Libcamera(0)));
        assert_eq!("libcamera:1".parse(), Ok(SourceSpec::Libcamera(1)));
        assert!("libcamera:x".parse::<SourceSpec>().is_err());
        assert_eq!(
            "chaos:test-pattern".parse(),
            Ok(SourceSpec::Chaos(Box::new(SourceSpec::TestPattern)))
        );
        assert!("chaos:webcam".parse::<SourceSpec>().is_err());
        let err = "webcam".parse::<SourceSpec>().unwrap_err();
        assert!(err.contains("expected auto"), "{err}");
    }

    #[test]
    fn a_named_device_is_selected_even_when_absent() {
        let req = CameraRequest {
            capture: CaptureSettings {
                width: 320,
                height: 240,
                fps: 15.0,
                quality: 70,
            },
            device: Some("/dev/video-not-plugged-in".into()),
            format: v4l2::FormatChoice::Auto,
            controls: vec![],
            chaos: chaos::ChaosConfig::default(),
        };
        let chosen = select(&SourceSpec::Auto, &req).unwrap();
        assert_eq!(chosen.source.name(), "v4l2:/dev/video-not-plugged-in");
        let chosen = select(&SourceSpec::TestPattern, &req).unwrap();
        assert_eq!(chosen.source.name(), "test-pattern");
        let chaos = SourceSpec::Chaos(Box::new(SourceSpec::TestPattern));
        let chosen = select(&chaos, &req).unwrap();
        assert_eq!(chosen.source.name(), "chaos:test-pattern");
        assert!(
            chosen.reason.contains("faults injected"),
            "{}",
            chosen.reason
        );
        #[cfg(not(feature = "libcamera"))]
        assert!(select(&SourceSpec::Libcamera(0), &req)
            .err()
            .unwrap()
            .contains("--features libcamera"));
    }
}
