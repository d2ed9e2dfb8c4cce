//! Raspberry Pi CSI camera modules (and anything else libcamera drives), through the
//! `libcamera` crate (libcamera-rs). Built only with the `libcamera` cargo feature.
//!
//! - The ISP delivers YUV (YUV420 preferred, else NV12, YVU420, NV21 or YUYV); each frame is
//!   JPEG-encoded once by the one encoder ([`crate::source::encode`]) straight from the mapped
//!   planes, respecting strides.
//! - libcamera-rs's objects (`CameraManager`, `Camera`, `ActiveCamera`) are neither `Send` nor
//!   free of lifetimes tying cameras to their manager, so a [`FrameSource`] (which must be
//!   `Send`) cannot hold them. Instead the source owns a worker thread ([`worker`]) that owns
//!   *all* libcamera objects as locals of one call chain, and the capture thread talks to it
//!   over std channels. Borrowing ties every camera object to the manager on that thread, so
//!   the manager cannot be dropped first; teardown order is spelled out in
//!   [`session::Session::close`].
//! - Completed requests arrive on libcamera's own thread through the request-completed
//!   callback, which only forwards them to the worker's channel (it must never block or panic:
//!   it runs inside an `extern "C"` trampoline, where a panic aborts the process).
//! - The worker keeps only the newest completed request: an older one nobody asked for is
//!   re-queued at once, so a viewer always gets the freshest frame and the camera never starves.
//! - One camera manager per process ([`manager`]): a second one is an error, not an abort.
//! - Timestamps: the request's `SensorTimestamp`, on CLOCK_BOOTTIME per libcamera (some
//!   pipelines use CLOCK_MONOTONIC), to wall-clock time by the one rule in
//!   [`crate::source::clock`].
//!
//! Modules, by concern:
//! - [`manager`]: the process-wide camera manager lock and the camera list.
//! - [`worker`]: the thread that owns every libcamera object, and its messages.
//! - [`session`]: one acquired, configured, streaming camera: open, serve frames, close.
//! - [`configure`]: choosing the stream's pixel format, size and frame rate.

mod configure;
mod manager;
mod session;
mod worker;

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

pub use manager::{list_cameras, CameraInfo, Listing};

use super::{FrameSource, Mode, SourceError};
use crate::frame::CapturedFrame;
use worker::{panic_text, Msg, Worker};

/// Longest wait for one frame before `next_frame` returns, so the capture thread can notice
/// that it should stop. A slow frame rate adds one frame interval (at most 3 s) to it.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive frame timeouts after which the camera counts as stalled (a fault, restarted).
const STALL_LIMIT: u32 = 3;
/// Longest wait for the worker to open, configure and start the camera.
const START_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, PartialEq)]
pub struct LibcameraConfig {
    /// Index into libcamera's camera list (`--source libcamera:N`), in the order
    /// [`list_cameras`] and libcamera's `cam --list` give; 0 is the first camera.
    pub camera: usize,
    pub width: u32,
    pub height: u32,
    /// Requested through the `FrameDurationLimits` control where the camera has it.
    pub fps: f64,
    /// libjpeg-turbo quality, 1..=100.
    pub quality: u8,
}

impl LibcameraConfig {
    /// Camera `camera`, 640x480 at 30 fps, quality 80.
    pub fn new(camera: usize) -> Self {
        LibcameraConfig {
            camera,
            width: 640,
            height: 480,
            fps: 30.0,
            quality: 80,
        }
    }
}

/// A libcamera camera as a [`FrameSource`]; see the module docs for the threading design.
pub struct LibcameraSource {
    cfg: LibcameraConfig,
    worker: Option<Worker>,
    /// Frame timeouts in a row; reset by every delivered frame.
    timeouts: u32,
}

impl LibcameraSource {
    pub fn new(cfg: LibcameraConfig) -> Self {
        LibcameraSource {
            cfg,
            worker: None,
            timeouts: 0,
        }
    }

