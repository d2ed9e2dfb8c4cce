//! The "MJPEG camera": a thread that writes JPEG frames into v4l2loopback's output side at a
//! fixed rate, so both servers capture MJPEG from /dev/video10. Same approach as the `Feeder`
//! in tests/v4l2_vivid.rs, plus a fixed schedule (start + k·period, slots skipped rather than
//! bursts when late) and frames that change and have a camera-like size.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use camcast::source::encode::{Encoder, Layout, YuvFormat};
use camcast::source::pattern::Canvas;
use v4l::video::Output;
use v4l::{Device, Format, FourCC};

pub struct Feeder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub frame_bytes: usize,
}

impl Feeder {
    pub fn start(device: &str, width: u32, height: u32, fps: f64) -> anyhow::Result<Feeder> {
        let frames = camera_like_frames(width as usize, height as usize, 30)?;
        let frame_bytes = frames.iter().map(Vec::len).sum::<usize>() / frames.len();
        let out = Device::with_path(device).with_context(|| format!("open {device}"))?;
        let mut fmt = Format::new(width, height, FourCC::new(b"MJPG"));
        fmt.size = width * height * 2; // room for any JPEG of this size
        Output::set_format(&out, &fmt).context("set the loopback's output format")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let period = Duration::from_secs_f64(1.0 / fps);
        let thread = std::thread::spawn(move || {
            let mut out = out;
            let start = Instant::now();
            let mut slot = 0u32;
            while !flag.load(Ordering::Relaxed) {
                // EAGAIN while no reader has a buffer free: that frame is simply lost, as
                // with a real camera.
                let _ = out.write(&frames[slot as usize % frames.len()]);
                slot += 1;
                let now = start.elapsed();
                let mut next = period * slot;
                if next < now {
                    slot = (now.as_secs_f64() / period.as_secs_f64()).ceil() as u32;
                    next = period * slot;
                }
                std::thread::sleep(next - now);
            }
        });
        // Give the loopback a frame before a capture side opens (exclusive_caps=1).
        std::thread::sleep(Duration::from_millis(300));
        Ok(Feeder {
            stop,
            thread: Some(thread),
            frame_bytes,
        })
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `n` distinct JPEGs (4:2:0, quality 80): camcast's test pattern with mild per-pixel noise on
/// the luma, so the frames compress like a real sensor's rather than like flat colour bars.
pub fn camera_like_frames(width: usize, height: usize, n: u64) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut canvas = Canvas::new(width, height);
    let mut jpeg = Encoder::new(
        Layout::new(YuvFormat::I420, width as u32, height as u32, 0)?,
        80,
    )?;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = Vec::new();
    for i in 0..n {
        canvas.draw(i);
        let [y_plane, u_plane, v_plane] = canvas.planes();
        let mut y = y_plane.to_vec();
        for px in &mut y {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let noise = (rng % 13) as i16 - 6;
            *px = (i16::from(*px) + noise).clamp(16, 235) as u8;
        }
        out.push(jpeg.encode_planes(&[&y, u_plane, v_plane])?.to_vec());
    }
    Ok(out)
}
