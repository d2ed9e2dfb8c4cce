//! Raw camera frames to JPEG. YUYV (packed 4:2:2) and NV12 (semi-planar 4:2:0) are encoded once
//! per frame by libjpeg-turbo straight from YUV planes: no RGB round trip, which would cost two
//! colour conversions and lose precision. The plane buffers are allocated once per stream and
//! reused; the only per-frame allocation is the frame's own `Bytes`.

use std::fmt;

use bytes::Bytes;

/// Raw layouts the encoder takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawFormat {
    /// Y0 U Y1 V per pair of pixels.
    Yuyv,
    /// A Y plane, then one plane of interleaved U V at half width and half height.
    Nv12,
}

impl fmt::Display for RawFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RawFormat::Yuyv => "YUYV",
            RawFormat::Nv12 => "NV12",
        })
    }
}

/// Geometry of one raw frame as the driver lays it out in its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawLayout {
    pub format: RawFormat,
    pub width: usize,
    pub height: usize,
    /// Bytes from one row to the next (V4L2 `bytesperline`), for every plane.
    pub stride: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("unusable {format} layout {width}x{height}, {stride} bytes per line: {why}")]
    Layout {
        format: RawFormat,
        width: u32,
        height: u32,
        stride: u32,
        why: &'static str,
    },
    #[error("short {format} frame: {got} bytes, {width}x{height} needs {need}")]
    Short {
        format: RawFormat,
        width: usize,
        height: usize,
        got: usize,
        need: usize,
    },
    #[error("libjpeg-turbo: {0}")]
    Encoder(#[from] turbojpeg::Error),
}

impl RawLayout {
    /// Validates the driver's geometry. `bytesperline` 0 means tightly packed.
    pub fn new(
        format: RawFormat,
        width: u32,
        height: u32,
        bytesperline: u32,
    ) -> Result<Self, ConvertError> {
        let fail = |why| ConvertError::Layout {
            format,
            width,
            height,
            stride: bytesperline,
            why,
        };
        // Chroma is shared by pixel pairs (and row pairs for NV12); every camera mode is even.
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(fail("width and height must be even and non-zero"));
        }
        let (w, h) = (width as usize, height as usize);
        let row = match format {
            RawFormat::Yuyv => w.checked_mul(2).ok_or_else(|| fail("too large"))?,
            RawFormat::Nv12 => w,
        };
        let stride = match bytesperline as usize {
            0 => row,
            s if s < row => return Err(fail("bytes per line shorter than a row")),
            s => s,
        };
        let layout = RawLayout {
            format,
            width: w,
            height: h,
            stride,
        };
        layout
            .checked_frame_len()
            .ok_or_else(|| fail("too large"))?;
        Ok(layout)
    }

    /// Bytes a complete frame occupies in the buffer.
    pub fn frame_len(&self) -> usize {
        self.checked_frame_len().unwrap_or(usize::MAX)
    }

    fn checked_frame_len(&self) -> Option<usize> {
        let rows = match self.format {
            RawFormat::Yuyv => self.height,
            RawFormat::Nv12 => self.height + self.height / 2,
        };
        self.stride.checked_mul(rows)
    }

    fn subsamp(&self) -> turbojpeg::Subsamp {
        match self.format {
            RawFormat::Yuyv => turbojpeg::Subsamp::Sub2x1,
            RawFormat::Nv12 => turbojpeg::Subsamp::Sub2x2,
        }
    }

    /// Width and height of each chroma plane.
    fn chroma_size(&self) -> (usize, usize) {
        match self.format {
            RawFormat::Yuyv => (self.width / 2, self.height),
            RawFormat::Nv12 => (self.width / 2, self.height / 2),
        }
    }
}

/// Encodes raw frames of one layout to JPEG, reusing its buffers from frame to frame.
pub struct RawEncoder {
    layout: RawLayout,
    compressor: turbojpeg::Compressor,
    /// Deinterleaved luma (YUYV only: NV12's Y plane is used in place).
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    /// Encoder output; each frame copies out only its actual length.
    scratch: Vec<u8>,
}

