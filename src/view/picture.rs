//! JPEG → window pixels, and the window's first size.

/// The window's pixel layout: one `u32` per pixel, `0x00RRGGBB`.
pub type Pixel = u32;

/// libjpeg-turbo output whose bytes, read as native-endian `u32`s, are `0x00RRGGBB`.
#[cfg(target_endian = "little")]
const NATIVE_0RGB: turbojpeg::PixelFormat = turbojpeg::PixelFormat::BGRX;
#[cfg(target_endian = "big")]
const NATIVE_0RGB: turbojpeg::PixelFormat = turbojpeg::PixelFormat::XRGB;

/// The most pixels a frame may have: the largest size a camcast camera can be set to send
/// (8192x8192, see `config`'s frame size), 256 MiB decoded. A JPEG header from a rogue camera
/// can claim up to 65500x65500 (libjpeg's own limit; 16 GiB decoded); it is refused before anything is allocated.
pub const MAX_PIXELS: usize = 8192 * 8192;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "picture claims {width}x{height}, more than the {MAX_PIXELS} pixels camcast-view decodes"
    )]
    TooLarge { width: usize, height: usize },
    #[error(transparent)]
    Jpeg(#[from] turbojpeg::Error),
}

/// Decodes JPEGs straight into a reused `0x00RRGGBB` buffer (no per-pixel conversion pass).
pub struct Decoder {
    inner: turbojpeg::Decompressor,
    pixels: Vec<Pixel>,
}

/// A decoded picture, borrowed from the decoder until the next decode.
pub struct Picture<'a> {
    pub width: usize,
    pub height: usize,
    pub pixels: &'a [Pixel],
}

impl Decoder {
    pub fn new() -> Result<Self, turbojpeg::Error> {
        Ok(Decoder {
            inner: turbojpeg::Decompressor::new()?,
            pixels: Vec::new(),
        })
    }

    /// The header is read and its size checked before anything is allocated for the pixels.
    pub fn decode(&mut self, jpeg: &[u8]) -> Result<Picture<'_>, DecodeError> {
        let header = self.inner.read_header(jpeg)?;
        let (width, height) = (header.width, header.height);
        let pixels = width
            .checked_mul(height)
            .filter(|&n| n <= MAX_PIXELS)
            .ok_or(DecodeError::TooLarge { width, height })?;
        self.pixels.resize(pixels, 0);
        let image = turbojpeg::Image {
            pixels: bytemuck::cast_slice_mut::<Pixel, u8>(&mut self.pixels),
            width,
            pitch: width * 4,
            height,
            format: NATIVE_0RGB,
        };
        self.inner.decompress(jpeg, image)?;
        Ok(Picture {
            width,
            height,
            pixels: &self.pixels,
        })
    }
}

/// The largest size with the picture's aspect ratio that fits in `max`, never enlarging.
/// Used for the window's first size: a 1080p camera opens a window that fits the screen.
pub fn fit(picture: (usize, usize), max: (usize, usize)) -> (usize, usize) {
    let (w, h) = (picture.0.max(1), picture.1.max(1));
    if w <= max.0 && h <= max.1 {
        return (w, h);
    }
    // Scale by the tighter of the two limits, in integers: min(max.0 / w, max.1 / h).
    if max.0 * h <= max.1 * w {
        (max.0, (h * max.0 / w).max(1))
    } else {
        ((w * max.1 / h).max(1), max.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG whose left half is pure red and right half pure blue.
    fn red_blue(width: usize, height: usize) -> Vec<u8> {
        let mut rgb = Vec::with_capacity(width * height * 3);
        for _ in 0..height {
            for x in 0..width {
                rgb.extend_from_slice(if x < width / 2 {
                    &[255, 0, 0]
                } else {
                    &[0, 0, 255]
                });
            }
        }
        let img = turbojpeg::Image {
            pixels: rgb.as_slice(),
            width,
            pitch: width * 3,
            height,
            format: turbojpeg::PixelFormat::RGB,
        };
        turbojpeg::compress(img, 95, turbojpeg::Subsamp::None)
            .unwrap()
            .to_vec()
    }

    fn channels(p: Pixel) -> (u8, u8, u8, u8) {
        let [a, r, g, b] = p.to_be_bytes();
        (a, r, g, b)
    }

    #[test]
    fn decodes_to_0rgb_at_size() {
        let mut d = Decoder::new().unwrap();
        let jpeg = red_blue(64, 32);
        let pic = d.decode(&jpeg).unwrap();
        assert_eq!((pic.width, pic.height, pic.pixels.len()), (64, 32, 64 * 32));
        let (_, r, g, b) = channels(pic.pixels[16 * 64 + 8]);
        assert!(r > 240 && g < 16 && b < 16, "left is red: {r} {g} {b}");
        let (_, r, g, b) = channels(pic.pixels[16 * 64 + 56]);
        assert!(r < 16 && g < 16 && b > 240, "right is blue: {r} {g} {b}");
    }

    #[test]
    fn decoder_follows_size_changes_and_rejects_garbage() {
        let mut d = Decoder::new().unwrap();
        assert_eq!(d.decode(&red_blue(32, 16)).unwrap().pixels.len(), 32 * 16);
        assert_eq!(d.decode(&red_blue(16, 48)).unwrap().height, 48);
        assert!(d.decode(b"\xff\xd8 nonsense").is_err());
    }

    /// `jpeg` with the frame size in its SOF0 segment replaced, as a lying camera would send.
    fn claiming(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
        let mut out = jpeg.to_vec();
        let sof = out
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("a baseline JPEG has SOF0");
        // FF C0, length (2), precision (1), height (2), width (2).
        out[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        out[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        out
    }

    #[test]
    fn a_header_claiming_a_huge_picture_is_refused_before_allocating() {
        let mut d = Decoder::new().unwrap();
        let small = red_blue(32, 16);
        let huge = claiming(&small, 65500, 65500);
        assert_eq!(turbojpeg::read_header(&huge).unwrap().width, 65500);
        let err = d.decode(&huge).err().expect("refused");
        assert!(
            matches!(
                err,
                DecodeError::TooLarge {
                    width: 65500,
                    height: 65500
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("65500x65500"), "{err}");
        assert_eq!(d.pixels.capacity(), 0, "nothing allocated for it");
        // Just over the limit is refused too; the decoder keeps working afterwards.
        assert!(d.decode(&claiming(&small, 8192, 8194)).is_err());
        assert_eq!(d.pixels.capacity(), 0);
        assert_eq!(d.decode(&small).unwrap().pixels.len(), 32 * 16);
    }

    #[test]
    fn fit_keeps_aspect_and_never_enlarges() {
        assert_eq!(fit((640, 480), (1280, 720)), (640, 480));
        assert_eq!(fit((1920, 1080), (1280, 720)), (1280, 720));
        assert_eq!(fit((2592, 1944), (1280, 720)), (960, 720));
        assert_eq!(fit((4000, 1000), (1280, 720)), (1280, 320));
        assert_eq!(fit((0, 0), (100, 100)), (1, 1));
    }
}
