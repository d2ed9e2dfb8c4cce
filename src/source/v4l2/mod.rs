//! USB (UVC) and other V4L2 cameras: single-planar capture with mmap streaming.
//!
//! - MJPEG frames are passed through: copied once out of the driver's buffer (only `bytesused`)
//!   and made safe by [`crate::jpeg::repair`]; a frame that fails is dropped as a bad frame.
//! - YUYV and NV12 frames are JPEG-encoded once, from YUV planes, by the one encoder
//!   ([`crate::source::encode`]).
//! - All I/O blocks on the hub's capture thread; dequeueing waits at most [`FRAME_TIMEOUT`] so
//!   the thread notices when it should stop, and a camera that stops delivering counts as gone.
//!
//! The `v4l` crate panics in a few places on unexpected driver answers (unknown enum values,
//! failed unmap in `Drop`). A driver quirk must not kill the capture thread, so calls into it
//! are shielded and such a panic becomes [`SourceError::Failed`].

pub mod controls;
pub mod devices;
pub mod hw;
pub mod negotiate;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use v4l::buffer::{Flags as BufFlags, Type as BufType};
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::Device;

pub use negotiate::{FormatChoice, PixelFormat};

use super::clock::{self, KernelClock};
use super::encode::{Encoder, Layout, YuvFormat};
use super::{FrameSource, Mode, SourceError};
use crate::frame::{CapturedFrame, FrameOrigin};
use crate::frame_pool::FramePool;
use negotiate::{Choice, Request};

/// Driver buffers in the mmap ring: one being filled, one being read, slack for jitter.
const BUFFERS: u32 = 4;
/// Longest wait for a frame before the camera counts as stalled.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(2);

/// What the V4L2 source is asked to do.
#[derive(Debug, Clone, PartialEq)]
pub struct V4l2Config {
    /// Device node, e.g. /dev/video0 or a stable /dev/v4l/by-id/... link.
    pub device: PathBuf,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub format: FormatChoice,
    /// JPEG quality (1..=100) for frames encoded here (YUYV, NV12); MJPEG is passed through.
    pub quality: u8,
    /// Controls to set after opening, by name (case-insensitive), e.g. ("Power Line Frequency", 1).
    pub controls: Vec<(String, i64)>,
}

impl V4l2Config {
    /// 640x480 at 30 fps, format auto, quality 80, no controls.
    pub fn new(device: impl Into<PathBuf>) -> Self {
        V4l2Config {
            device: device.into(),
            width: 640,
            height: 480,
            fps: 30.0,
            format: FormatChoice::Auto,
            quality: 80,
            controls: Vec::new(),
        }
    }
}

/// Parses `NAME=VALUE` (`--control "Power Line Frequency=1"`) into a control setting.
pub fn parse_control(s: &str) -> Result<(String, i64), String> {
    let (name, value) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("control {s:?} is not NAME=VALUE"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("control {s:?} has no name"));
    }
    let value = value
        .trim()
        .parse()
        .map_err(|_| format!("control {name:?}: {:?} is not an integer", value.trim()))?;
    Ok((name.to_string(), value))
}

pub struct V4l2Source {
    cfg: V4l2Config,
    running: Option<Running>,
    negotiated: Option<Choice>,
}

/// An open, streaming device. Field order is drop order: the stream (STREAMOFF, unmap, free
/// the buffers) goes before the device handle, whose drop closes the file descriptor.
struct Running {
    stream: Stream<'static>,
    _device: Device,
    path: PathBuf,
    frames: FrameMaker,
}

/// Turns one driver buffer into a JPEG.
enum FrameMaker {
    /// The camera's JPEGs, each copied once into a buffer from the pool.
    Passthrough(FramePool),
    /// Boxed: the encoder's buffers and geometry dwarf the passthrough case.
    Encode(Box<Encoder>),
}

impl V4l2Source {
    pub fn new(cfg: V4l2Config) -> Self {
        V4l2Source {
            cfg,
            running: None,
            negotiated: None,
        }
    }

    /// The last negotiation's outcome, with its human-readable reason.
    pub fn negotiated(&self) -> Option<&Choice> {
        self.negotiated.as_ref()
    }

