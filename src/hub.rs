//! The frame hub: one capture loop per camera, fanned out to any number of viewers.
//!
//! - The newest frame lives in a `watch` cell. Viewers never queue: a slow viewer wakes to the
//!   newest frame and the frames it missed are counted from the sequence numbers.
//! - A frame's JPEG is one `Bytes` buffer; handing it to a viewer bumps a reference count.
//! - Capture runs on its own OS thread (device I/O blocks) and only while there is demand: it
//!   starts with the first viewer and stops `linger` after the last one leaves, unless
//!   `always_on` is set. A supervisor task on the async runtime turns the viewer count into
//!   that demand, so the timing logic runs on tokio's clock and is testable with paused time.
//! - Dropping a [`Subscription`] releases the viewer at once: registry entry, count, receiver.

pub mod seats;
pub mod stats;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admission::PeerGroup;
use crate::frame::{looks_like_jpeg, Frame};
use crate::source::{FrameSource, Mode, SourceError};
use crate::status::{State, Status, StatusCell};
pub use seats::{Seat, Seats};
pub use stats::{CameraStats, DropReason, ViewerRefusal};

#[derive(Debug, Clone, PartialEq)]
pub struct HubConfig {
    /// Viewers (streams and in-flight snapshots, all APIs) admitted at once.
    pub max_viewers: usize,
    /// Of those, viewers one peer may have: one host, or one remote IPv6 /64 (see
    /// [`PeerGroup`]). Keeps one host from taking every slot.
    pub max_viewers_per_address: usize,
    /// How long capture keeps running after the last viewer leaves (a reconnecting viewer then
    /// finds the camera warm).
    pub linger: Duration,
    /// Capture continuously, viewers or not.
    pub always_on: bool,
    /// First and longest wait between attempts to (re)open a failing source.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            max_viewers: 64,
            // A household's busiest machine (a few tabs, VLC, a recorder) stays below it, and
            // at 64 viewers, 8 hosts can always get in. A relay or proxy needs it raised.
            max_viewers_per_address: 8,
            linger: Duration::from_secs(2),
            always_on: false,
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    #[error("viewer limit reached ({max} viewers); try again later")]
    Full { max: usize },
    #[error("viewer limit per address reached ({max} viewers from {peer}); try again later")]
    AddressFull { max: usize, peer: PeerGroup },
    #[error("server is shutting down")]
    ShuttingDown,
    #[error("no frame within {0:?}: {1}")]
    NoFrame(Duration, String),
}

/// Which transport a viewer came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// The tutorial API, `WebcamStreaming`.
    Tutorial,
    V1,
    Snapshot,
    /// `/stream.mjpg` over HTTP (browsers, VLC, Home Assistant...).
    Http,
}

impl Api {
    pub const ALL: [Api; 4] = [Api::Tutorial, Api::V1, Api::Snapshot, Api::Http];

    pub fn as_str(self) -> &'static str {
        match self {
            // "seed" on the wire (GetInfo's viewer api): scripts and older viewers read it.
            Api::Tutorial => "seed",
            Api::V1 => "v1",
            Api::Snapshot => "snapshot",
            Api::Http => "http",
        }
    }
}

/// Who is connecting.
#[derive(Debug, Clone)]
pub struct ViewerInfo {
    /// Already validated and sanitised with [`viewer_name`].
    pub name: String,
    pub addr: Option<SocketAddr>,
    pub api: Api,
    /// The viewer's frame-rate cap, already checked.
    pub max_fps: RateCap,
}

/// A viewer's frame-rate cap: gRPC's `max_fps` and HTTP's `?fps=` go through this one check,
/// so every transport accepts the same values and answers nonsense with the same words.
/// The bounds keep every interval derived from it a sane, representable `Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateCap(f32);

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("max_fps must be 0 (the camera's rate) or from {min} to {max} frames per second, got {0}", min = RateCap::MIN_FPS, max = RateCap::MAX_FPS)]
pub struct BadRateCap(pub f64);

impl RateCap {
    /// No cap: the camera's rate.
    pub const NONE: RateCap = RateCap(0.0);
    /// One frame per 100 s: slower is not a video stream.
    pub const MIN_FPS: f32 = 0.01;
    /// Faster than any camera camcast drives.
    pub const MAX_FPS: f32 = 1000.0;

    /// `0` means no cap; anything else must lie in [`MIN_FPS`](Self::MIN_FPS)..=[`MAX_FPS`](Self::MAX_FPS).
    /// Checked as an f64, before narrowing: HTTP's decimal `?fps=1e-320` would round to 0 as
    /// an f32, and 0 means "no cap". gRPC's float widens losslessly.
    pub fn new(fps: f64) -> Result<RateCap, BadRateCap> {
        let range = f64::from(Self::MIN_FPS)..=f64::from(Self::MAX_FPS);
        if fps == 0.0 || range.contains(&fps) {
            Ok(RateCap(fps.abs() as f32))
        } else {
            Err(BadRateCap(fps))
        }
    }

    /// The cap in frames per second; 0 = none.
    pub fn fps(self) -> f32 {
        self.0
    }

    /// Shortest time between two deliveries, if capped. Checked arithmetic even though the
    /// bounds make it infallible: this value comes from the network.
    fn interval(self) -> Option<Duration> {
        (self.0 > 0.0)
            .then(|| Duration::try_from_secs_f64(1.0 / f64::from(self.0)).ok())
            .flatten()
    }
}

