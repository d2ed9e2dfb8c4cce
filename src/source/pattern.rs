//! The built-in test pattern: scrolling colour bars, a bouncing box and the frame number in
//! large seven-segment digits, rendered as I420 and encoded straight from the YUV planes by the
//! one encoder ([`super::encode`]). It is the default source on a machine without a camera and
//! exercises the same encode path a raw (YUYV/NV12) camera uses.

use std::time::{Instant, SystemTime};

use super::encode::{Encoder, Layout, YuvFormat};
use super::{pacer::Pacer, CaptureSettings, FrameSource, Mode, SourceError};
use crate::frame::{CapturedFrame, FrameOrigin};

/// Colour bars in (Y, U, V), BT.601 limited range: white, yellow, cyan, green, magenta, red,
/// blue, black.
pub const BARS: [(u8, u8, u8); 8] = [
    (235, 128, 128),
    (210, 16, 146),
    (170, 166, 16),
    (145, 54, 34),
    (106, 202, 222),
    (81, 90, 240),
    (41, 240, 110),
    (16, 128, 128),
];

/// Horizontal scroll speed of the bars, in pixels per frame.
const SCROLL_PX_PER_FRAME: usize = 4;

pub struct TestPattern {
    cfg: CaptureSettings,
    canvas: Canvas,
    running: Option<Running>,
}

struct Running {
    pacer: Pacer,
    encoder: Encoder,
}

impl TestPattern {
    pub fn new(cfg: CaptureSettings) -> Self {
        TestPattern {
            canvas: Canvas::new(cfg.width as usize, cfg.height as usize),
            cfg,
            running: None,
        }
    }
}

impl FrameSource for TestPattern {
    fn name(&self) -> String {
        "test-pattern".into()
    }

    fn start(&mut self) -> Result<Mode, SourceError> {
        let encoder = Layout::new(YuvFormat::I420, self.cfg.width, self.cfg.height, 0)
            .and_then(|layout| Encoder::new(layout, self.cfg.quality))
            .map_err(|e| SourceError::Failed(format!("test pattern: {e}")))?;
        self.running = Some(Running {
            pacer: Pacer::new(self.cfg.fps, Instant::now()),
            encoder,
        });
        Ok(Mode {
            width: self.cfg.width,
            height: self.cfg.height,
            fps: self.cfg.fps,
            pixel_format: "I420 (test pattern)".into(),
        })
    }

    fn next_frame(&mut self) -> Result<CapturedFrame, SourceError> {
        let run = self
            .running
            .as_mut()
            .ok_or_else(|| SourceError::Failed("next_frame before start".into()))?;
        let tick = run.pacer.next(Instant::now());
        std::thread::sleep(tick.due.saturating_duration_since(Instant::now()));
        let captured_at = SystemTime::now();
        self.canvas.draw(tick.index);
        let jpeg = run
            .encoder
            .encode_planes(&self.canvas.planes())
            .map_err(|e| SourceError::BadFrame(format!("JPEG encode failed: {e}")))?;
        Ok(CapturedFrame {
            jpeg,
            captured_at,
            width: self.cfg.width,
            height: self.cfg.height,
            origin: FrameOrigin::Encoded,
            encode_time: Some(run.encoder.last_encode_time()),
        })
    }

    fn stop(&mut self) {
        self.running = None;
    }
}

/// I420 planes the pattern is drawn into.
pub struct Canvas {
    width: usize,
    height: usize,
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    /// Two bar periods side by side per plane, so a scrolled row is one contiguous slice.
    bar_rows: [Vec<u8>; 3],
}

impl Canvas {
    pub fn new(width: usize, height: usize) -> Self {
        let (cw, ch) = (width / 2, height / 2);
        Canvas {
            width,
            height,
            y: vec![0; width * height],
            u: vec![0; cw * ch],
            v: vec![0; cw * ch],
            bar_rows: [
                bar_row(width, 1, |c| c.0),
                bar_row(cw, 2, |c| c.1),
                bar_row(cw, 2, |c| c.2),
            ],
        }
    }

    /// Renders frame `index`: bars scrolled by `index`, a bouncing box, and the number.
    pub fn draw(&mut self, index: u64) {
        let (w, h, cw) = (self.width, self.height, self.width / 2);
        let shift = (index as usize * SCROLL_PX_PER_FRAME) % w;
        for row in self.y.chunks_exact_mut(w) {
            row.copy_from_slice(&self.bar_rows[0][shift..shift + w]);
        }
        let cshift = shift / 2;
        for (plane, bars) in [
            (&mut self.u, &self.bar_rows[1]),
            (&mut self.v, &self.bar_rows[2]),
        ] {
            for row in plane.chunks_exact_mut(cw) {
                row.copy_from_slice(&bars[cshift..cshift + cw]);
            }
        }
        let side = (h / 6).max(2) & !1;
        let travel = (w - side).max(1);
        let pos = (index as usize * SCROLL_PX_PER_FRAME * 2) % (2 * travel);
        let x = if pos < travel { pos } else { 2 * travel - pos } & !1;
        self.fill(x, h - side - h / 12, side, side, (235, 128, 128));
        self.draw_number(index);
    }

    /// The Y, U and V planes, tightly packed (I420), for the encoder.
    pub fn planes(&self) -> [&[u8]; 3] {
        [&self.y, &self.u, &self.v]
    }