    fn open_and_stream(&mut self) -> Result<Mode, SourceError> {
        let path = self.cfg.device.clone();
        let dev = hw::open(&path)?;
        let caps = hw::check_capture(&path, &dev)?;
        controls::apply(&dev, &self.cfg.controls)
            .map_err(|e| SourceError::Failed(format!("{}: {e}", path.display())))?;
        let choice = self.negotiate(&path, &dev)?;
        let applied = hw::apply(&path, &dev, &choice)?;
        let frames = frame_maker(&path, &applied, self.cfg.quality)?;
        let mut stream = Stream::with_buffers(&dev, BufType::VideoCapture, BUFFERS)
            .map_err(|e| hw::stream_error(&path, "VIDIOC_REQBUFS", &e))?;
        stream.set_timeout(FRAME_TIMEOUT);
        tracing::info!(device = %path.display(), driver = %caps.driver, card = %caps.card, reason = %choice.reason,
            stride = applied.stride, "V4L2 capture configured");
        let mode = mode_of(&applied, &choice, &self.cfg);
        self.negotiated = Some(choice);
        self.running = Some(Running {
            stream,
            _device: dev,
            path,
            frames,
        });
        Ok(mode)
    }

    fn negotiate(&self, path: &Path, dev: &Device) -> Result<Choice, SourceError> {
        let advertised = hw::advertised(dev, (self.cfg.width, self.cfg.height))
            .map_err(|e| hw::stream_error(path, "VIDIOC_ENUM_FMT", &e))?;
        let request = Request {
            width: self.cfg.width,
            height: self.cfg.height,
            fps: self.cfg.fps,
            format: self.cfg.format,
        };
        let choice = negotiate::negotiate(&advertised, &request)
            .map_err(|e| SourceError::Failed(format!("{}: {e}", path.display())))?;
        if !choice.exact {
            tracing::warn!(device = %path.display(), reason = %choice.reason, "camera mode differs from the request");
        }
        Ok(choice)
    }
}

fn frame_maker(path: &Path, applied: &hw::Applied, quality: u8) -> Result<FrameMaker, SourceError> {
    let raw = match applied.format {
        PixelFormat::Mjpeg => return Ok(FrameMaker::Passthrough(FramePool::default())),
        PixelFormat::Yuyv => YuvFormat::Yuyv,
        PixelFormat::Nv12 => YuvFormat::Nv12,
    };
    Layout::new(raw, applied.width, applied.height, applied.stride)
        .and_then(|layout| Encoder::new(layout, quality))
        .map(|encoder| FrameMaker::Encode(Box::new(encoder)))
        .map_err(|e| SourceError::Failed(format!("{}: {e}", path.display())))
}

/// The mode for the info call. When it is not what was asked for, a short note says so; the
/// full reason is in the log.
fn mode_of(applied: &hw::Applied, choice: &Choice, cfg: &V4l2Config) -> Mode {
    let asked = (cfg.width, cfg.height, negotiate::fps_text(cfg.fps));
    let pixel_format = if choice.exact && (applied.width, applied.height) == (cfg.width, cfg.height)
    {
        applied.format.to_string()
    } else {
        format!(
            "{} (closest to requested {}x{}@{})",
            applied.format, asked.0, asked.1, asked.2
        )
    };
    Mode {
        width: applied.width,
        height: applied.height,
        fps: applied.fps,
        pixel_format,
    }
}

impl Running {
    fn next_frame(&mut self) -> Result<CapturedFrame, SourceError> {
        let Running {
            stream,
            path,
            frames,
            ..
        } = self;
        let (buf, meta) =
            CaptureStream::next(stream).map_err(|e| hw::stream_error(path, "VIDIOC_DQBUF", &e))?;
        let captured_at = capture_time(meta);
        if meta.flags.contains(BufFlags::ERROR) {
            return Err(SourceError::BadFrame(
                "the driver marked the buffer as corrupt".into(),
            ));
        }
        let used = &buf[..(meta.bytesused as usize).min(buf.len())];
        if used.is_empty() {
            return Err(SourceError::BadFrame(
                "the driver returned an empty buffer".into(),
            ));
        }
        frames.make(used, captured_at)
    }
}

/// V4L2_BUF_FLAG_TIMESTAMP_MASK and _MONOTONIC: which clock the driver stamped the buffer on.
const TIMESTAMP_MASK: u32 = 0x0000_e000;
const TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;

/// Wall-clock capture time of a dequeued buffer: its stamp when the driver says it is on
/// CLOCK_MONOTONIC (the only clock V4L2 stamps capture buffers with today), else now.
fn capture_time(meta: &v4l::buffer::Metadata) -> std::time::SystemTime {
    let stamp = clock::from_timeval(meta.timestamp.sec, meta.timestamp.usec);
    stamp_time(stamp, meta.flags.bits())
}

