//! camcast-view: the reference viewer. With no mode flag it opens a desktop window (see
//! `camcast::view`); headless modes print live statistics, save frames, record, take
//! snapshots and show server info, over either the v1 API or the tutorial API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use tonic::{Code, Status};

use camcast::client::{self, FrameStream, Received};
use camcast::frame::looks_like_jpeg;
use camcast::pb;
use camcast::view::{choose, feed, record::Recording, window};

#[derive(Debug, Parser)]
#[command(
    name = "camcast-view",
    version,
    about = "Watch a camcast camera: in a window, or headless (statistics, saved frames, \
             recordings, snapshots, server info).",
    after_help = "Examples:\n  \
        camcast-view cam.local                      watch in a window (reconnects by itself)\n  \
        camcast-view cam.local --record cam.mkv     watch and record from the start\n  \
        camcast-view cam.local --record cam.mkv --duration 60   record a minute, no window\n  \
        camcast-view cam.local --record cam.mkv --frames 300    record 300 frames, no window\n  \
        camcast-view cam.local --stats              fps, latency and skipped frames every second\n  \
        camcast-view cam.local --frames 100 --out shots/   save 100 frames as JPEG files\n  \
        camcast-view cam.local --snapshot now.jpg   one picture\n  \
        camcast-view cam.local --info               what the server is doing\n  \
        camcast-view cam.local --tutorial-api --stats   talk to a server that speaks only the tutorial API\n  \
        camcast-view --list                         cameras found on the LAN (mDNS)\n  \
        camcast-view                                find the camera on the LAN and watch it\n\n\
        Window keys: Esc or q quit, s save the shown frame (JPEG as received), r start/stop\n\
        recording to an automatically named .mkv. Snapshots and recordings go to the current\n\
        directory as camcast-<UTC time>[-seq<N>].jpg / .mkv.\n\n\
        Any of --stats, --frames, --out, --duration, --snapshot or --info means headless (no\n\
        window). Recordings are Matroska (V_MJPEG): the JPEGs as received, with their capture\n\
        times; VLC, mpv and ffmpeg play them, even when cut short. Ctrl-C or SIGTERM finishes\n\
        the file.\n\n\
        Exit status: 0 done, 1 other error, 2 bad usage, 3 cannot connect or server unavailable,\n\
        4 refused by the server (limit reached, bad request), 5 stream ended before the requested\n\
        frames arrived, 6 cannot write output files, 7 no camera found on the LAN (no HOST, or --list)."
)]
struct Args {
    /// Server: HOST, HOST:PORT, [IPv6]:PORT, http://HOST:PORT or https://HOST:PORT (default
    /// port 1234). Without it, cameras on the LAN are found over mDNS: the only one is
    /// watched, or you choose.
    target: Option<String>,

    /// List the cameras found on the LAN over mDNS (_camcast._tcp) and exit.
    #[arg(long, conflicts_with = "target")]
    list: bool,

    /// Seconds to listen for mDNS answers (--list, or no HOST).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    browse_secs: f64,

    #[command(flatten)]
    security: client::SecurityArgs,

    /// No window: print fps, capture→receive latency and skipped frames once a second (also
    /// the output of the other headless modes unless they save files).
    #[arg(long)]
    stats: bool,

    /// Record every received frame to FILE (Matroska, the JPEGs as received). With a window
    /// from the start (`r` stops it), or headless with --frames/--duration/--stats.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["snapshot", "info"])]
    record: Option<PathBuf>,

    /// Stop after this many frames.
    #[arg(long, value_name = "N")]
    frames: Option<u64>,

    /// Save every received frame as DIR/frame-NNNNNN.jpg (created if missing).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,

    /// Save one current frame to FILE and exit.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["out", "frames", "stats", "info"])]
    snapshot: Option<PathBuf>,

    /// Print the server's source, mode, viewers and counters, then exit (v1 only).
    #[arg(long, conflicts_with_all = ["out", "frames", "stats", "tutorial_api"])]
    info: bool,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,

    /// Ask the server for at most this many frames per second (v1 only; 0 = camera rate).
    #[arg(long, default_value_t = 0.0, value_name = "FPS")]
    max_fps: f32,

    /// Use the tutorial API (the original `WebcamStreaming` service) instead of camcast.v1
    /// (JPEG bytes only: no sequence numbers, so no latency or skip counts). `--legacy` is the
    /// old spelling.
    #[arg(long, alias = "legacy")]
    tutorial_api: bool,

