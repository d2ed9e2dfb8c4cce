//! The window's network side: connects, streams, reconnects with backoff when the server
//! restarts or the network drops, records every received frame when asked, and publishes the
//! newest frame and the link state for the window.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::reconnect::{Backoff, Outage};
use super::record::Recording;
use crate::client::{self, FrameStream, Received};
use crate::pb;

/// How to reach the camera.
#[derive(Debug, Clone)]
pub struct Options {
    pub target: String,
    /// TLS and token.
    pub client: client::ClientOptions,
    /// Watch over the tutorial API instead of camcast.v1.
    pub tutorial_api: bool,
    /// The server's camera to watch ("": its default camera; camcast.v1 only).
    pub camera: String,
    pub name: String,
    pub max_fps: f32,
    pub connect_timeout: Duration,
    /// Start recording here at once (`--record FILE`).
    pub record: Option<PathBuf>,
}

/// State of the connection, for the title.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Link {
    #[default]
    Connecting,
    Live,
    /// Lost; the next attempt is due at `retry_at`.
    Down {
        error: String,
        retry_at: Instant,
    },
}

/// What the window sees: the newest frame and the state around it.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    pub frame: Option<Received>,
    /// Frames received so far, over every connection.
    pub received: u64,
    /// Frames the server skipped for this viewer, over every connection.
    pub skipped: u64,
    /// What is being watched, e.g. "127.0.0.1:1234 · test-pattern".
    pub camera: String,
    pub link: Link,
    pub recording: Option<PathBuf>,
    /// Set when the feed has stopped (Ctrl-C, or the server refused us for good).
    pub finished: bool,
}

/// From the window to the feed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Command {
    ToggleRecord,
    Quit,
}

/// Why the feed ended.
#[derive(Debug)]
pub enum End {
    /// Quit from the window, Ctrl-C, or the window is gone.
    Quit,
    /// The server refused this viewer (bad request, not allowed, API not offered): retrying
    /// would not help.
    Refused(Status),
}

/// Runs until quit. Publishes into `feed`; takes keys from `commands`.
pub async fn run(
    opts: Options,
    feed: watch::Sender<Feed>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) -> End {
    // One signal listener for the whole run, so a signal between two waits is not missed.
    let quit = CancellationToken::new();
    let on_signal = quit.clone();
    let signals = tokio::spawn(async move {
        super::quit_signal().await;
        on_signal.cancel();
    });
    let mut ctx = Ctx {
        quit,
        camera: opts.target.clone(),
        opts,
        feed,
        recording: None,
        outage: Outage::default(),
        ever_live: false,
    };
    if let Some(path) = ctx.opts.record.clone() {
        ctx.start_recording(path);
    }
    let mut backoff = Backoff::viewer();
    let end = loop {
        let Some(failure) = ctx.session(&mut backoff, &mut commands).await else {
            break End::Quit;
        };
        if let Some(status) = fatal(&failure) {
            break End::Refused(status);
        }
        let delay = backoff.next_delay();
        ctx.report_down(&failure, delay);
        if ctx
            .serve(&mut commands, tokio::time::sleep(delay))
            .await
            .is_none()
        {
            break End::Quit;
        }
    };
    signals.abort();
    ctx.finish(end)
}

type Commands = mpsc::UnboundedReceiver<Command>;

/// How one connection ended.
#[derive(Debug)]
enum Failure {
    Connect(String),
    Status(Status),
    Ended,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Connect(e) => write!(f, "cannot connect: {e}"),
            Failure::Status(s) => write!(f, "{} ({:?})", s.message(), s.code()),
            Failure::Ended => write!(f, "the server ended the stream"),
        }
    }
}

/// Statuses after which reconnecting is pointless. A full server (RESOURCE_EXHAUSTED) or one
/// shutting down (UNAVAILABLE) is worth retrying; a request it will never accept is not.
fn fatal(f: &Failure) -> Option<Status> {
    match f {
        Failure::Status(s)
            if matches!(
                s.code(),
                Code::InvalidArgument
                    | Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::Unimplemented
            ) =>
        {
            Some(s.clone())
        }
        _ => None,
    }
}

struct Ctx {
    /// Cancelled by Ctrl-C or SIGTERM.
    quit: CancellationToken,
    opts: Options,
    feed: watch::Sender<Feed>,
    camera: String,
    recording: Option<Recording>,
    outage: Outage,
    /// Whether any frame has arrived yet: "lost" vs "cannot reach" in the messages.
    ever_live: bool,
}

impl Ctx {
    /// Waits for `fut` while serving keys (recording goes on across reconnects). `None` when
    /// asked to quit: `q`/Esc/window closed, Ctrl-C or SIGTERM.
    async fn serve<T>(
        &mut self,
        commands: &mut Commands,
        fut: impl std::future::Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(fut);
        let quit = self.quit.clone();
        loop {
            tokio::select! {
                v = &mut fut => return Some(v),
                c = commands.recv() => match c {
                    Some(Command::ToggleRecord) => self.toggle_recording(),
                    Some(Command::Quit) | None => return None,
                },
                _ = quit.cancelled() => return None,
            }
        }
    }

