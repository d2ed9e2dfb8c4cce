//! Raspberry Pi CSI camera modules (and anything else libcamera drives), through the
//! `libcamera` crate (libcamera-rs). Built only with the `libcamera` cargo feature.
//!
//! - The ISP delivers YUV (YUV420 preferred, else NV12, YVU420, NV21 or YUYV); each frame is
//!   JPEG-encoded once by libjpeg-turbo straight from the mapped planes, respecting strides.
//!   No RGB round trip; NV12/NV21/YUYV chroma is split into planes in reused buffers first.
//! - libcamera-rs's objects (`CameraManager`, `Camera`, `ActiveCamera`) are neither `Send` nor
//!   free of lifetimes tying cameras to their manager, so a [`FrameSource`] (which must be
//!   `Send`) cannot hold them. Instead the source owns a worker thread that owns *all*
//!   libcamera objects as locals of one call chain, and the capture thread talks to it over
//!   std channels. Borrowing ties every camera object to the manager on that thread, so the
//!   manager cannot be dropped first; teardown order is spelled out in [`Session::close`].
//! - Completed requests arrive on libcamera's own thread through the request-completed
//!   callback, which only forwards them to the worker's channel (it must never block or panic:
//!   it runs inside an `extern "C"` trampoline, where a panic aborts the process).
//! - The worker keeps only the newest completed request: an older one nobody asked for is
//!   re-queued at once, so a viewer always gets the freshest frame and the camera never starves.
//! - libcamera allows one `CameraManager` per process and *aborts the process* (a Fatal log)
//!   when a second one is created. Every manager here is made under one process-wide lock, so
//!   a second user (another source, [`list_cameras`]) gets an error instead.
//! - Timestamps: the request's `SensorTimestamp` (CLOCK_BOOTTIME per libcamera; some pipelines
//!   use CLOCK_MONOTONIC, which is the same clock on a machine that never suspends) shifted to
//!   wall-clock time by the offset between the clocks measured at that moment; `SystemTime::now`
//!   when there is no plausible stamp.

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::thread::JoinHandle;
use std::time::Duration;

use ::libcamera::camera::{ActiveCamera, CameraConfiguration};
use ::libcamera::camera_manager::CameraManager;
use ::libcamera::color_space::{ColorSpace, Range};
use ::libcamera::control::{ControlEntry, ControlList};
use ::libcamera::controls;
use ::libcamera::framebuffer::{AsFrameBuffer, FrameMetadataStatus};
use ::libcamera::framebuffer_allocator::{FrameBuffer, FrameBufferAllocator};
use ::libcamera::framebuffer_map::MemoryMappedFrameBuffer;
use ::libcamera::geometry::Size;
use ::libcamera::pixel_format::PixelFormat;
use ::libcamera::properties;
use ::libcamera::request::{Request, RequestStatus, ReuseFlag};
use ::libcamera::stream::{Stream, StreamRole};
use bytes::Bytes;

use super::{FrameSource, Mode, SourceError};
use crate::frame::{CapturedFrame, FrameOrigin};

/// Longest wait for one frame before `next_frame` returns, so the capture thread can notice
/// that it should stop. A slow frame rate adds one frame interval (at most 3 s) to it.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive frame timeouts after which the camera counts as stalled (a fault, restarted).
const STALL_LIMIT: u32 = 3;
/// Longest wait for the worker to open, configure and start the camera.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Held for the whole life of a `CameraManager`: see the module docs.
static MANAGER_IN_USE: Mutex<()> = Mutex::new(());

fn lock_manager() -> Result<MutexGuard<'static, ()>, SourceError> {
    match MANAGER_IN_USE.try_lock() {
        Ok(guard) => Ok(guard),
        // A panic while holding it left no manager behind (it was dropped while unwinding).
        Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
        Err(TryLockError::WouldBlock) => Err(SourceError::Failed(
            "libcamera is already in use in this process (libcamera allows one camera manager \
             per process)"
                .into(),
        )),
    }
}

/// One camera as libcamera lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraInfo {
    /// What `--source libcamera:N` takes.
    pub index: usize,
    /// libcamera's id, e.g. "/base/soc/i2c0mux/i2c@1/imx708@1a".
    pub id: String,
    /// The sensor or product, e.g. "imx708"; "unknown model" if libcamera does not say.
    pub model: String,
}

/// The cameras libcamera sees, in `--source libcamera:N` order. Starts (and stops) a camera
/// manager, which takes a moment; fails while a [`LibcameraSource`] is running in this process.
pub fn list_cameras() -> Result<Vec<CameraInfo>, SourceError> {
    let _guard = lock_manager()?;
    let manager = CameraManager::new()
        .map_err(|e| SourceError::Failed(format!("libcamera camera manager did not start: {e}")))?;
    let cameras = manager.cameras();
    let list = cameras
        .iter()
        .enumerate()
        .map(|(index, camera)| CameraInfo {
            index,
            id: camera.id().to_string(),
            model: model_of(&camera),
        })
        .collect();
    drop(cameras);
    drop(manager);
    Ok(list)
}