    /// The server's camera to watch, by name (`--info` lists them; camcast.v1 only)
    /// [default: the server's default camera].
    #[arg(
        long,
        value_name = "NAME",
        default_value = "",
        hide_default_value = true,
        conflicts_with = "tutorial_api"
    )]
    camera: String,

    /// Name shown in the server's logs and viewer list.
    #[arg(long, default_value = "camcast-view")]
    name: String,

    /// Seconds to wait for the connection.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    connect_timeout: f64,
}

impl Args {
    /// The server to watch; after `discover`, always set.
    fn target(&self) -> &str {
        self.target.as_deref().unwrap_or_default()
    }

    /// A window unless a headless mode was asked for.
    fn window_mode(&self) -> bool {
        !(self.stats
            || self.frames.is_some()
            || self.out.is_some()
            || self.duration.is_some()
            || self.snapshot.is_some()
            || self.info)
    }

    fn connect_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.connect_timeout.max(0.1))
    }
}

/// Window mode: the window on this (the main) thread, the network on the runtime's workers.
fn watch_in_window(
    runtime: &tokio::runtime::Runtime,
    args: Args,
    client: client::ClientOptions,
) -> ExitCode {
    let opts = feed::Options {
        client,
        target: args.target().to_string(),
        tutorial_api: args.tutorial_api,
        camera: args.camera.clone(),
        name: args.name.clone(),
        max_fps: args.max_fps,
        connect_timeout: args.connect_timeout(),
        record: args.record.clone(),
    };
    let (feed_tx, feed_rx) = tokio::sync::watch::channel(feed::Feed::default());
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::unbounded_channel();
    let network = runtime.spawn(feed::run(opts, feed_tx, cmd_rx));
    let shown = window::run(feed_rx, cmd_tx);
    // The window told the feed to quit; wait for it to finish any recording.
    let end = runtime.block_on(network);
    if let Err(e) = shown {
        eprintln!("camcast-view: {e}");
        return ExitCode::FAILURE;
    }
    match end {
        Ok(feed::End::Quit) => ExitCode::SUCCESS,
        Ok(feed::End::Refused(status)) => {
            let f = Failure::Refused(status);
            eprintln!("camcast-view: {}", f.message());
            ExitCode::from(f.exit_code())
        }
        Err(e) => {
            eprintln!("camcast-view: network task failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why the viewer stopped, mapped to the documented exit status.
enum Failure {
    Connect(String),
    Refused(Status),
    Stream(Status),
    EndedEarly { got: u64, wanted: u64 },
    Output(String),
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Connect(_) => 3,
            Failure::Refused(_) => 4,
            Failure::Stream(s) if s.code() == Code::Unavailable => 3,
            Failure::Stream(_) | Failure::EndedEarly { .. } => 5,
            Failure::Output(_) => 6,
        }
    }

    fn message(&self) -> String {
        match self {
            Failure::Connect(e) => format!("cannot connect: {e}"),
            Failure::Refused(s) => format!("server refused: {} ({:?})", s.message(), s.code()),
            Failure::Stream(s) => format!("stream failed: {} ({:?})", s.message(), s.code()),
            Failure::EndedEarly { got, wanted } => {
                format!("server ended the stream after {got} of {wanted} frames")
            }
            Failure::Output(e) => e.clone(),
        }
    }
}

/// Statuses that mean "the server said no" rather than "something broke".
fn classify(status: Status) -> Failure {
    match status.code() {
        Code::ResourceExhausted
        | Code::InvalidArgument
        | Code::Unauthenticated
        | Code::PermissionDenied
        | Code::Unimplemented => Failure::Refused(status),
        _ => Failure::Stream(status),
    }
}

fn main() -> ExitCode {
    let mut args = Args::parse();
    let client = match args.security.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("camcast-view: {e}");
            return ExitCode::from(2);
        }
    };
    // Before any browsing: whoever answers mDNS must not get the token either.
    if !args.list {
        let shown = args
            .target
            .as_deref()
            .unwrap_or("the camera found on the LAN");
        if let Err(e) = client::check_token_is_safe(shown, &client) {
            eprintln!("camcast-view: {e}");
            return ExitCode::from(2);
        }
    }
    if let Err(code) = discover(&mut args) {
        return code;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if args.window_mode() {
        return watch_in_window(&runtime, args, client);
    }
    match runtime.block_on(run(args, client)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("camcast-view: {}", f.message());
            ExitCode::from(f.exit_code())
        }
    }
}

async fn run(args: Args, options: client::ClientOptions) -> Result<(), Failure> {
    let timeout = args.connect_timeout();
    let channel = client::connect_with(args.target(), &options, timeout)
        .await
        .map_err(|e| Failure::Connect(connect_error(&e)))?;
    if args.info {
        return print_info(channel, &args.camera).await;
    }
    if let Some(path) = &args.snapshot {
        return snapshot(channel, &args, path).await;
    }
    watch(channel, &args).await
}

