//! The one CPU JPEG encoder, keyed by pixel format, for every source that delivers raw YUV:
//! V4L2 (YUYV, NV12), libcamera (YUV420, NV12, YVU420, NV21, YUYV) and the test pattern (I420).
//!
//! - libjpeg-turbo encodes straight from YUV planes: no RGB round trip, which would cost two
//!   colour conversions and lose precision.
//! - Planar frames (I420, YV12) are encoded in place from the driver's buffer, strides and all;
//!   interleaved chroma (NV12, NV21) and packed YUYV are first split into planes in buffers
//!   allocated once per stream. The only per-frame allocation is the frame's own `Bytes`.
//! - Every plane's length is checked before libjpeg-turbo sees it: the turbojpeg crate asserts
//!   (panics) on a short plane, and a short frame from a driver must cost that frame only.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::frame_pool::FramePool;

/// Raw YUV layouts, by the fourcc that V4L2 and libcamera (DRM) both give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YuvFormat {
    /// Packed 4:2:2: Y0 U Y1 V for each pair of pixels (fourcc YUYV).
    Yuyv,
    /// Semi-planar 4:2:0: a Y plane, then one plane of interleaved U V at half height (NV12).
    Nv12,
    /// As NV12 with V before U (NV21).
    Nv21,
    /// Planar 4:2:0: a Y plane, then U and V planes at half width and height (YU12, which
    /// libcamera calls YUV420).
    I420,
    /// As I420 with V before U (YV12, libcamera's YVU420).
    Yv12,
}

impl YuvFormat {
    pub const ALL: [YuvFormat; 5] = [
        YuvFormat::Yuyv,
        YuvFormat::Nv12,
        YuvFormat::Nv21,
        YuvFormat::I420,
        YuvFormat::Yv12,
    ];

    pub fn fourcc(self) -> [u8; 4] {
        match self {
            YuvFormat::Yuyv => *b"YUYV",
            YuvFormat::Nv12 => *b"NV12",
            YuvFormat::Nv21 => *b"NV21",
            YuvFormat::I420 => *b"YU12",
            YuvFormat::Yv12 => *b"YV12",
        }
    }

    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.fourcc() == fourcc)
    }

    /// The name libcamera's tools and logs use (V4L2's fourcc for YUYV, NV12 and NV21).
    pub fn name(self) -> &'static str {
        match self {
            YuvFormat::Yuyv => "YUYV",
            YuvFormat::Nv12 => "NV12",
            YuvFormat::Nv21 => "NV21",
            YuvFormat::I420 => "YUV420",
            YuvFormat::Yv12 => "YVU420",
        }
    }

    /// Planes in memory: 3, 2 or 1.
    pub fn plane_count(self) -> usize {
        match self {
            YuvFormat::I420 | YuvFormat::Yv12 => 3,
            YuvFormat::Nv12 | YuvFormat::Nv21 => 2,
            YuvFormat::Yuyv => 1,
        }
    }

    fn subsamp(self) -> turbojpeg::Subsamp {
        match self {
            YuvFormat::Yuyv => turbojpeg::Subsamp::Sub2x1,
            _ => turbojpeg::Subsamp::Sub2x2,
        }
    }
}

impl fmt::Display for YuvFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("unusable {format} layout {width}x{height}, {stride} bytes per line: {why}")]
    Layout {
        format: YuvFormat,
        width: u32,
        height: u32,
        stride: u32,
        why: &'static str,
    },
    #[error("short {format} frame: {got} bytes, {width}x{height} needs {need}")]
    ShortFrame {
        format: YuvFormat,
        width: usize,
        height: usize,
        got: usize,
        need: usize,
    },
    #[error("short {format} plane {index}: {got} bytes, {need} needed")]
    ShortPlane {
        format: YuvFormat,
        index: usize,
        got: usize,
        need: usize,
    },
    #[error("{got} plane(s) in the buffer, {format} has {need}")]
    PlaneCount {
        format: YuvFormat,
        got: usize,
        need: usize,
    },
    #[error("libjpeg-turbo: {0}")]
    Encoder(#[from] turbojpeg::Error),
}

/// One plane in memory: `rows` rows `stride` bytes apart, of which `row_bytes` are picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Plane {
    stride: usize,
    rows: usize,
    row_bytes: usize,
}