impl RawEncoder {
    pub fn new(layout: RawLayout, quality: u8) -> Result<Self, ConvertError> {
        let mut compressor = turbojpeg::Compressor::new()?;
        compressor.set_quality(i32::from(quality.clamp(1, 100)))?;
        // buf_len depends on the subsampling, so set it first.
        compressor.set_subsamp(layout.subsamp())?;
        let scratch = vec![0; compressor.buf_len(layout.width, layout.height)?];
        let (cw, ch) = layout.chroma_size();
        let luma = match layout.format {
            RawFormat::Yuyv => layout.width * layout.height,
            RawFormat::Nv12 => 0,
        };
        Ok(RawEncoder {
            layout,
            compressor,
            y: vec![0; luma],
            u: vec![0; cw * ch],
            v: vec![0; cw * ch],
            scratch,
        })
    }

    pub fn layout(&self) -> RawLayout {
        self.layout
    }

    /// Encodes one frame (the used part of a driver buffer) to JPEG.
    pub fn encode(&mut self, frame: &[u8]) -> Result<Bytes, ConvertError> {
        let l = self.layout;
        if frame.len() < l.frame_len() {
            return Err(ConvertError::Short {
                format: l.format,
                width: l.width,
                height: l.height,
                got: frame.len(),
                need: l.frame_len(),
            });
        }
        let (cw, _) = l.chroma_size();
        let (y_plane, y_stride) = match l.format {
            RawFormat::Yuyv => {
                yuyv_to_i422(
                    frame,
                    l.stride,
                    l.width,
                    &mut self.y,
                    &mut self.u,
                    &mut self.v,
                );
                (&self.y[..], l.width)
            }
            RawFormat::Nv12 => {
                let (y, uv) = frame.split_at(l.stride * l.height);
                split_nv12_chroma(uv, l.stride, l.width, &mut self.u, &mut self.v);
                (y, l.stride)
            }
        };
        let planes = turbojpeg::YuvPlanesImage {
            y_plane,
            u_plane: &self.u[..],
            v_plane: &self.v[..],
            width: l.width,
            height: l.height,
            y_stride,
            u_stride: cw,
            v_stride: cw,
            subsamp: l.subsamp(),
        };
        let len = self
            .compressor
            .compress_yuv_planes_to_slice(&planes, &mut self.scratch)?;
        Ok(Bytes::copy_from_slice(&self.scratch[..len]))
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
        let pairs = src_row
            .chunks_exact(4)
            .zip(y_row.chunks_exact_mut(2))
            .zip(u_row.iter_mut().zip(v_row.iter_mut()));
        for ((px, y2), (u1, v1)) in pairs {
            y2[0] = px[0];
            *u1 = px[1];
            y2[1] = px[2];
            *v1 = px[3];
        }
    }
}