fn model_of(camera: &::libcamera::camera::Camera<'_>) -> String {
    camera
        .properties()
        .get::<properties::Model>()
        .map(|m| m.0)
        .unwrap_or_else(|_| "unknown model".into())
}

/// What the libcamera source is asked to do.
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
            .spawn(move || worker_main(&cfg, &rx, callback_tx, ready_tx))
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

/// The source's handle on its worker thread.
struct Worker {
    tx: Sender<Msg>,
    thread: JoinHandle<Result<(), SourceError>>,
}

impl Worker {
    /// Waits for a worker that has ended (or is ending) on its own and says why.
    fn join_reason(self) -> SourceError {
        drop(self.tx);
        match self.thread.join() {
            Ok(Err(e)) => e,
            Ok(Ok(())) => SourceError::Failed("the libcamera thread ended unexpectedly".into()),
            Err(panic) => SourceError::Failed(format!(
                "the libcamera thread panicked: {}",
                panic_text(panic.as_ref())
            )),
        }
    }
}

/// Everything the worker thread hears, on one channel.
enum Msg {
    /// A request libcamera has finished with (sent from libcamera's thread).
    Completed(Request),
    /// libcamera reports that the camera went away (sent from libcamera's thread).
    Disconnected,
    /// The capture thread wants the next frame, answered on this channel.
    Want(SyncSender<Result<CapturedFrame, SourceError>>),
    /// Release everything and end.
    Stop,
}

type Ready = SyncSender<Result<Mode, SourceError>>;

/// The worker thread's body. Panics from libcamera-rs (it unwraps in places) end the thread and
/// reach the source through `JoinHandle::join`; the camera objects are dropped while unwinding.
fn worker_main(
    cfg: &LibcameraConfig,
    rx: &Receiver<Msg>,
    callback_tx: Sender<Msg>,
    ready: Ready,
) -> Result<(), SourceError> {
    // Declared before the manager, so released after it.
    let _guard = match lock_manager() {
        Ok(g) => g,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let manager = match CameraManager::new() {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(SourceError::Failed(format!(
                "libcamera camera manager did not start: {e}"
            ))));
            return Ok(());
        }
    };
    let mut session = match Session::open(&manager, cfg, callback_tx) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    if let Err(e) = session.queue_idle() {
        session.close(rx);
        let _ = ready.send(Err(e));
        return Ok(());
    }
    let outcome = if ready.send(Ok(session.mode.clone())).is_ok() {
        session.serve(rx)
    } else {
        Ok(()) // start() gave up waiting and has gone
    };
    session.close(rx);
    // `manager` drops here, after every camera object (the borrow in `Session` ensures it).
    outcome
}

/// An acquired, configured and streaming camera, owned by the worker thread.
///
/// `'m` borrows the `CameraManager`: libcamera-rs does not tie cameras to their manager's
/// lifetime itself, so this struct does it, and the manager outlives every camera object.
/// Field order is drop order (used when a panic unwinds past [`Session::close`]): requests and
/// their buffers, the allocator, then the camera (stop, release) and its configuration.
struct Session<'m> {
    /// Completed requests not queued at the moment (normally none: they are requeued at once).
    idle: Vec<Request>,
    /// Newest completed request nobody has asked for yet.
    ready: Option<Request>,
    encoder: PlaneEncoder,
    stream: Stream,
    mode: Mode,
    camera_index: usize,
    /// Owns the buffers' memory until the last `FrameBuffer` (inside the requests) is dropped.
    allocator: FrameBufferAllocator,
    camera: ActiveCamera<'m>,
    /// Kept until teardown: the stream handle belongs to this configuration.
    config: CameraConfiguration,
    _manager: PhantomData<&'m CameraManager>,
}

/// Pixel formats we encode, best first: YUV420 is what the Raspberry Pi ISP produces natively.
const PREFERRED: [Packing; 5] = [
    Packing::I420,
    Packing::Nv12,
    Packing::Yv12,
    Packing::Nv21,
    Packing::Yuyv,
];

