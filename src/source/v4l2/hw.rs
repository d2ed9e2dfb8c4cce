//! The device side of the V4L2 source: opening a node, reading what it advertises, applying the
//! negotiated mode, and turning errno values into the hub's error classes.

use std::io;
use std::path::Path;

use v4l::capability::Flags as CapFlags;
use v4l::format::description::Flags as FormatFlags;
use v4l::frameinterval::FrameIntervalEnum;
use v4l::framesize::FrameSizeEnum;
use v4l::v4l2;
use v4l::v4l_sys::v4l2_capability;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::negotiate::{
    AdvertisedFormat, AdvertisedSize, Choice, Interval, PixelFormat, Rates, SizeRange,
};
use crate::source::SourceError;

/// Opens a device node, classifying failures: absent → Unavailable (the hub waits for it).
pub fn open(path: &Path) -> Result<Device, SourceError> {
    Device::with_path(path).map_err(|e| open_error(path, &e))
}

/// What an `open` failure means for the hub.
pub fn open_error(path: &Path, e: &io::Error) -> SourceError {
    let p = path.display();
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
            SourceError::Unavailable(format!("no camera at {p} ({e})"))
        }
        Some(libc::EBUSY) => busy(path),
        Some(libc::EACCES) | Some(libc::EPERM) => SourceError::Failed(format!(
            "permission denied opening {p}: run as a member of the 'video' group"
        )),
        _ => SourceError::Failed(format!("cannot open {p}: {e}")),
    }
}

pub fn busy(path: &Path) -> SourceError {
    SourceError::Failed(format!(
        "{} is busy: another program is using the camera (close it, or find it with `fuser {}`)",
        path.display(),
        path.display()
    ))
}

/// What an error while setting up or streaming means for the hub: a vanished device (ENODEV,
/// EIO, ENXIO) or a stalled one (poll timeout) is Unavailable, so the hub reopens it with backoff.
pub fn stream_error(path: &Path, what: &str, e: &io::Error) -> SourceError {
    let p = path.display();
    if e.kind() == io::ErrorKind::TimedOut {
        return SourceError::Unavailable(format!("{p}: no frame within {what} timeout"));
    }
    match e.raw_os_error() {
        Some(libc::ENODEV) | Some(libc::EIO) | Some(libc::ENXIO) | Some(libc::ENOENT) => {
            SourceError::Unavailable(format!("{p} went away during {what} ({e})"))
        }
        Some(libc::EBUSY) => busy(path),
        _ => SourceError::Failed(format!("{p}: {what} failed: {e}")),
    }
}

/// What VIDIOC_QUERYCAP says about a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCaps {
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// The node's own capabilities (`device_caps`), not the whole driver's.
    pub flags: CapFlags,
}

/// VIDIOC_QUERYCAP without the v4l crate's `query_caps`, which unwraps on a card name that is
/// not UTF-8 (UVC copies the USB product string, cut at 32 bytes, possibly mid-character).
pub fn query_caps(dev: &Device) -> io::Result<NodeCaps> {
    // SAFETY: v4l2_capability is plain old data; all-zero is a valid value.
    let mut caps: v4l2_capability = unsafe { std::mem::zeroed() };
    // SAFETY: VIDIOC_QUERYCAP writes one v4l2_capability.
    unsafe {
        v4l2::ioctl(
            dev.handle().fd(),
            v4l2::vidioc::VIDIOC_QUERYCAP,
            &mut caps as *mut _ as *mut _,
        )
    }?;
    let bits = if caps.capabilities & CapFlags::DEVICE_CAPS.bits() != 0 {
        caps.device_caps
    } else {
        caps.capabilities
    };
    Ok(NodeCaps {
        driver: c_text(&caps.driver),
        card: c_text(&caps.card),
        bus: c_text(&caps.bus_info),
        flags: CapFlags::from_bits_truncate(bits),
    })
}

/// What kind of node this is, from its capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Single-planar video capture: what camcast can stream from.
    Capture,
    /// UVC cameras add one of these beside each video node: timestamps, no picture.
    Metadata,
    MultiPlanar,
    /// Hardware codecs and ISPs (memory to memory).
    MemoryToMemory,
    Output,
    Other,
}

impl NodeKind {
    pub fn of(flags: CapFlags) -> Self {
        if flags.intersects(CapFlags::VIDEO_M2M | CapFlags::VIDEO_M2M_MPLANE) {
            NodeKind::MemoryToMemory
        } else if flags.contains(CapFlags::VIDEO_CAPTURE) {
            NodeKind::Capture
        } else if flags.contains(CapFlags::META_CAPTURE) {
            NodeKind::Metadata
        } else if flags.contains(CapFlags::VIDEO_CAPTURE_MPLANE) {
            NodeKind::MultiPlanar
        } else if flags.intersects(CapFlags::VIDEO_OUTPUT | CapFlags::VIDEO_OUTPUT_MPLANE) {
            NodeKind::Output
        } else {
            NodeKind::Other
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            NodeKind::Capture => "video capture",
            NodeKind::Metadata => "a metadata node (no picture; UVC cameras add one per camera)",
            NodeKind::MultiPlanar => "multi-planar capture, which camcast does not support",
            NodeKind::MemoryToMemory => "a memory-to-memory codec or ISP, not a camera",
            NodeKind::Output => "an output device, not a camera",
            NodeKind::Other => "not a video capture device",
        }
    }
}