    fn frame_timeout(&self) -> Duration {
        let interval = if self.cfg.fps > 0.0 {
            Duration::from_secs_f64((1.0 / self.cfg.fps).min(3.0))
        } else {
            Duration::ZERO
        };
        FRAME_TIMEOUT + interval
    }

    /// The worker ended on its own (its channel closed): collect why.
    fn worker_gone(&mut self) -> SourceError {
        match self.worker.take() {
            Some(w) => w.join_reason(),
            None => SourceError::Failed("next_frame before start".into()),
        }
    }
}

impl FrameSource for LibcameraSource {
    fn name(&self) -> String {
        format!("libcamera:{}", self.cfg.camera)
    }

    fn start(&mut self) -> Result<Mode, SourceError> {
        self.stop();
        self.timeouts = 0;
        let (tx, rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let cfg = self.cfg.clone();
        let callback_tx = tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("libcamera-{}", cfg.camera))
            .spawn(move || worker::run(&cfg, &rx, callback_tx, ready_tx))
            .map_err(|e| SourceError::Failed(format!("cannot spawn the libcamera thread: {e}")))?;
        let worker = Worker { tx, thread };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(mode)) => {
                self.worker = Some(worker);
                Ok(mode)
            }
            Ok(Err(e)) => {
                // The worker has already released everything and is returning.
                let _ = worker.thread.join();
                Err(e)
            }
            Err(RecvTimeoutError::Disconnected) => Err(worker.join_reason()),
            Err(RecvTimeoutError::Timeout) => {
                // libcamera is stuck; leave the thread behind with a stop order it obeys once it
                // gets to its loop (or when its ready report fails), rather than hang here.
                let _ = worker.tx.send(Msg::Stop);
                Err(SourceError::Failed(format!(
                    "libcamera did not start camera {} within {} s",
                    self.cfg.camera,
                    START_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn next_frame(&mut self) -> Result<CapturedFrame, SourceError> {
        let timeout = self.frame_timeout();
        let worker = self
            .worker
            .as_ref()
            .ok_or_else(|| SourceError::Failed("next_frame before start".into()))?;
        // A fresh one-slot reply channel per frame: if we give up waiting, the worker's late
        // reply fails to send and is dropped instead of surfacing one call later as a stale frame.
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        if worker.tx.send(Msg::Want(reply_tx)).is_err() {
            return Err(self.worker_gone());
        }
        match reply_rx.recv_timeout(timeout) {
            Ok(result) => {
                self.timeouts = 0;
                result
            }
            Err(RecvTimeoutError::Timeout) => {
                self.timeouts += 1;
                if self.timeouts >= STALL_LIMIT {
                    Err(SourceError::Failed(format!(
                        "camera {} delivered no frame in {} s",
                        self.cfg.camera,
                        (timeout * self.timeouts).as_secs()
                    )))
                } else {
                    Err(SourceError::BadFrame(format!(
                        "no frame from the camera within {} ms",
                        timeout.as_millis()
                    )))
                }
            }
            Err(RecvTimeoutError::Disconnected) => Err(self.worker_gone()),
        }
    }

    fn stop(&mut self) {
        let Some(worker) = self.worker.take() else {
            return;
        };
        let _ = worker.tx.send(Msg::Stop);
        match worker.thread.join() {
            Ok(Ok(())) => tracing::debug!(camera = self.cfg.camera, "libcamera camera released"),
            Ok(Err(e)) => {
                tracing::warn!(camera = self.cfg.camera, error = %e, "libcamera camera had failed")
            }
            Err(panic) => tracing::error!(
                camera = self.cfg.camera,
                "the libcamera thread panicked: {}",
                panic_text(panic.as_ref())
            ),
        }
    }
}

impl Drop for LibcameraSource {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::frame::FrameOrigin;

    fn decode(jpeg: &[u8]) -> turbojpeg::Image<Vec<u8>> {
        turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).expect("decodable JPEG")
    }

    /// Runs against a real libcamera camera when `CAMCAST_LIBCAMERA_TEST_CAMERA` names one
    /// (an index); `.ci/libcamera-check` points it at libcamera's virtual test camera. One test
    /// only, because libcamera allows one camera manager per process.
    #[test]
    fn captures_from_a_real_libcamera_camera_when_one_is_named() {
        let Some(index) = std::env::var("CAMCAST_LIBCAMERA_TEST_CAMERA")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        else {
            eprintln!("CAMCAST_LIBCAMERA_TEST_CAMERA unset: no libcamera camera test");
            return;
        };
        let cameras = list_cameras().unwrap();
        eprintln!("libcamera cameras: {cameras:?}");
        assert!(cameras.len() > index, "camera {index} not listed");

        let cfg = LibcameraConfig {
            width: 640,
            height: 480,
            ..LibcameraConfig::new(index)
        };
        let mut src = LibcameraSource::new(cfg.clone());
        for round in 0..2 {
            let mode = src.start().unwrap();
            eprintln!("round {round}: {mode}");
            assert_eq!((mode.width, mode.height), (640, 480));
            // A second manager in the process would abort it; here it is an error.
            assert!(matches!(list_cameras(), Err(SourceError::Failed(_))));
            let mut last_seq_time = SystemTime::UNIX_EPOCH;
            for n in 0..10 {
                let frame = src.next_frame().unwrap();
                assert_eq!(frame.origin, FrameOrigin::Encoded);
                assert!(crate::frame::looks_like_jpeg(&frame.jpeg));
                let img = decode(&frame.jpeg);
                assert_eq!((img.width, img.height), (640, 480));
                let age = SystemTime::now()
                    .duration_since(frame.captured_at)
                    .expect("capture time is not in the future");
                assert!(age < Duration::from_secs(2), "{age:?}");
                assert!(frame.captured_at >= last_seq_time, "time went backwards");
                last_seq_time = frame.captured_at;
                if round == 0 && n == 0 && cameras[index].model.contains("camcast CI") {
                    // libcamera's virtual "bars" pattern: the sixth of eight bars is red, the
                    // seventh blue (it scrolls one column per frame).
                    let px = |x: usize| {
                        let i = (240 * 640 + x) * 3;
                        (img.pixels[i], img.pixels[i + 1], img.pixels[i + 2])
                    };
                    let (r, g, b) = px(440);
                    assert!(r > 180 && g < 80 && b < 80, "red bar is {r},{g},{b}");
                    let (r, g, b) = px(520);
                    assert!(b > 180 && r < 80 && g < 80, "blue bar is {r},{g},{b}");
                }
            }
            src.stop();
            assert!(matches!(src.next_frame(), Err(SourceError::Failed(_))));
        }
        // Released: a manager can be made again.
        assert_eq!(list_cameras().unwrap().len(), cameras.len());

        let mut missing = LibcameraSource::new(LibcameraConfig::new(cameras.len() + 5));
        assert!(matches!(missing.start(), Err(SourceError::Unavailable(_))));
        missing.stop();

        // Dropped while streaming: Drop stops and releases the camera.
        let mut src = LibcameraSource::new(cfg);
        src.start().unwrap();
        src.next_frame().unwrap();
        drop(src);
        assert!(list_cameras().is_ok());
    }

    #[test]
    fn config_defaults_and_name() {
        let cfg = LibcameraConfig::new(1);
        assert_eq!((cfg.width, cfg.height, cfg.quality), (640, 480, 80));
        let mut src = LibcameraSource::new(cfg);
        assert_eq!(src.name(), "libcamera:1");
        assert!(matches!(src.next_frame(), Err(SourceError::Failed(_))));
        src.stop();
        src.stop();
    }
}
