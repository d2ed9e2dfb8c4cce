//! A scripted source for tests: produces a fixed valid JPEG at a set interval, and fails,
//! stalls or corrupts on cue. Tests steer it and observe it through a [`FakeControl`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{FrameSource, Mode, SourceError};
use crate::frame::{CapturedFrame, FrameOrigin};

/// What the next `next_frame` call does. With an empty script the source produces frames.
#[derive(Debug, Clone)]
pub enum Step {
    Frame,
    /// Returns `SourceError::BadFrame`.
    BadFrame,
    /// Returns `SourceError::Unavailable`, as an unplugged camera does.
    Vanish,
    /// Returns `SourceError::Failed`.
    Fail,
    /// Blocks this long, then produces a frame.
    Stall(Duration),
}

#[derive(Default)]
struct Shared {
    script: Mutex<VecDeque<Step>>,
    failing_starts: AtomicU64,
    starts: AtomicU64,
    stops: AtomicU64,
    frames: AtomicU64,
    running: AtomicBool,
}

/// Steers and observes a [`FakeSource`] from the test.
#[derive(Clone)]
pub struct FakeControl {
    shared: Arc<Shared>,
}

impl FakeControl {
    pub fn push(&self, steps: impl IntoIterator<Item = Step>) {
        self.shared.script.lock().unwrap().extend(steps);
    }
    /// The next `n` calls to `start` fail as if the camera were absent.
    pub fn fail_next_starts(&self, n: u64) {
        self.shared.failing_starts.store(n, Ordering::SeqCst);
    }
    pub fn starts(&self) -> u64 {
        self.shared.starts.load(Ordering::SeqCst)
    }
    pub fn stops(&self) -> u64 {
        self.shared.stops.load(Ordering::SeqCst)
    }
    pub fn frames(&self) -> u64 {
        self.shared.frames.load(Ordering::SeqCst)
    }
    /// Between a successful `start` and `stop`.
    pub fn running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }
}

pub struct FakeSource {
    jpeg: Bytes,
    width: u32,
    height: u32,
    interval: Duration,
    shared: Arc<Shared>,
}

impl FakeSource {
    /// A source of `width`x`height` grey JPEGs, one per `interval`.
    pub fn new(width: u32, height: u32, interval: Duration) -> (Self, FakeControl) {
        let shared = Arc::new(Shared::default());
        let source = FakeSource {
            jpeg: grey_jpeg(width, height),
            width,
            height,
            interval,
            shared: shared.clone(),
        };
        (source, FakeControl { shared })
    }
}

/// A real, decodable JPEG of the given size.
pub fn grey_jpeg(width: u32, height: u32) -> Bytes {
    let (w, h) = (width as usize, height as usize);
    let pixels = vec![128u8; w * h];
    let image = turbojpeg::Image {
        pixels: &pixels[..],
        width: w,
        pitch: w,
        height: h,
        format: turbojpeg::PixelFormat::GRAY,
    };
    let jpeg = turbojpeg::compress(image, 75, turbojpeg::Subsamp::Gray).expect("encode grey JPEG");
    Bytes::copy_from_slice(&jpeg)
}

impl FrameSource for FakeSource {
    fn name(&self) -> String {
        "fake".into()
    }

    fn start(&mut self) -> Result<Mode, SourceError> {
        let failing = &self.shared.failing_starts;
        if failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SourceError::Unavailable("fake camera unplugged".into()));
        }
        self.shared.starts.fetch_add(1, Ordering::SeqCst);
        self.shared.running.store(true, Ordering::SeqCst);
        Ok(Mode {
            width: self.width,
            height: self.height,
            fps: 1.0 / self.interval.as_secs_f64().max(1e-6),
            pixel_format: "MJPG (fake)".into(),
        })
    }

    fn next_frame(&mut self) -> Result<CapturedFrame, SourceError> {
        let step = self.shared.script.lock().unwrap().pop_front();
        let wait = match step.unwrap_or(Step::Frame) {
            Step::Frame => self.interval,
            Step::Stall(d) => d,
            Step::BadFrame => return Err(SourceError::BadFrame("fake corrupt frame".into())),
            Step::Vanish => return Err(SourceError::Unavailable("fake camera vanished".into())),
            Step::Fail => return Err(SourceError::Failed("fake failure".into())),
        };
        std::thread::sleep(wait);
        self.shared.frames.fetch_add(1, Ordering::SeqCst);
        Ok(CapturedFrame {
            jpeg: self.jpeg.clone(),
            captured_at: SystemTime::now(),
            width: self.width,
            height: self.height,
            origin: FrameOrigin::Camera,
            encode_time: None,
        })
    }

    fn stop(&mut self) {
        if self.shared.running.swap(false, Ordering::SeqCst) {
            self.shared.stops.fetch_add(1, Ordering::SeqCst);
        }
    }
}