/// Checks the node is a single-planar video capture device that streams.
pub fn check_capture(path: &Path, dev: &Device) -> Result<NodeCaps, SourceError> {
    let caps = query_caps(dev).map_err(|e| stream_error(path, "VIDIOC_QUERYCAP", &e))?;
    let kind = NodeKind::of(caps.flags);
    if kind != NodeKind::Capture {
        return Err(SourceError::Failed(format!(
            "{} ({}, driver {}) is {}",
            path.display(),
            caps.card,
            caps.driver,
            kind.describe()
        )));
    }
    if !caps.flags.contains(CapFlags::STREAMING) {
        return Err(SourceError::Failed(format!(
            "{} does not support streaming I/O",
            path.display()
        )));
    }
    Ok(caps)
}

/// A NUL-terminated driver string, lossily decoded.
pub fn c_text(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).trim().to_string()
}

/// The device's formats; sizes and rates only for the formats camcast can use (others are
/// listed so errors can say what the camera does offer). `want` steers size-range candidates.
pub fn advertised(dev: &Device, want: (u32, u32)) -> io::Result<Vec<AdvertisedFormat>> {
    formats(dev, want, false)
}

/// Every format with every size and rate, for `camcast devices`.
pub fn advertised_all(dev: &Device) -> io::Result<Vec<AdvertisedFormat>> {
    formats(dev, (640, 480), true)
}

fn formats(dev: &Device, want: (u32, u32), all: bool) -> io::Result<Vec<AdvertisedFormat>> {
    let mut out = Vec::new();
    for desc in dev.enum_formats()? {
        let fourcc = desc.fourcc.repr;
        let mut format = AdvertisedFormat {
            fourcc,
            description: describe_format(&desc.description, desc.flags),
            sizes: Vec::new(),
            range: None,
        };
        if all || PixelFormat::from_fourcc(fourcc).is_some() {
            fill_sizes(dev, &mut format, want);
        }
        out.push(format);
    }
    Ok(out)
}

fn describe_format(description: &str, flags: FormatFlags) -> String {
    let mut text = description.to_string();
    if flags.contains(FormatFlags::EMULATED) {
        text.push_str(" (emulated)");
    }
    text
}

/// Sizes and rates of one format. Enumeration failures leave the list empty: a driver that
/// cannot enumerate sizes still gets a chance through S_FMT's adjustment.
fn fill_sizes(dev: &Device, format: &mut AdvertisedFormat, want: (u32, u32)) {
    let fourcc = FourCC::new(&format.fourcc);
    let Ok(sizes) = dev.enum_framesizes(fourcc) else {
        return;
    };
    for size in sizes {
        let dims = match size.size {
            FrameSizeEnum::Discrete(d) => vec![(d.width, d.height)],
            FrameSizeEnum::Stepwise(s) => {
                let range = SizeRange {
                    min_width: s.min_width,
                    max_width: s.max_width,
                    step_width: s.step_width,
                    min_height: s.min_height,
                    max_height: s.max_height,
                    step_height: s.step_height,
                };
                format.range = Some(range);
                range.candidates(want.0, want.1)
            }
        };
        for (width, height) in dims {
            let rates = rates(dev, fourcc, width, height);
            format.sizes.push(AdvertisedSize {
                width,
                height,
                rates,
            });
        }
    }
}

fn rates(dev: &Device, fourcc: FourCC, width: u32, height: u32) -> Rates {
    let Ok(intervals) = dev.enum_frameintervals(fourcc, width, height) else {
        return Rates::Unknown;
    };
    let mut discrete = Vec::new();
    for i in intervals {
        match i.interval {
            FrameIntervalEnum::Discrete(f) => discrete.push(Interval {
                num: f.numerator,
                den: f.denominator,
            }),
            FrameIntervalEnum::Stepwise(s) => {
                return Rates::Range {
                    shortest: Interval {
                        num: s.min.numerator,
                        den: s.min.denominator,
                    },
                    longest: Interval {
                        num: s.max.numerator,
                        den: s.max.denominator,
                    },
                }
            }
        }
    }
    if discrete.is_empty() {
        Rates::Unknown
    } else {
        Rates::Discrete(discrete)
    }
}

/// What the driver actually set after S_FMT / S_PARM.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// Bytes per line (0 for compressed formats on some drivers).
    pub stride: u32,
    pub fps: f64,
}