impl Plane {
    /// Bytes the plane needs: its last row need not be padded to the stride.
    fn min_len(&self) -> usize {
        self.stride * (self.rows - 1) + self.row_bytes
    }

    /// Bytes the plane occupies when another plane follows it in the same buffer.
    fn span(&self) -> usize {
        self.stride * self.rows
    }
}

/// A frame's format and geometry, as the driver reports it, checked once per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    format: YuvFormat,
    width: usize,
    height: usize,
    /// In memory order; only the first `format.plane_count()` are used.
    planes: [Plane; 3],
}

impl Layout {
    /// `stride` is the first plane's bytes per row (V4L2's `bytesperline`, libcamera's
    /// `stride`), 0 for tightly packed. As both V4L2 and libcamera lay frames out, the U and V
    /// planes of I420/YV12 have half of it and NV12/NV21's interleaved plane all of it.
    pub fn new(
        format: YuvFormat,
        width: u32,
        height: u32,
        stride: u32,
    ) -> Result<Self, EncodeError> {
        let fail = |why| EncodeError::Layout {
            format,
            width,
            height,
            stride,
            why,
        };
        // Chroma is shared by pixel pairs (and row pairs for 4:2:0); every camera mode is even.
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(fail("width and height must be even and non-zero"));
        }
        let (w, h) = (width as usize, height as usize);
        let row = match format {
            YuvFormat::Yuyv => w.checked_mul(2).ok_or_else(|| fail("too large"))?,
            _ => w,
        };
        let s = match stride as usize {
            0 => row,
            s if s < row => return Err(fail("bytes per line shorter than a row")),
            s if !s.is_multiple_of(2) && format.plane_count() == 3 => {
                return Err(fail(
                    "odd bytes per line: the chroma planes would have half of it",
                ))
            }
            s => s,
        };
        let luma = Plane {
            stride: s,
            rows: h,
            row_bytes: row,
        };
        let planes = match format {
            YuvFormat::Yuyv => [luma, Plane::default(), Plane::default()],
            YuvFormat::Nv12 | YuvFormat::Nv21 => {
                let uv = Plane {
                    stride: s,
                    rows: h / 2,
                    row_bytes: w,
                };
                [luma, uv, Plane::default()]
            }
            YuvFormat::I420 | YuvFormat::Yv12 => {
                let chroma = Plane {
                    stride: s / 2,
                    rows: h / 2,
                    row_bytes: w / 2,
                };
                [luma, chroma, chroma]
            }
        };
        let layout = Layout {
            format,
            width: w,
            height: h,
            planes,
        };
        layout
            .checked_frame_len()
            .ok_or_else(|| fail("too large"))?;
        Ok(layout)
    }

    pub fn format(&self) -> YuvFormat {
        self.format
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// The first plane's bytes per row.
    pub fn stride(&self) -> usize {
        self.planes[0].stride
    }

    /// Bytes a frame needs with all its planes back to back in one buffer (V4L2 single-planar
    /// formats): every plane but the last padded to its stride.
    pub fn frame_len(&self) -> usize {
        self.checked_frame_len().unwrap_or(usize::MAX)
    }

    fn checked_frame_len(&self) -> Option<usize> {
        let planes = self.used_planes();
        let (last, before) = planes.split_last()?;
        before.iter().try_fold(
            last.stride
                .checked_mul(last.rows - 1)?
                .checked_add(last.row_bytes)?,
            |sum, p| sum.checked_add(p.stride.checked_mul(p.rows)?),
        )
    }

    fn used_planes(&self) -> &[Plane] {
        &self.planes[..self.format.plane_count()]
    }

    /// The frame's planes out of `buffer` (one slice per plane, or one slice holding all of
    /// them back to back), each checked to be long enough. Unused entries are empty.
    fn split<'a>(&self, buffer: &[&'a [u8]]) -> Result<[&'a [u8]; 3], EncodeError> {
        let shapes = self.used_planes();
        let mut planes: [&[u8]; 3] = [&[]; 3];
        if let [whole] = buffer {
            if whole.len() < self.frame_len() {
                return Err(EncodeError::ShortFrame {
                    format: self.format,
                    width: self.width,
                    height: self.height,
                    got: whole.len(),
                    need: self.frame_len(),
                });
            }
            let mut rest: &[u8] = whole;
            for (plane, shape) in planes.iter_mut().zip(shapes) {
                let (this, tail) = rest.split_at(shape.span().min(rest.len()));
                *plane = this;
                rest = tail;
            }
        } else if buffer.len() == shapes.len() {
            for (index, ((plane, shape), given)) in
                planes.iter_mut().zip(shapes).zip(buffer).enumerate()
            {
                if given.len() < shape.min_len() {
                    return Err(EncodeError::ShortPlane {
                        format: self.format,
                        index,
                        got: given.len(),
                        need: shape.min_len(),
                    });
                }
                *plane = given;
            }
        } else {
            return Err(EncodeError::PlaneCount {
                format: self.format,
                got: buffer.len(),
                need: shapes.len(),
            });
        }
        Ok(planes)
    }
}