impl ViewerInfo {
    /// The peer address for logs ("-" when unknown, e.g. over a Unix socket).
    pub fn addr_text(&self) -> String {
        self.addr.map_or_else(|| "-".into(), |a| a.to_string())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("viewer name is {len} bytes; the limit is {max}")]
pub struct NameTooLong {
    pub len: usize,
    pub max: usize,
}

/// Validates a peer-supplied viewer name and makes it safe to log: control characters (which
/// could forge log lines or move a terminal's cursor) become U+FFFD; empty becomes "(unnamed)".
pub fn viewer_name(raw: &str, max_len: usize) -> Result<String, NameTooLong> {
    if raw.len() > max_len {
        return Err(NameTooLong {
            len: raw.len(),
            max: max_len,
        });
    }
    if raw.trim().is_empty() {
        return Ok("(unnamed)".into());
    }
    Ok(raw
        .chars()
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect())
}

/// Snapshot of one viewer for the info call.
#[derive(Debug, Clone)]
pub struct ViewerReport {
    pub info: ViewerInfo,
    pub frames_sent: u64,
    pub frames_skipped: u64,
    pub connected_for: Duration,
}

/// Monotonic counters since the server started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CounterReport {
    pub frames_captured: u64,
    pub frames_dropped: u64,
    pub capture_starts: u64,
    pub capture_errors: u64,
    pub viewers_total: u64,
    pub viewers_rejected: u64,
}

/// Everything the info call shows.
#[derive(Debug, Clone)]
pub struct HubReport {
    pub source: String,
    pub source_reason: String,
    pub mode: Option<Mode>,
    pub status: Status,
    pub capturing: bool,
    pub viewers: Vec<ViewerReport>,
    pub uptime: Duration,
    pub counters: CounterReport,
}

/// Drops and refusals are counted by reason in [`CameraStats`], which sums them for the report.
#[derive(Default)]
struct Counters {
    frames_captured: AtomicU64,
    capture_starts: AtomicU64,
    capture_errors: AtomicU64,
    viewers_total: AtomicU64,
}

struct ViewerEntry {
    info: ViewerInfo,
    connected_at: Instant,
    sent: AtomicU64,
    skipped: AtomicU64,
    /// Sequence number of the last frame delivered (0 = none yet).
    last_seq: AtomicU64,
}

/// Capture demand shared with the capture thread (a std Condvar: that thread is not async).
#[derive(Default)]
struct Demand {
    state: Mutex<DemandState>,
    changed: Condvar,
}

#[derive(Default, Clone, Copy)]
struct DemandState {
    wanted: bool,
    shutdown: bool,
}

impl Demand {
    fn update(&self, f: impl FnOnce(&mut DemandState)) {
        f(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }
    fn get(&self) -> DemandState {
        *self.state.lock().unwrap()
    }
    /// Blocks until capture is wanted; false means shut down instead.
    fn wait_wanted(&self) -> bool {
        let guard = self.state.lock().unwrap();
        let guard = self
            .changed
            .wait_while(guard, |s| !s.wanted && !s.shutdown)
            .unwrap();
        !guard.shutdown
    }
    /// Sleeps up to `d`, waking early when capture is no longer wanted or on shutdown.
    fn pause(&self, d: Duration) {
        let guard = self.state.lock().unwrap();
        let _unused = self
            .changed
            .wait_timeout_while(guard, d, |s| s.wanted && !s.shutdown)
            .unwrap();
    }
}

struct Shared {
    cfg: HubConfig,
    /// The viewer caps, shared with the server's other cameras.
    seats: Seats,
    source_name: String,
    source_reason: String,
    frames: watch::Sender<Option<Frame>>,
    viewer_count: watch::Sender<usize>,
    viewers: Mutex<BTreeMap<u64, Arc<ViewerEntry>>>,
    next_viewer_id: AtomicU64,
    counters: Counters,
    /// What `/metrics` shows of this camera beyond `counters`.
    stats: CameraStats,
    mode: Mutex<Option<Mode>>,
    capturing: AtomicBool,
    status: StatusCell,
    demand: Demand,
    closed: CancellationToken,
    started_at: Instant,
}

/// Cloneable handle to one camera's hub.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Hub {
    /// A hub with seats of its own (the server's only camera; tests). See [`Hub::with_seats`].
    pub fn new(
        source: Box<dyn FrameSource>,
        source_reason: impl Into<String>,
        cfg: HubConfig,
        status: StatusCell,
    ) -> Hub {
        let seats = Seats::new(&cfg);
        Hub::with_seats(source, source_reason, cfg, status, seats)
    }

