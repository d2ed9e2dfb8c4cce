//! The desktop window (minifb, X11): shows the newest frame scaled to the window with its
//! aspect kept, the camera and stream figures in the title, and takes the keys.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use minifb::{InputCallback, Key, ScaleMode, Window, WindowOptions};
use tokio::sync::{mpsc, watch};

use super::feed::{Command, Feed, Link};
use super::picture::{fit, Decoder};
use crate::client::Received;

/// Largest first window size; the user can resize it, and the picture follows.
const MAX_FIRST_SIZE: (usize, usize) = (1280, 720);
/// Size to open with when no frame has arrived yet.
const DEFAULT_SIZE: (usize, usize) = (640, 480);
/// How long to wait for a first frame (to size the window to the picture) before opening.
const FIRST_FRAME_WAIT: Duration = Duration::from_secs(2);
/// Idle poll interval: how late at most a new frame is noticed. X events are pumped as often.
const POLL: Duration = Duration::from_millis(4);
/// How often the title is refreshed (the reconnect countdown, the recording mark).
const TITLE_EVERY: Duration = Duration::from_millis(500);
/// The period fps, latency and skips are measured over.
const FIGURES_EVERY: Duration = Duration::from_secs(1);

/// Runs the window until Esc, `q`, window close, or the feed finishing. Tells the feed to
/// quit on the way out.
pub fn run(
    mut feed: watch::Receiver<Feed>,
    commands: mpsc::UnboundedSender<Command>,
) -> Result<(), String> {
    let result = show(&mut feed, &commands);
    let _ = commands.send(Command::Quit);
    result
}

fn show(
    feed: &mut watch::Receiver<Feed>,
    commands: &mpsc::UnboundedSender<Command>,
) -> Result<(), String> {
    let first = wait_for_first_frame(feed);
    let (w, h) = first.map_or(DEFAULT_SIZE, |s| fit(s, MAX_FIRST_SIZE));
    let options = WindowOptions {
        resize: true,
        scale_mode: ScaleMode::AspectRatioStretch,
        ..WindowOptions::default()
    };
    let mut window = Window::new("camcast-view", w, h, options).map_err(|e| {
        format!(
            "cannot open a window: {e} (no X display? set DISPLAY, or use --stats for headless)"
        )
    })?;
    // The loop paces itself (POLL); minifb's own limiter would only add delay.
    window.set_target_fps(0);
    let (key_tx, keys) = std::sync::mpsc::channel();
    window.set_input_callback(Box::new(KeyPresses(key_tx)));
    let mut decoder = Decoder::new().map_err(|e| format!("libjpeg-turbo: {e}"))?;
    let mut shown: Option<Received> = None;
    let mut figures = Figures::new();
    let mut title = String::new();
    let mut title_at = Instant::now() - TITLE_EVERY;
    while window.is_open() {
        for key in keys.try_iter() {
            match key {
                Key::Escape | Key::Q => return Ok(()),
                Key::S => save_snapshot(shown.as_ref()),
                Key::R => {
                    let _ = commands.send(Command::ToggleRecord);
                }
                _ => {}
            }
        }
        let changed = feed.has_changed().unwrap_or(false);
        let state = feed.borrow_and_update().clone();
        if state.finished {
            return Ok(());
        }
        let fresh = changed && state.frame.is_some() && state.received != figures.last_received;
        if fresh {
            let frame = state.frame.clone().expect("checked above");
            match decoder.decode(&frame.jpeg) {
                Ok(p) => window
                    .update_with_buffer(p.pixels, p.width, p.height)
                    .map_err(|e| format!("window update failed: {e}"))?,
                Err(e) => {
                    eprintln!("camcast-view: undecodable frame skipped: {e}");
                    window.update();
                }
            }
            figures.shown(&frame, state.received);
            shown = Some(frame);
        } else {
            window.update();
            std::thread::sleep(POLL);
        }
        if title_at.elapsed() >= TITLE_EVERY {
            let t = figures.title(&state, shown.as_ref());
            if t != title {
                window.set_title(&t);
                title = t;
            }
            title_at = Instant::now();
        }
    }
    Ok(())
}

/// Every key press, as X delivers it. (Polling `get_keys_pressed` would miss a tap whose press
/// and release arrive between two polls, as scripted key presses do.)
struct KeyPresses(std::sync::mpsc::Sender<Key>);