    /// Frame number, white on a black plate in the top-left corner, as 7-segment digits.
    fn draw_number(&mut self, index: u64) {
        let digits = format!("{:06}", index % 1_000_000);
        let dh = (self.height / 8).max(8) & !1; // digit height
        let dw = (dh / 2) & !1;
        let t = (dh / 8).max(2) & !1; // stroke thickness
        let gap = t * 2;
        let plate_w = (digits.len() * (dw + gap) + gap).min(self.width) & !1;
        self.fill(0, 0, plate_w, dh + 2 * gap, (16, 128, 128));
        for (i, ch) in digits.bytes().enumerate() {
            let x0 = gap + i * (dw + gap);
            for seg in segments(ch - b'0') {
                let (x, y, w, h) = match seg {
                    0 => (x0, gap, dw, t),                       // a: top
                    1 => (x0 + dw - t, gap, t, dh / 2),          // b: top right
                    2 => (x0 + dw - t, gap + dh / 2, t, dh / 2), // c: bottom right
                    3 => (x0, gap + dh - t, dw, t),              // d: bottom
                    4 => (x0, gap + dh / 2, t, dh / 2),          // e: bottom left
                    5 => (x0, gap, t, dh / 2),                   // f: top left
                    _ => (x0, gap + dh / 2 - t / 2, dw, t),      // g: middle
                };
                self.fill(x, y, w, h, (235, 128, 128));
            }
        }
    }

    /// Fills a rectangle (clipped to the canvas) with one colour. Chroma is written at half
    /// resolution, so x/y/w/h are best even.
    fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, (cy, cu, cv): (u8, u8, u8)) {
        let (x1, y1) = ((x + w).min(self.width), (y + h).min(self.height));
        if x >= x1 || y >= y1 {
            return;
        }
        for row in y..y1 {
            self.y[row * self.width + x..row * self.width + x1].fill(cy);
        }
        let cw = self.width / 2;
        for row in y / 2..y1.div_ceil(2).min(self.height / 2) {
            let span = row * cw + x / 2..row * cw + x1.div_ceil(2).min(cw);
            self.u[span.clone()].fill(cu);
            self.v[span].fill(cv);
        }
    }
}

/// One plane's row of the eight bars, repeated twice so any scroll offset is a plain slice.
/// `scale` is the plane's horizontal subsampling (1 for luma, 2 for chroma).
fn bar_row(plane_width: usize, scale: usize, pick: impl Fn(&(u8, u8, u8)) -> u8) -> Vec<u8> {
    let full_width = plane_width * scale;
    let once: Vec<u8> = (0..plane_width)
        .map(|x| pick(&BARS[(x * scale * BARS.len() / full_width).min(BARS.len() - 1)]))
        .collect();
    once.repeat(2)
}

/// Lit segments (a=0 … g=6) of a decimal digit.
fn segments(digit: u8) -> &'static [u8] {
    const TABLE: [&[u8]; 10] = [
        &[0, 1, 2, 3, 4, 5],
        &[1, 2],
        &[0, 1, 6, 4, 3],
        &[0, 1, 6, 2, 3],
        &[5, 6, 1, 2],
        &[0, 5, 6, 2, 3],
        &[0, 5, 6, 4, 2, 3],
        &[0, 1, 2],
        &[0, 1, 2, 3, 4, 5, 6],
        &[0, 1, 2, 3, 5, 6],
    ];
    TABLE[usize::from(digit.min(9))]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(jpeg: &[u8]) -> turbojpeg::Image<Vec<u8>> {
        turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).expect("decodable JPEG")
    }

    #[test]
    fn frames_decode_at_the_configured_size() {
        let mut src = TestPattern::new(CaptureSettings {
            width: 320,
            height: 240,
            fps: 1000.0,
            quality: 80,
        });
        let mode = src.start().unwrap();
        assert_eq!((mode.width, mode.height), (320, 240));
        let frame = src.next_frame().unwrap();
        assert_eq!(frame.origin, FrameOrigin::Encoded);
        let img = decode(&frame.jpeg);
        assert_eq!((img.width, img.height), (320, 240));
        src.stop();
        assert!(
            src.next_frame().is_err(),
            "stopped source must not produce frames"
        );
    }

    #[test]
    fn picture_moves_between_frames() {
        let mut c = Canvas::new(160, 120);
        c.draw(0);
        let first = c.y.clone();
        c.draw(7);
        assert_ne!(first, c.y);
    }

    #[test]
    fn bars_have_their_colours_below_the_number_plate() {
        let mut c = Canvas::new(640, 480);
        c.draw(0);
        let row = 240 * 640;
        // Middle row: first bar white (Y=235), last bar black (Y=16).
        assert_eq!(c.y[row + 40], 235);
        assert_eq!(c.y[row + 600], 16);
        // Chroma of the blue bar (7th of 8).
        let crow = 120 * 320;
        assert_eq!((c.u[crow + 250], c.v[crow + 250]), (240, 110));
    }

    #[test]
    fn every_digit_has_segments_and_eight_lights_all() {
        for d in 0..10 {
            assert!(!segments(d).is_empty());
        }
        assert_eq!(segments(8).len(), 7);
    }
}