impl<'m> Session<'m> {
    fn open(
        manager: &'m CameraManager,
        cfg: &LibcameraConfig,
        callback_tx: Sender<Msg>,
    ) -> Result<Self, SourceError> {
        let cameras = manager.cameras();
        if cameras.is_empty() {
            return Err(SourceError::Unavailable(
                "libcamera finds no camera (is the module connected, and detected by \
                 `rpicam-hello --list-cameras`?)"
                    .into(),
            ));
        }
        let count = cameras.len();
        let camera = cameras.get(cfg.camera).ok_or_else(|| {
            SourceError::Unavailable(format!(
                "libcamera camera {} not found: it sees {count} camera(s), numbered from 0",
                cfg.camera
            ))
        })?;
        let id = camera.id().to_string();
        let model = model_of(&camera);
        let mut active = camera.acquire().map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                SourceError::Failed(format!(
                    "camera {} ({model}) is in use by another process (rpicam-*, libcamera-*, \
                     a browser, or another camcast): {e}",
                    cfg.camera
                ))
            } else {
                SourceError::Failed(format!("cannot acquire camera {} ({id}): {e}", cfg.camera))
            }
        })?;
        // `acquire` made its own reference to the camera; the list entries are no longer needed.
        drop(camera);
        drop(cameras);

        let (mut config, packing) = configure(&active, cfg)?;
        active
            .configure(&mut config)
            .map_err(|e| SourceError::Failed(format!("camera {}: configure: {e}", cfg.camera)))?;
        let (stream, size, stride, buffer_count, colour) = {
            let sc = config
                .get(0)
                .ok_or_else(|| SourceError::Failed("configuration lost its stream".into()))?;
            let stream = sc.stream().ok_or_else(|| {
                SourceError::Failed("configured stream has no stream handle".into())
            })?;
            (
                stream,
                sc.get_size(),
                sc.get_stride(),
                sc.get_buffer_count(),
                sc.get_color_space(),
            )
        };
        let geometry = Geometry::new(packing, size.width, size.height, stride)
            .map_err(|e| SourceError::Failed(format!("camera {}: {e}", cfg.camera)))?;
        let encoder = PlaneEncoder::new(geometry, cfg.quality)
            .map_err(|e| SourceError::Failed(format!("libjpeg-turbo: {e}")))?;

        let mut allocator = FrameBufferAllocator::new(&active);
        let buffers = allocator.alloc(&stream).map_err(|e| {
            SourceError::Failed(format!("camera {}: buffer allocation: {e}", cfg.camera))
        })?;
        let mut idle = Vec::with_capacity(buffers.len());
        for (i, buffer) in buffers.into_iter().enumerate() {
            // MemoryMappedFrameBuffer::new unwraps a failed mmap; keep that a start failure.
            let mapped = catch_unwind(AssertUnwindSafe(|| MemoryMappedFrameBuffer::new(buffer)))
                .map_err(|p| {
                    SourceError::Failed(format!("mapping buffer {i}: {}", panic_text(p.as_ref())))
                })?
                .map_err(|e| SourceError::Failed(format!("mapping buffer {i}: {e}")))?;
            let mut request = active
                .create_request(Some(i as u64))
                .ok_or_else(|| SourceError::Failed("libcamera refused a capture request".into()))?;
            request
                .add_buffer(&stream, mapped)
                .map_err(|e| SourceError::Failed(format!("attaching buffer {i}: {e}")))?;
            idle.push(request);
        }

        // The callbacks run on libcamera's thread: forward and return, nothing that can block
        // or panic. A send fails only once the worker has gone, and then nobody needs it.
        let completed_tx = callback_tx.clone();
        active.on_request_completed(move |req| {
            let _ = completed_tx.send(Msg::Completed(req));
        });
        active.on_disconnected(move || {
            let _ = callback_tx.send(Msg::Disconnected);
        });

        let fps = frame_rate_controls(&active, cfg.fps);
        let mut controls = ControlList::new();
        if let Some((duration_us, _)) = fps {
            // Equal minimum and maximum pin the frame rate (rpicam-apps' --framerate does this).
            controls
                .set(controls::FrameDurationLimits([duration_us, duration_us]))
                .map_err(|e| SourceError::Failed(format!("FrameDurationLimits: {e}")))?;
        }
        active
            .start(Some(&controls))
            .map_err(|e| SourceError::Failed(format!("camera {}: start: {e}", cfg.camera)))?;

        let mode = Mode {
            width: size.width,
            height: size.height,
            fps: fps.map_or(cfg.fps, |(_, actual)| actual),
            pixel_format: if (size.width, size.height) == (cfg.width, cfg.height) {
                packing.name().to_string()
            } else {
                format!(
                    "{} (closest to requested {}x{})",
                    packing.name(),
                    cfg.width,
                    cfg.height
                )
            },
        };
        let colour_text = colour.map_or_else(|| "unspecified".into(), |c| c.to_repr());
        if colour.is_some_and(|c| c.range == Range::Limited) {
            tracing::warn!(
                colour_space = %colour_text,
                "camera gives limited-range YUV, JPEG viewers expect full range: pictures look flat"
            );
        }
        tracing::info!(camera = cfg.camera, %id, %model, libcamera = manager.version(), %mode,
            stride, buffers = buffer_count, colour_space = %colour_text,
            frame_rate_control = fps.is_some(), "libcamera capture configured");

        Ok(Session {
            idle,
            ready: None,
            encoder,
            stream,
            mode,
            camera_index: cfg.camera,
            allocator,
            camera: active,
            config,
            _manager: PhantomData,
        })
    }

    /// Hands every idle request to the camera.
    fn queue_idle(&mut self) -> Result<(), SourceError> {
        for request in std::mem::take(&mut self.idle) {
            if let Err((request, e)) = self.camera.queue_request(request) {
                self.idle.push(request);
                return Err(SourceError::Failed(format!(
                    "queueing a capture request: {e}"
                )));
            }
        }
        Ok(())
    }

    /// Answers frame requests until told to stop, or until the camera fails or disappears.
    fn serve(&mut self, rx: &Receiver<Msg>) -> Result<(), SourceError> {
        let mut waiting: Option<SyncSender<Result<CapturedFrame, SourceError>>> = None;
        loop {
            // Every sender but ours lives in the camera's callbacks, so the channel cannot close
            // while the camera is open; the source always sends Stop (its Drop too).
            let Ok(msg) = rx.recv() else {
                return Ok(());
            };
            match msg {
                Msg::Stop => return Ok(()),
                Msg::Disconnected => {
                    return Err(SourceError::Unavailable(format!(
                        "libcamera camera {} disconnected",
                        self.camera_index
                    )));
                }
                Msg::Want(reply) => match self.ready.take() {
                    Some(request) => self.deliver(request, &reply)?,
                    None => waiting = Some(reply),
                },
                Msg::Completed(request) => {
                    if request.status() == RequestStatus::Cancelled {
                        // Only stop() cancels, and we are not stopping: put it back to work.
                        self.requeue(request)?;
                    } else if let Some(reply) = waiting.take() {
                        self.deliver(request, &reply)?;
                    } else if let Some(older) = self.ready.replace(request) {
                        self.requeue(older)?;
                    }
                }
            }
        }
    }

    /// Encodes the request's frame, gives its buffer back to the camera, then answers.
    fn deliver(
        &mut self,
        request: Request,
        reply: &SyncSender<Result<CapturedFrame, SourceError>>,
    ) -> Result<(), SourceError> {
        let frame = self.frame_of(&request);
        self.requeue(request)?;
        // Fails only if the capture thread gave up waiting; the frame is then simply dropped.
        let _ = reply.try_send(frame);
        Ok(())
    }

    fn frame_of(&mut self, request: &Request) -> Result<CapturedFrame, SourceError> {
        let buffer: &MemoryMappedFrameBuffer<FrameBuffer> = request
            .buffer(&self.stream)
            .ok_or_else(|| SourceError::BadFrame("completed request without its buffer".into()))?;
        let metadata = buffer.metadata();
        let mut used: Vec<usize> = Vec::new();
        if let Some(meta) = &metadata {
            match meta.status() {
                FrameMetadataStatus::Success | FrameMetadataStatus::Startup => {}
                status => {
                    return Err(SourceError::BadFrame(format!(
                        "libcamera marked the frame {status:?}"
                    )))
                }
            }
            used = meta
                .planes()
                .into_iter()
                .map(|p| p.bytes_used as usize)
                .collect();
        }
        let mut planes = buffer.data();
        for (plane, &n) in planes.iter_mut().zip(&used) {
            if n > 0 && n < plane.len() {
                *plane = &plane[..n];
            }
        }
        let (encoded, took) = crate::metrics::time_encode(|| self.encoder.encode(&planes));
        let jpeg = encoded.map_err(|e| SourceError::BadFrame(e.to_string()))?;
        let stamp = request
            .metadata()
            .get::<controls::SensorTimestamp>()
            .ok()
            .and_then(|t| u64::try_from(t.0).ok())
            .or_else(|| metadata.as_ref().map(|m| m.timestamp()));
        let g = self.encoder.geometry();
        Ok(CapturedFrame {
            jpeg,
            captured_at: clock::capture_time(stamp.map(Duration::from_nanos)),
            width: g.width as u32,
            height: g.height as u32,
            origin: FrameOrigin::Encoded,
            encode_time: Some(took),
        })
    }

    fn requeue(&mut self, mut request: Request) -> Result<(), SourceError> {
        request.reuse(ReuseFlag::REUSE_BUFFERS);
        self.camera.queue_request(request).map_err(|(request, e)| {
            self.idle.push(request);
            SourceError::Failed(format!("re-queueing a capture request: {e}"))
        })
    }

    /// Stops the camera and releases everything in libcamera's order: stop (which returns every
    /// queued request as cancelled, through the callback into `rx`), free the requests and
    /// their mapped buffers, then the allocator, then the camera (callbacks disconnected,
    /// released), then the configuration. The caller drops the manager afterwards.
    fn close(mut self, rx: &Receiver<Msg>) {
        if let Err(e) = self.camera.stop() {
            tracing::debug!(error = %e, "libcamera camera stop");
        }
        // Cancelled requests, and any late Want (dropping it tells its waiter).
        while let Ok(msg) = rx.try_recv() {
            drop(msg);
        }
        let Session {
            idle,
            ready,
            allocator,
            camera,
            config,
            ..
        } = self;
        drop(ready);
        drop(idle);
        drop(allocator);
        drop(camera);
        drop(config);
    }
}