impl InputCallback for KeyPresses {
    fn add_char(&mut self, _: u32) {}

    fn set_key_state(&mut self, key: Key, pressed: bool) {
        if pressed {
            let _ = self.0.send(key);
        }
    }
}

/// Waits briefly for the first frame, to size the window to the picture.
fn wait_for_first_frame(feed: &mut watch::Receiver<Feed>) -> Option<(usize, usize)> {
    let deadline = Instant::now() + FIRST_FRAME_WAIT;
    while Instant::now() < deadline {
        {
            let f = feed.borrow();
            if let Some(frame) = &f.frame {
                return turbojpeg::read_header(&frame.jpeg)
                    .ok()
                    .map(|h| (h.width, h.height));
            }
            if f.finished || matches!(f.link, Link::Down { .. }) {
                return None;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// `s`: the shown frame's JPEG bytes, exactly as received.
fn save_snapshot(frame: Option<&Received>) {
    let Some(frame) = frame else {
        eprintln!("camcast-view: no frame yet to save");
        return;
    };
    let suffix = match frame.seq {
        Some(seq) => format!("-seq{seq}.jpg"),
        None => ".jpg".to_string(),
    };
    let path = super::auto_name(SystemTime::now(), &suffix);
    save(&path, &frame.jpeg);
}

fn save(path: &Path, jpeg: &[u8]) {
    match std::fs::write(path, jpeg) {
        Ok(()) => eprintln!(
            "camcast-view: saved {} ({} bytes)",
            path.display(),
            jpeg.len()
        ),
        Err(e) => eprintln!("camcast-view: cannot save {}: {e}", path.display()),
    }
}

/// Rate, latency and skip figures over the last title period.
struct Figures {
    since: Instant,
    received_at_start: u64,
    skipped_at_start: u64,
    last_received: u64,
    shown: u64,
    latencies: Vec<Duration>,
    line: String,
}

impl Figures {
    fn new() -> Self {
        Figures {
            since: Instant::now(),
            received_at_start: 0,
            skipped_at_start: 0,
            last_received: 0,
            shown: 0,
            latencies: Vec::new(),
            line: String::new(),
        }
    }

    /// A frame is on screen: its capture→display latency counts now.
    fn shown(&mut self, frame: &Received, received: u64) {
        self.last_received = received;
        self.shown += 1;
        if let Some(l) = frame.latency() {
            self.latencies.push(l);
        }
    }

    /// The title: camera, picture size, and the figures, refreshed once per period.
    fn title(&mut self, state: &Feed, shown: Option<&Received>) -> String {
        let elapsed = self.since.elapsed();
        if elapsed >= FIGURES_EVERY {
            self.line = self.take_line(state, elapsed);
        }
        let mut t = format!("camcast-view · {}", state.camera);
        if let Some(f) = shown {
            if let Ok(h) = turbojpeg::read_header(&f.jpeg) {
                t += &format!(" · {}x{}", h.width, h.height);
            }
        }
        match &state.link {
            Link::Connecting => t += " · connecting…",
            Link::Live => t += &self.line,
            Link::Down { error, retry_at } => {
                let secs = retry_at.saturating_duration_since(Instant::now());
                t += &format!(
                    " · RECONNECTING in {:.0} s ({error})",
                    secs.as_secs_f64().ceil()
                );
            }
        }
        if let Some(p) = &state.recording {
            t += &format!(" · ● REC {}", p.display());
        }
        t
    }

    fn take_line(&mut self, state: &Feed, elapsed: Duration) -> String {
        let received = state.received - self.received_at_start;
        let fps = received as f64 / elapsed.as_secs_f64();
        let mut line = format!(" · {fps:.1} fps");
        if !self.latencies.is_empty() {
            self.latencies.sort_unstable();
            let median = self.latencies[self.latencies.len() / 2];
            line += &format!(" · latency {:.1} ms", median.as_secs_f64() * 1e3);
        }
        // Skipped: by the server for this viewer, plus received but replaced before drawn.
        let server = state.skipped - self.skipped_at_start;
        let undrawn = received.saturating_sub(self.shown);
        line += &format!(" · skipped {}", server + undrawn);
        self.since = Instant::now();
        self.received_at_start = state.received;
        self.skipped_at_start = state.skipped;
        self.shown = 0;
        self.latencies.clear();
        line
    }
}
