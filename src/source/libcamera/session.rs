//! One acquired, configured and streaming camera, owned by the worker thread: opening it
//! (acquire, configure, buffers, requests, start), serving frame requests from completed
//! capture requests, and closing it in libcamera's order.

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{Receiver, Sender, SyncSender};
use std::time::Duration;

use ::libcamera::camera::{ActiveCamera, CameraConfiguration};
use ::libcamera::camera_manager::CameraManager;
use ::libcamera::color_space::Range;
use ::libcamera::control::ControlList;
use ::libcamera::controls;
use ::libcamera::framebuffer::{AsFrameBuffer, FrameMetadataStatus};
use ::libcamera::framebuffer_allocator::{FrameBuffer, FrameBufferAllocator};
use ::libcamera::framebuffer_map::MemoryMappedFrameBuffer;
use ::libcamera::request::{Request, RequestStatus, ReuseFlag};
use ::libcamera::stream::Stream;

use super::configure::{configure, frame_rate_controls};
use super::manager::model_of;
use super::worker::{panic_text, Msg};
use super::LibcameraConfig;
use crate::frame::{CapturedFrame, FrameOrigin};
use crate::source::clock::{self, KernelClock};
use crate::source::encode::{Encoder, Layout};
use crate::source::{Mode, SourceError};

/// The clocks libcamera's `SensorTimestamp` may be on, in the order to try them: libcamera
/// documents CLOCK_BOOTTIME; some pipelines use CLOCK_MONOTONIC (equal unless the machine has
/// been suspended).
const STAMP_CLOCKS: [KernelClock; 2] = [KernelClock::Boottime, KernelClock::Monotonic];

/// An acquired, configured and streaming camera, owned by the worker thread.
///
/// `'m` borrows the `CameraManager`: libcamera-rs does not tie cameras to their manager's
/// lifetime itself, so this struct does it, and the manager outlives every camera object.
/// Field order is drop order (used when a panic unwinds past [`Session::close`]): requests and
/// their buffers, the allocator, then the camera (stop, release) and its configuration.
pub(super) struct Session<'m> {
    /// Completed requests not queued at the moment (normally none: they are requeued at once).
    idle: Vec<Request>,
    /// Newest completed request nobody has asked for yet.
    ready: Option<Request>,
    encoder: Encoder,
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

impl<'m> Session<'m> {
    pub(super) fn open(
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

        let (mut config, format) = configure(&active, cfg)?;
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
        let encoder = Layout::new(format, size.width, size.height, stride)
            .and_then(|layout| Encoder::new(layout, cfg.quality))
            .map_err(|e| SourceError::Failed(format!("camera {}: {e}", cfg.camera)))?;

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
                format.name().to_string()
            } else {
                format!(
                    "{} (closest to requested {}x{})",
                    format.name(),
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

    /// What the camera was configured to, for the source's `start`.
    pub(super) fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Hands every idle request to the camera.
    pub(super) fn queue_idle(&mut self) -> Result<(), SourceError> {
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
    pub(super) fn serve(&mut self, rx: &Receiver<Msg>) -> Result<(), SourceError> {
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
        let jpeg = self
            .encoder
            .encode_planes(&planes)
            .map_err(|e| SourceError::BadFrame(e.to_string()))?;
        let stamp = request
            .metadata()
            .get::<controls::SensorTimestamp>()
            .ok()
            .and_then(|t| u64::try_from(t.0).ok())
            .or_else(|| metadata.as_ref().map(|m| m.timestamp()));
        let layout = self.encoder.layout();
        Ok(CapturedFrame {
            jpeg,
            captured_at: clock::wall_time(stamp.map(Duration::from_nanos), &STAMP_CLOCKS),
            width: layout.width() as u32,
            height: layout.height() as u32,
            origin: FrameOrigin::Encoded,
            encode_time: Some(self.encoder.last_encode_time()),
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
    pub(super) fn close(mut self, rx: &Receiver<Msg>) {
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