    /// Starts the capture thread (idle until there is demand) and the demand supervisor.
    /// Viewers take their seats from `seats`, which the server's cameras share (the caps in
    /// `cfg` are those of `seats`). Must be called within a tokio runtime.
    pub fn with_seats(
        source: Box<dyn FrameSource>,
        source_reason: impl Into<String>,
        cfg: HubConfig,
        status: StatusCell,
        seats: Seats,
    ) -> Hub {
        let shared = Arc::new(Shared {
            seats,
            source_name: source.name(),
            source_reason: source_reason.into(),
            frames: watch::channel(None).0,
            viewer_count: watch::channel(0).0,
            viewers: Mutex::new(BTreeMap::new()),
            next_viewer_id: AtomicU64::new(1),
            counters: Counters::default(),
            stats: CameraStats::default(),
            mode: Mutex::new(None),
            capturing: AtomicBool::new(false),
            status,
            demand: Demand::default(),
            closed: CancellationToken::new(),
            started_at: Instant::now(),
            cfg,
        });
        shared.status.set(State::Ready, "idle: no viewers");
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("capture".into())
                .spawn(move || capture_loop(&shared, source))
                .expect("spawn capture thread")
        };
        tokio::spawn(supervise(shared.clone()));
        Hub {
            shared,
            thread: Arc::new(Mutex::new(Some(thread))),
        }
    }

    /// Admits a viewer, starting capture if it is the first.
    ///
    /// Everything that can fail happens before the viewer is registered, and the registration
    /// is a guard from the moment it exists: no early return or panic can leak a slot.
    pub fn connect(&self, info: ViewerInfo) -> Result<Subscription, HubError> {
        let min_interval = info.max_fps.interval();
        let registration = Registration::new(self, info)?;
        let mut rx = self.shared.frames.subscribe();
        if rx.borrow().is_some() {
            // Hand the newest frame over at once rather than after the next capture.
            rx.mark_changed();
        }
        Ok(Subscription {
            registration,
            rx,
            unread: false,
            last_seq: None,
            min_interval,
            last_delivery: None,
        })
    }

    /// One current frame: the newest if capture is running, else starts capture for it.
    pub async fn snapshot(&self, info: ViewerInfo, timeout: Duration) -> Result<Frame, HubError> {
        let mut sub = self.connect(info)?;
        match tokio::time::timeout(timeout, sub.next()).await {
            Ok(Some(d)) => Ok(d.frame),
            Ok(None) => Err(HubError::ShuttingDown),
            Err(_) => Err(HubError::NoFrame(timeout, self.status().detail)),
        }
    }

    pub fn status(&self) -> Status {
        self.shared.status.get()
    }

    /// Number of viewers now (for tests and the LED).
    pub fn viewer_count(&self) -> usize {
        *self.shared.viewer_count.borrow()
    }

    /// True while the source is started and delivering.
    pub fn capturing(&self) -> bool {
        self.shared.capturing.load(Ordering::SeqCst)
    }

    pub fn report(&self) -> HubReport {
        let s = &self.shared;
        // Sequence numbers are the capture count, so a viewer that has not read lately has
        // already missed the frames between its last one and the newest (which it may still
        // get): `newest - last - 1`, reported as skipped. The sum never decreases.
        let newest = s.counters.frames_captured.load(Ordering::Relaxed);
        let viewers = s
            .viewers
            .lock()
            .unwrap()
            .values()
            .map(|v| {
                let last = v.last_seq.load(Ordering::Relaxed);
                let behind = if last == 0 {
                    0
                } else {
                    newest.saturating_sub(last).saturating_sub(1)
                };
                ViewerReport {
                    info: v.info.clone(),
                    frames_sent: v.sent.load(Ordering::Relaxed),
                    frames_skipped: v.skipped.load(Ordering::Relaxed) + behind,
                    connected_for: v.connected_at.elapsed(),
                }
            })
            .collect();
        HubReport {
            source: s.source_name.clone(),
            source_reason: s.source_reason.clone(),
            mode: s.mode.lock().unwrap().clone(),
            status: s.status.get(),
            capturing: self.capturing(),
            viewers,
            uptime: s.started_at.elapsed(),
            counters: self.counters(),
        }
    }

    /// The counters alone: atomics only, no lock (what a metrics scrape reads).
    pub fn counters(&self) -> CounterReport {
        let s = &self.shared;
        let c = &s.counters;
        CounterReport {
            frames_captured: c.frames_captured.load(Ordering::Relaxed),
            frames_dropped: s.stats.dropped_total(),
            capture_starts: c.capture_starts.load(Ordering::Relaxed),
            capture_errors: c.capture_errors.load(Ordering::Relaxed),
            viewers_total: c.viewers_total.load(Ordering::Relaxed),
            viewers_rejected: s.stats.refused_total(),
        }
    }

    /// This camera's counts for `/metrics`; transports add the bytes they send.
    pub fn stats(&self) -> &CameraStats {
        &self.shared.stats
    }

    /// True once shutdown has begun.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }

    /// Resolves once shutdown has begun.
    pub async fn closed(&self) {
        self.shared.closed.cancelled().await
    }

    /// Ends every viewer's stream, stops capture and waits for the capture thread to finish.
    pub async fn shutdown(&self) {
        if let Some(t) = self.begin_shutdown() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    /// [`shutdown`](Self::shutdown) for a path that cannot await, such as a drop while a
    /// panic unwinds: blocks until the capture thread has let the camera go (at most one
    /// `next_frame`, which a V4L2 source bounds by its frame timeout).
    pub fn shutdown_blocking(&self) {
        if let Some(t) = self.begin_shutdown() {
            let _ = t.join();
        }
    }

    /// Tells viewers and the capture thread to stop; the thread's handle, if not yet taken.
    fn begin_shutdown(&self) -> Option<JoinHandle<()>> {
        self.shared.closed.cancel();
        self.shared.demand.update(|d| d.shutdown = true);
        // A poisoned lock only means a panic elsewhere; the handle inside is still good.
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        thread.take()
    }
}