fn stamp_time(stamp: Duration, flags: u32) -> std::time::SystemTime {
    let clocks: &[KernelClock] = if flags & TIMESTAMP_MASK == TIMESTAMP_MONOTONIC {
        &[KernelClock::Monotonic]
    } else {
        &[]
    };
    clock::wall_time(Some(stamp), clocks)
}

impl FrameMaker {
    /// The frame from the used part of a dequeued buffer: the camera's JPEG repaired, or the
    /// raw picture encoded.
    fn make(
        &mut self,
        used: &[u8],
        captured_at: std::time::SystemTime,
    ) -> Result<CapturedFrame, SourceError> {
        match self {
            FrameMaker::Passthrough(pool) => {
                let (jpeg, info) = crate::jpeg::repair_from_slice(used, pool)
                    .map_err(|e| SourceError::BadFrame(e.to_string()))?;
                Ok(CapturedFrame {
                    jpeg,
                    captured_at,
                    width: u32::from(info.width),
                    height: u32::from(info.height),
                    origin: FrameOrigin::Camera,
                    encode_time: None,
                })
            }
            FrameMaker::Encode(encoder) => {
                let jpeg = encoder
                    .encode(used)
                    .map_err(|e| SourceError::BadFrame(e.to_string()))?;
                let l = encoder.layout();
                Ok(CapturedFrame {
                    jpeg,
                    captured_at,
                    width: l.width() as u32,
                    height: l.height() as u32,
                    origin: FrameOrigin::Encoded,
                    encode_time: Some(encoder.last_encode_time()),
                })
            }
        }
    }
}

impl FrameSource for V4l2Source {
    fn name(&self) -> String {
        format!("v4l2:{}", self.cfg.device.display())
    }

    fn start(&mut self) -> Result<Mode, SourceError> {
        self.stop();
        let result = shielded("start", || self.open_and_stream());
        if result.is_err() {
            self.stop();
        }
        result
    }

    fn next_frame(&mut self) -> Result<CapturedFrame, SourceError> {
        let run = self
            .running
            .as_mut()
            .ok_or_else(|| SourceError::Failed("next_frame before start".into()))?;
        shielded("capture", || run.next_frame())
    }

    fn stop(&mut self) {
        let Some(run) = self.running.take() else {
            return;
        };
        let path = run.path.clone();
        if catch_unwind(AssertUnwindSafe(move || drop(run))).is_err() {
            tracing::error!(device = %path.display(), "the v4l crate panicked while releasing the device");
        } else {
            tracing::debug!(device = %path.display(), "V4L2 device released");
        }
    }
}