    /// One connection: connect, describe the camera, stream until something breaks. `None`
    /// when asked to quit.
    async fn session(&mut self, backoff: &mut Backoff, commands: &mut Commands) -> Option<Failure> {
        let o = self.opts.clone();
        let channel = match self
            .serve(
                commands,
                client::connect_with(&o.target, &o.client, o.connect_timeout),
            )
            .await?
        {
            Ok(c) => c,
            Err(e) => return Some(Failure::Connect(error_chain(&e))),
        };
        if !o.tutorial_api {
            let info = self.serve(
                commands,
                describe(channel.clone(), &o.camera, o.connect_timeout),
            );
            if let Some(source) = info.await? {
                self.camera = format!("{} · {source}", o.target);
                let camera = self.camera.clone();
                self.feed.send_modify(|f| f.camera = camera);
            }
        }
        let open = async {
            if o.tutorial_api {
                FrameStream::open(channel, true, &o.name, o.max_fps).await
            } else {
                FrameStream::open_camera(channel, &o.camera, &o.name, o.max_fps).await
            }
        };
        let mut stream = match self.serve(commands, open).await? {
            Ok(s) => s,
            Err(s) => return Some(Failure::Status(s)),
        };
        loop {
            match self.serve(commands, stream.next()).await? {
                Ok(Some(frame)) => {
                    backoff.reset();
                    self.on_frame(frame);
                }
                Ok(None) => return Some(Failure::Ended),
                Err(s) => return Some(Failure::Status(s)),
            }
        }
    }

    fn on_frame(&mut self, frame: Received) {
        self.ever_live = true;
        if let Some(gone) = self.outage.recovered(Instant::now()) {
            eprintln!(
                "camcast-view: {} is back after {:.1} s",
                self.opts.target,
                gone.as_secs_f64()
            );
        }
        if let Some(rec) = &mut self.recording {
            if let Err(e) = rec.add(&frame) {
                eprintln!(
                    "camcast-view: recording to {} failed: {e}; stopped",
                    rec.path().display()
                );
                self.stop_recording();
            }
        }
        let camera = &self.camera;
        self.feed.send_modify(|f| {
            f.received += 1;
            f.skipped += frame.skipped;
            f.link = Link::Live;
            if f.camera.is_empty() {
                f.camera = camera.clone();
            }
            f.frame = Some(frame);
        });
    }

    fn report_down(&mut self, failure: &Failure, retry_in: Duration) {
        if self.outage.failed(Instant::now()) {
            let what = if self.ever_live {
                "lost"
            } else {
                "cannot reach"
            };
            eprintln!(
                "camcast-view: {what} {}: {failure}; retrying (backoff 0.5 s to 8 s)",
                self.opts.target
            );
        }
        let error = failure.to_string();
        let retry_at = Instant::now() + retry_in;
        self.feed
            .send_modify(|f| f.link = Link::Down { error, retry_at });
    }

    fn toggle_recording(&mut self) {
        if self.recording.is_some() {
            self.stop_recording();
        } else {
            self.start_recording(super::auto_name(SystemTime::now(), ".mkv"));
        }
    }

    fn start_recording(&mut self, path: PathBuf) {
        match Recording::start(&path, &self.camera) {
            Ok(r) => {
                eprintln!("camcast-view: recording to {}", path.display());
                self.recording = Some(r);
                self.feed.send_modify(|f| f.recording = Some(path));
            }
            Err(e) => eprintln!("camcast-view: cannot record to {}: {e}", path.display()),
        }
    }

    fn stop_recording(&mut self) {
        if let Some(rec) = self.recording.take() {
            report_finished(rec);
        }
        self.feed.send_modify(|f| f.recording = None);
    }

    fn finish(mut self, end: End) -> End {
        self.stop_recording();
        self.feed.send_modify(|f| f.finished = true);
        end
    }
}

/// The camera's source from GetInfo, e.g. "test-pattern". Best effort: the stream works
/// without it.
async fn describe(channel: client::Conn, camera: &str, timeout: Duration) -> Option<String> {
    let request = pb::v1::GetInfoRequest {
        camera: camera.into(),
    };
    let mut client = client::camera_client(channel);
    let call = client.get_info(request);
    let info = tokio::time::timeout(timeout, call).await.ok()?.ok()?;
    Some(info.into_inner().source)
}

/// Finalizes a recording and says what it wrote.
pub fn report_finished(rec: Recording) {
    let path = rec.path().to_path_buf();
    match rec.finish() {
        Ok((frames, path)) => eprintln!(
            "camcast-view: recorded {frames} frames to {}",
            path.display()
        ),
        Err(e) => eprintln!("camcast-view: cannot finish {}: {e}", path.display()),
    }
}

/// An error with its causes ("transport error: connection refused"), as tonic's Display shows
/// only the outermost.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s += &format!(": {c_text}");
        }
        cause = c.source();
    }
    s
}