/// A frame handed to one viewer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub frame: Frame,
    /// Frames this viewer missed since its previous delivery.
    pub skipped: u64,
}

/// A viewer's slot in the registry. It exists only while registered: creating it inserts the
/// viewer, dropping it (on any path, panics included) removes it.
struct Registration {
    hub: Hub,
    id: u64,
    entry: Arc<ViewerEntry>,
    /// Given back when the registration is dropped, after the registry entry is removed.
    _seat: Seat,
}

impl Registration {
    fn new(hub: &Hub, info: ViewerInfo) -> Result<Registration, HubError> {
        let s = &hub.shared;
        if s.closed.is_cancelled() {
            return Err(HubError::ShuttingDown);
        }
        // It may read the machine's interface addresses: done before any lock.
        let group = info.addr.map(|a| PeerGroup::of_peer(a.ip()));
        let seat = s.seats.take(group).map_err(|(why, e)| {
            s.stats.viewer_refused(why);
            tracing::warn!(viewer = %info.name, addr = %info.addr_text(), api = info.api.as_str(),
                "viewer rejected: {e}");
            e
        })?;
        let mut viewers = s.viewers.lock().unwrap();
        let id = s.next_viewer_id.fetch_add(1, Ordering::Relaxed);
        let entry = Arc::new(ViewerEntry {
            info,
            connected_at: Instant::now(),
            sent: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            last_seq: AtomicU64::new(0),
        });
        viewers.insert(id, entry.clone());
        let watching = viewers.len();
        // Published under the registry's lock, so counts go out in the registry's order.
        s.viewer_count.send_replace(watching);
        drop(viewers);
        let registration = Registration {
            hub: hub.clone(),
            id,
            entry,
            _seat: seat,
        };
        s.counters.viewers_total.fetch_add(1, Ordering::Relaxed);
        s.stats.viewer_joined(registration.entry.info.api);
        let e = &registration.entry;
        tracing::info!(viewer = %e.info.name, addr = %e.info.addr_text(),
            api = e.info.api.as_str(), watching, "viewer connected");
        Ok(registration)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let s = &self.hub.shared;
        let mut viewers = s.viewers.lock().unwrap_or_else(|p| p.into_inner());
        viewers.remove(&self.id);
        let watching = viewers.len();
        // Under the lock: two viewers leaving at once must not publish in the wrong order.
        s.viewer_count.send_replace(watching);
        drop(viewers);
        s.stats.viewer_left(self.entry.info.api);
        let e = &self.entry;
        tracing::info!(viewer = %e.info.name, addr = %e.info.addr_text(), api = e.info.api.as_str(),
            frames_sent = e.sent.load(Ordering::Relaxed),
            frames_skipped = e.skipped.load(Ordering::Relaxed),
            seconds = format_args!("{:.1}", e.connected_at.elapsed().as_secs_f32()), watching, "viewer disconnected");
    }
}

/// One viewer's place at the hub. Dropping it disconnects the viewer.
pub struct Subscription {
    registration: Registration,
    rx: watch::Receiver<Option<Frame>>,
    /// `ready` saw a frame that `next` has not taken yet (the channel counts it as seen).
    unread: bool,
    last_seq: Option<u64>,
    min_interval: Option<Duration>,
    last_delivery: Option<tokio::time::Instant>,
}

impl Subscription {
    /// Waits for a frame newer than the previous one; `None` once the hub shuts down.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            if !self.ready().await {
                return None;
            }
            self.unread = false;
            // The newest frame (it may be newer than the one `ready` saw); `None` if capture
            // paused (camera gone or idle) since: keep waiting.
            let Some(frame) = self.rx.borrow_and_update().clone() else {
                continue;
            };
            let skipped = self
                .last_seq
                .map_or(0, |last| frame.seq.saturating_sub(last + 1));
            self.last_seq = Some(frame.seq);
            self.last_delivery = Some(tokio::time::Instant::now());
            let entry = &self.registration.entry;
            entry.sent.fetch_add(1, Ordering::Relaxed);
            entry.skipped.fetch_add(skipped, Ordering::Relaxed);
            entry.last_seq.store(frame.seq, Ordering::Relaxed);
            let hub = &self.registration.hub.shared;
            hub.stats.frame_delivered(entry.info.api, skipped);
            return Some(Delivery { frame, skipped });
        }
    }

    /// Waits until [`next`](Self::next) has a frame to return at once (the viewer's rate cap
    /// included), without taking it; `false` once the hub shuts down. A transport uses it to
    /// decide at the last moment whether its viewer is ready for the frame.
    pub async fn ready(&mut self) -> bool {
        if self.unread {
            return true;
        }
        let closed = self.registration.hub.shared.closed.clone();
        if let (Some(min), Some(last)) = (self.min_interval, self.last_delivery) {
            tokio::select! {
                biased;
                _ = closed.cancelled() => return false,
                _ = tokio::time::sleep_until(last + min) => {}
            }
        }
        loop {
            tokio::select! {
                biased;
                _ = closed.cancelled() => return false,
                changed = self.rx.changed() => if changed.is_err() { return false },
            }
            // `None` means capture paused (camera gone or idle); keep waiting.
            if self.rx.borrow().is_some() {
                self.unread = true;
                return true;
            }
        }
    }

    pub fn info(&self) -> &ViewerInfo {
        &self.registration.entry.info
    }

    /// Counts `bytes` the transport handed to this viewer's connection.
    pub fn count_bytes_sent(&self, bytes: usize) {
        let s = &self.registration.hub.shared;
        s.stats.bytes_sent(self.registration.entry.info.api, bytes);
    }
}