/// Splits NV12's interleaved U V rows into separate half-width planes.
fn split_nv12_chroma(uv: &[u8], stride: usize, width: usize, u: &mut [u8], v: &mut [u8]) {
    let rows = uv.chunks(stride).zip(
        u.chunks_exact_mut(width / 2)
            .zip(v.chunks_exact_mut(width / 2)),
    );
    for (src_row, (u_row, v_row)) in rows {
        for (pair, (u1, v1)) in src_row
            .chunks_exact(2)
            .zip(u_row.iter_mut().zip(v_row.iter_mut()))
        {
            *u1 = pair[0];
            *v1 = pair[1];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAD: u8 = 0xEE;

    /// Smooth test picture: luma ramps both ways, chroma ramps differently per plane.
    fn luma(x: usize, y: usize) -> u8 {
        (16 + x * 2 + y * 3).min(235) as u8
    }
    fn cb(x: usize, y: usize) -> u8 {
        (60 + x * 3 + y).min(240) as u8
    }
    fn cr(x: usize, y: usize) -> u8 {
        (200 - x * 2 - y).max(16) as u8
    }

    /// A YUYV frame with `extra` bytes of padding (PAD) at the end of each row.
    fn yuyv_frame(w: usize, h: usize, extra: usize) -> Vec<u8> {
        let mut f = Vec::new();
        for y in 0..h {
            for xc in 0..w / 2 {
                f.extend_from_slice(&[luma(2 * xc, y), cb(xc, y), luma(2 * xc + 1, y), cr(xc, y)]);
            }
            f.extend(std::iter::repeat_n(PAD, extra));
        }
        f
    }

    fn nv12_frame(w: usize, h: usize, extra: usize) -> Vec<u8> {
        let mut f = Vec::new();
        for y in 0..h {
            f.extend((0..w).map(|x| luma(x, y)));
            f.extend(std::iter::repeat_n(PAD, extra));
        }
        for yc in 0..h / 2 {
            for xc in 0..w / 2 {
                f.extend_from_slice(&[cb(xc, yc), cr(xc, yc)]);
            }
            f.extend(std::iter::repeat_n(PAD, extra));
        }
        f
    }

    /// Decodes to YUV planes at the JPEG's own subsampling: (Y, U, V, chroma width).
    fn decode_planes(jpeg: &[u8]) -> (turbojpeg::Subsamp, Vec<u8>, Vec<u8>, Vec<u8>, usize, usize) {
        let img = turbojpeg::decompress_to_yuv(jpeg).expect("decodable JPEG");
        let (w, h) = (img.width, img.height);
        let (cw, ch) = match img.subsamp {
            turbojpeg::Subsamp::Sub2x1 => (w / 2, h),
            turbojpeg::Subsamp::Sub2x2 => (w / 2, h / 2),
            other => panic!("unexpected subsampling {other:?}"),
        };
        // Row alignment is 4 and every test width is a multiple of 8: planes are packed.
        let p = img.pixels;
        let (y, rest) = p.split_at(w * h);
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

    fn max_error(got: &[u8], want: impl Iterator<Item = u8>) -> u8 {
        got.iter()
            .zip(want)
            .map(|(a, b)| a.abs_diff(b))
            .max()
            .unwrap()
    }

    #[test]
    fn yuyv_deinterleaves_exactly_and_skips_row_padding() {
        let (w, h) = (4, 2);
        let frame = yuyv_frame(w, h, 4);
        let (mut y, mut u, mut v) = (vec![0; 8], vec![0; 4], vec![0; 4]);
        yuyv_to_i422(&frame, w * 2 + 4, w, &mut y, &mut u, &mut v);
        let want_y: Vec<u8> = (0..h)
            .flat_map(|r| (0..w).map(move |c| luma(c, r)))
            .collect();
        assert_eq!(y, want_y);
        assert_eq!(u, [cb(0, 0), cb(1, 0), cb(0, 1), cb(1, 1)]);
        assert_eq!(v, [cr(0, 0), cr(1, 0), cr(0, 1), cr(1, 1)]);
    }

    #[test]
    fn nv12_chroma_splits_exactly_and_skips_row_padding() {
        let (w, h) = (4, 4);
        let frame = nv12_frame(w, h, 2);
        let stride = w + 2;
        let (mut u, mut v) = (vec![0; 4], vec![0; 4]);
        split_nv12_chroma(&frame[stride * h..], stride, w, &mut u, &mut v);
        assert_eq!(u, [cb(0, 0), cb(1, 0), cb(0, 1), cb(1, 1)]);
        assert_eq!(v, [cr(0, 0), cr(1, 0), cr(0, 1), cr(1, 1)]);
    }

    #[test]
    fn yuyv_gradient_encodes_to_a_422_jpeg_with_the_same_values() {
        let (w, h, extra) = (64, 32, 16);
        let layout = RawLayout::new(RawFormat::Yuyv, 64, 32, (w * 2 + extra) as u32).unwrap();
        let mut enc = RawEncoder::new(layout, 95).unwrap();
        let jpeg = enc.encode(&yuyv_frame(w, h, extra)).unwrap();
        let (subsamp, y, u, v, dw, dh) = decode_planes(&jpeg);
        assert_eq!((dw, dh, subsamp), (w, h, turbojpeg::Subsamp::Sub2x1));
        let grid = |cw: usize, ch: usize| (0..ch).flat_map(move |r| (0..cw).map(move |c| (c, r)));
        assert!(max_error(&y, grid(w, h).map(|(x, r)| luma(x, r))) <= 4);
        assert!(max_error(&u, grid(w / 2, h).map(|(x, r)| cb(x, r))) <= 4);
        // Row padding (0xEE) leaking into the picture would break these bounds.
        assert!(max_error(&v, grid(w / 2, h).map(|(x, r)| cr(x, r))) <= 4);
    }

    #[test]
    fn nv12_gradient_encodes_to_a_420_jpeg_with_the_same_values() {
        let (w, h, extra) = (64, 32, 8);
        let layout = RawLayout::new(RawFormat::Nv12, 64, 32, (w + extra) as u32).unwrap();
        let mut enc = RawEncoder::new(layout, 95).unwrap();
        let jpeg = enc.encode(&nv12_frame(w, h, extra)).unwrap();
        let (subsamp, y, u, v, dw, dh) = decode_planes(&jpeg);
        assert_eq!((dw, dh, subsamp), (w, h, turbojpeg::Subsamp::Sub2x2));
        let grid = |cw: usize, ch: usize| (0..ch).flat_map(move |r| (0..cw).map(move |c| (c, r)));
        assert!(max_error(&y, grid(w, h).map(|(x, r)| luma(x, r))) <= 4);
        assert!(max_error(&u, grid(w / 2, h / 2).map(|(x, r)| cb(x, r))) <= 4);
        assert!(max_error(&v, grid(w / 2, h / 2).map(|(x, r)| cr(x, r))) <= 4);
    }

    #[test]
    fn the_encoder_is_reused_across_frames() {
        let layout = RawLayout::new(RawFormat::Yuyv, 32, 16, 0).unwrap();
        let mut enc = RawEncoder::new(layout, 80).unwrap();
        let grey = vec![128u8; layout.frame_len()];
        let dark = vec![16u8; layout.frame_len()];
        let a = enc.encode(&grey).unwrap();
        let planes = (enc.y.as_ptr(), enc.u.as_ptr(), enc.scratch.as_ptr());
        let b = enc.encode(&dark).unwrap();
        assert_ne!(a, b, "different frames, different JPEGs");
        assert_eq!(
            planes,
            (enc.y.as_ptr(), enc.u.as_ptr(), enc.scratch.as_ptr())
        );
        let y = decode_planes(&b).1;
        assert!(y.iter().all(|&p| p.abs_diff(16) <= 2));
    }

    #[test]
    fn short_frames_are_errors_not_panics() {
        let layout = RawLayout::new(RawFormat::Nv12, 32, 16, 40).unwrap();
        assert_eq!(layout.frame_len(), 40 * 24);
        let mut enc = RawEncoder::new(layout, 80).unwrap();
        let err = enc.encode(&vec![0; 40 * 24 - 1]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "short NV12 frame: 959 bytes, 32x16 needs 960"
        );
        assert!(enc.encode(&[]).is_err());
    }

    #[test]
    fn bad_layouts_are_rejected() {
        let odd = RawLayout::new(RawFormat::Yuyv, 33, 16, 0).unwrap_err();
        assert!(odd.to_string().contains("must be even"), "{odd}");
        let narrow = RawLayout::new(RawFormat::Yuyv, 32, 16, 63).unwrap_err();
        assert!(
            narrow.to_string().contains("shorter than a row"),
            "{narrow}"
        );
        assert!(RawLayout::new(RawFormat::Nv12, 0, 16, 0).is_err());
        assert_eq!(
            RawLayout::new(RawFormat::Yuyv, 32, 16, 0).unwrap().stride,
            64
        );
    }
}