/// Encodes frames of one layout to JPEG, reusing its buffers from frame to frame.
pub struct Encoder {
    layout: Layout,
    compressor: turbojpeg::Compressor,
    /// Planes split out of interleaved frames: all three for YUYV, U and V for NV12/NV21,
    /// none for I420/YV12 (encoded in place).
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    /// Encoder output (sized for the worst case); each frame copies out only its actual
    /// length, into a buffer from `pool`.
    scratch: Vec<u8>,
    pool: FramePool,
    /// How long the last frame took, for the encode-time metric: measured here, the one
    /// place every source's encoding goes through.
    last_encode_time: Duration,
}

impl Encoder {
    /// `quality` is libjpeg-turbo's 1..=100 (clamped).
    pub fn new(layout: Layout, quality: u8) -> Result<Self, EncodeError> {
        let mut compressor = turbojpeg::Compressor::new()?;
        compressor.set_quality(i32::from(quality.clamp(1, 100)))?;
        // buf_len depends on the subsampling, so set it first.
        compressor.set_subsamp(layout.format.subsamp())?;
        let scratch = vec![0; compressor.buf_len(layout.width, layout.height)?];
        let (w, h) = (layout.width, layout.height);
        let (luma, chroma) = match layout.format {
            YuvFormat::Yuyv => (w * h, (w / 2) * h),
            YuvFormat::Nv12 | YuvFormat::Nv21 => (0, (w / 2) * (h / 2)),
            YuvFormat::I420 | YuvFormat::Yv12 => (0, 0),
        };
        Ok(Encoder {
            layout,
            compressor,
            y: vec![0; luma],
            u: vec![0; chroma],
            v: vec![0; chroma],
            scratch,
            pool: FramePool::default(),
            last_encode_time: Duration::ZERO,
        })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// How long the last [`encode`](Self::encode) or [`encode_planes`](Self::encode_planes)
    /// took, plane splitting included.
    pub fn last_encode_time(&self) -> Duration {
        self.last_encode_time
    }

    /// JPEG of one frame held in one buffer (the used part of a V4L2 buffer).
    pub fn encode(&mut self, frame: &[u8]) -> Result<Bytes, EncodeError> {
        self.encode_planes(&[frame])
    }

    /// JPEG of one frame given as one slice per plane (libcamera's mapped planes, the test
    /// pattern's canvas), or as a single slice holding all planes back to back.
    pub fn encode_planes(&mut self, buffer: &[&[u8]]) -> Result<Bytes, EncodeError> {
        let started = Instant::now();
        let jpeg = self.encode_planes_untimed(buffer);
        self.last_encode_time = started.elapsed();
        jpeg
    }

    fn encode_planes_untimed(&mut self, buffer: &[&[u8]]) -> Result<Bytes, EncodeError> {
        let l = self.layout;
        let planes = l.split(buffer)?;
        let (luma, chroma) = (l.planes[0], l.planes[1]);
        let (w, h) = (l.width, l.height);
        // (Y, its stride, U, V, their stride)
        let (y_plane, y_stride, u_plane, v_plane, c_stride) = match l.format {
            YuvFormat::I420 => (planes[0], luma.stride, planes[1], planes[2], chroma.stride),
            YuvFormat::Yv12 => (planes[0], luma.stride, planes[2], planes[1], chroma.stride),
            YuvFormat::Nv12 | YuvFormat::Nv21 => {
                let (u, v) = if l.format == YuvFormat::Nv12 {
                    (&mut self.u, &mut self.v)
                } else {
                    (&mut self.v, &mut self.u)
                };
                deinterleave_pairs(planes[1], chroma.stride, w, u, v);
                (planes[0], luma.stride, &self.u[..], &self.v[..], w / 2)
            }
            YuvFormat::Yuyv => {
                yuyv_to_i422(
                    planes[0],
                    luma.stride,
                    w,
                    &mut self.y,
                    &mut self.u,
                    &mut self.v,
                );
                (&self.y[..], w, &self.u[..], &self.v[..], w / 2)
            }
        };
        let image = turbojpeg::YuvPlanesImage {
            y_plane,
            u_plane,
            v_plane,
            width: w,
            height: h,
            y_stride,
            u_stride: c_stride,
            v_stride: c_stride,
            subsamp: l.format.subsamp(),
        };
        let len = self
            .compressor
            .compress_yuv_planes_to_slice(&image, &mut self.scratch)?;
        Ok(self.pool.gather(&[&self.scratch[..len]]))
    }
}

/// Splits packed YUYV rows into I422 planes (`y` is `width` wide, `u`/`v` half that, one row
/// per image row). Row padding beyond the pixels is ignored; rows stop where a plane is full.
fn yuyv_to_i422(src: &[u8], stride: usize, width: usize, y: &mut [u8], u: &mut [u8], v: &mut [u8]) {
    let rows = src.chunks(stride).zip(y.chunks_exact_mut(width)).zip(
        u.chunks_exact_mut(width / 2)
            .zip(v.chunks_exact_mut(width / 2)),
    );
    for ((src_row, y_row), (u_row, v_row)) in rows {
        let pixels = src_row
            .chunks_exact(4)
            .zip(y_row.chunks_exact_mut(2))
            .zip(u_row.iter_mut().zip(v_row.iter_mut()));
        for ((px, y2), (u1, v1)) in pixels {
            y2[0] = px[0];
            *u1 = px[1];
            y2[1] = px[2];
            *v1 = px[3];
        }
    }
}

/// Splits rows of interleaved chroma pairs (NV12's U V, or NV21's V U with `a`/`b` swapped by
/// the caller) into two half-width planes. Row padding is ignored.
fn deinterleave_pairs(src: &[u8], stride: usize, width: usize, a: &mut [u8], b: &mut [u8]) {
    let rows = src.chunks(stride).zip(
        a.chunks_exact_mut(width / 2)
            .zip(b.chunks_exact_mut(width / 2)),
    );
    for (src_row, (a_row, b_row)) in rows {
        for (pair, (a1, b1)) in src_row
            .chunks_exact(2)
            .zip(a_row.iter_mut().zip(b_row.iter_mut()))
        {
            *a1 = pair[0];
            *b1 = pair[1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAD: u8 = 0xEE;

    /// Smooth test picture: luma ramps both ways, chroma ramps differently per plane, so a
    /// swapped, shifted or padded-in value shows.
    fn luma(x: usize, y: usize) -> u8 {
        (16 + x * 2 + y * 3).min(235) as u8
    }
    fn cb(x: usize, y: usize) -> u8 {
        (60 + x * 3 + y).min(240) as u8
    }
    fn cr(x: usize, y: usize) -> u8 {
        (200 - x * 2 - y).max(16) as u8
    }

    /// A picture's planes in `format`, `extra` bytes of PAD at the end of every luma row (half
    /// that on I420/YV12's half-width chroma rows, as the layout says).
    struct Picture {
        y: fn(usize, usize) -> u8,
        u: fn(usize, usize) -> u8,
        v: fn(usize, usize) -> u8,
    }

    const GRADIENT: Picture = Picture {
        y: luma,
        u: cb,
        v: cr,
    };

    impl Picture {
        fn planes(&self, format: YuvFormat, w: usize, h: usize, extra: usize) -> Vec<Vec<u8>> {
            let pad = |row: &mut Vec<u8>, n: usize| row.extend(std::iter::repeat_n(PAD, n));
            let mut y_plane = Vec::new();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            match format {
                YuvFormat::Yuyv => {
                    for r in 0..h {
                        for c in 0..w / 2 {
                            y_plane.extend_from_slice(&[
                                (self.y)(2 * c, r),
                                (self.u)(c, r),
                                (self.y)(2 * c + 1, r),
                                (self.v)(c, r),
                            ]);
                        }
                        pad(&mut y_plane, extra);
                    }
                    return vec![y_plane];
                }
                _ => {
                    for r in 0..h {
                        y_plane.extend((0..w).map(|c| (self.y)(c, r)));
                        pad(&mut y_plane, extra);
                    }
                }
            }
            for r in 0..h / 2 {
                for c in 0..w / 2 {
                    let (u, v) = ((self.u)(c, r), (self.v)(c, r));
                    match format {
                        YuvFormat::Nv12 => a.extend_from_slice(&[u, v]),
                        YuvFormat::Nv21 => a.extend_from_slice(&[v, u]),
                        YuvFormat::I420 => (a.push(u), b.push(v)).1,
                        YuvFormat::Yv12 => (a.push(v), b.push(u)).1,
                        YuvFormat::Yuyv => unreachable!(),
                    }
                }
                if format.plane_count() == 2 {
                    pad(&mut a, extra);
                } else {
                    pad(&mut a, extra / 2);
                    pad(&mut b, extra / 2);
                }
            }
            if format.plane_count() == 2 {
                vec![y_plane, a]
            } else {
                vec![y_plane, a, b]
            }
        }
    }

    /// Decoded to YUV planes at the JPEG's own subsampling: (subsampling, Y, U, V, w, h).
    fn decode_yuv(jpeg: &[u8]) -> (turbojpeg::Subsamp, Vec<u8>, Vec<u8>, Vec<u8>, usize, usize) {
        let img = turbojpeg::decompress_to_yuv(jpeg).expect("decodable JPEG");
        let (w, h) = (img.width, img.height);
        let (cw, ch) = match img.subsamp {
            turbojpeg::Subsamp::Sub2x1 => (w / 2, h),
            turbojpeg::Subsamp::Sub2x2 => (w / 2, h / 2),
            other => panic!("unexpected subsampling {other:?}"),
        };
        // Row alignment is 4 and every test width is a multiple of 8: planes are packed.
        let (y, rest) = img.pixels.split_at(w * h);
        let (u, v) = rest.split_at(cw * ch);
        (
            img.subsamp,
            y.to_vec(),
            u.to_vec(),
            v[..cw * ch].to_vec(),
            w,
            h,
        )
    }

    fn decode_rgb(jpeg: &[u8]) -> turbojpeg::Image<Vec<u8>> {
        turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).expect("decodable JPEG")
    }

    fn max_error(got: &[u8], want: impl Iterator<Item = u8>) -> u8 {
        got.iter()
            .zip(want)
            .map(|(a, b)| a.abs_diff(b))
            .max()
            .unwrap()
    }

    fn grid(w: usize, h: usize) -> impl Iterator<Item = (usize, usize)> {
        (0..h).flat_map(move |r| (0..w).map(move |c| (c, r)))
    }

    /// Luma stride for a padded frame of `format`: odd padding where the format allows it.
    fn stride_with_padding(format: YuvFormat, w: usize, extra: usize) -> u32 {
        let row = if format == YuvFormat::Yuyv { 2 * w } else { w };
        (row + extra) as u32
    }

    fn padding_for(format: YuvFormat) -> usize {
        // I420/YV12 chroma rows get half the padding, so theirs is even; the others odd.
        if format.plane_count() == 3 {
            10
        } else {
            7
        }
    }

    #[test]
    fn every_format_encodes_a_gradient_with_the_same_values_from_padded_planes() {
        let (w, h) = (64, 32);
        for format in YuvFormat::ALL {
            let extra = padding_for(format);
            let layout =
                Layout::new(format, 64, 32, stride_with_padding(format, w, extra)).unwrap();
            let mut enc = Encoder::new(layout, 95).unwrap();
            let planes = GRADIENT.planes(format, w, h, extra);
            let slices: Vec<&[u8]> = planes.iter().map(Vec::as_slice).collect();
            // Separate planes, and the same frame as one contiguous buffer.
            let joined = planes.concat();
            for jpeg in [
                enc.encode_planes(&slices).unwrap(),
                enc.encode(&joined).unwrap(),
            ] {
                let (subsamp, y, u, v, dw, dh) = decode_yuv(&jpeg);
                assert_eq!((dw, dh), (w, h), "{format}");
                let ch = if format == YuvFormat::Yuyv {
                    assert_eq!(subsamp, turbojpeg::Subsamp::Sub2x1, "{format}");
                    h
                } else {
                    assert_eq!(subsamp, turbojpeg::Subsamp::Sub2x2, "{format}");
                    h / 2
                };
                // Row padding (0xEE) leaking in, or U and V swapped, would break these bounds.
                assert!(
                    max_error(&y, grid(w, h).map(|(x, r)| luma(x, r))) <= 4,
                    "{format} Y"
                );
                assert!(
                    max_error(&u, grid(w / 2, ch).map(|(x, r)| cb(x, r))) <= 4,
                    "{format} U"
                );
                assert!(
                    max_error(&v, grid(w / 2, ch).map(|(x, r)| cr(x, r))) <= 4,
                    "{format} V"
                );
            }
        }
    }

    #[test]
    fn red_decodes_red_in_every_format() {
        // BT.601 red: U low, V high. A chroma order mix-up would turn it blue.
        let red = Picture {
            y: |_, _| 82,
            u: |_, _| 90,
            v: |_, _| 240,
        };
        for format in YuvFormat::ALL {
            let layout = Layout::new(format, 16, 16, 0).unwrap();
            let mut enc = Encoder::new(layout, 95).unwrap();
            let planes = red.planes(format, 16, 16, 0);
            let slices: Vec<&[u8]> = planes.iter().map(Vec::as_slice).collect();
            let img = decode_rgb(&enc.encode_planes(&slices).unwrap());
            let (r, g, b) = (img.pixels[0], img.pixels[1], img.pixels[2]);
            assert!(r > 200 && g < 60 && b < 60, "{format}: {r} {g} {b}");
        }
    }

    #[test]
    fn yuyv_deinterleaves_exactly_and_skips_row_padding() {
        let (w, h) = (4, 2);
        let frame = &GRADIENT.planes(YuvFormat::Yuyv, w, h, 4)[0];
        let (mut y, mut u, mut v) = (vec![0; 8], vec![0; 4], vec![0; 4]);
        yuyv_to_i422(frame, w * 2 + 4, w, &mut y, &mut u, &mut v);
        let want_y: Vec<u8> = grid(w, h).map(|(c, r)| luma(c, r)).collect();
        assert_eq!(y, want_y);
        assert_eq!(u, [cb(0, 0), cb(1, 0), cb(0, 1), cb(1, 1)]);
        assert_eq!(v, [cr(0, 0), cr(1, 0), cr(0, 1), cr(1, 1)]);
    }

    #[test]
    fn interleaved_chroma_splits_exactly_and_skips_row_padding() {
        let (w, h) = (4, 4);
        let planes = GRADIENT.planes(YuvFormat::Nv12, w, h, 3);
        let (mut u, mut v) = (vec![0; 4], vec![0; 4]);
        deinterleave_pairs(&planes[1], w + 3, w, &mut u, &mut v);
        assert_eq!(u, [cb(0, 0), cb(1, 0), cb(0, 1), cb(1, 1)]);
        assert_eq!(v, [cr(0, 0), cr(1, 0), cr(0, 1), cr(1, 1)]);
    }

    #[test]
    fn the_encoder_is_reused_across_frames() {
        for format in [YuvFormat::Yuyv, YuvFormat::Nv12] {
            let layout = Layout::new(format, 32, 16, 0).unwrap();
            let mut enc = Encoder::new(layout, 80).unwrap();
            let grey = vec![128u8; layout.frame_len()];
            let dark = vec![16u8; layout.frame_len()];
            let a = enc.encode(&grey).unwrap();
            let buffers = (enc.y.as_ptr(), enc.u.as_ptr(), enc.scratch.as_ptr());
            let b = enc.encode(&dark).unwrap();
            assert_ne!(a, b, "different frames, different JPEGs");
            assert_eq!(
                buffers,
                (enc.y.as_ptr(), enc.u.as_ptr(), enc.scratch.as_ptr())
            );
            let y = decode_yuv(&b).1;
            assert!(y.iter().all(|&p| p.abs_diff(16) <= 2), "{format}");
        }
    }

    #[test]
    fn a_frame_needs_every_row_but_not_the_last_rows_padding() {
        // NV12, 32x16, 40 bytes per line: 16 luma rows of 40, then 7 chroma rows of 40 and a
        // last one of 32.
        let layout = Layout::new(YuvFormat::Nv12, 32, 16, 40).unwrap();
        assert_eq!(layout.frame_len(), 40 * 16 + 40 * 7 + 32);
        let mut enc = Encoder::new(layout, 80).unwrap();
        let err = enc.encode(&vec![0; 951]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "short NV12 frame: 951 bytes, 32x16 needs 952"
        );
        enc.encode(&vec![128; 952]).unwrap();
        assert!(enc.encode(&[]).is_err());
        // I420 with its three planes given apart: each is checked on its own.
        let layout = Layout::new(YuvFormat::I420, 32, 16, 40).unwrap();
        assert_eq!(layout.frame_len(), 40 * 16 + 20 * 8 + 20 * 7 + 16);
        let mut enc = Encoder::new(layout, 80).unwrap();
        let (y, c) = (vec![128; 40 * 16], vec![128; 20 * 7 + 16]);
        enc.encode_planes(&[&y, &c, &c]).unwrap();
        let err = enc.encode_planes(&[&y, &c, &c[1..]]).unwrap_err();
        assert!(
            matches!(
                err,
                EncodeError::ShortPlane {
                    index: 2,
                    got: 155,
                    need: 156,
                    ..
                }
            ),
            "{err}"
        );
        let err = enc.encode_planes(&[&y, &c]).unwrap_err();
        assert_eq!(err.to_string(), "2 plane(s) in the buffer, YUV420 has 3");
    }

    #[test]
    fn no_buffer_length_panics() {
        // Whatever a driver hands over: an error or a JPEG, never a panic inside turbojpeg.
        for format in YuvFormat::ALL {
            let layout = Layout::new(format, 16, 8, 0).unwrap();
            let mut enc = Encoder::new(layout, 50).unwrap();
            let frame = vec![128u8; layout.frame_len() + 64];
            for len in 0..frame.len() {
                let whole = enc.encode(&frame[..len]);
                assert_eq!(whole.is_ok(), len >= layout.frame_len(), "{format} {len}");
                let pieces = [&frame[..len / 3], &frame[..len / 2], &frame[..len]];
                for count in 1..=3 {
                    let _ = enc.encode_planes(&pieces[..count]);
                }
            }
        }
    }

    #[test]
    fn bad_layouts_are_rejected() {
        let odd = Layout::new(YuvFormat::Yuyv, 33, 16, 0).unwrap_err();
        assert!(odd.to_string().contains("must be even"), "{odd}");
        let narrow = Layout::new(YuvFormat::Yuyv, 32, 16, 63).unwrap_err();
        assert!(
            narrow.to_string().contains("shorter than a row"),
            "{narrow}"
        );
        assert!(Layout::new(YuvFormat::Nv12, 0, 16, 0).is_err());
        assert!(Layout::new(YuvFormat::I420, 32, 16, 33).is_err());
        assert!(
            Layout::new(YuvFormat::Nv12, 32, 16, 33).is_ok(),
            "odd luma stride is fine"
        );
        let huge = Layout::new(YuvFormat::Nv12, u32::MAX - 1, u32::MAX - 1, u32::MAX).unwrap_err();
        assert!(huge.to_string().contains("too large"), "{huge}");
        assert_eq!(
            Layout::new(YuvFormat::Yuyv, 32, 16, 0).unwrap().stride(),
            64
        );
        assert_eq!(
            Layout::new(YuvFormat::Nv12, 32, 16, 0).unwrap().frame_len(),
            32 * 24
        );
    }

    #[test]
    fn fourccs_round_trip() {
        for format in YuvFormat::ALL {
            assert_eq!(YuvFormat::from_fourcc(format.fourcc()), Some(format));
        }
        assert_eq!(YuvFormat::from_fourcc(*b"MJPG"), None);
    }
}