/// Turns the viewer count into capture demand, with the linger delay.
async fn supervise(shared: Arc<Shared>) {
    let mut count = shared.viewer_count.subscribe();
    let closed = shared.closed.clone();
    let set_wanted = |wanted| shared.demand.update(|d| d.wanted = wanted);
    if shared.cfg.always_on {
        set_wanted(true);
        return;
    }
    loop {
        tokio::select! {
            _ = closed.cancelled() => return,
            r = count.wait_for(|n| *n > 0) => if r.is_err() { return },
        }
        set_wanted(true);
        // Capture until the count has stayed at zero for `linger`.
        loop {
            tokio::select! {
                _ = closed.cancelled() => return,
                r = count.wait_for(|n| *n == 0) => if r.is_err() { return },
            }
            tokio::select! {
                _ = closed.cancelled() => return,
                _ = tokio::time::sleep(shared.cfg.linger) => break,
                r = count.wait_for(|n| *n > 0) => if r.is_err() { return },
            }
        }
        set_wanted(false);
        tracing::debug!("no viewers for {:?}: stopping capture", shared.cfg.linger);
    }
}

/// The capture thread: opens the source when wanted, publishes frames, closes it when not,
/// and retries a failing source with exponential backoff.
fn capture_loop(shared: &Shared, mut source: Box<dyn FrameSource>) {
    let mut backoff = shared.cfg.retry_min;
    while shared.demand.wait_wanted() {
        let outcome = match source.start() {
            Ok(mode) => run_started(shared, source.as_mut(), mode),
            Err(e) => Err((e, false)),
        };
        // A stale picture must not be shown to the next viewer as if it were live: clear it
        // before the (possibly slow) stop, not after.
        shared.frames.send_replace(None);
        shared.capturing.store(false, Ordering::SeqCst);
        source.stop();
        return_free_memory();
        match outcome {
            Ok(()) => {
                backoff = shared.cfg.retry_min;
                shared.status.set(State::Ready, "idle: no viewers");
            }
            Err((e, produced)) => {
                if produced {
                    backoff = shared.cfg.retry_min;
                }
                report_failure(shared, &e, backoff);
                shared.demand.pause(backoff);
                backoff = (backoff * 2).min(shared.cfg.retry_max);
            }
        }
    }
    source.stop();
    tracing::debug!("capture thread finished");
}