async fn print_info(channel: client::Conn, camera: &str) -> Result<(), Failure> {
    let info = client::camera_client(channel)
        .get_info(pb::v1::GetInfoRequest {
            camera: camera.into(),
        })
        .await
        .map_err(classify)?
        .into_inner();
    let state = pb::v1::State::try_from(info.state).map_or("unknown", |s| s.as_str_name());
    println!(
        "camcast {} up {:.0} s",
        info.version,
        info.uptime_ms as f64 / 1e3
    );
    if !info.camera.is_empty() {
        println!("camera: {}", info.camera);
    }
    println!("source: {} ({})", info.source, info.source_reason);
    if let Some(m) = &info.mode {
        println!(
            "mode: {}x{} @ {} fps, {}",
            m.width, m.height, m.fps, m.pixel_format
        );
    }
    println!("state: {state} {}", info.state_detail);
    println!("capturing: {}", info.capturing);
    if let Some(c) = &info.counters {
        println!(
            "frames captured {} dropped {}; capture starts {} errors {}; viewers total {} rejected {}",
            c.frames_captured,
            c.frames_dropped,
            c.capture_starts,
            c.capture_errors,
            c.viewers_total,
            c.viewers_rejected
        );
    }
    if info.cameras.len() > 1 {
        println!("cameras: {}", info.cameras.len());
        for c in &info.cameras {
            let state = pb::v1::State::try_from(c.state).map_or("unknown", |s| s.as_str_name());
            let mode = c.mode.as_ref().map_or(String::new(), |m| {
                format!("{}x{} @ {} fps", m.width, m.height, m.fps)
            });
            let default = if c.is_default { " (default)" } else { "" };
            println!(
                "  {:<16} {:<26} {mode:<22} viewers {}  {}{default}",
                c.name,
                state,
                c.viewers.len(),
                c.source
            );
        }
    }
    println!("viewers: {}", info.viewers.len());
    for v in &info.viewers {
        println!(
            "  {:<20} {:<22} {:<8} sent {:>7} skipped {:>7} for {:.0} s",
            v.name,
            v.address,
            v.api,
            v.frames_sent,
            v.frames_skipped,
            v.connected_ms as f64 / 1e3
        );
    }
    Ok(())
}

async fn snapshot(channel: client::Conn, args: &Args, path: &Path) -> Result<(), Failure> {
    let jpeg = if args.tutorial_api {
        let mut stream = FrameStream::open(channel, true, &args.name, 0.0)
            .await
            .map_err(classify)?;
        match stream.next().await.map_err(classify)? {
            Some(f) => f.jpeg,
            None => return Err(Failure::EndedEarly { got: 0, wanted: 1 }),
        }
    } else {
        let req = pb::v1::SnapshotRequest {
            viewer_name: args.name.clone(),
            camera: args.camera.clone(),
        };
        client::camera_client(channel)
            .snapshot(req)
            .await
            .map_err(classify)?
            .into_inner()
            .jpeg
    };
    write_file(path, &jpeg)?;
    eprintln!("saved {} ({} bytes)", path.display(), jpeg.len());
    Ok(())
}