/// Generates a configuration for one stream in a format we can encode, at the requested size.
fn configure(
    camera: &ActiveCamera<'_>,
    cfg: &LibcameraConfig,
) -> Result<(CameraConfiguration, Packing), SourceError> {
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
    let candidates: Vec<Packing> = PREFERRED
        .into_iter()
        .filter(|p| offered.is_empty() || offered.contains(&p.pixel_format()))
        .collect();
    for packing in &candidates {
        {
            let mut sc = config
                .get_mut(0)
                .ok_or_else(|| SourceError::Failed("configuration without a stream".into()))?;
            sc.set_pixel_format(packing.pixel_format());
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
        if let Some(packing) = got.and_then(Packing::from_pixel_format) {
            if status.is_adjusted() {
                tracing::debug!(role = ?role, "libcamera adjusted the requested configuration");
            }
            return Ok((config, packing));
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
fn frame_rate_controls(camera: &ActiveCamera<'_>, fps: f64) -> Option<(i64, f64)> {
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

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// YUV memory layouts the encoder takes from libcamera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packing {
    /// libcamera YUV420 (fourcc YU12): Y plane, then U and V planes at half width and height.
    I420,
    /// YVU420 (YV12): as I420 with V before U.
    Yv12,
    /// NV12: Y plane, then one plane of interleaved U V at half height.
    Nv12,
    /// NV21: as NV12 with V U.
    Nv21,
    /// YUYV: packed 4:2:2, Y0 U Y1 V.
    Yuyv,
}

impl Packing {
    const ALL: [Packing; 5] = [
        Packing::I420,
        Packing::Yv12,
        Packing::Nv12,
        Packing::Nv21,
        Packing::Yuyv,
    ];

    fn fourcc(self) -> [u8; 4] {
        match self {
            Packing::I420 => *b"YU12",
            Packing::Yv12 => *b"YV12",
            Packing::Nv12 => *b"NV12",
            Packing::Nv21 => *b"NV21",
            Packing::Yuyv => *b"YUYV",
        }
    }

    /// libcamera's name, as in its logs and `cam --list-formats`.
    fn name(self) -> &'static str {
        match self {
            Packing::I420 => "YUV420",
            Packing::Yv12 => "YVU420",
            Packing::Nv12 => "NV12",
            Packing::Nv21 => "NV21",
            Packing::Yuyv => "YUYV",
        }
    }

    // Built from the fourcc rather than `libcamera::formats::*`: libcamera-rs 0.7.0 generates
    // that module by parsing `formats.h` for `constexpr PixelFormat NAME(`, but libcamera 0.4's
    // header writes `NAME{`, which leaves the module empty there.
    fn pixel_format(self) -> PixelFormat {
        PixelFormat::new(u32::from_le_bytes(self.fourcc()), 0)
    }

    fn from_pixel_format(f: PixelFormat) -> Option<Self> {
        if f.modifier() != 0 {
            return None;
        }
        Self::ALL
            .into_iter()
            .find(|p| u32::from_le_bytes(p.fourcc()) == f.fourcc())
    }

    /// Planes as libcamera lays them out: 3, 2 or 1.
    fn plane_count(self) -> usize {
        match self {
            Packing::I420 | Packing::Yv12 => 3,
            Packing::Nv12 | Packing::Nv21 => 2,
            Packing::Yuyv => 1,
        }
    }

    fn subsamp(self) -> turbojpeg::Subsamp {
        match self {
            Packing::Yuyv => turbojpeg::Subsamp::Sub2x1,
            _ => turbojpeg::Subsamp::Sub2x2,
        }
    }
}

/// One frame's geometry as libcamera reports it after configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    packing: Packing,
    width: usize,
    height: usize,
    /// Bytes per row of the first plane (`StreamConfiguration::stride`). The chroma planes of
    /// YUV420/YVU420 have half of it, NV12/NV21's interleaved plane all of it.
    stride: usize,
}

/// One plane in memory: `rows` rows `stride` apart, of which `row_bytes` are image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PlaneShape {
    stride: usize,
    rows: usize,
    row_bytes: usize,
}

impl PlaneShape {
    /// Bytes the plane needs: the last row need not be padded to the stride.
    fn min_len(&self) -> usize {
        self.stride * (self.rows - 1) + self.row_bytes
    }

    /// Bytes the plane occupies when planes follow each other in one buffer.
    fn span(&self) -> usize {
        self.stride * self.rows
    }
}

impl Geometry {
    /// Checks libcamera's numbers; `stride` 0 means tightly packed.
    fn new(packing: Packing, width: u32, height: u32, stride: u32) -> Result<Self, String> {
        if width == 0 || height == 0 || !width.is_multiple_of(2) || !height.is_multiple_of(2) {
            return Err(format!(
                "unusable {} size {width}x{height}: width and height must be even",
                packing.name()
            ));
        }
        let (width, height) = (width as usize, height as usize);
        let row = match packing {
            Packing::Yuyv => width * 2,
            _ => width,
        };
        let stride = match stride as usize {
            0 => row,
            s if s < row => {
                return Err(format!(
                    "{} stride {s} is shorter than a {width}-pixel row",
                    packing.name()
                ))
            }
            s if !s.is_multiple_of(2) && matches!(packing, Packing::I420 | Packing::Yv12) => {
                return Err(format!("{} stride {s} is odd", packing.name()))
            }
            s => s,
        };
        Ok(Geometry {
            packing,
            width,
            height,
            stride,
        })
    }

    /// The planes in memory order.
    fn planes(&self) -> Vec<PlaneShape> {
        let (w, h, s) = (self.width, self.height, self.stride);
        let luma = PlaneShape {
            stride: s,
            rows: h,
            row_bytes: w,
        };
        match self.packing {
            Packing::I420 | Packing::Yv12 => {
                let chroma = PlaneShape {
                    stride: s / 2,
                    rows: h / 2,
                    row_bytes: w / 2,
                };
                vec![luma, chroma, chroma]
            }
            Packing::Nv12 | Packing::Nv21 => vec![
                luma,
                PlaneShape {
                    stride: s,
                    rows: h / 2,
                    row_bytes: w,
                },
            ],
            Packing::Yuyv => vec![PlaneShape {
                stride: s,
                rows: h,
                row_bytes: w * 2,
            }],
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum EncodeError {
    #[error("{0} plane(s) in the buffer, {1} needs {2}")]
    PlaneCount(usize, &'static str, usize),
    #[error("short {format} plane {index}: {got} bytes, {need} needed")]
    Short {
        format: &'static str,
        index: usize,
        got: usize,
        need: usize,
    },
    #[error("libjpeg-turbo: {0}")]
    Encoder(#[from] turbojpeg::Error),
}

/// Encodes frames of one geometry, reusing its buffers from frame to frame.
struct PlaneEncoder {
    geometry: Geometry,
    compressor: turbojpeg::Compressor,
    /// Deinterleaved planes (NV12/NV21 chroma, YUYV all three); unused for YUV420/YVU420.
    y: Vec<u8>,
    u: Vec<u8>,
    v: Vec<u8>,
    /// Encoder output; each frame copies out only its actual length.
    scratch: Vec<u8>,
}

impl PlaneEncoder {
    fn new(geometry: Geometry, quality: u8) -> Result<Self, turbojpeg::Error> {
        let mut compressor = turbojpeg::Compressor::new()?;
        compressor.set_quality(i32::from(quality.clamp(1, 100)))?;
        // buf_len depends on the subsampling, so set it first.
        compressor.set_subsamp(geometry.packing.subsamp())?;
        let scratch = vec![0; compressor.buf_len(geometry.width, geometry.height)?];
        let (w, h) = (geometry.width, geometry.height);
        let (luma, chroma) = match geometry.packing {
            Packing::I420 | Packing::Yv12 => (0, 0),
            Packing::Nv12 | Packing::Nv21 => (0, (w / 2) * (h / 2)),
            Packing::Yuyv => (w * h, (w / 2) * h),
        };
        Ok(PlaneEncoder {
            geometry,
            compressor,
            y: vec![0; luma],
            u: vec![0; chroma],
            v: vec![0; chroma],
            scratch,
        })
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// JPEG of one frame given its planes as libcamera maps them: one slice per plane, or a
    /// single slice holding all planes back to back.
    fn encode(&mut self, buffer: &[&[u8]]) -> Result<Bytes, EncodeError> {
        let g = self.geometry;
        let shapes = g.planes();
        let planes = split_planes(buffer, &shapes, g.packing)?;
        let (w, h) = (g.width, g.height);
        let (cw, subsamp) = (w / 2, g.packing.subsamp());
        let image = match g.packing {
            Packing::I420 | Packing::Yv12 => {
                let (u, v) = if g.packing == Packing::I420 {
                    (planes[1], planes[2])
                } else {
                    (planes[2], planes[1])
                };
                turbojpeg::YuvPlanesImage {
                    y_plane: planes[0],
                    u_plane: u,
                    v_plane: v,
                    width: w,
                    height: h,
                    y_stride: shapes[0].stride,
                    u_stride: shapes[1].stride,
                    v_stride: shapes[2].stride,
                    subsamp,
                }
            }
            Packing::Nv12 | Packing::Nv21 => {
                let (first, second) = if g.packing == Packing::Nv12 {
                    (&mut self.u, &mut self.v)
                } else {
                    (&mut self.v, &mut self.u)
                };
                let uv = shapes[1];
                for row in 0..h / 2 {
                    let src = &planes[1][row * uv.stride..row * uv.stride + w];
                    let (a, b) = (
                        &mut first[row * cw..(row + 1) * cw],
                        &mut second[row * cw..(row + 1) * cw],
                    );
                    for ((pair, a), b) in src.chunks_exact(2).zip(a).zip(b) {
                        *a = pair[0];
                        *b = pair[1];
                    }
                }
                turbojpeg::YuvPlanesImage {
                    y_plane: planes[0],
                    u_plane: &self.u[..],
                    v_plane: &self.v[..],
                    width: w,
                    height: h,
                    y_stride: shapes[0].stride,
                    u_stride: cw,
                    v_stride: cw,
                    subsamp,
                }
            }
            Packing::Yuyv => {
                let stride = shapes[0].stride;
                for row in 0..h {
                    let src = &planes[0][row * stride..row * stride + 2 * w];
                    let y = &mut self.y[row * w..(row + 1) * w];
                    let u = &mut self.u[row * cw..(row + 1) * cw];
                    let v = &mut self.v[row * cw..(row + 1) * cw];
                    for (i, quad) in src.chunks_exact(4).enumerate() {
                        y[2 * i] = quad[0];
                        u[i] = quad[1];
                        y[2 * i + 1] = quad[2];
                        v[i] = quad[3];
                    }
                }
                turbojpeg::YuvPlanesImage {
                    y_plane: &self.y[..],
                    u_plane: &self.u[..],
                    v_plane: &self.v[..],
                    width: w,
                    height: h,
                    y_stride: w,
                    u_stride: cw,
                    v_stride: cw,
                    subsamp,
                }
            }
        };
        let len = self
            .compressor
            .compress_yuv_planes_to_slice(&image, &mut self.scratch)?;
        Ok(Bytes::copy_from_slice(&self.scratch[..len]))
    }
}

/// The planes of one frame, each checked to be long enough (turbojpeg asserts, i.e. panics,
/// on a short plane, so this must hold before encoding).
fn split_planes<'a>(
    buffer: &[&'a [u8]],
    shapes: &[PlaneShape],
    packing: Packing,
) -> Result<Vec<&'a [u8]>, EncodeError> {
    let planes: Vec<&[u8]> = if buffer.len() == shapes.len() {
        buffer.to_vec()
    } else if buffer.len() == 1 {
        // All planes back to back in one buffer, as V4L2 single-planar formats lay them out.
        let mut rest = buffer[0];
        let mut out = Vec::with_capacity(shapes.len());
        for (index, shape) in shapes.iter().enumerate() {
            let take = if index + 1 == shapes.len() {
                rest.len()
            } else {
                shape.span().min(rest.len())
            };
            let (plane, tail) = rest.split_at(take);
            out.push(plane);
            rest = tail;
        }
        out
    } else {
        return Err(EncodeError::PlaneCount(
            buffer.len(),
            packing.name(),
            packing.plane_count(),
        ));
    };
    for (index, (plane, shape)) in planes.iter().zip(shapes).enumerate() {
        if plane.len() < shape.min_len() {
            return Err(EncodeError::Short {
                format: packing.name(),
                index,
                got: plane.len(),
                need: shape.min_len(),
            });
        }
    }
    Ok(planes)
}

/// Capture timestamps: libcamera's nanosecond stamps to wall-clock time.
mod clock {
    use std::time::{Duration, SystemTime};

    /// A stamp older than this is not believed: no queue is that deep.
    const MAX_AGE: Duration = Duration::from_secs(10);
    /// A stamp this far ahead of the clock read just after it still counts as now.
    const MAX_AHEAD: Duration = Duration::from_millis(5);

    /// Wall-clock time of a sensor stamp; `SystemTime::now()` when there is no plausible one.
    pub fn capture_time(stamp: Option<Duration>) -> SystemTime {
        let real_now = SystemTime::now();
        let Some(stamp) = stamp.filter(|s| !s.is_zero()) else {
            return real_now;
        };
        // libcamera documents CLOCK_BOOTTIME; try CLOCK_MONOTONIC too (equal unless the
        // machine has been suspended), and fall back to now if the stamp fits neither.
        [libc::CLOCK_BOOTTIME, libc::CLOCK_MONOTONIC]
            .into_iter()
            .filter_map(now)
            .find_map(|clock_now| shift(stamp, clock_now, real_now))
            .unwrap_or(real_now)
    }

    /// `stamp` on a clock that reads `clock_now` at the same moment the wall clock reads
    /// `real_now`, as wall-clock time; `None` if the stamp is implausible for that clock.
    pub fn shift(stamp: Duration, clock_now: Duration, real_now: SystemTime) -> Option<SystemTime> {
        if stamp > clock_now + MAX_AHEAD {
            return None;
        }
        let age = clock_now.saturating_sub(stamp);
        if age > MAX_AGE {
            return None;
        }
        real_now.checked_sub(age)
    }

    fn now(clock: libc::clockid_t) -> Option<Duration> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through a valid pointer.
        if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
            return None;
        }
        Some(Duration::new(
            u64::try_from(ts.tv_sec).ok()?,
            u32::try_from(ts.tv_nsec).ok()?,
        ))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stamps_shift_by_their_age() {
            let real = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let now = Duration::from_secs(5000);
            let stamp = now - Duration::from_millis(40);
            assert_eq!(
                shift(stamp, now, real),
                Some(real - Duration::from_millis(40))
            );
            assert_eq!(shift(now + Duration::from_millis(1), now, real), Some(real));
            assert_eq!(shift(Duration::from_secs(100), now, real), None);
            assert_eq!(shift(now + Duration::from_secs(1), now, real), None);
        }

        #[test]
        fn a_real_boottime_stamp_maps_close_to_now() {
            let boot = now(libc::CLOCK_BOOTTIME).unwrap();
            let before = SystemTime::now();
            let t = capture_time(Some(boot.saturating_sub(Duration::from_millis(500))));
            let lag = before.duration_since(t).expect("stamp is in the past");
            assert!(
                lag > Duration::from_millis(450) && lag < Duration::from_millis(700),
                "{lag:?}"
            );
            assert!(capture_time(None) >= before);
            // A minute ahead of both clocks: not a stamp from this machine, so "now".
            assert!(capture_time(Some(boot + Duration::from_secs(60))) >= before);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn decode(jpeg: &[u8]) -> turbojpeg::Image<Vec<u8>> {
        turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).expect("decodable JPEG")
    }

    /// A mid-grey frame of `g` with distinct, recognisable padding bytes at the row ends.
    fn frame(g: &Geometry, grey: (u8, u8, u8)) -> Vec<Vec<u8>> {
        g.planes()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut p = vec![0xEE; s.span()];
                for row in 0..s.rows {
                    let line = &mut p[row * s.stride..row * s.stride + s.row_bytes];
                    match (g.packing, i) {
                        (Packing::Yuyv, _) => {
                            for q in line.chunks_exact_mut(4) {
                                q.copy_from_slice(&[grey.0, grey.1, grey.0, grey.2]);
                            }
                        }
                        (_, 0) => line.fill(grey.0),
                        (Packing::Nv12, _) => {
                            for pair in line.chunks_exact_mut(2) {
                                pair.copy_from_slice(&[grey.1, grey.2]);
                            }
                        }
                        (Packing::Nv21, _) => {
                            for pair in line.chunks_exact_mut(2) {
                                pair.copy_from_slice(&[grey.2, grey.1]);
                            }
                        }
                        (Packing::Yv12, _) => line.fill(if i == 1 { grey.2 } else { grey.1 }),
                        _ => line.fill(if i == 1 { grey.1 } else { grey.2 }),
                    }
                }
                p
            })
            .collect()
    }

    #[test]
    fn every_packing_encodes_from_padded_planes() {
        for packing in Packing::ALL {
            let row = if packing == Packing::Yuyv { 64 } else { 32 };
            let g = Geometry::new(packing, 32, 16, row as u32 + 32).unwrap();
            let mut enc = PlaneEncoder::new(g, 90).unwrap();
            let planes = frame(&g, (128, 128, 128));
            let slices: Vec<&[u8]> = planes.iter().map(Vec::as_slice).collect();
            let jpeg = enc.encode(&slices).unwrap();
            let img = decode(&jpeg);
            assert_eq!((img.width, img.height), (32, 16), "{packing:?}");
            // Mid grey stays grey: the padding (0xEE) must not leak into the picture.
            assert!(
                img.pixels.iter().all(|&p| (120..=136).contains(&p)),
                "{packing:?}"
            );
            // The same frame as one contiguous buffer.
            let joined: Vec<u8> = planes.concat();
            let jpeg = enc.encode(&[&joined]).unwrap();
            assert_eq!(decode(&jpeg).width, 32);
        }
    }

    #[test]
    fn chroma_order_is_respected() {
        // Pure red-ish chroma (U low, V high) must decode red for every packing.
        for packing in Packing::ALL {
            let g = Geometry::new(packing, 16, 16, 0).unwrap();
            let mut enc = PlaneEncoder::new(g, 95).unwrap();
            let planes = frame(&g, (82, 90, 240));
            let slices: Vec<&[u8]> = planes.iter().map(Vec::as_slice).collect();
            let img = decode(&enc.encode(&slices).unwrap());
            let (r, g_, b) = (img.pixels[0], img.pixels[1], img.pixels[2]);
            assert!(r > 200 && g_ < 60 && b < 60, "{packing:?}: {r} {g_} {b}");
        }
    }

    #[test]
    fn short_or_misshapen_buffers_are_bad_frames_not_panics() {
        let g = Geometry::new(Packing::I420, 32, 16, 0).unwrap();
        let mut enc = PlaneEncoder::new(g, 80).unwrap();
        let planes = frame(&g, (128, 128, 128));
        let short: Vec<&[u8]> = vec![&planes[0][..100], &planes[1], &planes[2]];
        assert!(matches!(
            enc.encode(&short),
            Err(EncodeError::Short { index: 0, .. })
        ));
        let two: Vec<&[u8]> = vec![&planes[0], &planes[1]];
        assert!(matches!(
            enc.encode(&two),
            Err(EncodeError::PlaneCount(2, "YUV420", 3))
        ));
        assert!(enc.encode(&[&[0u8; 10][..]]).is_err());
    }

    #[test]
    fn geometry_rejects_what_cannot_be_encoded() {
        assert!(Geometry::new(Packing::I420, 31, 16, 0).is_err());
        assert!(Geometry::new(Packing::Yuyv, 32, 16, 40).is_err());
        assert!(Geometry::new(Packing::I420, 32, 16, 33).is_err());
        let g = Geometry::new(Packing::Nv12, 32, 16, 0).unwrap();
        assert_eq!(g.stride, 32);
        assert_eq!(g.planes()[1].min_len(), 32 * 8);
    }

    #[test]
    fn pixel_formats_round_trip_through_fourccs() {
        for packing in Packing::ALL {
            assert_eq!(
                Packing::from_pixel_format(packing.pixel_format()),
                Some(packing)
            );
        }
        let mjpeg = PixelFormat::new(u32::from_le_bytes(*b"MJPG"), 0);
        assert_eq!(Packing::from_pixel_format(mjpeg), None);
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