/// Hands the allocator's free pages back to the kernel once capture has stopped. A restart
/// frees frame-sized buffers on several threads, and glibc keeps them in its arenas for reuse
/// (RSS rose to a plateau ~2-4 MiB above what is in use; docs/reliability.md). `malloc_trim`
/// also releases free pages inside each arena, not only at its top. Restarts are rare and the
/// call takes well under a millisecond, so the capture thread can afford it.
fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only works on the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Pumps frames until capture is no longer wanted (Ok) or the source fails (Err, with whether
/// any frame was produced first, so a source that flaps immediately keeps backing off).
fn run_started(
    shared: &Shared,
    source: &mut dyn FrameSource,
    mode: Mode,
) -> Result<(), (SourceError, bool)> {
    tracing::info!(source = %shared.source_name, %mode, "capture started");
    *shared.mode.lock().unwrap() = Some(mode);
    shared
        .counters
        .capture_starts
        .fetch_add(1, Ordering::Relaxed);
    shared.capturing.store(true, Ordering::SeqCst);
    shared.status.set(State::Streaming, "");
    let c = &shared.counters;
    let mut produced = false;
    while shared.demand.get().wanted && !shared.demand.get().shutdown {
        let captured = match source.next_frame() {
            Ok(f) if looks_like_jpeg(&f.jpeg) => f,
            Ok(_) => {
                count_dropped(
                    &shared.stats,
                    DropReason::NotJpeg,
                    "source produced something that is not a JPEG",
                );
                continue;
            }
            Err(SourceError::BadFrame(why)) => {
                count_dropped(&shared.stats, DropReason::BadFrame, &why);
                continue;
            }
            Err(e) => return Err((e, produced)),
        };
        produced = true;
        shared.stats.frame_published(&captured);
        let seq = c.frames_captured.fetch_add(1, Ordering::Relaxed) + 1;
        shared.frames.send_replace(Some(Frame::new(captured, seq)));
    }
    tracing::info!(source = %shared.source_name, "capture stopped: no viewers");
    Ok(())
}

fn count_dropped(stats: &CameraStats, reason: DropReason, why: &str) {
    let total = stats.frame_dropped(reason);
    // Bad frames can arrive at the camera's rate; log the first and then every hundredth.
    if total == 1 || total.is_multiple_of(100) {
        tracing::warn!(dropped_total = total, "dropped a bad frame: {why}");
    }
}

fn report_failure(shared: &Shared, e: &SourceError, retry_in: Duration) {
    shared
        .counters
        .capture_errors
        .fetch_add(1, Ordering::Relaxed);
    let state = match e {
        SourceError::Unavailable(_) => State::WaitingForCamera,
        _ => State::Fault,
    };
    let detail = e.to_string();
    // A camera that stays unplugged fails the same way every few seconds: say so once at
    // warn level, then keep the repeats at debug.
    if shared.status.get().detail == detail {
        tracing::debug!(source = %shared.source_name, error = %e, retry_in = ?retry_in, "still failing");
    } else {
        tracing::warn!(source = %shared.source_name, error = %e, retry_in = ?retry_in,
            "capture interrupted; retrying with backoff");
    }
    shared.status.set(state, detail);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::fake::{FakeControl, FakeSource, Step};

    fn fake_hub(cfg: HubConfig) -> (Hub, FakeControl) {
        let (source, ctl) = FakeSource::new(64, 48, Duration::from_millis(2));
        let hub = Hub::new(Box::new(source), "test", cfg, StatusCell::new());
        (hub, ctl)
    }

    fn viewer(name: &str) -> ViewerInfo {
        ViewerInfo {
            name: name.into(),
            addr: None,
            api: Api::V1,
            max_fps: RateCap::NONE,
        }
    }

    #[test]
    fn rate_caps_are_checked_before_narrowing_to_f32() {
        // The wire's float32 limits are inside the range exactly.
        for ok in [0.0, -0.0, f64::from(RateCap::MIN_FPS), 0.01, 1.0, 1000.0] {
            assert!(RateCap::new(ok).is_ok(), "{ok}");
        }
        // 1e-320 would become 0.0 (no cap) as an f32; 1000.00001 would become 1000.
        for bad in [
            1e-320,
            1e-45,
            0.0099,
            1000.00001,
            f64::NAN,
            f64::INFINITY,
            -1.0,
        ] {
            assert!(RateCap::new(bad).is_err(), "{bad}");
        }
        assert_eq!(RateCap::new(-0.0).unwrap(), RateCap::NONE);
    }

    fn wanted(hub: &Hub) -> bool {
        hub.shared.demand.get().wanted
    }

    /// Waits (in real time, off the runtime so a paused clock is not advanced) until `cond`
    /// holds; panics after 10 s. The capture thread runs on real time.
    async fn eventually(what: &str, cond: impl Fn() -> bool + Send + 'static) {
        let ok = tokio::task::spawn_blocking(move || {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if cond() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            false
        })
        .await
        .unwrap();
        assert!(ok, "timed out waiting until {what}");
    }

    #[tokio::test(start_paused = true)]
    async fn capture_runs_only_while_watched_plus_linger() {
        let cfg = HubConfig {
            linger: Duration::from_secs(30),
            ..HubConfig::default()
        };
        let (hub, fake) = fake_hub(cfg);
        tokio::task::yield_now().await;
        assert!(!wanted(&hub));
        assert_eq!(fake.starts(), 0, "no viewer, no capture");

        let mut sub = hub.connect(viewer("a")).unwrap();
        let first = sub.next().await.expect("a frame");
        assert_eq!(first.skipped, 0);
        assert!(fake.running());
        drop(sub);
        assert_eq!(
            hub.viewer_count(),
            0,
            "dropping releases the viewer at once"
        );

        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(wanted(&hub), "still within linger");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!wanted(&hub), "linger expired");
        let f = fake.clone();
        eventually("the source is stopped", move || !f.running()).await;
        assert_eq!(fake.stops(), 1);
        assert!(!hub.capturing());
        hub.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn viewer_returning_within_linger_finds_capture_running() {
        let cfg = HubConfig {
            linger: Duration::from_secs(5),
            ..HubConfig::default()
        };
        let (hub, fake) = fake_hub(cfg);
        let mut sub = hub.connect(viewer("a")).unwrap();
        sub.next().await.unwrap();
        drop(sub);
        tokio::time::sleep(Duration::from_secs(4)).await;
        let mut sub = hub.connect(viewer("a again")).unwrap();
        sub.next().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(wanted(&hub));
        assert_eq!(fake.starts(), 1, "capture never restarted");
        assert_eq!(hub.report().counters.capture_starts, 1);
        hub.shutdown().await;
    }

    #[tokio::test]
    async fn always_on_captures_without_viewers() {
        let cfg = HubConfig {
            always_on: true,
            ..HubConfig::default()
        };
        let (hub, fake) = fake_hub(cfg);
        let f = fake.clone();
        eventually("frames flow with nobody watching", move || f.frames() > 3).await;
        hub.shutdown().await;
        assert!(!fake.running(), "shutdown stops the source");
    }

    #[tokio::test]
    async fn viewer_limit_is_enforced_and_freed_on_disconnect() {
        let cfg = HubConfig {
            max_viewers: 2,
            ..HubConfig::default()
        };
        let (hub, _fake) = fake_hub(cfg);
        let a = hub.connect(viewer("a")).unwrap();
        let _b = hub.connect(viewer("b")).unwrap();
        assert_eq!(
            hub.connect(viewer("c")).err(),
            Some(HubError::Full { max: 2 })
        );
        drop(a);
        assert!(hub.connect(viewer("c")).is_ok());
        let c = hub.report().counters;
        assert_eq!((c.viewers_total, c.viewers_rejected), (3, 1));
        hub.shutdown().await;
    }

    #[tokio::test]
    async fn one_host_cannot_take_every_slot() {
        let cfg = HubConfig {
            max_viewers: 10,
            max_viewers_per_address: 2,
            ..HubConfig::default()
        };
        let (hub, _fake) = fake_hub(cfg);
        let from = |name: &str, addr: &str| ViewerInfo {
            addr: Some(addr.parse().unwrap()),
            ..viewer(name)
        };
        let a = hub.connect(from("a", "10.0.0.7:1000")).unwrap();
        let _b = hub.connect(from("b", "[::ffff:10.0.0.7]:1001")).unwrap();
        let refused = hub.connect(from("c", "10.0.0.7:1002")).err().unwrap();
        assert_eq!(
            refused.to_string(),
            "viewer limit per address reached (2 viewers from 10.0.0.7); try again later"
        );
        // Others still get in; addressless viewers (none known) are not grouped.
        let _d = hub.connect(from("d", "10.0.0.8:1000")).unwrap();
        let _e = hub.connect(viewer("e")).unwrap();
        let _f = hub.connect(viewer("f")).unwrap();
        let _g = hub.connect(viewer("g")).unwrap();
        // A remote IPv6 site is one peer, whatever address each host picks.
        let _h = hub.connect(from("h", "[2001:db8:9:9::1]:1")).unwrap();
        let _i = hub.connect(from("i", "[2001:db8:9:9::2]:1")).unwrap();
        assert!(matches!(
            hub.connect(from("j", "[2001:db8:9:9::3]:1")),
            Err(HubError::AddressFull { max: 2, .. })
        ));
        drop(a);
        assert!(
            hub.connect(from("c", "10.0.0.7:1002")).is_ok(),
            "a slot freed"
        );
        assert_eq!(hub.report().counters.viewers_rejected, 2);
        hub.shutdown().await;
    }

    #[tokio::test]
    async fn slow_viewer_skips_to_newest_and_counts_what_it_missed() {
        let (hub, _fake) = fake_hub(HubConfig::default());
        let mut slow = hub.connect(viewer("slow")).unwrap();
        let mut fast = hub.connect(viewer("fast")).unwrap();
        let first = slow.next().await.unwrap();
        // The slow viewer looks away while the fast one keeps up.
        let mut fast_skipped = 0;
        let mut fast_frames = 0;
        let mut fast_last = 0;
        while fast_last < first.frame.seq + 20 {
            let d = fast.next().await.unwrap();
            fast_skipped += d.skipped;
            fast_frames += 1;
            fast_last = d.frame.seq;
        }
        let second = slow.next().await.unwrap();
        assert!(second.frame.seq >= first.frame.seq + 20);
        assert_eq!(second.skipped, second.frame.seq - first.frame.seq - 1);
        assert!(fast_frames > 0 && fast_skipped + fast_frames >= 20);
        // Captured frames and a viewer's skips are read apart within a report: stop capture
        // first so no frame lands between the two reads.
        hub.shutdown().await;
        let report = hub.report();
        let slow_report = report
            .viewers
            .iter()
            .find(|v| v.info.name == "slow")
            .unwrap();
        assert_eq!(
            slow_report.frames_sent, 2,
            "no queue: two reads, two frames"
        );
        let newest = report.counters.frames_captured;
        assert_eq!(
            slow_report.frames_skipped,
            second.skipped + (newest - second.frame.seq).saturating_sub(1),
            "skipped = missed between reads + missed since the last read"
        );
    }

    #[tokio::test]
    async fn ready_waits_for_a_frame_without_taking_it() {
        let (hub, _fake) = fake_hub(HubConfig::default());
        let mut sub = hub.connect(viewer("v")).unwrap();
        let first = sub.next().await.unwrap();
        assert!(sub.ready().await);
        assert!(sub.ready().await, "asking again changes nothing");
        let second = sub.next().await.unwrap();
        assert!(second.frame.seq > first.frame.seq);
        assert_eq!(second.skipped, second.frame.seq - first.frame.seq - 1);
        assert_eq!(hub.report().viewers[0].frames_sent, 2, "ready took nothing");
        hub.shutdown().await;
        assert!(!sub.ready().await, "false once the hub shuts down");
    }

    #[tokio::test]
    async fn max_fps_spaces_deliveries() {
        let (hub, _fake) = fake_hub(HubConfig::default());
        let mut info = viewer("throttled");
        info.max_fps = RateCap::new(20.0).unwrap();
        let mut sub = hub.connect(info).unwrap();
        let a = sub.next().await.unwrap();
        let t = tokio::time::Instant::now();
        let b = sub.next().await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(49));
        assert!(
            b.skipped > 0,
            "frames captured meanwhile are skipped, not queued"
        );
        assert_eq!(b.skipped, b.frame.seq - a.frame.seq - 1);
        hub.shutdown().await;
    }

    #[tokio::test]
    async fn bad_frames_are_dropped_and_counted() {
        let (hub, fake) = fake_hub(HubConfig::default());
        // The stall after the first good frame gives the viewer time to see it (seq 1).
        fake.push([
            Step::BadFrame,
            Step::BadFrame,
            Step::Frame,
            Step::Stall(Duration::from_secs(1)),
        ]);
        let mut sub = hub.connect(viewer("v")).unwrap();
        let d = sub.next().await.unwrap();
        assert_eq!(d.frame.seq, 1, "bad frames get no sequence number");
        assert_eq!(hub.report().counters.frames_dropped, 2);
        hub.shutdown().await;
    }

    #[tokio::test]
    async fn vanished_camera_is_waited_for_and_viewers_stay_connected() {
        let cfg = HubConfig {
            retry_min: Duration::from_millis(5),
            retry_max: Duration::from_millis(20),
            ..HubConfig::default()
        };
        let (hub, fake) = fake_hub(cfg);
        // Absent until the test has seen the waiting state: a few retries' worth of absence
        // was a window of milliseconds for the test to look in.
        fake.fail_next_starts(u64::MAX);
        // The stall after the first frame gives the viewer time to see it (seq 1).
        fake.push([Step::Frame, Step::Stall(Duration::from_secs(1))]);
        let mut statuses = hub.shared.status.subscribe();
        let mut sub = hub.connect(viewer("patient")).unwrap();
        statuses
            .wait_for(|s| s.state == State::WaitingForCamera)
            .await
            .unwrap();
        fake.fail_next_starts(0);
        let d = sub.next().await.expect("frames once the camera is back");
        assert_eq!(d.frame.seq, 1);
        assert_eq!(hub.status().state, State::Streaming);
        // Unplugged mid-stream (one error, then two failed starts): the viewer waits, then
        // gets newer frames.
        let errors_before = hub.report().counters.capture_errors;
        fake.push([Step::Vanish]);
        fake.fail_next_starts(2);
        let mut last = d.frame.seq;
        let mut saw_gap = false;
        while !saw_gap {
            let d = sub.next().await.unwrap();
            assert!(d.frame.seq > last);
            saw_gap = hub.report().counters.capture_errors >= errors_before + 3;
            last = d.frame.seq;
        }
        assert_eq!(hub.report().counters.capture_starts, 2);
        hub.shutdown().await;
    }

    #[tokio::test]
    async fn failing_source_reports_fault_and_recovers() {
        // The fault lasts the retry delay, and the test must look within it: 5 ms was too
        // short a window for a loaded machine or an emulated CPU.
        let cfg = HubConfig {
            retry_min: Duration::from_secs(1),
            ..HubConfig::default()
        };
        let (hub, fake) = fake_hub(cfg);
        fake.push([Step::Frame, Step::Fail]);
        let mut statuses = hub.shared.status.subscribe();
        let mut sub = hub.connect(viewer("v")).unwrap();
        statuses
            .wait_for(|s| s.state == State::Fault)
            .await
            .unwrap();
        assert!(hub.status().detail.contains("fake failure"));
        statuses
            .wait_for(|s| s.state == State::Streaming)
            .await
            .unwrap();
        assert!(sub.next().await.is_some());
        hub.shutdown().await;
    }

    /// Viewers joining and leaving on several threads at once: the published count must end
    /// where the registry does. It was published after the registry's lock was let go, so two
    /// viewers leaving together could publish their counts in the wrong order and leave it
    /// stuck above zero, with capture running for nobody.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_viewer_count_ends_at_zero_when_viewers_leave_together() {
        let (hub, _fake) = fake_hub(HubConfig::default());
        for _ in 0..2_000 {
            let barrier = Arc::new(std::sync::Barrier::new(3));
            let leaving: Vec<_> = (0..3)
                .map(|_| {
                    let (hub, barrier) = (hub.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        let sub = hub.connect(viewer("v")).unwrap();
                        barrier.wait();
                        drop(sub);
                    })
                })
                .collect();
            for t in leaving {
                t.join().unwrap();
            }
            assert_eq!(hub.viewer_count(), 0, "published count after all left");
        }
        hub.shutdown().await;
    }

    #[tokio::test]
    async fn blocking_shutdown_lets_the_camera_go_before_it_returns() {
        let (hub, fake) = fake_hub(HubConfig::default());
        let mut sub = hub.connect(viewer("v")).unwrap();
        sub.next().await.unwrap();
        assert!(fake.running());
        hub.shutdown_blocking();
        assert!(!fake.running(), "source stopped");
        assert_eq!(fake.stops(), 1);
        assert!(sub.next().await.is_none(), "the viewer's stream ended");
    }

    #[tokio::test]
    async fn shutdown_ends_every_stream() {
        let (hub, _fake) = fake_hub(HubConfig::default());
        let mut sub = hub.connect(viewer("v")).unwrap();
        sub.next().await.unwrap();
        hub.shutdown().await;
        assert!(sub.next().await.is_none());
        assert_eq!(
            hub.connect(viewer("late")).err(),
            Some(HubError::ShuttingDown)
        );
    }

    #[test]
    fn names_are_bounded_and_made_safe_to_log() {
        assert_eq!(viewer_name("kitchen", 64).unwrap(), "kitchen");
        assert_eq!(viewer_name("  ", 64).unwrap(), "(unnamed)");
        assert_eq!(
            viewer_name("a\nFAKE LOG\x1b[2J", 64).unwrap(),
            "a\u{FFFD}FAKE LOG\u{FFFD}[2J"
        );
        assert_eq!(
            viewer_name(&"x".repeat(65), 64),
            Err(NameTooLong { len: 65, max: 64 })
        );
    }
}