impl Drop for V4l2Source {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `f`, turning a panic inside the v4l crate into a source failure.
fn shielded<T>(what: &str, f: impl FnOnce() -> Result<T, SourceError>) -> Result<T, SourceError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown panic");
        Err(SourceError::Failed(format!(
            "V4L2 {what} failed inside the v4l crate: {detail}"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_settings_parse_from_name_equals_value() {
        assert_eq!(
            parse_control("Power Line Frequency = 1"),
            Ok(("Power Line Frequency".to_string(), 1))
        );
        assert_eq!(parse_control("hue=-5"), Ok(("hue".to_string(), -5)));
        assert!(parse_control("brightness")
            .unwrap_err()
            .contains("NAME=VALUE"));
        assert!(parse_control("=3").unwrap_err().contains("no name"));
        assert!(parse_control("gain=high")
            .unwrap_err()
            .contains("not an integer"));
    }

    #[test]
    fn name_names_the_device() {
        let src = V4l2Source::new(V4l2Config::new("/dev/video3"));
        assert_eq!(src.name(), "v4l2:/dev/video3");
    }

    #[test]
    fn absent_camera_is_unavailable_and_stop_is_safe_after_failure() {
        let dir = tempfile::tempdir().unwrap();
        let mut src = V4l2Source::new(V4l2Config::new(dir.path().join("video0")));
        let err = src.start().unwrap_err();
        assert!(matches!(err, SourceError::Unavailable(_)), "{err:?}");
        src.stop();
        src.stop();
        assert!(matches!(src.next_frame(), Err(SourceError::Failed(_))));
    }

    #[test]
    fn non_camera_node_fails_without_leaking_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("video0");
        std::fs::write(&path, b"not a camera").unwrap();
        let mut src = V4l2Source::new(V4l2Config::new(&path));
        let before = open_fds();
        for _ in 0..20 {
            let err = src.start().unwrap_err();
            assert!(matches!(err, SourceError::Failed(_)), "{err:?}");
        }
        // Other tests run in parallel threads and open files too; a leak here would be 20.
        assert!(
            open_fds() < before + 10,
            "file descriptors leak on failed start"
        );
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
    }

    #[test]
    fn panics_become_failures() {
        let r: Result<(), _> = shielded("test", || panic!("driver said {}", 42));
        let err = r.unwrap_err();
        assert_eq!(
            err.to_string(),
            "source failed: V4L2 test failed inside the v4l crate: driver said 42"
        );
    }

    #[test]
    fn mode_notes_when_the_camera_could_not_match_the_request() {
        let cfg = V4l2Config::new("/dev/video0");
        let applied = hw::Applied {
            format: PixelFormat::Mjpeg,
            width: 640,
            height: 480,
            stride: 0,
            fps: 30.0,
        };
        let choice = Choice {
            format: PixelFormat::Mjpeg,
            width: 640,
            height: 480,
            interval: negotiate::Interval { num: 1, den: 30 },
            exact: true,
            reason: String::new(),
        };
        assert_eq!(mode_of(&applied, &choice, &cfg).pixel_format, "MJPG");
        let driver_shrank = hw::Applied {
            width: 320,
            height: 240,
            ..applied
        };
        assert_eq!(
            mode_of(&driver_shrank, &choice, &cfg).pixel_format,
            "MJPG (closest to requested 640x480@30)"
        );
    }

    #[test]
    fn passthrough_repairs_and_reports_the_jpeg_size() {
        let jpeg = crate::source::fake::grey_jpeg(64, 32);
        let mut padded = jpeg.to_vec();
        padded.extend_from_slice(&[0; 64]);
        let now = std::time::SystemTime::now();
        let mut maker = FrameMaker::Passthrough(FramePool::new(1));
        let f = maker.make(&padded, now).unwrap();
        assert_eq!(
            (f.jpeg, f.width, f.height, f.origin, f.encode_time),
            (jpeg, 64, 32, FrameOrigin::Camera, None)
        );
        let bad = maker.make(&padded[..100], now).unwrap_err();
        assert!(matches!(bad, SourceError::BadFrame(_)), "{bad:?}");
    }

    #[test]
    fn driver_stamps_are_used_only_when_monotonic() {
        let age = Duration::from_secs(2);
        let before = std::time::SystemTime::now();
        let stamp = KernelClock::Monotonic.now().unwrap() - age;
        let t = stamp_time(stamp, TIMESTAMP_MONOTONIC | BufFlags::MAPPED.bits());
        let after = std::time::SystemTime::now();
        // Bracketed by wall-clock readings around the call, no fixed tolerance.
        let spread = after.duration_since(before).unwrap();
        assert!(t <= after - age && t >= before - age - spread);
        // Unknown clock (flags 0, or "copied from the output side"): the stamp is ignored.
        assert!(stamp_time(stamp, 0) >= before);
        assert!(stamp_time(stamp, 0x4000) >= before);
        // No stamp at all.
        assert!(stamp_time(Duration::ZERO, TIMESTAMP_MONOTONIC) >= before);
    }

    #[test]
    fn raw_frames_are_encoded_at_the_negotiated_size() {
        let applied = hw::Applied {
            format: PixelFormat::Yuyv,
            width: 32,
            height: 16,
            stride: 64,
            fps: 30.0,
        };
        let mut maker = frame_maker(Path::new("/dev/video0"), &applied, 80).unwrap();
        let now = std::time::SystemTime::now();
        let f = maker.make(&vec![128; 64 * 16], now).unwrap();
        assert_eq!(
            (f.width, f.height, f.origin),
            (32, 16, FrameOrigin::Encoded)
        );
        assert!(f.encode_time.is_some(), "camcast encoded it: timed");
        let img = turbojpeg::decompress(&f.jpeg, turbojpeg::PixelFormat::RGB).unwrap();
        assert_eq!((img.width, img.height), (32, 16));
        assert!(matches!(
            maker.make(&[0; 10], now),
            Err(SourceError::BadFrame(_))
        ));
    }
}
