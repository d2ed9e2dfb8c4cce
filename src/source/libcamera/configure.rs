//! Choosing the stream: a pixel format the encoder takes, the requested size, JPEG's colour
//! space, and the frame rate through `FrameDurationLimits`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ::libcamera::camera::{ActiveCamera, CameraConfiguration};
use ::libcamera::color_space::ColorSpace;
use ::libcamera::control::ControlEntry;
use ::libcamera::controls;
use ::libcamera::geometry::Size;
use ::libcamera::pixel_format::PixelFormat;
use ::libcamera::stream::StreamRole;

use super::LibcameraConfig;
use crate::source::encode::YuvFormat;
use crate::source::SourceError;

/// Pixel formats we encode, best first: YUV420 is what the Raspberry Pi ISP produces natively.
const PREFERRED: [YuvFormat; 5] = [
    YuvFormat::I420,
    YuvFormat::Nv12,
    YuvFormat::Yv12,
    YuvFormat::Nv21,
    YuvFormat::Yuyv,
];

// Built from the fourcc rather than `libcamera::formats::*`: libcamera-rs 0.7.0 generates that
// module by parsing `formats.h` for `constexpr PixelFormat NAME(`, but libcamera 0.4's header
// writes `NAME{`, which leaves the module empty there. libcamera's formats are DRM fourccs,
// which for these YUV layouts are the same four characters as V4L2's.
fn pixel_format(format: YuvFormat) -> PixelFormat {
    PixelFormat::new(u32::from_le_bytes(format.fourcc()), 0)
}

fn yuv_format(f: PixelFormat) -> Option<YuvFormat> {
    if f.modifier() != 0 {
        return None;
    }
    YuvFormat::from_fourcc(f.fourcc().to_le_bytes())
}

/// Generates a configuration for one stream in a format we can encode, at the requested size.
pub(super) fn configure(
    camera: &ActiveCamera<'_>,
    cfg: &LibcameraConfig,
) -> Result<(CameraConfiguration, YuvFormat), SourceError> {
    let (mut config, role) = camera
        .generate_first_supported_configuration(&[
            StreamRole::VideoRecording,
            StreamRole::ViewFinder,
        ])
        .ok_or_else(|| {
            SourceError::Failed(format!(
                "camera {} offers neither a video nor a viewfinder stream",
                cfg.camera
            ))
        })?;
    let offered: Vec<PixelFormat> = config
        .get(0)
        .map(|sc| sc.formats().pixel_formats().into_iter().collect())
        .unwrap_or_default();
    let candidates: Vec<YuvFormat> = PREFERRED
        .into_iter()
        .filter(|f| offered.is_empty() || offered.contains(&pixel_format(*f)))
        .collect();
    for format in candidates {
        {
            let mut sc = config
                .get_mut(0)
                .ok_or_else(|| SourceError::Failed("configuration without a stream".into()))?;
            sc.set_pixel_format(pixel_format(format));
            sc.set_size(Size {
                width: cfg.width,
                height: cfg.height,
            });
            // JPEG's own colour space (full-range BT.601); libcamera adjusts it if it must.
            sc.set_color_space(Some(ColorSpace::sycc()));
        }
        let status = config.validate();
        if status.is_invalid() {
            continue;
        }
        let got = config.get(0).map(|sc| sc.get_pixel_format());
        if let Some(format) = got.and_then(yuv_format) {
            if status.is_adjusted() {
                tracing::debug!(role = ?role, "libcamera adjusted the requested configuration");
            }
            return Ok((config, format));
        }
    }
    let names: Vec<String> = offered.iter().map(|f| f.to_string()).collect();
    Err(SourceError::Failed(format!(
        "camera {} offers no YUV format camcast encodes (offered: {})",
        cfg.camera,
        names.join(", ")
    )))
}

/// The frame duration to request, in microseconds, and the frame rate it gives, clamped to the
/// camera's `FrameDurationLimits` range. `None` when the camera has no such control.
pub(super) fn frame_rate_controls(camera: &ActiveCamera<'_>, fps: f64) -> Option<(i64, f64)> {
    if fps.is_nan() || fps <= 0.0 {
        return None;
    }
    let info = camera
        .controls()
        .find(controls::FrameDurationLimits::ID)
        .ok()?;
    // ControlInfo::min/max unwrap inside libcamera-rs; an odd value type must not fail start.
    let (lo, hi) = catch_unwind(AssertUnwindSafe(|| {
        (
            i64::try_from(info.min()).ok(),
            i64::try_from(info.max()).ok(),
        )
    }))
    .unwrap_or((None, None));
    let wanted = (1e6 / fps).round() as i64;
    let mut duration = wanted.max(1);
    if let Some(lo) = lo.filter(|&v| v > 0) {
        duration = duration.max(lo);
    }
    if let Some(hi) = hi.filter(|&v| v > 0) {
        duration = duration.min(hi);
    }
    // Rounded for display: 33333 us is "30 fps", not 30.0003.
    Some((duration, (1e9 / duration as f64).round() / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixel_formats_round_trip_through_fourccs() {
        for format in YuvFormat::ALL {
            assert_eq!(yuv_format(pixel_format(format)), Some(format));
        }
        let mjpeg = PixelFormat::new(u32::from_le_bytes(*b"MJPG"), 0);
        assert_eq!(yuv_format(mjpeg), None);
        let tiled = PixelFormat::new(u32::from_le_bytes(*b"NV12"), 1);
        assert_eq!(
            yuv_format(tiled),
            None,
            "a modifier is a layout we do not read"
        );
    }
}