/// Sets format and frame rate and reads back what the driver chose (drivers adjust silently).
pub fn apply(path: &Path, dev: &Device, choice: &Choice) -> Result<Applied, SourceError> {
    let wanted = Format::new(
        choice.width,
        choice.height,
        FourCC::new(&choice.format.fourcc()),
    );
    let got = dev
        .set_format(&wanted)
        .map_err(|e| stream_error(path, "VIDIOC_S_FMT", &e))?;
    let format = PixelFormat::from_fourcc(got.fourcc.repr).ok_or_else(|| {
        SourceError::Failed(format!(
            "{} switched to {} when asked for {}",
            path.display(),
            got.fourcc,
            choice.format
        ))
    })?;
    if (got.width, got.height) != (choice.width, choice.height) || format != choice.format {
        tracing::warn!(device = %path.display(), asked = %format_args!("{} {}x{}", choice.format, choice.width, choice.height),
            got = %format_args!("{} {}x{}", format, got.width, got.height), "driver adjusted the format");
    }
    let fps = set_rate(path, dev, choice.interval);
    Ok(Applied {
        format,
        width: got.width,
        height: got.height,
        stride: got.stride,
        fps,
    })
}

/// Requests a frame interval and returns the rate in force. Some drivers do not implement
/// S_PARM; they stream at their own rate, so that is a warning, not a failure.
fn set_rate(path: &Path, dev: &Device, interval: Interval) -> f64 {
    let asked = Parameters::new(v4l::Fraction::new(interval.num, interval.den));
    match dev.set_params(&asked) {
        Ok(got) => {
            let fps = Interval {
                num: got.interval.numerator,
                den: got.interval.denominator,
            }
            .fps();
            if fps > 0.0 {
                return fps;
            }
        }
        Err(e) => {
            tracing::warn!(device = %path.display(), error = %e, "cannot set the frame rate; using the driver's")
        }
    }
    interval.fps()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn absent_device_is_unavailable() {
        let p = Path::new("/dev/video9");
        for code in [libc::ENOENT, libc::ENODEV, libc::ENXIO] {
            assert!(matches!(
                open_error(p, &err(code)),
                SourceError::Unavailable(_)
            ));
        }
    }

    #[test]
    fn busy_device_is_a_failure_naming_the_cause() {
        let e = open_error(Path::new("/dev/video0"), &err(libc::EBUSY));
        let SourceError::Failed(msg) = e else {
            panic!("{e:?}")
        };
        assert!(msg.contains("another program is using the camera"), "{msg}");
        let e = stream_error(
            Path::new("/dev/video0"),
            "VIDIOC_REQBUFS",
            &err(libc::EBUSY),
        );
        assert!(e.to_string().contains("another program"), "{e}");
    }

    #[test]
    fn permission_problem_says_what_to_do() {
        let e = open_error(Path::new("/dev/video0"), &err(libc::EACCES));
        assert!(e.to_string().contains("'video' group"), "{e}");
    }

    #[test]
    fn vanishing_or_stalling_while_streaming_is_unavailable() {
        let p = Path::new("/dev/video0");
        for code in [libc::ENODEV, libc::EIO] {
            assert!(matches!(
                stream_error(p, "VIDIOC_DQBUF", &err(code)),
                SourceError::Unavailable(_)
            ));
        }
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "VIDIOC_DQBUF");
        assert!(matches!(
            stream_error(p, "2 s", &timeout),
            SourceError::Unavailable(_)
        ));
        assert!(matches!(
            stream_error(p, "VIDIOC_DQBUF", &err(libc::EINVAL)),
            SourceError::Failed(_)
        ));
    }

    #[test]
    fn opening_a_missing_node_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let e = open(&dir.path().join("video0")).err().unwrap();
        assert!(matches!(e, SourceError::Unavailable(_)), "{e:?}");
    }

    #[test]
    fn node_kinds_follow_the_capability_flags() {
        assert_eq!(
            NodeKind::of(CapFlags::VIDEO_CAPTURE | CapFlags::STREAMING),
            NodeKind::Capture
        );
        assert_eq!(
            NodeKind::of(CapFlags::META_CAPTURE | CapFlags::STREAMING),
            NodeKind::Metadata
        );
        assert_eq!(
            NodeKind::of(CapFlags::VIDEO_M2M_MPLANE | CapFlags::VIDEO_CAPTURE_MPLANE),
            NodeKind::MemoryToMemory
        );
        assert_eq!(
            NodeKind::of(CapFlags::VIDEO_CAPTURE_MPLANE),
            NodeKind::MultiPlanar
        );
        assert_eq!(NodeKind::of(CapFlags::VIDEO_OUTPUT), NodeKind::Output);
    }

    #[test]
    fn driver_strings_stop_at_nul_and_survive_bad_utf8() {
        assert_eq!(c_text(b"uvcvideo\0junk"), "uvcvideo");
        assert_eq!(c_text(b"no nul"), "no nul");
        // A multi-byte character cut at the field's end.
        assert_eq!(c_text(&[b'C', b'a', b'm', 0xC3]), "Cam\u{FFFD}");
    }

    #[test]
    fn a_regular_file_is_not_a_capture_device() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("video0");
        std::fs::write(&path, b"not a camera").unwrap();
        let dev = open(&path).unwrap();
        let e = check_capture(&path, &dev).unwrap_err();
        assert!(matches!(e, SourceError::Failed(_)), "{e:?}");
        assert!(e.to_string().contains("VIDIOC_QUERYCAP"), "{e}");
    }
}
