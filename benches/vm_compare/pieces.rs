//! camcast's own per-frame work, measured alone on one thread of this guest: what the capture
//! thread does with each frame before the hub (YUYV → JPEG encode, or the MJPEG copy + check).
//! Set against the server's CPU per captured frame, it shows how much of that is the JPEG work
//! and how much is everything around it (V4L2 ioctls, wake-ups, the hand-off to the senders).
//! µStreamer's equivalent pieces are inside its binary and cannot be timed from here.

use std::time::Instant;

use camcast::source::encode::{Encoder, Layout, YuvFormat};
use camcast::source::pattern::Canvas;

use crate::{Case, PixFmt, QUALITY};

pub fn print(cases: &[&Case]) {
    println!("camcast's per-frame work alone (one thread, this guest):");
    for case in cases {
        let (w, h) = (case.width as usize, case.height as usize);
        let r = match case.format {
            PixFmt::Yuyv => encode_cost(w, h).map(|(ms, kib)| {
                format!("YUYV → JPEG 4:2:2 q{QUALITY}: {ms:.2} ms/frame ({kib:.1} KiB)")
            }),
            PixFmt::Mjpeg => check_cost(w, h).map(|(ms, kib)| {
                format!(
                    "MJPEG copy + check (jpeg::repair_from_slice): {ms:.2} ms/frame ({kib:.1} KiB)"
                )
            }),
        };
        match r {
            Ok(text) => println!("  {}: {text}", case.name),
            Err(e) => println!("  {}: not measured: {e:#}", case.name),
        }
    }
    println!();
}

/// A YUYV frame of the test pattern (vivid's own pattern is colour bars too).
fn yuyv_frame(width: usize, height: usize) -> Vec<u8> {
    let mut canvas = Canvas::new(width, height);
    canvas.draw(7);
    let [y_plane, u_plane, v_plane] = canvas.planes();
    let mut out = Vec::with_capacity(width * height * 2);
    for y in 0..height {
        for x in (0..width).step_by(2) {
            let c = (y / 2) * (width / 2) + x / 2;
            out.extend_from_slice(&[
                y_plane[y * width + x],
                u_plane[c],
                y_plane[y * width + x + 1],
                v_plane[c],
            ]);
        }
    }
    out
}

fn encode_cost(width: usize, height: usize) -> anyhow::Result<(f64, f64)> {
    let frame = yuyv_frame(width, height);
    let layout = Layout::new(YuvFormat::Yuyv, width as u32, height as u32, 0)?;
    let mut enc = Encoder::new(layout, QUALITY)?;
    enc.encode(&frame)?; // warm-up
    let n = if width * height > 640 * 480 { 10 } else { 20 };
    let (t0, mut bytes) = (Instant::now(), 0);
    for _ in 0..n {
        bytes += enc.encode(&frame)?.len();
    }
    Ok((
        t0.elapsed().as_secs_f64() * 1000.0 / n as f64,
        bytes as f64 / n as f64 / 1024.0,
    ))
}

fn check_cost(width: usize, height: usize) -> anyhow::Result<(f64, f64)> {
    let frames = crate::feeder::camera_like_frames(width, height, 5)?;
    let n = 40;
    let pool = camcast::frame_pool::FramePool::default();
    let (t0, mut bytes) = (Instant::now(), 0);
    for i in 0..n {
        let f = &frames[i % frames.len()];
        let (jpeg, _) = camcast::jpeg::repair_from_slice(f, &pool)?;
        bytes += jpeg.len();
    }
    Ok((
        t0.elapsed().as_secs_f64() * 1000.0 / n as f64,
        bytes as f64 / n as f64 / 1024.0,
    ))
}