async fn watch(channel: client::Conn, args: &Args) -> Result<(), Failure> {
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Output(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut recording =
        match &args.record {
            Some(path) => Some(Recording::start(path, args.target()).map_err(|e| {
                Failure::Output(format!("cannot record to {}: {e}", path.display()))
            })?),
            None => None,
        };
    let result = receive(channel, args, &mut recording).await;
    // Finish the file whatever happened: even a failed stream leaves a complete recording.
    if let Some(rec) = recording {
        feed::report_finished(rec);
    }
    result
}

async fn receive(
    channel: client::Conn,
    args: &Args,
    recording: &mut Option<Recording>,
) -> Result<(), Failure> {
    let show_stats =
        args.stats || (args.out.is_none() && args.frames.is_none() && args.record.is_none());
    let deadline = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    let open = if args.tutorial_api {
        FrameStream::open(channel, true, &args.name, args.max_fps).await
    } else {
        FrameStream::open_camera(channel, &args.camera, &args.name, args.max_fps).await
    };
    let mut stream = open.map_err(classify)?;
    let mut stats = Stats::new();
    let mut received = 0u64;
    // One listener for the whole loop, so a signal between two frames is not missed.
    let quit = camcast::view::quit_signal();
    tokio::pin!(quit);
    loop {
        if args.frames.is_some_and(|n| received >= n) {
            break;
        }
        let next = tokio::select! {
            r = stream.next() => r.map_err(classify)?,
            _ = sleep_until(deadline) => break,
            _ = &mut quit => break,
        };
        let Some(frame) = next else {
            if let Some(wanted) = args.frames {
                return Err(Failure::EndedEarly {
                    got: received,
                    wanted,
                });
            }
            eprintln!("server ended the stream");
            break;
        };
        received += 1;
        if let Some(rec) = recording {
            rec.add(&frame).map_err(|e| {
                Failure::Output(format!("cannot record to {}: {e}", rec.path().display()))
            })?;
        }
        if let Some(dir) = &args.out {
            write_file(&dir.join(format!("frame-{received:06}.jpg")), &frame.jpeg)?;
        }
        stats.add(&frame);
        if show_stats && stats.due() {
            println!("{}", stats.take_line());
        }
    }
    if show_stats {
        println!("{}", stats.take_line());
    }
    eprintln!(
        "received {received} frames ({} not JPEG, {} skipped by the server for this viewer)",
        stats.total_bad, stats.total_skipped
    );
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), Failure> {
    std::fs::write(path, data)
        .map_err(|e| Failure::Output(format!("cannot write {}: {e}", path.display())))
}

/// Once-a-second statistics.
struct Stats {
    window_start: Instant,
    frames: u64,
    bytes: u64,
    skipped: u64,
    latencies_us: Vec<u64>,
    size: Option<(u32, u32)>,
    total_bad: u64,
    total_skipped: u64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            window_start: Instant::now(),
            frames: 0,
            bytes: 0,
            skipped: 0,
            latencies_us: Vec::new(),
            size: None,
            total_bad: 0,
            total_skipped: 0,
        }
    }

    fn add(&mut self, f: &Received) {
        self.frames += 1;
        self.bytes += f.jpeg.len() as u64;
        self.skipped += f.skipped;
        self.total_skipped += f.skipped;
        if !looks_like_jpeg(&f.jpeg) {
            self.total_bad += 1;
        }
        if let Some(l) = f.latency() {
            self.latencies_us.push(l.as_micros() as u64);
        }
        self.size = f.size.or(self.size);
    }

    fn due(&self) -> bool {
        self.window_start.elapsed() >= Duration::from_secs(1)
    }

    /// Formats the window's line and starts a new window.
    fn take_line(&mut self) -> String {
        let secs = self.window_start.elapsed().as_secs_f64().max(1e-9);
        let mut line = format!("fps {:5.1}", self.frames as f64 / secs);
        if !self.latencies_us.is_empty() {
            self.latencies_us.sort_unstable();
            let p = |q: f64| {
                let i = ((self.latencies_us.len() - 1) as f64 * q).round() as usize;
                self.latencies_us[i] as f64 / 1000.0
            };
            line += &format!(" | latency p50 {:6.1} ms p99 {:6.1} ms", p(0.5), p(0.99));
        }
        line += &format!(" | skipped {:3}", self.skipped);
        if let Some((w, h)) = self.size {
            line += &format!(" | {w}x{h}");
        }
        if self.frames > 0 {
            line += &format!(
                " | {:.1} KiB/frame",
                self.bytes as f64 / self.frames as f64 / 1024.0
            );
        }
        *self = Stats {
            total_bad: self.total_bad,
            total_skipped: self.total_skipped,
            size: self.size,
            ..Stats::new()
        };
        line
    }
}

/// A connection error with its causes (the root cause, e.g. an unknown certificate, is
/// usually the useful part).
fn connect_error(e: &client::ConnectError) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// `--list`, or no HOST: find cameras over mDNS (camcast::view::choose) and fill in the
/// target. `Err` carries the exit status when there is nothing more to do.
fn discover(args: &mut Args) -> Result<(), ExitCode> {
    let wait = Duration::from_secs_f64(args.browse_secs.clamp(0.1, 600.0));
    if args.list {
        return Err(ExitCode::from(choose::list(wait)));
    }
    if args.target.is_none() {
        match choose::find_target(wait) {
            Ok(target) => args.target = Some(target),
            Err(e) => {
                eprintln!("camcast-view: {e}");
                return Err(ExitCode::from(e.exit_code()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--tutorial-api` is the flag; `--legacy`, its old spelling, still works in scripts.
    #[test]
    fn tutorial_api_flag_and_its_old_spelling() {
        for flag in ["--tutorial-api", "--legacy"] {
            let args = Args::try_parse_from(["camcast-view", "cam.local", flag]).unwrap();
            assert!(args.tutorial_api, "{flag}");
        }
        assert!(
            !Args::try_parse_from(["camcast-view", "cam.local"])
                .unwrap()
                .tutorial_api
        );
        assert!(Args::try_parse_from(["camcast-view", "cam.local", "--info", "--legacy"]).is_err());
    }
}
